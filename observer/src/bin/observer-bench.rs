//! Datapath cost through BPF_PROG_TEST_RUN, for `cargo xtask bench`: nanoseconds per packet of
//! each program and packet class, above an empty TC program measured in the same run.
//! Prints one JSON object on stdout. A benchmark, not a test: it asserts nothing.

use std::collections::BTreeMap;

use aya::{
    Ebpf,
    maps::{MapData, RingBuf},
};

use observer::kernel::{
    maps::Maps,
    object::{self, LoadOptions},
};
use observer_common::{
    addr::key_of,
    maps::{FlowKey, health},
    names::{PROG_EGRESS, PROG_FROM_POD, PROG_NOOP, PROG_TO_POD, PROG_UPLINK},
    packet::{TCP_ACK, TCP_PSH, TCP_SYN},
    testing::{
        frames::{Frame, non_ip},
        scenarios::{vpc, vpc_cni},
    },
};

const REPEAT: u32 = 200_000;
const ROUNDS: usize = 7;

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// The VPC CNI seed node's maps in a freshly loaded object (with the empty program), and its
/// event ring buffer.
fn node_with_events(opts: &LoadOptions) -> (Ebpf, Maps, RingBuf<MapData>) {
    let mut ebpf = object::load(opts).expect("load (root and a BPF-capable kernel)");
    object::load_noop(&mut ebpf).expect("load tc_noop");
    let (maps, events) = Maps::take(&mut ebpf).expect("maps");
    maps.write_inventory(&vpc_cni().inventory)
        .expect("inventory");
    // As the agent does at every flow refresh.
    maps.set_clock(observer::kernel::clock::kernel_ns())
        .expect("clock");
    (ebpf, maps, events)
}

fn node(opts: &LoadOptions) -> (Ebpf, Maps) {
    let (ebpf, maps, _) = node_with_events(opts);
    (ebpf, maps)
}

fn main() {
    // `observer-bench syn`: the first-SYN rows alone.
    if std::env::args().nth(1).as_deref() == Some("syn") {
        println!("{}", serde_json::Value::Object(first_syn()));
        return;
    }
    use vpc::*;
    // A node where nothing was ever flagged (the pod veths' common case).
    let (mut quiet, _quiet_maps) = node(&LoadOptions::default());
    let (mut ebpf, maps) = node(&LoadOptions::default());
    // The same node with the role cache off: every address answered from IP_ROLES/CIDR_ROLES
    // (the cost of a cache miss, e.g. the first packet from a new peer).
    let (mut uncached, _uncached_maps) = node(&LoadOptions {
        role_cache: false,
        ..LoadOptions::default()
    });
    let tcp = |src, dst, sport, dport, flags| {
        Frame::tcp(src, dst, sport, dport, flags)
            .payload(64)
            .build()
    };
    let in_cluster = tcp(PEER_NODE, POD_A, 40000, 80, TCP_ACK | TCP_PSH);
    let to_node = tcp(OUTSIDE, NODE_ETH0, 40000, 22, TCP_ACK);
    let reply = tcp(INTERNET, POD_A, 443, 40000, TCP_ACK | TCP_PSH);
    let answer = tcp(POD_A, PEER_NODE, 80, 40000, TCP_ACK | TCP_PSH);
    // The same to and from another port of the pod, with no flagged flow.
    let in_cluster_other = tcp(PEER_NODE, POD_A, 40000, 8080, TCP_ACK | TCP_PSH);
    let answer_other = tcp(POD_A, PEER_NODE, 8080, 40000, TCP_ACK | TCP_PSH);
    // Leaving the node on an uplink (uplink-egress mode): the node's own packets pay too.
    let node_out = tcp(NODE_ETH0, INTERNET, 40000, 443, TCP_ACK | TCP_PSH);
    let node_udp = Frame::udp(NODE_ETH0, VPC_DNS, 40001, 53)
        .payload(64)
        .build();
    let pod_udp = Frame::udp(POD_A, VPC_DNS, 40001, 53).payload(64).build();
    // A flagged flow that already exists (established), and a pod-opened flow (replies).
    let est = tcp(OUTSIDE, POD_A, 52000, 80, TCP_ACK | TCP_PSH);
    object::test_run(&mut ebpf, PROG_UPLINK, &est, 1).expect("seed the flow");
    let classes: Vec<(&str, &str, Vec<u8>)> = vec![
        ("uplink", "in-cluster TCP to a pod", in_cluster.clone()),
        ("uplink", "TCP to the node itself", to_node.clone()),
        ("uplink", "not IP (ARP)", non_ip(0x0806, 28)),
        ("uplink", "direct-to-pod, established", est.clone()),
        ("uplink", "reply to a pod-opened flow", reply.clone()),
        (
            "uplink",
            "UDP in cluster",
            Frame::udp(PEER_POD, POD_A, 40000, 53).payload(64).build(),
        ),
        (
            "uplink",
            "IPv6 TCP in cluster",
            tcp(PEER_NODE6, POD6, 40000, 80, TCP_ACK),
        ),
        (
            "uplink",
            "VLAN-tagged in-cluster TCP",
            Frame::tcp(PEER_NODE, POD_A, 40000, 80, TCP_ACK)
                .vlan(100)
                .payload(64)
                .build(),
        ),
        (
            "to_pod",
            "in-cluster TCP, a flagged flow to this port",
            in_cluster.clone(),
        ),
        (
            "to_pod",
            "in-cluster TCP, flagged flows to other ports",
            in_cluster_other,
        ),
        (
            "from_pod",
            "pod's answer, a flagged flow to this port",
            answer.clone(),
        ),
        (
            "from_pod",
            "pod's answer, flagged flows to other ports",
            answer_other.clone(),
        ),
        (
            "egress",
            "pod's answer, a flagged flow to this port",
            answer.clone(),
        ),
        (
            "egress",
            "pod's answer, flagged flows to other ports",
            answer_other,
        ),
        ("egress", "the node's own TCP", node_out.clone()),
        ("egress", "the node's own UDP", node_udp),
        ("egress", "a pod's UDP, a flow it opened before", pod_udp),
    ];
    let uncached_classes: Vec<(&str, &str, Vec<u8>)> = vec![
        (
            "uplink",
            "in-cluster TCP to a pod, role cache off",
            in_cluster.clone(),
        ),
        ("uplink", "TCP to the node itself, role cache off", to_node),
        (
            "uplink",
            "reply to a pod-opened flow, role cache off",
            reply,
        ),
    ];
    let quiet_classes: Vec<(&str, &str, Vec<u8>)> = vec![
        (
            "to_pod",
            "in-cluster TCP, no flagged flow on the node",
            in_cluster,
        ),
        (
            "from_pod",
            "pod's answer, no flagged flow on the node",
            answer.clone(),
        ),
        (
            "egress",
            "pod's answer, no flagged flow on the node",
            answer,
        ),
        (
            "egress",
            "the node's own TCP, no flagged flow on the node",
            node_out,
        ),
    ];
    let prog = |p: &str| match p {
        "uplink" => PROG_UPLINK,
        "to_pod" => PROG_TO_POD,
        "egress" => PROG_EGRESS,
        _ => PROG_FROM_POD,
    };
    let floor_frame = tcp(PEER_NODE, POD_A, 40000, 80, TCP_ACK);
    let mut samples: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut floor = Vec::new();
    // Interleaved rounds: the floor and every class in each round, so noise hits all alike.
    for _ in 0..ROUNDS {
        let r = object::test_run(&mut ebpf, PROG_NOOP, &floor_frame, REPEAT).expect("noop");
        let f = r.duration.as_nanos() as f64;
        floor.push(f);
        for (obj, list) in [
            (&mut quiet, &quiet_classes),
            (&mut ebpf, &classes),
            (&mut uncached, &uncached_classes),
        ] {
            for (p, name, frame) in list {
                let r = object::test_run(obj, prog(p), frame, REPEAT).expect("test_run");
                samples
                    .entry(format!("{p}: {name}"))
                    .or_default()
                    .push(r.duration.as_nanos() as f64 - f);
            }
        }
    }
    let stats = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_default();
    let mut out = serde_json::Map::new();
    let mut f = floor.clone();
    out.insert(
        "floor_ns".into(),
        serde_json::json!({"median": median(&mut f), "min": f[0], "max": f[f.len() - 1]}),
    );
    for (k, mut v) in samples {
        let m = median(&mut v);
        out.insert(
            k,
            serde_json::json!({"median_ns_above_floor": m, "min": v[0], "max": v[v.len() - 1]}),
        );
    }
    out.extend(first_syn());
    out.insert("refresh".into(), refresh_costs(&maps));
    out.insert(
        "kernel.bpf_stats_enabled".into(),
        serde_json::json!(stats.trim()),
    );
    println!("{}", serde_json::Value::Object(out));
}

/// The first packet of a new direct flow: a new flow each run (repeat 1), minus the empty
/// program at repeat 1. A pure SYN is staged (a record in this CPU's ring); a first datagram
/// takes the `FLOWS` path (lookup, insert, event). Each is read the two ways the agent reads:
/// after every packet (a lone access, the agent keeping up: each event finds the ring empty,
/// where a submit with a wakeup would interrupt the CPU), and after every 1,000 (a flood, the
/// agent behind). Every packet has its record or its flow and event (the rows say so). Last,
/// the same SYN decided but not kept.
fn first_syn() -> serde_json::Map<String, serde_json::Value> {
    use observer::kernel::staged::StagedRings;
    use vpc::*;
    const N: u32 = 40_000;
    let (mut ebpf, maps, mut events) = node_with_events(&LoadOptions::default());
    let mut rings = StagedRings::take(&mut ebpf).expect("staged rings");
    let (mut untracked, _untracked_maps) = node(&LoadOptions {
        track_mask: 0,
        ..LoadOptions::default()
    });
    fn time(obj: &mut Ebpf, prog: &'static str, frame: &[u8]) -> f64 {
        let r = object::test_run(obj, prog, frame, 1).expect("first packet");
        r.duration.as_nanos() as f64
    }
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let mut out = serde_json::Map::new();
    let mut syn_untracked = Vec::new();
    let mut syn_floor = Vec::new();
    let mut records = Vec::new();
    for (packet, datagram) in [
        ("SYN (staged)", false),
        ("UDP datagram (table + event)", true),
    ] {
        for (row, read_every) in [
            ("agent keeping up: read after each packet", 1),
            ("agent behind: read after each 1,000", 1_000),
        ] {
            let mut first = Vec::new();
            let mut floor = Vec::new();
            let mut received = 0u64;
            let lost_before = maps
                .health_counts()
                .map(|h| h[health::EVENTS_LOST as usize])
                .unwrap_or(u64::MAX);
            for i in 0..N {
                let sport = 10_000 + (i % 50_000) as u16;
                let (f, key) = if datagram {
                    (
                        Frame::udp(OUTSIDE, POD_B, sport, 5353).build(),
                        FlowKey::new(
                            key_of(OUTSIDE.parse().unwrap()),
                            key_of(POD_B.parse().unwrap()),
                            sport,
                            5353,
                            17,
                        ),
                    )
                } else {
                    (
                        Frame::tcp(OUTSIDE, POD_B, sport, 80, TCP_SYN).build(),
                        FlowKey::default(),
                    )
                };
                first.push(time(&mut ebpf, PROG_UPLINK, &f));
                floor.push(time(&mut ebpf, PROG_NOOP, &f));
                if !datagram && read_every == 1 {
                    syn_untracked.push(time(&mut untracked, PROG_UPLINK, &f));
                    syn_floor.push(floor[floor.len() - 1]);
                }
                if datagram {
                    let _ = maps.remove_flow(&key);
                }
                if (i + 1) % read_every == 0 {
                    while events.next().is_some() {
                        received += 1;
                    }
                    records.clear();
                    rings.drain(&mut records);
                    received += records.len() as u64;
                }
            }
            while events.next().is_some() {
                received += 1;
            }
            records.clear();
            rings.drain(&mut records);
            received += records.len() as u64;
            let lost = maps
                .health_counts()
                .map(|h| h[health::EVENTS_LOST as usize])
                .unwrap_or(u64::MAX)
                - lost_before;
            out.insert(
                format!("uplink: direct-to-pod first {packet}, {row}"),
                serde_json::json!({
                    "mean_ns_above_floor": mean(&first) - mean(&floor),
                    "samples": first.len(),
                    "events_received": received,
                    "events_lost": lost,
                }),
            );
        }
    }
    out.insert(
        "uplink: direct-to-pod first SYN, decided but not kept (TRACK_MASK 0)".into(),
        serde_json::json!({
            "mean_ns_above_floor": mean(&syn_untracked) - mean(&syn_floor),
            "samples": syn_untracked.len(),
        }),
    );
    out
}

/// The flow refresh and the scrape with a full flow table (65,536 flows): the kernel table read
/// per key (two syscalls a flow, as the refresh did under the tracker's lock), by iteration (as
/// the scrape's count did), and in batches (now, outside the lock); then the tracker's own part
/// (under its lock, no syscall), with every flow settled, and with every flow expiring at once.
/// Milliseconds, the least of three rounds.
fn refresh_costs(maps: &Maps) -> serde_json::Value {
    use observer::{
        flows::{Tracker, TrackerConfig},
        inventory::Directory,
        metrics::Metrics,
    };
    use observer_common::maps::{FlowEvent, FlowStats, origin};
    use std::time::{Duration, Instant};
    let capacity = maps.flow_table_use().expect("FLOWS").1 as usize;
    let now = observer::kernel::clock::kernel_ns();
    let keys: Vec<FlowKey> = (0..capacity as u32)
        .map(|i| {
            let src = [11, (i >> 16) as u8, (i >> 8) as u8, i as u8];
            FlowKey::new(
                observer_common::addr::v4_mapped(src),
                key_of(vpc::POD_A.parse().unwrap()),
                40_000,
                80,
                6,
            )
        })
        .collect();
    let stats = FlowStats {
        packets: 3,
        bytes: 180,
        first_seen_ns: now,
        last_seen_ns: now,
        verdict: 9,
        origin: origin::START,
        ..FlowStats::default()
    };
    // The table full of our flows only.
    for (k, _) in maps.flows().expect("flows") {
        let _ = maps.remove_flow(&k);
    }
    for k in &keys {
        maps.insert_flow(k, &stats).expect("insert a flow");
    }
    let entries = maps.flows_batch().expect("batch").len();
    let best = |f: &mut dyn FnMut()| -> f64 {
        (0..3)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1e3
            })
            .fold(f64::MAX, f64::min)
    };
    let per_key = best(&mut || {
        for k in &keys {
            let _ = maps.flow(k);
        }
    });
    let iterate = best(&mut || {
        let _ = maps.flows();
    });
    let batch = best(&mut || {
        let _ = maps.flows_batch();
    });
    // A tracker holding every flow, settled.
    let metrics = Metrics::new();
    let dir = Directory::default();
    let cfg = TrackerConfig {
        capacity,
        idle: Duration::from_secs(300),
        settle: Duration::ZERO,
        peer_wait: Duration::ZERO,
        alert_window: Duration::from_secs(60),
        ports_per_pod: 16,
        pod_grace: Duration::from_secs(300),
    };
    let fill = |t: &mut Tracker| {
        for k in &keys {
            t.on_event(
                &FlowEvent {
                    key: *k,
                    ts_ns: now,
                    bytes: 60,
                    verdict: 9,
                    reason: 22,
                    origin: origin::START,
                    ..FlowEvent::default()
                },
                &dir,
                maps,
                &metrics,
            );
        }
    };
    let snapshot: observer::flows::FlowMap<FlowStats> =
        maps.flows_batch().expect("batch").into_iter().collect();
    let mut t = Tracker::new(cfg.clone());
    fill(&mut t);
    t.refresh(&snapshot, now, &dir, &metrics); // settles every flow once
    let tracker = best(&mut || {
        t.refresh(&snapshot, now, &dir, &metrics);
    });
    // Every flow idle past the timeout at once: expired in one pass.
    let mut expire = f64::MAX;
    for _ in 0..3 {
        let mut t = Tracker::new(cfg.clone());
        fill(&mut t);
        let later = now + 301_000_000_000;
        let start = Instant::now();
        let gone = t.refresh(&snapshot, later, &dir, &metrics);
        expire = expire.min(start.elapsed().as_secs_f64() * 1e3);
        assert_eq!(gone.len(), capacity, "every flow expires");
    }
    // The expiry before: one `retain` over the order per expired flow (one round: quadratic).
    let before_expire = {
        let mut order: std::collections::VecDeque<FlowKey> = keys.iter().copied().collect();
        let start = Instant::now();
        for k in &keys {
            order.retain(|x| x != k);
        }
        start.elapsed().as_secs_f64() * 1e3
    };
    // A scrape's kernel sampling (counters, health, the table's fill) with the full table.
    let scrape = best(&mut || metrics.sample_kernel(maps));
    serde_json::json!({
        "flows": entries,
        "scrape_sample_kernel_ms": scrape,
        "expiry_one_retain_per_flow_ms": before_expire,
        "kernel_read_per_key_ms": per_key,
        "kernel_read_iterate_ms": iterate,
        "kernel_read_batch_ms": batch,
        "tracker_refresh_ms": tracker,
        "tracker_refresh_all_expiring_ms": expire,
    })
}
