//! Kubernetes objects as the API serves them, for the fixture server.

use serde_json::{Value, json};

/// The node EndpointSlice endpoints are placed on (the seed's Calico node).
const NODE: &str = "ip-10-0-13-0.ec2.internal";

pub fn node(name: &str, ip: &str, pod_cidr: &str) -> Value {
    json!({
        "kind": "Node",
        "metadata": {"name": name, "labels": {"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": "us-east-1a"}},
        "spec": {"podCIDR": pod_cidr, "podCIDRs": [pod_cidr], "providerID": format!("aws:///us-east-1a/i-{}", name.len())},
        "status": {
            "addresses": [
                {"type": "InternalIP", "address": ip},
                {"type": "Hostname", "address": name},
                {"type": "InternalDNS", "address": name}
            ],
            "conditions": [{"type": "Ready", "status": "True"}]
        }
    })
}

/// A node of a VPC CNI cluster: its addresses, no pod CIDR (pods hold VPC addresses).
pub fn vpc_node(name: &str, ip: &str) -> Value {
    let mut n = node(name, ip, "10.0.0.0/32");
    n["spec"] = json!({});
    n
}

/// The `web` Deployment's pod `shop/web-7854ff8877-z5nh5` (port 80) on `node`.
pub fn web_pod(node: &str, ip: &str) -> Value {
    pod("shop", "web-7854ff8877-z5nh5", "web", node, ip, &[80])
}

/// A pod of a Deployment (owner: ReplicaSet `<deploy>-<hash>`).
pub fn pod(ns: &str, name: &str, deploy: &str, node: &str, ip: &str, ports: &[u16]) -> Value {
    let hash = "7854ff8877";
    json!({
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "labels": {"app": deploy, "pod-template-hash": hash},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": format!("{deploy}-{hash}"), "uid": format!("rs-{deploy}"), "controller": true, "blockOwnerDeletion": true}]
        },
        "spec": {
            "nodeName": node,
            "containers": [{"name": deploy, "image": "nginx:1.27", "ports": ports.iter().map(|p| json!({"containerPort": p, "protocol": "TCP"})).collect::<Vec<_>>()}]
        },
        "status": {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": "10.0.13.0"}
    })
}

pub fn service(ns: &str, name: &str, cluster_ip: &str, kind: &str, app: &str) -> Value {
    let mut s = json!({
        "kind": "Service",
        "metadata": {"name": name, "namespace": ns},
        "spec": {
            "type": kind,
            "clusterIP": cluster_ip,
            "clusterIPs": [cluster_ip],
            "selector": {"app": app},
            "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 80}]
        },
        "status": {"loadBalancer": {}}
    });
    if kind == "NodePort" || kind == "LoadBalancer" {
        s["spec"]["ports"][0]["nodePort"] = json!(31555);
    }
    if kind == "LoadBalancer" {
        s["status"]["loadBalancer"] =
            json!({"ingress": [{"hostname": "k8s-web-1234.elb.us-east-1.amazonaws.com"}]});
    }
    s
}

pub fn slice(ns: &str, svc: &str, ips: &[&str]) -> Value {
    json!({
        "kind": "EndpointSlice",
        "metadata": {"name": format!("{svc}-abcde"), "namespace": ns, "labels": {"kubernetes.io/service-name": svc, "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
        "addressType": "IPv4",
        "endpoints": ips.iter().map(|ip| json!({"addresses": [ip], "conditions": {"ready": true}, "nodeName": NODE})).collect::<Vec<_>>(),
        "ports": [{"name": "http", "port": 80, "protocol": "TCP"}]
    })
}

/// A Namespace, with the observer's declaration of allowed sources if given.
pub fn namespace(name: &str, allowed_sources: Option<&str>) -> Value {
    let mut n =
        json!({"kind": "Namespace", "metadata": {"name": name}, "status": {"phase": "Active"}});
    if let Some(a) = allowed_sources {
        n["metadata"]["annotations"] = json!({
            "observer.io/allowed-sources": a,
            "kubectl.kubernetes.io/last-applied-configuration": "{\"apiVersion\":\"v1\",\"kind\":\"Namespace\"}",
        });
    }
    n
}

/// `pod` with the observer's declaration of allowed sources.
pub fn with_allowed_sources(mut pod: Value, allowed_sources: &str) -> Value {
    pod["metadata"]["annotations"] = json!({
        "observer.io/allowed-sources": allowed_sources,
        "prometheus.io/scrape": "true",
    });
    pod
}
