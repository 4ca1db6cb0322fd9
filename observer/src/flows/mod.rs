//! The userspace side of flagged flows. This file is the tracker: events from the kernel
//! become records with a pod and an interface, a bounded recent-flows view for the debug API,
//! alert events (one per new direct flow, repeats folded) and the direct-access metrics with
//! bounded labels. Beside it: `rejudge` (flows judged again once the inventory knows more: the
//! first sync, sources that joined late), `alerts` (alert lines, their folding, and the [`AlertSink`]
//! the outputs implement), `merge` (staged records with what `FLOWS` holds), `series` (the
//! direct-access metric series) and [`podcounts`] (what the kernel counted per pod when it
//! could not hand over a flow).
//!
//! Uses [`crate::kernel`], [`crate::metrics`] and [`crate::inventory`]; the outputs and the
//! agent take what it produces ([`FlowRow`], alert lines through [`AlertSink`]).

use std::{
    collections::{BTreeSet, HashMap, HashSet, VecDeque},
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use observer_common::{
    addr::ip_of,
    maps::{FlowEvent, FlowKey, FlowStats, origin, staged},
    verdict::{Reason, Verdict},
};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::{
    inventory::{Directory, PodRef, declared, origins::Resolution},
    kernel::{clock, maps::Maps},
    metrics::{Metrics, protocol_label},
};

mod alerts;
mod merge;
pub mod podcounts;
mod rejudge;
mod series;
pub use alerts::AlertSink;
use alerts::{Fold, Scan, Target};
pub use merge::kernel_view;
use merge::{add_staged, merged};

/// One flow as `observer flows` shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlowRow {
    pub verdict: String,
    pub src: String,
    pub dst: String,
    pub src_port: u16,
    pub dst_port: u16,
    pub protocol: String,
    pub iface: String,
    pub pod: String,
    pub namespace: String,
    pub packets: u64,
    pub bytes: u64,
    pub first_seen: String,
    pub last_seen: String,
    pub origin: String,
    pub state: String,
    pub reason: String,
    /// The pod's workload (Kubernetes inventory; empty otherwise) and the access's severity
    /// (`high`, `medium`, `low`, or `unrated` where the inventory does not know the pod).
    #[serde(default)]
    pub workload: String,
    #[serde(default)]
    pub severity: String,
    /// For a direct access from a source declared for the pod (verdict `allowed`): the
    /// declaration (`pod annotation observer.io/allowed-sources: …`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub rule: String,
}

/// Settings of the tracker.
#[derive(Clone, Debug)]
pub struct TrackerConfig {
    pub capacity: usize,
    pub idle: Duration,
    pub settle: Duration,
    /// How long a direct flow waits for its source to join the inventory before it is
    /// counted and alerted on (`--peer-wait`): judged again then.
    pub peer_wait: Duration,
    pub alert_window: Duration,
    pub ports_per_pod: usize,
    pub pod_grace: Duration,
}

struct Record {
    key: FlowKey,
    verdict: Verdict,
    reason: Reason,
    origin: u8,
    iface: String,
    pod: Option<Arc<PodRef>>,
    /// What is known of the flow: `staged` and the last read of its `FLOWS` entry, merged.
    stats: FlowStats,
    /// What the staged ring told of the flow (its pure SYNs and the pod's answers to them),
    /// which `FLOWS` never holds; zero for a flow whose first packet was not a pure SYN.
    staged: FlowStats,
    /// The kernel table holds (or held) the flow: its first packet went through `FLOWS`, or a
    /// later one did (the ACK that continued a staged SYN). False for a flow the staged ring
    /// alone told of (a SYN flood's), whose eviction then reads nothing from the kernel.
    in_table: bool,
    first_seen_ns: u64,
    /// How the flow began, as rows, metrics and alerts name it ([`origin_label`]).
    origin_label: &'static str,
    /// The start was not seen (TCP mid-stream, UDP): conntrack is asked who opened the flow
    /// before it is counted or alerted on.
    pending: bool,
    /// First seen before the inventory's first full sync: judged again once it is in the maps,
    /// neither counted nor alerted on until then.
    held: bool,
    /// Labels under which the flow was counted, once settled (boxed: the refresh walks every
    /// record each second, and a smaller record is less memory to walk).
    labels: Option<Box<[String; 8]>>,
    counted_packets: u64,
    counted_bytes: u64,
    /// A direct access the pod's or its namespace's annotation declares: judged `allowed` when
    /// it settled, counted apart and never alerted on. The declaration, as rows show it.
    rule: Option<Box<str>>,
}

/// The label of a flow's origin as the kernel saw it; a mid-stream flow becomes `outsider`
/// once conntrack shows the outsider opened it.
fn origin_label(o: u8) -> &'static str {
    match o {
        origin::START => "seen_start",
        origin::MID_STREAM => ORIGIN_UNKNOWN,
        _ => "datagram",
    }
}

/// A flow that began before the observer saw it, and nothing tells who opened it.
pub const ORIGIN_UNKNOWN: &str = "unknown";
/// A flow the observer did not see start that conntrack shows the outsider opened.
pub const ORIGIN_OUTSIDER: &str = "outsider";

/// How long a flow may wait for its origin before it is judged with what is known.
const ORIGIN_WAIT: Duration = Duration::from_secs(10);

fn state_of(s: &FlowStats) -> &'static str {
    if s.answered != 0 {
        "answered"
    } else if s.refused != 0 {
        "refused"
    } else {
        "silent"
    }
}

impl Record {
    fn row(&self) -> FlowRow {
        let pod = self.pod.clone().unwrap_or_default();
        FlowRow {
            verdict: self.verdict.name().to_string(),
            src: ip_of(&self.key.src).to_string(),
            dst: ip_of(&self.key.dst).to_string(),
            src_port: self.key.sport,
            dst_port: self.key.dport,
            protocol: protocol_label(self.key.proto).to_string(),
            iface: self.iface.clone(),
            severity: pod.severity(self.key.dport).to_string(),
            workload: pod.workload.clone(),
            pod: pod.name.clone(),
            namespace: pod.namespace.clone(),
            packets: self.stats.packets,
            bytes: self.stats.bytes,
            first_seen: clock::rfc3339(clock::wall_of(self.first_seen_ns)),
            last_seen: clock::rfc3339(clock::wall_of(self.stats.last_seen_ns)),
            origin: self.origin_label.to_string(),
            state: state_of(&self.stats).to_string(),
            reason: match &self.rule {
                Some(rule) => format!("{}: {rule}", self.reason.describe()),
                None => self.reason.describe().to_string(),
            },
            rule: self.rule.as_deref().unwrap_or_default().to_string(),
        }
    }
}

/// Sets the kernel's flow clock to now and reads the whole flow table in batches, without the
/// tracker's lock: the input of [`Tracker::refresh`]. A failed read gives an empty table (the
/// view keeps its last counters) and a warning.
/// Flows by key with a fast hasher, still seeded per process (the keys come from outside):
/// the refresh looks up every flow of a 65,536-flow table each second, and SipHash over a
/// 40-byte key was a third of it.
pub type FlowMap<V> = HashMap<FlowKey, V, foldhash::fast::RandomState>;
/// The tracker's other tables (alert folds, port labels, series), keyed by short strings and
/// addresses: the same seeded hash (SipHash was 6 % of the agent's time in a SYN flood).
type Table<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

pub fn read_flows(maps: &Maps) -> (FlowMap<FlowStats>, u64) {
    let now_ns = clock::kernel_ns();
    // Known flows' packets are stamped with this clock until the next refresh, so a last seen
    // can lag by the time since the previous one (longer if the agent was stalled).
    if let Err(e) = maps.set_clock(now_ns) {
        tracing::warn!(error = %e, "setting the kernel's clock for flow stamps");
    }
    let flows = match maps.flows_batch() {
        Ok(v) => v.into_iter().collect(),
        Err(e) => {
            tracing::warn!(error = %e, "reading the flow table");
            FlowMap::default()
        }
    };
    (flows, now_ns)
}

/// The recent flagged flows and what follows from them.
pub struct Tracker {
    cfg: TrackerConfig,
    records: FlowMap<Record>,
    order: VecDeque<FlowKey>,
    folds: Table<(IpAddr, String, u16), Fold>,
    scans: Table<(IpAddr, String), Scan>,
    targets: Table<(String, u16), Target>,
    /// Per pod, once the fold tables are full.
    overflow: Table<String, Fold>,
    /// Port labels given out per (namespace, pod).
    ports: Table<(String, String), BTreeSet<String>>,
    /// Direct-access label sets per (namespace, pod), to remove when the pod is gone.
    series: Table<(String, String), HashSet<[String; 8], foldhash::fast::RandomState>>,
    gone_since: Table<(String, String), Instant>,
    updates: broadcast::Sender<FlowRow>,
    /// Where alert lines go besides the log ([`AlertSink`]).
    sink: Option<Box<dyn AlertSink>>,
    /// `clock::kernel_ns()` at the previous refresh.
    last_refresh_ns: Option<u64>,
    /// The inventory has not had its first full sync: new flagged flows are held.
    hold: bool,
    /// Flows this read's events continue whose staged SYN is in the same read, not yet a record
    /// ([`Tracker::note_in_table`]).
    continued: FlowMap<()>,
    /// Refreshes from the kernel table so far (`status`: a stalled agent shows).
    pub refreshes: u64,
    /// Events seen, and events of an unexpected size.
    pub events: u64,
    pub bad_events: u64,
}

impl Tracker {
    pub fn new(cfg: TrackerConfig) -> Self {
        Tracker {
            cfg,
            records: FlowMap::default(),
            order: VecDeque::new(),
            folds: Table::default(),
            scans: Table::default(),
            targets: Table::default(),
            overflow: Table::default(),
            ports: Table::default(),
            series: Table::default(),
            gone_since: Table::default(),
            updates: broadcast::channel(1024).0,
            sink: None,
            last_refresh_ns: None,
            hold: false,
            continued: FlowMap::default(),
            refreshes: 0,
            events: 0,
            bad_events: 0,
        }
    }

    /// Holds new flagged flows until [`Tracker::release_held`]: set while the inventory has not
    /// had its first full sync, when peers and pods of other nodes may still look outside.
    pub fn hold_until_synced(&mut self) {
        self.hold = true;
    }

    /// Flows held for the first sync.
    pub fn held(&self) -> usize {
        self.records.values().filter(|r| r.held).count()
    }

    /// Offers every alert line written to `sink` as well (the Alertmanager push).
    pub fn set_sink(&mut self, sink: Box<dyn AlertSink>) {
        self.sink = Some(sink);
    }

    /// New and updated flows, for `observer flows --follow`.
    pub fn subscribe(&self) -> broadcast::Receiver<FlowRow> {
        self.updates.subscribe()
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Takes from one read's events, before its staged records, which flows are in the kernel
    /// table: the staged records may push a flow out of the view (reading its table entry
    /// only if it is there) before the event that continued it would be reached.
    pub fn note_in_table(&mut self, events: &[FlowEvent]) {
        self.continued.clear();
        for e in events {
            match self.records.get_mut(&e.key) {
                Some(r) => r.in_table = true,
                None if e.kind == staged::CONTINUED => {
                    self.continued.insert(e.key, ());
                }
                None => {}
            }
        }
    }

    /// A record of the staged rings: a pure SYN of a flagged flow (a new flow, or another SYN
    /// of one already shown), or the pod's answer to one. Read before the `EVENTS` of the same
    /// read, so that a flow's later packets find it.
    pub fn on_staged(&mut self, e: &FlowEvent, dir: &Directory, maps: &Maps, metrics: &Metrics) {
        match e.kind {
            staged::SYN => {
                if let Some(r) = self.records.get_mut(&e.key) {
                    add_staged(&mut r.staged, e);
                    add_staged(&mut r.stats, e);
                    if r.origin != origin::START && r.labels.is_none() {
                        // Its later packets were read first (a SYN staged while a lost one's
                        // flow went on): the start was seen after all.
                        r.origin = origin::START;
                        r.origin_label = origin_label(origin::START);
                        r.pending = false;
                    }
                    return;
                }
                self.on_event(e, dir, maps, metrics);
                if let Some(r) = self.records.get_mut(&e.key) {
                    add_staged(&mut r.staged, e);
                }
            }
            staged::ANSWERED | staged::REFUSED => {
                if let Some(r) = self.records.get_mut(&e.key) {
                    add_staged(&mut r.staged, e);
                    add_staged(&mut r.stats, e);
                }
            }
            _ => self.bad_events += 1,
        }
    }

    /// A new flagged flow from the kernel.
    pub fn on_event(&mut self, e: &FlowEvent, dir: &Directory, maps: &Maps, metrics: &Metrics) {
        self.events += 1;
        let Some(verdict) = Verdict::from_u8(e.verdict) else {
            self.bad_events += 1;
            return;
        };
        let reason = Reason::from_u8(e.reason).unwrap_or(Reason::DirectOtherProtocol);
        if let Some(r) = self.records.get_mut(&e.key) {
            // The flow's next packet after its staged SYN, or the kernel re-created an expired
            // flow we still show: the same flow, not a new one, and now in the table.
            r.in_table = true;
            return;
        }
        if e.kind == staged::CONTINUED {
            // The same, for a flow the view has let go since: counted from its SYN.
            return;
        }
        metrics.count_flow(verdict, e.key.proto);
        while self.records.len() >= self.cfg.capacity {
            match self.order.pop_front() {
                Some(old) => self.evict(old, dir, maps, metrics),
                None => break,
            }
        }
        let pending = verdict.alerts() && e.origin != origin::START;
        let held = self.hold && verdict.alerts();
        let rec = Record {
            key: e.key,
            verdict,
            reason,
            origin: e.origin,
            origin_label: origin_label(e.origin),
            pending,
            iface: dir.iface(e.ifindex),
            pod: dir.pod_shared(&ip_of(&e.key.dst)),
            stats: FlowStats {
                packets: 1,
                bytes: u64::from(e.bytes),
                first_seen_ns: e.ts_ns,
                last_seen_ns: e.ts_ns,
                ifindex: e.ifindex,
                tcp_flags: e.tcp_flags,
                verdict: e.verdict,
                reason: e.reason,
                origin: e.origin,
                ..FlowStats::default()
            },
            staged: FlowStats::default(),
            // A staged SYN's record comes through here too (`on_staged`), and is not in the
            // table unless an event of the same read continued it.
            in_table: !matches!(e.kind, staged::SYN | staged::ANSWERED | staged::REFUSED)
                || self.continued.contains_key(&e.key),
            first_seen_ns: e.ts_ns,
            held,
            labels: None,
            counted_packets: 0,
            counted_bytes: 0,
            rule: None,
        };
        // A row is text (addresses, times, names): build it only for someone who reads it.
        self.announce(&rec);
        self.order.push_back(e.key);
        self.records.insert(e.key, rec);
    }

    /// Makes room for a new flow: the oldest leaves the view. One that has not settled yet is
    /// counted and alerted on first, with what the kernel knows of it now (its packets too),
    /// so that a flood of new flows cannot push a real access out uncounted. (A settled one
    /// was counted at the last refresh.)
    fn evict(&mut self, key: FlowKey, dir: &Directory, maps: &Maps, metrics: &Metrics) {
        let Some(r) = self.records.get(&key) else {
            return;
        };
        if !r.held && r.labels.is_none() && self.source_joined(&key, dir, metrics) {
            let _ = maps.remove_flow(&key);
            self.records.remove(&key);
            return;
        }
        let Some(r) = self.records.get_mut(&key) else {
            return;
        };
        if r.held {
            // Not judged yet, and no inventory to judge it by: counted, never alerted on.
            metrics.presync.with_label_values(&["evicted"]).inc();
        } else if r.labels.is_none() {
            // A flow only the staged ring told of has nothing in the table to read: a SYN
            // flood's flows leave the view without a syscall each.
            if r.in_table
                && let Ok(Some(s)) = maps.flow(&key)
            {
                r.stats = merged(&r.staged, &s);
            }
            if r.pending {
                r.pending = false;
                metrics.origin_lookups.with_label_values(&["skipped"]).inc();
            }
            metrics.settled_early.inc();
            self.settle(key, metrics);
            if let Some(r) = self.records.get_mut(&key) {
                r.count_moved(metrics);
            }
        }
        self.records.remove(&key);
    }

    /// Sends a record's row to `--follow` subscribers. (Alertmanager gets what the alert lines
    /// say, when they are written: see `alerts.rs`.)
    fn announce(&self, rec: &Record) {
        if self.updates.receiver_count() > 0 {
            let _ = self.updates.send(rec.row());
        }
    }

    /// Flows whose origin is to be asked of conntrack, oldest first, at most `max`.
    pub fn pending_origins(&self, max: usize) -> Vec<FlowKey> {
        self.order
            .iter()
            .filter(|k| self.records.get(k).is_some_and(|r| r.pending))
            .take(max)
            .copied()
            .collect()
    }

    /// Applies what conntrack said of a flow. A reply to a pod's own connection leaves the
    /// view and the kernel table, and its flow is learnt so its next packets are replies.
    pub fn resolve(&mut self, key: &FlowKey, res: Resolution, maps: &Maps, metrics: &Metrics) {
        let Some(r) = self.records.get_mut(key) else {
            return;
        };
        if !r.pending {
            return;
        }
        r.pending = false;
        let result = match res {
            Resolution::PodOpened(pod_key) => {
                if let Err(e) = maps.seed_pod_flow(&pod_key) {
                    tracing::warn!(error = %e, "learning a pod's own connection");
                }
                let _ = maps.remove_flow(key);
                self.records.remove(key);
                self.order.retain(|k| k != key);
                metrics
                    .origin_lookups
                    .with_label_values(&["pod_opened"])
                    .inc();
                return;
            }
            Resolution::Outsider => {
                if r.origin == origin::MID_STREAM {
                    r.origin_label = ORIGIN_OUTSIDER;
                }
                "outsider"
            }
            Resolution::Unknown => "unknown",
        };
        metrics.origin_lookups.with_label_values(&[result]).inc();
        if let Some(r) = self.records.get(key) {
            self.announce(r);
        }
    }

    /// Refreshes the view from a read of the kernel table taken at `now_ns` (the agent's
    /// clock, written to `CLOCK` just before; see [`read_flows`]): counters and state, settling
    /// (metrics and alert), idle expiry, pod series removal, alert folding windows. No syscall:
    /// the caller holds the tracker's lock. Returns the expired flows, for the caller to delete
    /// from the kernel table once the lock is released.
    pub fn refresh(
        &mut self,
        flows: &FlowMap<FlowStats>,
        now_ns: u64,
        dir: &Directory,
        metrics: &Metrics,
    ) -> Vec<FlowKey> {
        self.refreshes += 1;
        let lag_ns = self
            .last_refresh_ns
            .replace(now_ns)
            .map_or(0, |prev| now_ns.saturating_sub(prev));
        let idle_ns = self.cfg.idle.as_nanos() as u64 + lag_ns;
        let settle_ns = self.cfg.settle.as_nanos() as u64;
        // A direct flow is judged once its source had the time to join the inventory.
        let judge_ns = self.cfg.settle.max(self.cfg.peer_wait).as_nanos() as u64;
        let wait_ns = ORIGIN_WAIT.as_nanos() as u64;
        let (mut timed_out, mut to_settle, mut expired) = (Vec::new(), Vec::new(), Vec::new());
        // One pass over the records: counters, and what needs more than that.
        for (key, r) in self.records.iter_mut() {
            if let Some(s) = flows.get(key) {
                r.stats = merged(&r.staged, s);
                r.in_table = true;
            }
            let age_ns = now_ns.saturating_sub(r.first_seen_ns);
            if r.pending && age_ns >= wait_ns {
                // Not looked up in time (more at once than the lookups per refresh).
                r.pending = false;
                timed_out.push(*key);
            }
            if r.labels.is_none() {
                let due_ns = if r.verdict.alerts() {
                    judge_ns
                } else {
                    settle_ns
                };
                if !r.pending && !r.held && age_ns >= due_ns {
                    to_settle.push(*key);
                }
                continue;
            }
            r.count_moved(metrics);
            if now_ns.saturating_sub(r.stats.last_seen_ns) > idle_ns {
                expired.push(*key);
            }
        }
        for key in &timed_out {
            metrics.origin_lookups.with_label_values(&["skipped"]).inc();
            if let Some(r) = self.records.get(key)
                && !r.held
            {
                self.announce(r);
            }
        }
        for key in to_settle {
            if self.source_joined(&key, dir, metrics) {
                expired.push(key);
                continue;
            }
            if let Some(r) = self.records.get_mut(&key) {
                r.pod = rejudge::current_pod(r.pod.take(), dir, &key);
            }
            self.settle(key, metrics);
            if let Some(r) = self.records.get_mut(&key)
                && r.labels.is_some()
            {
                r.count_moved(metrics);
                if now_ns.saturating_sub(r.stats.last_seen_ns) > idle_ns {
                    expired.push(key);
                }
            }
        }
        // One pass over the order, however many expired.
        if !expired.is_empty() {
            let gone: HashSet<FlowKey> = expired.iter().copied().collect();
            for key in &expired {
                self.records.remove(key);
            }
            self.order.retain(|k| !gone.contains(k));
        }
        self.flush_folds(metrics);
        self.remove_gone_pods(dir, metrics);
        expired
    }

    /// The flow's state is taken as settled: count it and raise its alert.
    fn settle(&mut self, key: FlowKey, metrics: &Metrics) {
        let Some(r) = self.records.get(&key) else {
            return;
        };
        let pod = r.pod.clone().unwrap_or_else(|| {
            Arc::new(PodRef {
                namespace: String::new(),
                name: "unknown".to_string(),
                iface: String::new(),
                ..PodRef::default()
            })
        });
        if r.verdict.alerts()
            && let Some(a) = declared::admitted(&pod.allowed, ip_of(&key.src), key.proto, key.dport)
        {
            let (rule, by) = (a.rule(), a.scope.name());
            let Some(r) = self.records.get_mut(&key) else {
                return;
            };
            r.verdict = Verdict::Allowed;
            r.reason = Reason::SrcDeclared;
            r.rule = Some(rule.into());
            // Settled: its packets are not a direct access's (`count_moved` skips it).
            r.labels = Some(Box::default());
            metrics
                .declared_flows
                .with_label_values(&[&pod.namespace, &pod.workload, by])
                .inc();
            if self.updates.receiver_count() > 0 {
                let _ = self.updates.send(r.row());
            }
            return;
        }
        let port = self.port_label(&pod, &key);
        let Some(r) = self.records.get_mut(&key) else {
            return;
        };
        let labels = [
            pod.namespace.clone(),
            pod.workload.clone(),
            pod.name.clone(),
            port,
            protocol_label(key.proto).to_string(),
            state_of(&r.stats).to_string(),
            pod.severity(key.dport).to_string(),
            r.origin_label.to_string(),
        ];
        let l: Vec<&str> = labels.iter().map(String::as_str).collect();
        metrics.direct_flows.with_label_values(&l).inc();
        self.series
            .entry((pod.namespace.clone(), pod.name.clone()))
            .or_default()
            .insert(labels.clone());
        r.labels = Some(Box::new(labels));
        if self.updates.receiver_count() > 0 {
            let _ = self.updates.send(r.row());
        }
        if r.verdict.alerts() {
            let target = format!("{}/{}", pod.namespace, pod.name);
            self.alert(key, target, metrics);
        }
    }

    /// The flows in the view, optionally of one verdict, oldest first.
    pub fn rows(&self, verdict: Option<&str>) -> Vec<FlowRow> {
        self.order
            .iter()
            .filter_map(|k| self.records.get(k))
            .filter(|r| verdict.is_none_or(|v| r.verdict.name() == v))
            .map(Record::row)
            .collect()
    }
}
