//! `violin_port`: XDP on a VM port. Local destinations are redirected, remote ones
//! encapsulated, floods handed to violind's slow path over AF_XDP. Bounded traffic is
//! passed on to the port's TC program, which can shape it.

use aya_ebpf::{bindings::xdp_action, macros::xdp, programs::XdpContext};
use dataplane_common::{
    counters::{DropReason, Hook},
    maps::{FdbKind, UNDERLAY_SLOT},
    observe::FORWARDED,
    packet::{classify_port, Frame},
};

use crate::{
    counters::{count_action, count_pair, drop_frame, port_stats},
    forward::{port_next, redirect_to_port, to_slow_path, Next},
    frame::Pkt,
    maps::port,
    observe::{describe, sampled},
    policy::{admit, needs_queue, port_policy},
    tunnel::encapsulate,
};

#[xdp(frags)]
pub fn violin_port(ctx: XdpContext) -> u32 {
    let action = port_frame(&ctx);
    count_action(Hook::Port, action);
    action
}

#[inline(always)]
fn port_frame(ctx: &XdpContext) -> u32 {
    let pkt = Pkt::new(ctx);
    let len = pkt.total_len();
    let ifindex = ctx.ingress_ifindex() as u32;
    let Some(port) = port(ifindex) else {
        return drop_frame(ctx, UNDERLAY_SLOT, DropReason::UnknownPort, len);
    };
    let eth = classify_port(&pkt).and_then(|eth| {
        let pair = port_policy(&pkt, &port, &eth)?;
        Ok((eth, pair))
    });
    // A bounded frame is delayed rather than dropped: XDP cannot hold it, so it goes on
    // to the port's TC program (an skb), which counts and forwards it in full. Small
    // ones skip the queue, and stay here.
    if let Ok((_, pair)) = eth {
        if needs_queue(&port, pair, len) {
            return xdp_action::XDP_PASS;
        }
    }
    if let Some(s) = port_stats(port.slot) {
        s.rx.add(len as u64);
    }
    let (eth, pair) = match eth {
        Ok(found) => found,
        Err(reason) => return drop_frame(ctx, port.slot, reason, len),
    };
    let dst = match port_next(&port, ifindex, &eth) {
        Ok(Next::To(d)) => d,
        Ok(Next::Flood) => {
            // To the slow path, under storm control. (A bounded VM's bulk floods went to
            // TC, where its bound is charged; its small ones, ARP, stay here.)
            count_pair(&port, &eth, len);
            return to_slow_path(ctx, port.slot, port.xsk_base, port.queues, len);
        }
        Err(reason) => return drop_frame(ctx, port.slot, reason, len),
    };
    let local = dst.kind() == Some(FdbKind::Local);
    if local && dst.ifindex == ifindex {
        return drop_frame(ctx, port.slot, DropReason::Hairpin, len);
    }
    // A bounded frame here is small (bulk ones went to TC): charged, never queued.
    if let Err(reason) = admit(&port, pair, !local, len) {
        return drop_frame(ctx, port.slot, reason, len);
    }
    count_pair(&port, &eth, len);
    if sampled() {
        describe(&pkt, port.slot, FORWARDED);
    }
    match dst.kind() {
        Some(FdbKind::Local) => redirect_to_port(ctx, port.slot, &dst, len),
        _ => encapsulate(ctx, &port, &dst, len),
    }
}
