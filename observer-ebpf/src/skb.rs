//! The kernel side of the parser's [`Bytes`]: reads through `bpf_skb_load_bytes`, which works on
//! non-linear skbs and needs no bounds proofs for variable offsets.

use aya_ebpf::{helpers::bpf_skb_load_bytes, programs::TcContext};
use observer_common::packet::Bytes;

pub struct Skb<'a>(pub &'a TcContext);

impl Bytes for Skb<'_> {
    #[inline(always)]
    fn len(&self) -> usize {
        self.0.len() as usize
    }

    #[inline(always)]
    fn read_into<const N: usize>(&self, off: usize, dst: &mut [u8; N]) -> bool {
        // SAFETY: the helper writes at most N bytes into `dst`, which holds N.
        let ret = unsafe {
            bpf_skb_load_bytes(
                self.0.skb.skb.cast(),
                off as u32,
                dst.as_mut_ptr().cast(),
                N as u32,
            )
        };
        ret == 0
    }
}

/// The index of the device the packet is on.
#[inline(always)]
pub fn ifindex(ctx: &TcContext) -> u32 {
    // SAFETY: `skb` is the context pointer the kernel passed in; reading a field is allowed.
    unsafe { (*ctx.skb.skb).ifindex }
}
