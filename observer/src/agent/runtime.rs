//! `observer run`: loads and attaches the programs, follows the node through netlink, keeps
//! the maps in sync with the inventory, reads flow events, serves metrics and the debug API,
//! and detaches everything on SIGTERM/SIGINT.

use std::sync::{
    Arc, Mutex, RwLock,
    atomic::{AtomicBool, Ordering},
};

use crate::{
    agent::{
        api,
        config::Config,
        kept,
        state::{Shared, Snapshot},
    },
    export::alertmanager::Pusher,
    flows::{Tracker, TrackerConfig},
    inventory::{Directory, PodRef, joined::Joined, kubernetes::KubeMsg, standalone::Standalone},
    kernel::{
        ifaces::Ifaces,
        maps::{self, Maps},
        netlink::{NetEvent, Netlink, NodeView},
        object::{self, LoadOptions},
        staged::StagedRings,
        state::Prepared,
    },
    metrics::Metrics,
};
use anyhow::Context as _;
use aya::maps::{MapData, RingBuf};
use observer_common::verdict::Settings;
use std::{collections::HashMap, net::IpAddr};
use tokio::{io::unix::AsyncFd, signal::unix::SignalKind};

/// The controller: the node view, the attach state and the inventory, changed only here.
struct Controller {
    view: NodeView,
    ifaces: Ifaces,
    inventory: Standalone,
    /// Local pods as the Kubernetes API describes them (empty without it).
    kube_pods: HashMap<IpAddr, PodRef>,
    /// NodePorts allocated by Services, by Service, and what the kernel map holds.
    nodeports: HashMap<crate::inventory::roles::Owner, Vec<(u16, u8)>>,
    nodeports_written: std::collections::HashSet<(u16, u8)>,
    nodeports_dirty: bool,
    /// The first full sync arrived and its flows are still to be released.
    first_sync: bool,
    shared: Arc<Shared>,
    /// When the agent started, for the startup timings it logs.
    started: std::time::Instant,
    /// Sources that joined the cluster recently, and the copy the directory shares with the
    /// flow tracker (made again only when they change).
    joined: Joined,
    joined_shared: Arc<Joined>,
    /// How long a joined source is remembered: past the last settle of a flow it could clear.
    joined_keep: std::time::Duration,
}

impl Controller {
    /// Applies the view to attachments and maps, and publishes the state.
    fn sync(&mut self) {
        self.ifaces.reconcile(&self.view.links);
        self.sync_inventory();
    }

    fn sync_inventory(&mut self) {
        let ifaces = &self.ifaces;
        let (ips, mut dir) = self.inventory.desired(&self.view, |name| {
            ifaces.role_of(name) == Some(crate::kernel::attach::Role::Pod)
        });
        // The API's view of local pods names them; the interface comes from the host route,
        // else from the CNI naming rule if such a link exists.
        let links: std::collections::HashSet<&String> = self.view.links.values().collect();
        for (ip, meta) in &self.kube_pods {
            let iface = dir
                .pods
                .get(ip)
                .map(|p| p.iface.clone())
                .or_else(|| {
                    ["eni", "cali"]
                        .iter()
                        .map(|p| {
                            crate::inventory::kubernetes::veth_name(p, &meta.namespace, &meta.name)
                        })
                        .find(|n| links.contains(n))
                })
                .unwrap_or_else(|| meta.iface.clone());
            dir.pods.insert(
                *ip,
                Arc::new(PodRef {
                    iface,
                    ..meta.clone()
                }),
            );
        }
        // Other addresses routed through a known pod's interface (its IPv6, say) are that pod.
        let by_iface: HashMap<String, Arc<PodRef>> = self
            .kube_pods
            .keys()
            .filter_map(|ip| dir.pods.get(ip))
            .map(|p| (p.iface.clone(), p.clone()))
            .collect();
        for p in dir.pods.values_mut() {
            if p.namespace.is_empty()
                && let Some(k) = by_iface.get(&p.iface)
            {
                *p = k.clone();
            }
        }
        let mut failures = 0;
        if self.nodeports_dirty {
            let want: std::collections::HashSet<(u16, u8)> =
                self.nodeports.values().flatten().copied().collect();
            let add: Vec<_> = want.difference(&self.nodeports_written).copied().collect();
            let remove: Vec<_> = self.nodeports_written.difference(&want).copied().collect();
            // A NodePort the kernel did not take stays to be written at the next sync.
            for (set, ports) in [(true, add), (false, remove)] {
                for (port, proto) in ports {
                    match self.shared.maps.set_nodeport(port, proto, set) {
                        Ok(()) if set => {
                            self.nodeports_written.insert((port, proto));
                        }
                        Ok(()) => {
                            self.nodeports_written.remove(&(port, proto));
                        }
                        Err(e) => {
                            failures += 1;
                            tracing::error!(error = %e, port, "writing a NodePort failed; will retry");
                        }
                    }
                }
            }
            self.nodeports_dirty = failures > 0;
        }
        let mut flushed = self.inventory.sync(&self.shared.maps, &ips, &dir);
        let now = std::time::Instant::now();
        let membership = std::mem::take(&mut flushed.membership);
        let mut changed = !membership.is_empty();
        self.joined.apply(&membership, now);
        if let Some(before) = now.checked_sub(self.joined_keep) {
            changed |= self.joined.prune(before);
        }
        if changed {
            self.joined_shared = Arc::new(self.joined.clone());
        }
        dir.joined = self.joined_shared.clone();
        self.inventory.status.syncs += 1;
        self.inventory.status.writes += flushed.changes as u64;
        if flushed.changes > 0 {
            tracing::debug!(changes = flushed.changes, "inventory synced to the maps");
        }
        if let Some(e) = &flushed.error {
            tracing::error!(error = %e, failed = flushed.failures, pending = flushed.pending, "the kernel refused inventory changes; they are kept and retried");
        }
        failures += flushed.failures;
        let m = &self.shared.metrics;
        m.inventory_write_errors.inc_by(failures as u64);
        m.inventory_unwritten
            .set((flushed.pending + usize::from(self.nodeports_dirty)) as i64);
        *self.shared.dir.write().unwrap_or_else(|p| p.into_inner()) = dir;
        self.publish();
    }

    pub fn publish(&self) {
        let m = &self.shared.metrics;
        let (up, pods) = self.ifaces.counts();
        m.attached.with_label_values(&["uplink"]).set(up as i64);
        m.attached.with_label_values(&["pod"]).set(pods as i64);
        let errors = self.ifaces.errors;
        m.attach_errors
            .inc_by(errors.saturating_sub(m.attach_errors.get()));
        m.not_first.set(self.ifaces.not_first() as i64);
        m.inventory_pods.set(self.inventory.status.pods as i64);
        m.inventory_last_update
            .set(self.inventory.status.last_update_unix);
        let interfaces = self.ifaces.status();
        for role in ["uplink", "pod"] {
            let n: usize = interfaces
                .iter()
                .filter(|i| i.role == role)
                .map(|i| i.foreign.len())
                .sum();
            m.foreign.with_label_values(&[role]).set(n as i64);
        }
        let mut snap = self
            .shared
            .snapshot
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        snap.attach_mode = self.ifaces.modes().name();
        snap.interfaces = interfaces.into_iter().map(Into::into).collect();
        snap.failing = self
            .ifaces
            .failing()
            .into_iter()
            .map(|(iface, error)| api::Failing { iface, error })
            .collect();
        snap.attach_errors = errors;
        snap.inventory = self.inventory.status.clone().into();
    }

    fn on_kube(&mut self, m: KubeMsg) {
        match m {
            KubeMsg::Ips(owner, ips) => self.inventory.roles.set_ips(&owner, &ips),
            KubeMsg::Cidrs(owner, cidrs) => self.inventory.roles.set_cidrs(&owner, &cidrs),
            KubeMsg::LocalPods(p) => self.kube_pods = p,
            KubeMsg::Refused(refused) => {
                let m = &self.shared.metrics.declarations_refused;
                m.reset();
                for r in &refused {
                    m.with_label_values(&[r.scope.name(), &r.namespace, &r.name])
                        .set(1);
                }
                self.inventory.status.refused = refused;
            }
            KubeMsg::NodePorts(owner, ports) => {
                if ports.is_empty() {
                    self.nodeports.remove(&owner);
                } else {
                    self.nodeports.insert(owner, ports);
                }
                self.nodeports_dirty = true;
            }
            KubeMsg::Stale(stale) => {
                self.inventory.status.stale = stale;
                self.shared.metrics.inventory_stale.set(i64::from(stale));
                let since = if stale {
                    std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs_f64())
                        .unwrap_or(0.0)
                } else {
                    0.0
                };
                self.shared.metrics.inventory_stale_since.set(since);
            }
            KubeMsg::Synced => {
                tracing::info!(
                    since_start_ms = self.started.elapsed().as_millis() as u64,
                    "Kubernetes inventory synced"
                );
                self.first_sync = !self.inventory.status.synced;
                self.inventory.status.synced = true;
            }
        }
    }

    fn on_event(&mut self, e: &NetEvent) {
        self.view.apply(e);
        match e {
            NetEvent::Link { index, name } => {
                self.ifaces.ensure(*index, name);
                self.sync_inventory();
            }
            NetEvent::LinkGone { index } => {
                // The interface is gone, and its qdisc with it.
                let _ = self.ifaces.forget(*index);
                self.sync_inventory();
            }
            NetEvent::Addr { .. }
            | NetEvent::AddrGone { .. }
            | NetEvent::Route(_)
            | NetEvent::RouteGone(_) => self.sync_inventory(),
            NetEvent::Rules | NetEvent::TcFilter { .. } | NetEvent::Resync => {}
        }
    }
}

/// Reads flow events every [`crate::defaults::EVENTS_POLL`], and at once when the kernel wakes the
/// agent (a flood filling the ring past its mark).
async fn read_events(
    ring: RingBuf<MapData>,
    mut rings: StagedRings,
    shared: Arc<Shared>,
) -> anyhow::Result<()> {
    // SAFETY: the ring buffer owns its map fd, which stays open and the same for as long as
    // the AsyncFd owns the ring buffer.
    let mut fd = unsafe { AsyncFd::register(ring) }
        .map_err(|e| anyhow::anyhow!("polling the event ring buffer: {e}"))?;
    let mut poll = tokio::time::interval(crate::defaults::EVENTS_POLL);
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Reused across reads: a flood must not reallocate per batch.
    let (mut events, mut staged) = (Vec::new(), Vec::new());
    // A read that found the staged rings a quarter full is followed by another at once (a
    // flood): they fill without waking the agent.
    let mut busy = false;
    loop {
        if busy {
            tokio::time::sleep(crate::defaults::STAGED_BUSY_POLL).await;
        } else {
            tokio::select! {
                guard = fd.readable_mut() => guard?.clear_ready(),
                _ = poll.tick() => {}
            }
        }
        events.clear();
        staged.clear();
        // The events first, then the staged rings: a flow's event (its second packet) is read
        // with or after its staged SYN, never before it.
        let bad = maps::drain_events(fd.get_mut(), &mut events);
        busy = rings.drain(&mut staged) >= rings.slots() as usize / 4;
        if events.is_empty() && staged.is_empty() && bad == 0 {
            continue;
        }
        let dir = shared.dir.read().unwrap_or_else(|p| p.into_inner());
        let mut t = shared.tracker.lock().unwrap_or_else(|p| p.into_inner());
        t.bad_events += bad;
        t.note_in_table(&events);
        for e in &staged {
            t.on_staged(e, &dir, &shared.maps, &shared.metrics);
        }
        for e in &events {
            t.on_event(e, &dir, &shared.maps, &shared.metrics);
        }
    }
}

/// Runs the agent until SIGTERM or SIGINT.
pub async fn run(cfg: Config) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    // The Kubernetes lists start first: a large cluster's take seconds, and loading the
    // programs (the verifier) takes about one; the objects wait in the channel meanwhile.
    let kube_rx = if cfg.kubernetes {
        let client = crate::inventory::kubernetes::client()
            .await
            .context("connecting to the Kubernetes API (--kubernetes)")?;
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(crate::inventory::kubernetes::run(
            client,
            cfg.node_name.clone(),
            "eni".into(),
            cfg.kubernetes_local_pods,
            tx,
        ));
        Some(rx)
    } else {
        None
    };
    let kept = kept::prepare(&cfg);
    let dsr_marks = cfg.dsr_marks.resolve();
    tracing::info!(
        setting = cfg.dsr_marks.name(),
        trusted = if dsr_marks { "cilium" } else { "none" },
        "DSR marks"
    );
    let mut ebpf = object::load(&LoadOptions {
        nodeport_min: cfg.nodeport_min,
        nodeport_max: cfg.nodeport_max,
        dsr_marks,
        flow_table_entries: cfg.flow_table_entries,
        address_table_entries: cfg.address_table_entries,
        programs: cfg.attach_mode.programs(),
        pins: kept.as_ref().map(Prepared::pins).unwrap_or_default(),
        ..LoadOptions::default()
    })?;
    tracing::info!(
        since_start_ms = started.elapsed().as_millis() as u64,
        "programs loaded (verified)"
    );
    let (maps, ring) = Maps::take(&mut ebpf)?;
    let rings = StagedRings::take(&mut ebpf)?;
    let settings = Settings {
        nodeport_min: cfg.nodeport_min,
        nodeport_max: cfg.nodeport_max,
        dsr_marks,
    };
    let metrics = Arc::new(Metrics::new());
    metrics
        .attach_mode
        .with_label_values(&[
            cfg.attach_mode.uplink.name(),
            cfg.attach_mode.pod_veths_name(),
        ])
        .set(1);
    kept::record(kept.as_ref(), &metrics, &maps);
    let mut tracker = Tracker::new(TrackerConfig {
        capacity: cfg.recent_flows,
        idle: cfg.flow_idle_timeout,
        settle: cfg.settle,
        // Standalone, no source joins late: the roles come from the flags and the node's own
        // interfaces.
        peer_wait: if cfg.kubernetes {
            cfg.peer_wait
        } else {
            std::time::Duration::ZERO
        },
        alert_window: cfg.alert_window,
        ports_per_pod: cfg.ports_per_pod,
        pod_grace: cfg.pod_grace,
    });
    if let Some(target) = &cfg.alertmanager {
        tracing::info!(
            url = target.url.join(""),
            tls = target.url.https,
            "pushing direct-access alerts to Alertmanager"
        );
        let client = crate::export::alertmanager::AmClient::new(target.clone())
            .context("the Alertmanager client")?;
        tracker.set_sink(Box::new(Pusher::spawn(
            client,
            cfg.alert_window,
            metrics.clone(),
            cfg.node_name.clone(),
        )));
    }
    let shared = Arc::new(Shared {
        maps: Arc::new(maps),
        metrics: metrics.clone(),
        tracker: Mutex::new(tracker),
        dir: RwLock::new(Directory::default()),
        settings,
        cluster_cidrs: cfg.cluster_cidrs.clone(),
        allowed_cidrs: cfg.allow_sources.clone(),
        snapshot: Mutex::new(Snapshot::default()),
        ready: AtomicBool::new(false),
    });
    let listener = api::server::bind(&cfg.socket).await?;
    let (netlink, mut events) = Netlink::open()?;
    let mut ctl = Controller {
        view: netlink.dump().await?,
        ifaces: Ifaces::new(
            ebpf,
            cfg.uplinks.clone(),
            cfg.pod_ifaces.clone(),
            cfg.exclude_ifaces.clone(),
            cfg.attach_mode,
        ),
        inventory: Standalone::new(
            cfg.cluster_cidrs.clone(),
            cfg.allow_sources.clone(),
            cfg.service_cidrs.clone(),
        ),
        kube_pods: HashMap::new(),
        nodeports: HashMap::new(),
        nodeports_written: Default::default(),
        nodeports_dirty: false,
        first_sync: false,
        shared: shared.clone(),
        started,
        joined: Joined::default(),
        joined_shared: Arc::default(),
        joined_keep: 2 * cfg.peer_wait.max(cfg.settle) + std::time::Duration::from_secs(10),
    };
    let mut kube_rx = if let Some(rx) = kube_rx {
        ctl.inventory.status.mode = "kubernetes";
        // Until the first full sync, peer nodes and other nodes' pods may look outside.
        shared
            .tracker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .hold_until_synced();
        tracing::info!(node = cfg.node_name, "inventory from the Kubernetes API");
        Some(rx)
    } else {
        ctl.inventory.status.synced = true;
        ctl.inventory.roles.track_membership = true;
        None
    };
    metrics
        .inventory_synced
        .set(i64::from(ctl.inventory.status.synced));
    ctl.sync();
    ctl.ifaces.update_foreign(&netlink).await;
    ctl.publish();
    // The programs run now: connections pods opened from here on are recorded by them; the
    // ones already open are learnt from conntrack, and any packet that slipped between is
    // looked up again when its flow is judged.
    let mut origins = crate::inventory::origins::Origins::open();
    {
        let dir = shared.dir.read().unwrap_or_else(|p| p.into_inner()).clone();
        // A blocking read of the whole table: off the runtime's workers' duty meanwhile.
        tokio::task::block_in_place(|| origins.seed(&dir, &shared.maps, &shared.metrics));
    }
    let (up, pods) = ctl.ifaces.counts();
    tracing::info!(
        uplinks = up,
        pod_ifaces = pods,
        pods = ctl.inventory.status.pods,
        "started"
    );

    // Handled before the debug API and the readiness probe answer: whoever waits for the agent
    // to be ready and then stops it gets a clean exit. (Not before the programs are loaded: a
    // signal handled during BPF_PROG_LOAD interrupts the verifier, and aya's retry with the
    // verifier log took 7 s; a SIGTERM then is the default death, and the next start replaces
    // what a killed run left.)
    let mut term = tokio::signal::unix::signal(SignalKind::terminate())?;
    let mut int = tokio::signal::unix::signal(SignalKind::interrupt())?;
    let mut tasks = tokio::task::JoinSet::new();
    tasks.spawn(api::server::serve(listener, shared.clone()).then_ok());
    tasks.spawn(super::metrics_endpoint::serve(
        cfg.metrics.clone(),
        shared.clone(),
    ));
    tasks.spawn(read_events(ring, rings, shared.clone()));
    {
        let shared = shared.clone();
        let every = cfg.refresh_interval;
        let alert_window = cfg.alert_window;
        let mut lost =
            crate::flows::podcounts::PodCounts::new(crate::flows::podcounts::Family::Lost);
        let mut unjudged =
            crate::flows::podcounts::PodCounts::new(crate::flows::podcounts::Family::Unjudged);
        tasks.spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                let dir = shared.dir.read().unwrap_or_else(|p| p.into_inner()).clone();
                // Origins are looked up without holding the tracker: events keep flowing.
                let pending = shared
                    .tracker
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .pending_origins(crate::defaults::ORIGIN_LOOKUPS);
                let resolved: Vec<_> = pending
                    .iter()
                    .map(|k| (*k, origins.lookup(k, &dir)))
                    .collect();
                // The kernel table is read and expired flows deleted outside the tracker's lock:
                // events keep flowing meanwhile.
                let (flows, now_ns) = crate::flows::read_flows(&shared.maps);
                let mut t = shared.tracker.lock().unwrap_or_else(|p| p.into_inner());
                for (k, r) in &resolved {
                    t.resolve(k, *r, &shared.maps, &shared.metrics);
                }
                let expired = t.refresh(&flows, now_ns, &dir, &shared.metrics);
                drop(t);
                for key in &expired {
                    let _ = shared.maps.remove_flow(key);
                }
                lost.refresh(&shared.maps, &dir, &shared.metrics, alert_window);
                unjudged.refresh(&shared.maps, &dir, &shared.metrics, alert_window);
            }
        });
    }
    shared.ready.store(true, Ordering::Relaxed);

    let mut reconcile = tokio::time::interval(cfg.reconcile_interval);
    reconcile.tick().await;
    let mut drain = super::drain::Drain::new(&cfg);
    let waiting = |shared: &Shared| {
        shared
            .tracker
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .awaiting_judgement()
    };
    let result = loop {
        tokio::select! {
            _ = term.recv() => if let Some(signal) = drain.signal("SIGTERM", waiting(&shared)) { break Ok(signal) },
            _ = int.recv() => if let Some(signal) = drain.signal("SIGINT", waiting(&shared)) { break Ok(signal) },
            _ = drain.tick(), if drain.draining() => {
                if let Some(signal) = drain.done(waiting(&shared)) {
                    break Ok(signal);
                }
            }
            e = events.recv() => match e {
                Some(NetEvent::Resync) | None => {
                    tracing::warn!("netlink events were lost; full reconcile");
                    if e.is_none() {
                        match Netlink::open() {
                            Ok((_, rx)) => events = rx,
                            Err(err) => tracing::error!(error = %err, "reopening netlink"),
                        }
                    }
                    match netlink.dump().await {
                        Ok(v) => { ctl.view = v; ctl.sync(); }
                        Err(err) => tracing::error!(error = %err, "netlink dump failed"),
                    }
                }
                Some(NetEvent::Rules) => match netlink.rule_tables().await {
                    // The pods whose routes live in a table a rule now uses (or no longer).
                    Ok(t) => {
                        ctl.view.rule_tables = t;
                        ctl.sync_inventory();
                    }
                    Err(err) => tracing::error!(error = %err, "reading the routing rules failed"),
                },
                Some(NetEvent::TcFilter { index }) => {
                    ctl.ifaces.keep_first(&netlink, Some(index)).await;
                    ctl.publish();
                }
                Some(e) => ctl.on_event(&e),
            },
            Some(m) = async { match kube_rx.as_mut() { Some(rx) => rx.recv().await, None => std::future::pending().await } } => {
                ctl.on_kube(m);
                // Apply a burst of messages at once: one flush.
                if let Some(rx) = kube_rx.as_mut() {
                    while let Ok(m) = rx.try_recv() {
                        ctl.on_kube(m);
                    }
                }
                ctl.sync_inventory();
                if std::mem::take(&mut ctl.first_sync) {
                    // Held flows are judged again against the whole first sync, now in the
                    // maps; from here on a source that joins is noted, for the flows its first
                    // packets began (not the first sync's tail: every address joins then).
                    ctl.inventory.roles.track_membership = true;
                    // The first full sync is in the maps: judge the held flows again.
                    let dir = shared.dir.read().unwrap_or_else(|p| p.into_inner());
                    let (confirmed, cleared) = shared
                        .tracker
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .release_held(&*shared.maps, &shared.settings, &dir, &shared.maps, &shared.metrics);
                    drop(dir);
                    shared.metrics.inventory_synced.set(1);
                    tracing::info!(confirmed, cleared, "flows held for the first sync judged");
                }
            }
            _ = reconcile.tick() => match netlink.dump().await {
                Ok(v) => {
                    ctl.view = v;
                    ctl.sync();
                    ctl.ifaces.update_foreign(&netlink).await;
                    ctl.ifaces.keep_first(&netlink, None).await;
                    ctl.publish();
                }
                Err(err) => tracing::error!(error = %err, "netlink dump failed"),
            },
            Some(done) = tasks.join_next() => {
                break match done {
                    Ok(Ok(())) => Err(anyhow::anyhow!("a task of the agent ended")),
                    Ok(Err(e)) => Err(e),
                    Err(e) => Err(anyhow::anyhow!("a task of the agent failed: {e}")),
                };
            }
        }
    };
    shared.ready.store(false, Ordering::Relaxed);
    if result.is_ok() {
        // Flows still waiting for their judgement would be lost with this agent: the next one
        // starts with an empty flow table. Judge them now, from the kernel's last counters.
        let (flows, now_ns) = crate::flows::read_flows(&shared.maps);
        let dir = shared.dir.read().unwrap_or_else(|p| p.into_inner()).clone();
        let mut t = shared.tracker.lock().unwrap_or_else(|p| p.into_inner());
        let _ = t.refresh(&flows, now_ns, &dir, &shared.metrics);
        let judged = t.settle_before_exit(&dir, &shared.metrics);
        drop(t);
        if judged > 0 {
            tracing::info!(
                flows = judged,
                "direct flows judged at exit, before their wait was over"
            );
        }
    }
    for (index, name) in ctl.ifaces.detach_all() {
        // Our clsact qdisc goes when no filter of anyone is left on it.
        let ingress = netlink.tc_filter_names(index, true).await;
        let egress = netlink.tc_filter_names(index, false).await;
        if let (Ok(i), Ok(e)) = (ingress, egress)
            && i.is_empty()
            && e.is_empty()
        {
            match netlink.delete_clsact(index).await {
                Ok(()) => tracing::info!(iface = name, "removed our clsact qdisc"),
                Err(err) => tracing::warn!(iface = name, error = %err, "removing our clsact qdisc"),
            }
        }
    }
    let _ = std::fs::remove_file(&cfg.socket);
    tasks.abort_all();
    match result {
        Ok(signal) => {
            tracing::info!(signal, "detached everything; exiting");
            Ok(())
        }
        Err(e) => Err(e),
    }
}

trait ThenOk {
    fn then_ok(self) -> impl std::future::Future<Output = anyhow::Result<()>> + Send;
}

impl<F: std::future::Future<Output = ()> + Send> ThenOk for F {
    async fn then_ok(self) -> anyhow::Result<()> {
        self.await;
        Ok(())
    }
}
