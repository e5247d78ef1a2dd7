//! violin-pktgen: UDP traffic for the benchmarks, run inside lab namespaces.
//!
//! `flood` saturates a path with small datagrams (sendmmsg, 64 per call); `sink` counts
//! what arrives (recvmmsg) and reports the rate between the first and the last datagram;
//! `echo` and `ping` measure round trips one datagram at a time. Results are JSON on stdout.
use std::{
    net::{SocketAddr, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use bench::reports;
use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Send `size`-byte datagrams as fast as possible for `secs` seconds.
    Flood {
        #[arg(long)]
        dst: SocketAddr,
        #[arg(long, default_value_t = 18)]
        size: usize,
        #[arg(long)]
        secs: f64,
    },
    /// Count datagrams until none arrived for a second (or `max_secs` passed).
    Sink {
        #[arg(long)]
        bind: SocketAddr,
        #[arg(long)]
        max_secs: f64,
    },
    /// Answer every datagram until none arrived for `idle_secs`.
    Echo {
        #[arg(long)]
        bind: SocketAddr,
        #[arg(long, default_value_t = 3.0)]
        idle_secs: f64,
    },
    /// `count` round trips, one at a time; prints percentiles in microseconds.
    Ping {
        #[arg(long)]
        dst: SocketAddr,
        #[arg(long)]
        count: usize,
        #[arg(long, default_value_t = 18)]
        size: usize,
    },
}

const BATCH: usize = 64;

/// Any local address of `dst`'s family.
fn any_of(dst: SocketAddr) -> &'static str {
    match dst {
        SocketAddr::V4(_) => "0.0.0.0:0",
        SocketAddr::V6(_) => "[::]:0",
    }
}

fn flood(dst: SocketAddr, size: usize, secs: f64) -> Result<()> {
    let sock = UdpSocket::bind(any_of(dst))?;
    sock.connect(dst)?;
    let payload = vec![0x5au8; size];
    let mut iov: Vec<libc::iovec> = (0..BATCH)
        .map(|_| libc::iovec {
            iov_base: payload.as_ptr() as *mut _,
            iov_len: size,
        })
        .collect();
    // SAFETY: libc::mmsghdr holds only integers and raw pointers, so all-zero (null
    // msg_name/msg_iov/msg_control, zero lengths) is a valid value; the loop below points
    // each msg_iov at its own iovec.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_iov = v;
        m.msg_hdr.msg_iovlen = 1;
    }
    let end = Instant::now() + Duration::from_secs_f64(secs);
    let mut sent: u64 = 0;
    let mut errors: u64 = 0;
    while Instant::now() < end {
        // SAFETY: `msgs` holds BATCH mmsghdrs (the count passed); each msg_iov points at one
        // element of `iov`, whose iov_base/iov_len describe all of `payload` (size bytes).
        // msgs, iov and payload are alive and not moved across the call, sendmmsg only reads
        // the payload (it writes msg_len into msgs), and a null msg_name is valid because
        // the socket is connected.
        let n = unsafe { libc::sendmmsg(sock.as_raw_fd(), msgs.as_mut_ptr(), BATCH as u32, 0) };
        if n > 0 {
            sent += n as u64;
        } else {
            errors += 1;
        }
    }
    reports::print(&reports::Flood {
        sent,
        send_errors: errors,
    });
    Ok(())
}

fn sink(bind: SocketAddr, max_secs: f64) -> Result<()> {
    let sock = UdpSocket::bind(bind).with_context(|| format!("bind {bind}"))?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    // A deep receive queue so bursts are not lost to the measurement.
    let size: libc::c_int = 8 << 20;
    // SAFETY: `&size` points at a live c_int and the length passed, 4, is
    // size_of::<c_int>(); setsockopt only reads it. sock is the bound UdpSocket, open here.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            (&size as *const libc::c_int).cast(),
            4,
        )
    };
    let mut bufs = vec![[0u8; 2048]; BATCH];
    let mut iov: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: libc::mmsghdr holds only integers and raw pointers, so all-zero is a valid
    // value; the loop below points each msg_iov at its own iovec.
    let mut msgs: Vec<libc::mmsghdr> = (0..BATCH).map(|_| unsafe { std::mem::zeroed() }).collect();
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_iov = v;
        m.msg_hdr.msg_iovlen = 1;
    }
    let start = Instant::now();
    let (mut first, mut last) = (None, start);
    let mut packets: u64 = 0;
    let mut bytes: u64 = 0;
    // Ready marker for the harness.
    eprintln!("ready");
    loop {
        // SAFETY: `msgs` holds BATCH mmsghdrs (the count passed); each msg_iov points at one
        // iovec of `iov`, describing one whole 2048-byte array of `bufs`. bufs, iov and msgs
        // stay alive and are not moved or otherwise accessed while the kernel writes into
        // them; msg_name and msg_control are null with zero lengths, and a null timeout is
        // allowed.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as u32,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        let now = Instant::now();
        if n > 0 {
            first.get_or_insert(now);
            last = now;
            packets += n as u64;
            bytes += msgs[..n as usize]
                .iter()
                .map(|m| m.msg_len as u64)
                .sum::<u64>();
        }
        let idle = first.is_some() && now.duration_since(last) > Duration::from_secs(1);
        if idle || now.duration_since(start).as_secs_f64() > max_secs {
            break;
        }
    }
    let secs = first.map_or(0.0, |f| last.duration_since(f).as_secs_f64());
    reports::print(&reports::Sink {
        packets,
        bytes,
        secs,
    });
    Ok(())
}

fn echo(bind: SocketAddr, idle_secs: f64) -> Result<()> {
    let sock = UdpSocket::bind(bind).with_context(|| format!("bind {bind}"))?;
    sock.set_read_timeout(Some(Duration::from_secs_f64(idle_secs)))?;
    eprintln!("ready");
    let mut buf = [0u8; 2048];
    let mut answered: u64 = 0;
    while let Ok((n, from)) = sock.recv_from(&mut buf) {
        sock.send_to(&buf[..n], from)?;
        answered += 1;
    }
    reports::print(&reports::Echo { answered });
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

fn ping(dst: SocketAddr, count: usize, size: usize) -> Result<()> {
    let sock = UdpSocket::bind(any_of(dst))?;
    sock.connect(dst)?;
    sock.set_read_timeout(Some(Duration::from_millis(500)))?;
    let mut buf = vec![0u8; size.max(8)];
    let mut reply = [0u8; 2048];
    let mut rtts = Vec::with_capacity(count);
    let mut lost = 0u64;
    // A few unmeasured round trips warm caches and resolve neighbours.
    for seq in 0..(count + 20) as u64 {
        buf[..8].copy_from_slice(&seq.to_le_bytes());
        let t = Instant::now();
        sock.send(&buf)?;
        loop {
            match sock.recv(&mut reply) {
                Ok(n) if n >= 8 && reply[..8] == seq.to_le_bytes() => {
                    if seq >= 20 {
                        rtts.push(t.elapsed().as_secs_f64() * 1e6);
                    }
                    break;
                }
                Ok(_) => continue,
                Err(_) => {
                    lost += 1;
                    break;
                }
            }
        }
    }
    if rtts.is_empty() {
        bail!("no replies from {dst}");
    }
    rtts.sort_by(|a, b| a.total_cmp(b));
    reports::print(&reports::Ping {
        p50_us: percentile(&rtts, 0.5),
        p99_us: percentile(&rtts, 0.99),
        min_us: rtts[0],
        samples: rtts.len(),
        lost,
    });
    Ok(())
}

fn main() -> Result<()> {
    match Cli::parse().cmd {
        Cmd::Flood { dst, size, secs } => flood(dst, size, secs),
        Cmd::Sink { bind, max_secs } => sink(bind, max_secs),
        Cmd::Echo { bind, idle_secs } => echo(bind, idle_secs),
        Cmd::Ping { dst, count, size } => ping(dst, count, size),
    }
}
