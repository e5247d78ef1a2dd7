//! Bulk-synchronous exchanges over TCP, as the papers' BSP workloads make them: the
//! `patterns` generator's six topologies (VTTIF paper, section 4; VADAPT proposal, the
//! `patterns` benchmark) and the exchange of one iteration's messages between neighbours,
//! which `violin-patterns` and `violin-nemo` share.
use std::{
    collections::BTreeSet,
    io::{ErrorKind, Read, Write},
    net::TcpStream,
    os::fd::AsRawFd,
};

use anyhow::{bail, Context, Result};

/// The communication topologies of `patterns`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Topology {
    /// Each rank sends to the next, the last to the first.
    Ring,
    /// Every rank sends to every other.
    AllToAll,
    /// A line: each rank exchanges with the ranks before and after it.
    Bus,
    /// A 2-D grid (as square as the rank count allows): each rank exchanges with its
    /// neighbours up, down, left and right.
    Mesh,
    /// A binary reduction tree: each rank but 0 sends to its parent.
    Tree,
    /// Rank 0 exchanges with every other rank (gather and scatter).
    Star,
}

impl Topology {
    pub const ALL: [Topology; 6] = [
        Topology::Ring,
        Topology::AllToAll,
        Topology::Bus,
        Topology::Mesh,
        Topology::Tree,
        Topology::Star,
    ];

    pub fn name(&self) -> &'static str {
        match self {
            Topology::Ring => "ring",
            Topology::AllToAll => "all-to-all",
            Topology::Bus => "bus",
            Topology::Mesh => "mesh",
            Topology::Tree => "tree",
            Topology::Star => "star",
        }
    }

    /// The directed (sender, receiver) rank pairs among `n` ranks, sorted.
    pub fn edges(&self, n: usize) -> Vec<(usize, usize)> {
        let mut e = BTreeSet::new();
        let both = |e: &mut BTreeSet<_>, a: usize, b: usize| {
            e.insert((a, b));
            e.insert((b, a));
        };
        match self {
            Topology::Ring => {
                for i in 0..n {
                    e.insert((i, (i + 1) % n));
                }
            }
            Topology::AllToAll => {
                for i in 0..n {
                    for j in 0..n {
                        e.insert((i, j));
                    }
                }
            }
            Topology::Bus => {
                for i in 1..n {
                    both(&mut e, i - 1, i);
                }
            }
            Topology::Mesh => {
                let cols = mesh_columns(n);
                for i in 0..n {
                    if (i + 1) % cols != 0 && i + 1 < n {
                        both(&mut e, i, i + 1);
                    }
                    if i + cols < n {
                        both(&mut e, i, i + cols);
                    }
                }
            }
            Topology::Tree => {
                for i in 1..n {
                    e.insert((i, (i - 1) / 2));
                }
            }
            Topology::Star => {
                for i in 1..n {
                    both(&mut e, 0, i);
                }
            }
        }
        e.retain(|(a, b)| a != b);
        e.into_iter().collect()
    }
}

/// The mesh's width: `n` over its number of rows, the largest divisor of `n` whose square
/// is at most `n`; so 8 ranks make 2 rows of 4 and 9 make 3 of 3.
fn mesh_columns(n: usize) -> usize {
    let rows = (1..=n)
        .rev()
        .find(|r| r * r <= n && n.is_multiple_of(*r))
        .unwrap_or(1);
    n / rows
}

/// Connects to `addr`, retrying for 30 s while the other rank starts.
pub fn connect_retry(addr: std::net::SocketAddr) -> Result<TcpStream> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match TcpStream::connect_timeout(&addr, std::time::Duration::from_secs(2)) {
            Ok(s) => return Ok(s),
            Err(e) if std::time::Instant::now() > deadline => {
                return Err(e).with_context(|| format!("connect {addr}"))
            }
            Err(_) => std::thread::sleep(std::time::Duration::from_millis(50)),
        }
    }
}

/// One neighbour's connection and what this iteration moves over it.
pub struct Link {
    pub sock: TcpStream,
    /// Bytes to send it per iteration (0: none).
    pub send: usize,
    /// Bytes to receive from it per iteration (0: none).
    pub recv: usize,
}

/// One iteration's exchange: sends each link its bytes from `out` and reads what each
/// owes into `bufs` (one per link, at least its `recv` long), interleaved with poll so that
/// large messages cannot deadlock on full socket buffers. The sockets are non-blocking.
pub fn exchange(links: &mut [Link], out: &[u8], bufs: &mut [Vec<u8>]) -> Result<()> {
    let k = links.len();
    let mut sent = vec![0usize; k];
    let mut got = vec![0usize; k];
    let done = |links: &[Link], sent: &[usize], got: &[usize]| {
        links
            .iter()
            .zip(sent.iter().zip(got))
            .all(|(l, (s, g))| *s >= l.send && *g >= l.recv)
    };
    while !done(links, &sent, &got) {
        let mut fds: Vec<libc::pollfd> = links
            .iter()
            .enumerate()
            .map(|(i, l)| libc::pollfd {
                fd: l.sock.as_raw_fd(),
                events: (if got[i] < l.recv { libc::POLLIN } else { 0 })
                    | (if sent[i] < l.send { libc::POLLOUT } else { 0 }),
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` holds exactly `k` pollfds built from the streams of `links`, which
        // are borrowed for this whole function (so their fds are open) and alive across
        // the call.
        if unsafe { libc::poll(fds.as_mut_ptr(), k as libc::nfds_t, 30_000) } <= 0 {
            bail!("the exchange stalled for 30 s");
        }
        for (i, l) in links.iter_mut().enumerate() {
            if fds[i].revents & libc::POLLOUT != 0 && sent[i] < l.send {
                match l.sock.write(&out[sent[i]..l.send]) {
                    Ok(n) => sent[i] += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e).context("sending"),
                }
            }
            if fds[i].revents & (libc::POLLIN | libc::POLLHUP) != 0 && got[i] < l.recv {
                match l.sock.read(&mut bufs[i][got[i]..l.recv]) {
                    Ok(0) => bail!("a neighbour closed the connection"),
                    Ok(n) => got[i] += n,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                    Err(e) => return Err(e).context("receiving"),
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_six_topologies_on_eight_ranks() {
        let n = 8;
        assert_eq!(Topology::Ring.edges(n).len(), 8);
        assert!(Topology::Ring.edges(n).contains(&(7, 0)));
        assert_eq!(Topology::AllToAll.edges(n).len(), 56);
        assert_eq!(Topology::Bus.edges(n).len(), 14);
        // 2 x 4: 2 rows of 3 horizontal pairs, 4 vertical pairs, both ways.
        assert_eq!(mesh_columns(8), 4);
        let mesh = Topology::Mesh.edges(n);
        assert_eq!(mesh.len(), 2 * (2 * 3 + 4));
        assert!(mesh.contains(&(3, 7)) && !mesh.contains(&(3, 4)));
        assert_eq!(
            Topology::Tree.edges(n),
            [(1, 0), (2, 0), (3, 1), (4, 1), (5, 2), (6, 2), (7, 3)]
        );
        assert_eq!(Topology::Star.edges(n).len(), 14);
        for t in Topology::ALL {
            assert!(t.edges(n).iter().all(|(a, b)| a != b && *a < n && *b < n));
        }
        assert_eq!(mesh_columns(9), 3);
        assert_eq!(Topology::Ring.edges(2), [(0, 1), (1, 0)]);
    }

    #[test]
    fn an_exchange_moves_each_links_bytes() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        for s in [&a, &b] {
            s.set_nonblocking(true).unwrap();
        }
        // a sends 1 MB one way only; b receives it (bigger than the socket buffers).
        let out: Vec<u8> = (0..1_000_000u32).map(|i| i as u8).collect();
        let t = std::thread::spawn(move || {
            let mut links = [Link {
                sock: b,
                send: 0,
                recv: 1_000_000,
            }];
            let mut bufs = vec![vec![0u8; 1_000_000]];
            exchange(&mut links, &[], &mut bufs).unwrap();
            bufs.pop().unwrap()
        });
        let mut links = [Link {
            sock: a,
            send: 1_000_000,
            recv: 0,
        }];
        exchange(&mut links, &out, &mut [vec![]]).unwrap();
        assert_eq!(t.join().unwrap(), out);
    }
}
