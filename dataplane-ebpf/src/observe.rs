//! Frames described for observers (`violind observe`): only while one is attached
//! (`OBSERVE`), each CPU within its budgets (`OBSERVE_BUDGET` for drops,
//! `OBSERVE_SAMPLE_BUDGET` for samples), into the `EVENTS` ring
//! buffer: every dropped frame, and a random sample of forwarded ones (`OBSERVE.below`;
//! none when it is 0; `OBSERVE_SKIP` counts down to the next). With nobody observing, a
//! frame costs one more array lookup.

use aya_ebpf::{
    bindings::BPF_RB_NO_WAKEUP,
    helpers::generated::{bpf_get_prandom_u32, bpf_ktime_get_ns},
};
use dataplane_common::{
    observe::{FlowEvent, FORWARDED},
    packet::Frame,
};

use crate::maps::{EVENTS, OBSERVE, OBSERVE_BUDGET, OBSERVE_SAMPLE_BUDGET, OBSERVE_SKIP};

/// Whether an observer is attached.
#[inline(always)]
pub(crate) fn observed() -> bool {
    OBSERVE.get(0).is_some_and(|c| c.on != 0)
}

/// Whether this forwarded frame is one of the sample observers asked for: each CPU
/// counts down a random skip (`ObserveConfig::skip`), so most frames cost a decrement
/// and none shares state between CPUs.
#[inline(always)]
pub(crate) fn sampled() -> bool {
    let Some(c) = OBSERVE.get(0) else {
        return false;
    };
    if c.on == 0 || c.below == 0 {
        return false;
    }
    let Some(left) = OBSERVE_SKIP.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slot; nothing else on this CPU runs meanwhile.
    unsafe {
        if *left > 0 {
            *left -= 1;
            return false;
        }
        // SAFETY: a helper without arguments.
        *left = c.skip(bpf_get_prandom_u32());
    }
    true
}

/// Describes frame `f`, seen on `slot`, into the ring buffer if this CPU's budget allows;
/// `reason` as [`FlowEvent::reason`]. A call of its own: the drop paths that use it are
/// many, and each inlined copy would cost the verifier.
#[inline(never)]
pub(crate) fn describe<F: Frame>(f: &F, slot: u32, reason: u8) {
    // SAFETY: a helper without arguments.
    let now = unsafe { bpf_ktime_get_ns() };
    let budgets = if reason == FORWARDED {
        &OBSERVE_SAMPLE_BUDGET
    } else {
        &OBSERVE_BUDGET
    };
    let Some(budget) = budgets.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: this CPU's slot; nothing else on this CPU runs meanwhile.
    if !unsafe { (*budget).admit(now) } {
        return;
    }
    // A full buffer (an observer that does not keep up) loses the event, never the frame.
    let Some(mut entry) = EVENTS.reserve::<FlowEvent>(0) else {
        return;
    };
    // SAFETY: fill writes every byte of the reserved event before it is submitted.
    unsafe { (*entry.as_mut_ptr()).fill(f, slot, reason, now) };
    // violind polls the buffer on a timer: waking a reader that does not wait would
    // cost this CPU an interrupt.
    entry.submit(BPF_RB_NO_WAKEUP as u64);
}
