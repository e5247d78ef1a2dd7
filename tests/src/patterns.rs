//! `violin-patterns` (bench/) in the lab's VMs: one rank per VM, started together and
//! stopped together, and the topology a run makes (its directed rank pairs).
use std::{
    path::Path,
    process::{Child, Stdio},
};

use anyhow::{bail, Context, Result};

use crate::{lab::Vm, sys::ns_command};

/// What a run asks of `violin-patterns run`.
#[derive(Clone, Debug)]
pub struct Workload {
    /// ring, all-to-all, bus, mesh, tree or star.
    pub topology: String,
    pub message_bytes: usize,
    pub iterations: usize,
    pub compute_ms: f64,
    /// Rank k listens on `port + k`.
    pub port: u16,
}

/// Ranks running in VMs; killed when dropped unless waited for.
pub struct Run {
    children: Vec<Child>,
}

impl Run {
    /// Rank k in `vms[k]`, with the binary `exe`.
    pub fn start(exe: &Path, vms: &[Vm], w: &Workload) -> Result<Run> {
        if !exe.exists() {
            bail!(
                "{} is missing: `cargo xtask test` builds it (cargo build -p bench)",
                exe.display()
            );
        }
        let peers: Vec<String> = vms
            .iter()
            .enumerate()
            .map(|(k, v)| format!("{}:{}", v.ip, w.port + k as u16))
            .collect();
        let peers = peers.join(",");
        let exe = exe.to_string_lossy();
        let mut run = Run {
            children: Vec::new(),
        };
        for (k, v) in vms.iter().enumerate() {
            let args = [
                "run".to_string(),
                "--rank".into(),
                k.to_string(),
                "--peers".into(),
                peers.clone(),
                "--topology".into(),
                w.topology.clone(),
                "--message-bytes".into(),
                w.message_bytes.to_string(),
                "--iterations".into(),
                w.iterations.to_string(),
                "--compute-ms".into(),
                w.compute_ms.to_string(),
            ];
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let child = ns_command(&v.ns, &exe, &args)
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .context("starting violin-patterns")?;
            run.children.push(child);
        }
        Ok(run)
    }

    /// Waits for every rank; their reports (`bench::reports::Patterns`), in rank order.
    pub fn wait(mut self) -> Result<Vec<serde_json::Value>> {
        let mut out = Vec::new();
        for (k, c) in std::mem::take(&mut self.children).into_iter().enumerate() {
            let o = c.wait_with_output()?;
            if !o.status.success() {
                bail!(
                    "violin-patterns rank {k}: {}",
                    String::from_utf8_lossy(&o.stderr).trim()
                );
            }
            out.push(serde_json::from_slice(&o.stdout).context("a rank's report")?);
        }
        Ok(out)
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The directed (sender, receiver) rank pairs of `topology` among `ranks`, as
/// `violin-patterns edges` gives them.
pub fn edges(exe: &Path, topology: &str, ranks: usize) -> Result<Vec<(usize, usize)>> {
    let out = crate::sys::run(
        &exe.to_string_lossy(),
        &[
            "edges",
            "--topology",
            topology,
            "--ranks",
            &ranks.to_string(),
        ],
    )?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    serde_json::from_value(v["edges"].clone()).context("the edges")
}
