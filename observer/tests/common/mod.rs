//! Helpers for the kernel tests: network namespaces the test creates (and always deletes), and
//! running code inside them.
#![allow(dead_code, reason = "each test binary uses a part of the helpers")]

pub mod netns;
pub mod topology;
