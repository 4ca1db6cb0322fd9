//! `observer flows` as kubectl users expect it: output formats (`-o table|wide|json`), filters
//! applied to the agent's rows, aligned `--follow` output, and `--fail-if-any` for scripts.
//! Per-call switches never come from the environment: a container's `OBSERVER_*` variables
//! configure the agent, not each `kubectl exec`.

use std::time::Duration;

use clap::{Args, ValueEnum, builder::PossibleValuesParser};
use observer::agent::api::FlowRow;
use observer_common::{user::Cidr, verdict::Verdict};

/// How rows are printed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Aligned columns.
    Table,
    /// The table with the workload, severity, last seen, interface and reason.
    Wide,
    /// One JSON object per line.
    Json,
}

/// Which flows to print. Every filter must hold.
#[derive(Debug, Default, Args)]
pub struct Filters {
    /// Only flows of this verdict.
    #[arg(long, value_parser = PossibleValuesParser::new(Verdict::ALL.map(Verdict::name)))]
    pub verdict: Option<String>,
    /// Only flows of this origin: seen_start, datagram, outsider (opened by the outsider
    /// before the observer saw it, per conntrack), unknown (nothing tells who opened it).
    #[arg(long, value_parser = ["seen_start", "datagram", "outsider", "unknown"])]
    pub origin: Option<String>,
    /// Only pods of this namespace.
    #[arg(short = 'n', long)]
    pub namespace: Option<String>,
    /// Only this pod (its name, or a prefix ending in `*`; the host-side interface without the
    /// Kubernetes inventory).
    #[arg(long)]
    pub pod: Option<String>,
    /// Only flows to this pod port.
    #[arg(long)]
    pub port: Option<u16>,
    /// Only flows from sources in this CIDR (or address).
    #[arg(long, value_parser = parse_cidr)]
    pub from: Option<Cidr>,
    /// Only flows in this state.
    #[arg(long, value_parser = ["answered", "refused", "silent"])]
    pub state: Option<String>,
    /// Only accesses of this severity (`unrated`: the inventory does not know the pod).
    #[arg(long, value_parser = ["high", "medium", "low", "unrated"])]
    pub severity: Option<String>,
    /// Only flows seen within this long (30s, 5m, 1h).
    #[arg(long, value_parser = parse_since)]
    pub since: Option<Duration>,
    /// Only the N most recent flows.
    #[arg(long, value_name = "N")]
    pub last: Option<usize>,
}

fn parse_cidr(s: &str) -> Result<Cidr, String> {
    let with_len = if s.contains('/') {
        s.to_string()
    } else if s.contains(':') {
        format!("{s}/128")
    } else {
        format!("{s}/32")
    };
    with_len
        .parse()
        .map_err(|e| format!("{e} (a CIDR such as 10.0.0.0/16, or an address)"))
}

fn parse_since(s: &str) -> Result<Duration, String> {
    observer::agent::config::parse_duration("since", s).map_err(|e| e.to_string())
}

impl Filters {
    /// Whether a row passes every filter but `--last`, at `now`.
    pub fn matches(&self, r: &FlowRow, now: jiff::Timestamp) -> bool {
        let eq = |want: &Option<String>, got: &str| want.as_deref().is_none_or(|w| w == got);
        eq(&self.verdict, &r.verdict)
            && eq(&self.origin, &r.origin)
            && eq(&self.namespace, &r.namespace)
            && eq(&self.state, &r.state)
            && eq(&self.severity, &r.severity)
            && self
                .pod
                .as_deref()
                .is_none_or(|p| match p.strip_suffix('*') {
                    Some(prefix) => r.pod.starts_with(prefix),
                    None => r.pod == p,
                })
            && self
                .port
                .is_none_or(|p| r.dst_port == p && r.protocol != "icmp")
            && self.from.as_ref().is_none_or(|c| {
                r.src
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| c.contains(ip))
            })
            && self.since.is_none_or(|d| {
                r.last_seen
                    .parse::<jiff::Timestamp>()
                    .is_ok_and(|t| now.duration_since(t).unsigned_abs() <= d)
            })
    }

    /// The rows that pass, oldest first, the last N if `--last`.
    pub fn apply(&self, rows: Vec<FlowRow>) -> Vec<FlowRow> {
        let now = jiff::Timestamp::now();
        let mut out: Vec<FlowRow> = rows.into_iter().filter(|r| self.matches(r, now)).collect();
        if let Some(n) = self.last {
            let skip = out.len().saturating_sub(n);
            out.drain(..skip);
        }
        out
    }
}

const HEAD: [&str; 11] = [
    "VERDICT",
    "SOURCE",
    "DESTINATION",
    "PROTO",
    "NAMESPACE/POD",
    "IFACE",
    "STATE",
    "ORIGIN",
    "PACKETS",
    "BYTES",
    "FIRST SEEN",
];
const WIDE_HEAD: [&str; 4] = ["WORKLOAD", "SEVERITY", "LAST SEEN", "REASON"];
/// Column widths of `--follow`, which cannot measure rows it has not seen: wide enough for
/// IPv4 addresses with ports and RFC 3339 times; longer values push the line out.
const FOLLOW_WIDTHS: [usize; 15] = [13, 21, 21, 5, 40, 15, 8, 10, 7, 9, 24, 20, 8, 24, 0];

fn cells(r: &FlowRow, wide: bool) -> Vec<String> {
    let port = |p: u16| {
        if r.protocol == "icmp" {
            String::new()
        } else {
            format!(":{p}")
        }
    };
    let mut c = vec![
        r.verdict.clone(),
        format!("{}{}", r.src, port(r.src_port)),
        format!("{}{}", r.dst, port(r.dst_port)),
        r.protocol.clone(),
        if r.namespace.is_empty() {
            r.pod.clone()
        } else {
            format!("{}/{}", r.namespace, r.pod)
        },
        r.iface.clone(),
        r.state.clone(),
        r.origin.clone(),
        r.packets.to_string(),
        r.bytes.to_string(),
        r.first_seen.clone(),
    ];
    if wide {
        c.extend([
            r.workload.clone(),
            r.severity.clone(),
            r.last_seen.clone(),
            r.reason.clone(),
        ]);
    }
    c
}

fn head(wide: bool) -> Vec<&'static str> {
    let mut h = HEAD.to_vec();
    if wide {
        h.extend(WIDE_HEAD);
    }
    h
}

fn line(vals: &[&str], width: &[usize]) -> String {
    let cols: Vec<String> = vals
        .iter()
        .enumerate()
        .map(|(i, v)| format!("{v:<w$}", w = width.get(i).copied().unwrap_or(0)))
        .collect();
    format!("{}\n", cols.join("  ").trim_end())
}

/// The rows as an aligned table with its header (comfy-table, borderless like kubectl's).
pub fn table(rows: &[FlowRow], wide: bool) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING)
        .set_content_arrangement(comfy_table::ContentArrangement::Disabled)
        .set_header(head(wide));
    for r in rows {
        t.add_row(cells(r, wide));
    }
    // Two spaces between columns, none before the first: kubectl's layout.
    for c in t.column_iter_mut() {
        c.set_padding((0, 2));
    }
    let mut out = String::new();
    for l in t.lines() {
        out.push_str(l.trim_end());
        out.push('\n');
    }
    out
}

/// The header `--follow` prints first, and each row after it, in fixed columns.
pub fn follow_header(wide: bool) -> String {
    line(&head(wide), &FOLLOW_WIDTHS)
}

pub fn follow_row(r: &FlowRow, wide: bool) -> String {
    let c = cells(r, wide);
    line(
        &c.iter().map(String::as_str).collect::<Vec<_>>(),
        &FOLLOW_WIDTHS,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(src: &str, port: u16, state: &str, last_seen: &str) -> FlowRow {
        FlowRow {
            verdict: "direct_to_pod".into(),
            src: src.into(),
            dst: "10.0.3.240".into(),
            src_port: 40000,
            dst_port: port,
            protocol: "tcp".into(),
            pod: "web-7854ff8877-z5nh5".into(),
            namespace: "shop".into(),
            state: state.into(),
            origin: "seen_start".into(),
            severity: "high".into(),
            last_seen: last_seen.into(),
            ..FlowRow::default()
        }
    }

    #[test]
    fn filters_combine() {
        let now: jiff::Timestamp = "2026-12-03T10:00:00Z".parse().unwrap();
        let a = row("10.0.6.245", 80, "answered", "2026-12-03T09:59:00Z");
        let b = row("198.51.100.7", 8080, "refused", "2026-12-03T08:00:00Z");
        let f = |args: &[&str]| {
            #[derive(clap::Parser)]
            struct P {
                #[command(flatten)]
                f: Filters,
            }
            let p = <P as clap::Parser>::try_parse_from(
                std::iter::once("x").chain(args.iter().copied()),
            )
            .unwrap();
            [&a, &b]
                .iter()
                .filter(|r| p.f.matches(r, now))
                .map(|r| r.dst_port)
                .collect::<Vec<_>>()
        };
        assert_eq!(f(&[]), [80, 8080]);
        assert_eq!(f(&["--port", "80"]), [80]);
        assert_eq!(f(&["--state", "refused"]), [8080]);
        assert_eq!(f(&["--from", "10.0.0.0/16"]), [80]);
        assert_eq!(f(&["--from", "198.51.100.7"]), [8080]);
        assert_eq!(f(&["--since", "5m"]), [80]);
        assert_eq!(f(&["-n", "shop", "--pod", "web-*"]), [80, 8080]);
        assert_eq!(f(&["-n", "other"]), Vec::<u16>::new());
        assert_eq!(f(&["--pod", "web"]), Vec::<u16>::new());
        assert_eq!(
            f(&["--severity", "high", "--verdict", "direct_to_pod"]),
            [80, 8080]
        );
    }

    #[test]
    fn tables_align_and_follow_has_a_header() {
        let r = row("10.0.6.245", 80, "answered", "2026-12-03T09:59:00Z");
        let t = table(std::slice::from_ref(&r), true);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(
            lines[0].find("PROTO"),
            lines[1].find("tcp"),
            "columns align:\n{t}"
        );
        assert!(lines[0].ends_with("REASON"));
        let h = follow_header(false);
        let f = follow_row(&r, false);
        assert_eq!(h.find("STATE"), f.find("answered"), "{h}{f}");
    }
}
