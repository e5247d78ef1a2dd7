//! Builds the XDP programs (nightly, bpfel-unknown-none, bpf-linker) and hands the object
//! to `violind`, which embeds it. Cargo re-runs this only when the eBPF sources change.
use std::{env, path::PathBuf, process::Command};

fn main() {
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap());
    let root = manifest.parent().unwrap();
    let ebpf = root.join("dataplane-ebpf");
    for path in [
        "dataplane-ebpf/src",
        "dataplane-ebpf/Cargo.toml",
        "dataplane-ebpf/Cargo.lock",
        "dataplane-common/src",
        "dataplane-common/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    // One eBPF build shared by every profile of the user-space crates.
    let target_dir = root.join("target").join("ebpf");
    let mut cmd = Command::new("cargo");
    cmd.current_dir(&ebpf)
        .args(["build", "--release", "--target-dir"])
        .arg(&target_dir);
    // The outer cargo's settings (stable toolchain, host flags, jobserver) must not leak
    // into a nightly build for another target.
    for (key, _) in env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        let leaks = (key.starts_with("CARGO") && key != "CARGO_HOME")
            || key.starts_with("RUSTC")
            || key == "RUSTFLAGS"
            || key == "RUSTDOC"
            || key == "RUSTUP_TOOLCHAIN"
            || key.ends_with("MAKEFLAGS")
            || key == "MFLAGS";
        if leaks {
            cmd.env_remove(key);
        }
    }
    let status = cmd.status().unwrap_or_else(|e| {
        panic!("cannot run cargo for the eBPF crate ({e}); run `cargo xtask setup` first")
    });
    if !status.success() {
        panic!(
            "building dataplane-ebpf failed; it needs the nightly toolchain with rust-src and \
             bpf-linker: run `cargo xtask setup`"
        );
    }
    let object = target_dir.join("bpfel-unknown-none/release/dataplane-ebpf");
    let out = PathBuf::from(env::var("OUT_DIR").unwrap()).join("dataplane-ebpf.o");
    std::fs::copy(&object, &out)
        .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", object.display(), out.display()));
}
