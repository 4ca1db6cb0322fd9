//! Checks beside `cargo test`: the supply chain (`cargo deny`) and the parser fuzz target
//! (`cargo fuzz`). Each counts as one check in `cargo xtask test`'s total.

use std::{path::Path, process::Command};

use anyhow::{Result, bail};

use crate::{run, step, toolchain};

/// What a full `cargo xtask test` writes under `target/` from a clean checkout (measured: the
/// debug build with its ~20 test binaries, the static amd64 and arm64 release builds, the fuzz
/// build, the deploy tools), with a margin. Less free space than this is said before the build starts, not as a linker's bus
/// error halfway through it.
const DISK_NEEDED_BYTES: u64 = 5 << 30;
/// Below this, the run cannot get far: stop at once with the figure.
const DISK_MINIMUM_BYTES: u64 = 1 << 30;

/// Reports the free space where the build writes; warns below what a full run needs and fails
/// below what any build needs.
pub fn disk_space(target: &Path) -> Result<()> {
    let dir = target
        .ancestors()
        .find(|d| d.exists())
        .unwrap_or(Path::new("."));
    let path = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes())?;
    // SAFETY: a NUL-terminated path and a zeroed statvfs the call fills.
    let mut fs: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut fs) } != 0 {
        step(&format!(
            "free disk space under {}: unknown ({})",
            dir.display(),
            std::io::Error::last_os_error()
        ));
        return Ok(());
    }
    // The field types are u64 on 64-bit Linux, narrower on some 32-bit targets.
    #[allow(clippy::useless_conversion)]
    let free = u64::from(fs.f_bavail) * u64::from(fs.f_frsize);
    let gib = |b: u64| b as f64 / f64::from(1u32 << 30);
    step(&format!(
        "free disk space under {}: {:.1} GiB (a full run from a clean checkout writes about {:.1} GiB)",
        dir.display(),
        gib(free),
        gib(DISK_NEEDED_BYTES)
    ));
    if free < DISK_MINIMUM_BYTES {
        bail!(
            "only {:.1} GiB free under {}: the build needs about {:.1} GiB",
            gib(free),
            dir.display(),
            gib(DISK_NEEDED_BYTES)
        );
    }
    if free < DISK_NEEDED_BYTES {
        step(&format!(
            "warning: {:.1} GiB free is less than a full run writes; it may stop with \"No space left on device\"",
            gib(free)
        ));
    }
    Ok(())
}

/// `cargo deny check licenses bans sources`, offline: licences from `deny.toml`'s allow list,
/// crates.io only, no banned crate. Advisories need the network and are not checked here.
/// cargo-deny resolves the graph for every target, so the crates of targets the build never
/// downloaded (Windows, macOS) are fetched first: `cargo fetch` takes them all from the lock.
pub fn deny() -> Result<()> {
    toolchain::cargo_tool(toolchain::CARGO_DENY)?;
    run(Command::new("cargo").args(["fetch", "--locked"]))?;
    run(Command::new("cargo").args(["deny", "--offline", "check", "licenses", "bans", "sources"]))
}

/// Runs the `parse` fuzz target for `seconds` (libFuzzer, no sanitizer: the code under test is
/// safe Rust, so the checks are its panics and assertions). The corpus grows in
/// `target/fuzz-corpus/parse` from run to run; a crash leaves its input in `fuzz/artifacts`.
pub fn fuzz(root: &Path, seconds: u64) -> Result<()> {
    toolchain::cargo_tool(toolchain::CARGO_FUZZ)?;
    let corpus = root.join("target/fuzz-corpus/parse");
    std::fs::create_dir_all(&corpus)?;
    run(Command::new("cargo")
        .args([
            "fuzz",
            "run",
            "--fuzz-dir",
            "fuzz",
            "--sanitizer",
            "none",
            "parse",
        ])
        .arg(&corpus)
        .args([
            "--",
            &format!("-max_total_time={seconds}"),
            "-print_final_stats=1",
        ])
        // cargo-fuzz passes `-Z` flags; the stable toolchain accepts them with this.
        .env("RUSTC_BOOTSTRAP", "1"))
}
