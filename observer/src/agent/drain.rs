//! Stopping. On SIGTERM (a rollout, a drain) the agent goes on until the direct flows it has
//! seen are judged, at most the time a flow waits for its judgement: a flow seen in its last
//! seconds would otherwise be lost with it (the next agent starts with an empty flow table),
//! and judged early, a new pod's late address would make it a false alarm. Inventory updates
//! keep coming meanwhile. A second signal ends it at once. The wait stays within the
//! DaemonSet's grace period (30 s, `defaults::DRAIN_MAX`), or the kubelet's SIGKILL would leave
//! the filters attached and judge nothing.

use std::time::Duration;

use tokio::time::{Instant, Interval, MissedTickBehavior};

use super::config::Config;

/// The runtime's stop: when a signal ends it, and the wait for the flows' judgement.
pub struct Drain {
    /// The longest wait.
    wait: Duration,
    /// The first signal and the end of its wait, once one came with flows to judge.
    until: Option<(&'static str, Instant)>,
    tick: Interval,
}

impl Drain {
    pub fn new(cfg: &Config) -> Drain {
        let judged_after = if cfg.kubernetes {
            cfg.peer_wait.max(cfg.settle)
        } else {
            cfg.settle
        };
        let mut tick = tokio::time::interval(Duration::from_millis(100));
        // Polled only while draining: no burst of missed ticks then.
        tick.set_missed_tick_behavior(MissedTickBehavior::Skip);
        Drain {
            wait: (judged_after + 2 * cfg.refresh_interval).min(crate::defaults::DRAIN_MAX),
            until: None,
            tick,
        }
    }

    /// A signal came, with `awaiting` flows not judged yet: the signal to stop with now (a
    /// second signal ends the wait, under the first one's name), or None to wait.
    pub fn signal(&mut self, signal: &'static str, awaiting: usize) -> Option<&'static str> {
        if let Some((first, _)) = self.until {
            return Some(first);
        }
        if awaiting == 0 {
            return Some(signal);
        }
        tracing::info!(
            signal,
            flows = awaiting,
            at_most_ms = self.wait.as_millis() as u64,
            "stopping once the direct flows seen are judged"
        );
        self.until = Some((signal, Instant::now() + self.wait));
        None
    }

    pub fn draining(&self) -> bool {
        self.until.is_some()
    }

    /// The next check while draining.
    pub async fn tick(&mut self) {
        self.tick.tick().await;
    }

    /// While draining: the signal to stop with, once nothing awaits judgement or the wait is
    /// over.
    pub fn done(&self, awaiting: usize) -> Option<&'static str> {
        let (signal, until) = self.until?;
        (awaiting == 0 || Instant::now() >= until).then_some(signal)
    }
}
