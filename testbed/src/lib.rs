//! Simulated Kubernetes nodes in network namespaces, shared by the kernel tests and
//! `cargo xtask demo`. It has no eBPF dependency, so xtask can build it before the eBPF
//! toolchain exists. Every namespace is created here and deleted on drop.

pub mod agent;
pub mod bpffs;
pub mod cluster;
pub mod cpu;
pub mod evasion;
pub mod kubeapi;
pub mod monitoring;
pub mod netns;
pub mod rng;
pub mod topology;
pub mod traffic;
