//! What leaves the agent besides the metrics: the Alertmanager push of the tracker's alert
//! lines (it implements [`crate::flows::AlertSink`]) and remediation hints for a direct path.
//! Takes what the tracker and the inventory produce; nothing below imports it.

pub mod alertmanager;
pub mod remedy;
