//! The deploy checks of `cargo xtask test`: the Helm chart linted and rendered with every
//! toggle, each rendering validated against the Kubernetes schemas of the oldest and newest
//! supported versions, bad values refused with their message, the kustomize manifests equal to
//! the chart's rendering, the rendered PrometheusRule equal to the tested rules file, and
//! checkov's findings equal to the accepted list in docs/security.md.

use std::{collections::BTreeSet, path::Path, process::Command};

use anyhow::{Context as _, Result, bail};

use crate::{
    deploytools::{self, Tools},
    generated::{self, CHART, RULES},
    step,
};

/// The oldest Kubernetes the README supports, and the newest kubernetes-validate knows.
pub const KUBERNETES_VERSIONS: [&str; 2] = ["1.29.0", "1.37.0"];
/// Custom resources kubernetes-validate has no schema for (the Prometheus Operator's): checked
/// by shape in observer/tests/deploy.rs and operator.rs instead.
const CUSTOM_KINDS: [&str; 3] = ["ServiceMonitor", "PodMonitor", "PrometheusRule"];
/// Where the accepted checkov findings are listed, one table row per check id.
const SECURITY_DOC: &str = "docs/security.md";

/// The renderings checked: (name, `helm template` arguments).
fn variants() -> Vec<(&'static str, Vec<&'static str>)> {
    let set = |pairs: &[&'static str]| pairs.iter().flat_map(|p| ["--set", p]).collect();
    vec![
        ("defaults", vec![]),
        (
            "everything on",
            set(&[
                "serviceMonitor.enabled=true",
                "serviceMonitor.additionalLabels.release=prometheus",
                "prometheusRule.enabled=true",
                "prometheusRule.additionalLabels.release=prometheus",
                "dashboards.enabled=true",
                "dashboards.namespace=monitoring",
                "alertmanager.url=https://alertmanager.monitoring:9093",
                "alertmanager.caSecret.name=alertmanager-ca",
                "alertmanager.bearerTokenSecret.name=alertmanager-token",
                "image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                "imagePullSecrets[0].name=registry",
                "podLabels.team=sre",
                "config.allow-source={10.0.14.0/26,10.0.15.0/26}",
                "config.peer-wait=30s",
                "metrics.tls.secretName=observer-metrics-tls",
                "metrics.bearerTokenSecret.name=observer-metrics-token",
            ]),
        ),
        (
            "podMonitor, basic auth, every address",
            set(&[
                "podMonitor.enabled=true",
                "alertmanager.url=http://alertmanager.monitoring:9093",
                "alertmanager.basicAuth.user=observer",
                "alertmanager.basicAuth.passwordSecret.name=alertmanager-password",
                "metrics.listen=all",
                "metrics.tls.secretName=observer-metrics-tls",
                "metrics.bearerTokenSecret.name=observer-metrics-token",
                "updateStrategy.type=OnDelete",
            ]),
        ),
        (
            "everything off",
            set(&[
                "service.enabled=false",
                "serviceAccount.create=false",
                "serviceAccount.name=existing",
                "priorityClassName=",
                "config.pod-iface=null",
                "config.uplink=null",
            ]),
        ),
    ]
}

/// Values the chart must refuse: (`--set` value, words of the message).
const REFUSED: [(&str, &str); 7] = [
    (
        "metrics.listen=everywhere",
        "metrics.listen must be node or all",
    ),
    ("image.digest=latest", "image.digest must be sha256:"),
    (
        "alertmanager.basicAuth.user=observer",
        "needs alertmanager.basicAuth.passwordSecret.name",
    ),
    (
        "serviceAccount.create=false",
        "serviceAccount.name is required",
    ),
    (
        "podMonitor.enabled=true,serviceMonitor.enabled=true",
        "choose one",
    ),
    (
        "metrics.bearerTokenSecret.name=token",
        "would send the token in clear",
    ),
    (
        "updateStrategy.type=Recreate",
        "updateStrategy.type must be RollingUpdate or OnDelete",
    ),
];

fn capture(cmd: &mut Command) -> Result<(bool, String)> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    let mut text = String::from_utf8_lossy(&out.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&out.stderr));
    Ok((out.status.success(), text))
}

fn docs(text: &str) -> Result<Vec<serde_yaml_ng::Value>> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| serde::Deserialize::deserialize(d).context("rendered YAML"))
        .filter(|d: &Result<serde_yaml_ng::Value>| d.as_ref().map_or(true, |v| !v.is_null()))
        .collect()
}

/// Runs every deploy check; returns how many passed (each counts in the test total).
pub fn check(root: &Path, agent: &Path) -> Result<u64> {
    let tools = deploytools::ensure(root)?;
    let chart = root.join(CHART);
    let work = root.join("target/deploy-checks");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(&work)?;
    let mut passed = 0;

    // 1. helm lint --strict, with the defaults and with every toggle on.
    for (name, args) in variants() {
        let (ok, text) = capture(
            Command::new(&tools.helm)
                .args(["lint", "--strict"])
                .arg(&chart)
                .args(&args),
        )?;
        if !ok {
            bail!("helm lint --strict ({name}):\n{text}");
        }
    }
    step("helm lint --strict: clean with each set of values");
    passed += 1;

    // 2. Each rendering: valid for the oldest and newest Kubernetes, a config the agent takes.
    let mut renderings = Vec::new();
    for (name, args) in variants() {
        let text = generated::render(&tools, root, &args)?;
        let objects = docs(&text)?;
        let file = work.join(format!("{}.yaml", name.replace([' ', ','], "-")));
        // The rendered text itself (a YAML round trip could change how values are spelt),
        // without the custom resources.
        let core_text: String = text
            .split("\n---\n")
            .filter(|doc| {
                !CUSTOM_KINDS
                    .iter()
                    .any(|k| doc.lines().any(|l| l == format!("kind: {k}")))
            })
            .map(|doc| format!("---\n{doc}\n"))
            .collect();
        std::fs::write(&file, &core_text)?;
        for version in KUBERNETES_VERSIONS {
            let (ok, out) = capture(
                Command::new(&tools.kubernetes_validate)
                    .args(["--strict", "--kubernetes-version", version, "--quiet"])
                    .arg(&file),
            )?;
            if !ok {
                bail!("kubernetes-validate --strict, Kubernetes {version}, {name}:\n{out}");
            }
        }
        config_accepted(agent, &objects, &work, name)?;
        let kinds: Vec<String> = objects
            .iter()
            .map(|o| {
                format!(
                    "{}/{}",
                    o["kind"].as_str().unwrap_or("?"),
                    o["metadata"]["name"].as_str().unwrap_or("?")
                )
            })
            .collect();
        step(&format!(
            "{name}: {} objects valid on Kubernetes {} ({})",
            objects.len(),
            KUBERNETES_VERSIONS.join(" and "),
            kinds.join(", ")
        ));
        renderings.push((name, text, file));
    }
    passed += 1;

    // 3. Bad values are refused, each with its message.
    for (value, words) in REFUSED {
        let mut cmd = Command::new(&tools.helm);
        cmd.args(["template", "observer"]).arg(&chart);
        for v in value.split(',') {
            cmd.args(["--set", v]);
        }
        let (ok, text) = capture(&mut cmd)?;
        if ok || !text.contains(words) {
            bail!("helm template --set {value}: expected a refusal saying {words:?}, got:\n{text}");
        }
    }
    step(&format!(
        "{} bad values refused with their message",
        REFUSED.len()
    ));
    passed += 1;

    // 4. The kustomize manifests are the chart's rendering, and kustomize builds them.
    for (path, text) in generated::kustomize_files(&tools, root)? {
        let committed = std::fs::read_to_string(root.join(path)).unwrap_or_default();
        if committed != text {
            bail!("{path} is not the chart's rendering: run `cargo xtask gen`");
        }
    }
    for dir in ["deploy/kubernetes", "deploy/kubernetes/monitoring"] {
        let (ok, text) = capture(
            Command::new(&tools.kubectl)
                .arg("kustomize")
                .arg(root.join(dir)),
        )?;
        if !ok {
            bail!("kubectl kustomize {dir}:\n{text}");
        }
    }
    step("the kustomize manifests are the chart's rendering; kubectl kustomize builds both");
    passed += 1;

    // 5. The rendered PrometheusRule holds the tested rules.
    let everything = &renderings[1].1;
    let rule = docs(everything)?
        .into_iter()
        .find(|o| o["kind"] == "PrometheusRule")
        .context("no PrometheusRule rendered")?;
    let rules: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(root.join(RULES))?)?;
    if rule["spec"]["groups"] != rules["groups"] {
        bail!("the rendered PrometheusRule's groups differ from {RULES}");
    }
    step(&format!(
        "the rendered PrometheusRule's groups are {RULES}'s"
    ));
    passed += 1;

    // 6. checkov finds exactly the accepted findings.
    checkov(&tools, root, &work, &renderings)?;
    passed += 1;
    Ok(passed)
}

/// The ConfigMap's config file of a rendering passes `observer run --check-config`.
fn config_accepted(
    agent: &Path,
    objects: &[serde_yaml_ng::Value],
    work: &Path,
    name: &str,
) -> Result<()> {
    let cm = objects
        .iter()
        .find(|o| o["kind"] == "ConfigMap" && o["data"]["config.yaml"].is_string())
        .context("no ConfigMap with config.yaml")?;
    let file = work.join(format!("config-{}.yaml", name.replace([' ', ','], "-")));
    std::fs::write(
        &file,
        cm["data"]["config.yaml"].as_str().unwrap_or_default(),
    )?;
    let (ok, text) = capture(
        Command::new(agent)
            .args(["run", "--check-config", "--config"])
            .arg(&file)
            .env_remove("OBSERVER_CONFIG"),
    )?;
    if !ok {
        bail!("observer run --check-config refused the {name} ConfigMap:\n{text}");
    }
    Ok(())
}

/// The check ids docs/security.md accepts: rows `| CKV_... |` of its checkov table.
fn accepted_findings(root: &Path) -> Result<BTreeSet<String>> {
    let doc = std::fs::read_to_string(root.join(SECURITY_DOC))?;
    Ok(doc
        .lines()
        .filter_map(|l| l.strip_prefix("| `"))
        .filter_map(|l| l.split('`').next())
        .filter(|id| id.starts_with("CKV"))
        .map(String::from)
        .collect())
}

/// checkov on the kustomize base and on every rendering of the chart: the failed checks must
/// be exactly those docs/security.md lists with their reasons.
fn checkov(
    tools: &Tools,
    root: &Path,
    work: &Path,
    renderings: &[(&str, String, std::path::PathBuf)],
) -> Result<()> {
    let accepted = accepted_findings(root)?;
    let mut found = BTreeSet::new();
    let (mut passed, mut failed) = (0u64, 0u64);
    let mut files: Vec<std::path::PathBuf> = vec![
        root.join(generated::BASE),
        root.join("deploy/kubernetes/base/namespace.yaml"),
    ];
    for (name, text, _) in renderings {
        let f = work.join(format!("checkov-{}.yaml", name.replace([' ', ','], "-")));
        std::fs::write(&f, text)?;
        files.push(f);
    }
    for f in &files {
        let out = Command::new(&tools.checkov)
            .args([
                "--framework",
                "kubernetes",
                "--output",
                "json",
                "--compact",
                "--quiet",
                "-f",
            ])
            .arg(f)
            .output()
            .context("running checkov")?;
        let report: serde_json::Value = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("checkov's report on {}", f.display()))?;
        let results = &report["results"];
        for c in results["failed_checks"].as_array().into_iter().flatten() {
            found.insert(c["check_id"].as_str().unwrap_or("?").to_string());
        }
        passed += report["summary"]["passed"].as_u64().unwrap_or(0);
        failed += report["summary"]["failed"].as_u64().unwrap_or(0);
    }
    let new: Vec<&String> = found.difference(&accepted).collect();
    let stale: Vec<&String> = accepted.difference(&found).collect();
    if !new.is_empty() {
        bail!(
            "checkov findings not accepted in {SECURITY_DOC}: {new:?} (fix them, or list each with its reason)"
        );
    }
    if !stale.is_empty() {
        bail!(
            "{SECURITY_DOC} accepts checkov findings that no longer occur: {stale:?} (remove them)"
        );
    }
    step(&format!(
        "checkov {}: {passed} passed, {failed} failed over {} files; every failure is one of the {} accepted in {SECURITY_DOC}",
        deploytools::CHECKOV_VERSION,
        files.len(),
        accepted.len()
    ));
    Ok(())
}
