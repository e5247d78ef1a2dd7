//! An environment spec as its TOML document says it: every value already parsed into the
//! contract's types (so a bad name, VNI, MAC, rule side or limit is refused with that
//! type's one error text and the field's path), with spans where the controller's checks
//! across fields (is this VM's host in the spec?) need a line. The controller validates
//! the rest; violinctl reads the name and catches syntax errors before sending.
use std::net::{IpAddr, Ipv4Addr};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::{
    parse::{from_toml, FieldError},
    BurstKib, DstMatch, IfName, Name, RateMbit, SrcMatch, UnicastMac, Vni,
};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    pub environment: EnvironmentTable,
    #[serde(default, rename = "host")]
    pub hosts: Vec<HostTable>,
    #[serde(default, rename = "vm")]
    pub vms: Vec<VmTable>,
    #[serde(default, rename = "allow")]
    pub allow: Vec<PairTable>,
    #[serde(default, rename = "limit")]
    pub limits: Vec<LimitTable>,
    #[serde(default, rename = "link")]
    pub links: Vec<LinkTable>,
    #[serde(default, rename = "rule")]
    pub rules: Vec<RuleTable>,
    /// VADAPT: the overlay is a star through `proxy`, plus fast-path links the controller
    /// adds and removes by the application's inferred topology.
    #[serde(default)]
    pub adapt: Option<AdaptTable>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct AdaptTable {
    /// The star's centre: every other host of the environment has a link to it, and it
    /// relays their floods and the frames no fast-path link carries.
    pub proxy: Spanned<Name>,
    /// Fast-path links at most (the link budget); unset: one per pair of hosts.
    #[serde(default)]
    pub links: Option<u32>,
    /// Adapt without being asked, whenever the inferred topology calls for it.
    #[serde(default)]
    pub auto: bool,
    /// Automatic mode's hysteresis, ms: the least time between two adaptations, and how
    /// long a fast-path link must have been unused before it is removed.
    #[serde(default)]
    pub hold_ms: Option<Spanned<u64>>,
    /// VMs a host may run under VADAPT's mapping; unset: the most any host runs now.
    #[serde(default)]
    pub vms_per_host: Option<Spanned<u32>>,
    /// Automatic mode also live-migrates VMs to VADAPT's mapping (off: it only plans
    /// the moves, which `violinctl adapt --apply` makes).
    #[serde(default)]
    pub migrate: Option<Spanned<bool>>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LinkTable {
    pub hosts: Spanned<[Name; 2]>,
    #[serde(default, rename = "type")]
    pub kind: Option<Spanned<String>>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RuleTable {
    pub host: Spanned<Name>,
    pub src: Spanned<SrcMatch>,
    pub dst: DstMatch,
    #[serde(default)]
    pub edge: Option<Spanned<Name>>,
    #[serde(default)]
    pub interface: Option<Spanned<IfName>>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentTable {
    pub name: Name,
    pub vni: Vni,
    /// Storm control per VM port, frames per second (`share::Environment::storm_pps`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storm_pps: Option<u32>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct HostTable {
    pub name: Spanned<Name>,
    /// IPv4 or IPv6; every host of an installation's underlay is of one family.
    pub address: Spanned<IpAddr>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct VmTable {
    pub name: Spanned<Name>,
    pub host: Spanned<Name>,
    pub port: Spanned<IfName>,
    pub mac: Spanned<UnicastMac>,
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
    /// The environment's head node (its users' way in): the adaptation manager keeps it
    /// in its domain when it moves the others.
    #[serde(default)]
    pub head: bool,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PairTable {
    pub pair: Spanned<[Name; 2]>,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitTable {
    /// A pair's bound (each way); or, with `vm`, a VM's aggregate bound on what it sends
    /// to other hosts. Exactly one of the two.
    #[serde(default)]
    pub pair: Option<Spanned<[Name; 2]>>,
    #[serde(default)]
    pub vm: Option<Spanned<Name>>,
    pub rate_mbit: RateMbit,
    #[serde(default)]
    pub burst_kib: BurstKib,
}

impl Document {
    /// Parses a spec's text; the error names the line and field.
    pub fn parse(text: &str) -> Result<Document, FieldError> {
        from_toml(text, "spec")
    }
}
