//! The direct-access metric series of the flow tracker: the port label a flow is counted
//! under (bounded per pod), the packets and bytes a settled flow moved, and the removal of a
//! gone pod's series after its grace period.

use std::{collections::HashSet, time::Instant};

use observer_common::maps::FlowKey;

use super::{Record, Tracker};
use crate::{
    inventory::{Directory, PodRef},
    metrics::Metrics,
};

impl Record {
    /// Adds what the flow's counters moved since the last refresh to its direct-access metrics
    /// (a settled flow only). Flows that did not move pay for no label hashing.
    pub(super) fn count_moved(&mut self, metrics: &Metrics) {
        let Some(labels) = &self.labels else {
            return;
        };
        if self.rule.is_some() {
            // Declared for the pod: not a direct access, counted apart when it settled.
            return;
        }
        let packets = self.stats.packets.saturating_sub(self.counted_packets);
        let bytes = self.stats.bytes.saturating_sub(self.counted_bytes);
        if packets > 0 || bytes > 0 {
            let l: Vec<&str> = labels.iter().map(String::as_str).collect();
            metrics.direct_packets.with_label_values(&l).inc_by(packets);
            metrics.direct_bytes.with_label_values(&l).inc_by(bytes);
        }
        self.counted_packets = self.counted_packets.max(self.stats.packets);
        self.counted_bytes = self.counted_bytes.max(self.stats.bytes);
    }
}

impl Tracker {
    /// The port label of a flow to this pod: its port, `undeclared` (a port the Kubernetes
    /// inventory does not declare), `other` (past the per-pod cap) or `none` (no ports).
    pub(super) fn port_label(&mut self, pod_ref: &PodRef, key: &FlowKey) -> String {
        let (ns, pod) = (pod_ref.namespace.as_str(), pod_ref.name.as_str());
        let port = match key.proto {
            6 | 17 | 132 => key.dport.to_string(),
            _ => return "none".to_string(),
        };
        // With the Kubernetes inventory, ports the pod does not declare are one label.
        if let Some(declared) = &pod_ref.declared_ports {
            return if declared.contains(&key.dport) {
                port
            } else {
                "undeclared".to_string()
            };
        }
        let set = self
            .ports
            .entry((ns.to_string(), pod.to_string()))
            .or_default();
        if set.contains(&port) || set.len() < self.cfg.ports_per_pod {
            set.insert(port.clone());
            port
        } else {
            "other".to_string()
        }
    }

    /// Removes the metric series of pods that have been gone for the grace period.
    pub(super) fn remove_gone_pods(&mut self, dir: &Directory, metrics: &Metrics) {
        let present: HashSet<(String, String)> = dir
            .pods
            .values()
            .map(|p| (p.namespace.clone(), p.name.clone()))
            .collect();
        let now = Instant::now();
        let mut remove = Vec::new();
        for pod in self.series.keys() {
            if present.contains(pod) {
                self.gone_since.remove(pod);
                continue;
            }
            let since = *self.gone_since.entry(pod.clone()).or_insert(now);
            if now.duration_since(since) >= self.cfg.pod_grace {
                remove.push(pod.clone());
            }
        }
        for pod in remove {
            for labels in self.series.remove(&pod).unwrap_or_default() {
                let l: Vec<&str> = labels.iter().map(String::as_str).collect();
                let _ = metrics.direct_flows.remove_label_values(&l);
                let _ = metrics.direct_packets.remove_label_values(&l);
                let _ = metrics.direct_bytes.remove_label_values(&l);
            }
            self.ports.remove(&pod);
            self.gone_since.remove(&pod);
            tracing::info!(
                namespace = pod.0,
                pod = pod.1,
                "removed the metric series of a pod that is gone"
            );
        }
    }
}
