//! How the settings are read and checked: the file, each kind of value (interface patterns,
//! CIDRs, durations, numbers, the NodePort range), and flags over the file over the defaults
//! into one [`Config`]. Every error names the key and the value.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use observer_common::user::Cidr;

use super::{Config, ConfigError, DsrMarks, FileConfig, LogFormat, RunArgs};
use crate::{defaults, kernel::ifaces::Pattern};

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
        .map(|v| Pattern::new(v.trim()).map_err(|why| invalid(key, v.trim(), why)))
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

/// `--state-dir`: an absolute path, or `none`.
fn state_dir(v: String) -> Result<Option<PathBuf>, ConfigError> {
    let t = v.trim();
    if t == "none" {
        return Ok(None);
    }
    let p = PathBuf::from(t);
    if !p.is_absolute() {
        return Err(invalid(
            "state-dir",
            &v,
            "an absolute path on bpffs (such as /sys/fs/bpf/observer), or none",
        ));
    }
    Ok(Some(p))
}

/// The longest `--peer-wait`: every direct access is alerted on this much later.
const PEER_WAIT_MAX: Duration = Duration::from_secs(60);

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
        let metrics_addr =
            crate::agent::metrics_endpoint::listen_addr(metrics.trim()).ok_or_else(|| {
                invalid(
                    "metrics-addr",
                    &metrics,
                    "an address:port such as 0.0.0.0:19962, 10.0.7.223:19962 or [::]:19962",
                )
            })?;
        let metrics = metrics_endpoint(
            metrics_addr,
            args.metrics_tls_cert_file.or(file.metrics_tls_cert_file),
            args.metrics_tls_key_file.or(file.metrics_tls_key_file),
            args.metrics_bearer_token_file
                .or(file.metrics_bearer_token_file),
        )?;
        let log_format = match one(args.log_format, file.log_format, defaults::LOG_FORMAT).as_str()
        {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            other => return Err(invalid("log-format", other, "text or json")),
        };
        let dsr_marks = match one(args.dsr_marks, file.dsr_marks, defaults::DSR_MARKS).as_str() {
            "auto" => DsrMarks::Auto,
            "cilium" => DsrMarks::Cilium,
            "off" => DsrMarks::Off,
            other => return Err(invalid("dsr-marks", other, "auto, cilium or off")),
        };
        let attach_mode = match one(args.attach_mode, file.attach_mode, defaults::ATTACH_MODE)
            .as_str()
        {
            "auto" => crate::kernel::attach::Modes::auto(),
            "tcx" => crate::kernel::attach::Modes::all(crate::kernel::attach::Mode::Tcx),
            "netlink" => crate::kernel::attach::Modes::all(crate::kernel::attach::Mode::Netlink),
            "netlink-pods" => crate::kernel::attach::Modes::netlink_pods(),
            "uplink-egress" => crate::kernel::attach::Modes::uplink_egress(),
            other => {
                return Err(invalid(
                    "attach-mode",
                    other,
                    "auto, tcx, netlink, netlink-pods or uplink-egress",
                ));
            }
        };
        let alertmanager = crate::export::alertmanager::AmTarget::from_settings(
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
            "auto" => crate::inventory::kubernetes::configured(),
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
        let peer_wait = dur(
            "peer-wait",
            args.peer_wait.clone(),
            file.peer_wait.clone(),
            defaults::PEER_WAIT,
        )?;
        if peer_wait > PEER_WAIT_MAX {
            let v = args.peer_wait.or(file.peer_wait).unwrap_or_default();
            return Err(invalid(
                "peer-wait",
                &v,
                "at most 60s: every direct access waits this long before it is alerted on",
            ));
        }
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
        let exclude_ifaces = patterns(
            "exclude-iface",
            pick(
                args.exclude_iface,
                file.exclude_iface,
                defaults::EXCLUDE_IFACES,
            ),
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
            exclude_ifaces,
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
            metrics,
            attach_mode,
            dsr_marks,
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
            peer_wait,
            state_dir: state_dir(one(args.state_dir, file.state_dir, defaults::STATE_DIR))?,
            // The view holds as many flows as the kernel's table: every flow in one is in the
            // other until it is counted.
            recent_flows: flow_table_entries as usize,
            settle: defaults::SETTLE,
            refresh_interval: defaults::REFRESH_INTERVAL,
        })
    }
}

/// The metrics endpoint's TLS and token files, checked now: both TLS files or neither, each
/// loading, a token file holding a token.
fn metrics_endpoint(
    addr: std::net::SocketAddr,
    cert: Option<std::path::PathBuf>,
    key: Option<std::path::PathBuf>,
    token: Option<std::path::PathBuf>,
) -> Result<crate::agent::metrics_endpoint::MetricsEndpoint, ConfigError> {
    use crate::agent::metrics_endpoint::{MetricsEndpoint, read_token, server_config};
    let shown = |p: &std::path::Path| p.display().to_string();
    let tls = match (cert, key) {
        (None, None) => None,
        (Some(c), Some(k)) => {
            server_config(&c, &k)
                .map_err(|e| invalid("metrics-tls-cert-file", &shown(&c), e.to_string()))?;
            Some((c, k))
        }
        (Some(c), None) => {
            return Err(invalid(
                "metrics-tls-cert-file",
                &shown(&c),
                "with --metrics-tls-key-file",
            ));
        }
        (None, Some(k)) => {
            return Err(invalid(
                "metrics-tls-key-file",
                &shown(&k),
                "with --metrics-tls-cert-file",
            ));
        }
    };
    if let Some(t) = &token {
        read_token(t)
            .map_err(|e| invalid("metrics-bearer-token-file", &shown(t), e.to_string()))?;
    }
    Ok(MetricsEndpoint {
        addr,
        tls,
        bearer_token_file: token,
    })
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
        assert_eq!(c.metrics.addr.to_string(), "0.0.0.0:19962");
        assert_eq!(c.uplinks.len(), 5);
        assert!(c.pod_ifaces.iter().any(|p| p.matches("eni9397facaed1")));
        assert!(c.uplinks.iter().any(|p| p.matches("eth1")));
        assert!(!c.uplinks.iter().any(|p| p.matches("lo")));
    }

    #[test]
    fn attach_modes_choose_programs_and_hooks() {
        use crate::kernel::attach::Role;
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
                crate::kernel::attach::Mode::auto().name()
            )
        );
    }

    #[test]
    fn kept_state_and_peer_wait() {
        let c = cfg(RunArgs::default()).unwrap();
        assert_eq!(
            c.state_dir.as_deref(),
            Some(std::path::Path::new(defaults::STATE_DIR))
        );
        assert_eq!(c.peer_wait, defaults::PEER_WAIT);
        let c = cfg(RunArgs {
            state_dir: Some("none".into()),
            peer_wait: Some("30s".into()),
            ..Default::default()
        })
        .unwrap();
        assert_eq!((c.state_dir, c.peer_wait), (None, Duration::from_secs(30)));
    }

    #[test]
    fn bad_values_name_key_and_value() {
        let cases: Vec<(RunArgs, &str)> = vec![
            (
                RunArgs {
                    state_dir: Some("observer-state".into()),
                    ..Default::default()
                },
                "state-dir \"observer-state\"",
            ),
            (
                RunArgs {
                    peer_wait: Some("2m".into()),
                    ..Default::default()
                },
                "peer-wait \"2m\"",
            ),
            (
                RunArgs {
                    dsr_marks: Some("on".into()),
                    ..Default::default()
                },
                "dsr-marks \"on\"",
            ),
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
