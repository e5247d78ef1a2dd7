//! `violind`'s TOML configuration: parsed once into the contract's types (so every value
//! is valid from here on), then checked across fields. Every error names the field.
use std::{collections::BTreeMap, net::IpAddr, path::Path};

use dataplane_common::maps::MAX_SLOTS;
use serde::Deserialize;
pub use violin_api::share::{Environment, Peer};
use violin_api::{parse::from_toml, FieldError, IfName, Name};

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Names this host's pin directory, pid file and logs; unique per machine.
    pub host_id: Name,
    /// Network namespace (under /run/netns) to run in; the daemon enters it itself so that
    /// it keeps seeing the machine's bpffs.
    #[serde(default)]
    pub netns: Option<Name>,
    /// aya-log debug messages from the datapath's programs, XDP and TC (costly; off by
    /// default).
    #[serde(default)]
    pub debug_datapath: bool,
    /// How frames from VM ports enter the datapath.
    #[serde(default)]
    pub port_mode: PortMode,
    /// Count what each VM pair sends (the traffic matrix VTTIF infers the application's
    /// topology from). Off, VTTIF sees nothing of this host's VMs.
    #[serde(default = "yes")]
    pub count_vm_pairs: bool,
    /// Address for the daemon's HTTP endpoint (`/metrics`, `/v1/stats`); none if unset.
    #[serde(default)]
    pub api_listen: Option<std::net::SocketAddr>,
    /// File holding the bearer token `/v1` requires; defaults to the controller's.
    #[serde(default)]
    pub api_token_file: Option<std::path::PathBuf>,
    pub underlay: Underlay,
    /// When set, environments and peers come from the controller (this file must list
    /// none): the daemon registers, receives its share, and follows the changes.
    #[serde(default)]
    pub controller: Option<Controller>,
    /// When set, violind follows this host's libvirt daemon: it reports the domains to
    /// the controller and moves a migrating VM's forwarding entry the instant libvirt
    /// says the VM stopped here or resumed here.
    #[serde(default)]
    pub libvirt: Option<Libvirt>,
    #[serde(default, rename = "environment")]
    pub environments: Vec<Environment>,
    #[serde(default, rename = "peer")]
    pub peers: Vec<Peer>,
}

fn yes() -> bool {
    true
}

/// `tc` (the default): TC programs on the VM ports, the underlay NIC and a flow-based
/// VXLAN device. They keep the skb, so a VM's TSO super-frames and pending checksums are
/// encapsulated whole, and a stream's segments arrive merged by the underlay's GRO.
/// `xdp`: XDP programs on the VM ports and the underlay NIC (every frame on its own; VMs
/// must checksum what they send; floods through the AF_XDP slow path), for NICs that run
/// XDP natively.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum PortMode {
    Xdp,
    #[default]
    Tc,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Underlay {
    pub interface: IfName,
    pub address: IpAddr,
    /// Underlay IP MTU; defaults to the interface's MTU.
    #[serde(default)]
    pub mtu: Option<u32>,
}

#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Controller {
    /// The controller's API, e.g. `http://10.250.0.254:7800` (or `https://`); with
    /// replicas, their URLs comma-separated: violind follows the leader, and the next
    /// replica when the one it speaks to cannot be reached.
    pub url: String,
    /// File holding the bearer token.
    pub token_file: std::path::PathBuf,
    /// How often the VM pairs' traffic is reported for the controller's topology
    /// inference (VTTIF), in ms: 50 (20 Hz, the paper's fastest) to 500 (the controller
    /// aggregates over 2 s and needs several reports per host in that window).
    #[serde(default = "default_traffic_report_ms")]
    pub traffic_report_ms: u32,
    /// How often the other hosts are measured (round trip, available bandwidth) for
    /// VADAPT's host matrix, in ms: 200 to 60000; 0 turns the measurement off.
    #[serde(default = "default_measure_ms")]
    pub measure_ms: u32,
    /// The UDP port the measurement probes use on the underlay address.
    #[serde(default = "default_measure_port")]
    pub measure_port: u16,
    /// How often the datapath's drop counters and map fill are reported for
    /// `violinctl status`, in ms: 1000 to 60000.
    #[serde(default = "default_health_report_ms")]
    pub health_report_ms: u32,
}

fn default_health_report_ms() -> u32 {
    5000
}

fn default_measure_ms() -> u32 {
    2000
}

fn default_measure_port() -> u16 {
    4791
}

fn default_traffic_report_ms() -> u32 {
    250
}

#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Libvirt {
    /// How violind reaches the local daemon, e.g. `qemu:///system`.
    pub uri: String,
    /// How the controller and the other hosts' daemons reach it for migrations, e.g.
    /// `qemu+tls://h1.example/system`; registered with the controller.
    #[serde(default)]
    pub remote_uri: Option<String>,
    /// How often the domains' CPU and memory are sampled and reported (the adaptation
    /// manager's monitoring), in ms: 500 to 60000.
    #[serde(default = "default_report_ms")]
    pub report_ms: u32,
    /// The administrative domain (site, cluster) this host belongs to: the adaptation
    /// manager balances load between domains and moves environments across them.
    #[serde(default)]
    pub domain: Option<Name>,
    /// What this host offers its VMs: cores (default: its online CPUs) and MiB (default:
    /// its memory).
    #[serde(default)]
    pub cpus: Option<f64>,
    #[serde(default)]
    pub memory_mib: Option<u64>,
}

fn default_report_ms() -> u32 {
    5000
}

/// A configuration error naming the offending field (and its line, when from the file).
pub type ConfigError = FieldError;

fn err(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    FieldError::new(field, reason)
}

impl Config {
    pub fn load(path: &Path) -> anyhow::Result<Config> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read config {}: {e}", path.display()))?;
        Config::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Config> {
        let config: Config = from_toml(text, "config")?;
        config.validate()?;
        if let Some(l) = &config.libvirt {
            for (field, uri) in [
                ("libvirt.uri", Some(&l.uri)),
                ("libvirt.remote_uri", l.remote_uri.as_ref()),
            ] {
                if let Some(u) = uri.filter(|u| !u.contains("://")) {
                    return Err(err(
                        field,
                        format!("{u:?} is not a libvirt URI (driver://[host]/path)"),
                    )
                    .into());
                }
            }
            if !(500..=60_000).contains(&l.report_ms) {
                return Err(err(
                    "libvirt.report_ms",
                    format!("{} is outside 500..=60000", l.report_ms),
                )
                .into());
            }
            if let Some(c) = l
                .cpus
                .filter(|c| !(c.is_finite() && *c > 0.0 && *c <= 4096.0))
            {
                return Err(err("libvirt.cpus", format!("{c} is outside (0, 4096]")).into());
            }
            if l.memory_mib == Some(0) {
                return Err(err("libvirt.memory_mib", "must be at least 1").into());
            }
        }
        if let Some(c) = &config.controller {
            let urls = violin_api::client::urls(&c.url);
            if urls.is_empty() {
                return Err(err("controller.url", "no URL given").into());
            }
            if let Some(u) = urls
                .iter()
                .find(|u| !u.starts_with("http://") && !u.starts_with("https://"))
            {
                return Err(err("controller.url", format!("{u:?} is not an http(s) URL")).into());
            }
            if !(50..=500).contains(&c.traffic_report_ms) {
                return Err(err(
                    "controller.traffic_report_ms",
                    format!("{} is outside 50..=500", c.traffic_report_ms),
                )
                .into());
            }
            if !(1000..=60_000).contains(&c.health_report_ms) {
                return Err(err(
                    "controller.health_report_ms",
                    format!("{} is outside 1000..=60000", c.health_report_ms),
                )
                .into());
            }
            if c.measure_ms != 0 && !(200..=60_000).contains(&c.measure_ms) {
                return Err(err(
                    "controller.measure_ms",
                    format!("{} is outside 200..=60000 (0 turns it off)", c.measure_ms),
                )
                .into());
            }
            if c.measure_port == 0 || c.measure_port == 4789 {
                return Err(err(
                    "controller.measure_port",
                    format!(
                        "{}: give a free UDP port other than VXLAN's 4789",
                        c.measure_port
                    ),
                )
                .into());
            }
            if !config.environments.is_empty() {
                return Err(err(
                    "environment",
                    "must be empty when [controller] is set: the controller provides the environments",
                )
                .into());
            }
            if !config.peers.is_empty() {
                return Err(err(
                    "peer",
                    "must be empty when [controller] is set: the controller provides the peers",
                )
                .into());
            }
        }
        Ok(config)
    }

    /// The bearer token of the daemon's `/v1` API, if one is configured.
    pub fn api_token(&self) -> anyhow::Result<Option<String>> {
        let (file, field) = match (&self.api_token_file, &self.controller) {
            (Some(f), _) => (f, "api_token_file"),
            (None, Some(c)) => (&c.token_file, "controller.token_file"),
            (None, None) => return Ok(None),
        };
        let token = std::fs::read_to_string(file)
            .map_err(|e| err(field, format!("cannot read {}: {e}", file.display())))?
            .trim()
            .to_string();
        if token.len() < 16 {
            return Err(err(field, "the token must be at least 16 characters").into());
        }
        Ok(Some(token))
    }

    /// This file's host settings with the controller's share of environments and peers.
    pub fn with_share(
        &self,
        environments: Vec<Environment>,
        peers: Vec<Peer>,
    ) -> Result<Config, ConfigError> {
        let mut c = self.clone();
        c.environments = environments;
        c.peers = peers;
        c.validate()?;
        Ok(c)
    }

    /// Checks across fields (each value is valid on its own once parsed).
    pub fn validate(&self) -> Result<(), ConfigError> {
        let addr = self.underlay.address;
        if !violin_api::share::is_unicast(addr) {
            return Err(err(
                "underlay.address",
                format!("{addr} is not a unicast address that reaches other hosts"),
            ));
        }
        if let Some(mtu) = self.underlay.mtu {
            // IPv6 links carry at least 1280 bytes (RFC 8200).
            let least = if addr.is_ipv6() { 1280 } else { 576 };
            if !(least..=9216).contains(&mtu) {
                return Err(err(
                    "underlay.mtu",
                    format!("{mtu} is outside {least}..=9216"),
                ));
            }
        }
        let mut vnis = BTreeMap::new();
        let mut names = BTreeMap::new();
        let mut ports = BTreeMap::new();
        for (i, env) in self.environments.iter().enumerate() {
            let at = |f: &str| format!("environment[{i}].{f}");
            if let Some(j) = vnis.insert(env.vni, i) {
                return Err(err(
                    at("vni"),
                    format!("{} is already used by environment[{j}]", env.vni),
                ));
            }
            if let Some(j) = names.insert(env.name.as_str(), i) {
                return Err(err(
                    at("name"),
                    format!(
                        "{:?} is already used by environment[{j}]",
                        env.name.as_str()
                    ),
                ));
            }
            for (k, port) in env.ports.iter().enumerate() {
                let field = at(&format!("ports[{k}]"));
                if *port == self.underlay.interface {
                    return Err(err(field, "the underlay interface cannot be a VM port"));
                }
                if let Some(other) = ports.insert(port.as_str(), field.clone()) {
                    return Err(err(
                        field,
                        format!("{:?} is already listed at {other}", port.as_str()),
                    ));
                }
            }
            for (k, vm) in env.vms.iter().enumerate() {
                if !env.ports.contains(&vm.port) {
                    return Err(err(
                        at(&format!("vm[{k}].port")),
                        format!(
                            "{:?} is not one of this environment's ports",
                            vm.port.as_str()
                        ),
                    ));
                }
            }
            self.validate_rules(env, &at)?;
            if let Some(hub) = env.hub {
                let peer = self
                    .peers
                    .iter()
                    .any(|p| p.address == hub && p.vnis.contains(&env.vni));
                if hub != addr && !peer {
                    return Err(err(
                        at("hub"),
                        format!(
                            "{hub} is neither this host nor a peer serving VNI {}",
                            env.vni
                        ),
                    ));
                }
            }
        }
        if ports.len() >= MAX_SLOTS as usize {
            return Err(err(
                "environment",
                format!("{} ports; at most {} per host", ports.len(), MAX_SLOTS - 1),
            ));
        }
        self.validate_peers(&vnis)
    }

    fn validate_rules(
        &self,
        env: &Environment,
        at: &impl Fn(&str) -> String,
    ) -> Result<(), ConfigError> {
        for (k, rule) in env.rules.iter().enumerate() {
            let field = |f: &str| at(&format!("rule[{k}].{f}"));
            match (&rule.edge, &rule.interface) {
                (Some(peer), None) => {
                    let linked = self
                        .peers
                        .iter()
                        .any(|p| p.address == *peer && p.vnis.contains(&env.vni));
                    if !linked {
                        return Err(err(
                            field("edge"),
                            format!("{peer} is not a peer serving VNI {}", env.vni),
                        ));
                    }
                }
                (None, Some(port)) => {
                    if !env.ports.contains(port) {
                        return Err(err(
                            field("interface"),
                            format!("{:?} is not one of this environment's ports", port.as_str()),
                        ));
                    }
                }
                _ => {
                    return Err(err(
                        field("edge"),
                        "give exactly one of edge (a peer address) or interface (a port)",
                    ))
                }
            }
        }
        Ok(())
    }

    fn validate_peers(&self, vnis: &BTreeMap<violin_api::Vni, usize>) -> Result<(), ConfigError> {
        let mut peers = BTreeMap::new();
        for (i, peer) in self.peers.iter().enumerate() {
            let field = format!("peer[{i}].address");
            let a = peer.address;
            if a == self.underlay.address {
                return Err(err(
                    field,
                    format!("{a} is this host's own underlay address"),
                ));
            }
            if !violin_api::share::is_unicast(a) {
                return Err(err(
                    field,
                    format!("{a} is not a unicast address that reaches other hosts"),
                ));
            }
            if a.is_ipv6() != self.underlay.address.is_ipv6() {
                return Err(err(
                    field,
                    format!(
                        "{a} is not of the family of underlay.address {}: a host's \
                         underlay is IPv4 or IPv6, not both",
                        self.underlay.address
                    ),
                ));
            }
            if let Some(j) = peers.insert(a, i) {
                return Err(err(field, format!("{a} is already peer[{j}]")));
            }
            for (k, vni) in peer.vnis.iter().enumerate() {
                if !vnis.contains_key(vni) {
                    return Err(err(
                        format!("peer[{i}].vnis[{k}]"),
                        format!("{vni} is not the VNI of any environment on this host"),
                    ));
                }
            }
        }
        Ok(())
    }

    /// All VM ports with their VNI, in configuration order.
    pub fn ports(&self) -> impl Iterator<Item = (&str, u32)> {
        self.environments
            .iter()
            .flat_map(|e| e.ports.iter().map(move |p| (p.as_str(), e.vni.get())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
host_id = "h1"
netns = "lab-h1"
[underlay]
interface = "ul0"
address = "10.0.0.1"
[[environment]]
name = "blue"
vni = 100
ports = ["vm1", "vm2"]
[[peer]]
address = "10.0.0.2"
vnis = [100]
"#;

    fn error_of(text: &str) -> String {
        Config::parse(text).unwrap_err().to_string()
    }

    #[test]
    fn a_hub_is_this_host_or_a_peer_of_the_environment() {
        assert!(
            Config::parse(&GOOD.replace("vni = 100\n", "vni = 100\nhub = \"10.0.0.2\"\n")).is_ok()
        );
        assert!(
            Config::parse(&GOOD.replace("vni = 100\n", "vni = 100\nhub = \"10.0.0.1\"\n")).is_ok()
        );
        let e = error_of(&GOOD.replace("vni = 100\n", "vni = 100\nhub = \"10.0.0.9\"\n"));
        assert!(e.contains("environment[0].hub"), "{e}");
    }

    #[test]
    fn an_ipv6_underlay_takes_ipv6_peers_only() {
        let v6 = GOOD
            .replace("address = \"10.0.0.1\"", "address = \"fd00:250::1\"")
            .replace("address = \"10.0.0.2\"", "address = \"fd00:250::2\"");
        let c = Config::parse(&v6).unwrap();
        assert_eq!(c.peers[0].address, "fd00:250::2".parse::<IpAddr>().unwrap());
        let mixed = GOOD.replace("address = \"10.0.0.2\"", "address = \"fd00:250::2\"");
        let e = error_of(&mixed);
        assert!(e.contains("peer[0].address") && e.contains("family"), "{e}");
        // IPv6 links carry at least 1280 bytes.
        let e = error_of(&v6.replace("[[environment]]", "mtu = 1200\n[[environment]]"));
        assert!(e.contains("underlay.mtu") && e.contains("1280"), "{e}");
        // An IPv4 address is written as itself, not mapped into IPv6; a link-local one
        // names no host across the underlay.
        for bad in ["::ffff:10.0.0.1", "fe80::1"] {
            let e = error_of(&GOOD.replace("\"10.0.0.1\"", &format!("\"{bad}\"")));
            assert!(e.contains("underlay.address") && e.contains(bad), "{e}");
        }
    }

    #[test]
    fn the_managers_settings_are_checked_by_name() {
        let with = |extra: &str| format!("{GOOD}[libvirt]\nuri = \"qemu:///system\"\n{extra}");
        let c = Config::parse(&with("domain = \"d1\"\ncpus = 1.5\nmemory_mib = 2048\n")).unwrap();
        let l = c.libvirt.unwrap();
        assert_eq!(
            (l.report_ms, l.cpus, l.memory_mib),
            (5000, Some(1.5), Some(2048))
        );
        assert_eq!(l.domain.as_deref(), Some("d1"));
        let e = error_of(&with("report_ms = 100\n"));
        assert!(
            e.contains("libvirt.report_ms") && e.contains("500..=60000"),
            "{e}"
        );
        let e = error_of(&with("cpus = 0.0\n"));
        assert!(e.contains("libvirt.cpus"), "{e}");
        let e = error_of(&with("memory_mib = 0\n"));
        assert!(e.contains("libvirt.memory_mib"), "{e}");
    }

    #[test]
    fn good_config_parses() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.host_id, "h1");
        assert_eq!(c.ports().nth(1), Some(("vm2", 100)));
        assert_eq!(c.ports().count(), 2);
        assert_eq!(c.peers[0].address, IpAddr::from([10, 0, 0, 2]));
    }

    #[test]
    fn errors_name_the_field() {
        let e = error_of(&GOOD.replace("vni = 100", "vni = 16777216"));
        assert!(e.contains("environment[0].vni: 16777216"), "{e}");
        let e = error_of(&GOOD.replace("vni = 100", "vni = 0"));
        assert!(e.contains("environment[0].vni"), "{e}");
        let e = error_of(&GOOD.replace("\"vm2\"", "\"vm1\""));
        assert!(e.contains("environment[0].ports[1]"), "{e}");
        let e = error_of(&GOOD.replace("\"vm2\"", "\"ul0\""));
        assert!(e.contains("underlay interface"), "{e}");
        let e = error_of(&GOOD.replace("vnis = [100]", "vnis = [7]"));
        assert!(e.contains("peer[0].vnis[0]"), "{e}");
        let e = error_of(&GOOD.replace("10.0.0.2", "10.0.0.1"));
        assert!(e.contains("peer[0].address"), "{e}");
        let e = error_of(&GOOD.replace("host_id = \"h1\"", "host_id = \"h 1\""));
        assert!(e.contains("host_id"), "{e}");
        let e = error_of(&GOOD.replace("interface = \"ul0\"", "interface = \"a/b\""));
        assert!(e.contains("underlay.interface"), "{e}");
    }

    #[test]
    fn policies_parse_and_bad_ones_name_the_field() {
        let with = |extra: &str| {
            GOOD.replace(
                "ports = [\"vm1\", \"vm2\"]\n",
                &format!("ports = [\"vm1\", \"vm2\"]\n{extra}"),
            )
        };
        let ok = with(
            "allowed_pairs = [[\"02:00:00:00:00:01\", \"02:00:00:00:00:02\"]]\n\
             [[environment.vm]]\nport = \"vm1\"\nmac = \"02:00:00:00:00:01\"\nip = \"10.0.9.1\"\n\
             [[environment.limit]]\npair = [\"02:00:00:00:00:01\", \"02:00:00:00:00:02\"]\nrate_mbit = 10\n",
        );
        let c = Config::parse(&ok).unwrap();
        let env = &c.environments[0];
        assert_eq!(env.allowed_pairs.len(), 1);
        assert_eq!(env.vms[0].ip, Some(std::net::Ipv4Addr::new(10, 0, 9, 1)));
        assert_eq!(env.limits[0].burst_kib.get(), 64);
        let e = error_of(&with(
            "[[environment.vm]]\nport = \"vm9\"\nmac = \"02:00:00:00:00:01\"\n",
        ));
        assert!(e.contains("environment[0].vm[0].port"), "{e}");
        let e = error_of(&with(
            "[[environment.vm]]\nport = \"vm1\"\nmac = \"02:00:00\"\n",
        ));
        assert!(e.contains("environment[0].vm[0].mac"), "{e}");
        let e = error_of(&with(
            "allowed_pairs = [[\"01:00:00:00:00:01\", \"02:00:00:00:00:02\"]]\n",
        ));
        assert!(e.contains("environment[0].allowed_pairs[0][0]"), "{e}");
        let e = error_of(&with("[[environment.limit]]\npair = [\"02:00:00:00:00:01\", \"02:00:00:00:00:02\"]\nrate_mbit = 0\n"));
        assert!(e.contains("environment[0].limit[0].rate_mbit"), "{e}");
        // A VM's aggregate bound, on its identity.
        let vm = |limit: &str| {
            with(&format!(
                "[[environment.vm]]\nport = \"vm1\"\nmac = \"02:00:00:00:00:01\"\nlimit = {limit}\n"
            ))
        };
        let c = Config::parse(&vm("{ rate_mbit = 25, burst_kib = 32 }")).unwrap();
        let l = c.environments[0].vms[0].limit.unwrap();
        assert_eq!((l.rate_mbit.get(), l.burst_kib.get()), (25.0, 32));
        let e = error_of(&vm("{ rate_mbit = -3 }"));
        assert!(e.contains("environment[0].vm[0].limit.rate_mbit"), "{e}");
        let e = error_of(&vm("{ rate = 3 }"));
        assert!(e.contains("environment[0].vm[0].limit"), "{e}");
    }

    #[test]
    fn rules_and_the_controller_section_are_checked_by_field() {
        let with = |extra: &str| {
            GOOD.replace(
                "ports = [\"vm1\", \"vm2\"]\n",
                &format!("ports = [\"vm1\", \"vm2\"]\n{extra}"),
            )
        };
        let ok = with("[[environment.rule]]\nsrc = \"any\"\ndst = \"none\"\nedge = \"10.0.0.2\"\n");
        assert_eq!(Config::parse(&ok).unwrap().environments[0].rules.len(), 1);
        let e = error_of(&with(
            "[[environment.rule]]\nsrc = \"none\"\ndst = \"any\"\ninterface = \"vm1\"\n",
        ));
        assert!(e.contains("environment[0].rule[0].src"), "{e}");
        let e = error_of(&with(
            "[[environment.rule]]\nsrc = \"any\"\ndst = \"any\"\nedge = \"10.0.0.9\"\n",
        ));
        assert!(e.contains("environment[0].rule[0].edge"), "{e}");
        let e = error_of(&with(
            "[[environment.rule]]\nsrc = \"any\"\ndst = \"any\"\ninterface = \"vm7\"\n",
        ));
        assert!(e.contains("environment[0].rule[0].interface"), "{e}");
        let e = error_of(&with(
            "[[environment.rule]]\nsrc = \"any\"\ndst = \"any\"\n",
        ));
        assert!(e.contains("environment[0].rule[0].edge"), "{e}");

        let controlled = "host_id = \"h1\"\n[underlay]\ninterface = \"ul0\"\naddress = \"10.0.0.1\"\n\
                          [controller]\nurl = \"http://10.0.0.254:7800\"\ntoken_file = \"/tmp/t\"\n";
        let c = Config::parse(controlled).unwrap();
        assert!(c.controller.is_some());
        let e = error_of(&controlled.replace("http://", "ftp://"));
        assert!(e.contains("controller.url"), "{e}");
        let e = error_of(&format!("{controlled}traffic_report_ms = 10\n"));
        assert!(e.contains("controller.traffic_report_ms"), "{e}");
        let e = error_of(&format!("{controlled}measure_ms = 10\n"));
        assert!(e.contains("controller.measure_ms"), "{e}");
        let e = error_of(&format!("{controlled}measure_port = 4789\n"));
        assert!(e.contains("controller.measure_port"), "{e}");
        assert!(Config::parse(&format!("{controlled}measure_ms = 0\n")).is_ok());
        let e = error_of(&format!(
            "{controlled}[[environment]]\nname = \"x\"\nvni = 5\n"
        ));
        assert!(e.contains("environment: must be empty"), "{e}");
        // The controller's share is validated like a file.
        let bad = c.with_share(
            vec![],
            vec![Peer {
                address: [10, 0, 0, 1].into(),
                vnis: vec![],
            }],
        );
        assert!(bad.unwrap_err().field.starts_with("peer[0].address"));
    }

    #[test]
    fn port_mode_defaults_to_tc_and_rejects_unknown_modes() {
        assert_eq!(Config::parse(GOOD).unwrap().port_mode, PortMode::Tc);
        let xdp = format!("port_mode = \"xdp\"\n{GOOD}");
        assert_eq!(Config::parse(&xdp).unwrap().port_mode, PortMode::Xdp);
        let e = error_of(&format!("port_mode = \"dpdk\"\n{GOOD}"));
        assert!(e.contains("unknown variant `dpdk`"), "{e}");
    }

    #[test]
    fn syntax_errors_carry_line_and_field() {
        let e = error_of(&GOOD.replace("address = \"10.0.0.1\"", "address = \"10.0.0\""));
        assert!(e.contains("line 6"), "{e}");
        assert!(e.contains("address"), "{e}");
        let e = error_of(&GOOD.replace("vni = 100", "vni = 100\ncolour = 3"));
        assert!(e.contains("unknown field `colour`"), "{e}");
        let e = error_of(&format!("api_listen = \"10.0.0.1\"\n{GOOD}"));
        assert!(e.contains("api_listen"), "{e}");
        let e = error_of(&GOOD.replace("name = \"blue\"", ""));
        assert!(e.contains("missing field `name`"), "{e}");
    }
}
