//! `observer run`: the typed configuration (flags, environment, file, validated once), the
//! runtime (the controller and its tasks), its stop (`drain`), the state those tasks share,
//! the metrics endpoint, `explain` over the live maps, and the debug API: its wire types (used by the clients) and its server. Uses
//! every folder below it; only the binary's command line uses it.

pub mod api;
pub mod config;
pub mod drain;
pub mod explain;
pub mod kept;
pub mod metrics_endpoint;
pub mod runtime;
pub mod state;
