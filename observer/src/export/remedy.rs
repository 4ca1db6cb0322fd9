//! Remediation hints for a direct path: a NetworkPolicy that admits only cluster sources and
//! the allowed CIDRs to the pod's port, and what to tighten in the network (the node security
//! group under VPC CNI, the pod CIDR routing under Calico).

use std::collections::BTreeMap;

use k8s_openapi::{
    api::networking::v1::{
        IPBlock, NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicyPeer, NetworkPolicyPort,
        NetworkPolicySpec,
    },
    apimachinery::pkg::{
        apis::meta::v1::{LabelSelector, ObjectMeta},
        util::intstr::IntOrString,
    },
};
use observer_common::user::Cidr;
use serde::{Deserialize, Serialize};

use crate::inventory::PodRef;

/// The label the policy selects on when the pod's labels are unknown (standalone mode): it
/// selects nothing until replaced, so the suggestion can never lock out other pods.
pub const PLACEHOLDER_LABEL: &str = "observer.io/replace-with-the-pod-labels";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Remedy {
    pub namespace: String,
    pub pod: String,
    pub port: Option<u16>,
    pub protocol: String,
    /// The NetworkPolicy, as YAML.
    pub network_policy: String,
    /// What to change in the network, in words.
    pub hint: String,
}

/// Labels a controller sets per revision or per pod: a selector with them would stop matching
/// at the next rollout (or match one pod of a StatefulSet only).
const PER_REVISION_LABELS: &[&str] = &[
    "pod-template-hash",
    "controller-revision-hash",
    "pod-template-generation",
    "statefulset.kubernetes.io/pod-name",
    "apps.kubernetes.io/pod-index",
    "batch.kubernetes.io/controller-uid",
    "controller-uid",
];

/// The labels a policy for the pod's workload selects on: the pod's own (Kubernetes
/// inventory), without the per-revision ones; empty when unknown (standalone).
pub fn selector_labels(pod: &PodRef) -> BTreeMap<String, String> {
    pod.labels
        .iter()
        .filter(|(k, _)| !PER_REVISION_LABELS.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// Which CNI a pod interface name suggests.
fn cni_of(iface: &str) -> &'static str {
    if iface.starts_with("cali") {
        "calico"
    } else if iface.starts_with("eni") || iface.starts_with("vlan") {
        "vpc-cni"
    } else {
        "other"
    }
}

fn dns_label(s: &str) -> String {
    let mut out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    out.truncate(50);
    out.trim_matches('-').to_string()
}

/// The NetworkPolicy admitting only the cluster's pods, the cluster CIDRs and the allowed
/// sources to the pod (on `port`, for TCP/UDP/SCTP), built from the Kubernetes API types, so it
/// is valid by construction.
fn network_policy(
    pod: &PodRef,
    namespace: &str,
    port: Option<u16>,
    protocol: &str,
    cluster: &[Cidr],
    allowed: &[Cidr],
) -> NetworkPolicy {
    let labels = selector_labels(pod);
    let match_labels = if labels.is_empty() {
        BTreeMap::from([(PLACEHOLDER_LABEL.to_string(), pod.name.clone())])
    } else {
        labels
    };
    let name = match port {
        Some(p) => format!("observer-restrict-{}-{p}", dns_label(&pod.name)),
        None => format!("observer-restrict-{}", dns_label(&pod.name)),
    };
    // Every pod of the cluster, then the cluster CIDRs and the allowed sources.
    let mut from = vec![NetworkPolicyPeer {
        namespace_selector: Some(LabelSelector::default()),
        ..NetworkPolicyPeer::default()
    }];
    from.extend(cluster.iter().chain(allowed).map(|c| NetworkPolicyPeer {
        ip_block: Some(IPBlock {
            cidr: c.to_string(),
            except: None,
        }),
        ..NetworkPolicyPeer::default()
    }));
    let ports = match (port, protocol) {
        (Some(p), "tcp" | "udp" | "sctp") => Some(vec![NetworkPolicyPort {
            protocol: Some(protocol.to_ascii_uppercase()),
            port: Some(IntOrString::Int(i32::from(p))),
            end_port: None,
        }]),
        _ => None,
    };
    NetworkPolicy {
        metadata: ObjectMeta {
            name: Some(name),
            namespace: Some(namespace.to_string()),
            labels: Some(BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_string(),
                "observer-suggestion".to_string(),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(NetworkPolicySpec {
            pod_selector: Some(LabelSelector {
                match_labels: Some(match_labels),
                match_expressions: None,
            }),
            policy_types: Some(vec!["Ingress".to_string()]),
            ingress: Some(vec![NetworkPolicyIngressRule {
                from: Some(from),
                ports,
            }]),
            egress: None,
        }),
    }
}

/// The remedy for direct access to `pod` on `port`/`protocol`.
pub fn remedy(
    pod: &PodRef,
    port: Option<u16>,
    protocol: &str,
    cluster: &[Cidr],
    allowed: &[Cidr],
) -> Remedy {
    let namespace = if pod.namespace.is_empty() {
        "default"
    } else {
        &pod.namespace
    };
    let policy = network_policy(pod, namespace, port, protocol, cluster, allowed);
    let mut y = String::from(
        "# Selecting the pod for ingress denies whatever no policy admits: add a rule for every\n# other port the pod serves before applying.\n",
    );
    y.push_str(
        &serde_yaml_ng::to_string(&policy).unwrap_or_else(|e| format!("# cannot render: {e}\n")),
    );
    let target = match port {
        Some(p) => format!("port {p}/{protocol}"),
        None => protocol.to_string(),
    };
    let sources = if allowed.is_empty() {
        "the cluster's own security group".to_string()
    } else {
        let a: Vec<String> = allowed.iter().map(ToString::to_string).collect();
        format!("the cluster's own security group and {}", a.join(", "))
    };
    let hint = match cni_of(&pod.iface) {
        "vpc-cni" => format!(
            "VPC CNI: the pod holds a VPC address, so whatever the node's security group admits reaches it. Narrow the inbound rules of the node security group (and of the pod's security group if security groups for pods are used) for {target} to {sources}; NetworkPolicies need the VPC CNI network policy agent (enableNetworkPolicy) to be enforced."
        ),
        "calico" => format!(
            "Calico: the pod CIDR is routed to the node from outside the cluster. Stop routing or advertising it beyond the cluster (VPC route tables, BGP export, IPPool settings), or apply the policy above (Calico enforces it) for {target}."
        ),
        _ => format!(
            "Restrict who can route to the pod CIDR, and apply the policy above for {target}."
        ),
    };
    Remedy {
        namespace: namespace.to_string(),
        pod: pod.name.clone(),
        port,
        protocol: protocol.to_string(),
        network_policy: y,
        hint,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(iface: &str) -> PodRef {
        PodRef {
            namespace: "shop".into(),
            name: "cart-7d9".into(),
            iface: iface.into(),
            ..PodRef::default()
        }
    }

    #[test]
    fn the_policy_is_valid_yaml_of_the_right_shape_selecting_the_pod() {
        let labels: BTreeMap<String, String> = [
            ("app".to_string(), "cart".to_string()),
            ("tier".to_string(), "web: x".to_string()),
        ]
        .into();
        let mut p = pod("eni9397facaed1");
        p.labels = labels.clone();
        p.labels
            .insert("pod-template-hash".into(), "7d9f8c6b5".into());
        let r = remedy(
            &p,
            Some(80),
            "tcp",
            &["172.16.0.0/16".parse().unwrap()],
            &["10.0.14.0/26".parse().unwrap()],
        );
        let v: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(&r.network_policy).expect("valid YAML");
        // It reads back as the API type, as `kubectl apply` would parse it.
        let typed: NetworkPolicy =
            serde_yaml_ng::from_str(&r.network_policy).expect("a NetworkPolicy");
        assert_eq!(
            typed.metadata.name.as_deref(),
            Some("observer-restrict-cart-7d9-80")
        );
        assert_eq!(v["apiVersion"], "networking.k8s.io/v1");
        assert_eq!(v["kind"], "NetworkPolicy");
        assert_eq!(v["metadata"]["namespace"], "shop");
        assert_eq!(v["metadata"]["name"], "observer-restrict-cart-7d9-80");
        let sel: BTreeMap<String, String> =
            serde_yaml_ng::from_value(v["spec"]["podSelector"]["matchLabels"].clone()).unwrap();
        assert_eq!(
            sel, labels,
            "the selector matches the pod's labels, without the per-revision ones"
        );
        assert_eq!(v["spec"]["policyTypes"][0], "Ingress");
        let from = v["spec"]["ingress"][0]["from"].as_sequence().unwrap();
        assert!(
            from[0]["namespaceSelector"]
                .as_mapping()
                .unwrap()
                .is_empty()
        );
        assert_eq!(from[1]["ipBlock"]["cidr"], "172.16.0.0/16");
        assert_eq!(from[2]["ipBlock"]["cidr"], "10.0.14.0/26");
        assert_eq!(v["spec"]["ingress"][0]["ports"][0]["protocol"], "TCP");
        assert_eq!(v["spec"]["ingress"][0]["ports"][0]["port"], 80);
        assert!(r.hint.contains("security group") && r.hint.contains("10.0.14.0/26"));
    }

    #[test]
    fn unknown_labels_select_nothing_until_replaced() {
        let r = remedy(&pod("calibe254a7a7ea"), None, "icmp", &[], &[]);
        let v: serde_yaml_ng::Value = serde_yaml_ng::from_str(&r.network_policy).unwrap();
        let sel = v["spec"]["podSelector"]["matchLabels"]
            .as_mapping()
            .unwrap();
        assert_eq!(sel.len(), 1);
        assert!(sel.contains_key(PLACEHOLDER_LABEL));
        assert!(v["spec"]["ingress"][0].get("ports").is_none());
        assert!(r.hint.starts_with("Calico"));
    }
}
