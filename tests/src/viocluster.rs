//! VioCluster in the lab: a Slurm cluster per domain, each an environment of its own
//! (its head node's slurmctld, and a slurmd on a VM of every host of the domain, the
//! domain's "physical machines"), and the controller's machine brokers configured over
//! them, with a provisioner that boots a borrowed machine's VM as a namespace VM on the
//! lent host. Host i is in domain `d{i mod domains + 1}`; cluster `c{d}` is domain d's.
use std::{fmt::Write as _, fs, os::unix::fs::PermissionsExt, path::PathBuf};

use anyhow::{bail, Result};

use crate::{
    control::vm_name,
    lab::{mac_string, Lab, BASE_VNI, VM_SUBNET},
    slurm::{Cluster, Machine, SLURMD_CGROUPS},
    sys::run,
};

/// The lab's VioCluster: `domains` clusters, `pool` VMs each may run on borrowed
/// machines, brokers trading every `period_s`.
#[derive(Clone, Debug, PartialEq)]
pub struct Brokered {
    pub domains: usize,
    pub pool: usize,
    pub period_s: u64,
}

/// A pool VM of cluster `d` (0-based): its Slurm node, and how it is wired where it boots.
pub struct PoolVm {
    pub machine: Machine,
    pub port: String,
    pub mac: [u8; 6],
}

impl Brokered {
    pub fn validate(&self, hosts: usize) -> Result<()> {
        if self.domains < 2 || self.domains > hosts {
            bail!(
                "viocluster: {} domains must be between 2 and the hosts ({hosts})",
                self.domains
            );
        }
        if !(1..=9).contains(&self.pool) {
            bail!("viocluster: a pool of {} VMs; 1 to 9", self.pool);
        }
        Ok(())
    }

    pub fn pool(&self, d: usize) -> Vec<PoolVm> {
        (0..self.pool)
            .map(|k| {
                let (d1, k1) = ((d + 1) as u8, (k + 1) as u8);
                PoolVm {
                    machine: Machine {
                        ns: String::new(),
                        // Above every lab VM's address (10.200.<host>.<n>).
                        ip: format!("{VM_SUBNET}.{}.{k1}", 100 + d1)
                            .parse()
                            .expect("an address"),
                        name: format!("c{d1}b{k1}"),
                    },
                    port: format!("vb{d1}{k1}"),
                    mac: [0x02, 0, 0, 0x0b, d1, k1],
                }
            })
            .collect()
    }
}

impl Lab {
    fn brokered(&self) -> &Brokered {
        self.spec
            .viocluster
            .as_ref()
            .expect("a lab with VioCluster")
    }

    /// The hosts of domain `d` (0-based).
    pub fn cluster_hosts(&self, d: usize) -> Vec<usize> {
        let n = self.brokered().domains;
        (0..self.spec.hosts).filter(|i| i % n == d).collect()
    }

    /// Cluster `d`'s head (its first host's first VM, named as the machine, which
    /// slurmctld checks) and nodes (the second VM of each of its hosts).
    pub fn cluster_machines(&self, d: usize) -> Result<(Machine, Vec<Machine>)> {
        let hosts = self.cluster_hosts(d);
        let m = |v: &crate::lab::Vm, name: String| Machine {
            ns: v.ns.clone(),
            ip: v.ip,
            name,
        };
        let hostname = run("hostname", &[])?.trim().to_string();
        let head = m(self.vm(hosts[0], 0, 0), hostname);
        let nodes = hosts
            .iter()
            .map(|&h| {
                let v = self.vm(h, 0, 1);
                m(v, vm_name(v))
            })
            .collect();
        Ok((head, nodes))
    }

    pub fn cluster_dir(&self, d: usize) -> PathBuf {
        self.dir.join(format!("slurm-c{}", d + 1))
    }

    /// Cluster `d`'s environment spec: its head and nodes.
    pub fn cluster_spec(&self, d: usize) -> String {
        let hosts = self.cluster_hosts(d);
        let head = self.vm(hosts[0], 0, 0);
        let mut vms = vec![head];
        vms.extend(hosts.iter().map(|&h| self.vm(h, 0, 1)));
        let name = format!("c{}", d + 1);
        let text = self.spec_of(&vms, &name, BASE_VNI + 100 + d as u32, "");
        let head_table = format!("name = {:?}\n", vm_name(head));
        text.replacen(&head_table, &format!("{head_table}head = true\n"), 1)
    }

    pub fn brokers_file(&self) -> PathBuf {
        self.dir.join("brokers.toml")
    }

    /// Writes the brokers' configuration and the provisioner (the controller reads them
    /// when it starts).
    pub(crate) fn write_brokers(&self) -> Result<()> {
        let b = self.brokered().clone();
        let provisioner = self.dir.join("provision.sh");
        let mut c = format!(
            "period_s = {}\nprovisioner = {:?}\n",
            b.period_s,
            provisioner.display().to_string()
        );
        for d in 0..b.domains {
            let head = self.vm(self.cluster_hosts(d)[0], 0, 0);
            let _ = write!(
                c,
                "\n[[domain]]\nname = \"d{}\"\nenvironment = \"c{}\"\nslurm_conf = {:?}\n\
                 slurm_via = [\"ip\", \"netns\", \"exec\", {:?}]\n",
                d + 1,
                d + 1,
                self.cluster_dir(d).join("slurm.conf").display().to_string(),
                head.ns
            );
            for p in b.pool(d) {
                let _ = write!(
                    c,
                    "[[domain.pool]]\nname = {:?}\nport = {:?}\nmac = {:?}\nip = \"{}\"\n",
                    p.machine.name,
                    p.port,
                    mac_string(&p.mac),
                    p.machine.ip
                );
            }
        }
        fs::write(self.brokers_file(), c)?;
        let mut hosts = String::new();
        for h in self.hosts.iter().filter(|h| h.kind.runs_violind()) {
            let _ = writeln!(hosts, "  {}) hns={} ;;", h.host_id(), h.ns);
        }
        let mtu = self.spec.vm_mtu();
        let script = format!(
            r#"#!/bin/sh
# The lab's provisioner for VioCluster's brokers: `start` boots a borrowed machine's VM
# (a namespace VM behind a veth whose host end is its port, its slurmd for an OS) on
# the lent host; `stop` halts it. violin-controller sets the VIOLIN_* and SLURM_CONF.
set -eu
case "$VIOLIN_HOST" in
{hosts}  *) echo "no host $VIOLIN_HOST in lab {lab}" >&2; exit 2 ;;
esac
ns="{lab}-b-$VIOLIN_VM"
dir=$(dirname "$SLURM_CONF")
case "$1" in
start)
  # Half a VM is no VM: a failed step removes what the others made.
  trap 'ip netns del "$ns" 2>/dev/null' EXIT
  ip netns add "$ns"
  ip link add name "$VIOLIN_PORT" netns "$hns" mtu {mtu} type veth peer name eth0 netns "$ns"
  ip -n "$hns" link set "$VIOLIN_PORT" up
  ip -n "$ns" link set lo up
  ip -n "$ns" link set eth0 address "$VIOLIN_MAC" mtu {mtu}
  ip -n "$ns" addr add "$VIOLIN_IP/16" dev eth0
  ip -n "$ns" link set eth0 up
  ip netns exec "$ns" ethtool -K eth0 tx on gro on >/dev/null
  mkdir -p "$dir/spool/$VIOLIN_VM"
  CGROUPS='{cgroups}' setsid ip netns exec "$ns" unshare -m --propagation private \
    sh "$dir/boot-slurmd.sh" "$VIOLIN_VM" >"$dir/slurmd-$VIOLIN_VM.out" 2>&1 </dev/null &
  trap - EXIT
  ;;
stop)
  # The VM's every process (slurmd, a job's steps) goes with it.
  for pid in $(ip netns pids "$ns" 2>/dev/null); do kill -9 "$pid" 2>/dev/null || true; done
  ip netns del "$ns" 2>/dev/null || true
  ;;
*) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
"#,
            lab = self.spec.name,
            cgroups = SLURMD_CGROUPS,
        );
        fs::write(&provisioner, script)?;
        fs::set_permissions(&provisioner, fs::Permissions::from_mode(0o755))?;
        Ok(())
    }

    /// How to use the clusters, for `lab up`.
    pub fn describe_clusters(&self) -> String {
        let mut s =
            String::from("\nVioCluster (`violinctl brokers` shows the loans and rounds):\n");
        for (d, c) in self.slurm.iter().enumerate() {
            let hosts: Vec<&str> = self
                .cluster_hosts(d)
                .into_iter()
                .map(|h| self.hosts[h].host_id())
                .collect();
            let _ = writeln!(
                s,
                "  c{} (domain d{}, hosts {}): ip netns exec {} env SLURM_CONF={} sbatch -N 2 -o /dev/null --wrap 'sleep 300'",
                d + 1,
                d + 1,
                hosts.join(" "),
                c.head.ns,
                c.conf.display()
            );
        }
        s
    }

    /// Applies every cluster's environment and starts its Slurm.
    pub(crate) fn start_clusters(&mut self, quiet: bool) -> Result<()> {
        let b = self.brokered().clone();
        for d in 0..b.domains {
            let name = format!("c{}", d + 1);
            crate::lab::step(quiet, &format!("Slurm cluster {name} (domain d{})", d + 1));
            self.apply_spec(&name, &self.cluster_spec(d))?;
            let (head, nodes) = self.cluster_machines(d)?;
            let pool: Vec<Machine> = b.pool(d).into_iter().map(|p| p.machine).collect();
            let cluster = Cluster::start(&self.cluster_dir(d), &name, head, &nodes, &pool)?;
            self.slurm.push(cluster);
        }
        Ok(())
    }
}
