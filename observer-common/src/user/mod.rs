//! Userspace side of the shared types: CIDRs and the inventory model that computes what the
//! address maps must hold, and answers [`crate::verdict::Lookup`] on the host.

mod cidr;
mod inventory;

pub use cidr::{Cidr, CidrError};
pub use inventory::Inventory;
