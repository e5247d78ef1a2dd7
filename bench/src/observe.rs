//! The `observe` suite: what an operator watching with `violinctl observe` costs the
//! datapath (issue 14 part 3). Each repetition times the forwarding programs
//! (BPF_PROG_TEST_RUN, as `cost` does: deterministic where throughput on a shared
//! machine is not) and, on each Violin path, takes TCP with one stream and the 64-byte
//! UDP rate, each unobserved and, at once before or after, with an observer attached to
//! each of the path's hosts; the figure is the ratio of each such pair, so a machine's
//! drift between repetitions does not enter it.
use std::{fmt::Write as _, net::SocketAddr, process::Stdio, time::Duration};

use anyhow::{bail, Context, Result};

use crate::{
    cost, micro,
    paths::BenchLab,
    results::{Better, Metric, NetPath, Results},
};

/// The paths measured: observation is Violin's, in both port modes.
pub const PATHS: [NetPath; 2] = [NetPath::Violin, NetPath::ViolinXdp];

/// The figures taken in each half of a pair: id, title, unit, better.
const FIGURES: [(&str, &str, &str, Better); 3] = [
    ("tcp1", "TCP goodput, 1 stream", "Gbit/s", Better::Higher),
    (
        "udp64_rate",
        "UDP 64-byte frame rate",
        "kpps",
        Better::Higher,
    ),
    (
        "udp64_cpu",
        "CPU time per 64-byte frame",
        "ns",
        Better::Lower,
    ),
];

/// Test runs per program and frame in each half of a cost pair.
const COST_RUNS: usize = 5000;

/// The observed half's prefix, and the ratio's (observed / unobserved) suffix.
const OBSERVED: &str = "observed_";
const RATIO: &str = "_ratio";

/// The target: observed at most 2% worse than unobserved (a ratio of at least 0.98, or
/// for CPU per frame at most 1.02).
const TARGET: f64 = 0.02;

/// Every figure: the programs' costs, then the traffic's.
fn figures() -> impl Iterator<Item = (&'static str, &'static str, &'static str, Better)> {
    cost::METRICS
        .into_iter()
        .map(|(id, title)| (id, title, "ns", Better::Lower))
        .chain(FIGURES)
}

/// Samples each repetition records over all paths: every figure per path, each
/// unobserved, observed and as their ratio.
pub fn samples_per_rep() -> usize {
    PATHS.len() * (cost::METRICS.len() + FIGURES.len()) * 3
}

pub fn metrics() -> Vec<Metric> {
    let mut all = Vec::new();
    for (id, title, unit, better) in figures() {
        let m = |id: String, title: String, unit: &str, better| Metric {
            id,
            title,
            unit: unit.into(),
            better,
        };
        all.push(m(id.into(), format!("{title}, unobserved"), unit, better));
        all.push(m(
            format!("{OBSERVED}{id}"),
            format!("{title}, observed"),
            unit,
            better,
        ));
        all.push(m(
            format!("{id}{RATIO}"),
            format!("{title}: observed / unobserved"),
            "x",
            better,
        ));
    }
    all
}

/// One repetition on every path: (metric, path, value) in the order taken.
pub fn measure(
    bl: &BenchLab,
    rep: usize,
    secs: f64,
    port: &mut u16,
    mut each: impl FnMut(&str, NetPath, f64),
) -> Result<()> {
    let mut pair = |id: &str, path, unobserved: f64, observed: f64| {
        each(id, path, unobserved);
        each(&format!("{OBSERVED}{id}"), path, observed);
        each(&format!("{id}{RATIO}"), path, observed / unobserved);
    };
    // The programs of both paths at once, observed on all their hosts.
    let all: Vec<usize> = PATHS.iter().flat_map(|&p| bl.hosts(p)).collect();
    let observed_costs = || -> Result<Vec<(String, NetPath, f64)>> {
        let observing = Observing::attach(bl, &all)?;
        let costs = cost::measure(bl, COST_RUNS)?;
        observing.detach()?;
        Ok(costs)
    };
    let (unobserved, observed) = if rep.is_multiple_of(2) {
        (cost::measure(bl, COST_RUNS)?, observed_costs()?)
    } else {
        let observed = observed_costs()?;
        (cost::measure(bl, COST_RUNS)?, observed)
    };
    for ((id, path, u), (id2, path2, o)) in unobserved.into_iter().zip(observed) {
        anyhow::ensure!(
            id == id2 && path == path2,
            "the cost figures came in another order observed ({id2}) than not ({id})"
        );
        pair(&id, path, u, o);
    }
    let mut paths = PATHS;
    paths.rotate_left(rep % PATHS.len());
    for path in paths {
        let eps = bl.endpoints(path, 1);
        let (a, b) = (&eps[0], &eps[1]);
        let figures = |port: &mut u16| -> Result<[f64; 3]> {
            *port += 2;
            let tcp1 = micro::tcp(a, b, 1, secs, *port)?;
            let (kpps, cpu) = micro::udp64(a, b, secs, *port + 1)?;
            Ok([tcp1, kpps, cpu])
        };
        // Every other repetition observed first: drift within a pair cancels out.
        let observed_half = |port: &mut u16| -> Result<[f64; 3]> {
            let observing = Observing::attach(bl, &bl.hosts(path))?;
            let figures = figures(port)?;
            observing.detach()?;
            Ok(figures)
        };
        let (unobserved, observed) = if rep.is_multiple_of(2) {
            (figures(port)?, observed_half(port)?)
        } else {
            let observed = observed_half(port)?;
            (figures(port)?, observed)
        };
        for (i, (id, ..)) in FIGURES.iter().enumerate() {
            pair(id, path, unobserved[i], observed[i]);
        }
    }
    Ok(())
}

/// `violinctl -o json observe` attached to each of some hosts (every drop and the
/// default sample of forwarded frames, printed to nowhere): what an operator watching
/// costs the datapath.
pub struct Observing(Vec<std::process::Child>);

/// How long a daemon may keep describing after its observer went: it writes a batch a
/// second, or with no traffic a keep-alive line every 2 s, and the write after a closed
/// connection's first one fails; its reader notices within the next second.
const NOTICED_GONE: Duration = Duration::from_secs(6);

impl Observing {
    pub fn attach(bl: &BenchLab, hosts: &[usize]) -> Result<Observing> {
        let mut observers = Observing(Vec::new());
        let violinctl = bl.lab.sibling("violinctl");
        for &h in hosts {
            let api =
                SocketAddr::from((bl.lab.hosts[h].underlay_ip, violin_testbed::lab::API_PORT));
            let mut cmd = std::process::Command::new("ip");
            cmd.args([
                "netns",
                "exec",
                // The host's own namespace reaches its daemon whatever the switch has.
                &bl.lab.hosts[h].ns,
            ])
            .arg(&violinctl)
            .args([
                "-o",
                "json",
                "observe",
                "--daemon",
                &format!("http://{api}"),
            ]);
            // A lab without a controller leaves its daemons' API open.
            let token = bl.lab.daemon_token_file();
            if token.exists() {
                cmd.arg("--daemon-token-file").arg(token);
            }
            let log = std::fs::File::create(bl.lab.dir.join(format!("observe-h{h}.log")))?;
            let child = cmd
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .context("starting violinctl observe")?;
            observers.0.push(child);
        }
        // Each daemon switches describing on as an observer attaches; the second is
        // for violinctl to start and connect.
        std::thread::sleep(Duration::from_secs(1));
        for (c, h) in observers.0.iter_mut().zip(hosts) {
            if let Some(status) = c.try_wait()? {
                let log = bl.lab.dir.join(format!("observe-h{h}.log"));
                bail!(
                    "violinctl observe ended at once ({status}): {}",
                    std::fs::read_to_string(log).unwrap_or_default().trim()
                );
            }
        }
        Ok(observers)
    }

    /// Ends the observers, and waits until their daemons have stopped describing; fails
    /// when one had ended before (its half of the pair was not all observed).
    pub fn detach(mut self) -> Result<()> {
        for c in &mut self.0 {
            if let Some(status) = c.try_wait()? {
                bail!("violinctl observe ended while observed figures were taken ({status})");
            }
        }
        drop(self);
        std::thread::sleep(NOTICED_GONE);
        Ok(())
    }
}

impl Drop for Observing {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Whether a ratio's median meets the target, in the figure's direction.
fn verdict(ratio: Option<crate::results::Summary>, better: Better) -> &'static str {
    ratio.map_or("-", |x| {
        let met = match better {
            Better::Higher => x.median >= 1.0 - TARGET,
            Better::Lower => x.median <= 1.0 + TARGET,
        };
        if met {
            "met"
        } else {
            "missed"
        }
    })
}

/// The report: per figure, the median of every pair's ratio over both paths and MTUs
/// (what observing costs, with the pairs of all cells); then per MTU, figure and path,
/// the unobserved and observed medians and the median of that cell's ratios, against
/// the target.
pub fn markdown(r: &Results) -> String {
    let mut s = crate::report::header(r, "Observation's cost: violinctl observe attached");
    let _ = writeln!(
        s,
        "Each repetition takes a figure unobserved and, at once after (every other \
         repetition: before), observed (`violinctl \
         -o json observe` on each of the path's hosts, to /dev/null: every drop and the \
         default sample of forwarded frames, named by violind and streamed). The programs' \
         costs are kernel-timed test runs ({COST_RUNS} per frame, median, less an almost \
         empty program's), against the hosts' live maps; the traffic's figures are \
         measured on the lab and carry its noise. Cells: median \
         (min-max) over the repetitions; the ratio is the median of each pair's own ratio. \
         Target: observed at most {:.0}% worse than unobserved.\n",
        TARGET * 100.0
    );
    let cell = |x: Option<crate::results::Summary>, digits: usize| match x {
        Some(x) => format!("{:.d$} ({:.d$}-{:.d$})", x.median, x.min, x.max, d = digits),
        None => "-".into(),
    };
    let _ = writeln!(
        s,
        "First every pair of a figure together (both paths, every MTU): the figure's \
         verdict. Then each cell, with a verdict of its own, for a path or MTU that \
         misses alone; a cell's median carries the machine's noise, and the \
         decapsulation program's cells show how much, as observing does not touch that \
         program's work (it describes no forwarded frame there).\n"
    );
    let _ = writeln!(s, "| figure | pairs | observed / unobserved | target |");
    let _ = writeln!(s, "|---|---|---|---|");
    for (id, title, unit, better) in figures() {
        let all = r.summary_of_all(&format!("{id}{RATIO}"));
        let _ = writeln!(
            s,
            "| {title} ({unit}) | {} | {} | {} |",
            all.map_or(0, |x| x.n),
            cell(all, 3),
            verdict(all, better)
        );
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "| figure | MTU | path | unobserved | observed | observed / unobserved | target |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|");
    for (id, title, unit, better) in figures() {
        for mtu in r.mtus() {
            for path in PATHS {
                let ratio = r.summary(&format!("{id}{RATIO}"), mtu, path);
                let verdict = verdict(ratio, better);
                let _ = writeln!(
                    s,
                    "| {title} ({unit}) | {mtu} | {} | {} | {} | {} | {verdict} |",
                    path.label(),
                    cell(r.summary(id, mtu, path), 2),
                    cell(r.summary(&format!("{OBSERVED}{id}"), mtu, path), 2),
                    cell(ratio, 3),
                );
            }
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::results::{Machine, Sample};

    #[test]
    fn the_report_judges_the_median_ratio_by_the_figures_direction() {
        let sample = |metric: &str, rep, value| Sample {
            metric: metric.into(),
            mtu: 1500,
            path: NetPath::Violin,
            rep,
            value,
        };
        let r = Results {
            suite: "observe".into(),
            quick: true,
            started: String::new(),
            duration_s: 1.0,
            git_revision: "0".into(),
            machine: Machine::describe(),
            metrics: metrics(),
            samples: vec![
                sample("udp64_rate_ratio", 0, 0.97),
                sample("udp64_rate_ratio", 1, 0.99),
                sample("udp64_rate_ratio", 2, 0.985),
                sample("udp64_cpu_ratio", 0, 1.05),
                Sample {
                    path: NetPath::ViolinXdp,
                    ..sample("udp64_cpu_ratio", 0, 1.0)
                },
                Sample {
                    path: NetPath::ViolinXdp,
                    ..sample("udp64_cpu_ratio", 1, 0.99)
                },
                Sample {
                    mtu: 9000,
                    ..sample("udp64_cpu_ratio", 0, 1.01)
                },
            ],
            settings: Default::default(),
            profiles: Default::default(),
        };
        let md = markdown(&r);
        let row = |what: &str| {
            md.lines()
                .find(|l| l.starts_with(&format!("| {what}")) && l.contains("| Violin |"))
                .unwrap_or_else(|| panic!("no row for {what}:\n{md}"))
                .to_string()
        };
        let rate = row("UDP 64-byte frame rate");
        assert!(rate.contains("0.985 (0.970-0.990)"), "{rate}");
        assert!(rate.ends_with("| met |"), "{rate}");
        assert!(row("CPU time per 64-byte frame").ends_with("| missed |"));
        assert!(row("TCP goodput").ends_with("| - |"));
        // All pairs of a figure together: one cell missed, the figure met.
        let pooled = md
            .lines()
            .find(|l| l.starts_with("| CPU time per 64-byte frame (ns) | 4 |"))
            .unwrap_or_else(|| panic!("no pooled CPU row:\n{md}"));
        assert!(
            pooled.ends_with("| 1.005 (0.990-1.050) | met |"),
            "{pooled}"
        );
        let rate = md
            .lines()
            .find(|l| l.starts_with("| UDP 64-byte frame rate (kpps) | 3 |"))
            .unwrap_or_else(|| panic!("no pooled rate row:\n{md}"));
        assert!(rate.ends_with("| met |"), "{rate}");
    }
}
