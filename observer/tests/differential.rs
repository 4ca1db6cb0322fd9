//! The kernel's verdict equals the host function's, frame by frame, through BPF_PROG_TEST_RUN:
//! the SCENARIOS corpus with its variants (VLAN, IPv4 options, IPv6 extension headers,
//! fragments) and over 1,000,000 random and mutated frames. Every program (the uplink's and the
//! two pod-veth programs) returns TC_ACT_UNSPEC on every frame, the counters add up (no lost or
//! doubled update), and the packets from outside to a pod that could not be judged are counted
//! per pod exactly as the host function counts them.
//!
//! Needs root and a kernel that runs eBPF; without them it fails, it never skips.

use std::collections::BTreeMap;

use observer_common::{
    addr::IpKey,
    maps::{FlowKey, FragKey},
    user::Inventory,
    verdict::Lookup,
};

use aya::Ebpf;
use observer::kernel::{
    maps::Maps,
    object::{self, LoadOptions},
};
use observer_common::{
    names::{PROG_EGRESS, PROG_FROM_POD, PROG_TO_POD, PROG_UPLINK},
    packet::{ETH_HLEN, TCP_ACK, TCP_FIN, TCP_PSH, TCP_RST, TCP_SYN, parse_frame},
    testing::{
        frames::{Frame, L4},
        scenarios::{Case, Layout, SETTINGS, full_corpus},
    },
    verdict::{Decision, Reason, Verdict, decide, remember_dsr, remember_fragment, unjudged},
};
use testbed::rng::Rng;

/// Random, structured and mutated frames per layout: over a million in all.
const RANDOM_FRAMES_PER_LAYOUT: usize = 540_000;

/// TC_ACT_UNSPEC (-1) as BPF_PROG_TEST_RUN reports it.
const UNSPEC: u32 = u32::MAX;

fn load(layout: &Layout) -> (Ebpf, Maps) {
    let mut ebpf = object::load(&LoadOptions {
        trace: true,
        dsr_marks: SETTINGS.dsr_marks,
        ..LoadOptions::default()
    })
    .expect("loading the eBPF object (this test needs root and a kernel that runs eBPF)");
    let (maps, _events) = Maps::take(&mut ebpf).expect("maps");
    maps.write_inventory(&layout.inventory)
        .expect("filling the maps");
    (ebpf, maps)
}

/// Whether BPF_PROG_TEST_RUN refuses the frame: shorter than Ethernet, or an untagged IPv4/IPv6
/// frame shorter than its fixed IP header (the kernel checks that before running the program).
/// The host tests cover those frames.
fn refused_by_test_run(frame: &[u8]) -> bool {
    match frame.get(12..14) {
        None => true,
        Some([0x08, 0x00]) => frame.len() < ETH_HLEN + 20,
        Some([0x86, 0xdd]) => frame.len() < ETH_HLEN + 40,
        Some(_) => false,
    }
}

/// Runs a frame through the uplink program; returns its return code and decision.
fn run_uplink(ebpf: &mut Ebpf, maps: &Maps, cpu: usize, frame: &[u8]) -> (u32, Decision) {
    let before = maps.trace(cpu).expect("trace").seq;
    let r = object::test_run(ebpf, PROG_UPLINK, frame, 1).unwrap_or_else(|e| {
        panic!(
            "test_run of a {}-byte frame {frame:02x?}: {e:?}",
            frame.len()
        )
    });
    let t = maps.trace(cpu).expect("trace");
    assert_eq!(t.seq, before + 1, "the program did not trace this run");
    let d = Decision {
        verdict: Verdict::from_u8(t.verdict).expect("verdict byte"),
        reason: Reason::from_u8(t.reason).expect("reason byte"),
    };
    (r.return_value, d)
}

/// The host's view of the maps: the layout's inventory, and the kernel's `FLOWS` as it is before
/// the frame runs (the flows the node saw come in are state the earlier frames made: the
/// uplink keeps direct flows there, or stages their pure SYNs while its ring has room).
struct HostView<'a> {
    inv: &'a Inventory,
    flows: &'a Maps,
}

impl Lookup for HostView<'_> {
    fn exact_roles(&self, addr: &IpKey) -> Option<u32> {
        self.inv.exact_roles(addr)
    }
    fn cidr_roles(&self, addr: &IpKey) -> u32 {
        self.inv.cidr_roles(addr)
    }
    fn pod_flow(&self, key: &FlowKey) -> bool {
        self.inv.pod_flow(key)
    }
    fn served_flow(&self, key: &FlowKey) -> bool {
        self.flows.served_flow(key)
    }
    fn nodeport(&self, port: u16, proto: u8) -> bool {
        self.inv.nodeport(port, proto)
    }
    fn fragment_judged(&self, key: &FragKey) -> bool {
        self.inv.fragment_judged(key)
    }
    fn dsr_flow(&self, key: &FlowKey) -> bool {
        self.flows.dsr_flow(key)
    }
}

fn host(layout: &Layout, maps: &Maps, frame: &[u8]) -> Decision {
    let (status, p) = parse_frame(frame);
    let view = HostView {
        inv: &layout.inventory,
        flows: maps,
    };
    decide(status, &p, &SETTINGS, &view)
}

/// Per pod address and kind, the unjudged packets the host counts for these frames, in order:
/// `inv` learns each remembered first fragment as the kernel's `FRAGS` does, and each
/// connection a DSR mark opened as its `DSR_FLOWS` does (its later first fragments are then
/// Service traffic, whose other fragments nothing remembers).
fn host_unjudged(inv: &mut Inventory, frame: &[u8], counts: &mut BTreeMap<(IpKey, usize), u64>) {
    let (status, p) = parse_frame(frame);
    let d = decide(status, &p, &SETTINGS, inv);
    if status == observer_common::packet::Status::Ip && remember_fragment(&p, &d) {
        inv.add_fragment(p.frag_key());
    }
    if status == observer_common::packet::Status::Ip && remember_dsr(&p, &d) {
        inv.add_dsr_flow(p.key());
    }
    if matches!(d.verdict, Verdict::Malformed | Verdict::Fragment)
        && let Some(kind) = unjudged(status, &p, inv)
    {
        *counts.entry((p.dst, kind)).or_default() += 1;
    }
}

/// The kernel's `POD_UNJUDGED`, flattened like [`host_unjudged`]'s counts.
fn kernel_unjudged(maps: &Maps) -> BTreeMap<(IpKey, usize), u64> {
    let mut out = BTreeMap::new();
    for (k, v) in maps.pod_unjudged().expect("POD_UNJUDGED") {
        for (kind, n) in v.counts.iter().enumerate() {
            if *n > 0 {
                out.insert((k, kind), *n);
            }
        }
    }
    out
}

/// Runs a frame through the pod-side programs (both pod-veth ones and the uplink-egress one):
/// whatever it is, each returns TC_ACT_UNSPEC.
fn run_pod_programs(ebpf: &mut Ebpf, frame: &[u8]) {
    for prog in [PROG_TO_POD, PROG_FROM_POD, PROG_EGRESS] {
        let r = object::test_run(ebpf, prog, frame, 1)
            .unwrap_or_else(|e| panic!("test_run of {prog}: {e:?}"));
        assert_eq!(
            r.return_value, UNSPEC,
            "{prog} must return TC_ACT_UNSPEC for {frame:02x?}"
        );
    }
}

/// A random frame built from the layout's addresses and random ones, so that every verdict
/// comes up, not only "malformed".
fn structured(rng: &mut Rng, addrs4: &[String], addrs6: &[String]) -> Vec<u8> {
    let v6 = rng.below(4) == 0;
    let pool = if v6 { addrs6 } else { addrs4 };
    let addr = |rng: &mut Rng| -> String {
        if rng.below(3) == 0 {
            if v6 {
                format!("2001:db8::{:x}", rng.next_u64() as u16)
            } else {
                let x = rng.next_u64();
                format!(
                    "{}.{}.{}.{}",
                    x as u8,
                    (x >> 8) as u8,
                    (x >> 16) as u8,
                    (x >> 24) as u8
                )
            }
        } else {
            rng.pick(pool).clone()
        }
    };
    let (src, dst) = (addr(rng), addr(rng));
    let port = |rng: &mut Rng| -> u16 {
        *rng.pick(&[
            22, 53, 80, 81, 443, 5353, 8443, 10250, 30000, 30080, 32767, 32768, 40000, 40001,
            40002, 40003, 51000,
        ])
        .min(&u16::MAX)
            ^ if rng.below(4) == 0 {
                rng.next_u64() as u16
            } else {
                0
            }
    };
    let flags = *rng.pick(&[
        TCP_SYN,
        TCP_SYN | TCP_ACK,
        TCP_ACK,
        TCP_ACK | TCP_PSH,
        TCP_RST,
        TCP_FIN | TCP_ACK,
        0,
    ]);
    let l4 = match rng.below(7) {
        0 | 1 => L4::Tcp {
            sport: port(rng),
            dport: port(rng),
            flags,
        },
        2 => L4::Udp {
            sport: port(rng),
            dport: port(rng),
        },
        3 => L4::Sctp {
            sport: port(rng),
            dport: port(rng),
            chunk: rng.below(3) as u8,
        },
        4 => L4::Echo {
            request: rng.below(2) == 0,
            id: *rng.pick(&[77, 9, 10, 12]),
        },
        5 => {
            let inner = Frame::new(
                &dst,
                &addr(rng),
                L4::Udp {
                    sport: port(rng),
                    dport: port(rng),
                },
            );
            L4::IcmpError {
                ty: if v6 { 1 } else { 3 },
                code: 3,
                quoted: inner.ip_packet(),
            }
        }
        _ => L4::Raw {
            proto: *rng.pick(&[47, 50, 89, 253]),
        },
    };
    let mut f = Frame::new(&src, &dst, l4);
    if rng.below(5) == 0 {
        f = f.vlan(rng.below(4095) as u16);
    }
    // A DSR mark naming one of the layout's addresses (a Service, a node) or a random one.
    if rng.below(6) == 0 {
        let frontend = addr(rng);
        f = f.cilium_dsr(&frontend, port(rng));
    }
    if !v6 && rng.below(5) == 0 {
        let most = if f.dsr.is_some() { 8 } else { 10 };
        f = f.ipv4_options(rng.below(most + 1) as u8);
    }
    if v6 && rng.below(4) == 0 {
        let ext: Vec<u8> = (0..rng.below(8))
            .map(|_| *rng.pick(&[0u8, 43, 60, 51, 44]))
            .collect();
        f = f.ipv6_ext(&ext);
    }
    if rng.below(10) == 0 {
        f = f.fragment(rng.below(3) as u16 * 100, rng.below(2) == 0);
    }
    f.payload(rng.below(64)).build()
}

/// A corpus frame with a few bytes changed, or cut short.
fn mutated(rng: &mut Rng, corpus: &[Case]) -> Vec<u8> {
    let mut b = rng.pick(corpus).bytes.clone();
    for _ in 0..1 + rng.below(3) {
        let i = rng.below(b.len());
        b[i] = rng.next_u64() as u8;
    }
    if rng.below(3) == 0 {
        let n = ETH_HLEN + rng.below(b.len() - ETH_HLEN + 1);
        b.truncate(n);
    }
    b
}

fn random_bytes(rng: &mut Rng) -> Vec<u8> {
    let n = ETH_HLEN + rng.below(200);
    let mut b: Vec<u8> = (0..n).map(|_| rng.next_u64() as u8).collect();
    // Most random ethertypes are "not IP": make IP and VLAN likely, to stress the parser.
    let t = *rng.pick(&[
        [0x08u8, 0x00],
        [0x86, 0xdd],
        [0x81, 0x00],
        [0x88, 0xa8],
        [b[12], b[13]],
    ]);
    b[12..14].copy_from_slice(&t);
    b
}

#[test]
fn kernel_and_host_agree_on_every_frame() {
    let cpu = testbed::cpu::pin_current();
    let mut seen: BTreeMap<Verdict, u64> = BTreeMap::new();
    let mut total = 0u64;
    let mut corpus_total = 0u64;
    let mut disagreements = Vec::new();
    let mut pod_runs = 0u64;
    let mut unjudged_total = 0u64;
    for (layout, cases) in full_corpus() {
        let (mut ebpf, maps) = load(&layout);
        // The pod-veth programs run in an object of their own: the flows they record must not
        // change the uplink's verdicts, which the host computes without them.
        let (mut pod_ebpf, _pod_maps) = load(&layout);
        let mut inv = layout.inventory.clone();
        let mut want_unjudged = BTreeMap::new();
        // The SCENARIOS corpus: the host must give the row's verdict, the kernel the host's.
        for c in &cases {
            let h = host(&layout, &maps, &c.bytes);
            assert_eq!(
                h.verdict, c.expect,
                "{} row {}: {}",
                layout.name, c.row, c.what
            );
            if refused_by_test_run(&c.bytes) {
                continue;
            }
            host_unjudged(&mut inv, &c.bytes, &mut want_unjudged);
            let (rc, k) = run_uplink(&mut ebpf, &maps, cpu, &c.bytes);
            assert_eq!(rc, UNSPEC, "return code for {}", c.what);
            run_pod_programs(&mut pod_ebpf, &c.bytes);
            pod_runs += 2;
            if k != h {
                disagreements.push(format!(
                    "{} row {} {}: kernel {k:?} host {h:?}",
                    layout.name, c.row, c.what
                ));
            }
            corpus_total += 1;
        }
        // Random, structured and mutated frames.
        let addrs: Vec<String> = layout
            .inventory
            .ip_entries()
            .iter()
            .map(|(k, _)| observer_common::addr::ip_of(k).to_string())
            .chain(
                [
                    "10.0.6.245",
                    "10.0.14.50",
                    "172.20.0.10",
                    "10.96.0.10",
                    "172.16.72.69",
                    "198.51.100.7",
                    "10.0.0.2",
                ]
                .map(String::from),
            )
            .collect();
        let (addrs6, addrs4): (Vec<String>, Vec<String>) =
            addrs.into_iter().partition(|a| a.contains(':'));
        let mut rng = Rng(0x0b5e_7e11 ^ layout.name.len() as u64);
        let mut run = 0u64;
        for i in 0..RANDOM_FRAMES_PER_LAYOUT {
            let frame = match i % 4 {
                0 | 1 => structured(&mut rng, &addrs4, &addrs6),
                2 => mutated(&mut rng, &cases),
                _ => random_bytes(&mut rng),
            };
            let h = host(&layout, &maps, &frame);
            if refused_by_test_run(&frame) {
                continue;
            }
            host_unjudged(&mut inv, &frame, &mut want_unjudged);
            let (rc, k) = run_uplink(&mut ebpf, &maps, cpu, &frame);
            assert_eq!(rc, UNSPEC);
            run_pod_programs(&mut pod_ebpf, &frame);
            pod_runs += 2;
            if k != h && disagreements.len() < 20 {
                disagreements.push(format!(
                    "{}: kernel {k:?} host {h:?} frame {frame:02x?}",
                    layout.name
                ));
            }
            *seen.entry(k.verdict).or_default() += 1;
            total += 1;
            run += 1;
        }
        // Counters: every run was counted once.
        let counts = maps.verdict_counts().expect("verdict counters");
        let counted: u64 = Verdict::ALL.iter().map(|v| counts.packets(*v)).sum();
        let corpus_run = cases
            .iter()
            .filter(|c| !refused_by_test_run(&c.bytes))
            .count() as u64;
        assert_eq!(counted, run + corpus_run, "every run counted once");
        // Unjudged packets to pods: the kernel's per-pod counts are the host's, exactly.
        let got_unjudged = kernel_unjudged(&maps);
        assert_eq!(
            got_unjudged, want_unjudged,
            "{}: POD_UNJUDGED differs from the host's count",
            layout.name
        );
        unjudged_total += got_unjudged.values().sum::<u64>();
        let health = maps.health_counts().expect("health");
        assert_eq!(
            health[observer_common::maps::health::STATS_MISSING as usize],
            0
        );
    }
    println!(
        "corpus frames: {corpus_total}, random/mutated frames: {total}, pod-veth program runs: {pod_runs}, unjudged to pods: {unjudged_total}, verdicts: {seen:?}"
    );
    assert!(unjudged_total > 0, "no frame was unjudged traffic to a pod");
    assert!(
        disagreements.is_empty(),
        "{} disagreements:\n{}",
        disagreements.len(),
        disagreements.join("\n")
    );
    assert!(total >= 1_000_000, "{total} random frames");
    for v in Verdict::ALL {
        assert!(
            seen.get(&v).copied().unwrap_or(0) > 0,
            "random frames never produced {v:?}"
        );
    }
}

/// The per-CPU role cache never answers from before a change: an address cached as "outside"
/// becomes a cluster peer (and back), a CIDR is added and removed, a NodePort is allocated and
/// released, and each change shows in the very next packet's verdict, as the host gives it.
#[test]
fn role_changes_reach_cached_addresses() {
    use observer_common::{
        addr::key_of,
        maps::role,
        testing::scenarios::{vpc::*, vpc_cni},
        user::Cidr,
    };
    let cpu = testbed::cpu::pin_current();
    let base = vpc_cni();
    let (mut ebpf, maps) = load(&base);
    let outside = key_of(OUTSIDE.parse().unwrap());
    let to_pod = Frame::tcp(OUTSIDE, POD_A, 40000, 80, TCP_ACK).build();
    let to_node = Frame::tcp(OUTSIDE, NODE_ETH0, 40000, 9443, TCP_SYN).build();
    let mut check = |layout: &Layout, frame: &[u8], want: Verdict| {
        // Several packets each: the first fills the cache, the others are answered from it.
        for _ in 0..3 {
            let (rc, d) = run_uplink(&mut ebpf, &maps, cpu, frame);
            assert_eq!(rc, UNSPEC);
            assert_eq!(d, host(layout, &maps, frame), "kernel and host disagree");
            assert_eq!(d.verdict, want);
        }
    };
    check(&base, &to_pod, Verdict::DirectToPod);
    // The source joins the cluster (a new node): the cached "outside" must not be used...
    let mut joined = vpc_cni();
    joined
        .inventory
        .add_ip(OUTSIDE.parse().unwrap(), role::NODE | role::CLUSTER);
    maps.set_ip(outside, role::NODE | role::CLUSTER).unwrap();
    check(&joined, &to_pod, Verdict::InCluster);
    // ... and leaves again.
    maps.remove_ip(&outside).unwrap();
    check(&base, &to_pod, Verdict::DirectToPod);
    // An allowed CIDR covering it appears, then goes.
    let cidr: Cidr = "10.0.6.0/24".parse().unwrap();
    let mut allowed = vpc_cni();
    allowed.inventory.add_cidr(cidr, role::ALLOWED);
    maps.set_cidr(&cidr, role::ALLOWED).unwrap();
    check(&allowed, &to_pod, Verdict::Allowed);
    maps.remove_cidr(&cidr).unwrap();
    check(&base, &to_pod, Verdict::DirectToPod);
    // A NodePort outside the range is allocated, then released.
    check(&base, &to_node, Verdict::Host);
    let mut nodeport = vpc_cni();
    nodeport.inventory.add_nodeport(9443, 6);
    maps.set_nodeport(9443, 6, true).unwrap();
    check(&nodeport, &to_node, Verdict::NodePort);
    maps.set_nodeport(9443, 6, false).unwrap();
    check(&base, &to_node, Verdict::Host);
}
