//! TC: handing frames to local ports: a frame that came through a tunnel, decapsulated,
//! to one port or to every port of an environment, and a VM's frame to another VM of the
//! host.

use aya_ebpf::{
    helpers::generated::{bpf_redirect, bpf_redirect_peer},
    programs::TcContext,
};
use dataplane_common::{
    counters::DropReason,
    maps::{FdbEntry, FloodList, FLOOD_PORTS, PORT_PEER_REDIRECT, UNDERLAY_SLOT},
};

use crate::{
    counters::{port_stats, Verdict},
    maps::{port, PORT_SLOTS},
};

/// `skb->pkt_type` of a frame for this host (linux/if_packet.h).
const PACKET_HOST: u32 = 0;

/// Sends the frame at offset 0 to the local port `to` names; the TC action to return.
/// A frame for a veth that may skip the port's egress (`into_peer`) goes into its peer,
/// the VM's end, with bpf_redirect_peer: it reaches the VM's stack in this same softirq,
/// with no transmit and no backlog queue in between (which a second CPU could drain out
/// of order). That needs skb->protocol to be right (as a VM port's receive set it, and
/// the decapsulation leaves it for IP), no queue to wait in (a bounded pair's HTB class
/// sits on the port's egress) and the frame marked as the host's (below); other frames,
/// and taps, leave by the port's egress.
#[inline(always)]
pub(crate) fn deliver(
    ctx: &TcContext,
    to: &FdbEntry,
    into_peer: bool,
    len: usize,
) -> Result<i32, DropReason> {
    let (slot, flags) = port_of(to).ok_or(DropReason::UnknownPort)?;
    if let Some(s) = port_stats(slot) {
        s.tx.add(len as u64);
    }
    if !(into_peer && flags & PORT_PEER_REDIRECT != 0) {
        // SAFETY: helper call; it only records the target for the kernel's redirect.
        return Ok(unsafe { bpf_redirect(to.ifindex, 0) } as i32);
    }
    // The device a frame came in by took it as not its own (PACKET_OTHERHOST) when its
    // destination was not that device's address: a VM port's receive for another VM's
    // frame, the VXLAN device's for what it decapsulated. The VM's stack drops such
    // frames, and kernels before 6.15 keep the type through bpf_redirect_peer (later
    // ones reset it). The underlay's frames were the host's, and skip the call.
    // SAFETY: reading the context's own field.
    if unsafe { (*ctx.skb.skb).pkt_type } != PACKET_HOST {
        ctx.change_type(PACKET_HOST)
            .map_err(|_| DropReason::RedirectFailed)?;
    }
    // SAFETY: helper call; it only records the target for the kernel's redirect.
    Ok(unsafe { bpf_redirect_peer(to.ifindex, 0) } as i32)
}

/// The slot and flags of the local port `to` names: from its slot when that still holds
/// the port (an array lookup), else by its ifindex (while violind rewrites the slots).
#[inline(always)]
fn port_of(to: &FdbEntry) -> Option<(u32, u32)> {
    match PORT_SLOTS.get(to.slot) {
        Some(s) if s.ifindex == to.ifindex => Some((to.slot, s.flags)),
        _ => port(to.ifindex).map(|p| (p.slot, p.flags)),
    }
}

/// A frame from the underlay, decapsulated, to every local port of its environment
/// (`list`), never back onto the underlay; counted as the underlay's flood.
#[inline(always)]
pub(crate) fn flood_from_underlay(ctx: &TcContext, list: &FloodList, len: usize) -> Verdict {
    if let Some(s) = port_stats(UNDERLAY_SLOT) {
        s.to_slow_path.add(len as u64);
    }
    flood_ports(ctx, list, 0);
    Verdict::Flooded
}

/// A copy of the frame at offset 0 out of every local port on `list` but `except`.
#[inline(always)]
pub(crate) fn flood_ports(ctx: &TcContext, list: &FloodList, except: u32) {
    for i in 0..FLOOD_PORTS {
        if i as u32 >= list.nports {
            break;
        }
        let target = list.ports[i];
        if target != except {
            let _ = ctx.clone_redirect(target, 0);
        }
    }
}
