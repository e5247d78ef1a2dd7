//! A Slurm cluster in the lab (facts in shared MPI.md): one munged for the cluster, its
//! slurmctld in a head VM's namespace and a slurmd in each node VM's namespace, so that
//! the scheduler and its nodes talk over the Violin overlay. Every daemon's state, spool
//! and log are in the cluster's directory; every command points at its `slurm.conf`.
//!
//! A cluster may declare a pool of nodes for VioCluster's borrowed machines: they are down
//! until a VM of the pool boots on a lent host and its slurmd registers. Jobs go to every
//! partition (`all_partitions`), own nodes and borrowed, and Slurm runs each in one of
//! them, so that no job mixes the two (the thesis's prototype did not either).
use std::{
    fmt::Write as _,
    fs,
    net::Ipv4Addr,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Stdio},
    time::Duration,
};

use anyhow::{Context, Result};

use crate::sys::{ns_command, ns_run, run};

/// A machine of the cluster: the VM namespace it runs in, its overlay address, its name.
#[derive(Clone, Debug)]
pub struct Machine {
    pub ns: String,
    pub ip: Ipv4Addr,
    pub name: String,
}

pub struct Cluster {
    pub dir: PathBuf,
    pub conf: PathBuf,
    pub head: Machine,
    children: Vec<Child>,
}

fn munge_user() -> Result<()> {
    run("id", &["munge"])
        .map(|_| ())
        .context("the munge user is missing: install munge (`cargo xtask setup`)")
}

impl Cluster {
    /// Starts the cluster `name` in `dir` (created afresh): munged, slurmctld on `head`,
    /// a slurmd on each of `nodes`, and `pool` declared (its machines' `ns` unused);
    /// returns once every node answers idle. The head's name is the machine's hostname:
    /// slurmctld checks it (namespaces share it).
    pub fn start(
        dir: &Path,
        name: &str,
        head: Machine,
        nodes: &[Machine],
        pool: &[Machine],
    ) -> Result<Cluster> {
        munge_user()?;
        let _ = fs::remove_dir_all(dir);
        for sub in ["munge", "state", "spool"] {
            fs::create_dir_all(dir.join(sub))?;
        }
        let dir = dir.canonicalize()?;
        let munge = dir.join("munge");
        let key = munge.join("munge.key");
        let mut bytes = [0u8; 1024];
        fs::File::open("/dev/urandom")
            .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
            .context("reading /dev/urandom")?;
        fs::write(&key, bytes)?;
        fs::set_permissions(&key, fs::Permissions::from_mode(0o400))?;
        fs::set_permissions(&munge, fs::Permissions::from_mode(0o711))?;
        run("chown", &["-R", "munge:munge", &munge.to_string_lossy()])?;
        // munged wants its socket directory searchable by all and writable by none but it.
        let socket = munge.join("munge.sock");
        let mut cluster = Cluster {
            conf: dir.join("slurm.conf"),
            dir: dir.clone(),
            head: head.clone(),
            children: Vec::new(),
        };
        run(
            "runuser",
            &[
                "-u",
                "munge",
                "--",
                "munged",
                &format!("--key-file={}", key.display()),
                &format!("--socket={}", socket.display()),
                &format!("--pid-file={}", munge.join("munged.pid").display()),
                &format!("--log-file={}", munge.join("munged.log").display()),
                &format!("--seed-file={}", munge.join("munged.seed").display()),
            ],
        )
        .context("starting munged")?;
        let mut conf = String::new();
        let d = dir.display();
        let _ = writeln!(
            conf,
            "ClusterName={name}\nSlurmctldHost={}({})\nSlurmUser=root\n\
             AuthType=auth/munge\nAuthInfo=socket={}\nCredType=cred/munge\n\
             ProctrackType=proctrack/linuxproc\nTaskPlugin=task/none\nMpiDefault=none\n\
             SchedulerType=sched/backfill\nSelectType=select/linear\nReturnToService=1\n\
             StateSaveLocation={d}/state\nSlurmdSpoolDir={d}/spool/%n\n\
             SlurmctldPidFile={d}/slurmctld.pid\nSlurmdPidFile={d}/slurmd-%n.pid\n\
             SlurmctldLogFile={d}/slurmctld.log\nSlurmdLogFile={d}/slurmd-%n.log\n\
             SlurmctldTimeout=10\nSlurmdTimeout=10\nMessageTimeout=5",
            head.name,
            head.ip,
            socket.display()
        );
        for n in nodes {
            let _ = writeln!(
                conf,
                "NodeName={} NodeAddr={} CPUs=1 State=UNKNOWN",
                n.name, n.ip
            );
        }
        let list = |ms: &[Machine]| {
            ms.iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(",")
        };
        if pool.is_empty() {
            let _ = writeln!(
                conf,
                "PartitionName=main Nodes=ALL Default=YES MaxTime=INFINITE State=UP"
            );
        } else {
            for p in pool {
                let _ = writeln!(
                    conf,
                    "NodeName={} NodeAddr={} CPUs=1 State=DOWN Reason=not_lent",
                    p.name, p.ip
                );
            }
            let _ = writeln!(
                conf,
                "JobSubmitPlugins=all_partitions\n\
                 PartitionName=own Nodes={} Default=YES MaxTime=INFINITE State=UP\n\
                 PartitionName=borrowed Nodes={} MaxTime=INFINITE State=UP",
                list(nodes),
                list(pool)
            );
        }
        fs::write(&cluster.conf, conf)?;
        // A node's "boot": its slurmd, with the cgroups it initialises its plugin on
        // whatever it tracks processes with (`ip netns exec` hides them). VioCluster's
        // provisioner boots borrowed machines with it too.
        fs::write(
            cluster.boot_script(),
            format!(
                "{}\nexec slurmd -D -N \"$1\"\n",
                crate::sys::REMOUNT_CGROUPS
            ),
        )?;
        let spawn = |ns: &str, program: &str, args: &[&str], log: &Path| -> Result<Child> {
            let out = fs::File::create(log)?;
            ns_command(ns, program, args)
                .env("SLURM_CONF", &cluster.conf)
                .env("CGROUPS", SLURMD_CGROUPS)
                .stdin(Stdio::null())
                .stdout(out.try_clone()?)
                .stderr(out)
                .spawn()
                .with_context(|| format!("starting {program} in {ns}"))
        };
        let ctld = spawn(
            &head.ns,
            "slurmctld",
            &["-D", "-i"],
            &dir.join("slurmctld.out"),
        )?;
        cluster.children.push(ctld);
        for n in nodes {
            fs::create_dir_all(dir.join("spool").join(&n.name))?;
            let out = dir.join(format!("slurmd-{}.out", n.name));
            let boot = cluster.boot_script();
            let boot = boot.to_string_lossy();
            let args = ["-m", "--propagation", "private", "sh", &boot, &n.name];
            let child = spawn(&n.ns, "unshare", &args, &out)?;
            cluster.children.push(child);
        }
        crate::poll::until(
            Duration::from_secs(60),
            Duration::from_millis(500),
            "every slurmd registered and idle",
            || {
                let out = cluster.command("sinfo", &["-h", "-N", "-o", "%N %t"])?;
                let idle = nodes
                    .iter()
                    .filter(|n| out.lines().any(|l| l == format!("{} idle", n.name)))
                    .count();
                Ok((idle == nodes.len()).then_some(()))
            },
        )
        .with_context(|| cluster.logs())?;
        Ok(cluster)
    }

    /// `sh BOOT NODE` runs NODE's slurmd (under `unshare -m`, with `SLURM_CONF` and
    /// `CGROUPS` set).
    pub fn boot_script(&self) -> PathBuf {
        self.dir.join("boot-slurmd.sh")
    }

    /// A Slurm command (sinfo, squeue, srun, sbatch, scontrol) run on the head node.
    pub fn command(&self, program: &str, args: &[&str]) -> Result<String> {
        let conf = format!("SLURM_CONF={}", self.conf.display());
        let mut argv: Vec<&str> = vec![conf.as_str(), program];
        argv.extend_from_slice(args);
        ns_run(&self.head.ns, "env", &argv)
    }

    /// The daemons' logs, for a failure's message.
    pub fn logs(&self) -> String {
        let mut s = String::new();
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for e in entries.flatten() {
                let p = e.path();
                if p.extension().is_some_and(|x| x == "log" || x == "out") {
                    let _ = writeln!(
                        s,
                        "--- {}\n{}",
                        p.display(),
                        fs::read_to_string(&p).unwrap_or_default()
                    );
                }
            }
        }
        s
    }
}

/// The cgroup v1 controllers slurmd wants back (the extended regex `CGROUPS` of
/// `sys::REMOUNT_CGROUPS`).
pub const SLURMD_CGROUPS: &str = "cpu|cpuacct|cpuset|memory|devices|freezer|name=systemd";

impl Drop for Cluster {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        kill_daemons(&self.dir);
    }
}

/// Stops what a cluster directory's pid files name (munged, and slurmds that a
/// provisioner booted outside the cluster's own children), also after a crash.
pub fn kill_daemons(dir: &Path) {
    let mut files = vec![dir.join("munge/munged.pid")];
    if let Ok(rd) = fs::read_dir(dir) {
        files.extend(
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "pid")),
        );
    }
    for f in files {
        let Ok(pid) = fs::read_to_string(&f) else {
            continue;
        };
        let pid = pid.trim();
        // A pid file outlives its daemon; its number may be another process's by now.
        let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
        if ["slurmd", "slurmctld", "munged"].contains(&comm.trim()) {
            let _ = run("kill", &["-9", pid]);
        }
    }
}
