//! Prometheus metrics. The list is a public contract, documented in `docs/metrics.md`.
//! Labels are bounded: never a source address; ports per pod are capped; series of vanished
//! pods are removed after a grace period (see `flows/series.rs`).
//!
//! Every part of the agent counts into these (the inventory, the tracker, the outputs, the
//! runtime); the kernel's own counters are sampled here at each scrape. Uses only
//! [`crate::kernel`], so that everything above may count.

use std::sync::Mutex;

use observer_common::{
    maps::{STATS_ENTRIES, health, proto_class, proto_class_of, stats_index},
    verdict::Verdict,
};
use prometheus::{
    Encoder, Gauge, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::kernel::maps::Maps;

pub struct Metrics {
    registry: Registry,
    pub flows_total: IntCounterVec,
    packets_total: IntCounterVec,
    bytes_total: IntCounterVec,
    pub direct_flows: IntCounterVec,
    pub direct_packets: IntCounterVec,
    pub direct_bytes: IntCounterVec,
    pub attached: IntGaugeVec,
    /// Always 1, labelled with how programs are attached (`--attach-mode`).
    pub attach_mode: IntGaugeVec,
    pub attach_errors: IntCounter,
    events_lost: IntCounter,
    datapath: IntCounterVec,
    flow_table_entries: IntGauge,
    flow_table_capacity: IntGauge,
    pub inventory_pods: IntGauge,
    pub inventory_last_update: Gauge,
    pub inventory_stale: IntGauge,
    pub inventory_stale_since: Gauge,
    pub foreign: IntGaugeVec,
    pub not_first: IntGauge,
    pub alerts: IntCounter,
    pub alerts_folded: IntCounter,
    pub am_pushes: IntCounterVec,
    pub am_dropped: IntCounter,
    pub origin_lookups: IntCounterVec,
    pub inventory_write_errors: IntCounter,
    pub settled_early: IntCounter,
    pub direct_cleared: IntCounter,
    pub declared_flows: IntCounterVec,
    pub declarations_refused: IntGaugeVec,
    pub kept_adopted: IntGaugeVec,
    pub kept_dropped: IntCounterVec,
    pub direct_lost: IntCounterVec,
    pub unjudged: IntCounterVec,
    pub presync: IntCounterVec,
    pub inventory_synced: IntGauge,
    pub inventory_unwritten: IntGauge,
    pub pod_flows_seeded: IntCounter,
    /// `flows_total` children for new flagged flows by `stats_index(verdict, class)`, resolved
    /// on first use: a flood of events must not hash label values per event.
    flow_children: [std::sync::OnceLock<IntCounter>; STATS_ENTRIES as usize],
    /// Kernel counter values at the previous scrape, to add deltas to the counters.
    last: Mutex<Last>,
}

#[derive(Default)]
struct Last {
    stats: std::collections::HashMap<(Verdict, &'static str), (u64, u64, u64)>,
    events_lost: u64,
    health: [u64; health::COUNT as usize],
}

/// The label sets of the direct-access metrics.
/// The pod is named by `pod_namespace`, `pod_workload` and `pod_name`, never `namespace`/`pod`:
/// the Prometheus Operator gives every target the `namespace` and `pod` of the agent's own pod,
/// and with `honorLabels: false` those would win (the agent's would become `exported_*`).
pub const DIRECT_LABELS: [&str; 8] = [
    "pod_namespace",
    "pod_workload",
    "pod_name",
    "port",
    "protocol",
    "state",
    "severity",
    "origin",
];

fn counter_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("metric definition");
    r.register(Box::new(c.clone()))
        .expect("metric registration");
    c
}

fn counter(r: &Registry, name: &str, help: &str) -> IntCounter {
    let c = IntCounter::new(name, help).expect("metric definition");
    r.register(Box::new(c.clone()))
        .expect("metric registration");
    c
}

fn gauge(r: &Registry, name: &str, help: &str) -> IntGauge {
    let g = IntGauge::new(name, help).expect("metric definition");
    r.register(Box::new(g.clone()))
        .expect("metric registration");
    g
}

fn gauge_vec(r: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("metric definition");
    r.register(Box::new(g.clone()))
        .expect("metric registration");
    g
}

impl Metrics {
    pub fn new() -> Self {
        let r = Registry::new();
        let vp = &["verdict", "protocol"];
        let m = Metrics {
            flows_total: counter_vec(
                &r,
                "observer_flows_total",
                "New flows seen at the uplinks by verdict: exact for direct_to_pod (one per flagged flow), flow-opening packets (TCP SYN, SCTP INIT, ICMP echo request) for the others.",
                vp,
            ),
            packets_total: counter_vec(
                &r,
                "observer_packets_total",
                "Packets seen at the uplinks by verdict.",
                vp,
            ),
            bytes_total: counter_vec(
                &r,
                "observer_bytes_total",
                "Bytes seen at the uplinks by verdict.",
                vp,
            ),
            direct_flows: counter_vec(
                &r,
                "observer_direct_pod_access_flows_total",
                "Flows from outside the cluster straight to a pod IP, by pod, port, what the pod did (answered, refused, silent) and how the flow began (seen_start, datagram, outsider: opened by the outsider before the observer saw it, unknown: the start was not seen and nothing tells who opened it).",
                &DIRECT_LABELS,
            ),
            direct_packets: counter_vec(
                &r,
                "observer_direct_pod_access_packets_total",
                "Packets of direct pod access flows, at the uplink.",
                &DIRECT_LABELS,
            ),
            direct_bytes: counter_vec(
                &r,
                "observer_direct_pod_access_bytes_total",
                "Bytes of direct pod access flows, at the uplink.",
                &DIRECT_LABELS,
            ),
            attached: gauge_vec(
                &r,
                "observer_attached_interfaces",
                "Interfaces carrying the observer's programs, by role.",
                &["role"],
            ),
            attach_mode: gauge_vec(
                &r,
                "observer_attach_mode_info",
                "Always 1: how the programs are attached on uplinks (tcx, netlink) and pod veths (tcx, netlink, or none when the pod side is read at the uplinks' egress).",
                &["uplinks", "pod_veths"],
            ),
            attach_errors: counter(
                &r,
                "observer_attach_errors_total",
                "Failed attach attempts (retried).",
            ),
            events_lost: counter(
                &r,
                "observer_events_lost_total",
                "New-flow events the kernel could not queue (the event ring was full; SYNs go there once their CPU's staged ring is full): the flows are still counted, kept in the flow table and counted against their pod.",
            ),
            datapath: counter_vec(
                &r,
                "observer_datapath_events_total",
                "What the eBPF programs did besides judging packets, by event: flagged flows or pod-opened flows they could not record (flow_insert_failed, pod_flow_insert_failed), packets to and from pod veths, deliveries and answers marked, pod-opened flows recorded, a missing counter slot (stats_missing, a bug).",
                &["event"],
            ),
            flow_table_entries: gauge(
                &r,
                "observer_flow_table_entries",
                "Entries in the kernel flow table of flagged flows.",
            ),
            flow_table_capacity: gauge(
                &r,
                "observer_flow_table_capacity",
                "Capacity of the kernel flow table (LRU: the oldest flows are evicted when full).",
            ),
            inventory_pods: gauge(
                &r,
                "observer_inventory_pods",
                "Local pods the inventory knows.",
            ),
            inventory_last_update: {
                let g = Gauge::new(
                    "observer_inventory_last_update_timestamp_seconds",
                    "When the inventory last changed the maps (Unix time).",
                )
                .expect("metric definition");
                r.register(Box::new(g.clone()))
                    .expect("metric registration");
                g
            },
            inventory_stale_since: {
                let g = Gauge::new(
                    "observer_inventory_stale_since_timestamp_seconds",
                    "When the Kubernetes API became unreachable (Unix time); 0 while it is reachable. The age of the inventory in force is time() minus this.",
                )
                .expect("metric definition");
                r.register(Box::new(g.clone()))
                    .expect("metric registration");
                g
            },
            inventory_stale: gauge(
                &r,
                "observer_inventory_stale",
                "1 while the agent judges with an inventory it cannot refresh (API unreachable); always 0 in standalone mode.",
            ),
            foreign: gauge_vec(
                &r,
                "observer_foreign_tc_programs",
                "TC programs of others found on the interfaces we attach to, by interface role.",
                &["iface_role"],
            ),
            alerts: counter(
                &r,
                "observer_alerts_total",
                "Direct pod access alerts logged.",
            ),
            alerts_folded: counter(
                &r,
                "observer_alerts_folded_total",
                "Alerts folded into a repeat count instead of being logged (or pushed).",
            ),
            am_pushes: counter_vec(
                &r,
                "observer_alertmanager_pushes_total",
                "Batches of alerts posted to Alertmanager (--alertmanager-url), by result.",
                &["result"],
            ),
            am_dropped: counter(
                &r,
                "observer_alertmanager_dropped_total",
                "Alerts not pushed to Alertmanager: the queue was full or Alertmanager stayed down too long.",
            ),
            origin_lookups: counter_vec(
                &r,
                "observer_origin_lookups_total",
                "Flows whose start the observer did not see (TCP mid-stream, UDP), looked up in conntrack, by result: pod_opened (a reply to the pod's own connection: not a direct access), outsider (opened by the outsider), unknown (picked up mid-stream or not tracked), skipped (too many at once, or conntrack unavailable).",
                &["result"],
            ),
            inventory_write_errors: counter(
                &r,
                "observer_inventory_write_errors_total",
                "Inventory changes (addresses, CIDRs, NodePorts) the kernel refused, e.g. a full IP_ROLES. They are kept and retried at every sync.",
            ),
            direct_lost: counter_vec(
                &r,
                "observer_direct_pod_access_lost_flows_total",
                "Flows from outside the cluster straight to a pod IP that the kernel counted but whose details (source, port, state) the agent never got: the event ring was full (a flood) or the flow table refused them.",
                &["pod_namespace", "pod_workload", "pod_name", "severity"],
            ),
            unjudged: counter_vec(
                &r,
                "observer_unjudged_pod_packets_total",
                "Packets from outside the cluster to a pod IP whose flow the observer could not read, by kind: header (a tiny first fragment or a header chain too long to follow, which no normal stack sends) or fragment (a fragment whose first fragment was not judged). A connection can hide in them, so they count against the pod they reached.",
                &["pod_namespace", "pod_workload", "pod_name", "kind"],
            ),
            not_first: gauge(
                &r,
                "observer_interfaces_not_first",
                "Attached interfaces where another agent's program runs before the observer's and stays there (it re-adds itself in front more than 5 times a minute, or the move failed): packets it ends (TC_ACT_OK, TC_ACT_SHOT) are not seen.",
            ),
            presync: counter_vec(
                &r,
                "observer_presync_flows_total",
                "Direct flows first seen before the Kubernetes inventory's first full sync, held unjudged and judged again once it synced, by result: confirmed (still direct: counted and alerted on then), cleared (a peer node, a pod of another node or an allowed source: not a direct access), evicted (pushed out of the view before the sync, by a flood).",
                &["result"],
            ),
            inventory_synced: gauge(
                &r,
                "observer_inventory_synced",
                "1 once the inventory had its first full sync (always 1 without Kubernetes); until then new direct flows are held, not alerted on.",
            ),
            kept_adopted: gauge_vec(
                &r,
                "observer_kept_state_adopted",
                "1 for each map the agent adopted at start from what the previous agent kept pinned (--state-dir): POD_FLOWS, the flows local pods opened, and POD_PORTS, their ports; 0 when it started without it (first start, --state-dir none, no bpffs, or dropped).",
                &["map"],
            ),
            kept_dropped: counter_vec(
                &r,
                "observer_kept_state_dropped_total",
                "Pinned maps the agent did not adopt at start, by map and reason: version (kept by another version of the agent), layout (this version's name with another type, key, value or size). The agent starts with that map empty: the flows pods opened before are learnt again only where conntrack knows them.",
                &["map", "reason"],
            ),
            direct_cleared: counter(
                &r,
                "observer_direct_flows_cleared_total",
                "Flows first judged direct that were judged again when they settled and found not to be: their source joined the cluster or the allowed sources after their first packets (a new pod or node whose address reached the agent late, within --peer-wait). Neither counted as direct accesses nor alerted on.",
            ),
            declared_flows: counter_vec(
                &r,
                "observer_declared_direct_flows_total",
                "Flows from outside the cluster straight to a local pod's IP from a source the SREs declared for it (a pod or namespace annotation observer.io/allowed-sources): judged allowed, never alerted on. declared_by: pod or namespace.",
                &["pod_namespace", "pod_workload", "declared_by"],
            ),
            declarations_refused: gauge_vec(
                &r,
                "observer_declarations_refused",
                "1 for each object (a local pod, or a namespace) whose observer.io/allowed-sources annotation is malformed: refused whole, so nothing of it applies (the reason is in the log and `observer status`). Other declarations are unaffected.",
                &["scope", "object_namespace", "object_name"],
            ),
            settled_early: counter(
                &r,
                "observer_direct_flows_settled_early_total",
                "Direct flows counted and alerted on before their state settled, because the agent's view of recent flows was full (a flood): their state is what the pod had done by then.",
            ),
            inventory_unwritten: gauge(
                &r,
                "observer_inventory_unwritten_changes",
                "Inventory changes not in the kernel's maps yet (refused, waiting to be retried): verdicts about those addresses may be wrong.",
            ),
            pod_flows_seeded: counter(
                &r,
                "observer_conntrack_pod_flows_seeded_total",
                "Connections local pods had open when the agent started, learnt from conntrack, whose replies are judged replies.",
            ),
            flow_children: std::array::from_fn(|_| std::sync::OnceLock::new()),
            last: Mutex::new(Last::default()),
            registry: r,
        };
        let build = gauge_vec(
            &m.registry,
            "observer_build_info",
            "Build information.",
            &["version"],
        );
        build.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        for role in ["uplink", "pod"] {
            m.attached.with_label_values(&[role]).set(0);
            m.foreign.with_label_values(&[role]).set(0);
        }
        m
    }

    /// Counts one new flagged flow the kernel reported (an event) in `observer_flows_total`.
    pub fn count_flow(&self, verdict: Verdict, proto: u8) {
        let class = proto_class_of(proto);
        self.flow_children[stats_index(verdict as u8, class) as usize]
            .get_or_init(|| {
                self.flows_total
                    .with_label_values(&[verdict.name(), proto_class::NAMES[class as usize]])
            })
            .inc();
    }

    /// Brings the kernel-backed metrics up to date (called on each scrape).
    pub fn sample_kernel(&self, maps: &Maps) {
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Ok(counts) = maps.verdict_counts() {
            for ((verdict, class), s) in &counts.0 {
                let prev = last.stats.entry((*verdict, class)).or_default();
                let labels = [verdict.name(), class];
                self.packets_total
                    .with_label_values(&labels)
                    .inc_by(s.packets.saturating_sub(prev.0));
                self.bytes_total
                    .with_label_values(&labels)
                    .inc_by(s.bytes.saturating_sub(prev.1));
                if *verdict != Verdict::DirectToPod {
                    self.flows_total
                        .with_label_values(&labels)
                        .inc_by(s.flow_starts.saturating_sub(prev.2));
                }
                *prev = (s.packets, s.bytes, s.flow_starts);
            }
        }
        if let Ok(h) = maps.health_counts() {
            let lost = h[health::EVENTS_LOST as usize];
            self.events_lost
                .inc_by(lost.saturating_sub(last.events_lost));
            last.events_lost = lost;
            for (i, name) in health::NAMES.iter().enumerate() {
                // Lost events have their own metric.
                if i as u32 == health::EVENTS_LOST {
                    continue;
                }
                self.datapath
                    .with_label_values(&[name])
                    .inc_by(h[i].saturating_sub(last.health[i]));
            }
            last.health = h;
        }
        {
            let (entries, capacity) = maps.flow_table_use_at_refresh();
            self.flow_table_entries.set(entries as i64);
            self.flow_table_capacity.set(i64::from(capacity));
        }
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let _ = TextEncoder::new().encode(&self.registry.gather(), &mut buf);
        String::from_utf8(buf).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// The protocol label of an IP protocol number.
pub fn protocol_label(proto: u8) -> &'static str {
    proto_class::NAMES[proto_class_of(proto) as usize]
}
