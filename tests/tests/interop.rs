//! A Violin host and a host using Linux's own VXLAN device share an environment.
use std::time::Duration;

use violin_testbed::{
    e2e::{counter, lab},
    lab::{HostKind, BRIDGE_NF_TABLES},
    sys::ns_run,
    traffic::{ping, tcp_transfer, wait_ping},
};

#[test]
fn violin_interoperates_with_linux_vxlan() {
    // Its VMs keep their offloads, as in the bench and the hand lab: their TCP leaves
    // checksum pending and in TSO super-frames, and must arrive whole all the same. The
    // other cases keep the tests' default (VMs that checksum what they send).
    let lab = lab("ix", |s| {
        s.hosts = 2;
        s.linux_vxlan_hosts = 1;
        s.vms_per_host = 1;
        s.linux_vm_offloads = true;
    });
    assert_eq!(lab.hosts[2].kind, HostKind::LinuxVxlan);
    assert_bridges_skip_netfilter(&lab.hosts[2].ns);
    let features = ns_run(&lab.vm(2, 0, 0).ns, "ethtool", &["-k", "eth0"]).unwrap();
    for on in ["tx-checksumming: on", "tcp-segmentation-offload: on"] {
        assert!(features.contains(on), "{on} in\n{features}");
    }
    interop(lab, 0, 2);
}

/// The baseline bridges as a stock kernel does: where br_netfilter is loaded (Docker loads
/// it), its hooks are off in the Linux VXLAN host, or every bench figure of Linux VXLAN
/// would carry that module's cost.
fn assert_bridges_skip_netfilter(ns: &str) {
    for table in BRIDGE_NF_TABLES {
        let file = format!("/proc/sys/net/bridge/bridge-nf-call-{table}");
        // Without the module the file is absent and there are no hooks to skip.
        if !std::path::Path::new(&file).exists() {
            continue;
        }
        let v = ns_run(ns, "cat", &[&file]).unwrap();
        assert_eq!(v.trim(), "0", "{file} in {ns}");
    }
}

#[test]
fn xdp_port_mode_interoperates_with_linux_vxlan() {
    let lab = lab("it", |s| {
        s.hosts = 0;
        s.linux_vxlan_hosts = 1;
        s.violin_xdp_hosts = 2;
        s.vms_per_host = 1;
    });
    assert_eq!(lab.hosts[0].kind, HostKind::LinuxVxlan);
    assert_eq!(lab.hosts[1].kind, HostKind::ViolinXdp);
    interop(lab, 1, 0);
}

/// Over an IPv6 underlay: Linux's VXLAN device speaks IPv6 to Violin's datapath.
#[test]
fn violin_interoperates_with_linux_vxlan_over_ipv6() {
    let lab = lab("i6", |s| {
        s.hosts = 1;
        s.linux_vxlan_hosts = 1;
        s.vms_per_host = 1;
        s.ipv6 = true;
    });
    assert_eq!(lab.hosts[1].kind, HostKind::LinuxVxlan);
    interop(lab, 0, 1);
}

#[test]
fn xdp_port_mode_interoperates_with_linux_vxlan_over_ipv6() {
    let lab = lab("j6", |s| {
        s.hosts = 0;
        s.linux_vxlan_hosts = 1;
        s.violin_xdp_hosts = 1;
        s.vms_per_host = 1;
        s.ipv6 = true;
    });
    assert_eq!(lab.hosts[1].kind, HostKind::ViolinXdp);
    interop(lab, 1, 0);
}

/// Violin host `vi` and Linux VXLAN host `li` of `lab`.
fn interop(lab: violin_testbed::lab::Lab, vi: usize, li: usize) {
    let v = lab.vm(vi, 0, 0).clone();
    let l = lab.vm(li, 0, 0).clone();

    wait_ping(&v.ns, &l.ip.to_string(), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.daemon_logs()));
    for (from, to) in [(&v, &l), (&l, &v)] {
        let r = ping(&from.ns, &to.ip.to_string(), 10, &["-i", "0.05"]).unwrap();
        assert_eq!(r.lost(), 0, "{} -> {}", from.ns, to.ns);
    }
    let r = ping(&l.ns, &v.ip6, 5, &["-i", "0.1"]).unwrap();
    assert_eq!(r.lost(), 0, "ping -6 from the Linux VXLAN side");

    // TCP both ways: the checksum rule holds for frames from and to the kernel's VXLAN.
    for (from, to, p) in [(&v, &l, 5301u16), (&l, &v, 5302)] {
        let t = tcp_transfer(&from.ns, &to.ns, to.ip, p, 30_000_000).unwrap();
        assert_eq!(t.bytes, 30_000_000);
        assert_eq!(t.sent_digest, t.received_digest, "{} -> {}", from.ns, to.ns);
    }

    let s = lab.stats(vi).unwrap();
    let linux_addr = lab.hosts[li].underlay_ip.to_string();
    let peer = s["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["address"] == linux_addr.as_str())
        .expect("the Linux host is a peer");
    // In TC mode the underlay's GRO merges a stream's segments: fewer, larger packets.
    let segments = if lab.hosts[vi].kind == HostKind::ViolinXdp {
        10_000
    } else {
        300
    };
    assert!(counter(peer, "/stats/rx/packets") > segments, "{peer}");
    assert!(counter(peer, "/stats/tx/packets") > 1_000);
    lab.down().unwrap();
}
