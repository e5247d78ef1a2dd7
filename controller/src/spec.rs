//! Environment specs: the declarative description of one environment (its VMs, the hosts
//! they run on, allowed VM pairs and traffic bounds), validated whole with line and field
//! in every error, and the difference between two specs as a plan of changes.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::{IpAddr, Ipv4Addr},
};

use dataplane_common::rules::MacMatch;
use toml::Spanned;
use violin_api::{
    parse::line_of,
    spec::{Document, HostTable, LinkTable, RuleTable, VmTable},
    DstMatch, FieldError, IfName, Limit, Name, UnicastMac, Vni,
};

/// A validated environment spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub name: Name,
    pub vni: Vni,
    pub hosts: BTreeMap<String, IpAddr>,
    pub vms: BTreeMap<String, Vm>,
    /// Unordered VM pairs (by VM name, smaller first); empty means unrestricted.
    pub allowed: BTreeSet<(String, String)>,
    pub limits: BTreeMap<(String, String), Limit>,
    /// Aggregate bounds of VMs (by name) on what they send to other hosts.
    pub vm_limits: BTreeMap<String, Limit>,
    /// UDP overlay links between hosts (smaller name first). Empty: every host of the
    /// environment exchanges its frames directly with every other (a full mesh).
    pub links: BTreeSet<(String, String)>,
    /// VNET forwarding rules, in spec order (the order breaks ties of equal priority).
    pub rules: Vec<Rule>,
    /// Storm control per VM port, frames per second; None: violind's default.
    pub storm_pps: Option<u32>,
    /// VADAPT: a star through a proxy host plus the fast-path links in `links`.
    pub adapt: Option<Adapt>,
}

/// How VADAPT shapes an environment's overlay (`[adapt]`).
#[derive(Clone, Debug, PartialEq)]
pub struct Adapt {
    /// The star's centre, linked to every other host taking part.
    pub proxy: String,
    /// Fast-path links at most; None: one per pair of hosts.
    pub budget: Option<usize>,
    /// Adapt whenever the inferred topology calls for it, not only when asked.
    pub auto: bool,
    /// The least time between automatic adaptations, and how long a fast-path link stays
    /// unused before automatic mode removes it, ms.
    pub hold_ms: u64,
    /// VMs per host in VADAPT's mapping; None: the most any host runs now.
    pub vms_per_host: Option<usize>,
    /// Automatic mode migrates VMs too.
    pub migrate: bool,
}

/// Automatic adaptation's hysteresis when the spec names none.
pub const DEFAULT_HOLD_MS: u64 = 5000;

/// The overlay links hosts `a` and `b` have: the spec's, the star's when the environment
/// is adapted, every pair when neither is given (a full mesh).
fn linked(links: &BTreeSet<(String, String)>, proxy: Option<&str>, a: &str, b: &str) -> bool {
    match proxy {
        Some(p) if a == p || b == p => true,
        Some(_) => links.contains(&ordered(a, b)),
        None => links.is_empty() || links.contains(&ordered(a, b)),
    }
}

/// A VNET forwarding rule in one host's table.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Rule {
    pub host: String,
    pub src: MacMatch,
    pub dst: MacMatch,
    pub target: Target,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Target {
    /// Over the overlay link from the rule's host to this host.
    Edge(String),
    /// Out of this local VM port of the rule's host.
    Interface(IfName),
}

/// Whether a rule of `host` may send where `target` says: over an existing link to
/// another host of the spec, or out of a VM port on `host`. The error names the field
/// (`edge` or `interface`).
fn check_target(
    hosts: &BTreeMap<String, IpAddr>,
    vms: &BTreeMap<String, Vm>,
    links: &BTreeSet<(String, String)>,
    proxy: Option<&str>,
    host: &str,
    target: &Target,
) -> Result<(), (&'static str, String)> {
    match target {
        Target::Edge(to) => {
            if !hosts.contains_key(to) || to == host {
                return Err(("edge", format!("{to:?} is not another host of this spec")));
            }
            if !linked(links, proxy, host, to) {
                return Err(("edge", format!("there is no link between {host} and {to}")));
            }
        }
        Target::Interface(port) => {
            if !vms.values().any(|v| v.host == host && &v.port == port) {
                return Err((
                    "interface",
                    format!("{port:?} is not the port of a VM on {host}"),
                ));
            }
        }
    }
    Ok(())
}

/// Why `rule` may not join `rules`: its host has one for the same source and destination.
pub fn duplicate_rule(rules: &[Rule], rule: &Rule) -> Option<String> {
    rules
        .iter()
        .any(|o| o.host == rule.host && o.src == rule.src && o.dst == rule.dst)
        .then(|| {
            format!(
                "{} already has a rule for this source and destination",
                rule.host
            )
        })
}

/// A rule side as the spec writes it.
pub fn format_match(m: &MacMatch) -> String {
    DstMatch(*m).to_string()
}

pub fn format_mac(m: &[u8; 6]) -> String {
    dataplane_common::packet::Mac(*m).to_string()
}

impl Rule {
    /// Where the rule sends: `link h1-h2` or `interface vm1`.
    pub fn target_text(&self) -> String {
        match &self.target {
            Target::Edge(h) => format!("link {}-{h}", self.host),
            Target::Interface(p) => format!("interface {p}"),
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} -> {} via {}",
            self.host,
            format_match(&self.src),
            format_match(&self.dst),
            self.target_text()
        )
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Vm {
    pub host: String,
    pub port: IfName,
    pub mac: UnicastMac,
    pub ip: Option<Ipv4Addr>,
    /// Stays in its domain when the adaptation manager moves the environment.
    pub head: bool,
}

/// A spec error: where (line, field) and why.
pub type SpecError = FieldError;

/// An unordered pair, smaller first.
pub fn ordered(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

impl Spec {
    /// Parses and validates a spec; the first error found is returned, naming its line and
    /// field, and nothing of a spec with an error is used.
    pub fn parse(text: &str) -> Result<Spec, SpecError> {
        let raw = Document::parse(text)?;
        let err = |span: std::ops::Range<usize>, field: String, reason: String| SpecError {
            line: if span.is_empty() {
                0
            } else {
                line_of(text, span.start)
            },
            field,
            reason,
        };
        let hosts = Self::parse_hosts(&raw.hosts, &err)?;
        let vms = Self::parse_vms(&raw.vms, &hosts, &err)?;
        let check_pair = |pair: &Spanned<[Name; 2]>, field: String| {
            let [a, b] = pair.get_ref();
            for x in [a, b] {
                if !vms.contains_key(x.as_str()) {
                    return Err(err(
                        pair.span(),
                        field.clone(),
                        format!("{x:?} is not a VM of this spec"),
                    ));
                }
            }
            if a == b {
                return Err(err(pair.span(), field, "a pair needs two VMs".into()));
            }
            Ok(ordered(a, b))
        };
        let mut allowed = BTreeSet::new();
        for (i, p) in raw.allow.iter().enumerate() {
            allowed.insert(check_pair(&p.pair, format!("allow[{i}].pair"))?);
        }
        let mut limits = BTreeMap::new();
        let mut vm_limits = BTreeMap::new();
        for (i, l) in raw.limits.iter().enumerate() {
            let limit = Limit {
                rate_mbit: l.rate_mbit,
                burst_kib: l.burst_kib,
            };
            match (&l.pair, &l.vm) {
                (Some(pair), None) => {
                    limits.insert(check_pair(pair, format!("limit[{i}].pair"))?, limit);
                }
                (None, Some(vm)) => {
                    if !vms.contains_key(vm.get_ref().as_str()) {
                        return Err(err(
                            vm.span(),
                            format!("limit[{i}].vm"),
                            format!("{:?} is not a VM of this spec", vm.get_ref().as_str()),
                        ));
                    }
                    vm_limits.insert(vm.get_ref().to_string(), limit);
                }
                (Some(pair), Some(_)) => {
                    return Err(err(
                        pair.span(),
                        format!("limit[{i}]"),
                        "give `pair` (a pair's bound) or `vm` (a VM's), not both".into(),
                    ))
                }
                (None, None) => {
                    return Err(err(
                        0..0,
                        format!("limit[{i}]"),
                        "needs `pair` (a pair's bound) or `vm` (a VM's aggregate bound)".into(),
                    ))
                }
            }
        }
        let adapt = Self::parse_adapt(raw.adapt.as_ref(), &hosts, &err)?;
        let proxy = adapt.as_ref().map(|a| a.proxy.as_str());
        let links = Self::parse_links(&raw.links, &hosts, proxy, &err)?;
        let rules = Self::parse_rules(&raw.rules, &hosts, &vms, &links, proxy, &err)?;
        Ok(Spec {
            name: raw.environment.name,
            vni: raw.environment.vni,
            hosts,
            vms,
            allowed,
            limits,
            vm_limits,
            links,
            rules,
            storm_pps: raw.environment.storm_pps,
            adapt,
        })
    }

    fn parse_adapt(
        raw: Option<&violin_api::spec::AdaptTable>,
        hosts: &BTreeMap<String, IpAddr>,
        err: &impl Fn(std::ops::Range<usize>, String, String) -> SpecError,
    ) -> Result<Option<Adapt>, SpecError> {
        let Some(a) = raw else { return Ok(None) };
        let proxy = a.proxy.get_ref().as_str();
        if !hosts.contains_key(proxy) {
            return Err(err(
                a.proxy.span(),
                "adapt.proxy".into(),
                format!("{proxy:?} is not a host of this spec"),
            ));
        }
        let hold_ms = a.hold_ms.as_ref().map_or(DEFAULT_HOLD_MS, |h| *h.get_ref());
        if let Some(h) = a
            .hold_ms
            .as_ref()
            .filter(|_| !(100..=3_600_000).contains(&hold_ms))
        {
            return Err(err(
                h.span(),
                "adapt.hold_ms".into(),
                format!("{hold_ms}: give 100 ms to an hour"),
            ));
        }
        if let Some(v) = a.vms_per_host.as_ref().filter(|v| *v.get_ref() == 0) {
            return Err(err(
                v.span(),
                "adapt.vms_per_host".into(),
                "give at least 1".into(),
            ));
        }
        let migrate = a.migrate.as_ref().is_some_and(|m| *m.get_ref());
        if let Some(m) = a.migrate.as_ref().filter(|_| migrate && !a.auto) {
            return Err(err(
                m.span(),
                "adapt.migrate".into(),
                "automatic mode's (auto = true); `violinctl adapt --apply` migrates without it"
                    .into(),
            ));
        }
        Ok(Some(Adapt {
            proxy: proxy.to_string(),
            budget: a.links.map(|l| l as usize),
            auto: a.auto,
            hold_ms,
            vms_per_host: a.vms_per_host.as_ref().map(|n| *n.get_ref() as usize),
            migrate,
        }))
    }

    fn parse_hosts(
        raw: &[HostTable],
        err: &impl Fn(std::ops::Range<usize>, String, String) -> SpecError,
    ) -> Result<BTreeMap<String, IpAddr>, SpecError> {
        let mut hosts = BTreeMap::new();
        for (i, h) in raw.iter().enumerate() {
            let hname = h.name.get_ref();
            let address = *h.address.get_ref();
            if !violin_api::share::is_unicast(address) {
                return Err(err(
                    h.address.span(),
                    format!("host[{i}].address"),
                    format!("{address} is not a unicast address that reaches other hosts"),
                ));
            }
            // One datapath speaks one outer family: a host cannot tunnel to the other.
            if let Some(first) = raw
                .first()
                .filter(|f| f.address.get_ref().is_ipv6() != address.is_ipv6())
            {
                return Err(err(
                    h.address.span(),
                    format!("host[{i}].address"),
                    format!(
                        "{address} is not of the family of host[0].address {}: the underlay \
                         is IPv4 or IPv6, not both",
                        first.address.get_ref()
                    ),
                ));
            }
            if hosts.insert(hname.to_string(), address).is_some() {
                return Err(err(
                    h.name.span(),
                    format!("host[{i}].name"),
                    format!("{hname:?} is listed twice"),
                ));
            }
        }
        Ok(hosts)
    }

    fn parse_vms(
        raw: &[VmTable],
        hosts: &BTreeMap<String, IpAddr>,
        err: &impl Fn(std::ops::Range<usize>, String, String) -> SpecError,
    ) -> Result<BTreeMap<String, Vm>, SpecError> {
        let mut vms = BTreeMap::new();
        let mut macs = BTreeMap::new();
        let mut ports = BTreeSet::new();
        for (i, v) in raw.iter().enumerate() {
            let vname = v.name.get_ref();
            let host = v.host.get_ref();
            if !hosts.contains_key(host.as_str()) {
                return Err(err(
                    v.host.span(),
                    format!("vm[{i}].host"),
                    format!("{:?} is not a host of this spec", host.as_str()),
                ));
            }
            let mac = *v.mac.get_ref();
            if let Some(other) = macs.insert(mac, vname.to_string()) {
                return Err(err(
                    v.mac.span(),
                    format!("vm[{i}].mac"),
                    format!("already used by VM {other:?}"),
                ));
            }
            let port = v.port.get_ref();
            if !ports.insert((host.to_string(), port.to_string())) {
                return Err(err(
                    v.port.span(),
                    format!("vm[{i}].port"),
                    format!("{:?} on {host} is already a VM's port", port.as_str()),
                ));
            }
            let vm = Vm {
                host: host.to_string(),
                port: port.clone(),
                mac,
                ip: v.ip,
                head: v.head,
            };
            // A rule's side names a VM or a keyword; a VM may not be named like one.
            if matches!(vname.as_str(), "any" | "none" | "not") {
                return Err(err(
                    v.name.span(),
                    format!("vm[{i}].name"),
                    format!(
                        "{:?} is a keyword of forwarding rules; name the VM otherwise",
                        vname.as_str()
                    ),
                ));
            }
            if vms.insert(vname.to_string(), vm).is_some() {
                return Err(err(
                    v.name.span(),
                    format!("vm[{i}].name"),
                    format!("{:?} is listed twice", vname.as_str()),
                ));
            }
        }
        Ok(vms)
    }

    fn parse_links(
        raw: &[LinkTable],
        hosts: &BTreeMap<String, IpAddr>,
        proxy: Option<&str>,
        err: &impl Fn(std::ops::Range<usize>, String, String) -> SpecError,
    ) -> Result<BTreeSet<(String, String)>, SpecError> {
        let mut links = BTreeSet::new();
        for (i, l) in raw.iter().enumerate() {
            let field = format!("link[{i}].hosts");
            let [a, b] = l.hosts.get_ref();
            for h in [a, b] {
                if !hosts.contains_key(h.as_str()) {
                    return Err(err(
                        l.hosts.span(),
                        field,
                        format!("{:?} is not a host of this spec", h.as_str()),
                    ));
                }
            }
            if a == b {
                return Err(err(l.hosts.span(), field, "a link joins two hosts".into()));
            }
            if let Some(p) = proxy.filter(|p| a.as_str() == *p || b.as_str() == *p) {
                return Err(err(
                    l.hosts.span(),
                    field,
                    format!("the star through adapt.proxy {p} has this link already"),
                ));
            }
            if let Some(kind) = &l.kind {
                if kind.get_ref() != "udp" {
                    return Err(err(
                        kind.span(),
                        format!("link[{i}].type"),
                        format!(
                            "{:?}: overlay links are UDP (VXLAN); VNET's TCP links are not offered",
                            kind.get_ref()
                        ),
                    ));
                }
            }
            if !links.insert(ordered(a, b)) {
                return Err(err(
                    l.hosts.span(),
                    field,
                    "this link is listed twice".into(),
                ));
            }
        }
        Ok(links)
    }

    fn parse_rules(
        raw: &[RuleTable],
        hosts: &BTreeMap<String, IpAddr>,
        vms: &BTreeMap<String, Vm>,
        links: &BTreeSet<(String, String)>,
        proxy: Option<&str>,
        err: &impl Fn(std::ops::Range<usize>, String, String) -> SpecError,
    ) -> Result<Vec<Rule>, SpecError> {
        let mut rules: Vec<Rule> = Vec::new();
        for (i, r) in raw.iter().enumerate() {
            let at = |f: &str| format!("rule[{i}].{f}");
            let host = r.host.get_ref();
            if !hosts.contains_key(host.as_str()) {
                return Err(err(
                    r.host.span(),
                    at("host"),
                    format!("{:?} is not a host of this spec", host.as_str()),
                ));
            }
            let (target, span) = match (&r.edge, &r.interface) {
                (Some(e), None) => (Target::Edge(e.get_ref().to_string()), e.span()),
                (None, Some(p)) => (Target::Interface(p.get_ref().clone()), p.span()),
                _ => {
                    return Err(err(
                        r.host.span(),
                        at("edge"),
                        "give exactly one of edge (a host) or interface (a VM port)".into(),
                    ))
                }
            };
            let rule = Rule {
                host: host.to_string(),
                src: r.src.get_ref().0,
                dst: r.dst.0,
                target,
            };
            check_target(hosts, vms, links, proxy, host, &rule.target)
                .map_err(|(f, reason)| err(span, at(f), reason))?;
            if let Some(reason) = duplicate_rule(&rules, &rule) {
                return Err(err(r.src.span(), at("src"), reason));
            }
            rules.push(rule);
        }
        Ok(rules)
    }

    /// Checks a rule the VNET primitives add to this (valid) spec, as [`Spec::parse`]
    /// would: the error names the field.
    pub fn check_rule(&self, rule: &Rule) -> Result<(), (&'static str, String)> {
        if !self.hosts.contains_key(&rule.host) {
            return Err((
                "host",
                format!("{:?} is not a host of environment {}", rule.host, self.name),
            ));
        }
        check_target(
            &self.hosts,
            &self.vms,
            &self.links,
            self.proxy(),
            &rule.host,
            &rule.target,
        )?;
        match duplicate_rule(&self.rules, rule) {
            Some(reason) => Err(("src", reason)),
            None => Ok(()),
        }
    }

    /// The rules' consistency with the rest of the spec, as [`Spec::parse`] checks it;
    /// for specs changed in memory by the primitives.
    pub fn check_rules(&self) -> Result<(), (String, String)> {
        for (i, r) in self.rules.iter().enumerate() {
            check_target(
                &self.hosts,
                &self.vms,
                &self.links,
                self.proxy(),
                &r.host,
                &r.target,
            )
            .map_err(|(f, reason)| (format!("rule[{i}].{f}"), reason))?;
            if let Some(reason) = duplicate_rule(&self.rules[..i], r) {
                return Err((format!("rule[{i}].src"), reason));
            }
        }
        Ok(())
    }

    /// Hosts whose frames of this environment go directly to `host` (its overlay links).
    pub fn neighbours(&self, host: &str) -> BTreeSet<String> {
        self.neighbours_among(host, &self.serving_hosts())
    }

    /// [`Spec::neighbours`] with `serving` as the hosts taking part: without links, a full
    /// mesh among them (a migration adds its hosts to those of the spec).
    pub fn neighbours_among(&self, host: &str, serving: &BTreeSet<String>) -> BTreeSet<String> {
        let others = || serving.iter().filter(|h| *h != host).cloned();
        let proxy = self.proxy();
        if proxy == Some(host) || (proxy.is_none() && self.links.is_empty()) {
            return others().collect();
        }
        self.links
            .iter()
            .filter_map(|(a, b)| {
                if a == host {
                    Some(b.clone())
                } else if b == host {
                    Some(a.clone())
                } else {
                    None
                }
            })
            .chain(proxy.map(str::to_string))
            .collect()
    }

    /// The name of the VM whose MAC is `mac`.
    pub fn vm_by_mac(&self, mac: &[u8; 6]) -> Option<&str> {
        self.vms
            .iter()
            .find(|(_, v)| v.mac.octets() == *mac)
            .map(|(n, _)| n.as_str())
    }

    /// A MAC as an operator reads it: the VM's name with the MAC beside it, or the MAC
    /// alone when no VM of the spec has it.
    pub fn describe_mac(&self, mac: &[u8; 6]) -> String {
        match self.vm_by_mac(mac) {
            Some(n) => format!("{n} ({})", format_mac(mac)),
            None => format_mac(mac),
        }
    }

    /// A rule's match with VM names (`not h1v1 (02:..)`, `any`).
    pub fn describe_match(&self, m: &MacMatch) -> String {
        match m {
            MacMatch::Exact(a) => self.describe_mac(a),
            MacMatch::Not(a) => format!("not {}", self.describe_mac(a)),
            other => format_match(other),
        }
    }

    /// A rule as [`Rule`]'s Display shows it, with VM names beside the MACs.
    pub fn describe_rule(&self, r: &Rule) -> String {
        format!(
            "{}: {} -> {} via {}",
            r.host,
            self.describe_match(&r.src),
            self.describe_match(&r.dst),
            r.target_text()
        )
    }

    /// The star's centre, when VADAPT shapes the overlay.
    pub fn proxy(&self) -> Option<&str> {
        self.adapt.as_ref().map(|a| a.proxy.as_str())
    }

    /// Whether hosts `a` and `b` have an overlay link (a star's, a listed one, or the full
    /// mesh's).
    pub fn linked(&self, a: &str, b: &str) -> bool {
        linked(&self.links, self.proxy(), a, b)
    }

    /// Hosts that take part: those with a VM, a rule or a link of the environment.
    pub fn serving_hosts(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self.vms.values().map(|v| v.host.clone()).collect();
        out.extend(self.rules.iter().map(|r| r.host.clone()));
        for (a, b) in &self.links {
            out.insert(a.clone());
            out.insert(b.clone());
        }
        out.extend(self.proxy().map(str::to_string));
        out
    }
}

/// One change between the running and the desired environment.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    AddHost(String, IpAddr),
    RemoveHost(String, IpAddr),
    /// A host's underlay address, old -> new.
    ChangeHost(String, IpAddr, IpAddr),
    AddVm(String, Vm),
    RemoveVm(String, Vm),
    ChangeVm(String, Vm, Vm),
    Allow(String, String),
    Disallow(String, String),
    SetLimit(String, String, Option<Limit>, Limit),
    RemoveLimit(String, String, Limit),
    /// A VM's aggregate bound, old -> new.
    SetVmLimit(String, Option<Limit>, Limit),
    RemoveVmLimit(String, Limit),
    AddLink(String, String),
    RemoveLink(String, String),
    /// A rule as its spec names its VMs ([`Spec::describe_rule`]).
    AddRule(String),
    RemoveRule(String),
    /// Storm control's rate, old -> new (None: violind's default).
    SetStorm(Option<u32>, Option<u32>),
    /// VADAPT's settings, old -> new.
    SetAdapt(Option<Adapt>, Option<Adapt>),
}

/// The fields of a VM that differ between `a` and `b`: `host h1 -> h2, ip none -> ..`.
fn vm_fields(a: &Vm, b: &Vm) -> String {
    let ip = |v: &Vm| v.ip.map_or("none".to_string(), |ip| ip.to_string());
    [
        ("host", a.host.clone(), b.host.clone()),
        ("port", a.port.to_string(), b.port.to_string()),
        ("mac", a.mac.to_string(), b.mac.to_string()),
        ("ip", ip(a), ip(b)),
        ("head", a.head.to_string(), b.head.to_string()),
    ]
    .into_iter()
    .filter(|(_, old, new)| old != new)
    .map(|(field, old, new)| format!("{field} {old} -> {new}"))
    .collect::<Vec<_>>()
    .join(", ")
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::AddHost(n, a) => write!(f, "+ host {n} ({a})"),
            Change::RemoveHost(n, a) => write!(f, "- host {n} ({a})"),
            Change::ChangeHost(n, a, b) => write!(f, "~ host {n}: address {a} -> {b}"),
            Change::AddVm(n, v) => {
                write!(f, "+ vm {n} on {} port {} ({}", v.host, v.port, v.mac)?;
                if let Some(ip) = v.ip {
                    write!(f, ", {ip}")?;
                }
                f.write_str(")")
            }
            Change::RemoveVm(n, v) => {
                write!(f, "- vm {n} on {} port {} ({})", v.host, v.port, v.mac)
            }
            Change::ChangeVm(n, a, b) => write!(f, "~ vm {n}: {}", vm_fields(a, b)),
            Change::Allow(a, b) => write!(f, "+ allow {a} <-> {b}"),
            Change::Disallow(a, b) => write!(f, "- allow {a} <-> {b}"),
            Change::SetLimit(a, b, None, l) => {
                write!(
                    f,
                    "+ limit {a} <-> {b}: {} Mbit/s, burst {} KiB",
                    l.rate_mbit, l.burst_kib
                )
            }
            Change::SetLimit(a, b, Some(o), l) => write!(
                f,
                "~ limit {a} <-> {b}: {} -> {} Mbit/s, burst {} -> {} KiB",
                o.rate_mbit, l.rate_mbit, o.burst_kib, l.burst_kib
            ),
            Change::RemoveLimit(a, b, _) => write!(f, "- limit {a} <-> {b}"),
            Change::SetVmLimit(v, None, l) => write!(
                f,
                "+ limit vm {v} (to other hosts): {} Mbit/s, burst {} KiB",
                l.rate_mbit, l.burst_kib
            ),
            Change::SetVmLimit(v, Some(o), l) => write!(
                f,
                "~ limit vm {v} (to other hosts): {} -> {} Mbit/s, burst {} -> {} KiB",
                o.rate_mbit, l.rate_mbit, o.burst_kib, l.burst_kib
            ),
            Change::RemoveVmLimit(v, _) => write!(f, "- limit vm {v}"),
            Change::AddLink(a, b) => write!(f, "+ link {a} <-> {b} (udp)"),
            Change::RemoveLink(a, b) => write!(f, "- link {a} <-> {b}"),
            Change::AddRule(r) => write!(f, "+ rule {r}"),
            Change::RemoveRule(r) => write!(f, "- rule {r}"),
            Change::SetStorm(a, b) => {
                let rate = |r: &Option<u32>| match r {
                    None => "default".to_string(),
                    Some(0) => "off".to_string(),
                    Some(n) => format!("{n} frames/s"),
                };
                write!(f, "~ storm control: {} -> {}", rate(a), rate(b))
            }
            Change::SetAdapt(_, None) => write!(f, "- adapt (the links listed are the overlay)"),
            Change::SetAdapt(old, Some(a)) => write!(
                f,
                "{} adapt: star through {}, {} fast-path links, {}",
                if old.is_some() { "~" } else { "+" },
                a.proxy,
                a.budget
                    .map_or("any number of".into(), |b| format!("at most {b}")),
                if a.auto {
                    format!(
                        "automatic (hold {} ms{})",
                        a.hold_ms,
                        if a.migrate { ", migrating" } else { "" }
                    )
                } else {
                    "on request".into()
                }
            ),
        }
    }
}

/// What turns `current` (None: the environment does not exist yet) into `desired`.
pub fn plan(current: Option<&Spec>, desired: &Spec) -> Vec<Change> {
    let empty = Spec {
        name: desired.name.clone(),
        vni: desired.vni,
        hosts: BTreeMap::new(),
        vms: BTreeMap::new(),
        allowed: BTreeSet::new(),
        limits: BTreeMap::new(),
        vm_limits: BTreeMap::new(),
        links: BTreeSet::new(),
        rules: Vec::new(),
        storm_pps: None,
        adapt: None,
    };
    let cur = current.unwrap_or(&empty);
    let mut out = Vec::new();
    for (n, a) in &desired.hosts {
        match cur.hosts.get(n) {
            None => out.push(Change::AddHost(n.clone(), *a)),
            Some(old) if old != a => out.push(Change::ChangeHost(n.clone(), *old, *a)),
            Some(_) => {}
        }
    }
    for (n, a) in &cur.hosts {
        if !desired.hosts.contains_key(n) {
            out.push(Change::RemoveHost(n.clone(), *a));
        }
    }
    for (n, v) in &desired.vms {
        match cur.vms.get(n) {
            None => out.push(Change::AddVm(n.clone(), v.clone())),
            Some(old) if old != v => out.push(Change::ChangeVm(n.clone(), old.clone(), v.clone())),
            Some(_) => {}
        }
    }
    for (n, v) in &cur.vms {
        if !desired.vms.contains_key(n) {
            out.push(Change::RemoveVm(n.clone(), v.clone()));
        }
    }
    for (a, b) in desired.allowed.difference(&cur.allowed) {
        out.push(Change::Allow(a.clone(), b.clone()));
    }
    for (a, b) in cur.allowed.difference(&desired.allowed) {
        out.push(Change::Disallow(a.clone(), b.clone()));
    }
    for ((a, b), l) in &desired.limits {
        let old = cur.limits.get(&(a.clone(), b.clone())).copied();
        if old != Some(*l) {
            out.push(Change::SetLimit(a.clone(), b.clone(), old, *l));
        }
    }
    for ((a, b), l) in &cur.limits {
        if !desired.limits.contains_key(&(a.clone(), b.clone())) {
            out.push(Change::RemoveLimit(a.clone(), b.clone(), *l));
        }
    }
    for (v, l) in &desired.vm_limits {
        let old = cur.vm_limits.get(v).copied();
        if old != Some(*l) {
            out.push(Change::SetVmLimit(v.clone(), old, *l));
        }
    }
    for (v, l) in &cur.vm_limits {
        if !desired.vm_limits.contains_key(v) {
            out.push(Change::RemoveVmLimit(v.clone(), *l));
        }
    }
    for (a, b) in desired.links.difference(&cur.links) {
        out.push(Change::AddLink(a.clone(), b.clone()));
    }
    for (a, b) in cur.links.difference(&desired.links) {
        out.push(Change::RemoveLink(a.clone(), b.clone()));
    }
    // A rule whose target changed shows as removed and added.
    let (want, have): (BTreeSet<&Rule>, BTreeSet<&Rule>) =
        (desired.rules.iter().collect(), cur.rules.iter().collect());
    for r in &desired.rules {
        if !have.contains(r) {
            out.push(Change::AddRule(desired.describe_rule(r)));
        }
    }
    for r in &cur.rules {
        if !want.contains(r) {
            out.push(Change::RemoveRule(cur.describe_rule(r)));
        }
    }
    if desired.storm_pps != cur.storm_pps {
        out.push(Change::SetStorm(cur.storm_pps, desired.storm_pps));
    }
    if desired.adapt != cur.adapt {
        out.push(Change::SetAdapt(cur.adapt.clone(), desired.adapt.clone()));
    }
    out
}

/// Three hosts with a VM each (a, b, c), for the tests of the modules that use specs.
#[cfg(test)]
pub(crate) const THREE_HOSTS: &str = r#"[environment]
name = "blue"
vni = 100
[[host]]
name = "h1"
address = "10.0.0.1"
[[host]]
name = "h2"
address = "10.0.0.2"
[[host]]
name = "h3"
address = "10.0.0.3"
[[vm]]
name = "a"
host = "h1"
port = "vm1"
mac = "02:00:00:00:00:01"
ip = "10.1.0.1"
[[vm]]
name = "b"
host = "h2"
port = "vm1"
mac = "02:00:00:00:00:02"
[[vm]]
name = "c"
host = "h3"
port = "vm1"
mac = "02:00:00:00:00:03"
"#;

pub mod edit;

#[cfg(test)]
mod tests;
