//! Every row of SCENARIOS.md, judged by the host verdict function, on both layouts.

use std::collections::BTreeSet;

use observer_common::{
    maps::origin,
    packet::{Status, parse_frame},
    testing::scenarios::{SETTINGS, calico, full_corpus, vpc_cni},
    verdict::{Reason, Verdict, decide, origin_of},
};

#[test]
fn every_row_gets_its_verdict_on_both_layouts() {
    let mut rows_seen = BTreeSet::new();
    let mut checked = 0;
    for (layout, cases) in full_corpus() {
        for c in &cases {
            let (status, p) = parse_frame(&c.bytes);
            let d = decide(status, &p, &SETTINGS, &layout.inventory);
            assert_eq!(
                d.verdict,
                c.expect,
                "{} row {}: {} -> {:?} ({})",
                layout.name,
                c.row,
                c.what,
                d,
                d.reason.describe()
            );
            rows_seen.insert(c.row.parse::<u32>().unwrap());
            checked += 1;
        }
    }
    // Rows 1-17 all have cases, and of rows 18-24 those a frame at the uplink can show (20:
    // ICMP errors, 24: DSR marks). The others are timelines (18: an IP reaching the inventory late, 19: an
    // agent restart), the pod side (21: a UDP server's answers), routing (22: branch ENIs) or
    // the API (23), tested end to end in the agent's tests.
    assert_eq!(rows_seen, (1..=17).chain([20, 24]).collect());
    assert!(checked > 300, "{checked} cases");
}

#[test]
fn reasons_tell_why() {
    let l = vpc_cni();
    let reason_of = |what: &str| {
        let c = l.cases.iter().find(|c| c.what == what).unwrap();
        let (status, p) = parse_frame(&c.bytes);
        decide(status, &p, &SETTINGS, &l.inventory).reason
    };
    assert_eq!(
        reason_of("outside host, TCP SYN to a local pod IP:80"),
        Reason::DirectNewConnection
    );
    assert_eq!(
        reason_of("TCP without SYN for a flow never seen to start"),
        Reason::DirectMidStream
    );
    assert_eq!(
        reason_of("outside host, UDP to a pod IP"),
        Reason::DirectDatagram
    );
    assert_eq!(
        reason_of("outside host, ICMP echo to a pod IP"),
        Reason::DirectIcmp
    );
    assert_eq!(
        reason_of("ICMP fragmentation-needed about the pod's connection"),
        Reason::IcmpErrorForPodFlow
    );
    assert_eq!(
        reason_of("a router's fragmentation-needed about the pod's answer in a flow it serves"),
        Reason::IcmpErrorForServedFlow
    );
    assert_eq!(
        reason_of("a router's packet-too-big about the pod's IPv6 answer in a flow it serves"),
        Reason::IcmpErrorForServedFlow
    );
    assert_eq!(
        reason_of("an ICMP error about a flow the node never saw"),
        Reason::DirectIcmpErrorUnseenFlow
    );
    assert_eq!(
        reason_of("DNS answer to the pod's query"),
        Reason::ReplyToPodFlow
    );
    assert_eq!(
        reason_of("outside host to the node's SSH"),
        Reason::DstNodeAddress
    );
    assert_eq!(
        reason_of("to an address this node does not host"),
        Reason::DstNotLocal
    );
    assert_eq!(reason_of("ARP request"), Reason::NotIpEthertype);
    assert_eq!(
        reason_of("a frame cut inside the TCP header"),
        Reason::TruncatedL4
    );
    assert_eq!(
        reason_of("IPv4 with a header length of 4 words"),
        Reason::BadIpv4Header
    );
    assert_eq!(reason_of("three VLAN tags"), Reason::TooManyVlanTags);
    assert_eq!(reason_of("a TCP data offset below 5"), Reason::BadTcpHeader);
}

#[test]
fn row_17_is_marked_origin_unknown_and_row_1_as_seen_starting() {
    let l = calico();
    let origin_for = |what: &str| {
        let c = l.cases.iter().find(|c| c.what == what).unwrap();
        let (status, p) = parse_frame(&c.bytes);
        assert_eq!(status, Status::Ip);
        origin_of(&p)
    };
    assert_eq!(
        origin_for("TCP without SYN for a flow never seen to start"),
        origin::MID_STREAM
    );
    assert_eq!(
        origin_for("outside host, TCP SYN to a local pod IP:80"),
        origin::START
    );
    assert_eq!(
        origin_for("outside host, UDP to a pod IP"),
        origin::DATAGRAM
    );
}

#[test]
fn nodeport_range_is_a_setting() {
    let l = vpc_cni();
    let c = l
        .cases
        .iter()
        .find(|c| c.what == "outside host to node IP:NodePort")
        .unwrap();
    let (status, p) = parse_frame(&c.bytes);
    let narrow = observer_common::verdict::Settings {
        nodeport_min: 31000,
        nodeport_max: 31100,
        ..observer_common::testing::scenarios::SETTINGS
    };
    assert_eq!(
        decide(status, &p, &narrow, &l.inventory).verdict,
        Verdict::Host
    );
    assert_eq!(
        decide(status, &p, &SETTINGS, &l.inventory).verdict,
        Verdict::NodePort
    );
}

/// Row 24 holds only where the marks are trusted (`--dsr-marks`): with them off, every marked
/// packet from outside to a pod is what it would be unmarked, a direct access.
#[test]
fn dsr_marks_count_only_when_trusted() {
    let off = observer_common::verdict::Settings {
        dsr_marks: false,
        ..SETTINGS
    };
    for l in [vpc_cni(), calico()] {
        let marked: Vec<_> = l.cases.iter().filter(|c| c.row == "24").collect();
        assert_eq!(marked.len(), 7, "{}", l.name);
        for c in marked {
            let (status, p) = parse_frame(&c.bytes);
            assert_eq!(
                decide(status, &p, &SETTINGS, &l.inventory).verdict,
                Verdict::Service,
                "{}: {}",
                l.name,
                c.what
            );
            assert_eq!(
                decide(status, &p, &off, &l.inventory).verdict,
                Verdict::DirectToPod,
                "{}: {} with the marks off",
                l.name,
                c.what
            );
        }
    }
}
