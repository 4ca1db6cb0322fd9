//! Flows judged again once the inventory knows more than when their first packet was judged:
//! the flows held until the Kubernetes inventory's first full sync, direct flows whose source
//! joined the cluster (or the allowed sources) before they settled, the pod a flow reached as
//! the inventory knows it when it settles, and the flows still waiting when the agent stops.

use observer_common::{
    addr::ip_of,
    maps::{FlowKey, origin},
    packet::{Packet, Status},
    verdict::{Lookup, Settings, decide},
};

use std::sync::Arc;

use super::Tracker;
use crate::{
    inventory::{Directory, PodRef},
    kernel::maps::Maps,
    metrics::Metrics,
};

impl Tracker {
    /// The first full sync is in the maps: each held flow is judged again with the same
    /// function the kernel runs, over the maps as they are now. A flow still direct is counted
    /// and alerted on as usual; one that is not (a peer node, a pod of another node, an
    /// allowed source) leaves the view and the kernel table. The pod is named from the synced
    /// directory. Returns (confirmed, cleared).
    pub fn release_held<L: Lookup + ?Sized>(
        &mut self,
        lookup: &L,
        settings: &Settings,
        dir: &Directory,
        maps: &Maps,
        metrics: &Metrics,
    ) -> (usize, usize) {
        self.hold = false;
        let held: Vec<FlowKey> = self
            .order
            .iter()
            .filter(|k| self.records.get(k).is_some_and(|r| r.held))
            .copied()
            .collect();
        let (mut confirmed, mut cleared) = (0, 0);
        for key in held {
            let Some(r) = self.records.get_mut(&key) else {
                continue;
            };
            let p = Packet {
                src: key.src,
                dst: key.dst,
                proto: key.proto,
                sport: key.sport,
                dport: key.dport,
                tcp_flags: r.stats.tcp_flags,
                flow_start: r.origin == origin::START,
                ..Packet::EMPTY
            };
            let d = decide(Status::Ip, &p, settings, lookup);
            if d.verdict.alerts() {
                r.held = false;
                if let Some(pod) = dir.pod_shared(&ip_of(&key.dst)) {
                    r.pod = Some(pod);
                }
                confirmed += 1;
                metrics.presync.with_label_values(&["confirmed"]).inc();
                if !r.pending
                    && let Some(r) = self.records.get(&key)
                {
                    self.announce(r);
                }
            } else {
                cleared += 1;
                metrics.presync.with_label_values(&["cleared"]).inc();
                tracing::info!(
                    src = %ip_of(&key.src),
                    dst = %ip_of(&key.dst),
                    dst_port = key.dport,
                    verdict = d.verdict.name(),
                    "a flow first seen before the inventory synced is not a direct access"
                );
                let _ = maps.remove_flow(&key);
                self.records.remove(&key);
                self.order.retain(|k| *k != key);
            }
        }
        (confirmed, cleared)
    }

    /// Whether a direct flow's source has joined the cluster (or the allowed sources) since
    /// its first packet: a new pod or node whose address reached the agent after the flow
    /// began. Such a flow was never a direct access: it is counted as cleared, and the caller
    /// drops it from the view and the kernel table (its next packets are judged anew there).
    pub(super) fn source_joined(
        &mut self,
        key: &FlowKey,
        dir: &Directory,
        metrics: &Metrics,
    ) -> bool {
        let Some(r) = self.records.get(key) else {
            return false;
        };
        let src = ip_of(&key.src);
        if !r.verdict.alerts() || dir.joined.is_empty() || !dir.joined.contains(&src) {
            return false;
        }
        metrics.direct_cleared.inc();
        tracing::info!(
            src = %src,
            dst = %ip_of(&key.dst),
            dst_port = key.dport,
            "a direct flow's source joined the cluster after its first packets: not a direct access"
        );
        true
    }

    /// Flows not judged yet (settling, waiting for their source to join, or for conntrack),
    /// held ones excepted.
    pub fn awaiting_judgement(&self) -> usize {
        self.records
            .values()
            .filter(|r| r.labels.is_none() && !r.held)
            .count()
    }

    /// The agent is stopping (a rollout, a drain): every flow not judged yet is judged now, with
    /// what is known, rather than lost with the agent (the next agent does not know it: the
    /// kernel's flow table goes with this one). A flow whose source joined is cleared as at
    /// any time. Held flows (no first sync yet) stay unjudged: nothing to judge them by.
    /// Returns how many were judged.
    pub fn settle_before_exit(&mut self, dir: &Directory, metrics: &Metrics) -> usize {
        let due: Vec<FlowKey> = self
            .order
            .iter()
            .filter(|k| {
                self.records
                    .get(k)
                    .is_some_and(|r| r.labels.is_none() && !r.held)
            })
            .copied()
            .collect();
        let mut judged = 0;
        for key in due {
            if self.source_joined(&key, dir, metrics) {
                continue;
            }
            if let Some(r) = self.records.get_mut(&key) {
                if r.pending {
                    r.pending = false;
                    metrics.origin_lookups.with_label_values(&["skipped"]).inc();
                }
                r.pod = current_pod(r.pod.take(), dir, &key);
            }
            self.settle(key, metrics);
            if let Some(r) = self.records.get_mut(&key) {
                r.count_moved(metrics);
            }
            judged += 1;
        }
        judged
    }
}

/// The pod a flow is judged against when it settles: the inventory's current view of it, so
/// a pod reached in its first moments (known then only by its veth: its host route comes
/// before its status) is named, and its declarations are today's. A different pod now holding
/// the address (reused) is not the one reached: the first view stays.
pub(super) fn current_pod(
    seen: Option<Arc<PodRef>>,
    dir: &Directory,
    key: &FlowKey,
) -> Option<Arc<PodRef>> {
    let now = dir.pod_shared(&ip_of(&key.dst));
    match (seen, now) {
        (None, now) => now,
        (Some(seen), Some(now))
            if seen.namespace.is_empty()
                || (seen.namespace == now.namespace && seen.name == now.name) =>
        {
            Some(now)
        }
        (seen, _) => seen,
    }
}
