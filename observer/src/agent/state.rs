//! What the agent's tasks share: the maps, metrics, the flow tracker, the pod directory and a
//! snapshot of the controller's state, read by the debug API and the metrics endpoint.

use std::sync::{Arc, Mutex, RwLock, atomic::AtomicBool};

use observer_common::{maps::health, verdict::Settings};

use crate::{
    agent::{
        api,
        explain::{self, ExplainError, Explanation},
    },
    export::remedy,
    flows::Tracker,
    inventory::Directory,
    kernel::maps::Maps,
    metrics::Metrics,
};

/// What the agent's tasks share.
pub struct Shared {
    pub maps: Arc<Maps>,
    pub metrics: Arc<Metrics>,
    pub tracker: Mutex<Tracker>,
    pub dir: RwLock<Directory>,
    pub settings: Settings,
    /// For remediation hints: the cluster and allowed-source CIDRs.
    pub cluster_cidrs: Vec<observer_common::user::Cidr>,
    pub allowed_cidrs: Vec<observer_common::user::Cidr>,
    /// Snapshot of the controller's state for `observer status`.
    pub snapshot: Mutex<Snapshot>,
    pub ready: AtomicBool,
}

#[derive(Clone, Debug, Default)]
pub struct Snapshot {
    pub attach_mode: String,
    pub interfaces: Vec<api::IfaceStatusOut>,
    pub failing: Vec<api::Failing>,
    pub attach_errors: u64,
    pub inventory: api::InventoryOut,
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

impl Shared {
    pub fn status(&self) -> api::Status {
        let snap = self
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let lost = self
            .maps
            .health_counts()
            .map(|h| h[health::EVENTS_LOST as usize])
            .unwrap_or(0);
        let (entries, capacity) = self.maps.flow_table_use_at_refresh();
        let (recent, held, refreshes) = {
            let t = self.tracker.lock().unwrap_or_else(|p| p.into_inner());
            (t.len(), t.held(), t.refreshes)
        };
        api::Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            kernel: kernel_release(),
            attach_mode: snap.attach_mode.clone(),
            interfaces: snap.interfaces,
            failing: snap.failing,
            attach_errors: snap.attach_errors,
            inventory: snap.inventory,
            events_lost: lost,
            flow_table_entries: entries,
            flow_table_capacity: capacity,
            recent_flows: recent,
            held_flows: held,
            flow_refreshes: refreshes,
        }
    }

    pub fn explain(
        &self,
        src: &str,
        dst: &str,
        protocol: Option<&str>,
    ) -> Result<Explanation, ExplainError> {
        let dir = self.dir.read().unwrap_or_else(|p| p.into_inner());
        let mut e = explain::explain(&*self.maps, &self.settings, src, dst, protocol, |ip| {
            dir.pod(ip).cloned()
        })?;
        if e.alert
            && let Some(pod) = &e.pod
        {
            let (_, port) = explain::parse_dst(dst)?;
            let proto = protocol.unwrap_or("tcp").to_ascii_lowercase();
            let port = if proto == "icmp" {
                None
            } else {
                Some(port.unwrap_or(if proto == "udp" { 53 } else { 80 }))
            };
            e.remedy = Some(remedy::remedy(
                pod,
                port,
                &proto,
                &self.cluster_cidrs,
                &self.allowed_cidrs,
            ));
        }
        Ok(e)
    }

    /// Remedies for every direct path in the recent flows, one per (pod, port, protocol).
    pub fn suggestions(&self) -> Vec<remedy::Remedy> {
        let rows = self
            .tracker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .rows(Some("direct_to_pod"));
        let dir = self.dir.read().unwrap_or_else(|p| p.into_inner());
        let mut seen = std::collections::BTreeSet::new();
        let mut out = Vec::new();
        for r in rows {
            let port = (r.protocol != "icmp" && r.protocol != "other").then_some(r.dst_port);
            if !seen.insert((r.namespace.clone(), r.pod.clone(), port, r.protocol.clone())) {
                continue;
            }
            let pod = r
                .dst
                .parse()
                .ok()
                .and_then(|ip| dir.pod(&ip).cloned())
                .unwrap_or(crate::inventory::PodRef {
                    namespace: r.namespace.clone(),
                    name: r.pod.clone(),
                    iface: r.iface.clone(),
                    ..crate::inventory::PodRef::default()
                });
            out.push(remedy::remedy(
                &pod,
                port,
                &r.protocol,
                &self.cluster_cidrs,
                &self.allowed_cidrs,
            ));
        }
        out
    }
}
