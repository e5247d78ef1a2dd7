//! Two Violin hosts, two VMs each, one environment: the VMs see one Ethernet LAN.
use std::time::Duration;

use violin_testbed::{
    e2e::{counter, lab, port},
    sys::ns_run,
    traffic::{ping, tcp_transfer, wait_ping},
};

#[test]
fn ping_and_tcp_cross_hosts_both_ways_without_static_arp() {
    cross_hosts("ov", |_| {});
}

/// XDP port mode: the VMs checksum what they send, broadcasts go through the AF_XDP slow
/// path, and the same traffic must work.
#[test]
fn xdp_port_mode_carries_the_same_traffic_with_vm_offloads_off() {
    cross_hosts("xd", |s| {
        s.violin_xdp_hosts = s.hosts;
        s.hosts = 0;
    });
}

/// An IPv6-only underlay: the tunnels are VXLAN over IPv6 (70 bytes of headers), in TC
/// port mode, and in XDP port mode with its AF_XDP slow path.
#[test]
fn an_ipv6_underlay_carries_the_same_traffic() {
    cross_hosts("o6", |s| s.ipv6 = true);
}

#[test]
fn an_ipv6_underlay_carries_the_same_traffic_in_xdp_mode() {
    cross_hosts("x6", |s| {
        s.ipv6 = true;
        s.violin_xdp_hosts = s.hosts;
        s.hosts = 0;
    });
}

fn cross_hosts(tag: &str, adjust: impl FnOnce(&mut violin_testbed::lab::LabSpec)) {
    let lab = lab(tag, adjust);
    let a = lab.vm(0, 0, 0).clone();
    let b = lab.vm(1, 0, 0).clone();
    let a2 = lab.vm(0, 0, 1).clone();

    wait_ping(&a.ns, &b.ip.to_string(), Duration::from_secs(10)).unwrap();
    for (from, to) in [(&a, &b), (&b, &a), (&a, &a2)] {
        let r = ping(&from.ns, &to.ip.to_string(), 10, &["-i", "0.05"]).unwrap();
        assert_eq!(
            r.lost(),
            0,
            "{} -> {}: {r:?}\n{}",
            from.ns,
            to.ns,
            lab.daemon_logs()
        );
    }
    // IPv6 neighbour discovery is multicast: it crosses hosts through the slow path.
    let r = ping(&a.ns, &b.ip6, 5, &["-i", "0.1"]).unwrap();
    assert_eq!(r.lost(), 0, "ping -6 {r:?}");

    for (from, to, port_no) in [(&a, &b, 5101u16), (&b, &a, 5102)] {
        let t = tcp_transfer(&from.ns, &to.ns, to.ip, port_no, 100_000_000).unwrap();
        assert_eq!(t.bytes, 100_000_000, "{} -> {}", from.ns, to.ns);
        assert_eq!(
            t.sent_digest, t.received_digest,
            "corrupted stream {} -> {}",
            from.ns, to.ns
        );
    }

    // Addresses were learned, not configured.
    for vm in [&a, &b] {
        let neigh = ns_run(&vm.ns, "ip", &["neigh", "show", "dev", "eth0"]).unwrap();
        assert!(!neigh.contains("PERMANENT"), "{}: {neigh}", vm.ns);
    }
    let s = lab.stats(0).unwrap();
    if lab.spec.violin_xdp_hosts > 0 {
        // XDP sees every 1450-byte segment on its own, both ways.
        assert!(counter(port(&s, "vm1"), "/stats/rx/packets") > 70_000);
        assert!(counter(&s, "/peers/0/stats/tx/packets") > 70_000);
        assert!(counter(&s, "/peers/0/stats/rx/packets") > 70_000);
    } else {
        // TC mode carries a VM's TSO super-frames whole, and receives a stream's segments
        // merged by GRO through the flow-based VXLAN device: fewer, larger packets, and
        // both of TC's receive paths in use (single frames natively, aggregates through
        // the device).
        assert!(counter(port(&s, "vm1"), "/stats/rx/packets") > 1_000);
        assert!(counter(&s, "/peers/0/stats/tx/packets") > 1_000);
        assert!(counter(&s, "/peers/0/stats/rx/packets") > 1_000);
        assert!(
            counter(&s, "/actions/tunnel~1redirect") > 100,
            "{}",
            s["actions"]
        );
        assert!(
            counter(&s, "/actions/underlay_tc~1redirect") > 10,
            "{}",
            s["actions"]
        );
    }
    let drops: u64 = s["drops"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(drops, 0, "unexpected drops: {}", s["drops"]);
    let h2 = lab.hosts[1].underlay_ip;
    assert_eq!(s["peers"][0]["address"], h2.to_string(), "{}", s["peers"]);
    let fdb = s["fdb"].as_array().unwrap();
    let location = format!("peer {h2}");
    assert!(
        fdb.iter()
            .any(|e| e["mac"] == "02:00:00:00:02:01" && e["location"] == location),
        "{fdb:?}"
    );
    if lab.spec.ipv6 {
        // Nothing but IPv6 on the underlay: the tunnels could not have been IPv4.
        let v4 = ns_run(
            &lab.hosts[0].ns,
            "ip",
            &["-4", "addr", "show", "dev", "ul0"],
        )
        .unwrap();
        assert!(v4.trim().is_empty(), "IPv4 on an IPv6 underlay: {v4}");
        // The VMs' MTU leaves room for 70 bytes of headers.
        let mtu = ns_run(&a.ns, "cat", &["/sys/class/net/eth0/mtu"]).unwrap();
        assert_eq!(mtu.trim(), (lab.spec.mtu - 70).to_string());
    }
    lab.down().unwrap();
}

#[test]
fn jumbo_frames_carry_8950_byte_vm_frames() {
    let lab = lab("jb", |s| {
        s.mtu = 9000;
        s.vms_per_host = 1;
    });
    let a = lab.vm(0, 0, 0).clone();
    let b = lab.vm(1, 0, 0).clone();
    wait_ping(&a.ns, &b.ip.to_string(), Duration::from_secs(10)).unwrap();
    // 8922 + 8 (ICMP) + 20 (IP) = 8950, the VM MTU; DF set so nothing may fragment.
    let r = ping(
        &a.ns,
        &b.ip.to_string(),
        5,
        &["-s", "8922", "-M", "do", "-i", "0.1"],
    )
    .unwrap();
    assert_eq!(r.lost(), 0, "jumbo ping {r:?}\n{}", lab.daemon_logs());
    let t = tcp_transfer(&a.ns, &b.ns, b.ip, 5103, 50_000_000).unwrap();
    assert_eq!(t.sent_digest, t.received_digest);
    let s = lab.stats(0).unwrap();
    assert_eq!(counter(&s, "/drops/too_big"), 0);
    lab.down().unwrap();
}
