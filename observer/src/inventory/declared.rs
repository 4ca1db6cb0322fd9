//! Direct access the SREs expect, declared where it belongs: a pod or namespace annotation
//! names the sources (CIDRs) allowed to reach the pod's IP straight, on which ports. A flow to a
//! local pod from such a source is judged `allowed`, naming the declaration, counted, never
//! alerted on (`flows::Tracker`, `agent::explain`). A malformed annotation is refused whole and
//! reported; it changes nothing else.
//!
//! The annotation (`observer.io/allowed-sources`) holds entries separated by commas; each is a
//! CIDR, then optionally ports separated by spaces: `tcp/9100`, `udp/53`, `sctp/2905`, a range
//! `tcp/8080-8090`, or a bare port or range (TCP, UDP or SCTP). No ports: any port and
//! protocol. For example
//! `10.20.0.0/16 tcp/9100, 192.168.5.0/24 tcp/8080-8090 udp/53, 203.0.113.7/32`.

use std::{fmt, net::IpAddr};

use observer_common::{addr::key_of, user::Cidr};
use serde::{Deserialize, Serialize};

/// The annotation, on a Pod or a Namespace.
pub const ANNOTATION: &str = "observer.io/allowed-sources";
/// Entries one annotation may hold.
pub const MAX_ENTRIES: usize = 64;

/// Where a declaration was made.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Pod,
    Namespace,
}

impl Scope {
    pub fn name(self) -> &'static str {
        match self {
            Scope::Pod => "pod",
            Scope::Namespace => "namespace",
        }
    }
}

/// A port range of one protocol (6, 17, 132), or of all three (0).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    pub proto: u8,
    pub first: u16,
    pub last: u16,
}

/// One entry of a declaration: a source CIDR and the ports it may reach (empty: any).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allowance {
    pub cidr: Cidr,
    pub ports: Vec<Ports>,
    pub scope: Scope,
    /// The entry as written, for the flow's row and explain.
    pub text: String,
}

impl Allowance {
    /// Whether a flow from `src` to the pod's `port` over `proto` is declared.
    pub fn admits(&self, src: IpAddr, proto: u8, port: u16) -> bool {
        // Of the source's own family: an IPv6 prefix covering `::ffff:0:0/96` (`::/0`) must
        // not admit IPv4 sources through their mapped form.
        self.cidr.addr().is_ipv4() == src.is_ipv4()
            && self.cidr.contains_key(&key_of(src))
            && (self.ports.is_empty()
                || self.ports.iter().any(|p| {
                    (p.proto == proto || (p.proto == 0 && matches!(proto, 6 | 17 | 132)))
                        && (p.first..=p.last).contains(&port)
                }))
    }

    /// The rule as flows and explain show it.
    pub fn rule(&self) -> String {
        format!(
            "{} annotation {ANNOTATION}: {}",
            self.scope.name(),
            self.text
        )
    }
}

/// The first declaration (of a pod's, then its namespace's) that admits the flow.
pub fn admitted(allowed: &[Allowance], src: IpAddr, proto: u8, port: u16) -> Option<&Allowance> {
    allowed.iter().find(|a| a.admits(src, proto, port))
}

/// A declaration the agent refused: which object, and why.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Refused {
    pub scope: Scope,
    pub namespace: String,
    /// The pod's name; empty for a namespace's.
    pub name: String,
    pub error: String,
}

/// Why an annotation was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError(String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn bad(entry: &str, why: impl fmt::Display) -> ParseError {
    ParseError(format!("entry {entry:?}: {why}"))
}

/// Reads an annotation's value: every entry must be valid, or none counts.
pub fn parse(value: &str, scope: Scope) -> Result<Vec<Allowance>, ParseError> {
    let entries: Vec<&str> = value
        .split(',')
        .map(str::trim)
        .filter(|e| !e.is_empty())
        .collect();
    if entries.is_empty() {
        return Err(ParseError(
            "no entry (expected CIDRs, each optionally with ports: \"10.0.0.0/16 tcp/9100\")"
                .into(),
        ));
    }
    if entries.len() > MAX_ENTRIES {
        return Err(ParseError(format!(
            "{} entries, at most {MAX_ENTRIES}",
            entries.len()
        )));
    }
    entries.into_iter().map(|e| entry(e, scope)).collect()
}

fn entry(text: &str, scope: Scope) -> Result<Allowance, ParseError> {
    let mut words = text.split_whitespace();
    let cidr_text = words.next().unwrap_or_default();
    let cidr = cidr_text.parse::<Cidr>().map_err(|e| {
        bad(
            text,
            format_args!("{cidr_text:?} is not a CIDR ({})", e.problem),
        )
    })?;
    let ports = words
        .map(|w| port_spec(w).map_err(|why| bad(text, why)))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Allowance {
        cidr,
        ports,
        scope,
        text: text.split_whitespace().collect::<Vec<_>>().join(" "),
    })
}

fn port_spec(w: &str) -> Result<Ports, String> {
    let (proto, range) = match w.split_once('/') {
        Some((p, r)) => {
            let proto = match p.to_ascii_lowercase().as_str() {
                "tcp" => 6,
                "udp" => 17,
                "sctp" => 132,
                _ => return Err(format!("{p:?} is not tcp, udp or sctp")),
            };
            (proto, r)
        }
        None => (0, w),
    };
    let port = |s: &str| -> Result<u16, String> {
        match s.parse::<u16>() {
            Ok(p) if p > 0 => Ok(p),
            _ => Err(format!("{s:?} is not a port (1-65535)")),
        }
    };
    let (first, last) = match range.split_once('-') {
        Some((a, b)) => (port(a)?, port(b)?),
        None => {
            let p = port(range)?;
            (p, p)
        }
    };
    if first > last {
        return Err(format!("{w:?}: the range runs backwards"));
    }
    Ok(Ports { proto, first, last })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn entries_with_and_without_ports() {
        let a = parse(
            "10.20.0.0/16 tcp/9100, 192.168.5.0/24  tcp/8080-8090 udp/53 ,2001:db8::/32 443, 203.0.113.7/32",
            Scope::Pod,
        )
        .unwrap();
        assert_eq!(a.len(), 4);
        assert!(a[0].admits(ip("10.20.3.4"), 6, 9100));
        assert!(!a[0].admits(ip("10.20.3.4"), 17, 9100));
        assert!(!a[0].admits(ip("10.21.3.4"), 6, 9100));
        assert!(a[1].admits(ip("192.168.5.9"), 6, 8085));
        assert!(a[1].admits(ip("192.168.5.9"), 17, 53));
        assert!(!a[1].admits(ip("192.168.5.9"), 6, 53));
        assert!(a[2].admits(ip("2001:db8::1"), 132, 443));
        assert!(!a[2].admits(ip("2001:db8::1"), 1, 443));
        // No ports: anything, ICMP included.
        assert!(a[3].admits(ip("203.0.113.7"), 1, 0));
        // An IPv6 catch-all admits no IPv4 source.
        let all6 = parse("::/0", Scope::Pod).unwrap();
        assert!(!all6[0].admits(ip("10.20.3.4"), 6, 80));
        assert!(all6[0].admits(ip("2001:db8::1"), 6, 80));
        assert_eq!(a[1].text, "192.168.5.0/24 tcp/8080-8090 udp/53");
        assert_eq!(
            a[0].rule(),
            "pod annotation observer.io/allowed-sources: 10.20.0.0/16 tcp/9100"
        );
        assert_eq!(
            admitted(&a, ip("192.168.5.9"), 17, 53).map(|a| a.text.as_str()),
            Some("192.168.5.0/24 tcp/8080-8090 udp/53")
        );
    }

    #[test]
    fn a_bad_entry_refuses_the_whole_annotation_and_says_why() {
        for (value, why) in [
            ("", "no entry"),
            (" , ", "no entry"),
            ("10.0.0.0/33", "is not a CIDR"),
            (
                "10.0.0.0/8 tcp/9100, prometheus",
                "\"prometheus\" is not a CIDR",
            ),
            ("10.0.0.0/8 http/80", "is not tcp, udp or sctp"),
            ("10.0.0.0/8 tcp/0", "is not a port"),
            ("10.0.0.0/8 tcp/70000", "is not a port"),
            ("10.0.0.0/8 tcp/90-80", "runs backwards"),
            ("10.0.0.0/8 tcp/", "is not a port"),
        ] {
            let e = parse(value, Scope::Namespace).unwrap_err().to_string();
            assert!(e.contains(why), "{value:?}: {e}");
        }
        let many = vec!["10.0.0.0/8"; MAX_ENTRIES + 1].join(",");
        assert!(parse(&many, Scope::Pod).is_err());
    }
}
