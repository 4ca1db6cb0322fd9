//! Another agent's TCX program attached in front of ours later (`BPF_F_BEFORE` at the head of
//! the list) would run first, and a `TC_ACT_OK` of it would end the packet's processing before
//! the observer saw it. The agent finds it at its next reconcile, puts its own program back at
//! the head (the other stays attached), at most five times a minute; an agent that keeps
//! pushing ahead after that is left in front, and the interface is reported as not first
//! (`observer_interfaces_not_first`, `status`), which `ObserverBlind` reads.

mod support;

use std::time::Duration;

use aya::programs::{
    LinkOrder, SchedClassifier, TcAttachType,
    tc::{SchedClassifierLink, TcAttachOptions},
};
use support::*;
use testbed::{
    netns::Netns,
    topology::{Layout, Node},
};

/// TCX programs on `iface`'s ingress, in the order they run.
fn tcx_order(ns: &Netns, iface: &'static str) -> Vec<String> {
    ns.run(move || {
        let (_, progs) = SchedClassifier::query_tcx(iface, TcAttachType::Ingress).expect("query");
        progs
            .iter()
            .map(|p| p.name_as_str().unwrap_or("?").to_string())
            .collect()
    })
}

/// Attaches a program of "another agent" at the head of `iface`'s TCX ingress; it stays
/// attached while the returned link lives.
fn attach_in_front(ns: &Netns, iface: &'static str) -> SchedClassifierLink {
    ns.run(move || {
        let mut other =
            observer::kernel::object::load(&observer::kernel::object::LoadOptions::default())
                .expect("load");
        observer::kernel::object::load_noop(&mut other).expect("load tc_noop");
        let p = observer::kernel::object::classifier(&mut other, observer_common::names::PROG_NOOP)
            .expect("tc_noop");
        let id = p
            .attach_with_options(
                iface,
                TcAttachType::Ingress,
                TcAttachOptions::TcxOrder(LinkOrder::first()),
            )
            .expect("attach in front");
        p.take_link(id).expect("link")
    })
}

fn not_first(agent: &testbed::agent::AgentProc, iface: &str) -> bool {
    status(agent)["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == iface)
        .unwrap_or_else(|| panic!("{iface} not attached"))["not_first"]
        == true
}

#[test]
fn a_tcx_program_put_in_front_of_ours_is_moved_behind_it_or_reported() {
    ports_from(19_700);
    let n = Node::new(Layout::VpcCni);
    let up = n.uplinks[0];
    let agent = start(&n, "tcxfront", &["--reconcile-interval", "1s"]);
    assert_eq!(tcx_order(&n.node, up), ["observer_uplink"]);
    let mut others = vec![attach_in_front(&n.node, up)];
    assert_eq!(tcx_order(&n.node, up), ["tc_noop", "observer_uplink"]);
    wait_for("ours at the head again", Duration::from_secs(5), || {
        tcx_order(&n.node, up).first().map(String::as_str) == Some("observer_uplink")
    });
    assert_eq!(
        tcx_order(&n.node, up),
        ["observer_uplink", "tc_noop"],
        "the other stays, ours runs once"
    );
    assert!(!not_first(&agent, up));
    let m = metrics(&n, &agent);
    assert_eq!(sample(&m, "observer_interfaces_not_first", ""), Some(0.0));
    // It keeps pushing ahead: four more moves make five in the minute, then the agent stops.
    for round in 2..=5 {
        others.push(attach_in_front(&n.node, up));
        wait_for(
            &format!("ours at the head again, round {round}"),
            Duration::from_secs(5),
            || tcx_order(&n.node, up).first().map(String::as_str) == Some("observer_uplink"),
        );
    }
    others.push(attach_in_front(&n.node, up));
    wait_for(
        "the interface reported not first",
        Duration::from_secs(5),
        || not_first(&agent, up),
    );
    assert_eq!(
        tcx_order(&n.node, up).first().map(String::as_str),
        Some("tc_noop"),
        "the agent moved a sixth time"
    );
    let m = metrics(&n, &agent);
    assert_eq!(sample(&m, "observer_interfaces_not_first", ""), Some(1.0));
    assert_eq!(log_count(&agent, "ours is in front again"), 5);
    assert!(
        String::from_utf8_lossy(&agent.cli(&["status"]).stdout).contains("NOT FIRST"),
        "status says so"
    );
    // The other agent goes away: ours is first again, and no longer reported.
    others.clear();
    wait_for("first again", Duration::from_secs(5), || {
        !not_first(&agent, up)
    });
    assert_eq!(tcx_order(&n.node, up), ["observer_uplink"]);
    let m = metrics(&n, &agent);
    assert_eq!(sample(&m, "observer_interfaces_not_first", ""), Some(0.0));
}
