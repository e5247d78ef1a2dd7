//! A host's share of the controller's state, in the shape of violind's own configuration
//! (`[[environment]]`, `[[peer]]`), and the conversation that keeps it current: register,
//! follow the sync stream (a snapshot, then deltas and heartbeats), acknowledge.
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{
    types::{BurstKib, DstMatch, IfName, Limit, Name, RateMbit, SrcMatch, UnicastMac, Vni},
    vm::VmResources,
};

/// One environment as one host serves it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    pub name: Name,
    /// VXLAN network identifier carried on the wire.
    pub vni: Vni,
    /// VM-facing interfaces on this host (veth or tap) that belong to this environment.
    #[serde(default)]
    pub ports: Vec<IfName>,
    /// When given, unicast flows only between these VM pairs (by MAC, both directions):
    /// selected connectivity.
    #[serde(default)]
    pub allowed_pairs: Vec<[UnicastMac; 2]>,
    /// VM identities for anti-spoofing: a port may only send with these addresses.
    #[serde(default, rename = "vm")]
    pub vms: Vec<VmIdentity>,
    /// Traffic bounds per VM pair.
    #[serde(default, rename = "limit")]
    pub limits: Vec<PairLimit>,
    /// VNET forwarding rules of this host's table for the environment.
    #[serde(default, rename = "rule")]
    pub rules: Vec<ForwardRule>,
    /// Where the environment's VMs on other hosts run: the controller's word, which
    /// learning does not override (a VM's location is re-pointed here when it migrates).
    #[serde(default, rename = "location", skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<Location>,
    /// Storm control: broadcast, multicast and unknown-unicast frames each VM port may
    /// send per second (in bursts of a tenth of that, at least 16), the rest dropped and
    /// counted as `storm`. 0 turns it off; unset, [`DEFAULT_STORM_PPS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storm_pps: Option<u32>,
    /// The environment's overlay is a star through this host (VADAPT's proxy): hosts
    /// without a link to a VM's host reach it through the hub, and floods go to the hub
    /// alone, which relays them to every other host. The hub itself sees its own address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub hub: Option<IpAddr>,
}

/// Whether an underlay address can name one host: not unspecified, multicast, IPv4's
/// broadcast, an IPv4-mapped IPv6 address (the IPv4 address itself is written then), or
/// an IPv6 link-local or loopback address (neither reaches a host across the underlay
/// without a scope).
pub fn is_unicast(a: IpAddr) -> bool {
    let special = match a {
        IpAddr::V4(a) => a.is_broadcast(),
        IpAddr::V6(a) => {
            a.to_ipv4_mapped().is_some() || a.is_unicast_link_local() || a.is_loopback()
        }
    };
    !(a.is_unspecified() || a.is_multicast() || special)
}

/// Storm control's rate when an environment names none: far above what ARP, neighbour
/// discovery and DHCP need, far below what a flooding VM could make every peer replicate.
pub const DEFAULT_STORM_PPS: u32 = 1000;

impl Environment {
    /// Storm control's rate and burst, in frames: (0, _) when it is off.
    pub fn storm(&self) -> (u32, u32) {
        let pps = self.storm_pps.unwrap_or(DEFAULT_STORM_PPS);
        (pps, (pps / 10).max(16))
    }
}

/// A VM of the environment on another host.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Location {
    pub mac: UnicastMac,
    /// The VM's name in its environment's spec (shown beside the MAC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Name>,
    /// The underlay address of the host it runs on.
    #[schema(value_type = String)]
    pub host: IpAddr,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct VmIdentity {
    pub port: IfName,
    pub mac: UnicastMac,
    /// The VM's name in its environment's spec (shown beside the MAC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub name: Option<Name>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub ip: Option<Ipv4Addr>,
    /// The VM is live-migrating away, to the host at this underlay address: once it stops
    /// here, frames for it go on there.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub leaving_to: Option<IpAddr>,
    /// The VM is live-migrating here from the host at this underlay address: its port and
    /// policies are ready, and frames for it go there until it resumes here.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub arriving_from: Option<IpAddr>,
    /// An aggregate bound on what the VM sends to other hosts, all its pairs together;
    /// with a pair's bound, the tighter one wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<Limit>,
}

/// A bound on what each VM of the pair may send to the other (shaped: frames over it
/// wait for their turn, up to a horizon).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PairLimit {
    pub pair: [UnicastMac; 2],
    pub rate_mbit: RateMbit,
    #[serde(default)]
    pub burst_kib: BurstKib,
}

impl PairLimit {
    pub fn limit(&self) -> Limit {
        Limit {
            rate_mbit: self.rate_mbit,
            burst_kib: self.burst_kib,
        }
    }
}

/// A forwarding rule: frames whose (source, destination) match go out of `interface`
/// (a port of the environment) or over the link to the peer at `edge`; exactly one.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ForwardRule {
    pub src: SrcMatch,
    pub dst: DstMatch,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub edge: Option<IpAddr>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interface: Option<IfName>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Peer {
    #[schema(value_type = String)]
    pub address: IpAddr,
    /// Environments (by VNI) served by that host: it gets a copy of their broadcasts.
    #[serde(default)]
    pub vnis: Vec<Vni>,
}

/// Everything one host serves, as of a generation of the controller's state.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Share {
    pub generation: u64,
    /// Sorted by name.
    pub environments: Vec<Environment>,
    pub peers: Vec<Peer>,
    /// The CPU and memory this host's VMs are given (the adaptation manager's), by VM.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub resources: Vec<VmResources>,
}

impl Share {
    /// Applies a delta; says whether anything changed.
    pub fn apply(&mut self, delta: Delta) -> bool {
        self.generation = delta.generation;
        let changed = !delta.upsert.is_empty()
            || !delta.remove.is_empty()
            || delta.peers.is_some()
            || delta.resources.is_some();
        self.environments.retain(|e| {
            !delta.remove.contains(&e.name) && !delta.upsert.iter().any(|u| u.name == e.name)
        });
        self.environments.extend(delta.upsert);
        self.environments.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(p) = delta.peers {
            self.peers = p;
        }
        if let Some(r) = delta.resources {
            self.resources = r;
        }
        changed
    }

    /// The delta that turns `self` into `new`.
    pub fn delta_to(&self, new: &Share) -> Delta {
        Delta {
            generation: new.generation,
            upsert: new
                .environments
                .iter()
                .filter(|e| !self.environments.contains(e))
                .cloned()
                .collect(),
            remove: self
                .environments
                .iter()
                .filter(|e| !new.environments.iter().any(|n| n.name == e.name))
                .map(|e| e.name.clone())
                .collect(),
            peers: (self.peers != new.peers).then(|| new.peers.clone()),
            resources: (self.resources != new.resources).then(|| new.resources.clone()),
        }
    }
}

/// What changed in a host's share from one generation to the next.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Delta {
    pub generation: u64,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub upsert: Vec<Environment>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<Name>,
    /// The whole peer list, when it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peers: Option<Vec<Peer>>,
    /// The whole list of the host's VM resources, when it changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Vec<VmResources>>,
}

/// One line of the sync stream (`GET /v1/hosts/{host}/sync`, newline-delimited JSON).
/// Every generation reaches every host (as an empty delta when its share did not change),
/// so each acknowledgement says the host caught up with the whole state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum SyncEvent {
    Snapshot { share: Share },
    Delta(Delta),
    Heartbeat { generation: u64 },
}

/// What a host tells the controller when it (re)connects.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Registration {
    #[schema(value_type = String)]
    pub address: IpAddr,
    /// The daemon's own API (`host:port`), when it serves one.
    #[serde(default)]
    pub api: Option<String>,
    #[serde(default)]
    pub interfaces: Vec<Interface>,
    /// How other hosts and the controller reach this host's libvirt daemon (e.g.
    /// `qemu+tls://host/system`), when violind follows one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub libvirt: Option<String>,
    /// The administrative domain (site, cluster) the host belongs to, for the adaptation
    /// manager, which balances load between domains.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub domain: Option<String>,
    /// What the host offers its VMs: cores and MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mib: Option<u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum InterfaceRole {
    Underlay,
    Port,
    Other,
}

/// A network interface of a host, as VNET's "list the available interfaces" shows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Interface {
    pub name: String,
    pub ifindex: u32,
    pub role: InterfaceRole,
    pub mac: Option<String>,
    pub mtu: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Registered {
    pub host: Name,
    pub generation: u64,
}

/// What a host's VMs sent each other since its previous report, per VM pair and
/// direction, counted by its datapath (`POST /v1/hosts/{host}/traffic`): VTTIF's local
/// traffic matrix, as deltas.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TrafficReport {
    pub pairs: Vec<PairTraffic>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PairTraffic {
    pub vni: Vni,
    pub src: UnicastMac,
    pub dst: UnicastMac,
    /// Bytes since the previous report.
    pub bytes: u64,
}

/// A host's datapath at a glance, reported every `[controller] health_report_ms` for
/// `violinctl status`: its drop counters (totals since the maps were made, every reason)
/// and how full each map is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DatapathHealth {
    pub drops: std::collections::BTreeMap<String, u64>,
    pub map_entries: std::collections::BTreeMap<String, u64>,
    pub map_capacity: std::collections::BTreeMap<String, u64>,
}

/// A host applied `generation`, or could not (`error`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Ack {
    pub generation: u64,
    #[serde(default)]
    pub error: Option<String>,
}

/// What a host measured to each other host over the underlay
/// (`POST /v1/hosts/{host}/measurements`): its row of VADAPT's host matrix.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostMeasurements {
    pub peers: Vec<PeerMeasurement>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PeerMeasurement {
    /// The other host's underlay address.
    #[schema(value_type = String)]
    pub address: IpAddr,
    /// The smallest round trip of the last probes, microseconds; None when none came back.
    #[serde(default)]
    pub rtt_us: Option<f64>,
    /// The packet train's rate, bytes/s: what the path carries.
    #[serde(default)]
    pub bandwidth_bytes_per_second: Option<f64>,
    /// The fastest this host's own traffic went to it over the last 30 s, bytes/s.
    #[serde(default)]
    pub passive_bytes_per_second: Option<f64>,
    /// Echo probes of the last round that did not come back.
    #[serde(default)]
    pub probes_lost: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str, vni: u32) -> Environment {
        Environment {
            name: Name::parse(name).unwrap(),
            vni: Vni::new(vni).unwrap(),
            ports: vec![IfName::parse("vm1").unwrap()],
            allowed_pairs: vec![],
            vms: vec![],
            limits: vec![],
            storm_pps: None,
            hub: None,
            rules: vec![],
            locations: vec![],
        }
    }

    #[test]
    fn deltas_carry_only_what_changed_and_apply_back() {
        let a = Share {
            generation: 1,
            environments: vec![env("blue", 1), env("red", 2)],
            peers: vec![],
            resources: vec![],
        };
        let mut b = a.clone();
        b.generation = 2;
        b.environments.remove(1);
        b.environments[0].ports.clear();
        let d = a.delta_to(&b);
        assert_eq!(d.upsert.len(), 1);
        assert_eq!(d.remove, [Name::parse("red").unwrap()]);
        assert_eq!(d.peers, None);
        let mut c = a.clone();
        assert!(c.apply(d));
        assert_eq!(c, b);
        let same = b.delta_to(&Share {
            generation: 3,
            ..b.clone()
        });
        let line = serde_json::to_string(&SyncEvent::Delta(same.clone())).unwrap();
        assert_eq!(line, r#"{"type":"delta","generation":3}"#);
        assert!(!c.apply(same));
        // A VM's new CPU share reaches its host as the whole list, alone.
        let mut r = b.clone();
        r.generation = 4;
        r.resources = vec![crate::vm::VmResources {
            vm: "a1".into(),
            cpu_weight: 512,
            cpu_cap: Some(0.5),
            memory_mib: None,
        }];
        let d = b.delta_to(&r);
        assert!(d.upsert.is_empty() && d.remove.is_empty() && d.peers.is_none());
        assert_eq!(d.resources.as_deref(), Some(&r.resources[..]));
        assert!(c.apply(d));
        assert_eq!(c, r);
    }
}
