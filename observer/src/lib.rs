//! The observer agent's library: loading the eBPF object, attaching its programs, following
//! the node, reading and writing the maps, metrics, alerts and the debug API.

pub mod alertmanager;
pub mod api;
pub mod attach;
pub mod bpf;
pub mod clock;
pub mod config;
pub mod conntrack;
pub mod defaults;
pub mod explain;
pub mod flows;
pub mod ifaces;
pub mod inventory;
pub mod k8s;
pub mod kmaps;
pub mod metrics;
pub mod netlink;
pub mod origins;
pub mod podcounts;
pub mod remedy;
pub mod roles;
pub mod staged;
pub mod state;
