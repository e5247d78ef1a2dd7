//! Violin's datapath: one XDP program for VM ports, one for the underlay NIC.
//!
//! Parsing and validation live in `dataplane_common::packet` (unit-tested on the host);
//! this file binds them to the maps, counters and XDP helpers.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC,
        xdp_action::{XDP_DROP, XDP_PASS, XDP_REDIRECT},
        BPF_ADJ_ROOM_ENCAP_L2_SHIFT, BPF_F_ADJ_ROOM_ENCAP_L2_ETH, BPF_F_ADJ_ROOM_ENCAP_L3_IPV4,
        BPF_F_ADJ_ROOM_ENCAP_L4_UDP, TC_ACT_REDIRECT, TC_ACT_SHOT,
    },
    helpers::generated::{
        bpf_ktime_get_ns, bpf_redirect, bpf_skb_change_head, bpf_xdp_adjust_head,
        bpf_xdp_adjust_tail, bpf_xdp_get_buff_len,
    },
    macros::{classifier, map, xdp},
    maps::{Array, DevMapHash, HashMap, LruHashMap, LruPerCpuHashMap, PerCpuArray, XskMap},
    programs::{TcContext, XdpContext},
};
use aya_log_ebpf::debug;
use dataplane_common::{
    counters::{
        action_index, Counter, DropReason, Hook, PeerStats, PortStats, ACTION_FLOOD, ACTION_SLOTS,
    },
    maps::*,
    packet::{
        check_source, classify_port, classify_underlay, fits_underlay, flow_hash, gso_segment_len,
        is_multicast, is_zero, source_port, EthHdr, Frame, OuterHeaders, Tunnel, UnderlayVerdict,
        VxlanInfo,
        ETH_HLEN, IPV4_HLEN, UDP_HLEN, VXLAN_HLEN,
    },
    ENCAP_OVERHEAD,
};

#[map]
static CONFIG: Array<HostConfig> = Array::pinned(1, 0);
#[map]
static PORTS: HashMap<u32, PortInfo> = HashMap::pinned(MAX_SLOTS, 0);
#[map]
static VNIS: HashMap<u32, VniInfo> = HashMap::pinned(MAX_VNIS, 0);
#[map]
static PEERS: HashMap<[u8; 4], PeerInfo> = HashMap::pinned(MAX_PEERS, 0);
#[map]
static FDB: LruHashMap<FdbKey, FdbEntry> = LruHashMap::pinned(FDB_ENTRIES, 0);
#[map]
static TX_PORTS: DevMapHash = DevMapHash::pinned(MAX_SLOTS, 0);
#[map]
static XSKS: XskMap = XskMap::pinned(MAX_XSKS, 0);
#[map]
static PORT_STATS: PerCpuArray<PortStats> = PerCpuArray::pinned(MAX_SLOTS, 0);
#[map]
static PEER_STATS: PerCpuArray<PeerStats> = PerCpuArray::pinned(MAX_PEERS, 0);
#[map]
static DROPS: PerCpuArray<u64> = PerCpuArray::pinned(DropReason::COUNT, 0);
#[map]
static ACTIONS: PerCpuArray<u64> = PerCpuArray::pinned(3 * ACTION_SLOTS, 0);
#[map]
static FLOOD: HashMap<u32, FloodList> = HashMap::pinned(MAX_VNIS, 0);
#[map]
static PAIRS: HashMap<PairKey, PairState> = HashMap::pinned(MAX_PAIRS, 0);
#[map]
static ROUTES: HashMap<PairKey, FdbEntry> = HashMap::pinned(MAX_ROUTES, 0);
#[map]
static PAIR_TRAFFIC: LruPerCpuHashMap<PairKey, Counter> =
    LruPerCpuHashMap::pinned(MAX_PAIR_TRAFFIC, 0);

/// The packet buffer seen through the bounds-checked [`Frame`] interface.
struct Pkt<'a>(&'a XdpContext);

impl Frame for Pkt<'_> {
    #[inline(always)]
    fn total_len(&self) -> usize {
        // SAFETY: helper on the program's own context.
        unsafe { bpf_xdp_get_buff_len(self.0.ctx) as usize }
    }

    #[inline(always)]
    fn load<T: Copy>(&self, off: usize) -> Option<T> {
        let start = self.0.data();
        let end = self.0.data_end();
        if start + off + core::mem::size_of::<T>() > end {
            return None;
        }
        // SAFETY: the range lies inside the first buffer, checked just above.
        Some(unsafe { core::ptr::read_unaligned((start + off) as *const T) })
    }
}

#[inline(always)]
fn bump(map: &PerCpuArray<u64>, index: u32) {
    if let Some(p) = map.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer.
        unsafe { *p += 1 };
    }
}

#[inline(always)]
fn port_stats(slot: u32) -> Option<&'static mut PortStats> {
    // SAFETY: per-CPU slot, no concurrent writer.
    PORT_STATS.get_ptr_mut(slot).map(|p| unsafe { &mut *p })
}

#[inline(always)]
fn peer_stats(slot: u32) -> Option<&'static mut PeerStats> {
    // SAFETY: per-CPU slot, no concurrent writer.
    PEER_STATS.get_ptr_mut(slot).map(|p| unsafe { &mut *p })
}

#[inline(always)]
fn drop_frame(ctx: &XdpContext, slot: u32, reason: DropReason, len: usize) -> u32 {
    bump(&DROPS, reason as u32);
    if let Some(s) = port_stats(slot) {
        s.dropped.add(len as u64);
    }
    debug!(ctx, "drop slot={} reason={}", slot, reason as u32);
    XDP_DROP
}

#[inline(always)]
fn host_config() -> Option<HostConfig> {
    CONFIG.get(0).copied()
}

/// Records where a source MAC lives, writing only when that changed: a map write per
/// packet would bounce the entry's cache line between CPUs.
#[inline(always)]
fn learn(key: &FdbKey, entry: FdbEntry) {
    // SAFETY: the value is copied out before use.
    if let Some(old) = unsafe { FDB.get(key) } {
        if old.is_static() || *old == entry {
            return;
        }
    }
    let _ = FDB.insert(key, entry, 0);
}

/// The forwarding rule's decision for a frame of a routed environment; `None` when no
/// rule matches (the frame is then forwarded as learned).
#[inline(always)]
fn route(vni: u32, src: [u8; 6], dst: [u8; 6]) -> Option<FdbEntry> {
    let keys = route_keys(vni, src, dst);
    // SAFETY (all four): copied out of the map before use.
    let hit = unsafe {
        ROUTES
            .get(&keys[0])
            .or_else(|| ROUTES.get(&keys[1]))
            .or_else(|| ROUTES.get(&keys[2]))
            .or_else(|| ROUTES.get(&keys[3]))
    };
    hit.copied().filter(|e| e.kind != ROUTE_NO_RULE)
}

/// Where a frame from a VM port that passed its policies goes.
enum Next {
    To(FdbEntry),
    /// Broadcast, multicast or unknown: replicate (slow path in XDP, in-kernel in TC).
    Flood,
}

/// Learns the sender, counts the pair, and decides by rule, else by the forwarding table;
/// the part of a VM port's path both port programs share.
#[inline(always)]
fn port_next(port: &PortInfo, ifindex: u32, eth: &EthHdr, len: usize) -> Next {
    learn(
        &FdbKey::new(port.vni, eth.src),
        FdbEntry::local(ifindex, port.slot),
    );
    count_pair(port.vni, eth, len);
    if port.flags & PORT_ROUTED != 0 {
        if let Some(d) = route(port.vni, eth.src, eth.dst) {
            return Next::To(d);
        }
    }
    if is_multicast(&eth.dst) {
        return Next::Flood;
    }
    // SAFETY: copied out of the map before use.
    match unsafe { FDB.get(FdbKey::new(port.vni, eth.dst)) } {
        Some(d) => Next::To(*d),
        None => Next::Flood,
    }
}

/// Counts a VM's unicast frame to another VM (the local traffic matrix VTTIF reads).
#[inline(always)]
fn count_pair(vni: u32, eth: &EthHdr, len: usize) {
    if is_multicast(&eth.dst) {
        return;
    }
    let key = PairKey::new(vni, eth.src, eth.dst);
    if PAIR_TRAFFIC.get_ptr_mut(&key).is_none() {
        let _ = PAIR_TRAFFIC.insert(&key, &Counter::default(), 0);
    }
    if let Some(c) = PAIR_TRAFFIC.get_ptr_mut(&key) {
        // SAFETY: this CPU's copy of the entry.
        unsafe { (*c).add(len as u64) };
    }
}

/// Hands a frame to `violind`'s AF_XDP socket for this interface and rx queue.
#[inline(always)]
fn to_slow_path(ctx: &XdpContext, slot: u32, xsk_base: u32, queues: u32, len: usize) -> u32 {
    let queue = ctx.rx_queue_index();
    if queue >= queues {
        return drop_frame(ctx, slot, DropReason::SlowPathDown, len);
    }
    match XSKS.redirect(xsk_base + queue, 0) {
        Ok(action) => {
            if let Some(s) = port_stats(slot) {
                s.to_slow_path.add(len as u64);
            }
            action
        }
        Err(_) => drop_frame(ctx, slot, DropReason::SlowPathDown, len),
    }
}

#[inline(always)]
fn redirect_to_port(ctx: &XdpContext, from_slot: u32, to: &FdbEntry, len: usize) -> u32 {
    match TX_PORTS.redirect(to.ifindex, 0) {
        Ok(action) => {
            if let Some(s) = port_stats(to.slot) {
                s.tx.add(len as u64);
            }
            action
        }
        Err(_) => drop_frame(ctx, from_slot, DropReason::RedirectFailed, len),
    }
}

/// Policies on a frame from a VM port, enforced where the VM cannot reach: the source
/// must be the port's own, and in environments with a pair policy a unicast frame must be
/// between an allowed pair and within the pair's traffic bound.
#[inline(always)]
fn port_policy<F: Frame>(
    f: &F,
    port: &PortInfo,
    eth: &EthHdr,
    len: usize,
) -> Result<(), DropReason> {
    check_source(f, eth, port.flags, &port.mac, &port.ip)?;
    if port.flags & (PORT_RESTRICTED | PORT_LIMITED) == 0 || is_multicast(&eth.dst) {
        return Ok(());
    }
    let key = PairKey::new(port.vni, eth.src, eth.dst);
    let Some(state) = PAIRS.get_ptr_mut(key) else {
        if port.flags & PORT_RESTRICTED != 0 {
            return Err(DropReason::NotAllowed);
        }
        return Ok(());
    };
    // SAFETY: the entry stays valid for this program run; races between CPUs only blur
    // the bucket (see PairState).
    let state = unsafe { &mut *state };
    if port.flags & PORT_RESTRICTED != 0 && state.flags & PAIR_ALLOWED == 0 {
        return Err(DropReason::NotAllowed);
    }
    // SAFETY: helper without arguments.
    if state.flags & PAIR_LIMITED != 0 && !state.take(unsafe { bpf_ktime_get_ns() }, len as u64) {
        return Err(DropReason::RateLimited);
    }
    Ok(())
}

#[xdp(frags)]
pub fn violin_port(ctx: XdpContext) -> u32 {
    let action = port_frame(&ctx);
    bump(&ACTIONS, action_index(Hook::Port, action));
    action
}

#[inline(always)]
fn port_frame(ctx: &XdpContext) -> u32 {
    let pkt = Pkt(ctx);
    let len = pkt.total_len();
    let ifindex = ctx.ingress_ifindex() as u32;
    // SAFETY: copied out of the map before use.
    let Some(port) = (unsafe { PORTS.get(ifindex) }).copied() else {
        return drop_frame(ctx, UNDERLAY_SLOT, DropReason::UnknownPort, len);
    };
    if let Some(s) = port_stats(port.slot) {
        s.rx.add(len as u64);
    }
    let eth = match classify_port(&pkt) {
        Ok(eth) => eth,
        Err(reason) => return drop_frame(ctx, port.slot, reason, len),
    };
    if let Err(reason) = port_policy(&pkt, &port, &eth, len) {
        return drop_frame(ctx, port.slot, reason, len);
    }
    let dst = match port_next(&port, ifindex, &eth, len) {
        Next::To(d) => d,
        Next::Flood => return to_slow_path(ctx, port.slot, port.xsk_base, port.queues, len),
    };
    if dst.kind == FDB_LOCAL {
        if dst.ifindex == ifindex {
            return drop_frame(ctx, port.slot, DropReason::Hairpin, len);
        }
        return redirect_to_port(ctx, port.slot, &dst, len);
    }
    encapsulate(ctx, &port, &dst, len)
}

#[inline(always)]
fn encapsulate(ctx: &XdpContext, port: &PortInfo, dst: &FdbEntry, len: usize) -> u32 {
    let Some(cfg) = host_config() else {
        return drop_frame(ctx, port.slot, DropReason::NoRoute, len);
    };
    if !fits_underlay(len, cfg.underlay_mtu) {
        return drop_frame(ctx, port.slot, DropReason::TooBig, len);
    }
    // SAFETY: copied out of the map before use.
    let Some(peer) = (unsafe { PEERS.get(dst.peer) }).copied() else {
        return drop_frame(ctx, port.slot, DropReason::NoRoute, len);
    };
    if peer.resolved == 0 {
        return drop_frame(ctx, port.slot, DropReason::NoRoute, len);
    }
    let sport = source_port(flow_hash(&Pkt(ctx), 0));
    // SAFETY: helper on the program's own context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(ENCAP_OVERHEAD as i32)) } != 0 {
        return drop_frame(ctx, port.slot, DropReason::NoHeadroom, len);
    }
    let out = TunnelOut {
        cfg: &cfg,
        peer_addr: dst.peer,
        peer: &peer,
        vni: port.vni,
        sport,
        inner_len: len,
    };
    send_tunnelled(ctx, &out, port.slot, DropReason::NoHeadroom, len)
}

/// Where a frame whose 50 bytes of outer headers are in front of it goes.
struct TunnelOut<'a> {
    cfg: &'a HostConfig,
    peer_addr: [u8; 4],
    peer: &'a PeerInfo,
    vni: u32,
    sport: u16,
    inner_len: usize,
}

/// Writes the outer headers at the start of the buffer and sends the frame out of the
/// underlay to the peer; a buffer too short for them is dropped as `short`.
#[inline(always)]
fn send_tunnelled(
    ctx: &XdpContext,
    out: &TunnelOut,
    slot: u32,
    short: DropReason,
    len: usize,
) -> u32 {
    let start = ctx.data();
    if start + ENCAP_OVERHEAD as usize > ctx.data_end() {
        return drop_frame(ctx, slot, short, len);
    }
    let tunnel = Tunnel {
        src_mac: out.cfg.underlay_mac,
        dst_mac: out.peer.next_hop_mac,
        src_ip: out.cfg.underlay_addr,
        dst_ip: out.peer_addr,
    };
    let outer = OuterHeaders::new(&tunnel, out.vni, out.sport, out.inner_len);
    // SAFETY: 50 bytes at `start` were bounds-checked above.
    unsafe { core::ptr::write_unaligned(start as *mut OuterHeaders, outer) };
    match TX_PORTS.redirect(out.cfg.underlay_ifindex, 0) {
        Ok(action) => {
            if let Some(s) = peer_stats(out.peer.slot) {
                s.tx.add((out.inner_len + ENCAP_OVERHEAD as usize) as u64);
            }
            action
        }
        Err(_) => drop_frame(ctx, slot, DropReason::RedirectFailed, len),
    }
}

#[xdp(frags)]
pub fn violin_underlay(ctx: XdpContext) -> u32 {
    let action = underlay_frame(&ctx);
    bump(&ACTIONS, action_index(Hook::Underlay, action));
    action
}

#[inline(always)]
fn underlay_frame(ctx: &XdpContext) -> u32 {
    let Some(cfg) = host_config() else {
        return XDP_PASS;
    };
    let pkt = Pkt(ctx);
    let len = pkt.total_len();
    // SAFETY: copied out of the map before use.
    let verdict = classify_underlay(&pkt, cfg.underlay_addr, |addr| unsafe {
        PEERS.get(addr).copied()
    });
    let v = match verdict {
        UnderlayVerdict::Pass => return XDP_PASS,
        UnderlayVerdict::Drop(reason) => return drop_frame(ctx, UNDERLAY_SLOT, reason, len),
        UnderlayVerdict::Vxlan(v) => v,
    };
    if let Some(s) = port_stats(UNDERLAY_SLOT) {
        s.rx.add(len as u64);
    }
    // SAFETY: copied out of the map before use.
    let Some(vni_info) = (unsafe { VNIS.get(v.vni) }).copied() else {
        return drop_frame(ctx, UNDERLAY_SLOT, DropReason::UnknownVni, len);
    };
    if let Some(s) = peer_stats(v.peer_info.slot) {
        s.rx.add(len as u64);
    }
    if !is_multicast(&v.inner.src) && !is_zero(&v.inner.src) {
        learn(
            &FdbKey::new(v.vni, v.inner.src),
            FdbEntry::remote(v.peer, v.peer_info.slot),
        );
    }
    if vni_info.flags & VNI_ROUTED != 0 {
        if let Some(to) = route(v.vni, v.inner.src, v.inner.dst) {
            if to.kind == FDB_REMOTE {
                return transit(ctx, &cfg, &v, &to, len);
            }
            return decapsulate(ctx, &v, &to, len);
        }
    }
    // BUM and unknown unicast go up whole: the slow path needs the VNI from the header.
    if is_multicast(&v.inner.dst) {
        return to_slow_path(
            ctx,
            UNDERLAY_SLOT,
            cfg.underlay_xsk_base,
            cfg.underlay_queues,
            len,
        );
    }
    // SAFETY: copied out of the map before use.
    let dst = unsafe { FDB.get(FdbKey::new(v.vni, v.inner.dst)) }.copied();
    let Some(dst) = dst.filter(|d| d.kind == FDB_LOCAL) else {
        // Unknown here, or known as remote (stale): flood to local ports only, never
        // back onto the underlay (split horizon).
        return to_slow_path(
            ctx,
            UNDERLAY_SLOT,
            cfg.underlay_xsk_base,
            cfg.underlay_queues,
            len,
        );
    };
    decapsulate(ctx, &v, &dst, len)
}

/// Strips the outer headers and hands the inner frame to a local port.
#[inline(always)]
fn decapsulate(ctx: &XdpContext, v: &VxlanInfo<PeerInfo>, to: &FdbEntry, len: usize) -> u32 {
    // SAFETY: helpers on the program's own context.
    if v.trailer > 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, -(v.trailer as i32)) } != 0 {
        return drop_frame(ctx, UNDERLAY_SLOT, DropReason::BadLength, len);
    }
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, ENCAP_OVERHEAD as i32) } != 0 {
        return drop_frame(ctx, UNDERLAY_SLOT, DropReason::NoHeadroom, len);
    }
    let inner_len = len - v.trailer - ENCAP_OVERHEAD as usize;
    redirect_to_port(ctx, UNDERLAY_SLOT, to, inner_len)
}

/// A rule at this host sends a frame that arrived over one overlay link on over another
/// (VNET's multi-hop paths): the outer headers are rewritten for the next host in place,
/// the inner frame is untouched.
#[inline(always)]
fn transit(ctx: &XdpContext, cfg: &HostConfig, v: &VxlanInfo<PeerInfo>, to: &FdbEntry, len: usize) -> u32 {
    if to.peer == v.peer {
        return drop_frame(ctx, UNDERLAY_SLOT, DropReason::Loop, len);
    }
    // SAFETY: copied out of the map before use.
    let Some(peer) = (unsafe { PEERS.get(to.peer) }).copied() else {
        return drop_frame(ctx, UNDERLAY_SLOT, DropReason::NoRoute, len);
    };
    if peer.resolved == 0 {
        return drop_frame(ctx, UNDERLAY_SLOT, DropReason::NoRoute, len);
    }
    // SAFETY: helper on the program's own context.
    if v.trailer > 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, -(v.trailer as i32)) } != 0 {
        return drop_frame(ctx, UNDERLAY_SLOT, DropReason::BadLength, len);
    }
    let inner_len = len - v.trailer - ENCAP_OVERHEAD as usize;
    let sport = source_port(flow_hash(&Pkt(ctx), ENCAP_OVERHEAD as usize));
    let out = TunnelOut {
        cfg,
        peer_addr: to.peer,
        peer: &peer,
        vni: v.vni,
        sport,
        inner_len,
    };
    send_tunnelled(ctx, &out, UNDERLAY_SLOT, DropReason::TruncatedOuter, len)
}

/// An skb seen through the [`Frame`] interface (bpf_skb_load_bytes: works on paged data).
struct Skb<'a>(&'a TcContext);

impl Frame for Skb<'_> {
    #[inline(always)]
    fn total_len(&self) -> usize {
        self.0.len() as usize
    }

    #[inline(always)]
    fn load<T: Copy>(&self, off: usize) -> Option<T> {
        self.0.load::<T>(off).ok()
    }
}

/// What a TC verdict counts as in ACTIONS.
#[inline(always)]
fn tc_action_slot(verdict: i32) -> u32 {
    match verdict {
        TC_ACT_SHOT => XDP_DROP,
        TC_ACT_REDIRECT => XDP_REDIRECT,
        _ => XDP_PASS,
    }
}

#[inline(always)]
fn tc_drop(slot: u32, reason: DropReason, len: usize) -> i32 {
    bump(&DROPS, reason as u32);
    if let Some(s) = port_stats(slot) {
        s.dropped.add(len as u64);
    }
    TC_ACT_SHOT
}

/// VM ports in TC mode (clsact ingress, `port_mode = "tc"`). Unlike XDP, this keeps the
/// skb: a VM's TSO super-frames and pending checksums travel encapsulated as one GSO skb
/// (the kernel segments them as a tunnel), which is what bulk TCP needs.
#[classifier]
pub fn violin_port_tc(ctx: TcContext) -> i32 {
    let verdict = port_skb(&ctx);
    let slot = if verdict == FLOODED {
        ACTION_FLOOD
    } else {
        tc_action_slot(verdict)
    };
    bump(&ACTIONS, action_index(Hook::PortTc, slot));
    if verdict == FLOODED {
        TC_ACT_SHOT
    } else {
        verdict
    }
}

/// Internal verdict: the copies went out, the original is consumed.
const FLOODED: i32 = -2;

#[inline(always)]
fn port_skb(ctx: &TcContext) -> i32 {
    let skb = Skb(ctx);
    let len = skb.total_len();
    // SAFETY: reading the context's own field.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    // SAFETY: copied out of the map before use.
    let Some(port) = (unsafe { PORTS.get(ifindex) }).copied() else {
        return tc_drop(UNDERLAY_SLOT, DropReason::UnknownPort, len);
    };
    if let Some(s) = port_stats(port.slot) {
        s.rx.add(len as u64);
    }
    let eth = match classify_port(&skb) {
        Ok(eth) => eth,
        Err(reason) => return tc_drop(port.slot, reason, len),
    };
    if let Err(reason) = port_policy(&skb, &port, &eth, len) {
        return tc_drop(port.slot, reason, len);
    }
    let dst = match port_next(&port, ifindex, &eth, len) {
        Next::To(d) => d,
        Next::Flood => return flood_skb(ctx, &port, ifindex, &eth, len),
    };
    if dst.kind == FDB_LOCAL {
        if dst.ifindex == ifindex {
            return tc_drop(port.slot, DropReason::Hairpin, len);
        }
        if let Some(s) = port_stats(dst.slot) {
            s.tx.add(len as u64);
        }
        // SAFETY: helper call; egress of the other port hands the skb to its VM intact.
        return unsafe { bpf_redirect(dst.ifindex, 0) } as i32;
    }
    let Some(cfg) = host_config() else {
        return tc_drop(port.slot, DropReason::NoRoute, len);
    };
    // SAFETY: copied out of the map before use.
    let Some(peer) = (unsafe { PEERS.get(dst.peer) }).copied() else {
        return tc_drop(port.slot, DropReason::NoRoute, len);
    };
    if peer.resolved == 0 {
        return tc_drop(port.slot, DropReason::NoRoute, len);
    }
    if let Err(reason) = tc_encap(ctx, &cfg, &eth, len) {
        return tc_drop(port.slot, reason, len);
    }
    if tc_write_outer(ctx, &cfg, port.vni, dst.peer, &peer, &eth, len).is_err() {
        return tc_drop(port.slot, DropReason::NoHeadroom, len);
    }
    if let Some(s) = peer_stats(peer.slot) {
        s.tx.add((len + ENCAP_OVERHEAD as usize) as u64);
    }
    // SAFETY: helper call.
    unsafe { bpf_redirect(cfg.underlay_ifindex, 0) as i32 }
}

/// Checks the frame (each segment, for a GSO super-frame) fits the underlay once
/// encapsulated, then opens 50 bytes after the Ethernet header and marks the skb as UDP
/// tunnelled so the kernel segments it correctly later.
#[inline(always)]
fn tc_encap(ctx: &TcContext, cfg: &HostConfig, eth: &EthHdr, len: usize) -> Result<(), DropReason> {
    // SAFETY: reading the context's own field.
    let gso_size = unsafe { (*ctx.skb.skb).gso_size } as usize;
    let wire_len = if gso_size > 0 {
        gso_segment_len(&Skb(ctx), gso_size)
    } else {
        len
    };
    if !fits_underlay(wire_len, cfg.underlay_mtu) {
        return Err(DropReason::TooBig);
    }
    let ethertype = u16::from_be_bytes(eth.ethertype);
    if ethertype != 0x0800 && ethertype != 0x86dd {
        // bpf_skb_adjust_room handles IP only; ARP and the like are never GSO, so plain
        // headroom in front of the frame does. The inner Ethernet header stays in place.
        // SAFETY: helper on the program's own skb.
        let ret = unsafe { bpf_skb_change_head(ctx.skb.skb, ENCAP_OVERHEAD, 0) };
        return if ret == 0 {
            Ok(())
        } else {
            Err(DropReason::NoHeadroom)
        };
    }
    let flags = (BPF_F_ADJ_ROOM_ENCAP_L3_IPV4
        | BPF_F_ADJ_ROOM_ENCAP_L4_UDP
        | BPF_F_ADJ_ROOM_ENCAP_L2_ETH) as u64
        | ((ETH_HLEN as u64) << BPF_ADJ_ROOM_ENCAP_L2_SHIFT);
    ctx.adjust_room(ENCAP_OVERHEAD as i32, BPF_ADJ_ROOM_MAC, flags)
        .map_err(|_| DropReason::NoHeadroom)
}

/// Writes the outer headers (and the moved inner Ethernet header) of an skb whose room
/// was opened by [`tc_encap`]. For a GSO super-frame the IP and UDP lengths are fixed up
/// per segment by the kernel's tunnel segmentation.
#[inline(always)]
fn tc_write_outer(
    ctx: &TcContext,
    cfg: &HostConfig,
    vni: u32,
    peer_addr: [u8; 4],
    peer: &PeerInfo,
    eth: &EthHdr,
    len: usize,
) -> Result<(), ()> {
    let tunnel = Tunnel {
        src_mac: cfg.underlay_mac,
        dst_mac: peer.next_hop_mac,
        src_ip: cfg.underlay_addr,
        dst_ip: peer_addr,
    };
    // A GSO super-frame may exceed what the 16-bit IP length holds before segmentation.
    let max_inner = 0xffff - IPV4_HLEN - UDP_HLEN - VXLAN_HLEN;
    let inner_len = if len > max_inner { max_inner } else { len };
    let sport = source_port(flow_hash(&Skb(ctx), ENCAP_OVERHEAD as usize));
    let outer = OuterHeaders::new(&tunnel, vni, sport, inner_len);
    ctx.store(0, &outer, 0).map_err(|_| ())?;
    ctx.store(ENCAP_OVERHEAD as usize, eth, 0).map_err(|_| ())
}

/// Broadcast, multicast or unknown unicast from a VM port in TC mode: a copy to every
/// other local port of the environment, then, encapsulated once, a copy to every remote
/// host serving it, all in the kernel (bpf_clone_redirect).
#[inline(always)]
fn flood_skb(ctx: &TcContext, port: &PortInfo, ifindex: u32, eth: &EthHdr, len: usize) -> i32 {
    // SAFETY: copied out of the map before use.
    let Some(list) = (unsafe { FLOOD.get(port.vni) }).copied() else {
        return tc_drop(port.slot, DropReason::SlowPathDown, len);
    };
    if let Some(s) = port_stats(port.slot) {
        s.to_slow_path.add(len as u64);
    }
    for i in 0..FLOOD_PORTS {
        if i as u32 >= list.nports {
            break;
        }
        let target = list.ports[i];
        if target != ifindex {
            let _ = ctx.clone_redirect(target, 0);
        }
    }
    if list.npeers == 0 {
        return FLOODED;
    }
    let Some(cfg) = host_config() else {
        return FLOODED;
    };
    if let Err(reason) = tc_encap(ctx, &cfg, eth, len) {
        return tc_drop(port.slot, reason, len);
    }
    for i in 0..FLOOD_PEERS {
        if i as u32 >= list.npeers {
            break;
        }
        let addr = list.peers[i];
        // SAFETY: copied out of the map before use.
        let Some(peer) = (unsafe { PEERS.get(addr) }).copied() else {
            continue;
        };
        if peer.resolved == 0 {
            continue;
        }
        if tc_write_outer(ctx, &cfg, port.vni, addr, &peer, eth, len).is_ok()
            && ctx.clone_redirect(cfg.underlay_ifindex, 0).is_ok()
        {
            if let Some(s) = peer_stats(peer.slot) {
                s.tx.add((len + ENCAP_OVERHEAD as usize) as u64);
            }
        }
    }
    FLOODED
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
