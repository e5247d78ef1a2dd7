//! Slurm over Violin: a scheduler and its nodes in VMs of one environment spread over two
//! hosts (the lab's namespace VMs), talking only over the overlay. The groundwork of
//! VioCluster's live brokers: the batch system they read demand from and lend nodes to.
use violin_testbed::{
    e2e::lab,
    lab::BASE_VNI,
    slurm::{Cluster, Machine},
    sys::run,
};

#[test]
fn a_slurm_cluster_runs_jobs_across_hosts_over_the_overlay() {
    let lab = lab("sl", |s| {
        s.hosts = 2;
        s.vms_per_host = 2;
        s.controller = true;
        s.measure = false;
    });
    lab.apply_spec("env0", &lab.env_spec(0, "env0", BASE_VNI, ""))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.daemon_logs()));
    let hostname = run("hostname", &[]).unwrap().trim().to_string();
    let machine = |host: usize, n: usize, name: &str| {
        let v = lab.vm(host, 0, n);
        Machine {
            ns: v.ns.clone(),
            ip: v.ip,
            name: name.to_string(),
        }
    };
    let head = machine(0, 0, &hostname);
    let nodes = [
        machine(0, 1, "n1"),
        machine(1, 0, "n2"),
        machine(1, 1, "n3"),
    ];
    let cluster = Cluster::start(&lab.dir.join("slurm"), "sl", head, &nodes, &[])
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.daemon_logs()));
    // A job on every node: two of them on the other host, reached through the overlay.
    let out = cluster
        .command("srun", &["-N3", "-l", "cat", "/proc/sys/kernel/hostname"])
        .unwrap_or_else(|e| panic!("{e:#}\n{}", cluster.logs()));
    let mut ranks: Vec<&str> = out.lines().filter_map(|l| l.split(':').next()).collect();
    ranks.sort_unstable();
    assert_eq!(ranks, ["0", "1", "2"], "{out}");
    let queue = cluster.command("squeue", &["-h"]).unwrap();
    assert!(queue.trim().is_empty(), "the job is still queued: {queue}");
    drop(cluster);
    lab.down().unwrap();
}
