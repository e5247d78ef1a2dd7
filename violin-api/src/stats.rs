//! violind's statistics, the body of its `/v1/stats` and of `violind stats -o json|yaml`:
//! per-port and per-peer counters, drops by reason, the programs' verdicts, the forwarding
//! table, VM-pair traffic, what the maps hold per environment and how full they are, and
//! the slow path's sockets.
//!
//! The counter types mirror `dataplane_common::counters` field for field (same JSON), so
//! this crate needs neither aya nor the datapath's `user` feature; violind converts.
use std::{collections::BTreeMap, net::IpAddr};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Frames and bytes, summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

/// One port's counters: `rx` is what the port received from its VM (the underlay: from
/// the wire), `tx` what the datapath sent to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PortStats {
    pub rx: Counter,
    pub tx: Counter,
    /// Frames handed to the slow path (broadcast, multicast, unknown unicast).
    pub to_slow_path: Counter,
    pub dropped: Counter,
}

/// Tunnel traffic to and from one peer host.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PeerStats {
    pub tx: Counter,
    pub rx: Counter,
}

/// A VM port, or the underlay (the first row, without a VNI).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PortRow {
    pub interface: String,
    /// The port's environment; null for the underlay.
    pub vni: Option<u32>,
    /// The port's counter slot (0: the underlay).
    pub slot: u32,
    pub stats: PortStats,
}

/// A peer host, by underlay address.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PeerRow {
    /// The peer's underlay address, IPv4 or IPv6.
    #[schema(value_type = String)]
    pub address: IpAddr,
    /// The underlay next hop's MAC; null until it is resolved.
    pub next_hop_mac: Option<String>,
    pub stats: PeerStats,
}

/// A forwarding-table entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct FdbRow {
    pub vni: u32,
    pub mac: String,
    /// Where frames to `mac` go (a local port or a peer).
    pub location: String,
    /// Configured rather than learned.
    #[serde(rename = "static")]
    pub is_static: bool,
}

/// What one VM sent another, counted on the sender's host (VTTIF's local traffic matrix).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PairRow {
    pub vni: u32,
    pub src: String,
    pub dst: String,
    pub traffic: Counter,
}

/// A traffic bound the datapath enforces on this host: a VM pair's (one direction), or a
/// VM's over all it sends to other hosts (its port's).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct BoundRow {
    /// "pair" or "vm".
    pub kind: String,
    pub vni: u32,
    /// The sending VM's MAC (a pair), or its port (a VM).
    pub src: String,
    /// The receiving VM's MAC (a pair); empty for a VM's bound.
    pub dst: String,
    pub bytes_per_second: u64,
    /// How long a bulk frame sent now would wait in the bound's queue, by the datapath's
    /// clock (0 when the queue is within the burst).
    pub queue_ns: u64,
}

/// What the maps hold for one environment: all zero once it is gone from this host.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EnvironmentRow {
    pub vni: u32,
    /// The environment is in the VNI map.
    pub served: bool,
    /// It has forwarding rules.
    pub routed: bool,
    pub ports: u64,
    /// Peers its broadcasts go to.
    pub peers: u64,
    pub fdb: u64,
    pub routes: u64,
    pub pair_policies: u64,
    pub pair_traffic: u64,
}

/// A VM's name in its environment's spec, as the controller's share gives it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct VmName {
    pub vni: u32,
    pub mac: String,
    pub name: String,
    /// Its port, when it runs on this host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<String>,
}

/// One AF_XDP socket of the slow path (an interface's receive queue).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct SlowPathSocket {
    pub interface: String,
    pub queue: u32,
    /// Frames received on the socket.
    pub rx: u64,
    /// Frames sent on the socket.
    pub tx: u64,
    /// Copies not sent because the socket's transmit frames were all in flight.
    pub tx_no_frame: u64,
    /// Frames that could not be replicated (malformed, too big, no next hop).
    pub dropped: u64,
    /// The kernel's counters of the socket: frames it dropped, frames lost on a full
    /// receive ring, and times the fill ring was empty.
    pub kernel_rx_dropped: u64,
    pub kernel_rx_ring_full: u64,
    pub kernel_fill_ring_empty: u64,
}

/// Everything `violind stats` shows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Stats {
    /// The underlay first, then the VM ports by slot.
    pub ports: Vec<PortRow>,
    pub peers: Vec<PeerRow>,
    /// Frames dropped, by reason (every reason, zeros included).
    pub drops: BTreeMap<String, u64>,
    /// The programs' verdicts, keyed `hook/action` (e.g. `port/redirect`).
    pub actions: BTreeMap<String, u64>,
    pub fdb: Vec<FdbRow>,
    /// Changes to the forwarding table since its maps were created, by writer: `learned`
    /// (the programs' learning writes) and `placed` (violind's flush and placement steps
    /// that changed it, each counted once however many entries it changed). Each change
    /// ends what every CPU remembered of the table.
    #[serde(default)]
    pub fdb_changes: BTreeMap<String, u64>,
    pub slow_path: Vec<SlowPathSocket>,
    pub pairs: Vec<PairRow>,
    /// The bounds in force, with their queues.
    #[serde(default)]
    pub bounds: Vec<BoundRow>,
    pub environments: Vec<EnvironmentRow>,
    /// Entries per datapath map.
    pub map_entries: BTreeMap<String, u64>,
    /// Capacity of the same maps (their `max_entries`).
    #[serde(default)]
    pub map_capacity: BTreeMap<String, u64>,
    /// The VMs the host's share names, by environment and MAC (shown beside the MACs).
    #[serde(default)]
    pub vm_names: Vec<VmName>,
    /// The domains of this host's libvirt daemon, when violind follows one.
    #[serde(default)]
    pub vms: Vec<crate::vm::VmStatus>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_keep_their_json_field_names() {
        let stats = Stats {
            ports: vec![PortRow {
                interface: "ul0".into(),
                vni: None,
                slot: 0,
                stats: PortStats::default(),
            }],
            fdb: vec![FdbRow {
                vni: 1000,
                mac: "02:00:00:00:01:01".into(),
                location: "port vm1".into(),
                is_static: true,
            }],
            ..Stats::default()
        };
        let v = serde_json::to_value(&stats).unwrap();
        assert_eq!(v["ports"][0]["stats"]["to_slow_path"]["packets"], 0);
        assert!(v["ports"][0]["vni"].is_null());
        assert_eq!(v["fdb"][0]["static"], true);
        let back: Stats = serde_json::from_value(v).unwrap();
        assert_eq!(back, stats);
    }
}
