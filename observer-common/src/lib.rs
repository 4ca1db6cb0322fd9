//! Shared between the observer's eBPF programs (`no_std`, kernel side) and its agent (`user`
//! feature): the `#[repr(C)]` map types, the map and program names, the packet parser and the one
//! function that decides a packet's verdict.
//!
//! Everything outside [`user`] and [`testing`] is `no_std`, allocation-free and small enough to be
//! inlined into an eBPF program, so the kernel and the host unit tests run the same code.
#![no_std]

#[cfg(feature = "std")]
#[macro_use]
extern crate std;

pub mod addr;
pub mod maps;
pub mod names;
pub mod packet;
pub mod pod;
pub mod verdict;

#[cfg(feature = "testing")]
pub mod testing;
#[cfg(feature = "user")]
pub mod user;
