//! The kernel side: the embedded eBPF object and how it is loaded, its maps and the staged
//! rings shared with the programs, attaching the programs to interfaces, following the node's
//! links, addresses and routes through netlink, the kernel's coarse clock, and the maps kept
//! pinned across the agent's restarts ([`state`]). Uses only
//! [`crate::defaults`] and `observer-common`.

pub mod attach;
pub mod clock;
pub mod ifaces;
pub mod maps;
pub mod netlink;
pub mod object;
pub mod staged;
pub mod state;
