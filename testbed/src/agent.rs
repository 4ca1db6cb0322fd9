//! `observer run` as a process inside a node namespace, with its socket and log in a
//! directory of the caller's, for the end-to-end tests and the demo.

use std::{
    fs::{File, OpenOptions},
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Output, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::netns::Netns;

/// A running agent; killed on drop if still running.
pub struct AgentProc {
    child: Child,
    pub bin: PathBuf,
    pub socket: PathBuf,
    pub log: PathBuf,
    pub metrics_port: u16,
}

impl AgentProc {
    /// Starts `observer run` in `ns` and waits until its debug API answers.
    pub fn start(
        bin: &Path,
        ns: &Netns,
        dir: &Path,
        metrics_port: u16,
        args: &[&str],
    ) -> AgentProc {
        Self::start_env(bin, ns, dir, metrics_port, args, &[])
    }

    /// As [`AgentProc::start`], with environment variables (e.g. KUBECONFIG).
    pub fn start_env(
        bin: &Path,
        ns: &Netns,
        dir: &Path,
        metrics_port: u16,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> AgentProc {
        std::fs::create_dir_all(dir).expect("agent directory");
        let socket = dir.join("observer.sock");
        let log = dir.join("agent.log");
        let err = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .expect("agent log");
        let metrics = format!("127.0.0.1:{metrics_port}");
        // bpffs is the machine's, not the node namespace's: agents of parallel tests would
        // share the default state directory. A test of kept state passes its own.
        let state: &[&str] = if args.contains(&"--state-dir") {
            &[]
        } else {
            &["--state-dir", "none"]
        };
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .arg(bin)
            .arg("--socket")
            .arg(&socket)
            .args(["run", "--metrics-addr", &metrics, "--log-format", "json"])
            .args(state)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()
            .expect("starting observer run");
        let mut agent = AgentProc {
            child,
            bin: bin.to_path_buf(),
            socket,
            log,
            metrics_port,
        };
        agent.wait_ready();
        agent
    }

    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("observer run exited early ({status}):\n{}", self.log_text());
            }
            if self.cli(&["status", "--json"]).status.success() {
                return;
            }
            if Instant::now() > deadline {
                panic!("observer run did not become ready:\n{}", self.log_text());
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Runs `observer --socket <ours> <args>`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(&self.bin)
            .arg("--socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("running the observer CLI")
    }

    /// The process id (also the agent's: `ip netns exec` execs it).
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal without waiting (SIGSTOP, SIGCONT...).
    pub fn send(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, sig) };
    }

    /// Stops the agent (SIGSTOP) and waits until every one of its threads is stopped, so
    /// nothing it does afterwards can come from before the stop.
    pub fn stop(&self) {
        self.send(libc::SIGSTOP);
        let task = format!("/proc/{}/task", self.pid());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stopped = std::fs::read_dir(&task).is_ok_and(|d| {
                d.flatten().all(|t| {
                    std::fs::read_to_string(t.path().join("stat")).is_ok_and(|s| {
                        // The state follows the parenthesised command name.
                        s.rsplit_once(") ")
                            .is_some_and(|(_, rest)| rest.starts_with('T') || rest.starts_with('t'))
                    })
                })
            });
            if stopped {
                return;
            }
            assert!(Instant::now() < deadline, "the agent did not stop");
            thread::sleep(Duration::from_millis(5));
        }
    }

    /// `max_entries` of the agent's own maps of one BPF map type, as the kernel reports them
    /// in `/proc/<pid>/fdinfo` (for a ring buffer: its size in bytes).
    pub fn map_sizes(&self, map_type: u32) -> Vec<u64> {
        let dir = format!("/proc/{}/fdinfo", self.pid());
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir)
            .expect("the agent's fdinfo")
            .flatten()
        {
            let Ok(info) = std::fs::read_to_string(e.path()) else {
                continue;
            };
            let field = |name: &str| {
                info.lines()
                    .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
            };
            if field("map_type:") == Some(u64::from(map_type))
                && let Some(n) = field("max_entries:")
            {
                out.push(n);
            }
        }
        out
    }

    /// Sends a signal and waits (at most 30 s, the DaemonSet's grace period: on SIGTERM the
    /// agent first judges the direct flows it has seen) for the exit.
    pub fn signal(&mut self, sig: i32) -> ExitStatus {
        self.send(sig);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                return s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "observer did not exit after signal {sig}:\n{}",
                    self.log_text()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The JSON log lines (one object each).
    pub fn log_lines(&self) -> Vec<String> {
        self.log_text().lines().map(str::to_string).collect()
    }

    /// Truncates the log (between phases of a test).
    pub fn clear_log(&self) {
        let _ = File::create(&self.log);
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
