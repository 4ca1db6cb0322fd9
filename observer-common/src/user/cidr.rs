use std::string::{String, ToString};
use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    str::FromStr,
};

use crate::addr::{IpKey, key_of};

/// An IPv4 or IPv6 prefix, host bits cleared. A bare address is a /32 or /128.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: IpAddr,
    len: u8,
}

/// A CIDR that does not parse, with the input and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid CIDR {input:?}: {problem}")]
pub struct CidrError {
    pub input: String,
    pub problem: &'static str,
}

impl Cidr {
    /// The prefix of `addr` of `len` bits (host bits are cleared).
    pub fn new(addr: IpAddr, len: u8) -> Result<Self, CidrError> {
        let max = if addr.is_ipv4() { 32 } else { 128 };
        if len > max {
            return Err(CidrError {
                input: format!("{addr}/{len}"),
                problem: "prefix length longer than the address",
            });
        }
        let addr = match addr {
            IpAddr::V4(a) => {
                let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
                IpAddr::V4(Ipv4Addr::from(u32::from(a) & mask))
            }
            IpAddr::V6(a) => {
                let mask = if len == 0 {
                    0
                } else {
                    u128::MAX << (128 - len)
                };
                IpAddr::V6(Ipv6Addr::from(u128::from(a) & mask))
            }
        };
        Ok(Cidr { addr, len })
    }

    /// The network address.
    pub fn addr(&self) -> IpAddr {
        self.addr
    }

    /// The prefix length in the address's own family.
    pub fn prefix_len(&self) -> u8 {
        self.len
    }

    /// The network address as a map key (v4-mapped for IPv4).
    pub fn key(&self) -> IpKey {
        key_of(self.addr)
    }

    /// The prefix length in the maps' 128-bit key space.
    pub fn key_prefix_len(&self) -> u32 {
        if self.addr.is_ipv4() {
            96 + u32::from(self.len)
        } else {
            u32::from(self.len)
        }
    }

    /// Whether the prefix contains a key.
    pub fn contains_key(&self, key: &IpKey) -> bool {
        let bits = self.key_prefix_len();
        let mask = if bits == 0 {
            0
        } else {
            u128::MAX << (128 - bits)
        };
        u128::from_be_bytes(*key) & mask == u128::from_be_bytes(self.key())
    }

    /// Whether the prefix contains an address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.contains_key(&key_of(ip))
    }

    /// Whether this prefix contains all of `other`.
    pub fn covers(&self, other: &Cidr) -> bool {
        self.key_prefix_len() <= other.key_prefix_len() && self.contains_key(&other.key())
    }
}

impl FromStr for Cidr {
    type Err = CidrError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |problem| CidrError {
            input: s.to_string(),
            problem,
        };
        let (ip, len) = match s.split_once('/') {
            Some((ip, len)) => (ip, Some(len)),
            None => (s, None),
        };
        let addr: IpAddr = ip
            .trim()
            .parse()
            .map_err(|_| err("not an IPv4 or IPv6 address"))?;
        let len = match len {
            Some(len) => len
                .trim()
                .parse::<u8>()
                .map_err(|_| err("prefix length is not a number from 0 to 128"))?,
            None if addr.is_ipv4() => 32,
            None => 128,
        };
        Cidr::new(addr, len).map_err(|e| err(e.problem))
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_masks() {
        let c: Cidr = "10.0.7.223/20".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/20");
        assert_eq!(c.key_prefix_len(), 116);
        assert!(c.contains("10.0.15.193".parse().unwrap()));
        assert!(!c.contains("10.0.16.1".parse().unwrap()));
        let v6: Cidr = "2600:1f18::/48".parse().unwrap();
        assert!(v6.contains("2600:1f18::3f0".parse().unwrap()));
        assert_eq!("10.1.2.3".parse::<Cidr>().unwrap().prefix_len(), 32);
        assert!(
            "0.0.0.0/0"
                .parse::<Cidr>()
                .unwrap()
                .contains("8.8.8.8".parse().unwrap())
        );
        assert!(
            !"0.0.0.0/0"
                .parse::<Cidr>()
                .unwrap()
                .contains("2001::1".parse().unwrap())
        );
    }

    #[test]
    fn rejects_garbage_with_the_input_named() {
        for bad in [
            "",
            "10.0.0.0/33",
            "10.0.0/8",
            "fe80::/129",
            "10.0.0.0/-1",
            "x/8",
            "10.0.0.0/",
        ] {
            let e = bad.parse::<Cidr>().unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
        }
    }
}
