//! `cargo xtask image`: the agent's container image, built from the registries alone, for amd64
//! and arm64 (Graviton) in one OCI index. Each binary is a fully static release build (glibc
//! linked statically, the eBPF object embedded: `bpfel` bytecode that each kernel's JIT
//! compiles), so the image needs no base image: an OCI layout assembled with umoci from
//! scratch, holding the binary, Mozilla's roots from Debian's ca-certificates package (for an
//! https Alertmanager; `SSL_CERT_FILE` names the bundle) and the directories the agent uses, nothing else. Then checked: each architecture's
//! image is unpacked again and its binary answers `--version` and validates configurations
//! (one with an https Alertmanager, which needs the bundle) in fresh user, mount and PID
//! namespaces whose root is the image's root filesystem, without any file of the host; the
//! arm64 binary runs there under qemu-user.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};
use serde_json::{Value, json};

use crate::{run, step};

const TAG: &str = env!("CARGO_PKG_VERSION");
/// Where the image holds its CA bundle: Mozilla's roots as Debian's ca-certificates package
/// ships them (taken from the package itself, not from this machine's /etc, which may hold
/// local additions).
const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// One architecture of the image.
pub struct Arch {
    /// Rust's target triple.
    pub triple: &'static str,
    /// OCI's name of the architecture.
    pub oci: &'static str,
    /// ELF `e_machine` of its binaries.
    elf_machine: u16,
    /// The cross C compiler (ring's C and assembly), linker and strip; None: the machine's.
    cross: Option<&'static str>,
    /// qemu-user to run it on another machine.
    qemu: &'static str,
}

pub const ARCHES: [Arch; 2] = [
    Arch {
        triple: "x86_64-unknown-linux-gnu",
        oci: "amd64",
        elf_machine: 62,
        cross: None,
        qemu: "/usr/bin/qemu-x86_64-static",
    },
    Arch {
        triple: "aarch64-unknown-linux-gnu",
        oci: "arm64",
        elf_machine: 183,
        cross: Some("aarch64-linux-gnu"),
        qemu: "/usr/bin/qemu-aarch64-static",
    },
];

/// The Debian packages the image build needs beyond the base toolchain.
pub const PACKAGES: [&str; 4] = [
    "gcc-aarch64-linux-gnu",
    "libc6-dev-arm64-cross",
    "qemu-user-static",
    "ca-certificates",
];

/// One architecture's image as built.
pub struct Built {
    pub arch: &'static Arch,
    /// Its tag in the layout (`<version>-<arch>`).
    pub tag: String,
    pub binary_bytes: u64,
    /// The image's size as a registry stores it: manifest, config and compressed layer.
    pub image_bytes: u64,
    /// sha256 of the eBPF object the binary embeds.
    pub ebpf_sha256: String,
    /// Its programs' instructions, disassembled.
    pub ebpf_code: String,
}

/// What [`build`] made.
pub struct Image {
    /// The OCI layout directory (`oci:<tag>` is the multi-arch index).
    pub layout: PathBuf,
    pub tag: &'static str,
    pub arches: Vec<Built>,
}

fn umoci(args: &[&str]) -> Result<()> {
    run(Command::new("umoci").args(args))
}

fn sha256(path: &Path) -> Result<String> {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .context("sha256sum")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string())
}

/// The programs' instructions in an eBPF object, disassembled (llvm-objdump of the toolchain's
/// LLVM), without the file's name.
fn instructions(object: &Path) -> Result<String> {
    let out = Command::new("/usr/lib/llvm-22/bin/llvm-objdump")
        .args(["-d", "--no-show-raw-insn"])
        .arg(object)
        .output()
        .context("llvm-objdump (llvm-22)")?;
    if !out.status.success() {
        bail!(
            "llvm-objdump {}: {}",
            object.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.contains("file format"))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// The ELF's machine, and whether it asks for a program interpreter (a dynamic executable).
fn elf_facts(bytes: &[u8]) -> Result<(u16, bool)> {
    let u16_at = |o: usize| {
        bytes
            .get(o..o + 2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
    };
    let u64_at = |o: usize| {
        bytes
            .get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
    };
    if bytes.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1]) {
        bail!("not a 64-bit little-endian ELF");
    }
    let machine = u16_at(0x12).context("ELF header")?;
    let phoff = usize::try_from(u64_at(0x20).context("ELF header")?)?;
    let (phentsize, phnum) = (
        usize::from(u16_at(0x36).context("ELF header")?),
        usize::from(u16_at(0x38).context("ELF header")?),
    );
    let mut interp = false;
    for i in 0..phnum {
        let p_type = bytes
            .get(phoff + i * phentsize..phoff + i * phentsize + 4)
            .context("program header")?;
        // PT_INTERP
        interp |= u32::from_le_bytes(p_type.try_into()?) == 3;
    }
    Ok((machine, interp))
}

/// The installed Rust targets: the cross one is added if missing.
fn rust_target(triple: &str) -> Result<()> {
    let out = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .context("rustup")?;
    if String::from_utf8_lossy(&out.stdout)
        .lines()
        .any(|l| l == triple)
    {
        return Ok(());
    }
    step(&format!("adding the Rust target {triple} (rustup)"));
    run(Command::new("rustup").args(["target", "add", triple]))
}

/// The static release binary for `arch`, and the eBPF object it embeds.
fn binary(root: &Path, arch: &Arch) -> Result<(PathBuf, PathBuf)> {
    rust_target(arch.triple)?;
    step(&format!(
        "static release build of observer ({}, glibc linked statically)",
        arch.triple
    ));
    let mut cmd = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cmd.args([
        "build",
        "--release",
        "--locked",
        "-p",
        "observer",
        "--bin",
        "observer",
        "--target",
        arch.triple,
    ])
    // With --target, RUSTFLAGS reach the target's crates only, not build scripts.
    .env("RUSTFLAGS", "-C target-feature=+crt-static");
    if let Some(prefix) = arch.cross {
        let var = arch.triple.replace('-', "_");
        cmd.env(
            format!("CARGO_TARGET_{}_LINKER", var.to_uppercase()),
            format!("{prefix}-gcc"),
        )
        .env(format!("CC_{var}"), format!("{prefix}-gcc"))
        .env(format!("AR_{var}"), format!("{prefix}-ar"));
    }
    run(&mut cmd)?;
    let bin = root.join(format!("target/{}/release/observer", arch.triple));
    let (machine, dynamic) = elf_facts(&std::fs::read(&bin)?)?;
    if machine != arch.elf_machine {
        bail!(
            "{} is for ELF machine {machine}, not {}",
            bin.display(),
            arch.oci
        );
    }
    if dynamic {
        bail!(
            "{} asks for a program interpreter: not static",
            bin.display()
        );
    }
    // The object the build script made for this build (the newest, should several exist).
    let build_dir = root.join(format!("target/{}/release/build", arch.triple));
    let mut objects: Vec<(std::time::SystemTime, PathBuf)> = std::fs::read_dir(&build_dir)?
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("observer-"))
        .map(|e| e.path().join("out/observer-ebpf"))
        .filter(|p| p.exists())
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .collect();
    objects.sort();
    let object = objects
        .pop()
        .with_context(|| format!("no eBPF object under {}", build_dir.display()))?
        .1;
    Ok((bin, object))
}

/// Mozilla's roots from Debian's ca-certificates package (downloaded, unpacked, the
/// certificates concatenated), in `out/ca-certificates.crt`.
fn debian_ca_bundle(out: &Path) -> Result<PathBuf> {
    let dir = out.join("ca");
    std::fs::create_dir_all(&dir)?;
    let download = || {
        Command::new("apt-get")
            .args(["download", "-q", "ca-certificates"])
            .current_dir(&dir)
            .status()
            .is_ok_and(|s| s.success())
    };
    if !download() {
        // No package lists yet on a fresh machine.
        run(Command::new("apt-get").arg("update"))?;
        if !download() {
            bail!("apt-get download ca-certificates failed");
        }
    }
    let deb = std::fs::read_dir(&dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.extension().is_some_and(|x| x == "deb"))
        .context("no ca-certificates .deb downloaded")?;
    let unpacked = dir.join("x");
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&unpacked))?;
    let mozilla = unpacked.join("usr/share/ca-certificates/mozilla");
    let mut certs: Vec<PathBuf> = std::fs::read_dir(&mozilla)
        .with_context(|| format!("{}", mozilla.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "crt"))
        .collect();
    certs.sort();
    let mut bundle = String::new();
    for c in &certs {
        bundle.push_str(&std::fs::read_to_string(c)?);
        if !bundle.ends_with('\n') {
            bundle.push('\n');
        }
    }
    if certs.len() < 100 {
        bail!("only {} certificates in {}", certs.len(), deb.display());
    }
    let path = out.join("ca-certificates.crt");
    std::fs::write(&path, bundle)?;
    step(&format!(
        "CA bundle: {} roots from {}",
        certs.len(),
        deb.file_name().unwrap_or_default().to_string_lossy()
    ));
    Ok(path)
}

/// Builds both binaries and the multi-arch image under `target/image`.
pub fn build(root: &Path) -> Result<Image> {
    let out = root.join("target/image");
    let layout = out.join("oci");
    let _ = std::fs::remove_dir_all(&out);
    std::fs::create_dir_all(&out)?;
    let ca_bundle = debian_ca_bundle(&out)?;
    umoci(&["init", "--layout", &layout.to_string_lossy()])?;
    let mut arches = Vec::new();
    for arch in &ARCHES {
        let (bin, object) = binary(root, arch)?;
        let tag = format!("{TAG}-{}", arch.oci);
        step(&format!(
            "assembling the {} image with umoci, from scratch",
            arch.oci
        ));
        let image = format!("{}:{tag}", layout.display());
        let bundle = out.join(format!("bundle-{}", arch.oci));
        umoci(&["new", "--image", &image])?;
        umoci(&["unpack", "--image", &image, &bundle.to_string_lossy()])?;
        let rootfs = bundle.join("rootfs");
        for d in ["usr/local/bin", "run/observer", "tmp", "etc/ssl/certs"] {
            std::fs::create_dir_all(rootfs.join(d))?;
        }
        let dest = rootfs.join("usr/local/bin/observer");
        std::fs::copy(&bin, &dest).context("copying the binary")?;
        let strip = arch
            .cross
            .map_or("strip".to_string(), |p| format!("{p}-strip"));
        run(Command::new(strip).arg(&dest))?;
        std::fs::copy(&ca_bundle, rootfs.join(CA_BUNDLE.trim_start_matches('/')))
            .context("copying the CA bundle")?;
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
            "--config.env",
            &format!("SSL_CERT_FILE={CA_BUNDLE}"),
            "--config.label",
            "org.opencontainers.image.title=observer",
            "--config.label",
            &format!("org.opencontainers.image.version={TAG}"),
            "--config.label",
            "org.opencontainers.image.description=Direct pod IP access observer (eBPF)",
            "--architecture",
            arch.oci,
            "--os",
            "linux",
        ])?;
        std::fs::remove_dir_all(&bundle)?;
        arches.push(Built {
            arch,
            tag,
            binary_bytes,
            image_bytes: 0,
            ebpf_sha256: sha256(&object)?,
            ebpf_code: instructions(&object)?,
        });
    }
    umoci(&["gc", "--layout", &layout.to_string_lossy()])?;
    index(&layout, &mut arches)?;
    Ok(Image {
        layout,
        tag: TAG,
        arches,
    })
}

fn blob(layout: &Path, digest: &str) -> PathBuf {
    layout
        .join("blobs/sha256")
        .join(digest.trim_start_matches("sha256:"))
}

fn read_json(path: &Path) -> Result<Value> {
    serde_json::from_slice(&std::fs::read(path)?).with_context(|| format!("{}", path.display()))
}

/// The descriptor `index.json` names `tag`.
fn tagged(layout: &Path, tag: &str) -> Result<Value> {
    let index = read_json(&layout.join("index.json"))?;
    index["manifests"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .cloned()
        .with_context(|| format!("no {tag} in the layout"))
}

/// Adds the multi-arch index (an image index blob naming each architecture's manifest with
/// its platform) under the version's tag, and measures each architecture's image.
fn index(layout: &Path, arches: &mut [Built]) -> Result<()> {
    let mut manifests = Vec::new();
    for b in arches.iter_mut() {
        let d = tagged(layout, &b.tag)?;
        let manifest = read_json(&blob(layout, d["digest"].as_str().unwrap_or_default()))?;
        let mut size =
            d["size"].as_u64().unwrap_or(0) + manifest["config"]["size"].as_u64().unwrap_or(0);
        for l in manifest["layers"].as_array().into_iter().flatten() {
            size += l["size"].as_u64().unwrap_or(0);
        }
        b.image_bytes = size;
        manifests.push(json!({
            "mediaType": d["mediaType"],
            "digest": d["digest"],
            "size": d["size"],
            "platform": {"architecture": b.arch.oci, "os": "linux"},
        }));
    }
    let body = serde_json::to_vec(&json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    }))?;
    let tmp = layout.join("index-blob.tmp");
    std::fs::write(&tmp, &body)?;
    let digest = format!("sha256:{}", sha256(&tmp)?);
    std::fs::rename(&tmp, blob(layout, &digest))?;
    let path = layout.join("index.json");
    let mut top = read_json(&path)?;
    top["manifests"]
        .as_array_mut()
        .context("index.json manifests")?
        .push(json!({
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": digest,
            "size": body.len(),
            "annotations": {"org.opencontainers.image.ref.name": TAG},
        }));
    std::fs::write(&path, serde_json::to_vec(&top)?)?;
    Ok(())
}

/// Checks the index, then unpacks each architecture's image afresh and runs its binary in new
/// user, mount and PID namespaces rooted in the image's filesystem, with the image's
/// environment: `--version`, `run --check-config` with the DaemonSet's settings, and with an
/// https Alertmanager (its roots: the bundle `SSL_CERT_FILE` names).
pub fn check(image: &Image) -> Result<()> {
    let index = tagged(&image.layout, image.tag)?;
    let nested = read_json(&blob(
        &image.layout,
        index["digest"].as_str().unwrap_or_default(),
    ))?;
    for b in &image.arches {
        let d = tagged(&image.layout, &b.tag)?;
        let listed = nested["manifests"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|m| m["digest"] == d["digest"] && m["platform"]["architecture"] == b.arch.oci);
        if !listed {
            bail!(
                "the index {} does not list the {} image",
                image.tag,
                b.arch.oci
            );
        }
    }
    let host = std::env::consts::ARCH;
    for b in &image.arches {
        check_arch(image, b, host)?;
    }
    // One eBPF object for both: the same instructions. (Its BTF and debug info name the
    // target's module of aya-ebpf-bindings, so the files differ by a few bytes.)
    if image
        .arches
        .windows(2)
        .any(|w| w[0].ebpf_code != w[1].ebpf_code)
    {
        bail!("the eBPF programs differ between the architectures' builds");
    }
    let identical = image
        .arches
        .windows(2)
        .all(|w| w[0].ebpf_sha256 == w[1].ebpf_sha256);
    println!(
        "image {}:{} (index of {}); the embedded eBPF programs are the same in each ({} lines of instructions; the object files are {})",
        image.layout.display(),
        image.tag,
        image
            .arches
            .iter()
            .map(|b| b.arch.oci)
            .collect::<Vec<_>>()
            .join(", "),
        image.arches[0].ebpf_code.lines().count(),
        if identical {
            "identical"
        } else {
            "identical but for the BTF and debug type names of aya-ebpf-bindings' per-target module"
        }
    );
    Ok(())
}

fn check_arch(image: &Image, b: &Built, host: &str) -> Result<()> {
    let bundle = image.layout.with_file_name(format!("check-{}", b.arch.oci));
    let _ = std::fs::remove_dir_all(&bundle);
    umoci(&[
        "unpack",
        "--image",
        &format!("{}:{}", image.layout.display(), b.tag),
        &bundle.to_string_lossy(),
    ])?;
    let rootfs = bundle.join("rootfs");
    let mut entries: Vec<String> = walk(&rootfs)?
        .into_iter()
        .filter(|e| !rootfs.join(e).is_dir())
        .collect();
    entries.sort();
    if entries != [CA_BUNDLE.trim_start_matches('/'), "usr/local/bin/observer"] {
        bail!(
            "the {} image holds more or less than the binary and the CA bundle: {entries:?}",
            b.arch.oci
        );
    }
    // The image's environment, as a runtime sets it.
    let config = read_json(&bundle.join("config.json"))?;
    let env: Vec<(String, String)> = config["process"]["env"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| {
            e.as_str()?
                .split_once('=')
                .map(|(k, v)| (k.into(), v.into()))
        })
        .collect();
    // Another architecture's binary runs under qemu-user, copied into the unpacked root for
    // the check only (it is not in the image).
    let native =
        (host == "x86_64" && b.arch.oci == "amd64") || (host == "aarch64" && b.arch.oci == "arm64");
    let mut launcher: Vec<String> = Vec::new();
    if !native {
        let qemu = Path::new(b.arch.qemu);
        let inside = rootfs.join("qemu");
        std::fs::copy(qemu, &inside).with_context(|| format!("copying {}", qemu.display()))?;
        launcher.push("/qemu".into());
    }
    let in_image = |args: &[&str]| -> Result<String> {
        let out = Command::new("unshare")
            .args(["--user", "--map-root-user", "--mount", "--pid", "--fork"])
            .arg(format!("--root={}", rootfs.display()))
            .args(&launcher)
            .arg("/usr/local/bin/observer")
            .args(args)
            .env_clear()
            .envs(env.iter().map(|(k, v)| (k, v)))
            .output()
            .context("unshare")?;
        if !out.status.success() {
            bail!(
                "observer {args:?} in the {} image: {}\n{}",
                b.arch.oci,
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    let version = in_image(&["--version"])?;
    if version != format!("observer {}", image.tag) {
        bail!("--version in the {} image said {version:?}", b.arch.oci);
    }
    for extra in [
        &[][..],
        &["--alertmanager-url", "https://alertmanager.monitoring:9093"][..],
    ] {
        let mut args = vec![
            "run",
            "--check-config",
            "--kubernetes",
            "off",
            "--cluster-cidr",
            "172.16.0.0/16",
        ];
        args.extend_from_slice(extra);
        let checked = in_image(&args)?;
        if checked != "configuration OK" {
            bail!(
                "run --check-config {extra:?} in the {} image said {checked:?}",
                b.arch.oci
            );
        }
    }
    std::fs::remove_dir_all(&bundle)?;
    println!(
        "{} image {}: binary {:.1} MiB, image {:.1} MiB (compressed); `{version}`, `run --check-config` and an https Alertmanager's roots checked in the image's own root{}",
        b.arch.oci,
        b.tag,
        b.binary_bytes as f64 / 1048576.0,
        b.image_bytes as f64 / 1048576.0,
        if native { "" } else { " under qemu-user" }
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

#[cfg(test)]
mod tests {
    use super::elf_facts;

    #[test]
    fn elf_facts_read_the_machine_and_the_interpreter() {
        // The test binary itself: this machine's, dynamic.
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        let (machine, dynamic) = elf_facts(&me).unwrap();
        assert_eq!(
            machine,
            if cfg!(target_arch = "aarch64") {
                183
            } else {
                62
            }
        );
        assert!(dynamic);
        assert!(elf_facts(b"#!/bin/sh\n").is_err());
    }
}
