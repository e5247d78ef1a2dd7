//! A tap device (what QEMU guests use) as a VM port: XDP in driver mode on the tap, the
//! slow path's AF_XDP socket on it, and redirects into it.
use std::{net::Ipv4Addr, time::Duration};

use violin_testbed::{
    e2e::{attached_prog, counter, lab, port},
    tap::{arp_reply_from, arp_request, icmp_echo, is_echo_reply, TapGuest},
    traffic::wait_ping,
};

#[test]
fn tap_port_reaches_a_vm_on_another_host() {
    let lab = lab("tp", |s| s.vms_per_host = 1);
    let h1 = lab.hosts[0].clone();
    let b = lab.vm(1, 0, 0).clone();
    wait_ping(
        &lab.vm(0, 0, 0).ns,
        &b.ip.to_string(),
        Duration::from_secs(10),
    )
    .unwrap();

    let mut guest = TapGuest::create(&h1.ns, "tap1", lab.spec.vm_mtu()).unwrap();
    let config = lab
        .config_for(0)
        .replace("ports = [\"vm1\"]", "ports = [\"vm1\", \"tap1\"]");
    lab.reload(0, &config).unwrap();
    assert!(
        attached_prog(&lab, 0, "tap1").is_some(),
        "no program on the tap"
    );

    let mac = [0x02, 0, 0, 0, 0x01, 0x77];
    let ip: Ipv4Addr = "10.200.0.77".parse().unwrap();
    // ARP: broadcast out (replicated in the kernel, or by the slow path in XDP mode),
    // unicast reply back through the datapath.
    guest.send(&arp_request(mac, ip, b.ip)).unwrap();
    let reply = guest
        .recv_matching(Duration::from_secs(5), |f| {
            arp_reply_from(f, ip, b.ip).is_some()
        })
        .unwrap();
    let b_mac = arp_reply_from(&reply, ip, b.ip).unwrap();
    assert_eq!(b_mac, b.mac);
    for seq in 1..=5u16 {
        guest
            .send(&icmp_echo((mac, ip), (b_mac, b.ip), seq, 1000))
            .unwrap();
        guest
            .recv_matching(Duration::from_secs(3), |f| is_echo_reply(f, b.ip, seq))
            .unwrap_or_else(|e| panic!("echo {seq}: {e:#}"));
    }
    let s = lab.stats(0).unwrap();
    let tap = port(&s, "tap1");
    assert!(counter(tap, "/stats/rx/packets") >= 6);
    assert!(counter(tap, "/stats/tx/packets") >= 6);
    assert!(counter(tap, "/stats/to_slow_path/packets") >= 1);
    lab.down().unwrap();
}
