//! VTTIF, the virtual topology and traffic inference of the VNET paper (section 2.2) and
//! the VADAPT proposal: from what each host's datapath counted per VM pair, the global
//! traffic matrix over a smoothing window, normalised to its busiest pair and pruned below
//! a detection threshold, is the application's topology.
//!
//! Damping: the window is a low-pass filter. An application that switches topology less
//! often than the window is long is followed, one topology after the other; one that
//! switches faster keeps both in the window, so the inference settles on their union
//! instead of oscillating. A topology is declared only after it has held for a settle
//! time, so a pair whose intensity hovers at the threshold does not flap.
//!
//! [`Vttif`] is the inference for one environment, pure and driven by the caller's clock
//! (so it is tested exactly); [`Inference`] holds one per environment for the API, fed by
//! the hosts' traffic reports.
use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    sync::Mutex,
    time::Instant,
};

use violin_api::share::TrafficReport;

/// A directed VM pair of an environment: (source MAC, destination MAC).
pub type Pair = ([u8; 6], [u8; 6]);

/// VTTIF's three parameters (the update rate is the reporters').
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Params {
    /// The window over which reports are aggregated, ms.
    pub smoothing_ms: u64,
    /// The fraction of the busiest pair's intensity a pair needs to be part of the topology.
    pub threshold: f64,
    /// How long a new inferred topology must hold before it is declared, ms.
    pub settle_ms: u64,
}

impl Default for Params {
    /// With hosts reporting every 250 ms, a window of eight reports per host.
    fn default() -> Params {
        Params {
            smoothing_ms: 2000,
            threshold: 0.1,
            settle_ms: 500,
        }
    }
}

impl Params {
    /// The error names the parameter.
    pub fn check(&self) -> Result<(), String> {
        if self.smoothing_ms == 0 {
            return Err("smoothing_ms: must be positive".into());
        }
        if !(self.threshold > 0.0 && self.threshold <= 1.0) {
            return Err(format!("threshold: {} is outside (0, 1]", self.threshold));
        }
        if self.settle_ms > self.smoothing_ms {
            return Err(format!(
                "settle_ms: {} is longer than the smoothing window ({} ms)",
                self.settle_ms, self.smoothing_ms
            ));
        }
        Ok(())
    }
}

/// An inferred application topology: its pairs, each with its intensity relative to the
/// busiest (1.0), and the traffic matrix it came from (bytes per second over the window).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Topology {
    pub edges: BTreeMap<Pair, f64>,
    pub matrix: BTreeMap<Pair, f64>,
}

impl Topology {
    pub fn pairs(&self) -> BTreeSet<Pair> {
        self.edges.keys().copied().collect()
    }
}

/// The inference for one environment.
#[derive(Debug)]
pub struct Vttif {
    params: Params,
    /// Reports in arrival order: (time ms, pair, bytes).
    window: VecDeque<(u64, Pair, u64)>,
    /// Bytes per pair within the window.
    sums: BTreeMap<Pair, u64>,
    declared: Topology,
    /// The inferred pairs that differ from the declared ones, and since when.
    candidate: Option<(BTreeSet<Pair>, u64)>,
    /// How many times a new topology was declared.
    changes: u64,
}

impl Vttif {
    pub fn new(params: Params) -> Vttif {
        Vttif {
            params,
            window: VecDeque::new(),
            sums: BTreeMap::new(),
            declared: Topology::default(),
            candidate: None,
            changes: 0,
        }
    }

    /// A host's report at `now_ms`: bytes each pair sent since its previous report.
    pub fn report(&mut self, now_ms: u64, deltas: impl IntoIterator<Item = (Pair, u64)>) {
        for (pair, bytes) in deltas {
            if bytes == 0 || pair.0 == pair.1 {
                continue;
            }
            self.window.push_back((now_ms, pair, bytes));
            let sum = self.sums.entry(pair).or_default();
            *sum = sum.saturating_add(bytes);
        }
        self.expire(now_ms);
    }

    /// Drops what fell out of the window.
    fn expire(&mut self, now_ms: u64) {
        let start = now_ms.saturating_sub(self.params.smoothing_ms);
        while let Some(&(t, pair, bytes)) = self.window.front() {
            if t > start {
                break;
            }
            self.window.pop_front();
            if let Some(sum) = self.sums.get_mut(&pair) {
                *sum = sum.saturating_sub(bytes);
                if *sum == 0 {
                    self.sums.remove(&pair);
                }
            }
        }
    }

    /// The topology the window shows now: normalised to the busiest pair, pruned below
    /// the detection threshold.
    pub fn infer(&mut self, now_ms: u64) -> Topology {
        self.expire(now_ms);
        let secs = self.params.smoothing_ms as f64 / 1000.0;
        let matrix: BTreeMap<Pair, f64> = self
            .sums
            .iter()
            .map(|(p, b)| (*p, *b as f64 / secs))
            .collect();
        let top = matrix.values().copied().fold(0.0, f64::max);
        let edges = if top > 0.0 {
            matrix
                .iter()
                .map(|(p, v)| (*p, v / top))
                .filter(|(_, x)| *x >= self.params.threshold)
                .collect()
        } else {
            BTreeMap::new()
        };
        Topology { edges, matrix }
    }

    /// Infers at `now_ms` and declares the result once it has held for the settle time;
    /// returns the declared topology and whether it changed just now.
    pub fn update(&mut self, now_ms: u64) -> (&Topology, bool) {
        let now = self.infer(now_ms);
        let pairs = now.pairs();
        if pairs == self.declared.pairs() {
            self.candidate = None;
            // Same topology: its intensities and matrix follow the window.
            self.declared = now;
            return (&self.declared, false);
        }
        let since = match &self.candidate {
            Some((c, since)) if *c == pairs => *since,
            _ => {
                self.candidate = Some((pairs, now_ms));
                now_ms
            }
        };
        if now_ms.saturating_sub(since) >= self.params.settle_ms {
            self.declared = now;
            self.candidate = None;
            self.changes += 1;
            return (&self.declared, true);
        }
        (&self.declared, false)
    }

    /// How many topology changes have been declared.
    pub fn changes(&self) -> u64 {
        self.changes
    }
}

/// VTTIF for every environment (by VNI), on the controller's clock.
pub struct Inference {
    params: Params,
    start: Instant,
    envs: Mutex<BTreeMap<u32, Env>>,
    /// Bumped whenever any environment declares a change: what watchers wait on.
    declared: tokio::sync::watch::Sender<u64>,
}

struct Env {
    vttif: Vttif,
    /// Changes already handed to the metrics.
    counted: u64,
}

/// What an environment's inference holds after a report or a look: its edges, and the
/// changes declared since the last time this was asked (for a counter).
pub struct Seen {
    pub vni: u32,
    pub edges: usize,
    pub new_changes: u64,
}

impl Inference {
    pub fn new(params: Params) -> Inference {
        Inference {
            params,
            start: Instant::now(),
            envs: Mutex::new(BTreeMap::new()),
            declared: tokio::sync::watch::Sender::new(0),
        }
    }

    pub fn params(&self) -> Params {
        self.params
    }

    /// Wakes when any environment declares a new topology.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u64> {
        self.declared.subscribe()
    }

    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn seen(&self, vni: u32, e: &mut Env, edges: usize) -> Seen {
        let changes = e.vttif.changes();
        let new_changes = changes - e.counted;
        e.counted = changes;
        if new_changes > 0 {
            self.declared.send_modify(|n| *n += new_changes);
        }
        Seen {
            vni,
            edges,
            new_changes,
        }
    }

    /// Takes a host's report, for the environments in `served` (others are ignored).
    pub fn report(&self, report: &TrafficReport, served: &BTreeSet<u32>) -> Vec<Seen> {
        let now = self.now_ms();
        let mut by_vni: BTreeMap<u32, Vec<(Pair, u64)>> = BTreeMap::new();
        for p in report
            .pairs
            .iter()
            .filter(|p| served.contains(&p.vni.get()))
        {
            by_vni
                .entry(p.vni.get())
                .or_default()
                .push(((p.src.octets(), p.dst.octets()), p.bytes));
        }
        let mut envs = self.envs.lock().unwrap();
        by_vni
            .into_iter()
            .map(|(vni, deltas)| {
                let e = self.env(&mut envs, vni);
                e.vttif.report(now, deltas);
                let edges = e.vttif.update(now).0.edges.len();
                self.seen(vni, e, edges)
            })
            .collect()
    }

    fn env<'a>(&self, envs: &'a mut BTreeMap<u32, Env>, vni: u32) -> &'a mut Env {
        envs.entry(vni).or_insert_with(|| Env {
            vttif: Vttif::new(self.params),
            counted: 0,
        })
    }

    /// Environment `vni`'s declared topology now, and how many changes it had.
    pub fn topology(&self, vni: u32) -> (Topology, u64, Seen) {
        let now = self.now_ms();
        let mut envs = self.envs.lock().unwrap();
        let e = self.env(&mut envs, vni);
        let t = e.vttif.update(now).0.clone();
        let changes = e.vttif.changes();
        let seen = self.seen(vni, e, t.edges.len());
        (t, changes, seen)
    }

    /// Forgets an environment (deleted): one made later with its VNI starts afresh.
    pub fn forget(&self, vni: u32) {
        self.envs.lock().unwrap().remove(&vni);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The tests' parameters: a 1 s window, declared after 250 ms.
    const P: Params = Params {
        smoothing_ms: 1000,
        threshold: 0.1,
        settle_ms: 250,
    };

    fn mac(i: usize) -> [u8; 6] {
        [2, 0, 0, 0, 0, i as u8]
    }

    /// The directed pairs of one of the papers' BSP topologies on `n` VMs.
    fn topology(kind: &str, n: usize) -> BTreeSet<Pair> {
        let mut edges = BTreeSet::new();
        let mut both = |a: usize, b: usize| {
            edges.insert((mac(a), mac(b)));
            edges.insert((mac(b), mac(a)));
        };
        match kind {
            "ring" => (0..n).for_each(|i| both(i, (i + 1) % n)),
            "all-to-all" => {
                for a in 0..n {
                    for b in a + 1..n {
                        both(a, b);
                    }
                }
            }
            "line" => (0..n - 1).for_each(|i| both(i, i + 1)),
            // 2 x n/2 mesh.
            "mesh" => {
                let w = n / 2;
                for i in 0..n {
                    if i % w + 1 < w {
                        both(i, i + 1);
                    }
                    if i + w < n {
                        both(i, i + w);
                    }
                }
            }
            "tree" => (1..n).for_each(|i| both(i, (i - 1) / 2)),
            "star" => (1..n).for_each(|i| both(0, i)),
            other => panic!("no topology {other}"),
        }
        edges
    }

    /// Every host reports every 50 ms (20 Hz) what `edges` sent over that interval, from
    /// `from_ms` to `to_ms`, each edge about 1 MB/s, plus a trickle (ARP, pings) on every
    /// other pair far under the threshold.
    fn run(v: &mut Vttif, edges: &BTreeSet<Pair>, n: usize, from_ms: u64, to_ms: u64) -> u64 {
        let mut declared = 0;
        let mut t = from_ms;
        while t < to_ms {
            t += 50;
            let mut deltas: Vec<(Pair, u64)> = Vec::new();
            for a in 0..n {
                for b in 0..n {
                    let p = (mac(a), mac(b));
                    if a == b {
                        continue;
                    }
                    // Jitter per pair and tick, so intensities are not all equal.
                    let jitter = ((a * 7 + b * 3 + t as usize / 50) % 5) as u64 * 2_000;
                    let bytes = if edges.contains(&p) {
                        50_000 + jitter
                    } else {
                        100
                    };
                    deltas.push((p, bytes));
                }
            }
            v.report(t, deltas);
            if v.update(t).1 {
                declared += 1;
            }
        }
        declared
    }

    #[test]
    fn each_bsp_topology_is_inferred_exactly() {
        for kind in ["ring", "all-to-all", "line", "mesh", "tree", "star"] {
            let want = topology(kind, 8);
            let mut v = Vttif::new(P);
            run(&mut v, &want, 8, 0, 3000);
            let (got, _) = v.update(3000);
            assert_eq!(got.pairs(), want, "{kind}");
            // Intensities are relative to the busiest pair.
            let top = got.edges.values().copied().fold(0.0, f64::max);
            assert_eq!(top, 1.0, "{kind}");
            assert!(
                got.edges.values().all(|x| *x > 0.8),
                "{kind}: {:?}",
                got.edges
            );
        }
    }

    #[test]
    fn a_topology_switch_is_detected_within_the_window() {
        let (ring, star) = (topology("ring", 8), topology("star", 8));
        let mut v = Vttif::new(P);
        run(&mut v, &ring, 8, 0, 3000);
        assert_eq!(v.update(3000).0.pairs(), ring);
        let before = v.changes();
        // The star takes over: within one window plus the settle time it is declared,
        // once, and the ring's pairs are gone from it.
        let declared = run(&mut v, &star, 8, 3000, 3000 + 1000 + 250 + 100);
        assert_eq!(v.update(4350).0.pairs(), star);
        assert!(declared >= 1, "the switch was not declared");
        assert!(
            v.changes() - before <= 2,
            "{} changes",
            v.changes() - before
        );
    }

    #[test]
    fn a_too_fast_alternation_settles_on_the_union() {
        let (ring, star) = (topology("ring", 8), topology("star", 8));
        let union: BTreeSet<Pair> = ring.union(&star).copied().collect();
        let mut v = Vttif::new(P);
        // Switching every 200 ms, five times faster than the 1 s window.
        let mut t = 0;
        let mut seen = Vec::new();
        for i in 0..40 {
            let edges = if i % 2 == 0 { &ring } else { &star };
            run(&mut v, edges, 8, t, t + 200);
            t += 200;
            if t >= 2000 {
                seen.push(v.update(t).0.pairs());
            }
        }
        // Once the window is full, always the union, and it stopped changing.
        assert_eq!(seen.len(), 31);
        assert!(seen.iter().all(|s| *s == union));
        let settled = v.changes();
        run(&mut v, &ring, 8, t, t + 200);
        assert_eq!(v.changes(), settled);
    }

    #[test]
    fn a_slow_alternation_is_followed() {
        let (ring, star) = (topology("ring", 8), topology("star", 8));
        let mut v = Vttif::new(P);
        let mut t = 0;
        for i in 0..6 {
            let edges = if i % 2 == 0 { &ring } else { &star };
            run(&mut v, edges, 8, t, t + 3000);
            t += 3000;
            assert_eq!(v.update(t).0.pairs(), *edges, "phase {i}");
        }
    }

    #[test]
    fn quiet_pairs_are_pruned_and_old_reports_expire() {
        let mut v = Vttif::new(P);
        let (a, b, c) = (mac(1), mac(2), mac(3));
        v.report(100, [((a, b), 1_000_000), ((b, c), 50_000), ((a, a), 9)]);
        let t = v.infer(100);
        // b -> c carries 5% of a -> b's traffic, under the 10% threshold; a -> a is no pair.
        assert_eq!(t.pairs(), BTreeSet::from([(a, b)]));
        assert_eq!(t.matrix.len(), 2);
        // One window later nothing is left.
        assert!(v.infer(1100).matrix.is_empty());
    }

    #[test]
    fn bad_parameters_name_the_field() {
        let bad = |p: Params| p.check().unwrap_err();
        let d = Params::default();
        assert!(d.check().is_ok());
        assert!(bad(Params {
            threshold: 0.0,
            ..d
        })
        .starts_with("threshold:"));
        assert!(bad(Params {
            threshold: 1.5,
            ..d
        })
        .starts_with("threshold:"));
        assert!(bad(Params {
            smoothing_ms: 0,
            ..d
        })
        .starts_with("smoothing_ms:"));
        assert!(bad(Params {
            settle_ms: 5000,
            ..d
        })
        .starts_with("settle_ms:"));
    }
}
