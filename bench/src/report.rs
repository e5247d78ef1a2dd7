//! `report.md`: medians, ranges and ratios per metric and MTU, with the targets and the
//! papers' figures beside them.
use std::fmt::Write;

use crate::results::{Better, NetPath, Results};

/// A reference figure to print beside a metric: a target or a paper's number.
pub struct Reference {
    pub metric: String,
    pub text: String,
}

impl Reference {
    pub fn new(metric: impl Into<String>, text: impl Into<String>) -> Reference {
        Reference {
            metric: metric.into(),
            text: text.into(),
        }
    }
}

/// A target the report checks: each Violin path's ratio to `baseline` must be at least
/// `bound` (higher-is-better figures) or at most `bound` (lower-is-better), judged from
/// the ratios within each repetition (`judge`), not from the ratio of the medians, which
/// the report prints beside it and which can differ.
pub struct Target {
    pub metric: String,
    pub baseline: NetPath,
    pub bound: f64,
}

impl Target {
    pub fn new(metric: impl Into<String>, baseline: NetPath, bound: f64) -> Target {
        Target {
            metric: metric.into(),
            baseline,
            bound,
        }
    }

    /// One line per MTU: each Violin path's ratio of medians and what the repetitions'
    /// paired ratios say of the bound (met, missed, or not decided by this run).
    fn evaluate(&self, r: &Results, better: Better) -> String {
        let op = match better {
            Better::Higher => ">=",
            Better::Lower => "<=",
        };
        let mut s = format!(
            "Target check: Violin / {} {op} {:.2}:",
            self.baseline.label(),
            self.bound
        );
        for mtu in r.mtus() {
            for p in [NetPath::Violin, NetPath::ViolinXdp] {
                let (Some(x), Some(y)) = (
                    r.summary(&self.metric, mtu, p),
                    r.summary(&self.metric, mtu, self.baseline),
                ) else {
                    continue;
                };
                let ratio = x.median / y.median;
                let mut paired = r.paired_ratios(&self.metric, mtu, p, self.baseline);
                paired.sort_by(f64::total_cmp);
                let judged = judge(&paired, self.bound, better);
                let verdict = match (judged.verdict, judged.interval) {
                    (Verdict::Met, _) => "met".to_string(),
                    (Verdict::Missed, Some((lo, hi, _))) => {
                        // The interval's end nearest the bound: the least it is missed by.
                        let near = match better {
                            Better::Higher => hi,
                            Better::Lower => lo,
                        };
                        let by = (near / self.bound - 1.0).abs() * 100.0;
                        if by < 0.1 {
                            "missed by at least a little (under 0.1%)".to_string()
                        } else {
                            format!("missed by at least {by:.1}%")
                        }
                    }
                    _ => "not decided".to_string(),
                };
                let interval = match judged.interval {
                    Some((lo, hi, cover)) => format!(
                        "paired per repetition {lo:.3}-{hi:.3} ({:.0}% interval of their median, {} repetitions)",
                        cover * 100.0,
                        paired.len()
                    ),
                    None => "no repetition has both paths".to_string(),
                };
                let _ = write!(
                    s,
                    "\n- MTU {mtu} {}: {ratio:.3}, {interval}: **{verdict}**",
                    p.label()
                );
            }
        }
        s
    }
}

/// What a run's repetitions say of a target.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Verdict {
    Met,
    Missed,
    /// The interval straddles the bound, or too few repetitions to tell.
    NotDecided,
}

#[derive(Debug)]
pub struct Judged {
    pub verdict: Verdict,
    /// The interval of the paired ratios' median (low, high) and how often such an interval
    /// covers the true median.
    pub interval: Option<(f64, f64, f64)>,
}

/// Below this coverage an interval decides nothing. Five repetitions all on one side of
/// the bound (94%) are the least that decide: with three (75%) a verdict would be wrong one
/// time in eight when the truth lies on the bound, and a report makes dozens of checks.
pub const DECIDING_COVERAGE: f64 = 0.90;

/// Judges a target from the per-repetition ratios (sorted) by the interval of their median
/// (`median_interval`): met when the whole interval meets the bound, missed when none of it
/// does. On a shared machine whose speed moves by tens of percent between runs, a median
/// alone flips between met and missed from run to run.
pub fn judge(sorted: &[f64], bound: f64, better: Better) -> Judged {
    let interval = median_interval(sorted);
    let verdict = match interval {
        Some((lo, hi, cover)) if cover >= DECIDING_COVERAGE => {
            let meets = |v: f64| match better {
                Better::Higher => v >= bound,
                Better::Lower => v <= bound,
            };
            match (meets(lo), meets(hi)) {
                (true, true) => Verdict::Met,
                (false, false) => Verdict::Missed,
                _ => Verdict::NotDecided,
            }
        }
        _ => Verdict::NotDecided,
    };
    Judged { verdict, interval }
}

/// An interval for the median of `sorted` from its order statistics (the sign test's: no
/// assumption on the shape of the spread), `[x(k), x(n+1-k)]` with the largest k that
/// still covers 90%, or the whole range when even that covers less; with its coverage,
/// 1 - 2 P(Binomial(n, 1/2) < k).
pub fn median_interval(sorted: &[f64]) -> Option<(f64, f64, f64)> {
    let n = sorted.len();
    if n == 0 {
        return None;
    }
    // P(Binomial(n, 1/2) = i) for i = 0..n, built up term by term.
    let mut pmf = vec![0.5f64.powi(n as i32)];
    for i in 1..=n {
        pmf.push(pmf[i - 1] * (n + 1 - i) as f64 / i as f64);
    }
    let coverage = |k: usize| 1.0 - 2.0 * pmf[..k].iter().sum::<f64>();
    let mut k = 1;
    while k < n.div_ceil(2) && coverage(k + 1) >= 0.90 {
        k += 1;
    }
    Some((sorted[k - 1], sorted[n - k], coverage(k).max(0.0)))
}

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// A report's title, the run, the machine and the settings.
pub fn header(r: &Results, title: &str) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# {title}\n");
    let _ = writeln!(
        s,
        "Run {} ({}), {:.0} s, git {}.  \nMachine: {} CPUs ({}), {} GiB, kernel {}.\n",
        r.started,
        if r.quick { "--quick" } else { "full" },
        r.duration_s,
        r.git_revision,
        r.machine.cpus,
        r.machine.cpu_model,
        r.machine.memory_gib,
        r.machine.kernel
    );
    if !r.settings.is_empty() {
        let _ = writeln!(s, "Settings:");
        for (k, v) in &r.settings {
            let _ = writeln!(s, "- {k}: {v}");
        }
        let _ = writeln!(s);
    }
    s
}

pub fn markdown(
    r: &Results,
    title: &str,
    refs: &[Reference],
    targets: &[Target],
    notes: &str,
) -> String {
    let mut s = header(r, title);
    let _ = writeln!(
        s,
        "Each cell: median (min-max) over the repetitions, which ran interleaved (the paths \
         in rotating order) so that drift hits all alike. Ratios are of medians; for \
         lower-is-better metrics a ratio below 1 is better.\n"
    );
    for m in &r.metrics {
        let _ = writeln!(s, "## {} ({})\n", m.title, m.unit);
        let better = match m.better {
            Better::Higher => "higher is better",
            Better::Lower => "lower is better",
        };
        let _ = writeln!(s, "_{better}; plot: `{}.png`_\n", m.id);
        let ratios = [
            (NetPath::Violin, NetPath::Bare),
            (NetPath::ViolinXdp, NetPath::Bare),
            (NetPath::Violin, NetPath::LinuxVxlan),
            (NetPath::ViolinXdp, NetPath::LinuxVxlan),
            (NetPath::LinuxVxlan, NetPath::Bare),
        ];
        let mut head = String::from("| MTU |");
        for p in NetPath::ALL {
            let _ = write!(head, " {} |", p.label());
        }
        for (a, b) in ratios {
            let _ = write!(head, " {} / {} |", a.label(), b.label());
        }
        let _ = writeln!(s, "{head}");
        let _ = writeln!(
            s,
            "|---|{}",
            "---|".repeat(NetPath::ALL.len() + ratios.len())
        );
        let mut any = false;
        for mtu in r.mtus() {
            let med = |p: NetPath| r.summary(&m.id, mtu, p).map(|x| x.median);
            if NetPath::ALL.iter().all(|p| med(*p).is_none()) {
                continue;
            }
            any = true;
            let mut row = format!("| {mtu} |");
            for p in NetPath::ALL {
                let cell = r
                    .summary(&m.id, mtu, p)
                    .map(|x| format!("{} ({}-{})", fmt(x.median), fmt(x.min), fmt(x.max)))
                    .unwrap_or_else(|| "-".into());
                let _ = write!(row, " {cell} |");
            }
            for (a, b) in ratios {
                let cell = match (med(a), med(b)) {
                    (Some(x), Some(y)) if y > 0.0 => format!("{:.3}", x / y),
                    _ => "-".into(),
                };
                let _ = write!(row, " {cell} |");
            }
            let _ = writeln!(s, "{row}");
        }
        if !any {
            let _ = writeln!(s, "| - | no samples |");
        }
        for rf in refs.iter().filter(|rf| rf.metric == m.id) {
            let _ = writeln!(s, "\n{}", rf.text);
        }
        for t in targets.iter().filter(|t| t.metric == m.id) {
            let _ = writeln!(s, "\n{}", t.evaluate(r, m.better));
        }
        let _ = writeln!(s);
    }
    if !notes.is_empty() {
        let _ = writeln!(s, "## Notes\n\n{notes}");
    }
    if !r.profiles.is_empty() {
        let _ = writeln!(
            s,
            "\n## Where the time goes: kernel profiles\n\nperf record -a -g (CPU-clock \
             sampling, both cores) during each workload named below; the busiest symbols, by \
             share of all samples (idle included), and a link to each profile's flame \
             graph (SVG, inferno):\n"
        );
        for (what, text) in &r.profiles {
            let _ = writeln!(s, "### {what}\n\n```\n{}\n```\n", text.trim_end());
        }
    }
    s
}

/// One compact table over the suites' results, for bench/README.md.
pub fn summary(runs: &[Results]) -> String {
    let mut s = String::new();
    for r in runs {
        let _ = writeln!(
            s,
            "### {} ({}, {}, {:.0} s, git {})\n",
            r.suite,
            r.started,
            if r.quick { "--quick" } else { "full run" },
            r.duration_s,
            &r.git_revision[..r.git_revision.len().min(12)]
        );
        let _ = writeln!(
            s,
            "Machine: {} CPUs ({}), {} GiB, kernel {}.\n",
            r.machine.cpus, r.machine.cpu_model, r.machine.memory_gib, r.machine.kernel
        );
        let mut head = String::from("| figure | MTU |");
        for p in NetPath::ALL {
            let _ = write!(head, " {} |", p.label());
        }
        let _ = writeln!(
            s,
            "{head} Violin / bare | Violin XDP / bare | VXLAN / bare | Violin / VXLAN |"
        );
        let _ = writeln!(s, "|---|---|{}", "---|".repeat(NetPath::ALL.len() + 4));
        for m in &r.metrics {
            for mtu in r.mtus() {
                let med = |p: NetPath| r.summary(&m.id, mtu, p).map(|x| x.median);
                if NetPath::ALL.iter().all(|p| med(*p).is_none()) {
                    continue;
                }
                let mut row = format!("| {} ({}) | {mtu} |", m.title, m.unit);
                for p in NetPath::ALL {
                    let _ = write!(row, " {} |", med(p).map_or("-".into(), fmt));
                }
                let ratios = [
                    (NetPath::Violin, NetPath::Bare),
                    (NetPath::ViolinXdp, NetPath::Bare),
                    (NetPath::LinuxVxlan, NetPath::Bare),
                    (NetPath::Violin, NetPath::LinuxVxlan),
                ];
                for (p, base) in ratios {
                    let cell = match (med(p), med(base)) {
                        (Some(x), Some(y)) if y > 0.0 => format!("{:.3}", x / y),
                        _ => "-".into(),
                    };
                    let _ = write!(row, " {cell} |");
                }
                let _ = writeln!(s, "{row}");
            }
        }
        let _ = writeln!(s);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_interval_of_few_repetitions_is_their_range() {
        let (lo, hi, cover) = median_interval(&[1.0, 2.0, 3.0, 4.0, 5.0]).unwrap();
        assert_eq!((lo, hi), (1.0, 5.0));
        assert!((cover - 0.9375).abs() < 1e-9, "{cover}");
        let (lo, hi, cover) = median_interval(&[1.0, 2.0, 3.0]).unwrap();
        assert_eq!((lo, hi), (1.0, 3.0));
        assert!((cover - 0.75).abs() < 1e-9, "{cover}");
        assert!(median_interval(&[]).is_none());
    }

    #[test]
    fn the_median_interval_narrows_while_it_still_covers_ninety_percent() {
        let nine: Vec<f64> = (1..=9).map(f64::from).collect();
        let (lo, hi, cover) = median_interval(&nine).unwrap();
        // P(B(9, 1/2) <= 1) = 10/512: [x(2), x(8)] covers 96%; [x(3), x(7)] only 82%.
        assert_eq!((lo, hi), (2.0, 8.0));
        assert!((cover - (1.0 - 20.0 / 512.0)).abs() < 1e-9, "{cover}");
        let many: Vec<f64> = (1..=40).map(f64::from).collect();
        let (lo, hi, cover) = median_interval(&many).unwrap();
        assert!(cover >= 0.90 && lo > 1.0 && hi < 40.0, "{lo}-{hi} {cover}");
    }

    #[test]
    fn a_constant_lead_under_drift_is_decided_though_the_ranges_overlap() {
        // Violin 10% ahead of its baseline in each repetition while the machine's speed
        // moves by half between repetitions: the ranges (50-100 against 55-110) overlap,
        // the paired ratios do not.
        let base = [100.0, 80.0, 60.0, 50.0, 90.0];
        let mut paired: Vec<f64> = base.iter().map(|b| (b * 1.1) / b).collect();
        paired.sort_by(f64::total_cmp);
        assert_eq!(judge(&paired, 1.0, Better::Higher).verdict, Verdict::Met);
        assert_eq!(judge(&paired, 1.2, Better::Higher).verdict, Verdict::Missed);
        assert_eq!(judge(&paired, 1.05, Better::Lower).verdict, Verdict::Missed);
        assert_eq!(judge(&paired, 1.2, Better::Lower).verdict, Verdict::Met);
    }

    #[test]
    fn a_target_inside_the_interval_or_too_few_repetitions_decide_nothing() {
        let straddles = [0.95, 0.98, 1.01, 1.03, 1.04];
        assert_eq!(
            judge(&straddles, 1.0, Better::Higher).verdict,
            Verdict::NotDecided
        );
        // Three or four repetitions all above the bound: 75% and 88% coverage decide
        // nothing; five (94%) do.
        let above = [1.2, 1.3, 1.4, 1.5, 1.6];
        for n in 0..5 {
            assert_eq!(
                judge(&above[..n], 1.0, Better::Higher).verdict,
                Verdict::NotDecided,
                "{n} repetitions"
            );
        }
        assert_eq!(judge(&above, 1.0, Better::Higher).verdict, Verdict::Met);
    }

    fn results_of(better: Better, samples: Vec<(NetPath, usize, f64)>) -> Results {
        use crate::results::{Machine, Metric, Sample};
        Results {
            suite: "micro".into(),
            quick: false,
            started: String::new(),
            duration_s: 0.0,
            git_revision: String::new(),
            machine: Machine::describe(),
            metrics: vec![Metric {
                id: "m".into(),
                title: "figure".into(),
                unit: "u".into(),
                better,
            }],
            samples: samples
                .into_iter()
                .map(|(path, rep, value)| Sample {
                    metric: "m".into(),
                    mtu: 1500,
                    path,
                    rep,
                    value,
                })
                .collect(),
            settings: Default::default(),
            profiles: Default::default(),
        }
    }

    #[test]
    fn ratios_are_paired_by_repetition() {
        use NetPath::{LinuxVxlan as L, Violin as V};
        // Listed out of order; repetition 2 has two Violin samples (their median counts),
        // repetition 5 has no baseline (left out).
        let r = results_of(
            Better::Higher,
            vec![
                (V, 1, 12.0),
                (L, 0, 10.0),
                (L, 1, 8.0),
                (V, 0, 11.0),
                (L, 2, 4.0),
                (V, 2, 4.0),
                (V, 2, 6.0),
                (V, 5, 99.0),
            ],
        );
        let got = r.paired_ratios("m", 1500, V, L);
        assert_eq!(got, [1.1, 1.5, 1.25]);
    }

    #[test]
    fn a_report_line_gives_the_paired_interval_and_the_verdict() {
        use NetPath::{LinuxVxlan as L, Violin as V};
        let reps = [
            (10.0, 1.05),
            (5.0, 1.10),
            (8.0, 1.02),
            (9.0, 1.04),
            (7.0, 1.08),
        ];
        let mut samples = Vec::new();
        for (rep, (base, ratio)) in reps.into_iter().enumerate() {
            samples.push((L, rep, base));
            samples.push((V, rep, base * ratio));
        }
        let r = results_of(Better::Higher, samples.clone());
        let line = Target::new("m", L, 1.0).evaluate(&r, Better::Higher);
        assert!(
            line.contains("paired per repetition 1.020-1.100 (94% interval of their median, 5 repetitions): **met**"),
            "{line}"
        );
        let line = Target::new("m", L, 1.2).evaluate(&r, Better::Higher);
        // The interval's end nearest the bound, 1.10, is 8.3% short of 1.2.
        assert!(line.contains("**missed by at least 8.3%**"), "{line}");
        // No Violin XDP samples: no line for it.
        assert!(!line.contains("Violin XDP"), "{line}");
        // A time (lower is better) 2-10% above its baseline's misses a bound of 1.0.
        let r = results_of(Better::Lower, samples);
        let line = Target::new("m", L, 1.0).evaluate(&r, Better::Lower);
        assert!(line.contains("**missed by at least 2.0%**"), "{line}");
    }
}
