//! Remediation hints for a direct path: a NetworkPolicy that admits only cluster sources and
//! the allowed CIDRs to the pod's port, and what to tighten in the network (the node security
//! group under VPC CNI, the pod CIDR routing under Calico).

use std::{collections::BTreeMap, fmt::Write as _};

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

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The remedy for direct access to `pod` on `port`/`protocol`.
pub fn remedy(
    pod: &PodRef,
    port: Option<u16>,
    protocol: &str,
    cluster: &[Cidr],
    allowed: &[Cidr],
) -> Remedy {
    let labels = &selector_labels(pod);
    let namespace = if pod.namespace.is_empty() {
        "default"
    } else {
        &pod.namespace
    };
    let name = match port {
        Some(p) => format!("observer-restrict-{}-{p}", dns_label(&pod.name)),
        None => format!("observer-restrict-{}", dns_label(&pod.name)),
    };
    let mut y = String::new();
    let _ = writeln!(y, "apiVersion: networking.k8s.io/v1");
    let _ = writeln!(y, "kind: NetworkPolicy");
    let _ = writeln!(y, "metadata:");
    let _ = writeln!(y, "  name: {name}");
    let _ = writeln!(y, "  namespace: {}", quote(namespace));
    let _ = writeln!(y, "spec:");
    let _ = writeln!(
        y,
        "  # Selecting the pod for ingress denies whatever no policy admits: add a rule for every"
    );
    let _ = writeln!(y, "  # other port the pod serves before applying.");
    let _ = writeln!(y, "  podSelector:");
    let _ = writeln!(y, "    matchLabels:");
    if labels.is_empty() {
        let _ = writeln!(y, "      {PLACEHOLDER_LABEL}: {}", quote(&pod.name));
    } else {
        for (k, v) in labels {
            let _ = writeln!(y, "      {}: {}", quote(k), quote(v));
        }
    }
    let _ = writeln!(y, "  policyTypes: [Ingress]");
    let _ = writeln!(y, "  ingress:");
    let _ = writeln!(y, "    - from:");
    let _ = writeln!(y, "        # every pod of the cluster");
    let _ = writeln!(y, "        - namespaceSelector: {{}}");
    for c in cluster {
        let _ = writeln!(
            y,
            "        - ipBlock: {{cidr: {}}}  # cluster",
            quote(&c.to_string())
        );
    }
    for c in allowed {
        let _ = writeln!(
            y,
            "        - ipBlock: {{cidr: {}}}  # allowed source",
            quote(&c.to_string())
        );
    }
    if let (Some(p), "tcp" | "udp" | "sctp") = (port, protocol) {
        let _ = writeln!(y, "      ports:");
        let _ = writeln!(y, "        - protocol: {}", protocol.to_ascii_uppercase());
        let _ = writeln!(y, "          port: {p}");
    }
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
        let v: serde_yaml::Value = serde_yaml::from_str(&r.network_policy).expect("valid YAML");
        assert_eq!(v["apiVersion"], "networking.k8s.io/v1");
        assert_eq!(v["kind"], "NetworkPolicy");
        assert_eq!(v["metadata"]["namespace"], "shop");
        assert_eq!(v["metadata"]["name"], "observer-restrict-cart-7d9-80");
        let sel: BTreeMap<String, String> =
            serde_yaml::from_value(v["spec"]["podSelector"]["matchLabels"].clone()).unwrap();
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
        let v: serde_yaml::Value = serde_yaml::from_str(&r.network_policy).unwrap();
        let sel = v["spec"]["podSelector"]["matchLabels"]
            .as_mapping()
            .unwrap();
        assert_eq!(sel.len(), 1);
        assert!(sel.contains_key(PLACEHOLDER_LABEL));
        assert!(v["spec"]["ingress"][0].get("ports").is_none());
        assert!(r.hint.starts_with("Calico"));
    }
}
