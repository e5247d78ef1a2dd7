//! Raw samples, their summaries, and `results.json`.
use std::{collections::BTreeMap, fs, path::Path};

use anyhow::Result;
use serde::{Deserialize, Serialize};

/// The network paths every suite compares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, Hash)]
#[serde(rename_all = "snake_case")]
pub enum NetPath {
    /// Endpoints directly on the underlay: the "physical cluster".
    Bare,
    /// Endpoints behind Linux's VXLAN devices, default offloads on.
    LinuxVxlan,
    /// Endpoints behind Violin in its default port mode (TC).
    Violin,
    /// Endpoints behind Violin, XDP on the VM ports and the underlay (`port_mode = "xdp"`).
    ViolinXdp,
}

impl NetPath {
    pub const ALL: [NetPath; 4] = [
        NetPath::Bare,
        NetPath::LinuxVxlan,
        NetPath::Violin,
        NetPath::ViolinXdp,
    ];

    /// The path's name in file names.
    pub fn slug(self) -> &'static str {
        match self {
            NetPath::Bare => "bare",
            NetPath::LinuxVxlan => "linux-vxlan",
            NetPath::Violin => "violin",
            NetPath::ViolinXdp => "violin-xdp",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            NetPath::Bare => "bare",
            NetPath::LinuxVxlan => "Linux VXLAN",
            NetPath::Violin => "Violin",
            NetPath::ViolinXdp => "Violin XDP",
        }
    }
}

/// Whether larger values of a metric are better.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Better {
    Higher,
    Lower,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Metric {
    pub id: String,
    pub title: String,
    pub unit: String,
    pub better: Better,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Sample {
    pub metric: String,
    pub mtu: u32,
    pub path: NetPath,
    pub rep: usize,
    pub value: f64,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Machine {
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
}

impl Machine {
    pub fn describe() -> Machine {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|l| l.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_else(|| "unknown".into());
        let mem_kib: f64 = fs::read_to_string("/proc/meminfo")
            .unwrap_or_default()
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
            .unwrap_or_default()
            .trim()
            .to_string();
        Machine {
            cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
            cpu_model,
            memory_gib: (mem_kib / 1024.0 / 1024.0 * 10.0).round() / 10.0,
            kernel,
        }
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Results {
    pub suite: String,
    pub quick: bool,
    pub started: String,
    pub duration_s: f64,
    pub git_revision: String,
    pub machine: Machine,
    pub metrics: Vec<Metric>,
    pub samples: Vec<Sample>,
    /// Free-form facts of the run (MTUs, stream counts, durations, tool versions).
    pub settings: BTreeMap<String, String>,
    /// Kernel profiles (perf, top symbols) taken during a run, by what was measured.
    #[serde(default)]
    pub profiles: BTreeMap<String, String>,
}

/// Median, minimum and maximum of a set of samples.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Summary {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub n: usize,
}

pub fn summarize(values: &[f64]) -> Option<Summary> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    let median = if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    };
    Some(Summary {
        median,
        min: v[0],
        max: v[n - 1],
        n,
    })
}

impl Results {
    fn summary_where(&self, keep: impl Fn(&Sample) -> bool) -> Option<Summary> {
        let v: Vec<f64> = self
            .samples
            .iter()
            .filter(|s| keep(s))
            .map(|s| s.value)
            .collect();
        summarize(&v)
    }

    pub fn summary(&self, metric: &str, mtu: u32, path: NetPath) -> Option<Summary> {
        self.summary_where(|s| s.metric == metric && s.mtu == mtu && s.path == path)
    }

    /// Over every MTU and path.
    pub fn summary_of_all(&self, metric: &str) -> Option<Summary> {
        self.summary_where(|s| s.metric == metric)
    }

    /// The ratio of `path` over `baseline` in each repetition that has both (each side the
    /// median of that repetition's samples). The paths of one repetition ran minutes apart,
    /// in rotation, so a pair shares most of the machine's drift between repetitions.
    pub fn paired_ratios(
        &self,
        metric: &str,
        mtu: u32,
        path: NetPath,
        baseline: NetPath,
    ) -> Vec<f64> {
        let reps: std::collections::BTreeSet<usize> = self
            .samples
            .iter()
            .filter(|s| s.metric == metric && s.mtu == mtu)
            .map(|s| s.rep)
            .collect();
        let of = |p: NetPath, rep: usize| {
            self.summary_where(|s| {
                s.metric == metric && s.mtu == mtu && s.path == p && s.rep == rep
            })
        };
        reps.into_iter()
            .filter_map(|rep| match (of(path, rep), of(baseline, rep)) {
                (Some(x), Some(y)) if y.median > 0.0 => Some(x.median / y.median),
                _ => None,
            })
            .collect()
    }

    pub fn mtus(&self) -> Vec<u32> {
        let mut m: Vec<u32> = self.samples.iter().map(|s| s.mtu).collect();
        m.sort();
        m.dedup();
        m
    }

    pub fn write(&self, dir: &Path) -> Result<()> {
        fs::create_dir_all(dir)?;
        fs::write(dir.join("results.json"), serde_json::to_vec_pretty(self)?)?;
        Ok(())
    }
}

pub fn git_revision(root: &Path) -> String {
    let run = |args: &[&str]| {
        std::process::Command::new("git")
            .args(args)
            .current_dir(root)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let rev = run(&["rev-parse", "HEAD"]).unwrap_or_else(|| "unknown".into());
    let dirty = run(&["status", "--porcelain"]).is_some_and(|s| !s.is_empty());
    if dirty {
        format!("{rev}-dirty")
    } else {
        rev
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries() {
        let s = summarize(&[3.0, 1.0, 2.0]).unwrap();
        assert_eq!((s.median, s.min, s.max, s.n), (2.0, 1.0, 3.0, 3));
        assert_eq!(summarize(&[1.0, 2.0, 3.0, 10.0]).unwrap().median, 2.5);
        assert!(summarize(&[]).is_none());
    }
}
