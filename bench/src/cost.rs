//! What each forwarding program costs per packet, through BPF_PROG_TEST_RUN (aya's
//! `TestRun`), against a host's live maps. A program that rewrites its frame cannot be
//! repeated within one call (the kernel runs it again on the frame it left, encapsulated
//! twice or no longer VXLAN, and times a different path), so each call runs it once on a
//! fresh copy; the kernel times that one run. Each call is paired with one, just before
//! it, of an almost empty program of the same hook (one map access), and the pair's
//! difference is the program's own work: a slower spell of this shared machine slows both
//! of a pair alike rather than one figure more than the other. The figure is the median of
//! the differences over many pairs.
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use aya::{
    programs::{ProgramError, SchedClassifier, TestRun, TestRunOptions, TestRunResult, Xdp},
    Ebpf,
};
use dataplane_common::maps::programs;
use violin_testbed::{
    frames::{sk_buff, udp_frame, xdp_md, Outer, MAX_TEST_FRAME, MIN_FRAME},
    sys::{ifindex_of, in_netns, mac_of},
};

use crate::{
    ebpf,
    paths::BenchLab,
    results::{Better, Metric, NetPath},
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

/// The figures as the reports name them.
pub fn metrics() -> Vec<Metric> {
    METRICS
        .iter()
        .map(|(id, title)| Metric {
            id: id.to_string(),
            title: format!("{title}, BPF_PROG_TEST_RUN"),
            unit: "ns".into(),
            better: Better::Lower,
        })
        .collect()
}

/// The VM port program and the underlay program of a Violin path's port mode.
pub fn programs_of(path: NetPath) -> (&'static str, &'static str) {
    match path {
        NetPath::ViolinXdp => (programs::PORT, programs::UNDERLAY),
        _ => (programs::PORT_TC, programs::UNDERLAY_TC),
    }
}

/// [`metrics`] with the figures `--against` adds (see [`measure_against`]).
pub fn metrics_against(object: &Path) -> Vec<Metric> {
    let mut all = metrics();
    for (id, title) in METRICS {
        all.push(Metric {
            id: format!("{id}_against"),
            title: format!("{title}, the object {}", object.display()),
            unit: "ns".into(),
            better: Better::Lower,
        });
        all.push(Metric {
            id: format!("{id}_ratio"),
            title: format!("{title}, this build over {}", object.display()),
            unit: "x".into(),
            better: Better::Lower,
        });
    }
    all
}

type Run<'p> = Box<dyn Fn(TestRunOptions<'_>) -> Result<TestRunResult, ProgramError> + 'p>;

/// A frame and the context it is run with.
type Case = (Vec<u8>, Vec<u8>);

/// A loaded program of `ebpf`, as a test run of its kind.
fn runner<'a>(ebpf: &'a Ebpf, name: &str, xdp: bool) -> Result<Run<'a>> {
    let prog = ebpf
        .program(name)
        .ok_or_else(|| anyhow!("no program {name} in the object"))?;
    Ok(if xdp {
        let p: &Xdp = prog.try_into()?;
        Box::new(move |o| p.test_run(o))
    } else {
        let p: &SchedClassifier = prog.try_into()?;
        Box::new(move |o| p.test_run(o))
    })
}

/// One kernel-timed run of `run` on `case`, in ns; it must end in `verdict`: a frame that
/// took another path (dropped, passed) would time that path instead.
fn once(run: &Run, (frame, ctx): &Case, verdict: u32) -> Result<f64> {
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.ctx_in = Some(ctx);
    let r = run(opts).context("BPF_PROG_TEST_RUN")?;
    if r.return_value != verdict {
        bail!(
            "the program returned {} for a {}-byte frame, not {verdict}: it took another path \
             than the one to time",
            r.return_value,
            frame.len()
        );
    }
    Ok(r.duration.as_nanos() as f64)
}

/// Each program's own ns per run on each case, `runs` rounds each: the median of (its run
/// less the run of `base` on `base_case` just before it). Several programs (one program of
/// two builds) take turns within each round, each first as often as the others, so that a
/// slower spell of the machine falls on all of them alike. Figures by case, then program.
fn median_ns(
    (progs, verdict): (&[&Run], u32),
    (base, base_case, base_verdict): (&Run, &Case, u32),
    cases: &[Case],
    runs: usize,
) -> Result<Vec<Vec<f64>>> {
    let mut out = Vec::new();
    for case in cases {
        let mut ns = vec![Vec::with_capacity(runs); progs.len()];
        for round in 0..runs {
            for turn in 0..progs.len() {
                let p = (round + turn) % progs.len();
                let empty = once(base, base_case, base_verdict)?;
                ns[p].push(once(progs[p], case, verdict)? - empty);
            }
        }
        out.push(
            ns.into_iter()
                .map(|mut v| {
                    v.sort_by(f64::total_cmp);
                    v[v.len() / 2].max(0.0)
                })
                .collect(),
        );
    }
    Ok(out)
}

/// (metric, path, ns per packet) for both port modes' programs, each on its own hosts:
/// a frame from VM a on host 1 to VM b on host 2 as host 1's VM port takes it, and b's
/// answer as host 1's underlay takes it from host 2, at 64 bytes and at the VM MTU.
pub fn measure(bl: &BenchLab, runs: usize) -> Result<Vec<(String, NetPath, f64)>> {
    measure_against(bl, runs, None)
}

/// [`measure`], and with `against` (another build of the eBPF object) that build's
/// programs too, taking turns with this build's on the same maps and frames: each figure
/// then also as `<id>_against` and as `<id>_ratio` (this build's over the other's).
pub fn measure_against(
    bl: &BenchLab,
    runs: usize,
    against: Option<&Path>,
) -> Result<Vec<(String, NetPath, f64)>> {
    let mut out = Vec::new();
    for path in [NetPath::Violin, NetPath::ViolinXdp] {
        let (port_prog, underlay_prog) = programs_of(path);
        let hosts = bl.hosts(path);
        let (h1, h2) = (&bl.lab.hosts[hosts[0]], &bl.lab.hosts[hosts[1]]);
        let a = bl.vm(path, 0);
        let b = bl.vm(path, 1);
        // The underlay's family is the lab's: host 2's answer reaches host 1 over it.
        let outer = Outer::between(
            (mac_of(&h2.ns, "ul0")?, h2.underlay_ip),
            (mac_of(&h1.ns, "ul0")?, h1.underlay_ip),
        )
        .ok_or_else(|| anyhow!("hosts of two underlay families"))?;
        let (port_if, ul_if) = (ifindex_of(&h1.ns, &a.port)?, ifindex_of(&h1.ns, "ul0")?);
        let ctx = |ifindex, len| match path {
            NetPath::ViolinXdp => xdp_md(ifindex, len),
            _ => sk_buff(ifindex),
        };
        let full = ((bl.lab.spec.vm_mtu() + 14) as usize).min(MAX_TEST_FRAME);
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
                let f = outer.wrap(a.vni, &udp_frame(sb, sa, n));
                let c = ctx(ul_if, f.len());
                (f, c)
            })
            .collect();
        let maps = h1.pins().join("maps");
        let ns = in_netns(&h1.ns, || {
            let mut ebpf = ebpf::load(&maps)?;
            let mut other = against.map(|o| ebpf::load_object(o, &maps)).transpose()?;
            let xdp = path == NetPath::ViolinXdp;
            // The empty XDP program finds no wire: XDP_ABORTED.
            let (base_name, base_verdict, sent) = if xdp {
                ("violin_bench_fwd", XDP_ABORTED, XDP_REDIRECT)
            } else {
                ("violin_bench_sink", TC_ACT_SHOT, TC_ACT_REDIRECT)
            };
            let load = |e: &mut Ebpf, names: &[&str]| -> Result<()> {
                for &name in names {
                    if xdp {
                        ebpf::xdp(e, name)?;
                    } else {
                        ebpf::tc(e, name)?;
                    }
                }
                Ok(())
            };
            load(&mut ebpf, &[base_name, port_prog, underlay_prog])?;
            if let Some(o) = other.as_mut() {
                load(o, &[port_prog, underlay_prog])?;
            }
            let base = runner(&ebpf, base_name, xdp)?;
            let base = (&base, &encap[0], base_verdict);
            let builds: Vec<&Ebpf> = [Some(&ebpf), other.as_ref()]
                .into_iter()
                .flatten()
                .collect();
            let runners = |name| -> Result<Vec<Run>> {
                builds.iter().map(|e| runner(e, name, xdp)).collect()
            };
            let (port, underlay) = (runners(port_prog)?, runners(underlay_prog)?);
            let port: Vec<&Run> = port.iter().collect();
            let underlay: Vec<&Run> = underlay.iter().collect();
            let mut ns = median_ns((&port, sent), base, &encap, runs)?;
            ns.extend(median_ns((&underlay, sent), base, &decap, runs)?);
            Ok(ns)
        })?;
        for ((id, _), v) in METRICS.iter().zip(ns) {
            out.push((id.to_string(), path, v[0]));
            if let Some(&theirs) = v.get(1) {
                out.push((format!("{id}_against"), path, theirs));
                // A median below the timer's resolution (0) has no ratio.
                if theirs > 0.0 {
                    out.push((format!("{id}_ratio"), path, v[0] / theirs));
                }
            }
        }
    }
    Ok(out)
}
