//! Line-rate figures: how many frames per second each stage of each path forwards, and
//! the CPU time each costs, with one in-kernel frame source for every path. The source is
//! `violin_bench_fwd` run by BPF_PROG_RUN in live-frames mode (`BPF_F_TEST_XDP_LIVE_FRAMES`,
//! aya's `TestRun`): the kernel builds each frame anew and redirects it into an interface,
//! at millions of frames per second from one core, far above what a socket sender
//! reaches. A kernel may refuse live frames (EPERM: some hardened builds do); the source
//! is then `violin_bench_burst` run by BPF_PROG_RUN on a TC test skb, each run sending
//! `BENCH_BURST` copies out of the interface by bpf_clone_redirect, and the report says
//! so ([`Source`]). `violin_bench_sink` (TC ingress) counts what arrives. The lab's switch
//! is kept out of the way, as a physical one would be: the source and sink sit on switch
//! ports, and for the whole path a wire (`violin_bench_fwd` attached to a switch port)
//! replaces the bridge.
//!
//! - encapsulation: VM a's frames into its eth0; counted as they leave host 1 (on the
//!   switch port facing it);
//! - decapsulation: the same frames encapsulated, from host 1 to host 2, into host 2's
//!   underlay; counted on VM b's eth0;
//! - the whole path: VM a's frames into its eth0, across the wire, counted on VM b's eth0
//!   (the bare path: host 1's underlay to host 2's).
use std::{
    path::{Path, PathBuf},
    sync::atomic::{AtomicUsize, Ordering},
    time::Instant,
};

use anyhow::{bail, Context, Result};
use aya::{
    maps::{Array, DevMapHash, PerCpuArray},
    programs::{
        SchedClassifier, TcAttachType, TestRun, TestRunAttrs, TestRunOptions, Xdp, XdpMode,
    },
    Ebpf,
};
use dataplane_common::{maps::BENCH_BURST, packet::Tunnel};
use violin_testbed::{
    frames::{udp_frame, vxlan, xdp_md, Station, MAX_TEST_FRAME, MIN_FRAME},
    lab::switch_ns,
    sys::{ifindex_of, in_netns, link_packets, mac_of, ns_run, LinkPackets},
};

use crate::{ebpf, micro::busy_cpu_ns, paths::BenchLab, results::NetPath};

/// The figures: (metric id, title), Mpps and ns of CPU per frame for each.
pub const STAGES: [(&str, &str); 3] = [
    ("encap", "encapsulation stage"),
    ("decap", "decapsulation stage"),
    ("path", "whole path"),
];

/// Frame sizes: (id suffix, label).
pub const SIZES: [(&str, &str); 2] = [
    ("64", "64-byte frames"),
    ("mtu", "MTU-size frames (at most 3000 bytes)"),
];

/// Figures per repetition on one lab: Mpps and CPU per frame for each stage and size on
/// every overlay path, and for the whole path on bare.
pub const FIGURES_PER_REP: usize = 2 * SIZES.len() * ((NetPath::ALL.len() - 1) * STAGES.len() + 1);

/// A source, an optional wire and a sink: one stage of one path.
struct Stage {
    /// Where the source runs, and the interface it sends into.
    source: (String, String),
    frame: Vec<u8>,
    /// Switch ports (from, to): the wire of the whole path.
    wire: Option<(String, String)>,
    /// The lab's switch namespace.
    switch: String,
    /// Where the sink counts.
    sink: (String, String),
}

/// How the rig makes its frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Source {
    /// `violin_bench_fwd` by BPF_PROG_RUN in live-frames mode: each frame built anew and
    /// handed to the interface's XDP transmit.
    LiveFrames,
    /// `violin_bench_burst` by BPF_PROG_RUN on a TC test skb, where the kernel refuses
    /// live frames: copies of one skb through the interface's ordinary transmit.
    Bursts,
}

impl Source {
    /// For a report's settings.
    pub fn describe(self) -> String {
        match self {
            Source::LiveFrames => {
                "violin_bench_fwd run by BPF_PROG_RUN in live-frames mode".to_string()
            }
            Source::Bursts => format!(
                "violin_bench_burst run by BPF_PROG_RUN on a TC test skb, {BENCH_BURST} copies \
                 per run by bpf_clone_redirect (this kernel refuses live frames: EPERM), VM \
                 ports without GRO"
            ),
        }
    }
}

/// The source as both reports' settings name it (micro's and linerate's, under one key),
/// or that none was used.
pub fn source_setting(source: Option<Source>) -> (String, String) {
    let value = source.map_or_else(|| "not measured".to_string(), Source::describe);
    ("frame source".to_string(), value)
}

/// `frames` live frames of `frame` through `fwd`, in batches of `batch`, as if they arrived
/// on the current namespace's loopback.
fn live_run(fwd: &Xdp, frame: &[u8], frames: u32, batch: u32) -> Result<()> {
    let ctx = xdp_md(1, frame.len());
    let mut opts = TestRunOptions::new();
    opts.data_in = Some(frame);
    opts.ctx_in = Some(&ctx);
    opts.repeat = frames;
    opts.attrs = TestRunAttrs::new().xdp_live_frames(batch);
    fwd.test_run(opts)?;
    Ok(())
}

/// Whether `e` is the kernel's refusal of live frames (EPERM from BPF_PROG_RUN, as root).
fn refused(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.raw_os_error() == Some(libc::EPERM))
    })
}

/// The benchmark's own copy of the programs, its maps pinned apart from any daemon's.
pub struct Rig {
    ebpf: Ebpf,
    pins: PathBuf,
    source: Source,
}

impl Drop for Rig {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pins);
    }
}

impl Rig {
    pub fn load() -> Result<Rig> {
        // Apart for each rig, also of one process (the tests run side by side).
        static RIGS: AtomicUsize = AtomicUsize::new(0);
        let n = RIGS.fetch_add(1, Ordering::Relaxed);
        let pins = PathBuf::from(format!(
            "/sys/fs/bpf/violin-bench-{}-{n}",
            std::process::id()
        ));
        std::fs::create_dir_all(&pins).with_context(|| format!("creating {}", pins.display()))?;
        let mut ebpf = ebpf::load(&pins)?;
        ebpf::xdp(&mut ebpf, "violin_bench_fwd")?;
        ebpf::tc(&mut ebpf, "violin_bench_sink")?;
        ebpf::tc(&mut ebpf, "violin_bench_burst")?;
        let mut rig = Rig {
            ebpf,
            pins,
            source: Source::LiveFrames,
        };
        rig.source = rig.probe()?;
        if rig.source == Source::Bursts {
            eprintln!("    frame source: {}", rig.source.describe());
        }
        Ok(rig)
    }

    /// Which source this kernel allows: one live frame from loopback, which
    /// `violin_bench_fwd` aborts (no wire is laid for it).
    fn probe(&mut self) -> Result<Source> {
        let frame = udp_frame(Station::default(), Station::default(), MIN_FRAME);
        match live_run(self.fwd()?, &frame, 1, 1) {
            Ok(_) => Ok(Source::LiveFrames),
            Err(e) if refused(&e) => Ok(Source::Bursts),
            Err(e) => {
                Err(e.context("BPF_PROG_RUN (a live frame, to see whether the kernel allows them)"))
            }
        }
    }

    /// The source of this rig's figures.
    pub fn source(&self) -> Source {
        self.source
    }

    fn fwd(&mut self) -> Result<&mut Xdp> {
        ebpf::program(&mut self.ebpf, "violin_bench_fwd")
    }

    fn sink(&mut self) -> Result<&mut SchedClassifier> {
        ebpf::program(&mut self.ebpf, "violin_bench_sink")
    }

    /// Frames `from` (an ifindex of namespace `ns`) go on to `to` (an interface of `ns`).
    fn wire(&mut self, ns: &str, from: u32, to: &str) -> Result<()> {
        let to = ifindex_of(ns, to)?;
        let map = self.ebpf.map_mut("BENCH_WIRES").context("no BENCH_WIRES")?;
        let mut wires: DevMapHash<_> = DevMapHash::try_from(map)?;
        // The kernel resolves the target in the namespace of the thread that sets it.
        in_netns(ns, || Ok(wires.insert(from, to, None, 0)?))
    }

    fn counted(&self) -> Result<u64> {
        let map = self.ebpf.map("BENCH_SINK").context("no BENCH_SINK")?;
        let sink: PerCpuArray<_, u64> = PerCpuArray::try_from(map)?;
        Ok(sink.get(&0, 0)?.iter().sum())
    }

    /// Runs `stage` with `frames` frames; returns (Mpps at the sink, CPU ns per frame).
    fn run(&mut self, stage: &Stage, frames: u32) -> Result<(f64, f64)> {
        let (got, elapsed, busy, route) = self.attached(stage, |rig| {
            let before = rig.counted()?;
            let route = trail(stage);
            let busy0 = busy_cpu_ns()?;
            let t0 = Instant::now();
            rig.send(stage, frames)?;
            let elapsed = t0.elapsed().as_secs_f64();
            let busy = busy_cpu_ns()? - busy0;
            // Frames still in flight land within a moment.
            std::thread::sleep(std::time::Duration::from_millis(50));
            Ok((rig.counted()? - before, elapsed, busy, route))
        })?;
        if got == 0 {
            let (sink_ns, sink_if) = &stage.sink;
            bail!(
                "no frame reached the sink on {sink_if} in {sink_ns}; on the way: {}",
                trail_delta(&route, &trail(stage))
            );
        }
        Ok((got as f64 / elapsed / 1e6, busy / got as f64))
    }

    /// Sends `stage`'s frames for `secs` seconds, in runs of `frames`, counting nothing:
    /// for a profile of the stage at work.
    fn flood(&mut self, stage: &Stage, secs: f64, frames: u32) -> Result<()> {
        self.attached(stage, |rig| {
            let t0 = Instant::now();
            while t0.elapsed().as_secs_f64() < secs {
                rig.send(stage, frames)?;
            }
            Ok(())
        })
    }

    /// Attaches the stage's sink and lays its wire, runs `f`, and takes both off again
    /// whatever happened; the first error wins.
    fn attached<T>(&mut self, stage: &Stage, f: impl FnOnce(&mut Rig) -> Result<T>) -> Result<T> {
        let (sink_ns, sink_if) = &stage.sink;
        let sink_link = in_netns(sink_ns, || {
            Ok(self.sink()?.attach(sink_if, TcAttachType::Ingress)?)
        })?;
        let mut wire = None;
        let result = self.lay_wire(stage, &mut wire).and_then(|()| f(self));
        let unwired = match wire {
            Some(id) => self.fwd().and_then(|fwd| Ok(fwd.detach(id)?)),
            None => Ok(()),
        };
        let unsunk = self.sink().and_then(|sink| Ok(sink.detach(sink_link)?));
        let value = result?;
        unwired?;
        unsunk?;
        Ok(value)
    }

    /// Lays the stage's wire, if it has one (its link in `wire`, for the caller to take
    /// off), and points the source at the stage's first interface.
    fn lay_wire(
        &mut self,
        stage: &Stage,
        wire: &mut Option<aya::programs::xdp::XdpLinkId>,
    ) -> Result<()> {
        if let Some((from, to)) = &stage.wire {
            let sw = stage.switch.clone();
            let from_if = ifindex_of(&sw, from)?;
            self.wire(&sw, from_if, to)?;
            let fwd = self.fwd()?;
            *wire = Some(in_netns(&sw, || {
                Ok(fwd.attach_to_if_index(from_if, XdpMode::Driver)?)
            })?);
        }
        let (src_ns, src_if) = &stage.source;
        match self.source {
            // The source's frames "arrive" on the namespace's loopback and go on to src_if.
            Source::LiveFrames => self.wire(src_ns, 1, src_if),
            Source::Bursts => {
                let to = ifindex_of(src_ns, src_if)?;
                let map = self
                    .ebpf
                    .map_mut("BENCH_BURST_TO")
                    .context("no BENCH_BURST_TO")?;
                let mut target: Array<_, u32> = Array::try_from(map)?;
                Ok(target.set(0, to, 0)?)
            }
        }
    }

    /// `frames` of the stage's frames from the in-kernel source.
    fn send(&mut self, stage: &Stage, frames: u32) -> Result<()> {
        match self.source {
            Source::LiveFrames => self.send_live(stage, frames),
            Source::Bursts => self.send_bursts(stage, frames),
        }
    }

    fn send_live(&mut self, stage: &Stage, frames: u32) -> Result<()> {
        let fwd = self.fwd()?;
        in_netns(&stage.source.0, || live_run(fwd, &stage.frame, frames, 64))
            .context("BPF_PROG_RUN (live frames)")
    }

    /// `frames` rounded up to whole bursts, out of the interface `lay_wire` named.
    fn send_bursts(&mut self, stage: &Stage, frames: u32) -> Result<()> {
        let burst: &mut SchedClassifier = ebpf::program(&mut self.ebpf, "violin_bench_burst")?;
        in_netns(&stage.source.0, || {
            let mut opts = TestRunOptions::new();
            opts.data_in = Some(&stage.frame);
            opts.repeat = frames.div_ceil(BENCH_BURST);
            burst.test_run(opts)?;
            Ok(())
        })
        .context("BPF_PROG_RUN (bursts)")
    }
}

/// The interfaces on a stage's route, with the packets each has received, sent and
/// failed to send so far, so that a stage whose frames vanish can say where.
fn trail(stage: &Stage) -> Vec<(String, LinkPackets)> {
    let mut ifs = vec![stage.source.clone()];
    if let Some((from, to)) = &stage.wire {
        ifs.push((stage.switch.clone(), from.clone()));
        ifs.push((stage.switch.clone(), to.clone()));
    }
    ifs.push(stage.sink.clone());
    ifs.iter()
        .map(|(ns, dev)| {
            let counts = link_packets(ns, dev).unwrap_or_default();
            (format!("{ns}/{dev}"), counts)
        })
        .collect()
}

/// What each interface of a trail did between two readings.
fn trail_delta(before: &[(String, LinkPackets)], after: &[(String, LinkPackets)]) -> String {
    before
        .iter()
        .zip(after)
        .map(|((name, b), (_, a))| {
            format!(
                "{name}: rx {} tx {} tx_dropped {}",
                a.rx - b.rx,
                a.tx - b.tx,
                a.tx_dropped - b.tx_dropped
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// How long each stage is profiled, and the frames per source run meanwhile (about a
/// second's worth on the slowest path here, a tenth of one on the fastest).
const PROFILE_SECS: f64 = 2.0;
const PROFILE_FRAMES: u32 = 200_000;

/// Kernel profiles, with flame graphs written to `out`, of each stage of `path` at 64
/// bytes: (what was profiled, with a link to its flame graph; perf's busiest symbols).
pub fn profiles(
    rig: &mut Rig,
    bl: &BenchLab,
    path: NetPath,
    out: &Path,
) -> Result<Vec<(String, String)>> {
    let mtu = bl.lab.spec.mtu;
    let mut found = Vec::new();
    for (stage, s) in stages(bl, path, MIN_FRAME)? {
        let label = STAGES
            .iter()
            .find(|(id, _)| *id == stage)
            .map_or(stage, |(_, label)| *label);
        let svg_name = format!("flame-lr-{stage}-{}-{mtu}.svg", path.slug());
        let title = format!(
            "In-kernel source, {label}, 64-byte frames, {}, MTU {mtu}",
            path.label()
        );
        let dir = bl.lab.dir.join("perf");
        let top = crate::micro::profile(PROFILE_SECS, &dir, &out.join(&svg_name), &title, || {
            rig.flood(&s, PROFILE_SECS, PROFILE_FRAMES)
        })
        .with_context(|| format!("profiling {title}"))?;
        if let Some(top) = top {
            found.push((format!("{title} ([flame graph]({svg_name}))"), top));
        }
    }
    Ok(found)
}

/// The stages of `path` with frames of `size` bytes.
fn stages(bl: &BenchLab, path: NetPath, size: usize) -> Result<Vec<(&'static str, Stage)>> {
    let sw = switch_ns(&bl.lab.spec.name);
    let hosts = bl.hosts(path);
    let (h1, h2) = (&bl.lab.hosts[hosts[0]], &bl.lab.hosts[hosts[1]]);
    let wire = Some((h1.bridge_port.clone(), h2.bridge_port.clone()));
    if path == NetPath::Bare {
        let s1: Station = (mac_of(&h1.ns, "ul0")?, h1.underlay_v4().octets());
        let s2: Station = (mac_of(&h2.ns, "ul0")?, h2.underlay_v4().octets());
        return Ok(vec![(
            "path",
            Stage {
                source: (h1.ns.clone(), "ul0".into()),
                frame: udp_frame(s1, s2, size),
                wire,
                switch: sw,
                sink: (h2.ns.clone(), "ul0".into()),
            },
        )]);
    }
    let (a, b) = (bl.vm(path, 0), bl.vm(path, 1));
    let sa: Station = (a.mac, a.ip.octets());
    let sb: Station = (b.mac, b.ip.octets());
    let inner = udp_frame(sa, sb, size);
    let tunnel = Tunnel {
        src_mac: mac_of(&h1.ns, "ul0")?,
        dst_mac: mac_of(&h2.ns, "ul0")?,
        src_ip: h1.underlay_v4().octets(),
        dst_ip: h2.underlay_v4().octets(),
    };
    Ok(vec![
        (
            "encap",
            Stage {
                source: (a.ns.clone(), "eth0".into()),
                frame: inner.clone(),
                wire: None,
                switch: sw.clone(),
                sink: (sw.clone(), h1.bridge_port.clone()),
            },
        ),
        (
            "decap",
            Stage {
                source: (sw.clone(), h2.bridge_port.clone()),
                frame: vxlan(&tunnel, a.vni, &inner),
                wire: None,
                switch: sw.clone(),
                sink: (b.ns.clone(), "eth0".into()),
            },
        ),
        (
            "path",
            Stage {
                source: (a.ns.clone(), "eth0".into()),
                frame: inner,
                wire,
                switch: sw,
                sink: (b.ns.clone(), "eth0".into()),
            },
        ),
    ])
}

/// Readies the lab for the line-rate figures from `source`, once, after the others. With
/// live frames every VM's host-side port gets a NAPI context (GRO on), as XDP already
/// gives the XDP ports: a veth delivers redirected frames only to a peer that has one.
/// Bursts go through the VM's ordinary transmit, as its own traffic does, and need none.
/// And every host completes its own checksums (transmit offload off on its underlay): the
/// wire between the switch ports passes frames on as they are, where the bridge would
/// have completed a checksum still pending (Linux VXLAN's outer UDP checksum is).
pub fn prepare(bl: &BenchLab, source: Source) -> Result<()> {
    if source == Source::LiveFrames {
        for vm in &bl.lab.vms {
            let host = &bl.lab.hosts[vm.host];
            ns_run(&host.ns, "ethtool", &["-K", &vm.port, "gro", "on"])?;
        }
    }
    for host in &bl.lab.hosts {
        ns_run(&host.ns, "ethtool", &["-K", "ul0", "tx", "off"])?;
    }
    Ok(())
}

/// Every stage of `path` at both sizes: (metric, Mpps or ns per frame).
pub fn measure(
    rig: &mut Rig,
    bl: &BenchLab,
    path: NetPath,
    frames: u32,
) -> Result<Vec<(String, f64)>> {
    let full = ((bl.lab.spec.mtu - 50 + 14) as usize).min(MAX_TEST_FRAME);
    let mut out = Vec::new();
    for (suffix, size) in [("64", MIN_FRAME), ("mtu", full)] {
        // Larger frames come more slowly; fewer of them take as long.
        let n = if size > MIN_FRAME { frames / 4 } else { frames };
        for (stage, s) in stages(bl, path, size)? {
            let (mpps, cpu) = rig
                .run(&s, n)
                .with_context(|| format!("{} {stage} stage, {size}-byte frames", path.label()))?;
            out.push((format!("lr_{stage}_{suffix}"), mpps));
            out.push((format!("lr_{stage}_{suffix}_cpu"), cpu));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use aya::{programs::ProgramError, sys::SyscallError};

    use super::*;

    fn test_run_error(errno: i32) -> anyhow::Error {
        let e = ProgramError::SyscallError(SyscallError {
            call: "bpf_prog_test_run",
            io_error: std::io::Error::from_raw_os_error(errno),
        });
        anyhow::Error::from(e).context("BPF_PROG_RUN")
    }

    #[test]
    fn only_a_refusal_turns_the_source_to_bursts() {
        assert!(refused(&test_run_error(libc::EPERM)));
        // Any other failure is the run's own, and is reported rather than worked around.
        assert!(!refused(&test_run_error(libc::EINVAL)));
        assert!(!refused(&anyhow::anyhow!("no program violin_bench_fwd")));
    }

    /// A namespace of this test's own (`test`, a few letters) with a veth pair `va`-`vb`,
    /// deleted when dropped.
    struct Pair(String);

    impl Pair {
        fn new(test: &str) -> Pair {
            let ns = format!("vl{test}{}", std::process::id());
            let _ = violin_testbed::sys::ip(&["netns", "del", &ns]);
            let pair = Pair(ns);
            let ip = |args: &[&str]| {
                violin_testbed::sys::ip(args).unwrap_or_else(|e| panic!("ip {args:?}: {e:#}"))
            };
            ip(&["netns", "add", &pair.0]);
            // No IPv6 on the links: the kernel's own neighbour and multicast listener
            // messages, sent as a link comes up, would reach the sink beside the bursts.
            violin_testbed::sys::in_netns(&pair.0, || {
                for conf in ["all", "default"] {
                    let knob = format!("/proc/sys/net/ipv6/conf/{conf}/disable_ipv6");
                    std::fs::write(&knob, "1").with_context(|| format!("writing {knob}"))?;
                }
                Ok(())
            })
            .unwrap_or_else(|e| panic!("turning IPv6 off in {}: {e:#}", pair.0));
            ip(&[
                "-n", &pair.0, "link", "add", "va", "type", "veth", "peer", "name", "vb",
            ]);
            ip(&["-n", &pair.0, "link", "set", "va", "up"]);
            ip(&["-n", &pair.0, "link", "set", "vb", "up"]);
            pair
        }

        /// 64-byte frames from `va` to a sink on `vb`, with no wire.
        fn stage(&self) -> Stage {
            let station = |last| ([2, 0, 0, 0, 0, last], [10, 0, 0, last]);
            Stage {
                source: (self.0.clone(), "va".into()),
                frame: udp_frame(station(1), station(2), MIN_FRAME),
                wire: None,
                switch: self.0.clone(),
                sink: (self.0.clone(), "vb".into()),
            }
        }
    }

    impl Drop for Pair {
        fn drop(&mut self) {
            let _ = violin_testbed::sys::ip(&["netns", "del", &self.0]);
        }
    }

    /// The burst source, taken whatever source this kernel allows: every copy of every
    /// burst leaves the source's interface and reaches the sink on its peer.
    #[test]
    fn bursts_reach_the_sink_whole() {
        let pair = Pair::new("burst");
        let mut rig = Rig::load().expect("the bench rig (needs root and the built object)");
        rig.source = Source::Bursts;
        let stage = pair.stage();
        let frames = 10 * BENCH_BURST;
        let counted = rig
            .attached(&stage, |rig| {
                let before = rig.counted()?;
                rig.send(&stage, frames)?;
                std::thread::sleep(std::time::Duration::from_millis(50));
                Ok(rig.counted()? - before)
            })
            .expect("a burst run");
        assert_eq!(counted, u64::from(frames), "frames counted at the sink");
    }

    /// The run-time statistics (`crate::runtime`) as the micro suite takes them: the
    /// program behind a pinned link, found through the pin, is counted once per frame
    /// that reaches it, with time to show for it.
    #[test]
    fn run_time_statistics_count_every_run_of_a_pinned_program() {
        use aya::programs::links::FdLink;

        let pair = Pair::new("stats");
        let mut rig = Rig::load().expect("the bench rig (needs root and the built object)");
        rig.source = Source::Bursts;
        let links = rig.pins.join("links");
        std::fs::create_dir_all(&links).expect("a links directory on bpffs");
        let sink = rig.sink().expect("the sink");
        let id = sink.info().expect("the sink's info").id();
        let link = in_netns(&pair.0, || Ok(sink.attach("vb", TcAttachType::Ingress)?))
            .expect("the sink on vb");
        let link: FdLink = sink
            .take_link(link)
            .expect("the sink's link")
            .try_into()
            .expect("a bpf_link (tcx)");
        // Unpinned, and so detached, when the rig removes its pins.
        link.pin(links.join("tc:vb")).expect("pinning the link");
        let ids = crate::runtime::linked_programs(&links).expect("the pinned programs");
        assert_eq!(ids, [id]);

        let stage = pair.stage();
        let frames = 10 * BENCH_BURST;
        let sampler = crate::runtime::Sampler::start(&ids).expect("statistics on");
        rig.lay_wire(&stage, &mut None)
            .expect("the source aimed at va");
        rig.send(&stage, frames).expect("a burst run");
        std::thread::sleep(std::time::Duration::from_millis(50));
        let runs = sampler.finish().expect("the statistics");
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].count, u64::from(frames), "runs of the sink");
        let per_run = crate::runtime::per_run(&runs, "violin_bench_sink", false);
        assert!(per_run.is_some_and(|ns| ns > 0.0), "{runs:?}");
    }

    #[test]
    fn the_report_says_which_source_made_the_figures() {
        assert!(Source::LiveFrames.describe().contains("live-frames mode"));
        let bursts = Source::Bursts.describe();
        assert!(
            bursts.contains(&format!("{BENCH_BURST} copies")),
            "{bursts}"
        );
        assert!(bursts.contains("refuses live frames"), "{bursts}");
    }

    #[test]
    fn the_source_setting_has_one_key_and_says_when_none_was_used() {
        let (key, value) = source_setting(Some(Source::Bursts));
        assert_eq!(key, "frame source");
        assert_eq!(value, Source::Bursts.describe());
        assert_eq!(source_setting(None).1, "not measured");
    }
}
