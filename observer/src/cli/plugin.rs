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

/// Agents asked at once, at most, without `--follow`: each is a kubectl process and two pipes.
const AT_ONCE: usize = 32;
/// Nodes `-A --follow` follows at most: each holds its kubectl for the whole follow.
const FOLLOW_MAX: usize = 128;

/// What each agent's `flows` sends, as it arrives.
enum Event {
    /// A line of an agent's output (the agent's index).
    Line(usize, String),
    /// An agent's output ended: what it wrote to stderr.
    Ended(usize, String),
}

/// The kubectl processes started; those still running are killed and reaped if the plugin
/// returns early (an error, a line that is not a flow).
struct Children(Vec<Option<std::process::Child>>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in self.0.iter_mut().flatten() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Starts `flows` on agent `i`: its lines and its end arrive on `tx`.
fn start_one(
    a: &PluginArgs,
    pod: &str,
    args: &[String],
    i: usize,
    tx: std::sync::mpsc::Sender<Event>,
) -> anyhow::Result<std::process::Child> {
    use std::io::{BufRead as _, Read as _};
    let mut child = exec(a, pod, args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("running {}", a.kubectl))?;
    let (stdout, mut stderr) = (child.stdout.take(), child.stderr.take());
    std::thread::spawn(move || {
        // stderr drained beside stdout: a chatty one cannot block the agent's rows.
        let err = std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(e) = stderr.as_mut() {
                let _ = e.read_to_string(&mut text);
            }
            text
        });
        if let Some(out) = stdout {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(Event::Line(i, line)).is_err() {
                    return;
                }
            }
        }
        let err = err.join().unwrap_or_default();
        let _ = tx.send(Event::Ended(i, err));
    });
    Ok(child)
}

/// The rows of every node, once all answered.
fn print_merged(
    rows: &[(&String, FlowRow)],
    json: bool,
    wide: bool,
    width: usize,
    nodes: usize,
) -> anyhow::Result<()> {
    if json {
        for (node, r) in rows {
            let mut v = serde_json::to_value(r)?;
            v["node"] = (*node).clone().into();
            println!("{v}");
        }
    } else if rows.is_empty() {
        eprintln!("no flagged flows on {nodes} nodes");
    } else {
        let flows: Vec<FlowRow> = rows.iter().map(|(_, r)| r.clone()).collect();
        let table = super::flows::table(&flows, wide);
        for (i, line) in table.lines().enumerate() {
            let node = if i == 0 {
                "NODE"
            } else {
                rows[i - 1].0.as_str()
            };
            println!("{node:<width$}  {line}");
        }
    }
    Ok(())
}

/// `flows` on every agent, merged: a table with a NODE column, or JSON rows with `node`.
/// `--follow` follows every node at once (at most [`FOLLOW_MAX`]); without it, [`AT_ONCE`]
/// agents are asked at a time. Filters apply on each node (`--last N`: N per node). Exit status: 4 when `--fail-if-any` and any node
/// has a matching flow (its rows are printed, as with one node), else 1 when any node's
/// command failed (named on stderr), else 0.
fn all_nodes(a: &PluginArgs, agents: &BTreeMap<String, String>) -> anyhow::Result<u8> {
    if a.command.first().map(String::as_str) != Some("flows") {
        bail!("-A runs `flows` only");
    }
    if agents.is_empty() {
        bail!(
            "no running observer pods in namespace {} with label {}",
            a.agent_namespace,
            a.agent_selector
        );
    }
    let rest = &a.command[1..];
    let (mut json, mut wide) = (false, false);
    // Ask each agent for JSON, whatever the caller's format, and print once merged. Whether
    // anything matched is decided here, from the rows: each agent is not asked to fail.
    let mut args: Vec<String> = vec!["flows".into()];
    let mut it = rest.iter();
    while let Some(x) = it.next() {
        let format = match x.as_str() {
            "-o" | "--output" => it.next().map(String::as_str),
            "--json" => Some("json"),
            x => x
                .strip_prefix("--output=")
                .or_else(|| x.strip_prefix("-o").map(|f| f.trim_start_matches('=')))
                .filter(|f| !f.is_empty()),
        };
        match format {
            Some("json") => json = true,
            Some("wide") => wide = true,
            Some("table") => {}
            Some(f) => bail!("unknown output format {f} (table, wide or json)"),
            None if x == "--fail-if-any" => {}
            None => args.push(x.clone()),
        }
    }
    let follow = args.iter().any(|x| x == "--follow");
    let fail_if_any = rest.iter().any(|x| x == "--fail-if-any");
    if follow && fail_if_any {
        bail!("--follow and --fail-if-any cannot be used together");
    }
    args.extend(["-o".into(), "json".into()]);
    let agents: Vec<(&String, &String)> = agents.iter().collect();
    let width = agents
        .iter()
        .map(|(n, _)| n.len())
        .max()
        .unwrap_or(4)
        .max(4);
    if follow && agents.len() > FOLLOW_MAX {
        bail!(
            "-A --follow follows at most {FOLLOW_MAX} nodes ({} here): follow fewer with --node, \
             or list without --follow",
            agents.len()
        );
    }
    // Every node at once with --follow (each follow lasts); else AT_ONCE at a time.
    let at_once = if follow { agents.len() } else { AT_ONCE };
    let (tx, events) = std::sync::mpsc::channel();
    let mut children = Children((0..agents.len()).map(|_| None).collect());
    let mut started = 0;
    while started < agents.len().min(at_once) {
        children.0[started] = Some(start_one(a, agents[started].1, &args, started, tx.clone())?);
        started += 1;
    }
    let mut lines: Vec<Vec<String>> = vec![Vec::new(); agents.len()];
    let mut failed = Vec::new();
    let mut running = agents.len();
    if follow && !json {
        print!("{:<width$}  {}", "NODE", super::flows::follow_header(wide));
    }
    let parse = |node: &str, l: &str| -> anyhow::Result<FlowRow> {
        serde_json::from_str(l)
            .with_context(|| format!("the agent on {node} sent a line that is not a flow"))
    };
    while running > 0 {
        let Ok(event) = events.recv() else { break };
        match event {
            Event::Line(i, l) if follow => {
                let node = agents[i].0;
                let r = parse(node, &l)?;
                if json {
                    let mut v = serde_json::to_value(&r)?;
                    v["node"] = node.clone().into();
                    println!("{v}");
                } else {
                    print!("{node:<width$}  {}", super::flows::follow_row(&r, wide));
                }
                let _ = std::io::Write::flush(&mut std::io::stdout());
            }
            Event::Line(i, l) => lines[i].push(l),
            Event::Ended(i, err) => {
                running -= 1;
                let code = children.0[i]
                    .take()
                    .and_then(|mut c| c.wait().ok())
                    .and_then(|s| s.code());
                if code != Some(0) {
                    let code = code.map_or("killed".to_string(), |c| format!("exit {c}"));
                    failed.push(format!("{}: {} ({code})", agents[i].0, err.trim()));
                }
                if started < agents.len() {
                    children.0[started] =
                        Some(start_one(a, agents[started].1, &args, started, tx.clone())?);
                    started += 1;
                }
            }
        }
    }
    let mut rows: Vec<(&String, FlowRow)> = Vec::new();
    for (i, ls) in lines.iter().enumerate() {
        for l in ls {
            rows.push((agents[i].0, parse(agents[i].0, l)?));
        }
    }
    if !follow {
        print_merged(&rows, json, wide, width, agents.len())?;
    }
    for f in &failed {
        eprintln!("observer: {f}");
    }
    Ok(if fail_if_any && !rows.is_empty() {
        super::EXIT_MATCHED
    } else if failed.is_empty() {
        0
    } else {
        1
    })
}
