//! Addresses as the maps hold them: 16 bytes in network order, IPv4 as v4-mapped IPv6
//! (`::ffff:a.b.c.d`), so one map and one key type serve both families.

/// An IPv4 or IPv6 address in network byte order; IPv4 is v4-mapped.
pub type IpKey = [u8; 16];

/// The v4-mapped form of an IPv4 address given in network order.
#[inline(always)]
pub const fn v4_mapped(a: [u8; 4]) -> IpKey {
    [
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3],
    ]
}

/// Whether the key holds an IPv4 address.
#[inline(always)]
pub fn is_v4(k: &IpKey) -> bool {
    k[..10] == [0u8; 10] && k[10] == 0xff && k[11] == 0xff
}

/// Prefix length of an IPv4 prefix in the 128-bit key space.
#[inline(always)]
pub const fn v4_prefix_len(len: u8) -> u32 {
    96 + len as u32
}

#[cfg(feature = "std")]
mod std_conv {
    use std::net::{IpAddr, Ipv6Addr};

    use super::*;

    /// The key of a std address.
    pub fn key_of(ip: IpAddr) -> IpKey {
        match ip {
            IpAddr::V4(v4) => v4_mapped(v4.octets()),
            IpAddr::V6(v6) => v6.octets(),
        }
    }

    /// The std address of a key (IPv4 for v4-mapped keys).
    pub fn ip_of(k: &IpKey) -> IpAddr {
        let v6 = Ipv6Addr::from(*k);
        match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(v6),
        }
    }
}
#[cfg(feature = "std")]
pub use std_conv::{ip_of, key_of};
