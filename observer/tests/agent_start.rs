//! An agent that starts on a busy node (a DaemonSet rollout restarts every agent): the
//! connections pods already had open are theirs, not direct accesses; an outsider's
//! connection that predates the agent is still one; a mid-stream flow nobody can place is its
//! own, lesser alert.

mod support;

use std::{
    io::{Read, Write},
    net::{TcpListener, UdpSocket},
    sync::mpsc,
    thread,
    time::Duration,
};

use observer_common::{packet::TCP_ACK, testing::frames::Frame};
use support::*;
use testbed::{
    topology::{Layout, Node},
    traffic::{Servers, mac_of, raw_frames, sockaddr, tcp_get, tcp_open},
};

#[test]
fn connections_open_before_the_start_are_judged_by_who_opened_them() {
    open_before_the_start(19_400, &[]);
}

/// The same with the pod side read at the uplinks' egress: nothing on the pod veths.
#[test]
fn connections_open_before_the_start_are_judged_by_who_opened_them_uplink_egress() {
    open_before_the_start(19_420, &["--attach-mode", "uplink-egress"]);
}

fn open_before_the_start(ports: u16, extra: &[&str]) {
    ports_from(ports);
    let n = Node::new(Layout::VpcCni);
    let pod = n.pods[0].ip;
    let mut servers = Servers::new();
    servers.tcp(&n.pods[0].ns, 80);
    servers.tcp_echo(&n.pods[0].ns, 8080);

    // A database outside the cluster that the pod connected to before the agent started; it
    // speaks when told to.
    let (speak, told) = mpsc::channel::<()>();
    let (listening, ready) = mpsc::channel::<()>();
    let outside_ip = n.outside_ip;
    let db = n.outside.spawn(move || {
        let l = TcpListener::bind((outside_ip, 5432)).expect("bind");
        listening.send(()).unwrap();
        let (mut s, _) = l.accept().expect("accept");
        told.recv().unwrap();
        s.write_all(b"row\n").expect("server segment");
        thread::sleep(Duration::from_secs(1));
    });
    ready.recv().unwrap();
    let (db_port, mut db_conn) = tcp_open(&n.pods[0].ns, n.outside_ip, 5432);
    // A UDP exchange the pod began (a metrics push, a DNS-like query), answered later.
    let pod_udp = n.pods[0]
        .ns
        .run(move || UdpSocket::bind((pod, 0)).expect("bind udp"));
    let server_udp = n
        .outside
        .run(move || UdpSocket::bind((outside_ip, 8125)).expect("bind udp"));
    pod_udp
        .send_to(b"hello", sockaddr(n.outside_ip, 8125))
        .unwrap();
    let mut buf = [0u8; 64];
    let (_, pod_addr) = server_udp.recv_from(&mut buf).unwrap();
    // An outsider's connection straight to the pod, opened before the agent started.
    let (early_port, mut early) = tcp_open(&n.outside, pod, 8080);
    early.write_all(b"before\n").unwrap();
    early.read_exact(&mut [0u8; 7]).unwrap();

    let agent = start(&n, &format!("restart{ports}"), extra);

    // The pod's database answers, and the UDP peer answers: both replies, never alerts.
    speak.send(()).unwrap();
    let mut row = [0u8; 4];
    db_conn
        .read_exact(&mut row)
        .expect("the database's segment reached the pod");
    server_udp.send_to(b"answer", pod_addr).unwrap();
    pod_udp
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    assert_eq!(
        pod_udp.recv(&mut buf).unwrap(),
        6,
        "the UDP answer reached the pod"
    );
    // The outsider's early connection goes on: mid-stream for the observer, outsider-opened
    // for conntrack.
    early.write_all(b"after\n").unwrap();
    early.read_exact(&mut [0u8; 6]).unwrap();
    // A new connection after the start: seen from its SYN.
    assert!(tcp_get(&n.outside, None, pod, 80).1.is_ok());
    // A segment of a connection nobody tracked: conntrack picks it up mid-stream and cannot
    // tell who opened it.
    let mut ack = Frame::tcp(n.outside_ip, pod, 41_000, 8081, TCP_ACK).build();
    ack[..6].copy_from_slice(&mac_of(&n.node, n.uplinks[0]));
    raw_frames(&n.outside, "eth0", vec![ack]);

    let mut rows = Vec::new();
    wait_for(
        "three settled direct flows",
        Duration::from_secs(10),
        || {
            rows = flows(&agent);
            rows.len() >= 3 && alert_lines(&agent).len() >= 3
        },
    );
    // Nothing more comes: three more refreshes would have settled any other flow.
    wait_refreshes(&agent, 3);
    rows = flows(&agent);
    let mut got: Vec<(u16, String)> = rows
        .iter()
        .map(|f| (f.dst_port, f.origin.clone()))
        .collect();
    got.sort();
    assert_eq!(
        got,
        vec![
            (80, "seen_start".to_string()),
            (8080, "outsider".to_string()),
            (8081, "unknown".to_string()),
        ],
        "the pod's own connections are not direct accesses: {rows:#?}"
    );
    assert!(
        !rows
            .iter()
            .any(|f| f.dst_port == db_port || f.src_port == 5432 || f.src_port == 8125),
        "{rows:#?}"
    );
    assert!(rows.iter().any(|f| f.src_port == early_port));

    // The alerts: direct accesses at warn, the unknown one at info with its own message.
    let alerts = alert_lines(&agent);
    let level = |port: u16| {
        alerts
            .iter()
            .filter(|a| a["dst_port"] == port)
            .map(|a| a["level"].as_str().unwrap_or_default().to_string())
            .collect::<Vec<_>>()
    };
    assert_eq!(level(80), ["WARN"], "{alerts:#?}");
    assert_eq!(level(8080), ["WARN"], "{alerts:#?}");
    assert_eq!(level(8081), ["INFO"], "{alerts:#?}");
    assert!(
        alerts
            .iter()
            .filter(|a| a["dst_port"] == 8081)
            .all(|a| a["message"]
                .as_str()
                .is_some_and(|m| m.contains("origin unknown"))),
        "{alerts:#?}"
    );

    let m = metrics(&n, &agent);
    promtool_check(&m);
    let count = |name: &str, labels: &str| sample(&m, name, labels).unwrap_or(0.0);
    assert!(
        count("observer_conntrack_pod_flows_seeded_total", "") >= 2.0,
        "{m}"
    );
    assert!(
        count(
            "observer_packets_total",
            "protocol=\"tcp\",verdict=\"reply\""
        ) >= 1.0,
        "the database's segment judged a reply"
    );
    assert!(
        count(
            "observer_packets_total",
            "protocol=\"udp\",verdict=\"reply\""
        ) >= 1.0,
        "the UDP answer judged a reply"
    );
    assert_eq!(
        count("observer_origin_lookups_total", "result=\"outsider\""),
        1.0
    );
    assert_eq!(
        count("observer_origin_lookups_total", "result=\"unknown\""),
        1.0
    );
    let veth = n.pods[0].veth;
    // One flow each, by origin (the stray segment's state is whatever the pod made of it).
    for (port, origin) in [
        ("80", "seen_start"),
        ("8080", "outsider"),
        ("8081", "unknown"),
    ] {
        let labels = format!(
            "observer_direct_pod_access_flows_total{{origin=\"{origin}\",pod_name=\"{veth}\",pod_namespace=\"\",pod_workload=\"\",port=\"{port}\","
        );
        let n: f64 = m
            .lines()
            .filter(|l| l.starts_with(&labels))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        assert_eq!(n, 1.0, "{port} {origin}: {m}");
    }
    // `observer flows --origin unknown` names just that one.
    let out = agent.cli(&["flows", "--json", "--origin", "unknown"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("\"dst_port\":8081"), "{text}");
    drop(early);
    drop(db_conn);
    let _ = db.join();
}
