//! Programs for the benchmark's line-rate figures (`cargo xtask bench micro`); violind
//! never loads them. `violin_bench_fwd` sends every frame on to the interface
//! `BENCH_WIRES` names for the one it arrived on: run through BPF_PROG_RUN's live-frames
//! mode it is an in-kernel frame source, attached between two switch ports it is a wire
//! the switch's bridge cannot slow down. `violin_bench_burst` is the source where the
//! kernel refuses live frames: run through BPF_PROG_RUN on a TC test skb, it sends
//! `BENCH_BURST` copies of the frame out of the interface `BENCH_BURST_TO` names.
//! `violin_bench_sink` counts and drops what reaches it, at TC ingress, which also sees
//! the frames bpf_redirect_peer hands into a VM (they skip the VM interface's XDP hook).

use aya_ebpf::{
    bindings::TC_ACT_SHOT,
    macros::{classifier, map, xdp},
    maps::{Array, DevMapHash, PerCpuArray},
    programs::{TcContext, XdpContext},
};
use dataplane_common::maps::BENCH_BURST;

/// Ingress ifindex -> the ifindex its frames go on to.
#[map]
static BENCH_WIRES: DevMapHash = DevMapHash::with_max_entries(64, 0);

/// The ifindex `violin_bench_burst` sends out of, in the namespace it runs in.
#[map]
static BENCH_BURST_TO: Array<u32> = Array::with_max_entries(1, 0);

/// Frames the sink took.
#[map]
static BENCH_SINK: PerCpuArray<u64> = PerCpuArray::with_max_entries(1, 0);

// Multi-buffer aware, so it attaches to the 9000-byte links of the jumbo lab.
#[xdp(frags)]
pub fn violin_bench_fwd(ctx: XdpContext) -> u32 {
    // No entry: XDP_ABORTED, which the kernel counts as an exception.
    BENCH_WIRES
        .redirect(ctx.ingress_ifindex() as u32, 0)
        .unwrap_or_else(|action| action)
}

// Copies by bpf_clone_redirect, each transmitted before the helper returns: one test
// run's call into the kernel is spread over many frames, as live frames' batches are.
#[classifier]
pub fn violin_bench_burst(ctx: TcContext) -> i32 {
    if let Some(&to) = BENCH_BURST_TO.get(0) {
        for _ in 0..BENCH_BURST {
            // A copy that cannot be sent is missing at the sink, which is what counts.
            let _ = ctx.clone_redirect(to, 0);
        }
    }
    TC_ACT_SHOT
}

#[classifier]
pub fn violin_bench_sink(_ctx: TcContext) -> i32 {
    if let Some(n) = BENCH_SINK.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; no concurrent writer.
        unsafe { *n += 1 };
    }
    TC_ACT_SHOT
}
