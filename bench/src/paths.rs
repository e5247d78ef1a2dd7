//! One lab holding the paths side by side on one underlay bridge: Violin hosts (XDP VM
//! ports), Linux VXLAN hosts, bare hosts whose own namespaces are the endpoints, and
//! Violin hosts with TC VM ports. Every figure of a run is taken on this same lab (the
//! micro suite's IPv6 figures on a second one of the same paths, its underlay IPv6).
use std::{
    net::IpAddr,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};
use violin_testbed::lab::{HostKind, Lab, LabSpec, Vm};

use crate::results::NetPath;

/// Where a workload process runs and how it is reached.
#[derive(Clone, Debug)]
pub struct Endpoint {
    pub ns: String,
    pub ip: IpAddr,
}

/// The directory of the binaries a run measures: the one holding this `violin-bench`.
/// `cargo xtask bench` builds them all optimised into `target/release`, so the figures
/// are the daemon's as operators run it (its slow path, its observers); a lab finds
/// violinctl, violin-controller and violin-patterns beside violind. The bench's own
/// tests run the debug build's, which is why the reports name the build.
pub fn bin_dir() -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    Ok(exe
        .parent()
        .context("violin-bench has no directory")?
        .into())
}

/// The measured build, as the reports' settings name it. It is violin-bench's own
/// profile: `cargo` builds the binaries beside it with the same one. The eBPF object is
/// built optimised in either (`dataplane-user/build.rs`), so a debug build differs only in
/// user space: the daemons' and the tools' (violin-pktgen, violin-nemo, violin-patterns,
/// violin-bench's own).
pub fn build() -> String {
    let profile = if cfg!(debug_assertions) {
        "debug build; the eBPF object optimised"
    } else {
        "release build"
    };
    match bin_dir() {
        Ok(dir) => format!("{} ({profile})", dir.display()),
        Err(_) => profile.into(),
    }
}

/// Holds the machine for this run until the returned file is dropped, or fails at once if
/// another run holds it: two runs would bring up labs of the same names (each removes a
/// lab of its name first) and profile each other's work.
pub fn one_run_at_a_time() -> Result<std::fs::File> {
    use std::os::fd::AsRawFd;
    let path = Path::new("/run/violin-bench.lock");
    let file = std::fs::File::create(path).with_context(|| format!("{}", path.display()))?;
    // SAFETY: the descriptor is open (owned by `file`) for the whole call.
    if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        bail!(
            "another violin-bench run holds {}: wait for it to end (its labs would collide \
             with this run's)",
            path.display()
        );
    }
    Ok(file)
}

/// The `violind` beside this `violin-bench`.
pub fn violind() -> Result<PathBuf> {
    let path = bin_dir()?.join("violind");
    if !path.exists() {
        bail!(
            "{} is missing: build it beside violin-bench (`cargo xtask bench` builds both)",
            path.display()
        );
    }
    Ok(path)
}

pub struct BenchLab {
    pub lab: Lab,
}

impl BenchLab {
    /// `hosts` hosts per path, `vms` VMs per overlay host, on an IPv4 underlay.
    pub fn up(name: &str, mtu: u32, hosts: usize, vms: usize) -> Result<BenchLab> {
        Self::up_on(name, mtu, hosts, vms, false)
    }

    /// [`BenchLab::up`] on an IPv6-only underlay when `ipv6`: the tunnels are VXLAN over
    /// IPv6 and the bare path's endpoints speak IPv6; the VMs still speak IPv4.
    pub fn up_on(name: &str, mtu: u32, hosts: usize, vms: usize, ipv6: bool) -> Result<BenchLab> {
        let mut spec = LabSpec::new(name, violind()?);
        spec.ipv6 = ipv6;
        spec.hosts = hosts;
        spec.linux_vxlan_hosts = hosts;
        spec.bare_hosts = hosts;
        spec.violin_xdp_hosts = hosts;
        spec.vms_per_host = vms;
        spec.mtu = mtu;
        // Linux VXLAN as users run it: its VMs keep their checksum and segmentation
        // offloads (what they send to a Violin VM, in the split TCP figure, crosses the
        // switch, which completes it).
        spec.linux_vm_offloads = true;
        let lab = Lab::up(spec, true)?;
        Ok(BenchLab { lab })
    }

    /// The lab's host indexes of a path.
    pub fn hosts(&self, path: NetPath) -> Vec<usize> {
        self.hosts_of(kind_of(path))
    }

    /// The first VM on the path's host `host` (0-based); overlay paths only.
    pub fn vm(&self, path: NetPath, host: usize) -> &Vm {
        let h = self.hosts(path)[host];
        self.lab
            .vms
            .iter()
            .find(|v| v.host == h)
            .expect("overlay hosts have VMs")
    }

    fn hosts_of(&self, kind: HostKind) -> Vec<usize> {
        self.lab
            .hosts
            .iter()
            .filter(|h| h.kind == kind)
            .map(|h| h.index)
            .collect()
    }

    /// Endpoints of a path: `per_host` processes on each of its hosts, host-major order.
    pub fn endpoints(&self, path: NetPath, per_host: usize) -> Vec<Endpoint> {
        let hosts = self.hosts_of(kind_of(path)).len();
        (0..hosts)
            .flat_map(|h| (0..per_host).map(move |k| (h, k)))
            .map(|(h, k)| self.endpoint(path, h, k))
            .collect()
    }

    /// Process `k` on the path's host `host` (both 0-based). On the bare path the
    /// processes of a host share its namespace, as processes of a physical cluster share
    /// their node; on the overlays each is a VM.
    pub fn endpoint(&self, path: NetPath, host: usize, k: usize) -> Endpoint {
        let h = self.hosts_of(kind_of(path))[host];
        let host = &self.lab.hosts[h];
        match path {
            NetPath::Bare => Endpoint {
                ns: host.ns.clone(),
                ip: host.underlay_ip,
            },
            _ => {
                let vm = self
                    .lab
                    .vms
                    .iter()
                    .filter(|v| v.host == h)
                    .nth(k)
                    .expect("enough VMs per host");
                Endpoint {
                    ns: vm.ns.clone(),
                    ip: vm.ip.into(),
                }
            }
        }
    }

    /// Where the daemons of a path's hosts pin their links (Violin paths alone have any).
    pub fn link_dirs(&self, path: NetPath) -> Vec<PathBuf> {
        self.hosts_of(kind_of(path))
            .into_iter()
            .map(|h| self.lab.hosts[h].pins().join("links"))
            .collect()
    }

    /// Host namespaces of a path's hosts (where its VM ports and underlay live).
    pub fn host_namespaces(&self, path: NetPath) -> Vec<String> {
        self.hosts_of(kind_of(path))
            .into_iter()
            .map(|h| self.lab.hosts[h].ns.clone())
            .collect()
    }
}

fn kind_of(path: NetPath) -> HostKind {
    match path {
        NetPath::Bare => HostKind::Bare,
        NetPath::LinuxVxlan => HostKind::LinuxVxlan,
        NetPath::Violin => HostKind::Violin,
        NetPath::ViolinXdp => HostKind::ViolinXdp,
    }
}
