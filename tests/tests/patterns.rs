//! VTTIF against the papers' BSP workloads: `violin-patterns` runs one rank in each of 8
//! VMs on 4 hosts, in each of its six topologies, and the controller infers exactly the
//! topology generated (as the directed VM pairs `violin-patterns edges` names); each
//! switch is declared as a change; and an application that alternates faster than the
//! smoothing window is seen as the union of its topologies, not flapping between them.
use std::{
    collections::BTreeSet,
    thread,
    time::{Duration, Instant},
};

use violin_testbed::{
    control::named_pairs,
    e2e::lab,
    lab::Vm,
    patterns::{edges, Run, Workload},
    traffic::{wait_ping, UdpPattern},
};

type Edges = BTreeSet<(String, String)>;

#[test]
fn vttif_infers_each_of_the_six_patterns_topologies_on_eight_vms() {
    let lab = lab("pt", |s| {
        s.hosts = 4;
        s.vms_per_host = 2;
        s.controller = true;
    });
    lab.apply_spec("blue", &lab.env_spec(0, "blue", 2400, ""))
        .unwrap();
    let vms: Vec<Vm> = (0..4)
        .flat_map(|h| (0..2).map(move |n| (h, n)))
        .map(|(h, n)| lab.vm(h, 0, n).clone())
        .collect();
    for v in &vms[1..] {
        wait_ping(&vms[0].ns, &v.ip.to_string(), Duration::from_secs(10)).unwrap();
    }
    let exe = lab.sibling("violin-patterns");
    let named = |pairs: &[(usize, usize)]| named_pairs(&vms, pairs);

    let mut changes = 0;
    for (i, topology) in ["ring", "all-to-all", "bus", "mesh", "tree", "star"]
        .iter()
        .enumerate()
    {
        let want = named(&edges(&exe, topology, vms.len()).unwrap());
        let w = Workload {
            topology: topology.to_string(),
            message_bytes: 16384,
            iterations: 1_000_000,
            compute_ms: 20.0,
            port: 9900 + 10 * i as u16,
        };
        let run = Run::start(&exe, &vms, &w).unwrap();
        let (got, now) = lab
            .settle_topology("blue", &want, Duration::from_secs(20))
            .unwrap();
        drop(run);
        assert_eq!(
            got,
            want,
            "{topology}: missing {:?}, extra {:?}",
            want.difference(&got).collect::<Vec<_>>(),
            got.difference(&want).collect::<Vec<_>>()
        );
        assert!(now > changes, "{topology}: no change declared");
        changes = now;
    }

    // A run to its end reports its iteration times, rank by rank.
    let w = Workload {
        topology: "ring".into(),
        message_bytes: 4096,
        iterations: 20,
        compute_ms: 1.0,
        port: 9990,
    };
    let reports = Run::start(&exe, &vms, &w).unwrap().wait().unwrap();
    assert_eq!(reports.len(), 8);
    assert!(
        reports
            .iter()
            .all(|r| r["iterations"] == 20 && r["iteration_ms_mean"].as_f64().unwrap() >= 1.0),
        "{reports:?}"
    );

    // Alternating between a ring and a star every 400 ms, faster than the 2 s window:
    // the union, held steady rather than flapping.
    let ring: Vec<(usize, usize)> = (0..4).map(|k| (k, (k + 1) % 4)).collect();
    let star: Vec<(usize, usize)> = (1..4).flat_map(|k| [(0, k), (k, 0)]).collect();
    let union: Edges = named(&ring).union(&named(&star)).cloned().collect();
    let pattern =
        |pairs: &[(usize, usize)], port: u16| UdpPattern::between(&vms, pairs, port, 300).unwrap();
    let start = Instant::now();
    let mut seen = Vec::new();
    let mut k = 0u16;
    while start.elapsed() < Duration::from_secs(10) {
        let p = if k.is_multiple_of(2) {
            pattern(&ring, 9800 + k)
        } else {
            pattern(&star, 9800 + k)
        };
        thread::sleep(Duration::from_millis(400));
        p.stop().unwrap();
        if start.elapsed() > Duration::from_secs(5) {
            seen.push(lab.declared_topology("blue").unwrap().0);
        }
        k += 1;
    }
    assert!(!seen.is_empty());
    for s in &seen {
        assert_eq!(*s, union, "the alternation was not damped to the union");
    }
    lab.down().unwrap();
}
