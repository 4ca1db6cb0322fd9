//! What the agent keeps across its own restarts and upgrades: the flows local pods opened
//! (`POD_FLOWS`) and the bitmap of their ports (`POD_PORTS`, whose clear bit means "no entry
//! with this port"). A DaemonSet rollout restarts every agent while pods hold connections open
//! (database pools, streams); on a node whose Services are translated by an eBPF dataplane
//! (Cilium's kube-proxy replacement, Calico's eBPF dataplane) nothing in the node's namespace
//! uses netfilter, so conntrack cannot tell the new agent who opened them, and the server's
//! next segments would look like an outsider's. So the two maps are pinned in bpffs under
//! `<state dir>/v<KEPT_STATE_VERSION>/` and adopted by the next agent, the programs of the old
//! and the new one sharing them.
//!
//! Nothing pinned is ever misread: another version's directory is removed, and a pinned map
//! whose type, key, value or size is not this version's is unpinned; both are counted and
//! logged, and the agent starts with that map empty, as without kept state.

use std::{
    fs,
    path::{Path, PathBuf},
};

use aya::maps::{MapInfo, MapType};
use observer_common::{
    maps::{
        DSR_FLOWS_ENTRIES, FlowKey, KEPT_STATE_VERSION, POD_FLOWS_ENTRIES, PORT_BITMAP_WORDS,
        PodFlow,
    },
    names::{MAP_DSR_FLOWS, MAP_POD_FLOWS, MAP_POD_PORTS},
};

/// `statfs(2)`'s `f_type` of bpffs.
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// A kept map as this version lays it out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Layout {
    pub name: &'static str,
    pub map_type: MapType,
    pub key_size: u32,
    pub value_size: u32,
    pub max_entries: u32,
}

/// The maps kept across restarts, as this version lays them out. (A map added here is created
/// empty where an older agent of this version pinned none.)
pub fn layouts() -> [Layout; 3] {
    [
        Layout {
            name: MAP_POD_FLOWS,
            map_type: MapType::LruHash,
            key_size: size_of::<FlowKey>() as u32,
            value_size: size_of::<PodFlow>() as u32,
            max_entries: POD_FLOWS_ENTRIES,
        },
        Layout {
            name: MAP_POD_PORTS,
            map_type: MapType::Array,
            key_size: size_of::<u32>() as u32,
            value_size: size_of::<u64>() as u32,
            max_entries: PORT_BITMAP_WORDS,
        },
        // The DSR connections recognised by their marked first packet: their later segments
        // carry no mark, and would look direct to the next agent.
        Layout {
            name: MAP_DSR_FLOWS,
            map_type: MapType::LruHash,
            key_size: size_of::<FlowKey>() as u32,
            value_size: size_of::<u64>() as u32,
            max_entries: DSR_FLOWS_ENTRIES,
        },
    ]
}

/// A pinned map the agent did not adopt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Dropped {
    /// The map's file name in its directory.
    pub map: String,
    /// `version` (another version's directory) or `layout` (this version's name, another
    /// layout).
    pub reason: &'static str,
    pub detail: String,
}

/// The kept state, ready for the loader.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Prepared {
    /// Where this version's maps are pinned (`<state dir>/v<KEPT_STATE_VERSION>`).
    pub dir: PathBuf,
    /// Maps found pinned with this version's layout: the loader adopts them.
    pub adopted: Vec<&'static str>,
    pub dropped: Vec<Dropped>,
}

impl Prepared {
    /// The pin path of each kept map, for the loader.
    pub fn pins(&self) -> Vec<(&'static str, PathBuf)> {
        layouts()
            .iter()
            .map(|l| (l.name, self.dir.join(l.name)))
            .collect()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "{0} is not on a bpffs (mount the host's /sys/fs/bpf, or --state-dir none to keep nothing)"
    )]
    NotBpffs(PathBuf),
    #[error("the state directory {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Makes `<state_dir>/v<KEPT_STATE_VERSION>` ready: created if missing; every other version's
/// directory of `state_dir` (`v<number>`) removed with its maps; each map pinned in this
/// version's checked against [`layouts`], and unpinned when it differs (or is no map). What
/// stays is adopted. Nothing else in `state_dir` is touched, so a directory shared by mistake
/// (the bpffs root, with another dataplane's maps) loses nothing but versions of ours.
pub fn prepare(state_dir: &Path) -> Result<Prepared, StateError> {
    fs::create_dir_all(state_dir).map_err(io(state_dir))?;
    if !on_bpffs(state_dir)? {
        return Err(StateError::NotBpffs(state_dir.to_path_buf()));
    }
    let current = format!("v{KEPT_STATE_VERSION}");
    let mut out = Prepared {
        dir: state_dir.join(&current),
        ..Prepared::default()
    };
    for entry in fs::read_dir(state_dir).map_err(io(state_dir))? {
        let entry = entry.map_err(io(state_dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name == current || !is_version(&name) || !path.is_dir() {
            continue;
        }
        let maps: Vec<String> = fs::read_dir(&path)
            .map_err(io(&path))?
            .filter_map(Result::ok)
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        fs::remove_dir_all(&path).map_err(io(&path))?;
        for map in maps {
            out.dropped.push(Dropped {
                map,
                reason: "version",
                detail: format!("kept by another version of the agent ({name})"),
            });
        }
    }
    fs::create_dir_all(&out.dir).map_err(io(&out.dir))?;
    for layout in layouts() {
        let path = out.dir.join(layout.name);
        if !path.exists() {
            continue;
        }
        match MapInfo::from_pin(&path) {
            Ok(info) => match differs(&layout, &info) {
                None => out.adopted.push(layout.name),
                Some(detail) => {
                    fs::remove_file(&path).map_err(io(&path))?;
                    out.dropped.push(Dropped {
                        map: layout.name.to_string(),
                        reason: "layout",
                        detail,
                    });
                }
            },
            Err(e) => {
                fs::remove_file(&path).map_err(io(&path))?;
                out.dropped.push(Dropped {
                    map: layout.name.to_string(),
                    reason: "layout",
                    detail: format!("not a readable map: {e}"),
                });
            }
        }
    }
    Ok(out)
}

/// Whether a directory name is one of the agent's versions (`v` and digits).
fn is_version(name: &str) -> bool {
    name.strip_prefix('v')
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// How a pinned map differs from this version's layout, if it does.
fn differs(want: &Layout, info: &MapInfo) -> Option<String> {
    let got = (
        info.map_type().ok(),
        info.key_size(),
        info.value_size(),
        info.max_entries(),
    );
    let expected = (
        Some(want.map_type),
        want.key_size,
        want.value_size,
        want.max_entries,
    );
    (got != expected).then(|| {
        format!(
            "pinned as {:?} with {}-byte keys, {}-byte values and {} entries; this version has {:?} with {}-byte keys, {}-byte values and {} entries",
            got.0, got.1, got.2, got.3, want.map_type, want.key_size, want.value_size, want.max_entries
        )
    })
}

fn on_bpffs(path: &Path) -> Result<bool, StateError> {
    use std::os::unix::ffi::OsStrExt as _;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(|e| StateError::Io {
        path: path.to_path_buf(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, e),
    })?;
    // SAFETY: `c` is a NUL-terminated path and `st` a zeroed statfs the call fills.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return Err(io(path)(std::io::Error::last_os_error()));
    }
    Ok(st.f_type as i64 == BPF_FS_MAGIC)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_versions_of_ours_are_removed() {
        assert!(is_version("v0") && is_version("v12"));
        for other in ["v", "vx", "tc", "calico", "observer", "v1a"] {
            assert!(!is_version(other), "{other}");
        }
    }

    #[test]
    fn the_layouts_are_the_shared_types() {
        let [flows, ports, dsr] = layouts();
        assert_eq!((dsr.key_size, dsr.value_size), (40, 8));
        assert_eq!((flows.key_size, flows.value_size), (40, 16));
        assert_eq!((ports.key_size, ports.value_size), (4, 8));
    }
}
