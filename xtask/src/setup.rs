//! `cargo xtask setup`: everything a fresh machine needs, installed only where missing.
//! The bpf-linker recipe is the one verified in shared/TOOLCHAIN.md.
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

/// Debian packages: build deps of xsk-rs (libxdp/libbpf), lab, test and benchmark tools
/// (the font is for the benchmark plots; Open MPI and OpenBLAS for HPL; Prometheus for the
/// metrics test; perf for the benchmarks' kernel profiles; libvirt, busybox and xz for the
/// tiny guests, whose QEMU `cargo xtask guest` extracts privately and which needs the
/// runtime libraries and firmware listed after them: installing qemu-system-x86 itself
/// would remove the newer qemu-utils, shared/VIRT.md; Slurm and munge for VioCluster's
/// batch scheduler in the lab, shared/MPI.md; systemd's `systemd-analyze` and binutils'
/// `strip` for the packages' test; etcd for the replicated controller's store, and
/// protoc with protobuf's own .proto files, which the etcd client's build compiles
/// etcd's API with; tmux for the operator walkthrough's terminal).
const APT_PACKAGES: &[&str] = &[
    "clang",
    "llvm",
    "libelf-dev",
    "libpcap-dev",
    "zlib1g-dev",
    "pkg-config",
    "m4",
    "iproute2",
    "ethtool",
    "tcpdump",
    "iputils-ping",
    "iperf3",
    "bpftool",
    "fonts-dejavu-core",
    "openmpi-bin",
    "libopenmpi-dev",
    "libopenblas0-serial",
    "libopenblas-dev",
    "make",
    "prometheus",
    "linux-perf",
    "libvirt-daemon",
    "libvirt-daemon-driver-qemu",
    "libvirt-clients",
    "libvirt-dev",
    "busybox-static",
    "xz-utils",
    "libcapstone4",
    "libfdt1",
    "libpmem1",
    "libslirp0",
    "libvdeplug2",
    "seabios",
    "ipxe-qemu",
    "qemu-system-data",
    "libbrlapi0.8",
    "libcacard0",
    "libepoxy0",
    "libsndio7.0",
    "libspice-server1",
    "libusb-1.0-0",
    "libusbredirparser1",
    "slurm-wlm",
    "munge",
    "systemd",
    "binutils",
    "etcd-server",
    "etcd-client",
    "protobuf-compiler",
    "libprotobuf-dev",
    "tmux",
];
const BPF_LINKER_VERSION: &str = "0.13.0";

fn status(program: &str, args: &[&str]) -> Result<bool> {
    Ok(Command::new(program)
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .with_context(|| format!("cannot run {program}"))?
        .success())
}

fn exec(program: &str, args: &[&str], envs: &[(&str, String)]) -> Result<()> {
    eprintln!("    $ {program} {}", args.join(" "));
    let ok = Command::new(program)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (k, v)))
        .status()
        .with_context(|| format!("cannot run {program}"))?
        .success();
    if !ok {
        bail!("`{program} {}` failed", args.join(" "));
    }
    Ok(())
}

fn capture(program: &str, args: &[&str]) -> Result<String> {
    let out = Command::new(program)
        .args(args)
        .output()
        .with_context(|| format!("cannot run {program}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn installed(package: &str) -> bool {
    capture("dpkg-query", &["-W", "-f=${Status}", package])
        .map(|s| s.contains("install ok installed"))
        .unwrap_or(false)
}

pub fn run() -> Result<()> {
    let missing: Vec<&str> = APT_PACKAGES
        .iter()
        .copied()
        .filter(|p| !installed(p))
        .collect();
    if missing.is_empty() {
        eprintln!("==> apt packages: all present");
    } else {
        eprintln!("==> apt packages: installing {}", missing.join(" "));
        exec("apt-get", &["update", "-q"], &[])?;
        let mut args = vec!["install", "-y", "-q", "--no-install-recommends"];
        args.extend(&missing);
        exec(
            "apt-get",
            &args,
            &[("DEBIAN_FRONTEND", "noninteractive".into())],
        )?;
    }

    // rust-src builds core for the BPF target; clippy and rustfmt are the quality gate
    // (`cargo xtask lint`) on both toolchains.
    for (toolchain, wanted) in [
        ("nightly", &["rust-src", "clippy", "rustfmt"][..]),
        ("stable", &["clippy", "rustfmt"][..]),
    ] {
        let installed = capture(
            "rustup",
            &["component", "list", "--toolchain", toolchain, "--installed"],
        )?;
        for component in wanted {
            if installed.lines().any(|l| l.starts_with(component)) {
                eprintln!("==> {toolchain} {component}: present");
            } else {
                eprintln!("==> {toolchain} {component}: installing");
                exec(
                    "rustup",
                    &["component", "add", component, "--toolchain", toolchain],
                    &[],
                )?;
            }
        }
    }

    let have = capture("bpf-linker", &["--version"]).unwrap_or_default();
    if have.contains(BPF_LINKER_VERSION) {
        eprintln!("==> bpf-linker {BPF_LINKER_VERSION}: present");
    } else {
        eprintln!("==> bpf-linker {BPF_LINKER_VERSION}: building against nightly's LLVM (1-2 min)");
        install_bpf_linker()?;
    }
    if !status("bpf-linker", &["--version"])? {
        bail!("bpf-linker does not run after installation");
    }
    // Only `cargo xtask bench hpl` needs xhpl: a failed download must not stop the rest.
    if let Err(e) = crate::hpl::ensure_xhpl(&violin_testbed::workspace_root()) {
        eprintln!("==> WARNING: xhpl not built ({e:#}); `cargo xtask bench hpl` needs it");
    }
    eprintln!("==> setup complete");
    Ok(())
}

/// Debian 12 has no LLVM 21+, but the nightly toolchain ships libLLVM 22: link against it.
fn install_bpf_linker() -> Result<()> {
    let sysroot = capture("rustc", &["+nightly", "--print", "sysroot"])?;
    let lib = std::path::Path::new(sysroot.trim()).join("lib");
    let llvm = std::fs::read_dir(&lib)
        .with_context(|| format!("reading {}", lib.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("libLLVM.so.22.1-rust-") && n.ends_with("-nightly"))
        })
        .context("nightly toolchain has no libLLVM.so.22.1-rust-*-nightly")?;
    let prefix = std::env::temp_dir().join(format!("violin-llvm-{}", std::process::id()));
    std::fs::create_dir_all(prefix.join("lib"))?;
    let link = prefix.join("lib/libLLVM.so");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&llvm, &link)?;
    let result = exec(
        "cargo",
        &[
            "install",
            "bpf-linker",
            "--version",
            BPF_LINKER_VERSION,
            "--no-default-features",
            "--features",
            "llvm-22",
            "--locked",
            "--force",
        ],
        &[
            ("LLVM_PREFIX", prefix.display().to_string()),
            (
                "RUSTFLAGS",
                format!("-C link-args=-Wl,-rpath,{}", lib.display()),
            ),
        ],
    );
    let _ = std::fs::remove_dir_all(&prefix);
    result
}
