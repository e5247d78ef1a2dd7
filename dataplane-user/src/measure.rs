//! Host-to-host measurement, Wren's part in VADAPT: the round trip and the available
//! bandwidth from this host to every other registered host over the underlay, measured
//! with active probes, beside a passive estimate from this host's own traffic, reported to
//! the controller as this host's row of the matrix VADAPT maps VMs with.
//!
//! Probes are UDP between the hosts' underlay addresses (`[controller] measure_port`,
//! 4791), outside any environment. Every `measure_ms` (2 s), to each host: 3 echo
//! requests (the round trip: their minimum) and a train of `TRAIN_LEN` back-to-back datagrams
//! of `TRAIN_BYTES`; the receiver times the train's dispersion and answers with the rate
//! it saw (bytes after the first over the time from first to last; the median of the last
//! five is reported), the classic
//! packet-train estimate of what the path carries. Its cost: about 46 KB per host pair
//! and interval (185 kbit/s at 2 s). Passive: the fastest this host sent a peer over the
//! last 30 s (its datapath's per-peer counter over each interval), a lower bound of the
//! path's capacity taken from real traffic at no cost, as Wren's passive observations
//! were.
use std::{
    collections::{BTreeMap, VecDeque},
    net::{IpAddr, SocketAddr, UdpSocket},
    sync::{mpsc, Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use tracing::{debug, info, warn};
use violin_api::share::{HostMeasurements, PeerMeasurement};

use crate::{datapath::Maps, follow::Follower, host::Paths};

const MAGIC: u32 = 0x5649_4d53; // "VIMS"
const ECHO: u8 = 1;
const ECHO_REPLY: u8 = 2;
const TRAIN: u8 = 3;
const TRAIN_RESULT: u8 = 4;
/// Datagrams per train, and their size: enough to outlast a token bucket's burst.
pub const TRAIN_LEN: u16 = 32;
pub const TRAIN_BYTES: usize = 1400;
const ECHOES: u32 = 3;
const HEADER: usize = 24;
/// How long the passive estimate remembers.
const PASSIVE_WINDOW: Duration = Duration::from_secs(30);

/// A probe's header: magic, kind, train length, sequence, index, and a time or a rate.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Header {
    kind: u8,
    train_len: u16,
    seq: u32,
    index: u16,
    /// Echo: the sender's clock, ns. Train result: the rate seen, bytes/s (f64 bits).
    value: u64,
}

impl Header {
    fn write(&self, buf: &mut [u8]) {
        buf[0..4].copy_from_slice(&MAGIC.to_le_bytes());
        buf[4] = self.kind;
        buf[5] = 0;
        buf[6..8].copy_from_slice(&self.train_len.to_le_bytes());
        buf[8..12].copy_from_slice(&self.seq.to_le_bytes());
        buf[12..14].copy_from_slice(&self.index.to_le_bytes());
        buf[14..16].copy_from_slice(&[0, 0]);
        buf[16..24].copy_from_slice(&self.value.to_le_bytes());
    }

    /// None for anything that is not a whole probe header.
    fn read(buf: &[u8]) -> Option<Header> {
        if buf.len() < HEADER || buf[0..4] != MAGIC.to_le_bytes() {
            return None;
        }
        let u16_at = |i: usize| u16::from_le_bytes([buf[i], buf[i + 1]]);
        Some(Header {
            kind: buf[4],
            train_len: u16_at(6),
            seq: u32::from_le_bytes(buf[8..12].try_into().ok()?),
            index: u16_at(12),
            value: u64::from_le_bytes(buf[16..24].try_into().ok()?),
        })
    }
}

/// A train being received: when its first and last datagrams came, and how much after
/// the first.
#[derive(Clone, Copy, Debug)]
struct Arrival {
    first: Instant,
    last: Instant,
    count: u16,
    bytes_after_first: u64,
    len: u16,
}

impl Arrival {
    /// The rate the train arrived at; None with fewer than half its datagrams or a
    /// dispersion too small to time.
    fn rate(&self) -> Option<f64> {
        let secs = self.last.duration_since(self.first).as_secs_f64();
        (self.count >= self.len / 2 && self.count > 1 && secs > 1e-6)
            .then(|| self.bytes_after_first as f64 / secs)
    }
}

/// Train results kept per host: the report gives their median, as one train's dispersion
/// on a busy host is noisy.
const TRAINS_KEPT: usize = 5;

/// What is known of one other host.
#[derive(Clone, Debug, Default)]
struct Target {
    rtts: Vec<f64>,
    sent: u32,
    trains: VecDeque<f64>,
}

impl Target {
    /// The median of the recent train rates.
    fn bandwidth(&self) -> Option<f64> {
        let mut v: Vec<f64> = self.trains.iter().copied().collect();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied()
    }
}

/// The passive estimate: what this host sent each peer, interval by interval.
#[derive(Default)]
struct Passive {
    last: BTreeMap<IpAddr, (Instant, u64)>,
    rates: BTreeMap<IpAddr, VecDeque<(Instant, f64)>>,
}

impl Passive {
    fn sample(&mut self, now: Instant, totals: &[(IpAddr, u64)]) {
        for &(addr, bytes) in totals {
            if let Some((then, before)) = self.last.insert(addr, (now, bytes)) {
                let secs = now.duration_since(then).as_secs_f64();
                if secs > 0.0 && bytes >= before {
                    let r = self.rates.entry(addr).or_default();
                    r.push_back((now, (bytes - before) as f64 / secs));
                    while r
                        .front()
                        .is_some_and(|(t, _)| now.duration_since(*t) > PASSIVE_WINDOW)
                    {
                        r.pop_front();
                    }
                }
            }
        }
    }

    /// The fastest interval to `addr`, if it sent anything.
    fn peak(&self, addr: IpAddr) -> Option<f64> {
        self.rates
            .get(&addr)?
            .iter()
            .map(|(_, r)| *r)
            .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.max(r))))
            .filter(|r| *r > 0.0)
    }
}

/// Starts the measuring thread: it answers other hosts' probes, probes them, and reports.
pub fn start(
    follower: Follower,
    paths: &Paths,
    local: IpAddr,
    port: u16,
    interval: Duration,
) -> Result<()> {
    let maps = Maps::open_pinned(paths)?;
    let sock = UdpSocket::bind(SocketAddr::new(local, port)).with_context(|| {
        let at = SocketAddr::new(local, port);
        format!("controller.measure_port: cannot bind {at}")
    })?;
    sock.set_read_timeout(Some(Duration::from_millis(20)))?;
    thread::Builder::new()
        .name("measure".into())
        .spawn(move || Prober::new(sock, local, port).run(follower, &maps, interval))
        .context("starting the measurement thread")?;
    info!(
        port,
        interval_ms = interval.as_millis() as u64,
        "measuring the other hosts"
    );
    Ok(())
}

struct Prober {
    sock: UdpSocket,
    local: IpAddr,
    port: u16,
    clock: Instant,
    seq: u32,
    targets: BTreeMap<IpAddr, Target>,
    arrivals: BTreeMap<(IpAddr, u32), Arrival>,
    passive: Passive,
}

impl Prober {
    fn new(sock: UdpSocket, local: IpAddr, port: u16) -> Prober {
        Prober {
            sock,
            local,
            port,
            clock: Instant::now(),
            seq: 0,
            targets: BTreeMap::new(),
            arrivals: BTreeMap::new(),
            passive: Passive::default(),
        }
    }

    /// Probes and answers on this thread; the controller is talked to on another, so
    /// that a slow call does not hold datagrams in the socket and bunch a train's
    /// arrivals (which would read as a faster path).
    fn run(mut self, follower: Follower, maps: &Maps, interval: Duration) {
        let hosts: Arc<Mutex<Vec<IpAddr>>> = Arc::default();
        let (reports, queue) = mpsc::sync_channel::<HostMeasurements>(1);
        let (known, local) = (hosts.clone(), self.local);
        let spawned = thread::Builder::new()
            .name("measure-report".into())
            .spawn(move || report_loop(&follower, local, &known, &queue));
        if let Err(e) = spawned {
            warn!(error = %e, "measurements are not reported");
        }
        let mut next = Instant::now();
        loop {
            self.receive();
            let now = Instant::now();
            if now < next {
                continue;
            }
            // After a stall, the next round is an interval from now, not a burst.
            next = (next + interval).max(now);
            let hosts = hosts.lock().unwrap().clone();
            let totals = peer_tx_bytes(maps);
            self.passive.sample(now, &totals);
            let report = self.report(&hosts);
            if !report.peers.is_empty() {
                // A report still being sent: this one waits for the next round.
                let _ = reports.try_send(report);
            }
            self.targets.retain(|a, _| hosts.contains(a));
            for &h in &hosts {
                self.probe(h);
            }
        }
    }

    /// This interval's row: what the last interval's probes found.
    fn report(&mut self, hosts: &[IpAddr]) -> HostMeasurements {
        let peers = hosts
            .iter()
            .map(|&a| {
                let t = self.targets.get(&a).cloned().unwrap_or_default();
                let rtt = t
                    .rtts
                    .iter()
                    .copied()
                    .fold(None, |m: Option<f64>, r| Some(m.map_or(r, |m| m.min(r))));
                PeerMeasurement {
                    address: a,
                    rtt_us: rtt,
                    bandwidth_bytes_per_second: t.bandwidth(),
                    passive_bytes_per_second: self.passive.peak(a),
                    probes_lost: t.sent.saturating_sub(t.rtts.len() as u32),
                }
            })
            .collect();
        HostMeasurements { peers }
    }

    fn send(&self, to: IpAddr, h: Header, size: usize) {
        let mut buf = vec![0u8; size.max(HEADER)];
        h.write(&mut buf);
        let _ = self.sock.send_to(&buf, SocketAddr::new(to, self.port));
    }

    fn probe(&mut self, to: IpAddr) {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let t = self.targets.entry(to).or_default();
        t.rtts.clear();
        t.sent = ECHOES;
        for i in 0..ECHOES {
            let now = self.clock.elapsed().as_nanos() as u64;
            let h = Header {
                kind: ECHO,
                train_len: 0,
                seq,
                index: i as u16,
                value: now,
            };
            self.send(to, h, HEADER);
        }
        for index in 0..TRAIN_LEN {
            let h = Header {
                kind: TRAIN,
                train_len: TRAIN_LEN,
                seq,
                index,
                value: 0,
            };
            self.send(to, h, TRAIN_BYTES);
        }
    }

    /// Handles what arrived until the socket's timeout: answers echoes, times replies and
    /// trains, takes results.
    fn receive(&mut self) {
        let mut buf = vec![0u8; 2048];
        // Until the socket's read timeout: nothing more for now.
        while let Ok((n, from)) = self.sock.recv_from(&mut buf) {
            let Some(h) = Header::read(&buf[..n]) else {
                continue;
            };
            let src = from.ip().to_canonical();
            let now = Instant::now();
            match h.kind {
                ECHO => {
                    let reply = Header {
                        kind: ECHO_REPLY,
                        ..h
                    };
                    self.send(src, reply, HEADER);
                }
                ECHO_REPLY => {
                    let rtt_ns = (self.clock.elapsed().as_nanos() as u64).saturating_sub(h.value);
                    if let Some(t) = self.targets.get_mut(&src) {
                        t.rtts.push(rtt_ns as f64 / 1e3);
                    }
                }
                TRAIN => {
                    let a = self.arrivals.entry((src, h.seq)).or_insert(Arrival {
                        first: now,
                        last: now,
                        count: 0,
                        bytes_after_first: 0,
                        len: h.train_len.max(1),
                    });
                    if a.count > 0 {
                        a.bytes_after_first += n as u64;
                    }
                    a.count = a.count.saturating_add(1);
                    a.last = now;
                    if u32::from(h.index) + 1 >= u32::from(h.train_len) {
                        self.finish_train(src, h.seq);
                    }
                }
                TRAIN_RESULT => {
                    let rate = f64::from_bits(h.value);
                    // Only a rate a train can have: finite and positive.
                    if let Some(t) = self
                        .targets
                        .get_mut(&src)
                        .filter(|_| rate.is_finite() && rate > 0.0)
                    {
                        t.trains.push_back(rate);
                        if t.trains.len() > TRAINS_KEPT {
                            t.trains.pop_front();
                        }
                    }
                }
                _ => {}
            }
        }
        // Trains whose last datagram was lost: taken as they are after 200 ms.
        let stale: Vec<(IpAddr, u32)> = self
            .arrivals
            .iter()
            .filter(|(_, a)| a.last.elapsed() > Duration::from_millis(200))
            .map(|(k, _)| *k)
            .collect();
        for (src, seq) in stale {
            self.finish_train(src, seq);
        }
    }

    fn finish_train(&mut self, src: IpAddr, seq: u32) {
        let Some(a) = self.arrivals.remove(&(src, seq)) else {
            return;
        };
        if let Some(rate) = a.rate() {
            let h = Header {
                kind: TRAIN_RESULT,
                train_len: a.len,
                seq,
                index: a.count,
                value: rate.to_bits(),
            };
            self.send(src, h, HEADER);
        }
    }
}

/// Sends the controller each round's row, and keeps the list of the other hosts (asked
/// for every 10 s, and whenever the list is empty).
fn report_loop(
    follower: &Follower,
    local: IpAddr,
    hosts: &Mutex<Vec<IpAddr>>,
    queue: &mpsc::Receiver<HostMeasurements>,
) {
    let mut asked: Option<Instant> = None;
    let mut failing = false;
    loop {
        let stale = asked.is_none_or(|t| t.elapsed() > Duration::from_secs(10));
        if stale || hosts.lock().unwrap().is_empty() {
            match follower.hosts() {
                Ok(h) => {
                    *hosts.lock().unwrap() = h.into_iter().filter(|a| *a != local).collect();
                    asked = Some(Instant::now());
                }
                Err(e) => debug!(error = format!("{e:#}"), "no host list"),
            }
        }
        let report = match queue.recv_timeout(Duration::from_secs(1)) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => continue,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
        };
        match follower.report_measurements(&report) {
            Ok(()) if failing => {
                info!("measurements reach the controller again");
                failing = false;
            }
            Ok(()) => {}
            Err(e) if !failing => {
                warn!(
                    error = format!("{e:#}"),
                    "cannot report measurements to the controller"
                );
                failing = true;
            }
            Err(_) => {}
        }
    }
}

/// Bytes this host sent each peer so far (its datapath's per-peer counters).
fn peer_tx_bytes(maps: &Maps) -> Vec<(IpAddr, u64)> {
    crate::stats::peers(maps)
        .map(|rows| {
            rows.into_iter()
                .map(|r| (r.address, r.stats.tx.bytes))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_strangers_are_ignored() {
        let h = Header {
            kind: TRAIN_RESULT,
            train_len: 32,
            seq: 7,
            index: 31,
            value: 12.5e6f64.to_bits(),
        };
        let mut buf = [0u8; HEADER];
        h.write(&mut buf);
        assert_eq!(Header::read(&buf), Some(h));
        assert_eq!(Header::read(&buf[..HEADER - 1]), None);
        buf[0] ^= 1;
        assert_eq!(Header::read(&buf), None);
    }

    #[test]
    fn a_train_rate_is_its_dispersion() {
        let t0 = Instant::now();
        let a = Arrival {
            first: t0,
            last: t0 + Duration::from_millis(10),
            count: 32,
            bytes_after_first: 31 * 1400,
            len: 32,
        };
        assert!((a.rate().unwrap() - 4_340_000.0).abs() < 1.0);
        // Too few of its datagrams, or all at once: no estimate.
        assert_eq!(Arrival { count: 10, ..a }.rate(), None);
        assert_eq!(Arrival { last: t0, ..a }.rate(), None);
    }

    #[test]
    fn the_bandwidth_is_the_median_of_the_recent_trains() {
        let mut t = Target::default();
        assert_eq!(t.bandwidth(), None);
        t.trains.extend([5.0, 100.0, 6.0]);
        assert_eq!(t.bandwidth(), Some(6.0));
    }

    #[test]
    fn the_passive_estimate_is_the_fastest_recent_interval() {
        let mut p = Passive::default();
        let a = IpAddr::from([10, 0, 0, 2]);
        let t0 = Instant::now();
        p.sample(t0, &[(a, 0)]);
        p.sample(t0 + Duration::from_secs(1), &[(a, 1000)]);
        p.sample(t0 + Duration::from_secs(2), &[(a, 5000)]);
        p.sample(t0 + Duration::from_secs(3), &[(a, 5000)]);
        assert_eq!(p.peak(a), Some(4000.0));
        assert_eq!(p.peak([10, 0, 0, 3].into()), None);
        // Out of the window, forgotten.
        p.sample(t0 + Duration::from_secs(40), &[(a, 5000)]);
        assert_eq!(p.peak(a), None);
    }
}
