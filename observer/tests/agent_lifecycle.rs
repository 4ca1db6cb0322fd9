//! The agent's life: pod interfaces churning under traffic, SIGTERM (everything detached),
//! SIGKILL then restart (exactly one copy attached), in TCX, netlink-pods, uplink-egress and
//! netlink mode (leftover filters replaced, other agents' filters and qdiscs untouched).

mod support;

use std::{process::Command, sync::atomic::Ordering, thread, time::Duration};

use aya::programs::TcAttachType;
use support::*;
use testbed::{
    netns::Netns,
    topology::{Layout, Node},
    traffic::{Servers, tcp_get},
};

#[test]
fn interface_churn_sigterm_and_sigkill() {
    ports_from(19_200);
    let n = Node::new(Layout::Calico);
    let mut agent = start(&n, "churn", &[]);
    assert_eq!(
        tcx_count(&n.node, "eth0", TcAttachType::Ingress, "observer_uplink"),
        1
    );
    // Traffic while 50 pod veths come and go.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pinger = {
        let stop = stop.clone();
        let ns = n.outside.name.clone();
        let pod = n.pods[0].ip;
        // Each ping is one echo request with its own identifier (the process id): one flow.
        thread::spawn(move || {
            let (mut runs, mut answered) = (0u64, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let ok = Command::new("ip")
                    .args(["netns", "exec", &ns, "ping", "-c", "1", "-W", "1", pod])
                    .output()
                    .is_ok_and(|o| o.status.success());
                runs += 1;
                answered += u64::from(ok);
            }
            (runs, answered)
        })
    };
    let names: Vec<String> = (0..50).map(|i| format!("veth{i:02}churn")).collect();
    for (i, name) in names.iter().enumerate() {
        n.node.sh(&[
            "ip",
            "link",
            "add",
            name,
            "type",
            "veth",
            "peer",
            "name",
            &format!("pc{i:02}"),
        ]);
    }
    wait_for("50 new veths attached", Duration::from_secs(10), || {
        let a = attached_names(&agent);
        names.iter().all(|n| a.contains(n))
    });
    for name in &names {
        n.node.sh(&["ip", "link", "del", name]);
    }
    wait_for("50 veths forgotten", Duration::from_secs(10), || {
        let a = attached_names(&agent);
        !names.iter().any(|n| a.contains(n))
    });
    stop.store(true, Ordering::Relaxed);
    let (runs, answered) = pinger.join().unwrap();
    assert_eq!(status(&agent)["attach_errors"], 0);
    // The traffic during the churn was seen as it was: each answered ping a direct ICMP flow
    // to pod A that the pod answered, and nothing else flagged.
    assert!(answered > 0, "no ping was answered in {runs} tries");
    wait_refreshes(&agent, 3);
    let rows = flows(&agent);
    assert!(
        rows.iter()
            .all(|f| f.protocol == "icmp" && f.dst == n.pods[0].ip && f.verdict == "direct_to_pod"),
        "{rows:#?}"
    );
    let seen_answered = rows.iter().filter(|f| f.state == "answered").count() as u64;
    assert!(
        seen_answered >= answered && rows.len() as u64 <= runs,
        "{answered} answered pings of {runs}, {seen_answered} answered flows of {}",
        rows.len()
    );
    let m = metrics(&n, &agent);
    let flagged = sample(
        &m,
        "observer_flows_total",
        "protocol=\"icmp\",verdict=\"direct_to_pod\"",
    )
    .unwrap_or(0.0);
    assert!(
        flagged >= answered as f64 && flagged <= runs as f64,
        "{flagged} flagged ICMP flows for {answered} answered pings of {runs}"
    );

    // SIGKILL: TCX links die with the process; a restart attaches exactly one copy.
    agent.signal(libc::SIGKILL);
    assert_eq!(
        tcx_count(&n.node, "eth0", TcAttachType::Ingress, "observer_uplink"),
        0
    );
    let mut agent = start(&n, "churn2", &[]);
    assert_eq!(
        tcx_count(&n.node, "eth0", TcAttachType::Ingress, "observer_uplink"),
        1
    );
    assert_eq!(
        tcx_count(
            &n.node,
            n.pods[0].veth,
            TcAttachType::Egress,
            "observer_to_pod"
        ),
        1
    );
    assert_eq!(
        tcx_count(
            &n.node,
            n.pods[0].veth,
            TcAttachType::Ingress,
            "observer_from_pod"
        ),
        1
    );
    // SIGTERM: everything detached, the socket removed, exit 0.
    let socket = agent.socket.clone();
    let status = agent.signal(libc::SIGTERM);
    assert!(status.success(), "{status}");
    for (iface, dir, prog) in [
        ("eth0", TcAttachType::Ingress, "observer_uplink"),
        (n.pods[0].veth, TcAttachType::Egress, "observer_to_pod"),
        (n.pods[0].veth, TcAttachType::Ingress, "observer_from_pod"),
    ] {
        assert_eq!(
            tcx_count(&n.node, iface, dir, prog),
            0,
            "{iface} still has {prog}"
        );
    }
    assert!(!socket.exists());
    assert!(
        n.node
            .sh(&["tc", "qdisc", "show"])
            .lines()
            .all(|l| !l.contains("clsact")),
        "a clsact qdisc was left"
    );
}

/// `netlink-pods`: the uplink keeps its TCX link, pod veths get netlink filters, which survive
/// a SIGKILL and are replaced (never stacked) by the next start, and go on SIGTERM.
#[test]
fn netlink_pods_mode_uses_filters_on_pod_veths() {
    ports_from(19_230);
    let n = Node::new(Layout::Calico);
    let mut servers = Servers::new();
    servers.tcp(&n.pods[0].ns, 80);
    let mut agent = start(&n, "nlpods", &["--attach-mode", "netlink-pods"]);
    let s = status(&agent);
    assert_eq!(s["attach_mode"], "uplinks tcx, pod veths netlink");
    let veth = n.pods[0].veth;
    // Our filters on the pod veth's (egress, ingress) hooks: to_pod and from_pod.
    let ours = || {
        let count = |hook: &str| {
            tc_filters(&n.node, veth, hook)
                .iter()
                .filter(|f| f.starts_with("observer_"))
                .count()
        };
        (count("egress"), count("ingress"))
    };
    assert_eq!(ours(), (1, 1));
    assert_eq!(
        tcx_count(&n.node, veth, TcAttachType::Egress, "observer_to_pod"),
        0
    );
    assert_eq!(
        tcp_get(&n.outside, None, n.pods[0].ip, 80).1.as_deref(),
        Ok("hello\n")
    );
    // The pod's answer was seen by from_pod through its netlink filter.
    wait_for("the direct flow answered", Duration::from_secs(5), || {
        flows(&agent).iter().any(|f| f.state == "answered")
    });
    agent.signal(libc::SIGKILL);
    assert_eq!(
        tcx_count(&n.node, "eth0", TcAttachType::Ingress, "observer_uplink"),
        0
    );
    assert_eq!(ours(), (1, 1));
    let mut agent = start(&n, "nlpods2", &["--attach-mode", "netlink-pods"]);
    assert_eq!(
        tcx_count(&n.node, "eth0", TcAttachType::Ingress, "observer_uplink"),
        1
    );
    assert_eq!(ours(), (1, 1));
    assert!(agent.signal(libc::SIGTERM).success());
    assert_eq!(ours(), (0, 0));
    assert!(
        n.node
            .sh(&["tc", "qdisc", "show"])
            .lines()
            .all(|l| !l.contains("clsact")),
        "a clsact qdisc was left"
    );
}

/// `uplink-egress`: the uplinks carry two TCX programs (ingress and egress), and no pod veth
/// carries any, not even one created while the agent runs, nor a filter a killed netlink-pods
/// run left; the pod's answers are still seen.
/// A SIGKILL takes the links with it, and a restart attaches exactly one copy again.
#[test]
fn uplink_egress_mode_attaches_nothing_to_pod_veths() {
    ports_from(19_260);
    let mut n = Node::new(Layout::Calico);
    let mut servers = Servers::new();
    servers.tcp(&n.pods[0].ns, 80);
    // A netlink-pods run killed before: its filters stay on the pod veths until a start
    // removes them, whatever the new mode.
    let mut old = start(&n, "egress0", &["--attach-mode", "netlink-pods"]);
    old.signal(libc::SIGKILL);
    assert!(
        tc_filters(&n.node, n.pods[0].veth, "ingress")
            .iter()
            .any(|f| f.starts_with("observer_")),
        "the killed run's filter"
    );
    let mode = ["--attach-mode", "uplink-egress"];
    let mut agent = start(&n, "egress1", &mode);
    let s = status(&agent);
    assert_eq!(
        s["attach_mode"],
        "uplinks tcx (ingress and egress), pod veths none"
    );
    let ours_on_uplink = |n: &Node| {
        (
            tcx_count(&n.node, "eth0", TcAttachType::Ingress, "observer_uplink"),
            tcx_count(&n.node, "eth0", TcAttachType::Egress, "observer_egress"),
        )
    };
    assert_eq!(ours_on_uplink(&n), (1, 1));
    n.add_pod("172.16.30.1", "calic09168731f7");
    servers.tcp(&n.pods.last().expect("late pod").ns, 80);
    wait_for("the late pod known", Duration::from_secs(5), || {
        status(&agent)["inventory"]["pods"] == n.pods.len()
    });
    for p in &n.pods {
        for dir in [TcAttachType::Ingress, TcAttachType::Egress] {
            let any_ours = n.node.run({
                let veth = p.veth;
                move || {
                    aya::programs::SchedClassifier::query_tcx(veth, dir)
                        .expect("tcx query")
                        .1
                        .iter()
                        .any(|q| q.name_as_str().is_some_and(|n| n.starts_with("observer_")))
                }
            });
            assert!(!any_ours, "a program of ours on {} {dir:?}", p.veth);
        }
        for hook in ["ingress", "egress"] {
            assert!(
                tc_filters(&n.node, p.veth, hook).is_empty(),
                "a filter of ours left on {} {hook}",
                p.veth
            );
        }
    }
    for p in [&n.pods[0], n.pods.last().unwrap()] {
        assert_eq!(
            tcp_get(&n.outside, None, p.ip, 80).1.as_deref(),
            Ok("hello\n")
        );
    }
    wait_for("both direct flows answered", Duration::from_secs(5), || {
        flows(&agent)
            .iter()
            .filter(|f| f.state == "answered")
            .count()
            == 2
    });
    agent.signal(libc::SIGKILL);
    assert_eq!(ours_on_uplink(&n), (0, 0), "TCX links go with the process");
    let mut agent = start(&n, "egress2", &mode);
    assert_eq!(ours_on_uplink(&n), (1, 1));
    assert!(agent.signal(libc::SIGTERM).success());
    assert_eq!(ours_on_uplink(&n), (0, 0));
}

/// TC filter program names on a clsact hook, from `tc filter show`.
fn tc_filters(ns: &Netns, iface: &str, hook: &str) -> Vec<String> {
    ns.sh(&["tc", "filter", "show", "dev", iface, hook])
        .lines()
        .filter_map(|l| {
            l.split_whitespace()
                .skip_while(|w| *w != "name")
                .nth(1)
                .map(str::to_string)
        })
        .collect()
}

#[test]
fn netlink_mode_replaces_leftovers_and_leaves_others_alone() {
    use aya::programs::tc::{NlOptions, TcAttachOptions};
    let n = Node::new(Layout::Calico);
    // Another agent's filter on eth0 (clsact ingress, priority 200).
    let mut other =
        observer::kernel::object::load(&observer::kernel::object::LoadOptions::default())
            .expect("load");
    observer::kernel::object::load_noop(&mut other).expect("load tc_noop");
    let node_ns = format!("/run/netns/{}", n.node.name);
    std::thread::scope(|s| {
        s.spawn(|| {
            let f = std::fs::File::open(&node_ns).unwrap();
            // SAFETY: setns on a namespace fd for this thread only.
            assert_eq!(
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&f), libc::CLONE_NEWNET) },
                0
            );
            let _ = aya::programs::tc::qdisc_add_clsact("eth0");
            let p =
                observer::kernel::object::classifier(&mut other, observer_common::names::PROG_NOOP)
                    .unwrap();
            let opts = TcAttachOptions::Netlink(NlOptions {
                priority: 200,
                ..NlOptions::default()
            });
            let id = p
                .attach_with_options("eth0", TcAttachType::Ingress, opts)
                .expect("attach the other filter");
            // Keep it after `other` is dropped, as a separate agent would.
            std::mem::forget(p.take_link(id).expect("link"));
        });
    });
    let mut servers = Servers::new();
    servers.tcp(&n.pods[0].ns, 80);
    let mut agent = start(&n, "netlink1", &["--attach-mode", "netlink"]);
    let ours = |iface: &str, hook: &str| {
        tc_filters(&n.node, iface, hook)
            .iter()
            .filter(|f| f.starts_with("observer_"))
            .count()
    };
    assert_eq!(
        ours("eth0", "ingress"),
        1,
        "{:?}",
        tc_filters(&n.node, "eth0", "ingress")
    );
    assert_eq!(ours(n.pods[0].veth, "egress"), 1);
    let s = status(&agent);
    assert_eq!(s["attach_mode"], "netlink");
    let eth0 = s["interfaces"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "eth0")
        .unwrap()
        .clone();
    assert!(eth0["foreign"].to_string().contains("tc_noop"), "{eth0}");
    // SIGKILL leaves the filters; the next start replaces them instead of stacking, in TCX
    // mode too.
    agent.signal(libc::SIGKILL);
    assert_eq!(ours("eth0", "ingress"), 1);
    let mut tcx = start(&n, "netlink-then-tcx", &["--attach-mode", "tcx"]);
    assert_eq!(ours("eth0", "ingress"), 0);
    assert_eq!(ours(n.pods[0].veth, "egress"), 0);
    assert_eq!(
        tcx_count(&n.node, "eth0", TcAttachType::Ingress, "observer_uplink"),
        1
    );
    tcx.signal(libc::SIGKILL);
    let mut agent = start(&n, "netlink1b", &["--attach-mode", "netlink"]);
    agent.signal(libc::SIGKILL);
    assert_eq!(ours("eth0", "ingress"), 1);
    let mut agent = start(&n, "netlink2", &["--attach-mode", "netlink"]);
    assert_eq!(
        ours("eth0", "ingress"),
        1,
        "{:?}",
        tc_filters(&n.node, "eth0", "ingress")
    );
    assert_eq!(ours(n.pods[0].veth, "ingress"), 1);
    assert_eq!(
        tcp_get(&n.outside, None, n.pods[0].ip, 80).1.as_deref(),
        Ok("hello\n")
    );
    wait_for(
        "the direct flow in netlink mode",
        Duration::from_secs(5),
        || flows(&agent).len() == 1,
    );
    // SIGTERM: our filters go; the other filter and its qdisc stay; our own qdiscs go.
    assert!(agent.signal(libc::SIGTERM).success());
    assert_eq!(ours("eth0", "ingress"), 0);
    assert_eq!(
        ours(n.pods[0].veth, "egress") + ours(n.pods[0].veth, "ingress"),
        0
    );
    assert!(
        tc_filters(&n.node, "eth0", "ingress")
            .iter()
            .any(|f| f.starts_with("tc_noop")),
        "the other filter was removed"
    );
    let qdiscs = n.node.sh(&["tc", "qdisc", "show"]);
    assert!(
        qdiscs
            .lines()
            .any(|l| l.contains("clsact") && l.contains("dev eth0")),
        "{qdiscs}"
    );
    assert!(
        !qdiscs
            .lines()
            .any(|l| l.contains("clsact") && l.contains(n.pods[0].veth)),
        "{qdiscs}"
    );
    drop(servers);
}

/// Idle flows leave the view and the kernel table; repeats of one (source, pod, port) are
/// folded into one alert line with a count; the series of a pod that is gone are removed
/// after the grace period.
#[test]
fn idle_flows_expire_repeats_fold_and_gone_pods_lose_their_series() {
    ports_from(19_280);
    let n = Node::new(Layout::Calico);
    let mut servers = Servers::new();
    servers.tcp(&n.pods[0].ns, 80);
    servers.tcp(&n.pods[1].ns, 80);
    let agent = start(
        &n,
        "idle",
        &[
            "--flow-idle-timeout",
            "3s",
            "--alert-window",
            "3s",
            "--pod-grace",
            "1s",
        ],
    );
    for _ in 0..3 {
        assert!(tcp_get(&n.outside, None, n.pods[0].ip, 80).1.is_ok());
    }
    assert!(tcp_get(&n.outside, None, n.pods[1].ip, 80).1.is_ok());
    wait_for("four flows", Duration::from_secs(5), || {
        flows(&agent).len() == 4
    });
    // One line for the first of the three, then (after the window) one with count 3.
    wait_for("the folded summary", Duration::from_secs(10), || {
        alert_lines(&agent)
            .iter()
            .any(|a| a["pod"] == n.pods[0].veth && a["count"] == 3)
    });
    let pod_a_lines = alert_lines(&agent)
        .iter()
        .filter(|a| a["pod"] == n.pods[0].veth)
        .count();
    assert_eq!(pod_a_lines, 2, "first alert + one summary");
    // Idle: the view and the kernel table empty out.
    wait_for("idle flows expired", Duration::from_secs(15), || {
        let s = status(&agent);
        flows(&agent).is_empty() && s["flow_table_entries"] == 0
    });
    // Pod B goes away: its series go after the grace period; pod A's stay.
    let m = metrics(&n, &agent);
    assert!(m.contains(&format!("pod_name=\"{}\"", n.pods[1].veth)));
    n.node.sh(&["ip", "link", "del", n.pods[1].veth]);
    wait_for(
        "the gone pod's series removed",
        Duration::from_secs(10),
        || !metrics(&n, &agent).contains(&format!("pod_name=\"{}\"", n.pods[1].veth)),
    );
    assert!(metrics(&n, &agent).contains(&format!("pod_name=\"{}\"", n.pods[0].veth)));
    drop(servers);
}

/// Interfaces flapping down and up stay watched (and a veth that comes back under a new index
/// is attached again).
#[test]
fn flapping_interfaces_stay_watched() {
    ports_from(19_290);
    let n = Node::new(Layout::Calico);
    let mut servers = Servers::new();
    servers.tcp(&n.pods[0].ns, 80);
    let agent = start(&n, "flap", &[]);
    for _ in 0..3 {
        for iface in ["eth0", n.pods[0].veth] {
            n.node.sh(&["ip", "link", "set", iface, "down"]);
            n.node.sh(&["ip", "link", "set", iface, "up"]);
        }
    }
    // Link down removed the node's default route and the pod's host route; the network
    // manager and the CNI put them back, the agent relearns the pod.
    n.node.sh(&[
        "ip",
        "route",
        "replace",
        "default",
        "via",
        testbed::topology::VPC_ROUTER,
        "dev",
        "eth0",
    ]);
    n.node.sh(&[
        "ip",
        "route",
        "replace",
        &format!("{}/32", n.pods[0].ip),
        "dev",
        n.pods[0].veth,
        "scope",
        "link",
    ]);
    thread::sleep(Duration::from_millis(300));
    assert!(attached_names(&agent).contains("eth0"));
    assert!(attached_names(&agent).contains(n.pods[0].veth));
    wait_for(
        "the route back after the flap",
        Duration::from_secs(5),
        || tcp_get(&n.outside, None, n.pods[0].ip, 80).1.is_ok(),
    );
    wait_for(
        "the direct access seen after flapping",
        Duration::from_secs(5),
        || {
            flows(&agent)
                .iter()
                .any(|f| f.dst == n.pods[0].ip && f.state == "answered")
        },
    );
    assert_eq!(
        tcx_count(&n.node, "eth0", TcAttachType::Ingress, "observer_uplink"),
        1
    );
    assert_eq!(status(&agent)["attach_errors"], 0);
    drop(servers);
}

/// Another agent's filter in aws-network-policy-agent's shape: priority 1, handle 1, direct
/// action, a classic BPF "return 0" (TC_ACT_OK): an allow-all policy that ends classification.
fn allow_all_filter(ns: &Netns, iface: &str, hook: &str) {
    ns.sh(&[
        "tc",
        "filter",
        "add",
        "dev",
        iface,
        hook,
        "protocol",
        "all",
        "prio",
        "1",
        "handle",
        "1",
        "bpf",
        "da",
        "bytecode",
        "1,6 0 0 0,",
    ]);
}

/// The first filter on a clsact hook, as `tc filter show` lists them (in the order they run).
fn first_filter(ns: &Netns, iface: &str, hook: &str) -> String {
    ns.sh(&["tc", "filter", "show", "dev", iface, hook])
        .lines()
        .find(|l| l.contains("handle"))
        .unwrap_or_default()
        .to_string()
}

/// Another agent adds its own filter at our netlink priority after us, as aws-network-policy-agent
/// does on pod veths (priority 1, handle 1, direct action, returning TC_ACT_OK = allow, which
/// ends classification). Within one priority the newest filter runs first, so ours would never
/// see the pod's packets: the replies to connections the pod opened would look like direct
/// access. The agent puts its filters back in front at once; both keep running.
#[test]
fn a_later_filter_at_our_priority_does_not_hide_the_pods_traffic() {
    ports_from(19_240);
    let n = Node::new(Layout::VpcCni);
    let mut servers = Servers::new();
    servers.tcp(&n.pods[0].ns, 80);
    servers.tcp(&n.outside, 8443);
    let agent = start(&n, "front", &["--attach-mode", "netlink-pods"]);
    let veth = n.pods[0].veth;
    for hook in ["egress", "ingress"] {
        assert!(first_filter(&n.node, veth, hook).contains("observer_"));
        allow_all_filter(&n.node, veth, hook);
    }
    wait_for("our filters in front again", Duration::from_secs(5), || {
        ["egress", "ingress"]
            .iter()
            .all(|h| first_filter(&n.node, veth, h).contains("observer_"))
    });
    for hook in ["egress", "ingress"] {
        let all = n.node.sh(&["tc", "filter", "show", "dev", veth, hook]);
        assert!(
            all.contains("bytecode"),
            "the other filter was removed: {all}"
        );
        assert_eq!(
            all.lines().filter(|l| l.contains("observer_")).count(),
            1,
            "{all}"
        );
    }
    // The pod opens a connection: its replies are replies, not direct access.
    assert_eq!(
        tcp_get(&n.pods[0].ns, None, n.outside_ip, 8443)
            .1
            .as_deref(),
        Ok("hello\n")
    );
    // A direct access: flagged, and the pod's answer is seen.
    assert_eq!(
        tcp_get(&n.outside, None, n.pods[0].ip, 80).1.as_deref(),
        Ok("hello\n")
    );
    wait_for("the direct flow answered", Duration::from_secs(5), || {
        flows(&agent).iter().any(|f| f.state == "answered")
    });
    let rows = flows(&agent);
    assert_eq!(rows.len(), 1, "only the direct access is flagged: {rows:?}");
    assert_eq!(rows[0].dst_port, 80);
    let m = metrics(&n, &agent);
    assert!(
        sample(
            &m,
            "observer_packets_total",
            "protocol=\"tcp\",verdict=\"reply\""
        )
        .is_some_and(|v| v > 0.0),
        "{m}"
    );
    assert!(
        agent
            .log_lines()
            .iter()
            .any(|l| l.contains("ours is in front again"))
    );
}

/// An agent that also insists on running first (it re-adds its filter whenever ours got ahead)
/// would make both re-add filters forever. The agent moves its filters to the front at most five
/// times a minute per interface, then leaves them behind and says so.
#[test]
fn an_agent_that_insists_on_running_first_is_left_alone_after_five_moves() {
    ports_from(19_250);
    let n = Node::new(Layout::VpcCni);
    let agent = start(&n, "pushy", &["--attach-mode", "netlink-pods"]);
    let veth = n.pods[0].veth;
    let ours_first = || first_filter(&n.node, veth, "egress").contains("observer_");
    let push_ahead = || {
        let _ = n.node.sh(&[
            "sh",
            "-c",
            &format!("tc filter del dev {veth} egress prio 1 handle 1 bpf 2>/dev/null; true"),
        ]);
        allow_all_filter(&n.node, veth, "egress");
    };
    for round in 1..=5 {
        push_ahead();
        wait_for(
            &format!("ours in front again, round {round}"),
            Duration::from_secs(5),
            ours_first,
        );
    }
    push_ahead();
    wait_for("the agent giving up", Duration::from_secs(5), || {
        agent
            .log_lines()
            .iter()
            .any(|l| l.contains("keeps putting its filter ahead of ours"))
    });
    thread::sleep(Duration::from_millis(500));
    assert!(!ours_first(), "the agent moved its filter a sixth time");
    assert_eq!(log_count(&agent, "ours is in front again"), 5);
    // Still attached and counted as such.
    assert!(attached_names(&agent).contains(veth));
}
