//! VXLAN tunnels: peer resolution, outer headers, encapsulation and decapsulation in XDP
//! and in TC.

use core::ffi::c_void;

use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_ADJ_ROOM_ENCAP_L2_SHIFT, BPF_CSUM_LEVEL_DEC,
        BPF_F_ADJ_ROOM_DECAP_L3_IPV4, BPF_F_ADJ_ROOM_DECAP_L3_IPV6, BPF_F_ADJ_ROOM_ENCAP_L2_ETH,
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L3_IPV6, BPF_F_ADJ_ROOM_ENCAP_L4_UDP,
        BPF_F_ADJ_ROOM_FIXED_GSO, BPF_F_ADJ_ROOM_NO_CSUM_RESET,
    },
    helpers::generated::{
        bpf_csum_level, bpf_skb_change_head, bpf_skb_change_tail, bpf_skb_pull_data,
        bpf_skb_store_bytes, bpf_xdp_adjust_head, bpf_xdp_adjust_tail,
    },
    programs::{TcContext, XdpContext},
};
use dataplane_common::{
    counters::DropReason,
    maps::{
        addr_words, same_words, FdbEntry, FloodList, HostConfig, PeerInfo, PortInfo, FLOOD_PEERS,
        UNDERLAY_SLOT,
    },
    packet::{
        flow_hash, gso_segment_len, source_port, Ends, Eth, Family, Tunnel, VxlanInfo, ETH_HLEN,
        ETH_P_IPV4, ETH_P_IPV6, INNER_OFFSET, INNER_OFFSET_V6, IPV4_HLEN, IPV6_HLEN, UDP_HLEN,
        VXLAN_HLEN,
    },
};

use crate::{
    counters::{drop_frame, peer_stats},
    forward::redirect_to_port,
    frame::{store_eth_words, store_outer6_words, store_outer_words, Pkt, Skb},
    maps::{host_config, peer, PEER_SLOTS, TX_PORTS},
};

/// A VXLAN packet from a peer, over either family (the sender in 16 bytes).
pub(crate) type Vxlan = VxlanInfo<PeerInfo, [u8; 16]>;

/// A remote host a frame can be tunnelled to now: its underlay address, the MAC of the
/// underlay next hop towards it, its counter slot, and what the outer headers to it take
/// (the family of its address, which is the host's own).
#[derive(Clone, Copy)]
pub(crate) struct NextHop {
    pub(crate) addr: [u8; 16],
    pub(crate) mac: [u8; 6],
    pub(crate) slot: u32,
    pub(crate) outer: usize,
}

impl NextHop {
    #[inline(always)]
    fn v6(&self) -> bool {
        self.outer == INNER_OFFSET_V6
    }

    /// The peer's address as words (see `addr_words`).
    #[inline(always)]
    fn addr_words(&self) -> [u32; 4] {
        addr_words(self.addr)
    }
}

/// Every path that tunnels to a peer by its address (a flood list's entries; a
/// forwarding-table entry or rule whose slot no longer holds it) resolves it here. `None`
/// while the peer is unknown or violind has not resolved its next hop yet: the frame has
/// no route then.
#[inline(always)]
pub(crate) fn resolve_peer(addr: [u8; 16]) -> Option<NextHop> {
    let info = peer(&addr)?;
    if info.resolved == 0 {
        return None;
    }
    Some(NextHop {
        addr,
        mac: info.next_hop_mac,
        slot: info.slot,
        // Without a branch: one per peer in a flood loop multiplies the verifier's paths.
        outer: INNER_OFFSET + (INNER_OFFSET_V6 - INNER_OFFSET) * (info.v6 != 0) as usize,
    })
}

/// The next hop to peer `addr` as `info` describes it; `None` while unresolved.
/// [`resolve_peer`] keeps a copy of its own: written through this function, it made the
/// verifier walk `violin_underlay_tc`'s flood loop past its million instructions.
#[inline(always)]
fn next_hop(addr: [u8; 16], info: PeerInfo) -> Option<NextHop> {
    if info.resolved == 0 {
        return None;
    }
    Some(NextHop {
        addr,
        mac: info.next_hop_mac,
        slot: info.slot,
        // Without a branch: one per peer in a flood loop multiplies the verifier's paths.
        outer: INNER_OFFSET + (INNER_OFFSET_V6 - INNER_OFFSET) * (info.v6 != 0) as usize,
    })
}

/// The next hop towards the peer a forwarding-table entry or rule names (`to.peer`, in
/// slot `to.slot`): from the slot when it still holds that peer (an array lookup), else
/// as [`resolve_peer`] finds it by address (while violind rewrites the slots).
#[inline(always)]
pub(crate) fn resolve_entry(to: &FdbEntry) -> Option<NextHop> {
    match PEER_SLOTS.get(to.slot) {
        Some(s) if same_words(s.addr_words(), to.peer_words()) => next_hop(to.peer, s.info),
        _ => resolve_peer(to.peer),
    }
}

/// The tunnel to `hop` over IPv4, its addresses read as words: one load each where their
/// bytes would be four.
#[inline(always)]
fn tunnel_to(cfg: &HostConfig, hop: &NextHop) -> Tunnel {
    Tunnel {
        src_mac: cfg.underlay_mac,
        dst_mac: hop.mac,
        src_ip: cfg.addr_words()[3].to_ne_bytes(),
        dst_ip: hop.addr_words()[3].to_ne_bytes(),
    }
}

/// The tunnel to `hop` over IPv6, borrowed where it lies (see `Ends`).
#[inline(always)]
fn ends_to<'a>(cfg: &'a HostConfig, hop: &'a NextHop) -> Ends<'a> {
    Ends {
        src_mac: &cfg.underlay_mac,
        dst_mac: &hop.mac,
        src_ip: cfg.addr_words(),
        dst_ip: hop.addr_words(),
    }
}

/// The next host for a frame from the peer of counter slot `from` that a rule or a
/// placement sends on to `to`: never back where it came from, and only once its next hop
/// is known. Peers are told apart by their slots: comparing 16-byte addresses byte by
/// byte costs registers the programs' stacks cannot spare.
#[inline(always)]
pub(crate) fn relay_hop(from: u32, to: &FdbEntry) -> Result<NextHop, DropReason> {
    if to.slot == from {
        return Err(DropReason::Loop);
    }
    resolve_entry(to).ok_or(DropReason::NoRoute)
}

/// The host's underlay family.
#[inline(always)]
pub(crate) fn family(cfg: &HostConfig) -> Family {
    match cfg.v6 {
        0 => Family::V4,
        _ => Family::V6,
    }
}

/// Counts a frame sent to a peer, outer headers included.
#[inline(always)]
pub(crate) fn count_sent(hop: &NextHop, inner_len: usize) {
    if let Some(s) = peer_stats(hop.slot) {
        s.tx.add((inner_len + hop.outer) as u64);
    }
}

/// Encapsulates a frame from a VM port (XDP) for the remote host `dst` names.
#[inline(always)]
pub(crate) fn encapsulate(ctx: &XdpContext, port: &PortInfo, dst: &FdbEntry, len: usize) -> u32 {
    let Some(cfg) = host_config() else {
        return drop_frame(ctx, port.slot, DropReason::NoRoute, len);
    };
    let Some(hop) = resolve_entry(dst) else {
        return drop_frame(ctx, port.slot, DropReason::NoRoute, len);
    };
    if !family(cfg).fits(len, cfg.underlay_mtu) {
        return drop_frame(ctx, port.slot, DropReason::TooBig, len);
    }
    // Hashed before the head moves: the inner headers are at offset 0 only until then.
    let sport = source_port(flow_hash(&Pkt::with_len(ctx, len), 0));
    // SAFETY: helper on the program's own context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(hop.outer as i32)) } != 0 {
        return drop_frame(ctx, port.slot, DropReason::NoHeadroom, len);
    }
    let out = TunnelOut {
        cfg,
        hop: &hop,
        vni: port.vni,
        sport,
        inner_len: len,
    };
    send_tunnelled(ctx, &out, port.slot, DropReason::NoHeadroom, len)
}

/// Strips the outer headers and hands the inner frame to a local port.
#[inline(always)]
pub(crate) fn decapsulate(ctx: &XdpContext, v: &Vxlan, to: &FdbEntry, len: usize) -> u32 {
    // SAFETY: helper on the program's own context.
    if v.trailer > 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, -(v.trailer as i32)) } != 0 {
        return drop_frame(ctx, UNDERLAY_SLOT, DropReason::BadLength, len);
    }
    // SAFETY: helper on the program's own context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, v.outer_len as i32) } != 0 {
        return drop_frame(ctx, UNDERLAY_SLOT, DropReason::NoHeadroom, len);
    }
    redirect_to_port(ctx, UNDERLAY_SLOT, to, v.inner_len)
}

/// A rule at this host sends a frame that arrived over one overlay link on over another
/// (VNET's multi-hop paths): the outer headers are rewritten for the next host in place,
/// the inner frame is untouched.
#[inline(always)]
pub(crate) fn transit(
    ctx: &XdpContext,
    cfg: &HostConfig,
    v: &Vxlan,
    to: &FdbEntry,
    len: usize,
) -> u32 {
    let hop = match relay_hop(v.peer_info.slot, to) {
        Ok(hop) => hop,
        Err(reason) => return drop_frame(ctx, UNDERLAY_SLOT, reason, len),
    };
    // SAFETY: helper on the program's own context.
    if v.trailer > 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, -(v.trailer as i32)) } != 0 {
        return drop_frame(ctx, UNDERLAY_SLOT, DropReason::BadLength, len);
    }
    let sport = source_port(flow_hash(&Pkt::with_len(ctx, len - v.trailer), v.outer_len));
    let out = TunnelOut {
        cfg,
        hop: &hop,
        vni: v.vni,
        sport,
        inner_len: v.inner_len,
    };
    send_tunnelled(ctx, &out, UNDERLAY_SLOT, DropReason::TruncatedOuter, len)
}

/// Where a frame with room for its outer headers in front of it goes.
struct TunnelOut<'a> {
    cfg: &'a HostConfig,
    hop: &'a NextHop,
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
    if out.hop.v6() {
        if start + INNER_OFFSET_V6 > ctx.data_end() {
            return drop_frame(ctx, slot, short, len);
        }
        let ends = ends_to(out.cfg, out.hop);
        // SAFETY: 70 bytes at `start` were bounds-checked above.
        unsafe { store_outer6_words(start, &ends, out.vni, out.sport, out.inner_len) };
    } else {
        if start + INNER_OFFSET > ctx.data_end() {
            return drop_frame(ctx, slot, short, len);
        }
        let tunnel = tunnel_to(out.cfg, out.hop);
        // SAFETY: 50 bytes at `start` were bounds-checked above.
        unsafe { store_outer_words(start, &tunnel, out.vni, out.sport, out.inner_len) };
    }
    match TX_PORTS.redirect(out.cfg.underlay_ifindex, 0) {
        Ok(action) => {
            count_sent(out.hop, out.inner_len);
            action
        }
        Err(_) => drop_frame(ctx, slot, DropReason::RedirectFailed, len),
    }
}

/// Checks the frame (each segment, for a GSO super-frame) fits the underlay once
/// encapsulated, then opens room for the outer headers (50 or 70 bytes, by the host's
/// family) after the Ethernet header and marks the skb as UDP tunnelled so the kernel
/// segments it correctly later.
#[inline(always)]
pub(crate) fn tc_encap(
    ctx: &TcContext,
    cfg: &HostConfig,
    eth: &Eth,
    len: usize,
) -> Result<(), DropReason> {
    // SAFETY: reading the context's own field.
    let gso_size = unsafe { (*ctx.skb.skb).gso_size } as usize;
    let wire_len = if gso_size > 0 {
        gso_segment_len(&Skb(ctx), gso_size)
    } else {
        len
    };
    let family = family(cfg);
    if !family.fits(wire_len, cfg.underlay_mtu) {
        return Err(DropReason::TooBig);
    }
    let overhead = family.overhead();
    let ethertype = u16::from_be_bytes(eth.ethertype);
    if ethertype != 0x0800 && ethertype != 0x86dd {
        // bpf_skb_adjust_room handles IP only; ARP and the like are never GSO, so plain
        // headroom in front of the frame does. The inner Ethernet header stays in place.
        // SAFETY: helper on the program's own skb.
        let ret = unsafe { bpf_skb_change_head(ctx.skb.skb, overhead, 0) };
        return if ret == 0 {
            Ok(())
        } else {
            Err(DropReason::NoHeadroom)
        };
    }
    let l3 = match family {
        Family::V4 => BPF_F_ADJ_ROOM_ENCAP_L3_IPV4,
        Family::V6 => BPF_F_ADJ_ROOM_ENCAP_L3_IPV6,
    };
    // FIXED_GSO: the VM's MTU already leaves room for the outer headers (checked above),
    // so each segment stays as large as the VM's TCP made it. Without it the helper
    // shrinks gso_size by the overhead, and a super-frame of n full segments leaves as
    // n + 1 packets, the last a sliver: 14% more packets at MTU 9000.
    let flags = (l3 | BPF_F_ADJ_ROOM_ENCAP_L4_UDP | BPF_F_ADJ_ROOM_ENCAP_L2_ETH) as u64
        | BPF_F_ADJ_ROOM_FIXED_GSO as u64
        | ((ETH_HLEN as u64) << BPF_ADJ_ROOM_ENCAP_L2_SHIFT);
    ctx.adjust_room(overhead as i32, BPF_ADJ_ROOM_MAC, flags)
        .map_err(|_| DropReason::NoHeadroom)
}

/// Writes the outer headers (and the moved inner Ethernet header) of an skb whose room
/// was opened by [`tc_encap`]. For a GSO super-frame the IP and UDP lengths are fixed up
/// per segment by the kernel's tunnel segmentation.
#[inline(always)]
pub(crate) fn tc_write_outer(
    ctx: &TcContext,
    cfg: &HostConfig,
    vni: u32,
    hop: &NextHop,
    eth: &Eth,
    len: usize,
) -> Result<(), ()> {
    // The inner Ethernet header first: the source port is hashed from the inner frame.
    // Both written in place and inlined, per family (each with its offsets constant for
    // the verifier): the helper that stores bytes, and a call of a function of the
    // program's own, each cost more than the writes here.
    let stored = if cfg.v6 != 0 {
        let e = inner_eth(ctx, (cfg, vni, len), eth, INNER_OFFSET_V6)?;
        fill_outer6(ctx, &e, hop)
    } else {
        let e = inner_eth(ctx, (cfg, vni, len), eth, INNER_OFFSET)?;
        fill_outer4(ctx, &e, hop)
    };
    stored.then_some(()).ok_or(())
}

/// Writes the inner Ethernet header at `at`, where the outer headers end, and says what
/// those are made of.
#[inline(always)]
fn inner_eth<'a>(
    ctx: &TcContext,
    (cfg, vni, len): (&'a HostConfig, u32, usize),
    eth: &Eth,
    at: usize,
) -> Result<Encap<'a>, ()> {
    put_inner_eth(ctx, at, eth)?;
    Ok(Encap {
        cfg,
        vni,
        sport: skb_source_port(ctx, at),
        inner_len: len,
    })
}

/// Writes the inner Ethernet header at `at` (where the outer headers end).
#[inline(always)]
pub(crate) fn put_inner_eth(ctx: &TcContext, at: usize, eth: &Eth) -> Result<(), ()> {
    let start = linear_head(ctx, at + ETH_HLEN).ok_or(())?;
    // SAFETY: the header's 14 bytes at `start + at` lie in the packet's linear data
    // (linear_head).
    unsafe { store_eth_words(start + at, eth) };
    Ok(())
}

/// What the outer headers towards a peer are made of, besides the peer.
pub(crate) struct Encap<'a> {
    pub(crate) cfg: &'a HostConfig,
    pub(crate) vni: u32,
    pub(crate) sport: u16,
    /// The frame's length; a GSO super-frame's is capped to what the IP length holds.
    pub(crate) inner_len: usize,
}

/// Writes the outer headers towards `hop` at the start of the skb, for the host's family.
#[inline(always)]
pub(crate) fn tc_store_outer(ctx: &TcContext, e: &Encap, hop: &NextHop) -> Result<(), ()> {
    let stored = match e.cfg.v6 {
        0 => store_outer4(ctx, e, hop),
        _ => store_outer6(ctx, e, hop),
    };
    if stored {
        Ok(())
    } else {
        Err(())
    }
}

/// Writes the IPv4 outer headers towards `hop` at the start of the skb. A call of its
/// own: a flood's loop makes one per peer.
#[inline(never)]
pub(crate) fn store_outer4(ctx: &TcContext, e: &Encap, hop: &NextHop) -> bool {
    fill_outer4(ctx, e, hop)
}

/// [`store_outer4`] inlined, for a path that writes one copy.
#[inline(always)]
fn fill_outer4(ctx: &TcContext, e: &Encap, hop: &NextHop) -> bool {
    // A GSO super-frame may exceed what the 16-bit IP length holds before segmentation.
    let max_inner = 0xffff - IPV4_HLEN - UDP_HLEN - VXLAN_HLEN;
    let inner_len = if e.inner_len > max_inner {
        max_inner
    } else {
        e.inner_len
    };
    let Some(start) = linear_head(ctx, INNER_OFFSET) else {
        return false;
    };
    // SAFETY: the outer headers' 50 bytes at `start` lie in the packet's linear data
    // (linear_head).
    unsafe { store_outer_words(start, &tunnel_to(e.cfg, hop), e.vni, e.sport, inner_len) };
    true
}

/// The start of the skb's data once its first `len` bytes are linear (pulled in if they
/// were not), for writing headers in place: headers built as values on the stack do not
/// fit it beside the callers' frames.
#[inline(always)]
fn linear_head(ctx: &TcContext, len: usize) -> Option<usize> {
    if ctx.data() + len > ctx.data_end()
        // SAFETY: helper on the program's own skb.
        && unsafe { bpf_skb_pull_data(ctx.skb.skb, len as u32) } != 0
    {
        return None;
    }
    let start = ctx.data();
    (start + len <= ctx.data_end()).then_some(start)
}

/// [`store_outer4`] over IPv6 (whose length field counts only the payload).
#[inline(never)]
pub(crate) fn store_outer6(ctx: &TcContext, e: &Encap, hop: &NextHop) -> bool {
    fill_outer6(ctx, e, hop)
}

/// [`store_outer6`] inlined, for a path that writes one copy.
#[inline(always)]
fn fill_outer6(ctx: &TcContext, e: &Encap, hop: &NextHop) -> bool {
    let max_inner = 0xffff - UDP_HLEN - VXLAN_HLEN;
    let inner_len = if e.inner_len > max_inner {
        max_inner
    } else {
        e.inner_len
    };
    let Some(start) = linear_head(ctx, INNER_OFFSET_V6) else {
        return false;
    };
    // SAFETY: the outer headers' 70 bytes at `start` lie in the packet's linear data
    // (linear_head).
    unsafe { store_outer6_words(start, &ends_to(e.cfg, hop), e.vni, e.sport, inner_len) };
    true
}

/// The outer UDP source port of an skb whose inner frame starts at `inner`: from the
/// kernel's flow hash when the skb carries one (a local socket's packets do), as the
/// kernel's own tunnels take it; else from the inner headers as the XDP programs take it
/// (`flow_hash`: IPv4 and IPv6 with their ports alike). The kernel's flow dissector
/// (bpf_get_hash_recalc) would cost a fifth of the port program.
#[inline(always)]
pub(crate) fn skb_source_port(ctx: &TcContext, inner: usize) -> u16 {
    // SAFETY: reading the context's own field.
    let hash = match unsafe { (*ctx.skb.skb).hash } {
        0 => flow_hash(&Skb(ctx), inner),
        h => h,
    };
    source_port(hash)
}

/// Cuts the Ethernet padding after a frame's declared end.
#[inline(always)]
fn tc_trim(ctx: &TcContext, v: &Vxlan, len: usize) -> Result<(), DropReason> {
    if v.trailer == 0 {
        return Ok(());
    }
    // SAFETY: helper on the program's own skb.
    match unsafe { bpf_skb_change_tail(ctx.skb.skb, (len - v.trailer) as u32, 0) } {
        0 => Ok(()),
        _ => Err(DropReason::BadLength),
    }
}

/// A star's hub relays a flood from a peer to its other peers on `list`: one copy each,
/// the outer headers rewritten in place before each clone (the inner frame is untouched).
/// Before the frame is decapsulated for the local ports.
#[inline(always)]
pub(crate) fn tc_relay_flood(
    ctx: &TcContext,
    cfg: &HostConfig,
    v: &Vxlan,
    list: &FloodList,
    len: usize,
) -> Result<(), DropReason> {
    tc_trim(ctx, v, len)?;
    let e = Encap {
        cfg,
        vni: v.vni,
        sport: skb_source_port(ctx, v.outer_len),
        inner_len: v.inner_len,
    };
    // A loop per family, as for a VM port's flood; every copy but the sender's.
    if cfg.v6 != 0 {
        for i in 0..FLOOD_PEERS {
            if i as u32 >= list.npeers {
                break;
            }
            match resolve_peer(list.peers[i]) {
                Some(hop) if hop.slot != v.peer_info.slot => {
                    let stored = store_outer6(ctx, &e, &hop);
                    send_copy(ctx, cfg, &hop, stored, v.inner_len);
                }
                _ => {}
            }
        }
    } else {
        for i in 0..FLOOD_PEERS {
            if i as u32 >= list.npeers {
                break;
            }
            match resolve_peer(list.peers[i]) {
                Some(hop) if hop.slot != v.peer_info.slot => {
                    let stored = store_outer4(ctx, &e, &hop);
                    send_copy(ctx, cfg, &hop, stored, v.inner_len);
                }
                _ => {}
            }
        }
    }
    Ok(())
}

/// Sends one copy of a flood whose outer headers were `stored` (and counts it with the
/// inner frame's `len`).
#[inline(always)]
pub(crate) fn send_copy(
    ctx: &TcContext,
    cfg: &HostConfig,
    hop: &NextHop,
    stored: bool,
    len: usize,
) {
    if stored && ctx.clone_redirect(cfg.underlay_ifindex, 0).is_ok() {
        count_sent(hop, len);
    }
}

/// Pads an inner frame too short for bpf_skb_adjust_room to strip its outer headers to
/// Ethernet's minimum, with zeros. The helper insists on leaving a minimal IP header's
/// worth of the skb's protocol (the outer one) after the MAC header: over IPv6 an ARP
/// frame (42 bytes, 28 after its Ethernet header) falls short. A padded frame is what a
/// wire would have carried anyway.
#[inline(always)]
fn tc_pad(ctx: &TcContext, v: &Vxlan) -> Result<(), DropReason> {
    const ETH_ZLEN: usize = 60;
    // What must stay after the outer MAC header once the rest of the outer headers go.
    let least = match v.outer_len {
        INNER_OFFSET_V6 => ETH_HLEN + IPV6_HLEN,
        _ => ETH_HLEN + IPV4_HLEN,
    };
    if v.inner_len >= least {
        return Ok(());
    }
    // SAFETY: helper on the program's own skb.
    if unsafe { bpf_skb_change_tail(ctx.skb.skb, (v.outer_len + ETH_ZLEN) as u32, 0) } != 0 {
        return Err(DropReason::NoHeadroom);
    }
    // The new bytes are not promised to be zero: no stale memory reaches a VM.
    let pad = ETH_ZLEN - v.inner_len;
    if pad == 0 || pad > ZEROS.len() {
        return Ok(());
    }
    let off = v.outer_len + v.inner_len;
    // SAFETY: helper on the program's own skb, reading `pad` (at most ZEROS.len()) bytes
    // of the static ZEROS.
    let ret = unsafe {
        bpf_skb_store_bytes(
            ctx.skb.skb,
            off as u32,
            ZEROS.as_ptr() as *const c_void,
            pad as u32,
            0,
        )
    };
    if ret != 0 {
        return Err(DropReason::NoHeadroom);
    }
    Ok(())
}

/// Zeros to pad frames with (read only, so a map the verifier lets helpers read).
static ZEROS: [u8; 64] = [0; 64];

/// Strips the outer headers of a single (not GRO-aggregated) VXLAN skb: the inner frame
/// starts at offset 0 afterwards. `Ok(true)` when it is IPv4 or IPv6, which skb->protocol
/// then names; for other frames it still names the outer IP (IPv4 or IPv6), so they may
/// only leave by an egress redirect, whose device reads their Ethernet header anew.
#[inline(always)]
pub(crate) fn tc_decap(ctx: &TcContext, v: &Vxlan, len: usize) -> Result<bool, DropReason> {
    tc_trim(ctx, v, len)?;
    tc_pad(ctx, v)?;
    let (ip, l3) = match u16::from_be_bytes(v.inner.ethertype) {
        ETH_P_IPV4 => (true, BPF_F_ADJ_ROOM_DECAP_L3_IPV4),
        ETH_P_IPV6 => (true, BPF_F_ADJ_ROOM_DECAP_L3_IPV6),
        _ => (false, 0),
    };
    // Removes the outer headers' length after the outer Ethernet header (outer IP, UDP,
    // VXLAN and the inner Ethernet header), then writes the inner Ethernet header over the
    // outer one.
    let flags = (l3 | BPF_F_ADJ_ROOM_NO_CSUM_RESET) as u64;
    ctx.adjust_room(-(v.outer_len as i32), BPF_ADJ_ROOM_MAC, flags)
        .map_err(|_| DropReason::NoHeadroom)?;
    put_inner_eth(ctx, 0, &v.inner).map_err(|_| DropReason::NoHeadroom)?;
    // A count of verified checksums starts with the outer UDP one (zero or not, as the
    // kernel's own tunnels count it): one fewer now covers the inner frame. The helper does
    // nothing to an skb whose checksums were not verified.
    // SAFETY: helper on the program's own skb.
    let _ = unsafe { bpf_csum_level(ctx.skb.skb, BPF_CSUM_LEVEL_DEC as u64) };
    Ok(ip)
}

/// Rewrites a single VXLAN skb's outer headers for the next host `to` names (TC's
/// [`transit`]); the caller sends it out of the underlay.
#[inline(always)]
pub(crate) fn tc_transit(
    ctx: &TcContext,
    cfg: &HostConfig,
    v: &Vxlan,
    to: &FdbEntry,
    len: usize,
) -> Result<NextHop, DropReason> {
    let hop = relay_hop(v.peer_info.slot, to)?;
    tc_trim(ctx, v, len)?;
    let e = Encap {
        cfg,
        vni: v.vni,
        sport: skb_source_port(ctx, v.outer_len),
        inner_len: v.inner_len,
    };
    tc_store_outer(ctx, &e, &hop).map_err(|_| DropReason::TruncatedOuter)?;
    Ok(hop)
}
