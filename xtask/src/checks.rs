//! Checks beside `cargo test`: the supply chain (`cargo deny`) and the parser fuzz target
//! (`cargo fuzz`). Each counts as one check in `cargo xtask test`'s total.

use std::{path::Path, process::Command};

use anyhow::Result;

use crate::{run, toolchain};

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
