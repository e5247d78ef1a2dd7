//! A lab of simulated hosts and VMs on one machine.
//!
//! A host is a network namespace whose `ul0` sits on one underlay bridge in a switch
//! namespace (`<lab>-sw`, so the machine's own bridge netfilter settings stay out of the
//! way); a VM is a namespace whose `eth0` is the peer of a port `vmN` in its host.
//! Violin hosts run `violind`; a host of kind [`HostKind::LinuxVxlan`] uses the kernel's
//! own VXLAN device bridged to its VMs instead (the interoperability peer).
//!
//! With [`VmKind::Qemu`] a VM is a real QEMU guest instead (TCG, the tiny image of
//! [`crate::guest`]) booted through its host's own libvirt daemon ([`crate::libvirt`]); its
//! NIC is a tap libvirt creates under the port's name, and `violind` follows that daemon.
//!
//! Everything a lab creates carries its name as a prefix, so [`down`] can remove it all
//! even after a crash, and labs with different names can run side by side.
use std::{
    fmt::Write as _,
    fs,
    net::{IpAddr, Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::sys::{ip, ns_run, run};

/// Overlay subnet inside every environment; environments overlap on purpose.
/// VM k of host i is 10.200.(i+1).(k+1)/16 (and fd00:200::(i+1):(k+1)/64).
pub const VM_SUBNET: &str = "10.200";
pub const UNDERLAY_SUBNET: &str = "10.250.0";
/// The underlay's prefix when the lab's underlay is IPv6 (`LabSpec::ipv6`): host i is
/// fd00:250::(i+1), as 10.250.0.(i+1) on IPv4.
pub const UNDERLAY_SUBNET6: &str = "fd00:250:";
pub const BASE_VNI: u32 = 1000;
/// Port of each violind's HTTP endpoint, on its underlay address.
pub const API_PORT: u16 = 9600;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HostKind {
    /// Violin in its default port mode, TC (`port_mode = "tc"`): its VMs keep their
    /// transmit offloads.
    Violin,
    LinuxVxlan,
    /// Underlay only, no overlay and no VMs: the "physical cluster" baseline.
    Bare,
    /// Violin with `port_mode = "xdp"`: XDP programs on the VM ports and the underlay,
    /// whose VMs checksum what they send.
    ViolinXdp,
}

impl HostKind {
    pub fn runs_violind(self) -> bool {
        matches!(self, HostKind::Violin | HostKind::ViolinXdp)
    }
}

/// What a lab's VMs are.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum VmKind {
    /// A network namespace behind a veth: fast, for most tests.
    #[default]
    Namespace,
    /// A QEMU guest (TCG) under its host's libvirt daemon, on a tap: migratable.
    Qemu,
}

#[derive(Clone, Debug)]
pub struct LabSpec {
    /// Prefix of every name the lab creates: 1 to 7 characters from [a-z0-9].
    pub name: String,
    pub hosts: usize,
    pub vms_per_host: usize,
    pub envs: usize,
    /// Underlay MTU; VMs get the outer headers less (50 bytes, 70 over IPv6).
    pub mtu: u32,
    /// Extra hosts (after the Violin ones) using Linux's VXLAN device.
    pub linux_vxlan_hosts: usize,
    /// Extra hosts (after those) with only an underlay address: no overlay, no VMs.
    pub bare_hosts: usize,
    /// Extra Violin hosts (after those) in XDP port mode.
    pub violin_xdp_hosts: usize,
    /// The `violind` binary.
    pub violind: PathBuf,
    /// aya-log debug messages from the XDP programs into the daemons' logs.
    pub debug_datapath: bool,
    /// Leave transmit offloads on in Linux VXLAN hosts' VMs. What they send reaches
    /// other hosts complete (the switch fills in checksums, as a wire delivers complete
    /// frames), so Violin's VMs may talk to them; XDP port mode's demand that a VM
    /// checksum what it sends concerns Violin's own VMs.
    pub linux_vm_offloads: bool,
    /// Run `violin-controller` on the underlay (in the switch namespace) and configure
    /// the daemons from it: environments are then created with `violinctl`.
    pub controller: bool,
    pub vm_kind: VmKind,
    /// QEMU guests on the first host run `violin-probe` against their environment's
    /// guest of the same index on the second host (a TCP echo session and pings).
    pub probes: bool,
    /// The probes' interval in milliseconds (violin-probe's default, 10, when None).
    pub probe_interval_ms: Option<u32>,
    /// QEMU guests of environment 0 run violin-nemo's rounds back to back, one rank each
    /// (in VM order), listening on port [`NEMO_PORT`]; rank 0 reports on its console.
    pub nemo: Option<NemoRounds>,
    /// Hosts in domains joined by shaped wide-area links (None: one switch for all).
    pub domains: Option<Domains>,
    /// The daemons measure each other (with a controller; `measure_ms`): off for
    /// benchmarks whose links the probes would share.
    pub measure: bool,
    /// The hosts as the adaptation manager sees them (QEMU guests): their domains, what
    /// they offer, and guests that keep their CPU busy.
    pub managed: Option<Managed>,
    /// VioCluster: a Slurm cluster per domain and the controller's machine brokers.
    pub viocluster: Option<crate::viocluster::Brokered>,
    /// Controller replicas on a 3-member etcd cluster, each member in a namespace of its
    /// own on the underlay (0: one controller on its embedded database).
    pub replicas: usize,
    /// An IPv6-only underlay: hosts, the controller and the tunnels speak IPv6 (VXLAN
    /// over IPv6, 70 bytes of headers).
    pub ipv6: bool,
}

/// Hosts for the adaptation manager: host i is in domain `d{i mod domains + 1}`, offers
/// `cpus` cores and `memory_mib`, samples its guests every `report_ms`; its libvirt daemon
/// puts guests in CPU cgroups, and every guest has a memory balloon (and, with `burn`, a
/// busy CPU).
#[derive(Clone, Debug, PartialEq)]
pub struct Managed {
    pub domains: usize,
    pub cpus: f64,
    pub memory_mib: u64,
    pub report_ms: u32,
    pub burn: bool,
    /// The controller's automatic mode, deciding every this many seconds (None: only on
    /// request).
    pub period_s: Option<u64>,
}

impl Managed {
    pub fn domain_of(&self, host: usize) -> String {
        format!("d{}", host % self.domains.max(1) + 1)
    }
}

/// The lab's hosts split into `count` domains (round robin: host i is in domain i mod
/// count, so the first hosts, whose VMs the probes pair, sit in different domains), each on
/// a switch of its own whose uplink to the core switch (where the controller is) is
/// shaped both ways: what crosses domains goes through two uplinks.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Domains {
    pub count: usize,
    /// Each uplink's rate, each way.
    pub rate_mbit: u32,
    /// One-way delay added on each uplink (netem), ms.
    pub delay_ms: f64,
    /// Loss on each uplink (netem), percent.
    pub loss_pct: f64,
}

impl Domains {
    /// `count` domains behind uplinks of `rate_mbit`, no delay or loss.
    pub fn shaped(count: usize, rate_mbit: u32) -> Domains {
        Domains {
            count,
            rate_mbit,
            delay_ms: 0.0,
            loss_pct: 0.0,
        }
    }

    /// The uplink's qdisc (a `tc qdisc replace ... root` tail): netem when delay or loss
    /// is asked for, else a token bucket.
    fn qdisc(&self) -> Vec<String> {
        let rate = format!("{}mbit", self.rate_mbit);
        if self.delay_ms > 0.0 || self.loss_pct > 0.0 {
            let mut q = vec!["netem".to_string(), "rate".into(), rate];
            if self.delay_ms > 0.0 {
                q.extend(["delay".into(), format!("{}ms", self.delay_ms)]);
            }
            if self.loss_pct > 0.0 {
                q.extend(["loss".into(), format!("{}%", self.loss_pct)]);
            }
            // Room for what the rate holds back: a second of it, in 1500-byte frames.
            let limit = (self.rate_mbit as usize * 1_000_000 / 8 / 1500).max(1000);
            q.extend(["limit".into(), limit.to_string()]);
            return q;
        }
        // A burst of at least one jumbo frame; 50 ms of queue.
        let burst = (self.rate_mbit as usize * 1000 / 8).max(10_000);
        [
            "tbf",
            "rate",
            &rate,
            "burst",
            &burst.to_string(),
            "latency",
            "50ms",
        ]
        .map(String::from)
        .to_vec()
    }
}

/// One violin-nemo round: iterations, halo bytes, stencil sweeps per iteration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NemoRounds {
    pub iters: usize,
    pub halo: usize,
    pub work: usize,
}

/// Where the guests' violin-nemo ranks listen.
pub const NEMO_PORT: u16 = 5100;

impl LabSpec {
    pub fn new(name: &str, violind: PathBuf) -> LabSpec {
        LabSpec {
            name: name.to_string(),
            hosts: 2,
            vms_per_host: 2,
            envs: 1,
            mtu: 1500,
            linux_vxlan_hosts: 0,
            bare_hosts: 0,
            violin_xdp_hosts: 0,
            violind,
            debug_datapath: false,
            linux_vm_offloads: false,
            controller: false,
            vm_kind: VmKind::Namespace,
            probes: false,
            probe_interval_ms: None,
            nemo: None,
            domains: None,
            measure: true,
            managed: None,
            viocluster: None,
            replicas: 0,
            ipv6: false,
        }
    }

    /// The underlay's family: what encapsulation costs.
    pub fn family(&self) -> dataplane_common::packet::Family {
        match self.ipv6 {
            true => dataplane_common::packet::Family::V6,
            false => dataplane_common::packet::Family::V4,
        }
    }

    /// The VMs' MTU: the underlay's less the outer headers.
    pub fn vm_mtu(&self) -> u32 {
        self.family().vm_mtu(self.mtu)
    }

    /// The underlay address ending in `last` (hosts count from 1, the controller's
    /// replicas down from 254): 10.250.0.`last`, or fd00:250::`last` on IPv6.
    pub fn underlay_addr(&self, last: u8) -> IpAddr {
        match self.ipv6 {
            true => format!("{UNDERLAY_SUBNET6}:{last:x}").parse().unwrap(),
            false => Ipv4Addr::new(10, 250, 0, last).into(),
        }
    }

    pub fn validate(&self) -> Result<()> {
        let ok = !self.name.is_empty()
            && self.name.len() <= 7
            && self
                .name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        if !ok {
            bail!(
                "--name: {:?} must be 1 to 7 characters from [a-z0-9]",
                self.name
            );
        }
        let total = self.hosts + self.linux_vxlan_hosts + self.bare_hosts + self.violin_xdp_hosts;
        if !(1..=24).contains(&total) {
            bail!("--hosts: {total} hosts in all; the lab supports 1 to 24");
        }
        if !(1..=16).contains(&self.vms_per_host) {
            bail!(
                "--vms: {} per host; the lab supports 1 to 16",
                self.vms_per_host
            );
        }
        if self.envs == 0 || self.envs > self.vms_per_host {
            bail!(
                "--envs: {} must be between 1 and the VMs per host ({})",
                self.envs,
                self.vms_per_host
            );
        }
        if !(1280..=9000).contains(&self.mtu) {
            bail!("--mtu: {} must be between 1280 and 9000", self.mtu);
        }
        if let Some(d) = &self.domains {
            if d.count < 2 || d.count > total {
                bail!(
                    "--domains: {} must be between 2 and the hosts ({total})",
                    d.count
                );
            }
            if !(1..=100_000).contains(&d.rate_mbit) {
                bail!("--wan-mbit: {} must be between 1 and 100000", d.rate_mbit);
            }
            if !(0.0..=10_000.0).contains(&d.delay_ms) {
                bail!("--wan-delay-ms: {} must be between 0 and 10000", d.delay_ms);
            }
            if !(0.0..=100.0).contains(&d.loss_pct) {
                bail!("--wan-loss-pct: {} must be between 0 and 100", d.loss_pct);
            }
        }
        if let Some(b) = &self.viocluster {
            b.validate(self.hosts)?;
            if !self.controller || self.vm_kind != VmKind::Namespace || self.vms_per_host < 2 {
                bail!("viocluster: needs the controller and two namespace VMs per host");
            }
            if self.envs != 1 {
                bail!("viocluster: its clusters are environments of their own (--envs 1)");
            }
        }
        if self.ipv6
            && (self.vm_kind == VmKind::Qemu || self.domains.is_some() || self.replicas > 0)
        {
            bail!(
                "--ipv6: the lab builds an IPv6 underlay for namespace VMs on one switch, with \
                 one controller; not yet with QEMU guests, domains or replicas"
            );
        }
        if self.replicas > 0 && (!self.controller || self.replicas > 4) {
            bail!(
                "--replicas: {} needs the controller and at most 4 replicas",
                self.replicas
            );
        }
        if !self.violind.exists() {
            bail!(
                "violind binary {} not found (run `cargo build -p dataplane-user`)",
                self.violind.display()
            );
        }
        Ok(())
    }
}

#[derive(Clone, Debug)]
pub struct Host {
    pub index: usize,
    pub kind: HostKind,
    pub ns: String,
    /// Switch-namespace end of the host's underlay veth, on the bridge.
    pub bridge_port: String,
    pub underlay_ip: IpAddr,
    pub config: PathBuf,
    pub log: PathBuf,
}

/// Where violind pins each host's datapath, a directory per host id (its default
/// `pin_root`, under the BPF filesystem).
pub const PIN_ROOT: &str = "/sys/fs/bpf/violin";

impl Host {
    pub fn host_id(&self) -> &str {
        &self.ns
    }

    /// The host's underlay address on an IPv4 lab (the tools that craft IPv4 packets).
    pub fn underlay_v4(&self) -> Ipv4Addr {
        match self.underlay_ip {
            IpAddr::V4(a) => a,
            IpAddr::V6(a) => panic!("host {} has an IPv6 underlay ({a})", self.ns),
        }
    }

    /// The host's violind API endpoint.
    pub fn api_addr(&self) -> SocketAddr {
        SocketAddr::new(self.underlay_ip, API_PORT)
    }

    /// Where the host's violind pins its maps (`maps/`) and links (`links/`).
    pub fn pins(&self) -> PathBuf {
        Path::new(PIN_ROOT).join(self.host_id())
    }
}

/// The tables whose br_netfilter hooks a bridge may call (`net.bridge.bridge-nf-call-*`).
pub const BRIDGE_NF_TABLES: [&str; 3] = ["iptables", "ip6tables", "arptables"];

/// Turns br_netfilter's hooks off for the bridges of namespace `ns` (the setting is per
/// namespace, and a new namespace starts with them on while the module is loaded).
fn bridges_skip_netfilter(ns: &str) {
    for table in BRIDGE_NF_TABLES {
        let key = format!("net.bridge.bridge-nf-call-{table}=0");
        // Absent when br_netfilter is not loaded: nothing to turn off then.
        let _ = ns_run(ns, "sysctl", &["-q", "-w", &key]);
    }
}

/// Adds `addr` to `dev` in `ns` with the underlay's prefix; on IPv6 without duplicate
/// address detection, which would hold the address back for a second or more.
pub fn add_underlay_addr(ns: &str, dev: &str, addr: IpAddr) -> Result<()> {
    let (cidr, extra): (String, &[&str]) = match addr {
        IpAddr::V4(a) => (format!("{a}/24"), &[]),
        IpAddr::V6(a) => (format!("{a}/64"), &["nodad"]),
    };
    let mut args = vec!["addr", "add", cidr.as_str(), "dev", dev];
    args.extend_from_slice(extra);
    ns_run(ns, "ip", &args).map(|_| ())
}

#[derive(Clone, Debug)]
pub struct Vm {
    pub ns: String,
    pub host: usize,
    /// Environment index; VNI is `BASE_VNI + env`.
    pub env: usize,
    pub vni: u32,
    /// Port name in the host namespace.
    pub port: String,
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub ip6: String,
    /// Set for a QEMU guest: its domain and console.
    pub guest: Option<Guest>,
}

#[derive(Clone, Debug)]
pub struct Guest {
    /// The libvirt domain's name (also the VM's name in generated specs).
    pub domain: String,
    /// The serial console log (the guest's output, `violin-probe`'s reports).
    pub console: PathBuf,
}

pub struct Lab {
    pub spec: LabSpec,
    pub hosts: Vec<Host>,
    pub vms: Vec<Vm>,
    pub dir: PathBuf,
    daemons: Vec<Option<Child>>,
    /// The controller's replicas (one without `replicas`).
    pub(crate) controllers: Vec<Option<Child>>,
    /// The etcd cluster under the replicas.
    pub etcd: Option<crate::etcd::Cluster>,
    /// A libvirt daemon per Violin host, with QEMU guests.
    pub libvirtds: Vec<Option<crate::libvirt::Libvirtd>>,
    /// VioCluster's Slurm clusters, by domain.
    pub slurm: Vec<crate::slurm::Cluster>,
    torn_down: bool,
}

/// `aa:bb:cc:dd:ee:ff`.
pub fn mac_string(m: &[u8; 6]) -> String {
    dataplane_common::packet::Mac(*m).to_string()
}

/// A violind `[[environment.limit]]` bounding VMs `a` and `b` (each direction) at `mbit`
/// Mbit/s with a 64 KiB burst, for [`Lab::config_with`].
pub fn pair_limit(a: &Vm, b: &Vm, mbit: f64) -> String {
    format!(
        "[[environment.limit]]\npair = [{:?}, {:?}]\nrate_mbit = {mbit}\nburst_kib = 64\n",
        mac_string(&a.mac),
        mac_string(&b.mac)
    )
}

/// The namespace holding the underlay bridge `br0`.
pub fn switch_ns(lab: &str) -> String {
    format!("{lab}-sw")
}

pub fn state_dir(lab: &str) -> PathBuf {
    Path::new("/run/violin-lab").join(lab)
}

/// Where a lab's libvirt daemons and guest consoles live: outside /run and /var/lib,
/// which each daemon's private mount namespace replaces.
pub fn guest_dir(lab: &str) -> PathBuf {
    Path::new("/var/tmp/violin-lab").join(lab)
}

/// Progress output for long operations.
pub(crate) fn step(quiet: bool, msg: &str) {
    if !quiet {
        eprintln!("  · {msg}");
    }
}

impl Lab {
    /// Builds the lab and starts a `violind` per Violin host; removes everything again if
    /// any step fails. `quiet` suppresses progress lines (tests).
    pub fn up(spec: LabSpec, quiet: bool) -> Result<Lab> {
        spec.validate()?;
        // Leftovers of a crashed lab of the same name would collide.
        down(&spec.name, true)?;
        let dir = state_dir(&spec.name);
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut lab = Lab {
            hosts: Vec::new(),
            vms: Vec::new(),
            dir,
            daemons: Vec::new(),
            controllers: Vec::new(),
            etcd: None,
            libvirtds: Vec::new(),
            slurm: Vec::new(),
            torn_down: false,
            spec,
        };
        match lab.build(quiet) {
            Ok(()) => Ok(lab),
            Err(e) => {
                let logs = lab.daemon_logs();
                lab.down_now();
                Err(e.context(logs))
            }
        }
    }

    fn build(&mut self, quiet: bool) -> Result<()> {
        let s = self.spec.clone();
        let sw = switch_ns(&s.name);
        step(quiet, &format!("underlay switch {sw} (MTU {})", s.mtu));
        ip(&["netns", "add", &sw])?;
        // A bridge must forward whatever the tests put on the wire, malformed IPv4
        // included; br_netfilter (on where Docker runs) would validate and drop it.
        bridges_skip_netfilter(&sw);
        ns_run(&sw, "ip", &["link", "add", "br0", "type", "bridge"])?;
        ns_run(
            &sw,
            "ip",
            &["link", "set", "br0", "mtu", &s.mtu.to_string(), "up"],
        )?;
        let total = s.hosts + s.linux_vxlan_hosts + s.bare_hosts + s.violin_xdp_hosts;
        if let Some(d) = &s.domains {
            self.make_domains(d, quiet)?;
        }
        for i in 0..total {
            let kind = if i < s.hosts {
                HostKind::Violin
            } else if i < s.hosts + s.linux_vxlan_hosts {
                HostKind::LinuxVxlan
            } else if i < s.hosts + s.linux_vxlan_hosts + s.bare_hosts {
                HostKind::Bare
            } else {
                HostKind::ViolinXdp
            };
            let host = Host {
                index: i,
                kind,
                ns: format!("{}-h{}", s.name, i + 1),
                bridge_port: format!("h{}", i + 1),
                underlay_ip: s.underlay_addr(i as u8 + 1),
                config: self.dir.join(format!("h{}.toml", i + 1)),
                log: self.dir.join(format!("h{}.log", i + 1)),
            };
            step(
                quiet,
                &format!(
                    "host {} ({:?}) underlay {}",
                    host.ns, kind, host.underlay_ip
                ),
            );
            self.make_host(&host)?;
            self.hosts.push(host);
        }
        if s.vm_kind == VmKind::Qemu {
            self.start_libvirtds(quiet)?;
        }
        for i in 0..total {
            if self.hosts[i].kind == HostKind::Bare {
                continue;
            }
            for j in 0..s.vms_per_host {
                let vm = match s.vm_kind {
                    VmKind::Namespace => self.make_vm(i, j)?,
                    VmKind::Qemu => self.guest_vm(i, j)?,
                };
                step(
                    quiet,
                    &format!(
                        "vm {} on {} env {} ({}, {})",
                        vm.ns,
                        self.hosts[i].ns,
                        vm.env,
                        vm.ip,
                        mac_string(&vm.mac)
                    ),
                );
                self.vms.push(vm);
            }
        }
        for i in 0..total {
            if self.hosts[i].kind == HostKind::LinuxVxlan {
                self.make_linux_vxlan(i)?;
            }
        }
        if s.vm_kind == VmKind::Qemu {
            self.boot_guests(quiet)?;
        }
        self.daemons = (0..total).map(|_| None).collect();
        if s.viocluster.is_some() {
            self.write_brokers()?;
        }
        if s.controller {
            step(
                quiet,
                &format!("violin-controller on {}", self.controller_urls()),
            );
            self.start_controller()?;
        }
        let violin: Vec<usize> = (0..total)
            .filter(|&i| self.hosts[i].kind.runs_violind())
            .collect();
        if s.controller {
            // Each daemon speaks to the controller as its own host, and only as it.
            for &i in &violin {
                self.issue_host_credential(i)?;
            }
        }
        for i in violin {
            fs::write(&self.hosts[i].config, self.config_for(i))?;
            step(quiet, &format!("violind on {}", self.hosts[i].ns));
            self.start_daemon(i)?;
        }
        if s.viocluster.is_some() {
            self.start_clusters(quiet)?;
        }
        Ok(())
    }

    /// The domain of host `i` (0 without domains).
    pub fn domain_of(&self, i: usize) -> usize {
        self.spec.domains.map_or(0, |d| i % d.count)
    }

    /// The bridge host `i`'s underlay port joins: its domain's, or the core `br0`.
    fn switch_of(&self, i: usize) -> String {
        match self.spec.domains {
            Some(_) => format!("dom{}", self.domain_of(i)),
            None => "br0".into(),
        }
    }

    /// A switch per domain (`domN`), joined to the core `br0` by a veth pair (`upN` on the
    /// domain's side, `wanN` on the core's) whose two ends are shaped: the domain's
    /// wide-area uplink.
    fn make_domains(&self, d: &Domains, quiet: bool) -> Result<()> {
        let sw = switch_ns(&self.spec.name);
        let mtu = self.spec.mtu.to_string();
        for k in 0..d.count {
            let (bridge, up, wan) = (format!("dom{k}"), format!("up{k}"), format!("wan{k}"));
            step(
                quiet,
                &format!(
                    "domain {k}: switch {bridge}, uplink {} Mbit/s, {} ms, {}% loss",
                    d.rate_mbit, d.delay_ms, d.loss_pct
                ),
            );
            ns_run(&sw, "ip", &["link", "add", &bridge, "type", "bridge"])?;
            ns_run(&sw, "ip", &["link", "set", &bridge, "mtu", &mtu, "up"])?;
            ns_run(
                &sw,
                "ip",
                &[
                    "link", "add", &up, "mtu", &mtu, "type", "veth", "peer", "name", &wan,
                ],
            )?;
            ns_run(&sw, "ip", &["link", "set", &up, "master", &bridge, "up"])?;
            ns_run(&sw, "ip", &["link", "set", &wan, "master", "br0", "up"])?;
            for dev in [&up, &wan] {
                let mut args = vec!["qdisc", "replace", "dev", dev.as_str(), "root"];
                let q = d.qdisc();
                args.extend(q.iter().map(String::as_str));
                let out = crate::sys::ns_output(&sw, "tc", &args)?;
                if !out.status.success() {
                    let err = String::from_utf8_lossy(&out.stderr);
                    if q[0] == "netem" && err.contains("unknown") {
                        bail!(
                            "--wan-delay-ms/--wan-loss-pct need the netem qdisc, which this \
                             kernel lacks (CONFIG_NET_SCH_NETEM); --wan-mbit alone shapes \
                             with a token bucket ({})",
                            err.trim()
                        );
                    }
                    bail!("shaping {dev}: tc {}: {}", args.join(" "), err.trim());
                }
            }
        }
        Ok(())
    }

    fn make_host(&self, h: &Host) -> Result<()> {
        let mtu = self.spec.mtu.to_string();
        ip(&["netns", "add", &h.ns])?;
        ns_run(&h.ns, "ip", &["link", "set", "lo", "up"])?;
        let sw = switch_ns(&self.spec.name);
        ip(&[
            "link",
            "add",
            "name",
            &h.bridge_port,
            "netns",
            &sw,
            "mtu",
            &mtu,
            "type",
            "veth",
            "peer",
            "name",
            "ul0",
            "netns",
            &h.ns,
        ])?;
        ns_run(
            &sw,
            "ip",
            &[
                "link",
                "set",
                &h.bridge_port,
                "master",
                &self.switch_of(h.index),
                "up",
            ],
        )?;
        // NAPI on the bridge side, so XDP_REDIRECT into ul0 is delivered (TOOLCHAIN.md);
        // veth only honours it on an interface that is already up. Checksum offload off:
        // a physical link delivers complete frames, so the switch completes checksums
        // (and segments) in software as it forwards, instead of handing hosts frames
        // whose checksum is still pending, which no NIC would.
        ns_run(
            &sw,
            "ethtool",
            &["-K", &h.bridge_port, "gro", "on", "tx", "off"],
        )?;
        // A transmit queue, as a switch port has: veth has none by default, and into a
        // peer running XDP (a NAPI ring of 256 frames) bursts were then dropped, not
        // queued; with a qdisc, veth applies backpressure instead.
        let port = h.bridge_port.as_str();
        ns_run(
            &sw,
            "tc",
            &[
                "qdisc", "replace", "dev", port, "root", "pfifo", "limit", "1000",
            ],
        )?;
        add_underlay_addr(&h.ns, "ul0", h.underlay_ip)?;
        ns_run(&h.ns, "ip", &["link", "set", "ul0", "mtu", &mtu, "up"])?;
        // GRO on the host's NIC, as every physical NIC has it (veth has it off, and only
        // takes it on an interface that is up). Every path gets it alike: the bare path's
        // TCP, Linux VXLAN's socket and Violin's TC mode aggregate before the stack.
        ns_run(&h.ns, "ethtool", &["-K", "ul0", "gro", "on"])?;
        Ok(())
    }

    /// VM `j` of host `i`, named and addressed (its namespace or domain name, environment,
    /// MAC and addresses), with its port on the host called `port`; nothing is made yet.
    /// Addressing is per environment and identical across environments: VM k of an
    /// environment on host i has the same MAC and IP in every environment.
    fn vm_at(&self, i: usize, j: usize, port: String) -> Result<Vm> {
        let env = j % self.spec.envs;
        let k = j / self.spec.envs;
        Ok(Vm {
            ns: format!("{}-h{}v{}", self.spec.name, i + 1, j + 1),
            host: i,
            env,
            vni: BASE_VNI + env as u32,
            port,
            mac: [0x02, 0, 0, 0, (i + 1) as u8, (k + 1) as u8],
            ip: format!("{VM_SUBNET}.{}.{}", i + 1, k + 1).parse()?,
            ip6: format!("fd00:200::{:x}:{:x}", i + 1, k + 1),
            guest: None,
        })
    }

    /// VM `j` of host `i` as a namespace behind a veth whose host end is its port.
    fn make_vm(&self, i: usize, j: usize) -> Result<Vm> {
        let host = &self.hosts[i];
        let vm = self.vm_at(i, j, format!("vm{}", j + 1))?;
        let vm_mtu = self.spec.vm_mtu().to_string();
        ip(&["netns", "add", &vm.ns])?;
        ip(&[
            "link", "add", "name", &vm.port, "netns", &host.ns, "mtu", &vm_mtu, "type", "veth",
            "peer", "name", "eth0", "netns", &vm.ns,
        ])?;
        ns_run(&host.ns, "ip", &["link", "set", &vm.port, "up"])?;
        ns_run(&vm.ns, "ip", &["link", "set", "lo", "up"])?;
        ns_run(
            &vm.ns,
            "ip",
            &[
                "link",
                "set",
                "eth0",
                "address",
                &mac_string(&vm.mac),
                "mtu",
                &vm_mtu,
            ],
        )?;
        ns_run(
            &vm.ns,
            "ip",
            &["addr", "add", &format!("{}/16", vm.ip), "dev", "eth0"],
        )?;
        ns_run(
            &vm.ns,
            "ip",
            &[
                "-6",
                "addr",
                "add",
                &format!("{}/64", vm.ip6),
                "dev",
                "eth0",
                "nodad",
            ],
        )?;
        ns_run(&vm.ns, "ip", &["link", "set", "eth0", "up"])?;
        // The VM checksums what it sends: an XDP redirect loses "checksum pending"
        // (README, "Checksum offload"). GRO gives eth0 the NAPI that XDP_REDIRECT needs;
        // veth only honours it on an interface that is already up.
        let offloads = host.kind == HostKind::Violin
            || (host.kind == HostKind::LinuxVxlan && self.spec.linux_vm_offloads);
        let tx = if offloads { "on" } else { "off" };
        ns_run(&vm.ns, "ethtool", &["-K", "eth0", "tx", tx, "gro", "on"])?;
        // A VM's NIC has a transmit queue too (see the switch ports).
        ns_run(
            &vm.ns,
            "tc",
            &[
                "qdisc", "replace", "dev", "eth0", "root", "pfifo", "limit", "1000",
            ],
        )?;
        Ok(vm)
    }

    /// A libvirt daemon in each host's namespace that has VMs (its state under
    /// [`guest_dir`]).
    fn start_libvirtds(&mut self, quiet: bool) -> Result<()> {
        let image = crate::guest::image()?;
        let qemu_dir = image
            .qemu
            .parent()
            .context("the guest image's QEMU has no directory")?
            .to_path_buf();
        self.libvirtds = (0..self.hosts.len()).map(|_| None).collect();
        for i in 0..self.hosts.len() {
            let h = self.hosts[i].clone();
            if h.kind == HostKind::Bare {
                continue;
            }
            step(quiet, &format!("libvirtd on {}", h.ns));
            let dir = guest_dir(&self.spec.name).join(format!("h{}", i + 1));
            let cgroups = self.spec.managed.is_some();
            let d = crate::libvirt::Libvirtd::start(
                &h.ns,
                h.underlay_v4(),
                &dir,
                i,
                &qemu_dir,
                cgroups,
            )?;
            self.libvirtds[i] = Some(d);
        }
        Ok(())
    }

    fn stop_libvirtds(&mut self) {
        for l in self.libvirtds.iter_mut().filter_map(Option::take) {
            drop(l);
        }
    }

    /// The local URI of host `i`'s libvirt daemon.
    pub fn libvirt_uri(&self, i: usize) -> Result<String> {
        match self.libvirtds.get(i) {
            Some(Some(l)) => Ok(l.local_uri()),
            _ => bail!("host {} runs no libvirt daemon", self.hosts[i].ns),
        }
    }

    /// Live-migrates guest domain `vm` from host `from` to host `to` with libvirt alone
    /// (`virsh migrate --live --p2p --persistent --undefinesource`), as an operator would
    /// without the controller.
    pub fn virsh_migrate(&self, vm: &str, from: usize, to: usize) -> Result<String> {
        let dest = match self.libvirtds.get(to) {
            Some(Some(l)) => l.tcp_uri(),
            _ => bail!("host {} runs no libvirt daemon", self.hosts[to].ns),
        };
        let args = [
            "migrate",
            "--live",
            "--p2p",
            "--persistent",
            "--undefinesource",
            vm,
            &dest,
        ];
        crate::libvirt::virsh(&self.libvirt_uri(from)?, &args)
    }

    /// VM `j` of host `i` as a QEMU guest: addressed like a namespace VM, its port a tap
    /// named after host and VM (unique across hosts, so it can migrate anywhere).
    fn guest_vm(&self, i: usize, j: usize) -> Result<Vm> {
        let mut vm = self.vm_at(i, j, format!("t{}v{}", i + 1, j + 1))?;
        vm.guest = Some(Guest {
            console: guest_dir(&self.spec.name).join(format!("{}.console", vm.ns)),
            domain: vm.ns.clone(),
        });
        Ok(vm)
    }

    /// Boots every guest through its host's libvirt daemon, all at once, and waits until
    /// each has its network up.
    fn boot_guests(&self, quiet: bool) -> Result<()> {
        let image = crate::guest::image()?;
        step(
            quiet,
            &format!("booting {} QEMU guests (TCG)", self.vms.len()),
        );
        let started = Instant::now();
        let ring: Vec<&Vm> = self.vms.iter().filter(|v| v.env == 0).collect();
        let peers: Vec<String> = ring
            .iter()
            .map(|v| format!("{}:{NEMO_PORT}", v.ip))
            .collect();
        let jobs: Vec<_> = self
            .vms
            .iter()
            .map(|v| {
                let nemo = self.spec.nemo.and_then(|n| {
                    let rank = ring.iter().position(|r| r.ns == v.ns)?;
                    Some(format!(
                        "{rank}/{}/{}/{}/{}",
                        n.iters,
                        n.halo,
                        n.work,
                        peers.join(",")
                    ))
                });
                let g = v.guest.clone().expect("a QEMU lab's VMs are guests");
                // Guests on the first host probe their environment's peer on the second.
                let probe = self
                    .vms
                    .iter()
                    .find(|p| p.host == 1 && p.env == v.env && p.ip.octets()[3] == v.ip.octets()[3])
                    .filter(|_| self.spec.probes && v.host == 0)
                    .map(|p| p.ip);
                let spec = crate::libvirt::GuestSpec {
                    name: g.domain.clone(),
                    mac: v.mac,
                    ip: v.ip,
                    prefix_len: 16,
                    mtu: self.spec.vm_mtu(),
                    port: v.port.clone(),
                    probe,
                    probe_interval_ms: self.spec.probe_interval_ms,
                    nemo,
                    // Linux VXLAN hosts bridge their VMs with the VXLAN device.
                    bridge: (self.hosts[v.host].kind == HostKind::LinuxVxlan)
                        .then(|| format!("br{}", v.env)),
                    console: g.console.clone(),
                    memory_mib: 128,
                    balloon: self.spec.managed.is_some(),
                    burn: self.spec.managed.as_ref().is_some_and(|m| m.burn),
                };
                let xml = crate::libvirt::domain_xml(&image, &spec);
                let uri = self.libvirt_uri(v.host);
                thread::spawn(move || -> Result<()> {
                    crate::libvirt::boot(&uri?, &xml, &g.console, Duration::from_secs(120))
                })
            })
            .collect();
        for j in jobs {
            j.join()
                .map_err(|_| anyhow::anyhow!("a guest's boot thread panicked"))??;
        }
        step(
            quiet,
            &format!("guests up in {:.1} s", started.elapsed().as_secs_f64()),
        );
        Ok(())
    }

    /// A host running Linux's VXLAN: vx0 and the VM ports on one bridge, with head-end
    /// replication to every other overlay host (Violin or Linux).
    fn make_linux_vxlan(&self, i: usize) -> Result<()> {
        let h = &self.hosts[i];
        let vm_mtu = self.spec.vm_mtu().to_string();
        // The baseline is Linux's VXLAN as a stock kernel runs it: where Docker has loaded
        // br_netfilter, every bridged frame would also cross the IP hooks (a fifth of the
        // machine's CPU time per frame at line rate, bench/README "The paths"), a cost of
        // that module, not of VXLAN, and one Violin's hosts, with no bridge, never pay.
        bridges_skip_netfilter(&h.ns);
        for env in 0..self.spec.envs {
            let vni = BASE_VNI + env as u32;
            let vx = format!("vx{env}");
            let br = format!("br{env}");
            let vni = vni.to_string();
            let local = h.underlay_ip.to_string();
            let mut args = vec![
                "link", "add", &vx, "type", "vxlan", "id", &vni, "local", &local, "dstport",
                "4789", "dev", "ul0",
            ];
            // Violin sends IPv6 tunnels with a zero UDP checksum (RFC 6935), which Linux
            // takes only when told to.
            if h.underlay_ip.is_ipv6() {
                args.push("udp6zerocsumrx");
            }
            ns_run(&h.ns, "ip", &args)?;
            ns_run(&h.ns, "ip", &["link", "add", &br, "type", "bridge"])?;
            ns_run(
                &h.ns,
                "ip",
                &["link", "set", &vx, "mtu", &vm_mtu, "master", &br, "up"],
            )?;
            // A guest's tap is libvirt's to bridge, when the guest starts.
            for vm in self
                .vms
                .iter()
                .filter(|v| v.host == i && v.env == env && v.guest.is_none())
            {
                ns_run(&h.ns, "ip", &["link", "set", &vm.port, "master", &br])?;
            }
            ns_run(&h.ns, "ip", &["link", "set", &br, "up"])?;
            let others = self
                .hosts
                .iter()
                .filter(|p| p.index != i && p.kind != HostKind::Bare);
            for peer in others {
                ns_run(
                    &h.ns,
                    "bridge",
                    &[
                        "fdb",
                        "append",
                        "00:00:00:00:00:00",
                        "dev",
                        &vx,
                        "dst",
                        &peer.underlay_ip.to_string(),
                    ],
                )?;
            }
        }
        Ok(())
    }

    fn envs_on(&self, host: usize) -> Vec<usize> {
        let mut e: Vec<usize> = self
            .vms
            .iter()
            .filter(|v| v.host == host)
            .map(|v| v.env)
            .collect();
        e.sort();
        e.dedup();
        e
    }

    /// Host `i`'s configuration with `extra` (policy keys and tables) added to its first
    /// environment.
    pub fn config_with(&self, i: usize, extra: &str) -> String {
        let base = self.config_for(i);
        let at = base.find("ports = [").expect("environment ports");
        let end = at + base[at..].find('\n').expect("line end") + 1;
        format!("{}{}{}", &base[..end], extra, &base[end..])
    }

    /// Host `i`'s configuration with the per-pair counting on or off (`count_vm_pairs`).
    pub fn config_counting(&self, i: usize, on: bool) -> String {
        let base = self.config_for(i);
        let config = base.replacen(
            "\nport_mode",
            &format!("\ncount_vm_pairs = {on}\nport_mode"),
            1,
        );
        assert_ne!(
            config, base,
            "no port_mode line to put count_vm_pairs before"
        );
        config
    }

    /// The `violind` configuration of Violin host `i`.
    pub fn config_for(&self, i: usize) -> String {
        let h = &self.hosts[i];
        let mut s = String::new();
        let _ = writeln!(s, "# Generated by the Violin lab {:?}.", self.spec.name);
        let _ = writeln!(s, "host_id = {:?}\nnetns = {:?}", h.host_id(), h.ns);
        let _ = writeln!(s, "debug_datapath = {}", self.spec.debug_datapath);
        let mode = if h.kind == HostKind::ViolinXdp {
            "xdp"
        } else {
            "tc"
        };
        let _ = writeln!(s, "port_mode = {mode:?}");
        let _ = writeln!(s, "api_listen = \"{}\"", h.api_addr());
        if self.spec.controller {
            // The daemon's own API has a token of its own: neither the controller's (a
            // host must not hold an administrator's) nor the host's credential.
            let _ = writeln!(s, "api_token_file = {:?}", self.daemon_token_file());
        }
        s.push('\n');
        let _ = writeln!(
            s,
            "[underlay]\ninterface = \"ul0\"\naddress = \"{}\"\n",
            h.underlay_ip
        );
        if let Some(Some(l)) = self.libvirtds.get(i) {
            let _ = writeln!(
                s,
                "[libvirt]\nuri = {:?}\nremote_uri = {:?}",
                l.local_uri(),
                l.tcp_uri()
            );
            if let Some(m) = &self.spec.managed {
                let _ = writeln!(
                    s,
                    "report_ms = {}\ndomain = {:?}\ncpus = {:?}\nmemory_mib = {}",
                    m.report_ms,
                    m.domain_of(i),
                    m.cpus,
                    m.memory_mib
                );
            }
            s.push('\n');
        }
        if self.spec.controller {
            let _ = writeln!(
                s,
                "[controller]\nurl = {:?}\ntoken_file = {:?}",
                self.controller_urls(),
                self.host_token_file(i)
            );
            if !self.spec.measure {
                s.push_str("measure_ms = 0\n");
            }
            return s;
        }
        let mine = self.envs_on(i);
        for &env in &mine {
            let ports: Vec<String> = self
                .vms
                .iter()
                .filter(|v| v.host == i && v.env == env)
                .map(|v| format!("{:?}", v.port))
                .collect();
            let _ = writeln!(
                s,
                "[[environment]]\nname = \"env{env}\"\nvni = {}\nports = [{}]\n",
                BASE_VNI + env as u32,
                ports.join(", ")
            );
        }
        let peers = self
            .hosts
            .iter()
            .enumerate()
            .filter(|(p, h)| *p != i && h.kind != HostKind::Bare);
        for (p, peer) in peers {
            let shared: Vec<String> = self
                .envs_on(p)
                .into_iter()
                .filter(|e| mine.contains(e))
                .map(|e| (BASE_VNI + e as u32).to_string())
                .collect();
            let _ = writeln!(
                s,
                "[[peer]]\naddress = \"{}\"\nvnis = [{}]\n",
                peer.underlay_ip,
                shared.join(", ")
            );
        }
        s
    }

    /// Starts (or restarts) `violind` for Violin host `i` and waits until it is ready.
    pub fn start_daemon(&mut self, i: usize) -> Result<()> {
        let h = self.hosts[i].clone();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&h.log)
            .with_context(|| format!("opening {}", h.log.display()))?;
        let ready = Path::new("/run/violin").join(h.host_id()).join("ready");
        let _ = fs::remove_file(&ready);
        let mut child = Command::new(&self.spec.violind)
            .args(["run", "--config"])
            .arg(&h.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.spec.violind.display()))?;
        let deadline = Instant::now() + Duration::from_secs(60);
        while !ready.exists() {
            if let Some(status) = child.try_wait()? {
                bail!("violind for {} exited during start-up ({status})", h.ns);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("violind for {} was not ready within 60 s", h.ns);
            }
            thread::sleep(Duration::from_millis(50));
        }
        self.daemons[i] = Some(child);
        Ok(())
    }

    /// Replaces host `i`'s configuration, sends SIGHUP and waits for the daemon to report
    /// the outcome: Ok if it applied the file, Err with its message if it kept the old one.
    pub fn reload(&self, i: usize, config: &str) -> Result<()> {
        let h = &self.hosts[i];
        let count = |pat: &str| {
            fs::read_to_string(&h.log)
                .unwrap_or_default()
                .matches(pat)
                .count()
        };
        let (ok0, failed0) = (count("reload complete"), count("reload failed"));
        fs::write(&h.config, config)?;
        let pid = self.daemon_pid(i).context("daemon not running")?;
        // SAFETY: kill(2) takes only integers and accesses no memory of this process. `pid`
        // is the id of the Child in self.daemons[i], stored only after try_wait() found it
        // running and never waited for while stored, so the pid cannot have been reused.
        unsafe { libc::kill(pid as i32, libc::SIGHUP) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if count("reload complete") > ok0 {
                return Ok(());
            }
            if count("reload failed") > failed0 {
                let log = fs::read_to_string(&h.log).unwrap_or_default();
                let line = log.lines().rev().find(|l| l.contains("reload failed"));
                bail!("{}", line.unwrap_or("reload failed"));
            }
            if Instant::now() > deadline {
                bail!("violind on {} did not finish reloading within 30 s", h.ns);
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills `violind` of host `i` without letting it clean up (a crash).
    pub fn kill_daemon(&mut self, i: usize) -> Result<()> {
        if let Some(mut c) = self.daemons[i].take() {
            c.kill()?;
            c.wait()?;
        }
        Ok(())
    }

    /// Sends host `i`'s daemon `signal` (e.g. `SIGUSR1`, as a service manager stops it)
    /// and waits for it to exit.
    pub fn signal_daemon(&mut self, i: usize, signal: &str) -> Result<std::process::ExitStatus> {
        let Some(mut c) = self.daemons[i].take() else {
            bail!("no daemon runs on {}", self.hosts[i].ns);
        };
        let sig = signal.strip_prefix("SIG").unwrap_or(signal);
        run("kill", &[&format!("-{sig}"), &c.id().to_string()])?;
        Ok(c.wait()?)
    }

    /// Asks `violind` of host `i` to exit; with `keep_forwarding` the datapath stays.
    pub fn stop_daemon(&mut self, i: usize, keep_forwarding: bool) -> Result<()> {
        let cfg = self.hosts[i].config.to_string_lossy().into_owned();
        let mut args = vec!["stop", "--config", cfg.as_str()];
        if keep_forwarding {
            args.push("--keep-forwarding");
        }
        run(&self.spec.violind.to_string_lossy(), &args)?;
        if let Some(mut c) = self.daemons[i].take() {
            c.wait()?;
        }
        Ok(())
    }

    pub fn daemon_pid(&self, i: usize) -> Option<u32> {
        self.daemons[i].as_ref().map(|c| c.id())
    }

    /// `violind stats --json` of host `i`.
    pub fn stats(&self, i: usize) -> Result<serde_json::Value> {
        let cfg = self.hosts[i].config.to_string_lossy().into_owned();
        let out = run(
            &self.spec.violind.to_string_lossy(),
            &["stats", "--config", &cfg, "--json"],
        )?;
        serde_json::from_str(&out).context("parsing violind stats --json")
    }

    /// Frames host `i` sent peer `addr` (an underlay address); None while it has no such
    /// peer.
    pub fn peer_tx(&self, i: usize, addr: IpAddr) -> Option<u64> {
        let stats = self.stats(i).ok()?;
        stats["peers"]
            .as_array()?
            .iter()
            .find(|p| p["address"] == addr.to_string())
            .and_then(|p| p["stats"]["tx"]["packets"].as_u64())
    }

    pub fn stats_text(&self, i: usize) -> Result<String> {
        let cfg = self.hosts[i].config.to_string_lossy().into_owned();
        run(
            &self.spec.violind.to_string_lossy(),
            &["stats", "--config", &cfg],
        )
    }

    /// The `n`-th VM (0-based) of environment `env` on host `host`.
    pub fn vm(&self, host: usize, env: usize, n: usize) -> &Vm {
        self.vms
            .iter()
            .filter(|v| v.host == host && v.env == env)
            .nth(n)
            .unwrap_or_else(|| panic!("no VM {n} of env {env} on host {host}"))
    }

    /// Logs of every daemon, for failure messages.
    pub fn daemon_logs(&self) -> String {
        let mut s = String::new();
        for h in self.hosts.iter().filter(|h| h.kind.runs_violind()) {
            let log = fs::read_to_string(&h.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            let _ = writeln!(s, "--- violind {} (last lines) ---", h.ns);
            for l in tail.iter().rev() {
                let _ = writeln!(s, "{l}");
            }
        }
        s
    }

    /// How to use the lab, for `cargo xtask lab up`.
    pub fn describe(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Lab {:?}: {} hosts, {} VMs, underlay MTU {} (VM MTU {}).",
            self.spec.name,
            self.hosts.len(),
            self.vms.len(),
            self.spec.mtu,
            self.spec.vm_mtu()
        );
        if let Some(d) = &self.spec.domains {
            let _ = writeln!(
                s,
                "{} domains behind uplinks of {} Mbit/s, {} ms, {}% loss each way:",
                d.count, d.rate_mbit, d.delay_ms, d.loss_pct
            );
            for k in 0..d.count {
                let hosts: Vec<&str> = (0..self.hosts.len())
                    .filter(|&i| self.domain_of(i) == k)
                    .map(|i| self.hosts[i].ns.as_str())
                    .collect();
                let _ = writeln!(s, "  domain {k}: {}", hosts.join(" "));
            }
        }
        for v in &self.vms {
            let _ = writeln!(
                s,
                "  {:<14} host {:<10} env {} (VNI {})  {:<14} {}",
                v.ns,
                self.hosts[v.host].ns,
                v.env,
                v.vni,
                v.ip,
                mac_string(&v.mac)
            );
        }
        match self.vms.first() {
            Some(Vm {
                guest: Some(g),
                host,
                ..
            }) => {
                let _ = writeln!(
                    s,
                    "\nA guest's console: virsh -c '{}' console {}   (log: {})",
                    self.libvirt_uri(*host).unwrap_or_default(),
                    g.domain,
                    g.console.display()
                );
            }
            Some(v) => {
                let _ = writeln!(s, "\nEnter a VM:      ip netns exec {} bash", v.ns);
            }
            None => {}
        }
        if let Some(h) = self.hosts.first() {
            let _ = writeln!(
                s,
                "Counters:        target/debug/violind stats --config {}",
                h.config.display()
            );
            let _ = writeln!(s, "Daemon log:      {}", h.log.display());
        }
        if self.spec.controller {
            let _ = writeln!(
                s,
                "Controller:      {} (log {}); specs in {}",
                self.controller_urls(),
                self.dir.join("controller.log").display(),
                self.dir.display()
            );
            let _ = writeln!(
                s,
                "violinctl:       ip netns exec {} {} --url {} --token-file {} hosts",
                switch_ns(&self.spec.name),
                self.sibling("violinctl").display(),
                self.controller_urls(),
                self.token_file().display()
            );
        }
        if self.spec.viocluster.is_some() {
            s.push_str(&self.describe_clusters());
        }
        let _ = writeln!(
            s,
            "Tear down:       cargo xtask lab down --name {}",
            self.spec.name
        );
        s
    }

    /// Leaves the lab running after this process exits (`lab up`).
    pub fn detach(mut self) {
        self.torn_down = true;
        for l in self.libvirtds.iter_mut().filter_map(Option::take) {
            // The daemons and guests keep running; `lab down` kills them by name.
            std::mem::forget(l);
        }
        for c in self.daemons.iter_mut() {
            // The daemons keep running; `lab down` stops them through their pid files.
            drop(c.take());
        }
        // So do the Slurm daemons (their pid files are in the clusters' directories).
        for c in self.slurm.drain(..) {
            std::mem::forget(c);
        }
        // And the etcd members under the replicas (`lab down` kills what runs in the
        // lab's namespaces, theirs included).
        if let Some(etcd) = self.etcd.take() {
            std::mem::forget(etcd);
        }
    }

    fn down_now(&mut self) {
        if self.torn_down {
            return;
        }
        self.torn_down = true;
        // The controller first: a brokering round could boot a borrowed VM meanwhile.
        let _ = self.kill_controller();
        self.slurm.clear();
        for i in 0..self.daemons.len() {
            if self.daemons[i].is_some() && self.stop_daemon(i, false).is_err() {
                let _ = self.kill_daemon(i);
            }
        }
        self.stop_libvirtds();
        if let Err(e) = down(&self.spec.name, true) {
            eprintln!("lab {}: teardown: {e:#}", self.spec.name);
        }
    }

    /// Stops the daemons (each detaching its datapath) and removes the lab; reports the
    /// first failure after cleaning up everything it can.
    pub fn down(mut self) -> Result<()> {
        self.torn_down = true;
        // The controller first: a brokering round could boot a borrowed VM meanwhile.
        let _ = self.kill_controller();
        self.slurm.clear();
        let mut first_err = None;
        for i in 0..self.daemons.len() {
            if self.daemons[i].is_some() {
                if let Err(e) = self.stop_daemon(i, false) {
                    first_err.get_or_insert(e);
                }
            }
        }
        let _ = self.kill_controller();
        self.stop_libvirtds();
        let removed = down(&self.spec.name, true);
        match first_err {
            Some(e) => Err(e),
            None => removed,
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.down_now();
    }
}

/// Removes everything a lab named `name` made: daemons, pins, namespaces (their links go
/// with them), files.
/// Works from names alone, so it also cleans up after a crash.
pub fn down(name: &str, quiet: bool) -> Result<()> {
    // Guests first: a QEMU holds its tap, and with it the host's namespace.
    crate::libvirt::cleanup(&format!("{name}-"));
    let _ = fs::remove_dir_all(guest_dir(name));
    // Every replica's (controller.pid, controller-2.pid, ...).
    if let Ok(rd) = fs::read_dir(state_dir(name)) {
        for e in rd.flatten() {
            let n = e.file_name().to_string_lossy().into_owned();
            if !(n.starts_with("controller") && n.ends_with(".pid")) {
                continue;
            }
            if let Some(pid) = fs::read_to_string(e.path())
                .ok()
                .and_then(|s| s.trim().parse::<i32>().ok())
            {
                stop_pid(pid);
            }
        }
    }
    // Slurm daemons of a lab that crashed (a live lab's clusters stop them themselves).
    if let Ok(rd) = fs::read_dir(state_dir(name)) {
        for e in rd.flatten() {
            if e.file_name().to_string_lossy().starts_with("slurm") {
                crate::slurm::kill_daemons(&e.path());
            }
        }
    }
    let prefix = format!("{name}-");
    let host_ids: Vec<String> = fs::read_dir("/run/violin")
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with(&prefix))
                .collect()
        })
        .unwrap_or_default();
    for id in &host_ids {
        let pid_file = Path::new("/run/violin").join(id).join("violind.pid");
        if let Some(pid) = fs::read_to_string(&pid_file)
            .ok()
            .and_then(|s| s.trim().parse::<i32>().ok())
        {
            stop_pid(pid);
        }
        let _ = fs::remove_dir_all(Path::new("/run/violin").join(id));
    }
    // Pins of hosts whose daemon died: dropping them detaches the links and frees maps.
    if let Ok(rd) = fs::read_dir(PIN_ROOT) {
        for e in rd.filter_map(|e| e.ok()) {
            if e.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    let namespaces = ip(&["netns", "list"]).unwrap_or_default();
    let mut removed = 0;
    for ns in namespaces
        .lines()
        .filter_map(|l| l.split_whitespace().next())
    {
        if ns.starts_with(&prefix) {
            crate::sys::kill_ns_processes(ns);
            ip(&["netns", "del", ns])?;
            removed += 1;
        }
    }
    let _ = fs::remove_dir_all(state_dir(name));
    if !quiet {
        eprintln!("lab {name}: removed {removed} namespaces and their links");
    }
    Ok(())
}

/// Whether a process runs; an exited, unreaped child (zombie) does not.
fn alive(pid: i32) -> bool {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|s| s.trim_start().chars().next());
    !matches!(state, Some('Z') | Some('X') | None)
}

fn stop_pid(pid: i32) {
    // SAFETY: kill(2) takes only integers and accesses no memory of this process, so the
    // call is sound for any pid. Which process it reaches is a correctness matter: `pid`
    // comes from a lab pid file and is not checked to be positive or still ours.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(50));
    }
    if alive(pid) {
        // SAFETY: kill(2) again, with only integer arguments and no memory access; same pid
        // as the SIGTERM above.
        unsafe { libc::kill(pid, libc::SIGKILL) };
    }
}
