//! Standard Workload Format (the Parallel Workloads Archive's): reading any trace, and the
//! synthetic traces the VioCluster simulation ships, from a documented workload model.
//!
//! The model, per cluster of `nodes` machines over `hours`:
//! - arrivals are Poisson, at a base rate chosen for the offered load `load` (the share of
//!   the cluster the jobs would keep busy), multiplied by `factor` inside each spike
//!   `(from_h, to_h, factor)`;
//! - a job asks for 2^k nodes, k uniform over 0..=log2(nodes / 4) (real traces favour
//!   powers of two and small jobs);
//! - its run time is log-uniform between 5 minutes and 8 hours, and it requests 1.5x that.
//!
//! The offered load is then `rate * E[nodes] * E[runtime] / nodes`. Every trace comes
//! from a fixed seed, so the files under bench/traces/ are reproducible (a test checks).
use std::{fmt::Write as _, path::Path};

use anyhow::{bail, Context, Result};

/// A job as the simulation needs it.
#[derive(Clone, Debug, PartialEq)]
pub struct Job {
    pub id: u64,
    pub submit_s: f64,
    pub runtime_s: f64,
    pub nodes: usize,
}

/// Parses SWF text: 18 whitespace-separated fields per job, `;` comments. Jobs without a
/// run time or a size (-1) are skipped, as the archive's cleaned traces intend.
pub fn parse(text: &str, what: &str) -> Result<Vec<Job>> {
    let mut jobs = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.split(';').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 18 {
            bail!(
                "{what}:{}: {} fields, an SWF job line has 18",
                i + 1,
                f.len()
            );
        }
        let num = |k: usize, name: &str| -> Result<f64> {
            f[k].parse::<f64>()
                .ok()
                .filter(|v| v.is_finite())
                .with_context(|| {
                    format!(
                        "{what}:{}: field {} ({name}) {:?} is not a number",
                        i + 1,
                        k + 1,
                        f[k]
                    )
                })
        };
        let id = num(0, "job number")? as u64;
        let submit = num(1, "submit time")?;
        let run = num(3, "run time")?;
        let allocated = num(4, "allocated processors")?;
        let requested = num(7, "requested processors")?;
        let nodes = if requested > 0.0 {
            requested
        } else {
            allocated
        };
        if run < 0.0 || nodes <= 0.0 || submit < 0.0 {
            continue;
        }
        jobs.push(Job {
            id,
            submit_s: submit,
            runtime_s: run,
            nodes: nodes as usize,
        });
    }
    jobs.sort_by(|a, b| a.submit_s.total_cmp(&b.submit_s).then(a.id.cmp(&b.id)));
    Ok(jobs)
}

pub fn load(path: &Path) -> Result<Vec<Job>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    parse(&text, &path.display().to_string())
}

/// A synthetic cluster's workload (see the module's model).
#[derive(Clone, Debug)]
pub struct Model {
    pub name: &'static str,
    pub about: &'static str,
    pub nodes: usize,
    pub hours: f64,
    pub load: f64,
    pub spikes: Vec<(f64, f64, f64)>,
    pub seed: u64,
}

const MIN_RUN_S: f64 = 300.0;
const MAX_RUN_S: f64 = 8.0 * 3600.0;

/// splitmix64: small, seedable, good enough for a workload model.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^= z >> 31;
        (z >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl Model {
    fn max_k(&self) -> u32 {
        (self.nodes / 4).max(1).ilog2()
    }

    /// Jobs per hour outside spikes for the model's offered load.
    pub fn base_rate(&self) -> f64 {
        let k = self.max_k();
        let mean_nodes = (0..=k).map(|i| (1u64 << i) as f64).sum::<f64>() / (k + 1) as f64;
        let mean_run_h = (MAX_RUN_S - MIN_RUN_S) / (MAX_RUN_S / MIN_RUN_S).ln() / 3600.0;
        self.load * self.nodes as f64 / (mean_nodes * mean_run_h)
    }

    pub fn generate(&self) -> Vec<Job> {
        let mut rng = Rng(self.seed);
        let base = self.base_rate();
        let peak = self.spikes.iter().map(|s| s.2).fold(1.0, f64::max) * base;
        let mut jobs = Vec::new();
        let mut t_h = 0.0;
        // Thinning: candidate arrivals at the peak rate, kept at the rate of their hour.
        loop {
            t_h += -(1.0 - rng.next()).ln() / peak;
            if t_h >= self.hours {
                break;
            }
            let factor = self
                .spikes
                .iter()
                .filter(|(a, b, _)| (*a..*b).contains(&t_h))
                .map(|s| s.2)
                .fold(1.0, f64::max);
            let keep = rng.next() < base * factor / peak;
            let k = (rng.next() * (self.max_k() + 1) as f64).floor() as u32;
            let run = MIN_RUN_S * (MAX_RUN_S / MIN_RUN_S).powf(rng.next());
            if keep {
                jobs.push(Job {
                    id: jobs.len() as u64 + 1,
                    submit_s: (t_h * 3600.0).round(),
                    runtime_s: run.round(),
                    nodes: 1 << k.min(self.max_k()),
                });
            }
        }
        jobs
    }

    /// The trace as SWF text, with a header naming the model.
    pub fn swf(&self) -> String {
        let mut s = format!(
            "; Violin synthetic trace {} ({})\n; Model: Poisson arrivals for offered load {:.2} ({:.2} jobs/hour), spikes {:?} (from hour, to hour, rate factor); 2^k nodes, k uniform in 0..={}; run time log-uniform 300..28800 s; seed {}\n; MaxNodes: {}\n; MaxProcs: {}\n",
            self.name,
            self.about,
            self.load,
            self.base_rate(),
            self.spikes,
            self.max_k(),
            self.seed,
            self.nodes,
            self.nodes
        );
        for j in self.generate() {
            // job submit wait run alloc cpu mem req_procs req_time req_mem status user group app queue partition prev think
            let _ = writeln!(
                s,
                "{} {} -1 {} {} -1 -1 {} {} -1 1 1 1 1 1 1 -1 -1",
                j.id,
                j.submit_s,
                j.runtime_s,
                j.nodes,
                j.nodes,
                (j.runtime_s * 1.5).round()
            );
        }
        s
    }
}

/// The shipped trace pairs, for figures 5.4 (qualitatively different workloads), 5.5
/// (both high, spikes partly coinciding) and 5.6 (both low).
pub fn pairs() -> Vec<(&'static str, &'static str, Model, Model)> {
    let week = 168.0;
    let m = |name, about, load, spikes, seed| Model {
        name,
        about,
        nodes: 64,
        hours: week,
        load,
        spikes,
        seed,
    };
    vec![
        (
            "different",
            "two large spikes against a steady pattern of small ones (OSC and CTC, figure 5.4)",
            m(
                "spiky",
                "two large demand spikes",
                0.4,
                vec![(30.0, 42.0, 6.0), (100.0, 112.0, 6.0)],
                11,
            ),
            m(
                "steady",
                "many small spikes",
                0.45,
                (0..7)
                    .map(|d| (d as f64 * 24.0 + 9.0, d as f64 * 24.0 + 13.0, 1.6))
                    .collect(),
                12,
            ),
        ),
        (
            "high",
            "both in high demand, one spike together and one each (figure 5.5)",
            m(
                "high-a",
                "high demand",
                0.6,
                vec![(40.0, 52.0, 4.0), (110.0, 120.0, 4.0)],
                21,
            ),
            m(
                "high-b",
                "high demand",
                0.6,
                vec![(40.0, 52.0, 4.0), (70.0, 80.0, 4.0)],
                22,
            ),
        ),
        (
            "low",
            "both in low demand with small spikes (figure 5.6)",
            m("low-a", "low demand", 0.35, vec![(50.0, 56.0, 1.5)], 31),
            m("low-b", "low demand", 0.35, vec![(90.0, 96.0, 1.5)], 32),
        ),
    ]
}

/// Where the shipped traces are.
pub fn trace_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("traces")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_archive_style_lines_and_names_bad_fields() {
        let text = "; Version: 2.2\n; MaxNodes: 128\n\
            1 0 10 3600 8 -1 -1 8 7200 -1 1 3 1 -1 1 1 -1 -1\n\
            2 60 -1 -1 4 -1 -1 4 100 -1 0 3 1 -1 1 1 -1 -1 ; cancelled: no run time\n\
            3 30 5 100 16 -1 -1 -1 200 -1 1 3 1 -1 1 1 -1 -1\n";
        let jobs = parse(text, "t.swf").unwrap();
        assert_eq!(jobs.len(), 2);
        assert_eq!((jobs[0].id, jobs[0].nodes), (1, 8));
        // No requested size: the allocated one.
        assert_eq!((jobs[1].id, jobs[1].nodes, jobs[1].submit_s), (3, 16, 30.0));
        let e = parse("1 0 10 x 8 -1 -1 8 7200 -1 1 3 1 -1 1 1 -1 -1\n", "t.swf").unwrap_err();
        assert!(
            format!("{e:#}").contains("t.swf:1: field 4 (run time)"),
            "{e:#}"
        );
        let e = parse("1 0 10 inf 8 -1 -1 8 7200 -1 1 3 1 -1 1 1 -1 -1\n", "t.swf").unwrap_err();
        assert!(format!("{e:#}").contains("field 4 (run time)"), "{e:#}");
        let e = parse("1 0 10\n", "t.swf").unwrap_err();
        assert!(format!("{e:#}").contains("3 fields"), "{e:#}");
    }

    #[test]
    fn the_model_offers_the_load_it_names() {
        let m = &pairs()[2].2;
        let jobs = m.generate();
        let work: f64 = jobs.iter().map(|j| j.nodes as f64 * j.runtime_s).sum();
        let offered = work / (m.nodes as f64 * m.hours * 3600.0);
        // Within sampling noise of the named load (plus its one small spike).
        assert!(
            (offered - m.load).abs() < 0.12,
            "offered {offered:.3} vs {}",
            m.load
        );
        assert!(jobs
            .iter()
            .all(|j| j.nodes.is_power_of_two() && j.nodes <= 16));
    }

    /// The shipped traces are the model's output; `VIOLIN_WRITE_TRACES=1` rewrites them.
    #[test]
    fn shipped_traces_are_the_models() {
        let dir = trace_dir();
        for (_, _, a, b) in pairs() {
            for m in [a, b] {
                let file = dir.join(format!("{}.swf", m.name));
                if std::env::var_os("VIOLIN_WRITE_TRACES").is_some() {
                    std::fs::create_dir_all(&dir).unwrap();
                    std::fs::write(&file, m.swf()).unwrap();
                }
                let shipped = std::fs::read_to_string(&file).unwrap_or_else(|e| {
                    panic!(
                        "{}: {e}; write it with VIOLIN_WRITE_TRACES=1",
                        file.display()
                    )
                });
                assert_eq!(
                    shipped,
                    m.swf(),
                    "{} differs from its model",
                    file.display()
                );
                assert_eq!(parse(&shipped, "shipped").unwrap(), m.generate());
            }
        }
    }
}
