//! Direct access the SREs expect, declared where it belongs (SCENARIOS row 23): a pod's or its
//! namespace's `observer.io/allowed-sources` annotation names the sources allowed to reach the
//! pod's IP straight, and on which ports. Such a flow is shown as `allowed` with the
//! declaration in `flows` and `explain`, counted apart, never alerted on; a malformed
//! annotation is refused whole and reported (log, metric, `status`), and disables nothing else.
//! With the fixture API server through the production kube-rs code.

mod support;

use std::time::Duration;

use serde_json::Value;
use support::*;
use testbed::{
    agent::AgentProc,
    kubeapi::{
        KubeApi, NAMESPACES, NODES, PODS,
        fixtures::{namespace, pod, vpc_node, web_pod, with_allowed_sources},
    },
    topology::{Layout, Node},
    traffic::{Servers, tcp_get, tcp_open},
};

const ME: &str = "ip-10-0-7-223.ec2.internal";

fn explained(agent: &AgentProc, src: &str, dst: &str) -> Value {
    let o = agent.cli(&["explain", src, dst, "--json"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_json::from_slice(&o.stdout).unwrap()
}

#[test]
fn declared_sources_are_allowed_with_their_rule_and_a_malformed_one_is_reported() {
    ports_from(19_930);
    let n = Node::new(Layout::VpcCni);
    let (pod_a, pod_b) = (n.pods[0].ip, n.pods[1].ip);
    let outsider = n.outside_ip;
    let api = KubeApi::start(&n.node, next_port());
    api.apply(NODES, vpc_node(ME, "10.0.7.223"));
    // Pod A declares its scraper outside the cluster on :80; its namespace's own declaration
    // is malformed (`http` is no protocol), which must not take pod A's with it.
    api.apply(
        PODS,
        with_allowed_sources(web_pod(ME, pod_a), &format!("{outsider}/32 tcp/80")),
    );
    api.apply(NAMESPACES, namespace("shop", Some("10.0.0.0/8 http/80")));
    // Pod B is declared by its namespace: a peered network on :80.
    api.apply(
        PODS,
        pod(
            "metrics",
            "exporter-7854ff8877-b2x9q",
            "exporter",
            ME,
            pod_b,
            &[8080, 9000],
        ),
    );
    api.apply(
        NAMESPACES,
        namespace("metrics", Some("10.0.6.0/24 tcp/80, 192.168.0.0/16")),
    );
    let servers = Servers::for_node(&n);
    let agent = start_with_kubeconfig(&n, &api, "declared", ME, &["--peer-wait", "2s"]);
    wait_for("the first sync", Duration::from_secs(20), || {
        status(&agent)["inventory"]["synced"] == true
    });

    // The malformed declaration: refused whole, reported three ways.
    wait_for(
        "the refused declaration in status",
        Duration::from_secs(10),
        || {
            status(&agent)["inventory"]["refused_declarations"]
                .as_array()
                .is_some_and(|r| !r.is_empty())
        },
    );
    let refused = status(&agent)["inventory"]["refused_declarations"].clone();
    assert_eq!(refused.as_array().unwrap().len(), 1, "{refused}");
    assert_eq!(refused[0]["scope"], "namespace");
    assert_eq!(refused[0]["namespace"], "shop");
    assert!(
        refused[0]["error"]
            .as_str()
            .unwrap()
            .contains("\"http\" is not tcp, udp or sctp"),
        "{refused}"
    );
    assert_eq!(
        sample(
            &metrics(&n, &agent),
            "observer_declarations_refused",
            "object_name=\"\",object_namespace=\"shop\",scope=\"namespace\""
        ),
        Some(1.0)
    );
    assert_eq!(
        log_count(&agent, "a declaration of allowed sources is malformed"),
        1,
        "{}",
        agent.log_text()
    );

    // explain judges as the tracker does.
    let e = explained(&agent, outsider, &format!("{pod_a}:80"));
    assert_eq!(
        (e["verdict"].as_str(), e["alert"].as_bool()),
        (Some("allowed"), Some(false))
    );
    assert_eq!(
        e["rule"],
        format!("pod annotation observer.io/allowed-sources: {outsider}/32 tcp/80")
    );
    assert_eq!(
        explained(&agent, outsider, &format!("{pod_a}:8080"))["verdict"],
        "direct_to_pod"
    );
    assert_eq!(
        explained(&agent, outsider, &format!("{pod_b}:80"))["verdict"],
        "allowed"
    );

    // Real connections: two declared, one not.
    assert!(tcp_get(&n.outside, None, pod_a, 80).1.is_ok());
    assert!(tcp_get(&n.outside, None, pod_b, 80).1.is_ok());
    let (_, undeclared) = tcp_open(&n.outside, pod_a, 8080);
    wait_for(
        "the undeclared access alerted",
        Duration::from_secs(20),
        || !alert_lines(&agent).is_empty(),
    );
    wait_refreshes(&agent, 3);
    let alerts = alert_lines(&agent);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0]["dst_port"], 8080);
    let rows = flows(&agent);
    let row = |dst: &str, port: u16| {
        rows.iter()
            .find(|r| r.dst == dst && r.dst_port == port)
            .unwrap_or_else(|| panic!("no flow to {dst}:{port} in {rows:#?}"))
    };
    assert_eq!(rows.len(), 3, "{rows:#?}");
    assert_eq!(row(pod_a, 80).verdict, "allowed");
    assert_eq!(
        row(pod_a, 80).rule,
        format!("pod annotation observer.io/allowed-sources: {outsider}/32 tcp/80")
    );
    assert!(
        row(pod_a, 80).reason.contains("declared allowed"),
        "{:?}",
        row(pod_a, 80)
    );
    assert_eq!(row(pod_b, 80).verdict, "allowed");
    assert_eq!(
        row(pod_b, 80).rule,
        "namespace annotation observer.io/allowed-sources: 10.0.6.0/24 tcp/80"
    );
    assert_eq!(row(pod_a, 8080).verdict, "direct_to_pod");
    let text = metrics(&n, &agent);
    assert_eq!(
        sample(
            &text,
            "observer_declared_direct_flows_total",
            "declared_by=\"pod\",pod_namespace=\"shop\",pod_workload=\"web\""
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            "observer_declared_direct_flows_total",
            "declared_by=\"namespace\",pod_namespace=\"metrics\",pod_workload=\"exporter\""
        ),
        Some(1.0)
    );
    let direct: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("observer_direct_pod_access_flows_total{"))
        .collect();
    assert_eq!(direct.len(), 1, "{direct:#?}");
    assert!(direct[0].contains("port=\"undeclared\""), "{direct:#?}");

    // The namespace's declaration is fixed: no longer refused, the metric's series gone.
    api.apply(NAMESPACES, namespace("shop", Some("10.0.0.0/8 tcp/80")));
    wait_for("the declaration accepted", Duration::from_secs(10), || {
        status(&agent)["inventory"]["refused_declarations"]
            .as_array()
            .is_some_and(|r| r.is_empty())
    });
    assert_eq!(
        sample(
            &metrics(&n, &agent),
            "observer_declarations_refused",
            "object_name=\"\",object_namespace=\"shop\",scope=\"namespace\""
        ),
        None
    );
    drop((undeclared, servers));
}
