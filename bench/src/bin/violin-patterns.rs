//! violin-patterns: the papers' BSP workload generator (`patterns`), run inside VMs.
//!
//! One process per rank, each in its own VM. Every iteration is a compute phase and then a
//! communication phase in which each rank sends a message to each of its out-neighbours in
//! the chosen topology and receives one from each in-neighbour; a rank waits for what it
//! is owed before its next iteration, so the ranks move in lockstep as BSP programs do.
//! Each rank prints its iteration times as one JSON line (`bench::reports::Patterns`).
//! `violin-patterns edges` prints a topology's directed rank pairs: what VTTIF should infer.
use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use bench::{
    bsp::{connect_retry, exchange, Link, Topology},
    reports,
};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "The papers' BSP workload generator (patterns)")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one rank.
    Run(Run),
    /// Print a topology's directed (sender, receiver) rank pairs as JSON.
    Edges {
        #[arg(long, value_enum)]
        topology: Topology,
        #[arg(long)]
        ranks: usize,
    },
}

#[derive(clap::Args)]
struct Run {
    /// This process's rank, 0-based.
    #[arg(long)]
    rank: usize,
    /// Every rank's address (ip:port), in rank order.
    #[arg(long, value_delimiter = ',', required = true)]
    peers: Vec<SocketAddr>,
    #[arg(long, value_enum)]
    topology: Topology,
    /// Bytes each rank sends each out-neighbour per iteration.
    #[arg(long, default_value_t = 65536)]
    message_bytes: usize,
    #[arg(long, default_value_t = 100)]
    iterations: usize,
    /// Compute phase per iteration, ms.
    #[arg(long, default_value_t = 0.0, conflicts_with = "compute_ratio")]
    compute_ms: f64,
    /// Compute phase per iteration as a multiple of the previous iteration's
    /// communication time (the compute/communicate ratio).
    #[arg(long)]
    compute_ratio: Option<f64>,
    /// Burn CPU in the compute phase instead of sleeping through it (the lab's VMs share
    /// the machine's cores, so sleeping is the default).
    #[arg(long)]
    spin: bool,
}

/// One connection per neighbour (either direction of an edge): a rank connects to its
/// higher-ranked neighbours, saying its rank, and accepts the lower-ranked ones.
fn connect(r: &Run, edges: &[(usize, usize)]) -> Result<Vec<Link>> {
    let n = r.peers.len();
    let me = r.rank;
    let mut send = vec![0; n];
    let mut recv = vec![0; n];
    for &(a, b) in edges {
        if a == me {
            send[b] = r.message_bytes;
        }
        if b == me {
            recv[a] = r.message_bytes;
        }
    }
    let neighbours: Vec<usize> = (0..n).filter(|&j| send[j] > 0 || recv[j] > 0).collect();
    let listener =
        TcpListener::bind(r.peers[me]).with_context(|| format!("bind {}", r.peers[me]))?;
    let higher: Vec<SocketAddr> = neighbours
        .iter()
        .filter(|&&j| j > me)
        .map(|&j| r.peers[j])
        .collect();
    let rank_bytes = (me as u64).to_le_bytes();
    let connector = std::thread::spawn(move || -> Result<Vec<TcpStream>> {
        higher
            .into_iter()
            .map(|a| {
                let mut s = connect_retry(a)?;
                s.write_all(&rank_bytes)?;
                Ok(s)
            })
            .collect()
    });
    let mut socks: BTreeMap<usize, TcpStream> = BTreeMap::new();
    let lower: Vec<usize> = neighbours.iter().copied().filter(|&j| j < me).collect();
    while socks.len() < lower.len() {
        let (mut s, from) = listener.accept().context("accepting a neighbour")?;
        let mut b = [0u8; 8];
        s.read_exact(&mut b)?;
        let rank = u64::from_le_bytes(b) as usize;
        // Only a lower-ranked neighbour, once: anything else is not of this run.
        if !lower.contains(&rank) || socks.contains_key(&rank) {
            eprintln!("violin-patterns: ignoring a connection from {from} saying rank {rank}");
            continue;
        }
        socks.insert(rank, s);
    }
    let outgoing = connector
        .join()
        .map_err(|_| anyhow::anyhow!("the connect thread panicked"))??;
    for (s, j) in outgoing
        .into_iter()
        .zip(neighbours.iter().filter(|&&j| j > me))
    {
        socks.insert(*j, s);
    }
    socks
        .into_iter()
        .map(|(j, sock)| {
            sock.set_nodelay(true)?;
            sock.set_nonblocking(true)?;
            Ok(Link {
                sock,
                send: send[j],
                recv: recv[j],
            })
        })
        .collect()
}

fn compute(d: Duration, spin: bool) {
    if !spin {
        std::thread::sleep(d);
        return;
    }
    let end = Instant::now() + d;
    let mut x = 1.0f64;
    while Instant::now() < end {
        for _ in 0..1000 {
            x = x * 1.000_000_1 + 1e-9;
        }
    }
    std::hint::black_box(x);
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
}

fn run(r: &Run) -> Result<()> {
    let n = r.peers.len();
    if n < 2 || r.rank >= n {
        bail!("--rank {} of {n} peers: need at least 2 ranks", r.rank);
    }
    if r.message_bytes == 0 {
        bail!("--message-bytes: give at least 1");
    }
    let edges = r.topology.edges(n);
    let mut links = connect(r, &edges)?;
    let out = vec![0x5au8; r.message_bytes];
    let mut bufs: Vec<Vec<u8>> = links.iter().map(|l| vec![0u8; l.recv]).collect();
    // One untimed iteration: every rank is connected and ready before the clock starts.
    exchange(&mut links, &out, &mut bufs)?;
    let mut iterations = Vec::with_capacity(r.iterations);
    let mut communicate = Vec::with_capacity(r.iterations);
    let mut computed = 0.0;
    let mut last_comm = Duration::ZERO;
    let start = Instant::now();
    for k in 0..r.iterations {
        let t0 = Instant::now();
        let phase = match r.compute_ratio {
            Some(ratio) => last_comm.mul_f64(ratio),
            None => Duration::from_secs_f64(r.compute_ms / 1e3),
        };
        compute(phase, r.spin);
        computed += phase.as_secs_f64() * 1e3;
        let t1 = Instant::now();
        exchange(&mut links, &out, &mut bufs)?;
        last_comm = t1.elapsed();
        communicate.push(last_comm.as_secs_f64() * 1e3);
        iterations.push(t0.elapsed().as_secs_f64() * 1e3);
        if r.rank == 0 && (k + 1) % (r.iterations / 10).max(1) == 0 {
            eprintln!(
                "violin-patterns: {} iteration {}/{} ({:.2} ms mean)",
                r.topology.name(),
                k + 1,
                r.iterations,
                iterations.iter().sum::<f64>() / iterations.len() as f64
            );
        }
    }
    let total_s = start.elapsed().as_secs_f64();
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let mut sorted = iterations.clone();
    sorted.sort_by(f64::total_cmp);
    reports::print(&reports::Patterns {
        rank: r.rank,
        ranks: n,
        topology: r.topology.name().into(),
        iterations: r.iterations,
        message_bytes: r.message_bytes,
        compute_ms: computed / r.iterations.max(1) as f64,
        total_s,
        iteration_ms_mean: mean(&iterations),
        iteration_ms_p50: quantile(&sorted, 0.5),
        iteration_ms_p99: quantile(&sorted, 0.99),
        communicate_ms_mean: mean(&communicate),
    });
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Run(r) => run(&r),
        Command::Edges { topology, ranks } => {
            reports::print(&reports::Edges {
                topology: topology.name().into(),
                ranks,
                edges: topology.edges(ranks),
            });
            Ok(())
        }
    }
}
