//! `cargo xtask guest`: the tiny guest image real-VM tests boot (violin_testbed::guest).
use std::{path::PathBuf, process::Command};

use anyhow::{bail, Context, Result};
use violin_testbed::{guest::GuestImage, workspace_root};

const PROBE_TARGET: &str = "x86_64-unknown-linux-gnu";

/// Builds the guest's tools statically (violin-probe; with `nemo`, the benchmarks'
/// violin-nemo too), then the image around them (cached).
pub fn guest(quiet: bool, nemo: bool) -> Result<GuestImage> {
    if !quiet {
        eprintln!("==> building the guest's tools (static) and the guest image");
    }
    let mut tools = vec![static_bin("violin-probe", "violin-probe", quiet)?];
    if nemo {
        tools.push(static_bin("bench", "violin-nemo", quiet)?);
    }
    violin_testbed::guest::build(&tools, quiet)
}

/// Builds binary `bin` of `package` statically linked; its path.
fn static_bin(package: &str, bin: &str, quiet: bool) -> Result<PathBuf> {
    // An explicit --target keeps the static build (and its RUSTFLAGS) in its own directory,
    // out of the host build's cache.
    let mut cargo = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
    cargo
        .args([
            "build",
            "-p",
            package,
            "--bin",
            bin,
            "--release",
            "--target",
        ])
        .arg(PROBE_TARGET)
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
        bail!("building {bin} (static) failed");
    }
    let target = violin_testbed::target_dir();
    Ok(target.join(PROBE_TARGET).join("release").join(bin))
}
