//! Bounds under abuse: a full port scan keeps metric series and alert lines bounded; bad
//! requests on the debug socket get errors and the agent keeps serving.

mod support;

use std::{
    io::{BufRead, BufReader, Write},
    os::unix::net::UnixStream,
    thread,
    time::Duration,
};

use observer_common::{maps::FlowEvent, packet::TCP_SYN, testing::frames::Frame};
use support::*;
use testbed::{
    topology::{Layout, Node},
    traffic::{Servers, mac_of, raw_flood, udp_scan},
};

#[test]
fn a_port_scan_keeps_series_and_alerts_bounded() {
    ports_from(19_250);
    let n = Node::new(Layout::VpcCni);
    let mut servers = Servers::new();
    servers.udp(&n.pods[0].ns, 5353);
    let agent = start(&n, "scan", &["--ports-per-pod", "8"]);
    udp_scan(&n.outside, n.pods[0].ip, 1..=65535);
    wait_refreshes(&agent, 3);
    let m = metrics(&n, &agent);
    promtool_check(&m);
    let veth = n.pods[0].veth;
    let series: Vec<&str> = m
        .lines()
        .filter(|l| {
            l.starts_with("observer_direct_pod_access_flows_total{")
                && l.contains(&format!("pod_name=\"{veth}\""))
        })
        .collect();
    // At most 8 ports + "other", for each state (answered, refused, silent).
    assert!(
        !series.is_empty() && series.len() <= 27,
        "{} series:\n{}",
        series.len(),
        series.join("\n")
    );
    assert!(series.iter().any(|l| l.contains("port=\"other\"")));
    let total: f64 = series
        .iter()
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert!(total > 1000.0, "the scan's flows are counted: {total}");
    assert!(!m.contains(n.outside_ip));
    // Alerts: the first 8 ports, the rest folded into one summary line (after the window).
    let alerts = alert_lines(&agent);
    assert!(alerts.len() <= 9, "{} alert lines", alerts.len());
    assert!(sample(&m, "observer_alerts_folded_total", "").is_some_and(|v| v > 0.0));
    // The recent-flows view stays bounded.
    let s = status(&agent);
    assert!(
        s["recent_flows"].as_u64().unwrap() <= u64::from(observer::defaults::FLOW_TABLE_ENTRIES),
        "the view follows the table size"
    );
    drop(servers);
}

fn raw_request(socket: &std::path::Path, body: &[u8]) -> String {
    let mut s = UnixStream::connect(socket).unwrap();
    s.write_all(body).unwrap();
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).unwrap();
    line
}

#[test]
fn bad_requests_on_the_socket_get_errors() {
    let n = Node::new(Layout::Calico);
    let agent = start(&n, "badreq", &[]);
    for (body, want) in [
        (b"not json\n".to_vec(), "bad request"),
        (b"{\"cmd\":\"reboot\"}\n".to_vec(), "bad request"),
        (
            b"{\"cmd\":\"flows\",\"verdict\":\"evil\"}\n".to_vec(),
            "unknown verdict",
        ),
        (
            b"{\"cmd\":\"explain\",\"src\":\"x\",\"dst\":\"y\"}\n".to_vec(),
            "invalid source",
        ),
        (
            b"{\"cmd\":\"status\",\"extra\":1}\n".to_vec(),
            "bad request",
        ),
        (vec![b'a'; 100_000], "longer than 64 KiB"),
        (b"".to_vec(), "empty request"),
    ] {
        let answer = raw_request(&agent.socket, &body);
        assert!(
            answer.contains("\"error\"") && answer.contains(want),
            "{want}: {answer}"
        );
    }
    // Still serving.
    assert!(agent.cli(&["status"]).status.success());
    let e = agent.cli(&["explain", "10.0.6.245", "nonsense"]);
    assert_eq!(e.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&e.stderr).contains("invalid destination"));
}

/// Followers that go away (`observer flows --follow` interrupted) give their debug-socket slot
/// back at once: after 100 of them (more than the 64 slots), each having received the view,
/// the next clients are served. Before, a follower's slot was held until the next update
/// reached it, and the 65th client was told "too many clients".
#[test]
fn interrupted_followers_free_their_slots() {
    let n = Node::new(Layout::Calico);
    let mut servers = Servers::new();
    servers.tcp(&n.pods[0].ns, 80);
    let agent = start(&n, "followers", &[]);
    // A flow in the view, so each follower gets a row as soon as it is following.
    assert!(
        testbed::traffic::tcp_get(&n.outside, None, n.pods[0].ip, 80)
            .1
            .is_ok()
    );
    wait_for("the flow in the view", Duration::from_secs(10), || {
        !flows(&agent).is_empty()
    });
    for i in 0..100 {
        let mut s = UnixStream::connect(&agent.socket).unwrap();
        s.write_all(b"{\"cmd\":\"flows\",\"follow\":true}\n")
            .unwrap();
        let mut line = String::new();
        BufReader::new(&s).read_line(&mut line).unwrap();
        assert!(
            line.contains("\"verdict\":\"direct_to_pod\""),
            "follower {i}: {line}"
        );
        // Interrupted: the connection closes without a word.
        drop(s);
    }
    assert!(agent.cli(&["status"]).status.success());
    drop(servers);
}

/// `BPF_MAP_TYPE_RINGBUF` in the kernel's fdinfo.
const BPF_MAP_TYPE_RINGBUF: u32 = 27;

/// A flood while the agent is stalled (SIGSTOP): far more new flows than the ring buffer and a
/// 1,024-entry flow table hold, of datagrams (and of mid-stream TCP alike: both take the
/// `FLOWS` path). Once resumed, the agent runs on, counts exactly what arrived, reports the
/// events it lost and a full table (`ObserverBlind`'s inputs), and still serves.
#[test]
fn a_stalled_agent_under_a_flood_counts_what_it_lost() {
    stalled_flood(Flood::Datagrams, 19_270);
}

/// The same with spoofed SYNs, which are staged until the rings of their CPUs are full and then
/// take the table path: every SYN is a record read, an event read, or an event counted lost,
/// and the agent reads no more than the staged rings and the event ring hold.
#[test]
fn a_stalled_agent_under_a_syn_flood_counts_what_it_lost() {
    stalled_flood(Flood::Syns, 19_275);
}

#[derive(Clone, Copy, PartialEq)]
enum Flood {
    Datagrams,
    Syns,
}

fn stalled_flood(kind: Flood, ports: u16) {
    ports_from(ports);
    let n = Node::new(Layout::VpcCni);
    let name = match kind {
        Flood::Datagrams => "stall",
        Flood::Syns => "stall-syn",
    };
    let agent = start(&n, name, &["--flow-table-entries", "1024"]);
    let (mut frame, proto) = match kind {
        Flood::Datagrams => (
            Frame::udp(n.outside_ip, n.pods[0].ip, 40000, 5353).build(),
            "udp",
        ),
        Flood::Syns => (
            Frame::tcp(n.outside_ip, n.pods[0].ip, 40000, 80, TCP_SYN).build(),
            "tcp",
        ),
    };
    frame[..6].copy_from_slice(&mac_of(&n.node, n.uplinks[0]));
    agent.stop();
    let sent = raw_flood(&n.outside, "eth0", frame, 1.0, 1, 0);
    agent.send(libc::SIGCONT);
    assert!(sent > 40_000, "the generator sent only {sent} frames");
    let mut m = String::new();
    wait_for("the flood in the metrics", Duration::from_secs(15), || {
        m = metrics(&n, &agent);
        sample(&m, "observer_events_lost_total", "").is_some_and(|v| v > 0.0)
    });
    let flows_label = format!("protocol=\"{proto}\",verdict=\"direct_to_pod\"");
    // Events still in the ring when the agent resumed are read after the first scrape: wait
    // until every packet is accounted for (or fail after 15 s with the figures below).
    let accounted = |m: &str| {
        let c = |name: &str, labels: &str| sample(m, name, labels).unwrap_or(0.0) as u64;
        c("observer_flows_total", &flows_label)
            + c("observer_events_lost_total", "")
            + c(
                "observer_datapath_events_total",
                "event=\"flow_insert_failed\"",
            )
    };
    // The table's fill is reported as of the last flow refresh: wait for one after the stall.
    let full = |m: &str| sample(m, "observer_flow_table_entries", "").unwrap_or(0.0) > 0.8 * 1024.0;
    let settled = |m: &str| match kind {
        Flood::Datagrams => full(m),
        Flood::Syns => status(&agent)["flow_refreshes"].as_u64().unwrap_or(0) > 2,
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while (accounted(&m) < sent || !settled(&m)) && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
        m = metrics(&n, &agent);
    }
    promtool_check(&m);
    let count = |name: &str, labels: &str| sample(&m, name, labels).unwrap_or(0.0) as u64;
    let seen = count(
        "observer_packets_total",
        &format!("protocol=\"{proto}\",verdict=\"direct_to_pod\""),
    );
    assert_eq!(seen, sent, "every flood packet counted in the kernel");
    // Every packet is a new flow (disjoint sources): each one is an event read, an event
    // lost, or a failed table insert, and nothing else.
    let read = count("observer_flows_total", &flows_label);
    let lost = count("observer_events_lost_total", "");
    let insert_failed = count(
        "observer_datapath_events_total",
        "event=\"flow_insert_failed\"",
    );
    assert_eq!(
        read + lost + insert_failed,
        sent,
        "{read} read + {lost} lost + {insert_failed} not inserted"
    );
    assert!(lost > 0 && read > 0, "{read} read, {lost} lost");
    let entries = sample(&m, "observer_flow_table_entries", "").unwrap();
    let capacity = sample(&m, "observer_flow_table_capacity", "").unwrap();
    assert_eq!(capacity, 1024.0);
    match kind {
        Flood::Datagrams => {
            // While the agent was stopped the ring could hold no more than its size, as the
            // kernel reports it: records of a FlowEvent behind an 8-byte header, in 8-byte
            // steps, with at most size - 1 bytes pending.
            let rings = agent.map_sizes(BPF_MAP_TYPE_RINGBUF);
            assert_eq!(rings.len(), 1, "the agent holds one ring buffer: {rings:?}");
            let record = (std::mem::size_of::<FlowEvent>() as u64 + 8).next_multiple_of(8);
            let ring_capacity = (rings[0] - 1) / record;
            assert!(
                read <= ring_capacity,
                "{read} events read from a ring of {} bytes ({ring_capacity} records)",
                rings[0]
            );
            println!(
                "{sent} sent: {read} read, {lost} lost, {insert_failed} not inserted; ring {} bytes, {ring_capacity} records",
                rings[0]
            );
            assert!(
                entries > 0.8 * capacity && entries <= capacity,
                "{entries} entries: ObserverBlind's table input must show a full table"
            );
        }
        Flood::Syns => {
            // A ring per CPU, each holding its slots while nobody reads them, then the event
            // ring (the table path).
            let cpus = aya::util::nr_cpus().unwrap() as u32;
            let slots = observer_common::maps::staged::slots_for(cpus);
            let rings = agent.map_sizes(BPF_MAP_TYPE_RINGBUF);
            let record = (std::mem::size_of::<FlowEvent>() as u64 + 8).next_multiple_of(8);
            let capacity_read = u64::from(cpus * slots) + (rings[0] - 1) / record;
            assert!(
                read <= capacity_read,
                "{read} SYNs read from {cpus} staged rings of {slots} records and the event ring"
            );
            println!("{sent} SYNs sent: {read} read, {lost} lost; {cpus} staged rings of {slots}");
            assert!(
                entries > 0.8 * capacity && entries <= capacity,
                "{entries} entries: the SYNs past the staged rings fill the table"
            );
        }
    }
    assert!(!m.contains("198.18."), "no source address in the metrics");
    // Still serving, with a bounded view.
    let s = status(&agent);
    assert!(
        s["recent_flows"].as_u64().unwrap() <= 1024,
        "the view follows the table size"
    );
    assert!(!flows(&agent).is_empty());
}

/// An address table too small for the node: the addresses that do not fit are not dropped but
/// kept, counted (`ObserverBlind`'s input) and written as soon as room is made.
#[test]
fn inventory_changes_the_kernel_refuses_are_kept_and_retried() {
    ports_from(19_280);
    let n = Node::new(Layout::Calico);
    let agent = start(
        &n,
        "small-table",
        &["--address-table-entries", "5", "--reconcile-interval", "1s"],
    );
    let unwritten = |m: &str| sample(m, "observer_inventory_unwritten_changes", "").unwrap_or(0.0);
    let mut m = String::new();
    wait_for("refused writes reported", Duration::from_secs(10), || {
        m = metrics(&n, &agent);
        unwritten(&m) > 0.0
    });
    promtool_check(&m);
    assert!(
        sample(&m, "observer_inventory_write_errors_total", "").unwrap_or(0.0) > 0.0,
        "{m}"
    );
    let pending = status(&agent)["inventory"]["unwritten"].as_u64().unwrap();
    assert!(pending > 0 && pending <= 3, "{pending} unwritten");
    // The pods go: their addresses leave the table, and what waited goes in.
    for p in &n.pods {
        n.node.sh(&["ip", "link", "del", p.veth]);
    }
    wait_for(
        "the pending changes written",
        Duration::from_secs(10),
        || {
            m = metrics(&n, &agent);
            unwritten(&m) == 0.0
        },
    );
    assert_eq!(status(&agent)["inventory"]["unwritten"], 0);
    let errors = sample(&m, "observer_inventory_write_errors_total", "").unwrap();
    // Two more syncs (each reconcile syncs, and retries what was refused): no refusal.
    let syncs = || status(&agent)["inventory"]["syncs"].as_u64().unwrap();
    let before = syncs();
    wait_for("two more inventory syncs", Duration::from_secs(10), || {
        syncs() >= before + 2
    });
    m = metrics(&n, &agent);
    assert_eq!(
        sample(&m, "observer_inventory_write_errors_total", "").unwrap(),
        errors,
        "no refusals once everything fits"
    );
}

/// A flood of spoofed SYNs to one pod, many times the view of recent flows, and in the same
/// second one real access to another pod: the real one is still counted, alerted and named.
/// (The view used to drop its oldest flows before they settled: 4,096 SYNs within the settle
/// time hid any other access.)
#[test]
fn a_flood_to_one_pod_does_not_hide_an_access_to_another() {
    ports_from(19_285);
    let n = Node::new(Layout::VpcCni);
    let mut servers = Servers::new();
    servers.tcp(&n.pods[1].ns, 80);
    let agent = start(&n, "flood-hide", &["--flow-table-entries", "1024"]);
    let mut frame = Frame::tcp("198.18.0.1", n.pods[0].ip, 40000, 80, TCP_SYN).build();
    frame[..6].copy_from_slice(&mac_of(&n.node, n.uplinks[0]));
    let (sent, (b_port, got)) = thread::scope(|s| {
        let flood = s.spawn(|| raw_flood(&n.outside, "eth0", frame, 1.0, 1, 8));
        thread::sleep(Duration::from_millis(300));
        let b = testbed::traffic::tcp_get(&n.outside, None, n.pods[1].ip, 80);
        (flood.join().unwrap(), b)
    });
    assert!(got.is_ok(), "pod B answered during the flood");
    assert!(sent > 10_000, "the flood sent only {sent} frames");
    let veth_b = n.pods[1].veth;
    let mut m = String::new();
    // Pod B's flow, in detail or (its event lost in the flood) counted per pod by the kernel.
    let of_b = |m: &str, name: &str| of_pod(m, name, veth_b);
    let b_counted = |m: &str| {
        of_b(m, "observer_direct_pod_access_flows_total")
            + of_b(m, "observer_direct_pod_access_lost_flows_total")
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while b_counted(&m) < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "pod B's access not counted ({sent} flood frames):\n{m}"
        );
        thread::sleep(Duration::from_millis(100));
        m = metrics(&n, &agent);
    }
    promtool_check(&m);
    assert_eq!(b_counted(&m), 1.0, "{m}");
    if of_b(&m, "observer_direct_pod_access_flows_total") == 1.0 {
        assert!(
            m.contains(&format!(
                "pod_name=\"{veth_b}\",pod_namespace=\"\",pod_workload=\"\",port=\"80\",protocol=\"tcp\",severity=\"unrated\",state=\"answered\""
            )),
            "pod B's access counted as answered: {m}"
        );
    }
    println!(
        "{sent} flood frames: {} events lost, pod B {}",
        sample(&m, "observer_events_lost_total", "").unwrap_or(0.0),
        if of_b(&m, "observer_direct_pod_access_flows_total") == 1.0 {
            "in detail"
        } else {
            "counted by the kernel, details lost"
        }
    );
    wait_for("pod B's alert", Duration::from_secs(5), || {
        alert_lines(&agent)
            .iter()
            .any(|a| a["pod"] == veth_b && (a["src_port"] == b_port || a["origin"] == "lost"))
    });
    assert!(
        sample(&m, "observer_direct_flows_settled_early_total", "").unwrap_or(0.0) > 0.0,
        "the flood pushed unsettled flows out of the view, counted first: {m}"
    );
    // Every flood SYN is counted somewhere: in detail, or per pod by the kernel (read at the
    // agent's next refresh; pod B's flow may be the one other lost event).
    let lost_a = |m: &str| {
        let labels = format!(
            "pod_name=\"{}\",pod_namespace=\"\",pod_workload=\"\",severity=\"unrated\"",
            n.pods[0].veth
        );
        sample(m, "observer_direct_pod_access_lost_flows_total", &labels).unwrap_or(0.0)
    };
    let lost = |m: &str| sample(m, "observer_events_lost_total", "").unwrap_or(0.0);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while lost(&m) - lost_a(&m) > 1.0 && std::time::Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
        m = metrics(&n, &agent);
    }
    assert!(
        lost_a(&m) <= lost(&m) && lost(&m) - lost_a(&m) <= 1.0,
        "pod A's lost flows {} of {} lost events",
        lost_a(&m),
        lost(&m)
    );
    drop(servers);
}

/// A real access pushed out of the view by a flood before it settled is counted with what the
/// kernel table holds of it: its packets after the SYN (the ACK that continued its staged SYN,
/// the request, the close), in the pod's direct-access packet counter. (Flows pushed out
/// unsettled used to count as flows but never as packets; and a flood's flows, which only the
/// staged ring knows, are read from no table.)
#[test]
fn an_access_pushed_out_by_a_flood_is_counted_with_its_packets() {
    ports_from(19_285);
    let n = Node::new(Layout::VpcCni);
    let mut servers = Servers::new();
    servers.tcp(&n.pods[1].ns, 80);
    let agent = start(&n, "flood-evicts", &["--flow-table-entries", "1024"]);
    let (_, got) = testbed::traffic::tcp_get(&n.outside, None, n.pods[1].ip, 80);
    assert!(got.is_ok(), "pod B answered");
    // Read by the agent (it polls every 20 ms), then pushed out long before it settles (2 s).
    thread::sleep(Duration::from_millis(200));
    let mut frame = Frame::tcp("198.18.0.1", n.pods[0].ip, 40000, 80, TCP_SYN).build();
    frame[..6].copy_from_slice(&mac_of(&n.node, n.uplinks[0]));
    let sent = raw_flood(&n.outside, "eth0", frame, 0.3, 1, 8);
    assert!(sent > 4_096, "the flood sent only {sent} frames");
    let veth_b = n.pods[1].veth;
    let of_b = |m: &str, name: &str| of_pod(m, name, veth_b);
    let mut m = String::new();
    wait_for("pod B's access counted", Duration::from_secs(10), || {
        m = metrics(&n, &agent);
        of_b(&m, "observer_direct_pod_access_flows_total") >= 1.0
    });
    promtool_check(&m);
    assert_eq!(
        of_b(&m, "observer_direct_pod_access_flows_total"),
        1.0,
        "{m}"
    );
    assert!(
        sample(&m, "observer_direct_flows_settled_early_total", "").unwrap_or(0.0) > 0.0,
        "the flood pushed unsettled flows out: {m}"
    );
    // SYN, ACK, request, FIN and the last ACK came from outside; the SYN alone is 1.
    let packets = of_b(&m, "observer_direct_pod_access_packets_total");
    assert!(
        packets >= 3.0,
        "pod B's flow counted with {packets} packets, not what the kernel table held: {m}"
    );
    // The flood's own flows were counted, packets too.
    let flood_packets = of_pod(
        &m,
        "observer_direct_pod_access_packets_total",
        n.pods[0].veth,
    );
    assert!(flood_packets > 0.0, "{m}");
    drop(servers);
}

/// The sum of a metric's series of one pod (named by its veth, no Kubernetes inventory).
fn of_pod(m: &str, name: &str, pod: &str) -> f64 {
    m.lines()
        .filter(|l| {
            l.starts_with(&format!("{name}{{")) && l.contains(&format!("pod_name=\"{pod}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
