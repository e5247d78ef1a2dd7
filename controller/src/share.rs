//! A host's share of the controller's state: what its `violind` must serve, in the shape
//! of violind's own configuration (`[[environment]]` and `[[peer]]`), and the delta
//! between two shares that the sync stream sends after the first snapshot.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::spec::{format_mac, format_match, Spec, Target};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Share {
    pub environments: BTreeMap<String, EnvShare>,
    pub peers: Vec<PeerShare>,
}

/// Field names are violind's `[[environment]]` table's.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnvShare {
    pub name: String,
    pub vni: u32,
    pub ports: Vec<String>,
    pub allowed_pairs: Vec<[String; 2]>,
    #[serde(rename = "vm")]
    pub vms: Vec<VmShare>,
    #[serde(rename = "limit")]
    pub limits: Vec<LimitShare>,
    #[serde(rename = "rule")]
    pub rules: Vec<RuleShare>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct VmShare {
    pub port: String,
    pub mac: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ip: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LimitShare {
    pub pair: [String; 2],
    pub rate_mbit: f64,
    pub burst_kib: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RuleShare {
    pub src: String,
    pub dst: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub edge: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interface: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeerShare {
    pub address: String,
    pub vnis: Vec<u32>,
}

/// What the sync stream sends: a full snapshot, then deltas. Every generation reaches
/// every host (as an empty delta when its share did not change) so that each host's
/// acknowledgement says it has caught up with the whole state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Event {
    Snapshot {
        generation: u64,
        share: Share,
    },
    Delta {
        generation: u64,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        upsert: Vec<EnvShare>,
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        remove: Vec<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        peers: Option<Vec<PeerShare>>,
    },
    Heartbeat {
        generation: u64,
    },
}

/// The share of `host` in `specs`.
pub fn share_of<'a>(host: &str, specs: impl IntoIterator<Item = &'a Spec>) -> Share {
    let mut out = Share::default();
    let mut peers: BTreeMap<std::net::Ipv4Addr, Vec<u32>> = BTreeMap::new();
    for spec in specs {
        if !spec.serving_hosts().contains(host) {
            continue;
        }
        let mac_of = |vm: &str| format_mac(&spec.vms[vm].mac);
        let local: Vec<_> = spec.vms.values().filter(|v| v.host == host).collect();
        let env = EnvShare {
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
                .map(|v| VmShare {
                    port: v.port.clone(),
                    mac: format_mac(&v.mac),
                    ip: v.ip.map(|ip| ip.to_string()),
                })
                .collect(),
            limits: spec
                .limits
                .iter()
                .map(|((a, b), l)| LimitShare {
                    pair: [mac_of(a), mac_of(b)],
                    rate_mbit: l.rate_mbit,
                    burst_kib: l.burst_kib,
                })
                .collect(),
            rules: spec
                .rules
                .iter()
                .filter(|r| r.host == host)
                .map(|r| RuleShare {
                    src: format_match(&r.src),
                    dst: format_match(&r.dst),
                    edge: match &r.target {
                        Target::Edge(h) => Some(spec.hosts[h].to_string()),
                        Target::Interface(_) => None,
                    },
                    interface: match &r.target {
                        Target::Interface(p) => Some(p.clone()),
                        Target::Edge(_) => None,
                    },
                })
                .collect(),
        };
        for n in spec.neighbours(host) {
            peers.entry(spec.hosts[&n]).or_default().push(spec.vni);
        }
        out.environments.insert(spec.name.clone(), env);
    }
    out.peers = peers
        .into_iter()
        .map(|(a, mut vnis)| {
            vnis.sort_unstable();
            PeerShare {
                address: a.to_string(),
                vnis,
            }
        })
        .collect();
    out
}

/// The delta event that turns `old` into `new`.
pub fn delta(generation: u64, old: &Share, new: &Share) -> Event {
    let upsert = new
        .environments
        .iter()
        .filter(|(n, e)| old.environments.get(*n) != Some(*e))
        .map(|(_, e)| e.clone())
        .collect();
    let remove = old
        .environments
        .keys()
        .filter(|n| !new.environments.contains_key(*n))
        .cloned()
        .collect();
    Event::Delta {
        generation,
        upsert,
        remove,
        peers: (old.peers != new.peers).then(|| new.peers.clone()),
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
        let s = share_of("h1", &[spec(THREE_HOSTS)]);
        let env = &s.environments["blue"];
        assert_eq!(env.ports, vec!["vm1"]);
        assert_eq!(env.vms[0].ip.as_deref(), Some("10.1.0.1"));
        let addrs: Vec<_> = s.peers.iter().map(|p| p.address.as_str()).collect();
        assert_eq!(addrs, ["10.0.0.2", "10.0.0.3"]);
        assert!(share_of("h9", &[spec(THREE_HOSTS)]).environments.is_empty());
    }

    #[test]
    fn links_restrict_peers_and_rules_go_to_their_host() {
        let star = format!(
            "{THREE_HOSTS}[[link]]\nhosts = [\"h1\", \"h2\"]\n[[link]]\nhosts = [\"h2\", \"h3\"]\n\
             [[rule]]\nhost = \"h2\"\nsrc = \"any\"\ndst = \"02:00:00:00:00:03\"\nedge = \"h3\"\n"
        );
        let specs = [spec(&star)];
        let h1 = share_of("h1", &specs);
        assert_eq!(h1.peers.len(), 1);
        assert_eq!(h1.peers[0].address, "10.0.0.2");
        assert!(h1.environments["blue"].rules.is_empty());
        let h2 = share_of("h2", &specs);
        assert_eq!(h2.peers.len(), 2);
        let rule = &h2.environments["blue"].rules[0];
        assert_eq!(rule.edge.as_deref(), Some("10.0.0.3"));
        assert_eq!(rule.src, "any");
    }

    #[test]
    fn deltas_carry_only_what_changed() {
        let a = share_of("h1", &[spec(THREE_HOSTS)]);
        let b = share_of("h1", std::iter::empty());
        match delta(7, &a, &b) {
            Event::Delta {
                generation,
                upsert,
                remove,
                peers,
            } => {
                assert_eq!(generation, 7);
                assert!(upsert.is_empty());
                assert_eq!(remove, ["blue"]);
                assert_eq!(peers, Some(vec![]));
            }
            e => panic!("{e:?}"),
        }
        let same = delta(8, &a, &a);
        let line = serde_json::to_string(&same).unwrap();
        assert_eq!(line, r#"{"type":"delta","generation":8}"#);
    }
}
