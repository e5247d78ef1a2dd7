//! The `adaptation` suite: the thesis's simulations, on the controller's own decision code.
//! Chapter 6's scenarios 1 and 2 through the adaptation manager (`scenarios`), and
//! chapter 5's VioCluster trade between two clusters over SWF traces (`viocluster`): the
//! shipped synthetic pairs, or any two traces given with `--swf A,B`.
use std::{fmt::Write as _, path::Path};

use anyhow::{Context, Result};
use controller::broker::Policy;
use serde::Serialize;

use crate::{
    scenarios::{self, Scenario},
    swf,
    timeline::{self, Bar},
    viocluster::{self, Cluster, Outcome},
};

#[derive(Serialize)]
pub struct ScenarioResult {
    pub scenario: Scenario,
    pub without: scenarios::Run,
    pub with: scenarios::Run,
}

#[derive(Serialize)]
pub struct TradeResult {
    pub name: String,
    pub about: String,
    pub traces: [String; 2],
    pub nodes: [usize; 2],
    pub alone: Outcome,
    pub shared: Outcome,
}

#[derive(Serialize)]
pub struct Results {
    pub revision: String,
    pub started: String,
    pub manager: scenarios::SimParams,
    pub broker: viocluster::SimParams,
    pub scenarios: Vec<ScenarioResult>,
    pub trades: Vec<TradeResult>,
}

/// A trace pair to simulate: name, description, the traces' paths, and per cluster its
/// size and jobs.
type Pair = (String, String, [String; 2], [(usize, Vec<swf::Job>); 2]);

fn pct(without: f64, with: f64) -> f64 {
    (with / without - 1.0) * 100.0
}

/// Runs every simulation, reporting each as it ends.
pub fn run(
    swf: Option<&[std::path::PathBuf]>,
    mut step: impl FnMut(&str),
) -> Result<(Vec<ScenarioResult>, Vec<TradeResult>)> {
    let p = scenarios::SimParams::default();
    let mut out = Vec::new();
    for sc in [scenarios::scenario1(), scenarios::scenario2()] {
        let without = scenarios::run(&sc, &p, false);
        let with = scenarios::run(&sc, &p, true);
        step(&format!(
            "{}: average {:+.0}%, overall {:+.0}% with adaptation ({} migrations)",
            sc.name,
            pct(without.average_s, with.average_s),
            pct(without.overall_s, with.overall_s),
            with.migrations.len()
        ));
        out.push(ScenarioResult {
            scenario: sc,
            without,
            with,
        });
    }
    let bp = viocluster::SimParams::default();
    let mut pairs: Vec<Pair> = Vec::new();
    match swf {
        Some([a, b]) => {
            // Jobs ask for processors, so the machine's size is its MaxProcs (else
            // MaxNodes, else the largest job).
            let load = |path: &Path| -> Result<(usize, Vec<swf::Job>)> {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("--swf: reading {}", path.display()))?;
                let jobs = swf::parse(&text, &path.display().to_string())?;
                let header = |key: &str| {
                    text.lines().find_map(|l| {
                        l.trim_start_matches(';')
                            .trim()
                            .strip_prefix(key)
                            .and_then(|v| v.trim().parse::<usize>().ok())
                    })
                };
                let size = header("MaxProcs:")
                    .or_else(|| header("MaxNodes:"))
                    .unwrap_or_else(|| jobs.iter().map(|j| j.nodes).max().unwrap_or(1));
                Ok((size, jobs))
            };
            pairs.push((
                "given".into(),
                "the traces given with --swf".into(),
                [a.display().to_string(), b.display().to_string()],
                [load(a)?, load(b)?],
            ));
        }
        Some(other) => anyhow::bail!("--swf takes two traces, A,B; got {}", other.len()),
        None => {
            for (name, about, a, b) in swf::pairs() {
                let load = |m: &swf::Model| -> Result<(usize, Vec<swf::Job>)> {
                    let f = swf::trace_dir().join(format!("{}.swf", m.name));
                    Ok((
                        m.nodes,
                        swf::load(&f).with_context(|| format!("the shipped trace {}", m.name))?,
                    ))
                };
                pairs.push((
                    name.into(),
                    about.into(),
                    [
                        format!("bench/traces/{}.swf", a.name),
                        format!("bench/traces/{}.swf", b.name),
                    ],
                    [load(&a)?, load(&b)?],
                ));
            }
        }
    }
    let mut trades = Vec::new();
    for (name, about, traces, [(na, ja), (nb, jb)]) in pairs {
        let label = |t: &str| {
            Path::new(t)
                .file_stem()
                .map(|s| s.to_string_lossy().to_string())
                .unwrap_or_else(|| t.to_string())
        };
        let (mut first, second) = (label(&traces[0]), label(&traces[1]));
        if first == second {
            // Brokers know each other by name.
            first.push_str("-a");
        }
        let clusters = vec![
            Cluster {
                name: first,
                nodes: na,
                jobs: ja,
                policy: Policy::default(),
            },
            Cluster {
                name: second,
                nodes: nb,
                jobs: jb,
                policy: Policy::default(),
            },
        ];
        let alone = viocluster::run(&clusters, &bp, false);
        let shared = viocluster::run(&clusters, &bp, true);
        step(&format!(
            "viocluster {name}: mean completion {} {:+.0}%, {} {:+.0}% with sharing ({} trades)",
            clusters[0].name,
            pct(
                alone.clusters[0].mean_completion_s,
                shared.clusters[0].mean_completion_s
            ),
            clusters[1].name,
            pct(
                alone.clusters[1].mean_completion_s,
                shared.clusters[1].mean_completion_s
            ),
            shared.trades
        ));
        trades.push(TradeResult {
            name,
            about,
            traces,
            nodes: [na, nb],
            alone,
            shared,
        });
    }
    Ok((out, trades))
}

/// The report and the plots.
pub fn write(r: &Results, dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("results.json"), serde_json::to_vec_pretty(r)?)?;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Adaptation: the thesis's simulations on Violin's decision code\n\nRevision {}, started {}. \
         Simulated time: these figures do not depend on the machine.\n",
        r.revision, r.started
    );
    let _ = writeln!(
        md,
        "## Adaptation manager: scenarios 1 and 2 (Ruth 2007, section 6.4)\n\n\
         Model: every host one core; an environment's VMs are coupled (it advances at its slowest \
         VM's pace); hosts share their core by weight; the monitor samples every {} s; the manager \
         (`controller::manager::decide`, as in the live controller) runs every {} s with window {}, \
         alpha {:.3}, beta {}; a migration stalls its environment {} s (thesis, figure 6.3).\n",
        r.manager.sample_s,
        r.manager.period_s,
        r.manager.manager.window,
        r.manager.manager.alpha,
        r.manager.manager.beta,
        r.manager.migration_s
    );
    for s in &r.scenarios {
        let _ = writeln!(md, "### {}\n", s.scenario.title);
        let _ = writeln!(
            md,
            "![timeline]({0}-timeline.png)\n\n![times]({0}-times.png)\n",
            s.scenario.name
        );
        let _ = writeln!(
            md,
            "| | without (min) | with (min) | change | thesis |\n|---|---|---|---|---|"
        );
        for ((env, a), (_, b)) in s.without.times_s.iter().zip(&s.with.times_s) {
            let _ = writeln!(
                md,
                "| {env} | {:.1} | {:.1} | {:+.0}% | |",
                a / 60.0,
                b / 60.0,
                pct(*a, *b)
            );
        }
        for (label, a, b, paper) in [
            (
                "average time",
                s.without.average_s,
                s.with.average_s,
                s.scenario.paper_average_pct,
            ),
            (
                "overall time",
                s.without.overall_s,
                s.with.overall_s,
                s.scenario.paper_overall_pct,
            ),
        ] {
            let _ = writeln!(
                md,
                "| {label} | {:.1} | {:.1} | {:+.0}% | {paper:+.0}% |",
                a / 60.0,
                b / 60.0,
                pct(a, b)
            );
        }
        let _ = writeln!(md);
        let _ = writeln!(md, "The manager's environment moves:\n");
        for (t, why) in &s.with.reasons {
            let _ = writeln!(md, "- {:.1} min: {why}", t / 60.0);
        }
        let vm_moves = s.with.migrations.len();
        let _ = writeln!(md, "\n{vm_moves} VM migrations in all.\n");
        scenario_plots(s, dir)?;
    }
    let _ = writeln!(
        md,
        "## VioCluster: machine trading over traces (Ruth 2007, section 5.5.2)\n\n\
         Model: per cluster, first come first served with first-fit backfilling, never mixing own and \
         borrowed machines; brokers (`controller::broker::trade`, default policies: borrow what the \
         queue needs, lend up to half of the idle machines, reclaim at once) act every {} s; a lent \
         machine boots a VM in {} s, runs jobs {:.0}% slower, halts in {} s (the prototype's \
         measurements). Thesis: the spiky cluster's peaks nearly vanish, the lender is not \
         penalised; with coinciding or low demand little changes either way.\n",
        r.broker.broker_s,
        r.broker.boot_s,
        (r.broker.vm_slowdown - 1.0) * 100.0,
        r.broker.halt_s
    );
    let _ = writeln!(
        md,
        "| pair | cluster | nodes | jobs | mean completion alone (h) | shared (h) | change | preempted |\n|---|---|---|---|---|---|---|---|"
    );
    for t in &r.trades {
        for (i, (a, s)) in t.alone.clusters.iter().zip(&t.shared.clusters).enumerate() {
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {:.2} | {:.2} | {:+.0}% | {} |",
                t.name,
                a.name,
                t.nodes[i],
                a.jobs,
                a.mean_completion_s / 3600.0,
                s.mean_completion_s / 3600.0,
                pct(a.mean_completion_s, s.mean_completion_s),
                s.preempted
            );
        }
    }
    let _ = writeln!(md);
    for t in &r.trades {
        let _ = writeln!(
            md,
            "### {}: {}\n\nTraces {} and {}; {} trades.\n\n![demand](viocluster-{n}-demand.png)\n\n![borrowed](viocluster-{n}-borrowed.png)\n\n![completion](viocluster-{n}-completion.png)\n",
            t.name,
            t.about,
            t.traces[0],
            t.traces[1],
            t.shared.trades,
            n = t.name
        );
        trade_plots(t, dir)?;
    }
    std::fs::write(dir.join("report.md"), md)?;
    Ok(())
}

fn scenario_plots(s: &ScenarioResult, dir: &Path) -> Result<()> {
    let rows: Vec<String> = s.scenario.envs.iter().map(|e| e.name.clone()).collect();
    let places: Vec<String> = s.scenario.domains.iter().map(|(d, _)| d.clone()).collect();
    fn bars(run: &scenarios::Run) -> Vec<Bar<'_>> {
        run.timeline
            .iter()
            .map(|sp| Bar {
                row: &sp.env,
                from_s: sp.from_s,
                to_s: sp.to_s,
                at: &sp.at,
            })
            .collect()
    }
    timeline::gantt(
        &dir.join(format!("{}-timeline.png", s.scenario.name)),
        &format!("{}: where each environment runs", s.scenario.name),
        &rows,
        &places,
        &[
            ("without adaptation", bars(&s.without)),
            ("with adaptation", bars(&s.with)),
        ],
    )?;
    let mut labels = rows.clone();
    labels.push("average".into());
    labels.push("overall".into());
    let times = |run: &scenarios::Run| -> Vec<f64> {
        run.times_s
            .iter()
            .map(|(_, t)| t / 60.0)
            .chain([run.average_s / 60.0, run.overall_s / 60.0])
            .collect()
    };
    timeline::grouped_bars(
        &dir.join(format!("{}-times.png", s.scenario.name)),
        &format!("{}: execution time", s.scenario.name),
        "minutes",
        &labels,
        &[
            ("without adaptation", times(&s.without)),
            ("with adaptation", times(&s.with)),
        ],
    )
}

fn trade_plots(t: &TradeResult, dir: &Path) -> Result<()> {
    let mut demand = Vec::new();
    let mut completion = Vec::new();
    for (a, s) in t.alone.clusters.iter().zip(&t.shared.clusters) {
        demand.push((format!("{} alone", a.name), a.demand.clone()));
        demand.push((format!("{} sharing", s.name), s.demand.clone()));
        completion.push((format!("{} alone", a.name), a.completion.clone()));
        completion.push((format!("{} sharing", s.name), s.completion.clone()));
    }
    timeline::lines(
        &dir.join(format!("viocluster-{}-demand.png", t.name)),
        &format!("{}: demand (nodes the queue asks for)", t.name),
        "nodes",
        &demand,
    )?;
    let names: Vec<&str> = t.alone.clusters.iter().map(|c| c.name.as_str()).collect();
    timeline::lines(
        &dir.join(format!("viocluster-{}-borrowed.png", t.name)),
        &format!(
            "{}: machines {} borrows from {} (negative: the reverse)",
            t.name,
            names.first().unwrap_or(&"a"),
            names.get(1).unwrap_or(&"b")
        ),
        "machines",
        &[("borrowed".to_string(), t.shared.borrowed.clone())],
    )?;
    timeline::lines(
        &dir.join(format!("viocluster-{}-completion.png", t.name)),
        &format!("{}: mean time from submission to completion", t.name),
        "hours",
        &completion,
    )
}
