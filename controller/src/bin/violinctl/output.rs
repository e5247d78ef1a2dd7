//! How violinctl shows answers: `table` (the default), `wide` (more columns), `json` and
//! `yaml` (the API's bodies as they are, for scripts).
use anyhow::Result;
use serde::Serialize;
use violin_api::{
    observe::FlowEvent,
    output::yaml,
    rest::{
        AdaptPlan, AdaptStep, Adaptation, AppTopology, AuditEntry, BrokerRound, Brokers,
        Credential, EnvSummary, HostInfo, LinkInfo, ManagerDecision, ManagerRecord, MeasuredPair,
        Route, RuleInfo, Status, Trade, VmMove,
    },
    share::Interface,
    vm::{Migration, VmInfo, VmUsage},
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    Table,
    Wide,
    Json,
    Yaml,
}

impl Output {
    /// Whether this is for people (tables and text) rather than scripts.
    pub fn is_text(self) -> bool {
        matches!(self, Output::Table | Output::Wide)
    }
}

/// Prints `value` as JSON or YAML, or calls `text` to print it for people.
pub fn show<T: Serialize>(out: Output, value: &T, text: impl FnOnce(&T)) -> Result<()> {
    match out {
        Output::Json => println!("{}", serde_json::to_string_pretty(value)?),
        Output::Yaml => print!("{}", yaml(&serde_json::to_value(value)?)),
        Output::Table | Output::Wide => text(value),
    }
    Ok(())
}

/// Rows under a header, columns padded to their widest cell.
pub struct Table(Vec<Vec<String>>);

impl Table {
    pub fn new(header: &[&str]) -> Table {
        Table(vec![header.iter().map(|h| h.to_string()).collect()])
    }

    pub fn row(&mut self, cells: Vec<String>) {
        self.0.push(cells);
    }

    pub fn print(&self) {
        let widths: Vec<usize> = (0..self.0[0].len())
            .map(|c| self.0.iter().map(|r| r[c].len()).max().unwrap_or(0))
            .collect();
        for r in &self.0 {
            let line: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            println!("{}", line.join("  ").trim_end());
        }
    }
}

/// `header` with the `wide` columns appended when asked for.
fn header<'a>(out: Output, base: &[&'a str], wide: &[&'a str]) -> Vec<&'a str> {
    let mut h = base.to_vec();
    if out == Output::Wide {
        h.extend_from_slice(wide);
    }
    h
}

fn opt<T: ToString>(v: &Option<T>) -> String {
    v.as_ref().map_or("-".into(), |x| x.to_string())
}

pub fn envs(out: Output, envs: &[EnvSummary]) -> Result<()> {
    show(out, &envs, |envs| {
        let mut t = Table::new(&header(
            out,
            &["NAME", "VNI", "VMS", "HOSTS"],
            &["RESTRICTED", "LIMITS", "LINKS", "RULES"],
        ));
        for e in envs.iter() {
            let mut row = vec![
                e.name.to_string(),
                e.vni.to_string(),
                e.vms.to_string(),
                e.hosts.join(","),
            ];
            if out == Output::Wide {
                row.extend([
                    e.restricted.to_string(),
                    e.limits.to_string(),
                    e.links.to_string(),
                    e.rules.to_string(),
                ]);
            }
            t.row(row);
        }
        t.print();
    })
}

pub fn hosts(out: Output, hosts: &[HostInfo]) -> Result<()> {
    show(out, &hosts, |hosts| {
        let mut t = Table::new(&header(
            out,
            &["HOST", "ADDRESS", "VMS", "ENVIRONMENTS", "SYNC"],
            &["LAST SYNC"],
        ));
        for h in hosts.iter() {
            let mut row = vec![
                h.name.clone(),
                opt(&h.address),
                h.vms.to_string(),
                h.environments.join(","),
                h.sync_state(),
            ];
            if out == Output::Wide {
                row.push(
                    h.sync_latency_seconds
                        .map_or("-".into(), |s| format!("{:.1} ms", s * 1e3)),
                );
            }
            t.row(row);
        }
        t.print();
    })
}

pub fn links(out: Output, links: &[LinkInfo]) -> Result<()> {
    show(out, &links, |links| {
        let mut t = Table::new(&header(
            out,
            &["ENVIRONMENT", "VNI", "LINK", "TYPE", "ROLE", "ADDRESSES"],
            &["EXPLICIT"],
        ));
        for l in links.iter() {
            let mut row = vec![
                l.environment.clone(),
                l.vni.to_string(),
                l.hosts.join("-"),
                l.kind.clone(),
                l.role.as_str().to_string(),
                format!("{}-{}", l.addresses[0], l.addresses[1]),
            ];
            if out == Output::Wide {
                row.push(l.explicit.to_string());
            }
            t.row(row);
        }
        t.print();
    })
}

/// A rule's match with the VM's name first: `h1v1 (02:..)`, `not h1v1 (02:..)`.
fn named(matched: &str, vm: &Option<String>) -> String {
    match (vm, matched.strip_prefix("not ")) {
        (None, _) => matched.to_string(),
        (Some(n), Some(mac)) => format!("not {n} ({mac})"),
        (Some(n), None) => format!("{n} ({matched})"),
    }
}

pub fn rules(out: Output, rules: &[RuleInfo]) -> Result<()> {
    show(out, &rules, |rules| {
        let mut t = Table::new(&header(
            out,
            &["ENVIRONMENT", "HOST", "SRC", "DST", "TO", "PRIORITY"],
            &["RANK"],
        ));
        for r in rules.iter() {
            let to = match (&r.edge, &r.interface) {
                (Some(h), _) => format!("link {}-{h}", r.host),
                (None, i) => format!("interface {}", opt(i)),
            };
            let prio = if r.default {
                "default".to_string()
            } else {
                r.priority[1].to_string()
            };
            let mut row = vec![
                r.environment.clone(),
                r.host.clone(),
                named(&r.src.to_string(), &r.src_vm),
                named(&r.dst.to_string(), &r.dst_vm),
                to,
                prio,
            ];
            if out == Output::Wide {
                row.push(format!("{:?}", r.priority));
            }
            t.row(row);
        }
        t.print();
    })
}

pub fn interfaces(out: Output, ifaces: &[Interface]) -> Result<()> {
    show(out, &ifaces, |ifaces| {
        let mut t = Table::new(&["INTERFACE", "INDEX", "ROLE", "MAC", "MTU"]);
        for i in ifaces.iter() {
            t.row(vec![
                i.name.clone(),
                i.ifindex.to_string(),
                format!("{:?}", i.role).to_lowercase(),
                opt(&i.mac),
                opt(&i.mtu),
            ]);
        }
        t.print();
    })
}

pub fn route(out: Output, r: &Route) -> Result<()> {
    show(out, r, |r| {
        println!("{} -> {} in {}", r.src, r.dst, r.environment);
        for (i, h) in r.hops.iter().enumerate() {
            println!("  {}. {}: {} ({})", i + 1, h.host, h.action, h.decision);
        }
        println!("{}", r.outcome);
    })
}

fn seconds(v: Option<f64>) -> String {
    v.map_or("-".into(), |s| {
        if s < 1.0 {
            format!("{:.1} ms", s * 1e3)
        } else {
            format!("{s:.2} s")
        }
    })
}

/// One line on where a migration is, for following it.
pub fn progress(m: &Migration) -> String {
    let copied = if m.data_total_bytes > 0 && !m.phase.finished() {
        format!(
            " {:.0}% of {} MiB",
            100.0 * m.data_processed_bytes as f64 / m.data_total_bytes as f64,
            m.data_total_bytes >> 20
        )
    } else {
        String::new()
    };
    let phase = format!("{:?}", m.phase).to_lowercase();
    match &m.error {
        Some(e) => format!(
            "migration {} {} {}->{}: {phase}: {e}",
            m.id, m.vm, m.from, m.to
        ),
        None => format!(
            "migration {} {} {}->{}: {phase}{copied}",
            m.id, m.vm, m.from, m.to
        ),
    }
}

pub fn migrations(out: Output, list: &[Migration]) -> Result<()> {
    show(out, &list, |list| {
        let mut t = Table::new(&header(
            out,
            &[
                "ID",
                "VM",
                "ENV",
                "FROM",
                "TO",
                "PHASE",
                "TOTAL",
                "DOWNTIME",
                "RECONVERGENCE",
            ],
            &["COPIED", "ERROR"],
        ));
        for m in list.iter() {
            let mut row = vec![
                m.id.to_string(),
                m.vm.clone(),
                m.environment.clone(),
                m.from.clone(),
                m.to.clone(),
                if m.followed {
                    "followed".into()
                } else {
                    format!("{:?}", m.phase).to_lowercase()
                },
                seconds(m.total_seconds),
                seconds(m.downtime_seconds),
                seconds(m.reconvergence_seconds),
            ];
            if out == Output::Wide {
                row.push(format!(
                    "{}/{} MiB",
                    m.data_processed_bytes >> 20,
                    m.data_total_bytes >> 20
                ));
                row.push(opt(&m.error));
            }
            t.row(row);
        }
        t.print();
        if out != Output::Wide {
            for m in list.iter() {
                if let Some(e) = &m.error {
                    println!("migration {}: {e}", m.id);
                }
            }
        }
    })
}

pub fn vms(out: Output, list: &[VmInfo]) -> Result<()> {
    show(out, &list, |list| {
        let mut t = Table::new(&header(
            out,
            &["VM", "HOST", "ENV", "STATE", "CPU", "MEMORY"],
            &["MAC", "VCPUS", "PORTS"],
        ));
        for v in list.iter() {
            let mut row = vec![
                v.status.name.clone(),
                v.host.clone(),
                opt(&v.environment),
                v.status.state.as_str().to_string(),
                format!("{:.1} s", v.status.cpu_seconds),
                format!("{} MiB", v.status.memory_bytes >> 20),
            ];
            if out == Output::Wide {
                row.push(opt(&v.mac));
                row.push(v.status.vcpus.to_string());
                let ports: Vec<String> = v.status.ports.iter().map(|p| p.to_string()).collect();
                row.push(ports.join(","));
            }
            t.row(row);
        }
        t.print();
    })
}

/// VTTIF's view: the edge list, busiest first, then the matrix of intensities (VMs that
/// sent or received anything in the window; `.` for pairs below the threshold).
pub fn topology(out: Output, t: &AppTopology) -> Result<()> {
    show(out, t, |t| {
        println!(
            "{}: {} edges (window {} ms, threshold {}, {} changes)",
            t.environment,
            t.edges.len(),
            t.smoothing_ms,
            t.threshold,
            t.changes
        );
        let mut table = Table::new(&["SRC", "DST", "MBIT/S", "INTENSITY"]);
        for e in &t.edges {
            table.row(vec![
                e.src.clone(),
                e.dst.clone(),
                format!("{:.2}", e.bytes_per_second * 8.0 / 1e6),
                format!("{:.2}", e.intensity),
            ]);
        }
        table.print();
        let mut vms: Vec<&str> = t
            .matrix
            .iter()
            .flat_map(|e| [e.src.as_str(), e.dst.as_str()])
            .collect();
        vms.sort();
        vms.dedup();
        if vms.is_empty() {
            return;
        }
        println!();
        let mut header = vec!["FROM \\ TO"];
        header.extend(vms.iter().copied());
        let mut m = Table::new(&header);
        for a in &vms {
            let mut row = vec![a.to_string()];
            for b in &vms {
                let edge = t.edges.iter().find(|e| e.src == *a && e.dst == *b);
                row.push(edge.map_or(".".into(), |e| format!("{:.2}", e.intensity)));
            }
            m.row(row);
        }
        m.print();
    })
}

fn mbit(bytes_per_second: f64) -> String {
    format!("{:.2}", bytes_per_second * 8.0 / 1e6)
}

fn steps_table(steps: &[AdaptStep]) {
    let mut t = Table::new(&["ACTION", "LINK", "MBIT/S", "PAIRS", "REASON"]);
    for s in steps {
        t.row(vec![
            s.action.clone(),
            s.hosts.join("-"),
            mbit(s.bytes_per_second),
            s.pairs.join(","),
            s.reason.clone(),
        ]);
    }
    t.print();
}

pub fn adapt_plan(out: Output, p: &AdaptPlan) -> Result<()> {
    show(out, p, |p| {
        let links: Vec<String> = p.fast_paths.iter().map(|l| l.join("-")).collect();
        println!(
            "{}: star through {}, fast-path links {} of {}, {}",
            p.environment,
            p.proxy,
            if links.is_empty() {
                "none".to_string()
            } else {
                links.join(" ")
            },
            p.budget.map_or("no budget".into(), |b| b.to_string()),
            if p.auto { "automatic" } else { "on request" },
        );
        println!("\ndemand (host pairs the inferred topology asks fast paths for):");
        let mut t = Table::new(&["LINK", "MBIT/S", "PAIRS"]);
        for d in &p.demand {
            t.row(vec![
                d.hosts.join("-"),
                mbit(d.bytes_per_second),
                d.pairs.join(","),
            ]);
        }
        t.print();
        println!();
        if p.steps.is_empty() {
            println!("no changes: the overlay fits the inferred topology");
        } else {
            steps_table(&p.steps);
        }
        println!("\nmapping: {}", p.mapping);
        moves_table(&p.moves);
    })
}

fn moves_table(moves: &[VmMove]) {
    if moves.is_empty() {
        return;
    }
    let mut t = Table::new(&["MIGRATE", "FROM", "TO", "REASON"]);
    for m in moves {
        t.row(vec![
            m.vm.clone(),
            m.from.clone(),
            m.to.clone(),
            m.reason.clone(),
        ]);
    }
    t.print();
}

fn decision_tables(d: &ManagerDecision) {
    println!(
        "target utilisation {:.2}, balance {:.3} -> {:.3}",
        d.target_utilisation, d.balance_before, d.balance_after
    );
    let mut t = Table::new(&["DOMAIN", "CORES", "UTILISATION", "AFTER"]);
    for dom in &d.domains {
        t.row(vec![
            dom.name.clone(),
            format!("{:.2}", dom.capacity),
            format!("{:.2}", dom.utilisation_before),
            format!("{:.2}", dom.utilisation_after),
        ]);
    }
    t.print();
    let mut t = Table::new(&[
        "VM",
        "ENV",
        "HOST",
        "PREDICTED",
        "DESIRED",
        "CAP",
        "WEIGHT",
        "MEMORY",
    ]);
    for v in &d.vms {
        t.row(vec![
            v.vm.clone(),
            v.environment.clone(),
            v.host.clone(),
            v.predicted_cpu.map_or("-".into(), |p| format!("{p:.2}")),
            format!("{:.2}", v.desired_cpu),
            format!("{:.2}", v.cpu_cap),
            v.cpu_weight.to_string(),
            format!("{:.0} MiB", v.memory_mib),
        ]);
    }
    t.print();
    if !d.moves.is_empty() {
        let mut t = Table::new(&["MIGRATE", "ENV", "FROM", "TO", "REASON"]);
        for m in &d.moves {
            t.row(vec![
                m.vm.clone(),
                m.environment.clone(),
                m.from.clone(),
                m.to.clone(),
                m.reason.clone(),
            ]);
        }
        t.print();
    }
    for e in &d.explain {
        println!("why: {e}");
    }
}

/// What the adaptation manager would do now.
pub fn manager_decision(out: Output, d: &ManagerDecision) -> Result<()> {
    show(out, d, decision_tables)
}

/// The adaptation manager's decisions carried out.
pub fn manager_log(out: Output, list: &[ManagerRecord]) -> Result<()> {
    show(out, &list, |list| {
        if list.is_empty() {
            println!("no decisions carried out yet");
        }
        for r in list.iter() {
            println!(
                "#{} ({}), generation {}:",
                r.id,
                r.trigger,
                r.generation.map_or("-".into(), |g| g.to_string())
            );
            decision_tables(&r.decision);
            if !r.migrations.is_empty() {
                let ids: Vec<String> = r.migrations.iter().map(|i| i.to_string()).collect();
                println!(
                    "migrations started: {} (see `violinctl migrations`)",
                    ids.join(", ")
                );
            }
            for e in &r.errors {
                println!("migration refused: {e}");
            }
            println!();
        }
    })
}

fn trade_line(t: &Trade) -> String {
    match t {
        Trade::Lend {
            owner,
            borrower,
            count,
        } => format!("{owner} lends {count} to {borrower}"),
        Trade::Return {
            owner,
            borrower,
            count,
        } => format!("{borrower} returns {count} to {owner}"),
        Trade::Reclaim {
            owner,
            borrower,
            count,
        } => format!("{owner} reclaims {count} from {borrower}"),
    }
}

/// A brokering round: the domains as read, the trades agreed and carried out.
fn round(r: &BrokerRound) {
    println!("round #{} ({}):", r.id, r.trigger);
    let mut t = Table::new(&[
        "DOMAIN", "CLUSTER", "DEMAND", "PHYSICAL", "BUSY", "LENT", "BORROWED", "NEED",
    ]);
    for d in &r.domains {
        t.row(vec![
            d.name.clone(),
            d.environment.clone(),
            d.demand.to_string(),
            d.physical.to_string(),
            d.busy.to_string(),
            d.lent.to_string(),
            d.borrowed.to_string(),
            d.error
                .as_ref()
                .map_or(d.need.to_string(), |_| "unread".into()),
        ]);
    }
    t.print();
    for a in &r.agreed {
        let done = r.done.iter().find(|d| d.with_count(0) == a.with_count(0));
        println!(
            "agreed: {}; carried out: {}",
            trade_line(a),
            done.map_or(0, Trade::count)
        );
    }
    for e in &r.errors {
        println!("error: {e}");
    }
}

/// One round just run.
pub fn broker_round(out: Output, r: &BrokerRound) -> Result<()> {
    show(out, r, round)
}

/// VioCluster's loans and latest rounds (the last few in tables; all with -o json).
pub fn brokers(out: Output, b: &Brokers) -> Result<()> {
    show(out, b, |b| {
        let mut t = Table::new(&["VM", "OWNER", "BORROWER", "HOST", "OWNER'S NODE"]);
        for l in &b.loans {
            t.row(vec![
                l.vm.clone(),
                l.owner.clone(),
                l.borrower.clone(),
                l.host.clone(),
                l.node.clone(),
            ]);
        }
        if b.loans.is_empty() {
            println!("no machine lent");
        } else {
            t.print();
        }
        println!();
        let traded: Vec<&BrokerRound> = b
            .rounds
            .iter()
            .filter(|r| !r.agreed.is_empty() || !r.errors.is_empty())
            .collect();
        // The latest round shows the domains as they stand, with the last few that traded.
        for r in traded.iter().rev().take(3).rev() {
            round(r);
            println!();
        }
        match b.rounds.last() {
            Some(r) if r.agreed.is_empty() && r.errors.is_empty() => round(r),
            Some(_) => {}
            None => println!(
                "no round yet (every {} s; `violinctl brokers --round` runs one)",
                b.period_s
            ),
        }
    })
}

fn millis(ms: u64) -> String {
    let secs = ms / 1000;
    let (d, h, m, s) = (secs / 86400, secs / 3600 % 24, secs / 60 % 60, secs % 60);
    let (y, mo, day) = civil(d as i64);
    format!("{y:04}-{mo:02}-{day:02} {h:02}:{m:02}:{s:02}")
}

/// The calendar date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

pub fn credentials(out: Output, list: &[Credential]) -> Result<()> {
    show(out, &list, |list| {
        let mut t = Table::new(&["NAME", "ROLE", "ISSUED (UTC)", "BY"]);
        for c in list.iter() {
            t.row(vec![
                c.name.clone(),
                c.role.as_str().to_string(),
                millis(c.created_ms),
                c.created_by.clone(),
            ]);
        }
        t.print();
    })
}

pub fn audit(out: Output, list: &[AuditEntry]) -> Result<()> {
    show(out, &list, |list| {
        let mut t = Table::new(&["ID", "TIME (UTC)", "WHO", "ROLE", "REQUEST", "STATUS"]);
        for e in list.iter() {
            t.row(vec![
                e.id.to_string(),
                millis(e.at_ms),
                e.who.clone(),
                e.role.as_str().to_string(),
                format!("{} {}", e.method, e.path),
                e.status.to_string(),
            ]);
        }
        t.print();
    })
}

/// The VMs' use, the latest `last` samples each.
pub fn usage(out: Output, list: &[VmUsage], last: usize) -> Result<()> {
    show(out, &list, |list| {
        let mut t = Table::new(&["VM", "ENV", "HOST", "AGE", "CPU", "CAP", "MEMORY", "USED"]);
        let now = list
            .iter()
            .flat_map(|u| u.samples.last().map(|s| s.at_ms))
            .max()
            .unwrap_or(0);
        for u in list.iter() {
            for s in u.samples.iter().rev().take(last).rev() {
                t.row(vec![
                    u.vm.clone(),
                    opt(&u.environment),
                    u.host.clone(),
                    format!("-{:.0} s", now.saturating_sub(s.at_ms) as f64 / 1000.0),
                    format!("{:.2}", s.cpu_cores),
                    s.cpu_cap.map_or("-".into(), |c| format!("{c:.2}")),
                    format!("{:.0} MiB", s.memory_mib),
                    s.memory_used_mib
                        .map_or("-".into(), |m| format!("{m:.0} MiB")),
                ]);
            }
        }
        t.print();
    })
}

pub fn adaptations(out: Output, list: &[Adaptation]) -> Result<()> {
    show(out, &list, |list| {
        if list.is_empty() {
            println!("no adaptations yet");
        }
        for a in list.iter() {
            let ms = |x: Option<f64>| x.map_or("pending".into(), |m| format!("{m:.1} ms"));
            let after = a.traffic_after.map_or("pending".into(), mbit);
            println!(
                "#{} {} ({}), generation {}: reconfigured in {}, traffic {} -> {} Mbit/s",
                a.id,
                a.environment,
                a.trigger,
                a.generation.map_or("-".into(), |g| g.to_string()),
                ms(a.reconfigure_ms),
                mbit(a.traffic_before),
                after
            );
            if a.steps.is_empty() {
                println!("  no changes: the overlay fit the inferred topology");
            } else {
                steps_table(&a.steps);
            }
            moves_table(&a.moves);
            if !a.migrations.is_empty() {
                let ids: Vec<String> = a.migrations.iter().map(|i| i.to_string()).collect();
                println!("  migrations started: {}", ids.join(", "));
            }
            for r in &a.refused {
                println!("  migration refused: {r}");
            }
        }
    })
}

pub fn measurements(out: Output, m: &[MeasuredPair]) -> Result<()> {
    show(out, &m, |m| {
        let mut t = Table::new(&[
            "FROM",
            "TO",
            "RTT MS",
            "TRAIN MBIT/S",
            "PASSIVE MBIT/S",
            "LOST",
            "AGE S",
        ]);
        let f = |x: Option<f64>, scale: f64| x.map_or("-".into(), |v| format!("{:.2}", v * scale));
        for p in m.iter() {
            t.row(vec![
                p.from.clone(),
                p.to.clone(),
                f(p.rtt_us, 1e-3),
                f(p.bandwidth_bytes_per_second, 8e-6),
                f(p.passive_bytes_per_second, 8e-6),
                p.probes_lost.to_string(),
                format!("{:.1}", p.age_seconds),
            ]);
        }
        t.print();
    })
}

/// One live event on a line: for people, time (UTC), host, where, verdict and the
/// flow; for scripts, one JSON object per line (or a YAML document each).
pub fn event(out: Output, e: &FlowEvent, to: &mut impl std::io::Write) -> Result<()> {
    match out {
        Output::Json => writeln!(to, "{}", serde_json::to_string(e)?)?,
        Output::Yaml => write!(to, "---\n{}", yaml(&serde_json::to_value(e)?))?,
        Output::Table | Output::Wide => {
            let day = e.time.rem_euclid(86400.0);
            let time = format!(
                "{:02}:{:02}:{:06.3}",
                (day / 3600.0) as u32,
                (day % 3600.0 / 60.0) as u32,
                day % 60.0
            );
            let end = |vm: &Option<String>, mac: &str, ip: Option<std::net::Ipv4Addr>, port| {
                let who = match vm {
                    Some(n) => format!("{n} ({mac})"),
                    None => mac.to_string(),
                };
                match (ip, port) {
                    (Some(ip), Some(p)) => format!("{who} {ip}:{p}"),
                    (Some(ip), None) => format!("{who} {ip}"),
                    _ => who,
                }
            };
            let env = match (&e.environment, e.vni) {
                (Some(n), Some(v)) => format!("{n} (vni {v})"),
                (None, Some(v)) => format!("vni {v}"),
                _ => "-".into(),
            };
            writeln!(
                to,
                "{time}  {}  {}  {env}  {} {}  {} -> {}  {} {} B",
                e.host,
                e.port,
                e.verdict,
                e.reason.as_deref().unwrap_or(""),
                end(&e.src_vm, &e.src_mac, e.src_ip, e.src_port),
                end(&e.dst_vm, &e.dst_mac, e.dst_ip, e.dst_port),
                e.proto.as_deref().unwrap_or(&e.ethertype),
                e.len
            )?;
        }
    }
    Ok(())
}

/// `violinctl status`: one screen, the attention list last.
pub fn status(out: Output, s: &Status) -> Result<()> {
    show(out, s, |s| {
        let c = &s.controller;
        let role = c
            .replica
            .as_ref()
            .map_or(String::new(), |r| format!(", {} on {}", r.role, r.store));
        println!(
            "controller    {} (generation {}{role}; {})",
            c.status, c.generation, c.version
        );
        let synced = s.hosts.iter().filter(|h| h.in_sync).count();
        println!("hosts         {synced} of {} in sync", s.hosts.len());
        for h in s.hosts.iter().filter(|h| !h.in_sync) {
            println!("  {}: {}", h.name, h.sync_state());
        }
        let envs: Vec<String> = s
            .environments
            .iter()
            .map(|e| format!("{} (vni {}, {} VMs)", e.name, e.vni, e.vms))
            .collect();
        println!(
            "environments  {}",
            if envs.is_empty() {
                "none".into()
            } else {
                envs.join(", ")
            }
        );
        if s.drops.is_empty() {
            println!("drops         none in the last {} s", s.window_seconds);
        } else {
            println!("drops         in the last {} s:", s.window_seconds);
            let mut t = Table::new(&["  HOST", "REASON", "FRAMES"]);
            for d in &s.drops {
                t.row(vec![
                    format!("  {}", d.host),
                    d.reason.clone(),
                    d.frames.to_string(),
                ]);
            }
            t.print();
        }
        let fullest = s.maps.iter().max_by(|a, b| {
            let fill = |m: &violin_api::rest::MapFill| m.entries as f64 / m.capacity.max(1) as f64;
            fill(a).total_cmp(&fill(b))
        });
        match fullest {
            Some(m) => println!(
                "maps          fullest: {}'s {}, {} of {} ({:.0}%)",
                m.host,
                m.map,
                m.entries,
                m.capacity,
                100.0 * m.entries as f64 / m.capacity.max(1) as f64
            ),
            None => println!("maps          no host has reported yet"),
        }
        if s.migrations.is_empty() {
            println!("migrations    none under way");
        } else {
            println!("migrations    {} under way:", s.migrations.len());
            for m in &s.migrations {
                println!("  {}", progress(m));
            }
        }
        if s.attention.is_empty() {
            println!("all well");
        } else {
            println!("needs attention:");
            for a in &s.attention {
                println!("  - {a}");
            }
        }
    })
}
