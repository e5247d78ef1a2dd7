//! Policies enforced in the datapath, where VMs cannot reach them: anti-spoofing,
//! selected connectivity and per-pair traffic bounds. Each must work and leave other
//! traffic alone.
use std::{net::SocketAddr, time::Duration};

use violin_testbed::{
    e2e::{counter, lab},
    lab::Lab,
    sys::ns_run,
    traffic::{ping, udp_blast, wait_ping},
};

fn mac(m: [u8; 6]) -> String {
    violin_testbed::lab::mac_string(&m)
}

/// Host `i`'s generated configuration with `extra` appended to its environment.
fn with_policy(lab: &Lab, i: usize, extra: &str) -> String {
    let base = lab.config_for(i);
    let at = base.find("ports = [").expect("environment ports");
    let end = at + base[at..].find('\n').unwrap() + 1;
    format!("{}{}{}", &base[..end], extra, &base[end..])
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
    lab.reload(0, &with_policy(&lab, 0, &policy)).unwrap();
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
    lab.reload(0, &with_policy(&lab, 0, &policy)).unwrap();
    lab.reload(1, &with_policy(&lab, 1, &policy)).unwrap();

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

#[test]
fn a_vm_pair_is_held_to_its_traffic_bound() {
    let lab = lab("rl", |_| {});
    let (a1, a2) = (lab.vm(0, 0, 0).clone(), lab.vm(0, 0, 1).clone());
    let (b1, b2) = (lab.vm(1, 0, 0).clone(), lab.vm(1, 0, 1).clone());
    let policy = format!(
        "[[environment.limit]]\npair = [{:?}, {:?}]\nrate_mbit = 1\nburst_kib = 16\n",
        mac(a1.mac),
        mac(b1.mac)
    );
    lab.reload(0, &with_policy(&lab, 0, &policy)).unwrap();
    wait_ping(&a1.ns, &b1.ip.to_string(), Duration::from_secs(10)).unwrap();
    wait_ping(&a2.ns, &b2.ip.to_string(), Duration::from_secs(10)).unwrap();

    // 2 MB at once: far over a 16 KiB bucket refilled at 125 KB/s, however slow the
    // machine is; most of it must be dropped as over the bound.
    let before = drops(&lab, 0, "rate_limited");
    let sent = udp_blast(&a1.ns, SocketAddr::from((b1.ip, 9)), 2000, 1000).unwrap();
    assert!(sent >= 1900, "only {sent} datagrams left the VM");
    let limited = drops(&lab, 0, "rate_limited") - before;
    assert!(
        limited >= 1000,
        "only {limited} of {sent} frames were held back"
    );

    // Another pair of the same hosts is not bounded.
    let before = drops(&lab, 0, "rate_limited");
    udp_blast(&a2.ns, SocketAddr::from((b2.ip, 9)), 2000, 1000).unwrap();
    assert_eq!(
        drops(&lab, 0, "rate_limited"),
        before,
        "an unbounded pair was limited"
    );
    let r = ping(&a2.ns, &b2.ip.to_string(), 5, &["-i", "0.05"]).unwrap();
    assert_eq!(r.lost(), 0);
    lab.down().unwrap();
}
