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

fn fmt(v: f64) -> String {
    if v >= 100.0 {
        format!("{v:.0}")
    } else if v >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

pub fn markdown(r: &Results, title: &str, refs: &[Reference], notes: &str) -> String {
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
        let _ = writeln!(
            s,
            "| MTU | bare | Linux VXLAN | Violin | Violin / bare | Violin / VXLAN | VXLAN / bare |"
        );
        let _ = writeln!(s, "|---|---|---|---|---|---|---|");
        let mut any = false;
        for mtu in r.mtus() {
            let cell = |p: NetPath| {
                r.summary(&m.id, mtu, p)
                    .map(|x| format!("{} ({}-{})", fmt(x.median), fmt(x.min), fmt(x.max)))
                    .unwrap_or_else(|| "-".into())
            };
            let med = |p: NetPath| r.summary(&m.id, mtu, p).map(|x| x.median);
            let ratio = |a: NetPath, b: NetPath| match (med(a), med(b)) {
                (Some(x), Some(y)) if y > 0.0 => format!("{:.3}", x / y),
                _ => "-".into(),
            };
            if NetPath::ALL.iter().all(|p| med(*p).is_none()) {
                continue;
            }
            any = true;
            let _ = writeln!(
                s,
                "| {mtu} | {} | {} | {} | {} | {} | {} |",
                cell(NetPath::Bare),
                cell(NetPath::LinuxVxlan),
                cell(NetPath::Violin),
                ratio(NetPath::Violin, NetPath::Bare),
                ratio(NetPath::Violin, NetPath::LinuxVxlan),
                ratio(NetPath::LinuxVxlan, NetPath::Bare),
            );
        }
        if !any {
            let _ = writeln!(s, "| - | no samples | | | | | |");
        }
        for rf in refs.iter().filter(|rf| rf.metric == m.id) {
            let _ = writeln!(s, "\n{}", rf.text);
        }
        let _ = writeln!(s);
    }
    if !notes.is_empty() {
        let _ = writeln!(s, "## Notes\n\n{notes}");
    }
    s
}
