//! Changing a stored spec's text the way the VNET primitives changed its parsed form,
//! keeping the operator's comments, order and layout: only the `[[link]]` and `[[rule]]`
//! tables that were added or removed change, and a migrated VM's `host`.
use toml_edit::{value, Array, ArrayOfTables, DocumentMut, Item, Table};
use violin_api::{DstMatch, IfName, Name, SrcMatch};

use super::{ordered, Rule, Spec, Target};

/// The link a `[[link]]` table names, if it names one.
fn link_of(t: &Table) -> Option<(String, String)> {
    let hosts = t.get("hosts")?.as_array()?;
    let a = hosts.get(0)?.as_str()?;
    let b = hosts.get(1)?.as_str()?;
    Some(ordered(a, b))
}

/// The rule a `[[rule]]` table names, if it is well formed (it is: the text parsed).
fn rule_of(t: &Table) -> Option<Rule> {
    let target = match (t.get("edge"), t.get("interface")) {
        (Some(e), None) => Target::Edge(Name::parse(e.as_str()?).ok()?.to_string()),
        (None, Some(i)) => Target::Interface(IfName::parse(i.as_str()?).ok()?),
        _ => return None,
    };
    Some(Rule {
        host: Name::parse(t.get("host")?.as_str()?).ok()?.to_string(),
        src: SrcMatch::parse(t.get("src")?.as_str()?).ok()?.0,
        dst: DstMatch::parse(t.get("dst")?.as_str()?).ok()?.0,
        target,
    })
}

fn link_table(a: &str, b: &str) -> Table {
    let mut t = Table::new();
    t.insert("hosts", value(Array::from_iter([a, b])));
    t
}

fn rule_table(r: &Rule) -> Table {
    let mut t = Table::new();
    t.insert("host", value(r.host.as_str()));
    t.insert("src", value(SrcMatch(r.src).to_string()));
    t.insert("dst", value(DstMatch(r.dst).to_string()));
    match &r.target {
        Target::Edge(h) => t.insert("edge", value(h.as_str())),
        Target::Interface(p) => t.insert("interface", value(p.as_str())),
    };
    t
}

/// Keeps the tables of `key` that `keep` accepts, then appends `add`.
fn sync_tables(doc: &mut DocumentMut, key: &str, keep: impl Fn(&Table) -> bool, add: Vec<Table>) {
    let mut tables = match doc.remove(key) {
        Some(Item::ArrayOfTables(a)) => a,
        _ => ArrayOfTables::new(),
    };
    tables.retain(|t| keep(t));
    for t in add {
        tables.push(t);
    }
    if !tables.is_empty() {
        doc.insert(key, Item::ArrayOfTables(tables));
    }
}

/// `text` (which parses to some spec) with its links and rules made `next`'s.
pub fn edit(text: &str, next: &Spec) -> Result<String, toml_edit::TomlError> {
    let mut doc: DocumentMut = text.parse()?;
    let links_in_text: Vec<_> = doc
        .get("link")
        .and_then(Item::as_array_of_tables)
        .map(|a| a.iter().filter_map(link_of).collect())
        .unwrap_or_default();
    let new_links = next
        .links
        .iter()
        .filter(|l| !links_in_text.contains(l))
        .map(|(a, b)| link_table(a, b))
        .collect();
    sync_tables(
        &mut doc,
        "link",
        |t| link_of(t).is_some_and(|l| next.links.contains(&l)),
        new_links,
    );
    let rules_in_text: Vec<Rule> = doc
        .get("rule")
        .and_then(Item::as_array_of_tables)
        .map(|a| a.iter().filter_map(rule_of).collect())
        .unwrap_or_default();
    let new_rules = next
        .rules
        .iter()
        .filter(|r| !rules_in_text.contains(r))
        .map(rule_table)
        .collect();
    sync_tables(
        &mut doc,
        "rule",
        |t| rule_of(t).is_some_and(|r| next.rules.contains(&r)),
        new_rules,
    );
    Ok(doc.to_string())
}

/// `text` with VM `vm`'s `host` set to `host` (a migration moved it).
pub fn set_vm_host(text: &str, vm: &str, host: &str) -> Result<String, toml_edit::TomlError> {
    let mut doc: DocumentMut = text.parse()?;
    if let Some(vms) = doc.get_mut("vm").and_then(Item::as_array_of_tables_mut) {
        for t in vms.iter_mut() {
            if t.get("name").and_then(Item::as_str) == Some(vm) {
                t.insert("host", value(host));
            }
        }
    }
    Ok(doc.to_string())
}

/// A VM to add to a spec's text (VioCluster's borrowed machines).
pub struct NewVm<'a> {
    pub name: &'a str,
    pub host: &'a str,
    pub port: &'a str,
    pub mac: &'a str,
    pub ip: Option<std::net::Ipv4Addr>,
    /// The host's underlay address, to list it when the spec does not yet.
    pub host_address: Option<std::net::IpAddr>,
}

/// `text` with a `[[vm]]` table for `vm` appended (and its `[[host]]`, if missing).
pub fn add_vm(text: &str, vm: &NewVm) -> Result<String, toml_edit::TomlError> {
    let mut doc: DocumentMut = text.parse()?;
    let listed = doc
        .get("host")
        .and_then(Item::as_array_of_tables)
        .is_some_and(|a| {
            a.iter()
                .any(|t| t.get("name").and_then(Item::as_str) == Some(vm.host))
        });
    if let (false, Some(addr)) = (listed, vm.host_address) {
        let mut t = Table::new();
        t.insert("name", value(vm.host));
        t.insert("address", value(addr.to_string()));
        sync_tables(&mut doc, "host", |_| true, vec![t]);
    }
    let mut t = Table::new();
    t.insert("name", value(vm.name));
    t.insert("host", value(vm.host));
    t.insert("port", value(vm.port));
    t.insert("mac", value(vm.mac));
    if let Some(ip) = vm.ip {
        t.insert("ip", value(ip.to_string()));
    }
    sync_tables(&mut doc, "vm", |_| true, vec![t]);
    Ok(doc.to_string())
}

/// `text` without VM `vm`'s `[[vm]]` table.
pub fn remove_vm(text: &str, vm: &str) -> Result<String, toml_edit::TomlError> {
    let mut doc: DocumentMut = text.parse()?;
    sync_tables(
        &mut doc,
        "vm",
        |t| t.get("name").and_then(Item::as_str) != Some(vm),
        Vec::new(),
    );
    Ok(doc.to_string())
}

/// `text` without host `host`'s `[[host]]` table.
pub fn remove_host(text: &str, host: &str) -> Result<String, toml_edit::TomlError> {
    let mut doc: DocumentMut = text.parse()?;
    sync_tables(
        &mut doc,
        "host",
        |t| t.get("name").and_then(Item::as_str) != Some(host),
        Vec::new(),
    );
    Ok(doc.to_string())
}
