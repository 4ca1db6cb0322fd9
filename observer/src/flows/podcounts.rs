//! What the kernel counts per local pod when it cannot give the agent a flow, turned into a
//! per-pod metric and an alert line naming the pod:
//!
//! - `POD_LOST`: direct flows whose event the full ring could not take (a flood) or that could
//!   not enter `FLOWS`; their source and port are lost, not the pod they reached.
//! - `POD_UNJUDGED`: packets from outside the cluster whose flow could not be read at all (a
//!   tiny first fragment, an overlong IPv6 header chain, a fragment without its first), so a
//!   connection hidden in them still counts against the pod.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    time::{Duration, Instant},
};

use observer_common::{
    addr::{IpKey, ip_of},
    verdict::unjudged,
};
use prometheus::IntCounterVec;

use crate::{
    inventory::{Directory, PodRef},
    kernel::maps::{KmapError, Maps},
    metrics::Metrics,
};

/// Labels of the per-pod metric: namespace, workload, pod, and the severity (lost flows) or
/// the kind (unjudged packets).
type Labels = [String; 4];

/// Which kernel map, and what its counts mean.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Lost,
    Unjudged,
}

impl Family {
    fn map_name(self) -> &'static str {
        match self {
            Family::Lost => "POD_LOST",
            Family::Unjudged => "POD_UNJUDGED",
        }
    }

    fn metric(self, m: &Metrics) -> &IntCounterVec {
        match self {
            Family::Lost => &m.direct_lost,
            Family::Unjudged => &m.unjudged,
        }
    }

    /// Per pod address and kind, the kernel's running totals.
    fn read(self, maps: &Maps) -> Result<Vec<(IpKey, usize, u64)>, KmapError> {
        Ok(match self {
            Family::Lost => maps
                .pod_lost()?
                .into_iter()
                .map(|(k, n)| (k, 0, n))
                .collect(),
            Family::Unjudged => maps
                .pod_unjudged()?
                .into_iter()
                .flat_map(|(k, v)| (0..unjudged::COUNT).map(move |i| (k, i, v.counts[i])))
                .collect(),
        })
    }

    fn forget(self, maps: &Maps, key: &IpKey) -> Result<(), KmapError> {
        match self {
            Family::Lost => maps.forget_pod_lost(key),
            Family::Unjudged => maps.forget_pod_unjudged(key),
        }
    }

    /// The fourth label: the access's severity, or the kind of unjudged packet.
    fn last_label(self, pod: &PodRef, kind: usize) -> String {
        match self {
            Family::Lost => pod.severity_any_port().to_string(),
            Family::Unjudged => unjudged::NAMES[kind].to_string(),
        }
    }

    fn log(self, labels: &Labels, iface: &str, dst: Option<IpAddr>, count: u64) {
        let dst = dst.map(|d| d.to_string()).unwrap_or_default();
        match self {
            Family::Lost => tracing::warn!(
                target: "observer::alert",
                verdict = "direct_to_pod",
                namespace = labels[0],
                workload = labels[1],
                pod = labels[2],
                severity = labels[3],
                iface,
                dst,
                count,
                origin = "lost",
                reason = "new flows from outside the cluster straight to the pod IP, counted in the kernel while the agent could not take their details (event ring full: a flood?)",
                "direct access to a pod IP from outside the cluster, details lost"
            ),
            Family::Unjudged => tracing::warn!(
                target: "observer::alert",
                verdict = "unjudged",
                namespace = labels[0],
                workload = labels[1],
                pod = labels[2],
                kind = labels[3],
                iface,
                dst,
                count,
                reason = if labels[3] == unjudged::NAMES[unjudged::HEADER] {
                    "packets from outside the cluster to the pod IP whose TCP/UDP header is cut short or hidden (a tiny first fragment, an IPv6 header chain too long to follow): a way to reach the pod unseen"
                } else {
                    "fragments from outside the cluster to the pod IP whose first fragment was never judged (sent alone or ahead of it)"
                },
                "traffic from outside the cluster to a pod IP that the observer could not judge"
            ),
        }
    }
}

pub struct PodCounts {
    family: Family,
    /// Kernel values at the previous read, per address and kind.
    seen: HashMap<(IpKey, usize), u64>,
    /// Per pod (namespace/name and kind): when its alert line was written, and what came since.
    folds: HashMap<(String, String), (Instant, u64, Labels)>,
    series: HashSet<Labels>,
    warned: bool,
}

impl PodCounts {
    pub fn new(family: Family) -> Self {
        PodCounts {
            family,
            seen: HashMap::new(),
            folds: HashMap::new(),
            series: HashSet::new(),
            warned: false,
        }
    }

    /// Reads the family's map: new counts are added per pod and alerted on (one line per pod
    /// and window, repeats folded into a line at the window's end).
    pub fn refresh(&mut self, maps: &Maps, dir: &Directory, metrics: &Metrics, window: Duration) {
        let family = self.family;
        let counts = match family.read(maps) {
            Ok(c) => c,
            Err(e) => {
                if !std::mem::replace(&mut self.warned, true) {
                    tracing::warn!(error = %e, map = family.map_name(), "reading a per-pod map failed");
                }
                Vec::new()
            }
        };
        let metric = family.metric(metrics);
        for (key, kind, total) in counts {
            let ip: IpAddr = ip_of(&key);
            let Some(pod) = dir.pod(&ip) else {
                // No local pod any more: its count goes with it.
                let _ = family.forget(maps, &key);
                self.seen.retain(|(k, _), _| *k != key);
                continue;
            };
            let before = self.seen.insert((key, kind), total).unwrap_or(0);
            let new = total.saturating_sub(before);
            if new == 0 {
                continue;
            }
            let labels: Labels = [
                pod.namespace.clone(),
                pod.workload.clone(),
                pod.name.clone(),
                family.last_label(pod, kind),
            ];
            let l: Vec<&str> = labels.iter().map(String::as_str).collect();
            metric.with_label_values(&l).inc_by(new);
            self.series.insert(labels.clone());
            let name = (format!("{}/{}", pod.namespace, pod.name), labels[3].clone());
            match self.folds.get_mut(&name) {
                Some(f) => f.1 += new,
                None => {
                    family.log(&labels, &pod.iface, Some(ip), new);
                    metrics.alerts.inc();
                    self.folds.insert(name, (Instant::now(), 0, labels));
                }
            }
        }
        let done: Vec<_> = self
            .folds
            .iter()
            .filter(|(_, f)| f.0.elapsed() >= window)
            .map(|(k, _)| k.clone())
            .collect();
        for k in done {
            if let Some((_, more, labels)) = self.folds.remove(&k)
                && more > 0
            {
                family.log(&labels, "", None, more);
                metrics.alerts.inc();
            }
        }
        // Series of pods that are gone (none of their addresses is local any more).
        let present: HashSet<(&str, &str)> = dir
            .pods
            .values()
            .map(|p| (p.namespace.as_str(), p.name.as_str()))
            .collect();
        let folds = &self.folds;
        self.series.retain(|l| {
            let keep = present.contains(&(l[0].as_str(), l[2].as_str()))
                || folds.contains_key(&(format!("{}/{}", l[0], l[2]), l[3].clone()));
            if !keep {
                let v: Vec<&str> = l.iter().map(String::as_str).collect();
                let _ = metric.remove_label_values(&v);
            }
            keep
        });
    }
}
