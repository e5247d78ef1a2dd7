//! `violind stats`: the datapath's counters and forwarding table, read from the pinned
//! maps (so it works whether or not the daemon is running), into the contract's
//! `violin_api::stats::Stats`, shown as a table (`wide`: more columns), JSON or YAML.
use std::collections::BTreeMap;

use anyhow::Result;
use dataplane_common::{
    counters::{action_index, DropReason, HOOKS, XDP_ACTION_NAMES},
    maps::{
        self, FDB_ENTRIES, FDB_EPOCH_LEARNED, FDB_EPOCH_PLACED, MAX_PAIRS, MAX_PAIR_TRAFFIC,
        MAX_PEERS, MAX_ROUTES, MAX_SLOTS, MAX_VNIS, UNDERLAY_SLOT,
    },
};
use violin_api::stats::{
    BoundRow, Counter, EnvironmentRow, FdbRow, PairRow, PeerRow, PeerStats, PortRow, PortStats,
    SlowPathSocket, Stats, VmName,
};

use crate::{
    datapath::Maps,
    host::Paths,
    netdev::{format_mac, ifname},
    pair_counts::{pair_totals, Cells},
    topology::describe_entry,
};

/// `violind stats -o`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    #[default]
    Table,
    /// The table with every column and section (environments, map occupancy).
    Wide,
    Json,
    Yaml,
}

fn counter(c: &dataplane_common::counters::Counter) -> Counter {
    Counter {
        packets: c.packets,
        bytes: c.bytes,
    }
}

/// One port's counters, summed over CPUs.
fn sum_port(values: &[dataplane_common::counters::PortStats]) -> PortStats {
    let mut t = dataplane_common::counters::PortStats::default();
    for v in values {
        t.rx.merge(&v.rx);
        t.tx.merge(&v.tx);
        t.to_slow_path.merge(&v.to_slow_path);
        t.dropped.merge(&v.dropped);
    }
    PortStats {
        rx: counter(&t.rx),
        tx: counter(&t.tx),
        to_slow_path: counter(&t.to_slow_path),
        dropped: counter(&t.dropped),
    }
}

/// One peer's counters, summed over CPUs.
fn sum_peer(values: &[dataplane_common::counters::PeerStats]) -> PeerStats {
    let mut t = dataplane_common::counters::PeerStats::default();
    for v in values {
        t.rx.merge(&v.rx);
        t.tx.merge(&v.tx);
    }
    PeerStats {
        tx: counter(&t.tx),
        rx: counter(&t.rx),
    }
}

fn env_row(envs: &mut BTreeMap<u32, EnvironmentRow>, vni: u32) -> &mut EnvironmentRow {
    envs.entry(vni).or_insert_with(|| EnvironmentRow {
        vni,
        ..Default::default()
    })
}

/// Reads everything `violind stats` shows from the pinned maps.
pub fn read(maps: &Maps, paths: &Paths, underlay: &str) -> Result<Stats> {
    let fdb = fdb(maps);
    let cells = Cells::read(maps);
    let pairs = pairs(maps, cells.as_ref());
    let environments = environments(maps, &pairs);
    let (map_entries, map_capacity) = occupancy(maps, cells.as_ref());
    let ports = ports(maps, underlay)?;
    Ok(Stats {
        bounds: bounds(maps, &ports),
        ports,
        peers: peers(maps)?,
        drops: drops(maps)?,
        actions: actions(maps)?,
        fdb,
        fdb_changes: fdb_changes(maps),
        slow_path: slow_path(paths),
        pairs,
        environments,
        map_entries,
        map_capacity,
        vm_names: crate::follow::load_cached(&paths.share())
            .map(|s| vm_names(&s))
            .unwrap_or_default(),
        vms: crate::libvirt::load_vms(paths),
    })
}

/// The VMs a share names, local and remote.
pub fn vm_names(share: &violin_api::share::Share) -> Vec<VmName> {
    let mut out = Vec::new();
    for e in &share.environments {
        let vni = e.vni.get();
        let local = e
            .vms
            .iter()
            .map(|v| (v.name.as_ref(), v.mac, Some(v.port.to_string())));
        let remote = e.locations.iter().map(|l| (l.name.as_ref(), l.mac, None));
        for (name, mac, port) in local.chain(remote) {
            if let Some(name) = name {
                out.push(VmName {
                    vni,
                    mac: mac.to_string(),
                    name: name.to_string(),
                    port,
                });
            }
        }
    }
    out
}

/// A MAC of environment `vni` as people read it: the VM's name first when the share
/// names it.
fn named(stats: &Stats, vni: u32, mac: &str) -> String {
    match stats.vm_names.iter().find(|n| n.vni == vni && n.mac == mac) {
        Some(n) => format!("{} ({mac})", n.name),
        None => mac.to_string(),
    }
}

/// Each map's entries beside its capacity (the maps' `max_entries`; `cells`: as read
/// from `maps`).
fn occupancy(maps: &Maps, cells: Option<&Cells>) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let counts = [
        ("ports", maps.ports.keys().count(), MAX_SLOTS),
        ("peers", maps.peers.keys().count(), MAX_PEERS),
        ("environments", maps.vnis.keys().count(), MAX_VNIS),
        ("fdb", maps.fdb.keys().count(), FDB_ENTRIES),
        ("routes", maps.routes.keys().count(), MAX_ROUTES),
        ("pair_policies", maps.pairs.keys().count(), MAX_PAIRS),
        (
            "pair_traffic",
            maps.pair_traffic.keys().count(),
            MAX_PAIR_TRAFFIC,
        ),
    ];
    let (cells, cells_capacity) = cells.map_or((0, 0), Cells::held);
    let mut entries = BTreeMap::new();
    let mut capacity = BTreeMap::new();
    for (map, n, max) in counts
        .into_iter()
        .chain([("pair_cells", cells, cells_capacity)])
    {
        entries.insert(map.to_string(), n as u64);
        capacity.insert(map.to_string(), u64::from(max));
    }
    (entries, capacity)
}

/// What the controller's status shows of this host's datapath: drops and map fill.
pub fn health(maps: &Maps) -> Result<violin_api::share::DatapathHealth> {
    let (map_entries, map_capacity) = occupancy(maps, Cells::read(maps).as_ref());
    Ok(violin_api::share::DatapathHealth {
        drops: drops(maps)?,
        map_entries,
        map_capacity,
    })
}

/// The underlay, then the VM ports by slot.
fn ports(maps: &Maps, underlay: &str) -> Result<Vec<PortRow>> {
    let mut ports = vec![PortRow {
        interface: underlay.to_string(),
        vni: None,
        slot: UNDERLAY_SLOT,
        stats: sum_port(&maps.port_stats.get(&UNDERLAY_SLOT, 0)?),
    }];
    let mut port_list: Vec<(u32, maps::PortInfo)> =
        maps.ports.iter().filter_map(|r| r.ok()).collect();
    port_list.sort_by_key(|(_, p)| p.slot);
    for (ifindex, info) in port_list {
        ports.push(PortRow {
            interface: ifname(ifindex).unwrap_or_else(|| format!("ifindex {ifindex}")),
            vni: Some(info.vni),
            slot: info.slot,
            stats: sum_port(&maps.port_stats.get(&info.slot, 0)?),
        });
    }
    Ok(ports)
}

/// Each peer with its counters, by address.
pub fn peers(maps: &Maps) -> Result<Vec<PeerRow>> {
    let mut peer_list: Vec<([u8; 16], maps::PeerInfo)> =
        maps.peers.iter().filter_map(|r| r.ok()).collect();
    peer_list.sort_by_key(|(a, _)| *a);
    let mut peers = Vec::new();
    for (addr, info) in peer_list {
        peers.push(PeerRow {
            address: crate::topology::show_addr(&addr),
            next_hop_mac: (info.resolved != 0).then(|| format_mac(&info.next_hop_mac)),
            stats: sum_peer(&maps.peer_stats.get(&info.slot, 0)?),
        });
    }
    Ok(peers)
}

/// Every drop reason, zeros included.
fn drops(maps: &Maps) -> Result<BTreeMap<String, u64>> {
    let mut drops = BTreeMap::new();
    for r in DropReason::ALL {
        let v: u64 = maps.drops.get(&(r as u32), 0)?.iter().sum();
        drops.insert(r.name().to_string(), v);
    }
    Ok(drops)
}

/// The counts in `FDB_EPOCH`, by writer; none when the maps predate them.
fn fdb_changes(maps: &Maps) -> BTreeMap<String, u64> {
    [("learned", FDB_EPOCH_LEARNED), ("placed", FDB_EPOCH_PLACED)]
        .into_iter()
        .filter_map(|(by, at)| Some((by.to_string(), maps.fdb_epoch.as_ref()?.get(&at, 0).ok()?)))
        .collect()
}

/// Every program's verdicts, keyed `hook/action`.
fn actions(maps: &Maps) -> Result<BTreeMap<String, u64>> {
    let mut actions = BTreeMap::new();
    for (hook, hname) in HOOKS {
        for (a, aname) in XDP_ACTION_NAMES.iter().enumerate() {
            let v: u64 = maps
                .actions
                .get(&action_index(hook, a as u32), 0)?
                .iter()
                .sum();
            actions.insert(format!("{hname}/{aname}"), v);
        }
    }
    Ok(actions)
}

fn fdb(maps: &Maps) -> Vec<FdbRow> {
    let mut fdb: Vec<FdbRow> = maps
        .fdb
        .iter()
        .filter_map(|r| r.ok())
        .map(|(k, e)| FdbRow {
            vni: k.vni,
            mac: format_mac(&k.mac),
            location: describe_entry(&e),
            is_static: e.is_static(),
        })
        .collect();
    fdb.sort_by(|a, b| (a.vni, &a.mac).cmp(&(b.vni, &b.mac)));
    fdb
}

fn pairs(maps: &Maps, cells: Option<&Cells>) -> Vec<PairRow> {
    let mut pairs: Vec<PairRow> = pair_totals(maps, cells)
        .into_iter()
        .map(|(k, traffic)| PairRow {
            vni: k.vni,
            src: format_mac(&k.src),
            dst: format_mac(&k.dst),
            traffic: counter(&traffic),
        })
        .collect();
    pairs.sort_by(|a, b| (a.vni, &a.src, &a.dst).cmp(&(b.vni, &b.src, &b.dst)));
    pairs
}

/// The clock bpf_ktime_get_ns reads (CLOCK_MONOTONIC), in nanoseconds.
pub fn monotonic_ns() -> u64 {
    // SAFETY: an all-zero timespec is valid; clock_gettime writes only into it.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    // SAFETY: `ts` is a live timespec the call fills in.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The bounds in force: bounded pairs, then bounded VMs (by port), with the wait their
/// clocks give a bulk frame sent now.
fn bounds(maps: &Maps, ports: &[PortRow]) -> Vec<BoundRow> {
    let now = monotonic_ns();
    let queue = |sh: &maps::Shaper| sh.tat_ns.saturating_sub(now.saturating_add(sh.burst_ns));
    let mut out: Vec<BoundRow> = maps
        .pairs
        .iter()
        .filter_map(|r| r.ok())
        .filter(|(_, st)| st.flags & maps::PAIR_LIMITED != 0)
        .map(|(k, st)| BoundRow {
            kind: "pair".into(),
            vni: k.vni,
            src: format_mac(&k.src),
            dst: format_mac(&k.dst),
            bytes_per_second: st.shaper.rate,
            queue_ns: queue(&st.shaper),
        })
        .collect();
    out.sort_by(|a, b| (a.vni, &a.src, &a.dst).cmp(&(b.vni, &b.src, &b.dst)));
    for p in ports.iter().filter(|p| p.slot != UNDERLAY_SLOT) {
        let Ok(sh) = maps.vm_bounds.get(&p.slot, 0) else {
            continue;
        };
        if sh.rate > 0 {
            out.push(BoundRow {
                kind: "vm".into(),
                vni: p.vni.unwrap_or(0),
                src: p.interface.clone(),
                dst: String::new(),
                bytes_per_second: sh.rate,
                queue_ns: queue(&sh),
            });
        }
    }
    out
}

/// What each map holds per environment.
fn environments(maps: &Maps, pairs: &[PairRow]) -> Vec<EnvironmentRow> {
    let mut envs: BTreeMap<u32, EnvironmentRow> = BTreeMap::new();
    for (vni, info) in maps.vnis.iter().filter_map(|r| r.ok()) {
        let r = env_row(&mut envs, vni);
        r.served = true;
        r.routed = info.flags & maps::VNI_ROUTED != 0;
    }
    for (_, p) in maps.ports.iter().filter_map(|r| r.ok()) {
        env_row(&mut envs, p.vni).ports += 1;
    }
    for (vni, list) in maps.flood.iter().filter_map(|r| r.ok()) {
        env_row(&mut envs, vni).peers = u64::from(list.npeers);
    }
    for k in maps.fdb.keys().filter_map(|r| r.ok()) {
        env_row(&mut envs, k.vni).fdb += 1;
    }
    for k in maps.routes.keys().filter_map(|r| r.ok()) {
        env_row(&mut envs, k.vni).routes += 1;
    }
    for k in maps.pairs.keys().filter_map(|r| r.ok()) {
        env_row(&mut envs, k.vni).pair_policies += 1;
    }
    for p in pairs {
        env_row(&mut envs, p.vni).pair_traffic += 1;
    }
    envs.into_values().collect()
}

/// The slow path's sockets, as the running daemon last wrote them (none while it is down).
fn slow_path(paths: &Paths) -> Vec<SlowPathSocket> {
    std::fs::read(paths.slow_path_stats())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

/// `stats` in `format`, as `violind stats` prints it.
pub fn show(stats: &Stats, format: Format) -> Result<String> {
    Ok(match format {
        Format::Table => render(stats, false),
        Format::Wide => render(stats, true),
        Format::Json => serde_json::to_string_pretty(stats)? + "\n",
        Format::Yaml => violin_api::output::yaml(&serde_json::to_value(stats)?),
    })
}

fn packets_bytes(c: &Counter) -> String {
    format!("{}/{}", c.packets, c.bytes)
}

/// The table for people; `wide` adds the slots, every counter of the slow path's sockets,
/// the per-environment map contents and each map's occupancy.
fn render(stats: &Stats, wide: bool) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let slot = |v: String| {
        if wide {
            format!(" {v:>5}")
        } else {
            String::new()
        }
    };
    let _ = writeln!(
        s,
        "{:<12} {:>6}{} {:>22} {:>22} {:>18} {:>14}",
        "PORT",
        "VNI",
        slot("SLOT".into()),
        "RX pkts/bytes",
        "TX pkts/bytes",
        "SLOW PATH",
        "DROPPED"
    );
    for p in &stats.ports {
        let vni = p.vni.map_or("-".into(), |v| v.to_string());
        let _ = writeln!(
            s,
            "{:<12} {:>6}{} {:>22} {:>22} {:>18} {:>14}",
            p.interface,
            vni,
            slot(p.slot.to_string()),
            packets_bytes(&p.stats.rx),
            packets_bytes(&p.stats.tx),
            packets_bytes(&p.stats.to_slow_path),
            packets_bytes(&p.stats.dropped)
        );
    }
    let _ = writeln!(
        s,
        "\n{:<16} {:<18} {:>22} {:>22}",
        "PEER", "NEXT HOP", "RX", "TX"
    );
    for p in &stats.peers {
        let _ = writeln!(
            s,
            "{:<16} {:<18} {:>22} {:>22}",
            p.address.to_string(),
            p.next_hop_mac.as_deref().unwrap_or("unresolved"),
            packets_bytes(&p.stats.rx),
            packets_bytes(&p.stats.tx)
        );
    }
    let _ = writeln!(s, "\nXDP ACTIONS");
    for (k, v) in stats.actions.iter().filter(|(_, v)| wide || **v > 0) {
        let _ = writeln!(s, "  {k:<20} {v}");
    }
    let _ = writeln!(s, "\nDROPS");
    let mut any = false;
    for (k, v) in stats.drops.iter().filter(|(_, v)| wide || **v > 0) {
        any = true;
        let _ = writeln!(s, "  {k:<20} {v}");
    }
    if !any {
        let _ = writeln!(s, "  none");
    }
    let _ = writeln!(s, "\nFORWARDING TABLE");
    if !stats.fdb_changes.is_empty() {
        let changes: Vec<String> = stats
            .fdb_changes
            .iter()
            .map(|(by, n)| format!("{by} {n}"))
            .collect();
        let _ = writeln!(s, "  changes: {}", changes.join(", "));
    }
    for e in &stats.fdb {
        let st = if e.is_static { " (static)" } else { "" };
        let mac = named(stats, e.vni, &e.mac);
        let _ = writeln!(s, "  vni {:<8} {mac} -> {}{st}", e.vni, e.location);
    }
    let _ = writeln!(s, "\nVM PAIRS (traffic sent)");
    for p in &stats.pairs {
        let _ = writeln!(
            s,
            "  vni {:<8} {} -> {} {}",
            p.vni,
            named(stats, p.vni, &p.src),
            named(stats, p.vni, &p.dst),
            packets_bytes(&p.traffic)
        );
    }
    if !stats.bounds.is_empty() {
        let _ = writeln!(s, "\nBOUNDS (shaped)");
        for b in &stats.bounds {
            let what = match b.kind.as_str() {
                "vm" => format!("vm on {}", named(stats, b.vni, &b.src)),
                _ => format!(
                    "{} -> {}",
                    named(stats, b.vni, &b.src),
                    named(stats, b.vni, &b.dst)
                ),
            };
            let _ = writeln!(
                s,
                "  vni {:<8} {what:<40} {:>10.1} Mbit/s  queue {:.1} ms",
                b.vni,
                b.bytes_per_second as f64 * 8.0 / 1e6,
                b.queue_ns as f64 / 1e6
            );
        }
    }
    let _ = writeln!(s, "\nSLOW PATH (AF_XDP)");
    for x in &stats.slow_path {
        let _ = write!(
            s,
            "  {:<12} q{} rx {} tx {} tx_no_frame {} dropped {} kernel_rx_dropped {}",
            x.interface, x.queue, x.rx, x.tx, x.tx_no_frame, x.dropped, x.kernel_rx_dropped
        );
        if wide {
            let _ = write!(
                s,
                " kernel_rx_ring_full {} kernel_fill_ring_empty {}",
                x.kernel_rx_ring_full, x.kernel_fill_ring_empty
            );
        }
        s.push('\n');
    }
    if wide {
        render_maps(&mut s, stats);
    }
    s
}

/// The `wide` sections: what the maps hold per environment, and how full each map is.
fn render_maps(s: &mut String, stats: &Stats) {
    use std::fmt::Write;
    let _ = writeln!(
        s,
        "\n{:<10} {:>6} {:>6} {:>6} {:>6} {:>8} {:>8} {:>14} {:>13}",
        "VNI",
        "SERVED",
        "ROUTED",
        "PORTS",
        "PEERS",
        "FDB",
        "ROUTES",
        "PAIR POLICIES",
        "PAIR TRAFFIC"
    );
    for e in &stats.environments {
        let _ = writeln!(
            s,
            "{:<10} {:>6} {:>6} {:>6} {:>6} {:>8} {:>8} {:>14} {:>13}",
            e.vni,
            e.served,
            e.routed,
            e.ports,
            e.peers,
            e.fdb,
            e.routes,
            e.pair_policies,
            e.pair_traffic
        );
    }
    let _ = writeln!(
        s,
        "\n{:<14} {:>10} {:>10} {:>6}",
        "MAP", "ENTRIES", "CAPACITY", "USED"
    );
    for (map, n) in &stats.map_entries {
        let cap = stats.map_capacity.get(map).copied().unwrap_or(0);
        let used = if cap > 0 {
            format!("{:.1}%", *n as f64 * 100.0 / cap as f64)
        } else {
            "-".into()
        };
        let _ = writeln!(s, "{map:<14} {n:>10} {cap:>10} {used:>6}");
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use violin_api::stats::{
        BoundRow, Counter, PairRow, PeerRow, PeerStats, PortRow, PortStats, SlowPathSocket, Stats,
    };

    use super::{show, Format};

    /// A little of everything, for the renderers.
    pub(crate) fn sample() -> Stats {
        let c = Counter {
            packets: 3,
            bytes: 300,
        };
        let port = |interface: &str, vni, slot| PortRow {
            interface: interface.into(),
            vni,
            slot,
            stats: PortStats {
                rx: c,
                tx: c,
                to_slow_path: c,
                dropped: c,
            },
        };
        Stats {
            ports: vec![port("ul0", None, 0), port("vm1", Some(1000), 1)],
            peers: vec![PeerRow {
                address: "10.250.0.2".parse().unwrap(),
                next_hop_mac: None,
                stats: PeerStats { tx: c, rx: c },
            }],
            drops: [("too_big".to_string(), 1)].into(),
            actions: [("port/redirect".to_string(), 2)].into(),
            pairs: vec![PairRow {
                vni: 1000,
                src: "02:00:00:00:01:01".into(),
                dst: "02:00:00:00:02:01".into(),
                traffic: c,
            }],
            bounds: vec![BoundRow {
                kind: "pair".into(),
                vni: 1000,
                src: "02:00:00:00:01:01".into(),
                dst: "02:00:00:00:02:01".into(),
                bytes_per_second: 6_250_000,
                queue_ns: 1_500_000,
            }],
            slow_path: vec![SlowPathSocket {
                interface: "vm1".into(),
                ..Default::default()
            }],
            fdb_changes: [("learned".to_string(), 7), ("placed".to_string(), 1)].into(),
            map_entries: [("fdb".to_string(), 2)].into(),
            map_capacity: [("fdb".to_string(), 65536)].into(),
            vm_names: vec![violin_api::stats::VmName {
                vni: 1000,
                mac: "02:00:00:00:01:01".into(),
                name: "a1".into(),
                port: Some("vm1".into()),
            }],
            vms: vec![violin_api::vm::VmStatus {
                name: "a1".into(),
                state: violin_api::vm::VmState::Running,
                cpu_seconds: 2.5,
                memory_bytes: 128 << 20,
                vcpus: 1,
                ports: vec![],
                max_memory_bytes: 128 << 20,
                memory_used_bytes: None,
                cpu_weight: None,
                cpu_cap: None,
            }],
            ..Stats::default()
        }
    }

    #[test]
    fn every_format_shows_the_stats() {
        let stats = sample();
        let table = show(&stats, Format::Table).unwrap();
        assert!(table.contains("vm1"), "{table}");
        assert!(table.contains("changes: learned 7, placed 1"), "{table}");
        assert!(table.contains("50.0 Mbit/s  queue 1.5 ms"), "{table}");
        // VMs the share names show by name, with the MAC beside it.
        assert!(
            table.contains("a1 (02:00:00:00:01:01) -> 02:00:00:00:02:01"),
            "{table}"
        );
        assert!(!table.contains("CAPACITY"), "{table}");
        let wide = show(&stats, Format::Wide).unwrap();
        assert!(wide.contains(" SLOT "), "{wide}");
        assert!(wide.contains("fdb"), "{wide}");
        assert!(wide.contains("65536"), "{wide}");
        let json: Stats = serde_json::from_str(&show(&stats, Format::Json).unwrap()).unwrap();
        assert_eq!(json, stats);
        let yaml = show(&stats, Format::Yaml).unwrap();
        assert!(yaml.contains("\nports:\n- interface: ul0\n"), "{yaml}");
        assert!(yaml.contains("  port/redirect: 2\n"), "{yaml}");
    }
}
