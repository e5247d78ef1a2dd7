//! Policies enforced in the datapath, where VMs cannot reach them: anti-spoofing,
//! selected connectivity and per-pair traffic bounds. Each must work and leave other
//! traffic alone.
use std::time::Duration;

use violin_testbed::{
    e2e::{counter, lab},
    lab::Lab,
    sys::{cpu_seconds, link_packets, ns_run},
    traffic::{ping, wait_ping},
};

fn mac(m: [u8; 6]) -> String {
    violin_testbed::lab::mac_string(&m)
}

fn drops(lab: &Lab, i: usize, reason: &str) -> u64 {
    counter(&lab.stats(i).unwrap(), &format!("/drops/{reason}"))
}

#[test]
fn a_vm_cannot_send_with_addresses_it_was_not_given() {
    let lab = lab("as", |_| {});
    let (a1, a2) = (lab.vm(0, 0, 0).clone(), lab.vm(0, 0, 1).clone());
    let b = lab.vm(1, 0, 0).clone();
    let policy = format!(
        "[[environment.vm]]\nport = {:?}\nmac = {:?}\nip = \"{}\"\n",
        a1.port,
        mac(a1.mac),
        a1.ip
    );
    lab.reload(0, &lab.config_with(0, &policy)).unwrap();
    wait_ping(&a1.ns, &b.ip.to_string(), Duration::from_secs(10)).unwrap();
    wait_ping(&a2.ns, &b.ip.to_string(), Duration::from_secs(10)).unwrap();

    // Another source IP.
    ns_run(
        &a1.ns,
        "ip",
        &["addr", "add", "10.200.1.99/16", "dev", "eth0"],
    )
    .unwrap();
    let before = drops(&lab, 0, "spoofed_ip");
    let r = ping(
        &a1.ns,
        &b.ip.to_string(),
        3,
        &["-I", "10.200.1.99", "-i", "0.1"],
    )
    .unwrap();
    assert_eq!(r.received, 0, "a spoofed source IP got through");
    assert!(drops(&lab, 0, "spoofed_ip") >= before + 3);
    ns_run(
        &a1.ns,
        "ip",
        &["addr", "del", "10.200.1.99/16", "dev", "eth0"],
    )
    .unwrap();

    // Another source MAC, while the neighbour VM's traffic is unaffected.
    ns_run(
        &a1.ns,
        "ip",
        &["link", "set", "eth0", "address", "02:00:00:00:01:99"],
    )
    .unwrap();
    let before = drops(&lab, 0, "spoofed_mac");
    let r = ping(&a1.ns, &b.ip.to_string(), 3, &["-i", "0.1"]).unwrap();
    assert_eq!(r.received, 0, "a spoofed source MAC got through");
    // The MAC change flushed a1's neighbours: what it sends first are ARP requests.
    assert!(drops(&lab, 0, "spoofed_mac") > before);
    let r = ping(&a2.ns, &b.ip.to_string(), 5, &["-i", "0.05"]).unwrap();
    assert_eq!(r.lost(), 0, "the neighbour VM was affected");
    ns_run(
        &a1.ns,
        "ip",
        &["link", "set", "eth0", "address", &mac(a1.mac)],
    )
    .unwrap();
    wait_ping(&a1.ns, &b.ip.to_string(), Duration::from_secs(10)).unwrap();
    lab.down().unwrap();
}

#[test]
fn selected_connectivity_allows_only_listed_pairs() {
    let lab = lab("sc", |_| {});
    let (a1, a2) = (lab.vm(0, 0, 0).clone(), lab.vm(0, 0, 1).clone());
    let (b1, b2) = (lab.vm(1, 0, 0).clone(), lab.vm(1, 0, 1).clone());
    let policy = format!("allowed_pairs = [[{:?}, {:?}]]\n", mac(a1.mac), mac(b1.mac));
    lab.reload(0, &lab.config_with(0, &policy)).unwrap();
    lab.reload(1, &lab.config_with(1, &policy)).unwrap();

    wait_ping(&a1.ns, &b1.ip.to_string(), Duration::from_secs(10)).unwrap();
    let r = ping(&b1.ns, &a1.ip.to_string(), 5, &["-i", "0.05"]).unwrap();
    assert_eq!(r.lost(), 0, "the allowed pair was cut");
    let before = drops(&lab, 0, "not_allowed") + drops(&lab, 1, "not_allowed");
    for (from, to) in [(&a1, &b2), (&a2, &b1), (&a2, &b2)] {
        let r = ping(&from.ns, &to.ip.to_string(), 2, &["-i", "0.2"]).unwrap();
        assert_eq!(r.received, 0, "{} reached {}", from.ns, to.ns);
    }
    let after = drops(&lab, 0, "not_allowed") + drops(&lab, 1, "not_allowed");
    assert!(after > before, "no frame was counted as not allowed");
    lab.down().unwrap();
}

/// Storm control (TC port mode, the default): a VM flooding broadcasts reaches its peers
/// at the environment's rate, no faster, while other VMs still resolve their neighbours.
#[test]
fn storm_control_bounds_a_flooding_vm() {
    storm("st", false);
}

/// The same in XDP port mode, where floods go through violind's slow path: it must not
/// see the storm either.
#[test]
fn storm_control_bounds_a_flooding_vm_in_xdp_mode() {
    storm("sx", true);
}

/// Packets `ns`'s eth0 has received.
fn rx_packets(ns: &str) -> u64 {
    link_packets(ns, "eth0").unwrap().rx
}

fn storm(tag: &str, xdp: bool) {
    const PPS: u64 = 200;
    // The burst of a 200 frames/s bound (a tenth of the rate, at least 16).
    const BURST: u64 = 20;
    let lab = lab(tag, |s| {
        if xdp {
            s.violin_xdp_hosts = s.hosts;
            s.hosts = 0;
        }
    });
    let (a, a2) = (lab.vm(0, 0, 0).clone(), lab.vm(0, 0, 1).clone());
    let (b, b2) = (lab.vm(1, 0, 0).clone(), lab.vm(1, 0, 1).clone());
    wait_ping(&a.ns, &b.ip.to_string(), Duration::from_secs(10)).unwrap();
    for i in 0..2 {
        lab.reload(i, &lab.config_with(i, &format!("storm_pps = {PPS}\n")))
            .unwrap();
    }
    let storm0 = drops(&lab, 0, "storm");
    let before: Vec<u64> = [&a2, &b, &b2].iter().map(|v| rx_packets(&v.ns)).collect();
    let pid = lab.daemon_pid(0).expect("violind runs on host 1");
    let cpu0 = cpu_seconds(pid).unwrap();

    // A broadcast of the local experimental ethertype, from the VM's own MAC.
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&a.mac);
    frame.extend_from_slice(&[0x88, 0xb5]);
    frame.resize(60, 0x5a);
    let ns = a.ns.clone();
    // 250 times the bound, paced: unpaced, the sender overflows the kernel's per-CPU
    // receive backlog that every veth of the CPU shares (a lab artefact: a tap or a NIC
    // queue is the VM's own), and the other VMs' frames would be lost before any program.
    let flood = std::thread::spawn(move || {
        violin_testbed::traffic::flood_raw(&ns, "eth0", frame, 50_000, Duration::from_secs(3))
            .unwrap()
    });
    // Meanwhile another VM of the flooding host resolves a peer anew (ARP, then IPv6
    // neighbour discovery): its port has its own bucket.
    std::thread::sleep(Duration::from_millis(500));
    ns_run(&a2.ns, "ip", &["neigh", "flush", "all"]).unwrap();
    ns_run(&a2.ns, "ip", &["-6", "neigh", "flush", "all"]).unwrap();
    let v4 = ping(&a2.ns, &b2.ip.to_string(), 3, &["-i", "0.2"]).unwrap();
    let v6 = ping(&a2.ns, &b2.ip6, 3, &["-i", "0.2"]).unwrap();
    let (sent, took) = flood.join().unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let cpu = cpu_seconds(pid).unwrap() - cpu0;
    assert_eq!(v4.lost(), 0, "ARP during the storm: {v4:?}");
    assert_eq!(v6.lost(), 0, "neighbour discovery during the storm: {v6:?}");

    let got: Vec<u64> = [&a2, &b, &b2]
        .iter()
        .zip(&before)
        .map(|(v, n)| rx_packets(&v.ns) - n)
        .collect();
    let admitted = PPS as f64 * took.as_secs_f64() + BURST as f64;
    // The pings and neighbour traffic of this test add a few dozen frames.
    let bound = (admitted * 1.1) as u64 + 40;
    assert!(
        sent as f64 > 10.0 * admitted,
        "the flood was too slow to test anything: {sent} frames in {took:?}"
    );
    for (v, n) in [&a2, &b, &b2].iter().zip(&got) {
        assert!(
            *n <= bound,
            "{} received {n} frames of a {sent}-frame storm; storm control admits {admitted:.0}",
            v.ns
        );
        assert!(
            *n as f64 >= admitted * 0.5,
            "{} received only {n} frames: storm control admitted fewer than its rate",
            v.ns
        );
    }
    let dropped = drops(&lab, 0, "storm") - storm0;
    assert!(
        dropped as f64 >= sent as f64 - admitted * 1.1 - 40.0,
        "{dropped} of {sent} frames counted as storm drops"
    );
    // Without storm control, violind's slow path replicated every flooded frame (XDP
    // mode); with it, violind hardly works during the storm, in either mode.
    assert!(
        cpu < 0.3 * took.as_secs_f64(),
        "violind used {cpu:.2} s of CPU during a {took:?} storm"
    );
    lab.down().unwrap();
}
