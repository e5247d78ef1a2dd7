//! `violin_underlay`: XDP on the underlay NIC. VXLAN from peers is decapsulated to local
//! ports, relayed by a forwarding rule, or flooded by the slow path; malformed VXLAN is
//! dropped and the host's own traffic passes.

use aya_ebpf::{bindings::xdp_action::XDP_PASS, macros::xdp, programs::XdpContext};
use dataplane_common::{
    counters::{DropReason, Hook},
    maps::{FdbEntry, FdbKey, FdbKind, UNDERLAY_SLOT, VNI_ROUTED},
    packet::{classify_underlay, is_multicast, is_zero, Frame, UnderlayVerdict},
};

use crate::{
    counters::{count_action, drop_frame, peer_stats, port_stats},
    forward::{learn, route, to_slow_path},
    frame::Pkt,
    maps::{fdb, host_config, peer, vni},
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
    let pkt = Pkt(ctx);
    let len = pkt.total_len();
    // Identifies the sender only: a peer whose next hop is unresolved may still send.
    let v = match classify_underlay(&pkt, cfg.underlay_addr, peer) {
        UnderlayVerdict::Pass => return XDP_PASS,
        UnderlayVerdict::Drop(reason) => return drop_frame(ctx, UNDERLAY_SLOT, reason, len),
        UnderlayVerdict::Vxlan(v) => v,
    };
    if let Some(s) = port_stats(UNDERLAY_SLOT) {
        s.rx.add(len as u64);
    }
    let Some(vni_info) = vni(v.vni) else {
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
            return match to.kind() {
                Some(FdbKind::Remote) => transit(ctx, &cfg, &v, &to, len),
                _ => decapsulate(ctx, &v, &to, len),
            };
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
    match fdb(&FdbKey::new(v.vni, v.inner.dst)) {
        Some(dst) if dst.kind() == Some(FdbKind::Local) => decapsulate(ctx, &v, &dst, len),
        // The controller placed the VM on another host (it migrated away): the frame
        // goes on there rather than being lost while its sender still points here.
        Some(dst) if dst.kind() == Some(FdbKind::Remote) && dst.is_static() => {
            transit(ctx, &cfg, &v, &dst, len)
        }
        // Unknown here, or learned as remote (stale): flood to local ports only, never
        // back onto the underlay (split horizon).
        _ => to_slow_path(
            ctx,
            UNDERLAY_SLOT,
            cfg.underlay_xsk_base,
            cfg.underlay_queues,
            len,
        ),
    }
}
