//! DSR marks (`--dsr-marks`): a frame another node's load balancer forwarded with the
//! client's address kept, marked with the Service frontend the client addressed
//! (`observer_common::packet::dsr_mark`), is Service traffic when that frontend is one of this
//! cluster's (`observer_common::verdict::dsr_names_frontend`).
//!
//! Judged apart from the parse, in a global BPF function: the verifier checks it once, and at
//! the call knows nothing of its answer, so the answer's lookups do not part the uplink's states
//! (judged inline, they doubled the instructions the verifier walks, past its limit).

use aya_ebpf::programs::TcContext;
use observer_common::{packet::dsr_mark, verdict::dsr_names_frontend};

use crate::{maps::Maps, skb::Skb};

/// Non-zero when DSR marks are trusted and the frame carries one naming a frontend.
#[inline(always)]
pub fn judge(ctx: &TcContext, trusted: bool) -> u32 {
    let (high, low, port_proto, marked) = match dsr_mark(&Skb(ctx)) {
        Some(m) if trusted => {
            let word = |i: usize| {
                u64::from_ne_bytes([
                    m.addr[i],
                    m.addr[i + 1],
                    m.addr[i + 2],
                    m.addr[i + 3],
                    m.addr[i + 4],
                    m.addr[i + 5],
                    m.addr[i + 6],
                    m.addr[i + 7],
                ])
            };
            (
                word(0),
                word(8),
                u32::from(m.port) << 8 | u32::from(m.proto),
                1,
            )
        }
        _ => (0, 0, 0, 0),
    };
    observer_dsr_frontend(high, low, port_proto, marked)
}

/// Whether a mark (its address as two words, its port and protocol) names a frontend of this
/// cluster; 0 when `marked` is 0. Global: verified once, on its own.
#[unsafe(no_mangle)]
#[inline(never)]
pub extern "C" fn observer_dsr_frontend(high: u64, low: u64, port_proto: u32, marked: u32) -> u32 {
    if marked == 0 {
        return 0;
    }
    let mut addr = [0u8; 16];
    addr[..8].copy_from_slice(&high.to_ne_bytes());
    addr[8..].copy_from_slice(&low.to_ne_bytes());
    let m = observer_common::packet::DsrMark {
        addr,
        port: (port_proto >> 8) as u16,
        proto: port_proto as u8,
    };
    u32::from(dsr_names_frontend(&m, &Maps))
}
