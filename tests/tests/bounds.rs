//! Traffic bounds as an operator sets them: per VM pair and per VM, shaped (frames over a
//! bound wait their turn) so that UDP is held to the bound and TCP lives with it, in both
//! port modes; changed through violinctl under running flows; and without slowing the
//! traffic beside them. The exact ratios are the bench's (`cargo xtask bench bounds`);
//! these tests hold the lines below which a bound is broken.
use std::{thread, time::Duration};

use violin_testbed::{
    control::vm_name,
    e2e::{counter, lab},
    iperf::{self, Load, Run},
    lab::{pair_limit, Vm},
    traffic::wait_ping,
};

fn tcp(from: &Vm, to: &Vm, secs: f64, port: u16) -> Run {
    iperf::run(
        &from.ns,
        &to.ns,
        to.ip,
        Load::Tcp { streams: 1 },
        secs,
        port,
    )
    .unwrap_or_else(|e| panic!("TCP {} -> {}: {e:#}", from.ns, to.ns))
}

fn udp(from: &Vm, to: &Vm, mbit: f64, secs: f64, port: u16) -> Run {
    let load = Load::Udp { mbit, len: 1400 };
    iperf::run(&from.ns, &to.ns, to.ip, load, secs, port)
        .unwrap_or_else(|e| panic!("UDP {} -> {}: {e:#}", from.ns, to.ns))
}

const BOUND_MBIT: f64 = 50.0;

/// TC port mode (the default).
#[test]
fn a_pair_bound_holds_udp_and_lets_tcp_through() {
    pair_bound("bt", false);
}

/// XDP port mode: bounded frames are passed on to the port's TC program to be shaped.
#[test]
fn a_pair_bound_holds_udp_and_lets_tcp_through_in_xdp_mode() {
    pair_bound("bx", true);
}

fn pair_bound(tag: &str, xdp: bool) {
    let lab = lab(tag, |s| {
        if xdp {
            s.violin_xdp_hosts = s.hosts;
            s.hosts = 0;
        }
    });
    let (a1, a2) = (lab.vm(0, 0, 0).clone(), lab.vm(0, 0, 1).clone());
    let (b1, b2) = (lab.vm(1, 0, 0).clone(), lab.vm(1, 0, 1).clone());
    // Across hosts, and between the two VMs of one host.
    let policy = pair_limit(&a1, &b1, BOUND_MBIT) + &pair_limit(&a1, &a2, BOUND_MBIT);
    for i in 0..2 {
        lab.reload(i, &lab.config_with(i, &policy)).unwrap();
    }
    wait_ping(&a1.ns, &b1.ip.to_string(), Duration::from_secs(10)).unwrap();
    wait_ping(&a2.ns, &b2.ip.to_string(), Duration::from_secs(10)).unwrap();
    // violind stats (and /metrics) show the bound in force, each direction.
    let stats = lab.stats(0).unwrap();
    let bounds = stats["bounds"].as_array().unwrap();
    assert_eq!(bounds.len(), 4, "{bounds:?}");
    assert!(
        bounds
            .iter()
            .all(|b| b["kind"] == "pair" && b["bytes_per_second"] == 6_250_000),
        "{bounds:?}"
    );

    // UDP offered at twice the bound arrives at the bound.
    let u = udp(&a1, &b1, 2.0 * BOUND_MBIT, 5.0, 5201);
    let ratio = u.mbit_per_s / BOUND_MBIT;
    assert!(
        (0.9..=1.1).contains(&ratio),
        "UDP at twice the bound: {:.1} Mbit/s received ({ratio:.2}x)",
        u.mbit_per_s
    );

    // The same on one host, shaped at the receiving VM's port.
    let local = udp(&a1, &a2, 2.0 * BOUND_MBIT, 4.0, 5204);
    let ratio = local.mbit_per_s / BOUND_MBIT;
    assert!(
        (0.9..=1.1).contains(&ratio),
        "UDP at twice the bound, one host: {:.1} Mbit/s received ({ratio:.2}x)",
        local.mbit_per_s
    );

    // A TCP stream gets the bound (half of it at least), while an unbounded pair of the
    // same hosts runs beside it at many times the bound.
    let (a1c, b1c) = (a1.clone(), b1.clone());
    let bounded = thread::spawn(move || tcp(&a1c, &b1c, 5.0, 5202));
    let free = tcp(&a2, &b2, 4.0, 5203);
    let t = bounded.join().unwrap();
    assert!(
        t.mbit_per_s >= 0.5 * BOUND_MBIT,
        "TCP under a {BOUND_MBIT} Mbit/s bound got {:.1} Mbit/s ({} of {} segments retransmitted)",
        t.mbit_per_s,
        t.retransmitted,
        t.segments
    );
    assert!(
        t.mbit_per_s <= 1.1 * BOUND_MBIT,
        "TCP got {:.1} Mbit/s past a {BOUND_MBIT} Mbit/s bound",
        t.mbit_per_s
    );
    assert!(
        free.mbit_per_s >= 10.0 * BOUND_MBIT,
        "the unbounded pair beside it got only {:.1} Mbit/s",
        free.mbit_per_s
    );
    eprintln!(
        "bound {BOUND_MBIT} Mbit/s: UDP {:.1} (one host {:.1}), TCP {:.1} ({:.4} retransmitted), \
         unbounded TCP {:.0}",
        u.mbit_per_s,
        local.mbit_per_s,
        t.mbit_per_s,
        t.retransmit_ratio(),
        free.mbit_per_s
    );
    lab.down().unwrap();
}

fn mean(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// The operator's way: bounds in the environment spec, applied and changed with
/// violinctl. A VM's aggregate bound holds over all its pairs, a tighter pair bound wins
/// within it, and a bound raised under a running TCP stream takes effect on that stream,
/// which carries on (iperf3 fails on a reset connection).
#[test]
fn bounds_set_and_changed_with_violinctl() {
    let lab = lab("bc", |s| {
        s.vms_per_host = 2;
        s.controller = true;
    });
    let a = lab.vm(0, 0, 0).clone();
    let (b1, b2) = (lab.vm(1, 0, 0).clone(), lab.vm(1, 0, 1).clone());
    let base = lab.env_spec(0, "blue", 2100, "");
    let vm_bound = |mbit: u32| format!("[[limit]]\nvm = {:?}\nrate_mbit = {mbit}\n", vm_name(&a));
    let pair_bound = |mbit: u32| {
        format!(
            "[[limit]]\npair = [{:?}, {:?}]\nrate_mbit = {mbit}\n",
            vm_name(&a),
            vm_name(&b1)
        )
    };

    // A's aggregate bound, over two pairs at once.
    let out = lab
        .apply_spec("blue", &format!("{base}{}", vm_bound(40)))
        .unwrap();
    assert!(out.contains("+ limit vm"), "{out}");
    let stats = lab.stats(0).unwrap();
    let vm_row = stats["bounds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["kind"] == "vm")
        .cloned();
    assert_eq!(
        vm_row.as_ref().map(|b| (&b["src"], &b["bytes_per_second"])),
        Some((&serde_json::json!(a.port), &serde_json::json!(5_000_000))),
        "{}",
        stats["bounds"]
    );
    wait_ping(&a.ns, &b1.ip.to_string(), Duration::from_secs(10)).unwrap();
    wait_ping(&a.ns, &b2.ip.to_string(), Duration::from_secs(10)).unwrap();
    let (ac, b1c) = (a.clone(), b1.clone());
    let first = thread::spawn(move || tcp(&ac, &b1c, 5.0, 5211));
    let second = tcp(&a, &b2, 5.0, 5212);
    let first = first.join().unwrap();
    let total = first.mbit_per_s + second.mbit_per_s;
    assert!(
        (20.0..=44.0).contains(&total),
        "two streams under A's 40 Mbit/s bound: {:.1} + {:.1} Mbit/s",
        first.mbit_per_s,
        second.mbit_per_s
    );

    // A tighter pair bound within it wins for that pair.
    let out = lab
        .apply_spec("blue", &format!("{base}{}{}", vm_bound(40), pair_bound(10)))
        .unwrap();
    assert!(out.contains("+ limit"), "{out}");
    let t = tcp(&a, &b1, 4.0, 5213);
    assert!(
        (5.0..=11.0).contains(&t.mbit_per_s),
        "A -> B1 under a 10 Mbit/s pair bound got {:.1} Mbit/s",
        t.mbit_per_s
    );

    // Raised under a running stream: the stream speeds up and lives on.
    let (ac, b1c) = (a.clone(), b1.clone());
    let stream = thread::spawn(move || tcp(&ac, &b1c, 12.0, 5214));
    thread::sleep(Duration::from_secs(5));
    let out = lab
        .apply_spec(
            "blue",
            &format!("{base}{}{}", vm_bound(400), pair_bound(100)),
        )
        .unwrap();
    assert!(out.contains("~ limit"), "{out}");
    let run = stream.join().unwrap();
    let iv = &run.intervals;
    assert!(iv.len() >= 11, "{iv:?}");
    let (before, after) = (mean(&iv[1..4]), mean(&iv[8..11]));
    assert!(
        before <= 12.0 && after >= 30.0,
        "the stream went {before:.1} -> {after:.1} Mbit/s when its bound went 10 -> 100"
    );
    let limited = counter(&lab.stats(0).unwrap(), "/drops/rate_limited");
    eprintln!(
        "VM bound 40: {total:.1} Mbit/s over two pairs; pair bound 10: {:.1}; raised 10 -> 100: \
         {before:.1} -> {after:.1} Mbit/s; rate_limited drops {limited}",
        t.mbit_per_s
    );
    lab.down().unwrap();
}
