//! Autonomic environments on the live installation: the adaptation manager's snapshot
//! from the hosts' registrations (domain, capacity), the specs (which VM is where, head
//! nodes) and the VMs' use as libvirt reports it (`usage`); its decision carried out
//! through the migration supervisor (moves) and the hosts' shares (each VM's CPU weight,
//! cap and balloon target, which violind sets through libvirt).
use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    sync::{Mutex, RwLock},
    time::Duration,
};

use violin_api::{
    rest::{ManagerDecision, ManagerParams, ManagerRecord},
    vm::{MigrationRequest, VmResources},
    Name,
};

use crate::{
    api::Api,
    manager::{self, Host, Snapshot, Vm},
    usage::{now_ms, Usage},
};

/// Decisions kept for `violinctl adapt --explain`.
const KEEP: usize = 100;

pub struct Autonomic {
    pub params: RwLock<ManagerParams>,
    /// How often automatic mode decides; None: only on request.
    pub period: Option<Duration>,
    pub usage: Usage,
    log: Mutex<VecDeque<ManagerRecord>>,
}

impl Autonomic {
    pub fn new(params: ManagerParams, period: Option<Duration>) -> Autonomic {
        Autonomic {
            params: RwLock::new(params),
            period,
            usage: Usage::default(),
            log: Mutex::new(VecDeque::new()),
        }
    }

    pub fn log(&self) -> Vec<ManagerRecord> {
        self.log.lock().unwrap().iter().cloned().collect()
    }
}

/// The infrastructure as the manager sees it: registered hosts that offer capacity (those
/// that follow a libvirt daemon), and the specs' VMs that libvirt reports running where
/// the spec places them (a VM in the middle of a move waits for the next decision).
pub fn snapshot(api: &Api) -> anyhow::Result<Snapshot> {
    let mut hosts = Vec::new();
    // A host whose daemon is not connected can neither take a VM nor be trusted to run one.
    let connected = api.hub.hosts();
    for (name, reg) in api.store.hosts()? {
        let Some(reg) = reg else { continue };
        if connected.get(&name).is_none_or(|h| h.streams == 0) {
            continue;
        }
        let (Some(cpus), Some(memory)) = (reg.cpus, reg.memory_mib) else {
            continue;
        };
        hosts.push(Host {
            name,
            domain: reg.domain.unwrap_or_else(|| "default".into()),
            cpus,
            memory_mib: memory as f64,
        });
    }
    let usage = api.autonomic.usage.histories();
    let mut vms = Vec::new();
    for spec in api.store.specs()? {
        // An environment is managed whole: every VM a guest libvirt reports, with samples,
        // where the spec places it (none in the middle of a move). Else moving it would
        // split it across domains.
        let whole = spec.vms.iter().all(|(name, v)| {
            usage
                .get(name.as_str())
                .is_some_and(|h| h.host == v.host && !h.samples.is_empty())
        });
        if !whole {
            continue;
        }
        for (name, v) in &spec.vms {
            let h = &usage[name.as_str()];
            let mib = |b: u64| b as f64 / 1048576.0;
            let vcpus = f64::from(h.status.vcpus.max(1));
            vms.push(Vm {
                environment: spec.name.to_string(),
                name: name.to_string(),
                host: v.host.clone(),
                vcpus,
                cpu_allocation: h.status.cpu_cap.unwrap_or(vcpus).min(vcpus),
                cpu_samples: h.samples.iter().map(|s| s.cpu_cores).collect(),
                memory_mib: mib(h.status.memory_bytes),
                max_memory_mib: mib(h.status.max_memory_bytes.max(h.status.memory_bytes)),
                memory_samples: h.samples.iter().filter_map(|s| s.memory_used_mib).collect(),
                head: v.head,
            });
        }
    }
    Ok(Snapshot { hosts, vms })
}

/// What the manager would do now (a dry run: nothing changes).
pub fn decide(api: &Api) -> anyhow::Result<(Snapshot, ManagerDecision)> {
    let snap = snapshot(api)?;
    let params = api.autonomic.params.read().unwrap().clone();
    let d = manager::decide(&snap, &params);
    let m = &api.hub.metrics;
    for dom in &d.domains {
        m.domain_utilisation
            .with_label_values(&[dom.name.as_str()])
            .set(dom.utilisation_before);
    }
    for v in &d.vms {
        let used = snap
            .vms
            .iter()
            .find(|s| s.name == v.vm)
            .and_then(|s| s.cpu_samples.last().copied())
            .unwrap_or(0.0);
        for (kind, value) in [
            ("used", used),
            ("predicted", v.predicted_cpu.unwrap_or(0.0)),
            ("desired", v.desired_cpu),
            ("cap", v.cpu_cap),
        ] {
            m.vm_cpu
                .with_label_values(&[v.vm.as_str(), kind])
                .set(value);
        }
    }
    Ok((snap, d))
}

/// Caps and weights as the hosts get them: rounded, so that noise in the samples does
/// not push a new generation to every host each period.
pub fn resources(snap: &Snapshot, d: &ManagerDecision) -> Vec<VmResources> {
    d.vms
        .iter()
        .map(|v| {
            let balloon = snap
                .vms
                .iter()
                .any(|s| s.name == v.vm && !s.memory_samples.is_empty());
            VmResources {
                vm: v.vm.clone(),
                // 2..=10000 is what both cgroup versions accept.
                cpu_weight: (v.cpu_weight.div_ceil(16) * 16).clamp(16, 10_000),
                cpu_cap: Some(((v.cpu_cap * 20.0).round() / 20.0).max(0.05)),
                // Down to 8 MiB, so that it never exceeds the VM's maximum.
                memory_mib: balloon.then(|| (v.memory_mib / 8.0).floor().max(1.0) as u64 * 8),
            }
        })
        .collect()
}

/// Carries a decision out: the VMs' `resources` (its shares, from [`resources`]) into
/// their hosts' shares, each move to the migration supervisor. Returns the record, also kept for `--explain`.
pub fn carry_out(
    api: &Api,
    decision: ManagerDecision,
    resources: Vec<VmResources>,
    trigger: &str,
) -> anyhow::Result<ManagerRecord> {
    // VMs no spec names any more lose theirs (a VM created later under the name starts
    // afresh).
    let named: BTreeSet<String> = api
        .store
        .snapshot()
        .values()
        .flat_map(|(_, s)| s.vms.keys().map(|v| v.to_string()))
        .collect();
    let generation = api.store.set_resources(&resources, &named)?;
    if let Some(g) = generation {
        api.hub.committed(g);
        api.hub
            .metrics
            .manager_decisions
            .with_label_values(&[trigger, "resources"])
            .inc();
    }
    let mut migrations = Vec::new();
    let mut errors = Vec::new();
    // One request per environment: the supervisor takes no second request for an
    // environment with a migration in flight. Its VMs go to their destinations in turn
    // (by name, as an environment's request assigns them), the others stay where they are.
    let mut by_env: BTreeMap<&str, BTreeMap<&str, &str>> = BTreeMap::new();
    for m in &decision.moves {
        by_env
            .entry(m.environment.as_str())
            .or_default()
            .insert(m.vm.as_str(), m.to.as_str());
    }
    let specs = api.store.snapshot();
    for (env, dests) in by_env {
        let Some((_, spec)) = specs.get(env) else {
            errors.push(format!("{env}: the environment is gone"));
            continue;
        };
        let to: Vec<Name> = spec
            .vms
            .iter()
            .filter_map(|(n, v)| {
                Name::parse(dests.get(n.as_str()).copied().unwrap_or(&v.host)).ok()
            })
            .collect();
        let req = MigrationRequest {
            vm: None,
            environment: Name::parse(env).ok(),
            to,
            bandwidth_mib_s: None,
        };
        match api.migrations.start(req) {
            Ok(started) => migrations.extend(started.iter().map(|s| s.id)),
            Err(e) => errors.push(format!("{env}: {}: {}", e.field, e.reason)),
        }
    }
    if !migrations.is_empty() {
        api.hub
            .metrics
            .manager_decisions
            .with_label_values(&[trigger, "migrate"])
            .inc();
    }
    let mut log = api.autonomic.log.lock().unwrap();
    let record = ManagerRecord {
        id: log.back().map_or(1, |r| r.id + 1),
        at_ms: now_ms(),
        trigger: trigger.to_string(),
        decision,
        migrations,
        resources,
        generation,
        errors,
    };
    tracing::info!(
        id = record.id,
        trigger,
        moves = record.decision.moves.len(),
        started = record.migrations.len(),
        refused = record.errors.len(),
        "adaptation manager decision carried out"
    );
    log.push_back(record.clone());
    while log.len() > KEEP {
        log.pop_front();
    }
    Ok(record)
}

/// Automatic mode: every period, unless migrations are under way, the manager decides
/// and what changed is carried out.
pub fn run(api: Api) {
    let Some(period) = api.autonomic.period else {
        return;
    };
    std::thread::spawn(move || loop {
        std::thread::sleep(period);
        if !api.leadership.leading() || !api.store.in_flight().is_empty() {
            continue;
        }
        let Ok((snap, d)) = decide(&api) else {
            continue;
        };
        let current = api.store.resources();
        let shares = resources(&snap, &d);
        let changed = shares.iter().any(|r| current.get(&r.vm) != Some(r));
        if d.moves.is_empty() && !changed {
            continue;
        }
        if let Err(e) = carry_out(&api, d, shares, "auto") {
            tracing::warn!(error = format!("{e:#}"), "adaptation manager");
        }
    });
}

/// The VMs' histories for `GET /v1/usage`, with each VM's environment.
pub fn usage(api: &Api) -> Vec<violin_api::vm::VmUsage> {
    let specs = api.store.snapshot();
    let env_of: BTreeMap<&str, &str> = specs
        .values()
        .flat_map(|(_, s)| s.vms.keys().map(move |v| (v.as_str(), s.name.as_str())))
        .collect();
    api.autonomic
        .usage
        .histories()
        .into_iter()
        .map(|(vm, h)| violin_api::vm::VmUsage {
            environment: env_of.get(vm.as_str()).map(|e| e.to_string()),
            host: h.host,
            samples: h.samples.into_iter().collect(),
            vm,
        })
        .collect()
}
