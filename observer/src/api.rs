//! The local debug API: JSON lines over a unix socket (mode 0600, never on the network), used
//! by `observer flows|status|explain` through `kubectl exec`. One request line per
//! connection; the answer is one or more JSON lines, then the server closes (except with
//! `follow`). A bad request gets `{"error": ...}`, never a crash.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use serde::{Deserialize, Serialize};
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::Semaphore,
};

use crate::{ifaces::IfaceStatus, inventory::InventoryStatus, state::Shared};

/// The longest request line accepted.
pub const MAX_REQUEST: usize = 64 * 1024;
/// Connections served at once.
const MAX_CLIENTS: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case", deny_unknown_fields)]
pub enum Request {
    Flows {
        #[serde(default)]
        verdict: Option<String>,
        #[serde(default)]
        follow: bool,
    },
    Status {},
    /// Remediation for every direct path in the recent flows.
    Suggest {},
    Explain {
        src: String,
        dst: String,
        #[serde(default)]
        protocol: Option<String>,
    },
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failing {
    pub iface: String,
    pub error: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Status {
    pub version: String,
    pub kernel: String,
    pub attach_mode: String,
    pub interfaces: Vec<IfaceStatusOut>,
    pub failing: Vec<Failing>,
    pub attach_errors: u64,
    pub inventory: InventoryOut,
    pub events_lost: u64,
    pub flow_table_entries: u64,
    pub flow_table_capacity: u32,
    pub recent_flows: usize,
    /// Direct flows first seen before the inventory's first full sync, held unjudged.
    #[serde(default)]
    pub held_flows: usize,
    /// Flow refreshes (every `--refresh-interval`) since the agent started.
    #[serde(default)]
    pub flow_refreshes: u64,
}

/// [`IfaceStatus`] on the wire.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IfaceStatusOut {
    pub name: String,
    pub index: u32,
    pub role: String,
    pub mode: String,
    pub foreign: Vec<String>,
    /// Another program runs before ours and ours could not be moved back in front.
    #[serde(default)]
    pub not_first: bool,
}

impl From<IfaceStatus> for IfaceStatusOut {
    fn from(s: IfaceStatus) -> Self {
        IfaceStatusOut {
            name: s.name,
            index: s.index,
            role: s.role.to_string(),
            mode: s.mode.to_string(),
            foreign: s.foreign,
            not_first: s.not_first,
        }
    }
}

/// [`InventoryStatus`] on the wire.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct InventoryOut {
    pub mode: String,
    #[serde(default)]
    pub synced: bool,
    #[serde(default)]
    pub stale: bool,
    pub pods: usize,
    pub node_ips: usize,
    #[serde(default)]
    pub addresses: usize,
    pub cidrs: usize,
    /// Changes the kernel refused (a full map), kept and retried.
    #[serde(default)]
    pub unwritten: usize,
    pub last_update_unix: f64,
    /// Syncs of the inventory to the maps so far.
    #[serde(default)]
    pub syncs: u64,
    /// Entries written to or removed from the address maps so far.
    #[serde(default)]
    pub writes: u64,
}

impl From<InventoryStatus> for InventoryOut {
    fn from(s: InventoryStatus) -> Self {
        InventoryOut {
            mode: s.mode.to_string(),
            synced: s.synced,
            stale: s.stale,
            pods: s.pods,
            node_ips: s.node_ips,
            addresses: s.addresses,
            cidrs: s.cidrs,
            unwritten: s.unwritten,
            last_update_unix: s.last_update_unix,
            syncs: s.syncs,
            writes: s.writes,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("creating the socket directory {path}: {source}")]
    Dir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another observer agent is already serving {0}")]
    InUse(PathBuf),
    #[error("binding the socket {path}: {source}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Binds the socket: its directory is created 0700, a stale socket file (no agent behind it)
/// is replaced, and the socket is made 0600.
pub async fn bind(path: &Path) -> Result<UnixListener, ApiError> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
        && !dir.exists()
    {
        std::fs::create_dir_all(dir).map_err(|source| ApiError::Dir {
            path: dir.to_path_buf(),
            source,
        })?;
        let _ = std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700));
    }
    if path.exists() {
        if UnixStream::connect(path).await.is_ok() {
            return Err(ApiError::InUse(path.to_path_buf()));
        }
        let _ = std::fs::remove_file(path);
    }
    let bind_err = |source| ApiError::Bind {
        path: path.to_path_buf(),
        source,
    };
    let listener = UnixListener::bind(path).map_err(bind_err)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(bind_err)?;
    Ok(listener)
}

/// Serves connections until the task is dropped.
pub async fn serve(listener: UnixListener, shared: Arc<Shared>) {
    let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let Ok(permit) = slots.clone().try_acquire_owned() else {
            let mut s = stream;
            let _ = s
                .write_all(error_line("too many clients; try again").as_bytes())
                .await;
            continue;
        };
        let shared = shared.clone();
        tokio::spawn(async move {
            let _permit = permit;
            if let Err(e) = handle(stream, &shared).await {
                tracing::debug!(error = %e, "debug API client");
            }
        });
    }
}

fn error_line(msg: &str) -> String {
    let mut s = serde_json::json!({ "error": msg }).to_string();
    s.push('\n');
    s
}

/// One JSON line.
pub fn line<T: Serialize>(v: &T) -> String {
    let mut s = serde_json::to_string(v).unwrap_or_else(|e| error_line(&e.to_string()));
    s.push('\n');
    s
}

async fn handle(stream: UnixStream, shared: &Shared) -> std::io::Result<()> {
    let (read, mut write) = stream.into_split();
    let mut reader = BufReader::new(read.take(MAX_REQUEST as u64 + 1));
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(10), reader.read_until(b'\n', &mut buf))
        .await
        .unwrap_or(Ok(0))?;
    if n == 0 {
        return write
            .write_all(error_line("empty request").as_bytes())
            .await;
    }
    if buf.len() > MAX_REQUEST {
        return write
            .write_all(error_line("request longer than 64 KiB").as_bytes())
            .await;
    }
    let req: Request = match serde_json::from_slice(&buf) {
        Ok(r) => r,
        Err(e) => {
            return write
                .write_all(error_line(&format!("bad request: {e}")).as_bytes())
                .await;
        }
    };
    match req {
        Request::Status {} => write.write_all(line(&shared.status()).as_bytes()).await,
        Request::Suggest {} => {
            for r in shared.suggestions() {
                write.write_all(line(&r).as_bytes()).await?;
            }
            Ok(())
        }
        Request::Explain { src, dst, protocol } => {
            let out = match shared.explain(&src, &dst, protocol.as_deref()) {
                Ok(e) => line(&e),
                Err(e) => error_line(&e.to_string()),
            };
            write.write_all(out.as_bytes()).await
        }
        Request::Flows { verdict, follow } => {
            if let Some(v) = &verdict
                && !observer_common::verdict::Verdict::ALL
                    .iter()
                    .any(|x| x.name() == v)
            {
                return write
                    .write_all(error_line(&format!("unknown verdict {v:?}")).as_bytes())
                    .await;
            }
            let (rows, mut updates) = {
                let t = shared.tracker.lock().unwrap_or_else(|p| p.into_inner());
                (t.rows(verdict.as_deref()), t.subscribe())
            };
            for r in &rows {
                write.write_all(line(r).as_bytes()).await?;
            }
            if !follow {
                return Ok(());
            }
            loop {
                match updates.recv().await {
                    Ok(r) => {
                        if verdict.as_deref().is_none_or(|v| r.verdict == v) {
                            write.write_all(line(&r).as_bytes()).await?;
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        write
                            .write_all(
                                error_line(&format!("{n} updates skipped: the reader is too slow"))
                                    .as_bytes(),
                            )
                            .await?;
                    }
                    Err(_) => return Ok(()),
                }
            }
        }
    }
}
