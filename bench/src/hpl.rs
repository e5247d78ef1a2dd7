//! The `hpl` suite: High-Performance Linpack (`xhpl`, built by `cargo xtask setup`) with
//! Open MPI, one rank per VM (two VMs per host for four ranks, as the thesis ran two per
//! dual-processor host), the MPI transport forced onto TCP over the VM interface.
use std::{fmt::Write as _, fs, path::Path};

use anyhow::{bail, Context, Result};
use violin_testbed::sys::ns_output;

use crate::{
    paths::BenchLab,
    results::{Better, Metric, NetPath},
};

pub struct Problem {
    pub id: &'static str,
    pub title: &'static str,
    pub n: usize,
    pub nb: usize,
    /// How many times one launch solves it; the figure is the median of the solves.
    pub solves: usize,
}

/// The large size keeps HPL compute-bound (as on any real cluster of two-core nodes); the
/// small one makes communication weigh more. A solve of the small one lasts about 0.1 s,
/// where one late wake-up moves its Gflops by a quarter or more: one launch solves it an
/// odd number of times, and the median of those solves is the repetition's figure.
pub fn problems(quick: bool) -> Vec<Problem> {
    vec![
        Problem {
            id: "large",
            title: "compute-bound",
            n: if quick { 5000 } else { 10000 },
            nb: 192,
            solves: 1,
        },
        Problem {
            id: "small",
            title: "communication-heavy",
            n: 1500,
            nb: 64,
            solves: 9,
        },
    ]
}

pub const RANKS: [usize; 2] = [2, 4];

pub fn metric_id(ranks: usize, p: &Problem) -> String {
    format!("r{ranks}_{}", p.id)
}

pub fn metrics(quick: bool) -> Vec<Metric> {
    let mut out = Vec::new();
    for ranks in RANKS {
        for p in problems(quick) {
            out.push(Metric {
                id: metric_id(ranks, &p),
                title: match p.solves {
                    1 => format!("HPL, {ranks} ranks, N={} NB={} ({})", p.n, p.nb, p.title),
                    k => format!(
                        "HPL, {ranks} ranks, N={} NB={} ({}, median of {k} solves)",
                        p.n, p.nb, p.title
                    ),
                },
                unit: "Gflops".into(),
                better: Better::Higher,
            });
        }
    }
    out
}

fn input_file(p: &Problem, ranks: usize) -> String {
    let (pr, q) = if ranks == 4 { (2, 2) } else { (1, ranks) };
    let mut s = String::new();
    let lines = [
        "HPLinpack benchmark input file",
        "Violin bench",
        "HPL.out      output file name (if any)",
        "6            device out (6=stdout,7=stderr,file)",
    ];
    for l in lines {
        let _ = writeln!(s, "{l}");
    }
    let _ = writeln!(s, "{}            # of problems sizes (N)", p.solves);
    let ns = vec![p.n.to_string(); p.solves].join(" ");
    let _ = writeln!(s, "{ns}         Ns");
    let _ = writeln!(s, "1            # of NBs");
    let _ = writeln!(s, "{}          NBs", p.nb);
    let _ = writeln!(
        s,
        "0            PMAP process mapping (0=Row-,1=Column-major)"
    );
    let _ = writeln!(s, "1            # of process grids (P x Q)");
    let _ = writeln!(s, "{pr}            Ps");
    let _ = writeln!(s, "{q}            Qs");
    for l in [
        "16.0         threshold",
        "1            # of panel fact",
        "2            PFACTs (0=left, 1=Crout, 2=Right)",
        "1            # of recursive stopping criterium",
        "4            NBMINs (>= 1)",
        "1            # of panels in recursion",
        "2            NDIVs",
        "1            # of recursive panel fact.",
        "1            RFACTs (0=left, 1=Crout, 2=Right)",
        "1            # of broadcast",
        "1            BCASTs (0=1rg,1=1rM,2=2rg,3=2rM,4=Lng,5=LnM)",
        "1            # of lookahead depth",
        "1            DEPTHs (>=0)",
        "2            SWAP (0=bin-exch,1=long,2=mix)",
        "64           swapping threshold",
        "0            L1 in (0=transposed,1=no-transposed) form",
        "0            U  in (0=transposed,1=no-transposed) form",
        "1            Equilibration (0=no,1=yes)",
        "8            memory alignment in double (> 0)",
    ] {
        let _ = writeln!(s, "{l}");
    }
    s
}

/// Open MPI's launch agent: runs each daemon inside the namespace named as its host, with
/// a private TMPDIR (namespaces share /tmp; without it session directories collide).
const AGENT: &str = r#"#!/bin/sh
while [ "${1#-}" != "$1" ]; do shift; done
host=$1; shift
dir=/tmp/violin-mpi/$host
mkdir -p "$dir"
exec env TMPDIR="$dir" ip netns exec "$host" sh -c "$*"
"#;

/// Runs xhpl with `ranks` ranks on `path`; returns Gflops.
pub fn run(bl: &BenchLab, path: NetPath, ranks: usize, p: &Problem, xhpl: &Path) -> Result<f64> {
    let per_host = if ranks == 4 { 2 } else { 1 };
    let eps: Vec<_> = (0..ranks)
        .map(|r| bl.endpoint(path, r / per_host, r % per_host))
        .collect();
    let dir = bl.lab.dir.join(format!(
        "hpl-{}-{ranks}-{}",
        path.label().replace(' ', "_"),
        p.id
    ));
    fs::create_dir_all(&dir)?;
    let agent = dir.join("agent.sh");
    fs::write(&agent, AGENT)?;
    std::process::Command::new("chmod")
        .arg("+x")
        .arg(&agent)
        .status()?;
    fs::write(dir.join("hpccinf.txt"), input_file(p, ranks))?;
    // xhpl appends to it: a file left by the last repetition would count twice.
    let outf = dir.join("hpccoutf.txt");
    if let Err(e) = fs::remove_file(&outf) {
        if e.kind() != std::io::ErrorKind::NotFound {
            return Err(e).with_context(|| format!("removing {}", outf.display()));
        }
    }
    // One hostfile line per namespace, with as many slots as ranks placed there.
    let mut hosts: Vec<(String, usize)> = Vec::new();
    for e in &eps {
        match hosts.iter_mut().find(|(n, _)| *n == e.ns) {
            Some((_, slots)) => *slots += 1,
            None => hosts.push((e.ns.clone(), 1)),
        }
    }
    let hostfile: String = hosts
        .iter()
        .map(|(n, s)| format!("{n} slots={s}\n"))
        .collect();
    fs::write(dir.join("hosts"), hostfile)?;
    let iface = if path == NetPath::Bare { "ul0" } else { "eth0" };
    let tmp = format!("/tmp/violin-mpi/{}-mpirun", eps[0].ns);
    fs::create_dir_all(&tmp)?;
    let dir_s = dir.to_string_lossy().into_owned();
    let agent_s = agent.to_string_lossy().into_owned();
    let hosts_s = dir.join("hosts").to_string_lossy().into_owned();
    let xhpl_s = xhpl.to_string_lossy().into_owned();
    let tmpdir = format!("TMPDIR={tmp}");
    let np = ranks.to_string();
    let args = [
        &tmpdir,
        "timeout",
        "900",
        "mpirun",
        "--allow-run-as-root",
        "--hostfile",
        &hosts_s,
        "-np",
        &np,
        "--mca",
        "plm_rsh_agent",
        &agent_s,
        "--mca",
        "plm_rsh_no_tree_spawn",
        "1",
        "--mca",
        "pml",
        "ob1",
        "--mca",
        "btl",
        "tcp,self",
        "--mca",
        "btl_tcp_if_include",
        iface,
        "--mca",
        "oob_tcp_if_include",
        iface,
        "--mca",
        "mpi_yield_when_idle",
        "1",
        // Every simulated host is the whole machine to Open MPI, whose default for up to
        // two ranks binds each host's first rank to core 0: both ranks of a 2-rank run
        // shared one core while the other idled. Unbound, the ranks spread over the cores
        // (as the NEMO3D stand-in's processes do).
        "--bind-to",
        "none",
        "-x",
        "OPENBLAS_NUM_THREADS=1",
        "--wdir",
        &dir_s,
        &xhpl_s,
    ];
    let out = ns_output(&eps[0].ns, "env", &args)?;
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("VIOLIN_HPL "));
    let Some(line) = line else {
        bail!(
            "xhpl on {} ({ranks} ranks) printed no result: {}{}",
            path.label(),
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    };
    if !line.contains("failure=0") {
        bail!("HPL's residual check failed: {line}");
    }
    // HPCC's HPL writes its result lines there, whatever the input file says; its
    // driver reports only the best solve.
    let results =
        fs::read_to_string(&outf).with_context(|| format!("xhpl wrote no {}", outf.display()))?;
    let mut gflops = solves(&results, p.n);
    if gflops.len() != p.solves {
        bail!(
            "xhpl on {} ({ranks} ranks) reported {} solves of N={}, not {}: {results}",
            path.label(),
            gflops.len(),
            p.n,
            p.solves
        );
    }
    gflops.sort_by(f64::total_cmp);
    Ok(gflops[gflops.len() / 2])
}

/// The Gflops of each solve of size `n` in HPL's output: its result lines, as
/// `WR11C2R4  1500  64  1  2  0.10  2.251e+01` (variant, N, NB, P, Q, seconds, Gflops).
fn solves(out: &str, n: usize) -> Vec<f64> {
    out.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let variant = f.first()?;
            if f.len() != 7 || !(variant.starts_with("WR") || variant.starts_with("WC")) {
                return None;
            }
            if f[1].parse::<usize>().ok()? != n {
                return None;
            }
            f[5].parse::<f64>().ok()?;
            f[6].parse().ok()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_problem_has_a_middle_solve() {
        for quick in [false, true] {
            assert!(problems(quick).iter().all(|p| p.solves % 2 == 1));
        }
    }

    #[test]
    fn the_input_file_asks_for_each_solve_of_the_problem() {
        let small = problems(false)
            .into_iter()
            .find(|p| p.id == "small")
            .unwrap();
        let input = input_file(&small, 4);
        let lines: Vec<&str> = input.lines().collect();
        assert!(lines[4].starts_with("9 "), "{}", lines[4]);
        let ns: Vec<&str> = lines[5]
            .split_whitespace()
            .take_while(|w| *w != "Ns")
            .collect();
        assert_eq!(ns, vec!["1500"; 9]);
        assert!(lines[6].starts_with("1 ") && lines[7].starts_with("64 "));
    }

    #[test]
    fn solves_are_read_from_hpls_result_lines_of_that_size() {
        let out = "\
T/V                N    NB     P     Q               Time                 Gflops
--------------------------------------------------------------------------------
WR11C2R4        1500    64     1     2               0.10              2.251e+01
||Ax-b||_oo/(eps*(||A||_oo*||x||_oo+||b||_oo)*N)=   3.1e-03 ...... PASSED
WR11C2R4        1500    64     1     2               0.14              1.603e+01
WC11C2R4        1000    64     1     2               0.05              1.300e+01
WR11C2R4        1500    64     1     2              fast              2.0e+01
VIOLIN_HPL gflops=16.03 time=0.14 n=1500 nb=64 p=1 q=2 failure=0
";
        assert_eq!(solves(out, 1500), vec![22.51, 16.03]);
        assert_eq!(solves(out, 1000), vec![13.0]);
        assert!(solves(out, 10000).is_empty());
    }
}
