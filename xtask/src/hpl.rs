//! Builds `xhpl` (High-Performance Linpack) from the HPL inside Debian's hpcc 1.5.0
//! source package: Debian's `hpcc` binary only runs the whole HPC Challenge suite (about a
//! minute per run here), while the benchmarks need HPL alone (../shared/MPI.md). The
//! source comes from Debian's archive through a private apt source list, so the machine's
//! own apt configuration is left untouched.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{bail, Context, Result};

pub fn xhpl_path(root: &Path) -> PathBuf {
    root.join("target/hpl/xhpl")
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.output().with_context(|| format!("cannot run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// Downloads the hpcc source tarball into `dir`; returns its path.
fn fetch_source(dir: &Path) -> Result<PathBuf> {
    let tarball = dir.join("hpcc_1.5.0.orig.tar.gz");
    if tarball.exists() {
        return Ok(tarball);
    }
    let parts = dir.join("apt/sources.list.d");
    let lists = dir.join("apt/lists");
    fs::create_dir_all(&parts)?;
    fs::create_dir_all(lists.join("partial"))?;
    fs::write(
        parts.join("debian-src.sources"),
        "Types: deb-src\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n\
         Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n",
    )?;
    let opts = [
        "-o".to_string(),
        "Dir::Etc::SourceList=/dev/null".to_string(),
        "-o".to_string(),
        format!("Dir::Etc::SourceParts={}", parts.display()),
        "-o".to_string(),
        format!("Dir::State::Lists={}", lists.display()),
    ];
    run(
        Command::new("apt-get").args(&opts).args(["update", "-q"]),
        "apt-get update (hpcc source list)",
    )?;
    // Only the upstream tarball is needed; a missing Debian packaging tarball is fine.
    let _ = Command::new("apt-get")
        .args(&opts)
        .args(["source", "--download-only", "hpcc=1.5.0-3"])
        .current_dir(dir)
        .output();
    if !tarball.exists() {
        bail!("could not download hpcc's source ({})", tarball.display());
    }
    Ok(tarball)
}

pub fn ensure_xhpl(root: &Path) -> Result<()> {
    let xhpl = xhpl_path(root);
    if xhpl.exists() {
        eprintln!("==> xhpl: present");
        return Ok(());
    }
    eprintln!("==> xhpl: building HPL from Debian's hpcc 1.5.0 source (about 30 s)");
    let dir = root.join("target/hpl");
    fs::create_dir_all(&dir)?;
    let tarball = fetch_source(&dir)?;
    let src = dir.join("hpcc-1.5.0");
    if src.exists() {
        fs::remove_dir_all(&src)?;
    }
    run(
        Command::new("tar")
            .arg("xzf")
            .arg(&tarball)
            .current_dir(&dir),
        "unpacking hpcc",
    )?;
    let hpl = src.join("hpl");
    let make_inc = fs::read_to_string(root.join("bench/hpl/Make.Linux"))?
        .replace("@TOPDIR@", &hpl.to_string_lossy());
    fs::write(hpl.join("Make.Linux"), make_inc)?;
    // Open MPI 4.1 dropped these MPI-1 names.
    let packl = hpl.join("src/comm/HPL_packL.c");
    let code = fs::read_to_string(&packl)?
        .replace("MPI_Address(", "MPI_Get_address(")
        .replace("MPI_Type_struct(", "MPI_Type_create_struct(");
    fs::write(&packl, code)?;
    run(
        Command::new("make").arg("arch=Linux").current_dir(&hpl),
        "building libhpl",
    )?;
    // hpcc turned HPL's main into HPL_main; bench/hpl/xhpl_main.c is the driver.
    let ptest = hpl.join("testing/ptest");
    run(
        Command::new("mpicc")
            .args([
                "-O3",
                "-DHPL_CALL_CBLAS",
                "-Wno-implicit-function-declaration",
            ])
            .arg(format!("-I{}", hpl.join("include").display()))
            .arg(format!("-I{}", hpl.join("include/Linux").display()))
            .arg("-o")
            .arg(&xhpl)
            .arg(root.join("bench/hpl/xhpl_main.c"))
            .args(["HPL_pddriver.c", "HPL_pdinfo.c", "HPL_pdtest.c"])
            .arg(hpl.join("lib/Linux/libhpl.a"))
            .args(["-lopenblas", "-lm"])
            .current_dir(&ptest),
        "linking xhpl",
    )?;
    eprintln!("==> xhpl: built at {}", xhpl.display());
    Ok(())
}
