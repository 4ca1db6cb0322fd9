//! Direct flows the agent never heard of in detail: when the event ring is full (a flood) or a
//! flow could not enter `FLOWS`, the uplink counts the flow per pod address in `POD_LOST`. The
//! agent turns those counts into a per-pod metric and an alert naming the pod, so a flood to
//! one pod cannot hide an access to another. The source and port of those flows are lost.

use std::{
    collections::{HashMap, HashSet},
    net::IpAddr,
    time::{Duration, Instant},
};

use observer_common::addr::{IpKey, ip_of};

use crate::{inventory::Directory, kmaps::Maps, metrics::Metrics};

/// Labels of `observer_direct_pod_access_lost_flows_total`.
type Labels = [String; 4];

#[derive(Default)]
pub struct Lost {
    /// `POD_LOST` values at the previous read.
    seen: HashMap<IpKey, u64>,
    /// Per pod (namespace/name): when its alert line was written, and what came since.
    folds: HashMap<String, (Instant, u64, Labels)>,
    series: HashSet<Labels>,
    warned: bool,
}

impl Lost {
    /// Reads `POD_LOST`: new losses are counted per pod and alerted on (one line per pod and
    /// window, repeats folded into a line at the window's end).
    pub fn refresh(&mut self, maps: &Maps, dir: &Directory, metrics: &Metrics, window: Duration) {
        let counts = match maps.pod_lost() {
            Ok(c) => c,
            Err(e) => {
                if !std::mem::replace(&mut self.warned, true) {
                    tracing::warn!(error = %e, "reading POD_LOST failed");
                }
                Vec::new()
            }
        };
        for (key, total) in counts {
            let ip: IpAddr = ip_of(&key);
            let Some(pod) = dir.pod(&ip) else {
                // No local pod any more: its count goes with it.
                let _ = maps.forget_pod_lost(&key);
                self.seen.remove(&key);
                continue;
            };
            let before = self.seen.insert(key, total).unwrap_or(0);
            let new = total.saturating_sub(before);
            if new == 0 {
                continue;
            }
            let severity = match pod.backs_service {
                None => "",
                Some(false) => "high",
                Some(true) => "medium",
            };
            let labels: Labels = [
                pod.namespace.clone(),
                pod.workload.clone(),
                pod.name.clone(),
                severity.to_string(),
            ];
            let l: Vec<&str> = labels.iter().map(String::as_str).collect();
            metrics.direct_lost.with_label_values(&l).inc_by(new);
            self.series.insert(labels.clone());
            let name = format!("{}/{}", pod.namespace, pod.name);
            match self.folds.get_mut(&name) {
                Some(f) => f.1 += new,
                None => {
                    log_lost(&labels, &pod.iface, Some(ip), new);
                    metrics.alerts.inc();
                    self.folds.insert(name, (Instant::now(), 0, labels));
                }
            }
        }
        let done: Vec<String> = self
            .folds
            .iter()
            .filter(|(_, f)| f.0.elapsed() >= window)
            .map(|(k, _)| k.clone())
            .collect();
        for k in done {
            if let Some((_, more, labels)) = self.folds.remove(&k)
                && more > 0
            {
                log_lost(&labels, "", None, more);
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
                || folds.contains_key(&format!("{}/{}", l[0], l[2]));
            if !keep {
                let v: Vec<&str> = l.iter().map(String::as_str).collect();
                let _ = metrics.direct_lost.remove_label_values(&v);
            }
            keep
        });
    }
}

fn log_lost(labels: &Labels, iface: &str, dst: Option<IpAddr>, count: u64) {
    let dst = dst.map(|d| d.to_string()).unwrap_or_default();
    tracing::warn!(
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
    );
}
