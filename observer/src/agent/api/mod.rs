//! The local debug API: JSON lines over a unix socket (mode 0600, never on the network), used
//! by `observer flows|status|explain` through `kubectl exec`. One request line per
//! connection; the answer is one or more JSON lines, then the server closes (except with
//! `follow`). A bad request gets `{"error": ...}`, never a crash.
//!
//! This module is the wire: the requests and answers the clients and the server share (the
//! flow rows, explanations and remedies are the tracker's and the agent's own types, named
//! here for the clients). The server, which answers from the agent's shared state, is
//! [`server`]; the state uses these types and never the server.

pub mod server;

pub use crate::{agent::explain::Explanation, export::remedy::Remedy, flows::FlowRow};

use serde::{Deserialize, Serialize};

use crate::{inventory::InventoryStatus, kernel::ifaces::IfaceStatus};

/// The longest request line accepted.
pub const MAX_REQUEST: usize = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Flows {
        #[serde(default)]
        verdict: Option<String>,
        #[serde(default)]
        follow: bool,
    },
    Status {},
    /// Remediation for every direct path in the recent flows.
    Suggest {},
    Explain {
        src: String,
        dst: String,
        #[serde(default)]
        protocol: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failing {
    pub iface: String,
    pub error: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub kernel: String,
    pub attach_mode: String,
    pub interfaces: Vec<IfaceStatusOut>,
    pub failing: Vec<Failing>,
    pub attach_errors: u64,
    pub inventory: InventoryOut,
    pub events_lost: u64,
    pub flow_table_entries: u64,
    pub flow_table_capacity: u32,
    pub recent_flows: usize,
    /// Direct flows first seen before the inventory's first full sync, held unjudged.
    #[serde(default)]
    pub held_flows: usize,
    /// Flow refreshes (every `--refresh-interval`) since the agent started.
    #[serde(default)]
    pub flow_refreshes: u64,
}

/// [`IfaceStatus`] on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfaceStatusOut {
    pub name: String,
    pub index: u32,
    pub role: String,
    pub mode: String,
    pub foreign: Vec<String>,
    /// Another program runs before ours and ours could not be moved back in front.
    #[serde(default)]
    pub not_first: bool,
}

impl From<IfaceStatus> for IfaceStatusOut {
    fn from(s: IfaceStatus) -> Self {
        IfaceStatusOut {
            name: s.name,
            index: s.index,
            role: s.role.to_string(),
            mode: s.mode.to_string(),
            foreign: s.foreign,
            not_first: s.not_first,
        }
    }
}

/// [`InventoryStatus`] on the wire.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InventoryOut {
    pub mode: String,
    #[serde(default)]
    pub synced: bool,
    #[serde(default)]
    pub stale: bool,
    pub pods: usize,
    pub node_ips: usize,
    #[serde(default)]
    pub addresses: usize,
    pub cidrs: usize,
    /// Changes the kernel refused (a full map), kept and retried.
    #[serde(default)]
    pub unwritten: usize,
    pub last_update_unix: f64,
    /// Syncs of the inventory to the maps so far.
    #[serde(default)]
    pub syncs: u64,
    /// Entries written to or removed from the address maps so far.
    #[serde(default)]
    pub writes: u64,
    /// Malformed declarations of allowed sources (pod or namespace annotations), refused.
    #[serde(default)]
    pub refused_declarations: Vec<crate::inventory::declared::Refused>,
}

impl From<InventoryStatus> for InventoryOut {
    fn from(s: InventoryStatus) -> Self {
        InventoryOut {
            mode: s.mode.to_string(),
            synced: s.synced,
            stale: s.stale,
            pods: s.pods,
            node_ips: s.node_ips,
            addresses: s.addresses,
            cidrs: s.cidrs,
            unwritten: s.unwritten,
            last_update_unix: s.last_update_unix,
            syncs: s.syncs,
            writes: s.writes,
            refused_declarations: s.refused,
        }
    }
}

/// One JSON line `{"error": msg}`.
pub fn error_line(msg: &str) -> String {
    let mut s = serde_json::json!({ "error": msg }).to_string();
    s.push('\n');
    s
}

/// One JSON line.
pub fn line<T: Serialize>(v: &T) -> String {
    let mut s = serde_json::to_string(v).unwrap_or_else(|e| error_line(&e.to_string()));
    s.push('\n');
    s
}
