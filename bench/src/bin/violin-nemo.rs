//! violin-nemo: a stand-in for NEMO3D's communication and computation pattern.
//!
//! NEMO3D (not public) is an MPI code whose ranks each own a slab of the simulated
//! nanostructure and, every iteration of its eigen-solver, compute on their slab and then
//! exchange boundary layers ("halos") with their two neighbours in a ring (thesis, section
//! 4.5.2: "NEMO3D communicates in a ring pattern", neighbours "communicate heavily"). This
//! program does exactly that over TCP: `--iters` times, a compute phase of `--work`
//! stencil sweeps over a local array, then a halo of `--halo` bytes to and from each ring
//! neighbour. One process per rank, each started in its own namespace; rank 0 prints the
//! wall time of the iterations as JSON.
use std::{
    net::{SocketAddr, TcpListener},
    time::Instant,
};

use anyhow::{bail, Context, Result};
use bench::{
    bsp::{connect_retry, exchange, Link},
    reports,
};
use clap::Parser;

#[derive(Parser)]
struct Cli {
    /// This process's rank, 0-based.
    #[arg(long)]
    rank: usize,
    /// Every rank's address (ip:port), in rank order.
    #[arg(long, value_delimiter = ',')]
    peers: Vec<SocketAddr>,
    #[arg(long)]
    iters: usize,
    /// Halo bytes sent to each neighbour per iteration.
    #[arg(long)]
    halo: usize,
    /// Stencil sweeps over the local slab per iteration (compute phase).
    #[arg(long)]
    work: usize,
    /// Local slab size in f64 elements.
    #[arg(long, default_value_t = 65536)]
    slab: usize,
}

/// The compute phase: Jacobi-style sweeps of a 3-point stencil, boundaries from the halos.
fn compute(x: &mut [f64], y: &mut [f64], sweeps: usize, left: f64, right: f64) {
    let n = x.len();
    for _ in 0..sweeps {
        y[0] = 0.25 * left + 0.5 * x[0] + 0.25 * x[1];
        for i in 1..n - 1 {
            y[i] = 0.25 * x[i - 1] + 0.5 * x[i] + 0.25 * x[i + 1];
        }
        y[n - 1] = 0.25 * x[n - 2] + 0.5 * x[n - 1] + 0.25 * right;
        x.copy_from_slice(y);
    }
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let n = cli.peers.len();
    if n < 2 || cli.rank >= n {
        bail!("--rank {} of {n} peers: need at least 2 ranks", cli.rank);
    }
    let me = cli.peers[cli.rank];
    let listener = TcpListener::bind(me).with_context(|| format!("bind {me}"))?;
    // Ring: connect to the right neighbour, accept the left one.
    let right_addr = cli.peers[(cli.rank + 1) % n];
    let connector = std::thread::spawn(move || connect_retry(right_addr));
    let (left, _) = listener.accept().context("accepting the left neighbour")?;
    let right = connector
        .join()
        .map_err(|_| anyhow::anyhow!("connect thread"))??;
    let halo = cli.halo.max(8);
    let mut socks = [left, right].map(|sock| Link {
        sock,
        send: halo,
        recv: halo,
    });
    for l in &socks {
        l.sock.set_nodelay(true)?;
        l.sock.set_nonblocking(true)?;
    }
    let mut out = vec![0u8; halo];
    let mut bufs = [vec![0u8; halo], vec![0u8; halo]];
    let mut x: Vec<f64> = (0..cli.slab).map(|i| (i % 17) as f64).collect();
    let mut y = vec![0.0; cli.slab];
    // One untimed exchange: every rank is connected and ready before the clock starts.
    exchange(&mut socks, &out, &mut bufs)?;
    let start = Instant::now();
    for _ in 0..cli.iters {
        let left_edge = f64::from_le_bytes(bufs[0][..8].try_into().unwrap());
        let right_edge = f64::from_le_bytes(bufs[1][..8].try_into().unwrap());
        compute(&mut x, &mut y, cli.work, left_edge, right_edge);
        out[..8].copy_from_slice(&x[0].to_le_bytes());
        exchange(&mut socks, &out, &mut bufs)?;
    }
    let secs = start.elapsed().as_secs_f64();
    if cli.rank == 0 {
        reports::print(&reports::Nemo {
            secs,
            iters: cli.iters,
            ranks: n,
            checksum: x[0],
        });
    }
    Ok(())
}
