//! `cargo xtask image`: the agent's container image, built from the registries alone. The
//! binary is a fully static release build (glibc linked statically, the eBPF object embedded),
//! so the image needs no base image: an OCI layout assembled with umoci from scratch, holding
//! the binary and the directories it uses, nothing else. Then checked: unpacked again, the
//! binary answers `--version` and validates a configuration in fresh user, mount and PID
//! namespaces whose root is the image's root filesystem, without any file of the host.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{run, step};

/// The target of the static build (the machine's; see docs for arm64).
const TARGET: &str = "x86_64-unknown-linux-gnu";
const TAG: &str = env!("CARGO_PKG_VERSION");

/// What [`build`] made.
pub struct Image {
    /// The OCI layout directory (`oci:<tag>`).
    pub layout: PathBuf,
    pub tag: &'static str,
    /// The binary's size and the compressed layer's, in bytes.
    pub binary_bytes: u64,
    pub layer_bytes: u64,
}

fn umoci(args: &[&str]) -> Result<()> {
    run(Command::new("umoci").args(args))
}

fn dir_size(p: &Path) -> Result<u64> {
    let mut total = 0;
    for e in std::fs::read_dir(p)? {
        let e = e?;
        let m = e.metadata()?;
        total += if m.is_dir() {
            dir_size(&e.path())?
        } else {
            m.len()
        };
    }
    Ok(total)
}

/// Builds the static binary and the image under `target/image`.
pub fn build(root: &Path) -> Result<Image> {
    step(&format!(
        "static release build of observer ({TARGET}, glibc linked statically)"
    ));
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args([
                "build",
                "--release",
                "--locked",
                "-p",
                "observer",
                "--bin",
                "observer",
                "--target",
                TARGET,
            ])
            // With --target, RUSTFLAGS reach the target's crates only, not build scripts.
            .env("RUSTFLAGS", "-C target-feature=+crt-static"),
    )?;
    let bin = root.join(format!("target/{TARGET}/release/observer"));
    // ldd says so of a static executable (and lists the libraries of a dynamic one).
    let ldd = Command::new("ldd").arg(&bin).output().context("ldd")?;
    let said =
        String::from_utf8_lossy(&ldd.stdout).to_string() + &String::from_utf8_lossy(&ldd.stderr);
    if !said.contains("not a dynamic executable") && !said.contains("statically linked") {
        bail!("{} is not static: {said}", bin.display());
    }
    let out = root.join("target/image");
    let layout = out.join("oci");
    let bundle = out.join("bundle");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    step("assembling the OCI image with umoci, from scratch");
    let image = format!("{}:{TAG}", layout.display());
    umoci(&["init", "--layout", &layout.to_string_lossy()])?;
    umoci(&["new", "--image", &image])?;
    umoci(&["unpack", "--image", &image, &bundle.to_string_lossy()])?;
    let rootfs = bundle.join("rootfs");
    for d in ["usr/local/bin", "run/observer", "tmp", "etc"] {
        std::fs::create_dir_all(rootfs.join(d))?;
    }
    let dest = rootfs.join("usr/local/bin/observer");
    std::fs::copy(&bin, &dest).context("copying the binary")?;
    run(Command::new("strip").arg(&dest))?;
    let binary_bytes = std::fs::metadata(&dest)?.len();
    umoci(&[
        "repack",
        "--refresh-bundle",
        "--image",
        &image,
        &bundle.to_string_lossy(),
    ])?;
    umoci(&[
        "config",
        "--image",
        &image,
        "--config.entrypoint",
        "/usr/local/bin/observer",
        "--config.cmd",
        "run",
        "--config.user",
        "0",
        "--config.workingdir",
        "/",
        "--config.label",
        "org.opencontainers.image.title=observer",
        "--config.label",
        &format!("org.opencontainers.image.version={TAG}"),
        "--config.label",
        "org.opencontainers.image.description=Direct pod IP access observer (eBPF)",
        "--architecture",
        "amd64",
        "--os",
        "linux",
    ])?;
    umoci(&["gc", "--layout", &layout.to_string_lossy()])?;
    std::fs::remove_dir_all(&bundle)?;
    let layer_bytes = dir_size(&layout.join("blobs"))?;
    Ok(Image {
        layout,
        tag: TAG,
        binary_bytes,
        layer_bytes,
    })
}

/// Unpacks the image afresh and runs its binary in new user, mount and PID namespaces rooted in
/// the image's filesystem: `--version`, and `run --check-config` with the DaemonSet's settings.
pub fn check(image: &Image) -> Result<()> {
    let bundle = image.layout.with_file_name("check");
    let _ = std::fs::remove_dir_all(&bundle);
    umoci(&[
        "unpack",
        "--image",
        &format!("{}:{}", image.layout.display(), image.tag),
        &bundle.to_string_lossy(),
    ])?;
    let rootfs = bundle.join("rootfs");
    let entries: Vec<String> = walk(&rootfs)?;
    if entries
        .iter()
        .any(|e| e.starts_with("lib") || e.contains("/lib/"))
    {
        bail!("the image holds more than the binary: {entries:?}");
    }
    let in_image = |args: &[&str]| -> Result<String> {
        let out = Command::new("unshare")
            .args(["--user", "--map-root-user", "--mount", "--pid", "--fork"])
            .arg(format!("--root={}", rootfs.display()))
            .arg("/usr/local/bin/observer")
            .args(args)
            .env_clear()
            .output()
            .context("unshare")?;
        if !out.status.success() {
            bail!(
                "observer {args:?} in the image: {}\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let version = in_image(&["--version"])?;
    if version != format!("observer {}", image.tag) {
        bail!("--version in the image said {version:?}");
    }
    let checked = in_image(&[
        "run",
        "--check-config",
        "--kubernetes",
        "off",
        "--cluster-cidr",
        "172.16.0.0/16",
    ])?;
    if checked != "configuration OK" {
        bail!("run --check-config in the image said {checked:?}");
    }
    std::fs::remove_dir_all(&bundle)?;
    println!(
        "image {}:{}: binary {:.1} MiB, image blobs {:.1} MiB; `{version}` and `run --check-config` ran in the image's own root",
        image.layout.display(),
        image.tag,
        image.binary_bytes as f64 / 1048576.0,
        image.layer_bytes as f64 / 1048576.0
    );
    Ok(())
}

/// Every path under `dir`, relative.
fn walk(dir: &Path) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for e in std::fs::read_dir(&d)? {
            let p = e?.path();
            out.push(
                p.strip_prefix(dir)
                    .unwrap_or(&p)
                    .to_string_lossy()
                    .into_owned(),
            );
            if p.is_dir() && !p.is_symlink() {
                todo.push(p);
            }
        }
    }
    Ok(out)
}
