//! Environment specs: the declarative description of one environment (its VMs, the hosts
//! they run on, allowed VM pairs and traffic bounds), validated whole with line and field
//! in every error, and the difference between two specs as a plan of changes.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::Ipv4Addr,
};

use dataplane_common::{packet::parse_mac, rules::MacMatch};
use serde::Deserialize;
use toml::Spanned;

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    environment: RawEnvironment,
    #[serde(default, rename = "host")]
    hosts: Vec<RawHost>,
    #[serde(default, rename = "vm")]
    vms: Vec<RawVm>,
    #[serde(default, rename = "allow")]
    allow: Vec<RawPair>,
    #[serde(default, rename = "limit")]
    limits: Vec<RawLimit>,
    #[serde(default, rename = "link")]
    links: Vec<RawLink>,
    #[serde(default, rename = "rule")]
    rules: Vec<RawRule>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLink {
    hosts: Spanned<[String; 2]>,
    #[serde(default, rename = "type")]
    kind: Option<Spanned<String>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    host: Spanned<String>,
    src: Spanned<String>,
    dst: Spanned<String>,
    #[serde(default)]
    edge: Option<Spanned<String>>,
    #[serde(default)]
    interface: Option<Spanned<String>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEnvironment {
    name: Spanned<String>,
    vni: Spanned<u32>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHost {
    name: Spanned<String>,
    address: Spanned<String>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVm {
    name: Spanned<String>,
    host: Spanned<String>,
    port: Spanned<String>,
    mac: Spanned<String>,
    #[serde(default)]
    ip: Option<Spanned<String>>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPair {
    pair: Spanned<[String; 2]>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLimit {
    pair: Spanned<[String; 2]>,
    rate_mbit: Spanned<f64>,
    #[serde(default = "default_burst")]
    burst_kib: Spanned<u32>,
}

fn default_burst() -> Spanned<u32> {
    Spanned::new(0..0, 64)
}

/// A validated environment spec.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    pub name: String,
    pub vni: u32,
    pub hosts: BTreeMap<String, Ipv4Addr>,
    pub vms: BTreeMap<String, Vm>,
    /// Unordered VM pairs (by VM name, smaller first); empty means unrestricted.
    pub allowed: BTreeSet<(String, String)>,
    pub limits: BTreeMap<(String, String), Limit>,
    /// UDP overlay links between hosts (smaller name first). Empty: every host of the
    /// environment exchanges its frames directly with every other (a full mesh).
    pub links: BTreeSet<(String, String)>,
    /// VNET forwarding rules, in spec order (the order breaks ties of equal priority).
    pub rules: Vec<Rule>,
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
    Interface(String),
}

/// Whether a rule of `host` may send where `target` says: over an existing link to
/// another host of the spec, or out of a VM port on `host`. The error names the field
/// (`edge` or `interface`).
fn check_target(
    hosts: &BTreeMap<String, Ipv4Addr>,
    vms: &BTreeMap<String, Vm>,
    links: &BTreeSet<(String, String)>,
    host: &str,
    target: &Target,
) -> Result<(), (&'static str, String)> {
    match target {
        Target::Edge(to) => {
            if !hosts.contains_key(to) || to == host {
                return Err(("edge", format!("{to:?} is not another host of this spec")));
            }
            if !links.is_empty() && !links.contains(&ordered(host, to)) {
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

/// A rule side as the spec writes it.
pub fn format_match(m: &MacMatch) -> String {
    match m {
        MacMatch::Exact(a) => format_mac(a),
        MacMatch::Not(a) => format!("not {}", format_mac(a)),
        MacMatch::Any => "any".into(),
        MacMatch::None => "none".into(),
    }
}

pub fn format_mac(m: &[u8; 6]) -> String {
    dataplane_common::packet::Mac(*m).to_string()
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} -> {} via ",
            self.host,
            format_match(&self.src),
            format_match(&self.dst)
        )?;
        match &self.target {
            Target::Edge(h) => write!(f, "link {}-{h}", self.host),
            Target::Interface(p) => write!(f, "interface {p}"),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Vm {
    pub host: String,
    pub port: String,
    pub mac: [u8; 6],
    pub ip: Option<Ipv4Addr>,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Limit {
    pub rate_mbit: f64,
    pub burst_kib: u32,
}

/// A spec error: where (line, field) and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpecError {
    pub line: usize,
    pub field: String,
    pub reason: String,
}

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}: {}: {}", self.line, self.field, self.reason)
        } else {
            write!(f, "{}: {}", self.field, self.reason)
        }
    }
}

impl std::error::Error for SpecError {}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Names of environments, hosts and VMs: 1 to 32 characters from [A-Za-z0-9_-].
pub fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 32
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

/// An unordered pair, smaller first.
pub fn ordered_pair(a: &str, b: &str) -> (String, String) {
    ordered(a, b)
}

fn ordered(a: &str, b: &str) -> (String, String) {
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
        let raw: RawSpec = toml::from_str(text).map_err(|e| SpecError {
            line: e.span().map_or(0, |s| line_of(text, s.start)),
            field: "spec".into(),
            reason: e.message().to_string(),
        })?;
        let err = |span: std::ops::Range<usize>, field: String, reason: String| SpecError {
            line: if span.is_empty() {
                0
            } else {
                line_of(text, span.start)
            },
            field,
            reason,
        };
        let name = raw.environment.name.get_ref().clone();
        if !valid_name(&name) {
            return Err(err(
                raw.environment.name.span(),
                "environment.name".into(),
                format!("{name:?} must be 1 to 32 characters from [A-Za-z0-9_-]"),
            ));
        }
        let vni = *raw.environment.vni.get_ref();
        if vni == 0 || vni > (1 << 24) - 1 {
            return Err(err(
                raw.environment.vni.span(),
                "environment.vni".into(),
                format!("{vni} is outside 1..=16777215"),
            ));
        }
        let mut hosts = BTreeMap::new();
        for (i, h) in raw.hosts.iter().enumerate() {
            let hname = h.name.get_ref();
            if !valid_name(hname) {
                return Err(err(
                    h.name.span(),
                    format!("host[{i}].name"),
                    format!("{hname:?} is not a valid host name"),
                ));
            }
            let addr: Ipv4Addr = h.address.get_ref().parse().map_err(|_| {
                err(
                    h.address.span(),
                    format!("host[{i}].address"),
                    format!("{:?} is not an IPv4 address", h.address.get_ref()),
                )
            })?;
            if hosts.insert(hname.clone(), addr).is_some() {
                return Err(err(
                    h.name.span(),
                    format!("host[{i}].name"),
                    format!("{hname:?} is listed twice"),
                ));
            }
        }
        let mut vms = BTreeMap::new();
        let mut macs = BTreeMap::new();
        let mut ports = BTreeSet::new();
        for (i, v) in raw.vms.iter().enumerate() {
            let vname = v.name.get_ref();
            if !valid_name(vname) {
                return Err(err(
                    v.name.span(),
                    format!("vm[{i}].name"),
                    format!("{vname:?} is not a valid VM name"),
                ));
            }
            if !hosts.contains_key(v.host.get_ref()) {
                return Err(err(
                    v.host.span(),
                    format!("vm[{i}].host"),
                    format!("{:?} is not a host of this spec", v.host.get_ref()),
                ));
            }
            let mac = match parse_mac(v.mac.get_ref()) {
                Some(m) if m[0] & 1 == 0 && m != [0; 6] => m,
                _ => {
                    return Err(err(
                        v.mac.span(),
                        format!("vm[{i}].mac"),
                        format!("{:?} is not a unicast MAC address", v.mac.get_ref()),
                    ))
                }
            };
            if let Some(other) = macs.insert(mac, vname.clone()) {
                return Err(err(
                    v.mac.span(),
                    format!("vm[{i}].mac"),
                    format!("already used by VM {other:?}"),
                ));
            }
            if !ports.insert((v.host.get_ref().clone(), v.port.get_ref().clone())) {
                return Err(err(
                    v.port.span(),
                    format!("vm[{i}].port"),
                    format!(
                        "{:?} on {} is already a VM's port",
                        v.port.get_ref(),
                        v.host.get_ref()
                    ),
                ));
            }
            let ip = match &v.ip {
                None => None,
                Some(s) => Some(s.get_ref().parse::<Ipv4Addr>().map_err(|_| {
                    err(
                        s.span(),
                        format!("vm[{i}].ip"),
                        format!("{:?} is not an IPv4 address", s.get_ref()),
                    )
                })?),
            };
            let vm = Vm {
                host: v.host.get_ref().clone(),
                port: v.port.get_ref().clone(),
                mac,
                ip,
            };
            if vms.insert(vname.clone(), vm).is_some() {
                return Err(err(
                    v.name.span(),
                    format!("vm[{i}].name"),
                    format!("{vname:?} is listed twice"),
                ));
            }
        }
        let check_pair = |pair: &Spanned<[String; 2]>, field: String| {
            let [a, b] = pair.get_ref();
            for x in [a, b] {
                if !vms.contains_key(x) {
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
        for (i, l) in raw.limits.iter().enumerate() {
            let pair = check_pair(&l.pair, format!("limit[{i}].pair"))?;
            let rate = *l.rate_mbit.get_ref();
            if !(rate > 0.0 && rate <= 1e6) {
                return Err(err(
                    l.rate_mbit.span(),
                    format!("limit[{i}].rate_mbit"),
                    format!("{rate} is outside (0, 1000000]"),
                ));
            }
            let burst = *l.burst_kib.get_ref();
            if burst == 0 {
                return Err(err(
                    l.burst_kib.span(),
                    format!("limit[{i}].burst_kib"),
                    "must be positive".into(),
                ));
            }
            limits.insert(
                pair,
                Limit {
                    rate_mbit: rate,
                    burst_kib: burst,
                },
            );
        }
        let mut links = BTreeSet::new();
        for (i, l) in raw.links.iter().enumerate() {
            let field = format!("link[{i}].hosts");
            let [a, b] = l.hosts.get_ref();
            for h in [a, b] {
                if !hosts.contains_key(h) {
                    return Err(err(
                        l.hosts.span(),
                        field,
                        format!("{h:?} is not a host of this spec"),
                    ));
                }
            }
            if a == b {
                return Err(err(l.hosts.span(), field, "a link joins two hosts".into()));
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
        let mut rules: Vec<Rule> = Vec::new();
        let mut rule_keys = BTreeSet::new();
        for (i, r) in raw.rules.iter().enumerate() {
            let at = |f: &str| format!("rule[{i}].{f}");
            let host = r.host.get_ref();
            if !hosts.contains_key(host) {
                return Err(err(
                    r.host.span(),
                    at("host"),
                    format!("{host:?} is not a host of this spec"),
                ));
            }
            let side = |v: &Spanned<String>, f: &str, none: bool| {
                MacMatch::parse(v.get_ref(), none).ok_or_else(|| {
                    let allowed = if none {
                        "a MAC, \"not MAC\", \"any\" or \"none\" (the default rule)"
                    } else {
                        "a MAC, \"not MAC\" or \"any\""
                    };
                    err(
                        v.span(),
                        at(f),
                        format!("{:?} is not {allowed}", v.get_ref()),
                    )
                })
            };
            let src = side(&r.src, "src", false)?;
            let dst = side(&r.dst, "dst", true)?;
            let (target, span) = match (&r.edge, &r.interface) {
                (Some(e), None) => (Target::Edge(e.get_ref().clone()), e.span()),
                (None, Some(p)) => (Target::Interface(p.get_ref().clone()), p.span()),
                _ => {
                    return Err(err(
                        r.host.span(),
                        at("edge"),
                        "give exactly one of edge (a host) or interface (a VM port)".into(),
                    ))
                }
            };
            check_target(&hosts, &vms, &links, host, &target)
                .map_err(|(f, reason)| err(span, at(f), reason))?;
            if !rule_keys.insert((host.clone(), src, dst)) {
                return Err(err(
                    r.src.span(),
                    at("src"),
                    format!("{host} already has a rule for this source and destination"),
                ));
            }
            rules.push(Rule {
                host: host.clone(),
                src,
                dst,
                target,
            });
        }
        Ok(Spec {
            name,
            vni,
            hosts,
            vms,
            allowed,
            limits,
            links,
            rules,
        })
    }

    /// The spec in canonical TOML; parses back to an equal spec. Used when the VNET
    /// primitives change a stored environment.
    pub fn to_toml(&self) -> String {
        use std::fmt::Write;
        let q = |s: &str| toml::Value::String(s.to_string()).to_string();
        let mut o = String::new();
        let _ = writeln!(
            o,
            "[environment]\nname = {}\nvni = {}",
            q(&self.name),
            self.vni
        );
        for (h, a) in &self.hosts {
            let _ = writeln!(
                o,
                "\n[[host]]\nname = {}\naddress = {}",
                q(h),
                q(&a.to_string())
            );
        }
        for (n, v) in &self.vms {
            let _ = writeln!(
                o,
                "\n[[vm]]\nname = {}\nhost = {}\nport = {}\nmac = {}",
                q(n),
                q(&v.host),
                q(&v.port),
                q(&format_mac(&v.mac))
            );
            if let Some(ip) = v.ip {
                let _ = writeln!(o, "ip = {}", q(&ip.to_string()));
            }
        }
        for (a, b) in &self.allowed {
            let _ = writeln!(o, "\n[[allow]]\npair = [{}, {}]", q(a), q(b));
        }
        for ((a, b), l) in &self.limits {
            let _ = writeln!(
                o,
                "\n[[limit]]\npair = [{}, {}]\nrate_mbit = {:?}\nburst_kib = {}",
                q(a),
                q(b),
                l.rate_mbit,
                l.burst_kib
            );
        }
        for (a, b) in &self.links {
            let _ = writeln!(o, "\n[[link]]\nhosts = [{}, {}]", q(a), q(b));
        }
        for r in &self.rules {
            let _ = writeln!(
                o,
                "\n[[rule]]\nhost = {}\nsrc = {}\ndst = {}",
                q(&r.host),
                q(&format_match(&r.src)),
                q(&format_match(&r.dst))
            );
            let _ = match &r.target {
                Target::Edge(h) => writeln!(o, "edge = {}", q(h)),
                Target::Interface(p) => writeln!(o, "interface = {}", q(p)),
            };
        }
        o
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
            &rule.host,
            &rule.target,
        )?;
        if self
            .rules
            .iter()
            .any(|o| o.host == rule.host && o.src == rule.src && o.dst == rule.dst)
        {
            return Err((
                "src",
                format!(
                    "{} already has a rule for this source and destination",
                    rule.host
                ),
            ));
        }
        Ok(())
    }

    /// The rules' consistency with the rest of the spec, as [`Spec::parse`] checks it;
    /// for specs changed in memory by the primitives.
    pub fn check_rules(&self) -> Result<(), (String, String)> {
        let mut seen = BTreeSet::new();
        for (i, r) in self.rules.iter().enumerate() {
            check_target(&self.hosts, &self.vms, &self.links, &r.host, &r.target)
                .map_err(|(f, reason)| (format!("rule[{i}].{f}"), reason))?;
            if !seen.insert((&r.host, r.src, r.dst)) {
                return Err((
                    format!("rule[{i}].src"),
                    format!(
                        "{} already has a rule for this source and destination",
                        r.host
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Hosts whose frames of this environment go directly to `host` (its overlay links).
    pub fn neighbours(&self, host: &str) -> BTreeSet<String> {
        if self.links.is_empty() {
            return self
                .serving_hosts()
                .into_iter()
                .filter(|h| h != host)
                .collect();
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
            .collect()
    }

    /// Hosts that take part: those with a VM, a rule or a link of the environment.
    pub fn serving_hosts(&self) -> BTreeSet<String> {
        let mut out: BTreeSet<String> = self.vms.values().map(|v| v.host.clone()).collect();
        out.extend(self.rules.iter().map(|r| r.host.clone()));
        for (a, b) in &self.links {
            out.insert(a.clone());
            out.insert(b.clone());
        }
        out
    }
}

/// One change between the running and the desired environment.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    AddVm(String, Vm),
    RemoveVm(String, Vm),
    ChangeVm(String, Vm, Vm),
    Allow(String, String),
    Disallow(String, String),
    SetLimit(String, String, Option<Limit>, Limit),
    RemoveLimit(String, String, Limit),
    AddLink(String, String),
    RemoveLink(String, String),
    AddRule(Rule),
    RemoveRule(Rule),
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mac = |m: &[u8; 6]| {
            m.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(":")
        };
        match self {
            Change::AddVm(n, v) => write!(
                f,
                "+ vm {n} on {} port {} ({})",
                v.host,
                v.port,
                mac(&v.mac)
            ),
            Change::RemoveVm(n, v) => write!(f, "- vm {n} on {} port {}", v.host, v.port),
            Change::ChangeVm(n, a, b) => write!(
                f,
                "~ vm {n}: {} {} {} -> {} {} {}",
                a.host,
                a.port,
                mac(&a.mac),
                b.host,
                b.port,
                mac(&b.mac)
            ),
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
            Change::AddLink(a, b) => write!(f, "+ link {a} <-> {b} (udp)"),
            Change::RemoveLink(a, b) => write!(f, "- link {a} <-> {b}"),
            Change::AddRule(r) => write!(f, "+ rule {r}"),
            Change::RemoveRule(r) => write!(f, "- rule {r}"),
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
        links: BTreeSet::new(),
        rules: Vec::new(),
    };
    let cur = current.unwrap_or(&empty);
    let mut out = Vec::new();
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
            out.push(Change::AddRule(r.clone()));
        }
    }
    for r in &cur.rules {
        if !want.contains(r) {
            out.push(Change::RemoveRule(r.clone()));
        }
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

#[cfg(test)]
mod tests;
