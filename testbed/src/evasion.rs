//! Packets built to slip past a parser that judges flows by their ports, with valid checksums so
//! that the receiving kernel takes them: a TCP SYN cut into tiny IPv4 fragments (RFC 1858), an
//! IPv6 SYN whose TCP header sits in the second fragment, an IPv6 SYN behind a chain of more
//! extension headers than the observer follows, and fragments sent without their first.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

const TCP: u8 = 6;
const IPV6_FRAGMENT: u8 = 44;
const IPV6_DSTOPTS: u8 = 60;

/// The Internet checksum of `parts` taken as one byte string (each part of even length but the
/// last).
fn checksum(parts: &[&[u8]]) -> u16 {
    let mut sum = 0u32;
    for part in parts {
        for c in part.chunks(2) {
            sum += u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]));
        }
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// A TCP SYN segment (20-byte header, no options) from `src:sport` to `dst:dport`, with its
/// checksum over the pseudo-header of either family.
pub fn tcp_syn(src: IpAddr, dst: IpAddr, sport: u16, dport: u16) -> Vec<u8> {
    let mut t = Vec::with_capacity(20);
    t.extend(sport.to_be_bytes());
    t.extend(dport.to_be_bytes());
    t.extend(0x1234_5678u32.to_be_bytes()); // sequence
    t.extend(0u32.to_be_bytes()); // acknowledgement
    t.extend([5 << 4, 0x02]); // data offset, SYN
    t.extend(64_240u16.to_be_bytes()); // window
    t.extend([0, 0, 0, 0]); // checksum, urgent pointer
    let len = (t.len() as u16).to_be_bytes();
    let sum = match (src, dst) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            checksum(&[&s.octets(), &d.octets(), &[0, TCP], &len, &t])
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            checksum(&[&s.octets(), &d.octets(), &[0, 0], &len, &[0, 0, 0, TCP], &t])
        }
        _ => panic!("mixed families"),
    };
    t[16..18].copy_from_slice(&sum.to_be_bytes());
    t
}

/// IPv4 fragments of one datagram carrying `upper` (protocol `proto`), cut at the given byte
/// offsets into `upper` (multiples of 8). Each is a whole IP packet with a valid header.
pub fn ipv4_fragments(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    id: u16,
    proto: u8,
    upper: &[u8],
    cuts: &[usize],
) -> Vec<Vec<u8>> {
    let mut bounds = vec![0];
    bounds.extend(cuts);
    bounds.push(upper.len());
    bounds
        .windows(2)
        .map(|w| {
            let (from, to) = (w[0], w[1]);
            assert!(
                from % 8 == 0 && from < to,
                "fragments start at multiples of 8"
            );
            let more = to < upper.len();
            let frag = (from / 8) as u16 | if more { 0x2000 } else { 0 };
            let mut h = vec![0x45, 0];
            h.extend(((20 + to - from) as u16).to_be_bytes());
            h.extend(id.to_be_bytes());
            h.extend(frag.to_be_bytes());
            h.extend([64, proto, 0, 0]);
            h.extend(src.octets());
            h.extend(dst.octets());
            let sum = checksum(&[&h]);
            h[10..12].copy_from_slice(&sum.to_be_bytes());
            h.extend(&upper[from..to]);
            h
        })
        .collect()
}

/// An IPv6 destination-options header of `len8` 8-byte units (PadN only) before `next`.
fn dstopts(next: u8, len8: usize) -> Vec<u8> {
    assert!(len8 >= 1);
    let mut h = vec![next, (len8 - 1) as u8, 1, (len8 * 8 - 4) as u8];
    h.resize(len8 * 8, 0);
    h
}

fn ipv6_packet(src: Ipv6Addr, dst: Ipv6Addr, first: u8, rest: &[u8]) -> Vec<u8> {
    let mut p = vec![0x60, 0, 0, 0];
    p.extend((rest.len() as u16).to_be_bytes());
    p.extend([first, 64]);
    p.extend(src.octets());
    p.extend(dst.octets());
    p.extend(rest);
    p
}

/// An IPv6 packet carrying `upper` (TCP) behind `headers` destination-options headers.
pub fn ipv6_long_chain(src: Ipv6Addr, dst: Ipv6Addr, headers: usize, upper: &[u8]) -> Vec<u8> {
    let mut rest = Vec::new();
    for i in 0..headers {
        let next = if i + 1 == headers { TCP } else { IPV6_DSTOPTS };
        rest.extend(dstopts(next, 1));
    }
    rest.extend(upper);
    ipv6_packet(src, dst, IPV6_DSTOPTS, &rest)
}

/// Two IPv6 fragments of a TCP segment behind a 16-byte destination-options header, cut so
/// that the first fragment ends with that header and the TCP header is all in the second.
pub fn ipv6_header_in_second_fragment(
    src: Ipv6Addr,
    dst: Ipv6Addr,
    id: u32,
    upper: &[u8],
) -> Vec<Vec<u8>> {
    let mut fragmentable = dstopts(TCP, 2);
    let cut = fragmentable.len();
    fragmentable.extend(upper);
    [(0, cut, true), (cut, fragmentable.len(), false)]
        .iter()
        .map(|&(from, to, more)| {
            let mut rest = vec![IPV6_DSTOPTS, 0];
            rest.extend((((from / 8) as u16) << 3 | u16::from(more)).to_be_bytes());
            rest.extend(id.to_be_bytes());
            rest.extend(&fragmentable[from..to]);
            ipv6_packet(src, dst, IPV6_FRAGMENT, &rest)
        })
        .collect()
}

/// An Ethernet frame from `src_mac` to `dst_mac` around an IP packet.
pub fn ethernet(dst_mac: [u8; 6], src_mac: [u8; 6], ip: &[u8]) -> Vec<u8> {
    let mut f = Vec::with_capacity(14 + ip.len());
    f.extend(dst_mac);
    f.extend(src_mac);
    f.extend(if ip[0] >> 4 == 4 {
        [0x08, 0x00]
    } else {
        [0x86, 0xdd]
    });
    f.extend(ip);
    f
}
