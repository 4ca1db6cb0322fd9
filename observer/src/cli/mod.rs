//! The command line: `observer run` and the debug clients `flows`, `status`, `explain`,
//! with [`flows`] (the `flows` output: formats, filters, `--follow`) and [`plugin`]
//! (`kubectl observer`: finds the agent of a node and runs the command there). The clients
//! speak the agent's wire types (`observer::agent::api`); `run` hands a validated
//! `observer::agent::config::Config` to the agent's runtime.

use std::{io::Write, path::PathBuf, process::ExitCode};

use clap::{Parser, Subcommand};

use std::path::Path;

mod flows;
mod plugin;

use flows::{Filters, Output};
use observer::{
    agent::{
        api::{self, Explanation, FlowRow, Request},
        config::{Config, LogFormat, RunArgs},
    },
    defaults,
};
use tokio::{
    io::{AsyncBufReadExt, AsyncWriteExt, BufReader},
    net::UnixStream,
};

/// observer: tells when a pod was reached straight on its pod IP from outside the cluster.
#[derive(Debug, Parser)]
#[command(name = "observer", version, about)]
pub struct Cli {
    /// The agent's debug socket (served by `run`, used by the other commands).
    #[arg(long, global = true, env = "OBSERVER_SOCKET", default_value = defaults::SOCKET)]
    pub socket: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent: attach, follow the node, serve metrics and the debug API.
    Run(Box<RunArgs>),
    /// Flagged flows the agent has seen recently.
    ///
    /// Exit status: 0 ok (with --fail-if-any: no flow matched), 1 the agent answered an error,
    /// 2 usage, 3 no agent reachable, 4 --fail-if-any and some flow matched.
    Flows {
        #[command(flatten)]
        filters: Filters,
        /// Output format.
        #[arg(short = 'o', long, value_enum, default_value_t = Output::Table)]
        output: Output,
        /// The same as `-o json`.
        #[arg(long)]
        json: bool,
        /// Keep printing new and updated flows (a header, then aligned rows).
        #[arg(long, conflicts_with_all = ["fail_if_any", "last"])]
        follow: bool,
        /// Exit 4 when any flow passes the filters, 0 when none does (for scripts).
        #[arg(long)]
        fail_if_any: bool,
        /// Print a NetworkPolicy (and the network change) for every direct path seen.
        #[arg(long, conflicts_with_all = ["follow", "verdict"])]
        suggest_policy: bool,
    },
    /// Attached interfaces, foreign programs, inventory, lost events, flow-table use.
    Status {
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The verdict a new flow from SRC to DST[:PORT] would get now, and why.
    Explain {
        /// Source address.
        src: String,
        /// Destination: ADDRESS, ADDRESS:PORT or [IPv6]:PORT.
        dst: String,
        /// tcp, udp or icmp [default: tcp].
        #[arg(long)]
        protocol: Option<String>,
        /// JSON instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The kubectl plugin (installed as `kubectl-observer`): run a command on the agent of a
    /// node (`--node`, `--pod`), or `flows` on every node's agent (`-A`).
    Kubectl(plugin::PluginArgs),
    /// A shell completion script for the command line (bash, zsh, fish, elvish, powershell).
    Completion { shell: clap_complete::Shell },
}

/// No agent serves the socket (exit status 3).
#[derive(Debug, thiserror::Error)]
#[error(
    "no observer agent is serving {socket} ({error}); is `observer run` running (kubectl exec into the observer pod), and is --socket / OBSERVER_SOCKET the same?"
)]
struct Unreachable {
    socket: String,
    error: std::io::Error,
}

/// Exit status of `flows --fail-if-any` when a flow matched.
const EXIT_MATCHED: u8 = 4;
/// Exit status when no agent is reachable.
const EXIT_UNREACHABLE: u8 = 3;

fn init_logs(cfg: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&cfg.log_level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match cfg.log_format {
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .init(),
        LogFormat::Text => builder.init(),
    }
}

/// Splits text into lines of at most `width` characters, at spaces.
fn wrap(text: &str, width: usize) -> Vec<String> {
    textwrap::wrap(text, width)
        .into_iter()
        .map(|l| l.into_owned())
        .collect()
}

async fn client(socket: PathBuf, command: Command) -> anyhow::Result<u8> {
    let mut stdout = std::io::stdout();
    match command {
        Command::Run(_) | Command::Completion { .. } => unreachable!("handled by main"),
        Command::Kubectl(args) => plugin::run(args).await,
        Command::Flows {
            suggest_policy: true,
            output,
            json,
            ..
        } => {
            let json = json || output == Output::Json;
            let mut remedies = Vec::new();
            let mut bad = None;
            request(
                &socket,
                &Request::Suggest {},
                |l| match serde_json::from_str::<api::Remedy>(l) {
                    Ok(r) => remedies.push(r),
                    Err(e) => bad = Some(e),
                },
            )
            .await?;
            if let Some(e) = bad {
                anyhow::bail!("the agent sent a line that is not a remedy: {e}");
            }
            if remedies.is_empty() {
                println!("# no direct paths in the recent flows: nothing to suggest");
            }
            for r in remedies {
                if json {
                    println!("{}", serde_json::to_string(&r)?);
                    continue;
                }
                println!("---");
                for l in wrap(&r.hint, 96) {
                    println!("# {l}");
                }
                print!("{}", r.network_policy);
            }
            Ok(0)
        }
        Command::Flows {
            filters,
            output,
            json,
            follow,
            fail_if_any,
            ..
        } => {
            let output = if json { Output::Json } else { output };
            let wide = output == Output::Wide;
            let req = Request::Flows {
                verdict: filters.verdict.clone(),
                follow,
            };
            if follow {
                if output != Output::Json {
                    let _ = write!(stdout, "{}", flows::follow_header(wide));
                    let _ = stdout.flush();
                }
                request(&socket, &req, |l| {
                    let Ok(r) = parse_flow(l) else {
                        return;
                    };
                    if !filters.matches(&r, jiff::Timestamp::now()) {
                        return;
                    }
                    if output == Output::Json {
                        let _ = writeln!(stdout, "{l}");
                    } else {
                        let _ = write!(stdout, "{}", flows::follow_row(&r, wide));
                    }
                    let _ = stdout.flush();
                })
                .await?;
                return Ok(0);
            }
            let mut rows = Vec::new();
            let mut bad = None;
            request(&socket, &req, |l| match parse_flow(l) {
                Ok(r) => rows.push(r),
                Err(e) => bad = Some(e),
            })
            .await?;
            if let Some(e) = bad {
                anyhow::bail!("the agent sent a line that is not a flow: {e}");
            }
            let rows = filters.apply(rows);
            match output {
                Output::Json => {
                    for r in &rows {
                        println!("{}", serde_json::to_string(r)?);
                    }
                }
                _ if rows.is_empty() => eprintln!("no flagged flows"),
                _ => print!("{}", flows::table(&rows, wide)),
            }
            Ok(if fail_if_any && !rows.is_empty() {
                EXIT_MATCHED
            } else {
                0
            })
        }
        Command::Status { json } => {
            let mut answer = String::new();
            request(&socket, &Request::Status {}, |l| answer = l.to_string()).await?;
            if json {
                println!("{answer}");
                return Ok(0);
            }
            let s: api::Status = serde_json::from_str(&answer)?;
            println!(
                "observer {} on kernel {} (attach: {})",
                s.version, s.kernel, s.attach_mode
            );
            println!("interfaces:");
            for i in &s.interfaces {
                let foreign = if i.foreign.is_empty() {
                    String::new()
                } else {
                    format!("  foreign: {}", i.foreign.join(", "))
                };
                let behind = if i.not_first {
                    "  NOT FIRST: another program runs before ours"
                } else {
                    ""
                };
                println!(
                    "  {:<16} {:<6} {:<7} index {}{}{}",
                    i.name, i.role, i.mode, i.index, foreign, behind
                );
            }
            for f in &s.failing {
                println!("  {:<16} FAILING: {}", f.iface, f.error);
            }
            println!("attach errors: {}", s.attach_errors);
            println!(
                "inventory ({}): {} local pods, {} node addresses, {} CIDRs, last update {}",
                s.inventory.mode,
                s.inventory.pods,
                s.inventory.node_ips,
                s.inventory.cidrs,
                observer::kernel::clock::rfc3339(
                    std::time::UNIX_EPOCH
                        + std::time::Duration::from_secs_f64(s.inventory.last_update_unix.max(0.0))
                )
            );
            if !s.inventory.synced {
                println!(
                    "  first full sync pending: {} direct flows held, judged again once it is in (no alert until then)",
                    s.held_flows
                );
            }
            if s.inventory.unwritten > 0 {
                println!(
                    "  {} inventory changes refused by the kernel (a full map, see --address-table-entries): kept and retried",
                    s.inventory.unwritten
                );
            }
            println!(
                "flow table: {}/{} entries, {} recent flows, {} events lost",
                s.flow_table_entries, s.flow_table_capacity, s.recent_flows, s.events_lost
            );
            Ok(0)
        }
        Command::Explain {
            src,
            dst,
            protocol,
            json,
        } => {
            let mut answer = String::new();
            request(&socket, &Request::Explain { src, dst, protocol }, |l| {
                answer = l.to_string()
            })
            .await?;
            if json {
                println!("{answer}");
                return Ok(0);
            }
            let e: Explanation = serde_json::from_str(&answer)?;
            println!("{}", e.packet);
            println!(
                "  verdict: {}{}",
                e.verdict,
                if e.alert { " (ALERT)" } else { "" }
            );
            println!("  why:     {}", e.reason);
            println!(
                "  source:      {}",
                if e.src_roles.is_empty() {
                    "outside the cluster".to_string()
                } else {
                    e.src_roles.join(", ")
                }
            );
            println!(
                "  destination: {}",
                if e.dst_roles.is_empty() {
                    "nothing this node knows".to_string()
                } else {
                    e.dst_roles.join(", ")
                }
            );
            if let Some(r) = &e.remedy {
                println!("  fix:");
                for l in wrap(&r.hint, 92) {
                    println!("    {l}");
                }
                println!("  NetworkPolicy:");
                for l in r.network_policy.lines() {
                    println!("    {l}");
                }
            }
            if let Some(p) = e.pod {
                println!(
                    "  pod:         {} (interface {})",
                    if p.namespace.is_empty() {
                        p.name
                    } else {
                        format!("{}/{}", p.namespace, p.name)
                    },
                    p.iface
                );
            }
            Ok(0)
        }
    }
}

/// Runs the command line; returns the process exit code.
pub fn main() -> ExitCode {
    // Installed as `kubectl-observer`, the binary is the kubectl plugin.
    let mut argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if argv
        .first()
        .and_then(|a| Path::new(a).file_name())
        .is_some_and(|n| n == "kubectl-observer")
    {
        argv.insert(1, "kubectl".into());
    }
    let cli = Cli::parse_from(argv);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("observer: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match cli.command {
        Command::Run(args) => {
            let check = args.check_config;
            let cfg = match Config::from_args(*args, cli.socket) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("observer: {e}");
                    return ExitCode::from(2);
                }
            };
            if check {
                println!("configuration OK");
                return ExitCode::SUCCESS;
            }
            init_logs(&cfg);
            match runtime.block_on(observer::agent::runtime::run(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!(error = format!("{e:#}"), "observer stopped");
                    eprintln!("observer: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Completion { shell } => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "observer", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        command => match runtime.block_on(client(cli.socket, command)) {
            Ok(code) => ExitCode::from(code),
            Err(e) => {
                eprintln!("observer: {e:#}");
                if e.downcast_ref::<Unreachable>().is_some() {
                    ExitCode::from(EXIT_UNREACHABLE)
                } else {
                    ExitCode::FAILURE
                }
            }
        },
    }
}

/// A client request: the raw answer lines. Fails clearly when no agent serves the socket.
async fn request(
    socket: &Path,
    req: &Request,
    mut on_line: impl FnMut(&str),
) -> anyhow::Result<()> {
    let stream = UnixStream::connect(socket)
        .await
        .map_err(|error| Unreachable {
            socket: socket.display().to_string(),
            error,
        })?;
    let (read, mut write) = stream.into_split();
    write.write_all(api::line(req).as_bytes()).await?;
    let mut lines = BufReader::new(read).lines();
    while let Some(l) = lines.next_line().await? {
        if let Ok(serde_json::Value::Object(o)) = serde_json::from_str::<serde_json::Value>(&l)
            && let Some(e) = o.get("error").and_then(|e| e.as_str())
        {
            anyhow::bail!("the agent answered: {e}");
        }
        on_line(&l);
    }
    Ok(())
}

/// Parses a flow line.
fn parse_flow(l: &str) -> anyhow::Result<FlowRow> {
    Ok(serde_json::from_str(l)?)
}
