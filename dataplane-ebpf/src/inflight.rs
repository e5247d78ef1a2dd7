//! TC port mode: which inner TCP flows have frames inside the kernel's flow-based VXLAN
//! device, so that a lone segment may skip the device without overtaking its stream.
//!
//! GRO aggregates must go through the device (only it can take their tunnel GSO state
//! off), and they wait there in a queue of their own (gro_cells). A lone segment handed
//! straight to its VM meanwhile would arrive before the aggregate it follows. So
//! `violin_underlay_tc` counts, per inner flow, the frames it passes to the device and
//! marks them; `violin_tunnel_tc` counts the marked ones out; and a lone segment whose
//! flow has none inside, and is no bulk stream, is delivered directly, as every other
//! single frame is, saving the device's receive path (the latency of small messages and
//! of ACKs).

use aya_ebpf::{
    bindings::BPF_NOEXIST, helpers::generated::bpf_ktime_get_ns, macros::map, maps::LruHashMap,
    programs::TcContext,
};
use dataplane_common::packet::flow_hash;

use crate::frame::Skb;

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
    /// Frames passed to the device and not yet out of it; below zero only after a reset
    /// (see `STALE_NS`), which counts as none. Changed only by [`add`].
    frames: i64,
    /// When the last of them was passed.
    passed_ns: u64,
    /// When the flow's last GRO aggregate was passed.
    aggregate_ns: u64,
}

/// Flows recently through the device. Not pinned: a restarted daemon's programs start
/// with an empty map, which costs at most one segment's order at that instant.
#[map]
static IN_DEVICE: LruHashMap<Flow, InDevice> = LruHashMap::with_max_entries(16384, 0);

/// The mark of a frame counted into the device. The device keeps skb->mark (it clears it
/// only across network namespaces), and the frames it gets are VXLAN for this host's
/// port, whose mark nothing else reads.
const MARK: u32 = 0x5649_4f4c;

/// A flow that passed a GRO aggregate this recently is a bulk stream: its lone
/// segments keep to the device too (where its gro_cells may still merge them), so that
/// only flows of single frames (requests and responses, ACKs) take the short way.
const BULK_NS: u64 = 2_000_000;

/// A flow whose frames have all been in the device this long lost some there (a full
/// queue drops without telling): the count restarts, rather than keeping the flow on the
/// device's path for good.
const STALE_NS: u64 = 100_000_000;

/// Whether the frame of `flow` must go through the device: an aggregate always, a lone
/// segment while frames of its flow are inside or it is a bulk stream (`BULK_NS`). Such a
/// frame is counted in and marked.
#[inline(always)]
pub(crate) fn through_device(ctx: &TcContext, flow: &Flow, aggregate: bool) -> bool {
    // SAFETY: helper call.
    let now = unsafe { bpf_ktime_get_ns() };
    if let Some(e) = IN_DEVICE.get_ptr_mut(flow) {
        // SAFETY: an element of a preallocated map, which other CPUs update too: `frames`
        // changes atomically (a reset racing a count loses at most that count, as a
        // stale entry would), and a racing `passed_ns` is off by one frame's time.
        let e = unsafe { &mut *e };
        let mut inside = e.frames > 0;
        if inside && now.wrapping_sub(e.passed_ns) > STALE_NS {
            e.frames = 0;
            inside = false;
        }
        let bulk = now.wrapping_sub(e.aggregate_ns) < BULK_NS;
        if !aggregate && !inside && !bulk {
            return false;
        }
        add(&mut e.frames, 1);
        e.passed_ns = now;
        if aggregate {
            e.aggregate_ns = now;
        }
    } else {
        if !aggregate {
            return false;
        }
        let first = InDevice {
            frames: 1,
            passed_ns: now,
            aggregate_ns: now,
        };
        // Another CPU may have added the flow meanwhile: then the frame counts there.
        if IN_DEVICE.insert(flow, first, BPF_NOEXIST as u64).is_err() {
            if let Some(e) = IN_DEVICE.get_ptr_mut(flow) {
                // SAFETY: as above.
                add(unsafe { &mut (*e).frames }, 1);
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
        add(unsafe { &mut (*e).frames }, -1);
    }
}

/// Adds `n` to a counter other CPUs change too, atomically (BPF_ATOMIC add). Rust offers
/// no atomic read-modify-write on this target, so the one instruction is written out.
#[inline(always)]
fn add(counter: &mut i64, n: i64) {
    // SAFETY: `counter` is a valid, aligned i64 in a map value; the instruction adds `n`
    // to it and touches nothing else.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({p} + 0) += {n}",
            p = in(reg) counter as *mut i64,
            n = in(reg) n,
            options(nostack),
        )
    };
}
