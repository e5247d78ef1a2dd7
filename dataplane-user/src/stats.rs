//! `violind stats`: the datapath's counters and forwarding table, read from the pinned
//! maps (so it works whether or not the daemon is running), as a table or JSON.
use std::{collections::BTreeMap, net::Ipv4Addr};

use anyhow::Result;
use dataplane_common::{
    counters::{action_index, Counter, DropReason, PeerStats, PortStats, HOOKS, XDP_ACTION_NAMES},
    maps::UNDERLAY_SLOT,
};
use serde::Serialize;

use crate::{
    datapath::Maps,
    host::Paths,
    netdev::{format_mac, ifname},
    slowpath::XskCounters,
    topology::describe_entry,
};

#[derive(Debug, Serialize)]
pub struct PortRow {
    pub interface: String,
    pub vni: Option<u32>,
    pub slot: u32,
    pub stats: PortStats,
}

#[derive(Debug, Serialize)]
pub struct PeerRow {
    pub address: Ipv4Addr,
    pub next_hop_mac: Option<String>,
    pub stats: PeerStats,
}

#[derive(Debug, Serialize)]
pub struct FdbRow {
    pub vni: u32,
    pub mac: String,
    pub location: String,
    #[serde(rename = "static")]
    pub is_static: bool,
}

/// What one VM sent another (VTTIF's local traffic matrix).
#[derive(Debug, Serialize)]
pub struct PairRow {
    pub vni: u32,
    pub src: String,
    pub dst: String,
    pub traffic: Counter,
}

/// What the maps hold for one environment: all zero once it is gone from this host.
#[derive(Debug, Default, Serialize)]
pub struct VniRow {
    pub vni: u32,
    pub served: bool,
    pub routed: bool,
    pub ports: usize,
    pub peers: usize,
    pub fdb: usize,
    pub routes: usize,
    pub pair_policies: usize,
    pub pair_traffic: usize,
}

#[derive(Debug, Serialize)]
pub struct Snapshot {
    pub ports: Vec<PortRow>,
    pub peers: Vec<PeerRow>,
    pub drops: BTreeMap<&'static str, u64>,
    pub actions: BTreeMap<String, u64>,
    pub fdb: Vec<FdbRow>,
    pub slow_path: Vec<XskCounters>,
    pub pairs: Vec<PairRow>,
    pub environments: Vec<VniRow>,
    /// Entries per map, for occupancy.
    pub map_entries: BTreeMap<&'static str, usize>,
}

fn env_row(envs: &mut BTreeMap<u32, VniRow>, vni: u32) -> &mut VniRow {
    envs.entry(vni).or_insert_with(|| VniRow {
        vni,
        ..Default::default()
    })
}

fn sum_port(values: &[PortStats]) -> PortStats {
    let mut t = PortStats::default();
    for v in values {
        t.rx.merge(&v.rx);
        t.tx.merge(&v.tx);
        t.to_slow_path.merge(&v.to_slow_path);
        t.dropped.merge(&v.dropped);
    }
    t
}

fn sum_peer(values: &[PeerStats]) -> PeerStats {
    let mut t = PeerStats::default();
    for v in values {
        t.rx.merge(&v.rx);
        t.tx.merge(&v.tx);
    }
    t
}

impl Snapshot {
    pub fn read(maps: &Maps, paths: &Paths, underlay: &str) -> Result<Snapshot> {
        let mut ports = vec![PortRow {
            interface: underlay.to_string(),
            vni: None,
            slot: UNDERLAY_SLOT,
            stats: sum_port(&maps.port_stats.get(&UNDERLAY_SLOT, 0)?),
        }];
        let mut port_list: Vec<(u32, dataplane_common::maps::PortInfo)> =
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
        let mut peers = Vec::new();
        let mut peer_list: Vec<([u8; 4], dataplane_common::maps::PeerInfo)> =
            maps.peers.iter().filter_map(|r| r.ok()).collect();
        peer_list.sort_by_key(|(a, _)| *a);
        for (addr, info) in peer_list {
            peers.push(PeerRow {
                address: Ipv4Addr::from(addr),
                next_hop_mac: (info.resolved != 0).then(|| format_mac(&info.next_hop_mac)),
                stats: sum_peer(&maps.peer_stats.get(&info.slot, 0)?),
            });
        }
        let mut drops = BTreeMap::new();
        for r in DropReason::ALL {
            let v: u64 = maps.drops.get(&(r as u32), 0)?.iter().sum();
            drops.insert(r.name(), v);
        }
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
        let mut pairs: Vec<PairRow> = maps
            .pair_traffic
            .iter()
            .filter_map(|r| r.ok())
            .map(|(k, per_cpu)| {
                let mut traffic = Counter::default();
                for c in per_cpu.iter() {
                    traffic.merge(c);
                }
                PairRow {
                    vni: k.vni,
                    src: format_mac(&k.src),
                    dst: format_mac(&k.dst),
                    traffic,
                }
            })
            .collect();
        pairs.sort_by(|a, b| (a.vni, &a.src, &a.dst).cmp(&(b.vni, &b.src, &b.dst)));
        let mut envs: BTreeMap<u32, VniRow> = BTreeMap::new();
        for (vni, info) in maps.vnis.iter().filter_map(|r| r.ok()) {
            let r = env_row(&mut envs, vni);
            r.served = true;
            r.routed = info.flags & dataplane_common::maps::VNI_ROUTED != 0;
        }
        for (_, p) in maps.ports.iter().filter_map(|r| r.ok()) {
            env_row(&mut envs, p.vni).ports += 1;
        }
        for (vni, list) in maps.flood.iter().filter_map(|r| r.ok()) {
            env_row(&mut envs, vni).peers = list.npeers as usize;
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
        for p in &pairs {
            env_row(&mut envs, p.vni).pair_traffic += 1;
        }
        let environments: Vec<VniRow> = envs.into_values().collect();
        let mut map_entries = BTreeMap::new();
        map_entries.insert("ports", maps.ports.keys().count());
        map_entries.insert("peers", maps.peers.keys().count());
        map_entries.insert("environments", maps.vnis.keys().count());
        map_entries.insert("fdb", fdb.len());
        map_entries.insert("routes", maps.routes.keys().count());
        map_entries.insert("pair_policies", maps.pairs.keys().count());
        map_entries.insert("pair_traffic", pairs.len());
        let slow_path = std::fs::read(paths.slow_path_stats())
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        Ok(Snapshot {
            ports,
            peers,
            drops,
            actions,
            fdb,
            slow_path,
            pairs,
            environments,
            map_entries,
        })
    }

    pub fn render(&self) -> String {
        use std::fmt::Write;
        let c = |c: &Counter| format!("{}/{}", c.packets, c.bytes);
        let mut s = String::new();
        let _ = writeln!(
            s,
            "{:<12} {:>6} {:>22} {:>22} {:>18} {:>14}",
            "PORT", "VNI", "RX pkts/bytes", "TX pkts/bytes", "SLOW PATH", "DROPPED"
        );
        for p in &self.ports {
            let vni = p.vni.map_or("-".into(), |v| v.to_string());
            let _ = writeln!(
                s,
                "{:<12} {:>6} {:>22} {:>22} {:>18} {:>14}",
                p.interface,
                vni,
                c(&p.stats.rx),
                c(&p.stats.tx),
                c(&p.stats.to_slow_path),
                c(&p.stats.dropped)
            );
        }
        let _ = writeln!(
            s,
            "\n{:<16} {:<18} {:>22} {:>22}",
            "PEER", "NEXT HOP", "RX", "TX"
        );
        for p in &self.peers {
            let _ = writeln!(
                s,
                "{:<16} {:<18} {:>22} {:>22}",
                p.address.to_string(),
                p.next_hop_mac.as_deref().unwrap_or("unresolved"),
                c(&p.stats.rx),
                c(&p.stats.tx)
            );
        }
        let _ = writeln!(s, "\nXDP ACTIONS");
        for (k, v) in self.actions.iter().filter(|(_, v)| **v > 0) {
            let _ = writeln!(s, "  {k:<20} {v}");
        }
        let _ = writeln!(s, "\nDROPS");
        let mut any = false;
        for (k, v) in self.drops.iter().filter(|(_, v)| **v > 0) {
            any = true;
            let _ = writeln!(s, "  {k:<20} {v}");
        }
        if !any {
            let _ = writeln!(s, "  none");
        }
        let _ = writeln!(s, "\nFORWARDING TABLE");
        for e in &self.fdb {
            let st = if e.is_static { " (static)" } else { "" };
            let _ = writeln!(s, "  vni {:<8} {} -> {}{st}", e.vni, e.mac, e.location);
        }
        let _ = writeln!(s, "\nVM PAIRS (traffic sent)");
        for p in &self.pairs {
            let _ = writeln!(
                s,
                "  vni {:<8} {} -> {} {}",
                p.vni,
                p.src,
                p.dst,
                c(&p.traffic)
            );
        }
        let _ = writeln!(s, "\nSLOW PATH (AF_XDP)");
        for x in &self.slow_path {
            let _ = writeln!(
                s,
                "  {:<12} q{} rx {} tx {} tx_no_frame {} dropped {} kernel_rx_dropped {}",
                x.interface, x.queue, x.rx, x.tx, x.tx_no_frame, x.dropped, x.kernel_rx_dropped
            );
        }
        s
    }
}
