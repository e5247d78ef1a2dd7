//! TC port mode: which inner TCP flows have frames inside the kernel's flow-based VXLAN
//! device, so that a lone segment may skip the device without overtaking its stream.
//!
//! GRO aggregates must go through the device (only it can take their tunnel GSO state
//! off), and they wait there in a queue of their own (gro_cells). A lone segment handed
//! straight to its VM meanwhile would arrive before the aggregate it follows. So
//! `violin_underlay_tc` counts, per inner flow, the segments it passes to the device and
//! marks their skbs; `violin_tunnel_tc` counts the marked ones out; and a lone segment
//! whose flow has none inside, and is no bulk stream, is delivered directly, as every
//! other single frame is, saving the device's receive path (the latency of small
//! messages and of ACKs).

use core::ptr::addr_of_mut;

use aya_ebpf::{
    bindings::BPF_NOEXIST, helpers::generated::bpf_ktime_get_ns, macros::map, maps::LruHashMap,
    programs::TcContext,
};
use dataplane_common::packet::flow_hash;

use crate::{counters::atomic_add, frame::Skb};

/// An inner flow: its environment and the hash of its headers (`packet::flow_hash`, the
/// one the outer source port comes from). Two flows that share a key only make each other
/// take the device more often.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct Flow {
    vni: u32,
    hash: u32,
}

impl Flow {
    /// The flow of the Ethernet frame at `off` in the skb.
    #[inline(always)]
    pub(crate) fn of(ctx: &TcContext, vni: u32, off: usize) -> Flow {
        Flow {
            vni,
            hash: flow_hash(&Skb(ctx), off),
        }
    }
}

#[repr(C)]
struct InDevice {
    /// Segments passed to the device and not yet out of it. Counted in segments, not
    /// skbs, because the device's gro_cells may merge what it was given. Changed only
    /// through [`atomic_add`]; a value below zero (a reset that raced a count) is corrected to
    /// zero by the next frame.
    segments: i64,
    /// When the flow last passed a frame to the device.
    passed_ns: u64,
    /// When the flow last passed a GRO aggregate.
    aggregate_ns: u64,
}

/// Flows recently through the device. Not pinned: a restarted daemon's programs start
/// with an empty map, which costs at most one segment's order at that instant.
#[map]
static IN_DEVICE: LruHashMap<Flow, InDevice> = LruHashMap::with_max_entries(16384, 0);

/// The mark of a frame counted into the device: the device keeps skb->mark through its
/// decapsulation (it clears it only across network namespaces). The outer packet carries
/// it through the host's IP stack to the device's socket, where policy routing and
/// firewall rules see it; a rule that rewrites it keeps the flow on the device's path
/// (its count never goes down): slower, never out of order.
const MARK: u32 = 0x5649_4f4c;

/// A flow that passed a GRO aggregate this recently is a bulk stream: its lone
/// segments keep to the device too (where its gro_cells may still merge them), so that
/// only flows of single frames (requests and responses, ACKs) take the short way.
const BULK_NS: u64 = 2_000_000;

/// A flow with segments counted inside the device that passed nothing for this long lost
/// them there (a full queue drops without telling, a firewall may rewrite the mark): the
/// count restarts. Until such a pause the flow keeps to the device's path, which costs
/// speed, not order.
const STALE_NS: u64 = 100_000_000;

/// The segments an skb carries: a GRO aggregate its count, any other one.
#[inline(always)]
fn segments(ctx: &TcContext) -> i64 {
    // SAFETY: reading the context's own field.
    let segs = unsafe { (*ctx.skb.skb).gso_segs };
    segs.max(1) as i64
}

/// Whether the frame of `flow` must go through the device: an aggregate always, a lone
/// segment while segments of its flow are inside or it is a bulk stream (`BULK_NS`). Such
/// a frame is counted in and marked.
#[inline(always)]
pub(crate) fn through_device(ctx: &TcContext, flow: &Flow, aggregate: bool) -> bool {
    // SAFETY: helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    let n = segments(ctx);
    if let Some(e) = IN_DEVICE.get_ptr(flow) {
        let e = e.cast_mut();
        // Other CPUs update the entry too. The count changes only atomically; the times
        // may be a frame newer than `now` (then the ages below are zero: the flow counts
        // as busy, the safe side).
        // SAFETY: an element of a preallocated map, read and written field by field.
        let (seen, passed, bulk_at) = unsafe { ((*e).segments, (*e).passed_ns, (*e).aggregate_ns) };
        let mut inside = seen > 0;
        if seen < 0 || (inside && now.saturating_sub(passed) > STALE_NS) {
            // SAFETY: as above.
            atomic_add(unsafe { addr_of_mut!((*e).segments) }, -seen);
            inside = false;
        }
        let bulk = now.saturating_sub(bulk_at) < BULK_NS;
        if !aggregate && !inside && !bulk {
            return false;
        }
        // SAFETY: as above.
        unsafe {
            atomic_add(addr_of_mut!((*e).segments), n);
            (*e).passed_ns = now;
            if aggregate {
                (*e).aggregate_ns = now;
            }
        }
    } else {
        if !aggregate {
            return false;
        }
        let first = InDevice {
            segments: n,
            passed_ns: now,
            aggregate_ns: now,
        };
        // Another CPU may have added the flow meanwhile: then the frame counts there.
        if IN_DEVICE.insert(flow, first, BPF_NOEXIST as u64).is_err() {
            if let Some(e) = IN_DEVICE.get_ptr_mut(flow) {
                // SAFETY: as above.
                unsafe {
                    atomic_add(addr_of_mut!((*e).segments), n);
                    (*e).passed_ns = now;
                    (*e).aggregate_ns = now;
                }
            }
        }
    }
    ctx.set_mark(MARK);
    true
}

/// Counts a frame out of the device, if [`through_device`] counted it in.
#[inline(always)]
pub(crate) fn out_of_device(ctx: &TcContext, vni: u32) {
    // SAFETY: reading the context's own field.
    if unsafe { (*ctx.skb.skb).mark } != MARK {
        return;
    }
    ctx.set_mark(0);
    if let Some(e) = IN_DEVICE.get_ptr_mut(Flow::of(ctx, vni, 0)) {
        // SAFETY: as in `through_device`.
        atomic_add(unsafe { addr_of_mut!((*e).segments) }, -segments(ctx));
    }
}
