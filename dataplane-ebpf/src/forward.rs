//! Forwarding decisions the hooks share: learning, forwarding rules, the forwarding
//! table, and handing a frame to a local port or to the slow path.

use aya_ebpf::{helpers::generated::bpf_ktime_get_ns, programs::XdpContext};
use dataplane_common::{
    counters::DropReason,
    maps::{
        route_keys, FdbEntry, FdbKey, FdbKind, PortInfo, VniInfo, PORT_ROUTED, UNDERLAY_SLOT,
        VNI_ROUTED,
    },
    packet::{is_multicast, is_zero, Eth},
};

use crate::{
    counters::{drop_frame, peer_stats, port_stats},
    maps::{vni, ROUTES, STORM, TX_PORTS, XSKS},
    memo::{epoch, fdb, learn},
    tunnel::Vxlan,
};

/// The forwarding rule's decision for a frame of a routed environment; `None` when no
/// rule matches (the frame is then forwarded as learned).
#[inline(always)]
pub(crate) fn route(vni: u32, src: [u8; 6], dst: [u8; 6]) -> Option<FdbEntry> {
    // Keys by reference: passed by value, each is copied to the stack once more.
    let [k0, k1, k2, k3] = &route_keys(vni, src, dst);
    // SAFETY: all four lookups are copied out of the map before use.
    let hit = unsafe {
        ROUTES
            .get(k0)
            .or_else(|| ROUTES.get(k1))
            .or_else(|| ROUTES.get(k2))
            .or_else(|| ROUTES.get(k3))
    };
    // A "no rule" row still ends the probe: it keeps a pair no rule names from falling
    // through to a wildcard row.
    hit.copied().filter(|e| e.kind() != Some(FdbKind::NoRule))
}

/// Where a frame from a VM port that passed its policies goes.
pub(crate) enum Next {
    To(FdbEntry),
    /// Broadcast, multicast or unknown: replicate (slow path in XDP, in-kernel in TC).
    Flood,
}

/// Learns the sender and decides by rule, else by the forwarding table; the part of a VM
/// port's path both port programs share. A flood over the port's storm-control rate is
/// refused. The pair's traffic is counted by the caller once the frame has passed its
/// bounds.
#[inline(always)]
pub(crate) fn port_next(port: &PortInfo, ifindex: u32, eth: &Eth) -> Result<Next, DropReason> {
    match port_dest(port, ifindex, eth) {
        Next::Flood if !storm_admit(port.slot) => Err(DropReason::Storm),
        next => Ok(next),
    }
}

/// Whether the port's storm control lets one more flooded frame go now.
#[inline(always)]
fn storm_admit(slot: u32) -> bool {
    let Some(bucket) = STORM.get_ptr_mut(slot) else {
        return true;
    };
    // SAFETY: the slot stays valid for this program run; races between CPUs only blur
    // the bucket (see StormBucket). The helper takes no arguments.
    unsafe { (*bucket).admit(bpf_ktime_get_ns()) }
}

#[inline(always)]
fn port_dest(port: &PortInfo, ifindex: u32, eth: &Eth) -> Next {
    let (src, dst) = (eth.src(), eth.dst());
    let epoch = learn(
        &FdbKey::new(port.vni, src),
        FdbEntry::local(ifindex, port.slot),
        epoch(),
    );
    if port.flags & PORT_ROUTED != 0 {
        if let Some(d) = route(port.vni, src, dst) {
            return Next::To(d);
        }
    }
    if is_multicast(&dst) {
        return Next::Flood;
    }
    match fdb(&FdbKey::new(port.vni, dst), epoch) {
        Some(d) => Next::To(d),
        None => Next::Flood,
    }
}

/// What every underlay hook does first with VXLAN from a peer: counts it, checks that its
/// environment is served here, and learns where its sender lives. With the environment
/// comes the epoch the frame's lookup of its destination may use (see [`learn`]).
#[inline(always)]
pub(crate) fn accept_from_peer(
    v: &Vxlan,
    len: usize,
) -> Result<(VniInfo, Option<u64>), DropReason> {
    if let Some(s) = port_stats(UNDERLAY_SLOT) {
        s.rx.add(len as u64);
    }
    let info = vni(v.vni).ok_or(DropReason::UnknownVni)?;
    if let Some(s) = peer_stats(v.peer_info.slot) {
        s.rx.add(len as u64);
    }
    let src = v.inner.src();
    let epoch = epoch();
    if is_multicast(&src) || is_zero(&src) {
        return Ok((info, epoch));
    }
    let epoch = learn(
        &FdbKey::new(v.vni, src),
        FdbEntry::remote(v.peer, v.peer_info.slot),
        epoch,
    );
    Ok((info, epoch))
}

/// Where a frame that arrived through a tunnel goes; every underlay hook decides alike.
pub(crate) enum FromTunnel {
    /// To a local port (decapsulated).
    Deliver(FdbEntry),
    /// On to another host, by a forwarding rule or because the VM moved there.
    Transit(FdbEntry),
    /// Broadcast, multicast or unknown: to local ports only, never back onto the underlay
    /// (split horizon).
    Flood,
}

/// The decision for a frame of environment `vni` (flags `vni_flags`) from a peer, with the
/// forwarding table as of `epoch`.
#[inline(always)]
pub(crate) fn tunnel_next(
    (vni_flags, vni): (u32, u32),
    src: [u8; 6],
    dst: [u8; 6],
    epoch: Option<u64>,
) -> FromTunnel {
    if vni_flags & VNI_ROUTED != 0 {
        if let Some(to) = route(vni, src, dst) {
            return match to.kind() {
                Some(FdbKind::Remote) => FromTunnel::Transit(to),
                _ => FromTunnel::Deliver(to),
            };
        }
    }
    if is_multicast(&dst) {
        return FromTunnel::Flood;
    }
    match fdb(&FdbKey::new(vni, dst), epoch) {
        Some(d) if d.kind() == Some(FdbKind::Local) => FromTunnel::Deliver(d),
        // The controller placed the VM on another host (it migrated away): the frame
        // goes on there rather than being lost while its sender still points here.
        Some(d) if d.kind() == Some(FdbKind::Remote) && d.is_static() => FromTunnel::Transit(d),
        // Unknown here, or learned as remote (stale).
        _ => FromTunnel::Flood,
    }
}

/// Hands a frame to `violind`'s AF_XDP socket for this interface and rx queue.
#[inline(always)]
pub(crate) fn to_slow_path(
    ctx: &XdpContext,
    slot: u32,
    xsk_base: u32,
    queues: u32,
    len: usize,
) -> u32 {
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

/// XDP redirect to a local port; a failure counts against the port the frame came from.
#[inline(always)]
pub(crate) fn redirect_to_port(ctx: &XdpContext, from_slot: u32, to: &FdbEntry, len: usize) -> u32 {
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
