//! The observer agent's library: loading the eBPF object, attaching its programs, and reading
//! and writing its maps.

pub mod attach;
pub mod bpf;
pub mod kmaps;
