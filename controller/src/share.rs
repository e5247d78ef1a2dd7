//! A host's share of the controller's state: what its `violind` must serve, cut from the
//! stored specs. The sync stream sends it whole once, then the deltas between shares.
use std::collections::BTreeMap;

use violin_api::{
    share::{Environment, ForwardRule, PairLimit, Peer, Share, VmIdentity},
    DstMatch, SrcMatch,
};

use crate::spec::{Spec, Target};

/// The share of `host` in `specs`, as of `generation`.
pub fn share_of<'a>(
    host: &str,
    generation: u64,
    specs: impl IntoIterator<Item = &'a Spec>,
) -> Share {
    let mut environments = Vec::new();
    let mut peers: BTreeMap<std::net::Ipv4Addr, Vec<_>> = BTreeMap::new();
    for spec in specs {
        if !spec.serving_hosts().contains(host) {
            continue;
        }
        let mac_of = |vm: &str| spec.vms[vm].mac;
        let local: Vec<_> = spec.vms.values().filter(|v| v.host == host).collect();
        environments.push(Environment {
            name: spec.name.clone(),
            vni: spec.vni,
            ports: local.iter().map(|v| v.port.clone()).collect(),
            allowed_pairs: spec
                .allowed
                .iter()
                .map(|(a, b)| [mac_of(a), mac_of(b)])
                .collect(),
            vms: local
                .iter()
                .map(|v| VmIdentity {
                    port: v.port.clone(),
                    mac: v.mac,
                    ip: v.ip,
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
        });
        for n in spec.neighbours(host) {
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
        let s = share_of("h1", 1, &[spec(THREE_HOSTS)]);
        let env = &s.environments[0];
        assert_eq!(env.name, "blue");
        assert_eq!(env.ports[0], *"vm1");
        assert_eq!(env.vms[0].ip, Some(std::net::Ipv4Addr::new(10, 1, 0, 1)));
        let addrs: Vec<_> = s.peers.iter().map(|p| p.address.to_string()).collect();
        assert_eq!(addrs, ["10.0.0.2", "10.0.0.3"]);
        assert!(share_of("h9", 1, &[spec(THREE_HOSTS)])
            .environments
            .is_empty());
    }

    #[test]
    fn links_restrict_peers_and_rules_go_to_their_host() {
        let star = format!(
            "{THREE_HOSTS}[[link]]\nhosts = [\"h1\", \"h2\"]\n[[link]]\nhosts = [\"h2\", \"h3\"]\n\
             [[rule]]\nhost = \"h2\"\nsrc = \"any\"\ndst = \"02:00:00:00:00:03\"\nedge = \"h3\"\n"
        );
        let specs = [spec(&star)];
        let h1 = share_of("h1", 1, &specs);
        assert_eq!(h1.peers.len(), 1);
        assert_eq!(h1.peers[0].address.to_string(), "10.0.0.2");
        assert!(h1.environments[0].rules.is_empty());
        let h2 = share_of("h2", 1, &specs);
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
        let a = share_of("h1", 6, &[spec(THREE_HOSTS)]);
        let b = share_of("h1", 7, std::iter::empty());
        let d = a.delta_to(&b);
        assert_eq!(d.generation, 7);
        assert!(d.upsert.is_empty());
        assert_eq!(d.remove[0], "blue");
        assert_eq!(d.peers, Some(vec![]));
    }
}
