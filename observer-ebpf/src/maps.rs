//! Every map and load-time global of the observer, in one place. Names match
//! `observer_common::names`; key and value types are in `observer_common::maps`.
//!
//! | map | type | key → value | written by | read by |
//! |---|---|---|---|---|
//! | `IP_ROLES` | hash | address → role bits | agent | uplink |
//! | `CIDR_ROLES` | LPM trie | prefix → role bits | agent | uplink (on an exact miss) |
//! | `NODEPORTS` | array | bitmap word of (protocol, port) → u64 | agent | uplink (to a node address, out of the range) |
//! | `ROLE_CACHE` | per-CPU array | slot of an address → `RoleCacheEntry` | uplink | uplink |
//! | `ROLES_GENERATION` | array | 0 → u64 bumped after each role change | agent | uplink |
//! | `POD_FLOWS` | LRU hash | 5-tuple as the pod sent it → `PodFlow` | from-pod, uplink egress | uplink |
//! | `POD_PORTS` | array | bitmap word of (protocol, pod-side port) → u64, set before a `POD_FLOWS` entry with that port, never cleared | from-pod, uplink egress | uplink (before `POD_FLOWS`) |
//! | `FLOWS` | LRU hash | 5-tuple as the outsider sent it → `FlowStats` | uplink, pod veths, uplink egress | agent |
//! | `FLAGGED` | array | 0 → 1 once any flagged flow exists (never reset) | uplink | pod veths, uplink egress |
//! | `FLAGGED_PORTS` | array | bitmap word of (protocol, pod-side port) → u64, set before a `FLOWS` entry with that port, never cleared | uplink | pod veths, uplink egress (before `FLOWS`) |
//! | `CLOCK` | array | 0 → CLOCK_MONOTONIC_COARSE ns at the agent's last flow refresh | agent | uplink (last seen of known flows) |
//! | `VERDICT_STATS` | per-CPU array | verdict × protocol class → `VerdictStats` | uplink | agent |
//! | `HEALTH` | per-CPU array | `health::*` → u64 | all | agent |
//! | `EVENTS` | ring buffer | `FlowEvent` per new flagged flow, submitted without a wakeup (the agent polls) | uplink | agent |
//! | `POD_LOST` | hash | pod address → u64 flagged flows to it whose event (or table entry) was lost | uplink (only then) | agent |
//! | `FRAGS` | LRU hash | `FragKey` of a fragmented datagram → verdict of its first fragment (reply or direct only) | uplink | uplink (non-first fragments) |
//! | `DSR_FLOWS` | LRU hash | 5-tuple as the client sent it → first-seen ns, of a connection whose first packet carried a recognised DSR mark | uplink | uplink (its later packets) |
//! | `POD_UNJUDGED` | hash | pod address → `PodUnjudged` packets from outside to it whose flow could not be read (tiny fragments, header chains, unmatched fragments) | uplink (only then) | agent |
//! | `TRACE` | per-CPU array | 0 → `TraceRecord`, only with `TRACE_ENABLED` | uplink | tests |
//! | `STAGED` | array, mmapped, a ring per CPU | slot → `FlowEvent`: a pure SYN of a flagged flow (not in `FLOWS`), or the pod's answer to one | uplink (SYN), pod veths, uplink egress (marks) | agent (every 20 ms) |
//! | `STAGED_POSITIONS` | array, mmapped | CPU → head (kernel), tail (agent) | uplink, pod side; agent | both |
//! | `STAGED_INDEX` | per-CPU array | fingerprint slot → fingerprint, ring position of a staged SYN | uplink | pod veths, uplink egress |
//!
//! `POD_FLOWS`, `POD_PORTS` and `DSR_FLOWS` outlive the agent: it pins them in bpffs and adopts them at its
//! next start (`observer/src/kernel/state.rs`), so the flows pods opened before a restart stay
//! known where no netfilter conntrack could tell them again. Change their key or value and
//! bump `observer_common::maps::KEPT_STATE_VERSION`.

use aya_ebpf::{
    bindings::BPF_F_MMAPABLE,
    helpers::bpf_ktime_get_coarse_ns,
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
};
use observer_common::{
    addr::IpKey,
    maps::{
        DSR_FLOWS_ENTRIES, FlowEvent, FlowKey, FlowStats, FragKey, POD_FLOWS_ENTRIES,
        PORT_BITMAP_WORDS, PodFlow, PodUnjudged, ROLE_CACHE_SLOTS, RoleCacheEntry, STATS_ENTRIES,
        TraceRecord, VerdictStats, events, health, port_bit, role_cache_slot, staged,
    },
    verdict::{Lookup, uncached_roles},
};

/// Addresses of this node, local pods, every pod and node of the cluster, Service IPs.
#[map]
pub static IP_ROLES: HashMap<IpKey, u32> = HashMap::with_max_entries(262_144, 0);

/// Cluster, allowed-source and Service CIDRs.
#[map]
pub static CIDR_ROLES: LpmTrie<IpKey, u32> = LpmTrie::with_max_entries(16_384, 0);

/// NodePorts allocated by Services, beside the range: one bit per (protocol, port).
#[map]
pub static NODEPORTS: Array<u64> = Array::with_max_entries(PORT_BITMAP_WORDS, 0);

/// Roles of recently seen addresses, per CPU, valid while `ROLES_GENERATION` is unchanged: the
/// bulk of traffic is answered without hashing into `IP_ROLES` or walking `CIDR_ROLES`.
#[map]
pub static ROLE_CACHE: PerCpuArray<RoleCacheEntry> =
    PerCpuArray::with_max_entries(ROLE_CACHE_SLOTS, 0);

/// Bumped by the agent after every change to `IP_ROLES` or `CIDR_ROLES`; 0 until the first.
#[map]
pub static ROLES_GENERATION: Array<u64> = Array::with_max_entries(1, 0);

/// Flows local pods opened; LRU so a busy pod cannot fill it for good.
#[map]
pub static POD_FLOWS: LruHashMap<FlowKey, PodFlow> =
    LruHashMap::with_max_entries(POD_FLOWS_ENTRIES, 0);

/// Pod-side ports (TCP, UDP, SCTP) local pods opened a flow from: a clear bit proves
/// `POD_FLOWS` holds no flow with that port, so a packet to a pod's listening port skips the
/// hash lookup. Bits are never cleared; ports of evicted flows only cost a lookup.
#[map]
pub static POD_PORTS: Array<u64> = Array::with_max_entries(PORT_BITMAP_WORDS, 0);

/// Flagged flows; LRU so a flood evicts old flows instead of failing.
#[map]
pub static FLOWS: LruHashMap<FlowKey, FlowStats> = LruHashMap::with_max_entries(65_536, 0);

/// The agent's clock, written at each flow refresh (every second): a known flow's packets take
/// their last-seen stamp from it instead of calling a clock helper (about 16 ns) per packet.
#[map]
pub static CLOCK: Array<u64> = Array::with_max_entries(1, 0);

#[map]
pub static VERDICT_STATS: PerCpuArray<VerdictStats> =
    PerCpuArray::with_max_entries(STATS_ENTRIES, 0);

/// Set to 1 by the uplink with the first flagged flow; until then the pod-veth programs have
/// no flagged flow to look up.
#[map]
pub static FLAGGED: Array<u32> = Array::with_max_entries(1, 0);

/// Pod-side ports (TCP, UDP, SCTP) of flagged flows: a clear bit proves `FLOWS` holds no flow
/// to that port, so the pod-veth programs skip the hash lookup for traffic of other ports.
#[map]
pub static FLAGGED_PORTS: Array<u64> = Array::with_max_entries(PORT_BITMAP_WORDS, 0);

#[map]
pub static HEALTH: PerCpuArray<u64> = PerCpuArray::with_max_entries(health::COUNT, 0);

/// 1 MiB: about 14,500 events (64 bytes and an 8-byte header each) between two reads of the
/// agent, about 30 ms of a 500k/s flood while the agent is not scheduled. Submitted without a
/// wakeup except at the mark ([`observer_common::maps::events`]): the agent polls.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(events::RING_BYTES, 0);

/// Per local pod address, the new flagged flows to it whose event could not be queued or whose
/// `FLOWS` insert failed: a flood past the ring buffer cannot hide which pods were reached.
/// Keys are destinations of flagged flows, so local pod addresses only.
#[map]
pub static POD_LOST: HashMap<IpKey, u64> = HashMap::with_max_entries(16_384, 0);

/// Fragmented datagrams from outside to a local pod whose first fragment was judged a reply or a
/// direct access: their other fragments inherit that judgement instead of counting as unjudged.
#[map]
pub static FRAGS: LruHashMap<FragKey, u32> = LruHashMap::with_max_entries(8_192, 0);

/// Connections another node's load balancer forwarded in DSR mode, recognised by the mark on
/// their first packet (only with `DSR_MARKS`): their later packets carry no mark.
#[map]
pub static DSR_FLOWS: LruHashMap<FlowKey, u64> = LruHashMap::with_max_entries(DSR_FLOWS_ENTRIES, 0);

/// Per local pod address, packets from outside the cluster whose flow the parser could not read
/// ([`observer_common::verdict::unjudged`]): a connection hidden in tiny fragments or behind a
/// long header chain is still counted against the pod it reached.
#[map]
pub static POD_UNJUDGED: HashMap<IpKey, PodUnjudged> = HashMap::with_max_entries(16_384, 0);

#[map]
pub static TRACE: PerCpuArray<TraceRecord> = PerCpuArray::with_max_entries(1, 0);

/// Staged pure SYNs and the pod's marks on them: `STAGED_SLOTS` 64-byte records per CPU, CPU
/// after CPU. The agent sets the size at load (possible CPUs × `STAGED_SLOTS`) and maps it.
#[map]
pub static STAGED: Array<FlowEvent> = Array::with_max_entries(staged::MIN_SLOTS, BPF_F_MMAPABLE);

/// Each CPU's ring head (written here) and tail (written by the agent); sized and mapped as
/// `STAGED`.
#[map]
pub static STAGED_POSITIONS: Array<staged::Positions> = Array::with_max_entries(1, BPF_F_MMAPABLE);

/// Per CPU, the ring positions of recent staged SYNs by fingerprint, for the pod side: sets of
/// four entries, the oldest replaced.
#[map]
pub static STAGED_INDEX: PerCpuArray<staged::IndexSet> =
    PerCpuArray::with_max_entries(staged::INDEX_SLOTS, 0);

// Load-time globals (read-only data, set by the agent before loading).
#[unsafe(no_mangle)]
static NODEPORT_MIN: u16 = 30000;
#[unsafe(no_mangle)]
static NODEPORT_MAX: u16 = 32767;
/// Verdicts whose flows go into `FLOWS` (default: direct to pod).
#[unsafe(no_mangle)]
static TRACK_MASK: u32 = 1 << 9;
#[unsafe(no_mangle)]
static TRACE_ENABLED: u8 = 0;
#[unsafe(no_mangle)]
static ROLE_CACHE_ENABLED: u8 = 1;
/// Non-zero: trust Cilium's DSR marks that name a Service of the cluster.
#[unsafe(no_mangle)]
static DSR_MARKS: u8 = 0;
/// Records per CPU in `STAGED` (a power of two, `staged::slots_for`).
#[unsafe(no_mangle)]
static STAGED_SLOTS: u32 = staged::MIN_SLOTS;

#[inline(always)]
pub fn staged_slots() -> u32 {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&STAGED_SLOTS) }
}

#[inline(always)]
pub fn nodeport_range() -> (u16, u16) {
    // SAFETY: reading an immutable global; volatile so the loader's value is used, not the default.
    unsafe {
        (
            core::ptr::read_volatile(&NODEPORT_MIN),
            core::ptr::read_volatile(&NODEPORT_MAX),
        )
    }
}

#[inline(always)]
pub fn dsr_marks() -> bool {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&DSR_MARKS) != 0 }
}

#[inline(always)]
pub fn track_mask() -> u32 {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&TRACK_MASK) }
}

#[inline(always)]
pub fn trace_enabled() -> bool {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&TRACE_ENABLED) != 0 }
}

#[inline(always)]
fn role_cache_enabled() -> bool {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&ROLE_CACHE_ENABLED) != 0 }
}

/// Whether two addresses are equal, compared as two 8-byte words (a `[u8; 16]` comparison
/// would become a byte loop in BPF).
#[inline(always)]
fn same_addr(a: &IpKey, b: &IpKey) -> bool {
    let w = |k: &IpKey, i: usize| {
        u64::from_ne_bytes([
            k[i],
            k[i + 1],
            k[i + 2],
            k[i + 3],
            k[i + 4],
            k[i + 5],
            k[i + 6],
            k[i + 7],
        ])
    };
    w(a, 0) == w(b, 0) && w(a, 8) == w(b, 8)
}

/// Now, for the last-seen stamp of a known flow: the agent's clock (at most a refresh interval
/// old), or the kernel's until the agent first wrote it.
#[inline(always)]
pub fn last_seen_clock() -> u64 {
    match CLOCK.get(0) {
        Some(&t) if t != 0 => t,
        // SAFETY: a helper without preconditions.
        _ => unsafe { bpf_ktime_get_coarse_ns() },
    }
}

/// Counts a new flagged flow to `pod` that the agent will not hear of.
#[inline(always)]
pub fn pod_lost(pod: &IpKey) {
    if let Some(v) = POD_LOST.get_ptr_mut(pod) {
        // SAFETY: an aligned u64 map value.
        unsafe { crate::atomic::add(v, 1) };
        return;
    }
    if POD_LOST
        .insert(pod, &1, u64::from(aya_ebpf::bindings::BPF_NOEXIST))
        .is_err()
        && let Some(v) = POD_LOST.get_ptr_mut(pod)
    {
        // Another CPU inserted it first.
        // SAFETY: as above.
        unsafe { crate::atomic::add(v, 1) };
    }
}

/// Counts an unjudged packet of `kind` to `pod`.
#[inline(always)]
pub fn pod_unjudged(pod: &IpKey, kind: usize) {
    for _ in 0..2 {
        if let Some(v) = POD_UNJUDGED.get_ptr_mut(pod) {
            // SAFETY: aligned u64s inside a map value.
            unsafe {
                let c = match kind {
                    observer_common::verdict::unjudged::HEADER => &raw mut (*v).counts[0],
                    _ => &raw mut (*v).counts[1],
                };
                crate::atomic::add(c, 1);
            }
            return;
        }
        // Absent: insert zeroes (another CPU may win the race), then add.
        let _ = POD_UNJUDGED.insert(
            pod,
            &PodUnjudged::default(),
            u64::from(aya_ebpf::bindings::BPF_NOEXIST),
        );
    }
}

/// Whether any flagged flow was ever recorded (so `FLOWS` is worth a lookup).
#[inline(always)]
pub fn any_flagged() -> bool {
    FLAGGED.get(0).is_some_and(|v| *v != 0)
}

/// Sets a port's bit in a port bitmap (`POD_PORTS`, `FLAGGED_PORTS`). Called before the map
/// entry the bitmap stands for goes in, so a clear bit always means no entry.
#[inline(always)]
pub fn mark_port(bitmap: &Array<u64>, port: u16, proto: u8) {
    if let Some((word, bit)) = port_bit(port, proto)
        && let Some(w) = bitmap.get_ptr_mut(word)
    {
        // SAFETY: an aligned u64 in an array value; the bit is only ever set, atomically, and
        // only when clear, so a busy port does not bounce the cache line between CPUs.
        unsafe {
            if *w & bit == 0 {
                crate::atomic::or(w, bit);
            }
        }
    }
}

/// Whether a port may have an entry behind a port bitmap: its bit is set, or its protocol has
/// no bits (ICMP, others). False proves there is none (a lookup racing the insert could miss it
/// either way).
#[inline(always)]
pub fn port_may_have_entry(bitmap: &Array<u64>, port: u16, proto: u8) -> bool {
    match port_bit(port, proto) {
        Some((word, bit)) => bitmap.get(word).is_none_or(|w| *w & bit != 0),
        None => true,
    }
}

/// Records that a flagged flow exists.
#[inline(always)]
pub fn set_flagged() {
    if let Some(v) = FLAGGED.get_ptr_mut(0) {
        // SAFETY: a plain aligned store into an array value; the value only goes 0 -> 1, and
        // only when 0, so a flood does not bounce the cache line between CPUs.
        unsafe {
            if *v == 0 {
                *v = 1;
            }
        }
    }
}

/// Adds one to a health counter of this CPU.
#[inline(always)]
pub fn health(index: u32) {
    if let Some(c) = HEALTH.get_ptr_mut(index) {
        // SAFETY: a per-CPU slot, so no other program writes it concurrently.
        unsafe { *c += 1 };
    }
}

/// The verdict's view of the maps.
pub struct Maps;

impl Lookup for Maps {
    #[inline(always)]
    fn exact_roles(&self, addr: &IpKey) -> Option<u32> {
        // SAFETY: the pointer comes from a successful lookup; u32 loads are atomic.
        IP_ROLES.get_ptr(addr).map(|r| unsafe { *r })
    }

    #[inline(always)]
    fn cidr_roles(&self, addr: &IpKey) -> u32 {
        CIDR_ROLES.get(Key::new(128, *addr)).copied().unwrap_or(0)
    }

    #[inline(always)]
    fn pod_flow(&self, key: &FlowKey) -> bool {
        // The key is as the pod sent it: `sport` is the pod's port.
        port_may_have_entry(&POD_PORTS, key.sport, key.proto) && POD_FLOWS.get_ptr(key).is_some()
    }

    #[inline(always)]
    fn served_flow(&self, key: &FlowKey) -> bool {
        // The key is as the outsider sent it: `dport` is the pod's port.
        port_may_have_entry(&FLAGGED_PORTS, key.dport, key.proto) && FLOWS.get_ptr(key).is_some()
    }

    #[inline(always)]
    fn nodeport(&self, port: u16, proto: u8) -> bool {
        let Some((word, bit)) = port_bit(port, proto) else {
            return false;
        };
        NODEPORTS.get(word).is_some_and(|w| *w & bit != 0)
    }

    #[inline(always)]
    fn fragment_judged(&self, key: &FragKey) -> bool {
        FRAGS.get_ptr(key).is_some()
    }

    #[inline(always)]
    fn dsr_flow(&self, key: &FlowKey) -> bool {
        DSR_FLOWS.get_ptr(key).is_some()
    }

    #[inline(always)]
    fn roles(&self, addr: &IpKey) -> u32 {
        let generation = if role_cache_enabled() {
            ROLES_GENERATION.get(0).copied().unwrap_or(0)
        } else {
            0
        };
        let slot = match ROLE_CACHE.get_ptr_mut(role_cache_slot(addr)) {
            Some(e) if generation != 0 => e,
            _ => return uncached_roles(self, addr),
        };
        // SAFETY: a per-CPU slot, so no other program reads or writes it concurrently.
        unsafe {
            if (*slot).generation == generation && same_addr(&(*slot).addr, addr) {
                return (*slot).roles;
            }
            // The generation was read before the lookups: a change the agent makes meanwhile
            // bumps it afterwards, so this entry cannot outlive the change.
            let roles = uncached_roles(self, addr);
            (*slot).addr = *addr;
            (*slot).generation = generation;
            (*slot).roles = roles;
            roles
        }
    }
}
