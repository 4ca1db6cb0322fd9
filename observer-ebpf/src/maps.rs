//! Every map and load-time global of the observer, in one place. Names match
//! `observer_common::names`; key and value types are in `observer_common::maps`.
//!
//! | map | type | key → value | written by | read by |
//! |---|---|---|---|---|
//! | `IP_ROLES` | hash | address → role bits | agent | uplink |
//! | `CIDR_ROLES` | LPM trie | prefix → role bits | agent | uplink (on an exact miss) |
//! | `NODEPORTS` | hash | port+protocol → 1 | agent | uplink (to a node address, out of the range) |
//! | `POD_FLOWS` | LRU hash | 5-tuple as the pod sent it → `PodFlow` | from-pod | uplink |
//! | `FLOWS` | LRU hash | 5-tuple as the outsider sent it → `FlowStats` | uplink, pod veths | agent |
//! | `FLAGGED` | array | 0 → 1 once any flagged flow exists (never reset) | uplink | pod veths |
//! | `VERDICT_STATS` | per-CPU array | verdict × protocol class → `VerdictStats` | uplink | agent |
//! | `HEALTH` | per-CPU array | `health::*` → u64 | all | agent |
//! | `EVENTS` | ring buffer | `FlowEvent` per new flagged flow | uplink | agent |
//! | `TRACE` | per-CPU array | 0 → `TraceRecord`, only with `TRACE_ENABLED` | uplink | tests |

use aya_ebpf::{
    macros::map,
    maps::{Array, HashMap, LpmTrie, LruHashMap, PerCpuArray, RingBuf, lpm_trie::Key},
};
use observer_common::{
    addr::IpKey,
    maps::{
        FlowKey, FlowStats, PodFlow, STATS_ENTRIES, TraceRecord, VerdictStats, health, nodeport_key,
    },
    verdict::Lookup,
};

/// Addresses of this node, local pods, every pod and node of the cluster, Service IPs.
#[map]
pub static IP_ROLES: HashMap<IpKey, u32> = HashMap::with_max_entries(262_144, 0);

/// Cluster, allowed-source and Service CIDRs.
#[map]
pub static CIDR_ROLES: LpmTrie<IpKey, u32> = LpmTrie::with_max_entries(16_384, 0);

/// NodePorts allocated by Services (key `nodeport_key(port, proto)`), beside the range.
#[map]
pub static NODEPORTS: HashMap<u32, u32> = HashMap::with_max_entries(65_536, 0);

/// Flows local pods opened; LRU so a busy pod cannot fill it for good.
#[map]
pub static POD_FLOWS: LruHashMap<FlowKey, PodFlow> = LruHashMap::with_max_entries(131_072, 0);

/// Flagged flows; LRU so a flood evicts old flows instead of failing.
#[map]
pub static FLOWS: LruHashMap<FlowKey, FlowStats> = LruHashMap::with_max_entries(65_536, 0);

#[map]
pub static VERDICT_STATS: PerCpuArray<VerdictStats> =
    PerCpuArray::with_max_entries(STATS_ENTRIES, 0);

/// Set to 1 by the uplink with the first flagged flow; until then the pod-veth programs have
/// no flagged flow to look up.
#[map]
pub static FLAGGED: Array<u32> = Array::with_max_entries(1, 0);

#[map]
pub static HEALTH: PerCpuArray<u64> = PerCpuArray::with_max_entries(health::COUNT, 0);

/// 256 KiB: 4,096 events of 64 bytes between two reads of the agent.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(256 * 1024, 0);

#[map]
pub static TRACE: PerCpuArray<TraceRecord> = PerCpuArray::with_max_entries(1, 0);

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
pub fn track_mask() -> u32 {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&TRACK_MASK) }
}

#[inline(always)]
pub fn trace_enabled() -> bool {
    // SAFETY: as above.
    unsafe { core::ptr::read_volatile(&TRACE_ENABLED) != 0 }
}

/// Whether any flagged flow was ever recorded (so `FLOWS` is worth a lookup).
#[inline(always)]
pub fn any_flagged() -> bool {
    FLAGGED.get(0).is_some_and(|v| *v != 0)
}

/// Records that a flagged flow exists.
#[inline(always)]
pub fn set_flagged() {
    if let Some(v) = FLAGGED.get_ptr_mut(0) {
        // SAFETY: a plain aligned store into an array value; the value only goes 0 -> 1.
        unsafe { *v = 1 };
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
        POD_FLOWS.get_ptr(key).is_some()
    }

    #[inline(always)]
    fn nodeport(&self, port: u16, proto: u8) -> bool {
        NODEPORTS.get_ptr(&nodeport_key(port, proto)).is_some()
    }
}
