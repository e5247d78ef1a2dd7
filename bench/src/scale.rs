//! The control plane at scale: `hostsim`'s simulated hosts (the real sync protocol, no
//! datapath) follow one controller on its embedded store, then a pair of replicas on a
//! 3-member etcd cluster, at 10, 100 and 1000 hosts. Each environment spans ten hosts,
//! one VM each, so a host's share stays the same size as the installation grows. A
//! change of one environment is applied with `violinctl apply` and timed until every
//! host acknowledged it; the controllers' CPU and memory and the sync bytes per host are
//! read alongside.
use std::{
    fmt::Write as _,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use violin_api::{
    client::{Client, Timeouts},
    rest::{Applied, CredentialRequest, Role},
    Name,
};

use violin_testbed::control::LocalController as Controller;

use crate::hostsim::Fleet;

/// Hosts per environment.
pub const PER_ENV: usize = 10;
/// The target: a change acknowledged by 1000 hosts within this.
pub const TARGET_S: f64 = 1.0;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Store {
    /// One controller on its embedded database.
    Redb,
    /// Two controller replicas on a 3-member etcd cluster.
    EtcdPair,
}

impl Store {
    pub const ALL: [Store; 2] = [Store::Redb, Store::EtcdPair];

    pub fn label(self) -> &'static str {
        match self {
            Store::Redb => "one controller (redb)",
            Store::EtcdPair => "two replicas on etcd (3 members)",
        }
    }
}

/// One store at one size.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Point {
    pub store: Store,
    pub hosts: usize,
    /// From `violinctl apply` until the last host acknowledged, per change, seconds.
    pub ack_s: Vec<f64>,
    /// The controllers' CPU per change (user + system, every replica), seconds.
    pub cpu_s_per_change: f64,
    /// The controllers' resident memory after the changes, MiB (every replica).
    pub rss_mib: f64,
    /// Mean bytes of a host's snapshot.
    pub snapshot_bytes: f64,
    /// Mean bytes a change sends a host of the changed environment, and any other host.
    pub delta_bytes_changed: f64,
    pub delta_bytes_other: Option<f64>,
    /// The most environments any host's share held (1: only its own).
    pub max_envs_per_share: usize,
    /// Until every host registered and acknowledged its snapshot, seconds.
    pub join_s: f64,
    /// Connections the hosts made again after an error (all joining at once overflows
    /// the listen queue; they back off as violind does).
    pub reconnects: u32,
}

impl Point {
    pub fn median_ack_s(&self) -> f64 {
        let mut v = self.ack_s.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    }

    pub fn max_ack_s(&self) -> f64 {
        self.ack_s.iter().copied().fold(0.0, f64::max)
    }
}

pub struct Settings {
    pub sizes: Vec<usize>,
    pub reps: usize,
    /// Where violin-controller and violinctl are.
    pub bin: PathBuf,
}

/// Host `i` (from 0): its name and underlay address.
pub fn host(i: usize) -> (String, Ipv4Addr) {
    (
        format!("h{}", i + 1),
        Ipv4Addr::from(0x0a00_0000u32 + i as u32 + 1),
    )
}

/// Environment `e`'s spec: hosts `e*10 .. e*10+9`, a VM each; with `limit`, a bound on
/// its first two VMs (the change the suite makes).
pub fn spec(e: usize, limit: Option<u32>) -> String {
    let mut s = format!("[environment]\nname = \"e{e}\"\nvni = {}\n\n", 1000 + e);
    for i in e * PER_ENV..(e + 1) * PER_ENV {
        let (name, addr) = host(i);
        let _ = write!(s, "[[host]]\nname = \"{name}\"\naddress = \"{addr}\"\n\n");
    }
    for i in e * PER_ENV..(e + 1) * PER_ENV {
        let (name, _) = host(i);
        let _ = write!(
            s,
            "[[vm]]\nname = \"v{}\"\nhost = \"{name}\"\nport = \"vm1\"\nmac = \"02:00:00:{:02x}:{:02x}:01\"\n\n",
            i + 1,
            (i >> 8) & 0xff,
            i & 0xff
        );
    }
    if let Some(mbit) = limit {
        let (a, b) = (e * PER_ENV + 1, e * PER_ENV + 2);
        let _ = write!(
            s,
            "[[limit]]\npair = [\"v{a}\", \"v{b}\"]\nrate_mbit = {mbit}\n"
        );
    }
    s
}

fn start_controller(bin: &Path, dir: &Path, args: &[String]) -> Result<Controller> {
    let mut cmd = Command::new(bin.join("violin-controller"));
    cmd.args(["--listen", "127.0.0.1:0", "--token-file"])
        .arg(dir.join("token"))
        .args(args)
        .env("RUST_LOG", "warn")
        .stderr(Stdio::inherit());
    Controller::start(cmd)
}

/// User + system CPU seconds of `pid`, and its resident memory in MiB.
fn usage(pid: u32) -> Result<(f64, f64)> {
    let cpu = violin_testbed::sys::cpu_seconds(pid)?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let rss_kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    Ok((cpu, rss_kib / 1024.0))
}

fn total_usage(cs: &[Controller]) -> Result<(f64, f64)> {
    let mut sum = (0.0, 0.0);
    for c in cs {
        let (cpu, rss) = usage(c.child.id())?;
        sum.0 += cpu;
        sum.1 += rss;
    }
    Ok(sum)
}

/// Waits until one of the replicas leads.
fn wait_leader(cs: &[Controller]) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        for c in cs {
            let client = Client::new(&c.url, "", Timeouts::default());
            let h: Option<violin_api::rest::Health> = client.get("/healthz").ok();
            if h.and_then(|h| h.replica)
                .is_some_and(|r| r.role == "leader")
            {
                return Ok(());
            }
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("no controller replica leads after 20 s")
}

/// Measures one store at one size.
pub fn point(
    s: &Settings,
    store: Store,
    hosts: usize,
    progress: &mut impl FnMut(&str),
) -> Result<Point> {
    if !hosts.is_multiple_of(PER_ENV) {
        bail!("--hosts: {hosts} is not a multiple of {PER_ENV}");
    }
    let dir = std::env::temp_dir().join(format!("violin-scale-{}-{hosts}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let token = format!("scale-{:016x}-token", std::process::id());
    std::fs::write(dir.join("token"), &token)?;
    let mut _etcd = None;
    let controllers = match store {
        Store::Redb => vec![start_controller(
            &s.bin,
            &dir,
            &[
                "--state".into(),
                dir.join("state.redb").display().to_string(),
            ],
        )?],
        Store::EtcdPair => {
            let cluster = violin_testbed::etcd::Cluster::local(&format!("sc{hosts}"), 3)?;
            let args = [
                "--store".to_string(),
                "etcd".into(),
                "--etcd-endpoints".into(),
                cluster.endpoints(),
            ];
            _etcd = Some(cluster);
            let cs = vec![
                start_controller(&s.bin, &dir, &args)?,
                start_controller(&s.bin, &dir, &args)?,
            ];
            wait_leader(&cs)?;
            cs
        }
    };
    let urls = controllers
        .iter()
        .map(|c| c.url.as_str())
        .collect::<Vec<_>>()
        .join(",");
    let admin = Client::new(&urls, &token, Timeouts::default());
    let envs = hosts / PER_ENV;
    let mut generation = 0;
    for e in 0..envs {
        generation = admin.apply(&format!("e{e}"), &spec(e, None))?.generation;
    }
    // Each host speaks with a credential of its own, as the lab's daemons do: the
    // controller's token would have every acknowledgement audited.
    let mut names = Vec::new();
    for i in 0..hosts {
        let (name, addr) = host(i);
        let issued = admin.create_credential(&CredentialRequest {
            name: Name::parse(&name).map_err(anyhow::Error::msg)?,
            role: Role::Host,
        })?;
        names.push((name, addr, issued.token));
    }
    let started = Instant::now();
    let fleet = Fleet::start(&urls, &names)?;
    fleet.wait_acked(generation, Duration::from_secs(300))?;
    let join_s = started.elapsed().as_secs_f64();
    progress(&format!(
        "{}: {hosts} hosts joined in {join_s:.1} s",
        store.label()
    ));

    let file = dir.join("e0.toml");
    let (cpu0, _) = total_usage(&controllers)?;
    let mut ack_s = Vec::new();
    let mut last = generation;
    for rep in 0..s.reps {
        std::fs::write(&file, spec(0, Some(10 + rep as u32)))?;
        let t0 = Instant::now();
        let out = Command::new(s.bin.join("violinctl"))
            .args(["--url", &urls, "--token-file"])
            .arg(dir.join("token"))
            .args(["-o", "json", "apply"])
            .arg(&file)
            .output()
            .context("running violinctl")?;
        if !out.status.success() {
            bail!("violinctl apply: {}", String::from_utf8_lossy(&out.stderr));
        }
        let applied: Applied = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("violinctl said {}", String::from_utf8_lossy(&out.stdout)))?;
        let done = fleet.wait_acked(applied.generation, Duration::from_secs(60))?;
        let took = done.duration_since(t0).as_secs_f64();
        progress(&format!(
            "{}: {hosts} hosts, change {}: acknowledged by all in {:.0} ms",
            store.label(),
            rep + 1,
            took * 1e3
        ));
        ack_s.push(took);
        last = applied.generation;
    }
    let (cpu1, rss_mib) = total_usage(&controllers)?;
    let logs = fleet.logs();
    let mean = |v: Vec<u64>| v.iter().sum::<u64>() as f64 / v.len().max(1) as f64;
    let snapshot_bytes = mean(
        logs.iter()
            .filter_map(|l| l.acks.first().map(|a| a.2))
            .collect(),
    );
    let in_e0 = |name: &str| (0..PER_ENV).any(|i| host(i).0 == name);
    let delta_bytes_changed = mean(
        logs.iter()
            .filter(|l| in_e0(&l.name))
            .filter_map(|l| l.bytes_for(last))
            .collect(),
    );
    let others: Vec<u64> = logs
        .iter()
        .filter(|l| !in_e0(&l.name))
        .filter_map(|l| l.bytes_for(last))
        .collect();
    // None when every host is in the changed environment.
    let delta_bytes_other = (!others.is_empty()).then(|| mean(others));
    let max_envs_per_share = logs
        .iter()
        .filter_map(|l| l.share.as_ref().map(|s| s.environments.len()))
        .max()
        .unwrap_or(0);
    drop(controllers);
    drop(fleet);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(Point {
        store,
        hosts,
        ack_s,
        cpu_s_per_change: (cpu1 - cpu0) / s.reps as f64,
        rss_mib,
        snapshot_bytes,
        delta_bytes_changed,
        delta_bytes_other,
        max_envs_per_share,
        join_s,
        reconnects: logs.iter().map(|l| l.errors).sum(),
    })
}

#[derive(Serialize, Deserialize)]
pub struct Results {
    pub revision: String,
    pub started: String,
    pub machine: crate::results::Machine,
    /// violin-controller's and violinctl's build (`paths::build`); empty in runs before it.
    #[serde(default)]
    pub binaries: String,
    pub reps: usize,
    pub points: Vec<Point>,
}

/// The report: a table per store, the targets, and what grows how.
pub fn markdown(r: &Results) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Control plane at scale\n");
    let _ = writeln!(
        s,
        "Revision {}, started {}, on {} ({} cores). Simulated hosts speak the real sync protocol \
         (register, snapshot, deltas, acknowledgements) from one process; each environment spans \
         {PER_ENV} hosts with a VM each. A change of one environment (a pair limit) is applied \
         with `violinctl apply` {} times per point and timed until every host acknowledged it. \
         CPU and memory are the controllers' (every replica; etcd's own are not counted). \
         Binaries: {}.\n",
        r.revision, r.started, r.machine.cpu_model, r.machine.cpus, r.reps, r.binaries
    );
    let _ = writeln!(
        s,
        "| store | hosts | ack, median (max) | controller CPU per change | per host | RSS | snapshot per host | change, to its hosts | to the others | envs per share | join (reconnects) |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|---|---|");
    for p in &r.points {
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} ms ({:.0}) | {:.1} ms | {:.1} µs | {:.0} MiB | {:.0} B | {:.0} B | {} | {} | {:.1} s ({}) |",
            p.store.label(),
            p.hosts,
            p.median_ack_s() * 1e3,
            p.max_ack_s() * 1e3,
            p.cpu_s_per_change * 1e3,
            p.cpu_s_per_change * 1e6 / p.hosts as f64,
            p.rss_mib,
            p.snapshot_bytes,
            p.delta_bytes_changed,
            p.delta_bytes_other
                .map_or("-".to_string(), |b| format!("{b:.0} B")),
            p.max_envs_per_share,
            p.join_s,
            p.reconnects
        );
    }
    let _ = writeln!(s, "\n## Targets\n");
    for store in Store::ALL {
        let at = |n: usize| r.points.iter().find(|p| p.store == store && p.hosts == n);
        if let Some(p) = at(1000) {
            let ok = p.max_ack_s() < TARGET_S;
            let _ = writeln!(
                s,
                "- {}: a change acknowledged by 1000 hosts in {:.0} ms at most (target under {:.0} ms): {}",
                store.label(),
                p.max_ack_s() * 1e3,
                TARGET_S * 1e3,
                if ok { "met" } else { "NOT met" }
            );
        }
        if let (Some(a), Some(b)) = (at(100), at(1000)) {
            let per = |p: &Point| p.cpu_s_per_change / p.hosts as f64;
            let ratio = per(b) / per(a);
            let _ = writeln!(
                s,
                "- {}: controller CPU per host per change at 1000 hosts is {ratio:.2}x that at 100 \
                 (linear or better when at most 1, allowing for the tick's resolution): {}",
                store.label(),
                if ratio <= 1.25 { "met" } else { "NOT met" }
            );
        }
        let only_own = r
            .points
            .iter()
            .filter(|p| p.store == store)
            .all(|p| p.max_envs_per_share == 1);
        let _ = writeln!(
            s,
            "- {}: every host received only its own environment: {}",
            store.label(),
            if only_own { "yes" } else { "NO" }
        );
    }
    let _ = writeln!(
        s,
        "\n![acknowledgement time](ack_time.png)\n![controller CPU per change](cpu.png)\n![sync bytes per host](bytes.png)"
    );
    s
}

pub fn write(r: &Results, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("results.json"), serde_json::to_vec_pretty(r)?)?;
    std::fs::write(dir.join("report.md"), markdown(r))?;
    let series = |f: &dyn Fn(&Point) -> f64| -> Vec<(String, Vec<(f64, f64)>)> {
        Store::ALL
            .iter()
            .map(|st| {
                (
                    st.label().to_string(),
                    r.points
                        .iter()
                        .filter(|p| p.store == *st)
                        .map(|p| (p.hosts as f64, f(p)))
                        .collect(),
                )
            })
            .collect()
    };
    crate::plot::lines(
        &dir.join("ack_time.png"),
        "A change acknowledged by every host (max over changes)",
        "ms",
        &series(&|p| p.max_ack_s() * 1e3),
        Some(TARGET_S * 1e3),
    )?;
    crate::plot::lines(
        &dir.join("cpu.png"),
        "Controller CPU per change (every replica)",
        "ms",
        &series(&|p| p.cpu_s_per_change * 1e3),
        None,
    )?;
    let mut bytes = series(&|p| p.snapshot_bytes);
    for (name, _) in bytes.iter_mut() {
        *name = format!("{name}: snapshot");
    }
    bytes.extend(
        series(&|p| p.delta_bytes_changed)
            .into_iter()
            .map(|(n, v)| (format!("{n}: a change to its env"), v)),
    );
    crate::plot::lines(
        &dir.join("bytes.png"),
        "Sync bytes per host",
        "bytes",
        &bytes,
        None,
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The suite at a small size on both stores, with the debug build's binaries: every
    /// simulated host joins, follows each change, and gets only its own environment;
    /// a change reaches the changed environment's hosts as its new state and the others
    /// as a bare generation.
    #[test]
    fn simulated_hosts_follow_both_stores_and_get_only_their_share() {
        let bin = violin_testbed::bin_path("violin-controller");
        assert!(
            bin.exists(),
            "{} is missing: `cargo xtask test` builds it first",
            bin.display()
        );
        let s = Settings {
            sizes: vec![20],
            reps: 2,
            bin: bin.parent().unwrap().to_path_buf(),
        };
        for store in Store::ALL {
            let p = point(&s, store, 20, &mut |_| {}).unwrap();
            assert_eq!(p.ack_s.len(), 2);
            assert!(p.ack_s.iter().all(|t| *t > 0.0 && *t < 30.0), "{p:?}");
            assert_eq!(p.max_envs_per_share, 1, "{p:?}");
            let other = p
                .delta_bytes_other
                .expect("hosts outside the changed environment");
            assert!(p.delta_bytes_changed > other, "{p:?}");
            assert!(p.snapshot_bytes > other, "{p:?}");
            assert!(p.rss_mib > 0.0, "{p:?}");
        }
    }

    #[test]
    fn every_environment_spans_its_own_ten_hosts() {
        let a = spec(0, None);
        let b = spec(99, Some(10));
        assert!(
            a.contains("name = \"h1\"") && a.contains("name = \"h10\"") && !a.contains("\"h11\"")
        );
        assert!(b.contains("name = \"h991\"") && b.contains("name = \"h1000\""));
        assert!(b.contains("pair = [\"v991\", \"v992\"]"));
        assert_eq!(host(999).1, Ipv4Addr::new(10, 0, 3, 232));
        // Every MAC differs.
        let macs: std::collections::BTreeSet<String> = (0..100)
            .flat_map(|e| {
                spec(e, None)
                    .lines()
                    .filter(|l| l.starts_with("mac"))
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(macs.len(), 1000);
    }
}
