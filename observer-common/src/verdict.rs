//! The one function that decides a packet's verdict at an uplink: [`decide`].
//!
//! It runs in the kernel (inlined into the uplink program, with lookups in the BPF maps) and on
//! the host (unit tests, `observer explain`, with lookups in the agent's inventory), so both give
//! the same answer by construction; the differential test proves it on the real kernel.

use crate::{
    addr::{IpKey, is_v4},
    maps::{FlowKey, FragKey, origin, role},
    packet::{
        DsrMark, IPPROTO_ICMP, IPPROTO_ICMPV6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, Packet,
        Status,
    },
};

/// The class of a packet entering a node on an uplink. See `SCENARIOS.md`.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Verdict {
    /// A well-formed frame that is not IP (ARP, LLDP...).
    NotIp = 0,
    /// A truncated or contradictory frame.
    Malformed = 1,
    /// A non-first IP fragment: no ports; its flow is judged by its first fragment.
    Fragment = 2,
    /// To the node itself (SSH, kubelet), or to nothing this node hosts.
    Host = 3,
    /// From inside the cluster (a node, a pod of any node, a cluster CIDR) to a local pod.
    InCluster = 4,
    /// A reply to a flow a local pod opened.
    Reply = 5,
    /// From an allowed source (load balancer subnet, health checker) to a local pod.
    Allowed = 6,
    /// To a Service ClusterIP / external IP routed to the node.
    Service = 7,
    /// To a node address on a NodePort.
    NodePort = 8,
    /// From outside the cluster straight to a local pod's IP: the exposure to alert on.
    DirectToPod = 9,
}

/// Number of verdicts.
pub const VERDICT_COUNT: usize = 10;

impl Verdict {
    pub const ALL: [Verdict; VERDICT_COUNT] = [
        Verdict::NotIp,
        Verdict::Malformed,
        Verdict::Fragment,
        Verdict::Host,
        Verdict::InCluster,
        Verdict::Reply,
        Verdict::Allowed,
        Verdict::Service,
        Verdict::NodePort,
        Verdict::DirectToPod,
    ];

    /// The verdict's metric label / CLI name.
    pub const fn name(self) -> &'static str {
        match self {
            Verdict::NotIp => "not_ip",
            Verdict::Malformed => "malformed",
            Verdict::Fragment => "fragment",
            Verdict::Host => "host",
            Verdict::InCluster => "in_cluster",
            Verdict::Reply => "reply",
            Verdict::Allowed => "allowed",
            Verdict::Service => "service",
            Verdict::NodePort => "nodeport",
            Verdict::DirectToPod => "direct_to_pod",
        }
    }

    /// The verdict of a map byte, if it is one.
    pub const fn from_u8(v: u8) -> Option<Self> {
        if (v as usize) < VERDICT_COUNT {
            Some(Self::ALL[v as usize])
        } else {
            None
        }
    }

    /// Its bit in a verdict mask (e.g. the tracked-verdicts global).
    pub const fn bit(self) -> u32 {
        1 << self as u32
    }

    /// Whether this verdict raises an alert.
    pub const fn alerts(self) -> bool {
        matches!(self, Verdict::DirectToPod)
    }
}

/// Why a packet got its verdict. One enum for all verdicts, so it fits a map byte.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    NotIpEthertype = 0,
    TruncatedEthernet = 1,
    TruncatedVlan = 2,
    TooManyVlanTags = 3,
    BadIpv4Header = 4,
    TruncatedIpv4 = 5,
    BadIpv4TotalLength = 6,
    BadIpv6Header = 7,
    TruncatedIpv6 = 8,
    TruncatedIpv6ExtHeader = 9,
    TooManyIpv6ExtHeaders = 10,
    TruncatedL4 = 11,
    BadTcpHeader = 12,
    NonFirstFragment = 13,
    DstNodeAddress = 14,
    DstNotLocal = 15,
    SrcInCluster = 16,
    ReplyToPodFlow = 17,
    IcmpErrorForPodFlow = 18,
    SrcAllowed = 19,
    DstService = 20,
    DstNodePort = 21,
    DirectNewConnection = 22,
    DirectMidStream = 23,
    DirectDatagram = 24,
    DirectIcmp = 25,
    DirectOtherProtocol = 26,
    IcmpErrorForServedFlow = 27,
    DirectIcmpErrorUnseenFlow = 28,
    DsrMarked = 29,
    DsrFlow = 30,
    /// Given by the agent, never the kernel: a direct access from a source declared for the pod.
    SrcDeclared = 31,
}

/// Number of reasons.
pub const REASON_COUNT: usize = 32;

impl Reason {
    pub const ALL: [Reason; REASON_COUNT] = [
        Reason::NotIpEthertype,
        Reason::TruncatedEthernet,
        Reason::TruncatedVlan,
        Reason::TooManyVlanTags,
        Reason::BadIpv4Header,
        Reason::TruncatedIpv4,
        Reason::BadIpv4TotalLength,
        Reason::BadIpv6Header,
        Reason::TruncatedIpv6,
        Reason::TruncatedIpv6ExtHeader,
        Reason::TooManyIpv6ExtHeaders,
        Reason::TruncatedL4,
        Reason::BadTcpHeader,
        Reason::NonFirstFragment,
        Reason::DstNodeAddress,
        Reason::DstNotLocal,
        Reason::SrcInCluster,
        Reason::ReplyToPodFlow,
        Reason::IcmpErrorForPodFlow,
        Reason::SrcAllowed,
        Reason::DstService,
        Reason::DstNodePort,
        Reason::DirectNewConnection,
        Reason::DirectMidStream,
        Reason::DirectDatagram,
        Reason::DirectIcmp,
        Reason::DirectOtherProtocol,
        Reason::IcmpErrorForServedFlow,
        Reason::DirectIcmpErrorUnseenFlow,
        Reason::DsrMarked,
        Reason::DsrFlow,
        Reason::SrcDeclared,
    ];

    /// The reason of a map byte, if it is one.
    pub const fn from_u8(v: u8) -> Option<Self> {
        if (v as usize) < REASON_COUNT {
            Some(Self::ALL[v as usize])
        } else {
            None
        }
    }

    /// Whether the parser read the IP addresses before it found the frame malformed (the
    /// upper-layer header is cut short or hidden behind too many extension headers).
    pub const fn after_addresses(self) -> bool {
        matches!(
            self,
            Reason::TruncatedIpv6ExtHeader
                | Reason::TooManyIpv6ExtHeaders
                | Reason::TruncatedL4
                | Reason::BadTcpHeader
        )
    }

    /// The reason in words, for alerts, `observer explain` and `observer flows`.
    pub const fn describe(self) -> &'static str {
        match self {
            Reason::NotIpEthertype => {
                "the frame carries no IPv4/IPv6 (ARP, LLDP or another ethertype)"
            }
            Reason::TruncatedEthernet => "the frame is shorter than an Ethernet header",
            Reason::TruncatedVlan => "the frame ends inside a VLAN tag",
            Reason::TooManyVlanTags => "more VLAN tags than the parser follows",
            Reason::BadIpv4Header => "the IPv4 header has a wrong version or header length",
            Reason::TruncatedIpv4 => "the frame ends inside the IPv4 header or its options",
            Reason::BadIpv4TotalLength => "the IPv4 total length is shorter than its header",
            Reason::BadIpv6Header => "the IPv6 header has a wrong version",
            Reason::TruncatedIpv6 => "the frame ends inside the IPv6 header",
            Reason::TruncatedIpv6ExtHeader => "the packet ends inside an IPv6 extension header",
            Reason::TooManyIpv6ExtHeaders => "more IPv6 extension headers than the parser follows",
            Reason::TruncatedL4 => "the packet ends inside its TCP/UDP/SCTP/ICMP header",
            Reason::BadTcpHeader => "the TCP data offset is shorter than a TCP header",
            Reason::NonFirstFragment => {
                "a non-first IP fragment: it carries no ports; its first fragment was judged"
            }
            Reason::DstNodeAddress => "addressed to this node itself, not on a NodePort",
            Reason::DstNotLocal => "addressed to neither a local pod, this node, nor a Service",
            Reason::SrcInCluster => {
                "the source is inside the cluster (a node, a pod, or a cluster CIDR)"
            }
            Reason::ReplyToPodFlow => "a reply to a flow the pod itself opened",
            Reason::IcmpErrorForPodFlow => "an ICMP error about a flow the pod itself opened",
            Reason::SrcAllowed => "the source is in an allowed CIDR (e.g. a load balancer subnet)",
            Reason::DstService => {
                "addressed to a Service IP (ClusterIP, external IP or the Service CIDR)"
            }
            Reason::DstNodePort => "addressed to a node address on a NodePort",
            Reason::DirectNewConnection => {
                "a connection opened from outside the cluster straight to the pod IP, bypassing Services and NodePorts"
            }
            Reason::DirectMidStream => {
                "a TCP segment from outside the cluster straight to the pod IP whose start was not seen (origin unknown)"
            }
            Reason::DirectDatagram => {
                "a UDP datagram from outside the cluster straight to the pod IP, bypassing Services and NodePorts"
            }
            Reason::DirectIcmp => "ICMP from outside the cluster straight to the pod IP",
            Reason::DirectOtherProtocol => {
                "an IP packet of another protocol from outside the cluster straight to the pod IP"
            }
            Reason::IcmpErrorForServedFlow => {
                "an ICMP error about the pod's answer in a flow it serves, which the node saw come in"
            }
            Reason::DirectIcmpErrorUnseenFlow => {
                "an ICMP error from outside the cluster about a flow this node never saw (who opened that flow is unknown)"
            }
            Reason::DsrMarked => {
                "forwarded by another node's load balancer in DSR mode: it carries the mark of a Service this cluster has"
            }
            Reason::DsrFlow => {
                "a later packet of a connection whose first packet carried a DSR mark of a Service"
            }
            Reason::SrcDeclared => {
                "the source is declared allowed for this pod (a pod or namespace annotation)"
            }
        }
    }
}

/// A verdict with its reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub reason: Reason,
}

impl Decision {
    #[inline(always)]
    const fn of(verdict: Verdict, reason: Reason) -> Self {
        Decision { verdict, reason }
    }
}

/// What the verdict needs to know about the cluster. The kernel answers from its maps; the
/// host answers from the agent's inventory model.
pub trait Lookup {
    /// The roles of an exact address (`IP_ROLES`), if it is known. An exact entry already
    /// carries the roles of every CIDR that contains it.
    fn exact_roles(&self, addr: &IpKey) -> Option<u32>;
    /// The roles of the longest CIDR containing the address (`CIDR_ROLES`), 0 when none does.
    /// A CIDR entry already carries the roles of every shorter CIDR that contains it.
    fn cidr_roles(&self, addr: &IpKey) -> u32;
    /// Whether a local pod opened this flow (`POD_FLOWS`); the key is as the pod sent it.
    fn pod_flow(&self, key: &FlowKey) -> bool;
    /// Whether the node saw this flow come in from outside the cluster to a local pod
    /// (`FLOWS`); the key is as the outsider sent it.
    fn served_flow(&self, key: &FlowKey) -> bool;
    /// Whether this port is an allocated NodePort (`NODEPORTS`), in or out of the range.
    fn nodeport(&self, port: u16, proto: u8) -> bool;
    /// Whether the first fragment of this datagram was judged a reply or a direct access
    /// (`FRAGS`), so its other fragments need no judgement of their own.
    fn fragment_judged(&self, key: &FragKey) -> bool;
    /// Whether this connection's first packet carried a recognised DSR mark (`DSR_FLOWS`); the
    /// key is as the client sent it.
    fn dsr_flow(&self, key: &FlowKey) -> bool;
    /// Whether the packet carries a DSR mark naming a frontend of this cluster
    /// ([`dsr_names_frontend`]). The host judges the mark the parser kept ([`Packet::dsr`]);
    /// the kernel judges the frame's mark before parsing it, in the program's one first
    /// state rather than once per packet shape the parse makes, and answers from that.
    #[inline(always)]
    fn dsr_marked(&self, p: &Packet) -> bool {
        p.dsr.is_some_and(|m| dsr_names_frontend(&m, self))
    }
    /// The roles of an address: the exact map first, the CIDR trie only on a miss. The kernel
    /// answers repeated addresses from a per-CPU cache in front of both.
    #[inline(always)]
    fn roles(&self, addr: &IpKey) -> u32 {
        uncached_roles(self, addr)
    }
}

/// An address's roles straight from the maps: the exact map first, the CIDR trie on a miss.
#[inline(always)]
pub fn uncached_roles<L: Lookup + ?Sized>(l: &L, addr: &IpKey) -> u32 {
    match l.exact_roles(addr) {
        Some(r) => r,
        None => l.cidr_roles(addr),
    }
}

/// Settings the verdict depends on besides the inventory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settings {
    pub nodeport_min: u16,
    pub nodeport_max: u16,
    /// Trust Cilium's DSR marks (`--dsr-marks`): a marked packet naming a Service this cluster
    /// has, and its connection's later packets, are Service traffic.
    pub dsr_marks: bool,
}

impl Settings {
    #[inline(always)]
    fn nodeport(&self, port: u16, proto: u8, l: &(impl Lookup + ?Sized)) -> bool {
        (port >= self.nodeport_min && port <= self.nodeport_max) || l.nodeport(port, proto)
    }
}

/// The verdict of a packet entering the node on an uplink, before any DNAT, from what
/// [`crate::packet::parse`] made of it.
#[inline(always)]
pub fn decide<L: Lookup + ?Sized>(
    status: Status,
    p: &Packet,
    settings: &Settings,
    l: &L,
) -> Decision {
    match status {
        Status::NotIp => return Decision::of(Verdict::NotIp, Reason::NotIpEthertype),
        Status::Malformed(reason) => return Decision::of(Verdict::Malformed, reason),
        Status::Ip => {}
    }
    if p.fragment {
        return Decision::of(Verdict::Fragment, Reason::NonFirstFragment);
    }
    let dst = l.roles(&p.dst);
    if dst & role::LOCAL_POD != 0 {
        return to_local_pod(p, settings, l);
    }
    if dst & role::NODE != 0 {
        if p.has_ports() && settings.nodeport(p.dport, p.proto, l) {
            return Decision::of(Verdict::NodePort, Reason::DstNodePort);
        }
        return Decision::of(Verdict::Host, Reason::DstNodeAddress);
    }
    if dst & role::SERVICE != 0 {
        return Decision::of(Verdict::Service, Reason::DstService);
    }
    Decision::of(Verdict::Host, Reason::DstNotLocal)
}

#[inline(always)]
fn to_local_pod<L: Lookup + ?Sized>(p: &Packet, settings: &Settings, l: &L) -> Decision {
    let src = l.roles(&p.src);
    if src & role::CLUSTER != 0 {
        return Decision::of(Verdict::InCluster, Reason::SrcInCluster);
    }
    if let Some(reason) = reply_reason(p, l) {
        return Decision::of(Verdict::Reply, reason);
    }
    if src & role::ALLOWED != 0 {
        return Decision::of(Verdict::Allowed, Reason::SrcAllowed);
    }
    if settings.dsr_marks && p.has_ports() && l.dsr_marked(p) {
        return Decision::of(Verdict::Service, Reason::DsrMarked);
    }
    // A later packet of a connection whose first packet was marked.
    if settings.dsr_marks
        && matches!(p.proto, IPPROTO_TCP | IPPROTO_SCTP)
        && !p.flow_start
        && l.dsr_flow(&p.key())
    {
        return Decision::of(Verdict::Service, Reason::DsrFlow);
    }
    Decision::of(Verdict::DirectToPod, direct_reason(p))
}

/// Whether a DSR mark names a frontend of this cluster ([`dsr_frontend`]), read as Cilium up to
/// 1.18 writes it or, for IPv4, in network order (newer Cilium's test fixtures).
#[inline(always)]
pub fn dsr_names_frontend<L: Lookup + ?Sized>(m: &DsrMark, l: &L) -> bool {
    if dsr_frontend(&m.addr, m.port, m.proto, l) {
        return true;
    }
    if !is_v4(&m.addr) {
        return false;
    }
    let mut addr = m.addr;
    addr.swap(12, 15);
    addr.swap(13, 14);
    dsr_frontend(&addr, m.port.swap_bytes(), m.proto, l)
}

/// Whether a DSR mark's address and port are a frontend of this cluster: a Service address, or
/// a node's address (this node's, or another's the Kubernetes inventory knows) on a NodePort a
/// Service allocated.
#[inline(always)]
pub fn dsr_frontend<L: Lookup + ?Sized>(addr: &IpKey, port: u16, proto: u8, l: &L) -> bool {
    // A node address only counts with a NodePort some Service allocated: a port of the range
    // alone, or any cluster address (a pod's), would let anyone forge a mark.
    let roles = uncached_roles(l, addr);
    roles & role::SERVICE != 0
        || (roles & (role::NODE | role::OTHER_NODE) != 0
            && if proto == 0 {
                // An IPv6 mark followed by the client's own extension headers: of any
                // protocol the load balancer forwards.
                [IPPROTO_TCP, IPPROTO_UDP, IPPROTO_SCTP]
                    .into_iter()
                    .any(|p| l.nodeport(port, p))
            } else {
                l.nodeport(port, proto)
            })
}

/// Whether the uplink remembers this packet's flow in `DSR_FLOWS`: a recognised mark on a
/// connection's first packet, whose later packets carry none.
#[inline(always)]
pub fn remember_dsr(p: &Packet, d: &Decision) -> bool {
    d.reason as u8 == Reason::DsrMarked as u8 && matches!(p.proto, IPPROTO_TCP | IPPROTO_SCTP)
}

/// Whether the packet answers a flow a local pod opened, and how.
#[inline(always)]
fn reply_reason<L: Lookup + ?Sized>(p: &Packet, l: &L) -> Option<Reason> {
    if let Some(quoted) = p.quoted() {
        // An ICMP error (fragmentation needed, packet too big, unreachable) quotes the pod's own
        // packet: its key is as the pod sent it. It is judged by the flow it quotes, which the
        // sender chose: only a quote of this very pod's packet in a flow the maps hold counts,
        // one the pod opened (`POD_FLOWS`) or one the node saw come in (`FLOWS`: a load
        // balancer's IP target answering a client whose address it keeps).
        if quoted.src != p.dst {
            return None;
        }
        if l.pod_flow(quoted) {
            return Some(Reason::IcmpErrorForPodFlow);
        }
        if l.served_flow(&quoted.reversed()) {
            return Some(Reason::IcmpErrorForServedFlow);
        }
        return None;
    }
    // A packet that opens a flow (SYN, INIT, echo request) is never a reply.
    if p.flow_start {
        return None;
    }
    match p.proto {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP | IPPROTO_ICMP | IPPROTO_ICMPV6 => l
            .pod_flow(&p.key().reversed())
            .then_some(Reason::ReplyToPodFlow),
        _ => None,
    }
}

#[inline(always)]
fn direct_reason(p: &Packet) -> Reason {
    match p.proto {
        IPPROTO_TCP | IPPROTO_SCTP if p.flow_start => Reason::DirectNewConnection,
        IPPROTO_TCP | IPPROTO_SCTP => Reason::DirectMidStream,
        IPPROTO_UDP => Reason::DirectDatagram,
        IPPROTO_ICMP | IPPROTO_ICMPV6 if p.has_quoted => Reason::DirectIcmpErrorUnseenFlow,
        IPPROTO_ICMP | IPPROTO_ICMPV6 => Reason::DirectIcmp,
        _ => Reason::DirectOtherProtocol,
    }
}

/// Kinds of packets from outside the cluster to a local pod whose flow could not be read, so
/// that a connection could hide in them: they are counted per pod (`POD_UNJUDGED`) and alerted
/// on, whatever their verdict (`malformed` or `fragment`) says.
pub mod unjudged {
    /// The upper-layer header is cut short or out of reach: a tiny first fragment (RFC 1858),
    /// an IPv6 first fragment without its upper-layer header, a header chain longer than the
    /// parser follows.
    pub const HEADER: usize = 0;
    /// A non-first fragment whose first fragment was not judged (sent alone, before it, or
    /// itself unreadable).
    pub const FRAGMENT: usize = 1;
    pub const COUNT: usize = 2;
    pub const NAMES: [&str; COUNT] = ["header", "fragment"];
}

/// For a packet judged `malformed` or `fragment`: the [`unjudged`] kind when it was sent from
/// outside the cluster (no cluster or allowed source) to a local pod, `None` otherwise.
#[inline(always)]
pub fn unjudged<L: Lookup + ?Sized>(status: Status, p: &Packet, l: &L) -> Option<usize> {
    let kind = match status {
        Status::Malformed(reason) if reason.after_addresses() => unjudged::HEADER,
        Status::Ip if p.fragment => unjudged::FRAGMENT,
        _ => return None,
    };
    if l.roles(&p.dst) & role::LOCAL_POD == 0
        || l.roles(&p.src) & (role::CLUSTER | role::ALLOWED) != 0
    {
        return None;
    }
    if kind == unjudged::FRAGMENT && l.fragment_judged(&p.frag_key()) {
        return None;
    }
    Some(kind)
}

/// Whether this packet is a first fragment whose verdict its other fragments inherit (`FRAGS`):
/// a reply, or a direct access already flagged as such.
#[inline(always)]
pub fn remember_fragment(p: &Packet, d: &Decision) -> bool {
    p.more_fragments && !p.fragment && matches!(d.verdict, Verdict::Reply | Verdict::DirectToPod)
}

/// How a flagged flow began, from its first packet seen ([`origin`]).
#[inline(always)]
pub fn origin_of(p: &Packet) -> u8 {
    if p.flow_start {
        origin::START
    } else if p.has_quoted || matches!(p.proto, IPPROTO_TCP | IPPROTO_SCTP) {
        // An ICMP error about a flow nobody saw: who opened that flow is as unknown as for a
        // segment picked up mid-stream (its own, lesser alert).
        origin::MID_STREAM
    } else {
        origin::DATAGRAM
    }
}
