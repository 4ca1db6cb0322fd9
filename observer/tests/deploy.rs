//! The manifests an SRE applies: valid YAML of the right shape, least privilege, and a
//! ConfigMap the agent accepts.

use std::{path::PathBuf, process::Command};

use serde_yaml_ng::Value;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn docs(file: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(root().join("deploy/kubernetes").join(file)).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{file}: {e}")))
        .collect()
}

fn strings(v: &Value) -> Vec<String> {
    v.as_sequence()
        .unwrap()
        .iter()
        .map(|x| x.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn the_daemonset_is_least_privilege_and_complete() {
    let ds = &docs("daemonset.yaml")[0];
    assert_eq!(ds["kind"], "DaemonSet");
    let spec = &ds["spec"]["template"]["spec"];
    assert_eq!(spec["hostNetwork"], true);
    assert_eq!(spec["dnsPolicy"], "ClusterFirstWithHostNet");
    assert_eq!(spec["priorityClassName"], "system-node-critical");
    assert_eq!(spec["tolerations"][0]["operator"], "Exists");
    let c = &spec["containers"][0];
    let sc = &c["securityContext"];
    assert_eq!(sc["privileged"], false);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(strings(&sc["capabilities"]["drop"]), ["ALL"]);
    assert_eq!(
        strings(&sc["capabilities"]["add"]),
        ["BPF", "PERFMON", "NET_ADMIN"]
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(
        !c["resources"]["requests"]["memory"].is_null()
            && !c["resources"]["limits"]["memory"].is_null()
    );
    // The socket directory is an emptyDir, so `kubectl exec ds/observer -- observer flows` works.
    let mounts = c["volumeMounts"].as_sequence().unwrap();
    let run = mounts
        .iter()
        .find(|m| m["mountPath"] == "/run/observer")
        .expect("socket dir mount");
    let vols = spec["volumes"].as_sequence().unwrap();
    let vol = vols.iter().find(|v| v["name"] == run["name"]).unwrap();
    assert!(vol["emptyDir"].is_mapping());
    // Of the host's bpffs, only the agent's own directory, where it keeps the flows pods opened
    // across its restarts; nothing else of the host.
    let state = mounts
        .iter()
        .find(|m| m["name"] == "state")
        .expect("kept state mount");
    let vol = vols.iter().find(|v| v["name"] == "state").unwrap();
    assert_eq!(vol["hostPath"]["path"], "/sys/fs/bpf/observer");
    let host_paths: Vec<&Value> = vols.iter().filter(|v| !v["hostPath"].is_null()).collect();
    assert_eq!(host_paths.len(), 1, "{host_paths:?}");
    let state_env = c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .find(|e| e["name"] == "OBSERVER_STATE_DIR")
        .expect("OBSERVER_STATE_DIR");
    assert_eq!(state_env["value"], state["mountPath"]);
    let env: Vec<&str> = c["env"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|e| e["name"].as_str().unwrap())
        .collect();
    assert!(env.contains(&"OBSERVER_NODE_NAME") && env.contains(&"OBSERVER_KUBERNETES"));
}

#[test]
fn rbac_is_read_only_on_exactly_the_resources_used() {
    let all = docs("rbac.yaml");
    let role = all.iter().find(|d| d["kind"] == "ClusterRole").unwrap();
    let mut resources = Vec::new();
    for r in role["rules"].as_sequence().unwrap() {
        assert_eq!(strings(&r["verbs"]), ["get", "list", "watch"]);
        for g in strings(&r["apiGroups"]) {
            for res in strings(&r["resources"]) {
                resources.push(format!("{g}/{res}"));
            }
        }
    }
    resources.sort();
    assert_eq!(
        resources,
        [
            "/namespaces",
            "/nodes",
            "/pods",
            "/services",
            "discovery.k8s.io/endpointslices",
            "elbv2.k8s.aws/targetgroupbindings",
            "networking.k8s.io/servicecidrs",
        ]
    );
    assert!(
        all.iter()
            .any(|d| d["kind"] == "ClusterRoleBinding" && d["subjects"][0]["name"] == "observer")
    );
}

#[test]
fn the_service_monitor_finds_the_headless_service() {
    let all = docs("service.yaml");
    let svc = all.iter().find(|d| d["kind"] == "Service").unwrap();
    assert_eq!(svc["spec"]["clusterIP"], "None");
    let sm = all.iter().find(|d| d["kind"] == "ServiceMonitor").unwrap();
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_mapping().unwrap() {
        assert_eq!(&svc["metadata"]["labels"][k], v);
    }
    assert_eq!(
        sm["spec"]["endpoints"][0]["port"],
        svc["spec"]["ports"][0]["name"]
    );
    let ds = &docs("daemonset.yaml")[0];
    assert_eq!(
        ds["spec"]["template"]["metadata"]["labels"],
        svc["spec"]["selector"]
    );
}

#[test]
fn the_configmap_is_accepted_by_the_agent() {
    let cm = &docs("configmap.yaml")[0];
    let file = std::env::temp_dir().join(format!("observer-cm-{}.yaml", std::process::id()));
    std::fs::write(&file, cm["data"]["config.yaml"].as_str().unwrap()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_observer"))
        .args(["run", "--check-config", "--kubernetes", "off", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("configuration OK"));
    let _ = std::fs::remove_file(file);
    // Every manifest the kustomization lists exists and parses.
    let k = &docs("kustomization.yaml")[0];
    for r in strings(&k["resources"]) {
        assert!(!docs(&r).is_empty(), "{r}");
    }
}
