//! The Kubernetes inventory: list+watch (kube-rs watchers, resumable, with backoff) of Nodes,
//! Pods, Services, EndpointSlices, ServiceCIDRs and AWS Load Balancer Controller
//! TargetGroupBindings, and Namespaces (their declared sources). It tells the controller which
//! addresses are in the cluster, which are Services, which pods are local (with workload,
//! labels, declared ports, declared sources), and which pods back a Service or are
//! load-balancer IP targets (for the severity). If the API becomes
//! unreachable the last inventory stays in force and the inventory is marked stale.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    net::IpAddr,
};

use futures::{FutureExt, StreamExt, stream::BoxStream};
use kube::{
    Api, Client, ResourceExt,
    runtime::{WatchStreamExt, watcher},
};
use observer_common::{
    addr::{IpKey, key_of},
    maps::role,
    user::Cidr,
};
use tokio::sync::mpsc;

use crate::inventory::{
    PodRef,
    declared::{self, Allowance, Refused, Scope},
    roles::{Kind, ObjectId, Owner},
};

pub mod objects;

use objects::{EndpointSlice, Namespace, Node, Pod, Service, ServiceCidr, TargetGroupBinding};

/// What the Kubernetes source tells the controller.
#[derive(Clone, Debug, PartialEq)]
pub enum KubeMsg {
    /// Replace what an object asserts about addresses.
    Ips(Owner, Vec<(IpKey, u32)>),
    /// Replace what an object asserts about CIDRs.
    Cidrs(Owner, Vec<(Cidr, u32)>),
    /// Replace the NodePorts a Service allocates: (port, IP protocol).
    NodePorts(Owner, Vec<(u16, u8)>),
    /// The local pods with their metadata, keyed by address (a full replacement).
    LocalPods(HashMap<IpAddr, PodRef>),
    /// The API is (un)reachable: the inventory is stale while it is not.
    Stale(bool),
    /// The declarations refused (malformed annotations of local pods and of namespaces), a
    /// full replacement.
    Refused(Vec<Refused>),
    /// Every watch listed once.
    Synced,
}

/// The CNI's host-side veth name for a pod: prefix + the first 11 hex digits of
/// sha1("namespace.name"), the rule of both the AWS VPC CNI (`eni`) and Calico (`cali`).
pub fn veth_name(prefix: &str, namespace: &str, name: &str) -> String {
    let hex = sha1_smol::Sha1::from(format!("{namespace}.{name}"))
        .digest()
        .to_string();
    format!("{prefix}{}", &hex[..11])
}

/// The workload of a pod from its owner references: Deployments through their ReplicaSet
/// (named `<deployment>-<pod-template-hash>`), StatefulSets, DaemonSets, Jobs.
pub fn workload_of(pod: &Pod) -> String {
    let Some(owner) = pod
        .metadata
        .owner_references
        .as_ref()
        .and_then(|o| o.iter().find(|o| o.controller == Some(true)).or(o.first()))
    else {
        return pod.name_any();
    };
    if owner.kind == "ReplicaSet"
        && let Some(hash) = pod.labels().get("pod-template-hash")
        && let Some(deploy) = owner.name.strip_suffix(&format!("-{hash}"))
    {
        return deploy.to_string();
    }
    owner.name.clone()
}

fn ip_key(s: &str) -> Option<IpKey> {
    s.parse::<IpAddr>().ok().map(key_of)
}

/// What the source keeps between events.
#[derive(Default)]
struct State {
    node: String,
    veth_prefix: String,
    /// Local pods by uid: (addresses, metadata without the Service facts).
    local: HashMap<ObjectId, (Vec<IpAddr>, PodRef)>,
    /// Endpoint addresses per EndpointSlice uid, with the owning Service and the slice ports.
    slices: HashMap<ObjectId, (String, Vec<IpAddr>, Vec<u16>)>,
    /// Services by namespace/name: whether they are LoadBalancers.
    lb_services: HashSet<String>,
    /// TargetGroupBinding uid -> referenced Service (namespace/name), IP targets only.
    tgb: HashMap<ObjectId, String>,
    /// Namespaces' declared sources, by name (valid declarations only).
    ns_allowed: HashMap<String, Vec<Allowance>>,
    /// Declarations refused, by object: (scope, namespace, pod name or "") -> why.
    refused: BTreeMap<(Scope, String, String), String>,
    /// Namespace uid -> name, to forget a deleted namespace's declarations.
    ns_names: HashMap<ObjectId, String>,
    /// Objects seen since the current relist of each kind.
    listing: HashMap<&'static str, HashSet<Owner>>,
    present: HashMap<&'static str, HashSet<Owner>>,
}

impl State {
    fn local_pods(&self) -> HashMap<IpAddr, PodRef> {
        let mut backed: HashMap<IpAddr, bool> = HashMap::new();
        let mut lb: HashMap<IpAddr, BTreeSet<u16>> = HashMap::new();
        let tgb_services: HashSet<&String> = self.tgb.values().collect();
        for (svc, ips, ports) in self.slices.values() {
            let is_lb = self.lb_services.contains(svc) || tgb_services.contains(svc);
            for ip in ips {
                backed.insert(*ip, true);
                if is_lb {
                    lb.entry(*ip).or_default().extend(ports.iter().copied());
                }
            }
        }
        let mut out = HashMap::new();
        for (ips, meta) in self.local.values() {
            // A pod backs a Service if any of its addresses does (a single-stack Service of a
            // dual-stack pod lists one family).
            let mut m = meta.clone();
            if let Some(ns) = self.ns_allowed.get(&m.namespace) {
                m.allowed.extend(ns.iter().cloned());
            }
            m.backs_service = Some(ips.iter().any(|ip| backed.contains_key(ip)));
            let ports: BTreeSet<u16> = ips
                .iter()
                .filter_map(|ip| lb.get(ip))
                .flatten()
                .copied()
                .collect();
            m.lb_ports = ports.into_iter().collect();
            for ip in ips {
                out.insert(*ip, m.clone());
            }
        }
        out
    }
}

type Ev = (&'static str, Result<watcher::Event<Obj>, watcher::Error>);

#[derive(Clone, Debug)]
enum Obj {
    Node(Box<Node>),
    Pod(Box<Pod>),
    Service(Box<Service>),
    Slice(Box<EndpointSlice>),
    SvcCidr(Box<ServiceCidr>),
    Tgb(Box<TargetGroupBinding>),
    Namespace(Box<Namespace>),
}

fn stream<K>(
    api: Api<K>,
    config: watcher::Config,
    kind: &'static str,
    wrap: fn(K) -> Obj,
) -> BoxStream<'static, Ev>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug + Send + 'static,
{
    watcher(api, config)
        .default_backoff()
        .map(move |r| {
            let ev = r.map(|e| match e {
                watcher::Event::Apply(o) => watcher::Event::Apply(wrap(o)),
                watcher::Event::Delete(o) => watcher::Event::Delete(wrap(o)),
                watcher::Event::InitApply(o) => watcher::Event::InitApply(wrap(o)),
                watcher::Event::Init => watcher::Event::Init,
                watcher::Event::InitDone => watcher::Event::InitDone,
            });
            (kind, ev)
        })
        .boxed()
}

/// Kinds whose absence from the API (older clusters, CRD not installed, or no right to list
/// them: an older ClusterRole without namespaces) is fine.
const OPTIONAL: [&str; 3] = ["ServiceCIDR", "TargetGroupBinding", "Namespace"];
const REQUIRED: [&str; 4] = ["Node", "Pod", "Service", "EndpointSlice"];

/// Runs the source until the channel closes. With `local_pods`, only this node's pods are
/// watched (`fieldSelector=spec.nodeName=<node>`, which the API server indexes); the other
/// pods' addresses are then the settings' cluster CIDRs' business.
pub async fn run(
    client: Client,
    node: String,
    veth_prefix: String,
    local_pods: bool,
    tx: mpsc::UnboundedSender<KubeMsg>,
) {
    let every = watcher::Config::default;
    let pods = if local_pods {
        every().fields(&format!("spec.nodeName={node}"))
    } else {
        every()
    };
    let streams = vec![
        stream(Api::<Node>::all(client.clone()), every(), "Node", |o| {
            Obj::Node(Box::new(o))
        }),
        stream(Api::<Pod>::all(client.clone()), pods, "Pod", |o| {
            Obj::Pod(Box::new(o))
        }),
        stream(
            Api::<Service>::all(client.clone()),
            every(),
            "Service",
            |o| Obj::Service(Box::new(o)),
        ),
        stream(
            Api::<EndpointSlice>::all(client.clone()),
            every(),
            "EndpointSlice",
            |o| Obj::Slice(Box::new(o)),
        ),
        stream(
            Api::<ServiceCidr>::all(client.clone()),
            every(),
            "ServiceCIDR",
            |o| Obj::SvcCidr(Box::new(o)),
        ),
        stream(
            Api::<TargetGroupBinding>::all(client.clone()),
            every(),
            "TargetGroupBinding",
            |o| Obj::Tgb(Box::new(o)),
        ),
        stream(
            Api::<Namespace>::all(client.clone()),
            every(),
            "Namespace",
            |o| Obj::Namespace(Box::new(o)),
        ),
    ];
    let mut all = futures::stream::select_all(streams);
    let mut st = State {
        node,
        veth_prefix,
        ..State::default()
    };
    let mut synced: HashSet<&'static str> = HashSet::new();
    let mut failing: HashSet<&'static str> = HashSet::new();
    let mut announced_sync = false;
    let mut local_dirty = false;
    let mut since_local = 0usize;
    let mut pending: Option<Ev> = None;
    let mut last_local: HashMap<IpAddr, PodRef> = HashMap::new();
    let mut last_refused: BTreeMap<(Scope, String, String), String> = BTreeMap::new();
    let mut probe = tokio::time::interval(std::time::Duration::from_secs(2));
    loop {
        let (kind, item) = if let Some(p) = pending.take() {
            p
        } else {
            tokio::select! {
            next = all.next() => match next {
                Some(x) => x,
                None => return,
            },
            _ = probe.tick() => {
                // A watch that resumes quietly yields no event: probe the API while failing.
                if !failing.is_empty() && client.apiserver_version().await.is_ok() {
                    failing.clear();
                    tracing::info!("Kubernetes API reachable again");
                    let _ = tx.send(KubeMsg::Stale(false));
                }
                continue;
            }
            }
        };
        let ev = match item {
            Ok(ev) => ev,
            Err(e) => {
                if OPTIONAL.contains(&kind) {
                    tracing::debug!(kind, error = %e, "optional resource not available");
                    synced.insert(kind);
                } else {
                    if failing.is_empty() {
                        tracing::warn!(kind, error = %e, "Kubernetes API unreachable; judging with the last inventory");
                        let _ = tx.send(KubeMsg::Stale(true));
                    }
                    failing.insert(kind);
                }
                continue;
            }
        };
        if failing.remove(kind) && failing.is_empty() {
            tracing::info!("Kubernetes API reachable again");
            let _ = tx.send(KubeMsg::Stale(false));
        }
        local_dirty |= matches!(
            kind,
            "Pod" | "EndpointSlice" | "Service" | "TargetGroupBinding" | "Namespace"
        );
        match ev {
            watcher::Event::Init => {
                st.listing.insert(kind, HashSet::new());
            }
            watcher::Event::InitApply(o) => {
                let owner = apply(&mut st, &o, &tx);
                st.listing.entry(kind).or_default().insert(owner);
            }
            watcher::Event::InitDone => {
                // Objects that went away while the watch was broken.
                let seen = st.listing.remove(kind).unwrap_or_default();
                let before = st.present.get(kind).cloned().unwrap_or_default();
                for gone in before.difference(&seen) {
                    forget(&mut st, gone, &tx);
                }
                st.present.insert(kind, seen);
                synced.insert(kind);
            }
            watcher::Event::Apply(o) => {
                let owner = apply(&mut st, &o, &tx);
                st.present.entry(kind).or_default().insert(owner);
            }
            watcher::Event::Delete(o) => {
                let owner = owner_of(&o);
                forget(&mut st, &owner, &tx);
                if let Some(p) = st.present.get_mut(kind) {
                    p.remove(&owner);
                }
            }
        }
        // The local pods' Service facts are recomputed once per burst of events, not per
        // event, so a 150k-pod initial list stays linear.
        since_local += 1;
        if local_dirty {
            match all.next().now_or_never() {
                Some(Some(next)) => pending = Some(next),
                Some(None) => return,
                None => since_local = usize::MAX,
            }
            if since_local >= 5_000 {
                local_dirty = false;
                since_local = 0;
                let local = st.local_pods();
                if local != last_local {
                    last_local = local.clone();
                    let _ = tx.send(KubeMsg::LocalPods(local));
                }
                if st.refused != last_refused {
                    last_refused = st.refused.clone();
                    let _ = tx.send(KubeMsg::Refused(refused_list(&st.refused)));
                }
            }
        }
        if !announced_sync && REQUIRED.iter().all(|k| synced.contains(k)) {
            announced_sync = true;
            let _ = tx.send(KubeMsg::Synced);
        }
    }
}

/// An object's kind and identity: its uid, or namespace/name when it has none.
fn id_of(o: &Obj) -> (Kind, ObjectId) {
    let (kind, meta) = match o {
        Obj::Node(x) => (Kind::Node, &x.metadata),
        Obj::Pod(x) => (Kind::Pod, &x.metadata),
        Obj::Service(x) => (Kind::Service, &x.metadata),
        Obj::Slice(x) => (Kind::EndpointSlice, &x.metadata),
        Obj::SvcCidr(x) => (Kind::ServiceCidr, &x.metadata),
        Obj::Tgb(x) => (Kind::TargetGroupBinding, &x.metadata),
        Obj::Namespace(x) => (Kind::Namespace, &x.metadata),
    };
    let id = match &meta.uid {
        Some(uid) => ObjectId::new(uid),
        None => ObjectId::new(&format!(
            "{}/{}",
            meta.namespace.as_deref().unwrap_or_default(),
            meta.name.as_deref().unwrap_or_default()
        )),
    };
    (kind, id)
}

fn owner_of(o: &Obj) -> Owner {
    let (kind, id) = id_of(o);
    Owner::Object(kind, id)
}

fn forget(st: &mut State, owner: &Owner, tx: &mpsc::UnboundedSender<KubeMsg>) {
    if let Owner::Object(kind, id) = owner {
        match kind {
            Kind::Pod => {
                // A pod of the same name may be there under another uid already (recreated
                // while a watch was broken, forgotten at the relist's end): its entry stays.
                if let Some((_, meta)) = st.local.remove(id)
                    && !st
                        .local
                        .values()
                        .any(|(_, m)| m.namespace == meta.namespace && m.name == meta.name)
                {
                    st.refused.remove(&(Scope::Pod, meta.namespace, meta.name));
                }
            }
            Kind::EndpointSlice => {
                st.slices.remove(id);
            }
            Kind::TargetGroupBinding => {
                st.tgb.remove(id);
            }
            Kind::Namespace => {
                // As for pods: a namespace recreated under the same name keeps its entries.
                if let Some(name) = st.ns_names.remove(id)
                    && !st.ns_names.values().any(|n| *n == name)
                {
                    st.ns_allowed.remove(&name);
                    st.refused.remove(&(Scope::Namespace, name, String::new()));
                }
            }
            _ => {}
        }
    }
    let _ = tx.send(KubeMsg::Ips(*owner, Vec::new()));
    let _ = tx.send(KubeMsg::Cidrs(*owner, Vec::new()));
    let _ = tx.send(KubeMsg::NodePorts(*owner, Vec::new()));
}

/// Applies an object: what it asserts about addresses, and the source's own indexes.
fn apply(st: &mut State, o: &Obj, tx: &mpsc::UnboundedSender<KubeMsg>) -> Owner {
    let (kind, id) = id_of(o);
    let owner = Owner::Object(kind, id);
    match o {
        Obj::Node(n) => {
            let me = n.metadata.name.as_deref() == Some(st.node.as_str());
            let ips: Vec<(IpKey, u32)> = n
                .status
                .addresses
                .iter()
                .filter(|a| a.type_ == "InternalIP" || a.type_ == "ExternalIP")
                .filter_map(|a| ip_key(&a.address))
                .map(|k| {
                    (
                        k,
                        role::CLUSTER | if me { role::NODE } else { role::OTHER_NODE },
                    )
                })
                .collect();
            let cidrs: Vec<(Cidr, u32)> = n
                .spec
                .pod_cidrs
                .clone()
                .or_else(|| n.spec.pod_cidr.clone().map(|c| vec![c]))
                .into_iter()
                .flatten()
                .filter_map(|c| c.parse().ok())
                .map(|c| (c, role::CLUSTER))
                .collect();
            let _ = tx.send(KubeMsg::Ips(owner, ips));
            let _ = tx.send(KubeMsg::Cidrs(owner, cidrs));
        }
        Obj::Pod(p) => {
            let host_network = p.spec.host_network;
            // A pod that ran to completion keeps its addresses in its status, but the CNI has
            // released them and may have given them to a new pod: it asserts nothing.
            let done = matches!(p.status.phase.as_deref(), Some("Succeeded" | "Failed"));
            let addrs: Vec<IpAddr> = if done {
                Vec::new()
            } else {
                p.status
                    .pod_ips
                    .iter()
                    .filter_map(|ip| ip.ip.parse().ok())
                    .collect()
            };
            let local = !host_network && p.spec.node_name.as_deref() == Some(st.node.as_str());
            // hostNetwork pods use node addresses, which the Node asserts.
            let ips: Vec<(IpKey, u32)> = if host_network {
                Vec::new()
            } else {
                addrs
                    .iter()
                    .map(|a| {
                        (
                            key_of(*a),
                            role::CLUSTER | if local { role::LOCAL_POD } else { 0 },
                        )
                    })
                    .collect()
            };
            if local && !addrs.is_empty() {
                let ns = p.namespace().unwrap_or_default();
                let name = p.name_any();
                let ports: BTreeSet<u16> = p
                    .spec
                    .containers
                    .iter()
                    .flat_map(|c| c.ports.iter())
                    .map(|port| port.container_port as u16)
                    .collect();
                let allowed = declarations(
                    &mut st.refused,
                    Scope::Pod,
                    &ns,
                    &name,
                    p.annotations().get(declared::ANNOTATION),
                );
                let meta = PodRef {
                    allowed,
                    iface: veth_name(&st.veth_prefix, &ns, &name),
                    workload: workload_of(p),
                    labels: p.labels().clone(),
                    declared_ports: Some(ports.into_iter().collect()),
                    namespace: ns,
                    name,
                    backs_service: None,
                    lb_ports: Vec::new(),
                };
                st.local.insert(id, (addrs, meta));
            } else {
                st.local.remove(&id);
                st.refused
                    .remove(&(Scope::Pod, p.namespace().unwrap_or_default(), p.name_any()));
            }
            let _ = tx.send(KubeMsg::Ips(owner, ips));
        }
        Obj::Service(s) => {
            let lb_ingress = s.status.load_balancer.iter().flat_map(|l| &l.ingress);
            let ips: Vec<(IpKey, u32)> = s
                .spec
                .cluster_ips
                .iter()
                .chain(&s.spec.external_ips)
                .filter_map(|ip| ip_key(ip))
                .chain(lb_ingress.filter_map(|i| i.ip.as_deref().and_then(ip_key)))
                .map(|k| (k, role::SERVICE))
                .collect();
            let nodeports: Vec<(u16, u8)> = s
                .spec
                .ports
                .iter()
                .filter_map(|p| {
                    let proto = match p.protocol.as_deref().unwrap_or("TCP") {
                        "UDP" => 17,
                        "SCTP" => 132,
                        _ => 6,
                    };
                    p.node_port.map(|n| (n as u16, proto))
                })
                .collect();
            let _ = tx.send(KubeMsg::NodePorts(owner, nodeports));
            let key = format!("{}/{}", s.namespace().unwrap_or_default(), s.name_any());
            if s.spec.type_.as_deref() == Some("LoadBalancer") {
                st.lb_services.insert(key);
            } else {
                st.lb_services.remove(&key);
            }
            let _ = tx.send(KubeMsg::Ips(owner, ips));
        }
        Obj::Slice(e) => {
            let svc = e
                .labels()
                .get("kubernetes.io/service-name")
                .cloned()
                .unwrap_or_default();
            let key = format!("{}/{svc}", e.namespace().unwrap_or_default());
            let ips: Vec<IpAddr> = e
                .endpoints
                .iter()
                .flat_map(|ep| ep.addresses.iter())
                .filter_map(|a| a.parse().ok())
                .collect();
            let ports: Vec<u16> = e
                .ports
                .iter()
                .filter_map(|p| p.port)
                .map(|p| p as u16)
                .collect();
            st.slices.insert(id, (key, ips, ports));
        }
        Obj::SvcCidr(c) => {
            let cidrs: Vec<(Cidr, u32)> = c
                .spec
                .cidrs
                .iter()
                .filter_map(|c| c.parse().ok())
                .map(|c| (c, role::SERVICE))
                .collect();
            let _ = tx.send(KubeMsg::Cidrs(owner, cidrs));
        }
        Obj::Tgb(t) => {
            let ip_target = t.spec.target_type.as_deref() == Some("ip");
            match (&t.spec.service_ref, ip_target) {
                (Some(svc), true) => {
                    let ns = t.namespace().unwrap_or_default();
                    st.tgb.insert(id, format!("{ns}/{}", svc.name));
                }
                _ => {
                    st.tgb.remove(&id);
                }
            }
        }
        Obj::Namespace(n) => {
            let name = n.name_any();
            let allowed = declarations(
                &mut st.refused,
                Scope::Namespace,
                &name,
                "",
                n.annotations().get(declared::ANNOTATION),
            );
            if allowed.is_empty() {
                st.ns_allowed.remove(&name);
            } else {
                st.ns_allowed.insert(name.clone(), allowed);
            }
            st.ns_names.insert(id, name);
        }
    }
    owner
}

/// An object's declared sources from its annotation; a malformed one is refused whole, kept in
/// `refused` (reported by the controller) and logged when it changes.
fn declarations(
    refused: &mut BTreeMap<(Scope, String, String), String>,
    scope: Scope,
    namespace: &str,
    name: &str,
    value: Option<&String>,
) -> Vec<Allowance> {
    let key = (scope, namespace.to_string(), name.to_string());
    let Some(value) = value else {
        refused.remove(&key);
        return Vec::new();
    };
    match declared::parse(value, scope) {
        Ok(allowed) => {
            refused.remove(&key);
            allowed
        }
        Err(e) => {
            let error = e.to_string();
            if refused.get(&key) != Some(&error) {
                tracing::warn!(
                    scope = scope.name(),
                    namespace,
                    name,
                    annotation = declared::ANNOTATION,
                    value = value.as_str(),
                    error = error.as_str(),
                    "a declaration of allowed sources is malformed: refused whole, nothing of it applies"
                );
            }
            refused.insert(key, error);
            Vec::new()
        }
    }
}

fn refused_list(refused: &BTreeMap<(Scope, String, String), String>) -> Vec<Refused> {
    refused
        .iter()
        .map(|((scope, namespace, name), error)| Refused {
            scope: *scope,
            namespace: namespace.clone(),
            name: name.clone(),
            error: error.clone(),
        })
        .collect()
}

/// Builds a client from in-cluster config or KUBECONFIG.
pub async fn client() -> Result<Client, kube::Error> {
    Client::try_default().await
}

/// Whether a Kubernetes API is configured here (in-cluster or KUBECONFIG).
pub fn configured() -> bool {
    std::env::var_os("KUBERNETES_SERVICE_HOST").is_some()
        || std::env::var_os("KUBECONFIG").is_some()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn veth_names_follow_the_cni_rule() {
        // `echo -n default.nginx | sha1sum` = c440f455693b69cd...
        assert_eq!(veth_name("eni", "default", "nginx"), "enic440f455693");
        assert_eq!(veth_name("cali", "default", "nginx"), "calic440f455693");
    }
}
