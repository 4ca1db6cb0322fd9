//! BPF atomic instructions on u64 map values, for counters and bits several CPUs write at once.

/// `*p += v` as one BPF atomic add (XADD), so no CPU's packet is lost.
///
/// # Safety
/// `p` must point to an aligned u64 inside a map value.
#[inline(always)]
pub unsafe fn add(p: *mut u64, v: u64) {
    // SAFETY: the caller's pointer is valid; the instruction only adds to it.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({p} + 0) += {v}",
            p = in(reg) p,
            v = in(reg) v,
            options(nostack),
        );
    }
}

/// `*p |= v` as one BPF atomic or, so two CPUs setting different bits of one word both keep
/// theirs.
///
/// # Safety
/// `p` must point to an aligned u64 inside a map value.
#[inline(always)]
pub unsafe fn or(p: *mut u64, v: u64) {
    // SAFETY: the caller's pointer is valid; the instruction only sets bits in it.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({p} + 0) |= {v}",
            p = in(reg) p,
            v = in(reg) v,
            options(nostack),
        );
    }
}

/// `*p += v` as a fully ordered BPF atomic (fetch-add): every store before it is visible to a
/// reader that sees the new value, on every architecture's JIT. Publishes a ring's head.
///
/// # Safety
/// `p` must point to an aligned u64 inside a map value.
#[inline(always)]
pub unsafe fn publish_add(p: *mut u64, v: u64) {
    // SAFETY: the caller's pointer is valid; the instruction only adds to it.
    unsafe {
        core::arch::asm!(
            "{v} = atomic_fetch_add((u64 *)({p} + 0), {v})",
            p = in(reg) p,
            v = inout(reg) v => _,
            options(nostack),
        );
    }
}
