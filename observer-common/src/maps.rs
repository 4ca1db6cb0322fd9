//! Keys and values of the maps shared by the eBPF programs and the agent.
//!
//! All are `#[repr(C)]` with explicit padding and only integer or byte-array fields (no `bool`,
//! no enums), so every bit pattern is a valid value on both sides. The maps themselves are
//! declared in `observer-ebpf/src/maps.rs`; their names are in [`crate::names`].

use crate::{
    addr::IpKey,
    packet::{IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP},
};

/// Roles of an address, as bits of the `IP_ROLES` and `CIDR_ROLES` values.
pub mod role {
    /// A pod on this node (destination role).
    pub const LOCAL_POD: u32 = 1 << 0;
    /// An address of this node (destination role).
    pub const NODE: u32 = 1 << 1;
    /// Inside the cluster: any node's address, any pod's address, a cluster CIDR (source role).
    pub const CLUSTER: u32 = 1 << 2;
    /// A source allowed to reach pod IPs directly, e.g. a load balancer subnet (source role).
    pub const ALLOWED: u32 = 1 << 3;
    /// A Service ClusterIP / external IP, or the Service CIDR (destination role).
    pub const SERVICE: u32 = 1 << 4;
    /// An address of another node of the cluster, as the Kubernetes inventory knows it (its
    /// Node object): what a DSR mark may name with a NodePort.
    pub const OTHER_NODE: u32 = 1 << 5;
}

/// A flow's 5-tuple as the packet's sender sent it. Ports in host order. Aligned to 8 so BPF
/// copies and compares it in 8-byte words.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    pub src: IpKey,
    pub dst: IpKey,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
    pub _pad: [u8; 3],
}

impl FlowKey {
    #[inline(always)]
    pub const fn new(src: IpKey, dst: IpKey, sport: u16, dport: u16, proto: u8) -> Self {
        FlowKey {
            src,
            dst,
            sport,
            dport,
            proto,
            _pad: [0; 3],
        }
    }

    /// The same flow seen from the other end.
    #[inline(always)]
    pub const fn reversed(&self) -> Self {
        FlowKey::new(self.dst, self.src, self.dport, self.sport, self.proto)
    }
}

/// Words of a port bitmap (`NODEPORTS`, `POD_PORTS`), one bit per (protocol, port): 1,024 `u64`
/// words (65,536 ports) for each of TCP, UDP and SCTP. Arrays, so the uplink's lookups are
/// inlined by the verifier instead of hashing.
pub const PORT_BITMAP_WORDS: u32 = 3 * 1024;

/// The word index in a port bitmap and the bit of a port; `None` for a protocol without ports
/// there (ICMP, others).
#[inline(always)]
pub const fn port_bit(port: u16, proto: u8) -> Option<(u32, u64)> {
    let slot = match proto {
        IPPROTO_TCP => 0,
        IPPROTO_UDP => 1,
        IPPROTO_SCTP => 2,
        _ => return None,
    };
    Some((slot * 1024 + (port as u32 >> 6), 1u64 << (port & 63)))
}

/// Slots of `ROLE_CACHE`, per CPU.
pub const ROLE_CACHE_SLOTS: u32 = 1024;

/// Value of `ROLE_CACHE` (per CPU, direct-mapped by [`role_cache_slot`]): an address's roles as
/// `IP_ROLES`/`CIDR_ROLES` answered them while `ROLES_GENERATION` was `generation`. The agent
/// bumps the generation after every change to those maps, so an entry filled before a change
/// is never used after it. Generation 0 means "no cache yet".
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoleCacheEntry {
    pub addr: IpKey,
    pub generation: u64,
    pub roles: u32,
    pub _pad: u32,
}

/// The `ROLE_CACHE` slot of an address: a multiplicative hash of its last four bytes (the whole
/// IPv4 address, or the interface-id end of an IPv6 one).
#[inline(always)]
pub const fn role_cache_slot(addr: &IpKey) -> u32 {
    let w = u32::from_ne_bytes([addr[12], addr[13], addr[14], addr[15]]);
    w.wrapping_mul(0x9e37_79b1) >> (32 - ROLE_CACHE_SLOTS.trailing_zeros())
}

/// `FlowStats::origin` and `FlowEvent::origin`: how the flow began as far as the observer saw.
pub mod origin {
    /// The observer saw the flow open (TCP SYN, SCTP INIT, ICMP echo request).
    pub const START: u8 = 1;
    /// The first packet seen was mid-stream (TCP without SYN): the origin is unknown.
    pub const MID_STREAM: u8 = 2;
    /// A protocol without a handshake (UDP, other ICMP, other protocols).
    pub const DATAGRAM: u8 = 3;
}

/// Value of `FLOWS`: one flagged flow, keyed by its [`FlowKey`] at the uplink.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowStats {
    /// Packets and bytes seen at the uplink (atomic adds).
    pub packets: u64,
    pub bytes: u64,
    /// `bpf_ktime_get_coarse_ns()` of the first and the last packet at the uplink.
    pub first_seen_ns: u64,
    pub last_seen_ns: u64,
    /// The uplink the flow entered on.
    pub ifindex: u32,
    /// The pod veth it was delivered through (0 until delivered).
    pub pod_ifindex: u32,
    /// OR of the TCP flags seen at the uplink. A plain read-modify-write: a flag can be lost
    /// only if two CPUs update one flow at once, which RSS makes rare.
    pub tcp_flags: u8,
    /// 1 once a packet of the flow went out of a pod veth towards the pod. Each state is its
    /// own byte, so the pod-side programs set it with one store and never race.
    pub delivered: u8,
    /// 1 once the pod answered (SYN-ACK, data, UDP reply, echo reply).
    pub answered: u8,
    /// 1 once the pod refused (TCP RST, ICMP unreachable).
    pub refused: u8,
    /// The [`crate::verdict::Verdict`] and [`crate::verdict::Reason`] of the first packet.
    pub verdict: u8,
    pub reason: u8,
    /// One of [`origin`].
    pub origin: u8,
    pub _pad: u8,
}

/// Capacity of `POD_FLOWS` (LRU).
pub const POD_FLOWS_ENTRIES: u32 = 131_072;

/// Capacity of `DSR_FLOWS` (LRU): connections recognised by a DSR mark on their first packet.
pub const DSR_FLOWS_ENTRIES: u32 = 65_536;

/// The version of what the agent keeps across its restarts (`POD_FLOWS` and `POD_PORTS`,
/// pinned in bpffs under `v<KEPT_STATE_VERSION>`). Bump it whenever their keys or values change
/// meaning, even at the same size: a new agent then drops the old maps (counted) instead of
/// reading them with the new meaning.
pub const KEPT_STATE_VERSION: u32 = 1;

/// Value of `POD_FLOWS`: a flow a local pod opened, keyed by its [`FlowKey`] as the pod sent it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodFlow {
    pub first_seen_ns: u64,
    /// The pod veth it left through.
    pub ifindex: u32,
    pub _pad: u32,
}

/// Value of `VERDICT_STATS` (per CPU), indexed by [`stats_index`].
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerdictStats {
    pub packets: u64,
    pub bytes: u64,
    /// Packets that open a flow (TCP SYN, SCTP INIT, ICMP echo request).
    pub flow_starts: u64,
}

/// Protocol classes of `VERDICT_STATS`.
pub mod proto_class {
    pub const TCP: u32 = 0;
    pub const UDP: u32 = 1;
    pub const ICMP: u32 = 2;
    pub const SCTP: u32 = 3;
    pub const OTHER: u32 = 4;
    pub const COUNT: u32 = 5;
    pub const NAMES: [&str; COUNT as usize] = ["tcp", "udp", "icmp", "sctp", "other"];
}

/// The protocol class of an IP protocol number.
#[inline(always)]
pub const fn proto_class_of(proto: u8) -> u32 {
    match proto {
        6 => proto_class::TCP,
        17 => proto_class::UDP,
        1 | 58 => proto_class::ICMP,
        132 => proto_class::SCTP,
        _ => proto_class::OTHER,
    }
}

/// Index into `VERDICT_STATS` of a verdict and protocol class.
#[inline(always)]
pub const fn stats_index(verdict: u8, class: u32) -> u32 {
    verdict as u32 * proto_class::COUNT + class
}

/// Entries of `VERDICT_STATS`.
pub const STATS_ENTRIES: u32 = crate::verdict::VERDICT_COUNT as u32 * proto_class::COUNT;

/// Indices of `HEALTH` (per-CPU `u64` counters).
pub mod health {
    /// A new flagged flow's event could not be reserved in the ring buffer.
    pub const EVENTS_LOST: u32 = 0;
    /// A flagged flow could not be inserted into `FLOWS`.
    pub const FLOW_INSERT_FAILED: u32 = 1;
    /// A pod-opened flow could not be inserted into `POD_FLOWS`.
    pub const POD_FLOW_INSERT_FAILED: u32 = 2;
    /// A `VERDICT_STATS` slot was missing (cannot happen with a consistent object).
    pub const STATS_MISSING: u32 = 3;
    /// Packets seen going to pods, and coming from pods.
    pub const TO_POD_PACKETS: u32 = 4;
    pub const FROM_POD_PACKETS: u32 = 5;
    /// Flagged flows marked delivered / answered or refused by the pod side.
    pub const DELIVERED_MARKS: u32 = 6;
    pub const ANSWER_MARKS: u32 = 7;
    /// Pod-opened flows recorded.
    pub const POD_FLOWS_OPENED: u32 = 8;
    /// Packets seen leaving the node on an uplink (`--attach-mode uplink-egress` only).
    pub const UPLINK_EGRESS_PACKETS: u32 = 9;
    pub const COUNT: u32 = 10;
    pub const NAMES: [&str; COUNT as usize] = [
        "events_lost",
        "flow_insert_failed",
        "pod_flow_insert_failed",
        "stats_missing",
        "to_pod_packets",
        "from_pod_packets",
        "delivered_marks",
        "answer_marks",
        "pod_flows_opened",
        "uplink_egress_packets",
    ];
}

/// The `EVENTS` ring buffer: its size, and when a submit wakes the agent.
///
/// A wakeup is an irq_work (a self-interrupt) in the submitting CPU's softirq; in a VM it
/// exits to the hypervisor and costs about 6 µs, ten times the rest of a new flow's work. So
/// records are submitted without one, and the agent polls the ring every
/// `EVENTS_POLL` (its defaults); only the record that fills the ring past [`WAKE_AT_BYTES`]
/// wakes it, so a flood is read before the ring is full even if a poll is late.
pub mod events {
    /// 1 MiB: about 14,500 records between two reads of the agent.
    pub const RING_BYTES: u32 = 1024 * 1024;
    /// One record in the ring: a [`super::FlowEvent`] and the ring's 8-byte header.
    pub const RECORD_BYTES: u64 = (core::mem::size_of::<super::FlowEvent>() + 8) as u64;
    /// An eighth of the ring: about 1,800 records, 3.6 ms of a 500k/s flood.
    pub const WAKE_AT_BYTES: u64 = RING_BYTES as u64 / 8;

    /// Whether the record just reserved, with `avail` bytes now unread in the ring (its own
    /// included), is the one that crosses [`WAKE_AT_BYTES`]: one wakeup per crossing, not one
    /// per record while the agent is late.
    #[inline(always)]
    pub fn wakes(avail: u64) -> bool {
        (WAKE_AT_BYTES..WAKE_AT_BYTES + RECORD_BYTES).contains(&avail)
    }
}

/// Ring-buffer record: a new flagged flow appeared at an uplink.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent {
    pub key: FlowKey,
    /// `bpf_ktime_get_coarse_ns()` of the first packet.
    pub ts_ns: u64,
    pub ifindex: u32,
    /// Length of the first packet.
    pub bytes: u32,
    pub verdict: u8,
    pub reason: u8,
    pub origin: u8,
    pub tcp_flags: u8,
    /// [`staged::NEW_FLOW`] in `EVENTS`; in `STAGED`, what the record says
    /// ([`staged::SYN`], [`staged::ANSWERED`], [`staged::REFUSED`]).
    pub kind: u8,
    pub _pad: [u8; 3],
}

/// `STAGED`: pure TCP SYNs of flagged flows, and the pod's answers to them, in one ring per
/// CPU that the agent maps and reads (no table, no shared lock, no wakeup on the first packet).
///
/// A pure SYN (SYN without ACK) is a flow's first packet by definition, so the uplink records
/// it without looking `FLOWS` up; the flow's next packet takes the `FLOWS` path. The pod's
/// SYN-ACK or RST to it is sent on the CPU that received the SYN, in the same softirq, so the
/// pod side finds the record through this CPU's small index and appends a mark after it.
pub mod staged {
    use super::FlowKey;

    /// The staged rings' memory, all CPUs together, as far as [`MIN_SLOTS`] per CPU allow:
    /// 4 MiB, 65,536 records, about 120 ms of a 500k/s flood for an agent not scheduled.
    pub const TOTAL_BYTES: u32 = 4 << 20;
    /// Records per CPU at least and at most.
    pub const MIN_SLOTS: u32 = 2048;
    pub const MAX_SLOTS: u32 = 32_768;

    /// Records per CPU (a power of two) on a node with `cpus` possible CPUs: the memory shared
    /// out, as a flood spreads over the CPUs that receive it.
    pub const fn slots_for(cpus: u32) -> u32 {
        let cpus = if cpus == 0 { 1 } else { cpus };
        let share = TOTAL_BYTES / 64 / cpus;
        let pow2 = if share == 0 {
            1
        } else {
            1 << (31 - share.leading_zeros())
        };
        if pow2 < MIN_SLOTS {
            MIN_SLOTS
        } else if pow2 > MAX_SLOTS {
            MAX_SLOTS
        } else {
            pow2
        }
    }
    /// Sets of a CPU's fingerprint index (a power of two), of [`WAYS`] entries each: 16 KiB.
    /// A softirq batch of 64 SYNs on one CPU almost never puts five in one set, so the pod's
    /// answers, which come after the batch, find every one.
    pub const INDEX_SLOTS: u32 = 256;
    /// Entries per index set: one 64-byte cache line.
    pub const WAYS: usize = 4;
    /// `FlowEvent::kind` of a new flow in `EVENTS` (in `FLOWS`).
    pub const NEW_FLOW: u8 = 0;
    /// A pure SYN of a flagged flow, not put into `FLOWS`.
    pub const SYN: u8 = 1;
    /// The pod answered (SYN-ACK) the staged SYN with this key; `ifindex` is the pod side's.
    pub const ANSWERED: u8 = 2;
    /// The pod refused (RST, ICMP error) the staged SYN with this key.
    pub const REFUSED: u8 = 3;
    /// `FlowEvent::kind` in `EVENTS`: the flow's next packet after a SYN staged on this CPU
    /// (now in `FLOWS`). Not a new flow: the agent counted it from its SYN.
    pub const CONTINUED: u8 = 4;
    /// `IndexEntry::position` bit: the pod's answer to this SYN was recorded.
    pub const MARKED: u64 = 1 << 63;

    /// A ring's positions: the kernel's head and the agent's tail, each on its own cache line.
    #[repr(C, align(64))]
    #[derive(Clone, Copy, Debug, Default)]
    pub struct Positions {
        /// Records written (the kernel, atomically after the record).
        pub head: u64,
        /// The kernel's last read of `tail`: a ring with room by this one needs no read of the
        /// agent's line, which the agent's every read makes a cache miss on the packet's CPU.
        /// Only ever behind `tail`, so a ring it says is full is read again before it is.
        pub tail_seen: u64,
        /// The kernel's coarse clock as read at `clock_jiffies`: a record of the same tick is
        /// stamped with it, no clock helper called (see [`stamp`]).
        pub clock_jiffies: u64,
        pub clock_ns: u64,
        pub _pad0: [u64; 4],
        /// Records the agent has read; the kernel writes no record past `tail + slots`.
        pub tail: u64,
        pub _pad1: [u64; 7],
    }

    /// An index entry: the fingerprint of a staged SYN's key and its ring position.
    #[repr(C)]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct IndexEntry {
        pub fingerprint: u64,
        pub position: u64,
    }

    /// An index set: a new SYN takes the entry of the oldest (lowest position; empty is 0).
    #[repr(C, align(64))]
    #[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
    pub struct IndexSet {
        pub entries: [IndexEntry; WAYS],
    }

    impl IndexSet {
        /// The way a new SYN's entry goes into: the one holding the oldest position.
        #[inline(always)]
        pub fn victim(&self) -> usize {
            let p = |i: usize| self.entries[i].position & !MARKED;
            let mut v = 0;
            if p(1) < p(v) {
                v = 1;
            }
            if p(2) < p(v) {
                v = 2;
            }
            if p(3) < p(v) {
                v = 3;
            }
            v
        }

        /// The entry of `way` (0-3; others read as the last), without a bounds check that BPF
        /// would have to prove.
        #[inline(always)]
        pub fn entry(&mut self, way: usize) -> &mut IndexEntry {
            match way {
                0 => &mut self.entries[0],
                1 => &mut self.entries[1],
                2 => &mut self.entries[2],
                _ => &mut self.entries[3],
            }
        }

        /// The way holding `fingerprint`, if any.
        #[inline(always)]
        pub fn find(&self, fingerprint: u64) -> Option<usize> {
            if self.entries[0].fingerprint == fingerprint {
                Some(0)
            } else if self.entries[1].fingerprint == fingerprint {
                Some(1)
            } else if self.entries[2].fingerprint == fingerprint {
                Some(2)
            } else if self.entries[3].fingerprint == fingerprint {
                Some(3)
            } else {
                None
            }
        }
    }

    /// A 64-bit fingerprint of a flow key, from its 8-byte words (no byte loop in BPF). Never 0,
    /// so an empty index entry matches nothing.
    #[inline(always)]
    pub fn fingerprint(k: &FlowKey) -> u64 {
        let w = |a: &[u8; 16], i: usize| {
            u64::from_ne_bytes([
                a[i],
                a[i + 1],
                a[i + 2],
                a[i + 3],
                a[i + 4],
                a[i + 5],
                a[i + 6],
                a[i + 7],
            ])
        };
        let ports = (u64::from(k.sport) << 32) | (u64::from(k.dport) << 16) | u64::from(k.proto);
        let mut h = 0x9e37_79b9_7f4a_7c15u64;
        for v in [
            w(&k.src, 0),
            w(&k.src, 8),
            w(&k.dst, 0),
            w(&k.dst, 8),
            ports,
        ] {
            h = (h ^ v).wrapping_mul(0xbf58_476d_1ce4_e5b9).rotate_left(31);
        }
        // splitmix64's finish: every input bit reaches the top bits the index takes.
        h ^= h >> 30;
        h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
        h ^= h >> 27;
        h = h.wrapping_mul(0x94d0_49bb_1331_11eb);
        h ^= h >> 31;
        h | 1
    }

    /// The index entry of a fingerprint.
    #[inline(always)]
    pub const fn index_slot(fingerprint: u64) -> u32 {
        (fingerprint >> 56) as u32 & (INDEX_SLOTS - 1)
    }

    /// The record slot of ring position `position` of `cpu` in the flat `STAGED` array, with
    /// `slots` (a power of two) records per CPU.
    #[inline(always)]
    pub const fn slot(cpu: u32, position: u64, slots: u32) -> u32 {
        cpu * slots + (position as u32 & (slots - 1))
    }

    /// The stamp of a record written at tick `jiffies`: the coarse clock cached in `p` if it
    /// was read in this tick, else `read()`, cached. The coarse clock only moves at a tick, so
    /// this is the value the helper would give, while the helper is called at most once per
    /// tick per CPU. (A read in the instant between a tick's jiffies update and its clock
    /// update stamps the rest of that tick one tick early: a few ms, the clock's resolution.)
    #[inline(always)]
    pub fn stamp(p: &mut Positions, jiffies: u64, read: impl FnOnce() -> u64) -> u64 {
        if p.clock_jiffies != jiffies || p.clock_ns == 0 {
            p.clock_ns = read();
            p.clock_jiffies = jiffies;
        }
        p.clock_ns
    }

    /// Whether a ring of `slots` records with these positions has no free slot.
    #[inline(always)]
    pub const fn full(head: u64, tail: u64, slots: u32) -> bool {
        head.wrapping_sub(tail) >= slots as u64
    }

    /// Whether a TCP packet with these flags is a pure SYN, the first packet of its flow.
    #[inline(always)]
    pub const fn pure_syn(tcp_flags: u8) -> bool {
        tcp_flags & (crate::packet::TCP_SYN | crate::packet::TCP_ACK) == crate::packet::TCP_SYN
    }
}

/// Key of `FRAGS`: an IP datagram's fragments, by the fields reassembly matches on
/// (addresses, protocol, identification; the IPv4 identification is 16 bits).
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FragKey {
    pub src: IpKey,
    pub dst: IpKey,
    pub id: u32,
    pub proto: u8,
    pub _pad: [u8; 3],
}

/// Value of `POD_UNJUDGED`: per local pod address, packets from outside the cluster to it whose
/// flow the parser could not read, by [`crate::verdict::unjudged`] kind.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PodUnjudged {
    pub counts: [u64; crate::verdict::unjudged::COUNT],
}

/// Value of `TRACE` (per CPU, one entry): the last uplink decision on that CPU (tests only).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceRecord {
    /// Incremented on every traced packet.
    pub seq: u64,
    pub verdict: u8,
    pub reason: u8,
    pub _pad: [u8; 6],
}

const _: () = {
    assert!(core::mem::size_of::<FlowKey>() == 40);
    assert!(core::mem::size_of::<FlowStats>() == 48);
    assert!(core::mem::size_of::<PodFlow>() == 16);
    assert!(core::mem::size_of::<VerdictStats>() == 24);
    assert!(core::mem::size_of::<FlowEvent>() == 64);
    assert!(core::mem::size_of::<TraceRecord>() == 16);
    assert!(core::mem::size_of::<FragKey>() == 40);
    assert!(core::mem::size_of::<PodUnjudged>() == 16);
    assert!(core::mem::size_of::<RoleCacheEntry>() == 32);
    assert!(ROLE_CACHE_SLOTS.is_power_of_two());
};

#[cfg(feature = "user")]
mod pod_impls {
    use super::*;
    // SAFETY: each type is `#[repr(C)]`, `Copy`, and made only of integers and byte arrays with
    // its padding spelled out as fields (the size asserts above prove there is no implicit
    // padding), so every bit pattern is a valid value and reading it from the kernel is sound.
    unsafe impl aya::Pod for FlowKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FlowStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PodFlow {}
    // SAFETY: as above.
    unsafe impl aya::Pod for VerdictStats {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FlowEvent {}
    // SAFETY: as above.
    unsafe impl aya::Pod for TraceRecord {}
    // SAFETY: as above.
    unsafe impl aya::Pod for RoleCacheEntry {}
    // SAFETY: as above.
    unsafe impl aya::Pod for FragKey {}
    // SAFETY: as above.
    unsafe impl aya::Pod for PodUnjudged {}
}

#[cfg(test)]
mod tests {
    extern crate std;
    use super::events::{RECORD_BYTES, RING_BYTES, WAKE_AT_BYTES, wakes};
    use std::vec::Vec;

    #[test]
    fn a_staged_stamp_reads_the_clock_once_per_tick() {
        use super::staged::{Positions, stamp};
        use core::cell::Cell;
        let reads = Cell::new(0);
        let at = |p: &mut Positions, jiffies: u64, clock_ns: u64| {
            stamp(p, jiffies, || {
                reads.set(reads.get() + 1);
                clock_ns
            })
        };
        let mut p = Positions::default();
        // The first record of a tick reads the clock; the rest of that tick reuse it.
        assert_eq!(at(&mut p, 100, 4_000_000), 4_000_000);
        assert_eq!(at(&mut p, 100, 4_000_123), 4_000_000);
        assert_eq!(at(&mut p, 100, 4_000_456), 4_000_000);
        assert_eq!(reads.get(), 1);
        // The next tick reads it again, and so does a tick long after (no stale stamp).
        assert_eq!(at(&mut p, 101, 8_000_000), 8_000_000);
        assert_eq!(at(&mut p, 90_101, 360_008_000_000), 360_008_000_000);
        assert_eq!(reads.get(), 3);
        // An unset cache at jiffies 0 is read, not taken as a stamp of 0.
        assert_eq!(at(&mut Positions::default(), 0, 77), 77);
        assert_eq!(reads.get(), 4);
    }

    #[test]
    fn staged_ring_layout_and_fingerprints() {
        use super::{FlowEvent, FlowKey, staged::*};
        use crate::packet::{TCP_ACK, TCP_RST, TCP_SYN};
        assert_eq!(
            core::mem::size_of::<FlowEvent>(),
            64,
            "one cache line per record"
        );
        assert_eq!(core::mem::size_of::<Positions>(), 128);
        assert!(INDEX_SLOTS.is_power_of_two());
        // Rings of different CPUs never share a slot, and a ring wraps onto itself.
        let n = MIN_SLOTS;
        assert_eq!(slot(0, n as u64 - 1, n) + 1, slot(1, 0, n));
        assert_eq!(slot(3, 5, n), slot(3, 5 + n as u64, n));
        assert!(!full(n as u64 - 1, 0, n) && full(n as u64, 0, n));
        assert!(full(u64::MAX, u64::MAX - n as u64, n) && !full(5, 5, n));
        // The memory shared out per CPU, in powers of two, within the bounds.
        assert_eq!(slots_for(1), MAX_SLOTS);
        assert_eq!(slots_for(2), 32_768);
        assert_eq!(slots_for(4), 16_384);
        assert_eq!(slots_for(6), 8_192);
        assert_eq!(slots_for(64), 1_024.max(MIN_SLOTS));
        assert_eq!(slots_for(1024), MIN_SLOTS);
        assert_eq!(slots_for(0), MAX_SLOTS);
        for cpus in 1..512 {
            let s = slots_for(cpus);
            assert!(s.is_power_of_two() && (MIN_SLOTS..=MAX_SLOTS).contains(&s));
            assert!(s == MIN_SLOTS || s as u64 * 64 * cpus as u64 <= TOTAL_BYTES as u64);
        }
        // Keys that differ in any field have different fingerprints; none is 0.
        let k = FlowKey::new([1; 16], [2; 16], 40000, 80, 6);
        let mut others = Vec::new();
        for (i, b) in [0usize, 7, 8, 15].into_iter().enumerate() {
            let mut a = k;
            a.src[b] ^= 1;
            others.push(a);
            let mut d = k;
            d.dst[b] ^= 1 << i;
            others.push(d);
        }
        others.push(FlowKey::new([1; 16], [2; 16], 40001, 80, 6));
        others.push(FlowKey::new([1; 16], [2; 16], 40000, 81, 6));
        others.push(FlowKey::new([1; 16], [2; 16], 40000, 80, 17));
        others.push(FlowKey::new([2; 16], [1; 16], 80, 40000, 6));
        for o in &others {
            assert_ne!(fingerprint(o), fingerprint(&k), "{o:?}");
        }
        assert_ne!(fingerprint(&FlowKey::default()), 0);
        // Index slots spread: 4,096 ports of one client over 256 slots, none above 40.
        let mut per_slot = [0u32; INDEX_SLOTS as usize];
        for port in 0..4096u16 {
            let f = fingerprint(&FlowKey::new([1; 16], [2; 16], 30000 + port, 443, 6));
            per_slot[index_slot(f) as usize] += 1;
        }
        assert!(per_slot.iter().all(|&n| n > 0 && n <= 40), "{per_slot:?}");
        // The index keeps the newest four of a set and finds each.
        let mut set = IndexSet::default();
        for (p, f) in [(1u64, 11u64), (2, 12), (3, 13), (4, 14), (5, 15), (6, 16)] {
            let v = set.victim();
            *set.entry(v) = IndexEntry {
                fingerprint: f,
                position: p,
            };
        }
        // A marked entry ages as any other: the oldest goes first, marked or not.
        set.entry(set.find(13).unwrap()).position |= MARKED;
        assert_eq!(set.entries[set.victim()].fingerprint, 13);
        set.entry(set.find(13).unwrap()).position &= !MARKED;
        assert_eq!(set.find(11), None);
        assert_eq!(set.find(12), None);
        for f in 13..=16 {
            assert!(set.find(f).is_some(), "{f}");
        }
        assert_eq!(core::mem::size_of::<IndexSet>(), 64);
        assert!(pure_syn(TCP_SYN));
        assert!(!pure_syn(TCP_SYN | TCP_ACK) && !pure_syn(TCP_ACK) && !pure_syn(TCP_RST));
    }

    #[test]
    fn one_record_wakes_the_agent_per_crossing() {
        // Records queued one after another while the agent reads nothing: exactly one wakes it,
        // the one that brings the ring past the mark, long before the ring is full.
        let woke: Vec<u64> = (1..=RING_BYTES as u64 / RECORD_BYTES)
            .filter(|n| wakes(n * RECORD_BYTES))
            .collect();
        assert_eq!(woke.len(), 1, "{woke:?}");
        assert!(woke[0] * RECORD_BYTES >= WAKE_AT_BYTES);
        assert!(woke[0] * RECORD_BYTES < u64::from(RING_BYTES) / 4);
        // A lone record (the agent keeps up) never wakes: the agent's poll reads it.
        assert!(!wakes(RECORD_BYTES));
        // The record size is the ring's header plus the event, 8-byte aligned as the ring's are.
        assert_eq!(RECORD_BYTES % 8, 0);
    }
}
