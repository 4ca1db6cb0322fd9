//! The packet parser: Ethernet, up to two 802.1Q/802.1ad tags, IPv4 (with options), IPv6 (with a
//! bounded chain of extension headers), TCP, UDP, SCTP, ICMP and ICMPv6, including the packet an
//! ICMP error quotes.
//!
//! It reads through [`Bytes`], so the same code runs over a `TcContext` in the kernel and over a
//! `&[u8]` in host tests. Every path is bounded; a frame that ends inside a header the parser
//! needs is [`Status::Malformed`] with the reason, never a panic.

use crate::{
    addr::{IpKey, is_v4, v4_mapped},
    maps::{FlowKey, FragKey},
    verdict::Reason,
};

/// Random-access reads of a frame that starts at its Ethernet header.
pub trait Bytes {
    /// Total length of the frame in bytes.
    fn len(&self) -> usize;
    /// Whether the frame is empty.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Copies the `N` bytes at `off` into `dst`; false (and `dst` unspecified) when the frame
    /// ends before `off + N`.
    fn read_into<const N: usize>(&self, off: usize, dst: &mut [u8; N]) -> bool;
    /// The `N` bytes at `off`, or `None` when the frame ends before `off + N`.
    #[inline(always)]
    fn read<const N: usize>(&self, off: usize) -> Option<[u8; N]> {
        let mut out = [0u8; N];
        self.read_into(off, &mut out).then_some(out)
    }
}

impl Bytes for [u8] {
    #[inline(always)]
    fn len(&self) -> usize {
        <[u8]>::len(self)
    }
    #[inline(always)]
    fn read_into<const N: usize>(&self, off: usize, dst: &mut [u8; N]) -> bool {
        let Some(end) = off.checked_add(N) else {
            return false;
        };
        match self.get(off..end) {
            Some(s) => {
                dst.copy_from_slice(s);
                true
            }
            None => false,
        }
    }
}

pub const ETH_HLEN: usize = 14;
pub const ETH_P_IP: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const ETH_P_ARP: u16 = 0x0806;
pub const ETH_P_8021Q: u16 = 0x8100;
pub const ETH_P_8021AD: u16 = 0x88a8;
/// VLAN tags skipped before the frame counts as malformed (QinQ is two).
pub const MAX_VLAN_TAGS: usize = 2;
/// IPv6 extension headers followed before the frame counts as malformed.
pub const MAX_EXT_HEADERS: usize = 6;

pub const IPPROTO_ICMP: u8 = 1;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
pub const IPPROTO_ICMPV6: u8 = 58;
pub const IPPROTO_SCTP: u8 = 132;
const IPV6_HOPOPTS: u8 = 0;
const IPV6_ROUTING: u8 = 43;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_AH: u8 = 51;
const IPV6_DSTOPTS: u8 = 60;

/// Cilium's DSR mark (`loadBalancer.dsrDispatch=opt`): an IPv4 option of this type, 8 bytes
/// long, first after the fixed header, carrying the Service's port and address.
pub const DSR_OPT_V4: u8 = 0x9a;
pub const DSR_OPT_V4_LEN: u8 = 8;
/// The IPv6 form: a Destination Options header of 24 bytes (header length 2) whose first option
/// is of this type, 20 bytes long: the Service's address, its port, two bytes of padding.
pub const DSR_OPT_V6: u8 = 0x1b;
pub const DSR_OPT_V6_LEN: u8 = 20;

pub const TCP_FIN: u8 = 0x01;
pub const TCP_SYN: u8 = 0x02;
pub const TCP_RST: u8 = 0x04;
pub const TCP_PSH: u8 = 0x08;
pub const TCP_ACK: u8 = 0x10;

pub const ICMP_ECHO_REPLY: u8 = 0;
pub const ICMP_ECHO_REQUEST: u8 = 8;
pub const ICMPV6_ECHO_REQUEST: u8 = 128;
pub const ICMPV6_ECHO_REPLY: u8 = 129;
const SCTP_CHUNK_INIT: u8 = 1;

/// What the parser made of a frame. The fields are in the [`Packet`] it filled; for a frame
/// malformed past its IP header (see [`Reason::after_addresses`]) the addresses and the fragment
/// fields are filled too.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// A well-formed frame that does not carry IPv4 or IPv6 (ARP, LLDP...).
    NotIp,
    /// The frame ends inside, or contradicts, a header the parser needs.
    Malformed(Reason),
    /// An IP packet.
    Ip,
}

/// The header fields of an IP packet that the verdict needs. The parser fills it in place, so
/// the eBPF programs keep one copy on their 512-byte stack. Aligned to 8 so that clearing and
/// copying it are a few 8-byte stores in BPF rather than a byte loop.
#[repr(C, align(8))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Packet {
    pub src: IpKey,
    pub dst: IpKey,
    /// The upper-layer protocol (after IPv6 extension headers).
    pub proto: u8,
    /// Ports in host order. ICMP echo carries its identifier as a port: in `sport` for a
    /// request and in `dport` for a reply, so a reply's reversed key is its request's key.
    pub sport: u16,
    pub dport: u16,
    /// TCP flags (0 for other protocols).
    pub tcp_flags: u8,
    /// ICMP/ICMPv6 type and code (0 for other protocols).
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// A non-first fragment: it has no upper-layer header, so ports are 0.
    pub fragment: bool,
    /// A fragment that more fragments follow (a first fragment, or a middle one).
    pub more_fragments: bool,
    /// The fragment identification of a fragment (first or not), 0 otherwise.
    pub frag_id: u32,
    /// The packet opens a flow: TCP SYN without ACK, SCTP INIT, ICMP echo request.
    pub flow_start: bool,
    /// `quoted` holds the flow an ICMP error quotes.
    pub has_quoted: bool,
    /// For an ICMP error: the flow of the packet it quotes, as that packet's sender sent it.
    pub quoted: FlowKey,
    /// The frame's DSR mark ([`dsr_mark`]), as [`parse_frame`] reads it on the host. The
    /// kernel leaves it empty and judges the mark before parsing
    /// ([`crate::verdict::Lookup::dsr_marked`]).
    pub dsr: Option<DsrMark>,
}

/// A DSR mark: another node's load balancer forwarded the packet with the client's address
/// kept, and wrote the Service frontend the client addressed into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DsrMark {
    /// The frontend's address (IPv4 mapped), as read: byte-reversed for IPv4 by Cilium up to
    /// 1.18 (see [`dsr_mark`]).
    pub addr: IpKey,
    /// The frontend's port, read likewise.
    pub port: u16,
    /// The protocol of the packet it marks; 0 when other IPv6 extension headers follow the mark.
    pub proto: u8,
}

impl Packet {
    /// All zero, ready for [`parse`].
    pub const EMPTY: Packet = Packet {
        src: [0; 16],
        dst: [0; 16],
        proto: 0,
        sport: 0,
        dport: 0,
        tcp_flags: 0,
        icmp_type: 0,
        icmp_code: 0,
        fragment: false,
        more_fragments: false,
        frag_id: 0,
        flow_start: false,
        has_quoted: false,
        quoted: FlowKey::new([0; 16], [0; 16], 0, 0, 0),
        dsr: None,
    };

    /// The packet's own flow key.
    #[inline(always)]
    pub fn key(&self) -> FlowKey {
        FlowKey::new(self.src, self.dst, self.sport, self.dport, self.proto)
    }

    /// The flow an ICMP error quotes, if this is one and the quote was readable.
    #[inline(always)]
    pub fn quoted(&self) -> Option<&FlowKey> {
        self.has_quoted.then_some(&self.quoted)
    }

    /// The key its datagram's fragments share. IPv6 reassembly does not match on the protocol
    /// (a non-first fragment names only the header after the fragment header), so it is 0 there.
    #[inline(always)]
    pub fn frag_key(&self) -> FragKey {
        FragKey {
            src: self.src,
            dst: self.dst,
            id: self.frag_id,
            proto: if is_v4(&self.src) { self.proto } else { 0 },
            _pad: [0; 3],
        }
    }

    /// Whether the protocol has ports (TCP, UDP, SCTP) and this packet carries them.
    #[inline(always)]
    pub fn has_ports(&self) -> bool {
        !self.fragment && matches!(self.proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP)
    }
}

#[inline(always)]
fn be16(a: u8, b: u8) -> u16 {
    u16::from_be_bytes([a, b])
}

#[inline(always)]
fn is_vlan(ethertype: u16) -> bool {
    ethertype == ETH_P_8021Q || ethertype == ETH_P_8021AD
}

/// Parses a frame that starts with its Ethernet header into `p` (which should start as
/// [`Packet::EMPTY`]). `p` is meaningful only when the result is [`Status::Ip`].
#[inline(always)]
pub fn parse<B: Bytes + ?Sized>(b: &B, p: &mut Packet) -> Status {
    let Some(eth) = b.read::<2>(12) else {
        return Status::Malformed(Reason::TruncatedEthernet);
    };
    let mut ethertype = be16(eth[0], eth[1]);
    let mut off = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if !is_vlan(ethertype) {
            break;
        }
        let Some(tag) = b.read::<2>(off + 2) else {
            return Status::Malformed(Reason::TruncatedVlan);
        };
        ethertype = be16(tag[0], tag[1]);
        off += 4;
    }
    match ethertype {
        ETH_P_IP => parse_ipv4(b, off, p),
        ETH_P_IPV6 => parse_ipv6(b, off, p),
        t if is_vlan(t) => Status::Malformed(Reason::TooManyVlanTags),
        _ => Status::NotIp,
    }
}

/// Parses a whole frame held in memory (host side).
pub fn parse_frame(frame: &[u8]) -> (Status, Packet) {
    let mut p = Packet::EMPTY;
    let status = parse(frame, &mut p);
    p.dsr = dsr_mark(frame);
    (status, p)
}

#[inline(always)]
fn parse_ipv4<B: Bytes + ?Sized>(b: &B, off: usize, p: &mut Packet) -> Status {
    let Some(h) = b.read::<12>(off) else {
        return Status::Malformed(Reason::TruncatedIpv4);
    };
    let ihl = (h[0] & 0x0f) as usize * 4;
    if h[0] >> 4 != 4 || ihl < 20 {
        return Status::Malformed(Reason::BadIpv4Header);
    }
    if off + ihl > b.len() {
        return Status::Malformed(Reason::TruncatedIpv4);
    }
    // 0 is legal for BIG TCP / TSO packets; then the frame's length bounds the packet.
    let total = be16(h[2], h[3]) as usize;
    if total != 0 && total < ihl {
        return Status::Malformed(Reason::BadIpv4TotalLength);
    }
    let mut a = [0u8; 4];
    if !b.read_into(off + 12, &mut a) {
        return Status::Malformed(Reason::TruncatedIpv4);
    }
    p.src = v4_mapped(a);
    if !b.read_into(off + 16, &mut a) {
        return Status::Malformed(Reason::TruncatedIpv4);
    }
    p.dst = v4_mapped(a);
    p.proto = h[9];
    let frag = be16(h[6], h[7]);
    if frag & 0x3fff != 0 {
        p.frag_id = u32::from(be16(h[4], h[5]));
        p.more_fragments = frag & 0x2000 != 0;
    }
    if frag & 0x1fff != 0 {
        p.fragment = true;
        return Status::Ip;
    }
    let end = if total == 0 { b.len() } else { off + total };
    parse_l4(b, off + ihl, end, p)
}

#[inline(always)]
fn parse_ipv6<B: Bytes + ?Sized>(b: &B, off: usize, p: &mut Packet) -> Status {
    let Some(h) = b.read::<8>(off) else {
        return Status::Malformed(Reason::TruncatedIpv6);
    };
    if h[0] >> 4 != 6 {
        return Status::Malformed(Reason::BadIpv6Header);
    }
    if !b.read_into(off + 8, &mut p.src) || !b.read_into(off + 24, &mut p.dst) {
        return Status::Malformed(Reason::TruncatedIpv6);
    }
    // 0 is legal for jumbograms / BIG TCP; then the frame's length bounds the packet.
    let payload = be16(h[4], h[5]) as usize;
    let end = if payload == 0 {
        b.len()
    } else {
        off + 40 + payload
    };
    let mut next = h[6];
    let mut l4 = off + 40;
    for _ in 0..MAX_EXT_HEADERS {
        let len = match next {
            IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS | IPV6_AH => {
                let Some(e) = b.read::<2>(l4) else {
                    return Status::Malformed(Reason::TruncatedIpv6ExtHeader);
                };
                let ah = next == IPV6_AH;
                next = e[0];
                if ah {
                    (e[1] as usize + 2) * 4
                } else {
                    (e[1] as usize + 1) * 8
                }
            }
            IPV6_FRAGMENT => {
                let Some(e) = b.read::<8>(l4) else {
                    return Status::Malformed(Reason::TruncatedIpv6ExtHeader);
                };
                next = e[0];
                p.frag_id = u32::from_be_bytes([e[4], e[5], e[6], e[7]]);
                p.more_fragments = e[3] & 1 != 0;
                if be16(e[2], e[3]) >> 3 != 0 {
                    p.proto = next;
                    p.fragment = true;
                    return Status::Ip;
                }
                8
            }
            _ => break,
        };
        l4 += len;
        if l4 > end || l4 > b.len() {
            return Status::Malformed(Reason::TruncatedIpv6ExtHeader);
        }
    }
    if is_ext_header(next) {
        return Status::Malformed(Reason::TooManyIpv6ExtHeaders);
    }
    p.proto = next;
    parse_l4(b, l4, end, p)
}

/// Cilium's DSR mark of a frame (behind as many VLAN tags as [`parse`] follows), if it has one
/// (on IPv4, only on a protocol Cilium's load balancer forwards: TCP, UDP, SCTP):
/// - IPv4: the first option, `DSR_OPT_V4` of 8 bytes: the port, then the address. Cilium 1.12
///   to 1.18 swap both once more than network order (`bpf_htons`/`bpf_htonl` of big-endian
///   values), so on the little-endian nodes it runs on they are byte-reversed: read so here
///   (the verdict also tries network order).
/// - IPv6: a Destination Options header first after the fixed header, 24 bytes, whose first
///   option is `DSR_OPT_V6` of 20 bytes: the address, the port (network order), padding.
///
/// Where Cilium puts its marks and looks for them; anything else is no mark.
#[inline(always)]
pub fn dsr_mark<B: Bytes + ?Sized>(b: &B) -> Option<DsrMark> {
    let eth = b.read::<2>(12)?;
    let mut ethertype = be16(eth[0], eth[1]);
    let mut off = ETH_HLEN;
    for _ in 0..MAX_VLAN_TAGS {
        if !is_vlan(ethertype) {
            break;
        }
        let tag = b.read::<2>(off + 2)?;
        ethertype = be16(tag[0], tag[1]);
        off += 4;
    }
    match ethertype {
        ETH_P_IP => {
            let h = b.read::<10>(off)?;
            let o = b.read::<8>(off + 20)?;
            let marked = h[0] >> 4 == 4
                && (h[0] & 0x0f) as usize * 4 >= 20 + DSR_OPT_V4_LEN as usize
                && o[0] == DSR_OPT_V4
                && o[1] == DSR_OPT_V4_LEN;
            (marked && forwarded(h[9])).then(|| DsrMark {
                addr: v4_mapped([o[7], o[6], o[5], o[4]]),
                port: u16::from_le_bytes([o[2], o[3]]),
                proto: h[9],
            })
        }
        ETH_P_IPV6 => {
            let h = b.read::<8>(off)?;
            let e = b.read::<24>(off + 40)?;
            let marked = h[0] >> 4 == 6
                && h[6] == IPV6_DSTOPTS
                && e[1] == 2
                && e[2] == DSR_OPT_V6
                && e[3] == DSR_OPT_V6_LEN;
            let mut addr = [0u8; 16];
            addr.copy_from_slice(&e[4..20]);
            // Cilium puts its header first, in front of any the client sent: the protocol is
            // known here only when none did (0 otherwise; the verdict checks the packet's own).
            marked.then_some(DsrMark {
                addr,
                port: be16(e[20], e[21]),
                proto: if forwarded(e[0]) { e[0] } else { 0 },
            })
        }
        _ => None,
    }
}

/// Whether Cilium's load balancer forwards this protocol (and so may mark it).
#[inline(always)]
fn forwarded(proto: u8) -> bool {
    matches!(proto, IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP)
}

#[inline(always)]
fn is_ext_header(next: u8) -> bool {
    matches!(
        next,
        IPV6_HOPOPTS | IPV6_ROUTING | IPV6_DSTOPTS | IPV6_AH | IPV6_FRAGMENT
    )
}

/// Reads `N` header bytes at `off` that must lie within the IP packet (`end`) and the frame.
#[inline(always)]
fn header<const N: usize, B: Bytes + ?Sized>(b: &B, off: usize, end: usize) -> Option<[u8; N]> {
    if off + N > end {
        return None;
    }
    b.read::<N>(off)
}

#[inline(always)]
fn parse_l4<B: Bytes + ?Sized>(b: &B, off: usize, end: usize, p: &mut Packet) -> Status {
    match p.proto {
        IPPROTO_TCP => {
            let Some(t) = header::<20, B>(b, off, end) else {
                return Status::Malformed(Reason::TruncatedL4);
            };
            if t[12] >> 4 < 5 {
                return Status::Malformed(Reason::BadTcpHeader);
            }
            p.sport = be16(t[0], t[1]);
            p.dport = be16(t[2], t[3]);
            p.tcp_flags = t[13];
            p.flow_start = t[13] & (TCP_SYN | TCP_ACK) == TCP_SYN;
        }
        IPPROTO_UDP => {
            let Some(u) = header::<8, B>(b, off, end) else {
                return Status::Malformed(Reason::TruncatedL4);
            };
            p.sport = be16(u[0], u[1]);
            p.dport = be16(u[2], u[3]);
        }
        IPPROTO_SCTP => {
            let Some(s) = header::<12, B>(b, off, end) else {
                return Status::Malformed(Reason::TruncatedL4);
            };
            p.sport = be16(s[0], s[1]);
            p.dport = be16(s[2], s[3]);
            // The first chunk's header (type, flags, length): read whole, as no read is
            // narrower than 2 bytes (the verifier proves direct packet reads of N >= 2 only).
            if let Some(chunk) = header::<4, B>(b, off + 12, end) {
                p.flow_start = chunk[0] == SCTP_CHUNK_INIT;
            }
        }
        IPPROTO_ICMP | IPPROTO_ICMPV6 => {
            let Some(i) = header::<8, B>(b, off, end) else {
                return Status::Malformed(Reason::TruncatedL4);
            };
            p.icmp_type = i[0];
            p.icmp_code = i[1];
            let id = be16(i[4], i[5]);
            let v4 = p.proto == IPPROTO_ICMP;
            match (v4, i[0]) {
                (true, ICMP_ECHO_REQUEST) | (false, ICMPV6_ECHO_REQUEST) => {
                    p.sport = id;
                    p.flow_start = true;
                }
                (true, ICMP_ECHO_REPLY) | (false, ICMPV6_ECHO_REPLY) => p.dport = id,
                (true, 3 | 4 | 5 | 11 | 12) => {
                    p.has_quoted = quoted_ipv4(b, off + 8, end, &mut p.quoted)
                }
                (false, 1..=4) => p.has_quoted = quoted_ipv6(b, off + 8, end, &mut p.quoted),
                _ => {}
            }
        }
        _ => {}
    }
    Status::Ip
}

/// Fills `q` with the flow of the IPv4 packet an ICMP error quotes (its header and first 8
/// payload bytes); false when the quote is unreadable.
#[inline(always)]
fn quoted_ipv4<B: Bytes + ?Sized>(b: &B, off: usize, end: usize, q: &mut FlowKey) -> bool {
    let Some(h) = header::<20, B>(b, off, end) else {
        return false;
    };
    let ihl = (h[0] & 0x0f) as usize * 4;
    if h[0] >> 4 != 4 || ihl < 20 {
        return false;
    }
    q.src = v4_mapped([h[12], h[13], h[14], h[15]]);
    q.dst = v4_mapped([h[16], h[17], h[18], h[19]]);
    q.proto = h[9];
    quoted_l4(b, off + ihl, end, q, ICMP_ECHO_REQUEST)
}

/// As [`quoted_ipv4`] for IPv6 (extension headers of the quote are not followed).
#[inline(always)]
fn quoted_ipv6<B: Bytes + ?Sized>(b: &B, off: usize, end: usize, q: &mut FlowKey) -> bool {
    let Some(h) = header::<8, B>(b, off, end) else {
        return false;
    };
    if h[0] >> 4 != 6 || off + 40 > end {
        return false;
    }
    if !b.read_into(off + 8, &mut q.src) || !b.read_into(off + 24, &mut q.dst) {
        return false;
    }
    q.proto = h[6];
    quoted_l4(b, off + 40, end, q, ICMPV6_ECHO_REQUEST)
}

#[inline(always)]
fn quoted_l4<B: Bytes + ?Sized>(
    b: &B,
    off: usize,
    end: usize,
    q: &mut FlowKey,
    echo_request: u8,
) -> bool {
    let Some(l4) = header::<8, B>(b, off, end) else {
        return false;
    };
    let (sport, dport) = match q.proto {
        IPPROTO_TCP | IPPROTO_UDP | IPPROTO_SCTP => (be16(l4[0], l4[1]), be16(l4[2], l4[3])),
        IPPROTO_ICMP | IPPROTO_ICMPV6 if l4[0] == echo_request => (be16(l4[4], l4[5]), 0),
        _ => (0, 0),
    };
    q.sport = sport;
    q.dport = dport;
    true
}
