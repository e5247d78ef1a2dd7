//! The `adapt` suite: what VTTIF's counting costs, and VNET's figure 11 on the lab.
//!
//! Counting: the VM port program's time per packet with the per-pair counting on less
//! with it switched off (`count_vm_pairs = false`), through BPF_PROG_TEST_RUN, and that
//! time as a share of each frame's budget at the rate the path carries (the target: under
//! 3%); beside it, one TCP stream and the 64-byte UDP flood with counting on and off, in
//! both Violin port modes, measured in the same run.
//!
//! Figure 11: 8 VMs, each on a host of its own, run `violin-patterns` all-to-all over an
//! adapted overlay, a star through a ninth host (the proxy); every host sits behind an
//! uplink shaped to `WAN_MBIT` (lab domains), so the proxy's uplink carries everything the
//! star relays. The running time with 0, 1, half and all of the 28 fast-path links VADAPT
//! can add, against the star's (0 links) in the same repetition; VTTIF's inference time
//! (from the application's start until its all-to-all topology is declared); and the
//! reconfiguration time VADAPT measured (decision to every host forwarding by it).
use std::{
    fmt::Write as _,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use violin_api::rest::{AdaptPlan, Adaptation, AppTopology, LinkInfo, LinkRole};
use violin_testbed::{
    lab::{Domains, Lab, LabSpec, Vm},
    patterns::{Run, Workload},
    poll,
    traffic::wait_ping,
};

use crate::{
    cost, micro,
    paths::{BenchLab, Endpoint},
    plot,
    results::{Better, Metric, NetPath, Results, Sample},
};

pub const PATHS: [NetPath; 2] = [NetPath::Violin, NetPath::ViolinXdp];
pub const MTU: u32 = 1500;
/// Each host's uplink, each way.
pub const WAN_MBIT: u32 = 50;
/// The application's ranks (VMs), one per host besides the proxy's.
pub const RANKS: usize = 8;
/// Fast-path links measured: none, one, half and all of the 28 host pairs.
pub const BUDGETS: [usize; 4] = [0, 1, 14, 28];
/// BPF_PROG_TEST_RUN calls per program cost (median).
const COST_RUNS: usize = 5000;

pub struct Settings {
    pub secs: f64,
    pub iterations: usize,
    pub message_bytes: usize,
    pub compute_ms: f64,
}

impl Settings {
    pub fn new(quick: bool) -> Settings {
        Settings {
            secs: if quick { 3.0 } else { 6.0 },
            iterations: if quick { 10 } else { 20 },
            message_bytes: 32 * 1024,
            compute_ms: 5.0,
        }
    }
}

/// Figures per repetition, for the progress count.
pub fn figures_per_rep() -> usize {
    PATHS.len() * 10 + 1 + 2 * BUDGETS.len() + (BUDGETS.len() - 1)
}

pub fn metrics() -> Vec<Metric> {
    let m = |id: String, title: String, unit: &str, better| Metric {
        id,
        title,
        unit: unit.into(),
        better,
    };
    let mut v = vec![
        m(
            "count_share_udp64".into(),
            "Pair counting's share of each 64-byte frame's time at the path's rate".into(),
            "%",
            Better::Lower,
        ),
        m(
            "count_share_tcp".into(),
            "Pair counting's share of a TCP stream's time (MTU-size frames: an upper bound)".into(),
            "%",
            Better::Lower,
        ),
        m(
            "count_ns_64".into(),
            "Pair counting's cost per 64-byte frame (port program, on less off)".into(),
            "ns",
            Better::Lower,
        ),
        m(
            "count_ns_mtu".into(),
            "Pair counting's cost per MTU-size frame (port program, on less off)".into(),
            "ns",
            Better::Lower,
        ),
        m(
            "tcp1_count".into(),
            "1 TCP stream with pair counting: on / off".into(),
            "x",
            Better::Higher,
        ),
        m(
            "udp64_count".into(),
            "64-byte UDP flood rate with pair counting: on / off".into(),
            "x",
            Better::Higher,
        ),
        m(
            "tcp1_on".into(),
            "1 TCP stream, counting on".into(),
            "Gbit/s",
            Better::Higher,
        ),
        m(
            "tcp1_off".into(),
            "1 TCP stream, counting off".into(),
            "Gbit/s",
            Better::Higher,
        ),
        m(
            "udp64_on".into(),
            "64-byte UDP flood, counting on".into(),
            "kpps",
            Better::Higher,
        ),
        m(
            "udp64_off".into(),
            "64-byte UDP flood, counting off".into(),
            "kpps",
            Better::Higher,
        ),
        m(
            "infer".into(),
            "VTTIF: application start to its all-to-all topology declared".into(),
            "s",
            Better::Lower,
        ),
    ];
    for k in BUDGETS {
        v.push(m(
            format!("run_{k}"),
            format!("patterns all-to-all, {k} fast-path links: running time"),
            "s",
            Better::Lower,
        ));
        v.push(m(
            format!("speedup_{k}"),
            format!("{k} fast-path links: the star's running time / this one"),
            "x",
            Better::Higher,
        ));
        if k > 0 {
            v.push(m(
                format!("reconf_{k}"),
                format!("Adding links up to {k}: reconfiguration time"),
                "ms",
                Better::Lower,
            ));
        }
    }
    v
}

fn endpoint(v: &Vm) -> Endpoint {
    Endpoint {
        ns: v.ns.clone(),
        ip: v.ip.into(),
    }
}

/// Runs the suite `reps` times; `progress` hears of each figure.
pub fn run(
    violind: std::path::PathBuf,
    settings: &Settings,
    reps: usize,
    mut progress: impl FnMut(&str),
) -> Result<Vec<Sample>> {
    let bl = BenchLab::up("bc", MTU, 2, 1)?;
    progress("lab up: 2 hosts per path, a VM each, for the counting's cost");
    let mut samples = Vec::new();
    let counted = counting(&bl, settings, reps, &mut progress, &mut samples);
    bl.lab.down()?;
    counted?;

    let mut spec = LabSpec::new("bf", violind);
    spec.hosts = RANKS + 1;
    spec.vms_per_host = 1;
    spec.mtu = MTU;
    spec.controller = true;
    // The hosts' probes would share the shaped uplinks with the application.
    spec.measure = false;
    spec.domains = Some(Domains::shaped(RANKS + 1, WAN_MBIT));
    let lab = Lab::up(spec, true)?;
    progress(&format!(
        "lab up: {} hosts behind {WAN_MBIT} Mbit/s uplinks, a VM each, the controller",
        RANKS + 1
    ));
    let adapted = figure11(&lab, settings, reps, &mut progress, &mut samples);
    lab.down()?;
    adapted?;
    Ok(samples)
}

/// The counting's cost: per packet, the VM port program's time with it on less with it
/// off (BPF_PROG_TEST_RUN, as the micro suite times programs: deterministic where
/// throughput on a shared machine is not), and that time as a share of each frame's
/// budget at the rate the path carried (64-byte frames; MTU-size frames at the TCP
/// stream's rate, an upper bound since TCP's super-frames are counted once); beside
/// them, the throughputs with it on and off.
fn counting(
    bl: &BenchLab,
    settings: &Settings,
    reps: usize,
    progress: &mut impl FnMut(&str),
    samples: &mut Vec<Sample>,
) -> Result<()> {
    let lab = &bl.lab;
    let mut port = 7600u16;
    for rep in 0..reps {
        // Program costs with counting on and off (both modes at once).
        let mut cost = std::collections::BTreeMap::new();
        for on in [true, false] {
            for path in PATHS {
                for h in bl.hosts(path) {
                    lab.reload(h, &lab.config_counting(h, on))?;
                }
                let (a, b) = (bl.vm(path, 0), bl.vm(path, 1));
                wait_ping(&a.ns, &b.ip.to_string(), Duration::from_secs(10))?;
            }
            for (metric, path, ns) in cost::measure(bl, COST_RUNS)? {
                cost.insert((metric, path, on), ns);
            }
        }
        for i in 0..PATHS.len() {
            let path = PATHS[(i + rep) % PATHS.len()];
            let hosts = bl.hosts(path);
            let (a, b) = (endpoint(bl.vm(path, 0)), endpoint(bl.vm(path, 1)));
            let mut push = |metric: String, value: f64| {
                progress(&format!(
                    "rep {rep} {:<11} {metric:<12} {value:.3}",
                    path.label()
                ));
                samples.push(Sample {
                    metric,
                    mtu: MTU,
                    path,
                    rep,
                    value,
                });
            };
            let mut figures = [[0.0; 2]; 2];
            // On and off in alternating order, repetition by repetition.
            for j in 0..2 {
                let on = (j + rep) % 2 == 0;
                for &h in &hosts {
                    lab.reload(h, &lab.config_counting(h, on))?;
                }
                wait_ping(&a.ns, &b.ip.to_string(), Duration::from_secs(10))?;
                let state = if on { "on" } else { "off" };
                port += 2;
                let tcp = micro::tcp(&a, &b, 1, settings.secs, port)?;
                let (kpps, _) = micro::udp64(&a, &b, settings.secs, port + 1)?;
                push(format!("tcp1_{state}"), tcp);
                push(format!("udp64_{state}"), kpps);
                figures[usize::from(!on)] = [tcp, kpps];
            }
            push("tcp1_count".into(), figures[0][0] / figures[1][0]);
            push("udp64_count".into(), figures[0][1] / figures[1][1]);
            let delta =
                |m: &str| cost[&(m.to_string(), path, true)] - cost[&(m.to_string(), path, false)];
            let (ns64, ns_mtu) = (delta("encap_ns_64"), delta("encap_ns_mtu"));
            push("count_ns_64".into(), ns64);
            push("count_ns_mtu".into(), ns_mtu);
            // Frames per second carried (with counting off) times the counting's time per
            // frame: the share of the path's time it takes.
            let [tcp_off, kpps_off] = figures[1];
            push(
                "count_share_udp64".into(),
                ns64 * kpps_off * 1e3 / 1e9 * 100.0,
            );
            let mtu_pps = tcp_off * 1e9 / 8.0 / f64::from(MTU);
            push("count_share_tcp".into(), ns_mtu * mtu_pps / 1e9 * 100.0);
        }
    }
    Ok(())
}

/// The spec of the figure's environment: every VM, a star through host 0.
fn spec(lab: &Lab, budget: usize) -> String {
    let adapt = format!(
        "[adapt]\nproxy = {:?}\nlinks = {budget}\n",
        lab.hosts[0].host_id()
    );
    lab.env_spec(0, "fig11", 2600, &adapt)
}

/// Polls `f` every 50 ms until it gives Some, for at most `within`.
fn until<T>(within: Duration, what: &str, f: impl FnMut() -> Result<Option<T>>) -> Result<T> {
    poll::until(within, Duration::from_millis(50), what, f)
}

fn figure11(
    lab: &Lab,
    settings: &Settings,
    reps: usize,
    progress: &mut impl FnMut(&str),
    samples: &mut Vec<Sample>,
) -> Result<()> {
    let exe = lab.sibling("violin-patterns");
    let vms: Vec<Vm> = (1..=RANKS).map(|h| lab.vm(h, 0, 0).clone()).collect();
    lab.apply_spec("fig11", &spec(lab, 0))?;
    for v in &vms[1..] {
        wait_ping(&vms[0].ns, &v.ip.to_string(), Duration::from_secs(15))?;
    }
    let all_pairs = RANKS * (RANKS - 1);
    let mut port = 9000u16;
    let mut workload = |iterations: usize, message_bytes: usize, compute_ms: f64| {
        port += 20;
        Workload {
            topology: "all-to-all".into(),
            message_bytes,
            iterations,
            compute_ms,
            port,
        }
    };
    for rep in 0..reps {
        let mut push = |metric: String, value: f64, samples: &mut Vec<Sample>| {
            progress(&format!("rep {rep} {metric:<12} {value:.3}"));
            samples.push(Sample {
                metric,
                mtu: MTU,
                path: NetPath::Violin,
                rep,
                value,
            });
        };
        // Quiet until VTTIF has forgotten the application (its window emptied and the
        // empty topology declared), so the inference starts from nothing.
        until(Duration::from_secs(20), "the topology forgotten", || {
            let t: AppTopology = lab.violinctl_as(&["topology", "fig11"])?;
            Ok(t.edges.is_empty().then_some(()))
        })?;
        let start = Instant::now();
        // The application at a trickle (1 KiB per rank pair every 200 ms): it keeps its
        // topology in VTTIF's window all along, beside the measured runs.
        let warm = Run::start(&exe, &vms, &workload(1_000_000, 1024, 200.0))?;
        until(Duration::from_secs(20), "the all-to-all topology", || {
            let t: AppTopology = lab.violinctl_as(&["topology", "fig11"])?;
            Ok((t.edges.len() >= all_pairs).then_some(()))
        })?;
        push("infer".into(), start.elapsed().as_secs_f64(), samples);
        let mut star = None;
        for k in BUDGETS {
            // The budget, then VADAPT's links for it while the application runs.
            lab.apply_spec("fig11", &spec(lab, k))?;
            let plan: AdaptPlan = lab.violinctl_as(&["adapt", "fig11", "--plan"])?;
            if plan.demand.len() < BUDGETS[BUDGETS.len() - 1] {
                bail!("VTTIF lost the topology: {} host pairs", plan.demand.len());
            }
            let done: Vec<Adaptation> =
                lab.violinctl_as(&["adapt", "fig11", "--apply", "--wait"])?;
            let listed: Vec<LinkInfo> = lab.violinctl_as(&["links", "--env", "fig11"])?;
            let links = listed
                .iter()
                .filter(|l| l.role == LinkRole::FastPath)
                .count();
            if links != k {
                bail!("{links} fast-path links after adapting to a budget of {k}");
            }
            if k > 0 {
                let id = done[0].id;
                let ms = until(Duration::from_secs(10), "the reconfiguration time", || {
                    let log: Vec<Adaptation> =
                        lab.violinctl_as(&["adapt", "fig11", "--explain"])?;
                    Ok(log
                        .into_iter()
                        .find(|a| a.id == id)
                        .and_then(|a| a.reconfigure_ms))
                })?;
                push(format!("reconf_{k}"), ms, samples);
            }
            // The measured run, beside the trickle.
            let w = workload(
                settings.iterations,
                settings.message_bytes,
                settings.compute_ms,
            );
            let reports = Run::start(&exe, &vms, &w)?
                .wait()
                .context("the measured run")?;
            let secs = reports
                .iter()
                .filter_map(|r| r["total_s"].as_f64())
                .fold(0.0, f64::max);
            push(format!("run_{k}"), secs, samples);
            let base = *star.get_or_insert(secs);
            push(format!("speedup_{k}"), base / secs, samples);
        }
        drop(warm);
        // Back to the bare star for the next repetition.
        lab.apply_spec("fig11", &spec(lab, 0))?;
        lab.violinctl(&["adapt", "fig11", "--apply", "--wait"])?;
    }
    Ok(())
}

/// The report: the counting's cost per mode, and figure 11 against the paper.
pub fn markdown(r: &Results) -> String {
    let mut s = crate::report::header(r, "Adaptation: VTTIF's cost and VNET's figure 11");
    let cell = |id: &str, p: NetPath| match r.summary(id, MTU, p) {
        Some(x) => format!("{:.3} ({:.3}-{:.3})", x.median, x.min, x.max),
        None => "-".into(),
    };
    let verdict = |id: &str, p: NetPath, ok: fn(f64) -> bool| match r.summary(id, MTU, p) {
        Some(x) if ok(x.median) => "met",
        Some(_) => "missed",
        None => "-",
    };
    let _ = writeln!(
        s,
        "Each cell: median (min-max) over the repetitions.\n\n\
         ## The cost of counting per VM pair\n\n\
         | Figure | Violin | Violin XDP | Target |\n|---|---|---|---|"
    );
    for id in [
        "count_share_udp64",
        "count_share_tcp",
        "count_ns_64",
        "count_ns_mtu",
        "tcp1_count",
        "udp64_count",
        "tcp1_on",
        "tcp1_off",
        "udp64_on",
        "udp64_off",
    ] {
        let m = r.metrics.iter().find(|m| m.id == id);
        let title = m.map_or(id.to_string(), |m| format!("{} ({})", m.title, m.unit));
        let target = if id.starts_with("count_share") {
            let ok: fn(f64) -> bool = |x| x < 3.0;
            format!(
                "< 3 % (Violin: {}, Violin XDP: {})",
                verdict(id, NetPath::Violin, ok),
                verdict(id, NetPath::ViolinXdp, ok)
            )
        } else {
            "-".into()
        };
        let _ = writeln!(
            s,
            "| {title} | {} | {} | {target} |",
            cell(id, NetPath::Violin),
            cell(id, NetPath::ViolinXdp)
        );
    }
    let v = NetPath::Violin;
    let _ = writeln!(
        s,
        "\n## Figure 11: all-to-all on {RANKS} VMs, a star through a proxy, {WAN_MBIT} Mbit/s \
         uplinks\n\n| Figure | Lab | Paper | Target |\n|---|---|---|---|"
    );
    let _ = writeln!(
        s,
        "| Inference time (s) | {} | about 60 (1 at best) | < 1 ({}) |",
        cell("infer", v),
        verdict("infer", v, |x| x < 1.0)
    );
    for k in BUDGETS {
        let _ = writeln!(
            s,
            "| Running time, {k} fast-path links (s) | {} | - | - |",
            cell(&format!("run_{k}"), v)
        );
    }
    for k in &BUDGETS[1..] {
        let _ = writeln!(
            s,
            "| Speed-up over the star, {k} links (x) | {} | {} | {} |",
            cell(&format!("speedup_{k}"), v),
            if *k == 28 {
                "about 2 (running time halved)"
            } else {
                "-"
            },
            if *k == 28 {
                format!(">= 2 ({})", verdict("speedup_28", v, |x| x >= 2.0))
            } else {
                "-".into()
            }
        );
        let _ = writeln!(
            s,
            "| Reconfiguration to {k} links (ms) | {} | about 2000 | < 50 ({}) |",
            cell(&format!("reconf_{k}"), v),
            verdict(&format!("reconf_{k}"), v, |x| x < 50.0)
        );
    }
    let _ = writeln!(
        s,
        "\n![running time](running.png)\n\n\
         How it is measured. Counting: the VM port program timed by BPF_PROG_TEST_RUN \
         (median of 5000 runs, as the micro suite times programs) with `count_vm_pairs` on \
         and off (violind reloaded between); its share is that difference per frame times \
         the frames per second the path carried with counting off (64-byte frames; for TCP, \
         MTU-size frames at the stream's rate, an upper bound, as TCP's super-frames are \
         counted once each). The throughputs with counting on and off, in alternating \
         order, are beside it; on this shared machine they move by more than the target \
         between repetitions. Figure 11: each repetition first \
         waits until VTTIF has forgotten the application (an empty topology declared), then starts it and times it until all {} \
         of its VM pairs are declared; with the application running, VADAPT is given each \
         budget in turn (`[adapt] links`) and adds the busiest links for it \
         (`violinctl adapt --apply --wait`: the reconfiguration time is its own measure, \
         from its decision until every host acknowledged the change), and a fresh \
         application run of {} iterations is timed (the slowest rank's wall time). The \
         uplinks are token buckets (this kernel has no netem: no added delay).",
        RANKS * (RANKS - 1),
        r.settings.get("iterations").cloned().unwrap_or_default()
    );
    s
}

/// The plot: running time per number of fast-path links.
pub fn plots(r: &Results, dir: &std::path::Path) -> Result<()> {
    let groups: Vec<plot::Group> = BUDGETS
        .iter()
        .map(|k| plot::Group {
            label: format!("{k} links"),
            metric: format!("run_{k}"),
            mtu: MTU,
        })
        .collect();
    plot::bars(
        r,
        &dir.join("running.png"),
        "patterns all-to-all on 8 VMs: running time by fast-path links",
        "s",
        &groups,
        &[NetPath::Violin],
        None,
    )
}
