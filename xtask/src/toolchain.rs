//! Checks for everything the build and the tests need and installs what is missing, with
//! visible progress. A second run finds everything and installs nothing.

use std::{path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::{run, step};

/// Debian packages: the eBPF toolchain (Debian's rustc with a prebuilt `core` for bpf, and LLVM
/// 22 for bpf-linker) and the tools the kernel tests drive.
pub const PACKAGES: &[&str] = &[
    "rustc-web",
    "cargo-web",
    "libstd-rust-web-dev-bpf",
    "llvm-22-dev",
    "iproute2",
    "iptables",
    // What the node's namespace tracks (tests of nodes without netfilter users).
    "conntrack",
    "iputils-ping",
    // The metrics endpoint's TLS test scrapes with it.
    "curl",
    // The deploy checks' tools (kubernetes-validate, checkov) live in a virtual environment.
    "python3",
    "python3-venv",
    "procps",
    "prometheus",
    "prometheus-alertmanager",
    // libFuzzer's C++ sources, for the fuzz target.
    "g++",
    // The container image: assembled from scratch (cargo xtask image).
    "umoci",
];

/// A cargo-installed tool, pinned: (binary, crate, version).
pub type CargoTool = (&'static str, &'static str, &'static str);
pub const CARGO_DENY: CargoTool = ("cargo-deny", "cargo-deny", "0.20.2");
pub const CARGO_FUZZ: CargoTool = ("cargo-fuzz", "cargo-fuzz", "0.13.2");

/// The rustup toolchain name that `observer/build.rs` builds the eBPF crate with.
pub const TOOLCHAIN: &str = "debian-web";
const BPF_LINKER_VERSION: &str = "0.13.0";

fn installed(package: &str) -> bool {
    Command::new("dpkg-query")
        .args(["-W", "-f=${Status}", package])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
}

fn apt_packages(extra: &[&str]) -> Result<()> {
    let missing: Vec<&str> = PACKAGES
        .iter()
        .chain(extra)
        .copied()
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        step(&format!(
            "apt packages present ({})",
            PACKAGES.len() + extra.len()
        ));
        return Ok(());
    }
    step(&format!("installing apt packages: {}", missing.join(" ")));
    run(Command::new("apt-get").arg("update"))?;
    run(Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends"])
        .args(&missing)
        .env("DEBIAN_FRONTEND", "noninteractive"))
}

fn bpf_linker() -> Result<()> {
    install(
        ("bpf-linker", "bpf-linker", BPF_LINKER_VERSION),
        &["--no-default-features", "--features", "llvm-22"],
        &[
            ("LLVM_SYS_221_PREFIX", "/usr/lib/llvm-22"),
            ("LLVM_PREFIX", "/usr/lib/llvm-22"),
        ],
    )
}

/// Installs a cargo tool (pinned, `--locked`) unless that version is on the PATH.
pub fn cargo_tool(tool: CargoTool) -> Result<()> {
    install(tool, &[], &[])
}

fn install((bin, krate, version): CargoTool, args: &[&str], env: &[(&str, &str)]) -> Result<()> {
    let current = Command::new(bin).arg("--version").output();
    if let Ok(out) = &current
        && String::from_utf8_lossy(&out.stdout).contains(version)
    {
        step(&format!("{krate} {version} present"));
        return Ok(());
    }
    step(&format!("building {krate} {version} (a few minutes)"));
    run(Command::new("cargo")
        .args([
            "install",
            krate,
            "--locked",
            "--version",
            version,
            "--force",
        ])
        .args(args)
        .envs(env.iter().copied()))
}

fn toolchain_link() -> Result<()> {
    let out = Command::new("rustup")
        .args(["toolchain", "list"])
        .output()
        .context("rustup is needed (the userspace crates build on rustup stable)")?;
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l.split_whitespace().next() == Some(TOOLCHAIN))
    {
        step(&format!("rustup toolchain {TOOLCHAIN} linked"));
        return Ok(());
    }
    step(&format!(
        "linking Debian's rustc as rustup toolchain {TOOLCHAIN}"
    ));
    run(Command::new("rustup").args(["toolchain", "link", TOOLCHAIN, "/usr"]))
}

fn bpffs() -> Result<()> {
    let mounts = std::fs::read_to_string("/proc/mounts").context("reading /proc/mounts")?;
    if mounts
        .lines()
        .any(|l| l.split_whitespace().nth(1) == Some("/sys/fs/bpf"))
    {
        step("bpffs mounted at /sys/fs/bpf");
        return Ok(());
    }
    step("mounting bpffs at /sys/fs/bpf");
    std::fs::create_dir_all("/sys/fs/bpf").ok();
    run(Command::new("mount").args(["-t", "bpf", "bpf", "/sys/fs/bpf"]))
}

fn is_root() -> bool {
    // /proc/self/status "Uid:" line: real, effective, ...
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Makes the machine ready to build and test; `extra` are more apt packages a task needs.
pub fn ensure(extra: &[&str]) -> Result<()> {
    if !is_root() {
        bail!(
            "run as root: the setup installs packages and the tests load eBPF programs and \
             create network namespaces"
        );
    }
    if !Path::new("/usr/bin/apt-get").exists() {
        bail!("this setup needs a Debian-based machine (apt-get)");
    }
    apt_packages(extra)?;
    bpf_linker()?;
    toolchain_link()?;
    bpffs()
}
