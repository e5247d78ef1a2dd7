//! VTTIF end to end: the hosts' datapaths count what each VM pair sends, violind reports
//! it to the controller, and the controller infers the application's topology, which
//! `violinctl topology` shows. A ring is seen as exactly its edges, and a switch to a star
//! is followed.
use std::time::Duration;

use violin_testbed::{
    control::named_pairs,
    e2e::lab,
    lab::Vm,
    traffic::{wait_ping, UdpPattern},
};

#[test]
fn the_application_topology_is_inferred_and_followed() {
    let lab = lab("tp", |s| {
        s.vms_per_host = 2;
        s.controller = true;
    });
    lab.apply_spec("blue", &lab.env_spec(0, "blue", 2200, ""))
        .unwrap();
    let vms: Vec<Vm> = [(0, 0), (0, 1), (1, 0), (1, 1)]
        .iter()
        .map(|&(h, n)| lab.vm(h, 0, n).clone())
        .collect();
    for v in &vms[1..] {
        wait_ping(&vms[0].ns, &v.ip.to_string(), Duration::from_secs(10)).unwrap();
    }
    let named = |pairs: &[(usize, usize)]| named_pairs(&vms, pairs);
    // Waits for the application's pairs, by index, to be the declared topology.
    let settle = |pairs: &[(usize, usize)]| {
        lab.settle_topology("blue", &named(pairs), Duration::from_secs(8))
            .unwrap()
    };

    // A ring over the four VMs, across both hosts and within each.
    let ring = [(0, 1), (1, 2), (2, 3), (3, 0)];
    let traffic = UdpPattern::between(&vms, &ring, 9700, 200).unwrap();
    let (got, before) = settle(&ring);
    traffic.stop().unwrap();
    assert_eq!(got, named(&ring), "the ring");

    // The application switches to a star around VM 0: followed, as one more change.
    let star = [(1, 0), (2, 0), (3, 0), (0, 1), (0, 2), (0, 3)];
    let traffic = UdpPattern::between(&vms, &star, 9701, 200).unwrap();
    let (got, after) = settle(&star);
    // The table form shows the matrix too (while the traffic is in the window).
    let text = lab.violinctl(&["topology", "blue"]).unwrap();
    traffic.stop().unwrap();
    assert_eq!(got, named(&star), "the star");
    assert!(after > before, "no change declared ({before} -> {after})");
    assert!(text.contains("FROM \\ TO"), "{text}");
    lab.down().unwrap();
}

/// `count_vm_pairs = false` switches the per-pair counting off on a host (the baseline of
/// the counting's cost in `cargo xtask bench adapt`): its VMs' pairs are no longer counted,
/// the other host's still are.
#[test]
fn pair_counting_can_be_switched_off() {
    let lab = lab("uc", |_| {});
    let (a, b) = (lab.vm(0, 0, 0).clone(), lab.vm(1, 0, 0).clone());
    lab.reload(0, &lab.config_counting(0, false)).unwrap();
    wait_ping(&a.ns, &b.ip.to_string(), Duration::from_secs(10)).unwrap();
    let pairs = |i: usize| lab.stats(i).unwrap()["pairs"].as_array().unwrap().len();
    assert_eq!(pairs(0), 0, "host 0 counted with counting off");
    assert!(pairs(1) > 0, "host 1 counted nothing");
    lab.down().unwrap();
}
