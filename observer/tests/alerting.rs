//! Alerting and dashboards end to end: the rules pass promtool's check and unit tests; an
//! alert about a direct access fires in a real Prometheus scraping a real agent and reaches a
//! real Alertmanager, while NodePort and in-cluster traffic fire nothing; the agent's own push
//! reaches Alertmanager and folds repeats; the dashboard only queries metrics the agent
//! exports. Prometheus and Alertmanager run inside the test's namespace, on loopback.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    process::Command,
    sync::atomic::{AtomicU16, Ordering},
    thread,
    time::{Duration, Instant},
};

use testbed::{
    agent::AgentProc,
    monitoring::{alertmanager, fast_rules, prometheus},
    netns::Netns,
    topology::{Layout, Node},
    traffic::{Servers, http_get, tcp_get},
};

const BIN: &str = env!("CARGO_BIN_EXE_observer");
static PORT: AtomicU16 = AtomicU16::new(19_300);

fn port() -> u16 {
    PORT.fetch_add(1, Ordering::Relaxed)
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("observer-alerting-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn promtool(args: &[&str]) -> String {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(root().join("deploy/prometheus"))
        .output()
        .expect("promtool (Debian package prometheus; cargo xtask test installs it)");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "promtool {args:?}:\n{text}");
    text
}

#[test]
fn rules_pass_promtool_check_and_unit_tests() {
    let check = promtool(&["check", "rules", "observer-rules.yml"]);
    assert!(check.contains("SUCCESS: 14 rules found"), "{check}");
    let test = promtool(&["test", "rules", "observer-rules.test.yml"]);
    assert!(test.contains("SUCCESS"), "{test}");
    // Every rule has a runbook that exists.
    let rules =
        std::fs::read_to_string(root().join("deploy/prometheus/observer-rules.yml")).unwrap();
    let runbooks: BTreeSet<&str> = rules
        .lines()
        .filter_map(|l| l.trim().strip_prefix("runbook_url: "))
        .collect();
    assert_eq!(runbooks.len(), 4);
    for url in runbooks {
        let file = url.rsplit_once("/blob/main/").unwrap().1;
        assert!(root().join(file).exists(), "runbook {file} is missing");
    }
}

fn am_alerts(ns: &Netns, am_port: u16) -> Vec<serde_json::Value> {
    let (code, body) = http_get(ns, am_port, "/api/v2/alerts").expect("alertmanager API");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str::<Vec<serde_json::Value>>(&body).expect("alerts JSON")
}

fn direct_alerts(ns: &Netns, am_port: u16) -> Vec<serde_json::Value> {
    am_alerts(ns, am_port)
        .into_iter()
        .filter(|a| a["labels"]["alertname"] == "ObserverDirectPodAccess")
        .collect()
}

/// Waits until Prometheus has evaluated rule group `group` `n` more times (its
/// `lastEvaluation` changed `n` times): what was scraped before the call has been judged.
fn wait_rule_evaluations(ns: &Netns, prom_port: u16, group: &str, n: usize) {
    let last = || -> String {
        let (_, body) = http_get(ns, prom_port, "/api/v1/rules").expect("rules API");
        let v: serde_json::Value = serde_json::from_str(&body).expect("rules JSON");
        v["data"]["groups"]
            .as_array()
            .expect("groups")
            .iter()
            .find(|g| g["name"] == group)
            .unwrap_or_else(|| panic!("no rule group {group}: {body}"))["lastEvaluation"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    };
    let mut seen = last();
    let mut changes = 0;
    let deadline = Instant::now() + Duration::from_secs(30);
    while changes < n {
        assert!(
            Instant::now() < deadline,
            "{group} was not evaluated {n} times"
        );
        thread::sleep(Duration::from_millis(100));
        let now = last();
        if now != seen {
            changes += 1;
            seen = now;
        }
    }
}

fn args(n: &Node) -> Vec<String> {
    let mut a = vec![
        "--service-cidr".into(),
        n.service_cidr.into(),
        "--cluster-cidr".into(),
        format!("{}/32", n.peer_ip),
    ];
    if let Some(c) = n.cluster_cidr {
        a.extend(["--cluster-cidr".into(), c.into()]);
    }
    a
}

#[test]
fn a_direct_access_alert_reaches_alertmanager_and_nodeport_traffic_does_not() {
    let n = Node::new(Layout::Calico);
    let d = dir("e2e");
    let mut servers = Servers::new();
    servers.tcp(&n.pods[0].ns, 80);
    let a = args(&n);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let agent = AgentProc::start(BIN.as_ref(), &n.node, &d.join("agent"), port(), &a);
    let am = alertmanager(&n.node, &d, port());
    let prom = prometheus(
        &n.node,
        &d,
        port(),
        &[agent.metrics_port],
        &fast_rules(&root().join("deploy/prometheus/observer-rules.yml"), &d),
        am.port,
    );

    // Only NodePort and in-cluster traffic: several evaluation cycles, nothing fires.
    for _ in 0..3 {
        assert_eq!(
            tcp_get(&n.outside, None, n.node_ip, n.nodeport)
                .1
                .as_deref(),
            Ok("hello\n")
        );
        assert_eq!(
            tcp_get(&n.peer, Some(n.peer_ip), n.pods[0].ip, 80)
                .1
                .as_deref(),
            Ok("hello\n")
        );
        assert_eq!(
            tcp_get(&n.peer, Some(n.peer_pod_ip), n.pods[0].ip, 80)
                .1
                .as_deref(),
            Ok("hello\n")
        );
    }
    // Make sure Prometheus scrapes the agent, so the silence means something.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, body) = http_get(
            &n.node,
            prom.port,
            "/api/v1/query?query=observer_flows_total%7Bverdict%3D%22nodeport%22%7D",
        )
        .unwrap();
        if body.contains("\"nodeport\"") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never scraped the agent: {body}"
        );
        thread::sleep(Duration::from_millis(500));
    }
    // The rules (with `for: 0s`) are evaluated over those samples: two evaluations of the
    // direct-access group that began after the samples were there would have fired.
    wait_rule_evaluations(&n.node, prom.port, "observer.direct-pod-access", 2);
    let (_, rules) = http_get(&n.node, prom.port, "/api/v1/alerts").unwrap();
    assert!(!rules.contains("ObserverDirectPodAccess"), "{rules}");
    assert!(
        direct_alerts(&n.node, am.port).is_empty(),
        "NodePort/in-cluster traffic fired an alert"
    );

    // A direct access: the alert reaches Alertmanager with the pod, port and state.
    let started = Instant::now();
    assert_eq!(
        tcp_get(&n.outside, None, n.pods[0].ip, 80).1.as_deref(),
        Ok("hello\n")
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let alert = loop {
        if let Some(a) = direct_alerts(&n.node, am.port).into_iter().next() {
            break a;
        }
        assert!(Instant::now() < deadline, "no alert reached Alertmanager");
        thread::sleep(Duration::from_millis(250));
    };
    println!(
        "direct access -> Alertmanager through Prometheus: {:?}",
        started.elapsed()
    );
    let l = &alert["labels"];
    assert_eq!(l["pod_name"], n.pods[0].veth);
    assert_eq!(l["port"], "80");
    assert_eq!(l["protocol"], "tcp");
    assert_eq!(l["state"], "answered");
    assert_eq!(l["severity"], "critical");
    assert!(
        alert["annotations"]["summary"]
            .as_str()
            .unwrap()
            .contains("the pod served the outsider")
    );
    assert!(
        alert["annotations"]["runbook_url"]
            .as_str()
            .unwrap()
            .ends_with("observer-direct-pod-access.md")
    );
    // The agent itself is healthy: no other alert of ours.
    for a in am_alerts(&n.node, am.port) {
        assert_eq!(a["labels"]["alertname"], "ObserverDirectPodAccess", "{a}");
    }
    drop(servers);
}

#[test]
fn the_agent_pushes_to_alertmanager_folds_repeats_and_survives_it_being_down() {
    let n = Node::new(Layout::VpcCni);
    let d = dir("push");
    let mut servers = Servers::new();
    servers.tcp(&n.pods[0].ns, 80);
    servers.tcp(&n.pods[1].ns, 80);
    let am_port = port();
    let mut a = args(&n);
    a.extend([
        "--alertmanager-url".into(),
        format!("http://127.0.0.1:{am_port}"),
    ]);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    // Alertmanager is not up yet: the agent keeps working and retries.
    let agent = AgentProc::start(BIN.as_ref(), &n.node, &d.join("agent"), port(), &a);
    assert_eq!(
        tcp_get(&n.outside, None, n.pods[0].ip, 80).1.as_deref(),
        Ok("hello\n")
    );
    // The alert is pushed once the flow settled (the pod's answer known): the push fails.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, m) = http_get(&n.node, agent.metrics_port, "/metrics").unwrap();
        if m.contains("observer_alertmanager_pushes_total{result=\"error\"}") {
            break;
        }
        assert!(Instant::now() < deadline, "no failed push:\n{m}");
        thread::sleep(Duration::from_millis(100));
    }
    assert!(agent.cli(&["status"]).status.success());
    // Alertmanager comes up: the pending alert gets through after the backoff.
    let am = alertmanager(&n.node, &d, am_port);
    let deadline = Instant::now() + Duration::from_secs(30);
    while direct_alerts(&n.node, am.port).is_empty() {
        assert!(Instant::now() < deadline, "the pending alert never arrived");
        thread::sleep(Duration::from_millis(200));
    }
    // A new access arrives within about a second; repeats of the same (source, pod, port)
    // are folded into the first.
    let started = Instant::now();
    for _ in 0..5 {
        assert_eq!(
            tcp_get(&n.outside, None, n.pods[1].ip, 80).1.as_deref(),
            Ok("hello\n")
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let pod_b: Vec<serde_json::Value> = loop {
        let v: Vec<_> = direct_alerts(&n.node, am.port)
            .into_iter()
            .filter(|a| a["labels"]["pod_name"] == n.pods[1].veth)
            .collect();
        if !v.is_empty() {
            break v;
        }
        assert!(Instant::now() < deadline, "no pushed alert for pod B");
        thread::sleep(Duration::from_millis(50));
    };
    println!(
        "direct access -> Alertmanager by the agent's push: {:?}",
        started.elapsed()
    );
    assert_eq!(pod_b.len(), 1, "{pod_b:#?}");
    // The labels of the rule it stands for: the agent's severity (`unrated` without
    // Kubernetes: critical), the node, the state the pod's answer settled to, the origin, the
    // team.
    let labels = &pod_b[0]["labels"];
    let node = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    for (k, v) in [
        ("alertname", "ObserverDirectPodAccess"),
        ("source", "observer-agent"),
        ("port", "80"),
        ("protocol", "tcp"),
        ("severity", "critical"),
        ("state", "answered"),
        ("origin", "seen_start"),
        ("team", "platform"),
        ("node", node.trim()),
    ] {
        assert_eq!(labels[k], v, "{k}: {labels}");
    }
    // One folding path: the four repeats are folded once, in the agent's alert lines, and the
    // push sends what those lines say (the first now, the summary at the window's end).
    thread::sleep(Duration::from_millis(1200));
    let (_, m) = http_get(&n.node, agent.metrics_port, "/metrics").unwrap();
    let folded: f64 = m
        .lines()
        .find(|l| l.starts_with("observer_alerts_folded_total "))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap();
    assert_eq!(folded, 4.0, "{m}");
    assert!(m.contains("observer_alertmanager_pushes_total{result=\"ok\"}"));
    drop(servers);
}

/// Metric names (observer_*) in a PromQL expression.
fn metric_names(expr: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let b = expr.as_bytes();
    let mut i = 0;
    while let Some(pos) = expr[i..].find("observer_") {
        let start = i + pos;
        let mut end = start;
        while end < b.len() && (b[end].is_ascii_alphanumeric() || b[end] == b'_') {
            end += 1;
        }
        out.insert(expr[start..end].to_string());
        i = end;
    }
    out
}

#[test]
fn the_dashboard_and_rules_only_use_exported_metrics() {
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("deploy/grafana/observer-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut used = BTreeSet::new();
    let mut exprs = 0;
    for p in dash["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let e = t["expr"].as_str().expect("expr");
            used.extend(metric_names(e));
            exprs += 1;
        }
    }
    assert!(exprs >= 10);
    let rules =
        std::fs::read_to_string(root().join("deploy/prometheus/observer-rules.yml")).unwrap();
    used.extend(metric_names(&rules));

    // A live agent that has seen a direct access, so every labelled family has a sample.
    let n = Node::new(Layout::Calico);
    let mut servers = Servers::new();
    servers.tcp(&n.pods[0].ns, 80);
    let a = args(&n);
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let agent = AgentProc::start(BIN.as_ref(), &n.node, &dir("dash"), port(), &a);
    assert_eq!(
        tcp_get(&n.outside, None, n.pods[0].ip, 80).1.as_deref(),
        Ok("hello\n")
    );
    // Once the access settled, every labelled family has its samples.
    let deadline = Instant::now() + Duration::from_secs(15);
    let m = loop {
        let (_, m) = http_get(&n.node, agent.metrics_port, "/metrics").unwrap();
        if m.contains("observer_direct_pod_access_bytes_total{") {
            break m;
        }
        assert!(Instant::now() < deadline, "the access never settled:\n{m}");
        thread::sleep(Duration::from_millis(100));
    };
    let exported: BTreeSet<String> = m
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(String::from)
        .collect();
    // Families that have samples only after a flood lost events, after an evasion, or with a
    // malformed declaration under the Kubernetes inventory: the flood test in agent_limits.rs,
    // the evasion test and declared_sources.rs scrape them from a live agent.
    const AFTER_AN_EVENT: [&str; 3] = [
        "observer_direct_pod_access_lost_flows_total",
        "observer_unjudged_pod_packets_total",
        "observer_declarations_refused",
    ];
    used.retain(|u| !AFTER_AN_EVENT.contains(&u.as_str()));
    let missing: Vec<&String> = used.iter().filter(|u| !exported.contains(*u)).collect();
    assert!(
        missing.is_empty(),
        "queried but not exported: {missing:?}\nexported: {exported:?}"
    );
    // And each of those families has samples now.
    for u in &used {
        assert!(
            m.lines()
                .any(|l| l.starts_with(u.as_str()) && !l.starts_with('#')),
            "{u} has no sample"
        );
    }
    drop(servers);
}
