//! Policies on frames from VM ports, shared by the XDP and TC port programs, and the
//! shaping of bounded traffic (TC only: XDP cannot hold a frame back).

use aya_ebpf::{helpers::generated::bpf_ktime_get_ns, programs::TcContext};
use dataplane_common::{
    counters::DropReason,
    maps::{
        htb_class, PairKey, PairState, PortInfo, Shaper, PAIR_ALLOWED, PAIR_LIMITED, PORT_LIMITED,
        PORT_RESTRICTED, PORT_VM_BOUNDED, SHAPER_SMALL_FRAME, VM_LEAF_BASE,
    },
    packet::{check_source, is_multicast, Eth, Frame},
};

use crate::maps::{PAIRS, VM_BOUNDS};

/// Enforced here because the VM cannot reach it: the source must be the port's own, and
/// in environments with a pair policy a unicast frame must be between an allowed pair.
/// Returns the pair's state when the pair is bounded.
#[inline(always)]
pub(crate) fn port_policy<F: Frame>(
    f: &F,
    port: &PortInfo,
    eth: &Eth,
) -> Result<Option<*mut PairState>, DropReason> {
    check_source(f, eth, port.flags, &port.mac, &port.ip)?;
    if port.flags & (PORT_RESTRICTED | PORT_LIMITED) == 0 || is_multicast(&eth.dst()) {
        return Ok(None);
    }
    let key = PairKey::new(port.vni, eth.src(), eth.dst());
    let Some(state) = PAIRS.get_ptr_mut(key) else {
        if port.flags & PORT_RESTRICTED != 0 {
            return Err(DropReason::NotAllowed);
        }
        return Ok(None);
    };
    // SAFETY: the entry stays valid for this program run; races between CPUs only blur
    // the clock (see Shaper).
    let state = unsafe { &mut *state };
    if port.flags & PORT_RESTRICTED != 0 && state.flags & PAIR_ALLOWED == 0 {
        return Err(DropReason::NotAllowed);
    }
    if state.flags & PAIR_LIMITED != 0 {
        return Ok(Some(state));
    }
    Ok(None)
}

/// Whether a frame must take the TC path, where it can wait in its bound's queue: one
/// bounded by its pair or its VM, unless it is small enough to skip the queue anyway.
#[inline(always)]
pub(crate) fn needs_queue(port: &PortInfo, pair: Option<*mut PairState>, len: usize) -> bool {
    (pair.is_some() || port.flags & PORT_VM_BOUNDED != 0) && len as u64 > SHAPER_SMALL_FRAME
}

/// Checks a frame against the clocks of its bounds, its pair's and, for a frame leaving
/// the host, its VM's, and charges it to them; says whether any bound applied. One that
/// would wait beyond a horizon is refused and charged to neither.
#[inline(always)]
pub(crate) fn admit(
    port: &PortInfo,
    pair: Option<*mut PairState>,
    leaves_host: bool,
    len: usize,
) -> Result<bool, DropReason> {
    let vm = if leaves_host && port.flags & PORT_VM_BOUNDED != 0 {
        VM_BOUNDS.get_ptr_mut(port.slot)
    } else {
        None
    };
    // SAFETY: map entries stay valid for this program run; races only blur the clocks.
    let pair_clock = pair.map(|p| unsafe { &mut (*p).shaper as *mut Shaper });
    if pair_clock.is_none() && vm.is_none() {
        return Ok(false);
    }
    // SAFETY: helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    for s in [pair_clock, vm].into_iter().flatten() {
        // SAFETY: as above.
        if unsafe { (*s).due(now) }.is_none() {
            return Err(DropReason::RateLimited);
        }
    }
    for s in [pair_clock, vm].into_iter().flatten() {
        // SAFETY: as above.
        unsafe { (*s).charge(now, len as u64) };
    }
    Ok(true)
}

/// Admits a bounded frame (see [`admit`]) and queues it for its shaper: the HTB class of
/// its pair, or, for a frame leaving the host, of its VM (under whose class its pair's
/// class sits, so the tighter bound wins). Small frames skip the queue (see
/// SHAPER_SMALL_FRAME) but are charged all the same.
#[inline(always)]
pub(crate) fn shape(
    ctx: &TcContext,
    port: &PortInfo,
    pair: Option<*mut PairState>,
    leaves_host: bool,
    len: usize,
) -> Result<(), DropReason> {
    if admit(port, pair, leaves_host, len)? && len as u64 > SHAPER_SMALL_FRAME {
        let class = match pair {
            // SAFETY: the entry stays valid for this program run.
            Some(p) => unsafe { (*p).class },
            None => VM_LEAF_BASE + port.slot,
        };
        // SAFETY: the program's own skb; TC programs may write its priority, which the
        // redirect keeps and HTB reads as the class.
        unsafe { (*ctx.skb.skb).priority = htb_class(class) };
    }
    Ok(())
}
