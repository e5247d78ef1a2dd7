//! violin-bench: Violin against the bare underlay and Linux VXLAN, side by side on one
//! lab, every figure a ratio measured in the same run. Run it through `cargo xtask bench`.
mod adapt;
mod adaptation;
mod apply;
mod bounds;
mod cost;
mod ebpf;
mod hostsim;
mod hpl;
mod idle;
mod linerate;
mod micro;
mod migrate;
mod nemo;
mod observe;
mod paths;
mod plot;
mod report;
mod runtime;
mod scale;
mod scenarios;
mod swf;
mod timeline;
mod viocluster;

use std::{
    collections::BTreeMap,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::Parser;
use dataplane_common::packet::Family;
use violin_testbed::traffic::wait_ping;

use bench::results;

use crate::{
    paths::{BenchLab, Endpoint},
    results::{git_revision, Machine, NetPath, Results, Sample},
};

#[derive(Parser)]
#[command(
    name = "violin-bench",
    about = "Violin's benchmarks (run via `cargo xtask bench`)"
)]
struct Cli {
    /// micro, linerate (micro's line-rate figures alone, about half a minute per
    /// repetition and MTU), cost (the forwarding programs' cost per packet alone, in a
    /// minute or two; `all` leaves these two out, micro takes the same figures),
    /// observe (what `violinctl observe` costs the datapath), hpl, nemo3d, apply
    /// (control plane), migrate (live migration of real
    /// guests), bounds (traffic bounds: shaped TCP and UDP against the bound), adapt
    /// (VTTIF's counting cost, VNET's figure 11), adaptation (the thesis's simulations of
    /// the adaptation manager and VioCluster; needs no root), scale (the control plane
    /// with 10, 100 and 1000 simulated hosts, on redb and on etcd; needs no root) or all; `report` re-renders reports and plots from the last results.json
    /// files, `summary` prints one table over them.
    #[arg(default_value = "all")]
    suite: String,
    /// A smoke run of a few minutes: fewer and shorter repetitions.
    #[arg(long)]
    quick: bool,
    /// Repetitions per configuration (default 5, or 2 with --quick).
    #[arg(long)]
    reps: Option<usize>,
    /// Underlay MTUs to measure at.
    #[arg(long, value_delimiter = ',', default_value = "1500,9000")]
    mtus: Vec<u32>,
    /// Where `<suite>/results.json`, `report.md` and the plots go.
    #[arg(long, default_value = "target/bench")]
    out: PathBuf,
    /// adaptation: two SWF traces (A,B) for the VioCluster simulation instead of the
    /// shipped synthetic pairs, e.g. the Parallel Workloads Archive's.
    #[arg(long, value_delimiter = ',')]
    swf: Option<Vec<PathBuf>>,
    /// adaptation: write the synthetic traces (bench/traces/ holds them) from their
    /// workload model into this directory, and stop.
    #[arg(long)]
    write_traces: Option<PathBuf>,
    /// While the suite runs, idle CPUs poll up to this many ns before they halt (the
    /// guest haltpoll cpuidle driver's guest_halt_poll_ns, put back afterwards): in a VM
    /// whose idle CPUs halt at once, every wakeup of a process on another CPU costs an
    /// exit to the hypervisor, which a physical host does not pay (bench/README.md).
    #[arg(long, value_name = "NS")]
    halt_poll_ns: Option<u64>,
    /// What `--halt-poll-ns` did to the machine for this run, for every report's settings.
    #[arg(skip)]
    idle: Option<String>,
    /// cost: another build of the eBPF object to time in turns with this one, on the same
    /// maps and frames (e.g. main's, saved with `cp target/ebpf/dataplane-ebpf
    /// /tmp/main.o` before building a change); each figure also as a ratio to it.
    #[arg(long)]
    against: Option<PathBuf>,
    /// cost: time the programs on a lab whose underlay is IPv6 only (VXLAN over IPv6, 70
    /// bytes of outer headers) instead of IPv4; the figures are named ipv6_*.
    #[arg(long)]
    ipv6: bool,
}

/// Progress lines for a long run: step count, elapsed time, and what was just measured.
struct Progress {
    start: Instant,
    done: usize,
    total: usize,
}

impl Progress {
    fn step(&mut self, what: &str) {
        self.done += 1;
        eprintln!(
            "  [{:>3}/{}] {:>5.0}s  {what}",
            self.done,
            self.total,
            self.start.elapsed().as_secs_f64()
        );
    }
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("violin-bench: {e:#}");
        std::process::exit(1);
    }
}

/// Refuses options that do not fit together, naming the option, before anything runs.
fn check_flags(cli: &Cli) -> Result<()> {
    for &mtu in &cli.mtus {
        if !(1280..=9000).contains(&mtu) {
            bail!("--mtus: {mtu} is outside 1280..=9000");
        }
    }
    if let Some(o) = &cli.against {
        if cli.suite != "cost" {
            bail!(
                "--against: only the cost suite times another build, not {:?}",
                cli.suite
            );
        }
        if !o.is_file() {
            bail!("--against: {} is not a file (an eBPF object)", o.display());
        }
    }
    if cli.ipv6 && cli.suite != "cost" {
        bail!(
            "--ipv6: only the cost suite takes it (micro measures over both underlays), not {:?}",
            cli.suite
        );
    }
    Ok(())
}

fn run(mut cli: Cli) -> Result<()> {
    check_flags(&cli)?;
    if let Some(dir) = &cli.write_traces {
        std::fs::create_dir_all(dir)?;
        for (_, _, a, b) in swf::pairs() {
            for m in [a, b] {
                let file = dir.join(format!("{}.swf", m.name));
                std::fs::write(&file, m.swf())?;
                eprintln!("wrote {}", file.display());
            }
        }
        return Ok(());
    }
    if cli.suite == "adaptation" {
        plot::init_font()?;
        return run_adaptation(&cli);
    }
    if cli.suite == "scale" {
        plot::init_font()?;
        return run_scale(&cli);
    }
    if !violin_testbed::sys::is_root() {
        bail!("the benchmarks need root (network namespaces, XDP)");
    }
    if cli.suite == "summary" || cli.suite == "report" {
        let mut runs = Vec::new();
        for suite in [
            "micro", "linerate", "cost", "observe", "hpl", "nemo3d", "apply", "migrate", "bounds",
            "adapt",
        ] {
            if cli.suite == "summary"
                && matches!(
                    suite,
                    "cost" | "observe" | "apply" | "migrate" | "bounds" | "adapt"
                )
            {
                // Not a comparison of paths: its own report says everything.
                continue;
            }
            let file = cli.out.join(suite).join("results.json");
            if let Ok(bytes) = std::fs::read(&file) {
                runs.push(serde_json::from_slice::<Results>(&bytes)?);
            }
        }
        if runs.is_empty() {
            bail!("no results under {}", cli.out.display());
        }
        if cli.suite == "summary" {
            print!("{}", report::summary(&runs));
        } else {
            plot::init_font()?;
            for r in &runs {
                rewrite(r, &cli.out.join(&r.suite))?;
            }
        }
        return Ok(());
    }
    let _one_run = paths::one_run_at_a_time()?;
    plot::init_font()?;
    let saved = cli.out.join(".halt-poll-ns");
    let halt_poll = match cli.halt_poll_ns {
        Some(ns) => Some((idle::HaltPoll::set(ns, &saved)?, ns)),
        None => {
            idle::restore(&saved)?;
            None
        }
    };
    cli.idle = halt_poll.as_ref().map(|(h, ns)| h.describe(*ns));
    let suites: Vec<&str> = match cli.suite.as_str() {
        "all" => vec![
            "micro",
            "observe",
            "hpl",
            "nemo3d",
            "apply",
            "migrate",
            "bounds",
            "adapt",
            "adaptation",
            "scale",
        ],
        s @ ("micro" | "linerate" | "cost" | "observe" | "hpl" | "nemo3d" | "apply" | "migrate"
        | "bounds" | "adapt") => {
            vec![s]
        }
        other => {
            bail!(
                "unknown suite {other:?}: use micro, linerate, cost, observe, hpl, nemo3d, apply, migrate, bounds, adapt, adaptation, scale or all"
            )
        }
    };
    for suite in suites {
        match suite {
            "apply" => run_apply(&cli)?,
            "migrate" => run_migrate(&cli)?,
            "micro" => run_micro(&cli)?,
            "linerate" => run_linerate(&cli)?,
            "observe" => run_observe(&cli)?,
            "nemo3d" => run_nemo(&cli)?,
            "hpl" => run_hpl(&cli)?,
            "cost" => run_cost(&cli)?,
            "bounds" => run_bounds(&cli)?,
            "adapt" => run_adapt(&cli)?,
            "adaptation" => run_adaptation(&cli)?,
            "scale" => run_scale(&cli)?,
            other => unreachable!("suite {other}"),
        }
    }
    Ok(())
}

fn now_utc() -> String {
    let out = std::process::Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%SZ"])
        .output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Waits until each path's first endpoint reaches its second (neighbours resolved,
/// forwarding tables learned), and each Violin VM the Linux VXLAN VM it meets in the
/// split TCP figure, so no measurement pays for that.
fn warm_up(bl: &BenchLab) -> Result<()> {
    let reach = |a: &Endpoint, b: &Endpoint| {
        wait_ping(&a.ns, &b.ip.to_string(), Duration::from_secs(15))?;
        wait_ping(&b.ns, &a.ip.to_string(), Duration::from_secs(15))
    };
    for p in NetPath::ALL {
        let eps = bl.endpoints(p, 1);
        reach(&eps[0], &eps[1])?;
    }
    let violin = bl.endpoints(NetPath::Violin, 1);
    let linux = bl.endpoints(NetPath::LinuxVxlan, 1);
    reach(&violin[0], &linux[1])?;
    reach(&linux[0], &violin[1])
}

/// Measures every case on every path, `reps` times per MTU, each MTU on a lab of its own
/// (`lab`: name prefix, hosts per path, VMs per overlay host), the paths in rotating order.
fn sweep(
    cli: &Cli,
    lab: (&str, usize, usize),
    reps: usize,
    cases: &[String],
    unit: &str,
    progress: &mut Progress,
    mut measure: impl FnMut(&BenchLab, NetPath, usize, u16) -> Result<f64>,
) -> Result<Vec<Sample>> {
    let (prefix, hosts, vms) = lab;
    let mut samples = Vec::new();
    let mut port = 7000u16;
    for &mtu in &cli.mtus {
        eprintln!(
            "==> lab up (underlay MTU {mtu}: {hosts} hosts per path, {vms} VMs per overlay host)"
        );
        let bl = BenchLab::up(&format!("{prefix}{}", mtu / 100), mtu, hosts, vms)?;
        warm_up(&bl)?;
        for rep in 0..reps {
            for path in rotation(rep) {
                for (c, id) in cases.iter().enumerate() {
                    // Fresh ports each run: no TIME_WAIT collisions.
                    port = if port > 60000 { 7000 } else { port + 8 };
                    let value = measure(&bl, path, c, port)?;
                    progress.step(&format!(
                        "MTU {mtu} rep {rep} {:<11} {id:<14} {value:.3} {unit}",
                        path.label()
                    ));
                    samples.push(Sample {
                        metric: id.clone(),
                        mtu,
                        path,
                        rep,
                        value,
                    });
                }
            }
        }
        eprintln!("==> lab down");
        bl.lab.down()?;
    }
    Ok(samples)
}

/// The paths in a different order each repetition (A B C, B C A, ...).
fn rotation(rep: usize) -> Vec<NetPath> {
    let mut v = NetPath::ALL.to_vec();
    let n = v.len();
    v.rotate_left(rep % n);
    v
}

/// The split TCP figure's samples (`micro::split_metrics`) that `path` records in one
/// repetition on the lab of metric prefix `prefix`: on the IPv4 lab alone, Violin's
/// (TC mode) and Linux VXLAN's, its baseline.
fn split_samples(prefix: &str, path: NetPath) -> usize {
    match path {
        NetPath::Violin | NetPath::LinuxVxlan if prefix.is_empty() => 2,
        _ => 0,
    }
}

/// The samples of the programs' run time on round trips (`micro::RUN_ENCAP`,
/// `micro::RUN_DECAP`) that `path` records in one repetition of one lab: the Violin
/// paths'.
fn run_time_samples(path: NetPath) -> usize {
    match path {
        NetPath::Violin | NetPath::ViolinXdp => 2,
        _ => 0,
    }
}

/// The split TCP figure's samples per repetition, both labs together.
fn split_per_rep() -> usize {
    let on = |prefix| {
        NetPath::ALL
            .iter()
            .map(|&p| split_samples(prefix, p))
            .sum::<usize>()
    };
    on("") + on(micro::IPV6_PREFIX)
}

/// One repetition of the micro suite's socket figures (TCP, 64-byte UDP, round trips) on
/// every path of a lab, in rotating order, recorded under `prefix` + the metric's id.
struct SocketFigures<'a> {
    settings: &'a micro::Settings,
    mtu: u32,
    rep: usize,
    prefix: &'a str,
    port: &'a mut u16,
    samples: &'a mut Vec<Sample>,
    progress: &'a mut Progress,
}

impl SocketFigures<'_> {
    fn measure(&mut self, bl: &BenchLab) -> Result<()> {
        let secs = self.settings.secs;
        for path in rotation(self.rep) {
            let eps = bl.endpoints(path, 1);
            let (a, b) = (&eps[0], &eps[1]);
            let tcp1 = micro::tcp(a, b, 1, secs, self.next_port())?;
            self.push(path, "tcp1", tcp1);
            let tcp4 = micro::tcp(a, b, 4, secs, self.next_port())?;
            self.push(path, "tcp4", tcp4);
            let (kpps, cpu) = micro::udp64(a, b, secs, self.next_port())?;
            self.push(path, "udp64_rate", kpps);
            self.push(path, "udp64_cpu", cpu);
            let (p50, p99) = micro::rtt(a, b, self.settings.ping_count, self.next_port())?;
            self.push(path, "rtt_p50", p50);
            self.push(path, "rtt_p99", p99);
            if run_time_samples(path) > 0 {
                // A figure beside the round trip's, from another kernel interface: the
                // suite's other figures do not wait on it.
                if let Err(e) = self.run_times(bl, path, a, b) {
                    eprintln!("    no program run times on {}: {e:#}", path.label());
                }
            }
            if split_samples(self.prefix, path) > 0 {
                self.split(bl, path, tcp1)?;
            }
        }
        Ok(())
    }

    /// The one-stream figure split by side (`micro::split_metrics`): Violin's VM with
    /// Linux VXLAN's, each way; Linux VXLAN's own figure of this repetition (`tcp1`,
    /// both ends its own) is the baseline of both.
    fn split(&mut self, bl: &BenchLab, path: NetPath, tcp1: f64) -> Result<()> {
        match path {
            NetPath::LinuxVxlan => {
                self.push(path, micro::SPLIT_SEND, tcp1);
                self.push(path, micro::SPLIT_RECV, tcp1);
            }
            NetPath::Violin => {
                let secs = self.settings.secs;
                let violin = bl.endpoints(path, 1);
                let linux = bl.endpoints(NetPath::LinuxVxlan, 1);
                let send = micro::tcp(&violin[0], &linux[1], 1, secs, self.next_port())?;
                self.push(path, micro::SPLIT_SEND, send);
                let recv = micro::tcp(&linux[0], &violin[1], 1, secs, self.next_port())?;
                self.push(path, micro::SPLIT_RECV, recv);
            }
            _ => {}
        }
        Ok(())
    }

    /// The programs' own time per run on round-trip frames (`micro::RUN_ENCAP`,
    /// `micro::RUN_DECAP`): a round-trip run of its own with the kernel's run-time
    /// statistics on for the path's programs, a quarter as long as the figure's (500 round
    /// trips in a quick run, enough for a steady mean).
    fn run_times(
        &mut self,
        bl: &BenchLab,
        path: NetPath,
        a: &Endpoint,
        b: &Endpoint,
    ) -> Result<()> {
        let mut ids = Vec::new();
        for dir in bl.link_dirs(path) {
            ids.extend(runtime::linked_programs(&dir)?);
        }
        let sampler = runtime::Sampler::start(&ids)?;
        micro::rtt(a, b, self.settings.ping_count / 4, self.next_port())?;
        let runs = sampler.finish()?;
        let (port, underlay) = cost::programs_of(path);
        let xdp = path == NetPath::ViolinXdp;
        let per_run = |name| {
            runtime::per_run(&runs, name, xdp).with_context(|| format!("{name} did not run"))
        };
        let (encap, decap) = (per_run(port)?, per_run(underlay)?);
        self.push(path, micro::RUN_ENCAP, encap);
        self.push(path, micro::RUN_DECAP, decap);
        Ok(())
    }

    fn next_port(&mut self) -> u16 {
        *self.port += 1;
        *self.port
    }

    fn push(&mut self, path: NetPath, metric: &str, value: f64) {
        let sample = Sample {
            metric: format!("{}{metric}", self.prefix),
            mtu: self.mtu,
            path,
            rep: self.rep,
            value,
        };
        record(self.samples, self.progress, sample);
    }
}

/// Times the programs (`cost::measure_against`, `runs` pairs each) and keeps the figures
/// as samples of (MTU, repetition) `at`, their ids prefixed with `prefix` (the IPv6
/// lab's, or none).
fn record_costs(
    bl: &BenchLab,
    (runs, against, prefix): (usize, Option<&Path>, &str),
    (mtu, rep): (u32, usize),
    samples: &mut Vec<Sample>,
    progress: &mut Progress,
) -> Result<()> {
    let figures = cost::measure_against(bl, runs, against)?;
    let named = figures
        .into_iter()
        .map(|(id, path, ns)| (format!("{prefix}{id}"), path, ns));
    record_all(samples, progress, (mtu, rep), named);
    Ok(())
}

/// Keeps figures (metric, path, value) taken at (`mtu`, `rep`) as samples.
fn record_all(
    samples: &mut Vec<Sample>,
    progress: &mut Progress,
    (mtu, rep): (u32, usize),
    figures: impl IntoIterator<Item = (String, NetPath, f64)>,
) {
    for (metric, path, value) in figures {
        let sample = Sample {
            metric,
            mtu,
            path,
            rep,
            value,
        };
        record(samples, progress, sample);
    }
}

/// Keeps a micro sample and says so on the progress line.
fn record(samples: &mut Vec<Sample>, progress: &mut Progress, s: Sample) {
    progress.step(&format!(
        "MTU {} rep {} {:<11} {:<18} {:.2}",
        s.mtu,
        s.rep,
        s.path.label(),
        s.metric,
        s.value
    ));
    samples.push(s);
}

/// The line-rate figures of every path on `bl`, `reps` times at `mtu`; then, once, a
/// kernel profile of each stage of each path at 64 bytes, its flame graph written to
/// `out` and its busiest symbols kept in `profiles`.
fn line_rate(
    bl: &BenchLab,
    (mtu, reps): (u32, usize),
    frames: u32,
    (samples, profiles): (&mut Vec<Sample>, &mut BTreeMap<String, String>),
    out: &Path,
    progress: &mut Progress,
) -> Result<linerate::Source> {
    eprintln!("==> line rate: an in-kernel frame source on every path");
    let mut rig = linerate::Rig::load()?;
    linerate::prepare(bl, rig.source())?;
    for rep in 0..reps {
        for path in rotation(rep) {
            let figures = linerate::measure(&mut rig, bl, path, frames)?;
            let figures = figures
                .into_iter()
                .map(|(metric, value)| (metric, path, value));
            record_all(samples, progress, (mtu, rep), figures);
        }
    }
    std::fs::create_dir_all(out)?;
    for path in NetPath::ALL {
        // A profile explains the figures; without one they still stand.
        match linerate::profiles(&mut rig, bl, path, out) {
            Ok(found) => {
                for (what, top) in found {
                    eprintln!("    profiled {what}");
                    profiles.insert(what, top);
                }
            }
            Err(e) => eprintln!("    no line-rate profile of {}: {e:#}", path.label()),
        }
    }
    Ok(rig.source())
}

/// The micro suite's line-rate figures alone, about half a minute per repetition and MTU:
/// for judging a change to the forwarding path's frame rate without the socket figures'
/// twenty minutes.
fn run_linerate(cli: &Cli) -> Result<()> {
    let reps = cli.reps.unwrap_or(if cli.quick { 2 } else { 5 });
    let frames = micro::Settings::new(cli.quick).live_frames;
    let started = now_utc();
    let t0 = Instant::now();
    eprintln!(
        "==> linerate: {} MTUs x {reps} repetitions x {} paths, {frames} frames per figure",
        cli.mtus.len(),
        NetPath::ALL.len()
    );
    let mut progress = Progress {
        start: t0,
        done: 0,
        total: cli.mtus.len() * reps * linerate::FIGURES_PER_REP,
    };
    let mut samples = Vec::new();
    let mut profiles = BTreeMap::new();
    let mut source = None;
    for &mtu in &cli.mtus {
        eprintln!("==> lab up (underlay MTU {mtu}, VM MTU {})", mtu - 50);
        let bl = BenchLab::up(&format!("bl{}", mtu / 100), mtu, 2, 1)?;
        warm_up(&bl)?;
        let kept = (&mut samples, &mut profiles);
        let out = cli.out.join("linerate");
        source = Some(line_rate(
            &bl,
            (mtu, reps),
            frames,
            kept,
            &out,
            &mut progress,
        )?);
        eprintln!("==> lab down");
        bl.lab.down()?;
    }
    let mut settings = BTreeMap::new();
    settings.insert("repetitions".into(), reps.to_string());
    settings.insert(
        "frames per figure".into(),
        format!("{frames} (a quarter of it for MTU-size frames)"),
    );
    let (key, value) = linerate::source_setting(source);
    settings.insert(key, value);
    finish(
        cli,
        "linerate",
        started,
        t0,
        micro::linerate_metrics(),
        samples,
        settings,
        profiles,
    )
}

/// The programs' cost alone: what `micro` times of them, without its other figures, so
/// that a change to a program can be judged in a minute or two.
fn run_cost(cli: &Cli) -> Result<()> {
    let reps = cli.reps.unwrap_or(if cli.quick { 2 } else { 5 });
    let runs = micro::Settings::new(cli.quick).test_runs;
    let started = now_utc();
    let t0 = Instant::now();
    eprintln!(
        "==> cost: {} MTUs x {reps} repetitions x 2 Violin modes, {runs} runs per program and frame",
        cli.mtus.len()
    );
    // With --against: this build's figure, the other's, and their ratio.
    let figures = if cli.against.is_some() { 3 } else { 1 };
    if let Some(o) = &cli.against {
        eprintln!("==> in turns with the programs of {}", o.display());
    }
    let mut progress = Progress {
        start: t0,
        done: 0,
        total: cli.mtus.len() * reps * 2 * cost::METRICS.len() * figures,
    };
    let mut samples = Vec::new();
    let (family, label, lab, prefix) = match cli.ipv6 {
        true => (micro::IPV6, "IPv6", "b6", micro::IPV6_PREFIX),
        false => (Family::V4, "IPv4", "bk", ""),
    };
    for &mtu in &cli.mtus {
        let vm_mtu = family.vm_mtu(mtu);
        eprintln!("==> lab up ({label} underlay, MTU {mtu}, VM MTU {vm_mtu})");
        let bl = BenchLab::up_on(&format!("{lab}{}", mtu / 100), mtu, 2, 1, cli.ipv6)?;
        warm_up(&bl)?;
        for rep in 0..reps {
            let how = (runs, cli.against.as_deref(), prefix);
            record_costs(&bl, how, (mtu, rep), &mut samples, &mut progress)?;
        }
        eprintln!("==> lab down");
        bl.lab.down()?;
    }
    let mut settings = BTreeMap::new();
    settings.insert("repetitions".into(), reps.to_string());
    settings.insert("runs per program and frame".into(), runs.to_string());
    settings.insert("underlay".into(), label.into());
    let metrics = match &cli.against {
        Some(o) => {
            settings.insert("against".into(), o.display().to_string());
            cost::metrics_against(o)
        }
        None => cost::metrics(),
    };
    let metrics = match cli.ipv6 {
        true => micro::over_ipv6(&metrics),
        false => metrics,
    };
    finish(
        cli,
        "cost",
        started,
        t0,
        metrics,
        samples,
        settings,
        BTreeMap::new(),
    )
}

fn run_observe(cli: &Cli) -> Result<()> {
    let reps = cli.reps.unwrap_or(if cli.quick { 3 } else { 9 });
    let settings = micro::Settings::new(cli.quick);
    let started = now_utc();
    let t0 = Instant::now();
    eprintln!(
        "==> observe: {} MTUs x {reps} repetitions x {} paths, each figure unobserved and observed in turn, {} s each",
        cli.mtus.len(),
        observe::PATHS.len(),
        settings.secs
    );
    let mut progress = Progress {
        start: t0,
        done: 0,
        total: cli.mtus.len() * reps * observe::samples_per_rep(),
    };
    let mut samples = Vec::new();
    let mut port = 5000u16;
    for &mtu in &cli.mtus {
        eprintln!("==> lab up (underlay MTU {mtu}, VM MTU {})", mtu - 50);
        let bl = BenchLab::up(&format!("bo{}", mtu / 100), mtu, 2, 1)?;
        warm_up(&bl)?;
        for rep in 0..reps {
            observe::measure(&bl, rep, settings.secs, &mut port, |metric, path, value| {
                let sample = Sample {
                    metric: metric.into(),
                    mtu,
                    path,
                    rep,
                    value,
                };
                record(&mut samples, &mut progress, sample);
            })?;
        }
        eprintln!("==> lab down");
        bl.lab.down()?;
    }
    let mut run_settings = BTreeMap::new();
    run_settings.insert("repetitions".into(), reps.to_string());
    run_settings.insert("seconds per figure".into(), settings.secs.to_string());
    run_settings.insert(
        "observer".into(),
        "violinctl -o json observe --daemon <host> on each of the path's hosts, output to /dev/null, default sample".into(),
    );
    finish(
        cli,
        "observe",
        started,
        t0,
        observe::metrics(),
        samples,
        run_settings,
        BTreeMap::new(),
    )
}

fn run_micro(cli: &Cli) -> Result<()> {
    let reps = cli.reps.unwrap_or(if cli.quick { 2 } else { 5 });
    let settings = micro::Settings::new(cli.quick);
    let started = now_utc();
    let t0 = Instant::now();
    eprintln!(
        "==> micro: {} MTUs x {reps} repetitions x 4 paths, {} s per throughput figure",
        cli.mtus.len(),
        settings.secs
    );
    let mut progress = Progress {
        start: t0,
        done: 0,
        // Per repetition: six figures per path on each underlay family and the Violin
        // paths' program run times on each, the split TCP figure's, four program costs
        // per Violin mode on each family, and the line-rate figures.
        total: cli.mtus.len()
            * reps
            * (NetPath::ALL.len() * 6 * 2
                + 2 * NetPath::ALL.map(run_time_samples).iter().sum::<usize>()
                + split_per_rep()
                + 2 * 8
                + linerate::FIGURES_PER_REP),
    };
    let mut samples = Vec::new();
    let mut profiles = BTreeMap::new();
    let mut source = None;
    let mut port = 6000u16;
    for &mtu in &cli.mtus {
        eprintln!("==> lab up (underlay MTU {mtu}, VM MTU {})", mtu - 50);
        let bl = BenchLab::up(&format!("bm{}", mtu / 100), mtu, 2, 1)?;
        for p in NetPath::ALL {
            eprintln!("    {:<11} on {:?}", p.label(), bl.host_namespaces(p));
        }
        warm_up(&bl)?;
        for rep in 0..reps {
            let mut run = SocketFigures {
                settings: &settings,
                mtu,
                rep,
                prefix: "",
                port: &mut port,
                samples: &mut samples,
                progress: &mut progress,
            };
            run.measure(&bl)?;
            let at = (mtu, rep);
            let how = (settings.test_runs, None, "");
            record_costs(&bl, how, at, &mut samples, &mut progress)?;
        }
        // Where the time goes, once per MTU: kernel profiles and flame graphs of one TCP
        // stream and of the 64-byte flood, per path.
        std::fs::create_dir_all(cli.out.join("micro"))?;
        for path in NetPath::ALL {
            let eps = bl.endpoints(path, 1);
            let (a, b) = (&eps[0], &eps[1]);
            let dir = bl.lab.dir.join("perf");
            for (what, slug) in [("TCP, 1 stream", "tcp1"), ("64-byte flood", "udp64")] {
                port += 1;
                let svg_name = format!("flame-{slug}-{}-{mtu}.svg", path.slug());
                let svg = cli.out.join("micro").join(&svg_name);
                let title = format!("{what}, {}, MTU {mtu}", path.label());
                let secs = settings.secs;
                let top = micro::profile(secs, &dir, &svg, &title, || match slug {
                    "tcp1" => micro::tcp(a, b, 1, secs, port).map(|_| ()),
                    _ => micro::udp64(a, b, secs, port).map(|_| ()),
                });
                // A profile explains the figures; without one they still stand.
                match top {
                    Ok(Some(top)) => {
                        eprintln!("    profiled {what} over {} at MTU {mtu}", path.label());
                        profiles.insert(format!("{title} ([flame graph]({svg_name}))"), top);
                    }
                    Ok(None) => {}
                    Err(e) => eprintln!("    no profile of {title}: {e:#}"),
                }
            }
        }
        // Line rate, last: it turns the underlays' transmit offload off and, with live
        // frames, gives every VM port a NAPI context; the figures above are taken without.
        let kept = (&mut samples, &mut profiles);
        let out = cli.out.join("micro");
        source = Some(line_rate(
            &bl,
            (mtu, reps),
            settings.live_frames,
            kept,
            &out,
            &mut progress,
        )?);
        eprintln!("==> lab down");
        bl.lab.down()?;
        // The socket figures and the programs' costs again over an IPv6-only underlay
        // (the VMs still speak IPv4; the bare path's endpoints speak IPv6).
        let vm_mtu = micro::IPV6.vm_mtu(mtu);
        eprintln!("==> lab up on an IPv6 underlay (MTU {mtu}, VM MTU {vm_mtu})");
        let bl6 = BenchLab::up_on(&format!("b6{}", mtu / 100), mtu, 2, 1, true)?;
        warm_up(&bl6)?;
        for rep in 0..reps {
            let mut run = SocketFigures {
                settings: &settings,
                mtu,
                rep,
                prefix: micro::IPV6_PREFIX,
                port: &mut port,
                samples: &mut samples,
                progress: &mut progress,
            };
            run.measure(&bl6)?;
            let how = (settings.test_runs, None, micro::IPV6_PREFIX);
            record_costs(&bl6, how, (mtu, rep), &mut samples, &mut progress)?;
        }
        eprintln!("==> lab down (IPv6)");
        bl6.lab.down()?;
    }
    let mut settings_map = BTreeMap::new();
    settings_map.insert("repetitions".into(), reps.to_string());
    settings_map.insert(
        "seconds per throughput figure".into(),
        settings.secs.to_string(),
    );
    settings_map.insert(
        "round trips per latency figure".into(),
        settings.ping_count.to_string(),
    );
    settings_map.insert(
        "BPF_PROG_TEST_RUN".into(),
        format!(
            "{} calls per program and frame, one run each on a fresh frame, median, less an almost empty program of the same hook",
            settings.test_runs
        ),
    );
    settings_map.insert(
        "line rate".into(),
        format!(
            "{} frames of 64 bytes (a quarter as many of MTU size, at most 3000 bytes) per figure, counted by violin_bench_sink at TC ingress; CPU = machine-wide busy time / frames counted",
            settings.live_frames
        ),
    );
    let (key, value) = linerate::source_setting(source);
    settings_map.insert(key, value);
    settings_map.insert(
        "MTUs".into(),
        "underlay as listed; VMs behind an overlay get 50 bytes less (70 over IPv6)".into(),
    );
    settings_map.insert(
        "IPv6 underlay".into(),
        "the socket figures (ipv6_*) again on a lab of the same paths whose underlay is IPv6 only: VXLAN over IPv6 for Violin and Linux VXLAN (udp6zerocsumrx), IPv6 endpoints on the bare path (whose 18-byte datagrams make 80-byte frames there), IPv4 inside the VMs, and the programs' costs (ipv6_encap_ns_*, ipv6_decap_ns_*); line rate is taken over IPv4 only".into(),
    );
    settings_map.insert(
        "TCP".into(),
        "iperf3 (-P 1 and -P 4); Violin XDP's VMs checksum their own transmissions (tx off), as XDP mode requires; the VMs of Violin (TC mode) and Linux VXLAN keep their default offloads".into(),
    );
    settings_map.insert(
        "UDP 64-byte".into(),
        "violin-pktgen: sendmmsg flood of 18-byte datagrams, recvmmsg sink; CPU = machine-wide busy time / frames received".into(),
    );
    finish(
        cli,
        "micro",
        started,
        t0,
        micro::metrics(),
        samples,
        settings_map,
        profiles,
    )?;
    Ok(())
}

fn run_nemo(cli: &Cli) -> Result<()> {
    // Five: the fewest whose paired target check can decide (report::DECIDING_COVERAGE).
    let reps = cli.reps.unwrap_or(if cli.quick { 2 } else { 5 });
    let regimes = nemo::regimes(cli.quick);
    let started = now_utc();
    let t0 = Instant::now();
    let runs_per_rep = nemo::PLACEMENTS.len() * regimes.len() * NetPath::ALL.len();
    eprintln!(
        "==> nemo3d: {} MTUs x {reps} repetitions x {runs_per_rep} runs ({} ranks each)",
        cli.mtus.len(),
        nemo::RANKS
    );
    let mut progress = Progress {
        start: t0,
        done: 0,
        total: cli.mtus.len() * reps * runs_per_rep,
    };
    let cases: Vec<(&nemo::Placement, &nemo::Regime)> = nemo::PLACEMENTS
        .iter()
        .flat_map(|p| regimes.iter().map(move |r| (p, r)))
        .collect();
    let ids: Vec<String> = cases.iter().map(|(p, r)| nemo::metric_id(p, r)).collect();
    let samples = sweep(
        cli,
        ("bn", 4, 2),
        reps,
        &ids,
        "s",
        &mut progress,
        |bl, path, c, port| {
            let (p, r) = cases[c];
            nemo::run(bl, path, p, r, port)
        },
    )?;
    let mut settings = BTreeMap::new();
    settings.insert("repetitions".into(), reps.to_string());
    settings.insert("ranks".into(), nemo::RANKS.to_string());
    for r in &regimes {
        settings.insert(
            format!("regime {}", r.id),
            format!(
                "{} iterations, {} B halos to each ring neighbour, {} stencil sweeps of a 64 Ki-element slab per iteration",
                r.iters, r.halo, r.work
            ),
        );
    }
    finish(
        cli,
        "nemo3d",
        started,
        t0,
        nemo::metrics(cli.quick),
        samples,
        settings,
        BTreeMap::new(),
    )?;
    Ok(())
}

fn run_migrate(cli: &Cli) -> Result<()> {
    let reps = cli.reps.unwrap_or(if cli.quick { 2 } else { 5 });
    let started = now_utc();
    let t0 = Instant::now();
    eprintln!(
        "==> migrate: {reps} round trips (2 live migrations each) of a TCG guest, Violin and Linux bridge + VXLAN"
    );
    let mut progress = Progress {
        start: t0,
        done: 0,
        total: migrate::PATHS.len() * (1 + 3 * reps),
    };
    let work = cli.out.join("migrate").join("captures");
    let mut samples = Vec::new();
    for path in migrate::PATHS {
        eprintln!(
            "==> {}: lab up (3 hosts, a QEMU guest on each)",
            path.label()
        );
        samples.extend(migrate::run_path(path, reps, &work, &mut |what| {
            progress.step(what)
        })?);
        eprintln!(
            "==> {}: the NEMO3D stand-in in 3 guests, the whole environment migrating midway",
            path.label()
        );
        samples.extend(migrate::run_penalty(path, reps, &mut |what| {
            progress.step(what)
        })?);
    }
    let mut settings = BTreeMap::new();
    settings.insert("round trips".into(), reps.to_string());
    settings.insert(
        "guests".into(),
        "TCG, 128 MiB, 1 vCPU, Debian kernel + busybox (cargo xtask guest); the mover migrates between hosts 2 and 3, the prober on host 1 sends it a TCP line and a ping every 1 ms".into(),
    );
    settings.insert(
        "Violin".into(),
        "violinctl migrate (libvirt peer-to-peer live migration, switched over on the destination's resume event)".into(),
    );
    settings.insert(
        "Linux VXLAN".into(),
        "the same guests on a Linux bridge with a VXLAN device (head-end replication, learning); virsh migrate --live --p2p; the network relies on QEMU's announcement of the guest after it resumes".into(),
    );
    settings.insert(
        "NEMO3D stand-in".into(),
        "violin-nemo in the guests (3 ranks in a ring, one per guest), rounds of 240 iterations of 4 stencil sweeps and 16 KiB halos, back to back; every guest moves to the next host at once midway through a round".into(),
    );
    settings.insert(
        "timing".into(),
        "resume: virsh event --timestamp on the destination (ms resolution); frames: tcpdump on the destination's underlay switch port (ns)".into(),
    );
    finish(
        cli,
        "migrate",
        started,
        t0,
        migrate::metrics(),
        samples,
        settings,
        BTreeMap::new(),
    )
}

fn run_apply(cli: &Cli) -> Result<()> {
    let reps = cli.reps.unwrap_or(if cli.quick { 2 } else { 5 });
    let primitives = if cli.quick { 5 } else { 20 };
    let violind = paths::violind()?;
    let started = now_utc();
    let t0 = Instant::now();
    eprintln!(
        "==> apply: {} VMs over {} hosts, {reps} repetitions, {primitives} primitives each",
        apply::VMS,
        apply::HOSTS
    );
    let mut progress = Progress {
        start: t0,
        done: 0,
        total: 1 + reps * 5,
    };
    let run = apply::run(violind, reps, primitives, |what| progress.step(what))?;
    finish(
        cli,
        "apply",
        started,
        t0,
        apply::metrics(),
        run.samples,
        run.settings,
        BTreeMap::new(),
    )
}

fn run_bounds(cli: &Cli) -> Result<()> {
    let reps = cli.reps.unwrap_or(if cli.quick { 1 } else { 3 });
    let settings = bounds::Settings::new(cli.quick);
    let started = now_utc();
    let t0 = Instant::now();
    eprintln!(
        "==> bounds: {reps} repetitions x 2 Violin modes, bounds {:?} Mbit/s, {} s per figure",
        bounds::BOUNDS_MBIT,
        settings.secs
    );
    let mut progress = Progress {
        start: t0,
        done: 0,
        total: 1 + reps * bounds::PATHS.len() * bounds::figures_per_rep(),
    };
    let samples = bounds::run(paths::violind()?, &settings, reps, |what| {
        progress.step(what)
    })?;
    let mut run_settings = BTreeMap::new();
    run_settings.insert("seconds per figure".into(), format!("{}", settings.secs));
    run_settings.insert("underlay MTU".into(), bounds::MTU.to_string());
    finish(
        cli,
        "bounds",
        started,
        t0,
        bounds::metrics(),
        samples,
        run_settings,
        BTreeMap::new(),
    )
}

fn run_adapt(cli: &Cli) -> Result<()> {
    let reps = cli.reps.unwrap_or(if cli.quick { 1 } else { 3 });
    let settings = adapt::Settings::new(cli.quick);
    let started = now_utc();
    let t0 = Instant::now();
    eprintln!(
        "==> adapt: {reps} repetitions: pair counting on/off in 2 Violin modes, then patterns \
         all-to-all on {} VMs with {:?} fast-path links",
        adapt::RANKS,
        adapt::BUDGETS
    );
    let mut progress = Progress {
        start: t0,
        done: 0,
        total: 2 + reps * adapt::figures_per_rep(),
    };
    let samples = adapt::run(paths::violind()?, &settings, reps, |what| {
        progress.step(what)
    })?;
    let mut run_settings = BTreeMap::new();
    run_settings.insert("seconds per figure".into(), format!("{}", settings.secs));
    run_settings.insert("iterations".into(), settings.iterations.to_string());
    run_settings.insert(
        "message".into(),
        format!(
            "{} bytes per rank pair per iteration",
            settings.message_bytes
        ),
    );
    run_settings.insert(
        "compute".into(),
        format!("{} ms per iteration", settings.compute_ms),
    );
    run_settings.insert(
        "uplinks".into(),
        format!(
            "{} Mbit/s each way, every host its own domain",
            adapt::WAN_MBIT
        ),
    );
    finish(
        cli,
        "adapt",
        started,
        t0,
        adapt::metrics(),
        samples,
        run_settings,
        BTreeMap::new(),
    )
}

/// The control plane at scale: no root, no lab; simulated hosts on loopback.
fn run_scale(cli: &Cli) -> Result<()> {
    let sizes: Vec<usize> = if cli.quick {
        vec![10, 100]
    } else {
        vec![10, 100, 1000]
    };
    // Ten changes: the CPU figures count 10 ms ticks.
    let reps = cli.reps.unwrap_or(if cli.quick { 3 } else { 10 });
    let settings = scale::Settings {
        sizes: sizes.clone(),
        reps,
        bin: paths::bin_dir()?,
    };
    let started = now_utc();
    eprintln!(
        "==> scale: {} stores x {sizes:?} simulated hosts x {reps} changes",
        scale::Store::ALL.len()
    );
    let mut progress = Progress {
        start: Instant::now(),
        done: 0,
        total: scale::Store::ALL.len() * sizes.len() * (reps + 1),
    };
    let mut points = Vec::new();
    for store in scale::Store::ALL {
        for &n in &settings.sizes {
            points.push(scale::point(&settings, store, n, &mut |what| {
                progress.step(what)
            })?);
        }
    }
    let results = scale::Results {
        revision: git_revision(&violin_testbed::workspace_root()),
        started,
        machine: Machine::describe(),
        binaries: paths::build(),
        reps,
        points,
    };
    let dir = cli.out.join("scale");
    scale::write(&results, &dir)?;
    eprintln!("==> scale: report in {}", dir.join("report.md").display());
    Ok(())
}

fn run_adaptation(cli: &Cli) -> Result<()> {
    let started = now_utc();
    let t0 = Instant::now();
    let pairs = if cli.swf.is_some() {
        1
    } else {
        swf::pairs().len()
    };
    eprintln!(
        "==> adaptation: scenarios 1 and 2 with and without the adaptation manager, then \
         VioCluster over {pairs} trace pair(s) with and without sharing"
    );
    let mut progress = Progress {
        start: t0,
        done: 0,
        total: 2 + pairs,
    };
    let (scenarios, trades) = adaptation::run(cli.swf.as_deref(), |what| progress.step(what))?;
    let results = adaptation::Results {
        revision: git_revision(&violin_testbed::workspace_root()),
        started,
        manager: scenarios::SimParams::default(),
        broker: viocluster::SimParams::default(),
        scenarios,
        trades,
    };
    let dir = cli.out.join("adaptation");
    adaptation::write(&results, &dir)?;
    eprintln!(
        "==> adaptation: report in {}",
        dir.join("report.md").display()
    );
    Ok(())
}

fn run_hpl(cli: &Cli) -> Result<()> {
    let xhpl = violin_testbed::workspace_root().join("target/hpl/xhpl");
    if !xhpl.exists() {
        bail!("{} is missing: run `cargo xtask setup`", xhpl.display());
    }
    // Five: the fewest whose paired target check can decide (report::DECIDING_COVERAGE).
    let reps = cli.reps.unwrap_or(if cli.quick { 1 } else { 5 });
    let problems = hpl::problems(cli.quick);
    let started = now_utc();
    let t0 = Instant::now();
    let runs_per_rep = hpl::RANKS.len() * problems.len() * NetPath::ALL.len();
    eprintln!(
        "==> hpl: {} MTUs x {reps} repetitions x {runs_per_rep} runs",
        cli.mtus.len()
    );
    let mut progress = Progress {
        start: t0,
        done: 0,
        total: cli.mtus.len() * reps * runs_per_rep,
    };
    let cases: Vec<(usize, &hpl::Problem)> = hpl::RANKS
        .iter()
        .flat_map(|&n| problems.iter().map(move |p| (n, p)))
        .collect();
    let ids: Vec<String> = cases.iter().map(|(n, p)| hpl::metric_id(*n, p)).collect();
    let samples = sweep(
        cli,
        ("bh", 2, 2),
        reps,
        &ids,
        "Gflops",
        &mut progress,
        |bl, path, c, _| {
            let (ranks, p) = cases[c];
            hpl::run(bl, path, ranks, p, &xhpl)
        },
    )?;
    let mut settings = BTreeMap::new();
    settings.insert("repetitions".into(), reps.to_string());
    settings.insert(
        "MPI".into(),
        "Open MPI 4.1, one rank per VM (two VMs per host for 4 ranks; two processes per host on the bare path), pml ob1, btl tcp,self on the VM interface, OPENBLAS_NUM_THREADS=1".into(),
    );
    settings.insert(
        "HPL".into(),
        "HPL from Debian's hpcc 1.5.0 source with OpenBLAS; grids 1x2 and 2x2; N and NB held equal across paths".into(),
    );
    finish(
        cli,
        "hpl",
        started,
        t0,
        hpl::metrics(cli.quick),
        samples,
        settings,
        BTreeMap::new(),
    )?;
    Ok(())
}

const HPL_NOTES: &str = "\
Two shared cores make HPL compute-bound at the large size: there the paths differ by \
noise. The small size spends a larger share of its time in panel broadcasts and row \
swaps, so the network path shows. The thesis' UML VIOLIN lost 15-20% to user-level \
tunnelling and UML itself; Violin has no user-level step on its datapath.";

fn nemo_refs() -> Vec<report::Reference> {
    let configs = [
        ("c1", "Thesis, fig. 4.15 (one VM per host): VIOLIN overhead under 6%. Target here: under 2%."),
        ("c2", "Thesis, fig. 4.16 (two per host, locality): more overhead than config 1, less than config 3. Target here: under 3%."),
        ("c3", "Thesis, fig. 4.17 (two per host, no locality): the most overhead. Target here: under 5%."),
    ];
    let lat = " Latency-bound target: at most 1.10x bare (Linux VXLAN measured 1.29x here before, ../shared/MPI.md).";
    let mut refs = Vec::new();
    for (id, text) in configs {
        for regime in ["compute", "bandwidth", "latency"] {
            let extra = if regime == "latency" { lat } else { "" };
            refs.push(report::Reference::new(
                format!("{id}_{regime}"),
                format!("{text}{extra}"),
            ));
        }
    }
    refs
}

const NEMO_NOTES: &str = "\
The stand-in (bench/src/bin/violin-nemo.rs) reproduces what the thesis says of NEMO3D's \
behaviour: ranks own a slab each, and every iteration compute on it and then exchange \
halos with their two ring neighbours. Overhead is Violin's (or Linux VXLAN's) time over \
bare time, minus one. On the bare path, two processes of a host share its namespace and \
talk over the host's loopback, as processes of a physical node would; on the overlays, \
two VMs of a host talk through the host's switch (Violin: one XDP redirect between VM \
ports). Four ranks share two cores, alike on every path.";

/// The project's targets (issues 3 and 10), checked in every report.
fn targets(suite: &str, r: &Results) -> Vec<report::Target> {
    use report::Target as T;
    let mut targets = match suite {
        "micro" | "linerate" => {
            // Issue 10: every TCP figure (both underlay families) at least Linux VXLAN's
            // and 0.90x bare.
            let mut v = Vec::new();
            for tcp in ["tcp1", "tcp4"] {
                for id in [tcp.to_string(), format!("{}{tcp}", micro::IPV6_PREFIX)] {
                    v.push(T::new(id.clone(), NetPath::Bare, 0.90));
                    v.push(T::new(id, NetPath::LinuxVxlan, 1.0));
                }
            }
            v.extend([
                T::new("udp64_rate", NetPath::LinuxVxlan, 1.5),
                T::new("rtt_p50", NetPath::Bare, 1.25),
                T::new("lr_encap_64", NetPath::LinuxVxlan, 3.0),
                T::new("lr_decap_64", NetPath::LinuxVxlan, 3.0),
                T::new("lr_path_64", NetPath::LinuxVxlan, 3.0),
            ]);
            v
        }
        // Issue 10: no slower than Linux VXLAN anywhere, compute-bound at least 0.98x bare
        // (and the communication-heavy problem held to the same, the thesis' comparison).
        "hpl" => r
            .metrics
            .iter()
            .flat_map(|m| {
                [
                    T::new(m.id.clone(), NetPath::Bare, 0.98),
                    T::new(m.id.clone(), NetPath::LinuxVxlan, 1.0),
                ]
            })
            .collect(),
        "nemo3d" => r
            .metrics
            .iter()
            .flat_map(|m| {
                let bound = if m.id.ends_with("_latency") {
                    1.10
                } else if m.id.starts_with("c1") {
                    1.02
                } else if m.id.starts_with("c2") {
                    1.03
                } else {
                    1.05
                };
                [
                    T::new(m.id.clone(), NetPath::Bare, bound),
                    T::new(m.id.clone(), NetPath::LinuxVxlan, 1.0),
                ]
            })
            .collect(),
        _ => Vec::new(),
    };
    // The line-rate suite takes micro's targets of the figures it has.
    targets.retain(|t| r.metrics.iter().any(|m| m.id == t.metric));
    targets
}

fn micro_refs() -> Vec<report::Reference> {
    use report::Reference as R;
    vec![
        R::new("tcp1", "Targets: Violin at least as fast as Linux VXLAN, and at least 90% of bare (aim 95%; the 50-byte header limits it to 96.7% at MTU 1500). Linux VXLAN measured 0.84x bare here before (../shared/MPI.md)."),
        R::new(micro::SPLIT_SEND, "A Violin VM sends to a Linux VXLAN VM of the same environment; Linux VXLAN's column is its own one-stream figure of the same repetition (both ends Linux VXLAN). The ratio is what Violin's sending host alone changes."),
        R::new(micro::SPLIT_RECV, "A Linux VXLAN VM sends to a Violin VM; the ratio to Linux VXLAN's own one-stream figure is what Violin's receiving host alone changes."),
        R::new("udp64_rate", "Target: Violin at least 1.5x the frame rate of Linux VXLAN."),
        R::new("ipv6_tcp1", "Over an IPv6 underlay the outer headers take 70 bytes: at MTU 1500 a VM's TCP (1390-byte segments) can reach at most 96.5% of the bare path's IPv6 TCP (1440-byte segments) (issue 13 part 5)."),
        R::new("rtt_p50", "Target: Violin at most 1.25x bare (aim 1.10x). Reference: Linux VXLAN measured 1.35x bare (ping p50) here before."),
        R::new("encap_ns_64", "Target: under 60 ns."),
        R::new("decap_ns_64", "Target: under 40 ns."),
        R::new("lr_encap_64", "Targets: at least 1.49 Mpps (1 GbE line rate at 64 bytes) and at least 3x Linux VXLAN. The bare path's whole-path figure is the lab's own ceiling (source, veth and wire)."),
        R::new("lr_decap_64", "Targets: at least 1.49 Mpps and at least 3x Linux VXLAN."),
        R::new("lr_path_64", "Targets: at least 1.49 Mpps and at least 3x Linux VXLAN; bare is the lab's ceiling."),
    ]
}

const COST_TITLE: &str = "The forwarding programs' cost per packet";

fn cost_refs() -> Vec<report::Reference> {
    micro_refs()
        .into_iter()
        .filter(|r| r.metric.starts_with("encap_ns") || r.metric.starts_with("decap_ns"))
        .collect()
}

const COST_NOTES: &str = "\
Each program is timed by the kernel (BPF_PROG_TEST_RUN through aya) on a fresh frame \
per run, against the live maps of a lab host whose daemon forwards between two VMs; each \
run is paired with a run of an almost empty program of the same hook just before it, and \
the figure is the median of the pairs' differences. The same figures are \
part of `micro`. Encapsulation is the VM port's program on a frame to a VM on the other \
host; decapsulation the underlay's on that VM's answer (UDP, which the TC underlay \
program decapsulates itself; TCP goes to the flow-based VXLAN device).";

const LINERATE_NOTES: &str = "\
The figures of the micro suite's line-rate part, alone: an in-kernel source sends frames \
into each path (`violin_bench_fwd` run by BPF_PROG_RUN in live-frames mode or, where the \
kernel refuses live frames, `violin_bench_burst`'s copies; the settings name it), and \
`violin_bench_sink` counts what arrives; the lab's bridge is replaced by an XDP wire \
between the two switch ports, so the bare path's whole-path figure is the lab's own \
ceiling. CPU per frame is the machine's busy time over the frames counted, the source's \
own cost included, alike on every path. With live frames, which never were skbs, Violin \
in TC mode pays for an skb per frame (built on the VM port, with its GRO attempt) where \
XDP mode keeps the frame as it came, and XDP mode is the faster at every stage; the \
bursts' frames are skbs from the start, XDP on a veth runs on a copy of each, and XDP mode \
loses that lead at the VM port.";

const MICRO_NOTES: &str = "\
Violin is measured in both port modes: its default, TC (TC programs on the VM ports, the \
underlay NIC and a flow-based VXLAN device), and XDP. Where the time goes (see the kernel \
profiles and flame graphs below). (1) TC keeps the skb: a VM's TSO super-frames are \
encapsulated whole and segmented by the wire, and on receive the underlay's GRO, through \
the VXLAN device's socket, merges a stream's segments before Violin sees them; the merged \
skb is decapsulated by the kernel's device and handed into the VM with \
bpf_redirect_peer, with no bridge and no backlog queue in between (Linux VXLAN crosses a \
bridge and a veth backlog). Single frames (small packets, latency) are decapsulated by \
the TC program itself. (2) On veth, XDP runs on a copy: the kernel converts each received \
skb for XDP by copying it into a page-pool page, once on the VM port and once on the \
underlay; XDP on a veth also gives up TSO on its peer, so with XDP every 1450-byte segment \
crosses the datapath on its own, and no GRO merges segments before it. With socket \
traffic XDP mode is therefore the slower one on every figure here. (3) With frames that \
never were skbs (the in-kernel source's live frames), XDP mode is the faster at every \
stage (the line-rate tables); a NIC with native XDP would give socket traffic the same \
advantage, which is why XDP mode stays. The bursts' source, on kernels that refuse live \
frames, sends skbs, and XDP mode loses that lead at the VM port. (4) The programs' own \
cost, timed one fresh frame per run: the port, the sending peer and the environment come \
from direct-mapped arrays, learning and the destination from each CPU's memory of its \
recent lookups, a VM pair's count from its per-CPU cell; most of what is left is the helpers that move the head \
(bpf_skb_adjust_room, bpf_xdp_adjust_head) and the redirect, TC's dearer than XDP's. (5) \
The lab's underlay interfaces have GRO on, as physical NICs do, on every path alike. (6) \
Both overlays lose to bare on bulk TCP by the tunnel's segmentation at the switch and the \
inner checksum each receiving VM verifies (csum_partial). (7) Round trips are taken with \
both ends pinned to one CPU; with the ends on different CPUs, cross-CPU wake-ups dominate \
every path alike. (8) A TCP stream's sender and every softirq of its path (the switch's \
segmentation, the receiving host, the delivery) run on the sender's CPU, the bottleneck; \
the receiver's CPU is mostly idle, and each wake-up of its reader costs the sender's CPU \
an inter-processor interrupt. How often the reader sleeps changes from run to run on \
every path alike (sock_def_readable took 3-16% of all samples in runs of the same path \
on a 2-CPU VM), which spreads the TCP figures by up to a third. (9) The programs' run \
times on round-trip frames come from the kernel's run-time statistics, on only for a \
round-trip run of their own: there a run costs two to three times its BPF_PROG_TEST_RUN \
figure, since a context switch and two system calls between frames take much of its code \
and maps out of the caches. Each includes part of the statistics' two clock reads, and \
the underlay program's also the host's own frames it passes (neighbour discovery, the \
daemons' traffic).";

/// Assembles a finished suite's results, writes them with their report and plots, and
/// says where they are.
#[allow(clippy::too_many_arguments)]
fn finish(
    cli: &Cli,
    suite: &str,
    started: String,
    t0: Instant,
    metrics: Vec<results::Metric>,
    samples: Vec<Sample>,
    mut settings: BTreeMap<String, String>,
    profiles: BTreeMap<String, String>,
) -> Result<()> {
    if let Some(idle) = &cli.idle {
        settings.insert("idle CPUs".into(), idle.clone());
    }
    settings
        .entry("binaries".into())
        .or_insert_with(paths::build);
    let results = Results {
        suite: suite.into(),
        quick: cli.quick,
        started,
        duration_s: t0.elapsed().as_secs_f64(),
        git_revision: git_revision(&violin_testbed::workspace_root()),
        machine: Machine::describe(),
        metrics,
        samples,
        settings,
        profiles,
    };
    let out = cli.out.join(suite);
    rewrite(&results, &out)?;
    eprintln!(
        "==> {suite} done in {:.0} s: {}",
        results.duration_s,
        out.join("report.md").display()
    );
    Ok(())
}

/// Reports and plots of a finished run, from its results.
fn rewrite(r: &Results, dir: &Path) -> Result<()> {
    match r.suite.as_str() {
        "micro" => write_outputs(r, dir, MICRO_TITLE, &micro_refs(), MICRO_NOTES),
        "linerate" => write_outputs(r, dir, LINERATE_TITLE, &micro_refs(), LINERATE_NOTES),
        "cost" => write_outputs(r, dir, COST_TITLE, &cost_refs(), COST_NOTES),
        "nemo3d" => write_outputs(r, dir, NEMO_TITLE, &nemo_refs(), NEMO_NOTES),
        "hpl" => write_outputs(r, dir, HPL_TITLE, &hpl_refs(r), HPL_NOTES),
        "migrate" => write_outputs(r, dir, MIGRATE_TITLE, &migrate_refs(), MIGRATE_NOTES),
        "apply" => {
            r.write(dir)?;
            std::fs::write(dir.join("report.md"), apply::markdown(r))?;
            Ok(())
        }
        "observe" => {
            r.write(dir)?;
            std::fs::write(dir.join("report.md"), observe::markdown(r))?;
            Ok(())
        }
        "bounds" => {
            r.write(dir)?;
            std::fs::write(dir.join("report.md"), bounds::markdown(r))?;
            bounds::plots(r, dir)
        }
        "adapt" => {
            r.write(dir)?;
            std::fs::write(dir.join("report.md"), adapt::markdown(r))?;
            adapt::plots(r, dir)
        }
        other => bail!("unknown suite {other} in results"),
    }
}

const MICRO_TITLE: &str = "Violin micro-benchmarks";
const LINERATE_TITLE: &str = "Violin micro-benchmarks: line rate alone";
const MIGRATE_TITLE: &str =
    "Live migration of a running guest: Violin against Linux bridge + VXLAN";

fn migrate_refs() -> Vec<report::Reference> {
    use report::Reference as R;
    vec![
        R::new("reconverge_in_ms", "Target: under 10 ms (the best public overlays: up to 0.5 s). Thesis, ch. 6: VIOLIN's migrations cost about 20 s of application time, much of it its network's."),
        R::new("reconverge_out_ms", "Upper bound of the time until a peer's frame reached the guest: the guest answered it."),
        R::new("downtime_ms", "libvirt's measurement; the guest is paused for it whatever the network does."),
        R::new("control_ms", "Violin only: until every host of the environment acknowledged the new location (frames flow before that: the hosts of the move re-point on libvirt's events, and the old host forwards on)."),
    ]
}

const MIGRATE_NOTES: &str = "\
Every figure is a median over the migrations of the run, both directions. The guests \
run under TCG on two shared cores, which stretches libvirt's times and the guests' \
answers alike on both paths. A frame for the guest can reach its new host only once the \
guest runs there (the destination drops or holds it before), so `reconverge_in_ms` also \
includes the wait for the prober's next ping (1 ms apart).";
const NEMO_TITLE: &str = "NEMO3D stand-in: thesis configurations 1-3";
const HPL_TITLE: &str = "High-Performance Linpack over bare, Linux VXLAN and Violin";

fn hpl_refs(r: &Results) -> Vec<report::Reference> {
    r.metrics
        .iter()
        .map(|m| report::Reference::new(m.id.clone(), "Thesis, fig. 4.13: UML VIOLIN reached about 85% of the physical cluster; IEEE Computer 2005, fig. 2: about 80%. Target here: at least 98% of bare."))
        .collect()
}

fn write_outputs(
    r: &Results,
    dir: &Path,
    title: &str,
    refs: &[report::Reference],
    notes: &str,
) -> Result<()> {
    r.write(dir)?;
    let targets = targets(&r.suite, r);
    let md = report::markdown(r, title, refs, &targets, notes);
    std::fs::write(dir.join("report.md"), md)?;
    for m in &r.metrics {
        plot::metric_png(r, &m.id, &dir.join(format!("{}.png", m.id)))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn results(suite: &str, metrics: Vec<results::Metric>) -> Results {
        Results {
            suite: suite.into(),
            quick: true,
            started: String::new(),
            duration_s: 0.0,
            git_revision: String::new(),
            machine: Machine::describe(),
            metrics,
            samples: Vec::new(),
            settings: BTreeMap::new(),
            profiles: BTreeMap::new(),
        }
    }

    #[test]
    fn ipv6_is_refused_outside_the_cost_suite_and_names_the_cost_figures() {
        let cli = Cli::parse_from(["violin-bench", "micro", "--ipv6"]);
        let err = check_flags(&cli).expect_err("--ipv6 with the micro suite was accepted");
        assert!(err.to_string().starts_with("--ipv6: "), "{err:#}");
        let ids: Vec<String> = micro::over_ipv6(&cost::metrics())
            .into_iter()
            .map(|m| m.id)
            .collect();
        assert_eq!(
            ids,
            [
                "ipv6_encap_ns_64",
                "ipv6_encap_ns_mtu",
                "ipv6_decap_ns_64",
                "ipv6_decap_ns_mtu"
            ]
        );
    }

    #[test]
    fn the_line_rate_suite_keeps_micros_targets_of_its_own_figures() {
        let lr = results("linerate", micro::linerate_metrics());
        let got: Vec<String> = targets("linerate", &lr)
            .into_iter()
            .map(|t| t.metric)
            .collect();
        assert_eq!(got, ["lr_encap_64", "lr_decap_64", "lr_path_64"]);
        let all = results("micro", micro::metrics());
        assert_eq!(targets("micro", &all).len(), 13);
        let hpl = results("hpl", hpl::metrics(false));
        let against_vxlan = targets("hpl", &hpl)
            .iter()
            .filter(|t| t.baseline == NetPath::LinuxVxlan && t.bound == 1.0)
            .count();
        assert_eq!(against_vxlan, hpl.metrics.len());
    }

    #[test]
    fn micros_notes_name_its_figures_and_the_split_is_taken_over_ipv4_alone() {
        let ids: Vec<String> = micro::metrics().into_iter().map(|m| m.id).collect();
        for r in micro_refs() {
            assert!(
                ids.contains(&r.metric),
                "a note for no figure: {}",
                r.metric
            );
        }
        for split in [micro::SPLIT_SEND, micro::SPLIT_RECV] {
            assert_eq!(ids.iter().filter(|i| i.ends_with(split)).count(), 1);
        }
        // Taken (and counted in the progress) on the IPv4 lab alone, on the two paths
        // the report compares.
        for prefix in ["", micro::IPV6_PREFIX] {
            let paths: Vec<NetPath> = NetPath::ALL
                .into_iter()
                .filter(|&p| split_samples(prefix, p) == 2)
                .collect();
            let want: &[NetPath] = match prefix {
                "" => &[NetPath::LinuxVxlan, NetPath::Violin],
                _ => &[],
            };
            assert_eq!(paths, want, "prefix {prefix:?}");
        }
        assert_eq!(split_per_rep(), 4);
    }
}
