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
    pub const PAIRS: &str = "PAIRS";
    pub const ROUTES: &str = "ROUTES";
    pub const STORM: &str = "STORM";
    pub const PAIR_TRAFFIC: &str = "PAIR_TRAFFIC";
    pub const ALL: [&str; 16] = [
        CONFIG,
        PORTS,
        VNIS,
        PEERS,
        FDB,
        TX_PORTS,
        XSKS,
        PORT_STATS,
        PEER_STATS,
        DROPS,
        ACTIONS,
        FLOOD,
        PAIRS,
        ROUTES,
        PAIR_TRAFFIC,
        STORM,
    ];
}

/// Program names in the ELF object.
pub mod programs {
    pub const PORT: &str = "violin_port";
    pub const PORT_TC: &str = "violin_port_tc";
    pub const UNDERLAY: &str = "violin_underlay";
    pub const UNDERLAY_TC: &str = "violin_underlay_tc";
    pub const TUNNEL_TC: &str = "violin_tunnel_tc";
}

/// Port and underlay interfaces get a slot each; slot 0 is the underlay.
pub const MAX_SLOTS: u32 = 256;
pub const UNDERLAY_SLOT: u32 = 0;
pub const MAX_PEERS: u32 = 1024;
pub const MAX_VNIS: u32 = 4096;
/// VM pairs with a policy (allowed, or bounded), all environments together.
pub const MAX_PAIRS: u32 = 16384;
pub const FDB_ENTRIES: u32 = 65536;
/// Compiled forwarding-rule decisions, all environments together.
pub const MAX_ROUTES: u32 = 65536;
/// VM pairs whose traffic is counted (VTTIF's traffic matrix); least recently used go.
pub const MAX_PAIR_TRAFFIC: u32 = 65536;
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
    /// `PORT_*` flags: which checks and policies apply to frames from this port.
    pub flags: u32,
    /// The VM's assigned MAC and IPv4 address (anti-spoofing).
    pub mac: [u8; 6],
    pub _pad: [u8; 2],
    pub ip: [u8; 4],
}

/// Frames from the port must carry `PortInfo::mac` as source.
pub const PORT_CHECK_MAC: u32 = 1;
/// IPv4 and ARP frames from the port must carry `PortInfo::ip` as source.
pub const PORT_CHECK_IP: u32 = 2;
/// The port's environment allows unicast only between listed pairs.
pub const PORT_RESTRICTED: u32 = 4;
/// Some VM pairs of the port's environment have a traffic bound.
pub const PORT_LIMITED: u32 = 8;
/// The port's environment has forwarding rules on this host (look up ROUTES).
pub const PORT_ROUTED: u32 = 16;
/// The port is a veth whose peer, the VM's end, is in another network namespace: TC
/// delivers into that peer with bpf_redirect_peer (no second pass through the host's
/// receive queue).
pub const PORT_PEER_REDIRECT: u32 = 32;

/// A directed VM pair of an environment (source MAC, destination MAC).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PairKey {
    pub vni: u32,
    pub src: [u8; 6],
    pub dst: [u8; 6],
}

impl PairKey {
    #[inline(always)]
    pub const fn new(vni: u32, src: [u8; 6], dst: [u8; 6]) -> Self {
        PairKey { vni, src, dst }
    }
}

/// The pair may talk in a restricted environment.
pub const PAIR_ALLOWED: u32 = 1;
/// The pair's traffic is bounded by the token bucket below.
pub const PAIR_LIMITED: u32 = 2;

/// Policy and token bucket of a VM pair. The bucket is updated by the datapath without a
/// lock: concurrent frames of one pair on several CPUs may each see the same tokens, so
/// the bound holds to within one frame per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PairState {
    pub flags: u32,
    pub _pad: u32,
    /// Bytes per second the pair may send.
    pub rate: u64,
    /// Bucket size in bytes.
    pub burst: u64,
    pub tokens: u64,
    pub last_ns: u64,
}

impl PairState {
    /// Refills the bucket for the time since the last frame and takes `len` bytes from
    /// it; false if the frame is over the bound (and then takes nothing).
    #[inline(always)]
    pub fn take(&mut self, now_ns: u64, len: u64) -> bool {
        let elapsed = now_ns.saturating_sub(self.last_ns);
        // Saturates rather than overflowing for long idle times (elapsed * rate).
        let refill = if elapsed >= 1_000_000_000 {
            self.burst
        } else {
            elapsed * self.rate / 1_000_000_000
        };
        let tokens = self.tokens.saturating_add(refill);
        self.tokens = if tokens > self.burst {
            self.burst
        } else {
            tokens
        };
        self.last_ns = now_ns;
        if self.tokens >= len {
            self.tokens -= len;
            true
        } else {
            false
        }
    }
}

/// Storm control of one VM port: the rate at which its broadcast, multicast and unknown
/// unicast frames may leave it, as a GCRA (virtual scheduling) bucket. A frame is
/// admitted while its theoretical arrival time is no more than `burst_ns` ahead of now;
/// each admitted frame moves that time on by `interval_ns`. Exact at any rate, where a
/// token count refilled per frame would round the refill of closely spaced frames to
/// zero. Updated without a lock: concurrent floods on several CPUs may each admit one
/// frame more.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StormBucket {
    /// Nanoseconds per admitted frame; 0: storm control off.
    pub interval_ns: u64,
    /// How far ahead of now the next admission may be scheduled (the burst).
    pub burst_ns: u64,
    /// The next frame's theoretical arrival time (bpf_ktime_get_ns clock).
    pub tat_ns: u64,
}

impl StormBucket {
    /// A bucket admitting `pps` frames per second in bursts of up to `burst` frames;
    /// `pps` 0 turns it off.
    pub fn new(pps: u32, burst: u32) -> StormBucket {
        if pps == 0 {
            return StormBucket::default();
        }
        let interval_ns = 1_000_000_000 / u64::from(pps).max(1);
        StormBucket {
            interval_ns,
            burst_ns: interval_ns * u64::from(burst.max(1)),
            tat_ns: 0,
        }
    }

    /// Whether a frame arriving at `now_ns` is admitted (and then it is counted).
    #[inline(always)]
    pub fn admit(&mut self, now_ns: u64) -> bool {
        if self.interval_ns == 0 {
            return true;
        }
        let tat = if self.tat_ns > now_ns {
            self.tat_ns
        } else {
            now_ns
        };
        if tat - now_ns >= self.burst_ns {
            return false;
        }
        self.tat_ns = tat + self.interval_ns;
        true
    }
}

/// An environment served on this host.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VniInfo {
    /// `VNI_*` flags.
    pub flags: u32,
}

/// The environment has forwarding rules on this host (look up ROUTES).
pub const VNI_ROUTED: u32 = 1;

/// Stands for "an address no rule of the environment names" in ROUTES keys.
pub const ROUTE_ANY: [u8; 6] = [0; 6];

/// The ROUTES keys to probe for a frame, most specific first. violind stores a decision
/// for every pair of addresses the environment's rules and VMs name, plus the wildcard
/// rows and columns, so the first key present decides.
#[inline(always)]
pub const fn route_keys(vni: u32, src: [u8; 6], dst: [u8; 6]) -> [PairKey; 4] {
    [
        PairKey::new(vni, src, dst),
        PairKey::new(vni, src, ROUTE_ANY),
        PairKey::new(vni, ROUTE_ANY, dst),
        PairKey::new(vni, ROUTE_ANY, ROUTE_ANY),
    ]
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
/// In ROUTES only: no rule matches, forward as learned.
pub const ROUTE_NO_RULE: u8 = 3;
/// Set by the control plane; the datapath never overwrites a static entry by learning.
pub const FDB_FLAG_STATIC: u8 = 1;

/// `FdbEntry::kind` as a type: the field stays a byte because violind writes the struct
/// as plain old data, and a byte no version writes must not be undefined behaviour.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FdbKind {
    Local = FDB_LOCAL,
    Remote = FDB_REMOTE,
    NoRule = ROUTE_NO_RULE,
}

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

    pub const fn no_rule() -> Self {
        FdbEntry {
            kind: ROUTE_NO_RULE,
            flags: 0,
            _pad: [0; 2],
            ifindex: 0,
            peer: [0; 4],
            slot: 0,
        }
    }

    /// The same entry, set by the control plane: learning never overwrites it.
    pub const fn pinned(mut self) -> Self {
        self.flags |= FDB_FLAG_STATIC;
        self
    }

    #[inline(always)]
    pub const fn is_static(&self) -> bool {
        self.flags & FDB_FLAG_STATIC != 0
    }

    /// `None` for a kind byte that names no [`FdbKind`].
    #[inline(always)]
    pub const fn kind(&self) -> Option<FdbKind> {
        match self.kind {
            FDB_LOCAL => Some(FdbKind::Local),
            FDB_REMOTE => Some(FdbKind::Remote),
            ROUTE_NO_RULE => Some(FdbKind::NoRule),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn storm_bucket_admits_its_burst_then_its_rate() {
        let mut b = StormBucket::new(1000, 10);
        let t0 = 5_000_000_000;
        // A flood at one instant: the burst, then nothing.
        let admitted = (0..100).filter(|_| b.admit(t0)).count();
        assert_eq!(admitted, 10);
        // A flood of one frame per microsecond for a second: the rate, no more, and the
        // refill is not lost to rounding however close the frames come.
        let mut n = 0;
        for us in 1..=1_000_000u64 {
            if b.admit(t0 + us * 1000) {
                n += 1;
            }
        }
        assert!((1000..=1001).contains(&n), "{n} admitted in a second");
        // After a quiet second the full burst is there again, not more.
        let t1 = t0 + 3_000_000_000;
        assert_eq!((0..100).filter(|_| b.admit(t1)).count(), 10);
    }

    #[test]
    fn storm_control_off_admits_everything() {
        let mut b = StormBucket::new(0, 10);
        assert!((0..10_000).all(|i| b.admit(i)));
    }

    #[test]
    fn token_bucket_bounds_a_pair() {
        let mut b = PairState {
            flags: PAIR_LIMITED,
            rate: 1_000_000,
            burst: 10_000,
            tokens: 10_000,
            ..Default::default()
        };
        // The burst passes at once, then the bucket is empty.
        for _ in 0..10 {
            assert!(b.take(0, 1000));
        }
        assert!(!b.take(0, 1000));
        // 1 ms refills 1000 bytes at 1 MB/s.
        assert!(b.take(1_000_000, 1000));
        assert!(!b.take(1_000_000, 1));
        // A long idle time refills to the burst, never beyond.
        assert!(b.take(60_000_000_000, 10_000));
        assert!(!b.take(60_000_000_000, 1));
    }

    #[test]
    fn fdb_kind_reads_the_kind_byte() {
        assert_eq!(FdbEntry::local(7, 3).kind(), Some(FdbKind::Local));
        assert_eq!(
            FdbEntry::remote([10, 0, 0, 2], 5).kind(),
            Some(FdbKind::Remote)
        );
        assert_eq!(FdbEntry::no_rule().kind(), Some(FdbKind::NoRule));
        for byte in [0, 4, u8::MAX] {
            let e = FdbEntry {
                kind: byte,
                ..FdbEntry::default()
            };
            assert_eq!(e.kind(), None, "kind byte {byte}");
        }
        // The enum's discriminants are the bytes violind writes.
        assert_eq!(FdbKind::Local as u8, FDB_LOCAL);
        assert_eq!(FdbKind::Remote as u8, FDB_REMOTE);
        assert_eq!(FdbKind::NoRule as u8, ROUTE_NO_RULE);
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: HostConfig is repr(C) and Copy, made only of u32 and u8 arrays laid out with
    // no padding (u32, [u8; 4], [u8; 6], [u8; 2], 4 x u32: 32 bytes, align 4), so every
    // byte is initialised and every bit pattern is a valid value.
    unsafe impl aya::Pod for super::HostConfig {}
    // SAFETY: PortInfo is repr(C) and Copy: 5 x u32, [u8; 6], [u8; 2], [u8; 4], 32 bytes
    // with no padding at align 4; all fields are integers, so any bit pattern is valid.
    unsafe impl aya::Pod for super::PortInfo {}
    // SAFETY: VniInfo is repr(C) and Copy with a single u32 field: no padding, and any bit
    // pattern is valid.
    unsafe impl aya::Pod for super::VniInfo {}
    // SAFETY: PeerInfo is repr(C) and Copy: [u8; 6], u8, u8 (explicit _pad) then u32 at
    // offset 8, 12 bytes with no padding; all fields are integers, so any bit pattern is valid.
    unsafe impl aya::Pod for super::PeerInfo {}
    // SAFETY: FdbKey is repr(C) and Copy: u32, [u8; 6], [u8; 2] (explicit _pad), 12 bytes
    // with no padding; all fields are integers, so any bit pattern is valid.
    unsafe impl aya::Pod for super::FdbKey {}
    // SAFETY: FdbEntry is repr(C) and Copy: u8, u8, [u8; 2], u32, [u8; 4], u32, 16 bytes
    // with no padding. `kind` is a raw u8 (decoded by kind(), not an enum field), so every
    // bit pattern is a valid value.
    unsafe impl aya::Pod for super::FdbEntry {}
    // SAFETY: FloodList is repr(C) and Copy: 2 x u32, [u32; FLOOD_PORTS] and
    // [[u8; 4]; FLOOD_PEERS], 200 bytes with no padding at align 4; all integers, so any
    // bit pattern is valid.
    unsafe impl aya::Pod for super::FloodList {}
    // SAFETY: PairKey is repr(C) and Copy: u32, [u8; 6], [u8; 6], 16 bytes (a multiple of
    // its align 4, so no tail padding); all integers, so any bit pattern is valid.
    unsafe impl aya::Pod for super::PairKey {}
    // SAFETY: PairState is repr(C) and Copy: u32, u32 (explicit _pad), then 4 x u64 at
    // offset 8, 40 bytes with no padding at align 8; all integers, so any bit pattern is valid.
    unsafe impl aya::Pod for super::PairState {}
    // SAFETY: repr(C), three u64: no padding, every bit pattern valid.
    unsafe impl aya::Pod for super::StormBucket {}
}
