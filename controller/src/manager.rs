//! The adaptation manager (Ruth 2007, chapter 6): from what is observable outside the VMs
//! (their CPU and memory use over time) it predicts each VM's need, sets its desired
//! resource level, balances the load between domains by moving whole environments
//! (Algorithm 1), then between the hosts of each domain by moving VMs, and shares each
//! host's CPU among its VMs by their desired levels.
//!
//! The code is pure: `decide` takes a snapshot of the infrastructure and returns a
//! decision with its reasons. The live manager feeds it libvirt's samples and carries the
//! decision out through the migration supervisor and violind's CPU and balloon controls;
//! the scenario simulator (`cargo xtask bench adaptation`) feeds it a model's samples.
use std::collections::{BTreeMap, BTreeSet};

use violin_api::rest::{
    DomainLoad, EnvironmentMove, ManagedMove, ManagerDecision, ManagerParams, VmLevel,
};

/// Equation 6.1: the weighted moving average of the last `n` samples (oldest first), the
/// newest weighing `n`, the oldest `1`. `None` without samples.
pub fn predicted_usage(samples: &[f64], n: usize) -> Option<f64> {
    let n = n.max(1).min(samples.len());
    if n == 0 {
        return None;
    }
    let recent = &samples[samples.len() - n..];
    let (sum, weights) = recent
        .iter()
        .enumerate()
        .fold((0.0, 0.0), |(s, w), (i, r)| {
            let weight = (i + 1) as f64;
            (s + weight * r, w + weight)
        });
    Some(sum / weights)
}

/// Equation 6.4: the desired resource level as a multiple of the current allocation, for
/// a predicted utilisation `pu` of that allocation (0..=1). Below `1/alpha` the VM is
/// given what brings its utilisation to `1/alpha`; from there the over-allocation rises
/// linearly to `beta` at full utilisation, because a saturated VM may want far more than
/// it shows.
///
/// The thesis prints the slope as `(beta - alpha) / (1 - alpha)`, which is not continuous
/// at `1/alpha` (with alpha = 4/3 and beta = 2 it jumps from 1 to 1.875), although the text
/// requires continuity there; `(beta - alpha) / (1 - 1/alpha)` is the slope that meets
/// `pu * alpha` at `1/alpha` and gives `beta` at 1, as the text's example describes.
pub fn desired_factor(pu: f64, alpha: f64, beta: f64) -> f64 {
    let pu = pu.clamp(0.0, 1.0);
    if pu < 1.0 / alpha {
        pu * alpha
    } else {
        pu * ((beta - alpha) / (1.0 - 1.0 / alpha) * (pu - 1.0) + beta)
    }
}

/// One resource's desired level in absolute units: the prediction over `samples` (in the
/// same units as `allocation`), scaled by equation 6.4, within `floor..=limit`.
pub fn desired_level(
    samples: &[f64],
    allocation: f64,
    floor: f64,
    limit: f64,
    p: &ManagerParams,
) -> Option<f64> {
    let pu = predicted_usage(samples, p.window)?;
    if allocation <= 0.0 {
        return Some(limit.max(floor));
    }
    let level = allocation * desired_factor(pu / allocation, p.alpha, p.beta);
    Some(level.clamp(floor, limit.max(floor)))
}

/// A physical host as the manager sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Host {
    pub name: String,
    pub domain: String,
    /// CPU capacity in cores.
    pub cpus: f64,
    /// Memory VMs may have, in MiB.
    pub memory_mib: f64,
}

/// A VM as the manager sees it: where it runs, what it was given and what it used.
#[derive(Clone, Debug, PartialEq)]
pub struct Vm {
    pub environment: String,
    pub name: String,
    pub host: String,
    /// The most CPU it can use: its vCPUs, in cores.
    pub vcpus: f64,
    /// Its CPU allocation now (its cap, or its vCPUs when uncapped), in cores.
    pub cpu_allocation: f64,
    /// CPU used per sample, in cores, oldest first.
    pub cpu_samples: Vec<f64>,
    /// Its memory now (the balloon's size) and the most it may have, in MiB.
    pub memory_mib: f64,
    pub max_memory_mib: f64,
    /// Memory the guest uses per sample, in MiB, oldest first (empty: the guest reports
    /// none, and its memory stays as it is).
    pub memory_samples: Vec<f64>,
    /// A head node stays in its domain: its environment's other VMs may leave without it.
    pub head: bool,
}

/// The infrastructure at one moment.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Snapshot {
    pub hosts: Vec<Host>,
    pub vms: Vec<Vm>,
}

/// Something Algorithm 1 moves between bins: an environment between domains, or a VM
/// between the hosts of a domain.
#[derive(Clone, Debug)]
struct Item {
    demand: f64,
    bin: usize,
    /// VMs a move of it migrates: the fewer, the better among equal balances.
    cost: usize,
    movable: bool,
}

/// Equations 6.5-6.7 over bins with capacities `caps` holding `items`, plus load that
/// cannot move (`fixed`, per bin): the target utilisation, each bin's utilisation and the
/// balance, the sum over items of their bin's distance from the target.
fn balance(items: &[Item], caps: &[f64], fixed: &[f64]) -> (f64, Vec<f64>, f64) {
    let total_cap: f64 = caps.iter().sum();
    let total_demand: f64 = items.iter().map(|i| i.demand).sum::<f64>() + fixed.iter().sum::<f64>();
    let target = if total_cap > 0.0 {
        total_demand / total_cap
    } else {
        0.0
    };
    let mut load = fixed.to_vec();
    for i in items {
        load[i.bin] += i.demand;
    }
    let util: Vec<f64> = load
        .iter()
        .zip(caps)
        .map(|(l, c)| if *c > 0.0 { l / c } else { f64::INFINITY })
        .collect();
    let b = items.iter().map(|i| (util[i.bin] - target).abs()).sum();
    (target, util, b)
}

/// One step Algorithm 1 took.
#[derive(Clone, Debug, PartialEq)]
struct Step {
    item: usize,
    from: usize,
    to: usize,
    before: f64,
    after: f64,
    /// The source bin's utilisation before the step.
    from_util: f64,
}

/// What Algorithm 1 asks of its caller: whether an item fits a bin given the steps taken
/// so far, and to take a step (placing the item's VMs).
trait Bins {
    fn fits(&mut self, items: &[Item], item: usize, to: usize) -> bool;
    fn take(&mut self, item: usize, to: usize);
}

/// Algorithm 1: while the most utilised bin is short (over 1) and a move improves the
/// balance by at least `min_gain` (a share of the balance before), move from that bin the
/// item that, moved to the least utilised bin it fits in, leaves the best balance
/// (BestFit; fewer VMs wins a tie). The thesis stops at the first move that does not
/// improve the balance; `min_gain` and the `budget` of VM migrations (each item costs its
/// VMs) make it prefer few migrations. Bins without capacity are never chosen.
fn balance_bins(
    items: &mut [Item],
    caps: &[f64],
    fixed: &[f64],
    min_gain: f64,
    budget: usize,
    bins: &mut dyn Bins,
) -> Vec<Step> {
    let mut steps = Vec::new();
    let mut spent = 0;
    loop {
        let (_, util, before) = balance(items, caps, fixed);
        let util: Vec<f64> = util
            .iter()
            .zip(caps)
            .map(|(u, c)| if *c > 0.0 { *u } else { f64::NAN })
            .collect();
        let usable = |b: &usize| !util[*b].is_nan();
        let Some(high) = (0..caps.len())
            .filter(usable)
            .max_by(|a, b| util[*a].total_cmp(&util[*b]))
        else {
            break;
        };
        // While no bin is short, every VM already has its desired level (the thesis's
        // observation on under-utilised systems): balancing further would only cost
        // migrations.
        if util[high] <= 1.0 + 1e-9 {
            break;
        }
        let mut lows: Vec<usize> = (0..caps.len())
            .filter(|b| *b != high && usable(b))
            .collect();
        lows.sort_by(|a, b| util[*a].total_cmp(&util[*b]));
        let mut best: Option<(f64, usize, usize, usize)> = None;
        for low in lows {
            if util[low] >= util[high] {
                break;
            }
            for i in 0..items.len() {
                let it = &items[i];
                if it.bin != high
                    || !it.movable
                    || it.demand <= 0.0
                    || spent + it.cost > budget
                    || !bins.fits(items, i, low)
                {
                    continue;
                }
                items[i].bin = low;
                let (_, _, after) = balance(items, caps, fixed);
                items[i].bin = high;
                let better = match best {
                    None => true,
                    Some((b, _, _, cost)) => {
                        after < b - 1e-9 || (after <= b + 1e-9 && items[i].cost < cost)
                    }
                };
                if better {
                    best = Some((after, i, low, items[i].cost));
                }
            }
            // The least utilised bin that takes anything is the destination.
            if best.is_some() {
                break;
            }
        }
        let Some((after, i, low, _)) = best else {
            break;
        };
        if after >= before - 1e-9 || before - after < min_gain * before {
            break;
        }
        items[i].bin = low;
        spent += items[i].cost;
        bins.take(i, low);
        steps.push(Step {
            item: i,
            from: high,
            to: low,
            before,
            after,
            from_util: util[high],
        });
    }
    steps
}

/// The manager's working view: every VM's needs and where it is.
struct Placement<'a> {
    snap: &'a Snapshot,
    /// Per VM (snapshot order): desired CPU in cores, memory it needs in MiB, its host.
    cpu: Vec<f64>,
    memory: Vec<f64>,
    host: Vec<usize>,
}

impl Placement<'_> {
    fn memory_free(&self, host: usize, without: &BTreeSet<usize>) -> f64 {
        let used: f64 = (0..self.host.len())
            .filter(|v| self.host[*v] == host && !without.contains(v))
            .map(|v| self.memory[v])
            .sum();
        self.snap.hosts[host].memory_mib - used
    }

    fn cpu_load(&self, host: usize, without: &BTreeSet<usize>) -> f64 {
        (0..self.host.len())
            .filter(|v| self.host[*v] == host && !without.contains(v))
            .map(|v| self.cpu[v])
            .sum()
    }

    /// Where `vms` would go in `domain`: the largest need first, each onto the host with
    /// the lowest CPU utilisation that has the memory (memory is a hard constraint).
    /// `None` when they do not fit.
    fn place(&self, vms: &[usize], domain: &str) -> Option<Vec<(usize, usize)>> {
        let leaving: BTreeSet<usize> = vms.iter().copied().collect();
        let hosts: Vec<usize> = (0..self.snap.hosts.len())
            .filter(|h| self.snap.hosts[*h].domain == domain)
            .collect();
        let mut mem: BTreeMap<usize, f64> = hosts
            .iter()
            .map(|h| (*h, self.memory_free(*h, &leaving)))
            .collect();
        let mut cpu: BTreeMap<usize, f64> = hosts
            .iter()
            .map(|h| (*h, self.cpu_load(*h, &leaving)))
            .collect();
        let mut order = vms.to_vec();
        order.sort_by(|a, b| self.cpu[*b].total_cmp(&self.cpu[*a]).then(a.cmp(b)));
        let mut out = Vec::new();
        for v in order {
            let h = hosts
                .iter()
                .filter(|h| mem[h] >= self.memory[v] - 1e-9)
                .min_by(|a, b| {
                    let ua = cpu[a] / self.snap.hosts[**a].cpus.max(1e-9);
                    let ub = cpu[b] / self.snap.hosts[**b].cpus.max(1e-9);
                    ua.total_cmp(&ub).then(a.cmp(b))
                })?;
            *mem.get_mut(h).unwrap() -= self.memory[v];
            *cpu.get_mut(h).unwrap() += self.cpu[v];
            out.push((v, *h));
        }
        Some(out)
    }
}

/// Tier 1's bins: domains. An environment fits a domain when its VMs can be placed on
/// the domain's hosts as they are after the steps taken so far; taking a step places them.
struct EnvBins<'a, 'b> {
    place: Placement<'a>,
    envs: &'b BTreeMap<&'a str, Vec<usize>>,
    env_names: &'b [&'a str],
    domains: &'b [String],
    /// Each step's placement of its environment's VMs: (VM, host).
    plans: BTreeMap<usize, Vec<(usize, usize)>>,
}

impl Bins for EnvBins<'_, '_> {
    fn fits(&mut self, _: &[Item], item: usize, to: usize) -> bool {
        self.place
            .place(&self.envs[self.env_names[item]], &self.domains[to])
            .is_some()
    }

    fn take(&mut self, item: usize, to: usize) {
        let plan = self
            .place
            .place(&self.envs[self.env_names[item]], &self.domains[to])
            .unwrap_or_default();
        for &(v, h) in &plan {
            self.place.host[v] = h;
        }
        self.plans.insert(item, plan);
    }
}

/// Tier 2's bins: a domain's hosts. A VM fits a host with the memory and the CPU it
/// desires to spare (the thesis moves a VM only to a host that can support it; without
/// the CPU test the VMs of a coupled application chase each other between hosts: the one
/// that waits at the barrier looks light, moves, and makes another wait).
struct HostBins<'b> {
    vms: &'b [usize],
    memory: &'b [f64],
    host_memory: Vec<f64>,
    host_cpus: Vec<f64>,
}

impl Bins for HostBins<'_> {
    fn fits(&mut self, items: &[Item], item: usize, to: usize) -> bool {
        let (mut mem, mut cpu) = (0.0, 0.0);
        for (it, v) in items.iter().zip(self.vms) {
            if it.bin == to {
                mem += self.memory[*v];
                cpu += it.demand;
            }
        }
        mem + self.memory[self.vms[item]] <= self.host_memory[to] + 1e-9
            && cpu + items[item].demand <= self.host_cpus[to] * (1.0 + 1e-9)
    }

    fn take(&mut self, _: usize, _: usize) {}
}

/// What the manager decides for `snap`: every VM's desired level and CPU share, the
/// environments moved between domains, the VMs moved between hosts, and why.
pub fn decide(snap: &Snapshot, p: &ManagerParams) -> ManagerDecision {
    let mut explain = Vec::new();
    let host_index: BTreeMap<&str, usize> = snap
        .hosts
        .iter()
        .enumerate()
        .map(|(i, h)| (h.name.as_str(), i))
        .collect();
    let mut place = Placement {
        snap,
        cpu: Vec::new(),
        memory: Vec::new(),
        host: Vec::new(),
    };
    let mut predicted = Vec::new();
    let mut desired_memory = Vec::new();
    for vm in &snap.vms {
        let pu = predicted_usage(&vm.cpu_samples, p.window);
        let cpu = desired_level(&vm.cpu_samples, vm.cpu_allocation, p.min_cpu, vm.vcpus, p)
            .unwrap_or(vm.cpu_allocation);
        let memory = desired_level(
            &vm.memory_samples,
            vm.memory_mib,
            p.min_memory_mib.min(vm.max_memory_mib),
            vm.max_memory_mib,
            p,
        )
        .unwrap_or(vm.memory_mib);
        predicted.push(pu);
        desired_memory.push(memory);
        place.cpu.push(cpu);
        // Memory is never squeezed to make a move fit: a VM needs the larger of what it
        // has and what it should have.
        place.memory.push(memory.max(vm.memory_mib));
        place.host.push(
            host_index
                .get(vm.host.as_str())
                .copied()
                .unwrap_or(usize::MAX),
        );
    }
    let unknown: Vec<String> = snap
        .vms
        .iter()
        .zip(&place.host)
        .filter(|(_, h)| **h == usize::MAX)
        .map(|(v, _)| format!("{}/{} on unknown host {}", v.environment, v.name, v.host))
        .collect();
    if !unknown.is_empty() {
        explain.push(format!("left out (no such host): {}", unknown.join(", ")));
    }
    let known: Vec<usize> = (0..snap.vms.len())
        .filter(|v| place.host[*v] != usize::MAX)
        .collect();

    // Tier 1: environments between domains.
    let domains: Vec<String> = snap
        .hosts
        .iter()
        .map(|h| h.domain.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let domain_of = |h: usize| {
        domains
            .iter()
            .position(|d| *d == snap.hosts[h].domain)
            .expect("every host's domain is listed")
    };
    let caps: Vec<f64> = domains
        .iter()
        .map(|d| {
            snap.hosts
                .iter()
                .filter(|h| &h.domain == d)
                .map(|h| h.cpus)
                .sum()
        })
        .collect();
    // An environment is where most of its movable VMs are; its head nodes stay put and
    // count as fixed load of their domains.
    let mut envs: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut fixed = vec![0.0; domains.len()];
    for &v in &known {
        if snap.vms[v].head {
            fixed[domain_of(place.host[v])] += place.cpu[v];
        } else {
            envs.entry(snap.vms[v].environment.as_str())
                .or_default()
                .push(v);
        }
    }
    let env_names: Vec<&str> = envs.keys().copied().collect();
    let mut items: Vec<Item> = env_names
        .iter()
        .map(|e| {
            let vms = &envs[e];
            let mut count = vec![0usize; domains.len()];
            for v in vms {
                count[domain_of(place.host[*v])] += 1;
            }
            let bin = (0..domains.len())
                .max_by_key(|d| (count[*d], usize::MAX - d))
                .unwrap_or(0);
            Item {
                demand: vms.iter().map(|v| place.cpu[*v]).sum(),
                bin,
                cost: vms.len(),
                movable: p.migrate,
            }
        })
        .collect();
    let (target, util_before, balance_before) = balance(&items, &caps, &fixed);
    let origin = place.host.clone();
    let mut tier1 = EnvBins {
        place,
        envs: &envs,
        env_names: &env_names,
        domains: &domains,
        plans: BTreeMap::new(),
    };
    let steps = balance_bins(
        &mut items,
        &caps,
        &fixed,
        p.min_gain,
        p.max_migrations,
        &mut tier1,
    );
    let EnvBins {
        mut place, plans, ..
    } = tier1;
    let mut environment_moves = Vec::new();
    let mut moves = Vec::new();
    let mut moved_vms = 0;
    for s in &steps {
        let env = env_names[s.item];
        let reason = format!(
            "domain {} is the most utilised ({:.2}) and {} the least; moving {env} (desired {:.2} cores) brings the balance from {:.3} to {:.3} (target utilisation {:.2})",
            domains[s.from],
            s.from_util,
            domains[s.to],
            items[s.item].demand,
            s.before,
            s.after,
            target
        );
        explain.push(reason.clone());
        environment_moves.push(EnvironmentMove {
            environment: env.to_string(),
            from: domains[s.from].clone(),
            to: domains[s.to].clone(),
            vms: envs[env].len(),
            balance_before: s.before,
            balance_after: s.after,
            reason: reason.clone(),
        });
        // Where its VMs go was fixed when the step was taken, against the steps before.
        for &(v, h) in plans.get(&s.item).map(Vec::as_slice).unwrap_or_default() {
            if origin[v] != h {
                moves.push(ManagedMove {
                    environment: env.to_string(),
                    vm: snap.vms[v].name.clone(),
                    from: snap.hosts[origin[v]].name.clone(),
                    to: snap.hosts[h].name.clone(),
                    reason: format!("{env} moves to domain {}", domains[s.to]),
                });
                moved_vms += 1;
            }
        }
    }
    if steps.is_empty() {
        explain.push(if !p.migrate {
            "migration is off: environments stay in their domains".to_string()
        } else if items.iter().all(|i| i.demand <= 0.0) {
            "no environment needs CPU: nothing to balance".to_string()
        } else if util_before.iter().all(|u| *u <= 1.0 + 1e-9) {
            format!(
                "no domain is short of CPU (target utilisation {target:.2}): every VM gets its desired level where it is"
            )
        } else {
            format!(
                "the domains are as balanced as moving an environment can make them (balance {balance_before:.3}, target utilisation {target:.2})"
            )
        });
    }
    let (_, util_after, balance_after) = balance(&items, &caps, &fixed);

    // Tier 2: VMs between the hosts of each domain.
    let budget = p.max_migrations.saturating_sub(moved_vms);
    let mut host_moves_left = budget;
    for (d, domain) in domains.iter().enumerate() {
        if !p.migrate || host_moves_left == 0 {
            break;
        }
        let hosts: Vec<usize> = (0..snap.hosts.len())
            .filter(|h| snap.hosts[*h].domain == *domain)
            .collect();
        let vms: Vec<usize> = known
            .iter()
            .copied()
            .filter(|v| domain_of(place.host[*v]) == d)
            .collect();
        let hcaps: Vec<f64> = hosts.iter().map(|h| snap.hosts[*h].cpus).collect();
        let mut vitems: Vec<Item> = vms
            .iter()
            .map(|v| Item {
                demand: place.cpu[*v],
                bin: hosts.iter().position(|h| *h == place.host[*v]).unwrap_or(0),
                cost: 1,
                movable: true,
            })
            .collect();
        let mut tier2 = HostBins {
            vms: &vms,
            memory: &place.memory,
            host_memory: hosts.iter().map(|h| snap.hosts[*h].memory_mib).collect(),
            host_cpus: hcaps.clone(),
        };
        // Only a host that cannot give its VMs what they desire is worth a migration.
        let overloaded = hosts.iter().enumerate().any(|(bi, _)| {
            let load: f64 = vitems
                .iter()
                .filter(|it| it.bin == bi)
                .map(|it| it.demand)
                .sum();
            load > hcaps[bi] * (1.0 + 1e-9)
        });
        if !overloaded {
            continue;
        }
        let steps = balance_bins(
            &mut vitems,
            &hcaps,
            &vec![0.0; hosts.len()],
            p.min_gain,
            host_moves_left,
            &mut tier2,
        );
        for s in steps {
            let v = vms[s.item];
            let reason = format!(
                "host {} cannot give its VMs the CPU they desire; {} (desired {:.2} cores) to the least utilised host {} brings the domain's balance from {:.3} to {:.3}",
                snap.hosts[hosts[s.from]].name,
                snap.vms[v].name,
                place.cpu[v],
                snap.hosts[hosts[s.to]].name,
                s.before,
                s.after
            );
            explain.push(reason.clone());
            moves.push(ManagedMove {
                environment: snap.vms[v].environment.clone(),
                vm: snap.vms[v].name.clone(),
                from: snap.hosts[place.host[v]].name.clone(),
                to: snap.hosts[hosts[s.to]].name.clone(),
                reason,
            });
            place.host[v] = hosts[s.to];
            host_moves_left -= 1;
        }
    }

    // Local actuation: each host's CPU shared by desired level (a weighted balance when
    // the host cannot give every VM its desire), memory to its desired level.
    let mut vms_out = Vec::new();
    for &v in &known {
        let h = place.host[v];
        let load = place.cpu_load(h, &BTreeSet::new());
        let cpus = snap.hosts[h].cpus;
        let share = if load > cpus { cpus / load } else { 1.0 };
        let vm = &snap.vms[v];
        vms_out.push(VmLevel {
            environment: vm.environment.clone(),
            vm: vm.name.clone(),
            host: snap.hosts[h].name.clone(),
            predicted_cpu: predicted[v],
            desired_cpu: place.cpu[v],
            cpu_cap: place.cpu[v] * share,
            cpu_weight: ((place.cpu[v] * 1024.0).round() as u64).max(2),
            memory_mib: desired_memory[v],
        });
    }
    let domain_loads = domains
        .iter()
        .enumerate()
        .map(|(d, name)| DomainLoad {
            name: name.clone(),
            capacity: caps[d],
            utilisation_before: util_before[d],
            utilisation_after: util_after[d],
        })
        .collect();
    ManagerDecision {
        target_utilisation: target,
        balance_before,
        balance_after,
        domains: domain_loads,
        vms: vms_out,
        environment_moves,
        moves,
        explain,
    }
}

/// Where a new environment's VMs go (hosts named in `snap`; their `host` fields are
/// ignored): into the domain that leaves the best balance (equation 6.7) with it there,
/// each VM onto the least utilised host with the memory. `None` when no domain holds it.
pub fn place_environment(
    snap: &Snapshot,
    vms: &[Vm],
    p: &ManagerParams,
) -> Option<Vec<(String, String)>> {
    let domains: BTreeSet<&str> = snap.hosts.iter().map(|h| h.domain.as_str()).collect();
    let mut best: Option<(f64, Vec<(String, String)>)> = None;
    for domain in domains {
        let Some(first) = snap.hosts.iter().find(|h| h.domain == domain) else {
            continue;
        };
        let mut trial = snap.clone();
        trial.vms.extend(vms.iter().cloned().map(|v| Vm {
            host: first.name.clone(),
            ..v
        }));
        let mut fixed = p.clone();
        fixed.migrate = false;
        // With every VM on the domain's first host, place them properly and score the
        // domain by the balance between domains.
        let d = decide(&trial, &fixed);
        // The decision lists the VMs on known hosts only: look each up by name.
        let level = |v: &Vm| {
            d.vms
                .iter()
                .find(|l| l.environment == v.environment && l.vm == v.name)
        };
        let place = Placement {
            snap: &trial,
            cpu: trial
                .vms
                .iter()
                .map(|v| level(v).map_or(0.0, |l| l.desired_cpu))
                .collect(),
            memory: trial
                .vms
                .iter()
                .map(|v| level(v).map_or(v.memory_mib, |l| l.memory_mib.max(v.memory_mib)))
                .collect(),
            host: trial
                .vms
                .iter()
                .map(|v| {
                    trial
                        .hosts
                        .iter()
                        .position(|h| h.name == v.host)
                        .unwrap_or(usize::MAX)
                })
                .collect(),
        };
        let new: Vec<usize> = (snap.vms.len()..trial.vms.len()).collect();
        let Some(plan) = place.place(&new, domain) else {
            continue;
        };
        if best
            .as_ref()
            .is_none_or(|(b, _)| d.balance_before < *b - 1e-9)
        {
            let plan = plan
                .into_iter()
                .map(|(v, h)| (trial.vms[v].name.clone(), trial.hosts[h].name.clone()))
                .collect();
            best = Some((d.balance_before, plan));
        }
    }
    best.map(|(_, plan)| plan)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params() -> ManagerParams {
        ManagerParams::default()
    }

    #[test]
    fn wma_weighs_the_newest_most() {
        // (3*6 + 2*3 + 1*0) / 6 = 4
        assert_eq!(predicted_usage(&[9.0, 0.0, 3.0, 6.0], 3), Some(4.0));
        // Fewer samples than the window: the weights follow the samples there are.
        assert_eq!(predicted_usage(&[2.0, 5.0], 5), Some((2.0 + 10.0) / 3.0));
        assert_eq!(predicted_usage(&[], 5), None);
    }

    #[test]
    fn desired_level_follows_the_two_piece_rule() {
        let (a, b) = (1.0 / 0.75, 2.0);
        // 40% used: given what makes it 75% used.
        assert!((desired_factor(0.4, a, b) - 0.4 / 0.75).abs() < 1e-12);
        // Continuous at 1/alpha: exactly its allocation from either side.
        assert!((desired_factor(0.75, a, b) - 1.0).abs() < 1e-12);
        assert!((desired_factor(0.75 - 1e-9, a, b) - 1.0).abs() < 1e-6);
        // Saturated: beta times its allocation.
        assert!((desired_factor(1.0, a, b) - 2.0).abs() < 1e-12);
        // 90%: slope (2 - 4/3) / (1 - 3/4) = 8/3, factor 8/3 * -0.1 + 2 = 1.7333.., level 1.56.
        assert!((desired_factor(0.9, a, b) - 0.9 * (2.0 - 0.8 / 3.0)).abs() < 1e-12);
        // Absolute: 0.5 of 2 cores used -> 25% -> 0.25 * 4/3 * 2 = 0.6667 cores.
        let p = params();
        let d = desired_level(&[0.5, 0.5], 2.0, 0.05, 4.0, &p).unwrap();
        assert!((d - 2.0 / 3.0).abs() < 1e-9);
        // Saturated at 1 core of 1 vCPU: beta would say 2, the vCPU caps it at 1.
        assert_eq!(desired_level(&[1.0], 1.0, 0.05, 1.0, &p), Some(1.0));
    }

    fn host(name: &str, domain: &str) -> Host {
        Host {
            name: name.into(),
            domain: domain.into(),
            cpus: 1.0,
            memory_mib: 1024.0,
        }
    }

    fn vm(env: &str, name: &str, host: &str, used: f64) -> Vm {
        Vm {
            environment: env.into(),
            name: name.into(),
            host: host.into(),
            vcpus: 1.0,
            cpu_allocation: 1.0,
            cpu_samples: vec![used; 5],
            memory_mib: 256.0,
            max_memory_mib: 256.0,
            memory_samples: Vec::new(),
            head: false,
        }
    }

    /// Scenario 1 after V2 finished: V1 (4 VMs) and V3 (6 VMs) share domain d1's 6 hosts,
    /// domain d2's 4 hosts are idle. Every VM is saturated on its one vCPU, so each desires
    /// one core. Target 10/10 = 1; d1 at 10/6, d2 at 0; the balance, summed over the two
    /// environments, is 2 * |10/6 - 1| = 4/3. Moving V1 makes both domains exactly 1
    /// (balance 0); moving V3 would leave d1 at 4/6 and d2 at 6/4 (1/3 + 1/2 = 5/6).
    fn scenario1() -> Snapshot {
        let mut hosts: Vec<Host> = (1..=6).map(|i| host(&format!("a{i}"), "d1")).collect();
        hosts.extend((1..=4).map(|i| host(&format!("b{i}"), "d2")));
        let mut vms = Vec::new();
        for i in 0..4 {
            vms.push(vm("v1", &format!("v1-{i}"), &format!("a{}", i + 1), 1.0));
        }
        for i in 0..6 {
            vms.push(vm(
                "v3",
                &format!("v3-{i}"),
                &format!("a{}", (i % 6) + 1),
                1.0,
            ));
        }
        Snapshot { hosts, vms }
    }

    #[test]
    fn algorithm_1_moves_the_environment_that_balances_best() {
        let d = decide(&scenario1(), &params());
        assert!((d.target_utilisation - 1.0).abs() < 1e-9);
        assert!((d.balance_before - 4.0 / 3.0).abs() < 1e-9, "{d:#?}");
        assert_eq!(d.environment_moves.len(), 1, "{d:#?}");
        let m = &d.environment_moves[0];
        assert_eq!(
            (m.environment.as_str(), m.from.as_str(), m.to.as_str()),
            ("v1", "d1", "d2")
        );
        assert!(d.balance_after.abs() < 1e-9);
        // V1's four VMs each land on a host of their own in d2.
        let dests: BTreeSet<&str> = d.moves.iter().map(|m| m.to.as_str()).collect();
        assert_eq!(d.moves.len(), 4);
        assert_eq!(dests, ["b1", "b2", "b3", "b4"].into_iter().collect());
        // With V1 gone d1's six hosts carry V3's six VMs, one each: its hosts rebalance.
        assert!(d.explain[0].contains("moving v1"), "{:?}", d.explain);
        // Every VM is given all of its (single) vCPU on an unshared host afterwards.
        let v3 = d.vms.iter().filter(|v| v.environment == "v3");
        let hosts: BTreeSet<&str> = v3.clone().map(|v| v.host.as_str()).collect();
        assert_eq!(hosts.len(), 6, "{:?}", d.vms);
    }

    #[test]
    fn a_new_environment_goes_where_it_balances_best() {
        let mut s = scenario1();
        // V1 moved to d2: both domains at 1. A new 4-VM environment: in d1 it makes d1
        // 10/6 (balance |10/6 - 14/10| * 2 + |1 - 1.4| = 0.933), in d2 8/4 (|1 - 1.4| +
        // |2 - 1.4| * 2 = 1.6): d1.
        for (i, v) in s.vms.iter_mut().take(4).enumerate() {
            v.host = format!("b{}", i + 1);
        }
        let new: Vec<Vm> = (0..4)
            .map(|i| vm("v4", &format!("v4-{i}"), "", 1.0))
            .collect();
        let plan = place_environment(&s, &new, &params()).unwrap();
        assert_eq!(plan.len(), 4);
        assert!(plan.iter().all(|(_, h)| h.starts_with('a')), "{plan:?}");
        // Four different hosts of d1.
        let hosts: BTreeSet<&str> = plan.iter().map(|(_, h)| h.as_str()).collect();
        assert_eq!(hosts.len(), 4);
    }

    #[test]
    fn memory_is_a_hard_constraint() {
        let mut s = scenario1();
        // d2's hosts cannot hold another 256 MiB guest: nothing may move there.
        for h in s.hosts.iter_mut().filter(|h| h.domain == "d2") {
            h.memory_mib = 200.0;
        }
        let d = decide(&s, &params());
        assert!(d.environment_moves.is_empty(), "{d:#?}");
        assert!(
            d.explain.iter().any(|e| e.contains("as balanced")),
            "{:?}",
            d.explain
        );
    }

    #[test]
    fn a_domain_is_not_promised_the_same_memory_twice_and_the_budget_counts_vms() {
        // d1 (one core) runs three saturated one-VM environments; d2's host has room for
        // one more guest's memory, d3 plenty of CPU and no memory.
        let mut hosts = vec![host("a1", "d1"), host("b1", "d2"), host("c1", "d3")];
        hosts[1].cpus = 2.0;
        hosts[1].memory_mib = 300.0;
        hosts[2].cpus = 2.0;
        hosts[2].memory_mib = 200.0;
        let s = Snapshot {
            hosts,
            vms: ["e1", "e2", "e3"]
                .iter()
                .map(|e| vm(e, &format!("{e}-0"), "a1", 1.0))
                .collect(),
        };
        let d = decide(&s, &params());
        assert_eq!(d.environment_moves.len(), 1, "{d:#?}");
        assert_eq!(d.moves.len(), 1, "{d:#?}");
        assert_eq!(d.moves[0].to, "b1");
        // Scenario 1 with room for one migration: V1's four VMs are over the budget.
        let mut one = params();
        one.max_migrations = 1;
        let d = decide(&scenario1(), &one);
        assert!(d.environment_moves.is_empty(), "{d:#?}");
    }

    #[test]
    fn head_nodes_stay_and_count_as_fixed_load() {
        let mut s = scenario1();
        s.vms[0].head = true;
        let d = decide(&s, &params());
        let m = &d.environment_moves[0];
        assert_eq!(m.environment, "v1");
        assert_eq!(m.vms, 3);
        assert!(d.moves.iter().all(|m| m.vm != "v1-0"), "{:?}", d.moves);
        let head = d.vms.iter().find(|v| v.vm == "v1-0").unwrap();
        assert!(head.host.starts_with('a'));
    }

    #[test]
    fn a_balanced_infrastructure_stays_put_and_dry_runs_say_why() {
        let mut s = scenario1();
        // V1 already in d2.
        for (i, v) in s.vms.iter_mut().take(4).enumerate() {
            v.host = format!("b{}", i + 1);
        }
        let d = decide(&s, &params());
        assert!(
            d.moves.is_empty() && d.environment_moves.is_empty(),
            "{d:#?}"
        );
        assert!(d.balance_before.abs() < 1e-9);
        let mut off = params();
        off.migrate = false;
        let d = decide(&scenario1(), &off);
        assert!(d.moves.is_empty());
        assert!(d.explain[0].contains("migration is off"));
    }

    #[test]
    fn an_overloaded_host_sheds_a_vm_to_the_least_utilised_host() {
        // One domain, two hosts; three busy VMs on a1, none on a2.
        let s = Snapshot {
            hosts: vec![host("a1", "d1"), host("a2", "d1")],
            vms: (0..3)
                .map(|i| vm("e", &format!("e{i}"), "a1", 1.0 / 3.0))
                .collect(),
        };
        let d = decide(&s, &params());
        assert!(d.environment_moves.is_empty());
        assert_eq!(d.moves.len(), 1, "{d:#?}");
        assert_eq!(
            (d.moves[0].from.as_str(), d.moves[0].to.as_str()),
            ("a1", "a2")
        );
        // Each uses a third of its whole vCPU: desired 1/3 * 4/3 = 4/9 cores. Three on a1
        // want 4/3 > 1; after one move a1 carries 8/9 and a2 4/9 (balance 2 -> 2/3), and a
        // second move would only mirror that.
        for v in &d.vms {
            assert!((v.desired_cpu - 4.0 / 9.0).abs() < 1e-9);
            assert!((v.cpu_cap - v.desired_cpu).abs() < 1e-9);
        }
    }

    #[test]
    fn cpu_is_shared_by_desired_level_when_a_host_is_short() {
        let mut s = Snapshot {
            hosts: vec![host("a1", "d1")],
            vms: vec![vm("e", "x", "a1", 1.0), vm("e", "y", "a1", 0.2)],
        };
        s.vms[1].cpu_allocation = 0.3;
        let d = decide(&s, &params());
        // x: saturated at its whole vCPU -> min(2, 1) = 1. y: 0.2 of 0.3 = 66.7% < 75%
        // -> 0.2 * 4/3 = 0.2667. Together 1.2667 > 1 core: each gets 1/1.2667 of it.
        let x = d.vms.iter().find(|v| v.vm == "x").unwrap();
        let y = d.vms.iter().find(|v| v.vm == "y").unwrap();
        assert!((y.desired_cpu - 0.2 * 4.0 / 3.0).abs() < 1e-9);
        let total = 1.0 + 0.2 * 4.0 / 3.0;
        assert!((x.cpu_cap - 1.0 / total).abs() < 1e-9);
        assert!((y.cpu_cap - y.desired_cpu / total).abs() < 1e-9);
        assert!(x.cpu_weight > y.cpu_weight);
    }
}
