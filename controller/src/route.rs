//! `violinctl route SRC DST`: the path a frame takes between two VMs, host by host, as
//! the datapath decides it (forwarding rules by VNET's priority, else learned forwarding
//! over the environment's links).
use std::collections::BTreeSet;

use dataplane_common::{packet::parse_mac, rules::best};
pub use violin_api::rest::{Hop, Route};

use crate::spec::{format_mac, Rule, Spec, Target, Vm};

/// A VM of `spec` by name, or any MAC.
fn mac_in(spec: &Spec, vm: &str) -> Option<[u8; 6]> {
    spec.vms
        .get(vm)
        .map(|v| v.mac.octets())
        .or_else(|| parse_mac(vm))
}

/// Which environment a route is asked in: the one named, else the only one with a VM of
/// the source's name or MAC. The error names the request field at fault.
pub fn find_env<'a>(
    specs: &'a [Spec],
    env: Option<&str>,
    src: &str,
) -> Result<&'a Spec, (&'static str, String)> {
    if let Some(name) = env {
        return specs.iter().find(|s| s.name == name).ok_or_else(|| {
            (
                "environment",
                format!("no environment {name:?}; `violinctl envs` lists them"),
            )
        });
    }
    let mac = parse_mac(src);
    let with: Vec<&Spec> = specs
        .iter()
        .filter(|s| {
            s.vms
                .iter()
                .any(|(n, v)| n == src || Some(v.mac.octets()) == mac)
        })
        .collect();
    match with.as_slice() {
        [one] => Ok(one),
        [] => Err((
            "src",
            format!("no VM is named {src:?} or has it as its MAC; `violinctl envs` and `violinctl get ENV` show the VMs"),
        )),
        many => Err((
            "src",
            format!(
                "{src} is a VM in environments {}; name one with --env",
                many.iter()
                    .map(|s| s.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

/// The route of a frame between two VMs given by name or MAC (the destination may be
/// any MAC), in the environment named or found by the source. The error names the
/// request field at fault.
pub fn between(
    specs: &[Spec],
    env: Option<&str>,
    src: &str,
    dst: &str,
) -> Result<Route, (&'static str, String)> {
    let spec = find_env(specs, env, src)?;
    let names = || spec.vms.keys().cloned().collect::<Vec<_>>().join(", ");
    let src_mac = mac_in(spec, src).ok_or_else(|| {
        (
            "src",
            format!(
                "{src:?} is neither a VM of {} ({}) nor a MAC",
                spec.name,
                names()
            ),
        )
    })?;
    let dst_mac = mac_in(spec, dst).ok_or_else(|| {
        (
            "dst",
            format!(
                "{dst:?} is neither a VM of {} ({}) nor a MAC",
                spec.name,
                names()
            ),
        )
    })?;
    trace(spec, &src_mac, &dst_mac).map_err(|e| ("src", e))
}

fn rules_at<'a>(spec: &'a Spec, host: &str) -> Vec<&'a Rule> {
    spec.rules.iter().filter(|r| r.host == host).collect()
}

/// Where a frame goes after one host's decision.
enum Step {
    /// On to this host.
    To(String),
    /// It stops here: delivered or not, and why.
    End { delivered: bool, outcome: String },
}

fn end(outcome: impl Into<String>) -> Step {
    Step::End {
        delivered: false,
        outcome: outcome.into(),
    }
}

/// The frame between two VMs of a spec, at one host of its path.
struct Frame<'a> {
    spec: &'a Spec,
    src: &'a [u8; 6],
    dst: &'a [u8; 6],
    dst_vm: Option<&'a Vm>,
}

impl Frame<'_> {
    /// What `host`'s table decides (None: no rule matches).
    fn by_rule(&self, host: &str, from: Option<&str>) -> Option<(Hop, Step)> {
        let rules = rules_at(self.spec, host);
        let rule = rules[best(rules.iter().map(|r| (r.src, r.dst)), self.src, self.dst)?];
        let decision = format!("rule {}", self.spec.describe_rule(rule));
        Some(match &rule.target {
            Target::Interface(p) => {
                let delivered = self.dst_vm.is_some_and(|v| v.host == host && &v.port == p);
                let outcome = if delivered {
                    "delivered".into()
                } else {
                    format!("written to {host}'s port {p}, which is not the destination's")
                };
                (
                    hop(host, decision, format!("interface {p}")),
                    Step::End { delivered, outcome },
                )
            }
            Target::Edge(next) => {
                let step = if from == Some(next.as_str()) {
                    end(format!(
                        "dropped at {host}: the rule sends it back where it came from"
                    ))
                } else {
                    Step::To(next.clone())
                };
                (hop(host, decision, format!("link {host}-{next}")), step)
            }
        })
    }

    /// What learned forwarding does at `host` when no rule matches. In a star (VADAPT),
    /// a host reaches the VMs of hosts it has no link to through the hub, which relays
    /// floods to every other host.
    fn learned(&self, host: &str, from: Option<&str>) -> (Hop, Step) {
        let learned = |action: String| hop(host, "learned".into(), action);
        let hub = self.spec.proxy().filter(|p| *p != host);
        if self.dst[0] & 1 != 0 {
            let action = match (from, hub) {
                (None, Some(p)) => format!("flooded to local ports and to hub {p}"),
                (None, None) => "flooded to local ports and linked hosts".into(),
                (Some(_), None) if self.spec.proxy() == Some(host) => {
                    "flooded to local ports and relayed to the other hosts".into()
                }
                (Some(_), _) => "flooded to local ports".into(),
            };
            return (learned(action), end("broadcast"));
        }
        let Some(dvm) = self.dst_vm else {
            return (
                learned("flooded (unknown destination)".into()),
                end("not delivered: no VM of the environment has this MAC"),
            );
        };
        if dvm.host == host {
            let delivered = Step::End {
                delivered: true,
                outcome: "delivered".into(),
            };
            return (learned(format!("interface {}", dvm.port)), delivered);
        }
        // The controller places every VM, so a host that is not the source's forwards
        // on to a placed VM's host too (a relay, a hub).
        if self.spec.neighbours(host).contains(&dvm.host) {
            return (
                learned(format!("link {host}-{}", dvm.host)),
                Step::To(dvm.host.clone()),
            );
        }
        if let (None, Some(p)) = (from, hub) {
            return (
                learned(format!("link {host}-{p} (through the hub)")),
                Step::To(p.to_string()),
            );
        }
        let outcome = if from.is_none() {
            format!(
                "not delivered: no link from {host} to {} and no rule",
                dvm.host
            )
        } else {
            format!(
                "not delivered: no rule at {host} forwards it on to {}",
                dvm.host
            )
        };
        (learned("flooded to local ports".into()), end(outcome))
    }
}

fn hop(host: &str, decision: String, action: String) -> Hop {
    Hop {
        host: host.to_string(),
        decision,
        action,
    }
}

/// The path of a frame from the VM with MAC `src` to `dst` in `spec`; the error is about
/// the source.
pub fn trace(spec: &Spec, src: &[u8; 6], dst: &[u8; 6]) -> Result<Route, String> {
    let (src_name, src_vm) = spec
        .vms
        .iter()
        .find(|(_, v)| v.mac.octets() == *src)
        .ok_or_else(|| format!("no VM of {} has MAC {}", spec.name, format_mac(src)))?;
    let dst_vm = spec.vms.iter().find(|(_, v)| v.mac.octets() == *dst);
    let frame = Frame {
        spec,
        src,
        dst,
        dst_vm: dst_vm.map(|(_, v)| v),
    };
    let mut route = Route {
        environment: spec.name.to_string(),
        src: format!("{src_name} ({})", format_mac(src)),
        dst: spec.describe_mac(dst),
        hops: Vec::new(),
        delivered: false,
        outcome: String::new(),
    };
    let mut host = src_vm.host.clone();
    let mut from: Option<String> = None;
    let mut seen = BTreeSet::new();
    loop {
        if !seen.insert((host.clone(), from.clone())) {
            route.outcome = format!("loops back to {host}: the rules form a cycle");
            return Ok(route);
        }
        let (hop, step) = frame
            .by_rule(&host, from.as_deref())
            .unwrap_or_else(|| frame.learned(&host, from.as_deref()));
        route.hops.push(hop);
        match step {
            Step::To(next) => from = Some(std::mem::replace(&mut host, next)),
            Step::End { delivered, outcome } => {
                route.delivered = delivered;
                route.outcome = outcome;
                return Ok(route);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::THREE_HOSTS;

    const A: [u8; 6] = [2, 0, 0, 0, 0, 1];
    const C: [u8; 6] = [2, 0, 0, 0, 0, 3];

    fn actions(r: &Route) -> Vec<String> {
        r.hops
            .iter()
            .map(|h| format!("{}:{}", h.host, h.action))
            .collect()
    }

    #[test]
    fn mesh_goes_direct() {
        let s = Spec::parse(THREE_HOSTS).unwrap();
        let r = trace(&s, &A, &C).unwrap();
        assert!(r.delivered);
        assert_eq!(actions(&r), ["h1:link h1-h3", "h3:interface vm1"]);
    }

    #[test]
    fn a_star_needs_a_rule_at_the_hub() {
        let star = format!(
            "{THREE_HOSTS}[[link]]\nhosts = [\"h1\", \"h2\"]\n[[link]]\nhosts = [\"h2\", \"h3\"]\n"
        );
        let s = Spec::parse(&star).unwrap();
        let r = trace(&s, &A, &C).unwrap();
        assert!(!r.delivered);
        assert!(r.outcome.contains("no link from h1 to h3"), "{}", r.outcome);
        let ruled = format!(
            "{star}[[rule]]\nhost = \"h1\"\nsrc = \"any\"\ndst = \"02:00:00:00:00:03\"\nedge = \"h2\"\n\
             [[rule]]\nhost = \"h2\"\nsrc = \"any\"\ndst = \"not 02:00:00:00:00:01\"\nedge = \"h3\"\n"
        );
        let s = Spec::parse(&ruled).unwrap();
        let r = trace(&s, &A, &C).unwrap();
        assert!(r.delivered, "{r:?}");
        assert_eq!(
            actions(&r),
            ["h1:link h1-h2", "h2:link h2-h3", "h3:interface vm1"]
        );
        // Back from c: h3 forwards as learned only to its links (h2), h2 has no rule for a.
        let back = trace(&s, &C, &A).unwrap();
        assert!(!back.delivered);
        assert!(
            back.outcome.contains("no link from h3 to h1"),
            "{}",
            back.outcome
        );
    }

    #[test]
    fn a_star_goes_through_its_hub_until_a_fast_path_exists() {
        let star = format!("{THREE_HOSTS}[adapt]\nproxy = \"h2\"\n");
        let s = Spec::parse(&star).unwrap();
        let r = trace(&s, &A, &C).unwrap();
        assert!(r.delivered, "{r:?}");
        assert_eq!(
            actions(&r),
            [
                "h1:link h1-h2 (through the hub)",
                "h2:link h2-h3",
                "h3:interface vm1"
            ]
        );
        let bcast = trace(&s, &A, &[0xff; 6]).unwrap();
        assert_eq!(actions(&bcast), ["h1:flooded to local ports and to hub h2"]);
        let fast = Spec::parse(&format!("{star}[[link]]\nhosts = [\"h1\", \"h3\"]\n")).unwrap();
        let r = trace(&fast, &A, &C).unwrap();
        assert_eq!(actions(&r), ["h1:link h1-h3", "h3:interface vm1"]);
    }

    #[test]
    fn vms_are_found_by_name_or_mac() {
        let s = Spec::parse(THREE_HOSTS).unwrap();
        let specs = [s];
        let by_name = between(&specs, None, "a", "c").unwrap();
        let by_mac = between(&specs, None, "02:00:00:00:00:01", "02:00:00:00:00:03").unwrap();
        assert_eq!(by_name, by_mac);
        assert_eq!(by_name.src, "a (02:00:00:00:00:01)");
        assert_eq!(by_name.dst, "c (02:00:00:00:00:03)");
        let e = between(&specs, None, "zz", "c").unwrap_err();
        assert_eq!(e.0, "src");
        let e = between(&specs, None, "a", "zz").unwrap_err();
        assert_eq!(e.0, "dst");
        assert!(e.1.contains("a, b, c"), "{}", e.1);
        let e = between(&specs, Some("red"), "a", "c").unwrap_err();
        assert_eq!(e.0, "environment");
    }

    #[test]
    fn cycles_are_reported() {
        let looped = format!(
            "{THREE_HOSTS}[[rule]]\nhost = \"h1\"\nsrc = \"any\"\ndst = \"any\"\nedge = \"h2\"\n\
             [[rule]]\nhost = \"h2\"\nsrc = \"any\"\ndst = \"any\"\nedge = \"h3\"\n\
             [[rule]]\nhost = \"h3\"\nsrc = \"any\"\ndst = \"any\"\nedge = \"h1\"\n"
        );
        let s = Spec::parse(&looped).unwrap();
        let r = trace(&s, &A, &C).unwrap();
        assert!(!r.delivered);
        assert!(r.outcome.contains("cycle"), "{}", r.outcome);
    }
}
