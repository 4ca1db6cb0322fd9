//! `observer run` settings: flags (each also an `OBSERVER_*` environment variable), an
//! optional YAML or TOML file with the same keys, and the defaults in [`crate::defaults`].
//! Flags win over the file, the file over the defaults. Everything is validated once into a
//! typed [`Config`]; a bad value is an error that names the key and the value.

use std::{
    fmt,
    net::SocketAddr,
    path::{Path, PathBuf},
    time::Duration,
};

use observer_common::user::Cidr;
use serde::Deserialize;

use crate::defaults;

/// Flags of `observer run`.
#[derive(Debug, Default, clap::Args)]
pub struct RunArgs {
    /// Uplink interface patterns (`*` and `?` globs); repeatable or comma-separated.
    #[arg(long = "uplink", env = "OBSERVER_UPLINK", value_delimiter = ',')]
    pub uplink: Vec<String>,
    /// Pod interface patterns (host-side veths); repeatable or comma-separated.
    #[arg(long = "pod-iface", env = "OBSERVER_POD_IFACE", value_delimiter = ',')]
    pub pod_iface: Vec<String>,
    /// CIDRs inside the cluster (pod and node networks); repeatable or comma-separated.
    #[arg(
        long = "cluster-cidr",
        env = "OBSERVER_CLUSTER_CIDR",
        value_delimiter = ','
    )]
    pub cluster_cidr: Vec<String>,
    /// Sources allowed to reach pod IPs directly (LB subnets, health checkers).
    #[arg(
        long = "allow-source",
        env = "OBSERVER_ALLOW_SOURCE",
        value_delimiter = ','
    )]
    pub allow_source: Vec<String>,
    /// The Service CIDR(s).
    #[arg(
        long = "service-cidr",
        env = "OBSERVER_SERVICE_CIDR",
        value_delimiter = ','
    )]
    pub service_cidr: Vec<String>,
    /// NodePort range, `MIN-MAX` [default: 30000-32767].
    #[arg(long = "nodeport-range", env = "OBSERVER_NODEPORT_RANGE")]
    pub nodeport_range: Option<String>,
    /// Prometheus endpoint address [default: 0.0.0.0:19962].
    #[arg(long = "metrics-addr", env = "OBSERVER_METRICS_ADDR")]
    pub metrics_addr: Option<String>,
    /// How to attach: auto (TCX on Linux >= 6.6, else netlink), tcx, netlink, netlink-pods
    /// (uplinks as auto, pod veths netlink: cheaper pod churn), or uplink-egress (uplinks as
    /// auto at ingress and egress, nothing on pod veths: pod churn costs nothing, flows are
    /// not known as delivered) [default: auto].
    #[arg(long = "attach-mode", env = "OBSERVER_ATTACH_MODE")]
    pub attach_mode: Option<String>,
    /// Also push each alert line to this Alertmanager (http[s]://host[:port][/prefix])
    /// [default: off].
    #[arg(long = "alertmanager-url", env = "OBSERVER_ALERTMANAGER_URL")]
    pub alertmanager_url: Option<String>,
    /// PEM CA certificates to trust for an https Alertmanager [default: the system's roots].
    #[arg(long = "alertmanager-ca-file", env = "OBSERVER_ALERTMANAGER_CA_FILE")]
    pub alertmanager_ca_file: Option<PathBuf>,
    /// A file holding a bearer token for Alertmanager (read at each push) [default: none].
    #[arg(
        long = "alertmanager-bearer-token-file",
        env = "OBSERVER_ALERTMANAGER_BEARER_TOKEN_FILE"
    )]
    pub alertmanager_bearer_token_file: Option<PathBuf>,
    /// A basic-auth user for Alertmanager, with --alertmanager-password-file [default: none].
    #[arg(long = "alertmanager-user", env = "OBSERVER_ALERTMANAGER_USER")]
    pub alertmanager_user: Option<String>,
    /// A file holding the basic-auth password (read at each push) [default: none].
    #[arg(
        long = "alertmanager-password-file",
        env = "OBSERVER_ALERTMANAGER_PASSWORD_FILE"
    )]
    pub alertmanager_password_file: Option<PathBuf>,
    /// Use the Kubernetes API for the inventory: auto (when in-cluster config or KUBECONFIG is
    /// found), on, or off [default: auto].
    #[arg(long = "kubernetes", env = "OBSERVER_KUBERNETES")]
    pub kubernetes: Option<String>,
    /// Which pods to watch: all (every pod's address is in the cluster) or local (this node's
    /// pods only; other pods' addresses must be covered by --cluster-cidr): a watch of ~100
    /// pods instead of the cluster's [default: all].
    #[arg(long = "kubernetes-pods", env = "OBSERVER_KUBERNETES_PODS")]
    pub kubernetes_pods: Option<String>,
    /// This node's name in Kubernetes [default: the host name].
    #[arg(long = "node-name", env = "OBSERVER_NODE_NAME")]
    pub node_name: Option<String>,
    /// Only validate the settings (flags, environment, file) and exit: 0 if usable, 2 if not.
    #[arg(long = "check-config", env = "OBSERVER_CHECK_CONFIG")]
    pub check_config: bool,
    /// A YAML (.yaml/.yml) or TOML (.toml) file with the same keys as these flags.
    #[arg(long = "config", env = "OBSERVER_CONFIG")]
    pub config: Option<PathBuf>,
    /// Log format: text or json [default: text].
    #[arg(long = "log-format", env = "OBSERVER_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Log filter, e.g. info or observer=debug [default: info].
    #[arg(long = "log-level", env = "OBSERVER_LOG_LEVEL")]
    pub log_level: Option<String>,
    /// Full reconcile period, e.g. 30s [default: 30s].
    #[arg(long = "reconcile-interval", env = "OBSERVER_RECONCILE_INTERVAL")]
    pub reconcile_interval: Option<String>,
    /// Idle time after which a flagged flow is forgotten [default: 300s].
    #[arg(long = "flow-idle-timeout", env = "OBSERVER_FLOW_IDLE_TIMEOUT")]
    pub flow_idle_timeout: Option<String>,
    /// Window in which repeated alerts for one (source, pod, port) are folded [default: 60s].
    #[arg(long = "alert-window", env = "OBSERVER_ALERT_WINDOW")]
    pub alert_window: Option<String>,
    /// Distinct port labels per pod before `port="other"` [default: 16].
    #[arg(long = "ports-per-pod", env = "OBSERVER_PORTS_PER_POD")]
    pub ports_per_pod: Option<String>,
    /// Capacity of the kernel's table of flagged flows. LRU: when full, the least recently
    /// seen flow is evicted, never a new one refused [default: 65536].
    #[arg(long = "flow-table-entries", env = "OBSERVER_FLOW_TABLE_ENTRIES")]
    pub flow_table_entries: Option<String>,
    /// Capacity of the kernel's table of exact addresses (every node and pod of the cluster).
    /// When the cluster outgrows it, the addresses that do not fit are kept, retried and
    /// reported (observer_inventory_unwritten_changes) [default: 262144].
    #[arg(long = "address-table-entries", env = "OBSERVER_ADDRESS_TABLE_ENTRIES")]
    pub address_table_entries: Option<String>,
    /// How long metric series of a vanished pod are kept [default: 600s].
    #[arg(long = "pod-grace", env = "OBSERVER_POD_GRACE")]
    pub pod_grace: Option<String>,
}

/// The same keys in a file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
struct FileConfig {
    #[serde(default)]
    uplink: Vec<String>,
    #[serde(default)]
    pod_iface: Vec<String>,
    #[serde(default)]
    cluster_cidr: Vec<String>,
    #[serde(default)]
    allow_source: Vec<String>,
    #[serde(default)]
    service_cidr: Vec<String>,
    nodeport_range: Option<String>,
    metrics_addr: Option<String>,
    attach_mode: Option<String>,
    alertmanager_url: Option<String>,
    alertmanager_ca_file: Option<PathBuf>,
    alertmanager_bearer_token_file: Option<PathBuf>,
    alertmanager_user: Option<String>,
    alertmanager_password_file: Option<PathBuf>,
    kubernetes: Option<String>,
    kubernetes_pods: Option<String>,
    node_name: Option<String>,
    log_format: Option<String>,
    log_level: Option<String>,
    reconcile_interval: Option<String>,
    flow_idle_timeout: Option<String>,
    alert_window: Option<String>,
    ports_per_pod: Option<u64>,
    flow_table_entries: Option<u64>,
    address_table_entries: Option<u64>,
    pod_grace: Option<String>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// An interface name pattern with `*` (any run) and `?` (one character).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    pub fn matches(&self, name: &str) -> bool {
        fn m(p: &[u8], s: &[u8]) -> bool {
            match (p.first(), s.first()) {
                (None, None) => true,
                (Some(b'*'), _) => m(&p[1..], s) || (!s.is_empty() && m(p, &s[1..])),
                (Some(b'?'), Some(_)) => m(&p[1..], &s[1..]),
                (Some(a), Some(b)) if a == b => m(&p[1..], &s[1..]),
                _ => false,
            }
        }
        m(self.0.as_bytes(), name.as_bytes())
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The validated settings of `observer run`.
#[derive(Clone, Debug)]
pub struct Config {
    pub uplinks: Vec<Pattern>,
    pub pod_ifaces: Vec<Pattern>,
    pub cluster_cidrs: Vec<Cidr>,
    pub allow_sources: Vec<Cidr>,
    pub service_cidrs: Vec<Cidr>,
    pub nodeport_min: u16,
    pub nodeport_max: u16,
    pub metrics_addr: SocketAddr,
    pub attach_mode: crate::attach::Modes,
    /// Where and how to push alerts (`--alertmanager-*`).
    pub alertmanager: Option<crate::alertmanager::AmTarget>,
    /// Use the Kubernetes API (resolved from auto).
    pub kubernetes: bool,
    /// Watch only this node's pods (`--kubernetes-pods local`).
    pub kubernetes_local_pods: bool,
    pub node_name: String,
    pub socket: PathBuf,
    pub log_format: LogFormat,
    pub log_level: String,
    pub reconcile_interval: Duration,
    pub flow_idle_timeout: Duration,
    pub alert_window: Duration,
    pub ports_per_pod: usize,
    pub flow_table_entries: u32,
    pub address_table_entries: u32,
    pub pod_grace: Duration,
    pub recent_flows: usize,
    pub settle: Duration,
    pub refresh_interval: Duration,
}

/// A setting that cannot be used, with the key, the value and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid {key} {value:?}: {problem}")]
    Invalid {
        key: &'static str,
        value: String,
        problem: String,
    },
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("config file {path}: {problem}")]
    Parse { path: PathBuf, problem: String },
}

fn invalid(key: &'static str, value: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key,
        value: value.to_string(),
        problem: problem.into(),
    }
}

fn load_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let parse_err = |problem: String| ConfigError::Parse {
        path: path.to_path_buf(),
        problem,
    };
    match path.extension().and_then(|e| e.to_str()) {
        Some("yaml" | "yml") => {
            serde_yaml_ng::from_str(&text).map_err(|e| parse_err(e.to_string()))
        }
        Some("toml") => toml::from_str(&text).map_err(|e| parse_err(e.to_string())),
        _ => Err(parse_err(
            "unknown extension: use .yaml, .yml or .toml".to_string(),
        )),
    }
}

fn pick(flag: Vec<String>, file: Vec<String>, default: &[&str]) -> Vec<String> {
    if !flag.is_empty() {
        flag
    } else if !file.is_empty() {
        file
    } else {
        default.iter().map(|s| s.to_string()).collect()
    }
}

fn patterns(key: &'static str, values: Vec<String>) -> Result<Vec<Pattern>, ConfigError> {
    values
        .into_iter()
        .map(|v| {
            let v = v.trim().to_string();
            if v.is_empty() || v.len() > 64 {
                return Err(invalid(
                    key,
                    &v,
                    "an interface pattern of 1 to 64 characters",
                ));
            }
            if let Some(c) = v
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || "*?._-@:".contains(*c)))
            {
                return Err(invalid(
                    key,
                    &v,
                    format!("character {c:?} cannot be in an interface name"),
                ));
            }
            Ok(Pattern(v))
        })
        .collect()
}

fn cidrs(key: &'static str, values: Vec<String>) -> Result<Vec<Cidr>, ConfigError> {
    values
        .into_iter()
        .filter(|v| !v.trim().is_empty())
        .map(|v| {
            v.trim()
                .parse::<Cidr>()
                .map_err(|e| invalid(key, &v, e.problem))
        })
        .collect()
}

/// Parses `30s`, `5m`, `1h`, `250ms` or a number of seconds.
pub fn parse_duration(key: &'static str, v: &str) -> Result<Duration, ConfigError> {
    let t = v.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = num
        .parse()
        .map_err(|_| invalid(key, v, "a duration such as 30s, 5m, 1h or 250ms"))?;
    let d = match unit {
        "ms" => Duration::from_millis(n),
        "s" => Duration::from_secs(n),
        "m" => Duration::from_secs(n * 60),
        "h" => Duration::from_secs(n * 3600),
        _ => return Err(invalid(key, v, "a duration unit of ms, s, m or h")),
    };
    if d.is_zero() {
        return Err(invalid(key, v, "a duration above zero"));
    }
    Ok(d)
}

/// A whole number from the flag, else the file, else the default, within `range`.
fn number(
    key: &'static str,
    flag: Option<String>,
    file: Option<u64>,
    default: u64,
    range: std::ops::RangeInclusive<u64>,
) -> Result<u64, ConfigError> {
    let problem = || format!("a number from {} to {}", range.start(), range.end());
    let v = match flag {
        Some(v) => v
            .trim()
            .parse::<u64>()
            .map_err(|_| invalid(key, &v, problem()))?,
        None => file.unwrap_or(default),
    };
    if !range.contains(&v) {
        return Err(invalid(key, &v.to_string(), problem()));
    }
    Ok(v)
}

fn nodeport_range(v: &str) -> Result<(u16, u16), ConfigError> {
    let key = "nodeport-range";
    let (a, b) = v
        .split_once('-')
        .ok_or_else(|| invalid(key, v, "a range MIN-MAX, e.g. 30000-32767"))?;
    let port = |s: &str| {
        s.trim()
            .parse::<u16>()
            .ok()
            .filter(|p| *p > 0)
            .ok_or_else(|| invalid(key, v, "ports from 1 to 65535"))
    };
    let (a, b) = (port(a)?, port(b)?);
    if a > b {
        return Err(invalid(key, v, "MIN is above MAX"));
    }
    Ok((a, b))
}

impl Config {
    /// Validates flags over the file over the defaults. `socket` is the global `--socket`.
    pub fn from_args(args: RunArgs, socket: PathBuf) -> Result<Config, ConfigError> {
        let file = match &args.config {
            Some(p) => load_file(p)?,
            None => FileConfig::default(),
        };
        let one = |flag: Option<String>, file: Option<String>, default: &str| {
            flag.or(file).unwrap_or_else(|| default.to_string())
        };
        let nodeport = one(
            args.nodeport_range,
            file.nodeport_range,
            defaults::NODEPORT_RANGE,
        );
        let (nodeport_min, nodeport_max) = nodeport_range(&nodeport)?;
        let metrics = one(args.metrics_addr, file.metrics_addr, defaults::METRICS_ADDR);
        let metrics_addr = metrics.trim().parse().map_err(|_| {
            invalid(
                "metrics-addr",
                &metrics,
                "an address:port such as 0.0.0.0:19962 or [::]:19962",
            )
        })?;
        let log_format = match one(args.log_format, file.log_format, defaults::LOG_FORMAT).as_str()
        {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => return Err(invalid("log-format", other, "text or json")),
        };
        let attach_mode =
            match one(args.attach_mode, file.attach_mode, defaults::ATTACH_MODE).as_str() {
                "auto" => crate::attach::Modes::auto(),
                "tcx" => crate::attach::Modes::all(crate::attach::Mode::Tcx),
                "netlink" => crate::attach::Modes::all(crate::attach::Mode::Netlink),
                "netlink-pods" => crate::attach::Modes::netlink_pods(),
                "uplink-egress" => crate::attach::Modes::uplink_egress(),
                other => {
                    return Err(invalid(
                        "attach-mode",
                        other,
                        "auto, tcx, netlink, netlink-pods or uplink-egress",
                    ));
                }
            };
        let alertmanager = crate::alertmanager::AmTarget::from_settings(
            args.alertmanager_url.or(file.alertmanager_url),
            args.alertmanager_ca_file.or(file.alertmanager_ca_file),
            args.alertmanager_bearer_token_file
                .or(file.alertmanager_bearer_token_file),
            args.alertmanager_user.or(file.alertmanager_user),
            args.alertmanager_password_file
                .or(file.alertmanager_password_file),
        )
        .map_err(|e| invalid(e.key, &e.value, e.problem))?;
        let kubernetes = match one(args.kubernetes, file.kubernetes, defaults::KUBERNETES).as_str()
        {
            "auto" => crate::k8s::configured(),
            "on" => true,
            "off" => false,
            other => return Err(invalid("kubernetes", other, "auto, on or off")),
        };
        let kubernetes_local_pods = match one(
            args.kubernetes_pods,
            file.kubernetes_pods,
            defaults::KUBERNETES_PODS,
        )
        .as_str()
        {
            "all" => false,
            "local" => true,
            other => return Err(invalid("kubernetes-pods", other, "all or local")),
        };
        let node_name = match args.node_name.or(file.node_name) {
            Some(n) if !n.trim().is_empty() => n.trim().to_string(),
            Some(n) => return Err(invalid("node-name", &n, "a node name")),
            None => std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
        };
        let log_level = one(args.log_level, file.log_level, defaults::LOG_LEVEL);
        if tracing_subscriber::EnvFilter::try_new(&log_level).is_err() {
            return Err(invalid(
                "log-level",
                &log_level,
                "a level (error, warn, info, debug, trace) or a filter such as observer=debug",
            ));
        }
        let dur =
            |key: &'static str, flag: Option<String>, file: Option<String>, default: Duration| {
                match flag.or(file) {
                    Some(v) => parse_duration(key, &v),
                    None => Ok(default),
                }
            };
        let ports_per_pod = number(
            "ports-per-pod",
            args.ports_per_pod,
            file.ports_per_pod,
            defaults::PORTS_PER_POD as u64,
            1..=1024,
        )?;
        let flow_table_entries = number(
            "flow-table-entries",
            args.flow_table_entries,
            file.flow_table_entries,
            u64::from(defaults::FLOW_TABLE_ENTRIES),
            1024..=4_194_304,
        )?;
        let address_table_entries = number(
            "address-table-entries",
            args.address_table_entries,
            file.address_table_entries,
            u64::from(defaults::ADDRESS_TABLE_ENTRIES),
            1..=16_777_216,
        )?;
        let uplinks = patterns("uplink", pick(args.uplink, file.uplink, defaults::UPLINKS))?;
        let pod_ifaces = patterns(
            "pod-iface",
            pick(args.pod_iface, file.pod_iface, defaults::POD_IFACES),
        )?;
        if socket.as_os_str().is_empty() {
            return Err(invalid("socket", "", "a path"));
        }
        let cluster_cidrs = cidrs(
            "cluster-cidr",
            pick(args.cluster_cidr, file.cluster_cidr, &[]),
        )?;
        // Other nodes' pods are then known only through CIDRs: without one, every pod of
        // another node would look outside the cluster.
        if kubernetes && kubernetes_local_pods && cluster_cidrs.is_empty() {
            return Err(invalid(
                "kubernetes-pods",
                "local",
                "needs --cluster-cidr covering every pod address (the pod CIDRs, IP pools or pod subnets)",
            ));
        }
        Ok(Config {
            uplinks,
            pod_ifaces,
            cluster_cidrs,
            allow_sources: cidrs(
                "allow-source",
                pick(args.allow_source, file.allow_source, &[]),
            )?,
            service_cidrs: cidrs(
                "service-cidr",
                pick(args.service_cidr, file.service_cidr, &[]),
            )?,
            nodeport_min,
            nodeport_max,
            metrics_addr,
            attach_mode,
            alertmanager,
            kubernetes,
            kubernetes_local_pods,
            node_name,
            socket,
            log_format,
            log_level,
            reconcile_interval: dur(
                "reconcile-interval",
                args.reconcile_interval,
                file.reconcile_interval,
                defaults::RECONCILE_INTERVAL,
            )?,
            flow_idle_timeout: dur(
                "flow-idle-timeout",
                args.flow_idle_timeout,
                file.flow_idle_timeout,
                defaults::FLOW_IDLE_TIMEOUT,
            )?,
            alert_window: dur(
                "alert-window",
                args.alert_window,
                file.alert_window,
                defaults::ALERT_WINDOW,
            )?,
            ports_per_pod: ports_per_pod as usize,
            flow_table_entries: flow_table_entries as u32,
            address_table_entries: address_table_entries as u32,
            pod_grace: dur(
                "pod-grace",
                args.pod_grace,
                file.pod_grace,
                defaults::POD_GRACE,
            )?,
            // The view holds as many flows as the kernel's table: every flow in one is in the
            // other until it is counted.
            recent_flows: flow_table_entries as usize,
            settle: defaults::SETTLE,
            refresh_interval: defaults::REFRESH_INTERVAL,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(args: RunArgs) -> Result<Config, ConfigError> {
        Config::from_args(args, PathBuf::from(defaults::SOCKET))
    }

    #[test]
    fn defaults_apply() {
        let c = cfg(RunArgs::default()).unwrap();
        assert_eq!((c.nodeport_min, c.nodeport_max), (30000, 32767));
        assert_eq!(c.metrics_addr.to_string(), "0.0.0.0:19962");
        assert_eq!(c.uplinks.len(), 5);
        assert!(c.pod_ifaces.iter().any(|p| p.matches("eni9397facaed1")));
        assert!(c.uplinks.iter().any(|p| p.matches("eth1")));
        assert!(!c.uplinks.iter().any(|p| p.matches("lo")));
    }

    #[test]
    fn attach_modes_choose_programs_and_hooks() {
        use crate::attach::Role;
        use aya::programs::TcAttachType::{Egress, Ingress};
        use observer_common::names::{PROG_EGRESS, PROG_FROM_POD, PROG_TO_POD, PROG_UPLINK};
        let modes = |m: &str| {
            cfg(RunArgs {
                attach_mode: Some(m.into()),
                ..Default::default()
            })
            .unwrap()
            .attach_mode
        };
        for m in ["auto", "tcx", "netlink", "netlink-pods"] {
            let modes = modes(m);
            assert_eq!(
                modes.programs(),
                [PROG_UPLINK, PROG_TO_POD, PROG_FROM_POD],
                "{m}"
            );
            assert_eq!(modes.programs_of(Role::Uplink), [(PROG_UPLINK, Ingress)]);
            assert_ne!(modes.pod_veths_name(), "none");
        }
        // uplink-egress: both uplink hooks, nothing on pod veths, nothing more verified.
        let egress = modes("uplink-egress");
        assert_eq!(egress.programs(), [PROG_UPLINK, PROG_EGRESS]);
        assert_eq!(
            egress.programs_of(Role::Uplink),
            [(PROG_UPLINK, Ingress), (PROG_EGRESS, Egress)]
        );
        assert!(egress.programs_of(Role::Pod).is_empty());
        assert_eq!(egress.pod_veths_name(), "none");
        assert_eq!(
            egress.name(),
            format!(
                "uplinks {} (ingress and egress), pod veths none",
                crate::attach::Mode::auto().name()
            )
        );
    }

    #[test]
    fn patterns_glob() {
        let p = Pattern("cali*".into());
        assert!(p.matches("calibe254a7a7ea") && p.matches("cali") && !p.matches("xcali"));
        let q = Pattern("eth?".into());
        assert!(q.matches("eth1") && !q.matches("eth10"));
    }

    #[test]
    fn bad_values_name_key_and_value() {
        let cases: Vec<(RunArgs, &str)> = vec![
            (
                RunArgs {
                    nodeport_range: Some("32767-30000".into()),
                    ..Default::default()
                },
                "nodeport-range \"32767-30000\"",
            ),
            (
                RunArgs {
                    nodeport_range: Some("abc".into()),
                    ..Default::default()
                },
                "nodeport-range \"abc\"",
            ),
            (
                RunArgs {
                    cluster_cidr: vec!["10.0.0.0/33".into()],
                    ..Default::default()
                },
                "cluster-cidr \"10.0.0.0/33\"",
            ),
            (
                RunArgs {
                    attach_mode: Some("uplink_egress".into()),
                    ..Default::default()
                },
                "attach-mode \"uplink_egress\"",
            ),
            (
                RunArgs {
                    allow_source: vec!["nope".into()],
                    ..Default::default()
                },
                "allow-source \"nope\"",
            ),
            (
                RunArgs {
                    metrics_addr: Some("19962".into()),
                    ..Default::default()
                },
                "metrics-addr \"19962\"",
            ),
            (
                RunArgs {
                    uplink: vec!["eth 0".into()],
                    ..Default::default()
                },
                "uplink \"eth 0\"",
            ),
            (
                RunArgs {
                    log_format: Some("xml".into()),
                    ..Default::default()
                },
                "log-format \"xml\"",
            ),
            (
                RunArgs {
                    alert_window: Some("5 parsecs".into()),
                    ..Default::default()
                },
                "alert-window \"5 parsecs\"",
            ),
            (
                RunArgs {
                    ports_per_pod: Some("0".into()),
                    ..Default::default()
                },
                "ports-per-pod \"0\"",
            ),
            (
                RunArgs {
                    kubernetes_pods: Some("some".into()),
                    ..Default::default()
                },
                "kubernetes-pods \"some\"",
            ),
            // Local pods only, and nothing to cover the other nodes' pods.
            (
                RunArgs {
                    kubernetes: Some("on".into()),
                    kubernetes_pods: Some("local".into()),
                    ..Default::default()
                },
                "kubernetes-pods \"local\": needs --cluster-cidr",
            ),
        ];
        for (args, want) in cases {
            let e = cfg(args).unwrap_err().to_string();
            assert!(e.contains(want), "{e:?} should contain {want:?}");
        }
    }

    #[test]
    fn file_keys_and_flag_precedence() {
        let dir = std::env::temp_dir().join(format!("observer-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let yaml = dir.join("c.yaml");
        std::fs::write(&yaml, "cluster-cidr: [172.16.0.0/16]\nnodeport-range: 31000-31100\nallow-source: [10.0.14.0/26]\n").unwrap();
        let c = cfg(RunArgs {
            config: Some(yaml.clone()),
            nodeport_range: Some("30000-30010".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(c.cluster_cidrs[0].to_string(), "172.16.0.0/16");
        assert_eq!((c.nodeport_min, c.nodeport_max), (30000, 30010));
        let toml = dir.join("c.toml");
        std::fs::write(
            &toml,
            "service-cidr = [\"10.96.0.0/12\"]\nports-per-pod = 4\n",
        )
        .unwrap();
        let c = cfg(RunArgs {
            config: Some(toml),
            ..Default::default()
        })
        .unwrap();
        assert_eq!(
            (c.service_cidrs[0].to_string(), c.ports_per_pod),
            ("10.96.0.0/12".into(), 4)
        );
        let bad = dir.join("bad.yaml");
        std::fs::write(&bad, "clustr-cidr: [1.2.3.0/24]\n").unwrap();
        let e = cfg(RunArgs {
            config: Some(bad),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("clustr-cidr"), "{e}");
        let bad_value = dir.join("badv.yaml");
        std::fs::write(&bad_value, "service-cidr: [10.96.0.0/40]\n").unwrap();
        let e = cfg(RunArgs {
            config: Some(bad_value),
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("service-cidr \"10.96.0.0/40\""), "{e}");
        std::fs::remove_dir_all(&dir).ok();
    }
}
