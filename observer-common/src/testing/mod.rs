//! Test support: crafted frames and the SCENARIOS.md corpus, shared by the host unit tests and
//! the kernel tests (BPF_PROG_TEST_RUN, netns).

pub mod frames;
pub mod scenarios;
