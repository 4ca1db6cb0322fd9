//! The agent's start with the Kubernetes inventory on a VPC CNI node, where there is no cluster
//! CIDR: until the first full sync, a peer node looks like any VPC host. Flows first seen
//! before the sync are held, not alerted on, and judged again once it is in: the peer's is
//! cleared, the outsider's confirmed and alerted on. Through the production kube-rs code
//! against the fixture API server, which holds its list answers to make the sync late.

mod support;

use std::time::Duration;

use support::{alert_lines, flows, sample, status, wait_for};
use testbed::{
    agent::AgentProc,
    kubeapi::{
        KubeApi, NODES, PODS,
        fixtures::{vpc_node, web_pod},
    },
    topology::{Layout, Node},
    traffic::{Servers, http_get, tcp_get},
};

const ME: &str = "ip-10-0-7-223.ec2.internal";
const PEER: &str = "ip-10-0-12-177.ec2.internal";

fn scrape(n: &Node, agent: &AgentProc) -> String {
    http_get(&n.node, agent.metrics_port, "/metrics").unwrap().1
}

#[test]
fn flows_before_the_first_sync_are_held_and_judged_again() {
    support::ports_from(19_600);
    let n = Node::new(Layout::VpcCni);
    let api = KubeApi::start(&n.node, support::next_port());
    api.apply(NODES, vpc_node(ME, n.node_ip));
    api.apply(NODES, vpc_node(PEER, n.peer_ip));
    api.apply(PODS, web_pod(ME, n.pods[0].ip));
    let mut servers = Servers::new();
    servers.tcp(&n.pods[0].ns, 80);
    // The API answers no list until released: the agent starts, attaches, and waits.
    api.hold_lists(true);
    let agent = support::start_with_kubeconfig(&n, &api, "kstart", ME, &[]);
    let s = status(&agent);
    assert_eq!(s["inventory"]["synced"], false, "{s}");
    assert_eq!(
        sample(&scrape(&n, &agent), "observer_inventory_synced", ""),
        Some(0.0)
    );

    // The peer node and an outside host reach the pod on its IP.
    let pod_a = n.pods[0].ip;
    assert_eq!(
        tcp_get(&n.peer, None, pod_a, 80).1.as_deref(),
        Ok("hello\n")
    );
    assert_eq!(
        tcp_get(&n.outside, None, pod_a, 80).1.as_deref(),
        Ok("hello\n")
    );
    // Both look direct to the kernel now; both are held.
    wait_for("two held flows", Duration::from_secs(5), || {
        status(&agent)["held_flows"] == 2
    });
    // Past the settle time (1 s) and three flow refreshes, which would have counted and
    // alerted on them: still nothing.
    support::wait_refreshes(&agent, 3);
    assert_eq!(status(&agent)["held_flows"], 2);
    let m = scrape(&n, &agent);
    assert!(
        !m.contains("observer_direct_pod_access_flows_total{"),
        "counted before the sync:\n{m}"
    );
    assert!(alert_lines(&agent).is_empty(), "{:?}", alert_lines(&agent));
    let out = agent.cli(&["status"]);
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("first full sync pending: 2 direct flows held"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );

    // The lists arrive: the peer is a node, its flow was no direct access; the outsider's was.
    api.hold_lists(false);
    wait_for("the first sync", Duration::from_secs(20), || {
        status(&agent)["inventory"]["synced"] == true
    });
    // Judged `--peer-wait` (15 s) after its first packet, as every direct flow.
    wait_for("the outsider's alert", Duration::from_secs(30), || {
        !alert_lines(&agent).is_empty()
    });
    let alerts = alert_lines(&agent);
    assert_eq!(alerts.len(), 1, "{alerts:#?}");
    assert_eq!(alerts[0]["src"], n.outside_ip);
    assert_eq!(alerts[0]["pod"], "web-7854ff8877-z5nh5");
    let rows = flows(&agent);
    assert_eq!(rows.len(), 1, "{rows:#?}");
    assert_eq!(rows[0].src, n.outside_ip);
    let m = scrape(&n, &agent);
    assert_eq!(sample(&m, "observer_inventory_synced", ""), Some(1.0));
    assert_eq!(
        sample(&m, "observer_presync_flows_total", "result=\"cleared\""),
        Some(1.0)
    );
    assert_eq!(
        sample(&m, "observer_presync_flows_total", "result=\"confirmed\""),
        Some(1.0)
    );
    wait_for(
        "the outsider's flow counted",
        Duration::from_secs(10),
        || {
            scrape(&n, &agent)
                .lines()
                .filter(|l| l.starts_with("observer_direct_pod_access_flows_total{"))
                .count()
                == 1
        },
    );
    // From now on the peer's new flows are in cluster, never held.
    assert_eq!(
        tcp_get(&n.peer, None, pod_a, 80).1.as_deref(),
        Ok("hello\n")
    );
    support::wait_refreshes(&agent, 3);
    assert_eq!(status(&agent)["held_flows"], 0);
    assert_eq!(flows(&agent).len(), 1);
    assert_eq!(alert_lines(&agent).len(), 1);
    drop(servers);
}
