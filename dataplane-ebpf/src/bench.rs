//! Programs for the benchmark's line-rate figures (`cargo xtask bench micro`); violind
//! never loads them. `violin_bench_fwd` sends every frame on to the interface
//! `BENCH_WIRES` names for the one it arrived on: run through BPF_PROG_RUN's live-frames
//! mode it is an in-kernel frame source, attached between two switch ports it is a wire
//! the switch's bridge cannot slow down. `violin_bench_sink` counts and drops what
//! reaches it, at TC ingress, which also sees the frames bpf_redirect_peer hands into a
//! VM (they skip the VM interface's XDP hook).

use aya_ebpf::{
    bindings::TC_ACT_SHOT,
    macros::{classifier, map, xdp},
    maps::{DevMapHash, PerCpuArray},
    programs::{TcContext, XdpContext},
};

/// Ingress ifindex -> the ifindex its frames go on to.
#[map]
static BENCH_WIRES: DevMapHash = DevMapHash::with_max_entries(64, 0);

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

#[classifier]
pub fn violin_bench_sink(_ctx: TcContext) -> i32 {
    if let Some(n) = BENCH_SINK.get_ptr_mut(0) {
        // SAFETY: this CPU's slot; no concurrent writer.
        unsafe { *n += 1 };
    }
    TC_ACT_SHOT
}
