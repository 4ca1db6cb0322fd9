//! The observer's TC programs. They only read and count: every program returns
//! `TC_ACT_UNSPEC` (TCX_NEXT), so the next program (Calico, aws-network-policy-agent) and the
//! stack see the packet unchanged. Internal failures are counted in `HEALTH`, never acted on.
#![no_std]
#![no_main]
#![feature(asm_experimental_arch)]
#![allow(
    clippy::needless_borrows_for_generic_args,
    reason = "map keys and values are passed by reference: no copies on the 512-byte BPF stack"
)]

mod atomic;
mod dsr;
mod maps;
mod pod;
mod skb;
mod staged;
mod uplink;

use aya_ebpf::{bindings::TC_ACT_UNSPEC, macros::classifier, programs::TcContext};

/// TC ingress of an uplink: judges each packet before netfilter/kube-proxy DNAT.
#[classifier]
pub fn observer_uplink(ctx: TcContext) -> i32 {
    uplink::observe(&ctx);
    TC_ACT_UNSPEC
}

/// TC egress of a pod's host-side veth: marks flagged flows delivered.
#[classifier]
pub fn observer_to_pod(ctx: TcContext) -> i32 {
    pod::to_pod(&ctx);
    TC_ACT_UNSPEC
}

/// TC ingress of a pod's host-side veth: the pod's answers and the flows it opens.
#[classifier]
pub fn observer_from_pod(ctx: TcContext) -> i32 {
    pod::from_pod(&ctx);
    TC_ACT_UNSPEC
}

/// TCX egress of an uplink, in `uplink-egress` mode only: a local pod's answers and the flows it
/// opens, read as they leave the node instead of on each pod's veth.
#[classifier]
pub fn observer_egress(ctx: TcContext) -> i32 {
    pod::leaving_node(&ctx);
    TC_ACT_UNSPEC
}

/// Second copies of the four programs (`names::PROGRAMS_ALT`): the agent attaches one at the
/// head of a TCX hook, then detaches the other, when another program was put in front of it.
#[classifier]
pub fn observer_uplink_alt(ctx: TcContext) -> i32 {
    uplink::observe(&ctx);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn observer_to_pod_alt(ctx: TcContext) -> i32 {
    pod::to_pod(&ctx);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn observer_from_pod_alt(ctx: TcContext) -> i32 {
    pod::from_pod(&ctx);
    TC_ACT_UNSPEC
}

#[classifier]
pub fn observer_egress_alt(ctx: TcContext) -> i32 {
    pod::leaving_node(&ctx);
    TC_ACT_UNSPEC
}

/// Does nothing: the floor the benchmark measures the others against, and a stand-in for
/// another agent's program in tests. Not attached by the agent.
#[classifier]
pub fn tc_noop(_ctx: TcContext) -> i32 {
    TC_ACT_UNSPEC
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
