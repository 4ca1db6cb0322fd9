//! `observer run`: the typed configuration (flags, environment, file, validated once), the
//! runtime (the controller and its tasks), the state those tasks share, `explain` over the
//! live maps, and the debug API: its wire types (used by the clients) and its server. Uses
//! every folder below it; only the binary's command line uses it.

pub mod api;
pub mod config;
pub mod explain;
pub mod kept;
pub mod metrics_endpoint;
pub mod runtime;
pub mod state;
