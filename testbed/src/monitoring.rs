//! A real Prometheus and Alertmanager (Debian packages) inside a test namespace, on loopback
//! ports, with configs generated into a directory of the caller's. Killed on drop.

use std::{
    fs::File,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::{netns::Netns, traffic::http_get};

/// A background server process in a namespace.
pub struct Server {
    child: Child,
    pub port: u16,
    name: &'static str,
    log: std::path::PathBuf,
}

impl Server {
    fn spawn(ns: &Netns, name: &'static str, port: u16, log: &Path, args: &[String]) -> Server {
        let out = File::create(log).expect("server log");
        let child = Command::new("ip")
            .args(["netns", "exec", &ns.name])
            .args(args)
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("starting {name} ({args:?}): {e}; cargo xtask test installs it")
            });
        Server {
            child,
            port,
            name,
            log: log.to_path_buf(),
        }
    }

    /// Waits until `path` answers 200 inside `ns`.
    pub fn wait_ready(&mut self, ns: &Netns, path: &str) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                panic!(
                    "{} exited ({s}):\n{}",
                    self.name,
                    std::fs::read_to_string(&self.log).unwrap_or_default()
                );
            }
            if matches!(http_get(ns, self.port, path), Ok((200, _))) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} not ready:\n{}",
                self.name,
                std::fs::read_to_string(&self.log).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Alertmanager with one do-nothing receiver and second-scale grouping.
pub fn alertmanager(ns: &Netns, dir: &Path, port: u16) -> Server {
    let mut s = alertmanager_with(ns, dir, port, &[]);
    s.wait_ready(ns, "/-/ready");
    s
}

/// As [`alertmanager`], with more arguments (a `--web.config.file` for TLS and basic auth),
/// not waited for: the caller checks readiness in the way its web config allows.
pub fn alertmanager_with(ns: &Netns, dir: &Path, port: u16, extra: &[String]) -> Server {
    std::fs::create_dir_all(dir.join("am-data")).expect("am dir");
    let cfg = dir.join("alertmanager.yml");
    std::fs::write(
        &cfg,
        "route:\n  receiver: blackhole\n  group_wait: 1s\n  group_interval: 1s\n  repeat_interval: 1h\nreceivers:\n  - name: blackhole\n",
    )
    .expect("am config");
    let mut args = vec![
        "/usr/bin/prometheus-alertmanager".into(),
        format!("--config.file={}", cfg.display()),
        format!("--storage.path={}", dir.join("am-data").display()),
        format!("--web.listen-address=127.0.0.1:{port}"),
        "--cluster.listen-address=".into(),
    ];
    args.extend_from_slice(extra);
    Server::spawn(
        ns,
        "alertmanager",
        port,
        &dir.join("alertmanager.log"),
        &args,
    )
}

/// Prometheus scraping `targets` (job "observer") every second, evaluating `rules` every
/// second, and sending to the Alertmanager on `am_port`.
pub fn prometheus(
    ns: &Netns,
    dir: &Path,
    port: u16,
    targets: &[u16],
    rules: &Path,
    am_port: u16,
) -> Server {
    let targets: Vec<String> = targets.iter().map(|p| format!("'127.0.0.1:{p}'")).collect();
    let scrape = format!(
        "  - job_name: observer\n    static_configs:\n      - targets: [{}]\n",
        targets.join(", ")
    );
    prometheus_with(ns, dir, port, &scrape, rules, am_port)
}

/// Prometheus with the given `scrape_configs` entries (YAML, indented as list items under
/// `scrape_configs:`), scraping and evaluating every second.
pub fn prometheus_with(
    ns: &Netns,
    dir: &Path,
    port: u16,
    scrape_configs: &str,
    rules: &Path,
    am_port: u16,
) -> Server {
    std::fs::create_dir_all(dir.join("prom-data")).expect("prom dir");
    let cfg = dir.join("prometheus.yml");
    std::fs::write(
        &cfg,
        format!(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {}\nalerting:\n  alertmanagers:\n    - static_configs:\n        - targets: ['127.0.0.1:{am_port}']\nscrape_configs:\n{scrape_configs}",
            rules.display(),
        ),
    )
    .expect("prom config");
    let mut s = Server::spawn(
        ns,
        "prometheus",
        port,
        &dir.join("prometheus.log"),
        &[
            "/usr/bin/prometheus".into(),
            format!("--config.file={}", cfg.display()),
            format!("--storage.tsdb.path={}", dir.join("prom-data").display()),
            format!("--web.listen-address=127.0.0.1:{port}"),
        ],
    );
    s.wait_ready(ns, "/-/ready");
    s
}

/// The rules file `rules` with every `for:` cut to 0 s (for a test that cannot wait minutes),
/// written into `dir`; returns its path.
pub fn fast_rules(rules: &Path, dir: &Path) -> std::path::PathBuf {
    let text = std::fs::read_to_string(rules).expect("the rules file");
    let fast: Vec<String> = text
        .lines()
        .map(|l| {
            if l.trim().starts_with("for:") {
                "        for: 0s".to_string()
            } else {
                l.to_string()
            }
        })
        .collect();
    let p = dir.join("rules.yml");
    std::fs::write(&p, fast.join("\n")).expect("the fast rules");
    p
}
