//! `cargo xtask <task>`: the project's commands. Each sets up what it needs first.

mod bench;
mod chart;
mod checks;
mod churn;
mod conntrack;
mod demo;
mod deploytools;
mod flood;
mod generated;
mod image;
mod perfdoc;
mod throughput;
mod toolchain;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context as _, Result, bail};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "observer project tasks")]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install the toolchain if needed, build everything, run every test (root, real kernel).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Two simulated nodes in network namespaces with the seed's traffic, and what an SRE sees.
    Demo,
    /// Performance figures (datapath cost, throughput, churn, flood, inventory).
    Bench {
        /// Run only these sections (comma-separated); all by default.
        #[arg(long, value_enum, value_delimiter = ',')]
        only: Vec<bench::Section>,
        /// After the run, write docs/performance.md from target/bench/report.json (the sections
        /// the report has, each with its method, the run's date and machine).
        #[arg(long)]
        write_docs: bool,
        /// With --write-docs: only render docs/performance.md from the existing
        /// target/bench/report.json, without running the bench.
        #[arg(long, requires = "write_docs", conflicts_with = "only")]
        from_report: bool,
    },
    /// A cluster's day for a while (three nodes, the fixture API, traffic, restarts, injected
    /// intrusions): writes target/soak/report.json; fails on any false alarm or a missed
    /// intrusion. `cargo xtask test` runs it for 2 minutes.
    Soak {
        /// How long, in minutes.
        #[arg(long, default_value_t = 30.0)]
        minutes: f64,
        /// The seed of the intrusions' and the pods' timing (a failure replays with it).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Fuzz the host parser and verdict (cargo fuzz) for a while.
    Fuzz {
        /// How long, in seconds.
        #[arg(long, default_value_t = 600)]
        seconds: u64,
    },
    /// The agent's container image (static binaries for amd64 and arm64, an OCI index under
    /// target/image), checked.
    Image,
    /// The deploy checks alone: the Helm chart linted and rendered with every toggle, validated
    /// (kubernetes-validate), the kustomize manifests equal to its rendering, checkov.
    Chart,
    /// Only check for the toolchain and install what is missing.
    Setup,
    /// Regenerate generated files (the chart's copies of the rules and the dashboard, the
    /// kustomize manifests from the chart).
    Gen,
    /// rustfmt check and clippy -D warnings for the userspace crates and the eBPF crate.
    Lint,
}

/// Prints a progress line.
pub fn step(msg: &str) {
    println!("==> {msg}");
}

/// Runs a command with inherited output; fails with the command line if it fails.
pub fn run(cmd: &mut Command) -> Result<()> {
    let desc = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {desc}"))?;
    if !status.success() {
        bail!("{desc} failed: {status}");
    }
    Ok(())
}

/// What a line of cargo's output is to a reader: the eBPF build's own output, which cargo
/// relays as the build script's warnings (`warning: observer@0.1.0: …`, aya-build passes the
/// inner cargo's lines on so), is progress, not a warning.
fn progress_of(line: &str) -> Option<String> {
    let rest = line.strip_prefix("warning: observer@")?;
    let (_, text) = rest.split_once(": ")?;
    Some(format!("    eBPF build: {}", text.trim_start()))
}

/// Runs a cargo build, its output passed through, the eBPF build's relayed lines shown as
/// progress ([`progress_of`]); fails with the command line if it fails.
fn run_build(cmd: &mut Command) -> Result<()> {
    use std::io::{BufRead, BufReader};
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("cannot start {desc}"))?;
    for line in BufReader::new(child.stderr.take().context("stderr")?).lines() {
        let line = line?;
        match progress_of(&line) {
            Some(p) => println!("{p}"),
            None => eprintln!("{line}"),
        }
    }
    let status = child.wait()?;
    if !status.success() {
        bail!("{desc} failed: {status}");
    }
    Ok(())
}

/// Runs `cargo test`, passing its output through; returns (passed, failed) summed over every
/// test binary.
fn run_tests(cmd: &mut Command) -> Result<(u64, u64)> {
    use std::io::{BufRead, BufReader};
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .context("cannot start cargo test")?;
    // The test profile builds the eBPF programs again: their relayed lines are progress here
    // too; everything else on stderr (the tests' own output) passes through.
    let stderr = child.stderr.take().context("stderr")?;
    let relay = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            match progress_of(&line) {
                Some(p) => println!("{p}"),
                None => eprintln!("{line}"),
            }
        }
    });
    let (mut passed, mut failed) = (0u64, 0u64);
    for line in BufReader::new(child.stdout.take().context("stdout")?).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            let count = |word: &str| -> u64 {
                rest.split(';')
                    .find_map(|part| part.trim().strip_suffix(word))
                    .and_then(|n| n.trim().rsplit(' ').next()?.parse().ok())
                    .unwrap_or(0)
            };
            passed += count(" passed");
            failed += count(" failed");
        }
    }
    let status = child.wait()?;
    let _ = relay.join();
    if !status.success() {
        bail!("cargo test failed: {status} ({passed} passed, {failed} failed)");
    }
    if passed == 0 {
        bail!("cargo test ran no test");
    }
    Ok((passed, failed))
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn timed(what: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    let start = Instant::now();
    step(what);
    f()?;
    step(&format!("{what}: done in {}", secs(start.elapsed())));
    Ok(())
}

fn secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

/// How long `cargo xtask test` fuzzes the parser.
const FUZZ_SECONDS: u64 = 30;

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> Result<()> {
    let cli = Cli::parse();
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .context("workspace root")?
        .to_path_buf();
    std::env::set_current_dir(&root)?;
    match cli.task {
        Task::Setup => timed("toolchain check", || toolchain::ensure(&[])),
        Task::Image => {
            timed("toolchain check", || toolchain::ensure(&image::PACKAGES))?;
            let mut built = None;
            timed("container image", || {
                built = Some(image::build(&root)?);
                Ok(())
            })?;
            timed("run the image's binary in its own root", || match &built {
                Some(i) => image::check(i),
                None => bail!("no image was built"),
            })
        }
        Task::Chart => {
            timed("toolchain check", || toolchain::ensure(&[]))?;
            timed("build", || {
                run_build(cargo().args(["build", "--bins", "-p", "observer"]))
            })?;
            timed("deploy checks", || {
                chart::check(&root, &root.join("target/debug/observer")).map(|n| {
                    step(&format!("{n} deploy checks passed"));
                })
            })
        }
        Task::Gen => {
            let tools = deploytools::ensure(&root)?;
            generated::write_all(&root, &tools)
        }
        Task::Fuzz { seconds } => {
            timed("toolchain check", || toolchain::ensure(&[]))?;
            checks::fuzz(&root, seconds)
        }
        Task::Soak { minutes, seed } => {
            timed("toolchain check", || toolchain::ensure(&[]))?;
            let mut cmd = cargo();
            cmd.args([
                "test",
                "-p",
                "observer",
                "--test",
                "soak",
                "--",
                "--nocapture",
            ])
            .env("OBSERVER_SOAK_MINUTES", minutes.to_string());
            if let Some(seed) = seed {
                cmd.env("OBSERVER_SOAK_SEED", seed.to_string());
            }
            timed(&format!("soak ({minutes} min)"), || run(&mut cmd))
        }
        Task::Test { args } => {
            timed("toolchain check", || toolchain::ensure(&image::PACKAGES))?;
            checks::disk_space(&root.join("target"))?;
            // A full run builds every test binary once: incremental state would only add a
            // gigabyte of disk (CI starts from a clean checkout).
            timed("build (userspace on stable, eBPF on debian-web)", || {
                run_build(
                    cargo()
                        .args(["build", "--all-targets"])
                        .env("CARGO_INCREMENTAL", "0"),
                )
            })?;
            let mut totals = (0, 0);
            let mut result = timed("tests", || {
                totals = run_tests(
                    cargo()
                        .arg("test")
                        .args(&args)
                        .env("CARGO_INCREMENTAL", "0"),
                )?;
                Ok(())
            });
            if result.is_ok() && args.is_empty() {
                // The README's first command, end to end, so CI proves it too.
                result = timed("demo (cargo xtask demo)", || {
                    demo::run(&root.join("target/debug/observer"))
                });
                if result.is_ok() {
                    totals.0 += 1;
                }
                if result.is_ok() {
                    result = timed(
                        "deploy checks (the Helm chart: helm lint and template, kubernetes-validate, kustomize, checkov)",
                        || {
                            totals.0 += chart::check(&root, &root.join("target/debug/observer"))?;
                            Ok(())
                        },
                    );
                }
                if result.is_ok() {
                    result = timed(
                        "supply chain (cargo deny check licenses bans sources)",
                        checks::deny,
                    );
                    totals.0 += u64::from(result.is_ok());
                }
                if result.is_ok() {
                    result = timed(
                        &format!("fuzz the parser (cargo fuzz, {FUZZ_SECONDS} s)"),
                        || checks::fuzz(&root, FUZZ_SECONDS),
                    );
                    totals.0 += u64::from(result.is_ok());
                }
                if result.is_ok() {
                    result = timed(
                        "container image (static amd64 and arm64 builds, umoci, an OCI index, each run in its image's root)",
                        || image::build(&root).and_then(|i| image::check(&i)),
                    );
                    totals.0 += u64::from(result.is_ok());
                }
            }
            if result.is_ok() {
                // The last line: one total over every test binary.
                println!("tests: {} passed, {} failed", totals.0, totals.1);
            }
            result
        }
        Task::Lint => {
            timed("toolchain check", || {
                toolchain::ensure(&["rust-web-clippy"])
            })?;
            run(cargo().args(["fmt", "--all", "--", "--check"]))?;
            run(cargo().args(["clippy", "--all-targets", "--", "-D", "warnings"]))?;
            run(cargo().args([
                "clippy",
                "-p",
                "observer",
                "--features",
                "bench",
                "--bins",
                "--",
                "-D",
                "warnings",
            ]))?;
            run(Command::new("rustup")
                .args([
                    "run",
                    toolchain::TOOLCHAIN,
                    "cargo",
                    "clippy",
                    "-p",
                    "observer-ebpf",
                ])
                .args([
                    "--target",
                    "bpfel-unknown-none",
                    "--release",
                    "--",
                    "-D",
                    "warnings",
                ])
                .env(
                    "CARGO_ENCODED_RUSTFLAGS",
                    "--cfg=bpf_target_arch=\"x86_64\"",
                ))
        }
        Task::Demo => {
            timed("toolchain check", || toolchain::ensure(&[]))?;
            timed("build", || {
                run_build(cargo().args(["build", "--bins", "-p", "observer"]))
            })?;
            demo::run(&root.join("target/debug/observer"))
        }
        Task::Bench {
            only,
            write_docs,
            from_report,
        } => {
            if from_report {
                return perfdoc::write(&root);
            }
            timed("toolchain check", || {
                toolchain::ensure(&["iperf3", "nftables"])
            })?;
            timed("release build", || {
                run(cargo().args([
                    "build",
                    "--release",
                    "-p",
                    "observer",
                    "--features",
                    "bench",
                    "--bins",
                ]))
            })?;
            // XTASK_BENCH_AGENT runs another build of the agent (an older commit's, say) in
            // the same bench, for before/after figures side by side.
            let bin = std::env::var_os("XTASK_BENCH_AGENT")
                .map(std::path::PathBuf::from)
                .unwrap_or(root.join("target/release/observer"));
            bench::run(&bin, &root, &only)?;
            if write_docs {
                perfdoc::write(&root)?;
            }
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::progress_of;

    #[test]
    fn the_ebpf_builds_relayed_lines_are_progress() {
        assert_eq!(
            progress_of(
                "warning: observer@0.1.0:    Compiling observer-ebpf v0.1.0 (/w/observer-ebpf)"
            )
            .as_deref(),
            Some("    eBPF build: Compiling observer-ebpf v0.1.0 (/w/observer-ebpf)")
        );
        for other in [
            "warning: unused import: `Foo`",
            "   Compiling observer v0.1.0 (/w/observer)",
            "error[E0063]: missing field",
        ] {
            assert_eq!(progress_of(other), None, "{other}");
        }
    }
}
