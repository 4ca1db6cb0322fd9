//! The node's links, addresses and routes from rtnetlink: dumps for a full reconcile, and a
//! stream of change events (multicast groups), so nothing is polled. TC filter additions are
//! followed too, so a filter put ahead of ours is seen at once. Host routes are kept from
//! every table, with the tables policy-routing rules send traffic to: the VPC CNI puts the
//! route of a pod with its own security group (a branch ENI) only in a per-VLAN table.

use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use futures::{StreamExt, TryStreamExt, channel::mpsc::UnboundedReceiver};
use rtnetlink::{
    Handle, IpVersion, MulticastGroup, RouteMessageBuilder, new_multicast_connection,
    packet_core::{NetlinkMessage, NetlinkPayload},
    packet_route::{
        RouteNetlinkMessage,
        address::{AddressAttribute, AddressMessage},
        link::{LinkAttribute, LinkMessage},
        route::{RouteAddress, RouteAttribute, RouteMessage, RouteType},
        rule::{RuleAction, RuleAttribute, RuleMessage},
        tc::{TcAttribute, TcFilterBpfOption, TcHandle, TcOption},
    },
    sys::{AsyncSocket, SocketAddr},
};

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("opening a netlink socket: {0}")]
    Open(#[from] std::io::Error),
    #[error("netlink request for {what}: {source}")]
    Dump {
        what: &'static str,
        #[source]
        source: rtnetlink::Error,
    },
}

/// The main routing table.
pub const MAIN_TABLE: u32 = 254;
/// The local table (the node's own addresses): never a pod's route.
const LOCAL_TABLE: u32 = 255;

/// A host route to one address through one interface (`10.0.3.240 dev eni… scope link`), in
/// a routing table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HostRoute {
    pub dst: IpAddr,
    pub oif: u32,
    pub table: u32,
}

/// A change the kernel announced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NetEvent {
    Link {
        index: u32,
        name: String,
    },
    LinkGone {
        index: u32,
    },
    Addr {
        index: u32,
        addr: IpAddr,
    },
    AddrGone {
        index: u32,
        addr: IpAddr,
    },
    Route(HostRoute),
    RouteGone(HostRoute),
    /// A policy-routing rule was added or removed: the tables rules send traffic to are read
    /// again.
    Rules,
    /// A TC filter was added or changed on this interface (someone may have put theirs ahead
    /// of ours).
    TcFilter {
        index: u32,
    },
    /// Messages were lost (socket overrun) or the stream ended: do a full reconcile.
    Resync,
}

/// One TC filter on a clsact hook.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TcFilter {
    /// The BPF program's name, for a filter that names one.
    pub name: Option<String>,
    pub handle: u32,
    pub priority: u16,
}

/// What the node looks like: links by index, addresses, host routes of every table, and the
/// tables policy-routing rules send traffic to.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct NodeView {
    pub links: BTreeMap<u32, String>,
    pub addrs: BTreeMap<u32, Vec<IpAddr>>,
    pub routes: Vec<HostRoute>,
    pub rule_tables: BTreeSet<u32>,
}

impl NodeView {
    /// Applies one event.
    pub fn apply(&mut self, e: &NetEvent) {
        match e {
            NetEvent::Link { index, name } => {
                self.links.insert(*index, name.clone());
            }
            NetEvent::LinkGone { index } => {
                self.links.remove(index);
                self.addrs.remove(index);
                self.routes.retain(|r| r.oif != *index);
            }
            NetEvent::Addr { index, addr } => {
                let a = self.addrs.entry(*index).or_default();
                if !a.contains(addr) {
                    a.push(*addr);
                }
            }
            NetEvent::AddrGone { index, addr } => {
                if let Some(a) = self.addrs.get_mut(index) {
                    a.retain(|x| x != addr);
                }
            }
            NetEvent::Route(r) => {
                if !self.routes.contains(r) {
                    self.routes.push(*r);
                }
            }
            NetEvent::RouteGone(r) => self.routes.retain(|x| x != r),
            NetEvent::Rules | NetEvent::TcFilter { .. } | NetEvent::Resync => {}
        }
    }

    /// The host routes traffic can take: those of the main table and of every table a rule
    /// sends traffic to.
    pub fn live_routes(&self) -> impl Iterator<Item = &HostRoute> {
        self.routes
            .iter()
            .filter(|r| r.table == MAIN_TABLE || self.rule_tables.contains(&r.table))
    }
}

/// The table a rule sends traffic to, if it is a lookup rule.
fn rule_table(m: &RuleMessage) -> Option<u32> {
    if m.header.action != RuleAction::ToTable {
        return None;
    }
    let table = m
        .attributes
        .iter()
        .find_map(|a| match a {
            RuleAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table));
    (table != 0 && table != LOCAL_TABLE).then_some(table)
}

fn link_of(m: &LinkMessage) -> Option<(u32, String)> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some((m.header.index, n.clone())),
        _ => None,
    })
}

fn addr_of(m: &AddressMessage) -> Option<(u32, IpAddr)> {
    // IFA_LOCAL is the local address on point-to-point links; IFA_ADDRESS otherwise.
    let local = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Local(ip) => Some(*ip),
        _ => None,
    });
    let addr = m.attributes.iter().find_map(|a| match a {
        AddressAttribute::Address(ip) => Some(*ip),
        _ => None,
    });
    local.or(addr).map(|ip| (m.header.index, ip))
}

/// A unicast route to a single address through one interface, in any table but the local one.
fn host_route_of(m: &RouteMessage) -> Option<HostRoute> {
    // Tables above 255 are only in the attribute.
    let table = m
        .attributes
        .iter()
        .find_map(|a| match a {
            RouteAttribute::Table(t) => Some(*t),
            _ => None,
        })
        .unwrap_or(u32::from(m.header.table));
    if m.header.kind != RouteType::Unicast || table == LOCAL_TABLE {
        return None;
    }
    let dst = m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Destination(RouteAddress::Inet(v4)) => Some(IpAddr::V4(*v4)),
        RouteAttribute::Destination(RouteAddress::Inet6(v6)) => Some(IpAddr::V6(*v6)),
        _ => None,
    })?;
    let full = if dst.is_ipv4() { 32 } else { 128 };
    if m.header.destination_prefix_length != full {
        return None;
    }
    let oif = m.attributes.iter().find_map(|a| match a {
        RouteAttribute::Oif(i) => Some(*i),
        _ => None,
    })?;
    Some(HostRoute { dst, oif, table })
}

fn event_of(msg: NetlinkMessage<RouteNetlinkMessage>) -> Option<NetEvent> {
    match msg.payload {
        NetlinkPayload::InnerMessage(m) => match m {
            RouteNetlinkMessage::NewLink(l) => {
                link_of(&l).map(|(index, name)| NetEvent::Link { index, name })
            }
            RouteNetlinkMessage::DelLink(l) => Some(NetEvent::LinkGone {
                index: l.header.index,
            }),
            RouteNetlinkMessage::NewAddress(a) => {
                addr_of(&a).map(|(index, addr)| NetEvent::Addr { index, addr })
            }
            RouteNetlinkMessage::DelAddress(a) => {
                addr_of(&a).map(|(index, addr)| NetEvent::AddrGone { index, addr })
            }
            RouteNetlinkMessage::NewRoute(r) => host_route_of(&r).map(NetEvent::Route),
            RouteNetlinkMessage::DelRoute(r) => host_route_of(&r).map(NetEvent::RouteGone),
            RouteNetlinkMessage::NewRule(_) | RouteNetlinkMessage::DelRule(_) => {
                Some(NetEvent::Rules)
            }
            RouteNetlinkMessage::NewTrafficFilter(f) => u32::try_from(f.header.index)
                .ok()
                .map(|index| NetEvent::TcFilter { index }),
            _ => None,
        },
        NetlinkPayload::Overrun(_) => Some(NetEvent::Resync),
        _ => None,
    }
}

/// A netlink connection that follows the node's links, addresses and routes.
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens the connection (in the calling thread's network namespace) and returns it with
    /// the stream of events. The stream ends with a final [`NetEvent::Resync`] if the
    /// connection breaks.
    pub fn open() -> Result<(Netlink, tokio::sync::mpsc::UnboundedReceiver<NetEvent>), NetlinkError>
    {
        let (mut conn, handle, messages) = new_multicast_connection(&[
            MulticastGroup::Link,
            MulticastGroup::Ipv4Ifaddr,
            MulticastGroup::Ipv6Ifaddr,
            MulticastGroup::Ipv4Route,
            MulticastGroup::Ipv6Route,
            MulticastGroup::Ipv4Rule,
            MulticastGroup::Ipv6Rule,
            MulticastGroup::Tc,
        ])?;
        // A large receive buffer keeps bursts (pods churning) from overrunning the socket.
        let _ = conn.socket_mut().socket_mut().set_rx_buf_sz(4 << 20);
        tokio::spawn(conn);
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(forward(messages, tx));
        Ok((Netlink { handle }, rx))
    }

    /// Dumps the node: links, addresses and host routes.
    pub async fn dump(&self) -> Result<NodeView, NetlinkError> {
        let mut view = NodeView::default();
        let mut links = self.handle.link().get().execute();
        while let Some(m) = links
            .try_next()
            .await
            .map_err(|source| NetlinkError::Dump {
                what: "links",
                source,
            })?
        {
            if let Some((i, n)) = link_of(&m) {
                view.links.insert(i, n);
            }
        }
        let mut addrs = self.handle.address().get().execute();
        while let Some(m) = addrs
            .try_next()
            .await
            .map_err(|source| NetlinkError::Dump {
                what: "addresses",
                source,
            })?
        {
            if let Some((i, a)) = addr_of(&m) {
                view.addrs.entry(i).or_default().push(a);
            }
        }
        // Every table (0: unspecified). The kernel filters a route dump by its header only on a
        // socket with strict checking (NETLINK_GET_STRICT_CHK), which this one is not.
        for query in [
            RouteMessageBuilder::<Ipv4Addr>::new().table_id(0).build(),
            RouteMessageBuilder::<Ipv6Addr>::new().table_id(0).build(),
        ] {
            let mut routes = self.handle.route().get(query).execute();
            while let Some(m) = routes
                .try_next()
                .await
                .map_err(|source| NetlinkError::Dump {
                    what: "routes",
                    source,
                })?
            {
                if let Some(r) = host_route_of(&m) {
                    view.routes.push(r);
                }
            }
        }
        // A node view without the rules' tables is still a view: their pods are missing until
        // the rules can be read again (every reconcile), not every pod.
        view.rule_tables = match self.rule_tables().await {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %e, "reading the routing rules failed; pods whose routes are only in policy-routing tables are not seen");
                BTreeSet::new()
            }
        };
        Ok(view)
    }

    /// The tables policy-routing rules (IPv4 and IPv6) send traffic to.
    pub async fn rule_tables(&self) -> Result<BTreeSet<u32>, NetlinkError> {
        let mut tables = BTreeSet::new();
        for (v, v6) in [(IpVersion::V4, false), (IpVersion::V6, true)] {
            let mut rules = self.handle.rule().get(v).execute();
            loop {
                match rules.try_next().await {
                    Ok(Some(m)) => tables.extend(rule_table(&m)),
                    Ok(None) => break,
                    // A kernel without IPv6 (ipv6.disable=1), or without its multiple tables:
                    // no IPv6 rules.
                    Err(rtnetlink::Error::NetlinkError(e))
                        if v6
                            && [libc::EAFNOSUPPORT, libc::EOPNOTSUPP].contains(&-e.raw_code()) =>
                    {
                        break;
                    }
                    Err(source) => {
                        return Err(NetlinkError::Dump {
                            what: "rules",
                            source,
                        });
                    }
                }
            }
        }
        Ok(tables)
    }
}

impl Netlink {
    /// Names of the BPF programs of the TC filters on an interface's clsact hook.
    pub async fn tc_filter_names(
        &self,
        ifindex: u32,
        ingress: bool,
    ) -> Result<Vec<String>, NetlinkError> {
        Ok(self
            .tc_filters(ifindex, ingress)
            .await?
            .into_iter()
            .filter_map(|f| f.name)
            .collect())
    }

    /// The TC filters on an interface's clsact hook, in the order the kernel runs them.
    pub async fn tc_filters(
        &self,
        ifindex: u32,
        ingress: bool,
    ) -> Result<Vec<TcFilter>, NetlinkError> {
        let req = self.handle.traffic_filter(ifindex as i32).get();
        let req = if ingress { req.ingress() } else { req.egress() };
        let mut filters = req.execute();
        let mut out = Vec::new();
        loop {
            match filters.try_next().await {
                Ok(Some(m)) => {
                    // Each priority's classifier comes first as an entry without a handle.
                    if u32::from(m.header.handle) == 0 {
                        continue;
                    }
                    let name = m.attributes.iter().find_map(|a| match a {
                        TcAttribute::Options(opts) => opts.iter().find_map(|o| match o {
                            TcOption::Bpf(TcFilterBpfOption::ProgName(n)) => Some(n.clone()),
                            _ => None,
                        }),
                        _ => None,
                    });
                    out.push(TcFilter {
                        name,
                        handle: u32::from(m.header.handle),
                        priority: (m.header.info >> 16) as u16,
                    });
                }
                Ok(None) => return Ok(out),
                // No clsact qdisc: no filters.
                Err(rtnetlink::Error::NetlinkError(e))
                    if e.raw_code() == -libc::EINVAL || e.raw_code() == -libc::ENOENT =>
                {
                    return Ok(out);
                }
                Err(source) => {
                    return Err(NetlinkError::Dump {
                        what: "tc filters",
                        source,
                    });
                }
            }
        }
    }

    /// Deletes the clsact qdisc of an interface.
    pub async fn delete_clsact(&self, ifindex: u32) -> Result<(), NetlinkError> {
        let mut req = self.handle.qdisc().del(ifindex as i32);
        let m = req.message_mut();
        m.header.parent = TcHandle::CLSACT;
        m.header.handle = TcHandle::from(0xffff_0000u32);
        m.attributes.push(TcAttribute::Kind("clsact".to_string()));
        req.execute().await.map_err(|source| NetlinkError::Dump {
            what: "deleting a clsact qdisc",
            source,
        })
    }
}

async fn forward(
    mut messages: UnboundedReceiver<(NetlinkMessage<RouteNetlinkMessage>, SocketAddr)>,
    tx: tokio::sync::mpsc::UnboundedSender<NetEvent>,
) {
    while let Some((msg, _)) = messages.next().await {
        if let Some(e) = event_of(msg)
            && tx.send(e).is_err()
        {
            return;
        }
    }
    let _ = tx.send(NetEvent::Resync);
}
