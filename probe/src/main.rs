//! `violin-probe PEER_IP [--port 7] [--interval-ms 10]`: runs inside a test guest and
//! measures its link to a peer while the guest is, say, live-migrated.
//!
//! Every interval it writes one numbered line on one long-lived TCP connection to the
//! peer's echo server and sends one ICMP echo request; every 500 ms it prints a
//! `VIOLIN-PROBE key=value ...` line (`violin_probe::Report`, which the testbed reads
//! back).
//! It never reconnects: a broken session is what it is there to see.
use violin_probe::Report;

use std::{
    ffi::c_int,
    fmt,
    fs::File,
    io::{BufRead, BufReader, Read, Write},
    net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream},
    os::fd::{AsRawFd, FromRawFd, OwnedFd},
    process::exit,
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

const USAGE: &str = "usage: violin-probe PEER_IP [--port 7] [--interval-ms 10]";
const REPORT_EVERY: Duration = Duration::from_millis(500);
/// The peer's guest may boot after this one.
const CONNECT_FOR: Duration = Duration::from_secs(60);

struct Args {
    peer: Ipv4Addr,
    port: u16,
    interval: Duration,
}

fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Args, String> {
    let mut peer = None;
    let mut port = 7;
    let mut interval_ms = 10;
    while let Some(arg) = args.next() {
        let mut value = |name: &str| {
            args.next()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or(format!("{name} needs a number"))
        };
        match arg.as_str() {
            "--port" => port = u16::try_from(value("--port")?).map_err(|e| e.to_string())?,
            "--interval-ms" => interval_ms = value("--interval-ms")?.max(1),
            _ if peer.is_none() => {
                peer = Some(arg.parse().map_err(|_| format!("bad peer address {arg}"))?)
            }
            _ => return Err(format!("unexpected argument {arg}")),
        }
    }
    Ok(Args {
        peer: peer.ok_or("missing PEER_IP")?,
        port,
        interval: Duration::from_millis(interval_ms),
    })
}

/// One measured stream of requests and answers.
#[derive(Default)]
struct Series {
    sent: u64,
    received: u64,
    last: Option<Instant>,
    max_gap: Duration,
}

impl Series {
    fn received_at(&mut self, now: Instant) {
        if let Some(last) = self.last {
            self.max_gap = self.max_gap.max(now - last);
        }
        self.last = Some(now);
        self.received += 1;
    }

    /// Counts the gap still open too, so a link that went silent shows in the report
    /// before anything arrives again (or when nothing ever does).
    fn max_gap_ms(&self, now: Instant) -> u64 {
        let open = self.last.map_or(Duration::ZERO, |last| now - last);
        self.max_gap.max(open).as_millis() as u64
    }
}

#[derive(Default)]
struct State {
    tcp: Series,
    ping: Series,
    tcp_error: Option<String>,
}

type Shared = Arc<Mutex<State>>;

fn lock(state: &Shared) -> std::sync::MutexGuard<'_, State> {
    // A panicked thread leaves plain counters behind: still worth reporting.
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// Records the session's first error; later ones are consequences of it.
fn tcp_failed(state: &Shared, what: &str, e: &dyn fmt::Display) {
    let text: String = format!("{what}:{e}")
        .chars()
        .map(|c| if c.is_whitespace() { '_' } else { c })
        .collect();
    lock(state).tcp_error.get_or_insert(text);
}

/// The report of `s` as of `now`.
fn report_of(s: &State, now: Instant) -> Report {
    Report {
        tcp_sent: s.tcp.sent,
        tcp_echoed: s.tcp.received,
        tcp_max_gap_ms: s.tcp.max_gap_ms(now),
        tcp_error: s.tcp_error.clone(),
        ping_sent: s.ping.sent,
        ping_received: s.ping.received,
        ping_max_gap_ms: s.ping.max_gap_ms(now),
    }
}

fn connect_retrying(peer: SocketAddr) -> std::io::Result<TcpStream> {
    let start = Instant::now();
    loop {
        match TcpStream::connect_timeout(&peer, Duration::from_secs(2)) {
            Ok(s) => return Ok(s),
            Err(e) if start.elapsed() >= CONNECT_FOR => return Err(e),
            Err(_) => thread::sleep(Duration::from_millis(250)),
        }
    }
}

fn tcp_session(peer: SocketAddr, interval: Duration, state: Shared) {
    let stream = match connect_retrying(peer) {
        Ok(s) => s,
        Err(e) => return tcp_failed(&state, "connect", &e),
    };
    // Nagle would hold a line back while the previous echo is outstanding.
    let _ = stream.set_nodelay(true);
    let reader = match stream.try_clone() {
        Ok(r) => r,
        Err(e) => return tcp_failed(&state, "clone", &e),
    };
    let echo_state = state.clone();
    thread::spawn(move || read_echoes(reader, echo_state));
    let mut next = Instant::now();
    for n in 0u64.. {
        if lock(&state).tcp_error.is_some() {
            return;
        }
        if let Err(e) = (&stream).write_all(format!("{n}\n").as_bytes()) {
            return tcp_failed(&state, "write", &e);
        }
        lock(&state).tcp.sent += 1;
        next += interval;
        thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

fn read_echoes(stream: TcpStream, state: Shared) {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    for expected in 0u64.. {
        line.clear();
        match reader.read_line(&mut line) {
            Ok(0) => return tcp_failed(&state, "read", &"eof"),
            Err(e) => return tcp_failed(&state, "read", &e),
            Ok(_) if line.trim_end() != expected.to_string() => {
                return tcp_failed(&state, "echo", &format!("expected_{expected}_got_{line}"))
            }
            Ok(_) => lock(&state).tcp.received_at(Instant::now()),
        }
    }
}

/// RFC 1071 Internet checksum.
fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn echo_request(id: u16, seq: u16) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[0] = 8; // echo request, code 0
    p[4..6].copy_from_slice(&id.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    p[8..].copy_from_slice(b"violinpr");
    let sum = checksum(&p);
    p[2..4].copy_from_slice(&sum.to_be_bytes());
    p
}

/// Whether `packet` (IPv4 header included, as raw sockets deliver it) is an echo reply
/// to this probe.
fn is_reply(packet: &[u8], id: u16) -> bool {
    let Some(&first) = packet.first() else {
        return false;
    };
    let header = usize::from(first & 0x0f) * 4;
    packet
        .get(header..)
        .is_some_and(|icmp| icmp.len() >= 8 && icmp[0] == 0 && icmp[4..6] == id.to_be_bytes())
}

/// `struct sockaddr_in` from <netinet/in.h>.
#[repr(C)]
struct SockAddrIn {
    family: u16,
    port_be: u16,
    addr: [u8; 4],
    zero: [u8; 8],
}

// std has no raw sockets; these are glibc's, which std links anyway.
extern "C" {
    fn socket(domain: c_int, kind: c_int, protocol: c_int) -> c_int;
    fn connect(fd: c_int, addr: *const SockAddrIn, len: u32) -> c_int;
}

const AF_INET: c_int = 2;
const SOCK_RAW: c_int = 3;
const IPPROTO_ICMP: c_int = 1;

/// A raw ICMP socket connected to `peer`: the kernel then hands it only `peer`'s packets,
/// and plain read/write work on it.
fn icmp_socket(peer: Ipv4Addr) -> std::io::Result<File> {
    // SAFETY: socket(2) takes three integers and touches no memory of ours.
    let fd = unsafe { socket(AF_INET, SOCK_RAW, IPPROTO_ICMP) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by socket(2), is open and owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let addr = SockAddrIn {
        family: AF_INET as u16,
        port_be: 0,
        addr: peer.octets(),
        zero: [0; 8],
    };
    let len = size_of::<SockAddrIn>() as u32;
    // SAFETY: `addr` is a live, initialised sockaddr_in laid out as the C struct
    // (repr(C)), `len` is its size, and connect(2) only reads it during the call; `fd` is
    // open for the call.
    if unsafe { connect(fd.as_raw_fd(), &addr, len) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(File::from(fd))
}

fn pinger(peer: Ipv4Addr, interval: Duration, state: Shared) {
    let sock = match icmp_socket(peer) {
        Ok(s) => s,
        Err(e) => return eprintln!("violin-probe: no ICMP socket ({e}); not pinging"),
    };
    let id = std::process::id() as u16;
    let mut replies = match sock.try_clone() {
        Ok(r) => r,
        Err(e) => return eprintln!("violin-probe: {e}; not pinging"),
    };
    let reply_state = state.clone();
    thread::spawn(move || {
        let mut buf = [0u8; 2048];
        loop {
            match replies.read(&mut buf) {
                Ok(n) if is_reply(&buf[..n], id) => {
                    lock(&reply_state).ping.received_at(Instant::now())
                }
                Ok(_) => {}
                // ICMP errors for earlier requests surface here once each: keep listening.
                Err(_) => thread::sleep(Duration::from_millis(10)),
            }
        }
    });
    let mut next = Instant::now();
    for seq in (0..=u16::MAX).cycle() {
        // A request the kernel refuses to send (no route, no neighbour yet) is still a
        // request that went unanswered.
        let _ = (&sock).write(&echo_request(id, seq));
        lock(&state).ping.sent += 1;
        next += interval;
        thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}

fn main() {
    let args = parse_args(std::env::args().skip(1)).unwrap_or_else(|e| {
        eprintln!("violin-probe: {e}\n{USAGE}");
        exit(2)
    });
    let state = Shared::default();
    let peer = SocketAddr::V4(SocketAddrV4::new(args.peer, args.port));
    let s = state.clone();
    thread::spawn(move || tcp_session(peer, args.interval, s));
    let s = state.clone();
    thread::spawn(move || pinger(args.peer, args.interval, s));
    loop {
        thread::sleep(REPORT_EVERY);
        let report = report_of(&lock(&state), Instant::now());
        println!("{report}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_have_no_spaces() {
        let state = Shared::default();
        tcp_failed(&state, "read", &"Connection reset by peer");
        tcp_failed(&state, "write", &"Broken pipe");
        assert_eq!(
            lock(&state).tcp_error.as_deref(),
            Some("read:Connection_reset_by_peer")
        );
    }

    #[test]
    fn gaps_count_the_open_one() {
        let t0 = Instant::now();
        let mut s = Series::default();
        assert_eq!(s.max_gap_ms(t0 + Duration::from_secs(5)), 0);
        s.received_at(t0);
        s.received_at(t0 + Duration::from_millis(40));
        s.received_at(t0 + Duration::from_millis(50));
        assert_eq!(s.max_gap_ms(t0 + Duration::from_millis(60)), 40);
        assert_eq!(s.max_gap_ms(t0 + Duration::from_millis(350)), 300);
    }

    #[test]
    fn checksum_rfc1071_example() {
        // RFC 1071 section 3: the one's complement sum of these words is 0xddf2.
        assert_eq!(
            checksum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            !0xddf2
        );
        // An odd length pads with a zero byte.
        assert_eq!(checksum(&[0x01]), !0x0100);
    }

    #[test]
    fn echo_request_checks_out() {
        let p = echo_request(0x1234, 7);
        assert_eq!(checksum(&p), 0, "a packet with its checksum sums to zero");
        assert_eq!((p[0], p[1]), (8, 0));
        assert_eq!(&p[4..8], &[0x12, 0x34, 0, 7]);
        // The peer's reply: type 0, same identifier, behind a 20-byte IPv4 header.
        let mut reply = vec![0x45u8];
        reply.extend([0u8; 19]);
        reply.extend(p);
        reply[20] = 0;
        assert!(is_reply(&reply, 0x1234));
        assert!(!is_reply(&reply, 0x1235));
        reply[20] = 8;
        assert!(!is_reply(&reply, 0x1234), "an echo request is no reply");
    }

    #[test]
    fn arguments() {
        let a = parse_args(
            ["10.0.0.2", "--port", "9", "--interval-ms", "20"]
                .map(String::from)
                .into_iter(),
        )
        .unwrap();
        assert_eq!(
            (a.peer, a.port, a.interval),
            ([10, 0, 0, 2].into(), 9, Duration::from_millis(20))
        );
        let a = parse_args(["10.0.0.2"].map(String::from).into_iter()).unwrap();
        assert_eq!((a.port, a.interval), (7, Duration::from_millis(10)));
        assert!(parse_args(std::iter::empty()).is_err());
        assert!(parse_args(["x"].map(String::from).into_iter()).is_err());
    }
}
