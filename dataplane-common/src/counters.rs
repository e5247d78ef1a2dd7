//! Counter layouts and the reasons a frame is dropped.

/// Why the datapath dropped a frame. The discriminant indexes the `DROPS` per-CPU array.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Shorter than an Ethernet header.
    Runt = 0,
    /// Outer IPv4/UDP/VXLAN headers cut short, or the IP length claims more than arrived.
    TruncatedOuter,
    /// The encapsulated frame is shorter than an Ethernet header.
    TruncatedInner,
    /// IP and UDP length fields disagree.
    BadLength,
    /// VXLAN I flag not set.
    BadVxlanFlags,
    /// VNI not served on this host.
    UnknownVni,
    /// VXLAN from an address that is not a configured peer.
    UnknownPeer,
    /// VXLAN packet carrying IPv4 options.
    IpOptions,
    /// Fragmented VXLAN packet (Violin never fragments; a peer must not either).
    Fragment,
    /// Encapsulated frame would exceed the underlay MTU.
    TooBig,
    /// Destination host known but its underlay next hop is not resolved yet.
    NoRoute,
    /// Source MAC is multicast or zero.
    BadSrcMac,
    /// Frame arrived on an interface that is not a configured port.
    UnknownPort,
    /// Destination is the port the frame came from.
    Hairpin,
    /// BUM frame while no slow-path socket is bound (daemon restarting).
    SlowPathDown,
    /// XDP_REDIRECT failed (target device gone or not ready).
    RedirectFailed,
    /// No headroom to push the outer headers, or to pull them off.
    NoHeadroom,
    /// A VM sent with a source MAC other than the one assigned to its port.
    SpoofedMac,
    /// A VM sent with a source IPv4 address (IP or ARP) other than the one assigned.
    SpoofedIp,
    /// Unicast between VMs that are not an allowed pair of a restricted environment.
    NotAllowed,
    /// Over a VM pair's or VM's traffic bound: it would wait in the bound's queue beyond
    /// its horizon.
    RateLimited,
    /// A forwarding rule sends the frame back over the link it arrived on.
    Loop,
    /// Broadcast, multicast or unknown unicast over the port's storm-control rate.
    Storm,
}

impl DropReason {
    pub const COUNT: u32 = 23;
    pub const ALL: [DropReason; Self::COUNT as usize] = [
        DropReason::Runt,
        DropReason::TruncatedOuter,
        DropReason::TruncatedInner,
        DropReason::BadLength,
        DropReason::BadVxlanFlags,
        DropReason::UnknownVni,
        DropReason::UnknownPeer,
        DropReason::IpOptions,
        DropReason::Fragment,
        DropReason::TooBig,
        DropReason::NoRoute,
        DropReason::BadSrcMac,
        DropReason::UnknownPort,
        DropReason::Hairpin,
        DropReason::SlowPathDown,
        DropReason::RedirectFailed,
        DropReason::NoHeadroom,
        DropReason::SpoofedMac,
        DropReason::SpoofedIp,
        DropReason::NotAllowed,
        DropReason::RateLimited,
        DropReason::Loop,
        DropReason::Storm,
    ];

    /// Stable snake_case name used in logs, `violind stats` and metric labels.
    pub const fn name(self) -> &'static str {
        match self {
            DropReason::Runt => "runt",
            DropReason::TruncatedOuter => "truncated_outer",
            DropReason::TruncatedInner => "truncated_inner",
            DropReason::BadLength => "bad_length",
            DropReason::BadVxlanFlags => "bad_vxlan_flags",
            DropReason::UnknownVni => "unknown_vni",
            DropReason::UnknownPeer => "unknown_peer",
            DropReason::IpOptions => "ip_options",
            DropReason::Fragment => "fragment",
            DropReason::TooBig => "too_big",
            DropReason::NoRoute => "no_route",
            DropReason::BadSrcMac => "bad_src_mac",
            DropReason::UnknownPort => "unknown_port",
            DropReason::Hairpin => "hairpin",
            DropReason::SlowPathDown => "slow_path_down",
            DropReason::RedirectFailed => "redirect_failed",
            DropReason::NoHeadroom => "no_headroom",
            DropReason::SpoofedMac => "spoofed_mac",
            DropReason::SpoofedIp => "spoofed_ip",
            DropReason::NotAllowed => "not_allowed",
            DropReason::RateLimited => "rate_limited",
            DropReason::Loop => "loop",
            DropReason::Storm => "storm",
        }
    }
}

/// Which program took an action; with the XDP action code it indexes `ACTIONS`.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hook {
    /// XDP on a VM port.
    Port = 0,
    /// XDP on the underlay NIC.
    Underlay = 1,
    /// TC (clsact ingress) on a VM port, `port_mode = "tc"`.
    PortTc = 2,
    /// TC (tcx ingress) on the underlay NIC, `port_mode = "tc"`.
    UnderlayTc = 3,
    /// TC (tcx ingress) on the flow-based VXLAN device, `port_mode = "tc"`: the GRO
    /// aggregates the kernel decapsulated.
    Tunnel = 4,
}

pub const HOOKS: [(Hook, &str); 5] = [
    (Hook::Port, "port"),
    (Hook::Underlay, "underlay"),
    (Hook::PortTc, "port_tc"),
    (Hook::UnderlayTc, "underlay_tc"),
    (Hook::Tunnel, "tunnel"),
];

/// Action slots, numbered as the kernel numbers XDP actions (`enum xdp_action`); the TC
/// program counts its verdicts in the same slots, plus `flood` for in-kernel replication.
pub const XDP_ACTION_NAMES: [&str; 6] = ["aborted", "drop", "pass", "tx", "redirect", "flood"];
pub const ACTION_FLOOD: u32 = 5;
pub const ACTION_SLOTS: u32 = 8;

pub const fn action_index(hook: Hook, action: u32) -> u32 {
    (hook as u32) * ACTION_SLOTS + (action & (ACTION_SLOTS - 1))
}

/// Packets and bytes; summed over CPUs in user space.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct Counter {
    pub packets: u64,
    pub bytes: u64,
}

impl Counter {
    #[inline(always)]
    pub fn add(&mut self, bytes: u64) {
        self.packets += 1;
        self.bytes += bytes;
    }

    pub fn merge(&mut self, other: &Counter) {
        self.packets += other.packets;
        self.bytes += other.bytes;
    }
}

/// Per-port counters, indexed by the port's slot. "rx" is what the port received from its
/// VM (or, for the underlay slot, from the wire); "tx" is what the datapath sent to it.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct PortStats {
    pub rx: Counter,
    pub tx: Counter,
    pub to_slow_path: Counter,
    pub dropped: Counter,
}

/// Per-peer counters, indexed by the peer's slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[cfg_attr(feature = "user", derive(serde::Serialize, serde::Deserialize))]
pub struct PeerStats {
    pub tx: Counter,
    pub rx: Counter,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: Counter is repr(C) and Copy with two u64 fields: 16 bytes, no padding, and
    // any bit pattern is a valid value.
    unsafe impl aya::Pod for super::Counter {}
    // SAFETY: PortStats is repr(C) and Copy, four Counters (each two u64): 64 bytes with no
    // padding, and any bit pattern is a valid value.
    unsafe impl aya::Pod for super::PortStats {}
    // SAFETY: PeerStats is repr(C) and Copy, two Counters (each two u64): 32 bytes with no
    // padding, and any bit pattern is a valid value.
    unsafe impl aya::Pod for super::PeerStats {}
}
