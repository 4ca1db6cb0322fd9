//! A small builder of Ethernet frames: VLAN tags, IPv4 with options, IPv6 with extension
//! headers, fragments, TCP/UDP/SCTP/ICMP/ICMPv6 and ICMP errors quoting another packet.

use std::{net::IpAddr, vec::Vec};

use crate::packet::{
    DSR_OPT_V4, DSR_OPT_V4_LEN, DSR_OPT_V6, DSR_OPT_V6_LEN, ETH_P_8021Q, ETH_P_IP, ETH_P_IPV6,
};

/// The upper-layer header of a crafted packet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum L4 {
    Tcp {
        sport: u16,
        dport: u16,
        flags: u8,
    },
    Udp {
        sport: u16,
        dport: u16,
    },
    Sctp {
        sport: u16,
        dport: u16,
        chunk: u8,
    },
    /// ICMP/ICMPv6 echo request or reply.
    Echo {
        request: bool,
        id: u16,
    },
    /// ICMP/ICMPv6 error quoting an IP packet (from [`Frame::ip_packet`]).
    IcmpError {
        ty: u8,
        code: u8,
        quoted: Vec<u8>,
    },
    /// Another protocol, no header.
    Raw {
        proto: u8,
    },
}

/// A crafted frame. `src` and `dst` must be of one family.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub l4: L4,
    pub vlans: Vec<u16>,
    /// IPv4 option words (4 bytes each, 0..=10).
    pub ipv4_option_words: u8,
    /// IPv6 extension header types before the upper-layer header (0, 43, 44, 51, 60).
    pub ipv6_ext: Vec<u8>,
    /// Fragment offset in 8-byte units; non-zero makes a non-first fragment.
    pub fragment_offset: u16,
    pub more_fragments: bool,
    pub payload: Vec<u8>,
    /// Cilium's DSR mark with this Service address and port: the first IPv4 option, or a first
    /// IPv6 Destination Options header.
    pub dsr: Option<(IpAddr, u16)>,
    /// The IPv4 mark in network byte order (as newer Cilium test fixtures write it).
    pub dsr_network_order: bool,
}

fn ip(s: &str) -> IpAddr {
    s.parse()
        .unwrap_or_else(|_| panic!("bad test address {s:?}"))
}

impl Frame {
    pub fn new(src: &str, dst: &str, l4: L4) -> Self {
        let (src, dst) = (ip(src), ip(dst));
        assert_eq!(src.is_ipv4(), dst.is_ipv4(), "mixed families");
        Frame {
            src,
            dst,
            l4,
            vlans: Vec::new(),
            ipv4_option_words: 0,
            ipv6_ext: Vec::new(),
            fragment_offset: 0,
            more_fragments: false,
            payload: Vec::new(),
            dsr: None,
            dsr_network_order: false,
        }
    }

    pub fn tcp(src: &str, dst: &str, sport: u16, dport: u16, flags: u8) -> Self {
        Self::new(
            src,
            dst,
            L4::Tcp {
                sport,
                dport,
                flags,
            },
        )
    }

    pub fn udp(src: &str, dst: &str, sport: u16, dport: u16) -> Self {
        Self::new(src, dst, L4::Udp { sport, dport })
    }

    pub fn echo(src: &str, dst: &str, request: bool, id: u16) -> Self {
        Self::new(src, dst, L4::Echo { request, id })
    }

    pub fn vlan(mut self, id: u16) -> Self {
        self.vlans.push(id);
        self
    }

    pub fn ipv4_options(mut self, words: u8) -> Self {
        assert!(words <= 10);
        self.ipv4_option_words = words;
        self
    }

    pub fn ipv6_ext(mut self, types: &[u8]) -> Self {
        self.ipv6_ext = types.to_vec();
        self
    }

    /// Marks the packet as Cilium's DSR dispatch does (`loadBalancer.dsrDispatch=opt`).
    pub fn cilium_dsr(mut self, service: &str, port: u16) -> Self {
        let service = ip(service);
        assert_eq!(
            service.is_ipv4(),
            self.v4(),
            "the mark is of the packet's family"
        );
        self.dsr = Some((service, port));
        self
    }

    /// As [`Frame::cilium_dsr`], with the IPv4 mark's fields in network byte order.
    pub fn cilium_dsr_network_order(mut self, service: &str, port: u16) -> Self {
        self.dsr_network_order = true;
        self.cilium_dsr(service, port)
    }

    /// The IPv4 option bytes: the DSR mark, then `ipv4_option_words` of NOPs.
    fn ipv4_option_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some((IpAddr::V4(a), port)) = self.dsr {
            // Cilium (1.12 to 1.18 at least) swaps the big-endian port and address once more
            // into the option: byte-reversed on the little-endian nodes it runs on.
            out.extend([DSR_OPT_V4, DSR_OPT_V4_LEN]);
            if self.dsr_network_order {
                out.extend(port.to_be_bytes());
                out.extend(a.octets());
            } else {
                out.extend(port.to_le_bytes());
                out.extend(u32::from(a).to_le_bytes());
            }
        }
        out.extend(std::iter::repeat_n(
            1u8,
            self.ipv4_option_words as usize * 4,
        ));
        out
    }

    pub fn fragment(mut self, offset: u16, more: bool) -> Self {
        self.fragment_offset = offset;
        self.more_fragments = more;
        self
    }

    pub fn payload(mut self, len: usize) -> Self {
        self.payload = (0..len).map(|i| i as u8).collect();
        self
    }

    fn v4(&self) -> bool {
        self.src.is_ipv4()
    }

    fn proto(&self) -> u8 {
        match &self.l4 {
            L4::Tcp { .. } => 6,
            L4::Udp { .. } => 17,
            L4::Sctp { .. } => 132,
            L4::Echo { .. } | L4::IcmpError { .. } if self.v4() => 1,
            L4::Echo { .. } | L4::IcmpError { .. } => 58,
            L4::Raw { proto } => *proto,
        }
    }

    /// The upper-layer header (and quoted packet), without payload.
    fn l4_header(&self) -> Vec<u8> {
        let mut h = Vec::new();
        match &self.l4 {
            L4::Tcp {
                sport,
                dport,
                flags,
            } => {
                h.extend(sport.to_be_bytes());
                h.extend(dport.to_be_bytes());
                h.extend([
                    0,
                    0,
                    0,
                    1,
                    0,
                    0,
                    0,
                    0,
                    5 << 4,
                    *flags,
                    0xff,
                    0xff,
                    0,
                    0,
                    0,
                    0,
                ]);
            }
            L4::Udp { sport, dport } => {
                h.extend(sport.to_be_bytes());
                h.extend(dport.to_be_bytes());
                h.extend(((8 + self.payload.len()) as u16).to_be_bytes());
                h.extend([0, 0]);
            }
            L4::Sctp {
                sport,
                dport,
                chunk,
            } => {
                h.extend(sport.to_be_bytes());
                h.extend(dport.to_be_bytes());
                h.extend([0, 0, 0, 0, 0, 0, 0, 0, *chunk, 0, 0, 4]);
            }
            L4::Echo { request, id } => {
                let ty = match (self.v4(), request) {
                    (true, true) => 8,
                    (true, false) => 0,
                    (false, true) => 128,
                    (false, false) => 129,
                };
                h.extend([ty, 0, 0, 0]);
                h.extend(id.to_be_bytes());
                h.extend([0, 1]);
            }
            L4::IcmpError { ty, code, quoted } => {
                h.extend([*ty, *code, 0, 0, 0, 0, 0, 0]);
                h.extend(quoted);
            }
            L4::Raw { .. } => {}
        }
        h
    }

    /// The length of the outer headers the parser needs (through the upper-layer header, or
    /// through the IP headers for a non-first fragment or a protocol without one).
    pub fn header_len(&self) -> usize {
        let l2 = 14 + 4 * self.vlans.len();
        let l3 = if self.v4() {
            20 + self.ipv4_option_bytes().len()
        } else {
            40 + self.ipv6_ext_bytes().len()
        };
        if self.fragment_offset != 0 {
            return l2 + l3;
        }
        let l4 = match &self.l4 {
            L4::Tcp { .. } => 20,
            L4::Udp { .. } => 8,
            L4::Sctp { .. } => 12,
            L4::Echo { .. } | L4::IcmpError { .. } => 8,
            L4::Raw { .. } => 0,
        };
        l2 + l3 + l4
    }

    /// The extension headers: the DSR mark's Destination Options first (where Cilium puts it),
    /// then `ipv6_ext`.
    fn ipv6_ext_bytes(&self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some((IpAddr::V6(a), port)) = self.dsr {
            let next = self.ipv6_ext.first().copied().unwrap_or(self.proto());
            out.extend([next, 2, DSR_OPT_V6, DSR_OPT_V6_LEN]);
            out.extend(a.octets());
            out.extend(port.to_be_bytes());
            out.extend([0, 0]);
        }
        for (i, ty) in self.ipv6_ext.iter().enumerate() {
            let next = self.ipv6_ext.get(i + 1).copied().unwrap_or(self.proto());
            match ty {
                44 => {
                    let off = (self.fragment_offset << 3) | u16::from(self.more_fragments);
                    out.extend([next, 0]);
                    out.extend(off.to_be_bytes());
                    out.extend([0, 0, 0, 42]);
                }
                51 => out.extend([next, 2, 0, 0, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 0]),
                _ => out.extend([next, 0, 1, 4, 0, 0, 0, 0]),
            }
        }
        out
    }

    /// The IP packet (no Ethernet header).
    pub fn ip_packet(&self) -> Vec<u8> {
        let mut upper = if self.fragment_offset != 0 {
            Vec::new()
        } else {
            self.l4_header()
        };
        upper.extend(&self.payload);
        match (self.src, self.dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => {
                let options = self.ipv4_option_bytes();
                let ihl = 5 + options.len() / 4;
                let total = (ihl * 4 + upper.len()) as u16;
                let frag = self.fragment_offset | if self.more_fragments { 0x2000 } else { 0 };
                let mut h = vec![0x40 | ihl as u8, 0];
                h.extend(total.to_be_bytes());
                h.extend([0, 7]);
                h.extend(frag.to_be_bytes());
                h.extend([64, self.proto(), 0, 0]);
                h.extend(s.octets());
                h.extend(d.octets());
                h.extend(options);
                let sum = checksum(&h);
                h[10..12].copy_from_slice(&sum.to_be_bytes());
                h.extend(upper);
                h
            }
            (IpAddr::V6(s), IpAddr::V6(d)) => {
                let mut ext = if self.ipv6_ext.is_empty() && self.fragment_offset != 0 {
                    // A non-first IPv6 fragment needs its fragment header.
                    Frame {
                        ipv6_ext: vec![44],
                        ..self.clone()
                    }
                    .ipv6_ext_bytes()
                } else {
                    self.ipv6_ext_bytes()
                };
                let first = if self.dsr.is_some() {
                    60
                } else if self.ipv6_ext.is_empty() && self.fragment_offset == 0 {
                    self.proto()
                } else if self.ipv6_ext.is_empty() {
                    44
                } else {
                    self.ipv6_ext[0]
                };
                let mut h = vec![0x60, 0, 0, 0];
                h.extend(((ext.len() + upper.len()) as u16).to_be_bytes());
                h.extend([first, 64]);
                h.extend(s.octets());
                h.extend(d.octets());
                h.append(&mut ext);
                h.extend(upper);
                h
            }
            _ => unreachable!("mixed families"),
        }
    }

    /// The whole frame.
    pub fn build(&self) -> Vec<u8> {
        let mut f = vec![0x02, 0, 0, 0, 0, 1, 0x02, 0, 0, 0, 0, 2];
        for id in &self.vlans {
            f.extend(ETH_P_8021Q.to_be_bytes());
            f.extend(id.to_be_bytes());
        }
        f.extend(if self.v4() { ETH_P_IP } else { ETH_P_IPV6 }.to_be_bytes());
        f.extend(self.ip_packet());
        f
    }
}

/// The Internet checksum.
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A frame of another ethertype (ARP request by default) with `len` bytes after the header.
pub fn non_ip(ethertype: u16, len: usize) -> Vec<u8> {
    let mut f = vec![0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02, 0, 0, 0, 0, 2];
    f.extend(ethertype.to_be_bytes());
    f.extend(std::iter::repeat_n(0u8, len));
    f
}
