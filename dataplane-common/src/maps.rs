//! Keys and values of the eBPF maps, and the maps' names and sizes.
//!
//! Addresses are stored as the bytes seen on the wire so that neither side has to think
//! about byte order. Underlay addresses take 16 bytes, an IPv4 one in its IPv4-mapped form
//! (`packet::v4_mapped`), so one layout serves an IPv4 and an IPv6 underlay; a VM's own
//! address (`PortInfo::ip`) is IPv4.

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
    pub const PORT_SLOTS: &str = "PORT_SLOTS";
    pub const PEER_SLOTS: &str = "PEER_SLOTS";
    pub const PAIRS: &str = "PAIRS";
    pub const ROUTES: &str = "ROUTES";
    pub const STORM: &str = "STORM";
    pub const PAIR_TRAFFIC: &str = "PAIR_TRAFFIC";
    pub const VM_BOUNDS: &str = "VM_BOUNDS";
    pub const OBSERVE: &str = "OBSERVE";
    pub const OBSERVE_BUDGET: &str = "OBSERVE_BUDGET";
    pub const OBSERVE_SAMPLE_BUDGET: &str = "OBSERVE_SAMPLE_BUDGET";
    pub const OBSERVE_SKIP: &str = "OBSERVE_SKIP";
    pub const EVENTS: &str = "EVENTS";
    pub const PORT_INDEX: &str = "PORT_INDEX";
    pub const PEER_INDEX: &str = "PEER_INDEX";
    pub const VNI_INDEX: &str = "VNI_INDEX";
    pub const FDB_EPOCH: &str = "FDB_EPOCH";
    pub const PAIR_CELLS: &str = "PAIR_CELLS";
    pub const ALL: [&str; 29] = [
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
        PORT_SLOTS,
        PEER_SLOTS,
        PAIRS,
        ROUTES,
        PAIR_TRAFFIC,
        STORM,
        VM_BOUNDS,
        OBSERVE,
        OBSERVE_BUDGET,
        OBSERVE_SAMPLE_BUDGET,
        OBSERVE_SKIP,
        EVENTS,
        PORT_INDEX,
        PEER_INDEX,
        VNI_INDEX,
        FDB_EPOCH,
        PAIR_CELLS,
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
    /// IPv4-mapped on an IPv4 underlay: its family is the host's.
    pub underlay_addr: [u8; 16],
    pub underlay_mac: [u8; 6],
    /// 1 on an IPv6 underlay: said once here so that the programs' loops branch on one
    /// byte, not on the address's sixteen (every branch in a loop costs the verifier).
    pub v6: u8,
    pub _pad: u8,
    /// Underlay IP MTU; an encapsulated frame may not exceed it.
    pub underlay_mtu: u32,
    pub underlay_xsk_base: u32,
    pub underlay_queues: u32,
    /// Non-zero turns on aya-log debug messages in the datapath.
    pub debug: u32,
}

impl HostConfig {
    /// The underlay address as words, each read with one load (see [`addr_words`]).
    #[inline(always)]
    pub const fn addr_words(&self) -> [u32; 4] {
        addr_words(self.underlay_addr)
    }
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
/// The port's VM has an aggregate bound on what it sends to other hosts (its shaper is
/// in VM_BOUNDS, at the port's slot).
pub const PORT_VM_BOUNDED: u32 = 64;
/// What the port's VM sends is not counted per VM pair (`count_vm_pairs = false`: no
/// traffic matrix from this host; the benchmark's baseline for the counting's cost).
pub const PORT_UNCOUNTED: u32 = 128;

/// Copies of its test frame the benchmark's `violin_bench_burst` sends per run (the
/// benchmark counts frames in these; violind never loads the program).
pub const BENCH_BURST: u32 = 32;

/// A directed VM pair of an environment (source MAC, destination MAC).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PairKey {
    pub vni: u32,
    pub src: [u8; 6],
    pub dst: [u8; 6],
}

impl PairKey {
    /// Made of whole words, as [`FdbKey::new`] (a key read back in words must have been
    /// stored in words); field by field, the six zero bytes of a key with `ROUTE_ANY` also
    /// become a call of a byte-by-byte `memset` in the BPF backend, three per frame of a
    /// routed environment.
    #[inline(always)]
    pub const fn new(vni: u32, src: [u8; 6], dst: [u8; 6]) -> Self {
        let words = [
            vni,
            u32::from_ne_bytes([src[0], src[1], src[2], src[3]]),
            u32::from_ne_bytes([src[4], src[5], dst[0], dst[1]]),
            u32::from_ne_bytes([dst[2], dst[3], dst[4], dst[5]]),
        ];
        // SAFETY: PairKey is repr(C), a u32 then two byte arrays, 16 bytes without padding
        // (transmute checks the size), and any bytes are a valid PairKey; each word lands
        // on the bytes it was made of.
        unsafe { core::mem::transmute::<[u32; 4], PairKey>(words) }
    }

    /// The key as four words, in memory order (the VNI, then the two addresses' twelve
    /// bytes): read through the key, whose alignment is 4, one load each, where the
    /// addresses alone would be read a byte at a time (the BPF backend takes no byte array
    /// as aligned).
    #[inline(always)]
    pub const fn words(&self) -> [u32; 4] {
        // SAFETY: as in new, the other way.
        unsafe { core::mem::transmute::<PairKey, [u32; 4]>(*self) }
    }

    /// `self == other` by [`PairKey::words`]: the derived comparison reads the addresses
    /// a byte at a time.
    #[inline(always)]
    pub const fn same(&self, other: &PairKey) -> bool {
        same_words(self.words(), other.words())
    }
}

/// Each CPU counts the traffic of VM pairs in an array of this many cells, by
/// [`pair_cell_index`] (`PAIR_CELLS`): an array lookup, which the verifier inlines (for
/// per-CPU arrays since Linux 6.10), rather than the call that hashes the key into
/// `PAIR_TRAFFIC`. A pair takes an empty cell with its first frame on a CPU and keeps it
/// until violind empties the cells of pairs gone (their environment, or their source VM,
/// left the host); a pair whose cell another holds is counted in `PAIR_TRAFFIC`. Each
/// frame is counted in one place, so a pair's traffic is the sum of both over CPUs.
pub const PAIR_CELL_COUNT: u32 = 1024;

/// One CPU's count of a VM pair's traffic; empty while `traffic.packets` is 0 (a pair
/// holds a cell from its first frame on).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PairCell {
    pub key: PairKey,
    pub traffic: crate::counters::Counter,
}

impl PairCell {
    #[inline(always)]
    pub const fn is_empty(&self) -> bool {
        self.traffic.packets == 0
    }
}

/// Position of pair `key` in each CPU's cells. The source is mixed by a multiplication,
/// so that a pair and its reverse rarely share a position, and the destination and
/// environment as they are: one source's destinations that differ only in the ten lowest
/// bits of their MAC (a lab's or a vendor's VMs) never share one.
#[inline(always)]
pub const fn pair_cell_index(key: &PairKey) -> u32 {
    let [vni, w1, w2, w3] = key.words();
    let (w1, w2, w3) = (u32::from_be(w1), u32::from_be(w2), u32::from_be(w3));
    let src = mac_word(w1, w2 >> 16);
    let dst = mac_word((w2 << 16) | (w3 >> 16), w3);
    fold(src.wrapping_mul(0x9e37_79b1) ^ dst ^ vni, PAIR_CELL_COUNT)
}

/// `x` folded to a position of an array of `size` (a power of two up to 2^10): values
/// that differ only in their ten lowest bits never share a position.
#[inline(always)]
const fn fold(x: u32, size: u32) -> u32 {
    (x ^ (x >> 10) ^ (x >> 20) ^ (x >> 30)) & (size - 1)
}

/// A MAC address folded into 32 bits, its low four bytes kept as they are: from its first
/// four bytes (`head`) and its last two (`tail`'s low 16 bits), each in network order.
/// The keys hand over their bytes in words (`FdbKey::words`, `PairKey::words`), one load
/// each where a byte array would be read a byte at a time.
#[inline(always)]
const fn mac_word(head: u32, tail: u32) -> u32 {
    ((head << 16) | (tail & 0xffff)) ^ (head >> 16)
}

/// The pair may talk in a restricted environment.
pub const PAIR_ALLOWED: u32 = 1;
/// The pair's traffic is bounded by its shaper.
pub const PAIR_LIMITED: u32 = 2;

/// Policy and traffic bound of a VM pair.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PairState {
    pub flags: u32,
    /// The HTB class (minor number, see [`htb_class`]) that shapes the pair's frames.
    pub class: u32,
    pub shaper: Shaper,
}

/// Bounded traffic is shaped by an HTB qdisc violind puts on the devices it leaves by
/// (the underlay; a VM port, for a pair on one host): a class per bounded pair, and per
/// bounded VM a parent class over its pairs' classes and a leaf for the rest of what it
/// sends to other hosts. The datapath picks the class by setting skb->priority to its id,
/// which HTB takes as is. Unclassified frames go straight through (HTB's direct queue).
pub const HTB_MAJOR: u32 = 0x7669;
/// Minor numbers: pairs' classes below VM_CLASS_BASE; a bounded VM's parent class at
/// VM_CLASS_BASE + its port slot, its leaf at VM_LEAF_BASE + its port slot.
pub const VM_CLASS_BASE: u32 = 0xF000;
pub const VM_LEAF_BASE: u32 = 0xF100;
pub const MAX_PAIR_CLASS: u32 = VM_CLASS_BASE - 1;

/// The class id (skb->priority) of HTB class `minor`.
#[inline(always)]
pub const fn htb_class(minor: u32) -> u32 {
    (HTB_MAJOR << 16) | (minor & 0xFFFF)
}

/// Frames of at most this many bytes (pings, pure TCP acknowledgements, ARP, DNS) of a
/// bounded pair or VM skip its queue (HTB's direct queue) instead of waiting behind its
/// bulk traffic: they are still charged to its clock, so the bound holds, but a ping does
/// not measure the queue a stream keeps in front of it.
pub const SHAPER_SMALL_FRAME: u64 = 128;
/// What a bound lets wait in its queue, beyond its burst: room for what TCP senders keep
/// queued while they start (TCP small queues let a socket queue up to
/// tcp_limit_output_bytes, 4 MiB, while its round-trip estimate is still that of an empty
/// queue; far less once it has settled), so a sender that backs off when its packets wait
/// is not dropped.
pub const SHAPER_QUEUE_BYTES: u64 = 4 * 1024 * 1024;
/// The horizon's floor and ceiling: a fast bound still absorbs a scheduling hiccup; a
/// slow one does not hold more than two seconds of traffic for a sender that never backs
/// off (small frames skip the queue, so a ping does not see it).
pub const SHAPER_MIN_HORIZON_NS: u64 = 10_000_000;
pub const SHAPER_MAX_HORIZON_NS: u64 = 2_000_000_000;

/// A traffic bound's clock (GCRA, in its shaping form): the datapath's model of the
/// bound's queue in the qdisc. `tat_ns` is when everything charged so far will have left
/// at the rate; a frame may leave once that time is less than `burst_ns` ahead (after a
/// quiet spell the burst leaves at once, then the rate). A frame that would wait longer
/// than `horizon_ns` is dropped here, counted, and not charged, so the queue never
/// overflows where the drop could not be counted by reason. Updated without a lock:
/// frames of one bound on several CPUs may read the same clock, which blurs it by a frame
/// per CPU.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Shaper {
    /// Bytes per second; 0: no bound.
    pub rate: u64,
    /// The burst, as the time it takes at the rate.
    pub burst_ns: u64,
    /// How far ahead of now a frame may be scheduled.
    pub horizon_ns: u64,
    /// The clock (bpf_ktime_get_ns time).
    pub tat_ns: u64,
}

impl Shaper {
    /// A bound of `rate` bytes per second with a burst of `burst` bytes.
    pub fn new(rate: u64, burst: u64) -> Shaper {
        if rate == 0 {
            return Shaper::default();
        }
        let ns = |bytes: u64| (u128::from(bytes) * 1_000_000_000 / u128::from(rate)) as u64;
        Shaper {
            rate,
            burst_ns: ns(burst),
            horizon_ns: ns(burst + SHAPER_QUEUE_BYTES)
                .clamp(SHAPER_MIN_HORIZON_NS, SHAPER_MAX_HORIZON_NS),
            tat_ns: 0,
        }
    }

    /// What the rate carries in `ns` nanoseconds, in bytes.
    fn bytes_in(&self, ns: u64) -> u64 {
        (u128::from(ns) * u128::from(self.rate) / 1_000_000_000) as u64
    }

    /// The bytes that may wait in the bound's queue (its horizon at its rate).
    pub fn horizon_bytes(&self) -> u64 {
        self.bytes_in(self.horizon_ns)
    }

    /// The burst, in bytes.
    pub fn burst_bytes(&self) -> u64 {
        self.bytes_in(self.burst_ns)
    }

    /// Takes over `old`'s clock for a changed bound, so that what waits in its queue is
    /// still accounted for; held to this bound's horizon from `now_ns`.
    pub fn carry_clock(&mut self, old: &Shaper, now_ns: u64) {
        let limit = now_ns
            .saturating_add(self.burst_ns)
            .saturating_add(self.horizon_ns);
        self.tat_ns = old.tat_ns.min(limit);
    }

    /// The same bound (rate, burst, horizon), whatever its clock reads.
    pub fn same_bound(&self, other: &Shaper) -> bool {
        (self.rate, self.burst_ns, self.horizon_ns)
            == (other.rate, other.burst_ns, other.horizon_ns)
    }

    /// When a frame arriving at `now_ns` may leave: now, or later while the clock is more
    /// than the burst ahead; `None` when that is beyond the horizon. Charges nothing.
    #[inline(always)]
    pub fn due(&self, now_ns: u64) -> Option<u64> {
        if self.rate == 0 || self.tat_ns <= now_ns.saturating_add(self.burst_ns) {
            return Some(now_ns);
        }
        let at = self.tat_ns - self.burst_ns;
        if at - now_ns > self.horizon_ns {
            None
        } else {
            Some(at)
        }
    }

    /// Charges a frame of `len` bytes that arrived at `now_ns` to the clock.
    #[inline(always)]
    pub fn charge(&mut self, now_ns: u64, len: u64) {
        if self.rate == 0 {
            return;
        }
        let from = if self.tat_ns > now_ns {
            self.tat_ns
        } else {
            now_ns
        };
        self.tat_ns = from + len * 1_000_000_000 / self.rate;
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
/// This host is the environment's hub (VADAPT's proxy): floods from peers are relayed
/// to its other peers as well as delivered locally.
pub const VNI_HUB: u32 = 2;

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
    /// 1 when the peer's address is IPv6 (as [`HostConfig::v6`]).
    pub v6: u8,
    pub slot: u32,
}

/// A port as its counter slot finds it (`PORT_SLOTS`, indexed by slot): what delivering
/// a frame to a forwarding-table entry needs, by an array lookup rather than a hash lookup
/// by ifindex. `ifindex` 0: no port in the slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortSlot {
    pub ifindex: u32,
    /// The port's `PORT_*` flags, as in its [`PortInfo`].
    pub flags: u32,
}

/// A peer as its counter slot finds it (`PEER_SLOTS`, indexed by slot): the tunnel's far
/// end for a forwarding-table entry, by an array lookup rather than a hash lookup by
/// 16-byte address. All zero: no peer in the slot.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PeerSlot {
    pub addr: [u8; 16],
    pub info: PeerInfo,
}

impl PeerSlot {
    /// The address as four words in memory order: read through the slot, whose alignment
    /// is 4, one load each (as [`PairKey::words`]).
    #[inline(always)]
    pub const fn addr_words(&self) -> [u32; 4] {
        addr_words(self.addr)
    }
}

/// A 16-byte address as four words in memory order. One load each where the address is
/// read out of a struct whose alignment is 4 (the BPF backend reads a byte array a byte at
/// a time otherwise).
#[inline(always)]
pub const fn addr_words(a: [u8; 16]) -> [u32; 4] {
    // SAFETY: both are 16 bytes and any bytes are valid words.
    unsafe { core::mem::transmute::<[u8; 16], [u32; 4]>(a) }
}

/// Whether two addresses (or keys) given as words are the same: one test of the words'
/// differences, not a branch per word.
#[inline(always)]
pub const fn same_words(a: [u32; 4], b: [u32; 4]) -> bool {
    (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) | (a[3] ^ b[3]) == 0
}

/// Direct-mapped indexes in front of the hash maps the forwarding path reads for every
/// frame (`PORTS` by ifindex, `PEERS` by address, `VNIS` by VNI): an array lookup, which
/// the verifier inlines, instead of a call that hashes the key. Each entry holds its key;
/// two keys that share an index leave one of them to the hash map alone, which stays
/// the complete truth (violind writes an index entry only for what the hash map holds).
pub const PORT_INDEX_SIZE: u32 = 1024;
pub const PEER_INDEX_SIZE: u32 = 1024;
pub const VNI_INDEX_SIZE: u32 = 4096;

/// `PORT_INDEX` position of the port with interface index `ifindex`.
#[inline(always)]
pub const fn port_index(ifindex: u32) -> u32 {
    ifindex & (PORT_INDEX_SIZE - 1)
}

/// `PEER_INDEX` position of the peer at underlay address `addr` (16 bytes, IPv4-mapped
/// or IPv6): the address's last four bytes folded, which tell hosts of one underlay apart.
#[inline(always)]
pub const fn peer_index(addr: &[u8; 16]) -> u32 {
    let hi = (addr[12] ^ addr[14]) as u32;
    let lo = (addr[13] ^ addr[15]) as u32;
    ((hi << 8) | lo) & (PEER_INDEX_SIZE - 1)
}

/// `VNI_INDEX` position of environment `vni`.
#[inline(always)]
pub const fn vni_index(vni: u32) -> u32 {
    vni & (VNI_INDEX_SIZE - 1)
}

/// A `PORT_INDEX` entry: the port with interface index `ifindex` (0: none).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PortIndexEntry {
    pub ifindex: u32,
    pub info: PortInfo,
}

/// A `VNI_INDEX` entry: `tag` is the VNI with [`VNI_INDEX_LIVE`] set (0: none), since VNI
/// 0 is a VNI a frame may carry.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VniIndexEntry {
    pub tag: u32,
    pub info: VniInfo,
}

/// Set in a live `VniIndexEntry::tag` (VNIs take 24 bits).
pub const VNI_INDEX_LIVE: u32 = 1 << 31;

impl VniIndexEntry {
    pub const fn new(vni: u32, info: VniInfo) -> Self {
        VniIndexEntry {
            tag: vni | VNI_INDEX_LIVE,
            info,
        }
    }

    /// The entry's info if it is `vni`'s.
    #[inline(always)]
    pub fn get(&self, vni: u32) -> Option<VniInfo> {
        (self.tag == vni | VNI_INDEX_LIVE).then_some(self.info)
    }
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
    pub peers: [[u8; 16]; FLOOD_PEERS],
}

impl Default for FloodList {
    fn default() -> Self {
        FloodList {
            nports: 0,
            npeers: 0,
            ports: [0; FLOOD_PORTS],
            peers: [[0; 16]; FLOOD_PEERS],
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
        // Made of whole words (see `words`): written field by field, the key's last four
        // bytes are two 2-byte stores, which a 4-byte load cannot take from the CPU's
        // store buffer; it waits for them to reach the cache instead, at every frame.
        let words = [
            vni,
            u32::from_ne_bytes([mac[0], mac[1], mac[2], mac[3]]),
            u32::from_ne_bytes([mac[4], mac[5], 0, 0]),
        ];
        // SAFETY: as in `words`, the other way.
        unsafe { core::mem::transmute::<[u32; 3], FdbKey>(words) }
    }

    /// The key as three words, in memory order (the VNI; the MAC's first four bytes; its
    /// last two and the padding): one load each, as [`PairKey::words`].
    #[inline(always)]
    pub const fn words(&self) -> [u32; 3] {
        // SAFETY: FdbKey is repr(C), a u32 then eight bytes, 12 bytes without padding
        // (transmute checks the size), and any bytes are valid words.
        unsafe { core::mem::transmute::<FdbKey, [u32; 3]>(*self) }
    }

    /// `self == other` by [`FdbKey::words`], as [`PairKey::same`]. The padding counts too:
    /// every key is made by [`FdbKey::new`], which zeroes it (and the kernel's hash of a
    /// key covers it alike). Written out rather than [`same_words`] made generic over the
    /// count: its loop cost the TC port program 16 bytes of stack, past the verifier's
    /// limit.
    #[inline(always)]
    pub const fn same(&self, other: &FdbKey) -> bool {
        let (a, b) = (self.words(), other.words());
        (a[0] ^ b[0]) | (a[1] ^ b[1]) | (a[2] ^ b[2]) == 0
    }
}

/// Each CPU remembers what its recent forwarding-table lookups found, in an array of this
/// many entries by [`fdb_memo_index`]: the learning and destination lookups of every frame
/// then cost an array lookup, which the verifier inlines, instead of two calls that hash
/// their keys. A memory holds only while `FDB_EPOCH` has not moved since it was taken.
pub const FDB_MEMO_SIZE: u32 = 1024;

/// `FDB_EPOCH` holds two counts of changes to the forwarding table, each with a single
/// kind of writer, so neither loses the other's increments: the programs' learning writes
/// ([`FDB_EPOCH_LEARNED`], an atomic add) and violind's (its placements and flushes,
/// [`FDB_EPOCH_PLACED`], a read and a write from one thread).
pub const FDB_EPOCH_LEARNED: u32 = 0;
pub const FDB_EPOCH_PLACED: u32 = 1;
pub const FDB_EPOCH_SLOTS: u32 = 2;

/// Position of forwarding-table key `key` in each CPU's memory of lookups. The low bytes
/// of a MAC address tell a lab's or a vendor's VMs apart; the environment is mixed in so
/// that one address in two environments takes two positions. Collisions only cost
/// lookups: a position holds the last key looked up there.
#[inline(always)]
pub const fn fdb_memo_index(key: &FdbKey) -> u32 {
    let [vni, head, tail] = key.words();
    let head = u32::from_be(head);
    fold(
        mac_word(head, u32::from_be(tail) >> 16) ^ vni,
        FDB_MEMO_SIZE,
    )
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
    pub peer: [u8; 16],
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
            peer: [0; 16],
            slot,
        }
    }

    #[inline(always)]
    pub const fn remote(peer: [u8; 16], slot: u32) -> Self {
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
            peer: [0; 16],
            slot: 0,
        }
    }

    /// The peer's address as four words (see [`addr_words`]).
    #[inline(always)]
    pub const fn peer_words(&self) -> [u32; 4] {
        addr_words(self.peer)
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
    use std::vec::Vec;

    #[test]
    fn a_pair_key_holds_the_fields_it_was_made_of() {
        let (src, dst) = ([1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12]);
        let k = PairKey::new(0x0102_0304, src, dst);
        assert_eq!(
            k,
            PairKey {
                vni: 0x0102_0304,
                src,
                dst
            }
        );
        let any = PairKey::new(7, ROUTE_ANY, dst);
        assert_eq!((any.vni, any.src, any.dst), (7, ROUTE_ANY, dst));
        // violind reads the MACs of keys the datapath learned, field by field.
        let mac = [0x52, 0x54, 0x00, 0xab, 0xcd, 0xef];
        let fk = FdbKey::new(4001, mac);
        assert_eq!(
            fk,
            FdbKey {
                vni: 4001,
                mac,
                _pad: [0; 2]
            }
        );
    }

    #[test]
    fn keys_read_in_words_index_as_their_bytes_say() {
        // The positions as defined on the bytes: a MAC's last four bytes in network
        // order, its first two folded over them.
        let mac_word = |m: [u8; 6]| {
            u32::from_be_bytes([m[2], m[3], m[4], m[5]])
                ^ u32::from(u16::from_be_bytes([m[0], m[1]]))
        };
        let macs = [
            [0x52, 0x54, 0x00, 0x12, 0x34, 0x56],
            [0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0xfa],
            [0x02, 0x00, 0x00, 0x00, 0x00, 0x01],
            [0x80, 0x01, 0x7f, 0x10, 0x00, 0xff],
        ];
        for (i, &a) in macs.iter().enumerate() {
            let vni = 0x00ab_cdef ^ i as u32;
            let key = FdbKey::new(vni, a);
            assert_eq!(key.words()[0], vni);
            assert_eq!(fdb_memo_index(&key), fold(mac_word(a) ^ vni, FDB_MEMO_SIZE));
            // The padding is no part of the position.
            let padded = FdbKey {
                _pad: [0xaa, 0x55],
                ..key
            };
            assert_eq!(fdb_memo_index(&padded), fdb_memo_index(&key));
            for &b in &macs {
                let x = mac_word(a).wrapping_mul(0x9e37_79b1) ^ mac_word(b) ^ vni;
                let pair = PairKey::new(vni, a, b);
                assert_eq!(pair_cell_index(&pair), fold(x, PAIR_CELL_COUNT), "{pair:?}");
                let by_fields = PairKey {
                    vni,
                    src: a,
                    dst: b,
                };
                assert_eq!(by_fields.words(), pair.words());
                assert!(pair.same(&PairKey::new(vni, a, b)));
                assert!(!pair.same(&PairKey::new(vni ^ 1, a, b)));
            }
            // Keys that differ in any one byte are not the same.
            for i in 0..6 {
                let mut c = a;
                c[i] ^= 0x80;
                assert!(!key.same(&FdbKey::new(vni, c)));
                assert!(!PairKey::new(vni, a, a).same(&PairKey::new(vni, c, a)));
                assert!(!PairKey::new(vni, a, a).same(&PairKey::new(vni, a, c)));
            }
            assert!(key.same(&FdbKey::new(vni, a)) && !key.same(&FdbKey::new(vni + 1, a)));
        }
    }

    #[test]
    fn indexes_stay_in_their_arrays_and_spread_hosts() {
        assert!(PORT_INDEX_SIZE.is_power_of_two() && PEER_INDEX_SIZE.is_power_of_two());
        assert_eq!(port_index(PORT_INDEX_SIZE + 5), 5);
        assert_eq!(vni_index(VNI_INDEX_SIZE + 1001), 1001);
        // The hosts of a /22 (IPv4-mapped) and of an IPv6 prefix get an index each.
        let mut v4: Vec<u32> = (0..1024u32)
            .map(|i| {
                let mut a = [0u8; 16];
                a[10..12].copy_from_slice(&[0xff, 0xff]);
                a[12..16].copy_from_slice(&[10, 250, (i >> 8) as u8, i as u8]);
                peer_index(&a)
            })
            .collect();
        v4.sort_unstable();
        v4.dedup();
        assert_eq!(v4.len(), 1024);
        let mut a = [0u8; 16];
        a[0..2].copy_from_slice(&[0xfd, 0x00]);
        a[15] = 1;
        let one = peer_index(&a);
        a[15] = 2;
        assert_ne!(one, peer_index(&a));
        assert!(one < PEER_INDEX_SIZE);
    }

    #[test]
    fn memo_positions_spread_a_labs_macs_and_environments() {
        assert!(FDB_MEMO_SIZE.is_power_of_two());
        // 512 VMs of one environment, by the last two bytes of their MACs, each get a
        // position of their own; so does one address in 512 environments.
        let by_mac = |i: u32| {
            fdb_memo_index(&FdbKey::new(
                4001,
                [0x52, 0x54, 0x00, 0x12, (i >> 8) as u8, i as u8],
            ))
        };
        let by_vni = |v: u32| fdb_memo_index(&FdbKey::new(v, [0x52, 0x54, 0, 0x12, 0, 7]));
        for f in [&by_mac as &dyn Fn(u32) -> u32, &by_vni] {
            let mut at: Vec<u32> = (1..=512).map(f).collect();
            assert!(at.iter().all(|&i| i < FDB_MEMO_SIZE));
            at.sort_unstable();
            at.dedup();
            assert_eq!(at.len(), 512);
        }
    }

    #[test]
    fn pair_cells_spread_a_hosts_pairs() {
        assert!(PAIR_CELL_COUNT.is_power_of_two());
        let mac = |i: u32| [0x52, 0x54, 0x00, 0x12, (i >> 8) as u8, i as u8];
        // One VM's 512 destinations each get a cell of their own.
        let mut at: Vec<u32> = (1..=512)
            .map(|d| pair_cell_index(&PairKey::new(4001, mac(0), mac(d))))
            .collect();
        assert!(at.iter().all(|&i| i < PAIR_CELL_COUNT));
        at.sort_unstable();
        at.dedup();
        assert_eq!(at.len(), 512);
        // Every pair among 16 VMs, both ways (240 pairs), leaves at most a few sharing a
        // cell with another (those are counted in the hash map instead), and no pair
        // shares one with its reverse.
        let pairs: Vec<PairKey> = (1..=16)
            .flat_map(|a| (1..=16).map(move |b| (a, b)))
            .filter(|(a, b)| a != b)
            .map(|(a, b)| PairKey::new(4001, mac(a), mac(b)))
            .collect();
        for p in &pairs {
            let back = PairKey::new(p.vni, p.dst, p.src);
            assert_ne!(pair_cell_index(p), pair_cell_index(&back), "{p:?}");
        }
        let mut cells: Vec<u32> = pairs.iter().map(pair_cell_index).collect();
        cells.sort_unstable();
        cells.dedup();
        assert!(
            pairs.len() - cells.len() <= 12,
            "{} cells for {} pairs",
            cells.len(),
            pairs.len()
        );
    }

    #[test]
    fn a_vni_index_entry_answers_for_its_own_vni_only() {
        let e = VniIndexEntry::new(1001, VniInfo { flags: VNI_ROUTED });
        assert_eq!(e.get(1001), Some(VniInfo { flags: VNI_ROUTED }));
        assert_eq!(e.get(1001 + VNI_INDEX_SIZE), None);
        // An empty entry is no environment's, VNI 0's included.
        assert_eq!(VniIndexEntry::default().get(0), None);
    }

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

    /// The departures a shaper gives frames of `len` bytes arriving every `gap_ns`.
    fn departures(s: &mut Shaper, n: usize, len: u64, gap_ns: u64, t0: u64) -> Vec<Option<u64>> {
        (0..n as u64)
            .map(|i| {
                let now = t0 + i * gap_ns;
                let due = s.due(now);
                if due.is_some() {
                    s.charge(now, len);
                }
                due
            })
            .collect()
    }

    #[test]
    fn shaper_lets_its_burst_go_then_spaces_frames_at_its_rate() {
        // 1 MB/s, burst 10 kB: 1000-byte frames all arriving at once.
        let mut s = Shaper::new(1_000_000, 10_000);
        assert_eq!(s.burst_ns, 10_000_000);
        let t0 = 7_000_000_000;
        let d = departures(&mut s, 20, 1000, 0, t0);
        // The burst (and one frame more: it fits when the clock is exactly the burst
        // ahead) leaves at once, then one frame per millisecond.
        assert!(d[..11].iter().all(|x| *x == Some(t0)), "{d:?}");
        for (i, x) in d[11..].iter().enumerate() {
            assert_eq!(
                *x,
                Some(t0 + (i as u64 + 1) * 1_000_000),
                "frame {}",
                i + 11
            );
        }
    }

    #[test]
    fn shaper_holds_a_long_stream_to_its_rate() {
        // 12.5 MB/s (100 Mbit/s), 64 KiB burst; 1500-byte frames offered at twice the rate
        // for a second: the last one leaves after about two seconds, none is dropped
        // while the queue is within the horizon, and what is beyond it is dropped.
        let mut s = Shaper::new(12_500_000, 64 * 1024);
        let gap = 1500 * 1_000_000_000 / 25_000_000;
        let d = departures(&mut s, 16_667, 1500, gap, 0);
        let sent: Vec<u64> = d.iter().flatten().copied().collect();
        let dropped = d.len() - sent.len();
        assert!(
            dropped > 0,
            "a sender at twice the rate must meet the horizon"
        );
        // Admitted bytes over the span of departures: the rate, plus the burst.
        let span = (sent.last().unwrap() - sent[0]) as f64 / 1e9;
        let rate = (sent.len() as f64 - 1.0) * 1500.0 / span;
        assert!((rate / 12.5e6 - 1.0).abs() < 0.02, "{rate} B/s");
        // No frame waits longer than the horizon.
        for (i, x) in d.iter().enumerate() {
            if let Some(at) = x {
                assert!(at - i as u64 * gap <= s.horizon_ns, "frame {i}");
            }
        }
    }

    #[test]
    fn shaper_horizon_scales_with_the_rate_within_its_bounds() {
        // 10 Gbit/s: the queue's bytes take 3.4 ms, the floor wins.
        let fast = Shaper::new(1_250_000_000, 65536);
        assert_eq!(fast.horizon_ns, SHAPER_MIN_HORIZON_NS);
        // 100 Mbit/s: (64 KiB + 4 MiB) at 12.5 MB/s.
        let mid = Shaper::new(12_500_000, 65536);
        assert_eq!(mid.horizon_ns, 340_787_200);
        assert_eq!(mid.horizon_bytes(), 4_259_840);
        assert_eq!(mid.burst_bytes(), 65_536);
        // 10 Mbit/s: the ceiling.
        let slow = Shaper::new(1_250_000, 65536);
        assert_eq!(slow.horizon_ns, SHAPER_MAX_HORIZON_NS);
        // A changed bound keeps what its queue holds, up to its own horizon.
        let mut old = Shaper::new(1_250_000, 65536);
        old.tat_ns = 5_000_000_000;
        let mut new = Shaper::new(12_500_000, 65536);
        new.carry_clock(&old, 4_900_000_000);
        assert_eq!(new.tat_ns, 5_000_000_000);
        new.carry_clock(&old, 1_000_000_000);
        assert_eq!(new.tat_ns, 1_000_000_000 + new.burst_ns + new.horizon_ns);
        // No rate: no bound.
        let mut off = Shaper::new(0, 65536);
        assert_eq!(off.due(5), Some(5));
        off.charge(5, 1 << 20);
        assert_eq!(off.due(5), Some(5));
    }

    #[test]
    fn fdb_kind_reads_the_kind_byte() {
        assert_eq!(FdbEntry::local(7, 3).kind(), Some(FdbKind::Local));
        assert_eq!(
            FdbEntry::remote(crate::packet::v4_mapped([10, 0, 0, 2]), 5).kind(),
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

// The layouts the SAFETY notes below describe; violind re-creates a pinned map whose
// sizes differ (an upgrade across a layout change).
const _: () = assert!(core::mem::size_of::<HostConfig>() == 44);
const _: () = assert!(core::mem::size_of::<FdbEntry>() == 28);
const _: () = assert!(core::mem::size_of::<PeerSlot>() == 28);
const _: () = assert!(core::mem::size_of::<FloodList>() == 584);
const _: () = assert!(core::mem::size_of::<PortIndexEntry>() == 36);
const _: () = assert!(core::mem::size_of::<VniIndexEntry>() == 8);
const _: () = assert!(core::mem::size_of::<PairCell>() == 32);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: HostConfig is repr(C) and Copy, made only of u32 and u8 arrays laid out with
    // no padding (u32, [u8; 16], [u8; 6], u8, u8, 4 x u32: 44 bytes, align 4), so every
    // byte is initialised and every bit pattern is a valid value.
    unsafe impl aya::Pod for super::HostConfig {}
    // SAFETY: PortInfo is repr(C) and Copy: 5 x u32, [u8; 6], [u8; 2], [u8; 4], 32 bytes
    // with no padding at align 4; all fields are integers, so any bit pattern is valid.
    unsafe impl aya::Pod for super::PortInfo {}
    // SAFETY: PortSlot is repr(C) and Copy, two u32: no padding, any bit pattern valid.
    unsafe impl aya::Pod for super::PortSlot {}
    // SAFETY: PortIndexEntry is repr(C) and Copy: a u32 then a PortInfo (32 bytes, align
    // 4), 36 bytes with no padding; all integers, so any bit pattern is valid.
    unsafe impl aya::Pod for super::PortIndexEntry {}
    // SAFETY: VniIndexEntry is repr(C) and Copy: two u32, no padding, any bit pattern
    // valid.
    unsafe impl aya::Pod for super::VniIndexEntry {}
    // SAFETY: PeerSlot is repr(C) and Copy: [u8; 16] then a PeerInfo (12 bytes, align 4)
    // at offset 16, 28 bytes with no padding; all integers, so any bit pattern is valid.
    unsafe impl aya::Pod for super::PeerSlot {}
    // SAFETY: VniInfo is repr(C) and Copy with a single u32 field: no padding, and any bit
    // pattern is valid.
    unsafe impl aya::Pod for super::VniInfo {}
    // SAFETY: PeerInfo is repr(C) and Copy: [u8; 6], u8, u8 then u32 at
    // offset 8, 12 bytes with no padding; all fields are integers, so any bit pattern is valid.
    unsafe impl aya::Pod for super::PeerInfo {}
    // SAFETY: FdbKey is repr(C) and Copy: u32, [u8; 6], [u8; 2] (explicit _pad), 12 bytes
    // with no padding; all fields are integers, so any bit pattern is valid.
    unsafe impl aya::Pod for super::FdbKey {}
    // SAFETY: FdbEntry is repr(C) and Copy: u8, u8, [u8; 2], u32, [u8; 16], u32, 28 bytes
    // with no padding. `kind` is a raw u8 (decoded by kind(), not an enum field), so every
    // bit pattern is a valid value.
    unsafe impl aya::Pod for super::FdbEntry {}
    // SAFETY: FloodList is repr(C) and Copy: 2 x u32, [u32; FLOOD_PORTS] and
    // [[u8; 16]; FLOOD_PEERS], 584 bytes with no padding at align 4; all integers, so any
    // bit pattern is valid.
    unsafe impl aya::Pod for super::FloodList {}
    // SAFETY: PairKey is repr(C) and Copy: u32, [u8; 6], [u8; 6], 16 bytes (a multiple of
    // its align 4, so no tail padding); all integers, so any bit pattern is valid.
    unsafe impl aya::Pod for super::PairKey {}
    // SAFETY: PairCell is repr(C) and Copy: a PairKey (16 bytes, align 4) then a Counter
    // (two u64) at offset 16, 32 bytes with no padding at align 8; all integers, so any
    // bit pattern is valid.
    unsafe impl aya::Pod for super::PairCell {}
    // SAFETY: PairState is repr(C) and Copy: u32, u32, then a Shaper (4 x
    // u64) at offset 8, 40 bytes with no padding at align 8; all integers, so any bit
    // pattern is valid.
    unsafe impl aya::Pod for super::PairState {}
    // SAFETY: repr(C), four u64: no padding, every bit pattern valid.
    unsafe impl aya::Pod for super::Shaper {}
    // SAFETY: repr(C), three u64: no padding, every bit pattern valid.
    unsafe impl aya::Pod for super::StormBucket {}
}
