//! The replicated controller under faults: a 3-member etcd cluster and two controller
//! replicas in lab namespaces, daemons following them, a stream of changes through
//! violinctl, and traffic between VMs throughout. The leading controller is killed, then
//! an etcd member, then another member is cut off from the rest.
use std::time::{Duration, Instant};

use violin_api::rest::{Applied, HostInfo};
use violin_testbed::{
    e2e::lab,
    lab::{Lab, BASE_VNI},
    sys::ns_output,
    traffic::{wait_ping, Pinger},
};

/// Environment 0 with its first two VMs' pair limited to `mbit` (the change of step i).
fn spec(lab: &Lab, mbit: u32) -> String {
    let (a, b) = (lab.vm(0, 0, 0), lab.vm(1, 0, 0));
    let limit = format!(
        "[[limit]]\npair = [{:?}, {:?}]\nrate_mbit = {mbit}\n",
        violin_testbed::control::vm_name(a),
        violin_testbed::control::vm_name(b)
    );
    lab.env_spec(0, "env0", BASE_VNI, &limit)
}

/// Applies change `mbit` until the controller acknowledges it (a change refused while
/// the replicas elect a leader is made again); its generation and the failed tries.
fn apply(lab: &Lab, mbit: u32) -> (u64, u32) {
    let file = lab.dir.join("env0.toml");
    std::fs::write(&file, spec(lab, mbit)).unwrap();
    let file = file.to_string_lossy().into_owned();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut failed = 0;
    loop {
        match lab.violinctl_as::<Applied>(&["apply", &file]) {
            Ok(a) => return (a.generation, failed),
            Err(e) => {
                failed += 1;
                assert!(
                    Instant::now() < deadline,
                    "change {mbit} never acknowledged: {e:#}"
                );
                std::thread::sleep(Duration::from_millis(200));
            }
        }
    }
}

/// Every host acknowledged `generation` or a later one, as the leader tells.
fn converged(lab: &Lab, generation: u64) -> bool {
    lab.violinctl_as::<Vec<HostInfo>>(&["hosts"])
        .is_ok_and(|hosts| {
            hosts.len() == 2 && hosts.iter().all(|h| h.acked_generation >= generation)
        })
}

/// The stored limit of environment 0.
fn stored_rate(lab: &Lab) -> String {
    let text = lab.violinctl(&["get", "env0"]).unwrap();
    text.lines()
        .find(|l| l.starts_with("rate_mbit"))
        .unwrap_or_default()
        .to_string()
}

#[test]
fn replicas_fail_over_without_losing_changes_or_traffic() {
    let mut lab = lab("ha", |s| {
        s.hosts = 2;
        s.vms_per_host = 1;
        s.controller = true;
        s.replicas = 2;
    });
    let first = lab.leading_replica().expect("a replica leads");
    let (g0, _) = apply(&lab, 100);
    lab.until(
        Duration::from_secs(30),
        "hosts following the leader",
        || converged(&lab, g0).then_some(()),
    );
    let (a, b) = (lab.vm(0, 0, 0).clone(), lab.vm(1, 0, 0).clone());
    wait_ping(&a.ns, &b.ip.to_string(), Duration::from_secs(10)).unwrap();
    let pinger = Pinger::start(&a.ns, &b.ip.to_string(), "0.02").unwrap();

    // A stream of changes; the leader is killed in the middle of it.
    let mut acked = vec![g0];
    let mut retried = 0;
    let mut slowest = Duration::ZERO;
    for step in 1..=12u32 {
        if step == 5 {
            lab.kill_replica(first);
        }
        let started = Instant::now();
        let (g, failed) = apply(&lab, 100 + step);
        if step >= 5 {
            slowest = slowest.max(started.elapsed());
        }
        retried += failed;
        acked.push(g);
    }
    // violinctl waits through the election (the old lead's lease, 3 s here, runs out
    // first): the change made meanwhile took that long, and was neither lost nor made
    // twice (below).
    assert!(
        slowest > Duration::from_secs(1),
        "the stream never met the failover (slowest change {slowest:?})"
    );
    eprintln!("slowest change during the failover: {slowest:?}; refused and made again: {retried}");
    assert_eq!(
        lab.leading_replica(),
        Some(1 - first),
        "the other replica leads"
    );
    // Every acknowledged change got a generation of its own, in order: none made twice,
    // none lost (the last one is what is stored).
    assert!(
        acked.windows(2).all(|w| w[1] == w[0] + 1),
        "{acked:?} (retried {retried})"
    );
    assert_eq!(stored_rate(&lab), "rate_mbit = 112");
    let last = *acked.last().unwrap();
    lab.until(
        Duration::from_secs(30),
        "hosts following the new leader",
        || converged(&lab, last).then_some(()),
    );

    // An etcd member dies: the other two keep the quorum.
    lab.etcd.as_mut().unwrap().members[0].kill();
    let (g, _) = apply(&lab, 200);
    assert_eq!(g, last + 1);
    lab.until(
        Duration::from_secs(30),
        "hosts after an etcd member died",
        || converged(&lab, g).then_some(()),
    );
    lab.etcd.as_mut().unwrap().members[0].restart().unwrap();
    assert!(lab.etcd.as_ref().unwrap().members[0].healthy(Duration::from_secs(20)));

    // A member cut off from the rest is a minority: it refuses what needs the quorum,
    // and a controller that can reach only it says so and does not start.
    lab.partition_etcd(2, true).unwrap();
    let m = &lab.etcd.as_ref().unwrap().members[2];
    let ns = format!("{}-e3", lab.spec.name);
    let alone = ns_output(
        &ns,
        &lab.sibling("violin-controller").to_string_lossy(),
        &[
            "--store",
            "etcd",
            "--etcd-endpoints",
            &m.client_url,
            "--listen",
            "127.0.0.1:0",
            "--token-file",
            &lab.token_file().to_string_lossy(),
        ],
    )
    .unwrap();
    let said = String::from_utf8_lossy(&alone.stderr);
    assert!(!alone.status.success(), "{said}");
    assert!(
        said.contains("--etcd-endpoints") && said.contains("quorum"),
        "{said}"
    );
    let put = ns_output(
        &ns,
        "etcdctl",
        &[
            "--endpoints",
            &m.client_url,
            "--command-timeout=2s",
            "put",
            "k",
            "v",
        ],
    )
    .unwrap();
    assert!(!put.status.success(), "a minority member took a write");
    // The majority goes on.
    let (g, _) = apply(&lab, 300);
    assert_eq!(g, last + 2);
    lab.partition_etcd(2, false).unwrap();
    lab.until(Duration::from_secs(30), "hosts after the partition", || {
        converged(&lab, g).then_some(())
    });

    // Forwarding never stopped.
    let r = pinger.stop().unwrap();
    assert!(r.sent > 100, "{r:?}");
    // SIGINT may cut the last echo short, in flight: at most that one.
    assert!(
        r.lost() <= 1,
        "frames lost while the control plane failed over: {r:?}"
    );
    eprintln!("pings through it all: {r:?}");
    lab.down().unwrap();
}
