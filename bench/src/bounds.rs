//! The `bounds` suite: how traffic lives with a per-pair bound, in both Violin port modes.
//! For bounds of 10, 100 and 1000 Mbit/s: what one and four TCP streams and UDP (offered
//! at 1.5x the bound) achieve as a fraction of the bound, the TCP segments retransmitted,
//! and the round trip of a ping sharing the bounded pair with the TCP stream. Then two
//! pairs with different bounds at once, and an unbounded pair beside a bounded one
//! (against itself alone). The bound is the baseline: every figure is relative to it, or
//! to the same pair measured alone in the same run.
use std::{fmt::Write as _, thread};

use anyhow::{Context, Result};
use violin_testbed::{
    iperf::{self, quantile, Load, Run},
    lab::{pair_limit, HostKind, Lab, LabSpec, Vm},
    traffic::wait_ping,
};

use crate::{
    plot,
    results::{Better, Metric, NetPath, Results, Sample},
};

pub const BOUNDS_MBIT: [u32; 3] = [10, 100, 1000];
pub const PATHS: [NetPath; 2] = [NetPath::Violin, NetPath::ViolinXdp];
/// The two pairs measured at once, each with its own bound.
const TWO_PAIRS_MBIT: [u32; 2] = [100, 30];
/// UDP is offered above the bound by this factor.
const UDP_OVER: f64 = 1.5;
/// Underlay MTU of the suite's lab.
pub const MTU: u32 = 1500;

pub struct Settings {
    pub secs: f64,
}

impl Settings {
    pub fn new(quick: bool) -> Settings {
        Settings {
            secs: if quick { 4.0 } else { 8.0 },
        }
    }
}

/// Figures per path and repetition, for the progress count.
pub fn figures_per_rep() -> usize {
    BOUNDS_MBIT.len() * 7 + 3
}

pub fn metrics() -> Vec<Metric> {
    let m = |id: String, title: String, unit: &str, better| Metric {
        id,
        title,
        unit: unit.into(),
        better,
    };
    let mut v = Vec::new();
    for b in BOUNDS_MBIT {
        let at = format!("{b} Mbit/s bound");
        v.push(m(
            format!("tcp1_{b}"),
            format!("1 TCP stream, {at}: achieved / bound"),
            "x",
            Better::Higher,
        ));
        v.push(m(
            format!("tcp4_{b}"),
            format!("4 TCP streams, {at}: achieved / bound"),
            "x",
            Better::Higher,
        ));
        v.push(m(
            format!("udp_{b}"),
            format!("UDP offered at {UDP_OVER}x, {at}: received / bound"),
            "x",
            Better::Higher,
        ));
        v.push(m(
            format!("udp_free_{b}"),
            format!(
                "The same UDP load over an unbounded pair: received / {b} Mbit/s (what the path carries)"
            ),
            "x",
            Better::Higher,
        ));
        v.push(m(
            format!("retx1_{b}"),
            format!("1 TCP stream, {at}: segments retransmitted"),
            "%",
            Better::Lower,
        ));
        v.push(m(
            format!("retx4_{b}"),
            format!("4 TCP streams, {at}: segments retransmitted"),
            "%",
            Better::Lower,
        ));
        v.push(m(
            format!("ping_p99_{b}"),
            format!("Ping sharing the pair with 1 TCP stream, {at}: p99 round trip"),
            "ms",
            Better::Lower,
        ));
    }
    let [hi, lo] = TWO_PAIRS_MBIT;
    v.push(m(
        "pairs_hi".into(),
        format!("Two pairs at once, the {hi} Mbit/s one: achieved / bound"),
        "x",
        Better::Higher,
    ));
    v.push(m(
        "pairs_lo".into(),
        format!("Two pairs at once, the {lo} Mbit/s one: achieved / bound"),
        "x",
        Better::Higher,
    ));
    v.push(m(
        "beside".into(),
        format!("Unbounded pair beside a {hi} Mbit/s bounded one: TCP against itself alone"),
        "x",
        Better::Higher,
    ));
    v
}

/// The lab's VMs of one path: (a1, a2) on its first host, (b1, b2) on its second.
struct PathVms {
    hosts: [usize; 2],
    a: [Vm; 2],
    b: [Vm; 2],
}

fn path_vms(lab: &Lab, kind: HostKind) -> PathVms {
    let hosts: Vec<usize> = lab
        .hosts
        .iter()
        .filter(|h| h.kind == kind)
        .map(|h| h.index)
        .collect();
    let vms = |h: usize| -> [Vm; 2] {
        let v: Vec<Vm> = lab
            .vms
            .iter()
            .filter(|v| v.host == h)
            .take(2)
            .cloned()
            .collect();
        [v[0].clone(), v[1].clone()]
    };
    PathVms {
        hosts: [hosts[0], hosts[1]],
        a: vms(hosts[0]),
        b: vms(hosts[1]),
    }
}

/// Reconfigures both hosts of a path: pair (a1, b1) bounded at `first`, (a2, b2) at
/// `second` (None: unbounded), then waits until both pairs answer.
fn set_bounds(lab: &Lab, p: &PathVms, first: u32, second: Option<u32>) -> Result<()> {
    let mut extra = pair_limit(&p.a[0], &p.b[0], f64::from(first));
    if let Some(m) = second {
        extra.push_str(&pair_limit(&p.a[1], &p.b[1], f64::from(m)));
    }
    for &h in &p.hosts {
        lab.reload(h, &lab.config_with(h, &extra))?;
    }
    for k in 0..2 {
        wait_ping(
            &p.a[k].ns,
            &p.b[k].ip.to_string(),
            std::time::Duration::from_secs(10),
        )?;
    }
    Ok(())
}

fn tcp(a: &Vm, b: &Vm, streams: u32, secs: f64, port: u16) -> Result<Run> {
    iperf::run(&a.ns, &b.ns, b.ip, Load::Tcp { streams }, secs, port)
        .with_context(|| format!("TCP x{streams} {} -> {}", a.ns, b.ns))
}

/// Runs the suite, `reps` times per path; `progress` hears of each figure.
pub fn run(
    violind: std::path::PathBuf,
    settings: &Settings,
    reps: usize,
    mut progress: impl FnMut(&str),
) -> Result<Vec<Sample>> {
    let mut spec = LabSpec::new("bb", violind);
    spec.hosts = 2;
    spec.violin_xdp_hosts = 2;
    spec.vms_per_host = 2;
    spec.mtu = MTU;
    let lab = Lab::up(spec, true)?;
    progress("lab up: 2 Violin hosts and 2 Violin XDP hosts, 2 VMs each");
    let result = measure(&lab, settings, reps, &mut progress);
    lab.down()?;
    result
}

fn measure(
    lab: &Lab,
    settings: &Settings,
    reps: usize,
    progress: &mut impl FnMut(&str),
) -> Result<Vec<Sample>> {
    let secs = settings.secs;
    let mut samples = Vec::new();
    let mut port = 7400u16;
    for rep in 0..reps {
        for i in 0..PATHS.len() {
            // The modes in alternating order, repetition by repetition.
            let path = PATHS[(i + rep) % PATHS.len()];
            let kind = match path {
                NetPath::ViolinXdp => HostKind::ViolinXdp,
                _ => HostKind::Violin,
            };
            let p = path_vms(lab, kind);
            let (a1, b1) = (&p.a[0], &p.b[0]);
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
            for b in BOUNDS_MBIT {
                let bound = f64::from(b);
                set_bounds(lab, &p, b, None)?;
                // One stream, with a ping sharing the pair.
                port += 1;
                let (pa, pb) = (a1.ns.clone(), b1.ip.to_string());
                let count = ((secs - 1.0) * 100.0) as u32;
                let pinger = thread::spawn(move || {
                    thread::sleep(std::time::Duration::from_millis(500));
                    iperf::ping_rtts(&pa, &pb, count, 0.01)
                });
                let one = tcp(a1, b1, 1, secs, port)?;
                let rtts = pinger
                    .join()
                    .map_err(|_| anyhow::anyhow!("ping panicked"))??;
                push(format!("tcp1_{b}"), one.mbit_per_s / bound);
                push(format!("retx1_{b}"), one.retransmit_ratio() * 100.0);
                let p99 = quantile(&rtts, 0.99).context("no ping reply under load")?;
                push(format!("ping_p99_{b}"), p99);
                port += 1;
                let four = tcp(a1, b1, 4, secs, port)?;
                push(format!("tcp4_{b}"), four.mbit_per_s / bound);
                push(format!("retx4_{b}"), four.retransmit_ratio() * 100.0);
                port += 1;
                let load = Load::Udp {
                    mbit: bound * UDP_OVER,
                    len: 1400,
                };
                let udp = iperf::run(&a1.ns, &b1.ns, b1.ip, load, secs, port)?;
                push(format!("udp_{b}"), udp.mbit_per_s / bound);
                // The same load over the unbounded pair: whether the path itself, not the
                // bound, is what UDP meets.
                port += 1;
                let (a2, b2) = (&p.a[1], &p.b[1]);
                let free = iperf::run(&a2.ns, &b2.ns, b2.ip, load, secs, port)?;
                push(format!("udp_free_{b}"), free.mbit_per_s / bound);
            }
            // Two pairs with their own bounds, at once.
            let [hi, lo] = TWO_PAIRS_MBIT;
            set_bounds(lab, &p, hi, Some(lo))?;
            port += 2;
            let (a2, b2) = (p.a[1].clone(), p.b[1].clone());
            let second = thread::spawn(move || tcp(&a2, &b2, 1, secs, port + 1));
            let first = tcp(a1, b1, 1, secs, port)?;
            let second = second
                .join()
                .map_err(|_| anyhow::anyhow!("iperf3 panicked"))??;
            push("pairs_hi".into(), first.mbit_per_s / f64::from(hi));
            push("pairs_lo".into(), second.mbit_per_s / f64::from(lo));
            // An unbounded pair, alone and then beside the bounded one.
            set_bounds(lab, &p, hi, None)?;
            port += 2;
            let alone = tcp(&p.a[1], &p.b[1], 1, secs, port)?;
            let (a1c, b1c) = (a1.clone(), b1.clone());
            let bounded = thread::spawn(move || tcp(&a1c, &b1c, 1, secs, port + 2));
            let beside = tcp(&p.a[1], &p.b[1], 1, secs, port + 1)?;
            bounded
                .join()
                .map_err(|_| anyhow::anyhow!("iperf3 panicked"))??;
            push("beside".into(), beside.mbit_per_s / alone.mbit_per_s);
            port += 2;
        }
    }
    Ok(samples)
}

/// A figure's target, as text, and whether a median meets it.
type Target = (&'static str, fn(f64) -> bool);

fn target(id: &str) -> Option<Target> {
    if id.starts_with("udp_free") || id == "beside" {
        return None;
    }
    match id.split('_').next().unwrap_or(id) {
        "tcp1" | "tcp4" | "pairs" => Some((">= 0.90", |x| x >= 0.90)),
        "udp" => Some(("0.95-1.05", |x| (0.95..=1.05).contains(&x))),
        "retx1" | "retx4" => Some(("< 1 %", |x| x < 1.0)),
        "ping" => Some(("< 2 ms", |x| x < 2.0)),
        _ => None,
    }
}

const NOTES: &str = "\
How it works. A bounded pair's frames are queued in an HTB class of their own on the \
device they leave by (the underlay; the destination's port for a pair on one host); the \
datapath picks the class (skb->priority) and counts, as `rate_limited`, frames its clock \
says would wait beyond a horizon. A TCP sender is slowed by its own queue (TCP small \
queues) instead of losing segments, so it converges without retransmissions. Small frames \
(pings, pure acknowledgements) skip the queue but are charged to the bound. Ratios are of \
goodput to the bound, and the bound counts the VM's frames (Ethernet headers included), \
so a ratio near 0.97 (UDP, 1400-byte datagrams) or 0.96 (TCP) is the bound met exactly. \
Where UDP falls short of the bound, compare the unbounded pair's figure: on a machine \
whose path cannot carry the offered load, the path is the limit, not the bound. UDP \
from a VM of the XDP mode has no backpressure (the frame is copied when XDP passes it \
on), so what is over the bound is dropped at the horizon and counted.";

/// The report: each figure per bound and mode against its target, and the plots.
pub fn markdown(r: &Results) -> String {
    let mut s = crate::report::header(r, "Traffic bounds: shaped, not policed");
    let _ = writeln!(
        s,
        "Each cell: median (min-max) over the repetitions. Targets: TCP at least 0.90x the \
         bound with under 1% of its segments retransmitted; UDP within 5% of the bound; \
         the ping sharing the pair under 2 ms at p99; two pairs each at least 0.90x their \
         own bound.\n"
    );
    let _ = writeln!(s, "| Figure | Violin | Violin XDP | Target |");
    let _ = writeln!(s, "|---|---|---|---|");
    for m in &r.metrics {
        let mut row = format!("| {} ({}) |", m.title, m.unit);
        let mut verdicts = Vec::new();
        for p in PATHS {
            match r.summary(&m.id, MTU, p) {
                Some(x) => {
                    let _ = write!(row, " {:.3} ({:.3}-{:.3}) |", x.median, x.min, x.max);
                    if let Some((_, met)) = target(&m.id) {
                        let verdict = if met(x.median) { "met" } else { "missed" };
                        verdicts.push(format!("{}: {verdict}", p.label()));
                    }
                }
                None => row.push_str(" - |"),
            }
        }
        match target(&m.id) {
            Some((t, _)) => {
                let _ = write!(row, " {t} ({}) |", verdicts.join(", "));
            }
            None => row.push_str(" - |"),
        }
        let _ = writeln!(s, "{row}");
    }
    let _ = writeln!(
        s,
        "\n![achieved / bound](ratios.png)\n\n![ping p99 under load](ping.png)\n\n{NOTES}"
    );
    s
}

/// The plots: achieved / bound per figure and mode, and the ping's p99.
pub fn plots(r: &Results, dir: &std::path::Path) -> Result<()> {
    let group = |label: String, metric: String| plot::Group {
        label,
        metric,
        mtu: MTU,
    };
    let mut ratios = Vec::new();
    let mut pings = Vec::new();
    for b in BOUNDS_MBIT {
        for (what, id) in [("TCP x1", "tcp1"), ("TCP x4", "tcp4"), ("UDP", "udp")] {
            ratios.push(group(format!("{what} @{b}"), format!("{id}_{b}")));
        }
        pings.push(group(format!("{b} Mbit/s"), format!("ping_p99_{b}")));
    }
    ratios.push(group("2 pairs: hi".into(), "pairs_hi".into()));
    ratios.push(group("2 pairs: lo".into(), "pairs_lo".into()));
    plot::bars(
        r,
        &dir.join("ratios.png"),
        "Achieved / bound (Mbit/s bounds)",
        "x",
        &ratios,
        &PATHS,
        Some(0.9),
    )?;
    plot::bars(
        r,
        &dir.join("ping.png"),
        "Ping sharing the bounded pair with a TCP stream: p99 round trip",
        "ms",
        &pings,
        &PATHS,
        Some(2.0),
    )
}
