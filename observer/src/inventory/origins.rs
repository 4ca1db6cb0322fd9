//! Who opened the flows the observer did not see start, from conntrack: at start, the node's
//! open connections that local pods opened are learnt into `POD_FLOWS` (their replies are
//! replies, not direct accesses: a DaemonSet rollout restarts every agent mid-connection);
//! afterwards, each flagged flow that began mid-stream or without a handshake is looked up
//! once before it is counted or alerted on.

use crate::{
    inventory::{
        Directory,
        conntrack::{Conntrack, CtTuple, Opener},
    },
    kernel::maps::Maps,
    metrics::Metrics,
};
use observer_common::maps::FlowKey;

/// What conntrack said about a flow whose start the observer did not see.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// A local pod opened it: its packets are replies. The `POD_FLOWS` key to learn.
    PodOpened(FlowKey),
    /// The outsider opened it.
    Outsider,
    /// Conntrack does not know, or cannot tell.
    Unknown,
}

/// Conntrack, if the node has it; without it every unseen start stays unknown.
pub struct Origins {
    ct: Option<Conntrack>,
    warned: bool,
}

impl Origins {
    pub fn open() -> Origins {
        match Conntrack::open() {
            Ok(ct) => Origins {
                ct: Some(ct),
                warned: false,
            },
            Err(e) => {
                tracing::warn!(error = %e, "no conntrack: connections open before the start cannot be told from direct accesses; they are reported with origin unknown");
                Origins {
                    ct: None,
                    warned: true,
                }
            }
        }
    }

    /// Learns the connections local pods have open now. Returns how many.
    pub fn seed(&mut self, dir: &Directory, maps: &Maps, metrics: &Metrics) -> usize {
        let Some(ct) = self.ct.as_mut() else {
            return 0;
        };
        // Each connection is judged as it is read: only the pods' own are kept (written to
        // the kernel), whatever the size of the node's table.
        let mut n = 0;
        let mut failed = 0usize;
        let tracked = match ct.dump(|e| {
            if let Opener::Pod(key) = e.opener(|ip| dir.pods.contains_key(ip)) {
                match maps.seed_pod_flow(&key) {
                    Ok(()) => n += 1,
                    Err(err) => {
                        failed += 1;
                        if failed == 1 {
                            tracing::warn!(error = %err, "learning a pod's open connection");
                        }
                    }
                }
            }
        }) {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, learnt = n, "dumping conntrack failed; open connections are learnt one by one as they show");
                metrics.pod_flows_seeded.inc_by(n as u64);
                return n;
            }
        };
        metrics.pod_flows_seeded.inc_by(n as u64);
        tracing::info!(
            tracked,
            pod_opened = n,
            failed,
            "learnt the connections local pods had open"
        );
        n
    }

    /// What conntrack says of a flagged flow (its key as the outsider's packets carry it).
    pub fn lookup(&mut self, key: &FlowKey, dir: &Directory) -> Resolution {
        let Some(ct) = self.ct.as_mut() else {
            return Resolution::Unknown;
        };
        match ct.get(&CtTuple::of(key)) {
            Ok(Some(e)) => match e.opener(|ip| dir.pods.contains_key(ip)) {
                Opener::Pod(k) => Resolution::PodOpened(k),
                Opener::Outsider => Resolution::Outsider,
                Opener::Unknown => Resolution::Unknown,
            },
            Ok(None) => Resolution::Unknown,
            Err(e) => {
                if !self.warned {
                    self.warned = true;
                    tracing::warn!(error = %e, "a conntrack lookup failed; such flows are reported with origin unknown");
                }
                Resolution::Unknown
            }
        }
    }
}
