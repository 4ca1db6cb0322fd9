//! The shipped monitoring under the Prometheus Operator's label semantics: a real Prometheus
//! scrapes the agent with the target labels and `honor_labels` that the shipped ServiceMonitor
//! makes the Operator generate (read from the kustomize manifests, the chart's rendering: the
//! endpoint's port
//! name and path, `honorLabels`, its relabelings) and the labels the Operator always adds
//! (`namespace`, `service`, `pod`, `container`, `endpoint`, `job` of the agent's own pod). It
//! evaluates the shipped rules; the direct-access alert must name the attacked pod and the node,
//! not the agent's pod.
//!
//! The agent runs with the Kubernetes inventory (the fixture API), so the attacked pod has a
//! namespace and a name that would collide with the Operator's labels.

mod support;

use std::{
    path::{Path, PathBuf},
    thread,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use support::{status, wait_for};
use testbed::{
    kubeapi::{
        KubeApi, NODES, PODS,
        fixtures::{vpc_node, web_pod},
    },
    monitoring::{fast_rules, prometheus_with},
    netns::Netns,
    topology::{Layout, Node},
    traffic::{Servers, http_get, tcp_get},
};

const ME: &str = "ip-10-0-7-223.ec2.internal";
/// The agent's own pod, as the Operator's service discovery would name it.
const AGENT_POD: &str = "observer-x7k2p";

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .into()
}

/// The scrape config the Prometheus Operator generates for the shipped ServiceMonitor's
/// first endpoint, with the Kubernetes service discovery replaced by a static target that
/// carries the same `__meta_kubernetes_*` labels.
fn operator_scrape_config(agent_port: u16) -> String {
    let mut text =
        std::fs::read_to_string(root().join("deploy/kubernetes/base/observer.yaml")).unwrap();
    text.push_str(
        &std::fs::read_to_string(root().join("deploy/kubernetes/monitoring/monitoring.yaml"))
            .unwrap(),
    );
    let docs: Vec<serde_yaml_ng::Value> = serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| serde::Deserialize::deserialize(d).expect("YAML"))
        .collect();
    let kind = |k: &str| {
        docs.iter()
            .find(|d| d["kind"] == k)
            .unwrap_or_else(|| panic!("no {k} in the manifests"))
            .clone()
    };
    let svc = kind("Service");
    let sm = kind("ServiceMonitor");
    let ep = &sm["spec"]["endpoints"][0];
    let port_name = ep["port"].as_str().expect("endpoint port name");
    let path = ep["path"].as_str().unwrap_or("/metrics");
    let honor = ep["honorLabels"].as_bool().unwrap_or(false);
    let ns = sm["metadata"]["namespace"].as_str().unwrap();
    let svc_name = svc["metadata"]["name"].as_str().unwrap();
    // The Operator's own relabelings, then the ServiceMonitor's.
    let mut relabel = vec![
        json!({"source_labels": ["__meta_kubernetes_namespace"], "target_label": "namespace"}),
        json!({"source_labels": ["__meta_kubernetes_service_name"], "target_label": "service"}),
        json!({"source_labels": ["__meta_kubernetes_pod_name"], "target_label": "pod"}),
        json!({"source_labels": ["__meta_kubernetes_pod_container_name"], "target_label": "container"}),
        json!({"target_label": "job", "replacement": svc_name}),
        json!({"target_label": "endpoint", "replacement": port_name}),
    ];
    for r in ep["relabelings"].as_sequence().into_iter().flatten() {
        let mut out = serde_json::Map::new();
        for (k, v) in r.as_mapping().unwrap() {
            let key = match k.as_str().unwrap() {
                "sourceLabels" => "source_labels",
                "targetLabel" => "target_label",
                "action" => "action",
                "regex" => "regex",
                "replacement" => "replacement",
                "separator" => "separator",
                other => panic!("relabeling field {other} not translated"),
            };
            out.insert(key.into(), serde_json::to_value(v).unwrap());
        }
        relabel.push(Value::Object(out));
    }
    let config = json!([{
        "job_name": format!("serviceMonitor/{ns}/{}/0", sm["metadata"]["name"].as_str().unwrap()),
        "honor_labels": honor,
        "metrics_path": path,
        "static_configs": [{
            "targets": [format!("127.0.0.1:{agent_port}")],
            "labels": {
                "__meta_kubernetes_namespace": ns,
                "__meta_kubernetes_service_name": svc_name,
                "__meta_kubernetes_pod_name": AGENT_POD,
                "__meta_kubernetes_pod_container_name": "observer",
                "__meta_kubernetes_pod_node_name": ME,
                "__meta_kubernetes_endpoint_port_name": port_name,
            },
        }],
        "relabel_configs": relabel,
    }]);
    // JSON is YAML: one flow-style list item.
    format!("  - {}\n", config[0])
}

fn query(ns: &Netns, prom_port: u16, path: &str) -> Value {
    let (code, body) = http_get(ns, prom_port, path).expect("Prometheus API");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).expect("JSON")
}

#[test]
fn the_alert_names_the_attacked_pod_and_node_under_the_operators_labels() {
    let n = Node::new(Layout::VpcCni);
    let d = std::env::temp_dir().join(format!("observer-operator-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    support::ports_from(19_800);
    let api = KubeApi::start(&n.node, support::next_port());
    api.apply(NODES, vpc_node(ME, n.node_ip));
    api.apply(PODS, web_pod(ME, n.pods[0].ip));
    let agent = support::start_with_kubeconfig(&n, &api, "operator", ME, &[]);
    wait_for("the first sync", Duration::from_secs(20), || {
        status(&agent)["inventory"]["synced"] == true
    });
    let prom = prometheus_with(
        &n.node,
        &d,
        support::next_port(),
        &operator_scrape_config(agent.metrics_port),
        &fast_rules(&root().join("deploy/prometheus/observer-rules.yml"), &d),
        support::next_port(),
    );
    let mut servers = Servers::new();
    servers.tcp(&n.pods[0].ns, 80);
    assert_eq!(
        tcp_get(&n.outside, None, n.pods[0].ip, 80).1.as_deref(),
        Ok("hello\n")
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    let alert = loop {
        let v = query(&n.node, prom.port, "/api/v1/alerts");
        if let Some(a) = v["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["labels"]["alertname"] == "ObserverDirectPodAccess")
        {
            break a.clone();
        }
        assert!(Instant::now() < deadline, "no alert: {v}");
        thread::sleep(Duration::from_millis(250));
    };
    println!(
        "alert labels under the Operator's semantics: {}",
        alert["labels"]
    );
    // The scraped series carry the Operator's labels (the agent's own pod) beside the
    // attacked pod's, and none was renamed `exported_*`.
    let series = query(
        &n.node,
        prom.port,
        "/api/v1/query?query=observer_direct_pod_access_flows_total",
    );
    let s = &series["data"]["result"][0]["metric"];
    assert_eq!(s["namespace"], "observer", "{s}");
    assert_eq!(s["pod"], AGENT_POD, "{s}");
    assert_eq!(s["endpoint"], "metrics", "{s}");
    assert_eq!(s["pod_name"], "web-7854ff8877-z5nh5", "{s}");
    assert!(!s.to_string().contains("exported_"), "{s}");
    // The alert names the attacked pod, its workload and the node, with the rules' severity.
    let l = &alert["labels"];
    for (k, v) in [
        ("pod_namespace", "shop"),
        ("pod_name", "web-7854ff8877-z5nh5"),
        ("pod_workload", "web"),
        ("instance", ME),
        ("port", "80"),
        ("state", "answered"),
        ("severity", "critical"),
    ] {
        assert_eq!(l[k], v, "{k}: {l}");
    }
    assert!(
        l.get("pod").is_none() && l.get("namespace").is_none(),
        "{l}"
    );
    let summary = alert["annotations"]["summary"].as_str().unwrap();
    assert!(
        summary.contains("Pod shop/web-7854ff8877-z5nh5 ") && summary.contains(ME),
        "{summary}"
    );
    assert!(!summary.contains(AGENT_POD), "{summary}");
    drop(servers);
}
