//! Parser and pod-side logic properties: random bytes never panic, truncated headers are
//! malformed, fields come out as crafted.

use observer_common::{
    packet::{Status, TCP_ACK, TCP_RST, TCP_SYN, parse_frame},
    pod::{answer_of, opened_by, opened_leaving_node},
    testing::{
        flow_key,
        frames::{Frame, L4},
        scenarios::{Layout, SETTINGS, full_corpus, vpc, vpc_cni},
    },
    verdict::{Verdict, decide},
};
use proptest::prelude::*;
use std::sync::LazyLock;

#[test]
fn fields_come_out_as_crafted() {
    let f = Frame::tcp("10.0.6.245", "10.0.3.240", 51000, 80, TCP_SYN)
        .vlan(5)
        .ipv4_options(2);
    let (s, p) = parse_frame(&f.build());
    assert_eq!(s, Status::Ip);
    assert_eq!(p.key(), flow_key("10.0.6.245", "10.0.3.240", 51000, 80, 6));
    assert!(p.flow_start && !p.fragment && !p.has_quoted);

    let f = Frame::udp("2001:db8::7", "2600:1f18:abcd:1::3f0", 53, 40003).ipv6_ext(&[0, 43, 60]);
    let (s, p) = parse_frame(&f.build());
    assert_eq!(s, Status::Ip);
    assert_eq!(
        p.key(),
        flow_key("2001:db8::7", "2600:1f18:abcd:1::3f0", 53, 40003, 17)
    );

    let quoted = Frame::udp("10.0.6.245", "10.0.3.240", 5000, 9).ip_packet();
    let f = Frame::new(
        "10.0.3.240",
        "10.0.6.245",
        L4::IcmpError {
            ty: 3,
            code: 3,
            quoted,
        },
    );
    let (_, p) = parse_frame(&f.build());
    assert_eq!(
        p.quoted(),
        Some(&flow_key("10.0.6.245", "10.0.3.240", 5000, 9, 17))
    );

    let f = Frame::tcp("10.0.6.245", "10.0.3.240", 1, 2, TCP_SYN).fragment(100, true);
    let (s, p) = parse_frame(&f.build());
    assert_eq!((s, p.fragment, p.sport), (Status::Ip, true, 0));
}

#[test]
fn pod_answers_and_openings() {
    // The pod answers a direct SYN with SYN-ACK: answered, and not recorded as pod-opened.
    let synack = Frame::tcp("10.0.3.240", "10.0.6.245", 80, 51000, TCP_SYN | TCP_ACK).build();
    let (_, p) = parse_frame(&synack);
    let a = answer_of(&p).unwrap();
    assert_eq!(
        (a.key, a.refused),
        (flow_key("10.0.6.245", "10.0.3.240", 51000, 80, 6), false)
    );
    assert_eq!(opened_by(&p, &LAYOUT.inventory), None);
    // RST: refused.
    let (_, p) =
        parse_frame(&Frame::tcp("10.0.3.240", "10.0.6.245", 81, 51020, TCP_RST | TCP_ACK).build());
    assert!(answer_of(&p).unwrap().refused);
    // The pod's own SYN opens a flow and answers nothing.
    let (_, p) =
        parse_frame(&Frame::tcp("10.0.3.240", "198.51.100.7", 40000, 443, TCP_SYN).build());
    assert_eq!(answer_of(&p), None);
    assert_eq!(
        opened_by(&p, &LAYOUT.inventory),
        Some(flow_key("10.0.3.240", "198.51.100.7", 40000, 443, 6))
    );
    // Echo request from the pod opens; its reply's reversed key matches.
    let (_, req) = parse_frame(&Frame::echo("10.0.3.240", "198.51.100.7", true, 77).build());
    let (_, rep) = parse_frame(&Frame::echo("198.51.100.7", "10.0.3.240", false, 77).build());
    assert_eq!(
        opened_by(&req, &LAYOUT.inventory),
        Some(rep.key().reversed())
    );
    // ICMP port unreachable from the pod about an outsider's UDP: refused.
    let quoted = Frame::udp("10.0.6.245", "10.0.3.240", 5000, 9).ip_packet();
    let (_, p) = parse_frame(
        &Frame::new(
            "10.0.3.240",
            "10.0.6.245",
            L4::IcmpError {
                ty: 3,
                code: 3,
                quoted,
            },
        )
        .build(),
    );
    let a = answer_of(&p).unwrap();
    assert!(a.refused);
    assert_eq!(a.key, flow_key("10.0.6.245", "10.0.3.240", 5000, 9, 17));
    assert_eq!(opened_by(&p, &LAYOUT.inventory), None);
}

#[test]
fn only_local_pods_open_flows_leaving_the_node() {
    // Uplink egress sees the node's own packets and SNATed ones beside the pods'.
    let l = &LAYOUT.inventory;
    let pod = vpc::POD_A;
    let (_, p) = parse_frame(&Frame::tcp(pod, "198.51.100.7", 40000, 443, TCP_SYN).build());
    assert_eq!(opened_leaving_node(&p, l), opened_by(&p, &LAYOUT.inventory));
    assert!(opened_by(&p, &LAYOUT.inventory).is_some());
    let node = vpc::NODE_ETH0;
    let (_, p) = parse_frame(&Frame::tcp(node, "198.51.100.7", 40000, 443, TCP_SYN).build());
    assert!(opened_by(&p, &LAYOUT.inventory).is_some());
    assert_eq!(opened_leaving_node(&p, l), None, "the node's own flow");
    let (_, p) = parse_frame(&Frame::udp(node, "198.51.100.7", 40001, 53).build());
    assert_eq!(opened_leaving_node(&p, l), None, "the node's own datagram");
    // Not an opening at all, from a pod: nothing.
    let (_, p) = parse_frame(&Frame::tcp(pod, "198.51.100.7", 40000, 443, TCP_ACK).build());
    assert_eq!(opened_leaving_node(&p, l), None);
}

/// SCENARIOS row 21: a pod's datagrams and connections to addresses in the cluster open nothing
/// (their answers come from sources the verdict places first), so a busy UDP server's answers
/// to its clients cannot cycle `POD_FLOWS`; to an outside server they open a flow.
#[test]
fn flows_to_the_cluster_open_nothing() {
    let l = &LAYOUT.inventory;
    let pod = vpc::POD_A;
    for (dst, what) in [
        (vpc::PEER_NODE, "a peer node"),
        (vpc::PEER_POD, "a pod of another node"),
        (vpc::POD_B, "a pod of this node"),
        (vpc::NODE_ETH0, "this node"),
        (vpc::SERVICE_IP, "a Service"),
    ] {
        let (_, p) = parse_frame(&Frame::udp(pod, dst, 53, 41000).build());
        assert_eq!(opened_by(&p, l), None, "a DNS answer to {what}");
        let (_, p) = parse_frame(&Frame::tcp(pod, dst, 40000, 443, TCP_SYN).build());
        assert_eq!(opened_by(&p, l), None, "a connection to {what}");
        assert_eq!(opened_leaving_node(&p, l), None, "{what}, leaving the node");
    }
    let (_, p) = parse_frame(&Frame::udp(pod, "198.51.100.7", 41000, 53).build());
    assert_eq!(
        opened_by(&p, l),
        Some(flow_key(pod, "198.51.100.7", 41000, 53, 17)),
        "a query to a resolver outside the cluster"
    );
}

/// Every crafted frame of the corpus, built once.
static FRAMES: LazyLock<Vec<(Frame, Vec<u8>)>> = LazyLock::new(|| {
    full_corpus()
        .into_iter()
        .flat_map(|(_, cases)| cases.into_iter().filter_map(|c| Some((c.frame?, c.bytes))))
        .collect()
});
static LAYOUT: LazyLock<Layout> = LazyLock::new(vpc_cni);

proptest! {
    #![proptest_config(ProptestConfig::with_cases(20_000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
        let (status, p) = parse_frame(&bytes);
        let _ = decide(status, &p, &SETTINGS, &LAYOUT.inventory);
        let _ = answer_of(&p);
        let _ = opened_by(&p, &LAYOUT.inventory);
        let _ = opened_leaving_node(&p, &LAYOUT.inventory);
    }

    #[test]
    fn ip_like_random_bytes_never_panic(
        v6 in any::<bool>(),
        vlan in any::<bool>(),
        tail in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut f = vec![0u8; 12];
        if vlan { f.extend([0x81, 0x00, 0, 1]); }
        f.extend(if v6 { [0x86, 0xdd] } else { [0x08, 0x00] });
        f.extend(tail);
        let _ = parse_frame(&f);
    }

    #[test]
    fn truncated_headers_are_malformed(idx in 0usize..1000, cut in 0usize..200) {
        let (f, bytes) = &FRAMES[idx % FRAMES.len()];
        let (full, _) = parse_frame(bytes);
        prop_assume!(full == Status::Ip);
        let need = f.header_len();
        let cut = cut % need;
        let (status, _) = parse_frame(&bytes[..cut]);
        prop_assert!(matches!(status, Status::Malformed(_)), "cut {cut} of {need}: {status:?} {f:?}");
    }

    #[test]
    fn mutated_corpus_frames_never_panic(idx in 0usize..1000, pos in any::<usize>(), val in any::<u8>()) {
        let mut bytes = FRAMES[idx % FRAMES.len()].1.clone();
        let n = bytes.len();
        bytes[pos % n] = val;
        let _ = parse_frame(&bytes);
    }
}

#[test]
fn empty_and_tiny_frames_are_malformed() {
    for n in 0..14 {
        let (s, _) = parse_frame(&vec![0x08; n]);
        assert!(matches!(s, Status::Malformed(_)), "{n}: {s:?}");
    }
    let _ = Verdict::ALL;
}
