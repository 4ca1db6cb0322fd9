//! `kubectl observer`: the same binary installed as `kubectl-observer` (or `observer kubectl`).
//! `kubectl exec ds/observer` lands on an arbitrary node; the plugin finds the agent on the node
//! that matters (`--node`, or the node of `--pod`) through the API, and runs the command there
//! with `kubectl exec`. With `-A` it runs `flows` on every node's agent and merges the rows,
//! with a NODE column (or a `node` field in JSON).

use std::{collections::BTreeMap, process::Command};

use anyhow::{Context as _, bail};
use clap::Args;
use k8s_openapi::api::core::v1::Pod;
use kube::{Api, api::ListParams};
use observer::agent::api::FlowRow;

/// Options of `kubectl observer`; what follows them is the observer command to run.
#[derive(Debug, Args)]
pub struct PluginArgs {
    /// The agent on this node.
    #[arg(long, conflicts_with_all = ["pod", "all_nodes"])]
    pub node: Option<String>,
    /// The agent on the node of this pod (NAMESPACE/NAME, or NAME in `default`).
    #[arg(long, conflicts_with = "all_nodes")]
    pub pod: Option<String>,
    /// `flows` on every node's agent, merged, with the node.
    #[arg(short = 'A', long = "all-nodes")]
    pub all_nodes: bool,
    /// The namespace the observer DaemonSet runs in.
    #[arg(long, default_value = "observer")]
    pub agent_namespace: String,
    /// The label that selects the agent's pods.
    #[arg(long, default_value = "app.kubernetes.io/name=observer")]
    pub agent_selector: String,
    /// The kubectl to exec with.
    #[arg(long, default_value = "kubectl")]
    pub kubectl: String,
    /// The observer command and its arguments (e.g. `flows --state answered`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
    pub command: Vec<String>,
}

/// Running agent pods by node name.
async fn agents(a: &PluginArgs) -> anyhow::Result<BTreeMap<String, String>> {
    let (key, value) = a
        .agent_selector
        .split_once('=')
        .context("--agent-selector is KEY=VALUE")?;
    let client = observer::inventory::kubernetes::client()
        .await
        .context("connecting to the Kubernetes API (KUBECONFIG)")?;
    let pods: Api<Pod> = Api::namespaced(client, &a.agent_namespace);
    let list = pods
        .list(&ListParams::default().labels(&a.agent_selector))
        .await
        .context("listing the observer pods")?;
    Ok(list
        .items
        .into_iter()
        // The selector again: an API that ignores it must not make us exec into anything else.
        .filter(|p| {
            p.metadata
                .labels
                .as_ref()
                .and_then(|l| l.get(key))
                .is_some_and(|v| v == value)
                && p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
        })
        .filter_map(|p| Some((p.spec?.node_name?, p.metadata.name?)))
        .collect())
}

/// The node a pod runs on.
async fn node_of(pod: &str) -> anyhow::Result<String> {
    let (ns, name) = pod.split_once('/').unwrap_or(("default", pod));
    let client = observer::inventory::kubernetes::client()
        .await
        .context("connecting to the Kubernetes API (KUBECONFIG)")?;
    let p = Api::<Pod>::namespaced(client, ns)
        .get(name)
        .await
        .with_context(|| format!("pod {ns}/{name}"))?;
    p.spec
        .and_then(|s| s.node_name)
        .with_context(|| format!("pod {ns}/{name} is not scheduled on a node"))
}

fn exec(a: &PluginArgs, pod: &str, args: &[String]) -> Command {
    let mut c = Command::new(&a.kubectl);
    c.args(["exec", "-n", &a.agent_namespace, pod, "--", "observer"])
        .args(args);
    c
}

/// Runs the plugin; returns the exit status to end with.
pub async fn run(a: PluginArgs) -> anyhow::Result<u8> {
    let agents = agents(&a).await?;
    if a.all_nodes {
        return all_nodes(&a, &agents);
    }
    let node = match (&a.node, &a.pod) {
        (Some(n), _) => n.clone(),
        (None, Some(p)) => node_of(p).await?,
        (None, None) => bail!("say which node: --node NODE, --pod NAMESPACE/NAME, or -A"),
    };
    let Some(pod) = agents.get(&node) else {
        bail!(
            "no running observer pod on node {node} (agents on: {})",
            agents.keys().cloned().collect::<Vec<_>>().join(", ")
        );
    };
    let status = exec(&a, pod, &a.command)
        .status()
        .with_context(|| format!("running {}", a.kubectl))?;
    Ok(status.code().map_or(1, |c| c as u8))
}

/// `flows` on every agent, merged: a table with a NODE column, or JSON rows with `node`.
fn all_nodes(a: &PluginArgs, agents: &BTreeMap<String, String>) -> anyhow::Result<u8> {
    if a.command.first().map(String::as_str) != Some("flows") {
        bail!("-A runs `flows` only");
    }
    let rest = &a.command[1..];
    let json = rest.iter().any(|x| x == "--json")
        || rest.windows(2).any(|w| w[0] == "-o" && w[1] == "json")
        || rest.iter().any(|x| x == "-ojson" || x == "--output=json");
    // Ask each agent for JSON, whatever the caller's format, and print once merged.
    let mut args: Vec<String> = vec!["flows".into()];
    let mut skip = false;
    for x in rest {
        if skip {
            skip = false;
            continue;
        }
        match x.as_str() {
            "-o" | "--output" => skip = true,
            "--json" | "-ojson" | "--output=json" | "-owide" | "--output=wide" => {}
            _ => args.push(x.clone()),
        }
    }
    args.extend(["-o".into(), "json".into()]);
    let mut rows: Vec<(String, FlowRow)> = Vec::new();
    let mut failed = Vec::new();
    for (node, pod) in agents {
        let out = exec(a, pod, &args)
            .output()
            .with_context(|| format!("running {}", a.kubectl))?;
        if !out.status.success() {
            failed.push(format!(
                "{node}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
            continue;
        }
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            let r: FlowRow = serde_json::from_str(l)
                .with_context(|| format!("the agent on {node} sent a line that is not a flow"))?;
            rows.push((node.clone(), r));
        }
    }
    if json {
        for (node, r) in &rows {
            let mut v = serde_json::to_value(r)?;
            v["node"] = node.clone().into();
            println!("{v}");
        }
    } else if rows.is_empty() {
        eprintln!("no flagged flows on {} nodes", agents.len());
    } else {
        let flows: Vec<FlowRow> = rows.iter().map(|(_, r)| r.clone()).collect();
        let table = super::flows::table(&flows, false);
        let width = rows.iter().map(|(n, _)| n.len()).max().unwrap_or(4).max(4);
        for (i, line) in table.lines().enumerate() {
            let node = if i == 0 { "NODE" } else { &rows[i - 1].0 };
            println!("{node:<width$}  {line}");
        }
    }
    for f in &failed {
        eprintln!("observer: {f}");
    }
    Ok(if failed.is_empty() { 0 } else { 1 })
}
