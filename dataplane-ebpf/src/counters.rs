//! Per-CPU counters: actions per hook, port and peer traffic, drops by reason, VM pairs.

use aya_ebpf::{
    bindings::{
        xdp_action::{XDP_DROP, XDP_PASS, XDP_REDIRECT},
        BPF_NOEXIST, TC_ACT_REDIRECT, TC_ACT_SHOT,
    },
    maps::PerCpuArray,
    programs::{TcContext, XdpContext},
};
use aya_log_ebpf::debug;
use dataplane_common::{
    counters::{action_index, Counter, DropReason, Hook, PeerStats, PortStats, ACTION_FLOOD},
    maps::{pair_cell_index, PairKey, PortInfo, PORT_UNCOUNTED},
    packet::{is_multicast, Eth},
};

use crate::{
    frame::{Pkt, SkbHead},
    maps::{ACTIONS, DROPS, PAIR_CELLS, PAIR_TRAFFIC, PEER_STATS, PORT_STATS},
    observe::{describe, observed},
};

#[inline(always)]
fn bump(map: &PerCpuArray<u64>, index: u32) {
    if let Some(p) = map.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer.
        unsafe { *p += 1 };
    }
}

/// Counts a hook's verdict, in the slot numbering of `counters::action_index`.
#[inline(always)]
pub(crate) fn count_action(hook: Hook, action: u32) {
    bump(&ACTIONS, action_index(hook, action));
}

#[inline(always)]
pub(crate) fn port_stats(slot: u32) -> Option<&'static mut PortStats> {
    // SAFETY: per-CPU slot, no concurrent writer.
    PORT_STATS.get_ptr_mut(slot).map(|p| unsafe { &mut *p })
}

#[inline(always)]
pub(crate) fn peer_stats(slot: u32) -> Option<&'static mut PeerStats> {
    // SAFETY: per-CPU slot, no concurrent writer.
    PEER_STATS.get_ptr_mut(slot).map(|p| unsafe { &mut *p })
}

/// Drop accounting both hooks share: the reason, and the bytes against the slot the
/// frame came in on.
#[inline(always)]
pub(crate) fn count_drop(slot: u32, reason: DropReason, len: usize) {
    bump(&DROPS, reason as u32);
    if let Some(s) = port_stats(slot) {
        s.dropped.add(len as u64);
    }
}

/// Counts the drop and returns the XDP verdict for it.
#[inline(always)]
pub(crate) fn drop_frame(ctx: &XdpContext, slot: u32, reason: DropReason, len: usize) -> u32 {
    count_drop(slot, reason, len);
    if observed() {
        describe(&Pkt::new(ctx), slot, reason as u8 + 1);
    }
    debug!(ctx, "drop slot={} reason={}", slot, reason as u32);
    XDP_DROP
}

/// What a TC program did with the skb.
pub(crate) enum Verdict {
    /// A TC action for the kernel to carry out.
    Act(i32),
    /// The copies went out by bpf_clone_redirect; the original is consumed. Counted in
    /// its own ACTIONS slot, returned to the kernel as TC_ACT_SHOT.
    Flooded,
}

/// Counts a TC program's verdict and returns its action. TC verdicts are counted in the
/// XDP action slots (`counters::XDP_ACTION_NAMES`), so statistics read the same in both
/// port modes.
#[inline(always)]
pub(crate) fn count_tc(hook: Hook, verdict: Verdict) -> i32 {
    let (slot, action) = match verdict {
        Verdict::Act(TC_ACT_SHOT) => (XDP_DROP, TC_ACT_SHOT),
        Verdict::Act(TC_ACT_REDIRECT) => (XDP_REDIRECT, TC_ACT_REDIRECT),
        Verdict::Act(action) => (XDP_PASS, action),
        Verdict::Flooded => (ACTION_FLOOD, TC_ACT_SHOT),
    };
    count_action(hook, slot);
    action
}

/// Counts a TC program's drop.
#[inline(always)]
pub(crate) fn tc_drop(ctx: &TcContext, slot: u32, reason: DropReason, len: usize) -> Verdict {
    count_drop(slot, reason, len);
    if observed() {
        describe(&SkbHead(ctx), slot, reason as u8 + 1);
    }
    debug!(ctx, "drop slot={} reason={}", slot, reason as u32);
    Verdict::Act(TC_ACT_SHOT)
}

/// Counts a VM's unicast frame to another VM (the local traffic matrix VTTIF reads),
/// unless the port's counting is off.
#[inline(always)]
pub(crate) fn count_pair(port: &PortInfo, eth: &Eth, len: usize) {
    if is_multicast(&eth.dst()) || port.flags & PORT_UNCOUNTED != 0 {
        return;
    }
    // By reference: passed by value, the key is copied to the stack for every call.
    let key = &PairKey::new(port.vni, eth.src(), eth.dst());
    // This CPU's cell for the pair, if the pair holds it or it is empty (see
    // PAIR_CELL_COUNT): no call on the path of the pair's frames.
    if let Some(cell) = PAIR_CELLS.get_ptr_mut(pair_cell_index(key)) {
        // SAFETY: this CPU's element, live for this program run, of plain integers; no
        // other program on this CPU runs meanwhile. violind writes a position back only to
        // empty the cells of pairs gone, which may lose a frame counted meanwhile
        // (dataplane-user's pair_counts), never make the memory invalid.
        let cell = unsafe { &mut *cell };
        if cell.is_empty() {
            cell.key = *key;
        }
        if cell.key.same(key) {
            cell.traffic.add(len as u64);
            return;
        }
    }
    // Another pair holds the cell. One lookup for a pair already counted, the common case.
    if let Some(c) = PAIR_TRAFFIC.get_ptr_mut(key) {
        // SAFETY: this CPU's copy of the entry.
        unsafe { (*c).add(len as u64) };
        return;
    }
    // A new pair starts at this frame on this CPU (kernels since 6.1 zero the other CPUs'
    // copies of an entry a program adds). Another CPU may have added it meanwhile: then
    // the frame goes to its entry rather than replacing it.
    let mut first = Counter::default();
    first.add(len as u64);
    if PAIR_TRAFFIC.insert(key, first, BPF_NOEXIST as u64).is_err() {
        if let Some(c) = PAIR_TRAFFIC.get_ptr_mut(key) {
            // SAFETY: as above.
            unsafe { (*c).add(len as u64) };
        }
    }
}

/// Adds `n` to a counter other CPUs change too, atomically (BPF_ATOMIC add). Rust offers
/// no atomic read-modify-write on this target, so the one instruction is written out.
#[inline(always)]
pub(crate) fn atomic_add(counter: *mut i64, n: i64) {
    // SAFETY: `counter` points to a valid, aligned i64 in a map value; the instruction
    // adds `n` to it and touches nothing else.
    unsafe {
        core::arch::asm!(
            "lock *(u64 *)({p} + 0) += {n}",
            p = in(reg) counter,
            n = in(reg) n,
            options(nostack),
        )
    };
}
