//! The thesis's adaptation scenarios 1 and 2 (Ruth 2007, section 6.4, table 6.1, figures
//! 6.4-6.7) on a discrete-time model of domains, hosts and environments, driven by the
//! controller's own adaptation manager (`controller::manager`, the code the live manager
//! runs).
//!
//! The model: every host has one core; a VM's application phase needs some CPU work at
//! some rate (1 core for NEMO3D, less for a light phase); the environment's VMs are
//! tightly coupled (an MPI code), so the environment advances at its slowest VM's pace and
//! the others wait at the barrier using no CPU. A host shares its core among its VMs by
//! weight, never giving a VM more than it can use or more than its cap (work-conserving,
//! as Xen's credit scheduler and Linux's CFS are). Every `sample_s` the monitor records
//! each VM's use; every `period_s` the manager decides and its CPU caps, weights and
//! migrations take effect. A migration stalls its environment for `migration_s` (the
//! thesis measured about 20 s of application time, figure 6.3). Without adaptation, VMs
//! share hosts equally and never move. In both runs, an environment created later is
//! placed by the manager's `place_environment` (the thesis lets the non-adaptive run
//! place V4 and V5 sensibly too).
use std::collections::BTreeMap;

use controller::manager::{self, Host, Snapshot, Vm};
use serde::Serialize;
use violin_api::rest::ManagerParams;

/// One phase of a VM's work: `work` core-seconds at up to `rate` cores.
#[derive(Clone, Debug, Serialize)]
pub struct Phase {
    pub work: f64,
    pub rate: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct EnvDef {
    pub name: String,
    pub vms: usize,
    pub start_s: f64,
    pub phases: Vec<Phase>,
    /// The domain it starts in (None: the manager places it).
    pub home: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Scenario {
    pub name: String,
    pub title: String,
    /// Domains and their hosts (one core each).
    pub domains: Vec<(String, usize)>,
    pub envs: Vec<EnvDef>,
    /// The thesis's reductions of average and overall time (percent, negative).
    pub paper_average_pct: f64,
    pub paper_overall_pct: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct SimParams {
    pub dt: f64,
    pub sample_s: f64,
    pub period_s: f64,
    pub migration_s: f64,
    pub host_memory_mib: f64,
    pub vm_memory_mib: f64,
    pub manager: ManagerParams,
}

impl Default for SimParams {
    fn default() -> Self {
        SimParams {
            dt: 1.0,
            sample_s: 10.0,
            period_s: 60.0,
            migration_s: 20.0,
            host_memory_mib: 2048.0,
            vm_memory_mib: 512.0,
            manager: ManagerParams::default(),
        }
    }
}

/// Core-seconds per VM of the thesis's 1-million-particle NEMO3D run here; the other
/// sizes scale with their particle count.
pub const MILLION: f64 = 3600.0;

/// Table 6.1: V1-V3 start at once, V1 and V3 in domain 1 (6 hosts), V2 alone in domain 2
/// (4 hosts); V4 and V5 start at 24:20.
pub fn scenario1() -> Scenario {
    let nemo = |size: f64| {
        vec![Phase {
            work: size * MILLION,
            rate: 1.0,
        }]
    };
    let env = |name: &str, vms, size, start_s, home: Option<&str>| EnvDef {
        name: name.into(),
        vms,
        start_s,
        phases: nemo(size),
        home: home.map(str::to_string),
    };
    Scenario {
        name: "scenario1".into(),
        title: "Scenario 1 (table 6.1): V2 finishes early and leaves domain 2 idle".into(),
        domains: vec![("d1".into(), 6), ("d2".into(), 4)],
        envs: vec![
            env("V1", 4, 0.5, 0.0, Some("d1")),
            env("V2", 4, 0.25, 0.0, Some("d2")),
            env("V3", 6, 1.0, 0.0, Some("d1")),
            env("V4", 4, 0.5, 24.0 * 60.0 + 20.0, None),
            env("V5", 4, 0.5, 24.0 * 60.0 + 20.0, None),
        ],
        paper_average_pct: -39.0,
        paper_overall_pct: -34.0,
    }
}

/// Section 6.4.3: V1 (6 VMs) runs NEMO3D, then a light "dummy" phase at a quarter core;
/// V3 finishes first; V2 and V4 run NEMO3D in domain 2.
pub fn scenario2() -> Scenario {
    let env = |name: &str, vms, phases, home: &str| EnvDef {
        name: name.into(),
        vms,
        start_s: 0.0,
        phases,
        home: Some(home.into()),
    };
    let nemo = |size: f64| {
        vec![Phase {
            work: size * MILLION,
            rate: 1.0,
        }]
    };
    Scenario {
        name: "scenario2".into(),
        title: "Scenario 2 (section 6.4.3): V1's light phase frees CPU after V3 ends".into(),
        domains: vec![("d1".into(), 6), ("d2".into(), 4)],
        envs: vec![
            env(
                "V1",
                6,
                vec![
                    Phase {
                        work: 0.2 * MILLION,
                        rate: 1.0,
                    },
                    // 20 minutes at a quarter of a core.
                    Phase {
                        work: 0.25 * 1200.0,
                        rate: 0.25,
                    },
                ],
                "d1",
            ),
            env("V2", 4, nemo(0.5), "d2"),
            env("V3", 4, nemo(0.25), "d1"),
            env("V4", 4, nemo(0.5), "d2"),
        ],
        paper_average_pct: -41.0,
        paper_overall_pct: -47.0,
    }
}

/// Where an environment was over an interval: a domain, or migrating.
#[derive(Clone, Debug, Serialize)]
pub struct Span {
    pub env: String,
    pub from_s: f64,
    pub to_s: f64,
    /// A domain's name, or "migrating".
    pub at: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct Migration {
    pub at_s: f64,
    pub env: String,
    pub vm: String,
    pub from: String,
    pub to: String,
}

/// One run of a scenario, with or without adaptation.
#[derive(Clone, Debug, Serialize)]
pub struct Run {
    pub adaptive: bool,
    /// Execution time per environment, in scenario order.
    pub times_s: Vec<(String, f64)>,
    pub average_s: f64,
    pub overall_s: f64,
    pub timeline: Vec<Span>,
    pub migrations: Vec<Migration>,
    /// Each domain's utilisation (CPU the running VMs want / capacity) per sample.
    pub utilisation: BTreeMap<String, Vec<(f64, f64)>>,
    /// The manager's reasons for its environment moves, with the time.
    pub reasons: Vec<(f64, String)>,
}

struct SimVm {
    name: String,
    host: usize,
    cap: Option<f64>,
    weight: f64,
    used: f64,
    samples: Vec<f64>,
}

struct SimEnv {
    def: EnvDef,
    vms: Vec<SimVm>,
    phase: usize,
    /// Fraction of the current phase done.
    done: f64,
    started: bool,
    finished_at: Option<f64>,
    stalled_until: f64,
}

/// A host's core shared by weight among `demands` (what each VM can use, at most its cap):
/// water-filling, so a VM never gets more than it can use and the rest goes to the others.
fn share(capacity: f64, demands: &[(f64, f64)]) -> Vec<f64> {
    let mut alloc = vec![0.0; demands.len()];
    let mut open: Vec<usize> = (0..demands.len()).filter(|i| demands[*i].0 > 0.0).collect();
    let mut left = capacity;
    while !open.is_empty() && left > 1e-12 {
        let w: f64 = open.iter().map(|i| demands[*i].1).sum();
        let mut satisfied = Vec::new();
        for &i in &open {
            if demands[i].0 - alloc[i] <= left * demands[i].1 / w + 1e-12 {
                satisfied.push(i);
            }
        }
        if satisfied.is_empty() {
            for &i in &open {
                alloc[i] += left * demands[i].1 / w;
            }
            break;
        }
        for i in satisfied {
            left -= demands[i].0 - alloc[i];
            alloc[i] = demands[i].0;
            open.retain(|j| *j != i);
        }
    }
    alloc
}

/// Runs `sc`, with the manager when `adaptive`.
pub fn run(sc: &Scenario, p: &SimParams, adaptive: bool) -> Run {
    let hosts: Vec<Host> = sc
        .domains
        .iter()
        .flat_map(|(d, n)| {
            (1..=*n).map(move |i| Host {
                name: format!("{d}h{i}"),
                domain: d.clone(),
                cpus: 1.0,
                memory_mib: p.host_memory_mib,
            })
        })
        .collect();
    let mut envs: Vec<SimEnv> = sc
        .envs
        .iter()
        .map(|d| SimEnv {
            def: d.clone(),
            vms: Vec::new(),
            phase: 0,
            done: 0.0,
            started: false,
            finished_at: None,
            stalled_until: 0.0,
        })
        .collect();
    let mut out = Run {
        adaptive,
        times_s: Vec::new(),
        average_s: 0.0,
        overall_s: 0.0,
        timeline: Vec::new(),
        migrations: Vec::new(),
        utilisation: BTreeMap::new(),
        reasons: Vec::new(),
    };
    let snapshot = |envs: &[SimEnv], only: Option<&str>| Snapshot {
        hosts: hosts
            .iter()
            .filter(|h| only.is_none_or(|d| h.domain == d))
            .cloned()
            .collect(),
        vms: envs
            .iter()
            .filter(|e| e.started && e.finished_at.is_none())
            .flat_map(|e| {
                e.vms.iter().map(|v| Vm {
                    environment: e.def.name.clone(),
                    name: v.name.clone(),
                    host: hosts[v.host].name.clone(),
                    vcpus: 1.0,
                    cpu_allocation: v.cap.unwrap_or(1.0),
                    cpu_samples: v.samples.clone(),
                    memory_mib: p.vm_memory_mib,
                    max_memory_mib: p.vm_memory_mib,
                    memory_samples: Vec::new(),
                    head: false,
                })
            })
            .filter(|v| {
                only.is_none_or(|d| hosts.iter().any(|h| h.name == v.host && h.domain == d))
            })
            .collect(),
    };
    let host_index = |name: &str| {
        hosts
            .iter()
            .position(|h| h.name == name)
            .expect("known host")
    };
    let steps_per_sample = (p.sample_s / p.dt).round() as u64;
    let steps_per_period = (p.period_s / p.dt).round() as u64;
    let mut step: u64 = 0;
    let mut last_at: Vec<Option<(String, f64)>> = vec![None; envs.len()];
    loop {
        let t = step as f64 * p.dt;
        // Environments starting now are placed by the manager.
        for i in 0..envs.len() {
            if envs[i].started || envs[i].def.start_s > t {
                continue;
            }
            let def = envs[i].def.clone();
            let new: Vec<Vm> = (0..def.vms)
                .map(|k| Vm {
                    environment: def.name.clone(),
                    name: format!("{}-{k}", def.name),
                    host: String::new(),
                    vcpus: 1.0,
                    cpu_allocation: 1.0,
                    cpu_samples: vec![def.phases[0].rate],
                    memory_mib: p.vm_memory_mib,
                    max_memory_mib: p.vm_memory_mib,
                    memory_samples: Vec::new(),
                    head: false,
                })
                .collect();
            let snap = snapshot(&envs, def.home.as_deref());
            let plan = manager::place_environment(&snap, &new, &p.manager)
                .unwrap_or_else(|| panic!("{}: no domain holds {}", sc.name, def.name));
            envs[i].vms = plan
                .into_iter()
                .map(|(vm, host)| SimVm {
                    name: vm,
                    host: host_index(&host),
                    cap: None,
                    weight: 1.0,
                    used: 0.0,
                    samples: Vec::new(),
                })
                .collect();
            envs[i].started = true;
        }
        if envs.iter().all(|e| e.finished_at.is_some()) {
            break;
        }
        assert!(t < 48.0 * 3600.0, "{}: the scenario does not end", sc.name);

        // Each host's core shared among the VMs of running, unstalled environments.
        let mut on_host: Vec<Vec<(usize, usize)>> = vec![Vec::new(); hosts.len()];
        for (ei, e) in envs.iter().enumerate() {
            if !e.started || e.finished_at.is_some() {
                continue;
            }
            for (vi, v) in e.vms.iter().enumerate() {
                on_host[v.host].push((ei, vi));
            }
        }
        let mut alloc: BTreeMap<(usize, usize), f64> = BTreeMap::new();
        for (h, vms) in on_host.iter().enumerate() {
            let demands: Vec<(f64, f64)> = vms
                .iter()
                .map(|&(ei, vi)| {
                    let e = &envs[ei];
                    if e.stalled_until > t {
                        return (0.0, 1.0);
                    }
                    let v = &e.vms[vi];
                    let rate = e.def.phases[e.phase].rate;
                    (v.cap.map_or(rate, |c| c.min(rate)), v.weight)
                })
                .collect();
            for (k, a) in share(hosts[h].cpus, &demands).into_iter().enumerate() {
                alloc.insert(vms[k], a);
            }
        }
        // Coupled progress: the slowest VM sets the pace; the others wait and use less.
        for (ei, e) in envs.iter_mut().enumerate() {
            if !e.started || e.finished_at.is_some() {
                continue;
            }
            let phase = e.def.phases[e.phase].clone();
            let speed = if e.stalled_until > t {
                0.0
            } else {
                (0..e.vms.len())
                    .map(|vi| alloc[&(ei, vi)] / phase.rate)
                    .fold(f64::INFINITY, f64::min)
                    .min(1.0)
            };
            for v in &mut e.vms {
                v.used += speed * phase.rate * p.dt;
            }
            e.done += speed * p.dt * phase.rate / phase.work;
            if e.done >= 1.0 - 1e-9 {
                e.phase += 1;
                e.done = 0.0;
                if e.phase == e.def.phases.len() {
                    e.finished_at = Some(t + p.dt);
                }
            }
        }
        step += 1;
        let t = step as f64 * p.dt;

        if step.is_multiple_of(steps_per_sample) {
            for e in &mut envs {
                for v in &mut e.vms {
                    v.samples.push(v.used / p.sample_s);
                    v.used = 0.0;
                }
            }
            for (d, _) in &sc.domains {
                let cap = hosts.iter().filter(|h| &h.domain == d).count() as f64;
                let want: f64 = envs
                    .iter()
                    .filter(|e| e.started && e.finished_at.is_none())
                    .flat_map(|e| e.vms.iter().map(move |v| (e, v)))
                    .filter(|(_, v)| &hosts[v.host].domain == d)
                    .map(|(e, _)| e.def.phases[e.phase].rate)
                    .sum();
                out.utilisation
                    .entry(d.clone())
                    .or_default()
                    .push((t, want / cap));
            }
            // The timeline: where each environment is (its VMs' domain) or migrating.
            for (ei, e) in envs.iter().enumerate() {
                let at = if !e.started || e.finished_at.is_some_and(|f| f < t - p.sample_s) {
                    None
                } else if e.stalled_until > t - p.sample_s {
                    Some("migrating".to_string())
                } else {
                    e.vms.first().map(|v| hosts[v.host].domain.clone())
                };
                match (&last_at[ei], at) {
                    (Some((prev, from)), Some(now)) if *prev != now => {
                        out.timeline.push(Span {
                            env: e.def.name.clone(),
                            from_s: *from,
                            to_s: t - p.sample_s,
                            at: prev.clone(),
                        });
                        last_at[ei] = Some((now, t - p.sample_s));
                    }
                    (Some((prev, from)), None) => {
                        out.timeline.push(Span {
                            env: e.def.name.clone(),
                            from_s: *from,
                            to_s: e.finished_at.unwrap_or(t),
                            at: prev.clone(),
                        });
                        last_at[ei] = None;
                    }
                    (None, Some(now)) => last_at[ei] = Some((now, e.def.start_s)),
                    _ => {}
                }
            }
        }
        if adaptive && step.is_multiple_of(steps_per_period) {
            let snap = snapshot(&envs, None);
            let d = manager::decide(&snap, &p.manager);
            for m in &d.environment_moves {
                out.reasons.push((t, m.reason.clone()));
            }
            for level in &d.vms {
                let Some(e) = envs.iter_mut().find(|e| e.def.name == level.environment) else {
                    continue;
                };
                if let Some(v) = e.vms.iter_mut().find(|v| v.name == level.vm) {
                    v.cap = Some(level.cpu_cap);
                    v.weight = level.cpu_weight as f64;
                }
            }
            for m in &d.moves {
                let Some(e) = envs.iter_mut().find(|e| e.def.name == m.environment) else {
                    continue;
                };
                e.stalled_until = t + p.migration_s;
                if let Some(v) = e.vms.iter_mut().find(|v| v.name == m.vm) {
                    v.host = host_index(&m.to);
                }
                out.migrations.push(Migration {
                    at_s: t,
                    env: m.environment.clone(),
                    vm: m.vm.clone(),
                    from: m.from.clone(),
                    to: m.to.clone(),
                });
            }
        }
    }
    for (ei, e) in envs.iter().enumerate() {
        if let Some((prev, from)) = last_at[ei].take() {
            out.timeline.push(Span {
                env: e.def.name.clone(),
                from_s: from,
                to_s: e.finished_at.unwrap_or(from),
                at: prev,
            });
        }
    }
    out.times_s = envs
        .iter()
        .map(|e| {
            (
                e.def.name.clone(),
                e.finished_at.unwrap_or(0.0) - e.def.start_s,
            )
        })
        .collect();
    out.average_s = out.times_s.iter().map(|(_, t)| t).sum::<f64>() / out.times_s.len() as f64;
    let first = envs
        .iter()
        .map(|e| e.def.start_s)
        .fold(f64::INFINITY, f64::min);
    let last = envs
        .iter()
        .filter_map(|e| e.finished_at)
        .fold(0.0, f64::max);
    out.overall_s = last - first;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn water_filling_gives_leftovers_to_the_hungry() {
        // A light VM wants 0.2, two heavy ones 1 each: 0.2, then 0.4 each.
        let a = share(1.0, &[(0.2, 1.0), (1.0, 1.0), (1.0, 1.0)]);
        assert!(
            (a[0] - 0.2).abs() < 1e-9 && (a[1] - 0.4).abs() < 1e-9,
            "{a:?}"
        );
        // Weights: 3:1 of one core.
        let a = share(1.0, &[(1.0, 3.0), (1.0, 1.0)]);
        assert!((a[0] - 0.75).abs() < 1e-9, "{a:?}");
    }

    #[test]
    fn adaptation_moves_v1_to_the_idle_domain_and_everyone_gains() {
        let p = SimParams::default();
        let sc = scenario1();
        let without = run(&sc, &p, false);
        let with = run(&sc, &p, true);
        assert!(without.migrations.is_empty());
        // The first environment move is V1's, to d2, once V2 has finished.
        let first = with.migrations.first().expect("a migration");
        assert_eq!(
            (first.env.as_str(), first.to.starts_with("d2")),
            ("V1", true),
            "{:?}",
            with.migrations
        );
        let v2_done = without.times_s[1].1;
        assert!(first.at_s >= v2_done, "{} < {v2_done}", first.at_s);
        assert!(
            with.average_s < without.average_s,
            "{} vs {}",
            with.average_s,
            without.average_s
        );
        assert!(with.overall_s < without.overall_s);
    }

    #[test]
    fn scenario2_ends_sooner_with_adaptation() {
        let p = SimParams::default();
        let sc = scenario2();
        let without = run(&sc, &p, false);
        let with = run(&sc, &p, true);
        assert!(!with.migrations.is_empty());
        assert!(
            with.average_s < without.average_s,
            "{} vs {}",
            with.average_s,
            without.average_s
        );
    }
}
