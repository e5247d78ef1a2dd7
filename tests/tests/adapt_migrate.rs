//! VADAPT's mapping carried out on real QEMU guests: the guest on h1 probes the guest on h2
//! (a TCP echo session and pings), and the two hosts sit in different lab domains behind
//! 40 Mbit/s uplinks, while h3 shares h1's domain and h4 h2's. The measured host matrix
//! and the inferred topology make VADAPT plan one live migration that brings the pair
//! into one domain; `violinctl adapt --apply` has the migration supervisor carry it out.
//! (Connectivity across a migration is the migration tests' subject: a TCG guest here
//! stalls now and then after a move, which says nothing of the mapping; the test runs once
//! more on a fresh lab when a guest panicked or its emulator stopped.)
use std::time::Duration;

use violin_api::{
    rest::{AdaptPlan, Adaptation},
    vm::{Migration, MigrationPhase, VmInfo, VmState},
};
use violin_testbed::{
    control::vm_name,
    e2e::lab,
    lab::{Domains, Lab, VmKind, BASE_VNI},
    libvirt::{probe_report, twice_on_guest_panic, STOPPED},
};

#[test]
fn the_mapping_live_migrates_a_guest_next_to_its_peer() {
    let make = || {
        lab("aq", |s| {
            s.hosts = 4;
            s.vms_per_host = 1;
            s.vm_kind = VmKind::Qemu;
            s.controller = true;
            s.probes = true;
            s.probe_interval_ms = Some(100);
            s.domains = Some(Domains::shaped(2, 40));
        })
    };
    twice_on_guest_panic(make, mapping);
}

fn mapping(lab: &mut Lab) {
    let ids: Vec<String> = (0..4).map(|i| lab.hosts[i].host_id().to_string()).collect();
    let adapt = format!("[adapt]\nproxy = {:?}\nvms_per_host = 2\n", ids[0]);
    lab.apply_spec("env0", &lab.env_spec(0, "env0", BASE_VNI, &adapt))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.daemon_logs()));
    let prober = lab.vm(0, 0, 0).guest.clone().expect("a guest on h1");
    // Pings answered: the pair's traffic VTTIF sees.
    let echoed = || Some(probe_report(&prober.console)?.ping_received);
    lab.until(
        Duration::from_secs(120),
        "the probe's first answered pings",
        || echoed().filter(|&n| n >= 20),
    );

    let plan: AdaptPlan = lab.until(Duration::from_secs(60), "a mapping with a move", || {
        let p: AdaptPlan = lab.violinctl_as(&["adapt", "env0"]).ok()?;
        (!p.moves.is_empty()).then_some(p)
    });
    assert_eq!(plan.moves.len(), 1, "{plan:?}");
    let pair = [vm_name(lab.vm(0, 0, 0)), vm_name(lab.vm(1, 0, 0))];
    let done: Vec<Adaptation> = lab.violinctl_as(&["adapt", "env0", "--apply"]).unwrap();
    assert!(done[0].refused.is_empty(), "{done:?}");
    assert_eq!(done[0].moves.len(), 1, "{plan:?} {done:?}");
    let mv = done[0].moves[0].clone();
    assert!(pair.contains(&mv.vm), "{mv:?} moves neither of {pair:?}");
    assert_eq!(done[0].migrations.len(), 1, "{done:?}");
    let id = done[0].migrations[0];
    let m: Migration = lab.until(Duration::from_secs(180), "the migration's end", || {
        let all: Vec<Migration> = lab.violinctl_as(&["migrations"]).ok()?;
        all.into_iter().find(|m| m.id == id && m.phase.finished())
    });
    assert_eq!(m.phase, MigrationPhase::Completed, "{m:?}");
    assert_eq!(
        (m.vm.as_str(), m.to.as_str()),
        (mv.vm.as_str(), mv.to.as_str())
    );
    // The guest runs where the mapping put it, in its peer's domain.
    // (The source reports the guest gone in a later report of its domains; on this
    // shared machine that has taken over 30 s.)
    lab.until(
        Duration::from_secs(90),
        "the guest on its new host alone",
        || {
            let vms: Vec<VmInfo> = lab.violinctl_as(&["vms"]).ok()?;
            let gone = vms.iter().find(|v| {
                v.status.name == mv.vm
                    && v.host == mv.to
                    && matches!(v.status.state, VmState::Shutoff | VmState::Crashed)
            });
            assert!(gone.is_none(), "{}: {STOPPED}: {gone:?}", mv.vm);
            let on: Vec<&str> = vms
                .iter()
                .filter(|v| v.status.name == mv.vm && v.status.state == VmState::Running)
                .map(|v| v.host.as_str())
                .collect();
            (on == [mv.to.as_str()]).then_some(())
        },
    );
    let host = |name: &str| ids.iter().position(|h| h == name).unwrap();
    let other = if mv.vm == pair[0] { 1 } else { 0 };
    assert_eq!(lab.domain_of(host(&mv.to)), lab.domain_of(other));
}
