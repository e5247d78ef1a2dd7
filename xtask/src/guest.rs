//! `cargo xtask guest`: the tiny guest image real-VM tests boot (violin_testbed::guest).
use std::process::Command;

use anyhow::{bail, Context, Result};
use violin_testbed::{guest::GuestImage, workspace_root};

const PROBE_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Builds violin-probe statically, then the image around it (cached).
pub fn guest(quiet: bool) -> Result<GuestImage> {
    if !quiet {
        eprintln!("==> building violin-probe (static) and the guest image");
    }
    // An explicit --target keeps the static build (and its RUSTFLAGS) in its own directory,
    // out of the host build's cache.
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .args([
            "build",
            "-p",
            "violin-probe",
            "--release",
            "--target",
            PROBE_TARGET,
        ])
        .current_dir(workspace_root())
        .env(
            "RUSTFLAGS",
            "-C target-feature=+crt-static -C strip=symbols",
        )
        // It would take precedence over RUSTFLAGS.
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    if quiet {
        cargo.arg("--quiet");
    }
    if !cargo.status().context("running cargo")?.success() {
        bail!("building violin-probe failed");
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    let probe = target.join(PROBE_TARGET).join("release/violin-probe");
    violin_testbed::guest::build(&probe, quiet)
}
