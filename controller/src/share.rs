//! A host's share of the controller's state: what its `violind` must serve, cut from the
//! stored specs and the migrations in flight. The sync stream sends it whole once, then
//! the deltas between shares.
//!
//! A migrating VM is on both sides of its move until it switches: its destination serves
//! it already (port, policies, anti-spoofing) but sends its frames to the source
//! (`arriving_from`), its source keeps it and knows where it goes (`leaving_to`); every
//! other host keeps its location at the source. Once it switched (the spec places it at
//! the destination) and until the migration ends, its source still serves the environment,
//! so that frames from hosts not yet re-pointed are forwarded on.
use std::collections::BTreeMap;

use violin_api::{
    share::{Environment, ForwardRule, Location, PairLimit, Peer, Share, VmIdentity},
    vm::{Migration, VmResources},
    DstMatch, Name, SrcMatch,
};

use crate::spec::{Spec, Target};

/// The share of `host` in `specs`, with the migrations in flight and the resources set
/// for VMs (by name), as of `generation`.
pub fn share_of<'a>(
    host: &str,
    generation: u64,
    specs: impl IntoIterator<Item = &'a Spec>,
    moving: &[Migration],
    resources: &BTreeMap<String, VmResources>,
) -> Share {
    let mut environments = Vec::new();
    let mut own = Vec::new();
    let mut peers: BTreeMap<std::net::IpAddr, Vec<_>> = BTreeMap::new();
    for spec in specs {
        // Every host that serves an environment is one of its hosts (or a migration's
        // end): the cheap test first, as each of a thousand streams asks it of every
        // environment on every change.
        let moved_here = || {
            moving
                .iter()
                .any(|m| m.environment == spec.name.as_str() && (m.from == host || m.to == host))
        };
        if !spec.hosts.contains_key(host) && !moved_here() {
            continue;
        }
        // VM name -> (from, to) of its move, for this environment's VMs.
        let moves: BTreeMap<&str, (&str, &str)> = moving
            .iter()
            .filter(|m| m.environment == spec.name.as_str() && spec.vms.contains_key(&m.vm))
            .map(|m| (m.vm.as_str(), (m.from.as_str(), m.to.as_str())))
            .collect();
        let mut serving = spec.serving_hosts();
        serving.extend(
            moves
                .values()
                .flat_map(|(from, to)| [from.to_string(), to.to_string()]),
        );
        if !serving.contains(host) {
            continue;
        }
        let addr = |h: &str| spec.hosts[h];
        let mac_of = |vm: &str| spec.vms[vm].mac;
        let local: Vec<(&String, &crate::spec::Vm)> = spec
            .vms
            .iter()
            .filter(|(n, v)| v.host == host || moves.get(n.as_str()).is_some_and(|m| m.1 == host))
            .collect();
        environments.push(Environment {
            name: spec.name.clone(),
            vni: spec.vni,
            ports: local.iter().map(|(_, v)| v.port.clone()).collect(),
            allowed_pairs: spec
                .allowed
                .iter()
                .map(|(a, b)| [mac_of(a), mac_of(b)])
                .collect(),
            vms: local
                .iter()
                .map(|(n, v)| {
                    let (from, to) = moves.get(n.as_str()).copied().unzip();
                    VmIdentity {
                        port: v.port.clone(),
                        mac: v.mac,
                        name: Name::parse(n).ok(),
                        ip: v.ip,
                        // Switched (the spec has it at the destination): nothing leaves.
                        leaving_to: to.filter(|t| v.host == host && *t != host).map(addr),
                        arriving_from: from.filter(|_| v.host != host).map(addr),
                        limit: spec.vm_limits.get(n.as_str()).copied(),
                    }
                })
                .collect(),
            limits: spec
                .limits
                .iter()
                .map(|((a, b), l)| PairLimit {
                    pair: [mac_of(a), mac_of(b)],
                    rate_mbit: l.rate_mbit,
                    burst_kib: l.burst_kib,
                })
                .collect(),
            rules: spec
                .rules
                .iter()
                .filter(|r| r.host == host)
                .map(|r| ForwardRule {
                    src: SrcMatch(r.src),
                    dst: DstMatch(r.dst),
                    edge: match &r.target {
                        Target::Edge(h) => Some(spec.hosts[h]),
                        Target::Interface(_) => None,
                    },
                    interface: match &r.target {
                        Target::Interface(p) => Some(p.clone()),
                        Target::Edge(_) => None,
                    },
                })
                .collect(),
            locations: spec
                .vms
                .iter()
                .filter(|(_, v)| v.host != host && !local.iter().any(|(_, l)| l.mac == v.mac))
                .map(|(n, v)| Location {
                    mac: v.mac,
                    name: Name::parse(n).ok(),
                    host: addr(&v.host),
                })
                .collect(),
            storm_pps: spec.storm_pps,
            hub: spec.proxy().map(addr),
        });
        // A VM's resources go to the host the spec places it on (after a move, the
        // manager sets them again there).
        own.extend(
            spec.vms
                .iter()
                .filter(|(_, v)| v.host == host)
                .filter_map(|(n, _)| resources.get(n.as_str()).cloned()),
        );
        for n in spec.neighbours_among(host, &serving) {
            peers.entry(spec.hosts[&n]).or_default().push(spec.vni);
        }
    }
    environments.sort_by(|a, b| a.name.cmp(&b.name));
    Share {
        generation,
        environments,
        peers: peers
            .into_iter()
            .map(|(address, mut vnis)| {
                vnis.sort_unstable();
                Peer { address, vnis }
            })
            .collect(),
        resources: {
            own.sort_by(|a, b| a.vm.cmp(&b.vm));
            own
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::THREE_HOSTS;

    fn spec(text: &str) -> Spec {
        Spec::parse(text).unwrap()
    }

    #[test]
    fn a_mesh_environment_peers_every_serving_host() {
        let s = share_of("h1", 1, &[spec(THREE_HOSTS)], &[], &BTreeMap::new());
        let env = &s.environments[0];
        assert_eq!(env.name, "blue");
        assert_eq!(env.ports[0], *"vm1");
        assert_eq!(env.vms[0].ip, Some(std::net::Ipv4Addr::new(10, 1, 0, 1)));
        let addrs: Vec<_> = s.peers.iter().map(|p| p.address.to_string()).collect();
        assert_eq!(addrs, ["10.0.0.2", "10.0.0.3"]);
        assert!(
            share_of("h9", 1, &[spec(THREE_HOSTS)], &[], &BTreeMap::new())
                .environments
                .is_empty()
        );
    }

    #[test]
    fn links_restrict_peers_and_rules_go_to_their_host() {
        let star = format!(
            "{THREE_HOSTS}[[link]]\nhosts = [\"h1\", \"h2\"]\n[[link]]\nhosts = [\"h2\", \"h3\"]\n\
             [[rule]]\nhost = \"h2\"\nsrc = \"any\"\ndst = \"02:00:00:00:00:03\"\nedge = \"h3\"\n"
        );
        let specs = [spec(&star)];
        let h1 = share_of("h1", 1, &specs, &[], &BTreeMap::new());
        assert_eq!(h1.peers.len(), 1);
        assert_eq!(h1.peers[0].address.to_string(), "10.0.0.2");
        assert!(h1.environments[0].rules.is_empty());
        let h2 = share_of("h2", 1, &specs, &[], &BTreeMap::new());
        assert_eq!(h2.peers.len(), 2);
        let rule = &h2.environments[0].rules[0];
        assert_eq!(
            rule.edge.map(|e| e.to_string()).as_deref(),
            Some("10.0.0.3")
        );
        assert_eq!(rule.src.to_string(), "any");
    }

    #[test]
    fn deltas_carry_only_what_changed() {
        let a = share_of("h1", 6, &[spec(THREE_HOSTS)], &[], &BTreeMap::new());
        let b = share_of("h1", 7, std::iter::empty(), &[], &BTreeMap::new());
        let d = a.delta_to(&b);
        assert_eq!(d.generation, 7);
        assert!(d.upsert.is_empty());
        assert_eq!(d.remove[0], "blue");
        assert_eq!(d.peers, Some(vec![]));
    }

    #[test]
    fn a_migration_prepares_the_destination_and_tells_the_source() {
        use violin_api::vm::{Migration, MigrationPhase};
        let specs = [spec(&THREE_HOSTS.replacen(
            "port = \"vm1\"",
            "port = \"vm7\"",
            1,
        ))];
        let m = Migration::new(1, "a", "blue", "h1", "h2", 0.0);
        let moving = [m];
        let h1 = share_of("h1", 2, &specs, &moving, &BTreeMap::new());
        let a = &h1.environments[0].vms[0];
        assert_eq!(
            a.leaving_to.map(|x| x.to_string()).as_deref(),
            Some("10.0.0.2")
        );
        assert_eq!(a.arriving_from, None);
        let h2 = share_of("h2", 2, &specs, &moving, &BTreeMap::new());
        let env = &h2.environments[0];
        let ports: Vec<_> = env.ports.iter().map(|p| p.to_string()).collect();
        assert_eq!(ports, ["vm7", "vm1"], "a's port, arriving, and b's");
        let a = env
            .vms
            .iter()
            .find(|v| v.mac.to_string() == "02:00:00:00:00:01")
            .unwrap();
        assert_eq!(
            a.arriving_from.map(|x| x.to_string()).as_deref(),
            Some("10.0.0.1")
        );
        // Elsewhere a stays at h1 until it switches; no host has it as a location twice.
        let h3 = share_of("h3", 2, &specs, &moving, &BTreeMap::new());
        let loc = |s: &Share, mac: &str| {
            s.environments[0]
                .locations
                .iter()
                .find(|l| l.mac.to_string() == mac)
                .map(|l| l.host.to_string())
        };
        assert_eq!(loc(&h3, "02:00:00:00:00:01").as_deref(), Some("10.0.0.1"));
        assert_eq!(loc(&h2, "02:00:00:00:00:01"), None);
        assert_eq!(loc(&h1, "02:00:00:00:00:02").as_deref(), Some("10.0.0.2"));
        // Without the migration, nothing of it is left.
        let after = share_of("h1", 3, &specs, &[], &BTreeMap::new());
        assert_eq!(after.environments[0].vms[0].leaving_to, None);
        // Switched (the spec has a on h2) but not ended: h1, with no VM of its own left,
        // still serves the environment, a's location at h2, so it forwards a's frames on.
        let text = THREE_HOSTS
            .replacen("port = \"vm1\"", "port = \"vm7\"", 1)
            .replace("name = \"a\"\nhost = \"h1\"", "name = \"a\"\nhost = \"h2\"");
        let switched = [spec(&text)];
        let mut m = moving[0].clone();
        m.phase = MigrationPhase::Switching;
        let h2 = share_of(
            "h2",
            4,
            &switched,
            std::slice::from_ref(&m),
            &BTreeMap::new(),
        );
        let a = h2.environments[0]
            .vms
            .iter()
            .find(|v| v.port == *"vm7")
            .unwrap();
        assert_eq!((a.leaving_to, a.arriving_from), (None, None), "{a:?}");
        let h1 = share_of("h1", 4, &switched, &[m], &BTreeMap::new());
        assert_eq!(h1.environments.len(), 1);
        assert!(h1.environments[0].vms.is_empty());
        assert_eq!(loc(&h1, "02:00:00:00:00:01").as_deref(), Some("10.0.0.2"));
        assert!(share_of("h1", 5, &switched, &[], &BTreeMap::new())
            .environments
            .is_empty());
    }
}
