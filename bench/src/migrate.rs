//! The `migrate` suite: a running guest live-migrates back and forth between two hosts
//! while a guest on a third host sends it a ping every millisecond, over Violin (the
//! controller re-points the guest's MAC on its resume event) and over a Linux bridge +
//! VXLAN path that relies on the guest's announcement (QEMU's RARP after resuming), the
//! same guests and libvirt on both.
//!
//! Per migration: libvirt's total time and downtime (the destination's completed job),
//! and the network's reconvergence, from the destination's "resumed" event (`virsh event
//! --timestamp`, millisecond resolution) until (a) the first frame for the guest reaches
//! its new host from another host, and (b) the guest's first answer to the prober leaves
//! its new host (so a frame from the prober reached the guest before it). Both are taken on the underlay
//! switch (tcpdump on the host's switch port, nanosecond timestamps), so the two paths
//! are timed alike. Violin also records its control plane's figure (the resume until the
//! last host acknowledged the new location) and pings unanswered per migration.
use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use violin_api::vm::{Migration, MigrationPhase};
use violin_testbed::{
    control::vm_name,
    lab::{switch_ns, Lab, LabSpec, NemoRounds, Vm, VmKind},
    libvirt::{probe_report, virsh, ProbeReport},
    sys::ns_command,
};

use crate::results::{Better, Metric, NetPath, Sample};

/// The paths compared: Violin and the Linux bridge + VXLAN baseline.
pub const PATHS: [NetPath; 2] = [NetPath::Violin, NetPath::LinuxVxlan];
/// Underlay MTU of the runs (migration does not depend on it).
pub const MTU: u32 = 1500;

pub fn metrics() -> Vec<Metric> {
    let m = |id: &str, title: &str, unit: &str| Metric {
        id: id.into(),
        title: title.into(),
        unit: unit.into(),
        better: Better::Lower,
    };
    vec![
        m(
            "reconverge_in_ms",
            "Reconvergence: resume to the first frame for the guest at its new host",
            "ms",
        ),
        m(
            "reconverge_out_ms",
            "Reconvergence: resume to the guest's first frame out of its new host",
            "ms",
        ),
        m("downtime_ms", "Guest downtime (libvirt)", "ms"),
        m("total_s", "Total migration time (libvirt)", "s"),
        m(
            "pings_lost",
            "Pings (1 ms apart) unanswered per migration",
            "pings",
        ),
        m(
            "control_ms",
            "Violin's control plane: resume to the last host re-pointed",
            "ms",
        ),
        m(
            "nemo_round_s",
            "NEMO3D stand-in (3 ranks, one per guest): a round without migration",
            "s",
        ),
        m(
            "nemo_migrated_round_s",
            "NEMO3D stand-in: a round during which the whole environment migrated",
            "s",
        ),
        m(
            "nemo_penalty_s",
            "Application penalty of migrating the whole running environment",
            "s",
        ),
    ]
}

/// The stand-in's rounds in the guests: long enough under TCG for a migration midway.
const ROUNDS: NemoRounds = NemoRounds {
    iters: 240,
    halo: 16 << 10,
    work: 4,
};

/// What the guests run: the prober's pings, or the NEMO3D stand-in's rounds.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Workload {
    Probe,
    Nemo,
}

/// One path's lab: three hosts with a guest each. With the probe, the first host's guest
/// pings the second's; with the stand-in, the three guests are its ranks.
fn lab_for(path: NetPath, workload: Workload) -> Result<Lab> {
    let name = match path {
        NetPath::Violin => "bmv",
        _ => "bml",
    };
    let mut spec = LabSpec::new(name, crate::paths::violind()?);
    spec.vm_kind = VmKind::Qemu;
    spec.vms_per_host = 1;
    match workload {
        Workload::Probe => {
            spec.probes = true;
            spec.probe_interval_ms = Some(1);
        }
        Workload::Nemo => spec.nemo = Some(ROUNDS),
    }
    spec.mtu = MTU;
    if path == NetPath::Violin {
        spec.hosts = 3;
        spec.controller = true;
    } else {
        spec.hosts = 0;
        spec.linux_vxlan_hosts = 3;
    }
    let lab = Lab::up(spec, true)?;
    if path == NetPath::Violin {
        lab.apply_environments()?;
    }
    Ok(lab)
}

/// A background process that is stopped (SIGINT, so tcpdump flushes) when dropped.
struct Background(Child);

impl Drop for Background {
    fn drop(&mut self) {
        // SAFETY: kill(2) takes only integers and accesses no memory of this process; the
        // pid is that of the child this value owns and has not waited for yet.
        unsafe { libc::kill(self.0.id() as i32, libc::SIGINT) };
        let _ = self.0.wait();
    }
}

/// Stops the background recorders; the files they wrote, by host.
fn stop(recorders: Vec<(usize, PathBuf, Background)>) -> Vec<(usize, PathBuf)> {
    recorders.into_iter().map(|(i, f, _)| (i, f)).collect()
}

/// tcpdump on the switch port of every host: VXLAN frames both ways, nanosecond stamps.
fn capture(lab: &Lab, dir: &Path) -> Result<Vec<(usize, PathBuf, Background)>> {
    let sw = switch_ns(&lab.spec.name);
    let mut out = Vec::new();
    for h in &lab.hosts {
        let file = dir.join(format!("{}.pcap", h.bridge_port));
        let child = ns_command(
            &sw,
            "tcpdump",
            &[
                "-i",
                &h.bridge_port,
                "-nn",
                "-U",
                "-s",
                "128",
                "--time-stamp-precision=nano",
                "-w",
                &file.to_string_lossy(),
                "udp",
                "port",
                "4789",
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("starting tcpdump (cargo xtask setup installs it)")?;
        out.push((h.index, file, Background(child)));
    }
    // tcpdump needs a moment to open its socket.
    thread::sleep(Duration::from_millis(500));
    Ok(out)
}

/// `virsh event --loop --timestamp` on every host's libvirt, into a file each.
fn events(lab: &Lab, dir: &Path) -> Result<Vec<(usize, PathBuf, Background)>> {
    let mut out = Vec::new();
    for h in &lab.hosts {
        let file = dir.join(format!("{}.events", h.bridge_port));
        let log = fs::File::create(&file)?;
        let child = std::process::Command::new("virsh")
            .args(["-c", &lab.libvirt_uri(h.index)?])
            .args(["event", "--loop", "--timestamp", "--event", "lifecycle"])
            .stdout(log)
            .stderr(Stdio::null())
            .spawn()
            .context("starting virsh event")?;
        out.push((h.index, file, Background(child)));
    }
    Ok(out)
}

/// A VXLAN frame seen on a host's switch port.
#[derive(Clone, Copy, Debug)]
struct Frame {
    at_ns: u64,
    inner_dst: [u8; 6],
    inner_src: [u8; 6],
}

/// The VXLAN frames of a pcap file (nanosecond format, Ethernet); other frames skipped.
fn frames(pcap: &[u8]) -> Vec<Frame> {
    let mut out = Vec::new();
    if pcap.len() < 24 || pcap[..4] != [0x4d, 0x3c, 0xb2, 0xa1] {
        return out;
    }
    let u32_at = |b: &[u8], i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
    let mut i = 24;
    while i + 16 <= pcap.len() {
        let (sec, nsec, caplen) = (
            u32_at(pcap, i) as u64,
            u32_at(pcap, i + 4) as u64,
            u32_at(pcap, i + 8) as usize,
        );
        let Some(data) = pcap.get(i + 16..i + 16 + caplen) else {
            break;
        };
        i += 16 + caplen;
        // Ethernet (14) + IPv4 without options (20) + UDP (8) + VXLAN (8), then the inner
        // Ethernet header.
        let inner = 14 + 20 + 8 + 8;
        if data.len() < inner + 12 || data[12..14] != [0x08, 0x00] || data[14] != 0x45 {
            continue;
        }
        let mac = |at: usize| -> [u8; 6] { data[at..at + 6].try_into().expect("six bytes") };
        out.push(Frame {
            at_ns: sec * 1_000_000_000 + nsec,
            inner_dst: mac(inner),
            inner_src: mac(inner + 6),
        });
    }
    out
}

/// "YYYY-MM-DD HH:MM:SS.mmm+0000: event 'lifecycle' for domain 'NAME': Resumed ..." ->
/// (unix ns, domain, what).
fn event_line(line: &str) -> Option<(u64, String, String)> {
    let (stamp, rest) = line.split_once(": event 'lifecycle' for domain '")?;
    let (domain, what) = rest.split_once("': ")?;
    let (date, time) = stamp.split_once(' ')?;
    let time = time.strip_suffix("+0000")?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, dd) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let mut t = hms.split(':').map(|x| x.parse::<i64>());
    let (hh, mm, ss) = (t.next()?.ok()?, t.next()?.ok()?, t.next()?.ok()?);
    let ms: i64 = format!("{frac:0<3}")[..3].parse().ok()?;
    let days = days_from_civil(y, m, dd);
    let secs = days * 86400 + hh * 3600 + mm * 60 + ss;
    Some((
        (secs * 1000 + ms) as u64 * 1_000_000,
        domain.to_string(),
        what.trim().to_string(),
    ))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

/// One migration as the suite saw it.
struct Move {
    dest: usize,
    started_ns: u64,
    total_s: Option<f64>,
    downtime_ms: Option<f64>,
    control_ms: Option<f64>,
    pings_lost: u64,
}

fn unix_ns() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

fn probe(prober: &Vm) -> Result<ProbeReport> {
    let console = &prober.guest.as_ref().context("a guest")?.console;
    probe_report(console).with_context(|| format!("no probe report on {}", console.display()))
}

/// Waits until the prober's TCP session carries traffic.
fn wait_probe(prober: &Vm) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        if let Ok(r) = probe(prober) {
            if let Some(e) = r.tcp_error {
                bail!("the probe's TCP session broke: {e}");
            }
            if r.tcp_echoed > 100 {
                return Ok(());
            }
        }
        if Instant::now() > deadline {
            bail!("the probe got no echoes within 90 s");
        }
        thread::sleep(Duration::from_millis(200));
    }
}

/// "Key: 123 ms" of `virsh domjobinfo --completed`.
fn job_ms(info: &str, key: &str) -> Option<f64> {
    info.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.trim_start_matches([':', ' ']).split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Moves `vm` to host `dest`: through the controller on Violin, with virsh (libvirt
/// alone) on the baseline.
fn migrate(lab: &Lab, path: NetPath, vm: &str, from: usize, dest: usize) -> Result<Move> {
    let started_ns = unix_ns();
    let to = lab.hosts[dest].host_id();
    let mut m = Move {
        dest,
        started_ns,
        total_s: None,
        downtime_ms: None,
        control_ms: None,
        pings_lost: 0,
    };
    if path == NetPath::Violin {
        lab.violinctl(&["migrate", vm, "--to", to])?;
        let all: Vec<Migration> = lab.violinctl_as(&["migrations"])?;
        let last = all.last().context("no migration recorded")?;
        if last.phase != MigrationPhase::Completed {
            bail!("migration {} did not complete: {last:?}", last.id);
        }
        m.total_s = last.total_seconds;
        m.downtime_ms = last.downtime_seconds.map(|s| s * 1e3);
        m.control_ms = last.reconvergence_seconds.map(|s| s * 1e3);
    } else {
        lab.virsh_migrate(vm, from, dest)?;
        let info = virsh(&lab.libvirt_uri(dest)?, &["domjobinfo", vm, "--completed"])?;
        m.total_s = job_ms(&info, "Time elapsed").map(|ms| ms / 1e3);
        m.downtime_ms = job_ms(&info, "Total downtime");
    }
    Ok(m)
}

/// The first frame at or after `t` on `frames` that `pick` accepts, as ms after `t`.
fn first_after(frames: &[Frame], t: u64, pick: impl Fn(&Frame) -> bool) -> Option<f64> {
    frames
        .iter()
        .filter(|f| f.at_ns >= t && pick(f))
        .map(|f| (f.at_ns - t) as f64 / 1e6)
        .reduce(f64::min)
}

/// Runs `reps` round trips (two migrations each) of one path's guest.
pub fn run_path(
    path: NetPath,
    reps: usize,
    work: &Path,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Sample>> {
    let lab = lab_for(path, Workload::Probe)?;
    let guest_on = |host: usize| {
        lab.vms
            .iter()
            .find(|v| v.host == host)
            .cloned()
            .with_context(|| format!("no guest on host {}", host + 1))
    };
    let (prober, mover) = (guest_on(0)?, guest_on(1)?);
    let name = vm_name(&mover);
    wait_probe(&prober)?;
    progress(&format!("{}: guests up, probe running", path.label()));
    let dir = work.join(lab.spec.name.clone());
    fs::create_dir_all(&dir)?;
    let captures = capture(&lab, &dir)?;
    let watchers = events(&lab, &dir)?;
    let mut moves = Vec::new();
    let mut at = 1;
    for rep in 0..reps {
        for dest in [2, 1] {
            let before = probe(&prober)?;
            let mut m = migrate(&lab, path, &name, at, dest)?;
            at = dest;
            // The probe reports every 500 ms: wait for two reports past the move.
            thread::sleep(Duration::from_millis(1200));
            let after = probe(&prober)?;
            if let Some(e) = after.tcp_error {
                bail!(
                    "{}: the TCP session into the guest broke: {e}",
                    path.label()
                );
            }
            m.pings_lost = (after.ping_sent - before.ping_sent)
                .saturating_sub(after.ping_received - before.ping_received);
            progress(&format!(
                "{} rep {rep}: to {} in {:.2} s, downtime {:.0} ms, {} pings lost",
                path.label(),
                lab.hosts[dest].host_id(),
                m.total_s.unwrap_or(f64::NAN),
                m.downtime_ms.unwrap_or(f64::NAN),
                m.pings_lost
            ));
            moves.push(m);
        }
    }
    thread::sleep(Duration::from_millis(500));
    let capture_files = stop(captures);
    let event_files = stop(watchers);
    let samples = analyse(
        path,
        (&prober, &mover),
        &moves,
        &capture_files,
        &event_files,
    )?;
    lab.down()?;
    Ok(samples)
}

fn analyse(
    path: NetPath,
    (prober, mover): (&Vm, &Vm),
    moves: &[Move],
    captures: &[(usize, PathBuf)],
    events: &[(usize, PathBuf)],
) -> Result<Vec<Sample>> {
    let name = vm_name(mover);
    let frames: BTreeMap<usize, Vec<Frame>> = captures
        .iter()
        .map(|(i, f)| Ok((*i, self::frames(&fs::read(f)?))))
        .collect::<Result<_>>()?;
    let resumed: BTreeMap<usize, Vec<u64>> = events
        .iter()
        .map(|(i, f)| {
            let text = fs::read_to_string(f)?;
            let times = text
                .lines()
                .filter_map(event_line)
                .filter(|(_, d, what)| *d == name && what.starts_with("Resumed"))
                .map(|(t, _, _)| t)
                .collect();
            Ok((*i, times))
        })
        .collect::<Result<_>>()?;
    let mut samples = Vec::new();
    for (rep, m) in moves.iter().enumerate() {
        let mut push = |metric: &str, value: Option<f64>| {
            if let Some(value) = value {
                samples.push(Sample {
                    metric: metric.into(),
                    mtu: MTU,
                    path,
                    rep,
                    value,
                });
            }
        };
        let resume = resumed
            .get(&m.dest)
            .and_then(|ts| ts.iter().copied().find(|&t| t >= m.started_ns));
        let at_dest = frames.get(&m.dest).map(Vec::as_slice).unwrap_or_default();
        let (inbound, outbound) = match resume {
            Some(t) => (
                first_after(at_dest, t, |f| f.inner_dst == mover.mac),
                // Its answer to the prober: unicast, unlike QEMU's announcement.
                first_after(at_dest, t, |f| {
                    f.inner_src == mover.mac && f.inner_dst == prober.mac
                }),
            ),
            None => (None, None),
        };
        push("reconverge_in_ms", inbound);
        push("reconverge_out_ms", outbound);
        push("downtime_ms", m.downtime_ms);
        push("total_s", m.total_s);
        push("pings_lost", Some(m.pings_lost as f64));
        push("control_ms", m.control_ms);
    }
    Ok(samples)
}

/// Rank 0's round reports so far (`VIOLIN-NEMO {json}` on its console): their times.
fn rounds(rank0: &Vm) -> Vec<f64> {
    let Some(g) = &rank0.guest else {
        return Vec::new();
    };
    fs::read_to_string(&g.console)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.split_once("VIOLIN-NEMO ").map(|x| x.1))
        .filter_map(|j| serde_json::from_str::<bench::reports::Nemo>(j.trim()).ok())
        .map(|n| n.secs)
        .collect()
}

/// Waits for rank 0's next round report after the `seen` first; its time.
fn next_round(rank0: &Vm, seen: usize) -> Result<f64> {
    let deadline = Instant::now() + Duration::from_secs(300);
    loop {
        if let Some(&t) = rounds(rank0).get(seen) {
            return Ok(t);
        }
        if Instant::now() > deadline {
            bail!("violin-nemo reported no round within 300 s");
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// Moves every guest to the next host (host i's to host i + 1), all at once: through the
/// controller on Violin, with concurrent virsh migrations on the baseline.
fn migrate_all(lab: &Lab, path: NetPath, at: &mut [usize]) -> Result<()> {
    let n = lab.hosts.len();
    let names: Vec<String> = lab.vms.iter().map(vm_name).collect();
    let next: Vec<usize> = at.iter().map(|h| (h + 1) % n).collect();
    if path == NetPath::Violin {
        let mut args = vec!["migrate", "--env", "env0", "--to"];
        // The controller hands the environment's VMs, by name, to the hosts in turn.
        let mut order: Vec<usize> = (0..names.len()).collect();
        order.sort_by(|a, b| names[*a].cmp(&names[*b]));
        let to: Vec<&str> = order
            .iter()
            .map(|&i| lab.hosts[next[i]].host_id())
            .collect();
        args.extend(to);
        lab.violinctl(&args)?;
    } else {
        thread::scope(|scope| {
            let jobs: Vec<_> = (0..names.len())
                .map(|i| {
                    let (name, from, to) = (&names[i], at[i], next[i]);
                    scope.spawn(move || lab.virsh_migrate(name, from, to))
                })
                .collect();
            jobs.into_iter().try_for_each(|j| {
                j.join()
                    .map_err(|_| anyhow::anyhow!("a migration thread panicked"))?
                    .map(|_| ())
            })
        })?;
    }
    at.copy_from_slice(&next);
    Ok(())
}

/// The application penalty (thesis, fig. 6.3): the stand-in's round time with the whole
/// environment migrating midway, against its rounds without.
pub fn run_penalty(
    path: NetPath,
    reps: usize,
    progress: &mut dyn FnMut(&str),
) -> Result<Vec<Sample>> {
    let lab = lab_for(path, Workload::Nemo)?;
    let rank0 = lab.vms.first().context("a guest")?.clone();
    // The first round pays for connecting; the clock starts with the second.
    next_round(&rank0, 0)?;
    let mut at: Vec<usize> = lab.vms.iter().map(|v| v.host).collect();
    let mut samples = Vec::new();
    for rep in 0..reps {
        let seen = rounds(&rank0).len();
        let base = next_round(&rank0, seen)?;
        // The next round starts a second after this report: migrate in its middle.
        thread::sleep(Duration::from_secs_f64(1.0 + base / 2.0));
        migrate_all(&lab, path, &mut at)?;
        let moved = next_round(&rank0, seen + 1)?;
        progress(&format!(
            "{} rep {rep}: round {base:.1} s, with the whole environment migrating {moved:.1} s",
            path.label()
        ));
        for (metric, value) in [
            ("nemo_round_s", base),
            ("nemo_migrated_round_s", moved),
            ("nemo_penalty_s", moved - base),
        ] {
            samples.push(Sample {
                metric: metric.into(),
                mtu: MTU,
                path,
                rep,
                value,
            });
        }
    }
    lab.down()?;
    Ok(samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn virsh_event_lines_read_as_unix_time() {
        let (t, d, what) = event_line(
            "2026-12-02 00:40:01.123+0000: event 'lifecycle' for domain 'bmv-h2v1': Resumed Migrated",
        )
        .unwrap();
        assert_eq!(t, 1_796_172_001_123_000_000);
        assert_eq!(d, "bmv-h2v1");
        assert_eq!(what, "Resumed Migrated");
        assert!(event_line("event 'lifecycle' for domain").is_none());
    }

    #[test]
    fn vxlan_frames_come_out_of_a_pcap() {
        let mut pcap = vec![0x4d, 0x3c, 0xb2, 0xa1];
        pcap.extend_from_slice(&[0; 20]);
        let mut frame = vec![0u8; 14 + 20 + 8 + 8 + 14];
        frame[12] = 0x08;
        frame[14] = 0x45;
        frame[50..56].copy_from_slice(&[2, 0, 0, 0, 2, 1]);
        frame[56..62].copy_from_slice(&[2, 0, 0, 0, 1, 1]);
        for w in [7u32, 9, frame.len() as u32, frame.len() as u32] {
            pcap.extend_from_slice(&w.to_le_bytes());
        }
        pcap.extend_from_slice(&frame);
        let f = frames(&pcap);
        assert_eq!(f.len(), 1);
        assert_eq!(f[0].at_ns, 7_000_000_009);
        assert_eq!(f[0].inner_dst, [2, 0, 0, 0, 2, 1]);
        assert_eq!(f[0].inner_src, [2, 0, 0, 0, 1, 1]);
        assert_eq!(
            first_after(&f, 7_000_000_000, |x| x.inner_src[5] == 1),
            Some(9e-6)
        );
    }

    #[test]
    fn job_info_figures() {
        let info = "Job type:         Completed\nTime elapsed:     812          ms\nTotal downtime:   143          ms\n";
        assert_eq!(job_ms(info, "Time elapsed"), Some(812.0));
        assert_eq!(job_ms(info, "Total downtime"), Some(143.0));
    }
}
