//! `violin_underlay_tc`: TC (tcx ingress) on the underlay NIC in TC port mode, where no
//! XDP program runs there, so the kernel's GRO sees every frame first. Single VXLAN
//! frames from peers (small packets, latency, floods, TCP ACKs) are decapsulated here and
//! delivered, relayed or flooded to local ports (and, at a star's hub, to its other
//! peers: the other hosts flood to the hub alone). GRO aggregates (a stream's segments
//! merged by the VXLAN socket's GRO) go on to the kernel's flow-based VXLAN device, the
//! only place that can take their tunnel GSO state off on this kernel, and
//! `violin_tunnel_tc` forwards from there; so do the lone TCP segments of a bulk stream or
//! of one with segments in the device (`inflight`), so that each stream keeps its order.
//! Malformed VXLAN is dropped and the host's own traffic passes, as in XDP.

use aya_ebpf::{
    bindings::TC_ACT_OK, helpers::generated::bpf_redirect, macros::classifier, programs::TcContext,
};
use dataplane_common::{
    counters::{DropReason, Hook},
    maps::{HostConfig, UNDERLAY_SLOT, VNI_HUB},
    packet::{classify_tunnel, ip_protocol, Frame, UnderlayVerdict, IPPROTO_TCP},
};

use crate::{
    counters::{count_tc, tc_drop, Verdict},
    delivery::{deliver, flood_from_underlay},
    forward::{accept_from_peer, tunnel_next, FromTunnel},
    frame::Skb,
    inflight::{through_device, Flow},
    maps::{flood_list, host_config, sender},
    tunnel::{count_sent, tc_decap, tc_relay_flood, tc_transit, Vxlan},
};

#[classifier]
pub fn violin_underlay_tc(ctx: TcContext) -> i32 {
    count_tc(Hook::UnderlayTc, underlay_skb(&ctx))
}

#[inline(always)]
fn underlay_skb(ctx: &TcContext) -> Verdict {
    let Some(cfg) = host_config() else {
        return Verdict::Act(TC_ACT_OK);
    };
    let skb = Skb(ctx);
    let len = skb.total_len();
    let v = match classify_tunnel(&skb, cfg.addr_words(), sender) {
        UnderlayVerdict::Pass => return Verdict::Act(TC_ACT_OK),
        UnderlayVerdict::Drop(reason) => return tc_drop(ctx, UNDERLAY_SLOT, reason, len),
        UnderlayVerdict::Vxlan(v) => v,
    };
    let (info, epoch) = match accept_from_peer(&v, len) {
        Ok(accepted) => accepted,
        Err(reason) => return tc_drop(ctx, UNDERLAY_SLOT, reason, len),
    };
    // SAFETY: reading the context's own field.
    let aggregate = unsafe { (*ctx.skb.skb).gso_size } > 0;
    // A TCP segment GRO left alone takes the aggregates' way while its stream has
    // segments in the device (handed to the VM here it would overtake them) or is a bulk
    // stream (which keeps to one path).
    if aggregate || ip_protocol(&skb, v.outer_len) == Some(IPPROTO_TCP) {
        let flow = Flow::of(ctx, v.vni, v.outer_len);
        if through_device(ctx, &flow, aggregate) {
            return Verdict::Act(TC_ACT_OK);
        }
    }
    match forward(ctx, cfg, &v, (info.flags, epoch), len) {
        Ok(verdict) => verdict,
        Err(reason) => tc_drop(ctx, UNDERLAY_SLOT, reason, len),
    }
}

#[inline(always)]
fn forward(
    ctx: &TcContext,
    cfg: &HostConfig,
    v: &Vxlan,
    (vni_flags, epoch): (u32, Option<u64>),
    len: usize,
) -> Result<Verdict, DropReason> {
    let inner_len = v.inner_len;
    match tunnel_next((vni_flags, v.vni), v.inner.src(), v.inner.dst(), epoch) {
        FromTunnel::Deliver(to) => {
            let ip = tc_decap(ctx, v, len)?;
            deliver(ctx, &to, ip, inner_len).map(Verdict::Act)
        }
        FromTunnel::Transit(to) => {
            let hop = tc_transit(ctx, cfg, v, &to, len)?;
            count_sent(&hop, inner_len);
            // SAFETY: helper call.
            Ok(Verdict::Act(
                unsafe { bpf_redirect(cfg.underlay_ifindex, 0) } as i32,
            ))
        }
        FromTunnel::Flood => {
            let list = flood_list(v.vni).ok_or(DropReason::SlowPathDown)?;
            if vni_flags & VNI_HUB != 0 {
                tc_relay_flood(ctx, cfg, v, list, len)?;
            }
            tc_decap(ctx, v, len)?;
            Ok(flood_from_underlay(ctx, list, len))
        }
    }
}
