//! `violin_tunnel_tc`: TC (tcx ingress) on the kernel's flow-based (external) VXLAN
//! device in TC port mode. It receives what `violin_underlay_tc` left to the kernel: GRO
//! aggregates, decapsulated by the device, with the sender and VNI in the tunnel
//! metadata. They are delivered, relayed (re-encapsulated by the same device) or flooded
//! to local ports exactly as the single frames are.

use aya_ebpf::{
    bindings::bpf_tunnel_key,
    helpers::generated::{bpf_redirect, bpf_skb_get_tunnel_key, bpf_skb_set_tunnel_key},
    macros::classifier,
    programs::TcContext,
};
use dataplane_common::{
    counters::{DropReason, Hook},
    maps::{FdbEntry, UNDERLAY_SLOT},
    packet::{v4_mapped, v4_of, EthHdr, Frame, ETH_P_IPV4, ETH_P_IPV6},
};

use crate::{
    counters::{count_tc, tc_drop, Verdict},
    delivery::{deliver, flood_from_underlay},
    forward::{tunnel_next, FromTunnel},
    frame::Skb,
    maps::{flood_list, peer, vni},
    tunnel::{count_sent, relay_hop},
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
    // SAFETY: plain integers and unions of integers; all-zero is valid.
    let mut key: bpf_tunnel_key = unsafe { core::mem::zeroed() };
    // SAFETY: helper on the program's own skb, writing KEY_SIZE bytes into `key`.
    if unsafe { bpf_skb_get_tunnel_key(ctx.skb.skb, &mut key, KEY_SIZE, 0) } != 0 {
        return Err(DropReason::UnknownPeer);
    }
    // The key holds addresses in host byte order.
    // SAFETY: an IPv4 tunnel fills this member of the union.
    let from = v4_mapped(unsafe { key.__bindgen_anon_1.remote_ipv4 }.to_be_bytes());
    // The underlay hook checked the sender of what it passed; a frame the device got
    // some other way is checked here.
    peer(&from).ok_or(DropReason::UnknownPeer)?;
    let info = vni(key.tunnel_id).ok_or(DropReason::UnknownVni)?;
    let eth: EthHdr = Skb(ctx).load(0).ok_or(DropReason::TruncatedInner)?;
    match tunnel_next(info.flags, key.tunnel_id, eth.src, eth.dst) {
        FromTunnel::Deliver(to) => {
            let ethertype = u16::from_be_bytes(eth.ethertype);
            let ip = ethertype == ETH_P_IPV4 || ethertype == ETH_P_IPV6;
            deliver(&to, ip, len).map(Verdict::Act)
        }
        FromTunnel::Transit(to) => relay(ctx, &mut key, from, &to, len),
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
    from: [u8; 16],
    to: &FdbEntry,
    len: usize,
) -> Result<Verdict, DropReason> {
    let hop = relay_hop(from, to)?;
    key.__bindgen_anon_1.remote_ipv4 = u32::from_be_bytes(v4_of(&hop.addr));
    // The kernel's defaults: the route's TTL, no TOS.
    key.tunnel_ttl = 0;
    key.tunnel_tos = 0;
    // SAFETY: helper on the program's own skb, reading KEY_SIZE bytes of `key`.
    if unsafe { bpf_skb_set_tunnel_key(ctx.skb.skb, key, KEY_SIZE, 0) } != 0 {
        return Err(DropReason::NoRoute);
    }
    count_sent(&hop, len);
    // SAFETY: reading the context's own field, then a helper call.
    let action = unsafe { bpf_redirect((*ctx.skb.skb).ifindex, 0) };
    Ok(Verdict::Act(action as i32))
}
