//! The figures of each bench section as the page shows them: a table per section from its
//! part of the report, and the number formats they share.

use serde_json::{Value, json};

use super::wrap;

/// A number with `decimals` decimals (none: rounded, thousands apart with commas); `?` when
/// the report has no number there.
pub(super) fn num(v: &Value, decimals: usize) -> String {
    match v.as_f64() {
        Some(x) if x.is_finite() && decimals == 0 => grouped(x.round() as i64),
        Some(x) if x.is_finite() => format!("{x:.decimals$}"),
        _ => "?".to_string(),
    }
}

/// `n` with its thousands apart: 1,234,567.
pub(super) fn grouped(n: i64) -> String {
    let digits = n.unsigned_abs().to_string();
    let mut out = String::new();
    if n < 0 {
        out.push('-');
    }
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Milliseconds: one decimal below 100, none above.
pub(super) fn ms(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.is_finite() && x >= 100.0 => format!("{} ms", grouped(x.round() as i64)),
        Some(x) if x.is_finite() => format!("{x:.1} ms"),
        _ => "?".to_string(),
    }
}

/// Milliseconds as seconds, two decimals.
pub(super) fn secs_of_ms(v: &Value) -> String {
    match v.as_f64() {
        Some(x) if x.is_finite() => format!("{:.2} s", x / 1000.0),
        _ => "?".to_string(),
    }
}

pub(super) fn datapath(dp: &Value) -> String {
    let Some(o) = dp.as_object() else {
        return "The report's datapath section is not an object.\n".to_string();
    };
    let mut out = String::from(
        "| program: packet class | median ns above the empty program | least | most |\n\
         |---|---|---|---|\n",
    );
    for (k, v) in o {
        if let Some(m) = v.get("median_ns_above_floor") {
            out.push_str(&format!(
                "| {k} | {} | {} | {} |\n",
                num(m, 0),
                num(&v["min"], 0),
                num(&v["max"], 0)
            ));
        }
    }
    let first: Vec<(&String, &Value)> = o
        .iter()
        .filter(|(_, v)| v.get("mean_ns_above_floor").is_some())
        .collect();
    if !first.is_empty() {
        out.push_str(
            "\n| uplink: first packet of a new direct flow | mean ns above the empty program | \
             packets | records or events read / lost |\n|---|---|---|---|\n",
        );
        for (k, v) in first {
            let name = k
                .strip_prefix("uplink: direct-to-pod first ")
                .unwrap_or(k.as_str());
            let read = match (v.get("events_received"), v.get("events_lost")) {
                (Some(r), Some(l)) => format!("{} / {}", num(r, 0), num(l, 0)),
                _ => String::new(),
            };
            out.push_str(&format!(
                "| {name} | {} | {} | {read} |\n",
                num(&v["mean_ns_above_floor"], 0),
                num(&v["samples"], 0)
            ));
        }
    }
    let floor = &dp["floor_ns"];
    out.push('\n');
    out.push_str(&wrap(&format!(
        "The empty program itself: median {} ns (least {}, most {}). \
         `kernel.bpf_stats_enabled` = {} (at 1 the kernel's own accounting adds to every run).",
        num(&floor["median"], 0),
        num(&floor["min"], 0),
        num(&floor["max"], 0),
        dp["kernel.bpf_stats_enabled"].as_str().unwrap_or("?")
    )));
    out.push('\n');
    let r = &dp["refresh"];
    if r.is_object() {
        out.push('\n');
        out.push_str(&wrap(&format!(
            "The flow refresh and a scrape with the kernel's flow table full ({} flows), in \
             milliseconds:",
            num(&r["flows"], 0)
        )));
        out.push_str("\n\n| step | ms |\n|---|---|\n");
        for (key, what) in [
            (
                "kernel_read_batch_ms",
                "the kernel table read in batches (`BPF_MAP_LOOKUP_BATCH`), as the refresh \
                 reads it, outside the tracker's lock",
            ),
            (
                "tracker_refresh_ms",
                "the tracker's refresh, every flow settled (under its lock, no syscall)",
            ),
            (
                "tracker_refresh_all_expiring_ms",
                "the tracker's refresh, every flow expiring at once (one pass)",
            ),
            (
                "scrape_sample_kernel_ms",
                "a scrape's kernel sampling (counters, health, the table's fill as of the last \
                 refresh)",
            ),
            (
                "kernel_read_per_key_ms",
                "for comparison: the kernel table read per key (two syscalls a flow)",
            ),
            (
                "kernel_read_iterate_ms",
                "for comparison: the kernel table read by iteration",
            ),
            (
                "expiry_one_retain_per_flow_ms",
                "for comparison: expiry by one pass over the order per expired flow (one round)",
            ),
        ] {
            out.push_str(&format!("| {what} | {} |\n", num(&r[key], 2)));
        }
    }
    out
}

/// The attach modes of the throughput rows: (the row's key prefix, column).
pub(super) const MODES: [(&str, &str); 3] = [
    ("observed", "`auto` (TCX on pod veths)"),
    ("netlink_pods", "`netlink-pods`"),
    ("uplink_egress", "`uplink-egress`"),
];

pub(super) fn throughput(t: &Value) -> String {
    let Some(o) = t.as_object() else {
        return "The report's throughput section is not an object.\n".to_string();
    };
    let modes: Vec<(&str, &str)> = MODES
        .into_iter()
        .filter(|(m, _)| o.values().any(|row| row.get(*m).is_some()))
        .collect();
    let rounds = o
        .values()
        .find_map(|row| row["bare"].as_array().map(Vec::len))
        .unwrap_or(0);
    let mut out = format!("Medians of {rounds} rounds.\n\n| test | bare node |");
    for (_, column) in &modes {
        out.push_str(&format!(" {column} |"));
    }
    out.push_str(" uplink program runs/s (`auto`) |\n|---|---|");
    out.push_str(&"---|".repeat(modes.len() + 1));
    out.push('\n');
    for (name, row) in o {
        let udp = row["unit"].as_str() == Some("datagrams/s");
        let rate = |v: &Value| match v.as_f64() {
            Some(x) if udp => format!("{:.0} k/s", x / 1e3),
            Some(x) => format!("{:.2} Gbit/s", x / 1e9),
            None => "?".to_string(),
        };
        let spread = |v: &Value| {
            let xs: Vec<f64> = v
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_f64).collect())
                .unwrap_or_default();
            let least = xs.iter().copied().fold(f64::INFINITY, f64::min);
            let most = xs.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if xs.is_empty() {
                String::new()
            } else {
                format!(" ({}-{})", rate(&json!(least)), rate(&json!(most)))
            }
        };
        out.push_str(&format!(
            "| {name} | {}{} |",
            rate(&row["bare_median"]),
            spread(&row["bare"])
        ));
        for (m, _) in &modes {
            let median = &row[format!("{m}_median").as_str()];
            let ratio = if *m == "observed" {
                &row["ratio"]
            } else {
                &row[format!("{m}_ratio").as_str()]
            };
            let share = ratio
                .as_f64()
                .map_or("?".to_string(), |r| format!("{:.1} %", r * 100.0));
            out.push_str(&format!(" {}{}, {share} |", rate(median), spread(&row[*m])));
        }
        let runs = row["uplink_program_runs_per_s"]
            .as_f64()
            .map_or("?".to_string(), |r| format!("{:.0} k", r / 1e3));
        out.push_str(&format!(" {runs} |\n"));
    }
    out
}

/// The pod-side attach modes of the churn runs: (the report's key, what pod veths carry).
pub(super) const POD_MODES: [(&str, &str); 3] = [
    ("pod_veths_tcx", "TCX (`auto`)"),
    ("pod_veths_netlink", "netlink filters (`netlink-pods`)"),
    ("pod_veths_none", "nothing (`uplink-egress`)"),
];

pub(super) fn churn(c: &Value) -> String {
    let mut out = String::from(
        "| pod veths carry | rate | veths | attach p50 | attach p99 | attach max | missed | \
         link creation delayed, p99 |\n|---|---|---|---|---|---|---|---|\n",
    );
    let mut followed = Vec::new();
    for (key, carry) in POD_MODES {
        let Some(runs) = c[key].as_object() else {
            continue;
        };
        let mut rates: Vec<(u64, &Value)> = runs
            .iter()
            .filter_map(|(k, v)| {
                let rate = k.strip_prefix("churn_")?.strip_suffix("_per_s")?;
                Some((rate.parse().ok()?, v))
            })
            .collect();
        rates.sort_by_key(|(rate, _)| *rate);
        for (rate, v) in rates {
            let attach = if key == "pod_veths_none" {
                "nothing to attach | | |".to_string()
            } else {
                format!(
                    "{} | {} | {} | {}",
                    ms(&v["p50_ms"]),
                    ms(&v["p99_ms"]),
                    ms(&v["max_ms"]),
                    num(&v["missed"], 0)
                )
            };
            out.push_str(&format!(
                "| {carry} | {rate}/s | {} | {attach} | {} |\n",
                num(&v["veths"], 0),
                ms(&v["link_creation_delay_p99_ms"])
            ));
        }
        let ifaces = &c[key]["interfaces_before_and_after"];
        if ifaces.is_array() {
            followed.push(format!(
                "{carry} {} / {}",
                num(&ifaces[0], 0),
                num(&ifaces[1], 0)
            ));
        }
    }
    if !followed.is_empty() {
        out.push('\n');
        out.push_str(&wrap(&format!(
            "Interfaces the agent followed before / after the churn: {}.",
            followed.join("; ")
        )));
        out.push('\n');
    }
    out
}

pub(super) fn flood(f: &Value) -> String {
    let none = Vec::new();
    let runs = f["runs"].as_array().unwrap_or(&none);
    let Some(first) = runs.first() else {
        return "The report's flood section has no runs.\n".to_string();
    };
    let mut out = format!(
        "{} s floods, {} sender threads.\n\n| |",
        num(&first["seconds"], 0),
        num(&first["sender_threads"], 0)
    );
    for r in runs {
        let mode = r["attach_mode"].as_str().unwrap_or("?");
        if r["dropped_after_the_observer"] == true {
            out.push_str(&format!(" dropped after the observer, `{mode}` |"));
        } else {
            out.push_str(&format!(" through the node, `{mode}` |"));
        }
    }
    out.push_str(&format!("\n|---|{}\n", "---|".repeat(runs.len())));
    let row = |name: &str, cell: &dyn Fn(&Value) -> String| {
        let cells: String = runs.iter().map(|r| format!(" {} |", cell(r))).collect();
        format!("| {name} |{cells}\n")
    };
    out.push_str(&row("frames sent", &|r| num(&r["frames_sent"], 0)));
    out.push_str(&row("frames that reached the uplink", &|r| {
        num(&r["frames_at_the_uplink"], 0)
    }));
    out.push_str(&row("SYNs judged at the uplink (a second)", &|r| {
        format!(
            "{} ({})",
            num(&r["syns_seen_by_the_uplink"], 0),
            num(&r["new_flows_per_second_seen"], 0)
        )
    }));
    out.push_str(&row(
        "new flows the agent took in detail / counted lost",
        &|r| {
            format!(
                "{} / {}",
                num(&r["events_delivered"], 0),
                num(&r["events_lost"], 0)
            )
        },
    ));
    out.push_str(&row("new flows the flow table could not take", &|r| {
        num(&r["flow_inserts_failed"], 0)
    }));
    out.push_str(&row("agent CPU (cores, over the flood)", &|r| {
        num(&r["agent_cpu_cores"], 2)
    }));
    out.push('\n');
    out.push_str(&wrap(&format!(
        "The default mode's agent after its two floods: RSS {} MiB, peak {} MiB; direct-access \
         series before / after: {} / {}.",
        num(&f["agent_rss_mib"], 1),
        num(&f["agent_peak_rss_mib"], 1),
        num(&f["series_before"], 0),
        num(&f["series_after"], 0)
    )));
    out.push('\n');
    out
}

pub(super) fn inventory(v: &Value) -> String {
    let local = &v["local_pods_mode"];
    let change = |c: &Value| {
        format!(
            "{} / {} / {}",
            ms(&c["ms"]),
            ms(&c["agent_cpu_ms"]),
            num(&c["map_writes"], 0)
        )
    };
    let rows = [
        (
            "nodes / pods (on the agent's node)",
            format!(
                "{} / {} ({})",
                num(&v["nodes"], 0),
                num(&v["pods"], 0),
                num(&v["local_pods"], 0)
            ),
        ),
        (
            "addresses in the kernel map",
            num(&v["addresses_in_kernel_map"], 0),
        ),
        (
            "start to synced",
            format!("{} s", num(&v["seconds_to_synced"], 2)),
        ),
        (
            "start to every address in the maps",
            format!("{} s", num(&v["seconds_to_all_addresses_in_maps"], 2)),
        ),
        (
            "agent CPU (user and system) to synced",
            secs_of_ms(&v["agent_cpu_ms_to_synced"]),
        ),
        (
            "API load of the sync: list pages / MiB listed / watch streams",
            format!(
                "{} / {} / {}",
                num(&v["api_list_pages"], 0),
                num(&v["api_list_mib"], 0),
                num(&v["api_watch_streams"], 0)
            ),
        ),
        (
            "agent RSS after the sync / peak",
            format!(
                "{} MiB / {} MiB",
                num(&v["agent_rss_mib"], 1),
                num(&v["agent_peak_rss_mib"], 1)
            ),
        ),
        (
            "one pod change to the maps",
            ms(&v["one_pod_change_to_maps_ms"]),
        ),
        (
            "a node joins (its pod CIDR): to the maps / agent CPU / map writes",
            change(&v["node_join"]),
        ),
        ("the node leaves: the same", change(&v["node_leave"])),
        (
            "`--kubernetes-pods local`: start to synced / agent CPU / RSS",
            format!(
                "{} s / {} / {} MiB",
                num(&local["seconds_to_synced"], 2),
                secs_of_ms(&local["agent_cpu_ms_to_synced"]),
                num(&local["agent_rss_mib"], 1)
            ),
        ),
        (
            "`--kubernetes-pods local`: list pages / MiB listed",
            format!(
                "{} / {}",
                num(&local["api_list_pages"], 0),
                num(&local["api_list_mib"], 1)
            ),
        ),
    ];
    let mut out = String::from("| figure | value |\n|---|---|\n");
    for (what, value) in rows {
        out.push_str(&format!("| {what} | {value} |\n"));
    }
    out
}

pub(crate) fn conntrack(v: &Value) -> String {
    let (empty, loaded) = (&v["empty"], &v["loaded"]);
    let row = |what: &str, cell: &dyn Fn(&Value) -> String| {
        format!("| {what} | {} | {} |\n", cell(empty), cell(loaded))
    };
    let mut out = format!(
        "| conntrack table | empty | {} connections |\n|---|---|---|\n",
        num(&v["connections"], 0)
    );
    out.push_str(&row("start to `started`", &|r| {
        format!("{} s", num(&r["started_s"], 2))
    }));
    out.push_str(&row("start to the debug API answering", &|r| {
        format!("{} s", num(&r["ready_s"], 2))
    }));
    out.push_str(&row("agent CPU (user and system) to then", &|r| {
        secs_of_ms(&r["agent_cpu_ms"])
    }));
    out.push_str(&row("connections read / learnt as pods' own", &|r| {
        format!(
            "{} / {}",
            num(&r["connections_read"], 0),
            num(&r["pod_opened_learnt"], 0)
        )
    }));
    out.push_str(&row("agent RSS then / peak", &|r| {
        format!(
            "{} MiB / {} MiB",
            num(&r["rss_mib"], 1),
            num(&r["peak_rss_mib"], 1)
        )
    }));
    out.push('\n');
    out.push_str(&super::wrap(&format!(
        "Peak RSS over the empty table's: {} MiB (the target: at most 64).",
        num(&v["peak_rss_over_empty_mib"], 1)
    )));
    out.push('\n');
    out
}
