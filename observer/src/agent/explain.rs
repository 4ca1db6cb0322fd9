//! `observer explain`: the verdict a packet would get now, from the same function the kernel
//! runs, over the live maps.

use std::net::{IpAddr, SocketAddr};

use observer_common::{
    addr::key_of,
    maps::role,
    packet::{
        ICMP_ECHO_REQUEST, ICMPV6_ECHO_REQUEST, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_TCP,
        IPPROTO_UDP, Packet, Status, TCP_SYN,
    },
    verdict::{Decision, Lookup, Reason, Settings, Verdict, decide},
};
use serde::{Deserialize, Serialize};

use crate::inventory::{PodRef, declared};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    pub packet: String,
    pub verdict: String,
    pub alert: bool,
    pub reason: String,
    pub src_roles: Vec<String>,
    pub dst_roles: Vec<String>,
    pub pod: Option<PodRef>,
    /// For a direct access: the NetworkPolicy and network change that would close it.
    #[serde(default)]
    pub remedy: Option<crate::export::remedy::Remedy>,
    /// For a direct access from a source declared for the pod: the declaration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rule: Option<String>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ExplainError {
    #[error("{0}")]
    Other(String),
    #[error("invalid source {0:?}: an IPv4 or IPv6 address")]
    Src(String),
    #[error("invalid destination {0:?}: ADDRESS, ADDRESS:PORT or [IPv6]:PORT")]
    Dst(String),
    #[error("source and destination are of different families")]
    Families,
    #[error("invalid protocol {0:?}: tcp, udp or icmp")]
    Protocol(String),
    #[error("a port is given but ICMP has none")]
    IcmpPort,
}

fn role_names(bits: u32) -> Vec<String> {
    [
        (role::LOCAL_POD, "local pod"),
        (role::NODE, "this node"),
        (role::CLUSTER, "in cluster"),
        (role::ALLOWED, "allowed source"),
        (role::SERVICE, "service"),
        (role::OTHER_NODE, "another node"),
    ]
    .iter()
    .filter(|(b, _)| bits & b != 0)
    .map(|(_, n)| n.to_string())
    .collect()
}

/// Parses `ADDRESS`, `ADDRESS:PORT` or `[IPv6]:PORT`.
pub fn parse_dst(s: &str) -> Result<(IpAddr, Option<u16>), ExplainError> {
    if let Ok(ip) = s.parse::<IpAddr>() {
        return Ok((ip, None));
    }
    s.parse::<SocketAddr>()
        .map(|a| (a.ip(), Some(a.port())))
        .map_err(|_| ExplainError::Dst(s.to_string()))
}

/// The first packet of a new flow from `src` to `dst` (TCP SYN, a UDP datagram, an ICMP echo
/// request), judged now.
pub fn explain<L: Lookup + ?Sized>(
    lookup: &L,
    settings: &Settings,
    src: &str,
    dst: &str,
    protocol: Option<&str>,
    pod_of: impl Fn(&IpAddr) -> Option<PodRef>,
) -> Result<Explanation, ExplainError> {
    let src_ip: IpAddr = src
        .parse()
        .map_err(|_| ExplainError::Src(src.to_string()))?;
    let (dst_ip, port) = parse_dst(dst)?;
    if src_ip.is_ipv4() != dst_ip.is_ipv4() {
        return Err(ExplainError::Families);
    }
    let proto_name = protocol.unwrap_or("tcp").to_ascii_lowercase();
    let mut p = Packet::EMPTY;
    p.src = key_of(src_ip);
    p.dst = key_of(dst_ip);
    match proto_name.as_str() {
        "tcp" => {
            p.proto = IPPROTO_TCP;
            p.tcp_flags = TCP_SYN;
            p.flow_start = true;
            p.sport = 40000;
            p.dport = port.unwrap_or(80);
        }
        "udp" => {
            p.proto = IPPROTO_UDP;
            p.sport = 40000;
            p.dport = port.unwrap_or(53);
        }
        "icmp" => {
            if port.is_some() {
                return Err(ExplainError::IcmpPort);
            }
            let v4 = src_ip.is_ipv4();
            p.proto = if v4 { IPPROTO_ICMP } else { IPPROTO_ICMPV6 };
            p.icmp_type = if v4 {
                ICMP_ECHO_REQUEST
            } else {
                ICMPV6_ECHO_REQUEST
            };
            p.flow_start = true;
        }
        other => return Err(ExplainError::Protocol(other.to_string())),
    }
    let mut d = decide(Status::Ip, &p, settings, lookup);
    let pod = pod_of(&dst_ip);
    // The agent's judgement over the kernel's: a direct access the pod's (or its namespace's)
    // annotation declares is allowed, as the flow tracker judges it.
    let rule = pod.as_ref().and_then(|pod| {
        let a = declared::admitted(&pod.allowed, src_ip, p.proto, p.dport)?;
        d.verdict.alerts().then(|| a.rule())
    });
    if rule.is_some() {
        d = Decision {
            verdict: Verdict::Allowed,
            reason: Reason::SrcDeclared,
        };
    }
    let packet = match p.proto {
        IPPROTO_TCP | IPPROTO_UDP => {
            let dst_text = match dst_ip {
                IpAddr::V6(v6) => format!("[{v6}]:{}", p.dport),
                IpAddr::V4(v4) => format!("{v4}:{}", p.dport),
            };
            format!("{proto_name} {src_ip} -> {dst_text}")
        }
        _ => format!("icmp echo request {src_ip} -> {dst_ip}"),
    };
    Ok(Explanation {
        packet,
        verdict: d.verdict.name().to_string(),
        alert: d.verdict.alerts(),
        reason: match &rule {
            Some(rule) => format!("{}: {rule}", d.reason.describe()),
            None => d.reason.describe().to_string(),
        },
        src_roles: role_names(lookup.roles(&p.src)),
        dst_roles: role_names(lookup.roles(&p.dst)),
        pod,
        remedy: None,
        rule,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use observer_common::testing::scenarios::{SETTINGS, vpc_cni};

    #[test]
    fn explains_with_the_verdict_function() {
        let l = vpc_cni();
        let e = explain(
            &l.inventory,
            &SETTINGS,
            "10.0.6.245",
            "10.0.3.240:80",
            None,
            |_| None,
        )
        .unwrap();
        assert_eq!((e.verdict.as_str(), e.alert), ("direct_to_pod", true));
        assert_eq!(e.dst_roles, vec!["local pod", "in cluster"]);
        let e = explain(
            &l.inventory,
            &SETTINGS,
            "10.0.6.245",
            "10.0.7.223:30080",
            Some("udp"),
            |_| None,
        )
        .unwrap();
        assert_eq!(e.verdict, "nodeport");
        let e = explain(
            &l.inventory,
            &SETTINGS,
            "10.0.12.177",
            "10.0.3.240",
            Some("icmp"),
            |_| None,
        )
        .unwrap();
        assert_eq!(e.verdict, "in_cluster");
        let e = explain(
            &l.inventory,
            &SETTINGS,
            "2600:1f18:abcd:1::99",
            "[2600:1f18:abcd:1::3f0]:443",
            None,
            |_| None,
        )
        .unwrap();
        assert_eq!(e.verdict, "direct_to_pod");
    }

    #[test]
    fn bad_input_is_an_error() {
        let l = vpc_cni();
        let ex = |s: &str, d: &str, p: Option<&str>| {
            explain(&l.inventory, &SETTINGS, s, d, p, |_| None).unwrap_err()
        };
        assert_eq!(
            ex("nope", "10.0.3.240", None),
            ExplainError::Src("nope".into())
        );
        assert_eq!(
            ex("10.0.6.245", "10.0.3.240:99999", None),
            ExplainError::Dst("10.0.3.240:99999".into())
        );
        assert_eq!(ex("10.0.6.245", "::1", None), ExplainError::Families);
        assert_eq!(
            ex("10.0.6.245", "10.0.3.240", Some("gre")),
            ExplainError::Protocol("gre".into())
        );
        assert_eq!(
            ex("10.0.6.245", "10.0.3.240:80", Some("icmp")),
            ExplainError::IcmpPort
        );
    }
}
