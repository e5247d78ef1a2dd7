//! The adaptation manager on real QEMU guests under libvirt: two hosts in two domains,
//! each offering one core; a guest of each of two environments burns CPU. With both
//! guests moved onto the first host, its domain is short of CPU and the other idle: the
//! manager's dry run explains the environment move that balances them, `violinctl adapt
//! --apply` has the migration supervisor carry it out, and every guest ends up with the CPU
//! weight, cap and balloon target the manager gave it, as libvirt reports them.
use std::{sync::Mutex, time::Duration};

use violin_api::{
    rest::{ManagerDecision, ManagerRecord},
    vm::{Migration, MigrationPhase, VmInfo, VmState, VmUsage},
};
use violin_testbed::{
    control::vm_name,
    e2e::lab,
    lab::{Lab, Managed, VmKind, BASE_VNI},
};

fn migrations_done(lab: &Lab, ids: &[u64]) -> Vec<Migration> {
    lab.until(Duration::from_secs(180), "the migrations' end", || {
        let all: Vec<Migration> = lab.violinctl_as(&["migrations"]).ok()?;
        let done: Vec<Migration> = all
            .into_iter()
            .filter(|m| ids.contains(&m.id) && m.phase.finished())
            .collect();
        (done.len() == ids.len()).then_some(done)
    })
}

/// Two hosts in two domains, each offering one core, a CPU-busy guest on each, each guest
/// the one VM of its environment (`envs`); then the second guest is moved onto the first
/// host, so that domain d1 carries all the load and d2 none. Returns the lab, the hosts'
/// ids and the guests' names.
fn overloaded(
    tag: &str,
    envs: [&str; 2],
    period_s: Option<u64>,
) -> (Lab, Vec<String>, [String; 2]) {
    let lab = lab(tag, |s| {
        s.hosts = 2;
        s.vms_per_host = 1;
        s.vm_kind = VmKind::Qemu;
        s.controller = true;
        s.measure = false;
        s.managed = Some(Managed {
            domains: 2,
            cpus: 1.0,
            memory_mib: 1024,
            report_ms: 1000,
            burn: true,
            period_s,
        });
    });
    let ids: Vec<String> = (0..2).map(|i| lab.hosts[i].host_id().to_string()).collect();
    let (a, b) = (lab.vm(0, 0, 0), lab.vm(1, 0, 0));
    let names = [vm_name(a), vm_name(b)];
    for (env, vm, vni) in [(envs[0], a, BASE_VNI), (envs[1], b, BASE_VNI + 1)] {
        lab.apply_spec(env, &lab.spec_of(&[vm], env, vni, ""))
            .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.daemon_logs()));
    }
    let started: Vec<Migration> = lab
        .violinctl_as(&["migrate", &names[1], "--to", &ids[0], "--no-follow"])
        .unwrap();
    let started: Vec<u64> = started.iter().map(|m| m.id).collect();
    for m in migrations_done(&lab, &started) {
        assert_eq!(m.phase, MigrationPhase::Completed, "{m:?}");
    }
    (lab, ids, names)
}

/// One overloaded lab at a time: the manager acts on the CPU its busy guests get, and
/// two labs' four burning guests on this 2-core machine got too little for an overload.
static ONE_LAB: Mutex<()> = Mutex::new(());

#[test]
fn an_overloaded_domain_sheds_an_environment_and_every_guest_gets_its_share() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let (lab, ids, [va, vb]) = overloaded("mg", ["ma", "mb"], None);
    // A few samples of each guest on h1, taken since both run there.
    let since = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64;
    lab.until(
        Duration::from_secs(60),
        "usage samples of both guests on h1",
        || {
            let u: Vec<VmUsage> = lab.violinctl_as(&["usage"]).ok()?;
            let ok = [&va, &vb].iter().all(|n| {
                u.iter().any(|x| {
                    &&x.vm == n
                        && x.host == ids[0]
                        && x.samples.iter().filter(|s| s.at_ms > since).count() >= 3
                })
            });
            ok.then_some(())
        },
    );

    // The dry run: one environment from d1 to d2, with its reason, and nothing moved.
    let plan: ManagerDecision = lab.violinctl_as(&["adapt"]).unwrap();
    assert_eq!(plan.environment_moves.len(), 1, "{plan:#?}");
    let mv = &plan.environment_moves[0];
    assert_eq!(
        (mv.from.as_str(), mv.to.as_str()),
        ("d1", "d2"),
        "{plan:#?}"
    );
    assert!(mv.balance_after < mv.balance_before, "{plan:#?}");
    assert!(mv.reason.contains("most utilised"), "{}", mv.reason);
    assert_eq!(plan.moves.len(), 1, "{plan:#?}");
    assert_eq!(plan.moves[0].to, ids[1]);
    let d1 = plan.domains.iter().find(|d| d.name == "d1").unwrap();
    assert!(d1.utilisation_before > 1.0, "{plan:#?}");
    let all: Vec<Migration> = lab.violinctl_as(&["migrations"]).unwrap();
    assert_eq!(all.len(), 1, "a dry run started a migration: {all:?}");

    // Carried out: the migration, then the explanation on record.
    let records: Vec<ManagerRecord> = lab.violinctl_as(&["adapt", "--apply"]).unwrap();
    let record = records
        .into_iter()
        .next()
        .expect("the decision carried out");
    assert!(record.errors.is_empty(), "{record:#?}");
    assert_eq!(record.migrations.len(), 1, "{record:#?}");
    let moved = record.decision.moves[0].vm.clone();
    for m in migrations_done(&lab, &record.migrations) {
        assert_eq!(m.phase, MigrationPhase::Completed, "{m:?}");
        assert_eq!(m.to, ids[1]);
    }
    let log: Vec<ManagerRecord> = lab.violinctl_as(&["adapt", "--explain"]).unwrap();
    assert!(
        log.iter()
            .any(|r| r.id == record.id && r.decision.environment_moves.len() == 1),
        "{log:#?}"
    );
    let text = lab.violinctl(&["adapt", "--explain"]).unwrap();
    assert!(
        text.contains("why: domain d1 is the most utilised"),
        "{text}"
    );

    // Every guest as libvirt reports it: on its host, with the weight, cap and balloon
    // target its share carries (the moved one's set again on its new host).
    assert_eq!(record.resources.len(), 2, "{record:#?}");
    lab.until(Duration::from_secs(90), "the guests' resources set", || {
        let vms: Vec<VmInfo> = lab.violinctl_as(&["vms"]).ok()?;
        let ok = record.resources.iter().all(|r| {
            vms.iter().any(|v| {
                let host_ok = if r.vm == moved { &ids[1] } else { &ids[0] };
                v.status.name == r.vm
                    && v.status.state == VmState::Running
                    && &v.host == host_ok
                    && v.status.cpu_weight == Some(r.cpu_weight)
                    && v.status.cpu_cap.zip(r.cpu_cap).is_some_and(|(a, b)| (a - b).abs() < 0.01)
                    // The balloon inflates at the guest's pace: below its maximum on the
                    // way to the target.
                    && r.memory_mib.is_some_and(|m| m < v.status.max_memory_bytes >> 20)
                    && v.status.memory_bytes < v.status.max_memory_bytes
            })
        });
        ok.then_some(())
    });
    let metrics = lab.controller_metrics().unwrap();
    assert!(
        metrics.contains("violin_controller_domain_utilisation{domain=\"d1\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains(
            "violin_controller_manager_decisions_total{action=\"migrate\",trigger=\"manual\"} 1"
        ),
        "{metrics}"
    );
    lab.down().unwrap();
}

/// Automatic mode: the same overload, and the controller sheds it on its own within a few
/// periods, recording the decision as `auto`.
#[test]
fn automatic_mode_sheds_an_overload_on_its_own() {
    let _one = ONE_LAB.lock().unwrap_or_else(|e| e.into_inner());
    let (lab, ids, _) = overloaded("ma", ["aa", "ab"], Some(5));
    // The manager's own move: an environment back to d2.
    let record: ManagerRecord = lab.until(Duration::from_secs(120), "an automatic move", || {
        let log: Vec<ManagerRecord> = lab.violinctl_as(&["adapt", "--explain"]).ok()?;
        log.into_iter()
            .find(|r| r.trigger == "auto" && !r.migrations.is_empty())
    });
    assert_eq!(record.decision.environment_moves[0].to, "d2", "{record:#?}");
    for m in migrations_done(&lab, &record.migrations) {
        assert_eq!(m.phase, MigrationPhase::Completed, "{m:?}");
        assert_eq!(m.to, ids[1]);
    }
    lab.down().unwrap();
}
