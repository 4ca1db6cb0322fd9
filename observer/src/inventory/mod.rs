//! The inventory: what the node and the cluster hold, written to the address maps as a diff
//! through [`roles::Roles`] (one pod coming or going is one map change). Its sources are the
//! node itself and the settings ([`standalone`]) and, in a cluster, the Kubernetes API
//! ([`kubernetes`]); [`conntrack`] and [`origins`] tell who opened the flows whose start the
//! observer did not see. The types here name local pods for everything above: the flow
//! tracker, the outputs and the debug API. Uses [`crate::kernel`] and [`crate::metrics`].

pub mod conntrack;
pub mod declared;
pub mod joined;
pub mod kubernetes;
pub mod origins;
pub mod roles;
pub mod standalone;

use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
    sync::Arc,
};

use serde::Serialize;

/// Who a local pod address belongs to. In standalone mode the pod is its interface and the
/// Kubernetes facts are unknown.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct PodRef {
    pub namespace: String,
    pub name: String,
    pub iface: String,
    /// Deployment / StatefulSet / DaemonSet / Job (Kubernetes inventory).
    #[serde(default)]
    pub workload: String,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Declared container ports; `None` when unknown (standalone).
    #[serde(default)]
    pub declared_ports: Option<Vec<u16>>,
    /// Whether the pod backs a Service; `None` when unknown (standalone).
    #[serde(default)]
    pub backs_service: Option<bool>,
    /// Ports on which the pod is a load-balancer IP target.
    #[serde(default)]
    pub lb_ports: Vec<u16>,
    /// Sources declared allowed to reach it directly: its own annotation's, then its
    /// namespace's ([`declared`]).
    #[serde(skip)]
    pub allowed: Vec<declared::Allowance>,
}

/// The severity of a direct access to a pod nothing tells about: no Kubernetes inventory
/// (standalone mode), or a pod the inventory has not named yet. Nothing lowers it, so the rules
/// and the Alertmanager push rate it as they rate `high`: `critical`.
pub const SEVERITY_UNRATED: &str = "unrated";

impl PodRef {
    /// Severity of a direct access to this pod's `port`: `high` if it backs no Service,
    /// `low` on a port where it is a load-balancer IP target, `medium` otherwise;
    /// [`SEVERITY_UNRATED`] when the inventory does not know (standalone mode, or a pod the
    /// Kubernetes inventory has not named yet).
    pub fn severity(&self, port: u16) -> &'static str {
        match self.backs_service {
            None => SEVERITY_UNRATED,
            Some(false) => "high",
            Some(true) if self.lb_ports.contains(&port) => "low",
            Some(true) => "medium",
        }
    }

    /// Severity of direct accesses to this pod whose port is not known (flows the kernel
    /// counted per pod): as [`PodRef::severity`], without the load-balancer port's `low`.
    pub fn severity_any_port(&self) -> &'static str {
        match self.backs_service {
            None => SEVERITY_UNRATED,
            Some(false) => "high",
            Some(true) => "medium",
        }
    }
}

/// Local pod addresses and interface names, for naming flows. Pods are shared with the flow
/// records that name them (a flood of flows to one pod holds one copy of it).
#[derive(Clone, Debug, Default)]
pub struct Directory {
    pub pods: HashMap<IpAddr, Arc<PodRef>>,
    pub ifaces: BTreeMap<u32, String>,
    /// Sources that joined the cluster recently ([`joined`]).
    pub joined: Arc<joined::Joined>,
}

impl Directory {
    pub fn pod(&self, ip: &IpAddr) -> Option<&PodRef> {
        self.pods.get(ip).map(|p| &**p)
    }

    /// The pod of an address, shared.
    pub fn pod_shared(&self, ip: &IpAddr) -> Option<Arc<PodRef>> {
        self.pods.get(ip).cloned()
    }

    pub fn iface(&self, index: u32) -> String {
        self.ifaces
            .get(&index)
            .cloned()
            .unwrap_or_else(|| format!("if{index}"))
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct InventoryStatus {
    pub mode: &'static str,
    /// Kubernetes: every watch listed once; the API is unreachable now.
    pub synced: bool,
    pub stale: bool,
    pub pods: usize,
    pub node_ips: usize,
    /// Addresses written to the kernel's exact map (every pod and node of the cluster).
    pub addresses: usize,
    pub cidrs: usize,
    /// Changes the kernel refused so far (a full map): kept, and written when they fit.
    pub unwritten: usize,
    pub last_update_unix: f64,
    /// Syncs of the inventory to the maps so far (each retries what was refused).
    pub syncs: u64,
    /// Entries written to or removed from the address maps so far.
    pub writes: u64,
    /// Declarations of allowed sources refused as malformed ([`declared`]).
    pub refused: Vec<declared::Refused>,
}
