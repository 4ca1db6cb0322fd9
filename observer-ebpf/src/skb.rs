//! The kernel side of the parser's [`Bytes`]: direct packet access where the bytes are in the
//! skb's linear part (nearly free), `bpf_skb_load_bytes` otherwise (non-linear skbs).

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
        // Header offsets stay far below this; the bound lets the verifier prove the access.
        if off > 0x3fff {
            return false;
        }
        let data = self.0.data();
        let end = self.0.data_end();
        if data + off + N <= end {
            // SAFETY: [data + off, data + off + N) lies inside the packet's linear data, just
            // checked against data_end; `dst` holds N bytes.
            unsafe {
                core::ptr::copy_nonoverlapping((data + off) as *const u8, dst.as_mut_ptr(), N);
            }
            return true;
        }
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
