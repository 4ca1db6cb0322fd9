//! Alert lines of the flow tracker: one per new direct access, repeats folded per (source,
//! pod, port), a port scan per (source, pod), a spoofed flood per (pod, port), and once the
//! fold tables are full, per pod; each fold ends in one summary line after the alert window.
//! This is the one folding path: every line written is also offered to the tracker's
//! [`AlertSink`] (the Alertmanager push, `--alertmanager-url`), and a folded repeat is counted
//! once, here.

use std::time::Instant;

use observer_common::{addr::ip_of, maps::FlowKey};

use super::{FlowRow, ORIGIN_UNKNOWN, Record, Tracker};
use crate::metrics::Metrics;

/// Where the tracker's alert lines go besides the log: each line written is offered, with
/// the number of accesses it stands for. The tracker owns this type; an output implements it
/// (`export::alertmanager::Pusher`), so the tracker never imports the outputs. An offer must
/// never wait: it runs under the tracker's lock.
pub trait AlertSink: Send {
    fn offer(&self, row: &FlowRow, count: u64);
}

/// Folded alerts kept at most; beyond, repeats are only counted.
const MAX_FOLDS: usize = 10_000;

pub(super) struct Fold {
    since: Instant,
    repeats: u64,
    first: FlowRow,
}

/// Distinct ports one source reached on one pod within the alert window: past the per-pod
/// port cap, further ports are folded (a port scan logs a bounded number of lines).
pub(super) struct Scan {
    since: Instant,
    ports: usize,
    folded: u64,
    first: FlowRow,
}

/// Distinct sources that reached one pod port within the alert window: past
/// [`SOURCES_PER_TARGET`], further sources are folded (a spoofed flood logs a bounded number
/// of lines; every flow is still counted in the metrics).
pub(super) struct Target {
    since: Instant,
    sources: usize,
    folded: u64,
    first: FlowRow,
}

/// Alert lines per pod port and window from distinct sources before the rest is folded.
const SOURCES_PER_TARGET: usize = 16;

/// The keys of folds whose window has ended.
fn ended<K: Clone, V, S>(
    m: &std::collections::HashMap<K, V, S>,
    since: impl Fn(&V) -> Instant,
    window: std::time::Duration,
) -> Vec<K> {
    m.iter()
        .filter(|(_, v)| since(v).elapsed() >= window)
        .map(|(k, _)| k.clone())
        .collect()
}

fn fold(first: FlowRow) -> Fold {
    Fold {
        since: Instant::now(),
        repeats: 0,
        first,
    }
}

impl Tracker {
    /// Writes an alert line and offers it to the sink (if any).
    fn emit(&self, row: &FlowRow, count: u64, metrics: &Metrics) {
        log_alert(row, count);
        metrics.alerts.inc();
        self.push(row, count);
    }

    /// Offers an alert line to the sink, if any (never waits).
    fn push(&self, row: &FlowRow, count: u64) {
        if let Some(sink) = &self.sink {
            sink.offer(row, count);
        }
    }

    /// The row of a record in the view (for an alert line being written).
    fn row_of(&self, key: &FlowKey) -> FlowRow {
        self.records.get(key).map(Record::row).unwrap_or_default()
    }

    /// The alert of a settled flow to `pod` (namespace/name): logged, or folded into a line
    /// written when its window ends. Rows (text) are built only for lines that are written.
    pub(super) fn alert(&mut self, key: FlowKey, pod: String, metrics: &Metrics) {
        let src = ip_of(&key.src);
        let port = key.dport;
        let fold_key = (src, pod.clone(), port);
        if let Some(f) = self.folds.get_mut(&fold_key) {
            f.repeats += 1;
            metrics.alerts_folded.inc();
            return;
        }
        let full = self.folds.len() >= MAX_FOLDS
            || self.scans.len() >= MAX_FOLDS
            || self.targets.len() >= MAX_FOLDS;
        if full {
            // A flood filled the fold tables: fold per pod (local pods are few), so the first
            // access to every other pod is still logged, named.
            match self.overflow.get_mut(&pod) {
                Some(o) => {
                    o.repeats += 1;
                    metrics.alerts_folded.inc();
                }
                None => {
                    let row = self.row_of(&key);
                    self.emit(&row, 1, metrics);
                    self.overflow.insert(pod, fold(row));
                }
            }
            return;
        }
        // Many sources on one pod port (a spoofed flood): a bounded number of lines, the
        // rest folded into one.
        if let Some(t) = self.targets.get_mut(&(pod.clone(), port))
            && t.sources >= SOURCES_PER_TARGET
        {
            t.folded += 1;
            metrics.alerts_folded.inc();
            return;
        }
        let cap = self.cfg.ports_per_pod;
        if let Some(scan) = self.scans.get_mut(&(src, pod.clone()))
            && scan.ports >= cap
        {
            scan.folded += 1;
            metrics.alerts_folded.inc();
            return;
        }
        let row = self.row_of(&key);
        self.emit(&row, 1, metrics);
        let now = Instant::now();
        self.targets
            .entry((pod.clone(), port))
            .or_insert_with(|| Target {
                since: now,
                sources: 0,
                folded: 0,
                first: row.clone(),
            })
            .sources += 1;
        self.scans
            .entry((src, pod))
            .or_insert_with(|| Scan {
                since: now,
                ports: 0,
                folded: 0,
                first: row.clone(),
            })
            .ports += 1;
        self.folds.insert(fold_key, fold(row));
    }

    pub(super) fn flush_folds(&mut self, metrics: &Metrics) {
        let window = self.cfg.alert_window;
        let done = ended(&self.folds, |v| v.since, window);
        for k in done {
            if let Some(f) = self.folds.remove(&k)
                && f.repeats > 0
            {
                self.emit(&f.first, f.repeats + 1, metrics);
            }
        }
        let done = ended(&self.scans, |v| v.since, window);
        for k in done {
            if let Some(s) = self.scans.remove(&k)
                && s.folded > 0
            {
                tracing::warn!(
                    target: "observer::alert",
                    verdict = s.first.verdict,
                    src = s.first.src,
                    dst = s.first.dst,
                    protocol = s.first.protocol,
                    pod = s.first.pod,
                    namespace = s.first.namespace,
                    iface = s.first.iface,
                    count = s.folded,
                    reason = "the same source reached more ports of this pod than the per-pod port cap (a port scan?)",
                    "direct access to more ports of a pod, folded"
                );
                self.push(&s.first, s.folded + 1);
                metrics.alerts.inc();
            }
        }
        let done = ended(&self.targets, |v| v.since, window);
        for k in done {
            if let Some(t) = self.targets.remove(&k)
                && t.folded > 0
            {
                tracing::warn!(
                    target: "observer::alert",
                    verdict = t.first.verdict,
                    dst = t.first.dst,
                    dst_port = t.first.dst_port,
                    protocol = t.first.protocol,
                    pod = t.first.pod,
                    namespace = t.first.namespace,
                    workload = t.first.workload,
                    count = t.folded,
                    "more sources reached this pod port directly, folded (a flood?)"
                );
                self.push(&t.first, t.folded + 1);
                metrics.alerts.inc();
            }
        }
        let done = ended(&self.overflow, |v| v.since, window);
        for k in done {
            if let Some(f) = self.overflow.remove(&k)
                && f.repeats > 0
            {
                tracing::warn!(
                    target: "observer::alert",
                    verdict = f.first.verdict,
                    pod = f.first.pod,
                    namespace = f.first.namespace,
                    workload = f.first.workload,
                    count = f.repeats,
                    "more direct accesses to this pod, from many sources, folded: the fold table was full (a flood?)"
                );
                self.push(&f.first, f.repeats + 1);
                metrics.alerts.inc();
            }
        }
    }
}

/// One structured log event per direct access (target `observer::alert`). A flow whose start
/// was not seen and whose opener nothing tells is its own, lesser alert.
fn log_alert(row: &FlowRow, count: u64) {
    if row.origin == ORIGIN_UNKNOWN {
        tracing::info!(
            target: "observer::alert",
            verdict = row.verdict,
            src = row.src,
            dst = row.dst,
            src_port = row.src_port,
            dst_port = row.dst_port,
            protocol = row.protocol,
            pod = row.pod,
            namespace = row.namespace,
            workload = row.workload,
            severity = row.severity,
            iface = row.iface,
            origin = row.origin,
            state = row.state,
            reason = row.reason,
            count,
            "traffic from outside the cluster on a pod IP, in a flow whose start was not seen (origin unknown)"
        );
        return;
    }
    tracing::warn!(
        target: "observer::alert",
        verdict = row.verdict,
        src = row.src,
        dst = row.dst,
        src_port = row.src_port,
        dst_port = row.dst_port,
        protocol = row.protocol,
        pod = row.pod,
        namespace = row.namespace,
        workload = row.workload,
        severity = row.severity,
        iface = row.iface,
        origin = row.origin,
        state = row.state,
        reason = row.reason,
        count,
        "direct access to a pod IP from outside the cluster"
    );
}
