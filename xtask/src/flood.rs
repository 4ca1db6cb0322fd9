//! `cargo xtask bench --only flood`: spoofed-source SYN floods to a pod IP on a simulated node
//! with a running agent.

use std::{path::Path, time::Duration};

use anyhow::Result;
use serde_json::{Value, json};
use testbed::agent::AgentProc;

use crate::bench::{cpu_ticks, metric_sum, rss_kib};

/// One run of the flood, and what the observer made of it.
struct FloodRun {
    sent: u64,
    arrived: u64,
    seen: f64,
    events: f64,
    lost: f64,
    /// New flows the kernel's LRU could not take under contention (no event; still counted).
    insert_failed: f64,
    cpu: f64,
}

/// The runs: (column, `--attach-mode`, dropped after the observer). The pod-side attach modes
/// only differ where the SYNs reach the pod.
const RUNS: [(&str, &str, bool); 4] = [
    ("through the node", "auto", false),
    ("dropped after the observer", "auto", true),
    ("through the node, `netlink-pods`", "netlink-pods", false),
    ("through the node, `uplink-egress`", "uplink-egress", false),
];

/// Spoofed-source SYN floods to a pod IP from the outside host, on a simulated node with a
/// running agent: through the whole node (the SYNs reach the pod, which answers) in each
/// attach mode, and once dropped by nftables right after the observer's hook, so the figure
/// is what the observer itself keeps up with rather than what the node's forwarding path
/// does.
pub fn run(bin: &Path) -> Result<(Value, String)> {
    use observer_common::{packet::TCP_SYN, testing::frames::Frame};
    use testbed::{
        topology::{Layout, Node},
        traffic::{http_get, mac_of, raw_flood},
    };
    const SECS: f64 = 5.0;
    let n = Node::new(Layout::Calico);
    let dir = std::env::temp_dir().join(format!("observer-bench-flood-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let start = |mode: &str| {
        AgentProc::start(
            bin,
            &n.node,
            &dir,
            19_704,
            &["--cluster-cidr", "172.16.0.0/16", "--attach-mode", mode],
        )
    };
    let mut agent = start("auto");
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get().min(8));
    let mut frame = Frame::tcp(n.outside_ip, n.pods[0].ip, 40000, 80, TCP_SYN).build();
    frame[..6].copy_from_slice(&mac_of(&n.node, "eth0"));
    let metrics = || -> Result<String> {
        Ok(http_get(&n.node, 19_704, "/metrics")
            .map_err(anyhow::Error::msg)?
            .1)
    };
    let series = |m: &str| {
        m.lines()
            .filter(|l| l.starts_with("observer_direct_pod_access_flows_total{"))
            .count()
    };
    let figures = |m: &str| {
        (
            metric_sum(
                m,
                "observer_packets_total{protocol=\"tcp\",verdict=\"direct_to_pod\"}",
            ),
            metric_sum(
                m,
                "observer_flows_total{protocol=\"tcp\",verdict=\"direct_to_pod\"}",
            ),
            metric_sum(m, "observer_events_lost_total"),
            metric_sum(
                m,
                "observer_datapath_events_total{event=\"flow_insert_failed\"}",
            ),
        )
    };
    let rx = || -> u64 {
        n.node
            .sh(&["cat", "/sys/class/net/eth0/statistics/rx_packets"])
            .trim()
            .parse()
            .unwrap_or(0)
    };
    let series_before = series(&metrics()?);
    let (mut series_after, mut rss, mut hwm) = (0, 0, 0);
    let mut runs = Vec::new();
    for (k, &(_, mode, drop_after)) in RUNS.iter().enumerate() {
        if k > 0 && mode != RUNS[k - 1].1 {
            if k == 2 {
                // The default mode's figures, before its agent goes.
                (rss, hwm) = rss_kib(agent.pid());
                series_after = series(&metrics()?);
            }
            agent.signal(libc::SIGTERM);
            drop(agent);
            agent = start(mode);
        }
        if drop_after {
            n.node.sh(&["nft", "add table netdev bench"]);
            n.node.sh(&[
                "nft",
                "add chain netdev bench flood { type filter hook ingress device eth0 priority 0; policy drop; }",
            ]);
        }
        println!(
            "==> spoofed-source SYN flood to a pod IP ({SECS} s, {threads} sender threads, {})",
            RUNS[k].0
        );
        let (seen0, events0, lost0, failed0) = figures(&metrics()?);
        let rx0 = rx();
        let cpu0 = cpu_ticks(agent.pid());
        // Each run's sources follow the last's, so none is a flow already in the table.
        let first_block = (k * threads) as u32;
        let sent = raw_flood(
            &n.outside,
            "eth0",
            frame.clone(),
            SECS,
            threads,
            first_block,
        );
        // Let the agent drain the ring buffer.
        std::thread::sleep(Duration::from_millis(3000));
        let cpu1 = cpu_ticks(agent.pid());
        let (seen1, events1, lost1, failed1) = figures(&metrics()?);
        // SAFETY: sysconf has no preconditions.
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        runs.push((
            k,
            FloodRun {
                sent,
                arrived: rx() - rx0,
                seen: seen1 - seen0,
                events: events1 - events0,
                lost: lost1 - lost0,
                insert_failed: failed1 - failed0,
                cpu: (cpu1 - cpu0) as f64 / hz / SECS,
            },
        ));
        if drop_after {
            n.node.sh(&["nft", "delete table netdev bench"]);
        }
    }
    let mut md = format!(
        "## Spoofed-source SYN flood to one pod ({SECS} s, {threads} sender threads, a new source per frame)\n\n| figure |"
    );
    for (column, _, _) in RUNS {
        md.push_str(&format!(" {column} |"));
    }
    md.push_str(&format!("\n|---|{}\n", "---|".repeat(RUNS.len())));
    let row = |name: &str, f: &dyn Fn(&FloodRun) -> String| {
        let cells: String = runs.iter().map(|(_, r)| format!(" {} |", f(r))).collect();
        format!("| {name} |{cells}\n")
    };
    md.push_str(&row("frames sent", &|r| r.sent.to_string()));
    md.push_str(&row("frames that reached the uplink", &|r| {
        r.arrived.to_string()
    }));
    md.push_str(&row("SYNs judged at the uplink (kernel counter)", &|r| {
        format!("{:.0} ({:.0}/s)", r.seen, r.seen / SECS)
    }));
    md.push_str(&row("new-flow events delivered / lost", &|r| {
        format!("{:.0} / {:.0}", r.events, r.lost)
    }));
    md.push_str(&row("new flows the flow table could not take", &|r| {
        format!("{:.0}", r.insert_failed)
    }));
    md.push_str(&row("agent CPU (cores, over the flood)", &|r| {
        format!("{:.2}", r.cpu)
    }));
    md.push_str(&format!(
        "\nDefault mode's agent: RSS after its two floods {:.1} MiB, peak {:.1} MiB; direct-access series before / after: {series_before} / {series_after}.\n\n",
        rss as f64 / 1024.0,
        hwm as f64 / 1024.0
    ));
    let json_runs: Vec<Value> = runs
        .iter()
        .map(|&(k, ref r)| {
            json!({
                "attach_mode": RUNS[k].1, "dropped_after_the_observer": RUNS[k].2,
                "seconds": SECS, "sender_threads": threads,
                "frames_sent": r.sent, "frames_at_the_uplink": r.arrived,
                "syns_seen_by_the_uplink": r.seen, "new_flows_per_second_seen": r.seen / SECS,
                "events_delivered": r.events, "events_lost": r.lost,
                "flow_inserts_failed": r.insert_failed, "agent_cpu_cores": r.cpu,
            })
        })
        .collect();
    let value = json!({
        "runs": json_runs,
        "agent_rss_mib": rss as f64 / 1024.0, "agent_peak_rss_mib": hwm as f64 / 1024.0,
        "series_before": series_before, "series_after": series_after,
    });
    Ok((value, md))
}
