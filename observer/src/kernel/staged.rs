//! The agent's side of the staged rings (`observer_common::maps::staged`): `STAGED` and
//! `STAGED_POSITIONS` mapped into memory, read without a syscall. Per CPU, the kernel writes a
//! record and then publishes it by advancing `head`; the agent copies what lies between its
//! `tail` and `head`, then advances `tail`, which frees those slots for the kernel.

use std::{
    os::fd::{AsFd, AsRawFd},
    sync::atomic::{AtomicU64, Ordering},
};

use aya::{
    Ebpf,
    maps::{Map, MapData, MapError},
};
use observer_common::{
    maps::{FlowEvent, staged},
    names::{MAP_STAGED, MAP_STAGED_POSITIONS},
};

#[derive(Debug, thiserror::Error)]
pub enum StagedError {
    #[error("the eBPF object has no array map {0}")]
    Missing(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        #[source]
        source: MapError,
    },
    #[error("map {name}: {found} entries of {size} bytes, expected {expected} bytes each")]
    Layout {
        name: &'static str,
        found: u32,
        size: u32,
        expected: usize,
    },
    #[error("map {MAP_STAGED}: {records} records for {cpus} CPUs, not a power-of-two ring per CPU")]
    Rings { records: u32, cpus: u32 },
    #[error("mapping {name} into memory: {source}")]
    Mmap {
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// One map's values, mapped shared and writable; unmapped on drop.
struct Mapping {
    ptr: *mut u8,
    len: usize,
    entries: u32,
    /// Owns the map's fd for as long as the mapping lives.
    _map: MapData,
}

impl Mapping {
    fn new(ebpf: &mut Ebpf, name: &'static str, value_size: usize) -> Result<Self, StagedError> {
        let map = match ebpf.take_map(name) {
            Some(Map::Array(d)) => d,
            _ => return Err(StagedError::Missing(name)),
        };
        let info = map
            .info()
            .map_err(|source| StagedError::Map { name, source })?;
        if info.value_size() as usize != value_size {
            return Err(StagedError::Layout {
                name,
                found: info.max_entries(),
                size: info.value_size(),
                expected: value_size,
            });
        }
        let entries = info.max_entries();
        // SAFETY: a fresh shared mapping of the map's values (BPF_F_MMAPABLE), no larger than
        // them rounded to pages, which the kernel checks.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                entries as usize * value_size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                map.fd().as_fd().as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(StagedError::Mmap {
                name,
                source: std::io::Error::last_os_error(),
            });
        }
        Ok(Mapping {
            ptr: ptr.cast(),
            len: entries as usize * value_size,
            entries,
            _map: map,
        })
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr.cast(), self.len) };
    }
}

/// The staged rings of every CPU.
pub struct StagedRings {
    records: Mapping,
    positions: Mapping,
    slots: u32,
}

// SAFETY: the mappings are plain shared memory; `drain` takes `&mut self`, so one thread reads
// them at a time.
unsafe impl Send for StagedRings {}

impl StagedRings {
    /// Takes both maps out of the object and maps them.
    pub fn take(ebpf: &mut Ebpf) -> Result<Self, StagedError> {
        let records = Mapping::new(ebpf, MAP_STAGED, size_of::<FlowEvent>())?;
        let positions = Mapping::new(ebpf, MAP_STAGED_POSITIONS, size_of::<staged::Positions>())?;
        let slots = records.entries / positions.entries.max(1);
        if !slots.is_power_of_two() || records.entries != positions.entries * slots {
            return Err(StagedError::Rings {
                records: records.entries,
                cpus: positions.entries,
            });
        }
        Ok(StagedRings {
            records,
            positions,
            slots,
        })
    }

    /// Rings (one per possible CPU).
    pub fn cpus(&self) -> u32 {
        self.positions.entries
    }

    /// Records per ring.
    pub fn slots(&self) -> u32 {
        self.slots
    }

    fn head_tail(&self, cpu: u32) -> (&AtomicU64, &AtomicU64) {
        let p = self.positions.ptr.cast::<staged::Positions>();
        // SAFETY: `cpu` is below the mapping's entries; the fields are aligned u64s in shared
        // memory, accessed only atomically from here.
        unsafe {
            let p = p.add(cpu as usize);
            (
                AtomicU64::from_ptr(&raw mut (*p).head),
                AtomicU64::from_ptr(&raw mut (*p).tail),
            )
        }
    }

    /// Appends every record published since the last call, CPU by CPU in ring order, and
    /// frees their slots. Returns the most records read from one ring.
    pub fn drain(&mut self, out: &mut Vec<FlowEvent>) -> usize {
        let mut most = 0;
        for cpu in 0..self.cpus() {
            let mut n = 0;
            let (head, tail) = self.head_tail(cpu);
            let h = head.load(Ordering::Acquire);
            let t = tail.load(Ordering::Relaxed);
            // The kernel never runs more than a ring ahead; a torn or foreign value reads at
            // most one ring.
            let first = t.max(h.saturating_sub(u64::from(self.slots)));
            for pos in first..h {
                let i = staged::slot(cpu, pos, self.slots) as usize;
                // SAFETY: `i` is below the mapping's entries (`slot` keeps it within this
                // CPU's ring); published records are not written again until `tail` passes.
                out.push(unsafe {
                    std::ptr::read_volatile(self.records.ptr.cast::<FlowEvent>().add(i))
                });
                n += 1;
            }
            tail.store(h, Ordering::Release);
            most = most.max(n);
        }
        most
    }
}
