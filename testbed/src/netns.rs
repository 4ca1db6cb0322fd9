//! Network namespaces made by a test: created with `ip netns add`, deleted on drop (also when
//! the test panics). A test process killed outright (SIGKILL, a timeout) runs no drop: the
//! first namespace any later test process makes sweeps the namespaces of processes that are
//! gone. Code runs inside one on a thread of its own (`setns` is per thread).

use std::{
    fs::File,
    os::fd::AsRawFd,
    process::Command,
    sync::{
        Once,
        atomic::{AtomicU32, Ordering},
    },
    thread,
};

/// Runs a command and returns its stdout; panics with its stderr if it fails.
pub fn sh(args: &[&str]) -> String {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {args:?}: {e} (cargo xtask test installs iproute2/iptables)")
        });
    assert!(
        out.status.success(),
        "{args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Runs a command inside a namespace.
pub fn ns_sh(ns: &str, args: &[&str]) -> String {
    let mut full = vec!["ip", "netns", "exec", ns];
    full.extend_from_slice(args);
    sh(&full)
}

/// A network namespace that exists as long as this value does.
pub struct Netns {
    pub name: String,
}

static SEQ: AtomicU32 = AtomicU32::new(0);
static SWEEP: Once = Once::new();

/// Deletes `obs<pid>-…` namespaces whose process no longer exists (killed before its drops ran).
fn sweep_orphans() {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix("obs")
            .and_then(|rest| rest.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            let _ = Command::new("ip").args(["netns", "del", &name]).output();
        }
    }
}

impl Netns {
    /// Creates `obs<pid>-<n>-<role>`, unique to this process.
    pub fn new(role: &str) -> Netns {
        SWEEP.call_once(sweep_orphans);
        let name = format!(
            "obs{}-{}-{role}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        sh(&["ip", "netns", "add", &name]);
        let ns = Netns { name };
        ns.sh(&["ip", "link", "set", "lo", "up"]);
        ns
    }

    pub fn sh(&self, args: &[&str]) -> String {
        ns_sh(&self.name, args)
    }

    pub fn sysctl(&self, key: &str, value: &str) {
        self.sh(&["sysctl", "-qw", &format!("{key}={value}")]);
    }

    /// Runs `f` on a new thread that has entered this namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        self.spawn(f)
            .join()
            .expect("thread in the namespace panicked")
    }

    /// Starts `f` on a new thread that has entered this namespace.
    pub fn spawn<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        thread::spawn(move || {
            enter(&path);
            f()
        })
    }

    /// Enters this namespace on the calling thread for good.
    pub fn enter_this_thread(&self) {
        enter(&format!("/run/netns/{}", self.name));
    }

    /// The index of an interface in this namespace.
    pub fn ifindex(&self, iface: &str) -> u32 {
        let out = self.sh(&["cat", &format!("/sys/class/net/{iface}/ifindex")]);
        out.trim().parse().expect("ifindex")
    }
}

fn enter(path: &str) {
    let f = File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns on a valid namespace fd; it only changes this thread's network namespace.
    let rc = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}
