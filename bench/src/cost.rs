//! What each forwarding program costs per packet, through BPF_PROG_TEST_RUN (aya's
//! `TestRun`), against a host's live maps. A program that rewrites its frame cannot be
//! repeated within one call (the kernel runs it again on the frame it left, encapsulated
//! twice or no longer VXLAN, and times a different path), so each call runs it once on a
//! fresh copy; the kernel times that one run, and the same measurement of an almost empty
//! program of the same hook (one map access) is subtracted: what remains is the
//! program's own work. The figure is the median over many calls.
use std::path::Path;

use anyhow::{bail, Context, Result};
use aya::programs::{ProgramError, TestRun, TestRunOptions, TestRunResult};
use dataplane_common::{maps::programs, packet::Tunnel};
use violin_testbed::sys::{ifindex_of, in_netns, mac_of};

use crate::{
    ebpf,
    frames::{udp_frame, vxlan, MAX_TEST_FRAME, MIN_FRAME},
    paths::BenchLab,
    results::NetPath,
};

// The verdicts of `enum xdp_action` and `TC_ACT_*`.
const XDP_ABORTED: u32 = 0;
const XDP_REDIRECT: u32 = 4;
const TC_ACT_SHOT: u32 = 2;
const TC_ACT_REDIRECT: u32 = 7;

/// The figures this module measures, per Violin path: (metric, title).
pub const METRICS: [(&str, &str); 4] = [
    (
        "encap_ns_64",
        "Encapsulation (VM port program), 64-byte frame",
    ),
    (
        "encap_ns_mtu",
        "Encapsulation (VM port program), MTU-size frame",
    ),
    (
        "decap_ns_64",
        "Decapsulation (underlay program), 64-byte frame",
    ),
    (
        "decap_ns_mtu",
        "Decapsulation (underlay program), MTU-size frame",
    ),
];

/// xdp_md for BPF_PROG_TEST_RUN: a `len`-byte frame, all of it in the linear buffer
/// (data_end; a smaller one would put the rest in fragments, or be refused), "arrived" on
/// `ifindex`, queue 0.
pub fn xdp_md(ifindex: u32, len: usize) -> Vec<u8> {
    let mut ctx = vec![0u8; 24];
    ctx[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}

/// __sk_buff for BPF_PROG_TEST_RUN: the skb's device is `ifindex` (the field at byte
/// 40; the kernel refuses the fields it does not take, which are left zero).
fn sk_buff(ifindex: u32) -> Vec<u8> {
    let mut ctx = vec![0u8; 192];
    ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}

type Run<'p> = dyn Fn(TestRunOptions<'_>) -> Result<TestRunResult, ProgramError> + 'p;

/// Median kernel-timed ns of one run of a program (`run`) on each (frame, context), over
/// `runs` calls. Every run must end in `verdict`: a frame that took another path (dropped,
/// passed) would time that path instead.
fn median_ns(
    run: &Run,
    frames: &[(Vec<u8>, Vec<u8>)],
    verdict: u32,
    runs: usize,
) -> Result<Vec<f64>> {
    let mut out = Vec::new();
    for (frame, ctx) in frames {
        let mut ns = Vec::with_capacity(runs);
        for _ in 0..runs {
            let mut opts = TestRunOptions::new();
            opts.data_in = Some(frame);
            opts.ctx_in = Some(ctx);
            let r = run(opts).context("BPF_PROG_TEST_RUN")?;
            if r.return_value != verdict {
                bail!(
                    "the program returned {} for a {}-byte frame, not {verdict}: it took another \
                     path than the one to time",
                    r.return_value,
                    frame.len()
                );
            }
            ns.push(r.duration.as_nanos() as f64);
        }
        ns.sort_by(f64::total_cmp);
        out.push(ns[ns.len() / 2]);
    }
    Ok(out)
}

/// (metric, path, ns per packet) for both port modes' programs, each on its own hosts:
/// a frame from VM a on host 1 to VM b on host 2 as host 1's VM port takes it, and b's
/// answer as host 1's underlay takes it from host 2, at 64 bytes and at the VM MTU.
pub fn measure(bl: &BenchLab, runs: usize) -> Result<Vec<(String, NetPath, f64)>> {
    let mut out = Vec::new();
    for path in [NetPath::Violin, NetPath::ViolinXdp] {
        let (port_prog, underlay_prog) = match path {
            NetPath::ViolinXdp => (programs::PORT, programs::UNDERLAY),
            _ => (programs::PORT_TC, programs::UNDERLAY_TC),
        };
        let hosts = bl.hosts(path);
        let (h1, h2) = (&bl.lab.hosts[hosts[0]], &bl.lab.hosts[hosts[1]]);
        let a = bl.vm(path, 0);
        let b = bl.vm(path, 1);
        let tunnel = Tunnel {
            src_mac: mac_of(&h2.ns, "ul0")?,
            dst_mac: mac_of(&h1.ns, "ul0")?,
            src_ip: h2.underlay_v4().octets(),
            dst_ip: h1.underlay_v4().octets(),
        };
        let (port_if, ul_if) = (ifindex_of(&h1.ns, &a.port)?, ifindex_of(&h1.ns, "ul0")?);
        let ctx = |ifindex, len| match path {
            NetPath::ViolinXdp => xdp_md(ifindex, len),
            _ => sk_buff(ifindex),
        };
        let full = ((bl.lab.spec.mtu - 50 + 14) as usize).min(MAX_TEST_FRAME);
        let (sa, sb) = ((a.mac, a.ip.octets()), (b.mac, b.ip.octets()));
        let encap: Vec<_> = [MIN_FRAME, full]
            .iter()
            .map(|&n| {
                let f = udp_frame(sa, sb, n);
                let c = ctx(port_if, f.len());
                (f, c)
            })
            .collect();
        let decap: Vec<_> = [MIN_FRAME, full]
            .iter()
            .map(|&n| {
                let f = vxlan(&tunnel, a.vni, &udp_frame(sb, sa, n));
                let c = ctx(ul_if, f.len());
                (f, c)
            })
            .collect();
        let maps = Path::new("/sys/fs/bpf/violin")
            .join(h1.host_id())
            .join("maps");
        let ns = in_netns(&h1.ns, || {
            let mut ebpf = ebpf::load(&maps)?;
            let (base, port, underlay) = if path == NetPath::ViolinXdp {
                let mut time = |name: &str, frames: &[(Vec<u8>, Vec<u8>)], verdict| {
                    let prog = ebpf::xdp(&mut ebpf, name)?;
                    median_ns(&|o| prog.test_run(o), frames, verdict, runs)
                };
                // The empty program finds no wire: XDP_ABORTED.
                let base = time("violin_bench_fwd", &encap[..1], XDP_ABORTED)?;
                (
                    base[0],
                    time(port_prog, &encap, XDP_REDIRECT)?,
                    time(underlay_prog, &decap, XDP_REDIRECT)?,
                )
            } else {
                let mut time = |name: &str, frames: &[(Vec<u8>, Vec<u8>)], verdict| {
                    let prog = ebpf::tc(&mut ebpf, name)?;
                    median_ns(&|o| prog.test_run(o), frames, verdict, runs)
                };
                let base = time("violin_bench_sink", &encap[..1], TC_ACT_SHOT)?;
                (
                    base[0],
                    time(port_prog, &encap, TC_ACT_REDIRECT)?,
                    time(underlay_prog, &decap, TC_ACT_REDIRECT)?,
                )
            };
            Ok(port
                .into_iter()
                .chain(underlay)
                .map(|x| (x - base).max(0.0))
                .collect::<Vec<_>>())
        })?;
        for ((id, _), v) in METRICS.iter().zip(ns) {
            out.push((id.to_string(), path, v));
        }
    }
    Ok(out)
}
