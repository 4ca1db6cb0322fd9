//! `observer run` settings: flags (each also an `OBSERVER_*` environment variable), an
//! optional YAML or TOML file with the same keys, and the defaults in [`crate::defaults`].
//! Flags win over the file, the file over the defaults. Everything is validated once into a
//! typed [`Config`]; a bad value is an error that names the key and the value.
//!
//! This file is the settings: the flags, the file's keys, the validated [`Config`] and its
//! error. How a value is read and checked is [`validate`].

mod validate;

pub use validate::parse_duration;

use std::{path::PathBuf, time::Duration};

use observer_common::user::Cidr;
use serde::Deserialize;

use crate::kernel::ifaces::Pattern;

/// Flags of `observer run`.
#[derive(Debug, Default, clap::Args)]
pub struct RunArgs {
    /// Uplink interface patterns (`*` and `?` globs); repeatable or comma-separated.
    #[arg(long = "uplink", env = "OBSERVER_UPLINK", value_delimiter = ',')]
    pub uplink: Vec<String>,
    /// Pod interface patterns (host-side veths); repeatable or comma-separated.
    #[arg(long = "pod-iface", env = "OBSERVER_POD_IFACE", value_delimiter = ',')]
    pub pod_iface: Vec<String>,
    /// Interfaces never attached, whatever --uplink and --pod-iface match (the VPC CNI's
    /// trunk VLAN links); repeatable or comma-separated [default: vlan.eth.*].
    #[arg(
        long = "exclude-iface",
        env = "OBSERVER_EXCLUDE_IFACE",
        value_delimiter = ','
    )]
    pub exclude_iface: Vec<String>,
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
    /// Serve the metrics endpoint over TLS with this PEM certificate chain (with
    /// --metrics-tls-key-file; both read again when they change) [default: plain HTTP].
    #[arg(long = "metrics-tls-cert-file", env = "OBSERVER_METRICS_TLS_CERT_FILE")]
    pub metrics_tls_cert_file: Option<PathBuf>,
    /// The PEM private key of --metrics-tls-cert-file [default: none].
    #[arg(long = "metrics-tls-key-file", env = "OBSERVER_METRICS_TLS_KEY_FILE")]
    pub metrics_tls_key_file: Option<PathBuf>,
    /// Serve /metrics only to clients presenting the token in this file (`Authorization:
    /// Bearer`; read at each scrape). /healthz and /readyz stay open [default: none].
    #[arg(
        long = "metrics-bearer-token-file",
        env = "OBSERVER_METRICS_BEARER_TOKEN_FILE"
    )]
    pub metrics_bearer_token_file: Option<PathBuf>,
    /// How to attach: auto (TCX on Linux >= 6.6, else netlink), tcx, netlink, netlink-pods
    /// (uplinks as auto, pod veths netlink: cheaper pod churn), or uplink-egress (uplinks as
    /// auto at ingress and egress, nothing on pod veths: pod churn costs nothing, flows are
    /// not known as delivered) [default: auto].
    #[arg(long = "attach-mode", env = "OBSERVER_ATTACH_MODE")]
    pub attach_mode: Option<String>,
    /// Which direct-server-return marks to trust: cilium (a client's packet forwarded by another
    /// node's load balancer with `loadBalancer.dsrDispatch=opt` carries the Service's address:
    /// judged `service` when that is a Service or a node's NodePort of this cluster), off, or
    /// auto (cilium when this node has a cilium_host interface) [default: auto].
    #[arg(long = "dsr-marks", env = "OBSERVER_DSR_MARKS")]
    pub dsr_marks: Option<String>,
    /// Also push each alert line to this Alertmanager (http[s]://host[:port][/prefix])
    /// [default: off].
    #[arg(long = "alertmanager-url", env = "OBSERVER_ALERTMANAGER_URL")]
    pub alertmanager_url: Option<String>,
    /// PEM CA certificates to trust for an https Alertmanager [default: the roots of
    /// SSL_CERT_FILE, else the system's; none found stops the start].
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
    /// With the Kubernetes inventory: how long a new pod's or node's address may take to reach
    /// this agent after its first packets here (the CNI assigns it, the kubelet reports it in
    /// the Pod's status, the API server's watch brings it). A direct flow is counted and
    /// alerted on only this long after its first packet, judged again then: from an address
    /// that has joined the cluster meanwhile, it is not a direct access. At most 60s
    /// [default: 15s].
    #[arg(long = "peer-wait", env = "OBSERVER_PEER_WAIT")]
    pub peer_wait: Option<String>,
    /// A directory on bpffs where the flows pods opened are kept across the agent's restarts
    /// and upgrades (pinned maps, adopted at start), or `none` to keep nothing
    /// [default: /sys/fs/bpf/observer].
    #[arg(long = "state-dir", env = "OBSERVER_STATE_DIR")]
    pub state_dir: Option<String>,
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
    exclude_iface: Vec<String>,
    #[serde(default)]
    cluster_cidr: Vec<String>,
    #[serde(default)]
    allow_source: Vec<String>,
    #[serde(default)]
    service_cidr: Vec<String>,
    nodeport_range: Option<String>,
    metrics_addr: Option<String>,
    metrics_tls_cert_file: Option<PathBuf>,
    metrics_tls_key_file: Option<PathBuf>,
    metrics_bearer_token_file: Option<PathBuf>,
    attach_mode: Option<String>,
    dsr_marks: Option<String>,
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
    peer_wait: Option<String>,
    state_dir: Option<String>,
}

/// Which direct-server-return marks the uplink trusts (`--dsr-marks`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DsrMarks {
    /// Cilium's when the node runs Cilium (it has [`crate::defaults::CILIUM_IFACE`]).
    Auto,
    /// Cilium's IPv4 option and IPv6 destination option.
    Cilium,
    Off,
}

impl DsrMarks {
    /// The setting's name, as `--dsr-marks` takes it.
    pub fn name(self) -> &'static str {
        match self {
            DsrMarks::Auto => "auto",
            DsrMarks::Cilium => "cilium",
            DsrMarks::Off => "off",
        }
    }

    /// Whether to trust Cilium's marks on this node.
    pub fn resolve(self) -> bool {
        match self {
            DsrMarks::Cilium => true,
            DsrMarks::Off => false,
            DsrMarks::Auto => crate::kernel::ifaces::exists(crate::defaults::CILIUM_IFACE),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    Text,
    Json,
}

/// The validated settings of `observer run`.
#[derive(Clone, Debug)]
pub struct Config {
    pub uplinks: Vec<Pattern>,
    pub pod_ifaces: Vec<Pattern>,
    pub exclude_ifaces: Vec<Pattern>,
    pub cluster_cidrs: Vec<Cidr>,
    pub allow_sources: Vec<Cidr>,
    pub service_cidrs: Vec<Cidr>,
    pub nodeport_min: u16,
    pub nodeport_max: u16,
    /// Where and how /metrics is served (`--metrics-*`).
    pub metrics: crate::agent::metrics_endpoint::MetricsEndpoint,
    pub attach_mode: crate::kernel::attach::Modes,
    /// Which DSR marks to trust (`--dsr-marks`).
    pub dsr_marks: DsrMarks,
    /// Where and how to push alerts (`--alertmanager-*`).
    pub alertmanager: Option<crate::export::alertmanager::AmTarget>,
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
    /// How long a direct flow waits for its source to join the inventory (`--peer-wait`).
    pub peer_wait: Duration,
    /// Where the kept state is pinned (`--state-dir`); `None`: nothing is kept.
    pub state_dir: Option<PathBuf>,
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
