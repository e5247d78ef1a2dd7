//! What this host serves (underlay, VM ports, peers), resolved against the kernel, and its
//! reconciliation into the datapath maps.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::{IpAddr, Ipv6Addr},
};

use anyhow::{Context, Result};
use aya::{
    maps::{Array, HashMap, MapData},
    Pod,
};
use dataplane_common::maps::{
    peer_index, port_index, vni_index, FdbEntry, FdbKey, FdbKind, FloodList, HostConfig, PairKey,
    PairState, PeerInfo, PeerSlot, PortIndexEntry, PortInfo, PortSlot, Shaper, StormBucket,
    VniIndexEntry, VniInfo, FLOOD_PEERS, FLOOD_PORTS, MAX_PAIR_CLASS, MAX_PEERS, MAX_QUEUES_PER_IF,
    MAX_SLOTS, PAIR_ALLOWED, PAIR_LIMITED, PORT_CHECK_IP, PORT_CHECK_MAC, PORT_LIMITED,
    PORT_PEER_REDIRECT, PORT_RESTRICTED, PORT_ROUTED, PORT_UNCOUNTED, PORT_VM_BOUNDED, ROUTE_ANY,
    UNDERLAY_SLOT, VM_CLASS_BASE, VM_LEAF_BASE, VNI_HUB, VNI_ROUTED,
};
use dataplane_common::packet::Family;
use dataplane_common::rules::{best, MacMatch};
use tracing::{info, warn};
use violin_api::UnicastMac;

use crate::{
    config::Config, datapath::Maps, netdev::NetDev, netlink::HtbClass, pair_counts::forget_pairs,
};

#[derive(Clone, Debug)]
pub struct Port {
    pub dev: NetDev,
    pub vni: u32,
    pub slot: u32,
}

impl Port {
    pub fn xsk_base(&self) -> u32 {
        xsk_base(self.slot)
    }

    pub fn queues(&self) -> u32 {
        self.dev.rx_queues.min(MAX_QUEUES_PER_IF)
    }
}

#[derive(Clone, Debug)]
pub struct Peer {
    pub addr: IpAddr,
    pub vnis: BTreeSet<u32>,
    pub slot: u32,
    pub next_hop_mac: Option<[u8; 6]>,
}

#[derive(Clone, Debug)]
pub struct Topology {
    pub underlay: NetDev,
    pub underlay_addr: IpAddr,
    pub underlay_mtu: u32,
    pub ports: Vec<Port>,
    pub peers: Vec<Peer>,
    pub debug: bool,
    /// Whether the ports count what each VM pair sends.
    pub count_pairs: bool,
    /// Per-port policy flags and identity, by port name.
    pub port_policies: BTreeMap<String, PortPolicy>,
    /// VM pair policies (directed), bucket state not included.
    pub pairs: BTreeMap<PairKey, PairState>,
    /// Compiled forwarding rules (see [`compile_rules`]).
    pub routes: BTreeMap<PairKey, FdbEntry>,
    /// Environments with forwarding rules on this host.
    pub routed: BTreeSet<u32>,
    /// Environments whose overlay is a star, by VNI: the hub's address.
    pub hubs: BTreeMap<u32, IpAddr>,
    /// Where the controller says each known VM is (static FDB entries, which learning
    /// does not override): local VMs at their ports, other hosts' VMs at those hosts.
    pub placements: BTreeMap<FdbKey, FdbEntry>,
}

/// A migrating VM's side of the move as this host's libvirt last told it, ahead of the
/// controller's word: `Here` once it resumed here, `Away` once it stopped here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Moved {
    Here,
    Away,
}

/// Moves by (VNI, MAC).
pub type Moves = BTreeMap<(u32, [u8; 6]), Moved>;

/// The static FDB entries of `config`'s VMs. A VM leaving this host stays local until it
/// stopped here; a VM arriving stays with its source until it resumed here. A location on
/// a host that is not a peer is reached through the environment's hub when it has one,
/// else left to learning (it is reached through a relay).
fn placements(
    config: &Config,
    ports: &[Port],
    peers: &[Peer],
    moves: &Moves,
) -> BTreeMap<FdbKey, FdbEntry> {
    let mut out = BTreeMap::new();
    for env in &config.environments {
        let vni = env.vni.get();
        let peer = |addr: IpAddr| {
            peers
                .iter()
                .find(|p| p.addr == addr && p.vnis.contains(&vni))
                .map(|p| FdbEntry::remote(map_addr(p.addr), p.slot).pinned())
        };
        let remote = |addr: IpAddr| peer(addr).or_else(|| env.hub.and_then(peer));
        for vm in &env.vms {
            let mac = vm.mac.octets();
            let moved = moves.get(&(vni, mac)).copied();
            let entry = match (vm.leaving_to, vm.arriving_from, moved) {
                (Some(to), _, Some(Moved::Away)) => remote(to),
                (_, Some(from), m) if m != Some(Moved::Here) => remote(from),
                _ => ports
                    .iter()
                    .find(|p| p.dev.name == vm.port.as_str())
                    .map(|p| FdbEntry::local(p.dev.ifindex, p.slot).pinned()),
            };
            if let Some(e) = entry {
                out.insert(FdbKey::new(vni, mac), e);
            }
        }
        for loc in &env.locations {
            if let Some(e) = remote(loc.host) {
                out.insert(FdbKey::new(vni, loc.mac.octets()), e);
            }
        }
    }
    out
}

/// The moves that still concern a migration `config` describes; the others are over.
pub fn current_moves(config: &Config, moves: &Moves) -> Moves {
    moves
        .iter()
        .filter(|((vni, mac), _)| {
            config.environments.iter().any(|e| {
                e.vni.get() == *vni
                    && e.vms.iter().any(|v| {
                        v.mac.octets() == *mac
                            && (v.leaving_to.is_some() || v.arriving_from.is_some())
                    })
            })
        })
        .map(|(k, v)| (*k, *v))
        .collect()
}

/// Compiles an environment's rules into ROUTES entries: the decision of [`best`] for
/// every (source, destination) pair of the addresses the rules name, plus a wildcard
/// standing for every address they do not name (all such addresses match the same
/// rules). Pairs no rule matches are stored too, as "forward as learned", so that the
/// datapath's most-specific-first probe never falls through to a wildcard wrongly.
pub fn compile_rules(
    vni: u32,
    rules: &[(MacMatch, MacMatch, FdbEntry)],
) -> BTreeMap<PairKey, FdbEntry> {
    let mut named: BTreeSet<[u8; 6]> = BTreeSet::new();
    for (s, d, _) in rules {
        named.extend(s.address());
        named.extend(d.address());
    }
    let mut domain: Vec<[u8; 6]> = named.into_iter().collect();
    domain.push(ROUTE_ANY);
    // An address no rule names, standing in for ROUTE_ANY when matching (the zero MAC
    // itself could be named).
    let unnamed = (1u8..=255)
        .map(|b| [0x02, 0xff, 0xff, 0xff, 0xff, b])
        .find(|m| !domain.contains(m))
        .unwrap_or([0x02, 0, 0, 0, 0, 0]);
    let concrete = |m: &[u8; 6]| if *m == ROUTE_ANY { unnamed } else { *m };
    let mut out = BTreeMap::new();
    for src in &domain {
        for dst in &domain {
            let decision = best(
                rules.iter().map(|(s, d, _)| (*s, *d)),
                &concrete(src),
                &concrete(dst),
            )
            .map_or(FdbEntry::no_rule(), |i| rules[i].2);
            out.insert(PairKey::new(vni, *src, *dst), decision);
        }
    }
    out
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PortPolicy {
    pub flags: u32,
    pub mac: [u8; 6],
    pub ip: [u8; 4],
    /// Storm control of the port's floods (its environment's rate).
    pub storm: StormBucket,
    /// The aggregate bound of the port's VM (PORT_VM_BOUNDED).
    pub vm_bound: Shaper,
}

/// The HTB tree one device needs for shaping.
#[derive(Clone, Debug, PartialEq)]
pub struct Shaping {
    pub device: String,
    pub ifindex: u32,
    /// Added to each packet's length (the outer headers off, on the underlay).
    pub overhead: i32,
    pub classes: Vec<HtbClass>,
}

/// A bound's shaper: Mbit/s to bytes per second, KiB to bytes.
fn shaper(limit: &violin_api::Limit) -> Shaper {
    // At least a byte per second: a rate that rounds to nothing would read as no bound.
    Shaper::new(
        ((limit.rate_mbit.get() * 1e6 / 8.0) as u64).max(1),
        u64::from(limit.burst_kib.get()) * 1024,
    )
}

/// Port flags and pair entries an environment's policies ask for.
fn policies(config: &Config) -> (BTreeMap<String, PortPolicy>, BTreeMap<PairKey, PairState>) {
    let mut ports = BTreeMap::new();
    let mut pairs: BTreeMap<PairKey, PairState> = BTreeMap::new();
    for env in &config.environments {
        let mut env_flags = 0;
        if !env.allowed_pairs.is_empty() {
            env_flags |= PORT_RESTRICTED;
        }
        if !env.limits.is_empty() {
            env_flags |= PORT_LIMITED;
        }
        let (pps, burst) = env.storm();
        for port in &env.ports {
            let mut p = PortPolicy {
                flags: env_flags,
                storm: StormBucket::new(pps, burst),
                ..Default::default()
            };
            if let Some(vm) = env.vms.iter().find(|v| &v.port == port) {
                p.flags |= PORT_CHECK_MAC;
                p.mac = vm.mac.octets();
                if let Some(ip) = vm.ip {
                    p.flags |= PORT_CHECK_IP;
                    p.ip = ip.octets();
                }
                if let Some(limit) = &vm.limit {
                    p.flags |= PORT_VM_BOUNDED;
                    p.vm_bound = shaper(limit);
                }
            }
            ports.insert(port.to_string(), p);
        }
        let vni = env.vni.get();
        let both = |pair: &[UnicastMac; 2]| {
            let (a, b) = (pair[0].octets(), pair[1].octets());
            [PairKey::new(vni, a, b), PairKey::new(vni, b, a)]
        };
        for pair in &env.allowed_pairs {
            for k in both(pair) {
                pairs.entry(k).or_default().flags |= PAIR_ALLOWED;
            }
        }
        for limit in &env.limits {
            for k in both(&limit.pair) {
                let st = pairs.entry(k).or_default();
                st.flags |= PAIR_LIMITED;
                st.shaper = shaper(&limit.limit());
            }
        }
    }
    (ports, pairs)
}

/// The configured ports that exist, each in the slot it held before (counters survive),
/// new ones in the lowest free slots. A port that does not exist yet (a guest's tap exists
/// only while its domain runs) is attached when the kernel announces it; it does not fail
/// the rest.
fn resolve_ports(config: &Config, maps: &Maps) -> Result<Vec<Port>> {
    let old: BTreeMap<u32, u32> = maps
        .ports
        .iter()
        .filter_map(|r| r.ok())
        .map(|(ifindex, p)| (ifindex, p.slot))
        .collect();
    let mut used: BTreeSet<u32> = BTreeSet::from([UNDERLAY_SLOT]);
    let mut ports = Vec::new();
    let mut pending = Vec::new();
    for (i, (name, vni)) in config.ports().enumerate() {
        let absent = || {
            warn!(port = %name, "VM port absent; it is attached when it appears");
        };
        if crate::netdev::ifindex(name).is_none() {
            absent();
            continue;
        }
        let dev = match NetDev::query(name) {
            Ok(dev) => dev,
            // Gone between the two looks: absent too.
            Err(_) if crate::netdev::ifindex(name).is_none() => {
                absent();
                continue;
            }
            Err(e) => return Err(e.context(format!("port {i} ({name})"))),
        };
        match old.get(&dev.ifindex) {
            Some(&slot) if used.insert(slot) => ports.push(Port { dev, vni, slot }),
            _ => pending.push((dev, vni)),
        }
    }
    for (dev, vni) in pending {
        let slot = lowest_free(&used, 1, MAX_SLOTS).context("out of port slots")?;
        used.insert(slot);
        ports.push(Port { dev, vni, slot });
    }
    Ok(ports)
}

/// The configured peers, each in the slot it held before, with the next hop it had.
fn resolve_peers(config: &Config, maps: &Maps) -> Result<Vec<Peer>> {
    let old: BTreeMap<[u8; 16], PeerInfo> = maps.peers.iter().filter_map(|r| r.ok()).collect();
    let mut used = BTreeSet::new();
    let mut peers = Vec::new();
    let mut pending = Vec::new();
    for p in &config.peers {
        let vnis = p.vnis.iter().map(|v| v.get()).collect();
        match old.get(&map_addr(p.address)) {
            Some(o) if used.insert(o.slot) => peers.push(Peer {
                addr: p.address,
                vnis,
                slot: o.slot,
                next_hop_mac: (o.resolved != 0).then_some(o.next_hop_mac),
            }),
            _ => pending.push((p.address, vnis)),
        }
    }
    for (addr, vnis) in pending {
        let slot = lowest_free(&used, 0, MAX_PEERS).context("out of peer slots")?;
        used.insert(slot);
        peers.push(Peer {
            addr,
            vnis,
            slot,
            next_hop_mac: None,
        });
    }
    Ok(peers)
}

/// An environment's rules with their targets resolved to datapath entries. A rule whose
/// port is absent still decides for the frames it matches (so no weaker rule takes them):
/// they go as learned until the port appears.
fn targets(
    env: &crate::config::Environment,
    i: usize,
    ports: &[Port],
    peers: &[Peer],
) -> Result<Vec<(MacMatch, MacMatch, FdbEntry)>> {
    let mut compiled = Vec::new();
    for (k, r) in env.rules.iter().enumerate() {
        let field = format!("environment[{i}].rule[{k}]");
        let target = match (&r.edge, &r.interface) {
            (Some(addr), _) => {
                let peer = peers
                    .iter()
                    .find(|p| p.addr == *addr)
                    .with_context(|| format!("{field}.edge: {addr} is not a peer"))?;
                FdbEntry::remote(map_addr(*addr), peer.slot)
            }
            (None, Some(name)) => match ports.iter().find(|p| p.dev.name == name.as_str()) {
                Some(port) => FdbEntry::local(port.dev.ifindex, port.slot),
                None => {
                    warn!(rule = %field, port = %name, "rule's port absent; its frames go as learned");
                    FdbEntry::no_rule()
                }
            },
            (None, None) => anyhow::bail!("{field}: no edge or interface"),
        };
        compiled.push((r.src.0, r.dst.0, target));
    }
    Ok(compiled)
}

/// Makes `map` hold exactly `want`: writes each entry whose value is missing or not
/// `same` as wanted, and removes every key not wanted. One reconciliation for every
/// map the topology owns.
fn reconcile<K, V>(
    map: &mut HashMap<MapData, K, V>,
    want: &BTreeMap<K, V>,
    same: impl Fn(&V, &V) -> bool,
) -> Result<()>
where
    K: Pod + Ord,
    V: Pod,
{
    for (key, value) in want {
        let current = map.get(key, 0).ok();
        if !current.is_some_and(|have| same(&have, value)) {
            map.insert(*key, *value, 0)?;
        }
    }
    let stale: Vec<K> = map
        .keys()
        .filter_map(|k| k.ok())
        .filter(|k| !want.contains_key(k))
        .collect();
    for k in &stale {
        map.remove(k)?;
    }
    Ok(())
}

/// The positions of a direct-mapped index that may hold an entry now: those its hash
/// map's keys give, after an `apply` that wrote both whole (`clean`); else every position
/// that holds one, read from the index itself, so that an entry whose key the hash map
/// lost (a daemon stopped between the two writes, an `apply` that failed between them,
/// a daemon that kept no index) is emptied too. Reading a whole index costs thousands
/// of system calls, too many for every reconfiguration.
fn held<K: Pod, V: Pod, E: Slot>(
    clean: bool,
    hash: &HashMap<MapData, K, V>,
    at: &impl Fn(&K) -> u32,
    index: &Array<MapData, E>,
) -> Result<BTreeSet<u32>> {
    if clean {
        let keys = hash.keys().collect::<Result<Vec<K>, _>>()?;
        return Ok(keys.iter().map(at).collect());
    }
    let mut out = BTreeSet::new();
    for (at, v) in index.iter().enumerate() {
        if v? != E::default() {
            out.insert(at as u32);
        }
    }
    Ok(out)
}

/// [`reconcile`] (with `PartialEq`) of a hash map with a direct-mapped index in front of
/// it, and the index after it: each position `at` gives to the entry `entry` makes of
/// the first key wanted there, every other position it held emptied.
fn reconcile_indexed<K, V, E>(
    clean: bool,
    (hash, index_map): (&mut HashMap<MapData, K, V>, &mut Array<MapData, E>),
    want: &BTreeMap<K, V>,
    at: impl Fn(&K) -> u32,
    entry: impl Fn(&K, &V) -> E,
) -> Result<()>
where
    K: Pod + Ord,
    V: Pod + PartialEq,
    E: Slot,
{
    let old = held(clean, hash, &at, index_map)?;
    reconcile(hash, want, PartialEq::eq)?;
    reconcile_slots(index_map, old, &index(want, at, entry))
}

/// A direct-mapped index of `want`: each position to the entry of the first key (in key
/// order) that it takes; the keys that find their position taken stay in the hash map
/// alone.
fn index<K, V, E>(
    want: &BTreeMap<K, V>,
    at: impl Fn(&K) -> u32,
    entry: impl Fn(&K, &V) -> E,
) -> BTreeMap<u32, E> {
    let mut out = BTreeMap::new();
    for (k, v) in want {
        out.entry(at(k)).or_insert_with(|| entry(k, v));
    }
    out
}

/// What an array entry the programs check before use holds: a value and its key, which
/// they compare with the one they look for. The empty key (all zero) matches no lookup.
trait Slot: Pod + Default + PartialEq {
    /// The entry with its key emptied and its value kept.
    fn vacant(&self) -> Self;
}

impl Slot for PortSlot {
    fn vacant(&self) -> Self {
        PortSlot {
            ifindex: 0,
            ..*self
        }
    }
}

impl Slot for PeerSlot {
    fn vacant(&self) -> Self {
        PeerSlot {
            addr: [0; 16],
            ..*self
        }
    }
}

impl Slot for PortIndexEntry {
    fn vacant(&self) -> Self {
        PortIndexEntry {
            ifindex: 0,
            ..*self
        }
    }
}

impl Slot for VniIndexEntry {
    fn vacant(&self) -> Self {
        VniIndexEntry { tag: 0, ..*self }
    }
}

/// Writes the entries of an array indexed by slot or position that `old` (those held
/// before) or `want` name: `want`'s value, else the empty default, each only where it
/// changed.
fn reconcile_slots<V: Slot>(
    map: &mut Array<MapData, V>,
    old: BTreeSet<u32>,
    want: &BTreeMap<u32, V>,
) -> Result<()> {
    for slot in old.into_iter().chain(want.keys().copied()) {
        set_slot(map, slot, want.get(&slot).copied().unwrap_or_default())?;
    }
    Ok(())
}

/// Writes one entry if it changed, so that a program reading it meanwhile never pairs a
/// key with a value that is not wholly that key's. The kernel copies an element in no
/// promised order, so the value changes only while the key is empty: the key is emptied
/// (the old value stays), the new value goes in behind the empty key, then the key.
/// The programs check the key (the port lookup before and after copying the value).
fn set_slot<V: Slot>(map: &mut Array<MapData, V>, slot: u32, value: V) -> Result<()> {
    let have = map.get(&slot, 0).ok();
    if have == Some(value) {
        return Ok(());
    }
    if let Some(h) = have.filter(|h| *h != V::default()) {
        map.set(slot, h.vacant(), 0)?;
    }
    if value != V::default() {
        map.set(slot, value.vacant(), 0)?;
    }
    map.set(slot, value, 0)?;
    Ok(())
}

/// XSKMAP index of queue 0 of the interface in `slot`.
pub const fn xsk_base(slot: u32) -> u32 {
    slot * MAX_QUEUES_PER_IF
}

/// Gives each bounded pair its HTB class: the one it had in the pinned map (so a bound
/// that changes keeps its queue and its flows), new pairs the lowest free.
fn assign_classes(pairs: &mut BTreeMap<PairKey, PairState>, maps: &Maps) -> Result<()> {
    let old: BTreeMap<PairKey, u32> = maps
        .pairs
        .iter()
        .filter_map(|r| r.ok())
        .map(|(k, st)| (k, st.class))
        .collect();
    let mut used = BTreeSet::new();
    let mut pending = Vec::new();
    for (k, st) in pairs
        .iter_mut()
        .filter(|(_, st)| st.flags & PAIR_LIMITED != 0)
    {
        match old.get(k) {
            Some(&c) if (1..=MAX_PAIR_CLASS).contains(&c) && used.insert(c) => st.class = c,
            _ => pending.push(*k),
        }
    }
    for k in pending {
        let c = lowest_free(&used, 1, MAX_PAIR_CLASS + 1)
            .context("out of HTB classes for bounded pairs")?;
        used.insert(c);
        pairs.get_mut(&k).expect("listed").class = c;
    }
    Ok(())
}

fn lowest_free(used: &BTreeSet<u32>, from: u32, limit: u32) -> Option<u32> {
    (from..limit).find(|s| !used.contains(s))
}

impl Topology {
    /// Resolves the configuration against this namespace's interfaces. Slots already held
    /// in the pinned maps are kept, so counters survive restarts and reloads.
    pub fn resolve(config: &Config, maps: &Maps, moves: &Moves) -> Result<Topology> {
        let underlay = NetDev::query(&config.underlay.interface).context("underlay.interface")?;
        let underlay_mtu = config.underlay.mtu.unwrap_or(underlay.mtu);
        let addrs = crate::netdev::ip_addresses(&underlay.name)?;
        if !addrs.contains(&config.underlay.address) {
            warn!(
                iface = %underlay.name,
                address = %config.underlay.address,
                "underlay.address is not assigned to the underlay interface"
            );
        }
        let ports = resolve_ports(config, maps)?;
        let peers = resolve_peers(config, maps)?;
        let (mut port_policies, mut pairs) = policies(config);
        assign_classes(&mut pairs, maps)?;
        let mut routes = BTreeMap::new();
        let mut routed = BTreeSet::new();
        for (i, env) in config.environments.iter().enumerate() {
            if env.rules.is_empty() {
                continue;
            }
            let compiled = targets(env, i, &ports, &peers)?;
            routes.extend(compile_rules(env.vni.get(), &compiled));
            routed.insert(env.vni.get());
            for port in &env.ports {
                port_policies.entry(port.to_string()).or_default().flags |= PORT_ROUTED;
            }
        }
        let placements = placements(config, &ports, &peers, moves);
        let hubs: BTreeMap<u32, IpAddr> = config
            .environments
            .iter()
            .filter_map(|e| Some((e.vni.get(), e.hub?)))
            .collect();
        for (&vni, &hub) in &hubs {
            let spokes = peers.iter().filter(|p| p.vnis.contains(&vni)).count();
            if hub == config.underlay.address && spokes > FLOOD_PEERS {
                warn!(
                    vni,
                    spokes,
                    "this hub relays floods (ARP) to its first {FLOOD_PEERS} hosts only in TC mode"
                );
            }
        }
        Ok(Topology {
            hubs,
            placements,
            underlay,
            underlay_addr: config.underlay.address,
            underlay_mtu,
            ports,
            peers,
            debug: config.debug_datapath,
            count_pairs: config.count_vm_pairs,
            port_policies,
            pairs,
            routes,
            routed,
        })
    }

    pub fn host_config(&self) -> HostConfig {
        HostConfig {
            underlay_ifindex: self.underlay.ifindex,
            underlay_addr: map_addr(self.underlay_addr),
            underlay_mac: self.underlay.mac,
            v6: self.underlay_addr.is_ipv6() as u8,
            _pad: 0,
            underlay_mtu: self.underlay_mtu,
            underlay_xsk_base: xsk_base(UNDERLAY_SLOT),
            underlay_queues: self.underlay.rx_queues.min(MAX_QUEUES_PER_IF),
            debug: self.debug as u32,
        }
    }

    /// Environments this host serves: those with a local port, and those it only relays
    /// by its forwarding rules or as their hub.
    pub fn vnis(&self) -> BTreeSet<u32> {
        let mut v: BTreeSet<u32> = self.ports.iter().map(|p| p.vni).collect();
        v.extend(self.routed.iter().copied());
        v.extend(self.hubs.keys().copied().filter(|&vni| self.is_hub(vni)));
        v
    }

    /// The underlay's address family: what encapsulation costs and which header it takes.
    pub fn family(&self) -> Family {
        match self.underlay_addr {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// Whether this host is environment `vni`'s hub.
    pub fn is_hub(&self, vni: u32) -> bool {
        self.hubs.get(&vni) == Some(&self.underlay_addr)
    }

    /// The peers a flood of `vni` from a local port goes to: the hub alone in a star
    /// (it relays), else every peer serving the environment.
    pub fn flood_peers(&self, vni: u32) -> impl Iterator<Item = &Peer> {
        let hub = self.hubs.get(&vni).filter(|&&h| h != self.underlay_addr);
        self.peers_serving(vni)
            .filter(move |p| hub.is_none_or(|h| p.addr == *h))
    }

    pub fn peer_info(peer: &Peer) -> PeerInfo {
        PeerInfo {
            next_hop_mac: peer.next_hop_mac.unwrap_or_default(),
            resolved: peer.next_hop_mac.is_some() as u8,
            v6: peer.addr.is_ipv6() as u8,
            slot: peer.slot,
        }
    }

    /// Makes the maps say exactly what this topology says. Entries for ports, peers and
    /// environments that are gone are removed, learned addresses pointing at them too.
    pub fn apply(&self, maps: &mut Maps) -> Result<()> {
        // Whether the last apply wrote the indexes whole (see `held`); not this one until
        // it has.
        let clean = std::mem::take(&mut maps.indexes_clean);
        maps.config.set(0, self.host_config(), 0)?;

        let mut tx: BTreeSet<u32> = self.ports.iter().map(|p| p.dev.ifindex).collect();
        tx.insert(self.underlay.ifindex);
        for &ifindex in &tx {
            maps.tx_ports.insert(ifindex, ifindex, None, 0)?;
        }
        let stale: Vec<u32> = maps.tx_ports.keys().filter_map(|k| k.ok()).collect();
        for k in stale.into_iter().filter(|k| !tx.contains(k)) {
            maps.tx_ports.remove(k)?;
        }

        let vnis = self.vnis();
        let vni_infos = vnis
            .iter()
            .map(|&vni| {
                let mut flags = 0;
                if self.routed.contains(&vni) {
                    flags |= VNI_ROUTED;
                }
                if self.is_hub(vni) {
                    flags |= VNI_HUB;
                }
                (vni, VniInfo { flags })
            })
            .collect();
        reconcile_indexed(
            clean,
            (&mut maps.vnis, &mut maps.vni_index),
            &vni_infos,
            |&v| vni_index(v),
            |&v, &i| VniIndexEntry::new(v, i),
        )?;
        let port_infos: BTreeMap<u32, PortInfo> = self
            .ports
            .iter()
            .map(|p| (p.dev.ifindex, self.port_info(p)))
            .collect();
        let old_port_slots = maps
            .ports
            .iter()
            .filter_map(|r| r.ok())
            .map(|(_, p)| p.slot);
        let old_port_slots: BTreeSet<u32> = old_port_slots.collect();
        reconcile_indexed(
            clean,
            (&mut maps.ports, &mut maps.port_index),
            &port_infos,
            |&i| port_index(i),
            |&ifindex, &info| PortIndexEntry { ifindex, info },
        )?;
        let port_slots = port_infos
            .iter()
            .map(|(&ifindex, p)| {
                let flags = p.flags;
                (p.slot, PortSlot { ifindex, flags })
            })
            .collect();
        reconcile_slots(&mut maps.port_slots, old_port_slots, &port_slots)?;
        let peer_infos: BTreeMap<[u8; 16], PeerInfo> = self
            .peers
            .iter()
            .map(|p| (map_addr(p.addr), Self::peer_info(p)))
            .collect();
        let old_peer_slots = maps
            .peers
            .iter()
            .filter_map(|r| r.ok())
            .map(|(_, p)| p.slot);
        let old_peer_slots: BTreeSet<u32> = old_peer_slots.collect();
        reconcile_indexed(
            clean,
            (&mut maps.peers, &mut maps.peer_index),
            &peer_infos,
            peer_index,
            |&addr, &info| PeerSlot { addr, info },
        )?;
        let peer_slots = peer_infos
            .iter()
            .map(|(&addr, &info)| (info.slot, PeerSlot { addr, info }))
            .collect();
        reconcile_slots(&mut maps.peer_slots, old_peer_slots, &peer_slots)?;
        // A bound that did not change keeps its clock; one that changed carries it over
        // (its queue in the qdisc stays too), held to the new horizon.
        let now = crate::stats::monotonic_ns();
        let mut pairs = self.pairs.clone();
        for (k, want) in pairs.iter_mut() {
            if let Ok(have) = maps.pairs.get(k, 0) {
                want.shaper.carry_clock(&have.shaper, now);
            }
        }
        reconcile(&mut maps.pairs, &pairs, |have, want| {
            have.flags == want.flags
                && have.class == want.class
                && have.shaper.same_bound(&want.shaper)
        })?;
        reconcile(&mut maps.routes, &self.routes, PartialEq::eq)?;
        self.apply_storm(maps)?;
        let floods = vnis
            .iter()
            .map(|&vni| (vni, self.flood_list(vni)))
            .collect();
        reconcile(&mut maps.flood, &floods, PartialEq::eq)?;
        let peer_addrs: BTreeSet<[u8; 16]> = peer_infos.keys().copied().collect();
        // Each step's changes are counted as soon as it ends: until then the datapath's
        // memories of the table may still serve what it removed or replaced.
        let flushed = self.flush_learned(maps, &vnis, &peer_addrs);
        if flushed > 0 {
            maps.fdb_changed()?;
        }
        let placed = self.place(maps);
        // A placement that failed half-way may have written some.
        if !matches!(placed, Ok(0)) {
            maps.fdb_changed()?;
        }
        placed?;
        maps.indexes_clean = true;
        info!(
            ports = self.ports.len(),
            peers = self.peers.len(),
            environments = vnis.len(),
            flushed_fdb = flushed,
            routes = self.routes.len(),
            "datapath maps reconciled"
        );
        Ok(())
    }

    /// Removes what the datapath learned or counted about things no longer here: traffic
    /// counters of environments and VMs gone, addresses behind ports or peers gone, and
    /// static placements no longer wanted (one pass over the forwarding table for all of
    /// them).
    /// Returns how many addresses went.
    fn flush_learned(
        &self,
        maps: &mut Maps,
        vnis: &BTreeSet<u32>,
        peers: &BTreeSet<[u8; 16]>,
    ) -> usize {
        let port_vni: BTreeMap<u32, u32> =
            self.ports.iter().map(|p| (p.dev.ifindex, p.vni)).collect();
        let mut dead: Vec<FdbKey> = Vec::new();
        // The addresses behind local ports that stay: the senders whose pairs may keep
        // their counting cells.
        let mut local: BTreeSet<(u32, [u8; 6])> = BTreeSet::new();
        for (k, e) in maps.fdb.iter().filter_map(|r| r.ok()) {
            if !vnis.contains(&k.vni)
                || (e.kind() == Some(FdbKind::Local) && port_vni.get(&e.ifindex) != Some(&k.vni))
                || (e.kind() == Some(FdbKind::Remote) && !peers.contains(&e.peer))
                || (e.is_static() && !self.placements.contains_key(&k))
            {
                dead.push(k);
            } else if e.kind() == Some(FdbKind::Local) {
                local.insert((k.vni, k.mac));
            }
        }
        for k in &dead {
            let _ = maps.fdb.remove(k);
        }
        forget_pairs(maps, vnis, &local);
        dead.len()
    }

    /// Writes the static entries that changed (`flush_learned` removed those no longer
    /// wanted); learned entries are the datapath's and stay.
    /// Returns how many it wrote.
    fn place(&self, maps: &mut Maps) -> Result<usize> {
        let mut written = 0;
        for (k, e) in &self.placements {
            if maps.fdb.get(k, 0).ok() != Some(*e) {
                maps.fdb.insert(*k, *e, 0)?;
                written += 1;
            }
        }
        Ok(written)
    }

    /// Each port's storm-control bucket and its VM's bound, in its slot; one whose rate
    /// did not change keeps its state (a running stream is not given a fresh burst).
    fn apply_storm(&self, maps: &mut Maps) -> Result<()> {
        for p in &self.ports {
            let want = self
                .port_policies
                .get(&p.dev.name)
                .cloned()
                .unwrap_or_default();
            let have = maps.storm.get(&p.slot, 0)?;
            if have.interval_ns != want.storm.interval_ns || have.burst_ns != want.storm.burst_ns {
                maps.storm.set(p.slot, want.storm, 0)?;
            }
            let have = maps.vm_bounds.get(&p.slot, 0)?;
            if !have.same_bound(&want.vm_bound) {
                let mut bound = want.vm_bound;
                bound.carry_clock(&have, crate::stats::monotonic_ns());
                maps.vm_bounds.set(p.slot, bound, 0)?;
            }
        }
        Ok(())
    }

    fn port_info(&self, p: &Port) -> PortInfo {
        let policy = self
            .port_policies
            .get(&p.dev.name)
            .cloned()
            .unwrap_or_default();
        PortInfo {
            vni: p.vni,
            slot: p.slot,
            xsk_base: p.xsk_base(),
            queues: p.queues(),
            flags: policy.flags
                | if p.dev.peer_redirect {
                    PORT_PEER_REDIRECT
                } else {
                    0
                }
                | if self.count_pairs { 0 } else { PORT_UNCOUNTED },
            mac: policy.mac,
            _pad: [0; 2],
            ip: policy.ip,
        }
    }

    /// The devices bounded traffic leaves by, each with the HTB tree that shapes it: the
    /// underlay when any port here has a bound (each bounded VM's class over its pairs'
    /// classes and a leaf for the rest), and the ports of environments with bounded pairs,
    /// for pairs on one host (their classes alone: a VM's bound is on what leaves the
    /// host).
    pub fn shaping(&self) -> Vec<Shaping> {
        let policy = |p: &Port| {
            self.port_policies
                .get(&p.dev.name)
                .cloned()
                .unwrap_or_default()
        };
        // The queue a leaf needs: twice what the datapath's clock lets wait, so the
        // clock, which counts its drops, always drops first.
        let leaf = |parent: u32, minor: u32, rate: u64, ceil: u64, sh: &Shaper| HtbClass {
            parent,
            minor,
            rate,
            ceil,
            burst: sh.burst_bytes(),
            queue: Some(2 * sh.horizon_bytes() + 64 * 1024),
        };
        let bounded: Vec<(&PairKey, &PairState)> = self
            .pairs
            .iter()
            .filter(|(_, st)| st.flags & PAIR_LIMITED != 0)
            .collect();
        let flat: Vec<HtbClass> = bounded
            .iter()
            .map(|(_, st)| leaf(0, st.class, st.shaper.rate, st.shaper.rate, &st.shaper))
            .collect();
        let mut out: Vec<Shaping> = self
            .ports
            .iter()
            .filter(|p| policy(p).flags & PORT_LIMITED != 0)
            .map(|p| Shaping {
                device: p.dev.name.clone(),
                ifindex: p.dev.ifindex,
                overhead: 0,
                classes: flat.clone(),
            })
            .collect();
        let vms: Vec<(&Port, PortPolicy)> = self
            .ports
            .iter()
            .map(|p| (p, policy(p)))
            .filter(|(_, pol)| pol.flags & PORT_VM_BOUNDED != 0)
            .collect();
        if out.is_empty() && vms.is_empty() {
            return out;
        }
        let mut tree = Vec::new();
        let mut under_vm = BTreeSet::new();
        for (port, pol) in &vms {
            let vm = &pol.vm_bound;
            let mine: Vec<&(&PairKey, &PairState)> = bounded
                .iter()
                .filter(|(k, _)| k.vni == port.vni && k.src == pol.mac)
                .collect();
            // The children's guaranteed rates add up to the VM's, so that no child sends
            // past the VM's bound on its own guarantee; each may borrow up to its ceiling.
            let share = (vm.rate / (mine.len() as u64 + 1)).max(1);
            let parent = VM_CLASS_BASE + port.slot;
            tree.push(HtbClass {
                parent: 0,
                minor: parent,
                rate: vm.rate,
                ceil: vm.rate,
                burst: vm.burst_bytes(),
                queue: None,
            });
            tree.push(leaf(parent, VM_LEAF_BASE + port.slot, share, vm.rate, vm));
            for (k, st) in mine {
                under_vm.insert(**k);
                let ceil = st.shaper.rate.min(vm.rate);
                let tighter = if st.shaper.rate <= vm.rate {
                    &st.shaper
                } else {
                    vm
                };
                tree.push(leaf(parent, st.class, share.min(ceil), ceil, tighter));
            }
        }
        for (k, st) in &bounded {
            if !under_vm.contains(*k) {
                tree.push(leaf(
                    0,
                    st.class,
                    st.shaper.rate,
                    st.shaper.rate,
                    &st.shaper,
                ));
            }
        }
        out.push(Shaping {
            device: self.underlay.name.clone(),
            ifindex: self.underlay.ifindex,
            overhead: -(self.family().overhead() as i32),
            classes: tree,
        });
        out
    }

    /// The replication list for VM-port broadcasts of `vni` (TC mode).
    fn flood_list(&self, vni: u32) -> FloodList {
        let mut list = FloodList::default();
        for p in self.ports_in(vni).take(FLOOD_PORTS) {
            list.ports[list.nports as usize] = p.dev.ifindex;
            list.nports += 1;
        }
        for p in self.flood_peers(vni).take(FLOOD_PEERS) {
            list.peers[list.npeers as usize] = map_addr(p.addr);
            list.npeers += 1;
        }
        list
    }

    /// Updates one peer's next hop in the map (after neighbour resolution).
    pub fn publish_peer(maps: &mut Maps, peer: &Peer) -> Result<()> {
        let (addr, info) = (map_addr(peer.addr), Self::peer_info(peer));
        maps.peers.insert(addr, info, 0)?;
        set_slot(&mut maps.peer_slots, peer.slot, PeerSlot { addr, info })?;
        // Its index entry, unless another peer holds that position (as `apply` left it).
        let at = peer_index(&addr);
        let have = maps.peer_index.get(&at, 0).unwrap_or_default();
        if have == PeerSlot::default() || have.addr == addr {
            set_slot(&mut maps.peer_index, at, PeerSlot { addr, info })?;
        }
        Ok(())
    }

    /// Local ports of an environment.
    pub fn ports_in(&self, vni: u32) -> impl Iterator<Item = &Port> {
        self.ports.iter().filter(move |p| p.vni == vni)
    }

    /// Remote hosts serving an environment whose next hop is known.
    pub fn peers_serving(&self, vni: u32) -> impl Iterator<Item = &Peer> {
        self.peers.iter().filter(move |p| p.vnis.contains(&vni))
    }
}

/// How the maps hold an underlay address: 16 bytes, IPv4-mapped for IPv4.
pub fn map_addr(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(a) => a.to_ipv6_mapped().octets(),
        IpAddr::V6(a) => a.octets(),
    }
}

/// An underlay address read back from the maps, in the family it was written in.
pub fn show_addr(a: &[u8; 16]) -> IpAddr {
    Ipv6Addr::from(*a).to_canonical()
}

/// A learned or static location, for `violind stats`.
pub fn describe_entry(e: &FdbEntry) -> String {
    match e.kind() {
        Some(FdbKind::Local) => format!(
            "port {}",
            crate::netdev::ifname(e.ifindex).unwrap_or_else(|| e.ifindex.to_string())
        ),
        Some(FdbKind::Remote) => format!("peer {}", show_addr(&e.peer)),
        _ => format!("kind {}", e.kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dataplane_common::maps::{route_keys, PORT_INDEX_SIZE, ROUTE_NO_RULE};

    const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const B: [u8; 6] = [2, 0, 0, 0, 0, 2];
    const C: [u8; 6] = [2, 0, 0, 0, 0, 3];

    /// What the datapath decides: the first ROUTES key present, most specific first.
    fn lookup(routes: &BTreeMap<PairKey, FdbEntry>, src: [u8; 6], dst: [u8; 6]) -> FdbEntry {
        route_keys(7, src, dst)
            .iter()
            .find_map(|k| routes.get(k).copied())
            .expect("the wildcard row always matches")
    }

    #[test]
    fn compiled_rules_decide_as_the_rule_priority_does() {
        use MacMatch::*;
        let to_port = FdbEntry::local(10, 1);
        let to_peer = FdbEntry::remote(map_addr([10, 0, 0, 2].into()), 0);
        let other_peer = FdbEntry::remote(map_addr([10, 0, 0, 3].into()), 1);
        let rules = [
            (Any, Exact(A), to_port),
            (Any, Not(B), to_peer),
            (Exact(C), None, other_peer),
        ];
        let routes = compile_rules(7, &rules);
        let unnamed = [2, 9, 9, 9, 9, 9];
        // Check the compiled table against the priority rule for every combination of
        // named and unnamed addresses.
        for src in [A, B, C, unnamed] {
            for dst in [A, B, C, unnamed, [0xff; 6]] {
                let want = dataplane_common::rules::best(
                    rules.iter().map(|(s, d, _)| (*s, *d)),
                    &src,
                    &dst,
                )
                .map_or(FdbEntry::no_rule(), |i| rules[i].2);
                assert_eq!(lookup(&routes, src, dst), want, "{src:?} -> {dst:?}");
            }
        }
        // Nothing matches B -> B ("not B" excludes it; the default rule is C's): the
        // frame is forwarded as learned.
        assert_eq!(lookup(&routes, B, B).kind, ROUTE_NO_RULE);
        assert_eq!(lookup(&routes, C, B), other_peer);
        // (3 named + wildcard) squared.
        assert_eq!(routes.len(), 16);
    }

    /// Host 10.0.0.1 in a star of VNI 100 whose hub is `hub`, linked to the peers given.
    fn star(hub: IpAddr, linked: &[IpAddr]) -> (Config, Topology) {
        let mut text = format!(
            "host_id = \"h1\"\n[underlay]\ninterface = \"ul0\"\naddress = \"10.0.0.1\"\n\
             [[environment]]\nname = \"blue\"\nvni = 100\nhub = \"{hub}\"\n\
             [[environment.location]]\nmac = \"02:00:00:00:00:03\"\nhost = \"10.0.0.3\"\n\
             [[environment.location]]\nmac = \"02:00:00:00:00:02\"\nhost = \"10.0.0.2\"\n"
        );
        for p in linked {
            text.push_str(&format!("[[peer]]\naddress = \"{p}\"\nvnis = [100]\n"));
        }
        let config = Config::parse(&text).unwrap();
        let peers: Vec<Peer> = linked
            .iter()
            .enumerate()
            .map(|(i, &addr)| Peer {
                addr,
                vnis: BTreeSet::from([100]),
                slot: i as u32,
                next_hop_mac: Some([2, 0, 0, 0, 9, i as u8]),
            })
            .collect();
        let dev = NetDev {
            name: "ul0".into(),
            ifindex: 1,
            mac: [2; 6],
            mtu: 1500,
            rx_queues: 1,
            peer_redirect: false,
        };
        let placements = placements(&config, &[], &peers, &Moves::new());
        let hubs = BTreeMap::from([(100, hub)]);
        let topo = Topology {
            underlay: dev,
            underlay_addr: IpAddr::from([10, 0, 0, 1]),
            underlay_mtu: 1500,
            ports: vec![],
            peers,
            debug: false,
            count_pairs: true,
            port_policies: BTreeMap::new(),
            pairs: BTreeMap::new(),
            routes: BTreeMap::new(),
            routed: BTreeSet::new(),
            hubs,
            placements,
        };
        (config, topo)
    }

    #[test]
    fn an_index_keeps_the_first_key_of_each_position() {
        let want = BTreeMap::from([(5u32, 'a'), (5 + PORT_INDEX_SIZE, 'b'), (6, 'c')]);
        let idx = index(&want, |&i| port_index(i), |&k, &v| (k, v));
        assert_eq!(idx, BTreeMap::from([(5, (5, 'a')), (6, (6, 'c'))]));
    }

    #[test]
    fn in_a_star_unlinked_hosts_are_reached_and_flooded_through_the_hub() {
        let hub = IpAddr::from([10, 0, 0, 2]);
        let (_, spoke) = star(hub, &[hub]);
        // The VM on 10.0.0.3 (no link) is placed at the hub; the hub's own VM at the hub.
        for mac in [C, B] {
            let e = spoke.placements[&FdbKey::new(100, mac)];
            assert_eq!(e.peer, map_addr(hub), "{mac:?}");
        }
        assert_eq!(spoke.flood_list(100).npeers, 1);
        assert!(!spoke.is_hub(100));
        assert!(
            spoke.vnis().is_empty(),
            "a spoke without ports serves nothing"
        );
        // With a fast-path link to 10.0.0.3, its VM goes direct, floods still to the hub.
        let fast = IpAddr::from([10, 0, 0, 3]);
        let (_, spoke) = star(hub, &[hub, fast]);
        assert_eq!(spoke.placements[&FdbKey::new(100, C)].peer, map_addr(fast));
        let flood = spoke.flood_list(100);
        assert_eq!((flood.npeers, flood.peers[0]), (1, map_addr(hub)));
        // The hub floods to, and relays to, every peer; it serves the environment with no
        // port of its own.
        let me = IpAddr::from([10, 0, 0, 1]);
        let (_, centre) = star(me, &[hub, fast]);
        assert!(centre.is_hub(100));
        assert_eq!(centre.flood_list(100).npeers, 2);
        assert_eq!(centre.vnis(), BTreeSet::from([100]));
    }
}
