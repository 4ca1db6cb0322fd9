//! The debug API's server: binds the socket, serves each client from the agent's shared
//! state, at most [`MAX_CLIENTS`] at once.

use std::{
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::{UnixListener, UnixStream},
    sync::Semaphore,
};

use super::{MAX_REQUEST, Request, error_line, line};
use crate::agent::state::Shared;

/// Connections served at once.
const MAX_CLIENTS: usize = 64;

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
            // A follower that goes away (^C, a closed pipe) frees its slot at once, not at the
            // next update: the client's end is watched for its close beside the updates.
            let mut read = reader.into_inner().into_inner();
            let mut rest = [0u8; 256];
            loop {
                let update = tokio::select! {
                    u = updates.recv() => u,
                    n = read.read(&mut rest) => match n {
                        Ok(0) | Err(_) => return Ok(()),
                        // Anything more the client sends is not a request: ignored.
                        Ok(_) => continue,
                    },
                };
                match update {
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
