//! The maps every program shares, and copy-out accessors for the ones read by key.
//!
//! Names, types, sizes and pinning are the contract with violind (which pins and fills
//! them by the names in `dataplane_common::maps::names`): change them only together.

use core::ptr::read_volatile;

use aya_ebpf::{
    bindings::BPF_F_NO_PREALLOC,
    macros::map,
    maps::{
        Array, DevMapHash, HashMap, LruHashMap, LruPerCpuHashMap, PerCpuArray, RingBuf, XskMap,
    },
};
use dataplane_common::{
    counters::{Counter, DropReason, PeerStats, PortStats, ACTION_SLOTS, HOOKS},
    maps::*,
    observe::{ObserveConfig, EVENTS_BYTES},
};

#[map]
pub(crate) static CONFIG: Array<HostConfig> = Array::pinned(1, 0);
#[map]
pub(crate) static PORTS: HashMap<u32, PortInfo> = HashMap::pinned(MAX_SLOTS, 0);
#[map]
pub(crate) static VNIS: HashMap<u32, VniInfo> = HashMap::pinned(MAX_VNIS, 0);
#[map]
pub(crate) static PEERS: HashMap<[u8; 16], PeerInfo> = HashMap::pinned(MAX_PEERS, 0);
#[map]
pub(crate) static FDB: LruHashMap<FdbKey, FdbEntry> = LruHashMap::pinned(FDB_ENTRIES, 0);
/// Counts of changes to `FDB` (see `dataplane_common::maps::FDB_EPOCH_SLOTS`), which
/// end each CPU's memories of it (`crate::memo`).
#[map]
pub(crate) static FDB_EPOCH: Array<u64> = Array::pinned(FDB_EPOCH_SLOTS, 0);
#[map]
pub(crate) static TX_PORTS: DevMapHash = DevMapHash::pinned(MAX_SLOTS, 0);
#[map]
pub(crate) static XSKS: XskMap = XskMap::pinned(MAX_XSKS, 0);
#[map]
pub(crate) static PORT_STATS: PerCpuArray<PortStats> = PerCpuArray::pinned(MAX_SLOTS, 0);
#[map]
pub(crate) static PEER_STATS: PerCpuArray<PeerStats> = PerCpuArray::pinned(MAX_PEERS, 0);
#[map]
pub(crate) static DROPS: PerCpuArray<u64> = PerCpuArray::pinned(DropReason::COUNT, 0);
#[map]
pub(crate) static ACTIONS: PerCpuArray<u64> =
    PerCpuArray::pinned(HOOKS.len() as u32 * ACTION_SLOTS, 0);
#[map]
pub(crate) static FLOOD: HashMap<u32, FloodList> = HashMap::pinned(MAX_VNIS, BPF_F_NO_PREALLOC);
/// Ports and peers by slot, beside their hash maps by key: the lookups of the forwarding
/// path that start from a forwarding-table entry (which holds the slot) take an array
/// lookup instead of a hash lookup.
#[map]
pub(crate) static PORT_SLOTS: Array<PortSlot> = Array::pinned(MAX_SLOTS, 0);
#[map]
pub(crate) static PEER_SLOTS: Array<PeerSlot> = Array::pinned(MAX_PEERS, 0);
/// Direct-mapped indexes in front of `PORTS`, `PEERS` and `VNIS` (see
/// `dataplane_common::maps::PORT_INDEX_SIZE`); a miss falls back to the hash map.
#[map]
pub(crate) static PORT_INDEX: Array<PortIndexEntry> = Array::pinned(PORT_INDEX_SIZE, 0);
#[map]
pub(crate) static PEER_INDEX: Array<PeerSlot> = Array::pinned(PEER_INDEX_SIZE, 0);
#[map]
pub(crate) static VNI_INDEX: Array<VniIndexEntry> = Array::pinned(VNI_INDEX_SIZE, 0);
#[map]
pub(crate) static PAIRS: HashMap<PairKey, PairState> = HashMap::pinned(MAX_PAIRS, 0);
#[map]
pub(crate) static ROUTES: HashMap<PairKey, FdbEntry> = HashMap::pinned(MAX_ROUTES, 0);
#[map]
pub(crate) static PAIR_TRAFFIC: LruPerCpuHashMap<PairKey, Counter> =
    LruPerCpuHashMap::pinned(MAX_PAIR_TRAFFIC, 0);
/// Pinned like PAIR_TRAFFIC: a pair's counts live in both (see PAIR_CELL_COUNT).
#[map]
pub(crate) static PAIR_CELLS: PerCpuArray<PairCell> = PerCpuArray::pinned(PAIR_CELL_COUNT, 0);
#[map]
pub(crate) static STORM: Array<StormBucket> = Array::pinned(MAX_SLOTS, 0);
#[map]
pub(crate) static VM_BOUNDS: Array<Shaper> = Array::pinned(MAX_SLOTS, 0);
#[map]
pub(crate) static OBSERVE: Array<ObserveConfig> = Array::pinned(1, 0);
/// Each CPU's bound on the drops it describes (a storm of drops must not become a storm
/// of events).
#[map]
pub(crate) static OBSERVE_BUDGET: PerCpuArray<StormBucket> = PerCpuArray::pinned(1, 0);
/// Each CPU's bound on the forwarded frames it describes: a budget of their own, so that
/// samples never take a drop's place (a map of its own, not a second entry of
/// `OBSERVE_BUDGET`: a daemon upgraded in place reuses that pin as it is).
#[map]
pub(crate) static OBSERVE_SAMPLE_BUDGET: PerCpuArray<StormBucket> = PerCpuArray::pinned(1, 0);
/// Each CPU's count of forwarded frames still to pass before the next sample.
#[map]
pub(crate) static OBSERVE_SKIP: PerCpuArray<u32> = PerCpuArray::pinned(1, 0);
#[map]
pub(crate) static EVENTS: RingBuf = RingBuf::pinned(EVENTS_BYTES, 0);

// The hash maps' accessors copy values out: violind may update or delete an entry while
// a program runs, so a reference into a hash map must not outlive the lookup.

/// Read in place, not copied: the array's one element is never deleted, and violind
/// rewrites it in place, with the same bytes unless the host's underlay or its debug
/// setting changes (a moment whose frames in flight are lost anyway); a copy would be as
/// torn as field reads by such a write. The copy cost every frame its stores and loads.
#[inline(always)]
pub(crate) fn host_config() -> Option<&'static HostConfig> {
    CONFIG.get(0)
}

#[inline(always)]
pub(crate) fn port(ifindex: u32) -> Option<PortInfo> {
    if let Some(e) = PORT_INDEX.get_ptr(port_index(ifindex)) {
        // violind changes an entry's info only while its key is empty (see set_slot in
        // violind's topology): the info counts if the key held before and after it was
        // copied. A half-written one would turn the port's checks off. (No frame arrives
        // on ifindex 0, the empty key.)
        // SAFETY: an element of the array, live for this program run. The barriers keep
        // the plain copy between the two volatile reads of the key (a volatile copy would
        // be read byte by byte).
        unsafe {
            if read_volatile(&(*e).ifindex) == ifindex {
                barrier();
                let info = (*e).info;
                barrier();
                if read_volatile(&(*e).ifindex) == ifindex {
                    return Some(info);
                }
            }
        }
    }
    // SAFETY: copied out of the map before use.
    unsafe { PORTS.get(ifindex) }.copied()
}

/// A compiler barrier: no memory access moves across it (an empty assembly block that may
/// touch any memory; BPF has no fence instruction to select for a compiler fence).
#[inline(always)]
fn barrier() {
    // SAFETY: an empty instruction sequence.
    unsafe { core::arch::asm!("", options(nostack, preserves_flags)) };
}

#[inline(always)]
pub(crate) fn vni(vni: u32) -> Option<VniInfo> {
    if let Some(info) = VNI_INDEX.get(vni_index(vni)).and_then(|e| e.get(vni)) {
        return Some(info);
    }
    // SAFETY: copied out of the map before use.
    unsafe { VNIS.get(vni) }.copied()
}

/// The peer as configured, resolved or not; forwarding to it goes through
/// [`crate::tunnel::resolve_entry`] or [`crate::tunnel::resolve_peer`] instead. By hash
/// alone: a flood's loop resolves each peer through this, and a branch per lookup would
/// multiply the paths the verifier walks past its limit.
#[inline(always)]
pub(crate) fn peer(addr: &[u8; 16]) -> Option<PeerInfo> {
    // SAFETY: copied out of the map before use.
    unsafe { PEERS.get(addr) }.copied()
}

/// [`peer`] for the sender of a tunnelled frame, once per frame: from its index entry
/// when that holds it. Without [`port`]'s second look at the key, whose copies the
/// underlay programs' stacks have no room for: violind writes the info only behind an
/// empty key, so a frame reads a wrong one only if stalled for two system calls between
/// its key and its info, and then learns a wrong counter slot for its sender (the
/// forwarding path checks a slot's occupant before use).
#[inline(always)]
pub(crate) fn sender(addr: &[u8; 16]) -> Option<PeerInfo> {
    let a = addr_words(*addr);
    match PEER_INDEX.get(peer_index(addr)) {
        // An empty entry's key is all zero, and a frame from the unspecified address
        // must not find it.
        Some(e) if same_words(e.addr_words(), a) && !same_words(a, [0; 4]) => Some(e.info),
        _ => peer(addr),
    }
}

/// A flood list is read in place, not copied: 584 bytes on the stack would leave the TC
/// port program too little for aya-log's call. That is sound because FLOOD allocates its
/// elements (BPF_F_NO_PREALLOC): an update replaces the element and frees the old one
/// only after this program has run, so the list read is whole, old or new.
#[inline(always)]
pub(crate) fn flood_list(vni: u32) -> Option<&'static FloodList> {
    // SAFETY: see above; the reference is used only during this program run.
    unsafe { FLOOD.get(vni) }
}
