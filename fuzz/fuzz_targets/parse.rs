//! Arbitrary bytes as a frame at an uplink: the parser and `decide` never panic, and what they
//! answer is consistent (malformed ⇔ malformed verdict, not IP ⇔ not_ip, a non-first fragment
//! carries no ports, an ICMP error's quote is only read from ICMP), on both seed layouts.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use observer_common::{
    packet::{IPPROTO_ICMP, IPPROTO_ICMPV6, Status, parse_frame},
    testing::scenarios::{Layout, SETTINGS, calico, vpc_cni},
    verdict::{Verdict, decide},
};

fn layouts() -> &'static [Layout; 2] {
    static L: OnceLock<[Layout; 2]> = OnceLock::new();
    L.get_or_init(|| [vpc_cni(), calico()])
}

fuzz_target!(|frame: &[u8]| {
    let (status, p) = parse_frame(frame);
    if status == Status::Ip {
        if p.fragment {
            assert_eq!((p.sport, p.dport, p.tcp_flags), (0, 0, 0), "fragment with ports");
        }
        if p.has_quoted {
            assert!(matches!(p.proto, IPPROTO_ICMP | IPPROTO_ICMPV6), "quote outside ICMP");
        }
    }
    for layout in layouts() {
        let d = decide(status, &p, &SETTINGS, &layout.inventory);
        assert_eq!(
            d.verdict == Verdict::Malformed,
            matches!(status, Status::Malformed(_)),
            "{status:?} gave {d:?}"
        );
        assert_eq!(d.verdict == Verdict::NotIp, status == Status::NotIp);
        assert_eq!(d.verdict == Verdict::Fragment, status == Status::Ip && p.fragment);
        if let Status::Malformed(reason) = status {
            assert_eq!(d.reason, reason);
        }
    }
});
