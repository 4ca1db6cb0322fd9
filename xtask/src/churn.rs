//! `cargo xtask bench --only churn`: pod veths created and deleted at 20/s and 100/s on a
//! simulated node with a running agent, from link creation (as `ip monitor` hears it) to the
//! programs attached, with TCX and with netlink filters on pod veths; and, with nothing on pod
//! veths (`uplink-egress`), what the churn costs the node's link creation then.

use std::{
    path::Path,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};
use testbed::agent::AgentProc;

use crate::bench::status;

/// Pod veth churn on a simulated node with a running agent: link created -> programs attached,
/// with the default attach mode (TCX), with netlink filters on pod veths (`netlink-pods`), and
/// with nothing on pod veths (`uplink-egress`: the pod side read at the uplinks' egress).
pub fn run(bin: &Path) -> Result<(Value, String)> {
    use testbed::topology::{Layout, Node};
    let n = Node::new(Layout::Calico);
    let mut out = serde_json::Map::new();
    let mut md = String::from(
        "## Pod interface churn (link created -> programs attached)\n\n| pod veth attach | rate | veths | p50 | p99 | max | missed | link creation delayed, p99 |\n|---|---|---|---|---|---|---|---|\n",
    );
    for (mode, pod_mode) in [
        ("auto", "tcx"),
        ("netlink-pods", "netlink"),
        ("uplink-egress", "none"),
    ] {
        let dir = std::env::temp_dir().join(format!(
            "observer-bench-churn-{mode}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        let mut agent = AgentProc::start(
            bin,
            &n.node,
            &dir,
            19_703,
            &["--cluster-cidr", "172.16.0.0/16", "--attach-mode", mode],
        );
        let runs = churn_runs(&n, &agent, &dir, pod_mode, &mut md)?;
        // Detached cleanly before the next mode.
        agent.signal(libc::SIGTERM);
        out.insert(format!("pod_veths_{pod_mode}"), runs);
    }
    md.push('\n');
    Ok((Value::Object(out), md))
}

/// Veths created at 20/s and 100/s with a running agent, each second's deleted a second later.
fn churn_runs(
    n: &testbed::topology::Node,
    agent: &AgentProc,
    dir: &Path,
    pod_mode: &str,
    md: &mut String,
) -> Result<Value> {
    use std::io::Write as _;
    let mut out = serde_json::Map::new();
    let interfaces = |agent: &AgentProc| {
        status(agent).map_or(0, |s| s["interfaces"].as_array().map_or(0, Vec::len))
    };
    let baseline = interfaces(agent);
    for (rate, count) in [(20u32, 100usize), (100, 300)] {
        println!(
            "==> churn at {rate}/s, {pod_mode} on pod veths (each second's veths deleted together, a second later, as the \
             kernel's namespace cleanup deletes pods' veths)"
        );
        agent.clear_log();
        // The kernel's creation time of each link, as `ip monitor` hears it: a deletion holds
        // the RTNL for an RCU grace period (about 16 ms here, per deletion or per batch), so a
        // link can be created after it was asked for, and the agent cannot attach before it
        // exists. One link at a time, deletions alone could not keep up with 100/s here.
        let monitor_log = dir.join(format!("monitor-{rate}.txt"));
        let monitor = Reaped(
            std::process::Command::new("ip")
                .args(["-n", &n.node.name, "-ts", "monitor", "link"])
                .stdout(std::fs::File::create(&monitor_log)?)
                .spawn()
                .context("starting ip monitor")?,
        );
        std::thread::sleep(Duration::from_millis(200));
        // One `ip -batch` process for additions and one for deletions take the commands as they
        // are written, so the pace is the bench's, not that of starting a process per link.
        // -force: a group whose creation is still queued behind the RTNL is deleted at the end.
        let batch = || {
            std::process::Command::new("ip")
                .args(["-n", &n.node.name, "-force", "-batch", "-"])
                .stdin(std::process::Stdio::piped())
                .spawn()
                .context("starting ip -batch")
        };
        let (mut adder, mut deleter) = (Reaped(batch()?), Reaped(batch()?));
        let mut add = adder.0.stdin.take().context("ip -batch stdin")?;
        let mut del = deleter.0.stdin.take().context("ip -batch stdin")?;
        let mut names = Vec::new();
        let period = Duration::from_secs_f64(1.0 / f64::from(rate));
        let t0 = Instant::now();
        let wall0 = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs_f64();
        let per_second = rate as usize;
        for i in 0..count + 2 * per_second {
            if i < count {
                let name = format!("veth{rate}x{i}");
                // Each second's links form a group (1, 2, ...), deleted together.
                let group = 1 + i / per_second;
                writeln!(
                    add,
                    "link add {name} group {group} type veth peer name pb{rate}x{i}"
                )?;
                add.flush()?;
                names.push(name);
            }
            if i % per_second == 0 && i >= 2 * per_second {
                writeln!(del, "link del group {}", 1 + i / per_second - 2)?;
                del.flush()?;
            }
            let next = period * (i as u32 + 1);
            if let Some(wait) = next.checked_sub(t0.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        drop((add, del));
        let added = adder.0.wait()?;
        if !added.success() {
            bail!("ip -batch (additions) failed: {added}");
        }
        let _ = deleter.0.wait();
        for group in 1..=count.div_ceil(per_second) {
            let _ = std::process::Command::new("ip")
                .args([
                    "-n",
                    &n.node.name,
                    "link",
                    "del",
                    "group",
                    &group.to_string(),
                ])
                .stderr(std::process::Stdio::null())
                .status();
        }
        std::thread::sleep(Duration::from_millis(300));
        drop(monitor);
        let mut created_at: std::collections::HashMap<String, f64> =
            std::collections::HashMap::new();
        for l in std::fs::read_to_string(&monitor_log)?.lines() {
            // [2026-11-25T03:20:34.688163] 3: veth20x1@pb20x1: <...>
            let Some((ts, rest)) = l.strip_prefix('[').and_then(|l| l.split_once("] ")) else {
                continue;
            };
            if let Some(name) = rest.split(": ").nth(1).and_then(|n| n.split('@').next()) {
                created_at
                    .entry(name.to_string())
                    .or_insert_with(|| parse_ts(&format!("{ts}Z")));
            }
        }
        let created: Vec<(String, Option<f64>)> = names
            .into_iter()
            .map(|n| {
                let at = created_at.get(&n).copied();
                (n, at)
            })
            .collect();
        std::thread::sleep(Duration::from_secs(2));
        let mut attached: std::collections::HashMap<String, f64> = std::collections::HashMap::new();
        for l in agent.log_lines() {
            let Ok(v) = serde_json::from_str::<Value>(&l) else {
                continue;
            };
            if v["message"] == "attached"
                && let (Some(i), Some(ts)) = (v["iface"].as_str(), v["timestamp"].as_str())
            {
                attached.insert(i.to_string(), parse_ts(ts));
            }
        }
        let mut lat: Vec<f64> = Vec::new();
        let mut missed = 0;
        let mut unheard = 0;
        for (name, at) in &created {
            match (at, attached.get(name)) {
                (Some(c), Some(t)) => lat.push(((t - c) * 1000.0).max(0.0)),
                (None, Some(_)) => unheard += 1,
                (_, None) => missed += 1,
            }
        }
        if unheard > 0 {
            println!(
                "    {unheard} links attached but not heard by ip monitor: left out of the latencies"
            );
        }
        // How late the kernel created each link after it was asked for (RTNL contention).
        let mut delay: Vec<f64> = created
            .iter()
            .enumerate()
            .filter_map(|(i, (_, at))| {
                at.map(|c| ((c - wall0 - i as f64 / f64::from(rate)) * 1000.0).max(0.0))
            })
            .collect();
        delay.sort_by(|a, b| a.total_cmp(b));
        let delay_p99 = delay
            .get(((delay.len() as f64 - 1.0) * 0.99).round() as usize)
            .copied()
            .unwrap_or(f64::NAN);
        lat.sort_by(|a, b| a.total_cmp(b));
        let pct = |p: f64| {
            lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        if pod_mode == "none" {
            // Nothing to attach: every veth the agent attached to would be a bug.
            let wrongly = attached.len();
            if wrongly > 0 {
                bail!("uplink-egress mode attached programs to {wrongly} pod veths");
            }
            md.push_str(&format!(
                "| {pod_mode} | {rate}/s | {count} | nothing to attach | | | | {delay_p99:.0} ms |\n"
            ));
        } else {
            md.push_str(&format!(
                "| {pod_mode} | {rate}/s | {count} | {:.1} ms | {:.1} ms | {:.1} ms | {missed} | {delay_p99:.0} ms |\n",
                pct(0.5),
                pct(0.99),
                pct(1.0)
            ));
        }
        out.insert(format!("churn_{rate}_per_s"), json!({"veths": count, "p50_ms": pct(0.5), "p99_ms": pct(0.99), "max_ms": pct(1.0), "missed": missed, "link_creation_delay_p99_ms": delay_p99}));
    }
    std::thread::sleep(Duration::from_secs(1));
    let left = interfaces(agent);
    md.push_str(&format!(
        "| {pod_mode} | interfaces the agent follows | {baseline} before, {left} after | | | | | |\n"
    ));
    out.insert(
        "interfaces_before_and_after".into(),
        json!([baseline, left]),
    );
    Ok(Value::Object(out))
}

/// A child process killed and reaped when dropped, so an early return leaves none behind.
struct Reaped(std::process::Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Seconds since the epoch of an RFC 3339 UTC timestamp (tracing's JSON format).
pub(crate) fn parse_ts(ts: &str) -> f64 {
    // 2026-11-25T01:08:32.975584Z
    let (date, time) = ts.trim_end_matches('Z').split_once('T').unwrap_or(("", ""));
    let d: Vec<i64> = date.split('-').filter_map(|x| x.parse().ok()).collect();
    let t: Vec<f64> = time.split(':').filter_map(|x| x.parse().ok()).collect();
    if d.len() != 3 || t.len() != 3 {
        return 0.0;
    }
    let (y, m, day) = (d[0] - i64::from(d[1] <= 2), d[1], d[2]);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    days as f64 * 86_400.0 + t[0] * 3600.0 + t[1] * 60.0 + t[2]
}

#[cfg(test)]
mod tests {
    #[test]
    fn timestamps_parse() {
        assert_eq!(super::parse_ts("2026-11-25T00:00:00Z"), 1_795_564_800.0);
        assert!((super::parse_ts("2000-02-29T01:02:03.5Z") - 951_786_123.5).abs() < 1e-6);
    }
}
