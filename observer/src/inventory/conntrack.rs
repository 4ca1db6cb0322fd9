//! Who opened a connection, from the kernel's connection tracking (ctnetlink over
//! `NETLINK_NETFILTER`): a dump of the node's connections when the agent starts, and single
//! lookups of flows whose start the observer did not see. Conntrack's original direction is
//! the side that sent the connection's first packet, which tells a pod's own connection (its
//! server's next segment is a reply) from an outsider's.
//!
//! A TCP connection conntrack picked up in the middle (`nf_conntrack_tcp_loose`, after a table
//! flush) carries the "be liberal" flag and no reliable direction: it counts as unknown.

use std::{net::IpAddr, os::fd::AsRawFd, time::Duration};

use netlink_packet_core::{
    NLM_F_DUMP, NLM_F_REQUEST, NetlinkHeader, NetlinkMessage, NetlinkPayload,
};
use netlink_packet_netfilter::{
    NetfilterHeader, NetfilterMessage, NetfilterMessageInner, NetfilterProtoFamily,
    conntrack::{
        ConntrackAttribute, ConntrackMessage, IPTuple, ProtoInfo, ProtoInfoTCP, ProtoTuple,
        Protocol, Tuple,
    },
};
use netlink_sys::{Socket, SocketAddr, protocols::NETLINK_NETFILTER};
use observer_common::{
    addr::{ip_of, key_of},
    maps::FlowKey,
    packet::{IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP},
};

/// `IP_CT_TCP_FLAG_BE_LIBERAL`: set on connections conntrack picked up mid-stream.
const TCP_FLAG_BE_LIBERAL: u8 = 0x08;
/// How long a reply from the kernel may take before the lookup gives up.
const TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum ConntrackError {
    #[error("opening a NETLINK_NETFILTER socket (needs CAP_NET_ADMIN): {0}")]
    Socket(std::io::Error),
    #[error("ctnetlink request: {0}")]
    Io(std::io::Error),
    #[error("ctnetlink answered with error {0}")]
    Kernel(i32),
    #[error("ctnetlink sent a message that does not parse: {0}")]
    Decode(String),
}

/// One direction of a tracked connection, as the packets of that direction carry it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CtTuple {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub sport: u16,
    pub dport: u16,
    pub proto: u8,
}

impl CtTuple {
    pub fn of(key: &FlowKey) -> CtTuple {
        CtTuple {
            src: ip_of(&key.src),
            dst: ip_of(&key.dst),
            sport: key.sport,
            dport: key.dport,
            proto: key.proto,
        }
    }

    pub fn key(&self) -> FlowKey {
        FlowKey::new(
            key_of(self.src),
            key_of(self.dst),
            self.sport,
            self.dport,
            self.proto,
        )
    }
}

/// A tracked connection: its original direction (the opener's packets) and its reply
/// direction (as the answers travel, after any NAT).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CtEntry {
    pub orig: CtTuple,
    pub reply: CtTuple,
    /// TCP picked up mid-stream: the direction is a guess.
    pub picked_up: bool,
}

/// What a tracked connection says about a flow seen at an uplink.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opener {
    /// A local pod opened it: packets towards the pod are replies. The key is the
    /// `POD_FLOWS` key, the flow as the pod's packets leave the node.
    Pod(FlowKey),
    /// The remote side opened it, straight to the pod's address.
    Outsider,
    /// Conntrack cannot tell (picked up mid-stream).
    Unknown,
}

impl CtEntry {
    /// Who opened the connection, for a node whose local pods `is_local_pod` tells.
    pub fn opener(&self, is_local_pod: impl Fn(&IpAddr) -> bool) -> Opener {
        if self.picked_up {
            return Opener::Unknown;
        }
        if is_local_pod(&self.orig.src) {
            // Replies come back as the reply tuple says; a pod-opened flow's replies reach
            // the pod's own address only when nothing rewrote it (no SNAT to the node).
            let r = self.reply;
            return Opener::Pod(
                CtTuple {
                    src: r.dst,
                    dst: r.src,
                    sport: r.dport,
                    dport: r.sport,
                    proto: r.proto,
                }
                .key(),
            );
        }
        if is_local_pod(&self.orig.dst) {
            return Opener::Outsider;
        }
        Opener::Unknown
    }
}

/// A ctnetlink socket.
pub struct Conntrack {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Conntrack {
    pub fn open() -> Result<Conntrack, ConntrackError> {
        let mut socket = Socket::new(NETLINK_NETFILTER).map_err(ConntrackError::Socket)?;
        socket.bind_auto().map_err(ConntrackError::Socket)?;
        socket
            .connect(&SocketAddr::new(0, 0))
            .map_err(ConntrackError::Socket)?;
        set_timeout(&socket, TIMEOUT).map_err(ConntrackError::Socket)?;
        Ok(Conntrack {
            socket,
            seq: 0,
            buf: vec![0; 1 << 16],
        })
    }

    /// Hands every tracked TCP, UDP and SCTP connection of both families to `each`, as the
    /// kernel's answer is read: nothing is collected, so a node tracking millions of
    /// connections (NAT-heavy nodes, big instances) costs the agent one receive buffer, not a
    /// copy of its table. Returns how many were read. Blocking: call it off the runtime's
    /// workers.
    pub fn dump(&mut self, mut each: impl FnMut(CtEntry)) -> Result<usize, ConntrackError> {
        let mut n = 0;
        for family in [NetfilterProtoFamily::IPv4, NetfilterProtoFamily::IPv6] {
            self.request(family, NLM_F_REQUEST | NLM_F_DUMP, Vec::new(), &mut |e| {
                n += 1;
                each(e);
            })?;
        }
        Ok(n)
    }

    /// The tracked connection one packet belongs to (in either direction), if any.
    pub fn get(&mut self, packet: &CtTuple) -> Result<Option<CtEntry>, ConntrackError> {
        let family = if packet.src.is_ipv4() {
            NetfilterProtoFamily::IPv4
        } else {
            NetfilterProtoFamily::IPv6
        };
        let tuple = ConntrackAttribute::CtaTupleOrig(vec![
            Tuple::Ip(vec![
                IPTuple::SourceAddress(packet.src),
                IPTuple::DestinationAddress(packet.dst),
            ]),
            Tuple::Proto(vec![
                ProtoTuple::Protocol(Protocol::from(packet.proto)),
                ProtoTuple::SourcePort(packet.sport),
                ProtoTuple::DestinationPort(packet.dport),
            ]),
        ]);
        let mut out = None;
        match self.request(family, NLM_F_REQUEST, vec![tuple], &mut |e| out = Some(e)) {
            Ok(()) => Ok(out),
            Err(ConntrackError::Kernel(e)) if e == -libc::ENOENT => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn request(
        &mut self,
        family: NetfilterProtoFamily,
        flags: u16,
        attributes: Vec<ConntrackAttribute>,
        out: &mut dyn FnMut(CtEntry),
    ) -> Result<(), ConntrackError> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut msg = NetlinkMessage::new(
            header,
            NetlinkPayload::from(NetfilterMessage::new(
                NetfilterHeader::new(family, 0, 0),
                ConntrackMessage::Get(attributes),
            )),
        );
        msg.finalize();
        let mut req = vec![0; msg.buffer_len()];
        msg.serialize(&mut req);
        self.socket.send(&req, 0).map_err(ConntrackError::Io)?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        loop {
            let n = self
                .socket
                .recv(&mut &mut self.buf[..], 0)
                .map_err(ConntrackError::Io)?;
            let mut offset = 0;
            while offset < n {
                let m = NetlinkMessage::<NetfilterMessage>::deserialize(&self.buf[offset..n])
                    .map_err(|e| ConntrackError::Decode(e.to_string()))?;
                let len = m.header.length as usize;
                if m.header.sequence_number != self.seq {
                    // A late answer to an earlier request that timed out.
                    offset += len.max(1);
                    continue;
                }
                match m.payload {
                    NetlinkPayload::Done(_) => return Ok(()),
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(()),
                            Some(code) => Err(ConntrackError::Kernel(code.get())),
                        };
                    }
                    NetlinkPayload::InnerMessage(NetfilterMessage {
                        inner: NetfilterMessageInner::Conntrack(c),
                        ..
                    }) => {
                        if let Some(entry) = entry_of(&c) {
                            out(entry);
                        }
                        if !dump {
                            return Ok(());
                        }
                    }
                    _ => {}
                }
                if len == 0 {
                    break;
                }
                offset += len;
            }
        }
    }
}

fn set_timeout(socket: &Socket, d: Duration) -> std::io::Result<()> {
    let tv = libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    };
    // SAFETY: setsockopt on our own socket with a correctly sized timeval.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&raw const tv).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn tuple_of(parts: &[Tuple]) -> Option<CtTuple> {
    let (mut src, mut dst, mut sport, mut dport, mut proto) = (None, None, 0, 0, None);
    for p in parts {
        match p {
            Tuple::Ip(ips) => {
                for ip in ips {
                    match ip {
                        IPTuple::SourceAddress(a) => src = Some(*a),
                        IPTuple::DestinationAddress(a) => dst = Some(*a),
                        _ => {}
                    }
                }
            }
            Tuple::Proto(ps) => {
                for x in ps {
                    match x {
                        ProtoTuple::Protocol(p) => proto = Some(u8::from(*p)),
                        ProtoTuple::SourcePort(v) => sport = *v,
                        ProtoTuple::DestinationPort(v) => dport = *v,
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    let proto = proto?;
    matches!(proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP).then_some(CtTuple {
        src: src?,
        dst: dst?,
        sport,
        dport,
        proto,
    })
}

fn entry_of(m: &ConntrackMessage) -> Option<CtEntry> {
    let attrs = match m {
        ConntrackMessage::New(a) | ConntrackMessage::Get(a) => a,
        _ => return None,
    };
    let (mut orig, mut reply, mut picked_up) = (None, None, false);
    for a in attrs {
        match a {
            ConntrackAttribute::CtaTupleOrig(t) => orig = tuple_of(t),
            ConntrackAttribute::CtaTupleReply(t) => reply = tuple_of(t),
            ConntrackAttribute::CtaProtoInfo(info) => {
                for i in info {
                    if let ProtoInfo::TCP(tcp) = i {
                        picked_up |= tcp.iter().any(|f| {
                            matches!(f, ProtoInfoTCP::OriginalFlags(fl) | ProtoInfoTCP::ReplyFlags(fl)
                                if fl.flags & TCP_FLAG_BE_LIBERAL != 0)
                        });
                    }
                }
            }
            _ => {}
        }
    }
    Some(CtEntry {
        orig: orig?,
        reply: reply?,
        picked_up,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(src: &str, dst: &str, sport: u16, dport: u16) -> CtTuple {
        CtTuple {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            sport,
            dport,
            proto: IPPROTO_TCP,
        }
    }

    #[test]
    fn the_original_direction_tells_the_opener() {
        let pod = |a: &IpAddr| *a == "10.0.3.240".parse::<IpAddr>().unwrap();
        // The pod's own connection to a server: replies come back to the pod.
        let own = CtEntry {
            orig: t("10.0.3.240", "10.0.6.245", 40000, 5432),
            reply: t("10.0.6.245", "10.0.3.240", 5432, 40000),
            picked_up: false,
        };
        assert_eq!(
            own.opener(pod),
            Opener::Pod(t("10.0.3.240", "10.0.6.245", 40000, 5432).key())
        );
        // Through a ClusterIP: the replies come from the backend, as the wire carries them.
        let via_service = CtEntry {
            orig: t("10.0.3.240", "172.20.0.10", 40001, 80),
            reply: t("10.0.12.9", "10.0.3.240", 8080, 40001),
            picked_up: false,
        };
        assert_eq!(
            via_service.opener(pod),
            Opener::Pod(t("10.0.3.240", "10.0.12.9", 40001, 8080).key())
        );
        let outsider = CtEntry {
            orig: t("10.0.6.245", "10.0.3.240", 50000, 80),
            reply: t("10.0.3.240", "10.0.6.245", 80, 50000),
            picked_up: false,
        };
        assert_eq!(outsider.opener(pod), Opener::Outsider);
        let guessed = CtEntry {
            picked_up: true,
            ..own
        };
        assert_eq!(guessed.opener(pod), Opener::Unknown);
    }
}
