//! VXLAN tunnels: peer resolution, outer headers, encapsulation and decapsulation in XDP
//! and in TC.

use aya_ebpf::{
    bindings::{
        bpf_adj_room_mode::BPF_ADJ_ROOM_MAC, BPF_ADJ_ROOM_ENCAP_L2_SHIFT, BPF_CSUM_LEVEL_DEC,
        BPF_F_ADJ_ROOM_DECAP_L3_IPV4, BPF_F_ADJ_ROOM_DECAP_L3_IPV6, BPF_F_ADJ_ROOM_ENCAP_L2_ETH,
        BPF_F_ADJ_ROOM_ENCAP_L3_IPV4, BPF_F_ADJ_ROOM_ENCAP_L4_UDP, BPF_F_ADJ_ROOM_NO_CSUM_RESET,
    },
    helpers::generated::{
        bpf_csum_level, bpf_get_hash_recalc, bpf_skb_change_head, bpf_skb_change_tail,
        bpf_xdp_adjust_head, bpf_xdp_adjust_tail,
    },
    programs::{TcContext, XdpContext},
};
use dataplane_common::{
    counters::DropReason,
    maps::{FdbEntry, FloodList, HostConfig, PeerInfo, PortInfo, FLOOD_PEERS, UNDERLAY_SLOT},
    packet::{
        fits_underlay, flow_hash, gso_segment_len, source_port, v4_mapped, v4_of, EthHdr,
        OuterHeaders, Tunnel, VxlanInfo, ETH_HLEN, ETH_P_IPV4, ETH_P_IPV6, IPV4_HLEN, UDP_HLEN,
        VXLAN_HLEN,
    },
    ENCAP_OVERHEAD,
};

use crate::{
    counters::{drop_frame, peer_stats},
    forward::redirect_to_port,
    frame::{Pkt, Skb},
    maps::{host_config, peer, TX_PORTS},
};

/// A remote host a frame can be tunnelled to now: its underlay address, the MAC of the
/// underlay next hop towards it, and its counter slot.
#[derive(Clone, Copy)]
pub(crate) struct NextHop {
    pub(crate) addr: [u8; 16],
    pub(crate) mac: [u8; 6],
    pub(crate) slot: u32,
}

/// Every path that tunnels to a remote FDB entry, a rule's next host or a flood list
/// entry resolves the peer here. `None` while the peer is unknown or violind has not
/// resolved its next hop yet: the frame has no route then.
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
    })
}

#[inline(always)]
fn tunnel_to(cfg: &HostConfig, hop: &NextHop) -> Tunnel {
    Tunnel {
        src_mac: cfg.underlay_mac,
        dst_mac: hop.mac,
        src_ip: v4_of(&cfg.underlay_addr),
        dst_ip: v4_of(&hop.addr),
    }
}

/// The next host for a frame from `from` that a rule or a placement sends on to `to`:
/// never back where it came from, and only once its next hop is known.
#[inline(always)]
pub(crate) fn relay_hop(from: [u8; 16], to: &FdbEntry) -> Result<NextHop, DropReason> {
    if to.peer == from {
        return Err(DropReason::Loop);
    }
    resolve_peer(to.peer).ok_or(DropReason::NoRoute)
}

/// Counts a frame sent to a peer, outer headers included.
#[inline(always)]
pub(crate) fn count_sent(hop: &NextHop, inner_len: usize) {
    if let Some(s) = peer_stats(hop.slot) {
        s.tx.add((inner_len + ENCAP_OVERHEAD as usize) as u64);
    }
}

/// Encapsulates a frame from a VM port (XDP) for the remote host `dst` names.
#[inline(always)]
pub(crate) fn encapsulate(ctx: &XdpContext, port: &PortInfo, dst: &FdbEntry, len: usize) -> u32 {
    let Some(cfg) = host_config() else {
        return drop_frame(ctx, port.slot, DropReason::NoRoute, len);
    };
    if !fits_underlay(len, cfg.underlay_mtu) {
        return drop_frame(ctx, port.slot, DropReason::TooBig, len);
    }
    let Some(hop) = resolve_peer(dst.peer) else {
        return drop_frame(ctx, port.slot, DropReason::NoRoute, len);
    };
    // Hashed before the head moves: the inner headers are at offset 0 only until then.
    let sport = source_port(flow_hash(&Pkt(ctx), 0));
    // SAFETY: helper on the program's own context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, -(ENCAP_OVERHEAD as i32)) } != 0 {
        return drop_frame(ctx, port.slot, DropReason::NoHeadroom, len);
    }
    let out = TunnelOut {
        cfg: &cfg,
        hop: &hop,
        vni: port.vni,
        sport,
        inner_len: len,
    };
    send_tunnelled(ctx, &out, port.slot, DropReason::NoHeadroom, len)
}

/// Strips the outer headers and hands the inner frame to a local port.
#[inline(always)]
pub(crate) fn decapsulate(
    ctx: &XdpContext,
    v: &VxlanInfo<PeerInfo>,
    to: &FdbEntry,
    len: usize,
) -> u32 {
    // SAFETY: helper on the program's own context.
    if v.trailer > 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, -(v.trailer as i32)) } != 0 {
        return drop_frame(ctx, UNDERLAY_SLOT, DropReason::BadLength, len);
    }
    // SAFETY: helper on the program's own context.
    if unsafe { bpf_xdp_adjust_head(ctx.ctx, ENCAP_OVERHEAD as i32) } != 0 {
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
    v: &VxlanInfo<PeerInfo>,
    to: &FdbEntry,
    len: usize,
) -> u32 {
    let hop = match relay_hop(v4_mapped(v.peer), to) {
        Ok(hop) => hop,
        Err(reason) => return drop_frame(ctx, UNDERLAY_SLOT, reason, len),
    };
    // SAFETY: helper on the program's own context.
    if v.trailer > 0 && unsafe { bpf_xdp_adjust_tail(ctx.ctx, -(v.trailer as i32)) } != 0 {
        return drop_frame(ctx, UNDERLAY_SLOT, DropReason::BadLength, len);
    }
    let sport = source_port(flow_hash(&Pkt(ctx), ENCAP_OVERHEAD as usize));
    let out = TunnelOut {
        cfg,
        hop: &hop,
        vni: v.vni,
        sport,
        inner_len: v.inner_len,
    };
    send_tunnelled(ctx, &out, UNDERLAY_SLOT, DropReason::TruncatedOuter, len)
}

/// Where a frame whose 50 bytes of outer headers are in front of it goes.
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
    if start + ENCAP_OVERHEAD as usize > ctx.data_end() {
        return drop_frame(ctx, slot, short, len);
    }
    let tunnel = tunnel_to(out.cfg, out.hop);
    let outer = OuterHeaders::new(&tunnel, out.vni, out.sport, out.inner_len);
    // SAFETY: 50 bytes at `start` were bounds-checked above.
    unsafe { core::ptr::write_unaligned(start as *mut OuterHeaders, outer) };
    match TX_PORTS.redirect(out.cfg.underlay_ifindex, 0) {
        Ok(action) => {
            count_sent(out.hop, out.inner_len);
            action
        }
        Err(_) => drop_frame(ctx, slot, DropReason::RedirectFailed, len),
    }
}

/// Checks the frame (each segment, for a GSO super-frame) fits the underlay once
/// encapsulated, then opens 50 bytes after the Ethernet header and marks the skb as UDP
/// tunnelled so the kernel segments it correctly later.
#[inline(always)]
pub(crate) fn tc_encap(
    ctx: &TcContext,
    cfg: &HostConfig,
    eth: &EthHdr,
    len: usize,
) -> Result<(), DropReason> {
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
pub(crate) fn tc_write_outer(
    ctx: &TcContext,
    cfg: &HostConfig,
    vni: u32,
    hop: &NextHop,
    eth: &EthHdr,
    len: usize,
) -> Result<(), ()> {
    let tunnel = tunnel_to(cfg, hop);
    // A GSO super-frame may exceed what the 16-bit IP length holds before segmentation.
    let max_inner = 0xffff - IPV4_HLEN - UDP_HLEN - VXLAN_HLEN;
    let inner_len = if len > max_inner { max_inner } else { len };
    let outer = OuterHeaders::new(&tunnel, vni, skb_source_port(ctx), inner_len);
    ctx.store(0, &outer, 0).map_err(|_| ())?;
    ctx.store(ENCAP_OVERHEAD as usize, eth, 0).map_err(|_| ())
}

/// The outer UDP source port of an skb, from the kernel's flow hash, as the kernel's own
/// tunnels take it: the skb's own when it carries one (a local socket's packets do), else
/// computed by the kernel's flow dissector (IPv4 and IPv6 with their ports alike).
#[inline(always)]
fn skb_source_port(ctx: &TcContext) -> u16 {
    // SAFETY: reading the context's own field, then a helper on the program's own skb.
    let hash = unsafe {
        match (*ctx.skb.skb).hash {
            0 => bpf_get_hash_recalc(ctx.skb.skb),
            h => h,
        }
    };
    source_port(hash)
}

/// Cuts the Ethernet padding after a frame's declared end.
#[inline(always)]
fn tc_trim(ctx: &TcContext, v: &VxlanInfo<PeerInfo>, len: usize) -> Result<(), DropReason> {
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
    v: &VxlanInfo<PeerInfo>,
    list: &FloodList,
    len: usize,
) -> Result<(), DropReason> {
    tc_trim(ctx, v, len)?;
    let relay = Relay {
        cfg: *cfg,
        vni: v.vni,
        sport: skb_source_port(ctx),
        inner_len: v.inner_len,
    };
    let from = v4_mapped(v.peer);
    for i in 0..FLOOD_PEERS {
        if i as u32 >= list.npeers {
            break;
        }
        if list.peers[i] != from {
            relay_copy(ctx, &relay, list.peers[i]);
        }
    }
    Ok(())
}

/// What every relayed copy of a flood shares.
struct Relay {
    cfg: HostConfig,
    vni: u32,
    sport: u16,
    inner_len: usize,
}

/// One relayed copy, to `addr` (an unresolved peer misses it). A call of its own: the
/// outer headers it builds live in its frame, so the verifier sees every iteration of
/// the caller's loop alike, sent or not.
#[inline(never)]
fn relay_copy(ctx: &TcContext, relay: &Relay, addr: [u8; 16]) {
    let Some(hop) = resolve_peer(addr) else {
        return;
    };
    let tunnel = tunnel_to(&relay.cfg, &hop);
    let outer = OuterHeaders::new(&tunnel, relay.vni, relay.sport, relay.inner_len);
    if ctx.store(0, &outer, 0).is_ok() && ctx.clone_redirect(relay.cfg.underlay_ifindex, 0).is_ok()
    {
        count_sent(&hop, relay.inner_len);
    }
}

/// Strips the outer headers of a single (not GRO-aggregated) VXLAN skb: the inner frame
/// starts at offset 0 afterwards. `Ok(true)` when it is IPv4 or IPv6, which skb->protocol
/// then names; for other frames it still names the outer IPv4, so they may only leave by
/// an egress redirect, whose device reads their Ethernet header anew.
#[inline(always)]
pub(crate) fn tc_decap(
    ctx: &TcContext,
    v: &VxlanInfo<PeerInfo>,
    len: usize,
) -> Result<bool, DropReason> {
    tc_trim(ctx, v, len)?;
    let (ip, l3) = match u16::from_be_bytes(v.inner.ethertype) {
        ETH_P_IPV4 => (true, BPF_F_ADJ_ROOM_DECAP_L3_IPV4),
        ETH_P_IPV6 => (true, BPF_F_ADJ_ROOM_DECAP_L3_IPV6),
        _ => (false, 0),
    };
    // Removes the 50 bytes after the outer Ethernet header (outer IP, UDP, VXLAN and the
    // inner Ethernet header), then writes the inner Ethernet header over the outer one.
    let flags = (l3 | BPF_F_ADJ_ROOM_NO_CSUM_RESET) as u64;
    ctx.adjust_room(-(ENCAP_OVERHEAD as i32), BPF_ADJ_ROOM_MAC, flags)
        .map_err(|_| DropReason::NoHeadroom)?;
    ctx.store(0, &v.inner, 0)
        .map_err(|_| DropReason::NoHeadroom)?;
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
    v: &VxlanInfo<PeerInfo>,
    to: &FdbEntry,
    len: usize,
) -> Result<NextHop, DropReason> {
    let hop = relay_hop(v4_mapped(v.peer), to)?;
    tc_trim(ctx, v, len)?;
    let outer = OuterHeaders::new(
        &tunnel_to(cfg, &hop),
        v.vni,
        skb_source_port(ctx),
        v.inner_len,
    );
    ctx.store(0, &outer, 0)
        .map_err(|_| DropReason::TruncatedOuter)?;
    Ok(hop)
}
