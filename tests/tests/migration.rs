//! Live migration of real QEMU guests (TCG) under a libvirt daemon per host, supervised by
//! the controller and driven with `violinctl migrate`, while traffic runs.
//!
//! Two hosts, two environments with the same addresses, a guest of each on each host. The
//! guests on h1 run `violin-probe` against their environment's guest on h2: one TCP echo
//! session (never reconnected: a reset is the failure being looked for) and pings, each
//! every 20 ms.
//! One scenario per stage, on one lab (booting guests under TCG is the slow part).
use std::time::{Duration, Instant};

use violin_api::vm::{Migration, MigrationPhase, VmInfo};
use violin_testbed::{
    control::vm_name,
    e2e::lab,
    lab::{Lab, Vm, VmKind},
    libvirt::{probe_report, twice_on_guest_panic, ProbeReport},
    sys::{ip, ns_run},
    traffic::{ping, wait_ping},
};

/// The probe report of the guest on h1 in environment `env`.
fn report(lab: &Lab, env: usize) -> ProbeReport {
    let g = prober(lab, env).guest.clone().expect("a guest");
    probe_report(&g.console).unwrap_or_else(|| {
        panic!(
            "no probe report on {}:\n{}",
            g.console.display(),
            std::fs::read_to_string(&g.console).unwrap_or_default()
        )
    })
}

fn prober(lab: &Lab, env: usize) -> &Vm {
    lab.vms
        .iter()
        .find(|v| v.host == 0 && v.env == env)
        .expect("a guest on h1")
}

fn target(lab: &Lab, env: usize) -> &Vm {
    lab.vms
        .iter()
        .find(|v| v.host == 1 && v.env == env)
        .expect("a guest on h2")
}

/// Waits until the probe of `env` has `more` echoes beyond `from` (the session carries
/// traffic), failing on a broken session.
fn wait_echoes(lab: &Lab, env: usize, from: u64, more: u64) -> ProbeReport {
    violin_testbed::libvirt::wait_echoes(lab, prober(lab, env), from, more)
}

/// Waits until the hosts' reports (violind reports its domains every 5 s, and holds them
/// back for 3 s after a migration's events) show `vm` running on `want` alone.
fn on_host(lab: &Lab, vm: &str, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let vms: Vec<VmInfo> = lab.violinctl_as(&["vms"]).unwrap();
        let running: Vec<&VmInfo> = vms
            .iter()
            .filter(|v| v.status.name == vm && v.status.state == violin_api::vm::VmState::Running)
            .collect();
        if running.len() == 1 && running[0].host == want {
            return;
        }
        if Instant::now() > deadline {
            fail_placement(lab, vm, want, &vms);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn fail_placement(lab: &Lab, vm: &str, want: &str, vms: &[VmInfo]) -> ! {
    {
        let console = lab
            .vms
            .iter()
            .find(|v| vm_name(v) == vm)
            .and_then(|v| v.guest.clone())
            .map(|g| std::fs::read_to_string(g.console).unwrap_or_default())
            .unwrap_or_default();
        let tail: Vec<&str> = console.lines().rev().take(30).collect();
        let qemu_logs: Vec<String> = (1..=2)
            .map(|h| {
                let log = violin_testbed::lab::guest_dir(&lab.spec.name)
                    .join(format!("h{h}/var/log/libvirt/qemu/{vm}.log"));
                format!(
                    "{}:\n{}",
                    log.display(),
                    std::fs::read_to_string(&log).unwrap_or_default()
                )
            })
            .collect();
        panic!(
            "{vm} should run on {want} alone: {vms:?}\nconsole (last lines, newest first):\n{}\n{}",
            tail.join("\n"),
            qemu_logs.join("\n")
        );
    }
}

/// `violinctl migrate ARGS` (following to the end), then the migrations it ran.
fn migrate(lab: &Lab, args: &[&str]) -> Vec<Migration> {
    let before: Vec<Migration> = lab.violinctl_as(&["migrations"]).unwrap();
    let mut full = vec!["migrate"];
    full.extend_from_slice(args);
    lab.violinctl(&full).unwrap_or_else(|e| {
        panic!(
            "{e:#}\ncontroller log:\n{}\n{}",
            std::fs::read_to_string(lab.dir.join("controller.log")).unwrap_or_default(),
            lab.daemon_logs()
        )
    });
    let after: Vec<Migration> = lab.violinctl_as(&["migrations"]).unwrap();
    after.into_iter().skip(before.len()).collect()
}

fn completed(m: &Migration) {
    assert_eq!(m.phase, MigrationPhase::Completed, "{m:?}");
    assert_eq!(m.error, None, "{m:?}");
    assert!(m.downtime_seconds.is_some(), "libvirt's downtime: {m:?}");
    assert!(m.reconvergence_seconds.is_some(), "reconvergence: {m:?}");
}

#[test]
fn guests_live_migrate_with_their_sessions_and_failures_roll_back() {
    // A guest kernel that panics is never Violin's doing (a kernel survives any frame):
    // QEMU 7.2's TCG here now and then corrupts a guest migrated under traffic (see
    // libvirt::domain_xml). The scenario runs once more on a fresh lab then, and only
    // then; the first failure is printed in full above the second run.
    twice_on_guest_panic(migration_lab, scenario);
}

fn migration_lab() -> Lab {
    lab("mig", |s| {
        s.vm_kind = VmKind::Qemu;
        s.controller = true;
        s.envs = 2;
        s.probes = true;
        // 50 pings and TCP lines a second. At 1 ms (the benchmark's rate) a TCG guest
        // migrated under QEMU 7.2 here now and then corrupted its memory and panicked.
        s.probe_interval_ms = Some(20);
    })
}

fn scenario(lab: &mut Lab) {
    lab.apply_environments()
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.daemon_logs()));
    let h1 = lab.hosts[0].host_id().to_string();
    let h2 = lab.hosts[1].host_id().to_string();
    let mover = vm_name(target(lab, 0));
    for env in 0..2 {
        wait_echoes(lab, env, 0, 20);
    }
    // violind reports every domain to the controller, with state, CPU and memory.
    let vms: Vec<VmInfo> = lab.violinctl_as(&["vms"]).unwrap();
    assert_eq!(vms.len(), 4, "{vms:?}");
    assert!(
        vms.iter()
            .all(|v| v.status.cpu_seconds > 0.0 && v.status.memory_bytes > 0),
        "{vms:?}"
    );
    on_host(lab, &mover, &h2);

    back_and_forth(lab, &mover, &h1, &h2);
    followed_when_moved_with_virsh(lab, &mover, &h1, &h2);
    refused_when_the_destination_daemon_is_down(lab, &mover, &h1, &h2);
    cancelled_migrations_roll_back(lab, &mover, &h1, &h2);
    failed_migrations_roll_back(lab, &mover, &h1, &h2);
    whole_environment(lab, &h1, &h2);
}

/// One guest goes h2 -> h1 -> h2 while the probes run in both environments.
fn back_and_forth(lab: &Lab, mover: &str, h1: &str, h2: &str) {
    let start: Vec<ProbeReport> = (0..2).map(|e| report(lab, e)).collect();
    for to in [h1, h2] {
        let done = migrate(lab, &[mover, "--to", to]);
        assert_eq!(done.len(), 1, "{done:?}");
        completed(&done[0]);
        on_host(lab, mover, to);
        // The session survives and carries traffic again after the move.
        let now = report(lab, 0).tcp_echoed;
        wait_echoes(lab, 0, now, 20);
    }
    for (env, before) in start.iter().enumerate() {
        let after = wait_echoes(lab, env, 0, 0);
        let lost = (after.ping_sent - before.ping_sent)
            .saturating_sub(after.ping_received - before.ping_received);
        eprintln!(
            "env{env} across two migrations: longest TCP echo gap {} ms, longest ping gap {} ms, \
             {lost} of {} pings unanswered",
            after.tcp_max_gap_ms,
            after.ping_max_gap_ms,
            after.ping_sent - before.ping_sent
        );
    }
    // The other environment (same addresses) kept working throughout: no reset, and it
    // still carries traffic.
    let now = report(lab, 1).tcp_echoed;
    wait_echoes(lab, 1, now, 20);
    let list = lab.violinctl(&["migrations"]).unwrap();
    assert!(list.contains("completed"), "{list}");
    let controller = format!(
        "{}:{}",
        violin_testbed::control::controller_ip(),
        violin_testbed::control::CONTROLLER_PORT
    );
    let (_, metrics) = violin_testbed::traffic::http_get(
        &violin_testbed::lab::switch_ns(&lab.spec.name),
        controller.parse().unwrap(),
        "/metrics",
    )
    .unwrap();
    assert!(
        metrics.contains("violin_controller_migrations_total{result=\"completed\"} 2"),
        "{metrics}"
    );
}

/// An operator moves the guest with libvirt alone: Violin follows it there (the
/// destination's violind reports the resume, the controller commits the new host) and
/// records the move; the session survives. Then it goes back through the controller.
fn followed_when_moved_with_virsh(lab: &Lab, mover: &str, h1: &str, h2: &str) {
    lab.virsh_migrate(mover, 1, 0).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let followed = loop {
        let all: Vec<Migration> = lab.violinctl_as(&["migrations"]).unwrap();
        if let Some(m) = all.iter().rev().find(|m| m.followed && m.to == h1) {
            break m.clone();
        }
        assert!(
            Instant::now() < deadline,
            "the controller did not follow {mover}: {all:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!((followed.vm.as_str(), followed.from.as_str()), (mover, h2));
    let spec = lab.violinctl(&["get", "env0"]).unwrap();
    assert!(
        spec.contains(&format!("name = \"{mover}\"\nhost = \"{h1}\"")),
        "{spec}"
    );
    let now = report(lab, 0).tcp_echoed;
    wait_echoes(lab, 0, now, 20);
    completed(&migrate(lab, &[mover, "--to", h2])[0]);
    on_host(lab, mover, h2);
}

/// With h1's violind down, a migration there is refused before anything changes.
fn refused_when_the_destination_daemon_is_down(lab: &mut Lab, mover: &str, h1: &str, h2: &str) {
    let before: Vec<Migration> = lab.violinctl_as(&["migrations"]).unwrap();
    lab.stop_daemon(0, true).unwrap();
    let err = lab
        .violinctl(&["migrate", mover, "--to", h1])
        .expect_err("a migration to a host without its daemon must be refused");
    let text = format!("{err:#}");
    assert!(text.contains("not connected"), "{text}");
    let after: Vec<Migration> = lab.violinctl_as(&["migrations"]).unwrap();
    assert_eq!(before.len(), after.len(), "nothing was recorded: {after:?}");
    on_host(lab, mover, h2);
    lab.start_daemon(0).unwrap();
    let now = report(lab, 0).tcp_echoed;
    wait_echoes(lab, 0, now, 20);
}

/// A migration slowed down (4 MiB/s) is cancelled while it copies: it ends failed,
/// saying so, and the guest stays where it was, its session intact.
fn cancelled_migrations_roll_back(lab: &Lab, mover: &str, h1: &str, h2: &str) {
    let started: Vec<Migration> = lab
        .violinctl_as(&[
            "migrate",
            mover,
            "--to",
            h1,
            "--bandwidth",
            "4",
            "--no-follow",
        ])
        .unwrap();
    let id = started[0].id;
    let wait_for = |what: &dyn Fn(&Migration) -> bool| {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let m: Migration = lab
                .violinctl_as::<Vec<Migration>>(&["migrations"])
                .unwrap()
                .into_iter()
                .find(|m| m.id == id)
                .unwrap();
            if what(&m) {
                return m;
            }
            assert!(Instant::now() < deadline, "migration {id} stuck: {m:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    };
    wait_for(&|m| m.phase == MigrationPhase::Migrating && m.data_processed_bytes > 0);
    lab.violinctl(&["migrate", "--cancel", &id.to_string()])
        .unwrap();
    let m = wait_for(&|m| m.phase.finished());
    assert_eq!(m.phase, MigrationPhase::Failed, "{m:?}");
    let why = m.error.clone().unwrap_or_default();
    assert!(
        why.contains("cancelled") && why.contains(&format!("stays on {h2}")),
        "{m:?}"
    );
    on_host(lab, mover, h2);
    let now = report(lab, 0).tcp_echoed;
    wait_echoes(lab, 0, now, 20);
}

/// A migration libvirt cannot carry out (the destination's libvirt daemon is gone) ends
/// failed, says why, and leaves the guest and the network where they were.
fn failed_migrations_roll_back(lab: &mut Lab, mover: &str, h1: &str, h2: &str) {
    // The daemon only: h1's guests run on without it.
    let mut libvirtd = lab.libvirtds[0].take().expect("h1's libvirtd");
    libvirtd.kill_daemon();
    let done = {
        let before: Vec<Migration> = lab.violinctl_as(&["migrations"]).unwrap();
        let err = lab
            .violinctl(&["migrate", mover, "--to", h1])
            .expect_err("a migration to a host whose libvirt is down fails");
        assert!(format!("{err:#}").contains("rolled back"), "{err:#}");
        let after: Vec<Migration> = lab.violinctl_as(&["migrations"]).unwrap();
        after.into_iter().skip(before.len()).collect::<Vec<_>>()
    };
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].phase, MigrationPhase::Failed);
    assert!(
        done[0]
            .error
            .as_deref()
            .unwrap_or("")
            .contains(&format!("stays on {h2}")),
        "{done:?}"
    );
    on_host(lab, mover, h2);
    let now = report(lab, 0).tcp_echoed;
    wait_echoes(lab, 0, now, 20);
    // h1's daemon back, with its guests (they ran on without it).
    let restarted = violin_testbed::libvirt::Libvirtd::start(
        &libvirtd.ns,
        libvirtd.address,
        &libvirtd.dir.clone(),
        0,
        violin_testbed::guest::image()
            .unwrap()
            .qemu
            .parent()
            .unwrap(),
        false,
    )
    .unwrap();
    lab.libvirtds[0] = Some(restarted);
}

/// Environment 0 as a whole swaps hosts (its guests go to the listed hosts in turn, by
/// name), and its pair still talks after.
fn whole_environment(lab: &Lab, h1: &str, h2: &str) {
    let a = vm_name(prober(lab, 0));
    let b = vm_name(target(lab, 0));
    let done = migrate(lab, &["--env", "env0", "--to", h2, h1]);
    assert_eq!(done.len(), 2, "{done:?}");
    done.iter().for_each(completed);
    on_host(lab, &a, h2);
    on_host(lab, &b, h1);
    let now = report(lab, 0).tcp_echoed;
    let after = wait_echoes(lab, 0, now, 20);
    eprintln!(
        "env0 after moving whole: longest TCP echo gap {} ms, {} of {} pings unanswered",
        after.tcp_max_gap_ms,
        after.ping_sent - after.ping_received,
        after.ping_sent
    );
}

/// The datapath half of a move, without libvirt (namespace VMs, three hosts): a host that
/// has not heard of a VM's new location yet still reaches it, because the VM's old host
/// (which still serves the environment: another VM of it runs there) forwards its frames
/// on. h1's daemon is stopped with its datapath kept (so its maps still place VM c on h3)
/// while c's port moves from h3 to h2 and the controller says so.
#[test]
fn frames_reaching_a_moved_vms_old_host_are_forwarded_on() {
    let mut lab = lab("fwd", |s| {
        s.hosts = 3;
        s.controller = true;
    });
    lab.apply_environments()
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.daemon_logs()));
    let (a, c) = (lab.vm(0, 0, 0).clone(), lab.vm(2, 0, 0).clone());
    let h2 = lab.hosts[1].clone();
    wait_ping(&a.ns, &c.ip.to_string(), Duration::from_secs(10)).unwrap();

    lab.stop_daemon(0, true).unwrap();
    // c gets a new NIC on h2, as a migrated guest does (named mv1: h2 has a vm1).
    let moved = "mv1";
    let mtu = lab.spec.vm_mtu().to_string();
    ip(&["-n", &c.ns, "link", "del", "eth0"]).unwrap();
    ip(&[
        "link", "add", "name", moved, "netns", &h2.ns, "mtu", &mtu, "type", "veth", "peer", "name",
        "eth0", "netns", &c.ns,
    ])
    .unwrap();
    let mac = violin_testbed::lab::mac_string(&c.mac);
    let addr = format!("{}/16", c.ip);
    for args in [
        vec!["link", "set", "eth0", "address", mac.as_str()],
        vec!["addr", "add", addr.as_str(), "dev", "eth0"],
        vec!["link", "set", "eth0", "up"],
    ] {
        ns_run(&c.ns, "ip", &args).unwrap();
    }
    ns_run(&c.ns, "ethtool", &["-K", "eth0", "tx", "off", "gro", "on"]).unwrap();
    // c's new NIC knows a already: with h1's daemon down, h1 answers no broadcast (ARP)
    // while its datapath still forwards unicast, which is what this is about.
    let a_mac = violin_testbed::lab::mac_string(&a.mac);
    let a_ip = a.ip.to_string();
    ns_run(
        &c.ns,
        "ip",
        &["neigh", "replace", &a_ip, "lladdr", &a_mac, "dev", "eth0"],
    )
    .unwrap();
    ns_run(&h2.ns, "ip", &["link", "set", moved, "up"]).unwrap();
    let mut c_now = c.clone();
    c_now.host = 1;
    c_now.port = moved.into();
    let vms: Vec<Vm> = lab
        .vms
        .iter()
        .map(|v| {
            if v.ns == c.ns {
                c_now.clone()
            } else {
                v.clone()
            }
        })
        .collect();
    let refs: Vec<&Vm> = vms.iter().collect();
    let spec = lab.spec_of(&refs, "env0", violin_testbed::lab::BASE_VNI, "");
    let file = violin_testbed::e2e::scratch(&lab, "moved.toml");
    std::fs::write(&file, spec).unwrap();
    lab.violinctl(&["apply", file.to_str().unwrap()]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let hosts: Vec<violin_api::rest::HostInfo> = lab.violinctl_as(&["hosts"]).unwrap();
        if hosts
            .iter()
            .filter(|h| h.name != lab.hosts[0].host_id())
            .all(|h| h.in_sync)
        {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "h2 and h3 did not sync: {hosts:?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let relayed = |lab: &Lab| {
        let stats = lab.stats(2).unwrap();
        stats["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["address"] == h2.underlay_ip.to_string())
            .map_or(0, |p| p["stats"]["tx"]["packets"].as_u64().unwrap())
    };
    let before = relayed(&lab);
    // a (h1) still sends to h3, which sends c's frames on to h2.
    let r = ping(&a.ns, &c.ip.to_string(), 20, &["-i", "0.05"]).unwrap();
    assert_eq!(
        r.lost(),
        0,
        "frames for the moved VM were lost at its old host"
    );
    assert!(
        relayed(&lab) - before >= 20,
        "h3 did not forward c's frames on to h2"
    );
    lab.start_daemon(0).unwrap();
    lab.down().unwrap();
}
