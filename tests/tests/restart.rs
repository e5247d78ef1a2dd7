//! `violind` can die and come back: the pinned datapath keeps forwarding meanwhile, the new
//! daemon takes its state over, and nothing is leaked.
use std::{thread, time::Duration};

use violin_testbed::{
    e2e::{attached_prog, counter, lab, port},
    sys::{ns_run, output},
    traffic::{ping, wait_ping},
};

fn prog_exists(id: u32) -> bool {
    output("bpftool", &["prog", "show", "id", &id.to_string()])
        .unwrap()
        .status
        .success()
}

#[test]
fn killed_daemon_keeps_forwarding_and_restart_resumes_state() {
    let mut lab = lab("rs", |s| s.vms_per_host = 1);
    let a = lab.vm(0, 0, 0).clone();
    let b = lab.vm(1, 0, 0).clone();
    let h1 = lab.hosts[0].clone();
    wait_ping(&a.ns, &b.ip.to_string(), Duration::from_secs(10)).unwrap();
    let before = lab.stats(0).unwrap();
    let prog_before = attached_prog(&lab, 0, "ul0").expect("a program on ul0");
    let rx_before = counter(port(&before, &a.port), "/stats/rx/packets");

    // A ping runs across the kill and the restart.
    let pinger = {
        let (ns, ip) = (a.ns.clone(), b.ip.to_string());
        thread::spawn(move || ping(&ns, &ip, 100, &["-i", "0.05"]))
    };
    thread::sleep(Duration::from_millis(500));
    lab.kill_daemon(0).unwrap();
    // While no daemon runs on h1, its pinned programs and maps keep forwarding.
    let pins = h1.pins();
    assert!(pins.join("links/tc:ul0").exists() && pins.join("maps/FDB").exists());
    assert_eq!(attached_prog(&lab, 0, "ul0"), Some(prog_before));
    let during = ping(&b.ns, &a.ip.to_string(), 10, &["-i", "0.05"]).unwrap();
    assert_eq!(during.lost(), 0, "forwarding stopped with the daemon");
    lab.start_daemon(0).unwrap();
    let r = pinger.join().unwrap().unwrap();
    assert_eq!(
        r.lost(),
        0,
        "ping lost packets across kill and restart: {r:?}"
    );

    // The new daemon resumed the pinned state: learned addresses and counters survived,
    // and its program replaced the old one in the same links (the old one is gone).
    let after = lab.stats(0).unwrap();
    let fdb = after["fdb"].as_array().unwrap();
    assert!(
        fdb.iter().any(|e| e["location"] == "peer 10.250.0.2"),
        "{fdb:?}"
    );
    assert!(counter(port(&after, &a.port), "/stats/rx/packets") > rx_before + 100);
    let prog_after = attached_prog(&lab, 0, "ul0").expect("a program on ul0 after the restart");
    assert_ne!(
        prog_before, prog_after,
        "the restarted daemon did not swap its program in"
    );
    assert!(
        !prog_exists(prog_before),
        "old program {prog_before} leaked"
    );
    // The slow path is back: a new neighbour (flushed ARP) resolves across hosts.
    ns_run(&a.ns, "ip", &["neigh", "flush", "dev", "eth0"]).unwrap();
    wait_ping(&a.ns, &b.ip.to_string(), Duration::from_secs(5)).unwrap();

    // A clean stop detaches and unpins everything.
    lab.stop_daemon(0, false).unwrap();
    assert!(!pins.exists(), "pins left behind after stop");
    let out = ns_run(&h1.ns, "ip", &["-d", "link", "show"]).unwrap();
    assert!(
        !out.contains("prog/xdp") && !out.contains("violin-vxlan"),
        "XDP or the VXLAN device left after stop: {out}"
    );
    assert!(
        !prog_exists(prog_after),
        "program {prog_after} leaked after stop"
    );
    lab.down().unwrap();
}

#[test]
fn keep_forwarding_stop_leaves_the_datapath_running() {
    let mut lab = lab("kf", |s| s.vms_per_host = 1);
    let a = lab.vm(0, 0, 0).clone();
    let b = lab.vm(1, 0, 0).clone();
    wait_ping(&a.ns, &b.ip.to_string(), Duration::from_secs(10)).unwrap();
    lab.stop_daemon(0, true).unwrap();
    lab.stop_daemon(1, true).unwrap();
    let r = ping(&a.ns, &b.ip.to_string(), 10, &["-i", "0.05"]).unwrap();
    assert_eq!(r.lost(), 0, "no forwarding after stop --keep-forwarding");
    lab.start_daemon(0).unwrap();
    lab.start_daemon(1).unwrap();
    let r = ping(&b.ns, &a.ip.to_string(), 5, &["-i", "0.05"]).unwrap();
    assert_eq!(r.lost(), 0);
    lab.down().unwrap();
}
