//! The embedded eBPF object and how it is loaded.

use aya::{
    Ebpf, EbpfLoader,
    programs::{ProgramError, SchedClassifier, TestRun, TestRunOptions, TestRunResult},
};
use observer_common::{
    names::{
        GLOBAL_DSR_MARKS, GLOBAL_NODEPORT_MAX, GLOBAL_NODEPORT_MIN, GLOBAL_ROLE_CACHE,
        GLOBAL_STAGED_SLOTS, GLOBAL_TRACE, GLOBAL_TRACK_MASK, MAP_FLOWS, MAP_IP_ROLES, MAP_STAGED,
        MAP_STAGED_POSITIONS, PROGRAMS,
    },
    verdict::Verdict,
};

/// The eBPF object built by `build.rs` from `observer-ebpf`.
pub static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/observer-ebpf"));

/// Load-time settings of the programs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoadOptions {
    pub nodeport_min: u16,
    pub nodeport_max: u16,
    /// Trust Cilium's DSR marks naming a Service of the cluster.
    pub dsr_marks: bool,
    /// Verdicts whose flows are kept in `FLOWS` (bits of [`Verdict::bit`]).
    pub track_mask: u32,
    /// Record each uplink decision in `TRACE` (tests only; costs a map write per packet).
    pub trace: bool,
    /// Answer repeated addresses from the per-CPU role cache (on; off only to measure it).
    pub role_cache: bool,
    /// Capacity of `FLOWS`.
    pub flow_table_entries: u32,
    /// Capacity of `IP_ROLES`.
    pub address_table_entries: u32,
    /// The programs to verify at load (all of them by default); the agent loads those of its
    /// attach mode, as each costs the verifier 0.2-0.6 s of CPU. Others are loaded the first
    /// time they are attached.
    pub programs: Vec<&'static str>,
    /// Maps pinned at these paths, adopted if pinned already ([`crate::kernel::state`]).
    pub pins: Vec<(&'static str, std::path::PathBuf)>,
}

impl Default for LoadOptions {
    fn default() -> Self {
        LoadOptions {
            nodeport_min: 30000,
            nodeport_max: 32767,
            dsr_marks: false,
            track_mask: Verdict::DirectToPod.bit(),
            trace: false,
            role_cache: true,
            flow_table_entries: crate::defaults::FLOW_TABLE_ENTRIES,
            address_table_entries: crate::defaults::ADDRESS_TABLE_ENTRIES,
            programs: PROGRAMS.to_vec(),
            pins: Vec::new(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error(
        "loading the eBPF object failed (needs Linux >= 5.15 and CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON): {0}"
    )]
    Load(#[from] aya::EbpfError),
    #[error("reading the number of possible CPUs from {0}: {1}")]
    Cpus(&'static str, std::io::Error),
    #[error("the eBPF object has no program {0:?}")]
    MissingProgram(&'static str),
    #[error("program {name}: {source}")]
    Program {
        name: &'static str,
        #[source]
        source: ProgramError,
    },
}

/// Loads the object with `opts` and loads (verifies) its programs into the kernel.
pub fn load(opts: &LoadOptions) -> Result<Ebpf, BpfError> {
    let trace = u8::from(opts.trace);
    let role_cache = u8::from(opts.role_cache);
    let dsr_marks = u8::from(opts.dsr_marks);
    // A staged ring per possible CPU (`bpf_get_smp_processor_id` is below it).
    let cpus = aya::util::nr_cpus().map_err(|(path, e)| BpfError::Cpus(path, e))? as u32;
    let slots = observer_common::maps::staged::slots_for(cpus);
    let mut loader = EbpfLoader::new();
    loader
        .override_global(GLOBAL_NODEPORT_MIN, &opts.nodeport_min, true)
        .override_global(GLOBAL_NODEPORT_MAX, &opts.nodeport_max, true)
        .override_global(GLOBAL_TRACK_MASK, &opts.track_mask, true)
        .override_global(GLOBAL_TRACE, &trace, true)
        .override_global(GLOBAL_DSR_MARKS, &dsr_marks, true)
        .override_global(GLOBAL_ROLE_CACHE, &role_cache, true)
        .override_global(GLOBAL_STAGED_SLOTS, &slots, true)
        .map_max_entries(MAP_FLOWS, opts.flow_table_entries)
        .map_max_entries(MAP_IP_ROLES, opts.address_table_entries)
        .map_max_entries(MAP_STAGED, cpus * slots)
        .map_max_entries(MAP_STAGED_POSITIONS, cpus);
    for (name, path) in &opts.pins {
        loader.map_pin_path(name, path.as_path());
    }
    let mut ebpf = loader.load(OBJECT)?;
    for &name in &opts.programs {
        load_program(&mut ebpf, name)?;
    }
    Ok(ebpf)
}

/// Loads (verifies) one program of the object, unless it is loaded already.
pub fn load_program(ebpf: &mut Ebpf, name: &'static str) -> Result<(), BpfError> {
    let p = classifier(ebpf, name)?;
    if p.fd().is_err() {
        p.load()
            .map_err(|source| BpfError::Program { name, source })?;
    }
    Ok(())
}

/// Loads the empty program too (benchmark floor, foreign stand-in in tests).
pub fn load_noop(ebpf: &mut Ebpf) -> Result<(), BpfError> {
    let name = observer_common::names::PROG_NOOP;
    classifier(ebpf, name)?
        .load()
        .map_err(|source| BpfError::Program { name, source })
}

/// One of the object's classifiers.
pub fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, BpfError> {
    ebpf.program_mut(name)
        .ok_or(BpfError::MissingProgram(name))?
        .try_into()
        .map_err(|source| BpfError::Program { name, source })
}

/// Runs one frame through a program with BPF_PROG_TEST_RUN, `repeat` times (tests, bench).
pub fn test_run(
    ebpf: &mut Ebpf,
    name: &'static str,
    frame: &[u8],
    repeat: u32,
) -> Result<TestRunResult, BpfError> {
    classifier(ebpf, name)?
        .test_run(TestRunOptions {
            data_in: Some(frame),
            repeat,
            ..TestRunOptions::default()
        })
        .map_err(|source| BpfError::Program { name, source })
}
