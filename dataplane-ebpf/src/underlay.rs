//! `violin_underlay`: XDP on the underlay NIC. VXLAN from peers is decapsulated to local
//! ports, relayed by a forwarding rule, or flooded by the slow path; malformed VXLAN is
//! dropped and the host's own traffic passes.

use aya_ebpf::{bindings::xdp_action::XDP_PASS, macros::xdp, programs::XdpContext};
use dataplane_common::{
    counters::Hook,
    maps::UNDERLAY_SLOT,
    packet::{classify_tunnel, Frame, UnderlayVerdict},
};

use crate::{
    counters::{count_action, drop_frame},
    forward::{accept_from_peer, to_slow_path, tunnel_next, FromTunnel},
    frame::Pkt,
    maps::{host_config, sender},
    tunnel::{decapsulate, transit},
};

#[xdp(frags)]
pub fn violin_underlay(ctx: XdpContext) -> u32 {
    let action = underlay_frame(&ctx);
    count_action(Hook::Underlay, action);
    action
}

#[inline(always)]
fn underlay_frame(ctx: &XdpContext) -> u32 {
    let Some(cfg) = host_config() else {
        return XDP_PASS;
    };
    let pkt = Pkt::new(ctx);
    let len = pkt.total_len();
    // Identifies the sender only: a peer whose next hop is unresolved may still send.
    let v = match classify_tunnel(&pkt, cfg.addr_words(), sender) {
        UnderlayVerdict::Pass => return XDP_PASS,
        UnderlayVerdict::Drop(reason) => return drop_frame(ctx, UNDERLAY_SLOT, reason, len),
        UnderlayVerdict::Vxlan(v) => v,
    };
    let (vni_info, epoch) = match accept_from_peer(&v, len) {
        Ok(accepted) => accepted,
        Err(reason) => return drop_frame(ctx, UNDERLAY_SLOT, reason, len),
    };
    match tunnel_next((vni_info.flags, v.vni), v.inner.src(), v.inner.dst(), epoch) {
        FromTunnel::Deliver(to) => decapsulate(ctx, &v, &to, len),
        FromTunnel::Transit(to) => transit(ctx, cfg, &v, &to, len),
        // BUM and unknown unicast go up whole: the slow path needs the VNI from the header.
        FromTunnel::Flood => to_slow_path(
            ctx,
            UNDERLAY_SLOT,
            cfg.underlay_xsk_base,
            cfg.underlay_queues,
            len,
        ),
    }
}
