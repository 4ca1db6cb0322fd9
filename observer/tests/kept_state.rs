//! What the agent keeps across its own restarts and upgrades (SCENARIOS row 19): on a node
//! whose Services an eBPF dataplane translates, nothing in the node's namespace uses netfilter,
//! so conntrack cannot tell a restarted agent who opened the connections pods hold; the flows
//! pods opened outlive the agent, pinned in bpffs (`--state-dir`), and a map another version
//! left is dropped and counted, never misread.

mod support;

use std::{
    io::{Read, Write},
    net::TcpListener,
    sync::mpsc,
};

use support::*;
use testbed::{
    bpffs::{MAP_TYPE_HASH, StateDir, pin_map},
    netns::Netns,
    topology::{Dataplane, Layout, Node},
    traffic::tcp_open,
};

/// The uplinks' count of packets judged `verdict` (TCP).
fn judged(n: &Node, agent: &testbed::agent::AgentProc, verdict: &str) -> f64 {
    sample(
        &metrics(n, agent),
        "observer_packets_total",
        &format!("protocol=\"tcp\",verdict=\"{verdict}\""),
    )
    .unwrap_or(0.0)
}

/// Connections the kernel tracks in `ns` (netfilter conntrack).
fn tracked(ns: &Netns) -> String {
    let out = std::process::Command::new("ip")
        .args(["netns", "exec", &ns.name, "conntrack", "-L"])
        .output()
        .expect("conntrack");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn a_restart_on_an_ebpf_dataplane_node_keeps_the_flows_pods_opened() {
    ports_from(19_975);
    let n = Node::with_dataplane(Layout::VpcCni, Dataplane::Ebpf);
    let state = StateDir::new("restart");
    let with_state = ["--state-dir", state.arg()];

    // A database outside the cluster; each line the pod sends, it answers.
    let (listening, ready) = mpsc::channel::<()>();
    let outside_ip = n.outside_ip;
    let _db = n.outside.spawn(move || {
        let l = TcpListener::bind((outside_ip, 5432)).expect("bind");
        listening.send(()).unwrap();
        let (mut s, _) = l.accept().expect("accept");
        let mut line = [0u8; 6];
        while s.read_exact(&mut line).is_ok() {
            if s.write_all(b"row\n").is_err() {
                break;
            }
        }
    });
    ready.recv().unwrap();

    let mut agent = start(&n, "kept-1", &with_state);
    // The pod's pool connection, opened while the first agent runs.
    let (_, mut conn) = tcp_open(&n.pods[0].ns, n.outside_ip, 5432);
    let query = |conn: &mut std::net::TcpStream| {
        conn.write_all(b"query\n").unwrap();
        let mut row = [0u8; 4];
        conn.read_exact(&mut row).expect("the database answered");
    };
    query(&mut conn);
    // Nothing in the node's namespace tracks it: conntrack cannot tell a new agent about it.
    assert!(
        !tracked(&n.node).contains(":5432") && !tracked(&n.node).contains("dport=5432"),
        "{}",
        tracked(&n.node)
    );

    // A DaemonSet rollout: the agent ends, a new one starts with the same state directory.
    assert!(agent.signal(libc::SIGTERM).success());
    let agent = start(&n, "kept-2", &with_state);
    let m = metrics(&n, &agent);
    assert_eq!(
        sample(&m, "observer_kept_state_adopted", "map=\"POD_FLOWS\""),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, "observer_kept_state_adopted", "map=\"POD_PORTS\""),
        Some(1.0)
    );
    let replies = judged(&n, &agent, "reply");
    query(&mut conn);
    // The uplink judged the database's segments: replies, nothing flagged.
    wait_for(
        "the server's segments judged",
        std::time::Duration::from_secs(10),
        || judged(&n, &agent, "reply") > replies,
    );
    wait_refreshes(&agent, 2);
    assert_eq!(judged(&n, &agent, "direct_to_pod"), 0.0);
    assert!(flows(&agent).is_empty(), "{:#?}", flows(&agent));
    assert!(alert_lines(&agent).is_empty());

    // The same restart keeping nothing: the next segments are the outsider's, mid-stream
    // (what every rollout did before), so the test can see the fault it guards against.
    let mut agent = agent;
    assert!(agent.signal(libc::SIGTERM).success());
    let agent = start(&n, "kept-3", &["--state-dir", "none"]);
    query(&mut conn);
    wait_for(
        "the server's segment flagged without kept state",
        std::time::Duration::from_secs(10),
        || {
            flows(&agent)
                .iter()
                .any(|f| f.src_port == 5432 && f.origin == "unknown")
        },
    );
    drop(conn);
}

#[test]
fn a_kept_map_of_another_layout_or_version_is_dropped_and_counted() {
    ports_from(19_985);
    let n = Node::new(Layout::Calico);
    let state = StateDir::new("upgrade");
    // What an older agent left: its own version's directory, and under this version's name a
    // POD_FLOWS of another layout (a plain hash with 8-byte values).
    std::fs::create_dir_all(&state.path).unwrap();
    let old = state.path.join("v0");
    let this = state
        .path
        .join(format!("v{}", observer_common::maps::KEPT_STATE_VERSION));
    std::fs::create_dir_all(&old).unwrap();
    std::fs::create_dir_all(&this).unwrap();
    pin_map(&old.join("POD_FLOWS"), MAP_TYPE_HASH, 40, 16, 1024).unwrap();
    pin_map(&this.join("POD_FLOWS"), MAP_TYPE_HASH, 40, 8, 131_072).unwrap();
    // Another dataplane's map beside them (a state directory shared by mistake): untouched.
    let foreign = state.path.join("calico");
    std::fs::create_dir_all(&foreign).unwrap();
    pin_map(&foreign.join("cali_v4_ct"), MAP_TYPE_HASH, 40, 8, 1024).unwrap();

    let agent = start(&n, "upgrade", &["--state-dir", state.arg()]);
    let m = metrics(&n, &agent);
    for (reason, count) in [("version", 1.0), ("layout", 1.0)] {
        assert_eq!(
            sample(
                &m,
                "observer_kept_state_dropped_total",
                &format!("map=\"POD_FLOWS\",reason=\"{reason}\"")
            ),
            Some(count),
            "{m}"
        );
    }
    assert_eq!(
        sample(&m, "observer_kept_state_adopted", "map=\"POD_FLOWS\""),
        Some(0.0)
    );
    assert_eq!(
        log_count(
            &agent,
            "a map kept by a previous agent was dropped, not adopted"
        ),
        2
    );
    // The other version's directory is gone, another dataplane's map is not; this version's
    // map is the agent's own now.
    assert!(!old.exists());
    assert!(foreign.join("cali_v4_ct").exists());
    let info = aya::maps::MapInfo::from_pin(this.join("POD_FLOWS")).unwrap();
    assert_eq!(
        (info.map_type().unwrap(), info.value_size()),
        (aya::maps::MapType::LruHash, 16)
    );
    // And it works: the pod's own connection's answer is a reply.
    let (listening, ready) = mpsc::channel::<()>();
    let outside_ip = n.outside_ip;
    let server = n.outside.spawn(move || {
        let l = TcpListener::bind((outside_ip, 8443)).expect("bind");
        listening.send(()).unwrap();
        let (mut s, _) = l.accept().expect("accept");
        s.write_all(b"hi\n").unwrap();
    });
    ready.recv().unwrap();
    let (_, mut conn) = tcp_open(&n.pods[0].ns, n.outside_ip, 8443);
    conn.read_exact(&mut [0u8; 3]).unwrap();
    server.join().unwrap();
    wait_refreshes(&agent, 2);
    assert!(flows(&agent).is_empty(), "{:#?}", flows(&agent));
}
