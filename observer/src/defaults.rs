//! Every default of the agent, in one place.

use std::time::Duration;

/// Uplinks: where traffic enters the node.
pub const UPLINKS: &[&str] = &["eth*", "ens*", "enp*", "eno*", "bond*"];
/// Pod interfaces: host-side veths of VPC CNI (eni*), Calico (cali*), security groups per pod
/// (vlan*) and generic CNIs (veth*).
pub const POD_IFACES: &[&str] = &["eni*", "cali*", "vlan*", "veth*"];
/// Interfaces that carry no program whatever the patterns above say: the VPC CNI's VLAN links
/// of a trunk ENI (`vlan.eth.<vlan id>`, security groups for pods), which `vlan*` would take
/// for a pod's veth. The trunk's traffic is judged on the trunk ENI itself (an uplink).
pub const EXCLUDE_IFACES: &[&str] = &["vlan.eth.*"];
pub const NODEPORT_RANGE: &str = "30000-32767";
pub const METRICS_ADDR: &str = "0.0.0.0:19962";
/// The debug API's unix socket (mode 0600, never on the network).
pub const SOCKET: &str = "/run/observer/observer.sock";
/// Where the flows pods opened are pinned, to outlive the agent (`--state-dir`).
pub const STATE_DIR: &str = "/sys/fs/bpf/observer";
/// auto: TCX on Linux >= 6.6, clsact/netlink before.
pub const ATTACH_MODE: &str = "auto";
/// Which DSR marks to trust (`--dsr-marks`): Cilium's when this node runs Cilium.
pub const DSR_MARKS: &str = "auto";
/// The interface Cilium creates on every node it runs (any routing, any load-balancer mode).
pub const CILIUM_IFACE: &str = "cilium_host";
/// auto: use the Kubernetes API when in-cluster config or KUBECONFIG is found.
pub const KUBERNETES: &str = "auto";
pub const KUBERNETES_PODS: &str = "all";
pub const LOG_FORMAT: &str = "text";
pub const LOG_LEVEL: &str = "info";
/// A full interface/route/address reconcile, besides netlink events.
pub const RECONCILE_INTERVAL: Duration = Duration::from_secs(30);
/// A flagged flow with no packet for this long leaves the views and the kernel table.
pub const FLOW_IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Repeats of an alert for the same (source, pod, port) within this window are folded.
pub const ALERT_WINDOW: Duration = Duration::from_secs(60);
/// Distinct ports per pod in metric labels before `port="other"`.
pub const PORTS_PER_POD: usize = 16;
/// Metric series of a pod that is gone are removed after this long.
pub const POD_GRACE: Duration = Duration::from_secs(600);
/// Capacity of the kernel's flagged-flow table (`FLOWS`, LRU).
pub const FLOW_TABLE_ENTRIES: u32 = 65_536;
/// Capacity of the kernel's exact-address table (`IP_ROLES`): nodes and pods of the cluster.
pub const ADDRESS_TABLE_ENTRIES: u32 = 262_144;
/// How long after its first packet a direct flow's state (answered/refused/silent) is settled
/// for the metrics.
pub const SETTLE: Duration = Duration::from_secs(2);
/// How long a new pod's address may take to reach the agent after its first packets
/// (`--peer-wait`, Kubernetes inventory only): the kubelet writes a pod's IP into its status
/// only at the sync after the one that created the sandbox and started the containers, on the
/// PLEG's next relist (every second), through its rate-limited API client (50 requests a
/// second since 1.27: a node starting 110 pods at once needs about 10 s for the last one);
/// then the API server's watch brings it here. See docs/configuration.md for the timeline.
pub const PEER_WAIT: Duration = Duration::from_secs(15);
/// The longest the agent waits on SIGTERM for the flows it has seen to be judged: below the
/// DaemonSet's 30 s grace period.
pub const DRAIN_MAX: Duration = Duration::from_secs(25);
/// How often the agent reads the flow event ring. The kernel submits events without waking
/// the agent (a wakeup costs the packet's CPU about 6 µs in a VM), except when the ring fills
/// past an eighth (`observer_common::maps::events`): a new flow reaches the view at most this
/// late, and a flood is read before the ring is full.
pub const EVENTS_POLL: Duration = Duration::from_millis(20);
/// The next read of the staged SYN rings after one that found a ring a quarter full: a SYN
/// flood is read as fast as it comes, without the kernel waking the agent.
pub const STAGED_BUSY_POLL: Duration = Duration::from_millis(1);
/// How often the flow view is refreshed from the kernel table.
pub const REFRESH_INTERVAL: Duration = Duration::from_secs(1);
/// How often, within [`FRONT_MOVES_WINDOW`], the agent puts its netlink filters back in front
/// of another agent's on one interface before it leaves them behind (an agent that also
/// insists on running first would otherwise make both re-add filters forever).
pub const FRONT_MOVES_MAX: u32 = 5;
pub const FRONT_MOVES_WINDOW: Duration = Duration::from_secs(60);
/// Flagged flows whose start was not seen looked up in conntrack per refresh, at most (a
/// flood of mid-stream packets waits its turn; past a few seconds such a flow is judged with
/// origin unknown).
pub const ORIGIN_LOOKUPS: usize = 512;
