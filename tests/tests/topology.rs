//! VTTIF end to end: the hosts' datapaths count what each VM pair sends, violind reports
//! it to the controller, and the controller infers the application's topology, which
//! `violinctl topology` shows. A ring is seen as exactly its edges, and a switch to a star
//! is followed.
use std::{collections::BTreeSet, thread, time::Duration};

use violin_api::rest::AppTopology;
use violin_testbed::{
    control::vm_name,
    e2e::lab,
    lab::{Lab, Vm},
    traffic::{wait_ping, UdpPattern},
};

/// The declared edges, as (source, destination) VM names.
fn edges(lab: &Lab) -> (BTreeSet<(String, String)>, u64) {
    let t: AppTopology = lab.violinctl_as(&["topology", "blue"]).unwrap();
    let e = t.edges.into_iter().map(|e| (e.src, e.dst)).collect();
    (e, t.changes)
}

fn pattern(vms: &[Vm], pairs: &[(usize, usize)], port: u16) -> UdpPattern {
    let edges: Vec<(String, String, std::net::Ipv4Addr)> = pairs
        .iter()
        .map(|&(a, b)| (vms[a].ns.clone(), vms[b].ns.clone(), vms[b].ip))
        .collect();
    UdpPattern::start(&edges, port, 200).unwrap()
}

/// Polls until the declared edges are `want` (or `within` passes); returns what it saw.
fn settle(
    lab: &Lab,
    want: &BTreeSet<(String, String)>,
    within: Duration,
) -> (BTreeSet<(String, String)>, u64) {
    let start = std::time::Instant::now();
    loop {
        let got = edges(lab);
        if got.0 == *want || start.elapsed() > within {
            return got;
        }
        thread::sleep(Duration::from_millis(250));
    }
}

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
    let names: Vec<String> = vms.iter().map(vm_name).collect();
    let named = |pairs: &[(usize, usize)]| -> BTreeSet<(String, String)> {
        pairs
            .iter()
            .map(|&(a, b)| (names[a].clone(), names[b].clone()))
            .collect()
    };

    // A ring over the four VMs, across both hosts and within each.
    let ring = [(0, 1), (1, 2), (2, 3), (3, 0)];
    let traffic = pattern(&vms, &ring, 9700);
    let (got, before) = settle(&lab, &named(&ring), Duration::from_secs(8));
    traffic.stop().unwrap();
    assert_eq!(got, named(&ring), "the ring");

    // The application switches to a star around VM 0: followed, as one more change.
    let star = [(1, 0), (2, 0), (3, 0), (0, 1), (0, 2), (0, 3)];
    let traffic = pattern(&vms, &star, 9701);
    let (got, after) = settle(&lab, &named(&star), Duration::from_secs(8));
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
