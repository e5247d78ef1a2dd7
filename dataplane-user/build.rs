//! Hands `violind` the eBPF object it embeds (`$OUT_DIR/dataplane-ebpf.o`):
//!
//! - by default, built from `dataplane-ebpf` by aya's build support (`aya_build::build_ebpf`,
//!   as aya's project template does it: nightly, `bpfel-unknown-none`, bpf-linker);
//! - with `VIOLIN_EBPF_OBJECT=/abs/path/dataplane-ebpf.o`, a prebuilt object (made by
//!   `cargo xtask ebpf --out FILE` on a machine with nightly) is checked and copied as is,
//!   so a host without nightly or bpf-linker can build `violind`.
//!
//! Cargo re-runs this only when the eBPF sources, `dataplane-common` or the variables it
//! names change; the eBPF build itself is incremental and shared by every profile.
use std::{
    env,
    fs::{self, File},
    io::{BufRead, BufReader, Read},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{anyhow, bail, ensure, Context, Result};

/// A prebuilt object to embed instead of building one.
const PREBUILT: &str = "VIOLIN_EBPF_OBJECT";
/// The eBPF package: its own workspace (excluded from ours, with its own lock file,
/// profiles and rust-toolchain.toml), next to this crate.
const EBPF_PACKAGE: &str = "dataplane-ebpf";
/// `e_machine` of a BPF ELF object.
const EM_BPF: u16 = 247;
/// First argument of this script when it re-runs itself to call aya-build (see `build`).
const ARG_AYA_BUILD: &str = "aya-build";

fn main() -> Result<()> {
    let mut args = env::args().skip(1);
    if args.next().as_deref() == Some(ARG_AYA_BUILD) {
        let (name, root_dir) = args.next().zip(args.next()).context("aya-build NAME DIR")?;
        return run_aya_build(&name, &root_dir);
    }
    let manifest_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").context("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .context("dataplane-user has no parent directory")?;
    let out =
        PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?).join("dataplane-ebpf.o");

    println!("cargo:rerun-if-env-changed={PREBUILT}");
    match env::var_os(PREBUILT).filter(|v| !v.is_empty()) {
        Some(object) => use_prebuilt(Path::new(&object), &out),
        None => build(root, &out),
    }
}

/// Checks and embeds a prebuilt object.
fn use_prebuilt(object: &Path, out: &Path) -> Result<()> {
    ensure!(
        object.is_absolute(),
        "{PREBUILT}={}: give an absolute path (a build script does not know the directory \
         cargo was started in)",
        object.display()
    );
    println!("cargo:rerun-if-changed={}", object.display());
    ensure!(
        object.is_file(),
        "{PREBUILT}={}: no such file; make one on a machine with nightly and bpf-linker with \
         `cargo xtask ebpf --out FILE`, or unset {PREBUILT} to build it here",
        object.display()
    );
    check_object(object).with_context(|| format!("{PREBUILT}={}", object.display()))?;
    println!(
        "cargo:warning=embedding the prebuilt eBPF object {} ({PREBUILT})",
        object.display()
    );
    copy(object, out)
}

/// Builds the eBPF object with aya-build and copies it to `out`.
///
/// aya-build runs `rustup run nightly cargo build --package dataplane-ebpf --bins --release
/// --target bpfel-unknown-none -Z build-std=core` (BTF and debug info on) in the current
/// directory, with its target directory under `$OUT_DIR`, and copies each binary to
/// `$OUT_DIR/<name>`. Adaptations to our layout, made by calling it from a child process
/// (this script, re-run with `aya-build NAME DIR`):
/// - the eBPF crate is its own workspace, so the child runs in its directory (from ours,
///   `--package dataplane-ebpf` matches nothing);
/// - the child's `OUT_DIR` is `target/ebpf`, one for every profile and tool, so that
///   `build`, `clippy`, `test` and `--release` share one incremental eBPF build instead of a
///   cold one each (a file lock serialises concurrent builds around it);
/// - the outer cargo's settings do not reach the nightly build (see `leaks`);
/// - aya-build forwards every progress line of the nested cargo as a `cargo:warning`, which
///   cargo would replay on every build of the workspace; those go to stderr instead (shown
///   when the build fails), diagnostics stay warnings.
fn build(root: &Path, out: &Path) -> Result<()> {
    for path in [
        "dataplane-ebpf/Cargo.toml",
        "dataplane-ebpf/Cargo.lock",
        "dataplane-ebpf/rust-toolchain.toml",
        "dataplane-ebpf/.cargo/config.toml",
        "dataplane-common/src",
        "dataplane-common/Cargo.toml",
    ] {
        println!("cargo:rerun-if-changed={}", root.join(path).display());
    }
    let ebpf_dir = root.join(EBPF_PACKAGE);
    // As in aya's template, find the package with cargo metadata (from its own manifest).
    let metadata = cargo_metadata::MetadataCommand::new()
        .manifest_path(ebpf_dir.join("Cargo.toml"))
        .no_deps()
        .exec()
        .context("cargo metadata --manifest-path dataplane-ebpf/Cargo.toml")?;
    let package = metadata
        .packages
        .iter()
        .find(|p| p.name.as_str() == EBPF_PACKAGE)
        .ok_or_else(|| anyhow!("package {EBPF_PACKAGE} not found in {}", ebpf_dir.display()))?;
    // aya-build uses its `root_dir` only for `rerun-if-changed`. The package's directory
    // also holds its own default target directory (from a manual `cargo build` there), and
    // watching that would re-run this script for nothing: watch the directory of the
    // binary's root module (Cargo.toml and the lock file are watched above).
    let bin = package
        .targets
        .iter()
        .find(|t| t.name == EBPF_PACKAGE && t.is_bin())
        .ok_or_else(|| anyhow!("{EBPF_PACKAGE} has no binary target {EBPF_PACKAGE}"))?;
    let src_dir = bin
        .src_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", bin.src_path))?;

    // Like the workspace's own artefacts: `$CARGO_TARGET_DIR` (relative to the workspace
    // root if relative), else `target/`.
    let target_dir =
        env::var_os("CARGO_TARGET_DIR").map_or_else(|| root.join("target"), |d| root.join(d));
    let shared = target_dir.join("ebpf");
    fs::create_dir_all(&shared).with_context(|| format!("create {}", shared.display()))?;
    let lock = File::create(shared.join(".aya-build.lock")).context("create the build lock")?;
    lock.lock().context("lock the eBPF build")?;
    let object = shared.join(EBPF_PACKAGE);
    // Never hand on an object left by an earlier build (e.g. when AYA_BUILD_SKIP is set).
    match fs::remove_file(&object) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("remove {}", object.display())),
    }

    let mut cmd = Command::new(env::current_exe().context("locate the build script")?);
    cmd.args([ARG_AYA_BUILD, package.name.as_str(), src_dir.as_str()])
        .current_dir(&ebpf_dir)
        .env("OUT_DIR", &shared)
        .stdout(Stdio::piped());
    for (key, _) in env::vars_os() {
        if leaks(&key.to_string_lossy()) {
            cmd.env_remove(key);
        }
    }
    let mut child = cmd.spawn().context("run aya-build")?;
    let stdout = BufReader::new(child.stdout.take().expect("piped"));
    for line in stdout.lines() {
        let line = line.context("read aya-build's output")?;
        if is_progress(&line) {
            eprintln!("{line}");
        } else {
            println!("{line}");
        }
    }
    let status = child.wait().context("wait for aya-build")?;
    ensure!(
        status.success(),
        "building dataplane-ebpf failed (see above); it needs the nightly toolchain with \
         rust-src and bpf-linker (`cargo xtask setup`), or set {PREBUILT} to a prebuilt object"
    );
    ensure!(
        object.is_file(),
        "aya-build produced no {} (is AYA_BUILD_SKIP set?); violind embeds the object: set \
         {PREBUILT} to a prebuilt one instead",
        object.display()
    );
    check_object(&object)?;
    copy(&object, out)?;
    drop(lock);
    Ok(())
}

/// The child: aya-build, as in aya's template, for the package `name` whose sources are in
/// `root_dir`, from the current directory and into `$OUT_DIR`.
fn run_aya_build(name: &str, root_dir: &str) -> Result<()> {
    aya_build::build_ebpf(
        [aya_build::Package {
            name,
            root_dir,
            ..Default::default()
        }],
        aya_build::Toolchain::Nightly,
    )
}

/// Whether an environment variable of the outer cargo must not reach the nightly build for
/// another target (stable toolchain, host flags, wrappers, profile and build overrides).
/// aya-build itself drops `RUSTC` and `RUSTC_WORKSPACE_WRAPPER` and sets
/// `CARGO_ENCODED_RUSTFLAGS`; it reads the target's endianness and architecture and
/// `RUSTC_BOOTSTRAP`, which stay, as do `CARGO_HOME` and the jobserver
/// (`CARGO_MAKEFLAGS`: the nested cargo takes its jobs from ours).
fn leaks(key: &str) -> bool {
    const KEEP: [&str; 5] = [
        "CARGO_HOME",
        "CARGO_MAKEFLAGS",
        "CARGO_CFG_TARGET_ENDIAN",
        "CARGO_CFG_TARGET_ARCH",
        "RUSTC_BOOTSTRAP",
    ];
    let outer = key.starts_with("CARGO")
        || key.starts_with("RUSTC")
        || key.starts_with("RUSTDOC")
        || key == "RUSTFLAGS"
        || key == "RUSTUP_TOOLCHAIN";
    outer && !KEEP.contains(&key)
}

/// A line of the nested cargo's progress (`   Compiling x`, `    Finished ...`) that
/// aya-build forwards as a warning, or an empty warning.
fn is_progress(line: &str) -> bool {
    const STATUS: [&str; 11] = [
        "Compiling",
        "Finished",
        "Fresh",
        "Blocking",
        "Updating",
        "Locking",
        "Adding",
        "Downloading",
        "Downloaded",
        "Checking",
        "Building",
    ];
    let Some(message) = line.strip_prefix("cargo:warning=") else {
        return false;
    };
    let word = message.split_whitespace().next();
    word.is_none_or(|w| message.starts_with(' ') && STATUS.contains(&w))
}

/// Fails unless `path` is a 64-bit BPF ELF object of the target's byte order.
fn check_object(path: &Path) -> Result<()> {
    let mut header = [0u8; 20];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut header))
        .with_context(|| format!("{}: cannot read an ELF header", path.display()))?;
    ensure!(
        header[..4] == *b"\x7fELF",
        "{} is not an ELF file (expected the eBPF object dataplane-ebpf.o)",
        path.display()
    );
    let little = match header[5] {
        1 => true,
        2 => false,
        other => bail!("{}: unknown ELF byte order {other}", path.display()),
    };
    let machine = if little {
        u16::from_le_bytes([header[18], header[19]])
    } else {
        u16::from_be_bytes([header[18], header[19]])
    };
    ensure!(
        machine == EM_BPF,
        "{} is an ELF file for machine {machine}, not BPF (e_machine {EM_BPF}); expected the \
         eBPF object made by `cargo xtask ebpf --out FILE`",
        path.display()
    );
    ensure!(header[4] == 2, "{} is not a 64-bit ELF", path.display());
    let want_little = env::var("CARGO_CFG_TARGET_ENDIAN").map_or(true, |e| e == "little");
    ensure!(
        little == want_little,
        "{} is a {}-endian BPF object; this target needs a {}-endian one",
        path.display(),
        if little { "little" } else { "big" },
        if want_little { "little" } else { "big" },
    );
    Ok(())
}

fn copy(from: &Path, to: &Path) -> Result<()> {
    fs::copy(from, to)
        .with_context(|| format!("copy {} -> {}", from.display(), to.display()))
        .map(drop)
}
