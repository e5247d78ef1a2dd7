//! VADAPT's topology adaptation (the VADAPT proposal, section 9, and VNET's figure 11):
//! an adapted environment's overlay is a resilient star through a proxy host, to which
//! fast-path links are added between the hosts whose VMs the inferred application topology
//! (VTTIF) says talk, in decreasing order of their traffic, up to a link budget; links the
//! application stopped using are removed. A fast-path link is a VNET link: once it exists,
//! each host sends the other's VMs their frames over it instead of through the proxy.
//!
//! [`plan`] is pure (tested exactly); [`Adapter`] keeps the adaptations made, with their
//! measured effect, and automatic mode's hysteresis.
use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    sync::{
        atomic::{AtomicU64, Ordering},
        Mutex,
    },
    time::Instant,
};

use violin_api::rest::MeasuredPair;
pub use violin_api::rest::{AdaptPlan, AdaptStep, Adaptation, VmMove};

use crate::{
    measure::Matrix,
    spec::{ordered, Spec, Target},
    vttif::Topology,
};

/// A pair of hosts (smaller name first).
pub type HostPair = (String, String);

/// How much the inferred topology's VM pairs between two hosts send.
#[derive(Clone, Debug, PartialEq)]
pub struct Demand {
    pub hosts: HostPair,
    pub bytes_per_second: f64,
    /// `src->dst` with bytes/s, busiest first.
    pub pairs: Vec<(String, f64)>,
}

/// The host pairs an adapted environment's inferred topology asks fast paths for, busiest
/// first (ties by name). VM pairs on one host, or with one end on the proxy, need none.
pub fn demands(spec: &Spec, topo: &Topology) -> Vec<Demand> {
    let Some(proxy) = spec.proxy() else {
        return Vec::new();
    };
    let vm_of: BTreeMap<[u8; 6], (&str, &str)> = spec
        .vms
        .iter()
        .map(|(n, v)| (v.mac.octets(), (n.as_str(), v.host.as_str())))
        .collect();
    let mut by_hosts: BTreeMap<HostPair, Demand> = BTreeMap::new();
    for (src, dst) in topo.edges.keys() {
        let (Some(&(sn, sh)), Some(&(dn, dh))) = (vm_of.get(src), vm_of.get(dst)) else {
            continue;
        };
        if sh == dh || sh == proxy || dh == proxy {
            continue;
        }
        let bps = topo.matrix.get(&(*src, *dst)).copied().unwrap_or(0.0);
        let hosts = ordered(sh, dh);
        let d = by_hosts.entry(hosts.clone()).or_insert(Demand {
            hosts,
            bytes_per_second: 0.0,
            pairs: Vec::new(),
        });
        d.bytes_per_second += bps;
        d.pairs.push((format!("{sn}->{dn}"), bps));
    }
    let mut out: Vec<Demand> = by_hosts.into_values().collect();
    for d in &mut out {
        d.pairs
            .sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    }
    out.sort_by(|a, b| {
        b.bytes_per_second
            .total_cmp(&a.bytes_per_second)
            .then(a.hosts.cmp(&b.hosts))
    });
    out
}

/// Links that forwarding rules use: not VADAPT's to remove.
fn ruled(spec: &Spec) -> BTreeSet<HostPair> {
    spec.rules
        .iter()
        .filter_map(|r| match &r.target {
            Target::Edge(to) => Some(ordered(&r.host, to)),
            Target::Interface(_) => None,
        })
        .collect()
}

fn rate(bps: f64) -> String {
    if bps >= 1e6 {
        format!("{:.1} MB/s", bps / 1e6)
    } else {
        format!("{:.1} kB/s", bps / 1e3)
    }
}

fn step(action: &str, d: Option<&Demand>, hosts: &HostPair, reason: String) -> AdaptStep {
    AdaptStep {
        action: action.into(),
        hosts: [hosts.0.clone(), hosts.1.clone()],
        bytes_per_second: d.map_or(0.0, |d| d.bytes_per_second),
        pairs: d.map_or_else(Vec::new, |d| d.pairs.iter().map(|p| p.0.clone()).collect()),
        reason,
    }
}

/// The steps that fit `spec`'s fast-path links to `demands`: the busiest host pairs up to
/// the budget, after the links in `held` (automatic mode's hysteresis keeps those; they
/// count against the budget). Links that forwarding rules use are never removed.
pub fn plan(spec: &Spec, demands: &[Demand], held: &BTreeSet<HostPair>) -> Vec<AdaptStep> {
    let Some(adapt) = &spec.adapt else {
        return Vec::new();
    };
    let budget = adapt.budget.unwrap_or(usize::MAX);
    let ruled = ruled(spec);
    let mut chosen: BTreeSet<HostPair> = spec
        .links
        .iter()
        .filter(|l| held.contains(*l) || ruled.contains(*l))
        .cloned()
        .collect();
    let mut rank = BTreeMap::new();
    for (i, d) in demands.iter().enumerate() {
        rank.insert(d.hosts.clone(), (i + 1, d));
        if chosen.len() < budget {
            chosen.insert(d.hosts.clone());
        }
    }
    let budget_text = adapt
        .budget
        .map_or("no budget".into(), |b| format!("a budget of {b}"));
    let mut steps = Vec::new();
    for d in demands {
        if chosen.contains(&d.hosts) && !spec.links.contains(&d.hosts) {
            let (i, _) = rank[&d.hosts];
            steps.push(step(
                "add",
                Some(d),
                &d.hosts,
                format!(
                    "{} went through proxy {}; rank {i} of {} host pairs, within {budget_text}",
                    rate(d.bytes_per_second),
                    adapt.proxy,
                    demands.len()
                ),
            ));
        }
    }
    for l in spec.links.difference(&chosen) {
        let reason = match rank.get(l) {
            Some((i, _)) => format!(
                "rank {i} of {} host pairs: busier pairs take {budget_text}",
                demands.len()
            ),
            None => "the inferred topology has no VM pair between these hosts".into(),
        };
        steps.push(step("remove", rank.get(l).map(|r| r.1), l, reason));
    }
    steps
}

/// `spec` with `steps` made (the links added and removed).
pub fn apply_steps(spec: &mut Spec, steps: &[AdaptStep]) {
    for s in steps {
        let l = ordered(&s.hosts[0], &s.hosts[1]);
        if s.action == "add" {
            spec.links.insert(l);
        } else {
            spec.links.remove(&l);
        }
    }
}

/// A spec applied over an adapted environment keeps the fast paths VADAPT made when it
/// lists no links of its own and keeps the proxy: they are the adaptation's state, not the
/// operator's. Whether it carried any.
pub fn carry_fast_paths(current: Option<&Spec>, next: &mut Spec) -> bool {
    let (Some(cur), Some(proxy)) = (current, next.proxy()) else {
        return false;
    };
    if cur.proxy() != Some(proxy) || !next.links.is_empty() {
        return false;
    }
    let kept: BTreeSet<HostPair> = cur
        .links
        .iter()
        .filter(|(a, b)| {
            a != proxy && b != proxy && next.hosts.contains_key(a) && next.hosts.contains_key(b)
        })
        .cloned()
        .collect();
    next.links = kept;
    !next.links.is_empty()
}

/// A mapping must beat the current one by this factor to be worth its migrations.
pub const MAPPING_GAIN: f64 = 2.0;

/// The unordered VM pairs of the inferred topology (by name), busiest first, with what
/// they send both ways.
fn vm_pairs(spec: &Spec, topo: &Topology) -> Vec<((String, String), f64)> {
    let name: BTreeMap<[u8; 6], &String> =
        spec.vms.iter().map(|(n, v)| (v.mac.octets(), n)).collect();
    let mut pairs: BTreeMap<(String, String), f64> = BTreeMap::new();
    for (src, dst) in topo.edges.keys() {
        if let (Some(a), Some(b)) = (name.get(src), name.get(dst)) {
            let bps = topo.matrix.get(&(*src, *dst)).copied().unwrap_or(0.0);
            *pairs.entry(ordered(a, b)).or_default() += bps;
        }
    }
    let mut v: Vec<_> = pairs.into_iter().collect();
    v.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    v
}

/// How well a mapping serves the topology: each VM pair's traffic times the throughput
/// between its hosts (one host: twice the fastest measured path; unmeasured: nothing).
fn score(
    pairs: &[((String, String), f64)],
    at: &BTreeMap<String, String>,
    matrix: &[MeasuredPair],
    fastest: f64,
) -> f64 {
    pairs
        .iter()
        .map(|((a, b), bps)| {
            let (ha, hb) = (&at[a], &at[b]);
            let t = if ha == hb {
                2.0 * fastest
            } else {
                Matrix::throughput(matrix, ha, hb).unwrap_or(0.0)
            };
            bps * t
        })
        .sum()
}

/// VADAPT's greedy mapping of VMs onto hosts (the proposal's section 9.3.2): the VM pairs
/// of the inferred topology, busiest first, each pair of VMs neither of which is placed
/// yet onto the fastest measured pair of hosts neither of which has been given one (a VM
/// stays where it is when the pair allows); then each VM left over next to its placed
/// counterpart, on the host with the fastest path to it that has room (its own host
/// counts as the fastest). Hosts hold at most `vms_per_host` VMs (default: the most any
/// host runs now); VMs outside the topology stay. Returns the moves, and why (none when
/// the new mapping would not serve the topology [`MAPPING_GAIN`] times better).
pub fn map_vms(spec: &Spec, topo: &Topology, matrix: &[MeasuredPair]) -> (Vec<VmMove>, String) {
    let Some(adapt) = &spec.adapt else {
        return (Vec::new(), "not an adapted environment".into());
    };
    let pairs = vm_pairs(spec, topo);
    if pairs.is_empty() {
        return (Vec::new(), "no inferred topology to map".into());
    }
    let hosts: Vec<&String> = spec.hosts.keys().collect();
    let mut paths: Vec<((String, String), f64)> = Vec::new();
    for (i, a) in hosts.iter().enumerate() {
        for b in &hosts[i + 1..] {
            if let Some(t) = Matrix::throughput(matrix, a, b) {
                paths.push((ordered(a, b), t));
            }
        }
    }
    if paths.is_empty() {
        return (Vec::new(), "no host measurements yet".into());
    }
    paths.sort_by(|a, b| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0)));
    let fastest = paths[0].1;
    let now: BTreeMap<String, String> = spec
        .vms
        .iter()
        .map(|(n, v)| (n.clone(), v.host.clone()))
        .collect();
    let mut per_host: BTreeMap<&str, usize> = BTreeMap::new();
    for v in spec.vms.values() {
        *per_host.entry(v.host.as_str()).or_default() += 1;
    }
    let room = adapt
        .vms_per_host
        .unwrap_or_else(|| per_host.values().copied().max().unwrap_or(1));
    let talking: BTreeSet<&String> = pairs.iter().flat_map(|((a, b), _)| [a, b]).collect();
    let mut load: BTreeMap<String, usize> = BTreeMap::new();
    for (n, h) in &now {
        if !talking.contains(n) {
            *load.entry(h.clone()).or_default() += 1;
        }
    }
    let free = |load: &BTreeMap<String, usize>, h: &str| load.get(h).copied().unwrap_or(0) < room;
    let mut at: BTreeMap<String, String> = BTreeMap::new();
    let mut why: BTreeMap<String, String> = BTreeMap::new();
    let mut given: BTreeSet<String> = BTreeSet::new();
    for ((a, b), bps) in &pairs {
        if at.contains_key(a) || at.contains_key(b) {
            continue;
        }
        // A pair on one host is served as well as it can be: it stays there.
        if now[a] == now[b] && !given.contains(&now[a]) {
            let h = now[a].clone();
            for vm in [a, b] {
                at.insert(vm.clone(), h.clone());
                why.insert(vm.clone(), format!("pair {a}<->{b} shares {h}"));
            }
            *load.entry(h.clone()).or_default() += 2;
            given.insert(h);
            continue;
        }
        let Some(((x, y), t)) = paths.iter().find(|((x, y), _)| {
            !given.contains(x) && !given.contains(y) && free(&load, x) && free(&load, y)
        }) else {
            continue;
        };
        // Where they are already is as good when it is within the gain worth migrating
        // for: measurements of fast paths differ by their noise.
        let (ca, cb) = (&now[a], &now[b]);
        let here = (ca != cb && !given.contains(ca) && !given.contains(cb))
            .then(|| Matrix::throughput(matrix, ca, cb))
            .flatten();
        let ((x, y), t) = match here {
            Some(h) if h * MAPPING_GAIN >= *t && free(&load, ca) && free(&load, cb) => {
                (ordered(ca, cb), h)
            }
            _ => ((x.clone(), y.clone()), *t),
        };
        let (x, y, t) = (&x, &y, &t);
        let (ha, hb) = if now[b] == *x || now[a] == *y {
            (y, x)
        } else {
            (x, y)
        };
        for (vm, h) in [(a, ha), (b, hb)] {
            at.insert(vm.clone(), h.clone());
            *load.entry(h.clone()).or_default() += 1;
            given.insert(h.clone());
            why.insert(
                vm.clone(),
                format!(
                    "pair {a}<->{b} ({}) onto the fastest free hosts {x}-{y} ({})",
                    rate(*bps),
                    rate(*t)
                ),
            );
        }
    }
    // Stragglers, until none can be placed (a counterpart may be one too).
    loop {
        let mut placed = false;
        for ((a, b), _) in &pairs {
            for (vm, other) in [(a, b), (b, a)] {
                if at.contains_key(vm) {
                    continue;
                }
                let Some(peer) = at.get(other).cloned() else {
                    continue;
                };
                let best = hosts
                    .iter()
                    .filter(|h| free(&load, h))
                    .map(|h| {
                        let t = if **h == peer {
                            f64::INFINITY
                        } else {
                            Matrix::throughput(matrix, h, &peer).unwrap_or(0.0)
                        };
                        (t, *h)
                    })
                    .max_by(|a, b| a.0.total_cmp(&b.0).then(b.1.cmp(a.1)));
                if let Some((t, h)) = best {
                    at.insert(vm.clone(), h.clone());
                    *load.entry(h.clone()).or_default() += 1;
                    let path = if t.is_infinite() {
                        "the same host".to_string()
                    } else {
                        rate(t)
                    };
                    why.insert(
                        vm.clone(),
                        format!("next to {other} on {peer}: {h} has the fastest path with room ({path})"),
                    );
                    placed = true;
                }
            }
        }
        if !placed {
            break;
        }
    }
    for vm in talking {
        at.entry(vm.clone()).or_insert_with(|| now[vm].clone());
    }
    let full: BTreeMap<String, String> = now
        .iter()
        .map(|(n, h)| (n.clone(), at.get(n).unwrap_or(h).clone()))
        .collect();
    let (before, after) = (
        score(&pairs, &now, matrix, fastest),
        score(&pairs, &full, matrix, fastest),
    );
    let moves: Vec<VmMove> = full
        .iter()
        .filter(|(n, h)| now[*n] != **h)
        .map(|(n, h)| VmMove {
            vm: n.clone(),
            from: now[n].clone(),
            to: h.clone(),
            reason: why.get(n).cloned().unwrap_or_default(),
        })
        .collect();
    if moves.is_empty() {
        return (Vec::new(), "the VMs are where the mapping puts them".into());
    }
    if after < before * MAPPING_GAIN {
        return (
            Vec::new(),
            format!(
                "the mapping would serve the topology {:.2}x as well, under the {MAPPING_GAIN}x worth migrating for",
                if before > 0.0 { after / before } else { 1.0 }
            ),
        );
    }
    let gain = if before > 0.0 {
        format!("{:.2}x", after / before)
    } else {
        "from nothing measured".into()
    };
    (
        moves,
        format!("the mapping serves the topology {gain} as well as the VMs' current hosts"),
    )
}

/// The plan as the API shows it.
pub fn describe(spec: &Spec, demands: &[Demand], steps: Vec<AdaptStep>) -> Option<AdaptPlan> {
    let a = spec.adapt.as_ref()?;
    Some(AdaptPlan {
        environment: spec.name.to_string(),
        proxy: a.proxy.clone(),
        budget: a.budget.map(|b| b as u32),
        auto: a.auto,
        fast_paths: spec
            .links
            .iter()
            .map(|(x, y)| [x.clone(), y.clone()])
            .collect(),
        demand: demands
            .iter()
            .map(|d| step("add", Some(d), &d.hosts, String::new()))
            .collect(),
        steps,
        moves: Vec::new(),
        mapping: String::new(),
    })
}

/// The environment's traffic over VTTIF's window, bytes/s.
pub fn total(topo: &Topology) -> f64 {
    topo.matrix.values().sum()
}

/// Adaptations kept for `--explain`.
const KEPT: usize = 256;

/// Automatic mode's memory of one environment.
#[derive(Default)]
struct Auto {
    /// When each host pair last had demand.
    used: BTreeMap<HostPair, Instant>,
    last: Option<Instant>,
}

/// The adaptations made (newest last) and automatic mode's hysteresis.
#[derive(Default)]
pub struct Adapter {
    log: Mutex<VecDeque<Adaptation>>,
    auto: Mutex<BTreeMap<String, Auto>>,
    next: AtomicU64,
}

impl Adapter {
    /// Records an adaptation; returns it with its id.
    pub fn record(&self, mut a: Adaptation) -> Adaptation {
        a.id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        let mut log = self.log.lock().unwrap();
        log.push_back(a.clone());
        while log.len() > KEPT {
            log.pop_front();
        }
        a
    }

    /// Fills in what was measured after the fact.
    pub fn update(&self, id: u64, f: impl FnOnce(&mut Adaptation)) {
        if let Some(a) = self.log.lock().unwrap().iter_mut().find(|a| a.id == id) {
            f(a);
        }
    }

    /// The adaptations of `env` (all: None), oldest first.
    pub fn log(&self, env: Option<&str>) -> Vec<Adaptation> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter(|a| env.is_none_or(|e| a.environment == e))
            .cloned()
            .collect()
    }

    /// Automatic mode, once per tick for an environment: the links its hysteresis holds,
    /// or None when it adapted less than `hold_ms` ago.
    pub fn auto_held(
        &self,
        spec: &Spec,
        demands: &[Demand],
        hold_ms: u64,
        now: Instant,
    ) -> Option<BTreeSet<HostPair>> {
        let hold = std::time::Duration::from_millis(hold_ms);
        let mut all = self.auto.lock().unwrap();
        let st = all.entry(spec.name.to_string()).or_default();
        for d in demands {
            st.used.insert(d.hosts.clone(), now);
        }
        st.used.retain(|_, t| now.duration_since(*t) < hold * 4);
        if st.last.is_some_and(|t| now.duration_since(t) < hold) {
            return None;
        }
        Some(
            spec.links
                .iter()
                .filter(|l| {
                    st.used
                        .get(*l)
                        .is_some_and(|t| now.duration_since(*t) < hold)
                })
                .cloned()
                .collect(),
        )
    }

    /// Automatic mode adapted `env` at `now`.
    pub fn auto_done(&self, env: &str, now: Instant) {
        self.auto
            .lock()
            .unwrap()
            .entry(env.to_string())
            .or_default()
            .last = Some(now);
    }

    /// Forgets a deleted environment's hysteresis (its log stays).
    pub fn forget(&self, env: &str) {
        self.auto.lock().unwrap().remove(env);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::THREE_HOSTS;

    /// Four hosts h1..h4 with VMs a..d, h1 the proxy; e is a second VM on h2.
    fn star(budget: Option<u32>) -> Spec {
        let mut text = THREE_HOSTS.to_string();
        text.push_str(
            "[[host]]\nname = \"h4\"\naddress = \"10.0.0.4\"\n\
             [[vm]]\nname = \"d\"\nhost = \"h4\"\nport = \"vm1\"\nmac = \"02:00:00:00:00:04\"\n\
             [[vm]]\nname = \"e\"\nhost = \"h2\"\nport = \"vm2\"\nmac = \"02:00:00:00:00:05\"\n\
             [adapt]\nproxy = \"h1\"\n",
        );
        if let Some(b) = budget {
            text.push_str(&format!("links = {b}\n"));
        }
        Spec::parse(&text).unwrap()
    }

    fn mac(n: u8) -> [u8; 6] {
        [2, 0, 0, 0, 0, n]
    }

    /// A topology of directed (src, dst, bytes/s) by VM number.
    fn topo(edges: &[(u8, u8, f64)]) -> Topology {
        let mut t = Topology::default();
        for &(s, d, bps) in edges {
            t.edges.insert((mac(s), mac(d)), 1.0);
            t.matrix.insert((mac(s), mac(d)), bps);
        }
        t
    }

    fn hosts(steps: &[AdaptStep], action: &str) -> Vec<String> {
        steps
            .iter()
            .filter(|s| s.action == action)
            .map(|s| s.hosts.join("-"))
            .collect()
    }

    #[test]
    fn demand_is_summed_per_host_pair_busiest_first_without_the_proxy() {
        let s = star(None);
        // b->c and c->b (h2-h3), e->d (h2-h4), a->b (with the proxy), b->e (one host).
        let t = topo(&[
            (2, 3, 100.0),
            (3, 2, 50.0),
            (5, 4, 400.0),
            (1, 2, 1000.0),
            (2, 5, 1000.0),
        ]);
        let d = demands(&s, &t);
        let got: Vec<(String, f64)> = d
            .iter()
            .map(|d| (format!("{}-{}", d.hosts.0, d.hosts.1), d.bytes_per_second))
            .collect();
        assert_eq!(got, [("h2-h4".into(), 400.0), ("h2-h3".into(), 150.0)]);
        assert_eq!(d[1].pairs[0].0, "b->c");
    }

    #[test]
    fn links_are_added_busiest_first_up_to_the_budget() {
        let s = star(Some(1));
        let t = topo(&[(2, 3, 100.0), (5, 4, 400.0), (3, 4, 10.0)]);
        let d = demands(&s, &t);
        let steps = plan(&s, &d, &BTreeSet::new());
        assert_eq!(hosts(&steps, "add"), ["h2-h4"]);
        assert!(hosts(&steps, "remove").is_empty());
        assert!(steps[0].reason.contains("proxy h1"), "{}", steps[0].reason);
        // No budget: every pair.
        let all = plan(&star(None), &d, &BTreeSet::new());
        assert_eq!(hosts(&all, "add"), ["h2-h4", "h2-h3", "h3-h4"]);
    }

    #[test]
    fn a_busier_pair_displaces_a_link_and_unused_links_go() {
        let mut s = star(Some(1));
        apply_steps(
            &mut s,
            &[step("add", None, &ordered("h2", "h3"), String::new())],
        );
        // The application moved to h2-h4: h2-h3 goes, h2-h4 comes.
        let t = topo(&[(2, 3, 100.0), (5, 4, 400.0)]);
        let d = demands(&s, &t);
        let steps = plan(&s, &d, &BTreeSet::new());
        assert_eq!(hosts(&steps, "add"), ["h2-h4"]);
        assert_eq!(hosts(&steps, "remove"), ["h2-h3"]);
        assert!(steps[1].reason.contains("rank 2"), "{}", steps[1].reason);
        // Held by hysteresis, it stays and keeps the budget.
        let held = BTreeSet::from([ordered("h2", "h3")]);
        assert!(plan(&s, &d, &held).is_empty());
        // Nothing sends between h2 and h3 any more: removed, for that reason.
        let quiet = demands(&s, &topo(&[(5, 4, 400.0)]));
        let steps = plan(&s, &quiet, &BTreeSet::new());
        assert_eq!(hosts(&steps, "remove"), ["h2-h3"]);
        assert!(steps.iter().any(|x| x.reason.contains("no VM pair")));
        apply_steps(&mut s, &steps);
        assert_eq!(s.links, BTreeSet::from([ordered("h2", "h4")]));
    }

    #[test]
    fn links_rules_use_stay() {
        let text = format!(
            "{THREE_HOSTS}[adapt]\nproxy = \"h1\"\n[[link]]\nhosts = [\"h2\", \"h3\"]\n\
             [[rule]]\nhost = \"h2\"\nsrc = \"any\"\ndst = \"02:00:00:00:00:03\"\nedge = \"h3\"\n"
        );
        let s = Spec::parse(&text).unwrap();
        assert!(plan(&s, &[], &BTreeSet::new()).is_empty());
    }

    #[test]
    fn automatic_mode_holds_links_and_waits_between_adaptations() {
        let s = {
            let mut s = star(Some(2));
            s.links.insert(ordered("h2", "h3"));
            s
        };
        let a = Adapter::default();
        let t0 = Instant::now();
        let busy = demands(&s, &topo(&[(2, 3, 100.0)]));
        let held = a.auto_held(&s, &busy, 1000, t0).unwrap();
        assert_eq!(held, BTreeSet::from([ordered("h2", "h3")]));
        a.auto_done("blue", t0);
        let later = t0 + std::time::Duration::from_millis(500);
        assert!(a.auto_held(&s, &[], 1000, later).is_none(), "within hold");
        let idle = t0 + std::time::Duration::from_millis(1500);
        let held = a.auto_held(&s, &[], 1000, idle).unwrap();
        assert!(held.is_empty(), "unused for the hold time: {held:?}");
    }

    #[test]
    fn a_spec_applied_again_keeps_the_fast_paths() {
        let mut cur = star(Some(1));
        cur.links.insert(ordered("h2", "h3"));
        let mut next = star(Some(2));
        assert!(carry_fast_paths(Some(&cur), &mut next));
        assert_eq!(next.links, cur.links);
        // Links of its own, another proxy, or no [adapt]: the spec's word.
        let mut own = star(None);
        own.links.insert(ordered("h3", "h4"));
        assert!(!carry_fast_paths(Some(&cur), &mut own));
        assert_eq!(own.links, BTreeSet::from([ordered("h3", "h4")]));
        let mut plain = Spec::parse(THREE_HOSTS).unwrap();
        assert!(!carry_fast_paths(Some(&cur), &mut plain));
        assert!(plain.links.is_empty());
    }

    /// A measured matrix where the pairs in `fast` are fast and every other slow.
    fn matrix(fast: &[(&str, &str)]) -> Vec<MeasuredPair> {
        let hosts = ["h1", "h2", "h3", "h4"];
        let mut v = Vec::new();
        for a in hosts {
            for b in hosts {
                if a != b {
                    let quick = fast
                        .iter()
                        .any(|&(x, y)| (x, y) == (a, b) || (y, x) == (a, b));
                    v.push(MeasuredPair {
                        from: a.into(),
                        to: b.into(),
                        rtt_us: Some(100.0),
                        bandwidth_bytes_per_second: Some(if quick { 100e6 } else { 1e6 }),
                        passive_bytes_per_second: None,
                        probes_lost: 0,
                        age_seconds: 1.0,
                    });
                }
            }
        }
        v
    }

    #[test]
    fn the_busiest_pair_goes_onto_the_fastest_hosts() {
        let s = star(None);
        // b (h2) and d (h4) talk heavily; h1-h2 is the fast path: d moves to h1, b stays.
        let t = topo(&[(2, 4, 1000.0), (4, 2, 1000.0)]);
        let (moves, why) = map_vms(&s, &t, &matrix(&[("h1", "h2")]));
        assert_eq!(moves.len(), 1, "{moves:?} {why}");
        assert_eq!(
            (
                moves[0].vm.as_str(),
                moves[0].from.as_str(),
                moves[0].to.as_str()
            ),
            ("d", "h4", "h1")
        );
        assert!(moves[0].reason.contains("b<->d"), "{}", moves[0].reason);
        assert!(why.contains("as well as"), "{why}");
        // Already there: nothing to do.
        let mut there = s.clone();
        there.vms.get_mut("d").unwrap().host = "h1".into();
        assert!(map_vms(&there, &t, &matrix(&[("h1", "h2")])).0.is_empty());
        // No measurements, or no topology: no moves, and why.
        assert_eq!(map_vms(&s, &t, &[]).1, "no host measurements yet");
        assert_eq!(
            map_vms(&s, &topo(&[]), &matrix(&[])).1,
            "no inferred topology to map"
        );
        // Every path alike: where they are is as good, so they stay.
        let (moves, why) = map_vms(&s, &t, &matrix(&[]));
        assert!(moves.is_empty(), "{moves:?} {why}");
        assert_eq!(why, "the VMs are where the mapping puts them");
        // A path 1.1 times as fast is not worth a migration either.
        let mut near = matrix(&[("h1", "h2")]);
        for p in &mut near {
            if [p.from.as_str(), p.to.as_str()] == ["h2", "h4"]
                || [p.from.as_str(), p.to.as_str()] == ["h4", "h2"]
            {
                p.bandwidth_bytes_per_second = Some(91e6);
            }
        }
        assert!(map_vms(&s, &t, &near).0.is_empty());
        // A pair on one host stays together.
        let mut together = s.clone();
        together.vms.get_mut("d").unwrap().host = "h2".into();
        let (moves, _) = map_vms(&together, &t, &matrix(&[("h1", "h3")]));
        assert!(moves.is_empty(), "{moves:?}");
    }

    #[test]
    fn stragglers_join_their_counterpart_where_there_is_room() {
        // a-b heavy (mapped first onto h1-h2), then c talks to a: with room for two VMs a
        // host, c joins a on its host.
        let mut s = star(None);
        s.adapt.as_mut().unwrap().vms_per_host = Some(2);
        let t = topo(&[(1, 2, 1000.0), (3, 1, 1000.0)]);
        let (moves, _) = map_vms(&s, &t, &matrix(&[("h1", "h2")]));
        let c = moves.iter().find(|m| m.vm == "c").expect("c moves");
        assert_eq!(c.to, "h1", "{moves:?}");
        assert!(c.reason.contains("next to a"), "{}", c.reason);
    }

    #[test]
    fn the_log_keeps_ids_and_updates() {
        let a = Adapter::default();
        let blank = Adaptation {
            id: 0,
            environment: "blue".into(),
            trigger: "manual".into(),
            at_unix_ms: 0,
            steps: vec![],
            changes: vec![],
            moves: vec![],
            migrations: vec![],
            refused: vec![],
            generation: None,
            reconfigure_ms: None,
            traffic_before: 0.0,
            traffic_after: None,
        };
        let one = a.record(blank.clone());
        let two = a.record(Adaptation {
            environment: "red".into(),
            ..blank
        });
        assert_eq!((one.id, two.id), (1, 2));
        a.update(1, |x| x.reconfigure_ms = Some(3.0));
        assert_eq!(a.log(Some("blue"))[0].reconfigure_ms, Some(3.0));
        assert_eq!(a.log(None).len(), 2);
    }
}
