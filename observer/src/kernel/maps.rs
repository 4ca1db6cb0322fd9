//! The object's maps, taken out of the loaded [`Ebpf`] so that the agent's tasks can share
//! them: the inventory writes the address maps, the flow reader reads `FLOWS` and drains
//! `EVENTS`, metrics and the debug API read counters. Each map sits behind its own mutex;
//! every operation is one short syscall.

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
    },
};

use aya::{
    Ebpf, Pod,
    maps::{
        Array, HashMap, IterableMap, Map, MapData, MapError, PerCpuArray, RingBuf,
        lpm_trie::{Key, LpmTrie},
    },
};
use observer_common::{
    addr::IpKey,
    maps::{
        FlowEvent, FlowKey, FlowStats, FragKey, PodFlow, PodUnjudged, STATS_ENTRIES, TraceRecord,
        VerdictStats, health, port_bit, proto_class,
    },
    names::{
        MAP_CIDR_ROLES, MAP_CLOCK, MAP_DSR_FLOWS, MAP_EVENTS, MAP_FLAGGED_PORTS, MAP_FLOWS,
        MAP_FRAGS, MAP_HEALTH, MAP_IP_ROLES, MAP_NODEPORTS, MAP_POD_FLOWS, MAP_POD_LOST,
        MAP_POD_PORTS, MAP_POD_UNJUDGED, MAP_ROLES_GENERATION, MAP_TRACE, MAP_VERDICT_STATS,
    },
    user::{Cidr, Inventory},
    verdict::{Lookup, VERDICT_COUNT, Verdict},
};

#[derive(Debug, thiserror::Error)]
pub enum KmapError {
    #[error("the eBPF object has no map {0:?}")]
    Missing(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
}

fn err(name: &'static str) -> impl FnOnce(MapError) -> KmapError {
    move |source| KmapError::Map { name, source }
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, KmapError>
where
    T: TryFrom<Map, Error = MapError>,
{
    let map = ebpf.take_map(name).ok_or(KmapError::Missing(name))?;
    T::try_from(map).map_err(err(name))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding a map handle cannot leave it inconsistent: keep going.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Counters per (verdict, protocol class), summed over CPUs. Absent entries are zero.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct VerdictCounts(pub BTreeMap<(Verdict, &'static str), VerdictStats>);

impl VerdictCounts {
    /// Packets of a verdict over all protocol classes.
    pub fn packets(&self, v: Verdict) -> u64 {
        self.0
            .iter()
            .filter(|((verdict, _), _)| *verdict == v)
            .map(|(_, s)| s.packets)
            .sum()
    }

    /// Packets of a verdict and protocol class ("tcp", "udp", "icmp", "sctp", "other").
    pub fn packets_of(&self, v: Verdict, class: &str) -> u64 {
        self.0
            .iter()
            .filter(|((verdict, c), _)| *verdict == v && *c == class)
            .map(|(_, s)| s.packets)
            .sum()
    }
}

/// The maps of a loaded object.
pub struct Maps {
    ip_roles: Mutex<HashMap<MapData, IpKey, u32>>,
    cidr_roles: Mutex<LpmTrie<MapData, IpKey, u32>>,
    pod_flows: Mutex<HashMap<MapData, FlowKey, PodFlow>>,
    pod_ports: Mutex<Array<MapData, u64>>,
    flagged_ports: Mutex<Array<MapData, u64>>,
    nodeports: Mutex<Array<MapData, u64>>,
    roles_generation: Mutex<Array<MapData, u64>>,
    clock: Mutex<Array<MapData, u64>>,
    /// Last value written to `ROLES_GENERATION`.
    generation: AtomicU64,
    flows: Mutex<HashMap<MapData, FlowKey, FlowStats>>,
    pod_lost: Mutex<HashMap<MapData, IpKey, u64>>,
    pod_unjudged: Mutex<HashMap<MapData, IpKey, PodUnjudged>>,
    frags: Mutex<HashMap<MapData, FragKey, u32>>,
    dsr_flows: Mutex<HashMap<MapData, FlowKey, u64>>,
    verdict_stats: PerCpuArray<MapData, VerdictStats>,
    health: PerCpuArray<MapData, u64>,
    trace: PerCpuArray<MapData, TraceRecord>,
    flows_capacity: u32,
    /// Entries in `FLOWS` at the last full read (the flow refresh, each second), less those
    /// removed since: the scrape and `status` report it without reading the table again.
    flows_seen: AtomicU64,
}

impl Maps {
    /// Takes the maps out of the object; also returns the `EVENTS` ring buffer, for its one
    /// reader.
    pub fn take(ebpf: &mut Ebpf) -> Result<(Maps, RingBuf<MapData>), KmapError> {
        let flows: HashMap<MapData, FlowKey, FlowStats> = take(ebpf, MAP_FLOWS)?;
        let flows_capacity = flows.map().info().map_err(err(MAP_FLOWS))?.max_entries();
        let maps = Maps {
            ip_roles: Mutex::new(take(ebpf, MAP_IP_ROLES)?),
            cidr_roles: Mutex::new(take(ebpf, MAP_CIDR_ROLES)?),
            pod_flows: Mutex::new(take(ebpf, MAP_POD_FLOWS)?),
            pod_ports: Mutex::new(take(ebpf, MAP_POD_PORTS)?),
            flagged_ports: Mutex::new(take(ebpf, MAP_FLAGGED_PORTS)?),
            nodeports: Mutex::new(take(ebpf, MAP_NODEPORTS)?),
            roles_generation: Mutex::new(take(ebpf, MAP_ROLES_GENERATION)?),
            clock: Mutex::new(take(ebpf, MAP_CLOCK)?),
            generation: AtomicU64::new(0),
            flows: Mutex::new(flows),
            pod_lost: Mutex::new(take(ebpf, MAP_POD_LOST)?),
            pod_unjudged: Mutex::new(take(ebpf, MAP_POD_UNJUDGED)?),
            frags: Mutex::new(take(ebpf, MAP_FRAGS)?),
            dsr_flows: Mutex::new(take(ebpf, MAP_DSR_FLOWS)?),
            verdict_stats: take(ebpf, MAP_VERDICT_STATS)?,
            health: take(ebpf, MAP_HEALTH)?,
            trace: take(ebpf, MAP_TRACE)?,
            flows_capacity,
            flows_seen: AtomicU64::new(0),
        };
        Ok((maps, take(ebpf, MAP_EVENTS)?))
    }

    /// Writes all of an inventory (addresses, CIDRs, pod flows). Used by tests and the bench,
    /// before traffic: the agent applies role changes through [`Maps::role_writer`], and only the
    /// from_pod program writes pod flows in production. (A pod port's bit here is set by a
    /// read-modify-write, which must not race the program's atomic one.)
    pub fn write_inventory(&self, inv: &Inventory) -> Result<(), KmapError> {
        let mut w = self.role_writer();
        for (k, roles) in inv.ip_entries() {
            w.set_ip(k, roles)?;
        }
        for (c, roles) in inv.cidr_entries() {
            w.set_cidr(&c, roles)?;
        }
        w.finish()?;
        for (port, proto) in inv.nodeport_entries() {
            self.set_nodeport(*port, *proto, true)?;
        }
        let mut flows = lock(&self.pod_flows);
        let mut ports = lock(&self.pod_ports);
        for k in inv.pod_flow_entries() {
            // The port's bit first, as from_pod does: a clear bit means no such flow.
            if let Some((index, bit)) = port_bit(k.sport, k.proto) {
                let word = ports.get(&index, 0).map_err(err(MAP_POD_PORTS))?;
                ports
                    .set(index, word | bit, 0)
                    .map_err(err(MAP_POD_PORTS))?;
            }
            flows
                .insert(*k, PodFlow::default(), 0)
                .map_err(err(MAP_POD_FLOWS))?;
        }
        drop((flows, ports));
        let mut ports = lock(&self.flagged_ports);
        for k in inv.served_flow_entries() {
            // As the uplink does: the port's bit before the entry.
            if let Some((index, bit)) = port_bit(k.dport, k.proto) {
                let word = ports.get(&index, 0).map_err(err(MAP_FLAGGED_PORTS))?;
                ports
                    .set(index, word | bit, 0)
                    .map_err(err(MAP_FLAGGED_PORTS))?;
            }
            lock(&self.flows)
                .insert(*k, FlowStats::default(), 0)
                .map_err(err(MAP_FLOWS))?;
        }
        Ok(())
    }

    /// Records a flow a pod opened before the programs saw it (learnt from conntrack), so
    /// that the uplink judges its packets replies. The programs run meanwhile: the port's
    /// bitmap word is set whole (every bit, so no bit the from_pod program sets at the same
    /// moment can be lost to this read-free write; a set bit only means "look it up"), then
    /// the entry goes in.
    pub fn seed_pod_flow(&self, key: &FlowKey) -> Result<(), KmapError> {
        if let Some((index, _)) = port_bit(key.sport, key.proto) {
            lock(&self.pod_ports)
                .set(index, u64::MAX, 0)
                .map_err(err(MAP_POD_PORTS))?;
        }
        lock(&self.pod_flows)
            .insert(*key, PodFlow::default(), 0)
            .map_err(err(MAP_POD_FLOWS))
    }

    /// A writer of `IP_ROLES`/`CIDR_ROLES` changes that bumps `ROLES_GENERATION` once, after the
    /// last of them, so that no CPU answers from a role cached before them.
    pub fn role_writer(&self) -> RoleWriter<'_> {
        RoleWriter {
            maps: self,
            changed: false,
        }
    }

    /// Sets an exact address's roles (one change; see [`Maps::role_writer`] for several).
    pub fn set_ip(&self, key: IpKey, roles: u32) -> Result<(), KmapError> {
        let mut w = self.role_writer();
        w.set_ip(key, roles)?;
        w.finish()
    }

    /// Forgets an exact address (absent is fine).
    pub fn remove_ip(&self, key: &IpKey) -> Result<(), KmapError> {
        let mut w = self.role_writer();
        w.remove_ip(key)?;
        w.finish()
    }

    /// Sets a CIDR's roles.
    pub fn set_cidr(&self, cidr: &Cidr, roles: u32) -> Result<(), KmapError> {
        let mut w = self.role_writer();
        w.set_cidr(cidr, roles)?;
        w.finish()
    }

    /// Forgets a CIDR (absent is fine).
    pub fn remove_cidr(&self, cidr: &Cidr) -> Result<(), KmapError> {
        let mut w = self.role_writer();
        w.remove_cidr(cidr)?;
        w.finish()
    }

    /// Marks a NodePort allocated (or not). Protocols without NodePorts are ignored.
    pub fn set_nodeport(&self, port: u16, proto: u8, allocated: bool) -> Result<(), KmapError> {
        let Some((index, bit)) = port_bit(port, proto) else {
            return Ok(());
        };
        let mut m = lock(&self.nodeports);
        let word = m.get(&index, 0).map_err(err(MAP_NODEPORTS))?;
        let word = if allocated { word | bit } else { word & !bit };
        m.set(index, word, 0).map_err(err(MAP_NODEPORTS))
    }

    /// Sets `CLOCK`, the stamp the uplink gives known flows' packets (`clock::kernel_ns()`).
    pub fn set_clock(&self, ns: u64) -> Result<(), KmapError> {
        lock(&self.clock).set(0, ns, 0).map_err(err(MAP_CLOCK))
    }

    /// Bumps `ROLES_GENERATION`.
    fn roles_changed(&self) -> Result<(), KmapError> {
        let mut g = lock(&self.roles_generation);
        let next = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
        g.set(0, next, 0).map_err(err(MAP_ROLES_GENERATION))
    }

    /// Reads `VERDICT_STATS`.
    pub fn verdict_counts(&self) -> Result<VerdictCounts, KmapError> {
        let mut out = VerdictCounts::default();
        for index in 0..STATS_ENTRIES {
            let mut total = VerdictStats::default();
            sum_per_cpu(&self.verdict_stats, index, MAP_VERDICT_STATS, |s| {
                total.packets += s.packets;
                total.bytes += s.bytes;
                total.flow_starts += s.flow_starts;
            })?;
            if total.packets == 0 {
                continue;
            }
            let verdict =
                Verdict::ALL[index as usize / proto_class::COUNT as usize % VERDICT_COUNT];
            let class = proto_class::NAMES[(index % proto_class::COUNT) as usize];
            out.0.insert((verdict, class), total);
        }
        Ok(out)
    }

    /// Reads `HEALTH`, summed over CPUs, indexed by `health::*`.
    pub fn health_counts(&self) -> Result<[u64; health::COUNT as usize], KmapError> {
        let mut out = [0u64; health::COUNT as usize];
        for (i, slot) in out.iter_mut().enumerate() {
            sum_per_cpu(&self.health, i as u32, MAP_HEALTH, |v| *slot += v)?;
        }
        Ok(out)
    }

    /// Every flagged flow in `FLOWS`.
    pub fn flows(&self) -> Result<Vec<(FlowKey, FlowStats)>, KmapError> {
        lock(&self.flows)
            .iter()
            .map(|r| r.map_err(err(MAP_FLOWS)))
            .collect()
    }

    /// Every flagged flow in `FLOWS`, read in batches of thousands per syscall
    /// (`BPF_MAP_LOOKUP_BATCH`) instead of two syscalls per flow: a full table of 65,536 flows is
    /// a few dozen syscalls. The map's lock is held for the read only, never the tracker's.
    pub fn flows_batch(&self) -> Result<Vec<(FlowKey, FlowStats)>, KmapError> {
        let flows = lock(&self.flows);
        let fd = std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(flows.map().fd()));
        let all =
            lookup_batch::<FlowKey, FlowStats>(fd, self.flows_capacity as usize).map_err(|e| {
                err(MAP_FLOWS)(MapError::SyscallError(aya::sys::SyscallError {
                    call: "bpf_map_lookup_batch",
                    io_error: e,
                }))
            })?;
        self.flows_seen.store(all.len() as u64, Ordering::Relaxed);
        Ok(all)
    }

    /// Writes a flow into `FLOWS` (the benchmark fills a full table this way; in production
    /// only the programs insert flows).
    pub fn insert_flow(&self, key: &FlowKey, stats: &FlowStats) -> Result<(), KmapError> {
        lock(&self.flows)
            .insert(key, stats, 0)
            .map_err(err(MAP_FLOWS))
    }

    /// One flagged flow, if it is (still) in `FLOWS`.
    pub fn flow(&self, key: &FlowKey) -> Result<Option<FlowStats>, KmapError> {
        match lock(&self.flows).get(key, 0) {
            Ok(s) => Ok(Some(s)),
            Err(MapError::KeyNotFound) => Ok(None),
            Err(e) => Err(err(MAP_FLOWS)(e)),
        }
    }

    /// Deletes an expired flow from `FLOWS` (absent is fine).
    pub fn remove_flow(&self, key: &FlowKey) -> Result<(), KmapError> {
        match lock(&self.flows).remove(key) {
            Ok(()) => {
                let _ = self
                    .flows_seen
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                        Some(n.saturating_sub(1))
                    });
                Ok(())
            }
            Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(err(MAP_FLOWS)(e)),
        }
    }

    /// Entries in `FLOWS` now, and its capacity (one batched read).
    pub fn flow_table_use(&self) -> Result<(u64, u32), KmapError> {
        Ok((self.flows_batch()?.len() as u64, self.flows_capacity))
    }

    /// Entries in `FLOWS` as of the last flow refresh (at most a second old), and its capacity:
    /// what the scrape and `status` report, without reading 65,536 flows each time.
    pub fn flow_table_use_at_refresh(&self) -> (u64, u32) {
        (self.flows_seen.load(Ordering::Relaxed), self.flows_capacity)
    }

    /// `POD_LOST`: per pod address, the flagged flows whose event or table entry was lost.
    pub fn pod_lost(&self) -> Result<Vec<(IpKey, u64)>, KmapError> {
        lock(&self.pod_lost)
            .iter()
            .map(|r| r.map_err(err(MAP_POD_LOST)))
            .collect()
    }

    /// Forgets a `POD_LOST` entry of an address that is no local pod any more.
    pub fn forget_pod_lost(&self, key: &IpKey) -> Result<(), KmapError> {
        match lock(&self.pod_lost).remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(err(MAP_POD_LOST)(e)),
        }
    }

    /// `POD_UNJUDGED`: per pod address, packets from outside whose flow could not be read, by
    /// kind ([`observer_common::verdict::unjudged`]).
    pub fn pod_unjudged(&self) -> Result<Vec<(IpKey, PodUnjudged)>, KmapError> {
        lock(&self.pod_unjudged)
            .iter()
            .map(|r| r.map_err(err(MAP_POD_UNJUDGED)))
            .collect()
    }

    /// Forgets a `POD_UNJUDGED` entry of an address that is no local pod any more.
    pub fn forget_pod_unjudged(&self, key: &IpKey) -> Result<(), KmapError> {
        match lock(&self.pod_unjudged).remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(err(MAP_POD_UNJUDGED)(e)),
        }
    }

    /// Every pod-opened flow in `POD_FLOWS`.
    pub fn pod_flows(&self) -> Result<Vec<(FlowKey, PodFlow)>, KmapError> {
        lock(&self.pod_flows)
            .iter()
            .map(|r| r.map_err(err(MAP_POD_FLOWS)))
            .collect()
    }

    /// The `TRACE` record of one CPU (tests, with `LoadOptions::trace`).
    pub fn trace(&self, cpu: usize) -> Result<TraceRecord, KmapError> {
        let values = self.trace.get(&0, 0).map_err(err(MAP_TRACE))?;
        Ok(values.get(cpu).copied().unwrap_or_default())
    }
}

/// Changes to the role maps, from [`Maps::role_writer`]. The generation is bumped by
/// [`RoleWriter::finish`], or on drop (an error part-way), whenever something was written.
pub struct RoleWriter<'a> {
    maps: &'a Maps,
    changed: bool,
}

impl RoleWriter<'_> {
    /// Sets an exact address's roles.
    pub fn set_ip(&mut self, key: IpKey, roles: u32) -> Result<(), KmapError> {
        self.changed = true;
        lock(&self.maps.ip_roles)
            .insert(key, roles, 0)
            .map_err(err(MAP_IP_ROLES))
    }

    /// Forgets an exact address (absent is fine).
    pub fn remove_ip(&mut self, key: &IpKey) -> Result<(), KmapError> {
        self.changed = true;
        match lock(&self.maps.ip_roles).remove(key) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(err(MAP_IP_ROLES)(e)),
        }
    }

    /// Sets a CIDR's roles.
    pub fn set_cidr(&mut self, cidr: &Cidr, roles: u32) -> Result<(), KmapError> {
        self.changed = true;
        lock(&self.maps.cidr_roles)
            .insert(&Key::new(cidr.key_prefix_len(), cidr.key()), roles, 0)
            .map_err(err(MAP_CIDR_ROLES))
    }

    /// Forgets a CIDR (absent is fine).
    pub fn remove_cidr(&mut self, cidr: &Cidr) -> Result<(), KmapError> {
        self.changed = true;
        match lock(&self.maps.cidr_roles).remove(&Key::new(cidr.key_prefix_len(), cidr.key())) {
            Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(err(MAP_CIDR_ROLES)(e)),
        }
    }

    /// Makes the changes (if any) visible to the role cache.
    pub fn finish(mut self) -> Result<(), KmapError> {
        if !std::mem::take(&mut self.changed) {
            return Ok(());
        }
        self.maps.roles_changed()
    }
}

impl Drop for RoleWriter<'_> {
    fn drop(&mut self) {
        if self.changed {
            // Best effort after an error: the error that stopped the writer is reported.
            let _ = self.maps.roles_changed();
        }
    }
}

/// The verdict's lookups over the live maps, for `observer explain`. A lookup that fails for
/// another reason than "absent" answers as absent.
impl Lookup for Maps {
    fn exact_roles(&self, addr: &IpKey) -> Option<u32> {
        lock(&self.ip_roles).get(addr, 0).ok()
    }

    fn cidr_roles(&self, addr: &IpKey) -> u32 {
        lock(&self.cidr_roles)
            .get(&Key::new(128, *addr), 0)
            .unwrap_or(0)
    }

    fn pod_flow(&self, key: &FlowKey) -> bool {
        lock(&self.pod_flows).get(key, 0).is_ok()
    }

    fn served_flow(&self, key: &FlowKey) -> bool {
        matches!(self.flow(key), Ok(Some(_)))
    }

    fn nodeport(&self, port: u16, proto: u8) -> bool {
        let Some((index, bit)) = port_bit(port, proto) else {
            return false;
        };
        lock(&self.nodeports)
            .get(&index, 0)
            .is_ok_and(|w| w & bit != 0)
    }

    fn fragment_judged(&self, key: &FragKey) -> bool {
        lock(&self.frags).get(key, 0).is_ok()
    }

    fn dsr_flow(&self, key: &FlowKey) -> bool {
        lock(&self.dsr_flows).get(key, 0).is_ok()
    }
}

fn sum_per_cpu<T: Pod + Copy>(
    map: &PerCpuArray<MapData, T>,
    index: u32,
    name: &'static str,
    mut add: impl FnMut(&T),
) -> Result<(), KmapError> {
    let values = map.get(&index, 0).map_err(err(name))?;
    for v in values.iter() {
        add(v);
    }
    Ok(())
}

/// `BPF_MAP_LOOKUP_BATCH` (command 24) over a hash map, from the start: every (key, value).
/// `capacity` sizes the buffers; a bucket that does not fit one call (`ENOSPC`) doubles them.
fn lookup_batch<K: Pod + Default, V: Pod + Default>(
    map_fd: std::os::fd::RawFd,
    capacity: usize,
) -> Result<Vec<(K, V)>, std::io::Error> {
    /// The `batch` member of `union bpf_attr`.
    #[repr(C)]
    #[derive(Default)]
    struct BatchAttr {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }
    const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
    // Small buffers (a few hundred KiB), grown only if one bucket does not fit: a read of an
    // empty or small table (every status and scrape) allocates little.
    let mut chunk = capacity.clamp(64, 4096);
    let mut out = Vec::new();
    // The hash map's batch token: a bucket index.
    let mut token: u64 = 0;
    let mut next: u64 = 0;
    let mut first = true;
    loop {
        let mut keys = vec![K::default(); chunk];
        let mut values = vec![V::default(); chunk];
        let mut attr = BatchAttr {
            in_batch: if first { 0 } else { (&raw const token) as u64 },
            out_batch: (&raw mut next) as u64,
            keys: keys.as_mut_ptr() as u64,
            values: values.as_mut_ptr() as u64,
            count: chunk as u32,
            map_fd: map_fd as u32,
            ..BatchAttr::default()
        };
        // SAFETY: the attribute points at buffers of `count` keys and values and at the two
        // tokens, all alive and writable for the call; the kernel writes at most `count` each.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_bpf,
                BPF_MAP_LOOKUP_BATCH,
                &raw mut attr,
                std::mem::size_of::<BatchAttr>(),
            )
        };
        let errno = (rc < 0).then(std::io::Error::last_os_error);
        let n = attr.count as usize;
        match errno.as_ref().and_then(std::io::Error::raw_os_error) {
            None | Some(libc::ENOENT) => {
                out.extend(keys.into_iter().zip(values).take(n));
                if errno.is_some() {
                    return Ok(out); // the end of the map
                }
                token = next;
                first = false;
            }
            Some(libc::ENOSPC) if n == 0 => chunk *= 2,
            _ => return Err(errno.expect("an error")),
        }
    }
}

/// Appends every event waiting in the ring buffer to `events`, without blocking. Records of an
/// unexpected size are skipped and counted in the value returned.
pub fn drain_events(ring: &mut RingBuf<MapData>, events: &mut Vec<FlowEvent>) -> u64 {
    let mut bad = 0;
    while let Some(item) = ring.next() {
        match parse_event(&item) {
            Some(e) => events.push(e),
            None => bad += 1,
        }
    }
    bad
}

/// A [`FlowEvent`] from ring-buffer bytes, if they have its size.
pub fn parse_event(bytes: &[u8]) -> Option<FlowEvent> {
    if bytes.len() != std::mem::size_of::<FlowEvent>() {
        return None;
    }
    // SAFETY: the length matches, FlowEvent is Pod (any bit pattern is valid), and the read is
    // unaligned-safe.
    Some(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<FlowEvent>()) })
}
