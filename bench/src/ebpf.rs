//! The datapath's eBPF object (`target/ebpf/dataplane-ebpf`, which building violind
//! leaves there), loaded by the benchmark beside the daemons' own copies: to time each
//! program through BPF_PROG_TEST_RUN against a host's live maps, and for the frame
//! source and sink of the line-rate figures.
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context, Result};
use aya::{
    programs::{Program, ProgramError, SchedClassifier, Xdp},
    Ebpf, EbpfLoader,
};

fn object() -> PathBuf {
    violin_testbed::target_dir().join("ebpf/dataplane-ebpf")
}

/// Loads the object with its pinned maps in `maps`: a daemon's pin directory shares
/// that daemon's maps (its configuration, ports and forwarding table).
pub fn load(maps: &Path) -> Result<Ebpf> {
    load_object(&object(), maps)
        .context("the object is built with violind: cargo xtask bench builds it")
}

/// [`load`] of another build of the object (`bench cost --against`).
pub fn load_object(path: &Path, maps: &Path) -> Result<Ebpf> {
    // aya-log's level: 0 silences the programs' log calls, as violind runs them.
    let level: u8 = 0;
    EbpfLoader::new()
        .default_map_pin_directory(maps)
        .override_global("AYA_LOG_LEVEL", &level, false)
        .load_file(path)
        .with_context(|| format!("loading {}", path.display()))
}

/// Program `name` of the object, as its kind (`Xdp`, `SchedClassifier`).
pub fn program<'a, P>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut P>
where
    &'a mut P: TryFrom<&'a mut Program, Error = ProgramError>,
{
    Ok(ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("no program {name} in the object"))?
        .try_into()?)
}

/// Loads the XDP program `name` into the kernel.
pub fn xdp<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut Xdp> {
    let prog: &mut Xdp = program(ebpf, name)?;
    prog.load()
        .with_context(|| format!("the kernel rejected {name}"))?;
    Ok(prog)
}

/// Loads the TC program `name` into the kernel.
pub fn tc<'a>(ebpf: &'a mut Ebpf, name: &str) -> Result<&'a mut SchedClassifier> {
    let prog: &mut SchedClassifier = program(ebpf, name)?;
    prog.load()
        .with_context(|| format!("the kernel rejected {name}"))?;
    Ok(prog)
}
