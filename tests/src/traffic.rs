//! Traffic between lab VMs: ping, checksummed TCP transfers, crafted frames.
use std::{
    hash::Hasher,
    io::{Read, Write},
    net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream},
    sync::{
        atomic::{AtomicBool, Ordering},
        mpsc, Arc,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::sys::{in_netns, ns_output, spawn_in_netns};

/// Result of a `ping` run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingResult {
    pub sent: u32,
    pub received: u32,
}

impl PingResult {
    pub fn lost(&self) -> u32 {
        self.sent - self.received
    }
}

/// Parses ping's "N packets transmitted, M received" line.
pub fn parse_ping(out: &str) -> Option<PingResult> {
    let line = out.lines().find(|l| l.contains("packets transmitted"))?;
    let mut nums = line
        .split(|c: char| !c.is_ascii_digit())
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<u32>());
    Some(PingResult {
        sent: nums.next()?.ok()?,
        received: nums.next()?.ok()?,
    })
}

/// Pings `target` from namespace `ns`; `extra` are more ping options.
pub fn ping(ns: &str, target: &str, count: u32, extra: &[&str]) -> Result<PingResult> {
    let count = count.to_string();
    let mut args = vec!["-c", count.as_str(), "-W", "1"];
    args.extend_from_slice(extra);
    args.push(target);
    let out = ns_output(ns, "ping", &args)?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_ping(&text).with_context(|| format!("unexpected ping output: {text}"))
}

/// A ping that runs until stopped: proof that forwarding never stopped meanwhile.
pub struct Pinger {
    child: std::process::Child,
}

impl Pinger {
    /// Pings `target` from namespace `ns` every `interval` (ping's `-i`).
    pub fn start(ns: &str, target: &str, interval: &str) -> Result<Pinger> {
        let child = std::process::Command::new("ip")
            .args([
                "netns", "exec", ns, "ping", "-W", "1", "-i", interval, target,
            ])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .context("starting ping")?;
        Ok(Pinger { child })
    }

    /// Stops it (SIGINT: ping then prints its summary) and reads what it counted.
    pub fn stop(self) -> Result<PingResult> {
        // `ip netns exec` execs ping, so this is ping's pid.
        // SAFETY: kill(2) takes only integers and accesses no memory of this process; the
        // pid is our own child's, not yet waited for, so it cannot have been reused.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let out = self.child.wait_with_output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        parse_ping(&text).with_context(|| format!("unexpected ping output: {text}"))
    }
}

/// Pings until one reply arrives or `timeout` passes (ARP/ND, learning, start-up).
pub fn wait_ping(ns: &str, target: &str, timeout: Duration) -> Result<()> {
    let deadline = Instant::now() + timeout;
    loop {
        let r = ping(ns, target, 1, &[])?;
        if r.received == 1 {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("no reply from {target} in {ns} within {timeout:?}");
        }
    }
}

/// Deterministic pseudo-random bytes (xorshift), so both ends can be checked.
struct Pattern(u64);

impl Pattern {
    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            let b = self.0.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
    }
}

#[derive(Debug)]
pub struct Transfer {
    pub bytes: u64,
    pub sent_digest: u64,
    pub received_digest: u64,
    pub elapsed: Duration,
}

impl Transfer {
    pub fn gbit_per_s(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64() / 1e9
    }
}

fn digest() -> std::collections::hash_map::DefaultHasher {
    std::collections::hash_map::DefaultHasher::new()
}

/// Sends `bytes` of a pseudo-random stream over TCP from namespace `from` to `to_ip` in
/// namespace `to`, hashing both ends. Fails if the stream stalls for 20 s.
pub fn tcp_transfer(
    from: &str,
    to: &str,
    to_ip: Ipv4Addr,
    port: u16,
    bytes: u64,
) -> Result<Transfer> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let server = spawn_in_netns(to, move || {
        let listener = TcpListener::bind(SocketAddr::from((to_ip, port)))
            .with_context(|| format!("bind {to_ip}:{port}"))?;
        ready_tx.send(()).ok();
        let mut s = accept_within(&listener, Duration::from_secs(20))?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        let mut h = digest();
        let mut buf = vec![0u8; 1 << 16];
        let mut total = 0u64;
        loop {
            let n = s.read(&mut buf).context("receiving")?;
            if n == 0 {
                break;
            }
            h.write(&buf[..n]);
            total += n as u64;
        }
        Ok((total, h.finish()))
    })?;
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .context("server did not start")?;
    let start = Instant::now();
    let sent = in_netns(from, move || {
        let mut s =
            TcpStream::connect_timeout(&SocketAddr::from((to_ip, port)), Duration::from_secs(10))
                .with_context(|| format!("connect {to_ip}:{port}"))?;
        s.set_write_timeout(Some(Duration::from_secs(20)))?;
        let mut p = Pattern(0x9e37_79b9_7f4a_7c15 ^ port as u64);
        let mut h = digest();
        let mut buf = vec![0u8; 1 << 16];
        let mut left = bytes;
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            p.fill(&mut buf[..n]);
            s.write_all(&buf[..n]).context("sending")?;
            h.write(&buf[..n]);
            left -= n as u64;
        }
        s.shutdown(std::net::Shutdown::Write)?;
        // Wait for the receiver to close, so the transfer is complete when we return.
        let _ = s.read(&mut [0u8; 1]);
        Ok(h.finish())
    });
    let received = server
        .join()
        .map_err(|_| anyhow::anyhow!("receiver panicked"))?;
    let sent = sent?;
    let (total, received_digest) = received?;
    Ok(Transfer {
        bytes: total,
        sent_digest: sent,
        received_digest,
        elapsed: start.elapsed(),
    })
}

/// The first connection to `listener` within `timeout`: a client that never connects
/// fails the caller instead of leaving its server thread blocked (and the test hung).
fn accept_within(listener: &TcpListener, timeout: Duration) -> Result<TcpStream> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)?;
                return Ok(s);
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if Instant::now() > deadline {
                    bail!("no connection within {timeout:?}");
                }
                thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// `rounds` request/response exchanges of `size`-byte messages over one TCP connection
/// from `from` to a server in `to` that echoes each back (small messages one at a time,
/// as a latency-bound application sends them). Fails if an echo differs from its
/// request.
pub fn tcp_exchange(
    from: &str,
    to: &str,
    to_ip: Ipv4Addr,
    port: u16,
    rounds: usize,
    size: usize,
) -> Result<()> {
    let (ready_tx, ready_rx) = mpsc::channel();
    let server = spawn_in_netns(to, move || {
        let listener = TcpListener::bind(SocketAddr::from((to_ip, port)))
            .with_context(|| format!("bind {to_ip}:{port}"))?;
        ready_tx.send(()).ok();
        let mut s = accept_within(&listener, Duration::from_secs(20))?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        s.set_nodelay(true)?;
        let mut buf = vec![0u8; size];
        for _ in 0..rounds {
            s.read_exact(&mut buf).context("server receiving")?;
            s.write_all(&buf).context("server echoing")?;
        }
        Ok(())
    })?;
    ready_rx
        .recv_timeout(Duration::from_secs(10))
        .context("server did not start")?;
    let client = in_netns(from, move || {
        let mut s =
            TcpStream::connect_timeout(&SocketAddr::from((to_ip, port)), Duration::from_secs(10))
                .with_context(|| format!("connect {to_ip}:{port}"))?;
        s.set_read_timeout(Some(Duration::from_secs(20)))?;
        s.set_nodelay(true)?;
        let mut p = Pattern(0x2545_f491_4f6c_dd1d ^ port as u64);
        let (mut msg, mut echo) = (vec![0u8; size], vec![0u8; size]);
        for round in 0..rounds {
            p.fill(&mut msg);
            s.write_all(&msg).context("client sending")?;
            s.read_exact(&mut echo).context("client receiving")?;
            if echo != msg {
                bail!("round {round}: the echo differs from the request");
            }
        }
        Ok(())
    });
    let served = server
        .join()
        .map_err(|_| anyhow::anyhow!("echo server panicked"))?;
    client?;
    served
}

/// An AF_PACKET socket that sends raw Ethernet frames out of one interface.
struct RawSender {
    fd: libc::c_int,
    sll: libc::sockaddr_ll,
}

impl RawSender {
    /// Opens it in the current network namespace.
    fn open(ifname: &str) -> Result<RawSender> {
        let cname = std::ffi::CString::new(ifname)?;
        // SAFETY: `cname` is a CString alive across the call, so the pointer is a valid
        // NUL-terminated string; if_nametoindex only reads it.
        let ifindex = unsafe { libc::if_nametoindex(cname.as_ptr()) };
        if ifindex == 0 {
            bail!("no interface {ifname}");
        }
        // SAFETY: socket(2) takes only integer arguments and accesses no memory of ours; the
        // result is checked just below.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, 0) };
        if fd < 0 {
            bail!("AF_PACKET socket: {}", std::io::Error::last_os_error());
        }
        // SAFETY: libc::sockaddr_ll consists of integers and a u8 array, so all-zero is a
        // valid value; the fields that matter are set below.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_ifindex = ifindex as i32;
        sll.sll_halen = 6;
        Ok(RawSender { fd, sll })
    }

    /// Whether the whole frame was sent.
    fn send(&mut self, f: &[u8]) -> bool {
        self.sll.sll_addr[..6].copy_from_slice(&f[..6.min(f.len())]);
        // SAFETY: `f` is a live slice, valid for reads of f.len() bytes; `sll` is a live
        // sockaddr_ll and the length passed is exactly its size; fd is the open AF_PACKET
        // socket this RawSender owns. sendto only reads these.
        let n = unsafe {
            libc::sendto(
                self.fd,
                f.as_ptr().cast(),
                f.len(),
                0,
                (&self.sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        n == f.len() as isize
    }
}

impl Drop for RawSender {
    fn drop(&mut self) {
        // SAFETY: fd is the socket opened in RawSender::open, owned only by this value and
        // closed only here.
        unsafe { libc::close(self.fd) };
    }
}

/// Sends raw Ethernet frames out of `ifname` in namespace `ns` (AF_PACKET).
pub fn send_raw(ns: &str, ifname: &str, frames: Vec<Vec<u8>>) -> Result<usize> {
    let ifname = ifname.to_string();
    in_netns(ns, move || {
        let mut tx = RawSender::open(&ifname)?;
        Ok(frames.iter().filter(|f| tx.send(f)).count())
    })
}

/// Sends `frame` out of `ifname` in namespace `ns` at up to `pps` frames per second, for
/// `duration`; returns how many went out and how long that took.
pub fn flood_raw(
    ns: &str,
    ifname: &str,
    frame: Vec<u8>,
    pps: u32,
    duration: Duration,
) -> Result<(usize, Duration)> {
    let ifname = ifname.to_string();
    in_netns(ns, move || {
        let mut tx = RawSender::open(&ifname)?;
        let start = Instant::now();
        let mut sent = 0;
        while start.elapsed() < duration {
            for _ in 0..100 {
                if tx.send(&frame) {
                    sent += 1;
                }
            }
            let due = Duration::from_secs_f64(sent as f64 / f64::from(pps.max(1)));
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        Ok((sent, start.elapsed()))
    })
}

/// Sends `count` UDP datagrams of `size` bytes from namespace `ns` to `dst` as fast as
/// the socket takes them; returns how many were sent.
pub fn udp_blast(ns: &str, dst: SocketAddr, count: usize, size: usize) -> Result<usize> {
    in_netns(ns, move || {
        let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
        s.connect(dst)?;
        let buf = vec![0x42u8; size];
        let mut sent = 0;
        for _ in 0..count {
            if s.send(&buf).is_ok() {
                sent += 1;
            }
        }
        Ok(sent)
    })
}

/// A plain HTTP/1.0 GET from inside namespace `ns`; returns (status, body).
pub fn http_get(ns: &str, addr: SocketAddr, path_and_query: &str) -> Result<(u16, String)> {
    http_get_with(ns, addr, path_and_query, None)
}

/// [`http_get`] with a bearer token.
pub fn http_get_with(
    ns: &str,
    addr: SocketAddr,
    path_and_query: &str,
    token: Option<&str>,
) -> Result<(u16, String)> {
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let req = format!("GET {path_and_query} HTTP/1.0\r\nHost: {addr}\r\n{auth}\r\n");
    in_netns(ns, move || {
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .with_context(|| format!("connect {addr}"))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.write_all(req.as_bytes())?;
        let mut raw = Vec::new();
        s.read_to_end(&mut raw)?;
        let text = String::from_utf8_lossy(&raw).into_owned();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .with_context(|| format!("not an HTTP response: {head}"))?;
        Ok((status, body.to_string()))
    })
}

/// Percent-encodes a URL query value.
pub fn url_encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A packet capture (tcpdump) running in a namespace.
pub struct Capture {
    child: std::process::Child,
    file: std::path::PathBuf,
}

impl Capture {
    /// Starts capturing on `iface` in `ns` into `file`, with a pcap `filter`.
    pub fn start(ns: &str, iface: &str, filter: &str, file: &std::path::Path) -> Result<Capture> {
        let path = file.to_string_lossy().into_owned();
        let mut child = crate::sys::ns_command(
            ns,
            "tcpdump",
            // Immediate mode: otherwise libpcap hands packets over in blocks, once a
            // second, and what arrived just before stop() would be lost with the block.
            &[
                "-i",
                iface,
                "-n",
                "-U",
                "--immediate-mode",
                "-w",
                &path,
                filter,
            ],
        )
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("starting tcpdump")?;
        // tcpdump creates the file once it listens.
        let deadline = Instant::now() + Duration::from_secs(10);
        while !file.exists() {
            if let Some(st) = child.try_wait()? {
                bail!("tcpdump in {ns} exited: {st}");
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                bail!("tcpdump in {ns} did not start");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(Duration::from_millis(300));
        Ok(Capture {
            child,
            file: file.to_path_buf(),
        })
    }

    /// Stops the capture and returns one decoded line per captured frame.
    pub fn stop(mut self) -> Result<Vec<String>> {
        std::thread::sleep(Duration::from_millis(300));
        // SAFETY: kill(2) takes only integers and accesses no memory of this process.
        // self.child has not been waited for yet (wait() follows), so its pid cannot have
        // been reused and still names our tcpdump; SIGINT lets it flush the capture file.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGINT) };
        let _ = self.child.wait();
        let path = self.file.to_string_lossy().into_owned();
        let out = crate::sys::run("tcpdump", &["-r", &path, "-n", "-e", "-x"])?;
        // Join tcpdump's hex continuation lines to their packet's line.
        let mut frames: Vec<String> = Vec::new();
        for line in out.lines() {
            if line.starts_with('\t') || line.starts_with(' ') {
                if let Some(last) = frames.last_mut() {
                    last.push_str(line.trim());
                    last.push(' ');
                }
            } else if !line.is_empty() {
                frames.push(format!("{line} "));
            }
        }
        Ok(frames)
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// UDP at a steady rate along a set of directed edges between namespaces, until stopped:
/// the application traffic of a communication pattern, seen from the network. Every
/// destination drains what it gets, so nothing comes back (not even ICMP errors).
pub struct UdpPattern {
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<Result<()>>>,
}

impl UdpPattern {
    /// [`UdpPattern::start`] between lab VMs: each (sender, receiver) pair of indexes
    /// into `vms` is an edge.
    pub fn between(
        vms: &[crate::lab::Vm],
        pairs: &[(usize, usize)],
        port: u16,
        per_sec: u32,
    ) -> Result<UdpPattern> {
        let edges: Vec<(String, String, Ipv4Addr)> = pairs
            .iter()
            .map(|&(a, b)| (vms[a].ns.clone(), vms[b].ns.clone(), vms[b].ip))
            .collect();
        UdpPattern::start(&edges, port, per_sec)
    }

    /// `edges`: (sender's namespace, receiver's namespace, receiver's address); each edge
    /// sends `per_sec` datagrams of 1000 bytes per second to UDP `port`.
    pub fn start(
        edges: &[(String, String, Ipv4Addr)],
        port: u16,
        per_sec: u32,
    ) -> Result<UdpPattern> {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut receivers: Vec<&str> = edges.iter().map(|(_, to, _)| to.as_str()).collect();
        receivers.sort();
        receivers.dedup();
        for ns in receivers {
            let stop = stop.clone();
            threads.push(spawn_in_netns(ns, move || {
                let s = std::net::UdpSocket::bind(("0.0.0.0", port))?;
                s.set_read_timeout(Some(Duration::from_millis(100)))?;
                let mut buf = [0u8; 2048];
                while !stop.load(Ordering::Relaxed) {
                    let _ = s.recv(&mut buf);
                }
                Ok(())
            })?);
        }
        // The receivers are bound before anything is sent.
        thread::sleep(Duration::from_millis(200));
        let gap = Duration::from_secs(1) / per_sec.max(1);
        for (from, _, ip) in edges {
            let (stop, dst) = (stop.clone(), SocketAddr::from((*ip, port)));
            threads.push(spawn_in_netns(from, move || {
                let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
                s.connect(dst)?;
                let buf = [0x5au8; 1000];
                let start = Instant::now();
                let mut sent = 0u32;
                while !stop.load(Ordering::Relaxed) {
                    let _ = s.send(&buf);
                    sent += 1;
                    // Paced against the start, so a late wake-up does not lower the rate.
                    let due = start + gap * sent;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        thread::sleep(wait);
                    }
                }
                Ok(())
            })?);
        }
        Ok(UdpPattern { stop, threads })
    }

    /// Stops every sender and receiver; fails if one of them failed.
    pub fn stop(self) -> Result<()> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join()
                .map_err(|_| anyhow::anyhow!("a pattern thread panicked"))??;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ping_summary_is_parsed() {
        let out = "PING 10.0.0.2 (10.0.0.2) 56(84) bytes of data.\n\n--- 10.0.0.2 ping statistics ---\n5 packets transmitted, 4 received, 20% packet loss, time 4005ms\n";
        assert_eq!(
            parse_ping(out),
            Some(PingResult {
                sent: 5,
                received: 4
            })
        );
        assert_eq!(parse_ping("nothing"), None);
    }

    #[test]
    fn pattern_is_deterministic() {
        let (mut a, mut b) = (vec![0u8; 100], vec![0u8; 100]);
        Pattern(7).fill(&mut a);
        Pattern(7).fill(&mut b);
        assert_eq!(a, b);
        assert_ne!(a, vec![0u8; 100]);
    }
}
