//! VioCluster's trace-driven simulation (Ruth 2007, section 5.5.2): two clusters run their
//! SWF workloads, alone and with their machine brokers trading machines through the
//! controller's own broker code (`controller::broker`).
//!
//! Each cluster's scheduler runs jobs first come, first served with first-fit backfilling,
//! and never on a mix of its own and borrowed machines (as the prototype's PBS did). Each
//! broker acts every `broker_s` (the thesis: hourly). A lent machine boots a VM for the
//! borrower (`boot_s`), which then runs the borrower's jobs `vm_slowdown` slower (the
//! prototype's measured 40 s, 15%); a returned or reclaimed machine is back with its owner
//! after `halt_s` (16 s), and a job on a reclaimed machine is killed and queued again.
use std::collections::BTreeMap;

use controller::broker::{self, Domain, Loans, Policy, Trade};
use serde::Serialize;

use crate::swf::Job;

#[derive(Clone, Debug, Serialize)]
pub struct SimParams {
    pub step_s: f64,
    pub broker_s: f64,
    pub boot_s: f64,
    pub halt_s: f64,
    pub vm_slowdown: f64,
    /// Completion times are averaged over jobs submitted in windows of this length.
    pub bucket_s: f64,
}

impl Default for SimParams {
    fn default() -> Self {
        SimParams {
            step_s: 10.0,
            broker_s: 3600.0,
            boot_s: 40.0,
            halt_s: 16.0,
            vm_slowdown: 1.15,
            bucket_s: 6.0 * 3600.0,
        }
    }
}

pub struct Cluster {
    pub name: String,
    pub nodes: usize,
    pub jobs: Vec<Job>,
    pub policy: Policy,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct ClusterResult {
    pub name: String,
    pub jobs: usize,
    /// Jobs larger than the cluster, left out.
    pub too_large: usize,
    pub mean_completion_s: f64,
    pub mean_wait_s: f64,
    /// Jobs killed by a reclamation and run again.
    pub preempted: usize,
    /// (hours, nodes the queue demands) at each broker round.
    pub demand: Vec<(f64, f64)>,
    /// (hours of submission, mean completion time in hours) per bucket.
    pub completion: Vec<(f64, f64)>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Outcome {
    pub sharing: bool,
    pub clusters: Vec<ClusterResult>,
    /// (hours, machines the first cluster borrows from the second, less the reverse).
    pub borrowed: Vec<(f64, f64)>,
    pub trades: usize,
}

#[derive(Clone, Debug, PartialEq)]
enum VmState {
    Booting(f64),
    Idle,
    Busy,
}

#[derive(Clone, Debug)]
struct BorrowedVm {
    owner: usize,
    state: VmState,
}

#[derive(Clone, Debug)]
struct Running {
    job: usize,
    end_s: f64,
    /// Indexes into the cluster's borrowed VMs, or empty on its own machines.
    vms: Vec<usize>,
    nodes: usize,
}

struct State {
    /// Its own machines that are neither running its jobs nor lent.
    free_physical: usize,
    /// Waiting jobs (indexes into its trace), in order.
    queue: Vec<usize>,
    next_arrival: usize,
    running: Vec<Running>,
    vms: Vec<BorrowedVm>,
    /// Machines coming home at these times.
    returning: Vec<f64>,
    done: Vec<(f64, f64, f64)>,
    preempted: usize,
}

/// Runs the clusters over their traces, trading machines when `sharing`.
pub fn run(clusters: &[Cluster], p: &SimParams, sharing: bool) -> Outcome {
    let n = clusters.len();
    let mut too_large = vec![0; n];
    let jobs: Vec<Vec<Job>> = clusters
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let (ok, big): (Vec<Job>, Vec<Job>) =
                c.jobs.iter().cloned().partition(|j| j.nodes <= c.nodes);
            too_large[i] = big.len();
            ok
        })
        .collect();
    let mut st: Vec<State> = clusters
        .iter()
        .map(|c| State {
            free_physical: c.nodes,
            queue: Vec::new(),
            next_arrival: 0,
            running: Vec::new(),
            vms: Vec::new(),
            returning: Vec::new(),
            done: Vec::new(),
            preempted: 0,
        })
        .collect();
    let policies: BTreeMap<String, Policy> = clusters
        .iter()
        .map(|c| (c.name.clone(), c.policy.clone()))
        .collect();
    let mut loans = Loans::new();
    let mut out = Outcome {
        sharing,
        ..Outcome::default()
    };
    let mut demand: Vec<Vec<(f64, f64)>> = vec![Vec::new(); n];
    let last_submit = jobs
        .iter()
        .flat_map(|j| j.last())
        .map(|j| j.submit_s)
        .fold(0.0, f64::max);
    let mut t = 0.0;
    let mut next_broker = 0.0;
    loop {
        // Arrivals, completions, VMs booted, machines home.
        for (c, s) in st.iter_mut().enumerate() {
            while s.next_arrival < jobs[c].len() && jobs[c][s.next_arrival].submit_s <= t {
                s.queue.push(s.next_arrival);
                s.next_arrival += 1;
            }
            let (finished, running): (Vec<Running>, Vec<Running>) =
                s.running.drain(..).partition(|r| r.end_s <= t);
            s.running = running;
            for r in finished {
                let j = &jobs[c][r.job];
                s.done.push((
                    j.submit_s,
                    r.end_s - j.submit_s,
                    r.end_s - j.submit_s - j.runtime_s,
                ));
                if r.vms.is_empty() {
                    s.free_physical += r.nodes;
                } else {
                    for v in r.vms {
                        s.vms[v].state = VmState::Idle;
                    }
                }
            }
            for v in &mut s.vms {
                if matches!(v.state, VmState::Booting(until) if until <= t) {
                    v.state = VmState::Idle;
                }
            }
            let home = s.returning.iter().filter(|r| **r <= t).count();
            s.returning.retain(|r| *r > t);
            s.free_physical += home;
        }
        if t >= next_broker {
            next_broker += p.broker_s;
            let doms: Vec<Domain> = clusters
                .iter()
                .zip(&st)
                .enumerate()
                .map(|(c, (cl, s))| Domain {
                    name: cl.name.clone(),
                    physical: cl.nodes,
                    busy_physical: s
                        .running
                        .iter()
                        .filter(|r| r.vms.is_empty())
                        .map(|r| r.nodes)
                        .sum(),
                    demand: broker::demand(
                        s.queue
                            .iter()
                            .map(|j| jobs[c][*j].nodes)
                            .chain(s.running.iter().map(|r| r.nodes)),
                    ),
                    idle_borrowed: s.vms.iter().filter(|v| v.state == VmState::Idle).count(),
                })
                .collect();
            for (c, d) in doms.iter().enumerate() {
                demand[c].push((t / 3600.0, d.demand as f64));
            }
            if sharing {
                let trades = broker::trade(&doms, &policies, &loans);
                out.trades += trades.len();
                // The loans record what the machines did: a lender whose machines are
                // still halting on their way home lends fewer than agreed.
                let done: Vec<Trade> = trades
                    .iter()
                    .map(|tr| carry_out(tr, clusters, &mut st, t, p))
                    .collect();
                broker::apply(&mut loans, &done);
            }
            if n >= 2 {
                let a_from_b = loans
                    .get(&(clusters[1].name.clone(), clusters[0].name.clone()))
                    .copied()
                    .unwrap_or(0);
                let b_from_a = loans
                    .get(&(clusters[0].name.clone(), clusters[1].name.clone()))
                    .copied()
                    .unwrap_or(0);
                out.borrowed
                    .push((t / 3600.0, a_from_b as f64 - b_from_a as f64));
            }
        }
        // Scheduling: in order, first fit, own machines first, never mixed.
        for (c, s) in st.iter_mut().enumerate() {
            let mut k = 0;
            while k < s.queue.len() {
                let j = &jobs[c][s.queue[k]];
                if j.nodes <= s.free_physical {
                    s.free_physical -= j.nodes;
                    s.running.push(Running {
                        job: s.queue[k],
                        end_s: t + j.runtime_s,
                        vms: Vec::new(),
                        nodes: j.nodes,
                    });
                    s.queue.remove(k);
                    continue;
                }
                let idle: Vec<usize> = (0..s.vms.len())
                    .filter(|v| s.vms[*v].state == VmState::Idle)
                    .take(j.nodes)
                    .collect();
                if idle.len() == j.nodes {
                    for v in &idle {
                        s.vms[*v].state = VmState::Busy;
                    }
                    s.running.push(Running {
                        job: s.queue[k],
                        end_s: t + j.runtime_s * p.vm_slowdown,
                        vms: idle,
                        nodes: j.nodes,
                    });
                    s.queue.remove(k);
                    continue;
                }
                k += 1;
            }
        }
        let idle = st
            .iter()
            .all(|s| s.queue.is_empty() && s.running.is_empty());
        if t > last_submit && idle {
            break;
        }
        // Every job fits its own cluster, so a run that goes on this long is a bug.
        assert!(
            t < last_submit + 90.0 * 86400.0,
            "the simulation does not drain its queues"
        );
        t += p.step_s;
    }
    for (c, s) in st.iter().enumerate() {
        let count = s.done.len().max(1) as f64;
        let mut buckets: BTreeMap<u64, (f64, usize)> = BTreeMap::new();
        for (submit, completion, _) in &s.done {
            let b = buckets.entry((submit / p.bucket_s) as u64).or_default();
            b.0 += completion;
            b.1 += 1;
        }
        out.clusters.push(ClusterResult {
            name: clusters[c].name.clone(),
            jobs: s.done.len(),
            too_large: too_large[c],
            mean_completion_s: s.done.iter().map(|d| d.1).sum::<f64>() / count,
            mean_wait_s: s.done.iter().map(|d| d.2).sum::<f64>() / count,
            preempted: s.preempted,
            demand: std::mem::take(&mut demand[c]),
            completion: buckets
                .into_iter()
                .map(|(b, (sum, k))| {
                    (
                        (b as f64 + 0.5) * p.bucket_s / 3600.0,
                        sum / k as f64 / 3600.0,
                    )
                })
                .collect(),
        });
    }
    out
}

fn index(clusters: &[Cluster], name: &str) -> usize {
    clusters
        .iter()
        .position(|c| c.name == name)
        .expect("a broker's domain")
}

/// One trade, on the machines: a lend boots VMs at the borrower; a return halts idle VMs;
/// a reclaim halts VMs, idle ones first, killing the jobs on busy ones. Returns the trade
/// as carried out (fewer machines when fewer were free or held).
fn carry_out(tr: &Trade, clusters: &[Cluster], st: &mut [State], t: f64, p: &SimParams) -> Trade {
    match tr {
        Trade::Lend {
            owner,
            borrower,
            count,
        } => {
            let (o, b) = (index(clusters, owner), index(clusters, borrower));
            let k = (*count).min(st[o].free_physical);
            st[o].free_physical -= k;
            for _ in 0..k {
                st[b].vms.push(BorrowedVm {
                    owner: o,
                    state: VmState::Booting(t + p.boot_s),
                });
            }
            tr.with_count(k)
        }
        Trade::Return {
            owner,
            borrower,
            count,
        }
        | Trade::Reclaim {
            owner,
            borrower,
            count,
        } => {
            let (o, b) = (index(clusters, owner), index(clusters, borrower));
            let reclaim = matches!(tr, Trade::Reclaim { .. });
            // Idle VMs go first, then booting ones, then (reclaims only) busy ones; a kill
            // idles the job's other VMs, so choose afresh each time.
            let mut removed = 0;
            for _ in 0..*count {
                let rank = |v: &BorrowedVm| match v.state {
                    VmState::Idle => 0,
                    VmState::Booting(_) => 1,
                    VmState::Busy => 2,
                };
                let Some(v) = (0..st[b].vms.len())
                    .filter(|v| st[b].vms[*v].owner == o && (reclaim || rank(&st[b].vms[*v]) < 2))
                    .min_by_key(|v| rank(&st[b].vms[*v]))
                else {
                    break;
                };
                if st[b].vms[v].state == VmState::Busy {
                    kill_job_on(&mut st[b], v);
                }
                remove_vm(&mut st[b], v);
                st[o].returning.push(t + p.halt_s);
                removed += 1;
            }
            tr.with_count(removed)
        }
    }
}

/// Kills the job running on VM `v` and queues it again at the front; its other VMs idle.
fn kill_job_on(s: &mut State, v: usize) {
    if let Some(i) = s.running.iter().position(|r| r.vms.contains(&v)) {
        let r = s.running.remove(i);
        for other in r.vms {
            s.vms[other].state = VmState::Idle;
        }
        s.queue.insert(0, r.job);
        s.preempted += 1;
    }
}

/// Removes VM `v`, renumbering the VMs after it in the running jobs.
fn remove_vm(s: &mut State, v: usize) {
    s.vms.remove(v);
    for r in &mut s.running {
        for x in &mut r.vms {
            if *x > v {
                *x -= 1;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(id: u64, submit_h: f64, run_h: f64, nodes: usize) -> Job {
        Job {
            id,
            submit_s: submit_h * 3600.0,
            runtime_s: run_h * 3600.0,
            nodes,
        }
    }

    #[test]
    fn a_busy_cluster_borrows_from_an_idle_one_and_finishes_sooner() {
        // A: 8 machines, four 4-node jobs of 2 hours at once; B: 8 idle machines.
        let a: Vec<Job> = (0..4).map(|i| job(i + 1, 0.0, 2.0, 4)).collect();
        let clusters = vec![
            Cluster {
                name: "a".into(),
                nodes: 8,
                jobs: a,
                policy: Policy::default(),
            },
            Cluster {
                name: "b".into(),
                nodes: 8,
                jobs: vec![job(1, 10.0, 0.1, 1)],
                policy: Policy::default(),
            },
        ];
        let p = SimParams::default();
        let alone = run(&clusters, &p, false);
        let shared = run(&clusters, &p, true);
        // Alone: two jobs at a time, the last two wait 2 h.
        assert!(
            (alone.clusters[0].mean_completion_s - 3.0 * 3600.0).abs() < 60.0,
            "{alone:?}"
        );
        // B lends half of its 8 idle machines: a third job runs on them from the start.
        assert!(
            shared.borrowed.iter().any(|(_, n)| *n == 4.0),
            "{:?}",
            shared.borrowed
        );
        assert!(shared.clusters[0].mean_completion_s < alone.clusters[0].mean_completion_s);
        assert!(shared.trades >= 1);
        // Nobody's job was lost.
        assert_eq!(shared.clusters[0].jobs, 4);
        assert_eq!(shared.clusters[1].jobs, 1);
    }

    #[test]
    fn the_owner_reclaims_and_the_borrowers_job_runs_again() {
        // A borrows B's machines for a long job; B's own 8-node job arrives an hour later.
        let clusters = vec![
            Cluster {
                name: "a".into(),
                nodes: 4,
                jobs: vec![job(1, 0.0, 5.0, 4), job(2, 0.0, 5.0, 4)],
                policy: Policy::default(),
            },
            Cluster {
                name: "b".into(),
                nodes: 8,
                jobs: vec![job(1, 1.5, 1.0, 8)],
                policy: Policy::default(),
            },
        ];
        let shared = run(&clusters, &SimParams::default(), true);
        assert_eq!(shared.clusters[0].preempted, 1, "{shared:?}");
        assert_eq!(shared.clusters[0].jobs, 2);
        assert_eq!(shared.clusters[1].jobs, 1);
        // B's job waited at most until the next broker round, plus the halt.
        assert!(
            shared.clusters[1].mean_wait_s <= 3600.0 + 60.0,
            "{shared:?}"
        );
    }
}
