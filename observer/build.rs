//! Builds the eBPF programs (`observer-ebpf`) with the `debian-web` toolchain, whose prebuilt
//! `core` for bpfel-unknown-none needs no build-std. `cargo xtask test` sets that toolchain up.
use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

fn main() -> anyhow::Result<()> {
    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "observer-ebpf")
        .ok_or_else(|| anyhow!("observer-ebpf package not found in the workspace"))?;
    let root = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    let features: &[&str] = if std::env::var_os("CARGO_FEATURE_BPF_LOG").is_some() {
        &["log"]
    } else {
        &[]
    };
    let package = aya_build::Package {
        name: ebpf.name.as_str(),
        root_dir: root.as_str(),
        features,
        ..Default::default()
    };
    aya_build::build_ebpf([package], Toolchain::Custom("debian-web")).context(
        "building the eBPF programs failed; `cargo xtask test` installs the toolchain \
         (rustc-web, libstd-rust-web-dev-bpf, bpf-linker, `rustup toolchain link debian-web /usr`)",
    )
}
