//! Environment specs: the declarative description of one environment (its VMs, the hosts
//! they run on, allowed VM pairs and traffic bounds), validated whole with line and field
//! in every error, and the difference between two specs as a plan of changes.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    net::Ipv4Addr,
};

use dataplane_common::packet::parse_mac;
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
        let ok_name = |s: &str| {
            !s.is_empty()
                && s.len() <= 32
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        };
        if !ok_name(&name) {
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
            if !ok_name(hname) {
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
            if !ok_name(vname) {
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
        Ok(Spec {
            name,
            vni,
            hosts,
            vms,
            allowed,
            limits,
        })
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
    out
}

#[cfg(test)]
mod tests;
