//! The agent's side of what outlives it (`--state-dir`, [`crate::kernel::state`]): the pinned
//! maps made ready before the programs load, and what was adopted or dropped, logged and
//! counted once the metrics exist.

use crate::{
    agent::config::Config,
    kernel::{
        maps::Maps,
        state::{self, Prepared},
    },
    metrics::Metrics,
};

/// The state the previous agent kept (`--state-dir`), ready for the loader. Without it (none
/// configured, no bpffs) the agent runs as before and says so: the flows pods opened are then
/// learnt again only where conntrack knows them.
pub fn prepare(cfg: &Config) -> Option<Prepared> {
    let dir = cfg.state_dir.as_ref()?;
    match state::prepare(dir) {
        Ok(p) => {
            for d in &p.dropped {
                tracing::warn!(
                    map = d.map,
                    reason = d.reason,
                    detail = d.detail,
                    "a map kept by a previous agent was dropped, not adopted"
                );
            }
            Some(p)
        }
        Err(e) => {
            tracing::warn!(error = %e, "nothing is kept across restarts");
            None
        }
    }
}

pub fn record(kept: Option<&Prepared>, metrics: &Metrics, maps: &Maps) {
    for l in state::layouts() {
        let adopted = kept.is_some_and(|k| k.adopted.contains(&l.name));
        metrics
            .kept_adopted
            .with_label_values(&[l.name])
            .set(i64::from(adopted));
    }
    let Some(kept) = kept else {
        return;
    };
    for d in &kept.dropped {
        metrics
            .kept_dropped
            .with_label_values(&[&d.map, d.reason])
            .inc();
    }
    let pod_flows = maps.pod_flows().map(|f| f.len()).unwrap_or(0);
    tracing::info!(
        dir = %kept.dir.display(),
        adopted = ?kept.adopted,
        pod_flows,
        "kept state: the flows pods opened outlive this agent"
    );
}
