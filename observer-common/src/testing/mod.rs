//! Test support: crafted frames and the SCENARIOS.md corpus, shared by the host unit tests and
//! the kernel tests (BPF_PROG_TEST_RUN, netns).

pub mod frames;
pub mod scenarios;

use crate::{addr::key_of, maps::FlowKey};

/// A flow key from written addresses (test data).
pub fn flow_key(src: &str, dst: &str, sport: u16, dport: u16, proto: u8) -> FlowKey {
    let ip = |s: &str| {
        key_of(
            s.parse()
                .unwrap_or_else(|_| panic!("bad test address {s:?}")),
        )
    };
    FlowKey::new(ip(src), ip(dst), sport, dport, proto)
}
