//! How a flow's staged records (its pure SYNs and the pod's answers to them, read from the
//! staged rings) combine with what `FLOWS` holds of its later packets.

use observer_common::maps::{FlowEvent, FlowKey, FlowStats, staged};

use super::FlowMap;

/// Adds a staged record to a flow's figures: a SYN's packet (the first one also names the
/// flow's start, verdict and uplink), or the pod's answer.
pub(super) fn add_staged(s: &mut FlowStats, e: &FlowEvent) {
    match e.kind {
        staged::SYN => {
            if s.packets == 0 {
                s.first_seen_ns = e.ts_ns;
                s.verdict = e.verdict;
                s.reason = e.reason;
                s.origin = e.origin;
                s.ifindex = e.ifindex;
            }
            s.packets += 1;
            s.bytes += u64::from(e.bytes);
            s.last_seen_ns = s.last_seen_ns.max(e.ts_ns);
            s.tcp_flags |= e.tcp_flags;
        }
        staged::ANSWERED | staged::REFUSED => {
            if e.kind == staged::ANSWERED {
                s.answered = 1;
            } else {
                s.refused = 1;
            }
            if s.pod_ifindex == 0 {
                s.pod_ifindex = e.ifindex;
            }
        }
        _ => {}
    }
}

/// What the kernel knows of each flagged flow: a read of `FLOWS` and the staged records read
/// (in ring order), merged as the tracker merges them; for reading the kernel without a
/// tracker (tests).
pub fn kernel_view(
    table: impl IntoIterator<Item = (FlowKey, FlowStats)>,
    records: &[FlowEvent],
) -> FlowMap<FlowStats> {
    let mut staged_of: FlowMap<FlowStats> = FlowMap::default();
    for e in records {
        if e.kind == staged::SYN || staged_of.contains_key(&e.key) {
            add_staged(staged_of.entry(e.key).or_default(), e);
        }
    }
    let mut view: FlowMap<FlowStats> = table.into_iter().collect();
    for (k, st) in staged_of {
        let t = view.remove(&k).unwrap_or_default();
        view.insert(k, merged(&st, &t));
    }
    view
}

/// A flow's counters and marks from its staged records and a read of its `FLOWS` entry, which
/// holds the packets after the staged SYN (or before it, if that SYN was a retransmission).
pub(super) fn merged(staged: &FlowStats, table: &FlowStats) -> FlowStats {
    if staged.packets == 0 {
        return *table;
    }
    let mut m = *table;
    m.packets = staged.packets + table.packets;
    m.bytes = staged.bytes + table.bytes;
    m.first_seen_ns = if table.packets == 0 {
        staged.first_seen_ns
    } else {
        staged.first_seen_ns.min(table.first_seen_ns)
    };
    m.last_seen_ns = staged.last_seen_ns.max(table.last_seen_ns);
    m.tcp_flags |= staged.tcp_flags;
    m.verdict = staged.verdict;
    m.reason = staged.reason;
    m.origin = staged.origin;
    if table.packets == 0 {
        m.ifindex = staged.ifindex;
    }
    m.answered |= staged.answered;
    m.refused |= staged.refused;
    if m.pod_ifindex == 0 {
        m.pod_ifindex = staged.pod_ifindex;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use observer_common::{
        maps::origin,
        verdict::{Reason, Verdict},
    };

    #[test]
    fn staged_and_table_figures_merge() {
        let syn = FlowStats {
            packets: 1,
            bytes: 74,
            first_seen_ns: 100,
            last_seen_ns: 100,
            ifindex: 2,
            tcp_flags: 0x02,
            answered: 1,
            pod_ifindex: 9,
            verdict: Verdict::DirectToPod as u8,
            reason: Reason::DirectNewConnection as u8,
            origin: origin::START,
            ..FlowStats::default()
        };
        // The flow's later packets, in the table from the outsider's ACK on.
        let table = FlowStats {
            packets: 5,
            bytes: 400,
            first_seen_ns: 150,
            last_seen_ns: 900,
            ifindex: 2,
            tcp_flags: 0x18,
            delivered: 1,
            pod_ifindex: 9,
            verdict: Verdict::DirectToPod as u8,
            reason: Reason::DirectMidStream as u8,
            origin: origin::MID_STREAM,
            ..FlowStats::default()
        };
        let m = merged(&syn, &table);
        assert_eq!((m.packets, m.bytes), (6, 474));
        assert_eq!((m.first_seen_ns, m.last_seen_ns), (100, 900));
        assert_eq!(m.tcp_flags, 0x1a);
        assert_eq!((m.delivered, m.answered, m.refused), (1, 1, 0));
        // The flow began with the SYN.
        assert_eq!(m.origin, origin::START);
        assert_eq!(m.reason, Reason::DirectNewConnection as u8);
        // A staged SYN alone (not in the table): its own figures.
        let alone = merged(&syn, &FlowStats::default());
        assert_eq!(
            (
                alone.packets,
                alone.first_seen_ns,
                alone.ifindex,
                alone.pod_ifindex
            ),
            (1, 100, 2, 9)
        );
        // Nothing staged: the table as read.
        assert_eq!(merged(&FlowStats::default(), &table), table);
        // A SYN retransmitted after the table's first packet keeps the earliest first seen.
        let late = FlowStats {
            first_seen_ns: 500,
            ..syn
        };
        assert_eq!(merged(&late, &table).first_seen_ns, 150);
    }

    #[test]
    fn the_kernel_view_merges_staged_records_into_the_table() {
        let k = |sport| FlowKey::new([1; 16], [2; 16], sport, 80, 6);
        let rec = |sport, kind, ts_ns| FlowEvent {
            key: k(sport),
            ts_ns,
            ifindex: 4,
            bytes: 74,
            verdict: Verdict::DirectToPod as u8,
            origin: origin::START,
            tcp_flags: 0x02,
            kind,
            ..FlowEvent::default()
        };
        let table = vec![(
            k(1),
            FlowStats {
                packets: 3,
                first_seen_ns: 20,
                last_seen_ns: 30,
                ..FlowStats::default()
            },
        )];
        let records = [
            rec(1, staged::SYN, 10),
            rec(2, staged::SYN, 11),
            rec(2, staged::REFUSED, 12),
            // A mark whose SYN was not read (its ring was full): nothing to mark.
            rec(3, staged::ANSWERED, 13),
        ];
        let view = kernel_view(table, &records);
        assert_eq!(view.len(), 2);
        let (a, b) = (view[&k(1)], view[&k(2)]);
        assert_eq!((a.packets, a.first_seen_ns, a.last_seen_ns), (4, 10, 30));
        assert_eq!(
            (b.packets, b.refused, b.answered, b.pod_ifindex),
            (1, 1, 0, 4)
        );
    }
}
