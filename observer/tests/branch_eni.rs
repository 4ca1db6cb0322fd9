//! Security groups for pods (SCENARIOS row 22): a VPC CNI pod on a branch ENI sits behind a
//! `vlan…` veth and its route lives only in its VLAN's policy-routing table, beside the trunk's
//! VLAN link `vlan.eth.<id>`. The pod is learnt from the table a rule sends traffic to, judged,
//! and named by its veth; the VLAN link carries no program. (This kernel has no VLAN devices:
//! the topology's `add_branch_pod` says how the test wires the same routing without them.)

mod support;

use std::time::Duration;

use support::*;
use testbed::{
    topology::{Layout, Node},
    traffic::{Servers, tcp_get},
};

const BRANCH_POD: &str = "10.0.5.21";
const BRANCH_VETH: &str = "vlan1a2b3c4d5e6";

#[test]
fn a_branch_eni_pod_is_judged_and_the_vlan_link_left_alone() {
    ports_from(19_995);
    let mut n = Node::new(Layout::VpcCni);
    n.add_branch_pod(BRANCH_POD, BRANCH_VETH, 1);
    // Its route is in table 101 only.
    assert!(
        !n.node
            .sh(&["ip", "route", "show", "table", "main"])
            .contains(BRANCH_POD)
    );
    assert!(
        n.node
            .sh(&["ip", "route", "show", "table", "101"])
            .contains(BRANCH_POD)
    );
    let mut servers = Servers::new();
    servers.tcp(&n.pods[2].ns, 80);
    let agent = start(&n, "branch", &[]);

    let names = attached_names(&agent);
    assert!(names.contains(BRANCH_VETH), "{names:?}");
    assert!(
        !names.contains("vlan.eth.1"),
        "the trunk's VLAN link: {names:?}"
    );
    let s = status(&agent);
    let pods = s["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["role"] == "pod")
        .count();
    assert_eq!(pods, 3, "{s:#}");
    assert_eq!(s["inventory"]["pods"], 3, "{s:#}");

    // An outsider reaches the branch pod through the trunk ENI: flagged, answered, named.
    let (sport, got) = tcp_get(&n.outside, None, BRANCH_POD, 80);
    assert!(got.is_ok(), "the branch pod answered: {got:?}");
    let mut row = None;
    wait_for(
        "the branch pod's flow settled",
        Duration::from_secs(10),
        || {
            row = flows(&agent)
                .into_iter()
                .find(|f| f.src_port == sport && f.state == "answered");
            row.is_some()
        },
    );
    let row = row.unwrap();
    assert_eq!(
        (row.verdict.as_str(), row.dst.as_str(), row.pod.as_str()),
        ("direct_to_pod", BRANCH_POD, BRANCH_VETH)
    );
    assert_eq!(row.iface, "ens6");
    wait_for("the access counted", Duration::from_secs(10), || {
        sample(
            &metrics(&n, &agent),
            "observer_direct_pod_access_flows_total",
            &format!(
                "origin=\"seen_start\",pod_name=\"{BRANCH_VETH}\",pod_namespace=\"\",pod_workload=\"\",port=\"80\",protocol=\"tcp\",severity=\"unrated\",state=\"answered\""
            ),
        ) == Some(1.0)
    });
    drop(servers);
}
