//! The `micro` suite: TCP goodput (1 and 4 streams, and one stream split by side between
//! Violin and Linux VXLAN), 64-byte UDP frame rate with CPU time per packet, UDP
//! round-trip latency and what Violin's programs take per run on its frames (`runtime`);
//! with each program's cost through BPF_PROG_TEST_RUN (`cost`) and the line-rate figures
//! (`linerate`).
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Stdio,
};

use anyhow::{bail, Context, Result};
use bench::reports;
use dataplane_common::packet::Family;
use inferno::collapse::Collapse;
use violin_testbed::{
    iperf::{self, Load, Server},
    sys::ns_run,
};

use crate::{
    paths::Endpoint,
    results::{Better, Metric},
};

pub struct Settings {
    pub secs: f64,
    pub ping_count: usize,
    /// BPF_PROG_TEST_RUN calls per program and frame (`cost`).
    pub test_runs: usize,
    /// Frames the in-kernel source sends per line-rate figure (a quarter of it for
    /// MTU-size frames).
    pub live_frames: u32,
}

impl Settings {
    pub fn new(quick: bool) -> Settings {
        if quick {
            Settings {
                secs: 2.0,
                ping_count: 2000,
                test_runs: 2000,
                live_frames: 500_000,
            }
        } else {
            Settings {
                secs: 5.0,
                ping_count: 20_000,
                test_runs: 20_000,
                live_frames: 2_000_000,
            }
        }
    }
}

/// The family of the suite's second lab, and the prefix of the metrics taken on it.
pub const IPV6: Family = Family::V6;
pub const IPV6_PREFIX: &str = "ipv6_";

/// `metrics` as taken on a lab whose underlay is IPv6: ids prefixed with [`IPV6_PREFIX`],
/// titles saying so.
pub fn over_ipv6(metrics: &[Metric]) -> Vec<Metric> {
    metrics
        .iter()
        .map(|m| Metric {
            id: format!("{IPV6_PREFIX}{}", m.id),
            title: format!("{}, IPv6 underlay", m.title),
            unit: m.unit.clone(),
            better: m.better,
        })
        .collect()
}

pub fn metrics() -> Vec<Metric> {
    let sockets = socket_metrics();
    let costs = crate::cost::metrics();
    let (sockets6, costs6) = (over_ipv6(&sockets), over_ipv6(&costs));
    sockets
        .into_iter()
        .chain(sockets6)
        .chain(split_metrics())
        .chain(costs)
        .chain(costs6)
        .chain(linerate_metrics())
        .collect()
}

/// What [`crate::SocketFigures`] measures on each path.
fn socket_metrics() -> Vec<Metric> {
    let m = |id: &str, title: &str, unit: &str, better| Metric {
        id: id.into(),
        title: title.into(),
        unit: unit.into(),
        better,
    };
    vec![
        m("tcp1", "TCP goodput, 1 stream", "Gbit/s", Better::Higher),
        m("tcp4", "TCP goodput, 4 streams", "Gbit/s", Better::Higher),
        m(
            "udp64_rate",
            "UDP 64-byte frames received",
            "kpps",
            Better::Higher,
        ),
        m(
            "udp64_cpu",
            "CPU time per received 64-byte frame",
            "ns",
            Better::Lower,
        ),
        m("rtt_p50", "UDP round trip, median", "us", Better::Lower),
        m(
            "rtt_p99",
            "UDP round trip, 99th percentile",
            "us",
            Better::Lower,
        ),
        m(
            RUN_ENCAP,
            "Encapsulation (VM port program) per run on round-trip frames, kernel run-time statistics",
            "ns",
            Better::Lower,
        ),
        m(
            RUN_DECAP,
            "Decapsulation (underlay program) per run on round-trip frames, kernel run-time statistics",
            "ns",
            Better::Lower,
        ),
    ]
}

/// What the VM port program and the underlay program of the path's port mode take per
/// run on round-trip frames (`crate::runtime`), taken on the Violin paths alone in a
/// round-trip run of their own, so that the statistics' clock reads slow no other figure.
/// (A VM port in XDP mode has the TC program too, for the frames its XDP program passes;
/// a round trip's are not among them.)
pub const RUN_ENCAP: &str = "run_encap_ns";
pub const RUN_DECAP: &str = "run_decap_ns";

/// One TCP stream between a Violin VM and a Linux VXLAN VM, each way ([`SPLIT_SEND`],
/// [`SPLIT_RECV`]), on the IPv4 lab: with one end Linux VXLAN's, a ratio to Linux VXLAN's
/// own one-stream figure of the same repetition is what Violin's sending (or receiving)
/// host alone changes, where `tcp1` mixes both.
pub fn split_metrics() -> Vec<Metric> {
    let m = |id: &str, title: &str| Metric {
        id: id.into(),
        title: title.into(),
        unit: "Gbit/s".into(),
        better: Better::Higher,
    };
    vec![
        m(
            SPLIT_SEND,
            "TCP goodput, 1 stream, from a Violin (TC) VM to a Linux VXLAN VM",
        ),
        m(
            SPLIT_RECV,
            "TCP goodput, 1 stream, from a Linux VXLAN VM to a Violin (TC) VM",
        ),
    ]
}

pub const SPLIT_SEND: &str = "tcp1_send";
pub const SPLIT_RECV: &str = "tcp1_recv";

/// Mpps and CPU per frame of each line-rate stage at each size.
pub fn linerate_metrics() -> Vec<Metric> {
    let mut v = Vec::new();
    for (size, size_label) in crate::linerate::SIZES {
        for (stage, stage_label) in crate::linerate::STAGES {
            v.push(Metric {
                id: format!("lr_{stage}_{size}"),
                title: format!("In-kernel source, {stage_label}, {size_label}"),
                unit: "Mpps".into(),
                better: Better::Higher,
            });
            v.push(Metric {
                id: format!("lr_{stage}_{size}_cpu"),
                title: format!("In-kernel source, {stage_label}, {size_label}: CPU per frame"),
                unit: "ns".into(),
                better: Better::Lower,
            });
        }
    }
    v
}

/// Flood sender and sink on different CPUs, so both run at full speed.
const CLIENT_CPU: [&str; 2] = ["-c", "0"];
const SERVER_CPU: [&str; 2] = ["-c", "1"];
/// Round trips with both ends on one CPU: with the ends on different CPUs the figure is
/// dominated by cross-CPU wake-ups (all three paths near 60-90 us here), and left to the
/// scheduler it flips between the two regimes from run to run.
const RTT_CPU: [&str; 2] = ["-c", "0"];

fn pktgen() -> Result<PathBuf> {
    Ok(crate::paths::bin_dir()?.join("violin-pktgen"))
}

/// One of our tools' one-line reports.
fn report<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    serde_json::from_str(text.trim()).with_context(|| format!("not a report: {text}"))
}

/// TCP goodput in Gbit/s from `a` to `b` with `streams` parallel streams (iperf3).
pub fn tcp(a: &Endpoint, b: &Endpoint, streams: u32, secs: f64, port: u16) -> Result<f64> {
    let run = iperf::run(&a.ns, &b.ns, b.ip, Load::Tcp { streams }, secs, port)?;
    Ok(run.mbit_per_s / 1e3)
}

/// Machine-wide busy CPU time in nanoseconds, from /proc/stat.
pub fn busy_cpu_ns() -> Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let line = stat.lines().next().context("empty /proc/stat")?;
    let v: Vec<f64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let busy: f64 =
        v.iter().sum::<f64>() - v.get(3).copied().unwrap_or(0.0) - v.get(4).copied().unwrap_or(0.0);
    // SAFETY: sysconf(3) takes an integer name and returns an integer; it accesses no memory
    // of ours.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok(busy / hz * 1e9)
}

/// 64-byte frames (18 bytes of UDP payload) from `a` to `b`: received kpps and busy CPU
/// nanoseconds per received frame.
pub fn udp64(a: &Endpoint, b: &Endpoint, secs: f64, port: u16) -> Result<(f64, f64)> {
    let gen = pktgen()?;
    let gen = gen.to_string_lossy();
    let bind = SocketAddr::new(b.ip, port).to_string();
    let max = format!("{}", secs + 10.0);
    let sink_args = [
        SERVER_CPU[0],
        SERVER_CPU[1],
        &gen,
        "sink",
        "--bind",
        &bind,
        "--max-secs",
        &max,
    ];
    let sink = Server::start(&b.ns, "taskset", &sink_args)?;
    let cpu0 = busy_cpu_ns()?;
    let secs_s = format!("{secs}");
    let flood_args = [
        CLIENT_CPU[0],
        CLIENT_CPU[1],
        &gen,
        "flood",
        "--dst",
        &bind,
        "--secs",
        &secs_s,
    ];
    ns_run(&a.ns, "taskset", &flood_args)?;
    let cpu1 = busy_cpu_ns()?;
    let v: reports::Sink = report(&sink.finish()?)?;
    let packets = v.packets as f64;
    let window = v.secs;
    if packets < 1.0 || window <= 0.0 {
        bail!("no 64-byte frames arrived from {} to {}", a.ns, b.ns);
    }
    Ok((packets / window / 1e3, (cpu1 - cpu0) / packets))
}

/// UDP round trips from `a` to `b`: (p50, p99) in microseconds.
pub fn rtt(a: &Endpoint, b: &Endpoint, count: usize, port: u16) -> Result<(f64, f64)> {
    let gen = pktgen()?;
    let gen = gen.to_string_lossy();
    let bind = SocketAddr::new(b.ip, port).to_string();
    let echo_args = [
        RTT_CPU[0],
        RTT_CPU[1],
        &gen,
        "echo",
        "--bind",
        &bind,
        "--idle-secs",
        "1",
    ];
    let echo = Server::start(&b.ns, "taskset", &echo_args)?;
    let count = count.to_string();
    let ping_args = [
        RTT_CPU[0], RTT_CPU[1], &gen, "ping", "--dst", &bind, "--count", &count,
    ];
    let out = ns_run(&a.ns, "taskset", &ping_args)?;
    drop(echo);
    let v: reports::Ping = report(&out)?;
    Ok((v.p50_us, v.p99_us))
}

/// Profiles the whole machine (perf, CPU-clock sampling with call graphs: this kind of VM
/// has no hardware counters) for `secs` while `workload` runs. Returns perf's busiest
/// symbols, and writes the samples as a flame graph (inferno) to `svg`. None when perf
/// is not installed.
pub fn profile(
    secs: f64,
    dir: &Path,
    svg: &Path,
    title: &str,
    workload: impl FnOnce() -> Result<()>,
) -> Result<Option<String>> {
    if violin_testbed::sys::output("perf", &["--version"]).is_err() {
        return Ok(None);
    }
    std::fs::create_dir_all(dir)?;
    let data = dir.join("perf.data");
    let data_s = data.to_string_lossy().into_owned();
    let mut rec = std::process::Command::new("perf")
        .args([
            "record", "-a", "-g", "-F", "999", "-o", &data_s, "--", "sleep",
        ])
        .arg(format!("{}", secs + 0.5))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting perf record")?;
    let result = workload();
    let recorded = rec.wait()?;
    if let Err(e) = result {
        let _ = std::fs::remove_file(&data);
        return Err(e);
    }
    if !recorded.success() {
        let _ = std::fs::remove_file(&data);
        bail!("perf record failed ({recorded})");
    }
    let out = violin_testbed::sys::run(
        "perf",
        &[
            "report",
            "-i",
            &data_s,
            "--stdio",
            "--no-children",
            "--sort",
            "symbol",
            "-g",
            "none",
            "--percent-limit",
            "1.5",
        ],
    )?;
    let top: Vec<&str> = out
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.trim_end_matches(|c: char| c == '-' || c.is_whitespace()))
        .take(20)
        .collect();
    let drawn = flame_graph(&data_s, svg, title);
    let _ = std::fs::remove_file(&data);
    drawn?;
    Ok(Some(top.join("\n")))
}

/// perf's samples in `data` as an SVG flame graph.
fn flame_graph(data: &str, svg: &Path, title: &str) -> Result<()> {
    let script = violin_testbed::sys::output("perf", &["script", "-i", data])?;
    let mut folded = Vec::new();
    inferno::collapse::perf::Folder::default()
        .collapse(&script.stdout[..], &mut folded)
        .context("folding perf's stacks")?;
    let mut opts = inferno::flamegraph::Options::default();
    opts.title = title.to_string();
    let file = std::fs::File::create(svg).with_context(|| format!("creating {}", svg.display()))?;
    inferno::flamegraph::from_reader(&mut opts, &folded[..], std::io::BufWriter::new(file))
        .context("drawing the flame graph")?;
    Ok(())
}
