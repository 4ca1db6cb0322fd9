//! The Kubernetes objects as the inventory reads them: only the fields it uses. A 150k-pod
//! list is read in pages, object by object, and the rest of each object (managed fields,
//! container specs, conditions, annotations but ours) is skipped by the parser instead of being built
//! into `k8s_openapi` structures and dropped: that was most of the agent's CPU at a full sync.
//!
//! Each type is a `kube::Resource` under the real group, version and plural, so the
//! production `watcher` lists and watches them unchanged.

use std::{borrow::Cow, collections::BTreeMap};

use k8s_openapi::{
    ClusterResourceScope, NamespaceResourceScope,
    apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference},
};
use serde::{Deserialize, Deserializer};

/// `kube::Resource` for a slim type: (type, scope, group, version, kind, plural).
macro_rules! resource {
    ($t:ty, $scope:ty, $group:literal, $version:literal, $kind:literal, $plural:literal) => {
        impl kube::Resource for $t {
            type DynamicType = ();
            type Scope = $scope;

            fn kind(_: &()) -> Cow<'_, str> {
                $kind.into()
            }
            fn group(_: &()) -> Cow<'_, str> {
                $group.into()
            }
            fn version(_: &()) -> Cow<'_, str> {
                $version.into()
            }
            fn plural(_: &()) -> Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

/// The metadata fields the inventory uses; the rest (managed fields above all, the largest
/// part of a real object) is skipped.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Meta {
    name: Option<String>,
    namespace: Option<String>,
    uid: Option<String>,
    resource_version: Option<String>,
    labels: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "our_annotations")]
    annotations: Option<BTreeMap<String, String>>,
    owner_references: Option<Vec<Owner>>,
}

/// Of an object's annotations, only the observer's own ([`crate::inventory::declared`]): the
/// others (last-applied configurations above all) are skipped, never built.
fn our_annotations<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<Option<BTreeMap<String, String>>, D::Error> {
    struct Ours;
    impl<'de> serde::de::Visitor<'de> for Ours {
        type Value = Option<BTreeMap<String, String>>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a map of annotations, or null")
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_map(Ours)
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> Result<Self::Value, A::Error> {
            let mut out = BTreeMap::new();
            while let Some(k) = m.next_key::<Cow<'de, str>>()? {
                if k == crate::inventory::declared::ANNOTATION {
                    out.insert(k.into_owned(), m.next_value::<String>()?);
                } else {
                    m.next_value::<serde::de::IgnoredAny>()?;
                }
            }
            Ok((!out.is_empty()).then_some(out))
        }
    }
    d.deserialize_option(Ours)
}

#[derive(Deserialize)]
struct Owner {
    kind: String,
    name: String,
    controller: Option<bool>,
}

/// A field that may be absent or `null`: its default then.
fn nullable<'de, D: Deserializer<'de>, T: Deserialize<'de> + Default>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn meta<'de, D: Deserializer<'de>>(d: D) -> Result<ObjectMeta, D::Error> {
    let m = Meta::deserialize(d)?;
    Ok(ObjectMeta {
        name: m.name,
        namespace: m.namespace,
        uid: m.uid,
        resource_version: m.resource_version,
        labels: m.labels,
        annotations: m.annotations,
        owner_references: m.owner_references.map(|o| {
            o.into_iter()
                .map(|o| OwnerReference {
                    kind: o.kind,
                    name: o.name,
                    controller: o.controller,
                    ..OwnerReference::default()
                })
                .collect()
        }),
        ..ObjectMeta::default()
    })
}

/// A Namespace: only its metadata (the observer's annotation).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct Namespace {
    #[serde(deserialize_with = "meta", default)]
    pub metadata: ObjectMeta,
}
resource!(
    Namespace,
    ClusterResourceScope,
    "",
    "v1",
    "Namespace",
    "namespaces"
);

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Pod {
    #[serde(deserialize_with = "meta", default)]
    pub metadata: ObjectMeta,
    #[serde(default, deserialize_with = "nullable")]
    pub spec: PodSpec,
    #[serde(default, deserialize_with = "nullable")]
    pub status: PodStatus,
}
resource!(Pod, NamespaceResourceScope, "", "v1", "Pod", "pods");

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodSpec {
    pub node_name: Option<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub host_network: bool,
    #[serde(default, deserialize_with = "nullable")]
    pub containers: Vec<Container>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Container {
    #[serde(default, deserialize_with = "nullable")]
    pub ports: Vec<ContainerPort>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ContainerPort {
    #[serde(default)]
    pub container_port: i32,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodStatus {
    pub phase: Option<String>,
    #[serde(rename = "podIPs", default, deserialize_with = "nullable")]
    pub pod_ips: Vec<PodIp>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct PodIp {
    pub ip: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Node {
    #[serde(deserialize_with = "meta", default)]
    pub metadata: ObjectMeta,
    #[serde(default, deserialize_with = "nullable")]
    pub spec: NodeSpec,
    #[serde(default, deserialize_with = "nullable")]
    pub status: NodeStatus,
}
resource!(Node, ClusterResourceScope, "", "v1", "Node", "nodes");

#[derive(Clone, Debug, Default, Deserialize)]
pub struct NodeSpec {
    #[serde(rename = "podCIDR")]
    pub pod_cidr: Option<String>,
    #[serde(rename = "podCIDRs")]
    pub pod_cidrs: Option<Vec<String>>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct NodeStatus {
    #[serde(default, deserialize_with = "nullable")]
    pub addresses: Vec<NodeAddress>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct NodeAddress {
    #[serde(rename = "type")]
    pub type_: String,
    pub address: String,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Service {
    #[serde(deserialize_with = "meta", default)]
    pub metadata: ObjectMeta,
    #[serde(default, deserialize_with = "nullable")]
    pub spec: ServiceSpec,
    #[serde(default, deserialize_with = "nullable")]
    pub status: ServiceStatus,
}
resource!(
    Service,
    NamespaceResourceScope,
    "",
    "v1",
    "Service",
    "services"
);

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceSpec {
    #[serde(rename = "type")]
    pub type_: Option<String>,
    #[serde(rename = "clusterIPs", default, deserialize_with = "nullable")]
    pub cluster_ips: Vec<String>,
    #[serde(rename = "externalIPs", default, deserialize_with = "nullable")]
    pub external_ips: Vec<String>,
    #[serde(default, deserialize_with = "nullable")]
    pub ports: Vec<ServicePort>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServicePort {
    pub protocol: Option<String>,
    pub node_port: Option<i32>,
}

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ServiceStatus {
    pub load_balancer: Option<LoadBalancerStatus>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct LoadBalancerStatus {
    #[serde(default, deserialize_with = "nullable")]
    pub ingress: Vec<LoadBalancerIngress>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct LoadBalancerIngress {
    pub ip: Option<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct EndpointSlice {
    #[serde(deserialize_with = "meta", default)]
    pub metadata: ObjectMeta,
    #[serde(default, deserialize_with = "nullable")]
    pub endpoints: Vec<Endpoint>,
    #[serde(default, deserialize_with = "nullable")]
    pub ports: Vec<EndpointPort>,
}
resource!(
    EndpointSlice,
    NamespaceResourceScope,
    "discovery.k8s.io",
    "v1",
    "EndpointSlice",
    "endpointslices"
);

#[derive(Clone, Debug, Default, Deserialize)]
pub struct Endpoint {
    #[serde(default, deserialize_with = "nullable")]
    pub addresses: Vec<String>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct EndpointPort {
    pub port: Option<i32>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ServiceCidr {
    #[serde(deserialize_with = "meta", default)]
    pub metadata: ObjectMeta,
    #[serde(default, deserialize_with = "nullable")]
    pub spec: ServiceCidrSpec,
}
resource!(
    ServiceCidr,
    ClusterResourceScope,
    "networking.k8s.io",
    "v1",
    "ServiceCIDR",
    "servicecidrs"
);

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ServiceCidrSpec {
    #[serde(default, deserialize_with = "nullable")]
    pub cidrs: Vec<String>,
}

/// An AWS Load Balancer Controller TargetGroupBinding (a CRD).
#[derive(Clone, Debug, Default, Deserialize)]
pub struct TargetGroupBinding {
    #[serde(deserialize_with = "meta", default)]
    pub metadata: ObjectMeta,
    #[serde(default, deserialize_with = "nullable")]
    pub spec: TgbSpec,
}
resource!(
    TargetGroupBinding,
    NamespaceResourceScope,
    "elbv2.k8s.aws",
    "v1beta1",
    "TargetGroupBinding",
    "targetgroupbindings"
);

#[derive(Clone, Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TgbSpec {
    pub target_type: Option<String>,
    pub service_ref: Option<ServiceRef>,
}

#[derive(Clone, Debug, Default, Deserialize)]
pub struct ServiceRef {
    pub name: String,
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1 as full;
    use serde_json::json;
    use testbed::kubeapi::fixtures;

    use super::*;

    /// The slim types read what the full `k8s_openapi` types read, for the fields used.
    #[test]
    fn slim_objects_read_what_the_full_types_read() {
        let mut pod = fixtures::pod("shop", "web-1", "web", "node-a", "10.0.3.240", &[80, 443]);
        pod["metadata"]["uid"] = json!("0b6d3f1e-2c4a-4e8f-9a1b-3c5d7e9f0a2b");
        pod["metadata"]["managedFields"] =
            json!([{"manager": "kubelet", "fieldsV1": {"f:status": {}}}]);
        pod["spec"]["hostNetwork"] = json!(false);
        let slim: Pod = serde_json::from_value(pod.clone()).unwrap();
        let fat: full::Pod = serde_json::from_value(pod).unwrap();
        let fat_spec = fat.spec.unwrap();
        let fat_status = fat.status.unwrap();
        assert_eq!(slim.metadata.uid, fat.metadata.uid);
        assert_eq!(slim.metadata.labels, fat.metadata.labels);
        assert_eq!(
            slim.metadata.owner_references.as_ref().unwrap()[0].name,
            fat.metadata.owner_references.unwrap()[0].name
        );
        assert!(slim.metadata.managed_fields.is_none());
        assert_eq!(slim.spec.node_name, fat_spec.node_name);
        assert_eq!(Some(slim.spec.host_network), fat_spec.host_network);
        let slim_ports: Vec<i32> = slim.spec.containers[0]
            .ports
            .iter()
            .map(|p| p.container_port)
            .collect();
        assert_eq!(
            slim_ports,
            fat_spec.containers[0]
                .ports
                .iter()
                .flatten()
                .map(|p| p.container_port)
                .collect::<Vec<_>>()
        );
        assert_eq!(slim.status.phase, fat_status.phase);
        assert_eq!(slim.status.pod_ips[0].ip, fat_status.pod_ips.unwrap()[0].ip);

        let node = fixtures::node("ip-10-0-13-0", "10.0.13.0", "100.64.1.0/24");
        let slim: Node = serde_json::from_value(node.clone()).unwrap();
        let fat: full::Node = serde_json::from_value(node).unwrap();
        assert_eq!(slim.spec.pod_cidrs, fat.spec.unwrap().pod_cidrs);
        assert_eq!(
            slim.status.addresses[0].address,
            fat.status.unwrap().addresses.unwrap()[0].address
        );
    }

    /// Fields sent as `null` (or left out) read as empty, not as an error that would fail
    /// the whole list page.
    #[test]
    fn null_and_missing_fields_are_empty() {
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": "p", "labels": null},
            "spec": {"containers": [{"name": "c", "ports": null}], "hostNetwork": null},
            "status": {"podIPs": null}
        }))
        .unwrap();
        assert!(pod.spec.containers[0].ports.is_empty() && !pod.spec.host_network);
        assert!(pod.status.pod_ips.is_empty());
        let svc: Service = serde_json::from_value(json!({"metadata": {}, "spec": null})).unwrap();
        assert!(svc.spec.cluster_ips.is_empty() && svc.status.load_balancer.is_none());
        let slice: EndpointSlice =
            serde_json::from_value(json!({"metadata": {}, "endpoints": null})).unwrap();
        assert!(slice.endpoints.is_empty());
        // Garbage is an error, not a silently empty object.
        assert!(serde_json::from_value::<Pod>(json!({"spec": {"containers": 3}})).is_err());
    }
}
