//! `violin_tunnel_tc`: TC (tcx ingress) on the kernel's flow-based (external) VXLAN
//! device in TC port mode. It receives what `violin_underlay_tc` left to the kernel: GRO
//! aggregates (and the lone TCP segments of their streams), decapsulated by the device,
//! with the sender and VNI in the tunnel metadata. They are delivered, relayed
//! (re-encapsulated by the same device) or flooded to local ports exactly as the single
//! frames are.

use core::mem::MaybeUninit;

use aya_ebpf::{
    bindings::{bpf_tunnel_key, BPF_F_TUNINFO_IPV6},
    helpers::generated::{bpf_redirect, bpf_skb_get_tunnel_key, bpf_skb_set_tunnel_key},
    macros::classifier,
    programs::TcContext,
};
use dataplane_common::{
    counters::{DropReason, Hook},
    maps::{FdbEntry, UNDERLAY_SLOT},
    packet::{load_eth, v4_mapped, v4_of, Family, Frame, ETH_P_IPV4, ETH_P_IPV6},
};

use crate::{
    counters::{count_tc, tc_drop, Verdict},
    delivery::{deliver, flood_from_underlay},
    forward::{tunnel_next, FromTunnel},
    frame::Skb,
    inflight::out_of_device,
    maps::{flood_list, host_config, peer, vni},
    memo::epoch,
    tunnel::{count_sent, family, relay_hop},
};

#[classifier]
pub fn violin_tunnel_tc(ctx: TcContext) -> i32 {
    count_tc(Hook::Tunnel, tunnel_skb(&ctx))
}

const KEY_SIZE: u32 = core::mem::size_of::<bpf_tunnel_key>() as u32;

#[inline(always)]
fn tunnel_skb(ctx: &TcContext) -> Verdict {
    let len = Skb(ctx).total_len();
    match forward(ctx, len) {
        Ok(verdict) => verdict,
        Err(reason) => tc_drop(ctx, UNDERLAY_SLOT, reason, len),
    }
}

#[inline(always)]
fn forward(ctx: &TcContext, len: usize) -> Result<Verdict, DropReason> {
    let cfg = host_config().ok_or(DropReason::NoRoute)?;
    // The key's family must be asked for: the host's.
    let flags = match family(cfg) {
        Family::V4 => 0,
        Family::V6 => BPF_F_TUNINFO_IPV6 as u64,
    };
    // Not zeroed first: the helper writes every field (zeros on failure), and zeroing
    // costs every frame a call of a byte-by-byte memset.
    let mut key = MaybeUninit::<bpf_tunnel_key>::uninit();
    // SAFETY: helper on the program's own skb, writing KEY_SIZE bytes into `key`.
    if unsafe { bpf_skb_get_tunnel_key(ctx.skb.skb, key.as_mut_ptr(), KEY_SIZE, flags) } != 0 {
        return Err(DropReason::UnknownPeer);
    }
    // SAFETY: the helper succeeded, so it wrote all KEY_SIZE bytes of the key.
    let mut key = unsafe { key.assume_init() };
    // Out of the device, whatever becomes of it now.
    out_of_device(ctx, key.tunnel_id);
    let from = key_addr(&key, flags);
    // The underlay hook checked the sender of what it passed; a frame the device got
    // some other way is checked here.
    let sender = peer(&from).ok_or(DropReason::UnknownPeer)?;
    let info = vni(key.tunnel_id).ok_or(DropReason::UnknownVni)?;
    let eth = load_eth(&Skb(ctx), 0).ok_or(DropReason::TruncatedInner)?;
    match tunnel_next((info.flags, key.tunnel_id), eth.src(), eth.dst(), epoch()) {
        FromTunnel::Deliver(to) => {
            let ethertype = u16::from_be_bytes(eth.ethertype);
            let ip = ethertype == ETH_P_IPV4 || ethertype == ETH_P_IPV6;
            deliver(ctx, &to, ip, len).map(Verdict::Act)
        }
        FromTunnel::Transit(to) => relay(ctx, &mut key, flags, sender.slot, &to, len),
        FromTunnel::Flood => {
            let list = flood_list(key.tunnel_id).ok_or(DropReason::SlowPathDown)?;
            Ok(flood_from_underlay(ctx, list, len))
        }
    }
}

/// Sends the frame back out of the device it came from, to the next host: the device
/// encapsulates it (and segments the aggregate) with the new key.
#[inline(always)]
fn relay(
    ctx: &TcContext,
    key: &mut bpf_tunnel_key,
    flags: u64,
    from: u32,
    to: &FdbEntry,
    len: usize,
) -> Result<Verdict, DropReason> {
    let hop = relay_hop(from, to)?;
    set_key_addr(key, flags, &hop.addr);
    // The kernel's defaults: the route's TTL, no TOS.
    key.tunnel_ttl = 0;
    key.tunnel_tos = 0;
    // SAFETY: helper on the program's own skb, reading KEY_SIZE bytes of `key`.
    if unsafe { bpf_skb_set_tunnel_key(ctx.skb.skb, key, KEY_SIZE, flags) } != 0 {
        return Err(DropReason::NoRoute);
    }
    count_sent(&hop, len);
    // SAFETY: reading the context's own field, then a helper call.
    let action = unsafe { bpf_redirect((*ctx.skb.skb).ifindex, 0) };
    Ok(Verdict::Act(action as i32))
}

/// The sender of a tunnel key, as the maps hold addresses: an IPv4 key holds its address
/// in host byte order, an IPv6 key its bytes as on the wire (in four u32 words).
#[inline(always)]
fn key_addr(key: &bpf_tunnel_key, flags: u64) -> [u8; 16] {
    if flags & BPF_F_TUNINFO_IPV6 as u64 != 0 {
        // SAFETY: an IPv6 key fills this member of the union (any bits are valid u32s).
        let w = unsafe { key.__bindgen_anon_1.remote_ipv6 };
        let b = |i: usize| w[i].to_ne_bytes();
        let (a, c, d, e) = (b(0), b(1), b(2), b(3));
        [
            a[0], a[1], a[2], a[3], c[0], c[1], c[2], c[3], d[0], d[1], d[2], d[3], e[0], e[1],
            e[2], e[3],
        ]
    } else {
        // SAFETY: an IPv4 key fills this member of the union (any bits are a valid u32).
        v4_mapped(unsafe { key.__bindgen_anon_1.remote_ipv4 }.to_be_bytes())
    }
}

/// Points a tunnel key of the family `flags` name at `addr` (the inverse of
/// [`key_addr`]).
#[inline(always)]
fn set_key_addr(key: &mut bpf_tunnel_key, flags: u64, addr: &[u8; 16]) {
    let word = |i: usize| u32::from_ne_bytes([addr[i], addr[i + 1], addr[i + 2], addr[i + 3]]);
    if flags & BPF_F_TUNINFO_IPV6 as u64 != 0 {
        key.__bindgen_anon_1.remote_ipv6 = [word(0), word(4), word(8), word(12)];
    } else {
        key.__bindgen_anon_1.remote_ipv4 = u32::from_be_bytes(v4_of(addr));
    }
}
