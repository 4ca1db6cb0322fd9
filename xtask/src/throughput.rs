//! Throughput through a node with the observer attached (in the default mode and in
//! `uplink-egress` mode) vs the same node without it, in rotating rounds so that machine noise
//! hits all alike: iperf3 TCP with 1 and
//! 8 streams and 64-byte UDP datagrams from 8 source ports, from an in-cluster peer (the bulk
//! case) and TCP straight from outside (a flagged flow: every packet updates `FLOWS`).

use std::{
    path::Path,
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};
use testbed::{
    agent::AgentProc,
    netns::Netns,
    topology::{Layout, Node},
};

const ROUNDS: usize = 5;
/// The node bare, observed (default attach mode: TCX on pod veths), with netlink-attached
/// filters on pod veths, and with the pod side read at the uplinks' egress: (label,
/// `--attach-mode`). The first two are the bare and observed columns; the others follow.
const VARIANTS: [(&str, Option<&str>); 4] = [
    ("bare", None),
    ("observed", Some("auto")),
    ("netlink-pods", Some("netlink-pods")),
    ("uplink-egress", Some("uplink-egress")),
];
const SECONDS: u32 = 3;
const PORT: &str = "5201";

struct Test {
    name: &'static str,
    from_outside: bool,
    args: &'static [&'static str],
    udp: bool,
}

const TESTS: &[Test] = &[
    Test {
        name: "TCP, 1 stream, in cluster",
        from_outside: false,
        args: &["-P", "1"],
        udp: false,
    },
    Test {
        name: "TCP, 8 streams, in cluster",
        from_outside: false,
        args: &["-P", "8"],
        udp: false,
    },
    Test {
        name: "UDP 64-byte datagrams, 8 source ports, in cluster",
        from_outside: false,
        args: &["-u", "-l", "64", "-b", "0", "-P", "8"],
        udp: true,
    },
    Test {
        name: "TCP, 1 stream, direct from outside (flagged flow)",
        from_outside: true,
        args: &["-P", "1"],
        udp: false,
    },
];

/// One iperf3 run: bits/s received for TCP, datagrams/s received for UDP.
fn iperf(from: &Netns, to: &str, t: &Test) -> Result<f64> {
    let out = Command::new("ip")
        .args([
            "netns", "exec", &from.name, "iperf3", "-c", to, "-p", PORT, "-J",
        ])
        .args(["-t", &SECONDS.to_string()])
        .args(t.args)
        .output()
        .context("running iperf3")?;
    let v: Value = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("iperf3 output: {}", String::from_utf8_lossy(&out.stderr)))?;
    if let Some(e) = v.get("error") {
        bail!("iperf3: {e}");
    }
    let end = &v["end"];
    if t.udp {
        let sum = &end["sum"];
        let received =
            sum["packets"].as_f64().unwrap_or(0.0) - sum["lost_packets"].as_f64().unwrap_or(0.0);
        Ok(received / sum["seconds"].as_f64().unwrap_or(f64::from(SECONDS)))
    } else {
        end["sum_received"]["bits_per_second"]
            .as_f64()
            .context("no sum_received in iperf3's output")
    }
}

/// Packets the uplink program judged so far (every verdict), from the agent's metrics.
fn uplink_packets(n: &Node) -> f64 {
    let text = testbed::traffic::http_get(&n.node, 19_704, "/metrics")
        .map(|(_, body)| body)
        .unwrap_or_default();
    crate::bench::metric_sum(&text, "observer_packets_total{")
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs the A/B rounds with the release agent `bin`; returns the figures and a Markdown table.
pub fn run(bin: &Path) -> Result<(Value, String)> {
    println!(
        "==> throughput A/B (iperf3, {ROUNDS} alternating rounds of {SECONDS} s per test and mode)"
    );
    let n = Node::new(Layout::Calico);
    let pod = n.pods[0].ip;
    let mut server: Child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &n.pods[0].ns.name,
            "iperf3",
            "-s",
            "-p",
            PORT,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting the iperf3 server")?;
    std::thread::sleep(Duration::from_millis(300));
    let dir = std::env::temp_dir().join(format!("observer-bench-ab-{}", std::process::id()));
    let cluster = format!("172.16.0.0/16,{}/32", n.peer_ip);
    // Samples per variant (`VARIANTS`) and test.
    let mut samples: Vec<Vec<Vec<f64>>> = vec![vec![Vec::new(); TESTS.len()]; VARIANTS.len()];
    // Packets (skbs: GSO/GRO aggregates) per second the uplink program ran on, observed rounds.
    let mut skbs: Vec<Vec<f64>> = vec![Vec::new(); TESTS.len()];
    let result = (|| -> Result<()> {
        for round in 0..ROUNDS {
            // Rotate which variant goes first, so a drift of the machine hits all alike.
            for k in 0..VARIANTS.len() {
                let v_index = (round + k) % VARIANTS.len();
                let (label, mode) = VARIANTS[v_index];
                let agent = mode.map(|mode| {
                    AgentProc::start(
                        bin,
                        &n.node,
                        &dir,
                        19_704,
                        &[
                            "--cluster-cidr",
                            &cluster,
                            "--log-level",
                            "warn",
                            "--attach-mode",
                            mode,
                        ],
                    )
                });
                for (i, t) in TESTS.iter().enumerate() {
                    let from = if t.from_outside { &n.outside } else { &n.peer };
                    let before = agent.as_ref().map(|_| uplink_packets(&n));
                    let v = iperf(from, pod, t)?;
                    if let (Some(b), 1) = (before, v_index) {
                        skbs[i].push((uplink_packets(&n) - b) / f64::from(SECONDS));
                    }
                    println!(
                        "    round {} {label:<14} {:<52} {v:>14.0}",
                        round + 1,
                        t.name
                    );
                    samples[v_index][i].push(v);
                }
                if let Some(mut a) = agent {
                    a.signal(libc::SIGTERM);
                }
            }
        }
        Ok(())
    })();
    let _ = server.kill();
    let _ = server.wait();
    let _ = std::fs::remove_dir_all(&dir);
    result?;
    let mut md = String::from(
        "## Throughput, observed vs bare node (iperf3, medians of alternating rounds)\n\n| test | bare (min-max) | observed (min-max) | ratio of medians | uplink program runs/s |",
    );
    for (label, _) in &VARIANTS[2..] {
        md.push_str(&format!(
            " observed, `{label}` (min-max) | ratio of medians |"
        ));
    }
    md.push_str("\n|---|---|---|---|---|");
    md.push_str(&"---|---|".repeat(VARIANTS.len() - 2));
    md.push('\n');
    let mut out = serde_json::Map::new();
    for (i, t) in TESTS.iter().enumerate() {
        let medians: Vec<f64> = samples.iter_mut().map(|v| median(&mut v[i])).collect();
        let unit = if t.udp { "datagrams/s" } else { "bit/s" };
        let fmt = |v: f64| {
            if t.udp {
                format!("{:.0} k/s", v / 1e3)
            } else {
                format!("{:.2} Gbit/s", v / 1e9)
            }
        };
        // median() sorted the samples: first and last are min and max.
        let spread = |v: &[f64]| format!("({}-{})", fmt(v[0]), fmt(v[v.len() - 1]));
        let runs = median(&mut skbs[i]);
        let bare = medians[0];
        md.push_str(&format!(
            "| {} | {} {} | {} {} | {:.1} % | {:.0} k |",
            t.name,
            fmt(bare),
            spread(&samples[0][i]),
            fmt(medians[1]),
            spread(&samples[1][i]),
            100.0 * medians[1] / bare,
            runs / 1e3,
        ));
        let mut row = json!({"unit": unit, "bare_median": bare, "observed_median": medians[1],
                   "ratio": medians[1] / bare, "bare": samples[0][i], "observed": samples[1][i],
                   "uplink_program_runs_per_s": runs});
        for (v, (label, _)) in VARIANTS.iter().enumerate().skip(2) {
            md.push_str(&format!(
                " {} {} | {:.1} % |",
                fmt(medians[v]),
                spread(&samples[v][i]),
                100.0 * medians[v] / bare,
            ));
            let name = label.replace('-', "_");
            row[format!("{name}_median")] = json!(medians[v]);
            row[format!("{name}_ratio")] = json!(medians[v] / bare);
            row[name] = json!(samples[v][i]);
        }
        md.push('\n');
        out.insert(t.name.into(), row);
    }
    md.push_str(
        "\nTargets: TCP >= 98 %, small-packet pps >= 95 %. On a shared 2-core machine a bare \
         8-stream run alone varies by 2x; compare the spreads before reading a ratio.\n\n",
    );
    print!("{md}");
    Ok((Value::Object(out), md))
}
