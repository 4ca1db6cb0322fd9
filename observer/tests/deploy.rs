//! The manifests an SRE applies (the kustomize manifests, which `cargo xtask test` checks are
//! the Helm chart's rendering): valid YAML of the right shape, least privilege, a ConfigMap the
//! agent accepts, and a chart whose settings cover every flag of `observer run`.

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
        .filter(|d: &Value| !d.is_null())
        .collect()
}

/// The objects of the kustomize base and the monitoring overlay.
fn objects() -> Vec<Value> {
    let mut all = docs("base/observer.yaml");
    all.extend(docs("monitoring/monitoring.yaml"));
    all
}

/// The one object of `kind`.
fn kind(k: &str) -> Value {
    let all: Vec<Value> = objects().into_iter().filter(|d| d["kind"] == k).collect();
    assert_eq!(all.len(), 1, "one {k}");
    all[0].clone()
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
    let ds = &kind("DaemonSet");
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
    // The runtime's default seccomp profile, on the pod and the container (containerd >= 1.6.9
    // admits bpf() with CAP_BPF and perf_event_open() with CAP_PERFMON; docs/security.md).
    assert_eq!(
        spec["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    assert_eq!(sc["seccompProfile"]["type"], "RuntimeDefault");
    // A CPU request, no CPU limit: throttled during a flood is when events are lost.
    assert!(!c["resources"]["requests"]["cpu"].is_null());
    assert!(c["resources"]["limits"]["cpu"].is_null());
    // /metrics on the node's own address (the downward API), not every address of the host.
    let env = |name: &str| {
        c["env"]
            .as_sequence()
            .unwrap()
            .iter()
            .find(|e| e["name"] == name)
            .unwrap_or_else(|| panic!("{name}"))
            .clone()
    };
    assert_eq!(
        env("NODE_IP")["valueFrom"]["fieldRef"]["fieldPath"],
        "status.hostIP"
    );
    assert_eq!(env("OBSERVER_METRICS_ADDR")["value"], "$(NODE_IP):19962");
    // A change of the settings rolls the agents.
    assert!(
        ds["spec"]["template"]["metadata"]["annotations"]["checksum/config"]
            .as_str()
            .is_some_and(|s| s.len() == 64)
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
    let all = objects();
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
    let svc = &kind("Service");
    assert_eq!(svc["spec"]["clusterIP"], "None");
    let sm = &kind("ServiceMonitor");
    for (k, v) in sm["spec"]["selector"]["matchLabels"].as_mapping().unwrap() {
        assert_eq!(&svc["metadata"]["labels"][k], v);
    }
    assert_eq!(
        sm["spec"]["endpoints"][0]["port"],
        svc["spec"]["ports"][0]["name"]
    );
    let ds = &kind("DaemonSet");
    for (k, v) in svc["spec"]["selector"].as_mapping().unwrap() {
        assert_eq!(&ds["spec"]["template"]["metadata"]["labels"][k], v);
    }
}

#[test]
fn the_configmap_is_accepted_by_the_agent() {
    let cm = &kind("ConfigMap");
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
    // Every manifest the kustomizations list exists and parses.
    for dir in ["", "base/", "monitoring/"] {
        for r in strings(&docs(&format!("{dir}kustomization.yaml"))[0]["resources"]) {
            let path = format!("{dir}{r}");
            if root().join("deploy/kubernetes").join(&path).is_dir() {
                assert!(
                    !docs(&format!("{path}/kustomization.yaml")).is_empty(),
                    "{path}"
                );
            } else {
                assert!(!docs(&path).is_empty(), "{path}");
            }
        }
    }
}

/// The flags of `observer run`, from its help.
fn run_flags() -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_observer"))
        .args(["run", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout).to_string();
    let mut flags: Vec<String> = help
        .lines()
        .filter_map(|l| l.trim_start().strip_prefix("--"))
        .filter_map(|l| l.split([' ', '\n']).next())
        .filter(|f| *f != "help")
        .map(String::from)
        .collect();
    flags.sort();
    flags
}

#[test]
fn the_charts_settings_cover_every_flag_of_the_agent() {
    let text = std::fs::read_to_string(root().join("deploy/helm/observer/values.yaml")).unwrap();
    let values: Value = serde_yaml_ng::from_str(&text).unwrap();
    let mut covered: Vec<String> = values["config"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_string())
        .collect();
    // What the chart sets itself: from the node (name, address), its own volumes,
    // `metrics.*` and `alertmanager.*`; --check-config is a command-line check, not a setting.
    let daemonset =
        std::fs::read_to_string(root().join("deploy/helm/observer/templates/daemonset.yaml"))
            .unwrap();
    for flag in [
        "kubernetes",
        "node-name",
        "metrics-addr",
        "state-dir",
        "config",
        "alertmanager-url",
        "alertmanager-ca-file",
        "alertmanager-bearer-token-file",
        "alertmanager-user",
        "alertmanager-password-file",
        "metrics-tls-cert-file",
        "metrics-tls-key-file",
        "metrics-bearer-token-file",
    ] {
        let env = format!("OBSERVER_{}", flag.to_uppercase().replace('-', "_"));
        assert!(daemonset.contains(&env), "the chart sets {env}");
        covered.push(flag.into());
    }
    // The socket's default is the directory the chart mounts.
    assert!(daemonset.contains("mountPath: /run/observer"));
    covered.extend(["socket".into(), "check-config".into()]);
    covered.sort();
    assert_eq!(
        covered,
        run_flags(),
        "every flag of `observer run` is under `config` in values.yaml or set by the chart"
    );
}
