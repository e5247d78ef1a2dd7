//! `violin_port_tc`: TC (clsact ingress) on a VM port, `port_mode = "tc"`. Unlike XDP,
//! this keeps the skb: a VM's TSO super-frames and pending checksums travel encapsulated
//! as one GSO skb (the kernel segments them as a tunnel), which is what bulk TCP needs.
//! Floods are replicated in the kernel rather than by the slow path.

use aya_ebpf::{helpers::generated::bpf_redirect, macros::classifier, programs::TcContext};
use dataplane_common::{
    counters::{DropReason, Hook},
    maps::{FdbKind, PortInfo, FLOOD_PEERS, PORT_VM_BOUNDED, UNDERLAY_SLOT},
    observe::FORWARDED,
    packet::{classify_port, Eth, Frame},
};

use crate::{
    counters::{count_pair, count_tc, port_stats, tc_drop, Verdict},
    delivery::{deliver, flood_ports},
    forward::{port_next, Next},
    frame::{Skb, SkbHead},
    maps::{flood_list, host_config, port},
    observe::{describe, sampled},
    policy::{port_policy, shape},
    tunnel::{
        count_sent, family, put_inner_eth, resolve_entry, resolve_peer, send_copy, skb_source_port,
        store_outer4, store_outer6, tc_encap, tc_write_outer, Encap,
    },
};

// Inlined into the entry point the macro makes: left to itself the compiler keeps this
// large body a function of its own, a call and return more on every frame.
#[classifier]
#[inline(always)]
pub fn violin_port_tc(ctx: TcContext) -> i32 {
    count_tc(Hook::PortTc, port_skb(&ctx))
}

#[inline(always)]
fn port_skb(ctx: &TcContext) -> Verdict {
    let skb = Skb(ctx);
    let len = skb.total_len();
    // SAFETY: reading the context's own field.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    let Some(port) = port(ifindex) else {
        return tc_drop(ctx, UNDERLAY_SLOT, DropReason::UnknownPort, len);
    };
    if let Some(s) = port_stats(port.slot) {
        s.rx.add(len as u64);
    }
    let eth = match classify_port(&skb) {
        Ok(eth) => eth,
        Err(reason) => return tc_drop(ctx, port.slot, reason, len),
    };
    let pair = match port_policy(&skb, &port, &eth) {
        Ok(pair) => pair,
        Err(reason) => return tc_drop(ctx, port.slot, reason, len),
    };
    let dst = match port_next(&port, ifindex, &eth) {
        Ok(Next::To(d)) => d,
        Ok(Next::Flood) => return flood_skb(ctx, &port, ifindex, &eth, len),
        Err(reason) => return tc_drop(ctx, port.slot, reason, len),
    };
    let local = dst.kind() == Some(FdbKind::Local);
    if local && dst.ifindex == ifindex {
        return tc_drop(ctx, port.slot, DropReason::Hairpin, len);
    }
    if let Err(reason) = shape(ctx, &port, pair, !local, len) {
        return tc_drop(ctx, port.slot, reason, len);
    }
    count_pair(&port, &eth, len);
    if sampled() {
        describe(&SkbHead(ctx), port.slot, FORWARDED);
    }
    if local {
        // A bounded pair's frame leaves by the other port's egress, through its pair's
        // HTB class. So does a bounded VM's: in XDP port mode its bulk frames come here
        // while its small ones go by XDP into the other VM's queue, and they must not
        // overtake those (the program does not know the port mode, so in TC mode a
        // bounded VM's frames to its neighbours take the port's egress too). Any other
        // goes straight into the other VM.
        let into_peer = pair.is_none() && port.flags & PORT_VM_BOUNDED == 0;
        return match deliver(ctx, &dst, into_peer, len) {
            Ok(action) => Verdict::Act(action),
            Err(reason) => tc_drop(ctx, port.slot, reason, len),
        };
    }
    let Some(cfg) = host_config() else {
        return tc_drop(ctx, port.slot, DropReason::NoRoute, len);
    };
    let Some(hop) = resolve_entry(&dst) else {
        return tc_drop(ctx, port.slot, DropReason::NoRoute, len);
    };
    if let Err(reason) = tc_encap(ctx, cfg, &eth, len) {
        return tc_drop(ctx, port.slot, reason, len);
    }
    if tc_write_outer(ctx, cfg, port.vni, &hop, &eth, len).is_err() {
        return tc_drop(ctx, port.slot, DropReason::NoHeadroom, len);
    }
    count_sent(&hop, len);
    // SAFETY: helper call.
    Verdict::Act(unsafe { bpf_redirect(cfg.underlay_ifindex, 0) } as i32)
}

/// Broadcast, multicast or unknown unicast from a VM port in TC mode: a copy to every
/// other local port of the environment, then, encapsulated once, a copy to every remote
/// host serving it, all in the kernel (bpf_clone_redirect). The remote copies are what the
/// VM sends to other hosts, so its aggregate bound applies to them.
#[inline(always)]
fn flood_skb(ctx: &TcContext, port: &PortInfo, ifindex: u32, eth: &Eth, len: usize) -> Verdict {
    let Some(list) = flood_list(port.vni) else {
        return tc_drop(ctx, port.slot, DropReason::SlowPathDown, len);
    };
    if let Some(s) = port_stats(port.slot) {
        s.to_slow_path.add(len as u64);
    }
    count_pair(port, eth, len);
    flood_ports(ctx, list, ifindex);
    if list.npeers == 0 {
        return Verdict::Flooded;
    }
    if let Err(reason) = shape(ctx, port, None, true, len) {
        return tc_drop(ctx, port.slot, reason, len);
    }
    let Some(cfg) = host_config() else {
        return Verdict::Flooded;
    };
    // Encapsulated once for all peers: each copy only rewrites the outer headers.
    if let Err(reason) = tc_encap(ctx, cfg, eth, len) {
        return tc_drop(ctx, port.slot, reason, len);
    }
    // The inner Ethernet header goes after the outer headers once; each copy rewrites
    // only those.
    let outer = family(cfg).overhead() as usize;
    if put_inner_eth(ctx, outer, eth).is_err() {
        return tc_drop(ctx, port.slot, DropReason::NoHeadroom, len);
    }
    let e = Encap {
        cfg,
        vni: port.vni,
        sport: skb_source_port(ctx, outer),
        inner_len: len,
    };
    // A loop per family: the verifier walks each with one kind of copy (and BPF has no
    // indirect calls to pick it once).
    if cfg.v6 != 0 {
        for i in 0..FLOOD_PEERS {
            if i as u32 >= list.npeers {
                break;
            }
            // An unresolved peer misses this flood; the others still get their copy.
            if let Some(hop) = resolve_peer(list.peers[i]) {
                let stored = store_outer6(ctx, &e, &hop);
                send_copy(ctx, cfg, &hop, stored, len);
            }
        }
    } else {
        for i in 0..FLOOD_PEERS {
            if i as u32 >= list.npeers {
                break;
            }
            if let Some(hop) = resolve_peer(list.peers[i]) {
                let stored = store_outer4(ctx, &e, &hop);
                send_copy(ctx, cfg, &hop, stored, len);
            }
        }
    }
    Verdict::Flooded
}
