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

/// A target the report checks: each Violin path's median over `baseline`'s median must be
/// at least `bound` (higher-is-better figures) or at most `bound` (lower-is-better).
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

    /// One line per MTU: the ratio of each Violin path, met or missed and by how much.
    fn evaluate(&self, r: &Results, better: Better) -> String {
        let op = match better {
            Better::Higher => ">=",
            Better::Lower => "<=",
        };
        let mut s = format!(
            "Target check: Violin / {} {op} {:.2}.",
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
                let met = match better {
                    Better::Higher => ratio >= self.bound,
                    Better::Lower => ratio <= self.bound,
                };
                let verdict = if met {
                    "met".to_string()
                } else {
                    format!("missed by {:.1}%", (ratio / self.bound - 1.0).abs() * 100.0)
                };
                let _ = write!(s, " MTU {mtu} {}: {ratio:.3} ({verdict});", p.label());
            }
        }
        s
    }
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
