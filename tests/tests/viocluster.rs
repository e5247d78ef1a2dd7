//! VioCluster, live: two domains, each a Slurm cluster in an environment of its own, and
//! the controller's brokers. A queue longer than its cluster makes the idle domain lend a
//! machine: a VM of the borrower's pool boots on the lender's host, joins the borrower's
//! environment and runs the waiting job. Then the lender's own queue grows and it takes
//! the machine back: the job is requeued, the VM leaves, the lender's node runs its job.
use std::time::Duration;

use serde_json::Value;
use violin_testbed::{e2e::lab, viocluster::Brokered};

fn job_state(c: &violin_testbed::slurm::Cluster, id: &str) -> String {
    c.command("squeue", &["-h", "-j", id, "-o", "%t %N"])
        .unwrap_or_default()
        .trim()
        .to_string()
}

#[test]
fn brokers_lend_and_reclaim_a_machine_through_slurm() {
    let lab = lab("vc", |s| {
        s.hosts = 4;
        s.vms_per_host = 2;
        s.controller = true;
        s.measure = false;
        s.viocluster = Some(Brokered {
            domains: 2,
            pool: 1,
            period_s: 2,
        });
    });
    let (c1, c2) = (&lab.slurm[0], &lab.slurm[1]);
    let fail = |what: &str| -> String {
        format!(
            "{what}\n{}\n{}\n{}",
            lab.violinctl(&["brokers"]).unwrap_or_default(),
            c1.logs(),
            lab.daemon_logs()
        )
    };
    let sbatch = |c: &violin_testbed::slurm::Cluster, nodes: &str| -> String {
        let out = c
            .command(
                "sbatch",
                &[
                    "--parsable",
                    "-o",
                    "/dev/null",
                    "-N",
                    nodes,
                    "--wrap",
                    "sleep 600",
                ],
            )
            .unwrap_or_else(|e| panic!("{}", fail(&format!("{e:#}"))));
        out.trim().to_string()
    };
    let brokers = || -> Value { lab.violinctl_as(&["brokers"]).unwrap() };
    // c1 fills its two nodes, and one more job waits.
    let a = sbatch(c1, "2");
    lab.until(Duration::from_secs(30), "c1's first job running", || {
        job_state(c1, &a).starts_with("R ").then_some(())
    });
    // A provisioner that cannot boot the VM: the lend is taken back whole, said in the
    // round, and d2's machines stay its own.
    let provisioner = lab.dir.join("provision.sh");
    let good = std::fs::read_to_string(&provisioner).unwrap();
    let refusing = "#!/bin/sh\n[ \"$1\" = stop ] && exit 0\necho no room for VMs >&2\nexit 1\n";
    std::fs::write(&provisioner, refusing).unwrap();
    let b = sbatch(c1, "1");
    lab.until(
        Duration::from_secs(30),
        &fail("a round saying the lend failed"),
        || {
            brokers()["rounds"]
                .as_array()?
                .iter()
                .any(|r| r.to_string().contains("no room for VMs"))
                .then_some(())
        },
    );
    // (The brokers try again every round: between two tries, nothing is left over.)
    lab.until(
        Duration::from_secs(20),
        &fail("d2's nodes idle and no loan"),
        || {
            let nodes = c2
                .command("sinfo", &["-h", "-N", "-p", "own", "-o", "%t"])
                .ok()?;
            let loans = brokers()["loans"].as_array()?.len();
            (loans == 0 && nodes.lines().all(|l| l == "idle")).then_some(())
        },
    );
    std::fs::write(&provisioner, good).unwrap();
    // d2, idle, lends one of its two machines (half of its idle ones): c1's pool VM boots
    // on a d2 host, joins c1's environment, its slurmd registers, the waiting job runs.
    let on = lab.until(
        Duration::from_secs(90),
        &fail("the waiting job running on a borrowed machine"),
        || {
            let s = job_state(c1, &b);
            s.strip_prefix("R ").map(|n| n.to_string())
        },
    );
    assert_eq!(on, "c1b1", "the job mixed own and borrowed machines");
    let st = brokers();
    let loans = st["loans"].as_array().unwrap();
    assert_eq!(loans.len(), 1, "{st}");
    let loan = &loans[0];
    assert_eq!(
        (loan["owner"].as_str(), loan["borrower"].as_str()),
        (Some("d2"), Some("d1"))
    );
    let host = loan["host"].as_str().unwrap().to_string();
    let node = loan["node"].as_str().unwrap().to_string();
    // The lent host is d2's, and d2's scheduler keeps its own node there out of use.
    let d2_hosts: Vec<String> = lab
        .cluster_hosts(1)
        .into_iter()
        .map(|h| lab.hosts[h].host_id().to_string())
        .collect();
    assert!(
        d2_hosts.contains(&host),
        "{host} is not d2's ({d2_hosts:?})"
    );
    let state = c2
        .command("sinfo", &["-h", "-n", &node, "-o", "%t"])
        .unwrap();
    assert!(state.trim().starts_with("drain"), "{node} is {state}");
    // The borrowed VM is in c1's environment, on the lent host.
    let env: Value = lab.violinctl_as(&["get", "c1"]).unwrap();
    assert!(env.to_string().contains("c1b1"), "{env}");
    let round = st["rounds"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| !r["done"].as_array().unwrap().is_empty())
        .cloned()
        .unwrap_or_else(|| panic!("no round carried a trade out: {st}"));
    assert_eq!(round["done"][0]["kind"], "lend", "{round}");
    let d1 = round["domains"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["name"] == "d1")
        .unwrap();
    // Read before the trade: demand 3 on 2 machines.
    assert_eq!(
        (d1["demand"].as_u64(), d1["physical"].as_u64()),
        (Some(3), Some(2)),
        "{round}"
    );

    // d2's own queue now needs both its machines: it reclaims the lent one at once.
    let c = sbatch(c2, "2");
    lab.until(
        Duration::from_secs(90),
        &fail("d2's job running on its own machines"),
        || job_state(c2, &c).starts_with("R ").then_some(()),
    );
    let st = brokers();
    assert!(st["loans"].as_array().unwrap().is_empty(), "{st}");
    // c1's job on the reclaimed machine went back to the queue, to run again later.
    let s = job_state(c1, &b);
    assert!(s.starts_with("PD"), "job {b} is {s:?}");
    let restarts = c1.command("scontrol", &["show", "job", &b]).unwrap();
    assert!(restarts.contains("Restarts=1"), "{restarts}");
    let env: Value = lab.violinctl_as(&["get", "c1"]).unwrap();
    assert!(
        !env.to_string().contains("c1b1"),
        "the reclaimed VM is still in c1: {env}"
    );
    let metrics = lab.controller_metrics().unwrap();
    for kind in ["lend", "reclaim"] {
        let line = format!("violin_controller_broker_machines_traded_total{{kind=\"{kind}\"}} 1");
        assert!(metrics.contains(&line), "no {line} in\n{metrics}");
    }
    // The operator's view says the same.
    let shown = lab.violinctl(&["brokers"]).unwrap();
    assert!(shown.contains("no machine lent"), "{shown}");
    assert!(shown.contains("d2 reclaims 1 from d1"), "{shown}");
    lab.down().unwrap();
}
