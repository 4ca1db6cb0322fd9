//! `docs/performance.md`, rendered from `target/bench/report.json`: `cargo xtask bench
//! --write-docs` writes it after the run, `cargo xtask bench --write-docs --from-report` from the
//! last report alone. The page gives the run's date and machine, then each section of the bench
//! with how it measures and its figures. It is regenerated, never edited by hand.

use std::{
    path::Path,
    process::Command,
    time::{SystemTime, UNIX_EPOCH},
};

mod sections;

use anyhow::{Context as _, Result};
pub(crate) use sections::conntrack;
use sections::{churn, datapath, flood, inventory, throughput};
use serde_json::{Value, json};

/// The page, from the workspace root.
pub const PAGE: &str = "docs/performance.md";
/// The report it is rendered from, from the workspace root.
pub const REPORT: &str = "target/bench/report.json";
/// The report's key for the run's [`Meta`] (beside the sections' keys).
pub const META_KEY: &str = "run";
/// Width of the page's paragraphs, as the other docs.
const WIDTH: usize = 100;

/// When and where the figures were measured.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Meta {
    /// The run's start, UTC (`2026-11-25 08:15 UTC`).
    pub date: String,
    /// The checkout's commit, with local changes noted; none outside a git checkout.
    pub commit: Option<String>,
    /// The agent binary, when `XTASK_BENCH_AGENT` named another build than the checkout's.
    pub agent: Option<String>,
    /// The kernel release (`/proc/sys/kernel/osrelease`).
    pub kernel: String,
    /// CPUs online.
    pub cpus: usize,
    /// The CPU model (`/proc/cpuinfo`).
    pub cpu_model: String,
}

impl Meta {
    /// This machine, for a run that started `at`; `agent` when it is not the checkout's build.
    pub fn collect(at: SystemTime, agent: Option<&Path>) -> Meta {
        let read = |p: &str| std::fs::read_to_string(p).unwrap_or_default();
        let cpuinfo = read("/proc/cpuinfo");
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                (k.trim() == "model name").then(|| v.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".to_string());
        let listed = cpuinfo
            .lines()
            .filter(|l| l.starts_with("processor"))
            .count();
        let cpus = if listed > 0 {
            listed
        } else {
            std::thread::available_parallelism().map_or(1, |n| n.get())
        };
        let kernel = read("/proc/sys/kernel/osrelease").trim().to_string();
        Meta {
            date: utc_date(at),
            commit: commit(),
            agent: agent.map(|p| p.display().to_string()),
            kernel: if kernel.is_empty() {
                "unknown".to_string()
            } else {
                kernel
            },
            cpus,
            cpu_model,
        }
    }

    /// As kept in the report, under [`META_KEY`].
    pub fn to_json(&self) -> Value {
        json!({
            "date_utc": self.date,
            "commit": self.commit,
            "agent": self.agent,
            "kernel": self.kernel,
            "cpus": self.cpus,
            "cpu_model": self.cpu_model,
        })
    }

    /// From the report's [`META_KEY`]; none when the report has no such entry.
    pub fn from_json(v: &Value) -> Option<Meta> {
        let s = |k: &str| v[k].as_str().map(str::to_string);
        Some(Meta {
            date: s("date_utc")?,
            commit: s("commit"),
            agent: s("agent"),
            kernel: s("kernel")?,
            cpus: usize::try_from(v["cpus"].as_u64()?).ok()?,
            cpu_model: s("cpu_model")?,
        })
    }
}

/// The checkout's commit (`git rev-parse --short=12 HEAD`), noting uncommitted changes.
fn commit() -> Option<String> {
    fn git(args: &[&str]) -> Option<String> {
        let out = Command::new("git").args(args).output().ok()?;
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
    let head = git(&["rev-parse", "--short=12", "HEAD"]).filter(|h| !h.is_empty())?;
    let changed =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if changed {
        format!("{head} with local changes")
    } else {
        head
    })
}

/// `at` as `YYYY-MM-DD HH:MM UTC` (the proleptic Gregorian calendar, from days since the epoch).
pub fn utc_date(at: SystemTime) -> String {
    let secs = at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    let (hour, minute) = (secs % 86_400 / 3_600, secs % 3_600 / 60);
    let days = i64::try_from(secs / 86_400).unwrap_or(0);
    // Howard Hinnant's civil_from_days: eras of 400 years, years starting in March.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02} UTC")
}

/// Renders [`PAGE`] under `root` from [`REPORT`].
pub fn write(root: &Path) -> Result<()> {
    let path = root.join(REPORT);
    let text = std::fs::read_to_string(&path).with_context(|| {
        format!(
            "cannot read {} (run `cargo xtask bench` first)",
            path.display()
        )
    })?;
    let report: Value =
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let meta = Meta::from_json(&report[META_KEY]).unwrap_or_else(|| {
        // A report without the run's facts: the time it was written, and this machine.
        let at = std::fs::metadata(&path)
            .and_then(|m| m.modified())
            .unwrap_or_else(|_| SystemTime::now());
        Meta::collect(at, None)
    });
    let page = root.join(PAGE);
    std::fs::write(&page, render(&report, &meta))
        .with_context(|| format!("writing {}", page.display()))?;
    crate::step(&format!(
        "{PAGE} written from {REPORT} (run of {})",
        meta.date
    ));
    Ok(())
}

/// One section of the bench as the page shows it.
pub(crate) struct Section {
    /// Its key in the report (`bench::Section::key`).
    pub(crate) key: &'static str,
    title: &'static str,
    /// How it measures, one paragraph.
    method: &'static str,
    /// Its figures, from its value in the report.
    figures: fn(&Value) -> String,
}

/// The sections, in the bench's order.
pub(crate) const SECTIONS: [Section; 6] = [
    Section {
        key: "datapath",
        title: "Datapath cost per packet",
        method: "`observer-bench` (`observer/src/bin/observer-bench.rs`, built with the `bench` \
            feature) loads the programs with the VPC CNI seed node's inventory and runs each \
            program on a crafted frame of each packet class through `BPF_PROG_TEST_RUN`: \
            200,000 repeats a run (`REPEAT`), in 7 interleaved rounds (`ROUNDS`), each round \
            also running an empty TC program (the floor). A figure is the median over the \
            rounds of the nanoseconds per packet above that round's floor, with the least and \
            the most. `uplink` is `observer_uplink` (uplink ingress); `to_pod` and `from_pod` \
            are the pod veth programs (towards the pod and from it); `egress` is \
            `observer_egress` (uplink egress, `uplink-egress` mode). The rows \"role cache off\" \
            run the same frames with the role cache disabled (every address a cache miss); the \
            rows \"no flagged flow on the node\" run on a node where nothing was ever flagged. \
            The first packet of a new direct flow is timed at repeat 1 with a new flow each run, \
            minus the empty program at repeat 1 (means), with the rings read the two ways the \
            agent reads them: after every packet (a lone access, the agent keeping up) and after \
            every 1,000 (a flood, the agent behind). Last, the flow refresh and a scrape are \
            timed with the kernel's flow table full, the least of three rounds.",
        figures: datapath,
    },
    Section {
        key: "throughput",
        title: "Throughput through an observed node",
        method: "iperf3 to a pod of a simulated Calico node in network namespaces: TCP with 1 \
            and with 8 streams and 64-byte UDP datagrams from 8 source ports, from an \
            in-cluster peer (the bulk case), and TCP straight from outside (a flagged flow: \
            every packet updates `FLOWS`). Each test runs 3 s on the bare node and with the \
            agent in each attach mode, in rounds that rotate which goes first, so that a drift \
            of the machine hits all alike. A cell is the median of the rounds (least and most) \
            and its share of the bare node's median; TCP is bits received a second, UDP \
            datagrams received a second. The last column counts the uplink program's runs a \
            second (skbs: GSO and GRO aggregates count once) in the `auto` rounds.",
        figures: throughput,
    },
    Section {
        key: "churn",
        title: "Pod veth churn",
        method: "Pod veths are created on a simulated Calico node with a running agent, at 20 \
            and at 100 a second, by one `ip -batch` process for additions and one for \
            deletions; each second's veths are deleted together a second later, as the \
            kernel's namespace cleanup deletes pods' veths. Once with each attach mode. Attach \
            latency: from the link's creation, as `ip monitor` hears it, to the agent's \
            `attached` log line. Missed: veths the agent never attached to. Link creation \
            delayed: how late the kernel created each link after it was asked for, which is \
            RTNL contention (a deletion, and a TCX attach, wait for an RCU grace period while \
            holding it).",
        figures: churn,
    },
    Section {
        key: "flood",
        title: "Spoofed-source SYN floods",
        method: "TCP SYN floods to one pod IP from the outside host of a simulated Calico node \
            with a running agent: one sender thread per CPU (at most 8), batched raw frames, a \
            new source address per frame, so every frame is a new flow. The flood goes through \
            the whole node (the pod answers) in each attach mode, and once, in the default \
            mode, is dropped by nftables at the uplink's ingress right after the observer's \
            hook, so that column is what the observer keeps up with rather than what the \
            node's forwarding path does. Figures from the agent's metrics and the uplink's \
            packet counter before the flood and 3 s after it (the agent draining its rings); \
            the agent's CPU from `/proc`.",
        figures: flood,
    },
    Section {
        key: "inventory_sync",
        title: "Kubernetes inventory at cluster size",
        method: "A fixture API server on the same machine serves a large cluster (counts in \
            the first row), each pod as a real API server lists it (managed fields, container \
            spec, volumes, statuses: about 4.4 KiB of JSON). The agent starts against it with \
            `--kubernetes on`, and `observer status` is polled every 100 ms until the first \
            full sync and until every address is in the maps. Then one pod is added (timed \
            until `observer explain` sees it, polled every 5 ms), a node joins and leaves \
            (timed until a source in its pod CIDR is judged in cluster, then outside again, \
            with the agent's CPU and its map writes), and a second agent syncs the same \
            cluster with `--kubernetes-pods local`. The times include the polling, a process \
            start each time.",
        figures: inventory,
    },
    Section {
        key: "conntrack_start",
        title: "Agent start on a busy node",
        method: "A simulated Calico node whose conntrack table holds 1,000,000 connections, \
            created with `conntrack -R` in its namespace: 100,000 UDP flows that local pods \
            opened to outside servers (masqueraded; UDP because a TCP connection created \
            through ctnetlink carries the liberal-window flag, which the agent reads as picked \
            up mid-stream and does not learn), and established TCP connections: 600,000 of outside clients through a \
            NodePort (DNAT to a pod, the client's address kept) and 300,000 of the node's own. The agent \
            starts on it, and before that on the same node with an empty table; each run is \
            timed from the process's start to its `started` log line (written once the table \
            has been read and the pods' own connections learnt) and to its debug API answering, \
            and its peak RSS is `VmHWM`. The kernel caps a namespace's table at \
            `net.netfilter.nf_conntrack_max`, which only the initial namespace can change: the \
            bench raises it for this section and restores it after.",
        figures: conntrack,
    },
];

/// The page for `report` (the bench's `report.json`), measured as `meta` says. Renders every
/// section the report has; a section that did not run keeps its method and says so.
pub fn render(report: &Value, meta: &Meta) -> String {
    let mut out = String::from("# Performance\n\n");
    out.push_str(
        "<!-- Generated by `cargo xtask bench --write-docs` from target/bench/report.json. \
         Do not edit by hand. -->\n\n",
    );
    out.push_str(&wrap(
        "The figures of the last `cargo xtask bench` run, each section with how it measures. \
         This page is generated by `cargo xtask bench --write-docs` (or, from the last report \
         without running the bench again, `cargo xtask bench --write-docs --from-report`) and \
         must not be edited by hand. The design these figures measure is in \
         [architecture.md](architecture.md).",
    ));
    out.push_str("\n\n| run | |\n|---|---|\n");
    out.push_str(&format!("| date | {} |\n", meta.date));
    if let Some(c) = &meta.commit {
        out.push_str(&format!("| commit | `{c}` |\n"));
    }
    if let Some(a) = &meta.agent {
        out.push_str(&format!("| agent binary (`XTASK_BENCH_AGENT`) | `{a}` |\n"));
    }
    out.push_str(&format!("| kernel | {} |\n", meta.kernel));
    out.push_str(&format!(
        "| CPUs | {} × {} |\n\n",
        meta.cpus, meta.cpu_model
    ));
    out.push_str(&wrap(
        "One run on one machine: a shared or virtual machine varies from run to run, so read a \
         figure against the others of the same run.",
    ));
    out.push('\n');
    for s in &SECTIONS {
        out.push_str(&format!("\n## {}\n\n{}\n\n", s.title, wrap(s.method)));
        match report.get(s.key) {
            Some(v) if !v.is_null() => out.push_str(&(s.figures)(v)),
            _ => out.push_str(
                "Not measured in this run (`cargo xtask bench --write-docs` runs every \
                 section).\n",
            ),
        }
    }
    if let Some(o) = report.as_object() {
        for (k, v) in o {
            if k == META_KEY || SECTIONS.iter().any(|s| s.key == k) {
                continue;
            }
            out.push_str(&format!(
                "\n## `{k}`\n\nThis section has no renderer yet (xtask/src/perfdoc.rs); its \
                 figures as the report has them:\n\n```json\n{}\n```\n",
                serde_json::to_string_pretty(v).unwrap_or_default()
            ));
        }
    }
    out
}

/// `text` as lines of at most [`WIDTH`] characters, broken between words. A word that would
/// read as Markdown at a line's start (a list item such as `-` or `1.`, a heading, a quote, a
/// table row) stays on the line of the word before it.
pub(super) fn wrap(text: &str) -> String {
    let mut units: Vec<String> = Vec::new();
    for word in text.split_whitespace() {
        if starts_a_block(word)
            && let Some(last) = units.last_mut()
        {
            last.push(' ');
            last.push_str(word);
            continue;
        }
        units.push(word.to_string());
    }
    let mut out = String::new();
    let mut line = 0;
    for word in &units {
        let n = word.chars().count();
        if line > 0 && line + 1 + n > WIDTH {
            out.push('\n');
            line = 0;
        } else if line > 0 {
            out.push(' ');
            line += 1;
        }
        out.push_str(word);
        line += n;
    }
    out
}

/// Whether `word` at the start of a line would begin a Markdown block.
fn starts_a_block(word: &str) -> bool {
    let number = word.trim_end_matches(['.', ')']);
    matches!(word, "-" | "+" | "*" | "=")
        || word.starts_with(['#', '>', '|'])
        || (number.len() < word.len()
            && !number.is_empty()
            && number.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Meta {
        Meta {
            date: "2026-11-25 08:15 UTC".into(),
            commit: Some("0123456789ab".into()),
            agent: None,
            kernel: "6.18.44".into(),
            cpus: 2,
            cpu_model: "Test CPU".into(),
        }
    }

    /// A small report in the bench's shapes: every section but churn and inventory.
    fn report() -> Value {
        json!({
            "run": meta().to_json(),
            "datapath": {
                "floor_ns": {"median": 12.0, "min": 11.0, "max": 15.0},
                "uplink: in-cluster TCP to a pod":
                    {"median_ns_above_floor": 21.4, "min": 19.0, "max": 1234.0},
                "uplink: direct-to-pod first SYN (staged), agent keeping up: read after each \
                 packet": {
                    "mean_ns_above_floor": 130.2, "samples": 40000,
                    "events_received": 40000, "events_lost": 0
                },
                "refresh": {
                    "flows": 65536, "kernel_read_batch_ms": 21.234, "tracker_refresh_ms": 8.0
                },
                "kernel.bpf_stats_enabled": "0"
            },
            "throughput": {
                "TCP, 1 stream, in cluster": {
                    "unit": "bit/s", "bare_median": 2.0e10, "observed_median": 1.9e10,
                    "ratio": 0.95,
                    "bare": [1.8e10, 2.0e10, 2.1e10], "observed": [1.7e10, 1.9e10, 2.0e10],
                    "uplink_program_runs_per_s": 250000.0,
                    "uplink_egress_median": 2.0e10, "uplink_egress_ratio": 1.0,
                    "uplink_egress": [1.9e10, 2.0e10, 2.2e10]
                }
            },
            "flood": {
                "runs": [
                    {"attach_mode": "auto", "dropped_after_the_observer": false, "seconds": 5.0,
                     "sender_threads": 2, "frames_sent": 2100000, "frames_at_the_uplink": 2100000,
                     "syns_seen_by_the_uplink": 2100000.0, "new_flows_per_second_seen": 420000.0,
                     "events_delivered": 1700000.0, "events_lost": 400000.0,
                     "flow_inserts_failed": 0.0, "agent_cpu_cores": 0.71},
                    {"attach_mode": "auto", "dropped_after_the_observer": true, "seconds": 5.0,
                     "sender_threads": 2, "frames_sent": 1, "frames_at_the_uplink": 1,
                     "syns_seen_by_the_uplink": 1.0, "new_flows_per_second_seen": 0.2,
                     "events_delivered": 1.0, "events_lost": 0.0,
                     "flow_inserts_failed": 0.0, "agent_cpu_cores": 0.1}
                ],
                "agent_rss_mib": 30.0, "agent_peak_rss_mib": 40.0,
                "series_before": 0, "series_after": 3
            },
            "churn": null,
            "something_new": {"x": 1}
        })
    }

    #[test]
    fn the_page_says_it_is_generated_and_when_where() {
        let page = render(&report(), &meta());
        assert!(page.starts_with("# Performance\n"));
        assert!(page.contains("generated by `cargo xtask bench --write-docs`"));
        assert!(page.contains("must not be edited by hand"));
        assert!(page.contains("| date | 2026-11-25 08:15 UTC |"));
        assert!(page.contains("| commit | `0123456789ab` |"));
        assert!(page.contains("| kernel | 6.18.44 |"));
        assert!(page.contains("| CPUs | 2 × Test CPU |"));
        assert!(!page.contains("agent binary"));
        // Paragraphs keep to the docs' width; tables and the comment may not.
        for line in page.lines() {
            if !line.starts_with('|') && !line.starts_with("<!--") {
                assert!(line.chars().count() <= WIDTH, "too long: {line}");
            }
        }
    }

    #[test]
    fn each_section_has_its_method_and_the_figures_the_report_has() {
        let page = render(&report(), &meta());
        for s in &SECTIONS {
            assert!(
                page.contains(&format!("\n## {}\n\n", s.title)),
                "{}",
                s.title
            );
        }
        assert!(page.contains("BPF_PROG_TEST_RUN"));
        // Datapath: the per-class row, the first packet, the floor, the refresh.
        assert!(page.contains("| uplink: in-cluster TCP to a pod | 21 | 19 | 1,234 |"));
        assert!(page.contains(
            "| SYN (staged), agent keeping up: read after each packet | 130 | 40,000 | 40,000 / 0 |"
        ));
        assert!(page.contains("median 12 ns (least 11, most 15)"));
        assert!(page.contains("full (65,536 flows)"));
        assert!(page.contains("outside the tracker's lock | 21.23 |"));
        assert!(page.contains("every flow expiring at once (one pass) | ? |"));
        // Throughput: only the modes the report has, with spreads and shares.
        assert!(page.contains("Medians of 3 rounds."));
        assert!(page.contains(
            "| TCP, 1 stream, in cluster | 20.00 Gbit/s (18.00 Gbit/s-21.00 Gbit/s) | \
             19.00 Gbit/s (17.00 Gbit/s-20.00 Gbit/s), 95.0 % | \
             20.00 Gbit/s (19.00 Gbit/s-22.00 Gbit/s), 100.0 % | 250 k |"
        ));
        assert!(!page.contains("`netlink-pods` |"));
        // Flood: one column per run.
        assert!(page.contains("| through the node, `auto` | dropped after the observer, `auto` |"));
        assert!(
            page.contains("| SYNs judged at the uplink (a second) | 2,100,000 (420,000) | 1 (0) |")
        );
        assert!(page.contains("| 1,700,000 / 400,000 | 1 / 0 |"));
        assert!(page.contains("RSS 30.0 MiB, peak 40.0 MiB"));
        // Churn (null), inventory and conntrack (absent) did not run; an unknown section is
        // shown raw.
        assert_eq!(page.matches("Not measured in this run").count(), 3);
        assert!(page.contains("## `something_new`"));
        assert!(!page.contains("## `run`"));
    }

    #[test]
    fn churn_and_inventory_render() {
        let r = json!({
            "churn": {
                "pod_veths_tcx": {
                    "churn_100_per_s": {
                        "veths": 300, "p50_ms": 250.4, "p99_ms": 2100.0, "max_ms": 2500.0,
                        "missed": 80, "link_creation_delay_p99_ms": 4300.0
                    },
                    "churn_20_per_s": {
                        "veths": 100, "p50_ms": 12.34, "p99_ms": 500.0, "max_ms": 520.0,
                        "missed": 0, "link_creation_delay_p99_ms": 460.0
                    },
                    "interfaces_before_and_after": [3, 3]
                },
                "pod_veths_none": {
                    "churn_20_per_s": {
                        "veths": 100, "p50_ms": null, "p99_ms": null, "max_ms": null,
                        "missed": 100, "link_creation_delay_p99_ms": 2.0
                    },
                    "interfaces_before_and_after": [1, 1]
                }
            },
            "inventory_sync": {
                "nodes": 5000, "pods": 150080, "local_pods": 110, "addresses_in_kernel_map": 155080,
                "seconds_to_synced": 3.0, "agent_cpu_ms_to_synced": 4100.0,
                "api_list_pages": 315, "api_list_mib": 666.2, "api_watch_streams": 6,
                "seconds_to_all_addresses_in_maps": 3.1, "agent_rss_mib": 75.0,
                "agent_peak_rss_mib": 80.0, "one_pod_change_to_maps_ms": 20.0,
                "node_join": {"ms": 5.0, "agent_cpu_ms": 10.0, "map_writes": 2},
                "node_leave": {"ms": 9.0, "agent_cpu_ms": 20.0, "map_writes": 2},
                "local_pods_mode": {"seconds_to_synced": 1.3, "agent_cpu_ms_to_synced": 1200.0,
                    "agent_rss_mib": 24.0, "api_list_pages": 15, "api_list_mib": 2.1}
            },
            "conntrack_start": {
                "connections": 1000000,
                "empty": {"started_s": 0.8, "ready_s": 0.8, "peak_rss_mib": 26.7, "rss_mib": 22.6,
                    "agent_cpu_ms": 710.0, "connections_read": 0, "pod_opened_learnt": 0},
                "loaded": {"started_s": 4.14, "ready_s": 4.15, "peak_rss_mib": 26.5, "rss_mib": 22.7,
                    "agent_cpu_ms": 4050.0, "connections_read": 1000000, "pod_opened_learnt": 100000},
                "peak_rss_over_empty_mib": -0.2
            }
        });
        let page = render(&r, &meta());
        let twenty = page.find("| TCX (`auto`) | 20/s |").expect("20/s row");
        let hundred = page.find("| TCX (`auto`) | 100/s |").expect("100/s row");
        assert!(twenty < hundred, "rates in order");
        assert!(
            page.contains("| TCX (`auto`) | 20/s | 100 | 12.3 ms | 500 ms | 520 ms | 0 | 460 ms |")
        );
        assert!(page.contains(
            "| nothing (`uplink-egress`) | 20/s | 100 | nothing to attach | | | | 2.0 ms |"
        ));
        assert!(page.contains("TCX (`auto`) 3 / 3;"));
        assert!(page.contains("(`uplink-egress`) 1 / 1."));
        assert!(page.contains("| nodes / pods (on the agent's node) | 5,000 / 150,080 (110) |"));
        assert!(page.contains("| agent CPU (user and system) to synced | 4.10 s |"));
        assert!(page.contains(
            "| API load of the sync: list pages / MiB listed / watch streams | 315 / 666 / 6 |"
        ));
        assert!(page.contains("| the node leaves: the same | 9.0 ms / 20.0 ms / 2 |"));
        assert!(page.contains(
            "| `--kubernetes-pods local`: start to synced / agent CPU / RSS | \
             1.30 s / 1.20 s / 24.0 MiB |"
        ));
        assert!(page.contains("| conntrack table | empty | 1,000,000 connections |"));
        assert!(page.contains("| start to `started` | 0.80 s | 4.14 s |"));
        assert!(
            page.contains(
                "| connections read / learnt as pods' own | 0 / 0 | 1,000,000 / 100,000 |"
            )
        );
        assert!(page.contains("Peak RSS over the empty table's: -0.2 MiB"));
        assert_eq!(page.matches("Not measured in this run").count(), 3);
    }

    #[test]
    fn meta_round_trips_through_the_report() {
        let m = meta();
        assert_eq!(Meta::from_json(&m.to_json()), Some(m));
        assert_eq!(Meta::from_json(&Value::Null), None);
    }

    #[test]
    fn dates_are_utc_civil_dates() {
        let at = |s: u64| UNIX_EPOCH + std::time::Duration::from_secs(s);
        assert_eq!(utc_date(at(0)), "1970-01-01 00:00 UTC");
        assert_eq!(utc_date(at(1_795_564_800)), "2026-11-25 00:00 UTC");
        assert_eq!(utc_date(at(951_786_123)), "2000-02-29 01:02 UTC");
        assert_eq!(utc_date(at(4_107_542_399)), "2100-02-28 23:59 UTC");
    }

    #[test]
    fn every_bench_section_has_a_page_section() {
        for s in crate::bench::Section::ALL {
            assert!(
                SECTIONS.iter().any(|p| p.key == s.key()),
                "no page section for {}",
                s.key()
            );
        }
    }
}
