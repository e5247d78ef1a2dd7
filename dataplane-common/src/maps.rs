//! Keys and values of the eBPF maps, and the maps' names and sizes.
//!
//! IPv4 addresses are stored as the four bytes seen on the wire (`[u8; 4]`) so that neither
//! side has to think about byte order.

/// Map names as they appear in the ELF object and under the pin directory.
pub mod names {
    pub const CONFIG: &str = "CONFIG";
    pub const PORTS: &str = "PORTS";
    pub const VNIS: &str = "VNIS";
    pub const PEERS: &str = "PEERS";
    pub const FDB: &str = "FDB";
    pub const TX_PORTS: &str = "TX_PORTS";
    pub const XSKS: &str = "XSKS";
    pub const PORT_STATS: &str = "PORT_STATS";
    pub const PEER_STATS: &str = "PEER_STATS";
    pub const DROPS: &str = "DROPS";
    pub const ACTIONS: &str = "ACTIONS";
    pub const FLOOD: &str = "FLOOD";
    pub const ALL: [&str; 12] = [
        CONFIG, PORTS, VNIS, PEERS, FDB, TX_PORTS, XSKS, PORT_STATS, PEER_STATS, DROPS, ACTIONS,
        FLOOD,
    ];
}

/// Program names in the ELF object.
pub mod programs {
    pub const PORT: &str = "violin_port";
    pub const PORT_TC: &str = "violin_port_tc";
    pub const UNDERLAY: &str = "violin_underlay";
}

/// Port and underlay interfaces get a slot each; slot 0 is the underlay.
pub const MAX_SLOTS: u32 = 256;
pub const UNDERLAY_SLOT: u32 = 0;
pub const MAX_PEERS: u32 = 1024;
pub const MAX_VNIS: u32 = 4096;
pub const FDB_ENTRIES: u32 = 65536;
/// AF_XDP sockets: one per (interface, rx queue).
pub const MAX_XSKS: u32 = 1024;
/// Largest number of rx queues per interface the slow path binds.
pub const MAX_QUEUES_PER_IF: u32 = 4;

/// The host's underlay settings; the single element of the `CONFIG` array.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HostConfig {
    pub underlay_ifindex: u32,
    pub underlay_addr: [u8; 4],
    pub underlay_mac: [u8; 6],
    pub _pad: [u8; 2],
    /// Underlay IP MTU; an encapsulated frame may not exceed it.
    pub underlay_mtu: u32,
    pub underlay_xsk_base: u32,
    pub underlay_queues: u32,
    /// Non-zero turns on aya-log debug messages in the datapath.
    pub debug: u32,
}

/// A VM port (veth or tap) attached to one environment.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortInfo {
    pub vni: u32,
    pub slot: u32,
    /// First XSKMAP index of this port's slow-path sockets; queue q uses `xsk_base + q`.
    pub xsk_base: u32,
    pub queues: u32,
}

/// An environment served on this host.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VniInfo {
    pub flags: u32,
}

/// A remote Violin (or VXLAN) host.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerInfo {
    /// Underlay next hop's MAC (the peer itself on a LAN, else the gateway).
    pub next_hop_mac: [u8; 6],
    /// Non-zero once `next_hop_mac` is known.
    pub resolved: u8,
    pub _pad: u8,
    pub slot: u32,
}

/// Ports and peers per environment for in-kernel replication of broadcasts from VM ports
/// in TC mode (head-end replication without the slow path).
pub const FLOOD_PORTS: usize = 16;
pub const FLOOD_PEERS: usize = 32;

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FloodList {
    pub nports: u32,
    pub npeers: u32,
    /// Local ports' ifindexes.
    pub ports: [u32; FLOOD_PORTS],
    /// Remote hosts' underlay addresses.
    pub peers: [[u8; 4]; FLOOD_PEERS],
}

impl Default for FloodList {
    fn default() -> Self {
        FloodList {
            nports: 0,
            npeers: 0,
            ports: [0; FLOOD_PORTS],
            peers: [[0; 4]; FLOOD_PEERS],
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FdbKey {
    pub vni: u32,
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
}

impl FdbKey {
    #[inline(always)]
    pub const fn new(vni: u32, mac: [u8; 6]) -> Self {
        FdbKey {
            vni,
            mac,
            _pad: [0; 2],
        }
    }
}

pub const FDB_LOCAL: u8 = 1;
pub const FDB_REMOTE: u8 = 2;
/// Set by the control plane; the datapath never overwrites a static entry by learning.
pub const FDB_FLAG_STATIC: u8 = 1;

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FdbEntry {
    pub kind: u8,
    pub flags: u8,
    pub _pad: [u8; 2],
    /// Local port's ifindex when `kind == FDB_LOCAL`.
    pub ifindex: u32,
    /// Remote host's underlay address when `kind == FDB_REMOTE`.
    pub peer: [u8; 4],
    /// Counter slot of the port or peer, so forwarding needs no second lookup to count.
    pub slot: u32,
}

impl FdbEntry {
    #[inline(always)]
    pub const fn local(ifindex: u32, slot: u32) -> Self {
        FdbEntry {
            kind: FDB_LOCAL,
            flags: 0,
            _pad: [0; 2],
            ifindex,
            peer: [0; 4],
            slot,
        }
    }

    #[inline(always)]
    pub const fn remote(peer: [u8; 4], slot: u32) -> Self {
        FdbEntry {
            kind: FDB_REMOTE,
            flags: 0,
            _pad: [0; 2],
            ifindex: 0,
            peer,
            slot,
        }
    }

    #[inline(always)]
    pub const fn is_static(&self) -> bool {
        self.flags & FDB_FLAG_STATIC != 0
    }
}

#[cfg(feature = "user")]
mod pod {
    unsafe impl aya::Pod for super::HostConfig {}
    unsafe impl aya::Pod for super::PortInfo {}
    unsafe impl aya::Pod for super::VniInfo {}
    unsafe impl aya::Pod for super::PeerInfo {}
    unsafe impl aya::Pod for super::FdbKey {}
    unsafe impl aya::Pod for super::FdbEntry {}
    unsafe impl aya::Pod for super::FloodList {}
}
