//! The staged path of a pure SYN: a record in this CPU's `STAGED` ring and its fingerprint in
//! this CPU's index, instead of a `FLOWS` insert and an `EVENTS` record (see
//! `observer_common::maps::staged`). The pod side marks a staged SYN by appending its answer.

use aya_ebpf::helpers::{bpf_get_smp_processor_id, bpf_jiffies64, bpf_ktime_get_coarse_ns};
use observer_common::maps::{
    FlowEvent, FlowKey,
    staged::{self, IndexEntry},
};

use crate::{
    atomic,
    maps::{STAGED, STAGED_INDEX, STAGED_POSITIONS, staged_slots},
};

/// Appends a record to this CPU's ring, written in place by `fill` with the record's stamp
/// (no copy on the 512-byte stack); None if the ring is full (the agent is behind) or the CPU
/// has no ring. Returns the record's position.
#[inline(always)]
fn append(cpu: u32, fill: impl FnOnce(&mut FlowEvent, u64)) -> Option<u64> {
    let pos = STAGED_POSITIONS.get_ptr_mut(cpu)?;
    let slots = staged_slots();
    // SAFETY: this CPU's positions; only this CPU writes `head` and `tail_seen` (softirq, no
    // preemption), and `tail` is the agent's aligned u64, read only when the ring looks full.
    let head = unsafe {
        let head = (*pos).head;
        if staged::full(head, (*pos).tail_seen, slots) {
            let tail = core::ptr::read_volatile(&(*pos).tail);
            (*pos).tail_seen = tail;
            if staged::full(head, tail, slots) {
                return None;
            }
        }
        head
    };
    let slot = STAGED.get_ptr_mut(staged::slot(cpu, head, slots))?;
    // The coarse clock, read once per tick per CPU (the helper cost about 30 ns a SYN; the
    // jiffies helper is inlined by the verifier into a load).
    // SAFETY: helpers without preconditions; this CPU's positions, as above.
    let ts_ns = unsafe { staged::stamp(&mut *pos, bpf_jiffies64(), || bpf_ktime_get_coarse_ns()) };
    // SAFETY: a slot the agent has read (or never had), so only this CPU touches it until the
    // head below publishes it; then the record, then the head, fully ordered.
    unsafe {
        fill(&mut *slot, ts_ns);
        atomic::publish_add(&raw mut (*pos).head, 1);
    }
    Some(head)
}

/// Stages a pure SYN with this key: `fill` writes what the uplink saw into the record in
/// place; the stamp and the kind are set here. False if this CPU's ring is full (the caller
/// then takes the `FLOWS` path).
#[inline(always)]
pub fn syn(key: &FlowKey, fill: impl FnOnce(&mut FlowEvent)) -> bool {
    // SAFETY: helpers without preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let position = append(cpu, |r, ts_ns| {
        fill(r);
        r.ts_ns = ts_ns;
        r.kind = staged::SYN;
    });
    let Some(position) = position else {
        return false;
    };
    let fingerprint = staged::fingerprint(key);
    if let Some(set) = STAGED_INDEX.get_ptr_mut(staged::index_slot(fingerprint)) {
        // SAFETY: a per-CPU slot.
        unsafe {
            let way = (*set).victim();
            *(*set).entry(way) = IndexEntry {
                fingerprint,
                position,
            };
        }
    }
    true
}

/// This CPU's index entry for a SYN it staged with this key, checked against the record (a
/// fingerprint collision finds nothing).
#[inline(always)]
fn staged_here(key: &FlowKey, cpu: u32) -> Option<*mut IndexEntry> {
    let fingerprint = staged::fingerprint(key);
    let set = STAGED_INDEX.get_ptr_mut(staged::index_slot(fingerprint))?;
    // SAFETY: a per-CPU slot.
    let entry = unsafe {
        let way = (*set).find(fingerprint)?;
        (*set).entry(way) as *mut IndexEntry
    };
    // SAFETY: as above.
    let position = unsafe { (*entry).position } & !staged::MARKED;
    match STAGED.get(staged::slot(cpu, position, staged_slots())) {
        Some(r) if r.kind == staged::SYN && same_key(&r.key, key) => Some(entry),
        _ => None,
    }
}

/// Whether this CPU staged the SYN of this flow (its next packet, the outsider's ACK, then
/// continues it instead of starting a new flow).
#[inline(always)]
pub fn continues(key: &FlowKey) -> bool {
    // SAFETY: a helper without preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    staged_here(key, cpu).is_some()
}

/// Marks the staged SYN with this key, if this CPU staged it: appends the pod's answer after
/// it. None if the flow is not staged here; Some(false) if it was marked already (one mark per
/// SYN: a retransmitted SYN-ACK marks nothing more), or the ring is full (the mark is lost, not
/// misfiled).
#[inline(always)]
pub fn mark(key: &FlowKey, refused: bool, pod_ifindex: u32) -> Option<bool> {
    // SAFETY: helpers without preconditions.
    let cpu = unsafe { bpf_get_smp_processor_id() };
    let entry = staged_here(key, cpu)?;
    // SAFETY: a per-CPU slot.
    unsafe {
        if (*entry).position & staged::MARKED != 0 {
            return Some(false);
        }
        (*entry).position |= staged::MARKED;
    }
    let appended = append(cpu, |r, ts_ns| {
        *r = FlowEvent {
            key: *key,
            ts_ns,
            ifindex: pod_ifindex,
            kind: if refused {
                staged::REFUSED
            } else {
                staged::ANSWERED
            },
            ..FlowEvent::default()
        };
    });
    Some(appended.is_some())
}

/// Two flow keys compared as five 8-byte words (a byte-array comparison is a loop in BPF).
#[inline(always)]
fn same_key(a: &FlowKey, b: &FlowKey) -> bool {
    let w = |k: &FlowKey, i: usize| {
        // SAFETY: `FlowKey` is 40 bytes, 8-aligned, and `i` is at most 32.
        unsafe { core::ptr::read((k as *const FlowKey).cast::<u8>().add(i).cast::<u64>()) }
    };
    w(a, 0) == w(b, 0)
        && w(a, 8) == w(b, 8)
        && w(a, 16) == w(b, 16)
        && w(a, 24) == w(b, 24)
        && w(a, 32) == w(b, 32)
}
