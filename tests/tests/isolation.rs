//! Two environments with identical MAC and IP addresses on the same hosts stay apart.
use std::time::Duration;

use violin_testbed::{
    e2e::{counter, lab, port, scratch},
    traffic::{ping, tcp_transfer, wait_ping, Capture},
};

#[test]
fn environments_with_identical_addresses_are_isolated() {
    let lab = lab("is", |s| {
        s.vms_per_host = 2;
        s.envs = 2;
    });
    let (a0, b0) = (lab.vm(0, 0, 0).clone(), lab.vm(1, 0, 0).clone());
    let (a1, b1) = (lab.vm(0, 1, 0).clone(), lab.vm(1, 1, 0).clone());
    assert_eq!(
        (a0.mac, a0.ip),
        (a1.mac, a1.ip),
        "the lab must overlap addresses"
    );
    assert_eq!((b0.mac, b0.ip), (b1.mac, b1.ip));
    assert_ne!(a0.vni, a1.vni);

    // Each environment works on its own.
    for (a, b) in [(&a0, &b0), (&a1, &b1)] {
        wait_ping(&a.ns, &b.ip.to_string(), Duration::from_secs(10)).unwrap();
    }

    // Traffic in environment 0 while environment 1 listens.
    let before = [lab.stats(0).unwrap(), lab.stats(1).unwrap()];
    let caps = [
        Capture::start(&a1.ns, "eth0", "icmp or tcp", &scratch(&lab, "a1.pcap")).unwrap(),
        Capture::start(&b1.ns, "eth0", "icmp or tcp", &scratch(&lab, "b1.pcap")).unwrap(),
        Capture::start(&b0.ns, "eth0", "icmp", &scratch(&lab, "b0.pcap")).unwrap(),
    ];
    let r = ping(&a0.ns, &b0.ip.to_string(), 50, &["-i", "0.02"]).unwrap();
    assert_eq!(r.lost(), 0);
    let t = tcp_transfer(&a0.ns, &b0.ns, b0.ip, 5201, 20_000_000).unwrap();
    assert_eq!(t.sent_digest, t.received_digest);
    let [ca1, cb1, cb0] = caps;
    let (ca1, cb1, cb0) = (
        ca1.stop().unwrap(),
        cb1.stop().unwrap(),
        cb0.stop().unwrap(),
    );
    assert!(
        cb0.len() >= 100,
        "positive control saw only {} frames",
        cb0.len()
    );
    assert!(
        ca1.is_empty(),
        "environment 1 saw environment 0's frames: {ca1:?}"
    );
    assert!(
        cb1.is_empty(),
        "environment 1 saw environment 0's frames: {cb1:?}"
    );

    // Counters agree: environment 1's ports got (almost) nothing, environment 0's a lot.
    let after = [lab.stats(0).unwrap(), lab.stats(1).unwrap()];
    for h in 0..2 {
        let tx = |s: &serde_json::Value, p: &str| counter(port(s, p), "/stats/tx/packets");
        let env0 = lab.vm(h, 0, 0).port.clone();
        let env1 = lab.vm(h, 1, 0).port.clone();
        // At least the 50 ping requests or replies, plus the transfer or its ACKs.
        assert!(tx(&after[h], &env0) - tx(&before[h], &env0) > 50);
        // Only environment 1's own background (IPv6 router solicitations) may appear.
        assert!(
            tx(&after[h], &env1) - tx(&before[h], &env1) < 10,
            "host {h}: environment 1 port received environment 0 traffic"
        );
    }

    // And environment 1 still works with the very same addresses.
    let r = ping(&a1.ns, &b1.ip.to_string(), 5, &["-i", "0.05"]).unwrap();
    assert_eq!(r.lost(), 0);
    lab.down().unwrap();
}
