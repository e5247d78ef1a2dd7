//! The `nemo3d` suite: the thesis' three NEMO3D configurations (section 4.5.2, figs.
//! 4.15-4.17) with the `violin-nemo` stand-in, at three message regimes.
use std::process::Stdio;

use anyhow::{bail, Context, Result};
use violin_testbed::sys::ns_command;

use crate::{
    paths::BenchLab,
    results::{Better, Metric, NetPath},
};

pub const RANKS: usize = 4;

/// Where each rank runs: (host, process on that host).
pub struct Placement {
    pub id: &'static str,
    pub title: &'static str,
    pub ranks: [(usize, usize); RANKS],
}

/// Configuration 1: one VM per host. 2: two per host, ring neighbours together
/// (locality). 3: two per host, ring neighbours always on different hosts.
pub const PLACEMENTS: [Placement; 3] = [
    Placement {
        id: "c1",
        title: "config 1 (one VM per host)",
        ranks: [(0, 0), (1, 0), (2, 0), (3, 0)],
    },
    Placement {
        id: "c2",
        title: "config 2 (two VMs per host, neighbours together)",
        ranks: [(0, 0), (0, 1), (1, 0), (1, 1)],
    },
    Placement {
        id: "c3",
        title: "config 3 (two VMs per host, neighbours apart)",
        ranks: [(0, 0), (1, 0), (0, 1), (1, 1)],
    },
];

pub struct Regime {
    pub id: &'static str,
    pub title: &'static str,
    pub iters: usize,
    pub halo: usize,
    pub work: usize,
}

pub fn regimes(quick: bool) -> Vec<Regime> {
    let scale = |full: usize, q: usize| if quick { q } else { full };
    vec![
        Regime {
            id: "compute",
            title: "compute-heavy (16 KiB halos)",
            iters: scale(100, 40),
            halo: 16 << 10,
            work: 100,
        },
        Regime {
            id: "bandwidth",
            title: "bandwidth-heavy (1 MiB halos)",
            iters: scale(300, 100),
            halo: 1 << 20,
            work: 2,
        },
        Regime {
            id: "latency",
            title: "latency-bound (64-byte halos)",
            iters: scale(10000, 3000),
            halo: 64,
            work: 0,
        },
    ]
}

pub fn metric_id(p: &Placement, r: &Regime) -> String {
    format!("{}_{}", p.id, r.id)
}

pub fn metrics(quick: bool) -> Vec<Metric> {
    let mut out = Vec::new();
    for p in &PLACEMENTS {
        for r in regimes(quick) {
            out.push(Metric {
                id: metric_id(p, &r),
                title: format!("NEMO3D stand-in, {}, {}", p.title, r.title),
                unit: "s".into(),
                better: Better::Lower,
            });
        }
    }
    out
}

/// Runs the stand-in with one rank per placed endpoint; returns rank 0's wall time.
pub fn run(bl: &BenchLab, path: NetPath, p: &Placement, r: &Regime, port: u16) -> Result<f64> {
    let eps: Vec<_> = p
        .ranks
        .iter()
        .map(|&(h, k)| bl.endpoint(path, h, k))
        .collect();
    let peers: Vec<String> = eps
        .iter()
        .enumerate()
        .map(|(rank, e)| format!("{}:{}", e.ip, port + rank as u16))
        .collect();
    let peers = peers.join(",");
    let exe = crate::paths::bin_dir()?.join("violin-nemo");
    let exe = exe.to_string_lossy();
    let (iters, halo, work) = (r.iters.to_string(), r.halo.to_string(), r.work.to_string());
    let mut children = Vec::new();
    for (rank, e) in eps.iter().enumerate() {
        let rank_s = rank.to_string();
        let args = [
            "--rank", &rank_s, "--peers", &peers, "--iters", &iters, "--halo", &halo, "--work",
            &work,
        ];
        let mut cmd = ns_command(&e.ns, &exe, &args);
        let child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("starting violin-nemo")?;
        children.push(child);
    }
    let mut result = None;
    let mut errors = Vec::new();
    for (rank, c) in children.into_iter().enumerate() {
        let out = c.wait_with_output()?;
        if !out.status.success() {
            errors.push(format!(
                "rank {rank}: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        } else if rank == 0 {
            let v: bench::reports::Nemo = serde_json::from_slice(&out.stdout)?;
            result = Some(v.secs);
        }
    }
    if !errors.is_empty() {
        bail!("violin-nemo failed: {}", errors.join("; "));
    }
    result.context("rank 0 reported no time")
}
