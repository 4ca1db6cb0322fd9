//! UDP servers in pods (SCENARIOS row 21). A busy DNS pod on the node answers every query of
//! its in-cluster clients; those answers open no pod flow, so they cannot cycle the LRU
//! `POD_FLOWS` and push out the flows pods opened to servers outside the cluster, whose next
//! answers would then look like direct accesses.

mod support;

use std::{
    net::UdpSocket,
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use observer_common::testing::frames::Frame;
use support::*;
use testbed::{
    topology::{Layout, Node},
    traffic::{mac_of, raw_burst, sockaddr},
};

/// More client tuples than `POD_FLOWS` holds (131,072).
const CLIENT_TUPLES: u32 = 200_000;

fn udp_judged(n: &Node, agent: &testbed::agent::AgentProc, verdict: &str) -> f64 {
    sample(
        &metrics(n, agent),
        "observer_packets_total",
        &format!("protocol=\"udp\",verdict=\"{verdict}\""),
    )
    .unwrap_or(0.0)
}

#[test]
fn a_busy_dns_pod_does_not_push_out_the_flows_pods_opened() {
    ports_from(19_990);
    let n = Node::new(Layout::Calico);
    let agent = start(&n, "dns", &[]);

    // Pod A's own exchange with a server outside the cluster (a metrics push), idle while the
    // DNS pod works.
    let pod_a = n.pods[0].ip;
    let outside_ip = n.outside_ip;
    let client = n.pods[0]
        .ns
        .run(move || UdpSocket::bind((pod_a, 0)).expect("bind"));
    let server = n
        .outside
        .run(move || UdpSocket::bind((outside_ip, 8125)).expect("bind"));
    client.send_to(b"push", sockaddr(outside_ip, 8125)).unwrap();
    let mut buf = [0u8; 64];
    let (_, pod_addr) = server.recv_from(&mut buf).unwrap();

    // The DNS pod (pod B): answers every query, counting.
    let dns_ip = n.pods[1].ip;
    let answered = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let dns = {
        let (answered, stop) = (answered.clone(), stop.clone());
        n.pods[1].ns.spawn(move || {
            let s = UdpSocket::bind((dns_ip, 53)).expect("bind :53");
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            let mut q = [0u8; 512];
            while !stop.load(Ordering::Relaxed) {
                if let Ok((len, from)) = s.recv_from(&mut q)
                    && s.send_to(&q[..len], from).is_ok()
                {
                    answered.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };

    // Queries from 200,000 client tuples in the cluster (pods of other nodes: the Calico pool
    // 172.16.0.0/16), paced so the server answers nearly all of them.
    let mac = mac_of(&n.node, n.uplinks[0]);
    let mut sent = 0u64;
    // Chunks no larger than the server's socket buffer holds, each answered before the next.
    const CHUNK: u32 = 200;
    for chunk in 0..CLIENT_TUPLES / CHUNK {
        let frames: Vec<Vec<u8>> = (0..CHUNK)
            .map(|i| {
                let t = chunk * CHUNK + i;
                let src = format!("172.16.{}.{}", 100 + t / 50_000, 1 + (t / 250) % 200);
                let mut f = Frame::udp(&src, dns_ip, 10_000 + (t % 250) as u16, 53).build();
                f[..6].copy_from_slice(&mac);
                f
            })
            .collect();
        raw_burst(&n.outside, "eth0", frames);
        sent += u64::from(CHUNK);
        let deadline = Instant::now() + Duration::from_millis(500);
        while answered.load(Ordering::Relaxed) < sent * 99 / 100 && Instant::now() < deadline {
            // Pacing the sender on the server's answers (polled), so its socket never overflows.
            std::thread::sleep(Duration::from_micros(200));
        }
    }
    stop.store(true, Ordering::Relaxed);
    dns.join().unwrap();
    let answered = answered.load(Ordering::Relaxed);
    assert!(
        answered > 180_000,
        "the DNS pod answered only {answered} of {sent} queries: too few to cycle POD_FLOWS"
    );

    // The outside server answers pod A now: a reply, not a direct access.
    let replies = udp_judged(&n, &agent, "reply");
    server.send_to(b"ok", pod_addr).unwrap();
    client
        .set_read_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    assert_eq!(
        client.recv(&mut buf).unwrap(),
        2,
        "the answer reached pod A"
    );
    wait_for(
        "the server's answer judged",
        Duration::from_secs(10),
        || udp_judged(&n, &agent, "reply") > replies,
    );
    wait_refreshes(&agent, 2);
    assert_eq!(udp_judged(&n, &agent, "direct_to_pod"), 0.0);
    assert!(flows(&agent).is_empty(), "{:#?}", flows(&agent));
    assert!(alert_lines(&agent).is_empty());
}
