//! The observer agent's library, laid out by concern. Imports run one way, each folder using
//! only those listed before it:
//!
//! - [`defaults`]: every default of the agent (uses nothing of ours);
//! - [`kernel`]: the eBPF object, its maps and staged rings, attaching, interfaces, netlink,
//!   the kernel's clock;
//! - [`metrics`]: the Prometheus metrics every part counts into, and the kernel's counters
//!   sampled at a scrape;
//! - [`inventory`]: what the node and the cluster hold (standalone from the host routes, or
//!   from Kubernetes), written to the address maps; who opened a flow, from conntrack;
//! - [`flows`]: the flow tracker: events and staged records become flows, alert lines,
//!   direct-access series, and per-pod counts of what the kernel could not hand over;
//! - [`export`]: what leaves the agent besides the metrics: the Alertmanager push (an
//!   [`flows::AlertSink`]) and remediation hints;
//! - [`agent`]: `observer run`: configuration, the runtime's tasks, the state they share and
//!   the debug API (its wire types, which the clients use, and its server).
//!
//! The command line (`observer` and `kubectl observer`) lives in the binary's `cli` module and
//! uses the agent's configuration, runtime and API types.

pub mod agent;
pub mod defaults;
pub mod export;
pub mod flows;
pub mod inventory;
pub mod kernel;
pub mod metrics;
