//! VioCluster on the live installation (Ruth 2007, chapter 5): one machine broker per
//! domain reads its cluster's demand from Slurm, the brokers trade by `broker::trade`, and
//! each trade is carried out with Violin VMs. A lent machine is one of the owner's hosts:
//! the owner's scheduler drains its own node there, the operator's provisioner boots a VM
//! of the borrower's pool on it (the thesis's pre-built images), and the VM joins the
//! borrower's environment, where its slurmd registers with the borrower's scheduler.
//! A return or reclaim downs the node in the borrower's scheduler (Slurm requeues its
//! job), stops the VM, takes it out of the spec and resumes the owner's node.
//!
//! A cluster's Slurm node names are its spec's VM names; its head node (`head = true`)
//! runs the scheduler and no jobs.
use std::{
    collections::{BTreeMap, BTreeSet, VecDeque},
    io::Read,
    net::Ipv4Addr,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use violin_api::{
    parse::{from_toml, FieldError},
    rest::{BrokerDomain, BrokerRound, Brokers, Loan, Trade},
    IfName, Name, UnicastMac,
};

use crate::{
    api::{self, Api},
    broker::{self, Domain, Loans, Policy},
    spec::{edit, Spec},
    usage::now_ms,
};

/// Rounds kept for `violinctl brokers`.
const KEEP: usize = 50;
/// How long a scheduler command may take: Slurm's commands retry an unreachable
/// controller for about a minute, and a round must not wait that long.
const SLURM_LIMIT: Duration = Duration::from_secs(10);
/// How long the provisioner may take to boot or halt a VM.
const PROVISION_LIMIT: Duration = Duration::from_secs(300);

/// Runs `cmd` to its end, or kills it after `limit`; its output, or why it failed (its
/// exit status and what it wrote on stderr).
fn output_within(cmd: &mut Command, limit: Duration) -> Result<String> {
    // A group of its own, so that a timeout stops what it started too.
    let mut child = cmd
        .process_group(0)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()?;
    // Read while waiting, so that a long answer cannot fill the pipe and stall it.
    let drain = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() > deadline {
            let _ = Command::new("kill")
                .args(["-9", "--", &format!("-{}", child.id())])
                .status();
            let _ = child.kill();
            let _ = child.wait();
            bail!("no answer within {} s", limit.as_secs());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (stdout, stderr) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    if !status.success() {
        bail!(
            "failed ({status}): {}",
            String::from_utf8_lossy(&stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

/// The brokers' configuration file (`violin-controller --brokers FILE`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Seconds between rounds (the thesis's brokers acted hourly).
    #[serde(default = "default_period")]
    pub period_s: u64,
    /// Boots (`start`) and halts (`stop`) a lent machine's VM; see the README for what it
    /// is given.
    pub provisioner: PathBuf,
    #[serde(rename = "domain")]
    pub domains: Vec<DomainConfig>,
}

fn default_period() -> u64 {
    60
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DomainConfig {
    /// The domain its hosts register (violind's `[libvirt] domain`).
    pub name: Name,
    /// Its virtual cluster: the environment its nodes and borrowed VMs are in.
    pub environment: Name,
    /// The cluster's slurm.conf, for squeue, sinfo and scontrol.
    pub slurm_conf: PathBuf,
    /// A command prefix that reaches the scheduler (e.g. `["ssh", "head1"]`); none: run
    /// the commands here.
    #[serde(default)]
    pub slurm_via: Vec<String>,
    #[serde(default)]
    pub policy: Policy,
    /// The VMs it may run on borrowed machines, declared as nodes of its scheduler.
    #[serde(default)]
    pub pool: Vec<PoolVm>,
}

#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolVm {
    pub name: Name,
    /// Its port on whichever host it is booted on.
    pub port: IfName,
    pub mac: UnicastMac,
    #[serde(default)]
    pub ip: Option<Ipv4Addr>,
}

impl Config {
    /// Reads and checks the file; errors name the field.
    pub fn load(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("brokers: cannot read {}", path.display()))?;
        Config::parse(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Config, FieldError> {
        let c: Config = from_toml(text, "brokers")?;
        if !(1..=86_400).contains(&c.period_s) {
            return Err(FieldError::new("period_s", "must be in 1..=86400"));
        }
        if c.domains.len() < 2 {
            return Err(FieldError::new(
                "domain",
                "brokers trade between two domains at least",
            ));
        }
        let mut names = BTreeSet::new();
        let mut envs = BTreeSet::new();
        let mut pool = BTreeSet::new();
        for (i, d) in c.domains.iter().enumerate() {
            let f = |k: &str| format!("domain[{i}].{k}");
            if !names.insert(d.name.as_str()) {
                return Err(FieldError::new(f("name"), "another domain has this name"));
            }
            if !envs.insert(d.environment.as_str()) {
                return Err(FieldError::new(
                    f("environment"),
                    "another domain's cluster is this environment",
                ));
            }
            let share = d.policy.lend_share;
            if !(0.0..=1.0).contains(&share) {
                return Err(FieldError::new(
                    f("policy.lend_share"),
                    format!("{share} is outside [0, 1]"),
                ));
            }
            if d.policy.reclaim_per_round == Some(0) {
                return Err(FieldError::new(
                    f("policy.reclaim_per_round"),
                    "0 would never reclaim; leave it out to reclaim at once",
                ));
            }
            for (j, v) in d.pool.iter().enumerate() {
                if !pool.insert(v.name.as_str()) {
                    return Err(FieldError::new(
                        f(&format!("pool[{j}].name")),
                        "another pool VM has this name",
                    ));
                }
            }
        }
        Ok(c)
    }
}

/// A node's state as `sinfo %t` says it, and a job as `squeue` does.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub id: String,
    pub state: String,
    pub nodes: usize,
}

/// `sinfo -h -N -o %N,%t`: node -> state (a node in several partitions once).
pub fn parse_nodes(out: &str) -> BTreeMap<String, String> {
    out.lines()
        .filter_map(|l| {
            let (n, s) = l.trim().split_once(',')?;
            Some((n.to_string(), s.to_string()))
        })
        .collect()
}

/// `squeue -h -o %i,%t,%D`.
pub fn parse_jobs(out: &str) -> Result<Vec<Job>> {
    out.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let f: Vec<&str> = l.trim().split(',').collect();
            let [id, state, nodes] = f[..] else {
                bail!("squeue: unexpected line {l:?}");
            };
            Ok(Job {
                id: id.to_string(),
                state: state.to_string(),
                nodes: nodes
                    .parse()
                    .with_context(|| format!("squeue: node count in {l:?}"))?,
            })
        })
        .collect()
}

/// Runs a job of the cluster: allocated, mixed or completing (`*`: not responding).
fn busy(state: &str) -> bool {
    let s = state.trim_end_matches(['*', '~', '#', '!', '%', '$', '@', '^', '-']);
    matches!(s, "alloc" | "mix" | "comp" | "drng" | "mixed")
}

/// Up: its slurmd answers and no one took it out of service.
fn up(state: &str) -> bool {
    !state.ends_with('*') && !state.starts_with("down") && !state.starts_with("fail")
}

/// A domain as its broker sees it: its own nodes (the spec's VMs but the head and its
/// pool), its scheduler's nodes and jobs, and the standing loans.
pub fn domain_state(
    name: &str,
    own: &[String],
    nodes: &BTreeMap<String, String>,
    jobs: &[Job],
    loans: &[Loan],
) -> Domain {
    let lent: BTreeSet<&str> = loans
        .iter()
        .filter(|l| l.owner == name)
        .map(|l| l.node.as_str())
        .collect();
    let state = |n: &str| nodes.get(n).map(String::as_str).unwrap_or("down*");
    // A node it lent counts as its own machine (the formula subtracts |L|) though its
    // scheduler keeps it drained.
    let physical = own
        .iter()
        .filter(|n| lent.contains(n.as_str()) || up(state(n)))
        .count();
    let busy_physical = own
        .iter()
        .filter(|n| !lent.contains(n.as_str()) && busy(state(n)))
        .count();
    let idle_borrowed = loans
        .iter()
        .filter(|l| l.borrower == name && !busy(state(&l.vm)))
        .count();
    Domain {
        name: name.to_string(),
        physical,
        busy_physical,
        // Completing jobs are giving their nodes back.
        demand: broker::demand(jobs.iter().filter(|j| j.state != "CG").map(|j| j.nodes)),
        idle_borrowed,
    }
}

/// A cluster's Slurm, through its command prefix.
struct Slurm<'a>(&'a DomainConfig);

impl Slurm<'_> {
    fn run(&self, program: &str, args: &[&str]) -> Result<String> {
        let d = self.0;
        // Through a prefix (ssh, a namespace), `env` carries the configuration along. No
        // argument has a space or a shell character, so a prefix that hands the command
        // to a shell (ssh does) runs it as meant.
        let conf = format!("SLURM_CONF={}", d.slurm_conf.display());
        let mut argv: Vec<&str> = d.slurm_via.iter().map(String::as_str).collect();
        if !argv.is_empty() {
            argv.extend(["env", conf.as_str()]);
        }
        argv.push(program);
        argv.extend_from_slice(args);
        output_within(
            Command::new(argv[0])
                .args(&argv[1..])
                .env("SLURM_CONF", &d.slurm_conf),
            SLURM_LIMIT,
        )
        .with_context(|| format!("domain {}: `{program} {}`", d.name, args.join(" ")))
    }

    fn nodes(&self) -> Result<BTreeMap<String, String>> {
        Ok(parse_nodes(
            &self.run("sinfo", &["-h", "-N", "-o", "%N,%t"])?,
        ))
    }

    fn jobs(&self) -> Result<Vec<Job>> {
        parse_jobs(&self.run("squeue", &["-h", "-o", "%i,%t,%D"])?)
    }

    /// A node's state and reason.
    fn node(&self, node: &str) -> Result<(String, String)> {
        let out = self.run("sinfo", &["-h", "-N", "-n", node, "-o", "%N,%t,%E"])?;
        let line = out.lines().next().unwrap_or_default();
        let mut f = line.trim().splitn(3, ',');
        match (f.next(), f.next(), f.next()) {
            (Some(n), Some(state), reason) if n == node => {
                Ok((state.to_string(), reason.unwrap_or_default().to_string()))
            }
            _ => bail!("domain {}: sinfo does not know node {node}", self.0.name),
        }
    }

    fn set(&self, node: &str, state: &str, reason: Option<&str>) -> Result<()> {
        let mut args = vec![
            "update".to_string(),
            format!("NodeName={node}"),
            format!("State={state}"),
        ];
        if let Some(r) = reason {
            args.push(format!("Reason={r}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.run("scontrol", &args).map(|_| ())
    }
}

pub struct Viocluster {
    pub config: Config,
    /// One round at a time (automatic and requested).
    round: Mutex<()>,
    rounds: Mutex<VecDeque<BrokerRound>>,
}

impl Viocluster {
    pub fn new(config: Config) -> Viocluster {
        Viocluster {
            config,
            round: Mutex::new(()),
            rounds: Mutex::new(VecDeque::new()),
        }
    }

    fn domain(&self, name: &str) -> Option<&DomainConfig> {
        self.config.domains.iter().find(|d| d.name.as_str() == name)
    }
}

/// VioCluster's state for `GET /v1/brokers`.
pub fn status(api: &Api, v: &Viocluster) -> Result<Brokers> {
    Ok(Brokers {
        period_s: v.config.period_s,
        loans: api.store.loans()?,
        rounds: v
            .rounds
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .cloned()
            .collect(),
    })
}

/// A cluster's own compute nodes: its spec's VMs but the head and its pool.
fn own_nodes(d: &DomainConfig, spec: Option<&Spec>) -> Vec<String> {
    let pool: BTreeSet<&str> = d.pool.iter().map(|p| p.name.as_str()).collect();
    spec.map(|s| {
        s.vms
            .iter()
            .filter(|(n, v)| !v.head && !pool.contains(n.as_str()))
            .map(|(n, _)| n.clone())
            .collect()
    })
    .unwrap_or_default()
}

/// One round: every broker reads its scheduler, they agree on trades, the trades are
/// carried out. A domain whose scheduler cannot be read stops the round: trading blind
/// could lend a machine its owner needs.
pub fn round(api: &Api, v: &Viocluster, trigger: &str) -> Result<BrokerRound> {
    // A round that panicked leaves nothing half-done the next one cannot take back.
    let _one = v.round.lock().unwrap_or_else(PoisonError::into_inner);
    let loans = api.store.loans()?;
    let specs = api.store.snapshot();
    let mut views = Vec::new();
    let mut states = BTreeMap::new();
    let mut errors = Vec::new();
    // Every scheduler at once: one that does not answer costs the round its time limit
    // once, not once per domain.
    let reads: Vec<_> = std::thread::scope(|sc| {
        let handles: Vec<_> = v
            .config
            .domains
            .iter()
            .map(|d| {
                sc.spawn(move || {
                    let slurm = Slurm(d);
                    slurm.nodes().and_then(|n| Ok((n, slurm.jobs()?)))
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("reading the scheduler panicked")))
            })
            .collect()
    });
    for (d, read) in v.config.domains.iter().zip(reads) {
        let spec = specs.get(d.environment.as_str()).map(|(_, s)| s);
        let own = own_nodes(d, spec);
        let (dom, err) = match read {
            Ok((nodes, jobs)) => {
                let dom = domain_state(d.name.as_str(), &own, &nodes, &jobs, &loans);
                states.insert(d.name.to_string(), nodes);
                (dom, None)
            }
            Err(e) => {
                errors.push(format!("{e:#}"));
                (
                    Domain {
                        name: d.name.to_string(),
                        ..Domain::default()
                    },
                    Some(format!("{e:#}")),
                )
            }
        };
        if spec.is_none() {
            errors.push(format!(
                "domain {}: its environment {} is not applied",
                d.name, d.environment
            ));
        }
        views.push((dom, err));
    }
    let mut counts = Loans::new();
    for l in &loans {
        *counts
            .entry((l.owner.clone(), l.borrower.clone()))
            .or_default() += 1;
    }
    let domains: Vec<Domain> = views.iter().map(|(d, _)| d.clone()).collect();
    let policies: BTreeMap<String, Policy> = v
        .config
        .domains
        .iter()
        .map(|d| (d.name.to_string(), d.policy.clone()))
        .collect();
    let agreed = if errors.is_empty() {
        broker::trade(&domains, &policies, &counts)
    } else {
        Vec::new()
    };
    let mut done = Vec::new();
    for t in &agreed {
        let (n, mut errs) = carry_out(api, v, t, &states);
        errors.append(&mut errs);
        if n > 0 {
            api.hub
                .metrics
                .broker_trades
                .with_label_values(&[t.kind()])
                .inc_by(n as u64);
            done.push(t.with_count(n));
        }
    }
    // The domains as they stand after the round's trades.
    let loans = api.store.loans()?;
    let report: Vec<BrokerDomain> = views
        .into_iter()
        .zip(&v.config.domains)
        .map(|((d, error), c)| {
            let lent = loans.iter().filter(|l| l.owner == d.name).count();
            let borrowed = loans.iter().filter(|l| l.borrower == d.name).count();
            let m = &api.hub.metrics;
            m.broker_demand
                .with_label_values(&[d.name.as_str()])
                .set(d.demand as i64);
            for (kind, n) in [
                ("physical", d.physical),
                ("busy", d.busy_physical),
                ("lent", lent),
                ("borrowed", borrowed),
            ] {
                m.broker_machines
                    .with_label_values(&[d.name.as_str(), kind])
                    .set(n as i64);
            }
            BrokerDomain {
                need: broker::need(&d, lent, borrowed),
                environment: c.environment.to_string(),
                name: d.name,
                physical: d.physical,
                busy: d.busy_physical,
                demand: d.demand,
                lent,
                borrowed,
                idle_borrowed: d.idle_borrowed,
                error,
            }
        })
        .collect();
    let mut rounds = v.rounds.lock().unwrap_or_else(PoisonError::into_inner);
    let record = BrokerRound {
        id: rounds.back().map_or(1, |r| r.id + 1),
        at_ms: now_ms(),
        trigger: trigger.to_string(),
        domains: report,
        agreed,
        done,
        errors,
    };
    if !record.agreed.is_empty() || !record.errors.is_empty() {
        tracing::info!(
            id = record.id,
            trigger,
            agreed = ?record.agreed,
            done = ?record.done,
            errors = ?record.errors,
            "brokering round"
        );
    }
    rounds.push_back(record.clone());
    while rounds.len() > KEEP {
        rounds.pop_front();
    }
    Ok(record)
}

/// Carries one trade out; the machines it moved and what failed.
fn carry_out(
    api: &Api,
    v: &Viocluster,
    t: &Trade,
    states: &BTreeMap<String, BTreeMap<String, String>>,
) -> (usize, Vec<String>) {
    let mut errors = Vec::new();
    let mut moved = 0;
    match t {
        Trade::Lend {
            owner,
            borrower,
            count,
        } => {
            let (Some(o), Some(b)) = (v.domain(owner), v.domain(borrower)) else {
                return (0, vec![format!("{t:?}: unknown domain")]);
            };
            let specs = api.store.snapshot();
            let owner_spec = specs.get(o.environment.as_str()).map(|(_, s)| s);
            let borrower_spec = specs.get(b.environment.as_str()).map(|(_, s)| s);
            let loans = api.store.loans().unwrap_or_default();
            let lent: BTreeSet<&str> = loans.iter().map(|l| l.node.as_str()).collect();
            let used: BTreeSet<&str> = loans.iter().map(|l| l.vm.as_str()).collect();
            let mut idle: Vec<(String, String)> = own_nodes(o, owner_spec)
                .into_iter()
                .filter(|n| {
                    !lent.contains(n.as_str())
                        && states
                            .get(owner.as_str())
                            .and_then(|s| s.get(n))
                            .is_some_and(|s| s == "idle")
                })
                .filter_map(|n| {
                    let host = owner_spec?.vms.get(&n)?.host.clone();
                    Some((n, host))
                })
                .collect();
            // A host is one machine, however many of the owner's nodes it runs.
            let mut hosts = BTreeSet::new();
            let lent_hosts: BTreeSet<&str> = loans.iter().map(|l| l.host.as_str()).collect();
            idle.retain(|(_, h)| !lent_hosts.contains(h.as_str()) && hosts.insert(h.clone()));
            let free = b.pool.iter().filter(|p| {
                !used.contains(p.name.as_str())
                    && !borrower_spec.is_some_and(|s| s.vms.contains_key(p.name.as_str()))
            });
            for ((node, host), vm) in idle.into_iter().zip(free).take(*count) {
                match lend(api, v, o, b, &node, &host, vm) {
                    Ok(()) => moved += 1,
                    Err(e) => errors.push(format!("lending {host} to {borrower}: {e:#}")),
                }
            }
            if moved < *count {
                tracing::info!(
                    owner,
                    borrower,
                    wanted = count,
                    moved,
                    "lent fewer machines than agreed"
                );
            }
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
            let reclaim = matches!(t, Trade::Reclaim { .. });
            let mut held: Vec<Loan> = api
                .store
                .loans()
                .unwrap_or_default()
                .into_iter()
                .filter(|l| &l.owner == owner && &l.borrower == borrower)
                .collect();
            // Machines running none of its jobs first: they cost the borrower nothing (one
            // down is on its way in, or out after a failed step).
            let idle = |l: &Loan| {
                !states
                    .get(borrower.as_str())
                    .and_then(|s| s.get(&l.vm))
                    .is_some_and(|s| busy(s))
            };
            held.sort_by_key(|l| !idle(l));
            if !reclaim {
                held.retain(|l| idle(l));
            }
            let why = if reclaim {
                "reclaimed_by"
            } else {
                "returned_to"
            };
            for l in held.into_iter().take(*count) {
                match release(api, v, &l, Some(why)) {
                    Ok(()) => moved += 1,
                    Err(e) => errors.push(format!("taking {} back from {borrower}: {e:#}", l.host)),
                }
            }
        }
    }
    (moved, errors)
}

/// The provisioner's call for `vm` on `host`.
fn provision(
    v: &Viocluster,
    action: &str,
    vm: &PoolVm,
    host: &str,
    borrower: &DomainConfig,
    owner: &str,
) -> Result<()> {
    let p = &v.config.provisioner;
    let mut cmd = Command::new(p);
    cmd.arg(action)
        .env("VIOLIN_VM", vm.name.as_str())
        .env("VIOLIN_HOST", host)
        .env("VIOLIN_PORT", vm.port.as_str())
        .env("VIOLIN_MAC", vm.mac.to_string())
        .env(
            "VIOLIN_IP",
            vm.ip.map(|i| i.to_string()).unwrap_or_default(),
        )
        .env("VIOLIN_ENVIRONMENT", borrower.environment.as_str())
        .env("VIOLIN_OWNER", owner)
        .env("VIOLIN_BORROWER", borrower.name.as_str())
        .env("SLURM_CONF", &borrower.slurm_conf);
    output_within(&mut cmd, PROVISION_LIMIT)
        .with_context(|| format!("`{} {action}` for {} on {host}", p.display(), vm.name))?;
    Ok(())
}

/// Lends `host` (whose own node is `node`) of `o` to `b` as `vm`. The loan is recorded
/// first, so that a step that fails, or a controller that stops half-way, leaves a loan
/// the brokers take back (`release`) rather than a machine no one accounts for.
fn lend(
    api: &Api,
    v: &Viocluster,
    o: &DomainConfig,
    b: &DomainConfig,
    node: &str,
    host: &str,
    vm: &PoolVm,
) -> Result<()> {
    let specs = api.store.snapshot();
    let Some((_, spec)) = specs.get(b.environment.as_str()) else {
        bail!("environment {} is not applied", b.environment);
    };
    let loan = Loan {
        vm: vm.name.to_string(),
        owner: o.name.to_string(),
        borrower: b.name.to_string(),
        host: host.to_string(),
        node: node.to_string(),
        since_ms: now_ms(),
        added_host: !spec.hosts.contains_key(host),
    };
    api.store.put_loan(&loan)?;
    let steps = || -> Result<()> {
        let owner = Slurm(o);
        owner.set(node, "DRAIN", Some(&format!("{LENT}{}", b.name)))?;
        // The node was idle when the round read it; a job may have started since.
        let (state, _) = owner.node(node)?;
        if state != "drain" {
            bail!("{node} took a job of its own meanwhile ({state})");
        }
        provision(v, "start", vm, host, b, o.name.as_str())?;
        let address = api
            .store
            .hosts()?
            .into_iter()
            .find(|(n, _)| n == host)
            .and_then(|(_, r)| r.map(|r| r.address));
        let mac = vm.mac.to_string();
        let new = edit::NewVm {
            name: vm.name.as_str(),
            host,
            port: vm.port.as_str(),
            mac: &mac,
            ip: vm.ip,
            host_address: address,
        };
        api::rewrite_spec(api, b.environment.as_str(), |text| {
            edit::add_vm(text, &new).map_err(Into::into)
        })?;
        // Declared down until lent: a site whose ReturnToService does not bring a node
        // back when its slurmd registers needs this; on others it only comes first.
        if let Err(e) = Slurm(b).set(vm.name.as_str(), "RESUME", None) {
            tracing::info!(vm = %vm.name, error = format!("{e:#}"), "resuming a borrowed node");
        }
        Ok(())
    };
    if let Err(e) = steps() {
        return Err(match release(api, v, &loan, None) {
            Ok(()) => e,
            Err(r) => e.context(format!("undoing it failed too, retried next round: {r:#}")),
        });
    }
    tracing::info!(owner = %o.name, borrower = %b.name, host, vm = %vm.name, "machine lent");
    Ok(())
}

/// The reason an owner's node is drained while lent, before the borrower's name.
const LENT: &str = "lent_to_";

/// Takes a lent machine back, each step safe to repeat: the borrower's scheduler loses
/// the node (`down`: why; its job is requeued), the VM stops and leaves the environment
/// (with the host, if the loan added it), the owner's node resumes, the loan ends. A step
/// that fails keeps the loan, and a later round takes it back again.
fn release(api: &Api, v: &Viocluster, l: &Loan, down: Option<&str>) -> Result<()> {
    let (Some(o), Some(b)) = (v.domain(&l.owner), v.domain(&l.borrower)) else {
        bail!("the loan of {} names a domain no longer configured", l.vm);
    };
    let Some(vm) = b.pool.iter().find(|p| p.name.as_str() == l.vm) else {
        bail!("{} is no longer in {}'s pool", l.vm, b.name);
    };
    if let Some(why) = down {
        Slurm(b).set(&l.vm, "DOWN", Some(&format!("{why}_{}", o.name)))?;
    }
    provision(v, "stop", vm, &l.host, b, o.name.as_str())?;
    let specs = api.store.snapshot();
    if let Some((_, spec)) = specs.get(b.environment.as_str()) {
        if spec.vms.contains_key(l.vm.as_str()) {
            let others = spec.vms.iter().any(|(n, x)| n != &l.vm && x.host == l.host);
            let drop_host = l.added_host && !others;
            api::rewrite_spec(api, b.environment.as_str(), |text| {
                let text = edit::remove_vm(text, &l.vm)?;
                Ok(match drop_host {
                    true => edit::remove_host(&text, &l.host)?,
                    false => text,
                })
            })?;
        }
    }
    // Only a drain of ours: an operator's (maintenance, say) stays.
    let owner = Slurm(o);
    let (state, reason) = owner.node(&l.node)?;
    if (state.starts_with("drain") || state.starts_with("drng")) && reason.starts_with(LENT) {
        owner.set(&l.node, "RESUME", None)?;
    }
    api.store.remove_loan(&l.vm)?;
    tracing::info!(owner = %o.name, borrower = %b.name, host = %l.host, vm = %l.vm, why = down.unwrap_or("undone"), "machine taken back");
    Ok(())
}

/// Automatic rounds, every period.
pub fn run(api: Api) {
    let Some(v) = api.viocluster.clone() else {
        return;
    };
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_secs(v.config.period_s));
        if !api.leadership.leading() {
            continue;
        }
        if let Err(e) = round(&api, &v, "auto") {
            tracing::warn!(error = format!("{e:#}"), "brokering round");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"
period_s = 5
provisioner = "/usr/local/bin/provision"

[[domain]]
name = "d1"
environment = "c1"
slurm_conf = "/etc/slurm-c1/slurm.conf"
[[domain.pool]]
name = "b1"
port = "vb1"
mac = "02:00:00:00:0b:01"
ip = "10.1.0.101"

[[domain]]
name = "d2"
environment = "c2"
slurm_conf = "/etc/slurm-c2/slurm.conf"
slurm_via = ["ssh", "head2"]
[domain.policy]
lend_share = 0.25
reclaim_per_round = 1
"#;

    #[test]
    fn the_config_is_read_and_bad_fields_are_named() {
        let c = Config::parse(CONFIG).unwrap();
        assert_eq!(c.period_s, 5);
        assert_eq!(c.domains[0].pool[0].name.as_str(), "b1");
        assert_eq!(c.domains[1].policy.lend_share, 0.25);
        assert_eq!(c.domains[1].slurm_via, ["ssh", "head2"]);
        for (from, to, field) in [
            ("0.25", "1.5", "domain[1].policy.lend_share"),
            ("period_s = 5", "period_s = 0", "period_s"),
            ("\"c2\"", "\"c1\"", "domain[1].environment"),
            ("\"d2\"", "\"d1\"", "domain[1].name"),
            (
                "02:00:00:00:0b:01",
                "01:00:00:00:0b:01",
                "domain[0].pool[0].mac",
            ),
            (
                "reclaim_per_round = 1",
                "reclaim_per_round = 0",
                "domain[1].policy.reclaim_per_round",
            ),
            ("lend_share", "lend_shares", "domain[1].policy.lend_shares"),
        ] {
            let e = Config::parse(&CONFIG.replace(from, to)).unwrap_err();
            assert_eq!(e.field, field, "{from} -> {to}: {e}");
        }
    }

    fn loan(vm: &str, owner: &str, borrower: &str, node: &str) -> Loan {
        Loan {
            vm: vm.into(),
            owner: owner.into(),
            borrower: borrower.into(),
            host: "h".into(),
            node: node.into(),
            since_ms: 0,
            added_host: false,
        }
    }

    #[test]
    fn a_domain_is_read_from_its_scheduler() {
        let nodes =
            parse_nodes("n1,alloc\nn2,mix\nn3,idle\nn4,down*\nn5,drain\nb1,idle\nn3,idle\n");
        assert_eq!(nodes.len(), 6);
        let jobs = parse_jobs("12,R,2\n13,PD,3\n14,CG,1\n").unwrap();
        assert!(parse_jobs("12,R,two\n").is_err());
        let own: Vec<String> = ["n1", "n2", "n3", "n4", "n5"].map(String::from).into();
        // n5 is drained because d1 lent it; b1 is d1's borrowed VM at d3, idle.
        let loans = [loan("x1", "d1", "d2", "n5"), loan("b1", "d3", "d1", "n9")];
        let d = domain_state("d1", &own, &nodes, &jobs, &loans);
        // n4 does not answer; the lent n5 still counts.
        assert_eq!(d.physical, 4);
        assert_eq!(d.busy_physical, 2);
        // The completing job's node is on its way back.
        assert_eq!(d.demand, 5);
        assert_eq!(d.idle_borrowed, 1);
        // n = 5 - ((4 - 1) + 1) = 1.
        assert_eq!(broker::need(&d, 1, 1), 1);
    }
}
