//! Shared set-up for the end-to-end tests: they need root, and fail (never skip) without it.
use std::path::PathBuf;

use crate::lab::{Lab, LabSpec};

/// A lab name unique to this test and process, so tests can run in parallel and twice.
pub fn lab_name(tag: &str) -> String {
    assert!(tag.len() <= 3, "tag {tag:?} too long");
    format!("{tag}{:x}", std::process::id() % 0xfff)
}

/// Panics with an explanation when the test cannot set its lab up.
pub fn require_root() {
    assert!(
        crate::sys::is_root(),
        "end-to-end tests need root (network namespaces, XDP, bpffs): run `cargo xtask test` as root"
    );
    let violind = crate::violind_path();
    assert!(
        violind.exists(),
        "{} is missing: run `cargo xtask test`, which builds it first",
        violind.display()
    );
}

/// The id of the program `violind` of host `host` attached to `iface`, XDP or TC, from the
/// link it pinned; None when it attached none.
pub fn attached_prog(lab: &Lab, host: usize, iface: &str) -> Option<u32> {
    let links = lab.hosts[host].pins().join("links");
    ["xdp", "tc"].iter().find_map(|hook| {
        let pin = links.join(format!("{hook}:{iface}"));
        if !pin.exists() {
            return None;
        }
        let pin = pin.to_string_lossy();
        let out = crate::sys::run("bpftool", &["-j", "link", "show", "pinned", &pin]).ok()?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        v["prog_id"].as_u64().map(|id| id as u32)
    })
}

/// Brings a lab up for a test; `adjust` edits the default 2x2 single-environment spec.
pub fn lab(tag: &str, adjust: impl FnOnce(&mut LabSpec)) -> Lab {
    require_root();
    let mut spec = LabSpec::new(&lab_name(tag), crate::violind_path());
    adjust(&mut spec);
    Lab::up(spec, true).unwrap_or_else(|e| panic!("lab set-up failed: {e:#}"))
}

/// A scratch file path inside the lab's state directory (removed with the lab).
pub fn scratch(lab: &Lab, name: &str) -> PathBuf {
    lab.dir.join(name)
}

/// Counter at a JSON pointer of `violind stats --json`, e.g. `/drops/unknown_vni`.
pub fn counter(stats: &serde_json::Value, pointer: &str) -> u64 {
    stats
        .pointer(pointer)
        .and_then(|v| v.as_u64())
        .unwrap_or_else(|| panic!("no counter {pointer} in {stats}"))
}

/// The port row of `iface` in `violind stats --json`.
pub fn port<'a>(stats: &'a serde_json::Value, iface: &str) -> &'a serde_json::Value {
    stats["ports"]
        .as_array()
        .and_then(|a| a.iter().find(|p| p["interface"] == iface))
        .unwrap_or_else(|| panic!("no port {iface} in {stats}"))
}

/// The value in `slot` of the array `map` pinned by host `host`'s daemon.
pub fn pinned_slot(lab: &Lab, host: usize, map: &str, slot: u32) -> Vec<u8> {
    let pin = lab.hosts[host].pins().join("maps").join(map);
    let pin = pin.to_string_lossy();
    let key: Vec<String> = slot.to_ne_bytes().iter().map(|b| b.to_string()).collect();
    let mut args = vec!["-j", "map", "lookup", "pinned", &pin, "key"];
    args.extend(key.iter().map(String::as_str));
    let out = crate::sys::run("bpftool", &args).unwrap();
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    v["value"]
        .as_array()
        .unwrap_or_else(|| panic!("{map}[{slot}]: {out}"))
        .iter()
        .map(|b| u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16).unwrap())
        .collect()
}
