//! Violin's testbed: the local lab of simulated hosts and VMs (network namespaces, veth
//! pairs, an underlay bridge, `violind` per host) used by `cargo xtask lab` and by the
//! end-to-end tests in `tests/tests/`.
pub mod control;
pub mod e2e;
pub mod etcd;
pub mod frames;
pub mod guest;
pub mod iperf;
pub mod lab;
pub mod libvirt;
pub mod package;
pub mod patterns;
pub mod poll;
pub mod slurm;
pub mod sys;
pub mod tap;
pub mod terminal;
pub mod traffic;
pub mod viocluster;

use std::path::PathBuf;

/// Workspace root (this crate lives in `tests/`).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// Cargo's target directory: `$CARGO_TARGET_DIR` (relative to the workspace root, as
/// dataplane-user/build.rs reads it) or `target/`.
pub fn target_dir() -> PathBuf {
    workspace_root().join(std::env::var_os("CARGO_TARGET_DIR").unwrap_or_else(|| "target".into()))
}

/// A binary of the workspace's debug build (`cargo xtask build` makes them).
pub fn bin_path(name: &str) -> PathBuf {
    target_dir().join("debug").join(name)
}

/// The `violind` built by `cargo build -p dataplane-user` (debug profile).
pub fn violind_path() -> PathBuf {
    bin_path("violind")
}
