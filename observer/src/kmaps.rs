//! Typed access to the object's maps from userspace.

use std::collections::BTreeMap;

use aya::{
    Ebpf, Pod,
    maps::{
        HashMap, MapData, MapError, PerCpuArray, RingBuf,
        lpm_trie::{Key, LpmTrie},
    },
};
use observer_common::{
    addr::IpKey,
    maps::{
        FlowEvent, FlowKey, FlowStats, PodFlow, STATS_ENTRIES, TraceRecord, VerdictStats, health,
        proto_class,
    },
    names::{
        MAP_CIDR_ROLES, MAP_EVENTS, MAP_FLOWS, MAP_HEALTH, MAP_IP_ROLES, MAP_POD_FLOWS, MAP_TRACE,
        MAP_VERDICT_STATS,
    },
    user::Inventory,
    verdict::{VERDICT_COUNT, Verdict},
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

fn map_mut<'a, T>(ebpf: &'a mut Ebpf, name: &'static str) -> Result<T, KmapError>
where
    T: TryFrom<&'a mut aya::maps::Map, Error = MapError>,
{
    let map = ebpf.map_mut(name).ok_or(KmapError::Missing(name))?;
    T::try_from(map).map_err(err(name))
}

fn map_ref<'a, T>(ebpf: &'a Ebpf, name: &'static str) -> Result<T, KmapError>
where
    T: TryFrom<&'a aya::maps::Map, Error = MapError>,
{
    let map = ebpf.map(name).ok_or(KmapError::Missing(name))?;
    T::try_from(map).map_err(err(name))
}

/// Writes the inventory's addresses, CIDRs and pod flows into the maps.
pub fn write_inventory(ebpf: &mut Ebpf, inv: &Inventory) -> Result<(), KmapError> {
    {
        let mut ips: HashMap<&mut MapData, IpKey, u32> = map_mut(ebpf, MAP_IP_ROLES)?;
        for (k, roles) in inv.ip_entries() {
            ips.insert(k, roles, 0).map_err(err(MAP_IP_ROLES))?;
        }
    }
    {
        let mut cidrs: LpmTrie<&mut MapData, IpKey, u32> = map_mut(ebpf, MAP_CIDR_ROLES)?;
        for (c, roles) in inv.cidr_entries() {
            cidrs
                .insert(&Key::new(c.key_prefix_len(), c.key()), roles, 0)
                .map_err(err(MAP_CIDR_ROLES))?;
        }
    }
    let mut flows: HashMap<&mut MapData, FlowKey, PodFlow> = map_mut(ebpf, MAP_POD_FLOWS)?;
    for k in inv.pod_flow_entries() {
        flows
            .insert(*k, PodFlow::default(), 0)
            .map_err(err(MAP_POD_FLOWS))?;
    }
    Ok(())
}

/// Removes a local pod's address (e.g. its veth went away).
pub fn remove_ip(ebpf: &mut Ebpf, key: &IpKey) -> Result<(), KmapError> {
    let mut ips: HashMap<&mut MapData, IpKey, u32> = map_mut(ebpf, MAP_IP_ROLES)?;
    match ips.remove(key) {
        Ok(()) | Err(MapError::KeyNotFound) => Ok(()),
        Err(e) => Err(err(MAP_IP_ROLES)(e)),
    }
}

/// Sets an exact address's roles.
pub fn set_ip(ebpf: &mut Ebpf, key: IpKey, roles: u32) -> Result<(), KmapError> {
    let mut ips: HashMap<&mut MapData, IpKey, u32> = map_mut(ebpf, MAP_IP_ROLES)?;
    ips.insert(key, roles, 0).map_err(err(MAP_IP_ROLES))
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

fn sum_per_cpu<T: Pod + Copy>(
    map: &PerCpuArray<&MapData, T>,
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

/// Reads `VERDICT_STATS`.
pub fn verdict_counts(ebpf: &Ebpf) -> Result<VerdictCounts, KmapError> {
    let map: PerCpuArray<&MapData, VerdictStats> = map_ref(ebpf, MAP_VERDICT_STATS)?;
    let mut out = VerdictCounts::default();
    for index in 0..STATS_ENTRIES {
        let mut total = VerdictStats::default();
        sum_per_cpu(&map, index, MAP_VERDICT_STATS, |s| {
            total.packets += s.packets;
            total.bytes += s.bytes;
            total.flow_starts += s.flow_starts;
        })?;
        if total.packets == 0 {
            continue;
        }
        let verdict = Verdict::ALL[index as usize / proto_class::COUNT as usize % VERDICT_COUNT];
        let class = proto_class::NAMES[(index % proto_class::COUNT) as usize];
        out.0.insert((verdict, class), total);
    }
    Ok(out)
}

/// Reads `HEALTH`, summed over CPUs, indexed by `health::*`.
pub fn health_counts(ebpf: &Ebpf) -> Result<[u64; health::COUNT as usize], KmapError> {
    let map: PerCpuArray<&MapData, u64> = map_ref(ebpf, MAP_HEALTH)?;
    let mut out = [0u64; health::COUNT as usize];
    for (i, slot) in out.iter_mut().enumerate() {
        sum_per_cpu(&map, i as u32, MAP_HEALTH, |v| *slot += v)?;
    }
    Ok(out)
}

/// Reads every flagged flow in `FLOWS`.
pub fn flows(ebpf: &Ebpf) -> Result<Vec<(FlowKey, FlowStats)>, KmapError> {
    let map: HashMap<&MapData, FlowKey, FlowStats> = map_ref(ebpf, MAP_FLOWS)?;
    map.iter().map(|r| r.map_err(err(MAP_FLOWS))).collect()
}

/// Reads every pod-opened flow in `POD_FLOWS`.
pub fn pod_flows(ebpf: &Ebpf) -> Result<Vec<(FlowKey, PodFlow)>, KmapError> {
    let map: HashMap<&MapData, FlowKey, PodFlow> = map_ref(ebpf, MAP_POD_FLOWS)?;
    map.iter().map(|r| r.map_err(err(MAP_POD_FLOWS))).collect()
}

/// Reads the `TRACE` record of one CPU (tests, with `LoadOptions::trace`).
pub fn trace(ebpf: &Ebpf, cpu: usize) -> Result<TraceRecord, KmapError> {
    let map: PerCpuArray<&MapData, TraceRecord> = map_ref(ebpf, MAP_TRACE)?;
    let values = map.get(&0, 0).map_err(err(MAP_TRACE))?;
    Ok(values.get(cpu).copied().unwrap_or_default())
}

/// Takes every event waiting in `EVENTS` without blocking. Records of an unexpected size are
/// counted in the second value and skipped.
pub fn drain_events(ebpf: &mut Ebpf) -> Result<(Vec<FlowEvent>, u64), KmapError> {
    let mut ring: RingBuf<&mut MapData> = map_mut(ebpf, MAP_EVENTS)?;
    let mut events = Vec::new();
    let mut bad = 0;
    while let Some(item) = ring.next() {
        match parse_event(&item) {
            Some(e) => events.push(e),
            None => bad += 1,
        }
    }
    Ok((events, bad))
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
