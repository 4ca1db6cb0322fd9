//! Maps pinned in bpffs by hand, as another version of the agent would have left them: for
//! tests of what the agent keeps across restarts and upgrades. Raw `bpf(2)` calls, so that the
//! testbed needs no eBPF library.

use std::{
    ffi::CString,
    io,
    os::unix::ffi::OsStrExt,
    path::{Path, PathBuf},
};

const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_OBJ_PIN: libc::c_long = 6;
/// `BPF_MAP_TYPE_HASH`.
pub const MAP_TYPE_HASH: u32 = 1;
/// `BPF_MAP_TYPE_LRU_HASH`.
pub const MAP_TYPE_LRU_HASH: u32 = 9;

/// The start of `union bpf_attr` for `BPF_MAP_CREATE`, zero-padded to the size the kernel
/// accepts (it checks that the bytes it does not know are zero).
#[repr(C)]
#[derive(Default)]
struct MapCreate {
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
    map_flags: u32,
    _rest: [u32; 27],
}

#[repr(C)]
#[derive(Default)]
struct ObjPin {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
    _rest: [u32; 28],
}

fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, zero-padded `union bpf_attr` prefix of the size passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

/// Creates a map of this layout and pins it at `path` (its directory must exist on bpffs).
/// The map lives as long as the pin.
pub fn pin_map(
    path: &Path,
    map_type: u32,
    key_size: u32,
    value_size: u32,
    max_entries: u32,
) -> io::Result<()> {
    let mut create = MapCreate {
        map_type,
        key_size,
        value_size,
        max_entries,
        ..MapCreate::default()
    };
    let fd = bpf(BPF_MAP_CREATE, &mut create)? as i32;
    let name = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let mut pin = ObjPin {
        pathname: name.as_ptr() as u64,
        bpf_fd: fd as u32,
        ..ObjPin::default()
    };
    let r = bpf(BPF_OBJ_PIN, &mut pin);
    // SAFETY: `fd` is the map's descriptor, ours to close; the pin keeps the map.
    unsafe { libc::close(fd) };
    r.map(|_| ())
}

/// A bpffs of the test's own, mounted for its lifetime at `/run/observer-tests/bpffs-…` (each
/// bpffs mount is a separate instance, so parallel tests share nothing), and the agent's
/// `--state-dir` inside it. Not under `/sys/fs/bpf`: `ip netns exec` gives the agent a fresh
/// sysfs, without the machine's bpffs. Unmounted, with everything pinned in it, on drop.
pub struct StateDir {
    mount: PathBuf,
    /// The agent's `--state-dir` (created by the agent).
    pub path: PathBuf,
}

impl StateDir {
    pub fn new(name: &str) -> StateDir {
        let mount = PathBuf::from("/run/observer-tests")
            .join(format!("bpffs-{name}-{}", std::process::id()));
        let _ = std::process::Command::new("umount").arg(&mount).output();
        std::fs::create_dir_all(&mount).expect("a mount point under /run");
        let out = std::process::Command::new("mount")
            .args(["-t", "bpf", "bpf"])
            .arg(&mount)
            .output()
            .expect("mount");
        assert!(
            out.status.success(),
            "mounting a bpffs at {}: {}",
            mount.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        StateDir {
            path: mount.join("observer"),
            mount,
        }
    }

    pub fn arg(&self) -> &str {
        self.path.to_str().expect("a UTF-8 path")
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount")
            .arg(&self.mount)
            .output();
        let _ = std::fs::remove_dir(&self.mount);
        // The parent, once no other test's mount is in it.
        let _ = std::fs::remove_dir("/run/observer-tests");
    }
}
