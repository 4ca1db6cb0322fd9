//! The soak: a cluster's day, lived by three nodes (two with kube-proxy, one with an eBPF
//! dataplane: no netfilter conntrack), each running `observer run --kubernetes` against one
//! fixture API server whose objects change with a real cluster's timing, with the traffic a
//! cluster makes, and intrusions injected at random times. It counts what the agents alert on:
//! every alert for anything not injected is a false alarm (there must be none), and every
//! injection must be caught with its pod named.
//!
//! - Pods are scheduled (Pending), wired by the "CNI", and their IPs reported by the "kubelet"
//!   0.2-2 s later; a new pod calls the Service in its first second (its node DNATs it to the
//!   backend on another node, which does not know the new address yet).
//! - The Service's backend is rolled out (a new pod, the old one deleted, its IP reused later).
//! - The eBPF node joins after the others; its pods keep a database pool and query DNS outside
//!   the cluster; a router's fragmentation-needed errors quote their packets.
//! - The load balancers' subnet (allowed) health-checks every pod and calls the NodePort.
//! - The agents are restarted one by one (a DaemonSet rollout), keeping their state.
//! - The intruder reaches pods straight over TCP, UDP and ICMP, on every node, new pods
//!   included.
//!
//! `cargo xtask test` runs it for `OBSERVER_SOAK_MINUTES` (default 2); `cargo xtask soak
//! --minutes N` runs it longer. It writes `target/soak/report.json`.

mod support;

use std::{
    collections::BTreeMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use observer_common::{
    packet::{TCP_ACK, TCP_PSH},
    testing::frames::{Frame, L4},
};
use serde_json::{Value, json};
use support::{BIN, alert_lines, wait_for};
use testbed::{
    agent::AgentProc,
    bpffs::StateDir,
    cluster::{Cluster, Dataplane, LB_CIDR, NODEPORT, SERVICE_CIDR, SERVICE_IP, UPLINK},
    kubeapi::{KubeApi, NODES, PODS, SERVICES, fixtures},
    rng::Rng,
    topology::VPC_ROUTER,
    traffic::{Servers, mac_of, raw_frames},
};

#[derive(Clone, Debug)]
struct Injection {
    at_s: f64,
    /// When it was sent, to the second (RFC 3339, as the alert lines' timestamps begin).
    wall: String,
    pod: String,
    protocol: &'static str,
    port: u16,
}

/// A pod of the soak's cluster, as the API knows it.
#[derive(Clone)]
struct PodInfo {
    ns: &'static str,
    name: String,
    deploy: &'static str,
    node: usize,
    ip: String,
}

struct Soak {
    c: Cluster,
    api: KubeApi,
    pods: Mutex<BTreeMap<String, PodInfo>>,
    stop: AtomicBool,
    started: Instant,
    seq: AtomicU64,
}

impl Soak {
    fn elapsed_s(&self) -> f64 {
        self.started.elapsed().as_secs_f64()
    }

    fn api_pod(&self, p: &PodInfo, ready: bool) -> Value {
        let node = &self.c.nodes[p.node].name;
        let mut v = fixtures::pod(p.ns, &p.name, p.deploy, node, &p.ip, &[80]);
        if !ready {
            v["status"] = json!({"phase": "Pending"});
        }
        v
    }

    /// Schedules a pod: the API has it Pending, the CNI wires it at once, the kubelet reports
    /// its IP `report_after` later: the returned thread ends once it has.
    fn schedule(self: &Arc<Self>, p: PodInfo, report_after: Duration) -> thread::JoinHandle<()> {
        self.api.apply(PODS, self.api_pod(&p, false));
        let veth = format!(
            "eni{:011x}",
            self.seq.fetch_add(1, Ordering::Relaxed) + 0xa0000
        );
        self.c.add_pod(p.node, &p.ip, &veth);
        self.pods.lock().unwrap().insert(p.ip.clone(), p.clone());
        let me = self.clone();
        thread::spawn(move || {
            // The kubelet's report delay: the scenario's own timeline.
            thread::sleep(report_after);
            me.api.apply(PODS, me.api_pod(&p, true));
        })
    }

    fn delete(&self, ip: &str) {
        let Some(p) = self.pods.lock().unwrap().remove(ip) else {
            return;
        };
        self.api.delete(PODS, p.ns, &p.name);
        self.c.remove_pod(ip);
    }

    fn pod_ns(&self, ip: &str) -> Option<String> {
        self.c.pods().get(ip).map(|p| p.pod.ns.name.clone())
    }

    fn of(&self, deploy: &str) -> Vec<PodInfo> {
        self.pods
            .lock()
            .unwrap()
            .values()
            .filter(|p| p.deploy == deploy)
            .cloned()
            .collect()
    }
}

/// How long the kubelet takes to report a new pod's IP in its status: 0.2-2 s.
fn kubelet_report(rng: &mut Rng) -> Duration {
    Duration::from_millis(200 + rng.below(1800) as u64)
}

/// Runs `f` every `every` until the soak stops, in its own thread.
fn every(
    s: &Arc<Soak>,
    every: Duration,
    mut f: impl FnMut(&Soak) + Send + 'static,
) -> thread::JoinHandle<()> {
    let s = s.clone();
    thread::spawn(move || {
        while !s.stop.load(Ordering::Relaxed) {
            f(&s);
            thread::sleep(every);
        }
    })
}

fn netns_of(name: String) -> NsRef {
    NsRef(name)
}

/// A pod's namespace by name (the pod may go while a client runs in it: errors are ignored).
struct NsRef(String);
impl NsRef {
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
        let path = format!("/run/netns/{}", self.0);
        thread::spawn(move || {
            let file = std::fs::File::open(&path).ok()?;
            // SAFETY: setns on a valid namespace fd; it only changes this thread's namespace.
            let rc =
                unsafe { libc::setns(std::os::fd::AsRawFd::as_raw_fd(&file), libc::CLONE_NEWNET) };
            (rc == 0).then(f)
        })
        .join()
        .ok()
        .flatten()
    }
}

fn tcp_hello(dst: String, port: u16) -> bool {
    use std::io::Read;
    let Ok(mut s) = std::net::TcpStream::connect_timeout(
        &format!("{dst}:{port}").parse().unwrap(),
        Duration::from_secs(2),
    ) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let mut t = String::new();
    s.read_to_string(&mut t).is_ok()
}

fn udp_query(dst: String, port: u16) -> bool {
    let s = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let _ = s.send_to(b"query", format!("{dst}:{port}"));
    let mut buf = [0u8; 64];
    s.recv_from(&mut buf).is_ok()
}

/// The kernel memory of a process's BPF maps (KiB), as the kernel accounts it (`memlock:` of
/// each map's fdinfo): what memory-cgroup accounting charges to the agent's pod beside its RSS.
fn maps_memlock_kib(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|info| {
            info.lines()
                .find_map(|l| l.strip_prefix("memlock:")?.trim().parse::<u64>().ok())
        })
        .sum::<u64>()
        / 1024
}

/// CPU seconds (user + system) and peak RSS (KiB) of a process.
fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let cpu = (ticks(11) + ticks(12)) / hz;
    let hwm = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    (cpu, hwm)
}

#[derive(Default, Clone)]
struct AgentFigures {
    cpu_s: f64,
    peak_rss_kib: u64,
    maps_kib: u64,
}

#[test]
fn a_clusters_day_has_no_false_alarm_and_every_intrusion_caught() {
    let minutes: f64 = std::env::var("OBSERVER_SOAK_MINUTES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2.0);
    let seed: u64 = std::env::var("OBSERVER_SOAK_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_0b5e);
    let run = Duration::from_secs_f64(minutes * 60.0);
    let c = Cluster::new(&[Dataplane::KubeProxy, Dataplane::KubeProxy, Dataplane::Ebpf]);
    let api = KubeApi::start_at(&c.control_plane.ns, c.control_plane.ip, 6443);
    let s = Arc::new(Soak {
        c,
        api,
        pods: Mutex::new(BTreeMap::new()),
        stop: AtomicBool::new(false),
        started: Instant::now(),
        seq: AtomicU64::new(0),
    });
    let c = &s.c;

    // The cluster before the agents: two nodes, the Service's backend, its clients.
    for n in &c.nodes[..2] {
        s.api.apply(NODES, fixtures::vpc_node(&n.name, n.ip));
    }
    let mut svc = fixtures::service("shop", "api", SERVICE_IP, "NodePort", "api");
    svc["spec"]["ports"][0]["nodePort"] = json!(NODEPORT);
    s.api.apply(SERVICES, svc);
    // The CNI's addresses: a freed one is given out again first (IP reuse).
    let mut pool = IpPool {
        next: 20,
        free: Vec::new(),
    };
    let now = Duration::ZERO;
    s.schedule(
        PodInfo {
            ns: "shop",
            name: "api-7854ff8877-a0001".into(),
            deploy: "api",
            node: 0,
            ip: pool.take(),
        },
        now,
    )
    .join()
    .unwrap();
    s.schedule(
        PodInfo {
            ns: "shop",
            name: "web-7854ff8877-w0001".into(),
            deploy: "web",
            node: 1,
            ip: pool.take(),
        },
        now,
    )
    .join()
    .unwrap();
    s.c.set_service_backend(&s.of("api")[0].ip);

    // Servers: every pod serves :80 (its servers start with the pod, on demand below); the
    // database (echo) and DNS outside the cluster.
    let servers = Arc::new(Mutex::new(Servers::new()));
    let serve = {
        let s = s.clone();
        let servers = servers.clone();
        move |ip: &str| {
            if let Some(p) = s.c.pods().get(ip) {
                servers.lock().unwrap().tcp(&p.pod.ns, 80);
            }
        }
    };
    for p in s.pods.lock().unwrap().clone().values() {
        serve(&p.ip);
    }
    servers.lock().unwrap().tcp_echo(&c.db.ns, 5432);
    servers.lock().unwrap().udp(&c.db.ns, 53);

    // The agents, with their kept state.
    let states: Vec<StateDir> = (0..3).map(|i| StateDir::new(&format!("soak{i}"))).collect();
    let dirs: Vec<_> = (0..3)
        .map(|i| std::env::temp_dir().join(format!("observer-soak-{}-{i}", std::process::id())))
        .collect();
    // Extra agent flags, to see what the soak shows without a fix (e.g. `--peer-wait 0s
    // --state-dir none`, which then replaces the soak's own state directory).
    let extra: Vec<String> = std::env::var("OBSERVER_SOAK_AGENT_ARGS")
        .unwrap_or_default()
        .split_whitespace()
        .map(String::from)
        .collect();
    let start_agent = |i: usize| -> AgentProc {
        let d = &dirs[i];
        std::fs::create_dir_all(d).unwrap();
        let kubeconfig = d.join("kubeconfig");
        s.api.kubeconfig(&kubeconfig);
        let state = states[i].path.to_str().unwrap().to_string();
        let mut args = vec![
            "--kubernetes",
            "on",
            "--node-name",
            &c.nodes[i].name,
            "--uplink",
            UPLINK,
            "--allow-source",
            LB_CIDR,
            "--service-cidr",
            SERVICE_CIDR,
        ];
        if !extra.iter().any(|a| a == "--state-dir") {
            args.extend(["--state-dir", &state]);
        }
        args.extend(extra.iter().map(String::as_str));
        AgentProc::start_env(
            BIN.as_ref(),
            &c.nodes[i].ns,
            &d.join("agent"),
            19_990,
            &args,
            &[("KUBECONFIG", kubeconfig.to_str().unwrap())],
        )
    };
    let agents: Arc<Mutex<Vec<AgentProc>>> =
        Arc::new(Mutex::new((0..3).map(start_agent).collect()));
    let figures = Arc::new(Mutex::new(vec![AgentFigures::default(); 3]));
    let account = |a: &AgentProc, f: &mut AgentFigures| {
        let (cpu, rss) = usage(a.pid());
        f.cpu_s += cpu;
        f.peak_rss_kib = f.peak_rss_kib.max(rss);
        f.maps_kib = f.maps_kib.max(maps_memlock_kib(a.pid()));
    };
    for a in agents.lock().unwrap().iter() {
        wait_for("the agent's first sync", Duration::from_secs(30), || {
            support::status(a)["inventory"]["synced"] == true
        });
    }
    eprintln!(
        "soak: {minutes} min, seed {seed:#x}; agents synced at {:.1} s",
        s.elapsed_s()
    );

    // Background traffic.
    let mut threads = Vec::new();
    // The web pods call the Service (DNATed on their node to the backend on node 0).
    threads.push(every(&s, Duration::from_millis(400), |s| {
        for w in s.of("web") {
            if let Some(ns) = s.pod_ns(&w.ip) {
                netns_of(ns).run(|| tcp_hello(SERVICE_IP.into(), 80));
            }
        }
    }));
    // Pod to pod across nodes: web → workers, workers → the backend.
    threads.push(every(&s, Duration::from_millis(700), |s| {
        let (webs, workers, apis) = (s.of("web"), s.of("worker"), s.of("api"));
        for (from, to) in webs
            .iter()
            .zip(workers.iter())
            .chain(workers.iter().zip(apis.iter()))
        {
            if let Some(ns) = s.pod_ns(&from.ip) {
                let dst = to.ip.clone();
                netns_of(ns).run(move || tcp_hello(dst, 80));
            }
        }
    }));
    // DNS outside the cluster, from every pod.
    threads.push(every(&s, Duration::from_millis(1000), |s| {
        let pods: Vec<String> = s.pods.lock().unwrap().keys().cloned().collect();
        for ip in pods {
            if let Some(ns) = s.pod_ns(&ip) {
                let db = s.c.db.ip.to_string();
                netns_of(ns).run(move || udp_query(db, 53));
            }
        }
    }));
    // The load balancers: health checks of every pod, and the NodePort.
    threads.push(every(&s, Duration::from_millis(2000), |s| {
        let pods: Vec<String> = s.pods.lock().unwrap().keys().cloned().collect();
        let node0 = s.c.nodes[0].ip.to_string();
        let lb = NsName(s.c.lb.ns.name.clone());
        lb.run(move || {
            for ip in pods {
                tcp_hello(ip, 80);
            }
            tcp_hello(node0, NODEPORT);
        });
    }));

    // The timeline, and the intruder.
    let mut rng = Rng(seed);
    let mut injections: Vec<Injection> = Vec::new();
    let mut next_intrusion = 12.0 + rng.below(4) as f64;
    let inject_until = run.as_secs_f64() - 25.0;
    let mut pools: Vec<std::net::TcpStream> = Vec::new();
    let mut worker_pool_ports: Vec<(String, u16)> = Vec::new();
    let mut joined = false;
    let mut rolled = false;
    let mut restarted = 0usize;
    let mut new_web = 0u32;
    let mut next_new_web = 20.0;
    let mut next_pmtu = 15.0;
    let router_mac = mac_of(&c.nodes[2].ns, UPLINK);
    while s.elapsed_s() < run.as_secs_f64() {
        let t = s.elapsed_s();
        // The eBPF node joins: its Node, then its workers, each with a database pool.
        if !joined && t > 8.0 {
            joined = true;
            s.api
                .apply(NODES, fixtures::vpc_node(&c.nodes[2].name, c.nodes[2].ip));
            for k in 0..2 {
                let ip = pool.take();
                let reported = s.schedule(
                    PodInfo {
                        ns: "jobs",
                        name: format!("worker-7854ff8877-k000{k}"),
                        deploy: "worker",
                        node: 2,
                        ip: ip.clone(),
                    },
                    kubelet_report(&mut rng),
                );
                serve(&ip);
                // The pool opens once the pod runs (its status reported).
                reported.join().unwrap();
                let ns = s.pod_ns(&ip).unwrap();
                let db = c.db.ip;
                let (port, stream) = NsName(ns).run(move || tcp_open_from(db, 5432));
                pools.push(stream);
                worker_pool_ports.push((ip, port));
            }
        }
        // A new web replica on node 1 calls the Service in its first second; the kubelet
        // reports its IP 0.2-2 s later.
        if t > next_new_web {
            new_web += 1;
            next_new_web = t + 20.0 + rng.below(10) as f64;
            let ip = pool.take();
            let p = PodInfo {
                ns: "shop",
                name: format!("web-7854ff8877-n{new_web:04}"),
                deploy: "web",
                node: 1,
                ip: ip.clone(),
            };
            // Not waited for: the replica calls the Service before its status is reported.
            let _ = s.schedule(p, kubelet_report(&mut rng));
            serve(&ip);
            if let Some(ns) = s.pod_ns(&ip) {
                netns_of(ns).run(|| tcp_hello(SERVICE_IP.into(), 80));
            }
        }
        // The backend's rollout: a new pod, the Service moved to it, the old one deleted.
        if !rolled && t > run.as_secs_f64() * 0.4 {
            rolled = true;
            let old = s.of("api")[0].clone();
            let ip = pool.take();
            let reported = s.schedule(
                PodInfo {
                    ns: "shop",
                    name: "api-7854ff8877-a0002".into(),
                    deploy: "api",
                    node: 0,
                    ip: ip.clone(),
                },
                kubelet_report(&mut rng),
            );
            serve(&ip);
            // The Service moves to the new pod once it runs (its status reported).
            reported.join().unwrap();
            s.c.set_service_backend(&ip);
            s.delete(&old.ip);
            // The CNI gives the freed address out again.
            pool.free.push(old.ip);
        }
        // The DaemonSet rollout: the agents restarted one by one.
        let due = [0.55, 0.65, 0.75];
        if restarted < 3 && t > run.as_secs_f64() * due[restarted] {
            let mut all = agents.lock().unwrap();
            account(&all[restarted], &mut figures.lock().unwrap()[restarted]);
            let status = all[restarted].signal(libc::SIGTERM);
            assert!(status.success(), "the agent's exit on SIGTERM: {status}");
            all[restarted] = start_agent(restarted);
            restarted += 1;
        }
        // A router's fragmentation-needed about the workers' pool packets.
        if t > next_pmtu && !worker_pool_ports.is_empty() {
            next_pmtu = t + 10.0;
            let frames = worker_pool_ports
                .iter()
                .map(|(ip, port)| {
                    let quoted = Frame::tcp(ip, c.db.ip, *port, 5432, TCP_ACK | TCP_PSH);
                    let mut f = Frame::new(
                        VPC_ROUTER,
                        ip,
                        L4::IcmpError {
                            ty: 3,
                            code: 4,
                            quoted: quoted.ip_packet(),
                        },
                    )
                    .build();
                    f[..6].copy_from_slice(&router_mac);
                    f
                })
                .collect();
            raw_frames(&c.outside.ns, UPLINK, frames);
        }
        // The pools talk.
        for p in &mut pools {
            use std::io::{Read, Write};
            let _ = p.write_all(b"select 1;\n");
            let _ = p.read(&mut [0u8; 64]);
        }
        // The intruder. (A restart above may have taken a while: the time is read again.)
        let t = s.elapsed_s();
        if t > next_intrusion && t < inject_until {
            next_intrusion = t + 3.0 + rng.below(5) as f64;
            let candidates: Vec<PodInfo> = s.pods.lock().unwrap().values().cloned().collect();
            let p = &candidates[rng.below(candidates.len())];
            let i = injections.len() as u16;
            // Each protocol in turn, from a random start. Pings of one pod within the alert
            // window fold into one line (an echo has no port), so a pod pinged in the last
            // 70 s gets a TCP probe instead: each injection has its own line to be caught by.
            let pinged = injections
                .iter()
                .any(|j| j.pod == p.name && j.protocol == "icmp" && t - j.at_s < 70.0);
            let (protocol, port) = match (u64::from(i) + seed) % 3 {
                1 => ("udp", 20_000 + i),
                2 if !pinged => ("icmp", 0),
                _ => ("tcp", 10_000 + i),
            };
            let wall =
                observer::kernel::clock::rfc3339(std::time::SystemTime::now())[..19].to_string();
            let dst = p.ip.clone();
            NsName(c.outside.ns.name.clone()).run(move || match protocol {
                "tcp" => {
                    let _ = std::net::TcpStream::connect_timeout(
                        &format!("{dst}:{port}").parse().unwrap(),
                        Duration::from_secs(1),
                    );
                }
                "udp" => {
                    let u = std::net::UdpSocket::bind("0.0.0.0:0").unwrap();
                    let _ = u.send_to(b"probe", format!("{dst}:{port}"));
                }
                _ => {
                    let _ = std::process::Command::new("ping")
                        .args(["-c", "1", "-W", "1", &dst])
                        .output();
                }
            });
            injections.push(Injection {
                at_s: t,
                wall,
                pod: p.name.clone(),
                protocol,
                port,
            });
        }
        // The day's pace: one step of the timeline every 250 ms (not a wait for a result).
        thread::sleep(Duration::from_millis(250));
    }
    s.stop.store(true, Ordering::Relaxed);
    for t in threads {
        let _ = t.join();
    }

    // Every injection is caught, named; then the agents have had the time to alert on
    // anything else (three refreshes past the settle window).
    let lines = || -> Vec<Value> {
        agents
            .lock()
            .unwrap()
            .iter()
            .flat_map(alert_lines)
            .collect()
    };
    // The line that tells of this injection: its pod, protocol and port, written after it.
    let caught_by = |inj: &Injection, l: &Value| {
        l["pod"] == inj.pod.as_str()
            && l["protocol"] == inj.protocol
            && (inj.protocol == "icmp" || l["dst_port"] == inj.port)
            && l["timestamp"]
                .as_str()
                .and_then(|ts| ts.get(..19))
                .is_some_and(|ts| ts >= inj.wall.as_str())
    };
    let deadline = Instant::now() + Duration::from_secs(40);
    while Instant::now() < deadline {
        let l = lines();
        if injections.iter().all(|i| l.iter().any(|l| caught_by(i, l))) {
            break;
        }
        // Polling the agents' logs for the positives; the negatives wait for refreshes below.
        thread::sleep(Duration::from_millis(500));
    }
    for a in agents.lock().unwrap().iter() {
        support::wait_refreshes(a, 3);
    }
    let all = lines();
    let caught = injections
        .iter()
        .filter(|i| all.iter().any(|l| caught_by(i, l)))
        .count();
    let false_alarms: Vec<&Value> = all
        .iter()
        .filter(|l| l["src"] != c.outside.ip || !injections.iter().any(|i| caught_by(i, l)))
        .collect();
    {
        let all_agents = agents.lock().unwrap();
        let mut f = figures.lock().unwrap();
        for (i, a) in all_agents.iter().enumerate() {
            account(a, &mut f[i]);
        }
    }
    let figures = figures.lock().unwrap().clone();
    let report = json!({
        "minutes": minutes,
        "seed": format!("{seed:#x}"),
        "agent_args": extra,
        "nodes": c.nodes.iter().map(|n| json!({"name": n.name, "dataplane": format!("{:?}", n.dataplane)})).collect::<Vec<_>>(),
        "pods_scheduled": s.seq.load(Ordering::Relaxed),
        "agent_restarts": restarted,
        "injected": injections.len(),
        "caught": caught,
        "false_alarms": false_alarms.len(),
        "false_alarm_lines": false_alarms,
        "injections": injections.iter().map(|i| json!({"at_s": (i.at_s * 10.0).round() / 10.0, "pod": i.pod, "protocol": i.protocol, "port": i.port})).collect::<Vec<_>>(),
        "agents": figures.iter().enumerate().map(|(i, f)| json!({"node": c.nodes[i].name, "cpu_seconds": (f.cpu_s * 100.0).round() / 100.0, "peak_rss_mib": (f.peak_rss_kib as f64 / 1024.0 * 10.0).round() / 10.0, "maps_mib": (f.maps_kib as f64 / 1024.0 * 10.0).round() / 10.0})).collect::<Vec<_>>(),
    });
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/soak");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .unwrap();
    eprintln!("soak report ({}):", dir.join("report.json").display());
    eprintln!(
        "  injected {:>4}   caught {:>4}   false alarms {:>3}",
        injections.len(),
        caught,
        false_alarms.len()
    );
    for (i, f) in figures.iter().enumerate() {
        eprintln!(
            "  {:<28} {:>7.2} CPU s   peak RSS {:>6.1} MiB   maps {:>6.1} MiB",
            c.nodes[i].name,
            f.cpu_s,
            f.peak_rss_kib as f64 / 1024.0,
            f.maps_kib as f64 / 1024.0
        );
    }
    assert!(false_alarms.is_empty(), "false alarms: {false_alarms:#?}");
    assert_eq!(
        caught,
        injections.len(),
        "injections not caught: {:#?}\nalert lines: {all:#?}",
        injections
            .iter()
            .filter(|i| !all.iter().any(|l| caught_by(i, l)))
            .collect::<Vec<_>>()
    );
    assert!(injections.len() >= 5, "{} injections", injections.len());
    drop(pools);
    drop(servers);
}

/// The CNI's pod addresses.
struct IpPool {
    next: u32,
    free: Vec<String>,
}

impl IpPool {
    fn take(&mut self) -> String {
        if let Some(ip) = self.free.pop() {
            return ip;
        }
        self.next += 1;
        assert!(self.next < 250, "out of pod addresses");
        format!("10.0.2.{}", self.next)
    }
}

/// A namespace known by name only (pods come and go while clients run).
struct NsName(String);
impl NsName {
    fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        NsRef(self.0.clone()).run(f).expect("the namespace is gone")
    }
}

fn tcp_open_from(dst: &str, port: u16) -> (u16, std::net::TcpStream) {
    let s = std::net::TcpStream::connect_timeout(
        &format!("{dst}:{port}").parse().unwrap(),
        Duration::from_secs(2),
    )
    .expect("the database");
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    (s.local_addr().unwrap().port(), s)
}
