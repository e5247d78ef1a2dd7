//! Live events for observers (`GET /v1/observe`, `violinctl observe`): while at least one
//! observer is attached, the datapath describes the frames it drops, and one in
//! `every` it forwards from VM ports, into the `EVENTS` ring buffer (each CPU within
//! `RATE` drops and `SAMPLE_RATE` samples a second), and a thread here reads them,
//! names their port, environment and VMs, and hands each to the observers whose filters
//! match. With none attached, `OBSERVE` is off, the programs describe nothing and the
//! thread sleeps until one attaches.
//!
//! Wake-ups are what observing costs most: on a host whose CPUs are busy forwarding,
//! each one preempts that work, and measured here 80 idle wake-ups a second took 4.5%
//! of a 64-byte flood's rate. So the thread drains about once a second (each drain wakes
//! the observers' connections too), more often only on a host with so many CPUs that
//! the ring would not hold a second of them all at their budgets.
use std::{
    net::Ipv4Addr,
    sync::{Arc, Condvar, Mutex, MutexGuard},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use aya::maps::{MapData, PerCpuValues, RingBuf};
use dataplane_common::{
    counters::DropReason,
    maps::{names, StormBucket, UNDERLAY_SLOT},
    observe::{FlowEvent as Raw, ObserveConfig, EVENTS_BYTES},
    packet::be16,
};
use tokio::sync::mpsc::Sender;
use tracing::{info, warn};
use violin_api::observe::{FlowEvent, ObserveQuery, DEFAULT_EVERY};

use crate::{datapath::Maps, host::Paths, netdev::ifname, stats::vm_names};

/// Drops each CPU may describe per second, and their burst.
pub const RATE: u32 = 2000;
const BURST: u32 = 200;
/// Sampled forwarded frames each CPU may describe per second, and their burst: a
/// terminal shows far fewer, and each costs the CPUs the flows run on.
pub const SAMPLE_RATE: u32 = 100;
const SAMPLE_BURST: u32 = 10;
/// The longest wait between drains: events reach observers in batches, about a second's
/// at a time.
const POLL: Duration = Duration::from_secs(1);
/// The shortest, however many CPUs describe.
const MIN_POLL: Duration = Duration::from_millis(10);

/// One attached observer: its filter, and where its events go (a batch per drain).
type Observer = (ObserveQuery, Sender<Vec<FlowEvent>>);

/// Drops the observers whose connection went away; returns those left.
fn forget_gone(all: &mut Vec<Observer>) -> &mut Vec<Observer> {
    all.retain(|(_, s)| !s.is_closed());
    all
}

/// The observers attached now, and the reader's wake-up call when one attaches.
#[derive(Clone, Default)]
pub struct Observers(Arc<(Mutex<Vec<Observer>>, Condvar)>);

impl Observers {
    fn all(&self) -> MutexGuard<'_, Vec<Observer>> {
        self.0 .0.lock().unwrap()
    }

    pub fn attach(&self, query: ObserveQuery, to: Sender<Vec<FlowEvent>>) {
        self.all().push((query, to));
        self.0 .1.notify_one();
    }

    /// Returns once an observer is attached: unobserved, the reader never wakes.
    fn wait_attached(&self) {
        let (all, attached) = &*self.0;
        let all = all.lock().unwrap();
        drop(attached.wait_while(all, |all| forget_gone(all).is_empty()));
    }

    /// Forgets observers that went away; what those left ask of the programs: on while
    /// any is attached, one forwarded frame in the fewest any asks for (none when all
    /// want drops only).
    fn wanted(&self) -> ObserveConfig {
        let mut all = self.all();
        if forget_gone(&mut all).is_empty() {
            return ObserveConfig::default();
        }
        let every = all
            .iter()
            .filter(|(q, _)| !q.drops)
            .map(|(q, _)| q.every.unwrap_or(DEFAULT_EVERY).max(1))
            .min()
            .unwrap_or(0);
        ObserveConfig::one_in(every)
    }

    /// Hands each observer the events of one drain that its filter matches, together.
    fn send(&self, events: &[FlowEvent]) {
        for (q, s) in self.all().iter() {
            let mine: Vec<FlowEvent> = events.iter().filter(|e| q.matches(e)).cloned().collect();
            // An observer that does not keep up loses events, never stalls the others.
            if !mine.is_empty() {
                let _ = s.try_send(mine);
            }
        }
    }
}

/// What an event's slot, VNI and MACs are called, refreshed every few seconds.
struct Names {
    host: String,
    underlay: String,
    /// Slot to (port, VNI).
    ports: Vec<(u32, String, u32)>,
    vms: Vec<violin_api::stats::VmName>,
    /// Environments by VNI, from the share.
    envs: Vec<(u32, String)>,
    at: Option<Instant>,
}

impl Names {
    fn refresh(&mut self, maps: &Maps, paths: &Paths) {
        if self
            .at
            .is_some_and(|t| t.elapsed() < Duration::from_secs(2))
        {
            return;
        }
        self.ports = maps
            .ports
            .iter()
            .filter_map(|r| r.ok())
            .map(|(ifindex, p)| {
                let name = ifname(ifindex).unwrap_or_else(|| format!("ifindex {ifindex}"));
                (p.slot, name, p.vni)
            })
            .collect();
        // The share is read once for both: its VMs' names and its environments'.
        let share = crate::follow::load_cached(&paths.share()).unwrap_or_default();
        self.vms = vm_names(&share);
        self.envs = share
            .environments
            .iter()
            .map(|e| (e.vni.get(), e.name.to_string()))
            .collect();
        self.at = Some(Instant::now());
    }

    fn event(&self, raw: &Raw, wall_offset: f64) -> FlowEvent {
        let port = self.ports.iter().find(|p| p.0 == raw.slot);
        let vni = port.map(|p| p.2);
        let mac = |m: &[u8; 6]| dataplane_common::packet::Mac(*m).to_string();
        let vm = |m: &str| {
            vni.and_then(|v| self.vms.iter().find(|n| n.vni == v && n.mac == m))
                .map(|n| n.name.clone())
        };
        let (src_mac, dst_mac) = (mac(&raw.src), mac(&raw.dst));
        let ipv4 =
            be16(raw.ethertype) == dataplane_common::packet::ETH_P_IPV4 && raw.ip_src != [0; 4];
        let ports = ipv4 && matches!(raw.proto, 6 | 17);
        FlowEvent {
            time: raw.ns as f64 / 1e9 + wall_offset,
            host: self.host.clone(),
            port: match port {
                Some(p) => p.1.clone(),
                None if raw.slot == UNDERLAY_SLOT => self.underlay.clone(),
                None => format!("slot {}", raw.slot),
            },
            vni,
            environment: vni.and_then(|v| self.envs.iter().find(|e| e.0 == v).map(|e| e.1.clone())),
            verdict: if raw.drop_reason().is_some() {
                "dropped"
            } else {
                "forwarded"
            }
            .into(),
            reason: raw.drop_reason().map(|r| {
                DropReason::ALL
                    .iter()
                    .find(|d| **d as u32 == r)
                    .map_or_else(|| format!("reason {r}"), |d| d.name().to_string())
            }),
            src_vm: vm(&src_mac),
            dst_vm: vm(&dst_mac),
            src_mac,
            dst_mac,
            ethertype: format!("0x{:04x}", be16(raw.ethertype)),
            src_ip: ipv4.then(|| Ipv4Addr::from(raw.ip_src)),
            dst_ip: ipv4.then(|| Ipv4Addr::from(raw.ip_dst)),
            proto: ipv4.then(|| match raw.proto {
                1 => "icmp".to_string(),
                6 => "tcp".to_string(),
                17 => "udp".to_string(),
                n => n.to_string(),
            }),
            src_port: ports.then(|| be16(raw.sport)),
            dst_port: ports.then(|| be16(raw.dport)),
            len: raw.len,
        }
    }
}

/// Seconds to add to the programs' clock (CLOCK_MONOTONIC) for wall-clock time.
fn wall_offset() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    let mono = ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9;
    let wall = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    wall - mono
}

/// How long the reader may wait between drains on a host of `cpus` CPUs: as long as
/// the ring holds what they describe with every one at its budgets, bursts included, so
/// that pacing loses no event (`POLL` at most; `MIN_POLL` at least, which on a host
/// whose bursts alone would fill the ring is the best it can do).
fn drain_every(cpus: usize) -> Duration {
    // Each event takes an 8-byte header in the ring too.
    let holds = (EVENTS_BYTES as usize / (core::mem::size_of::<Raw>() + 8)) as f64;
    let bursts = (cpus * (BURST + SAMPLE_BURST) as usize) as f64;
    let per_second = (cpus * (RATE + SAMPLE_RATE) as usize) as f64;
    Duration::from_secs_f64(((holds - bursts) / per_second).max(0.0)).clamp(MIN_POLL, POLL)
}

/// Sets what the programs describe (and, turning it on, each CPU's budget).
fn switch(maps: &mut Maps, config: ObserveConfig) -> Result<()> {
    if config.on != 0 {
        let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
        let drops = StormBucket::new(RATE, BURST);
        maps.observe_budget
            .set(0, PerCpuValues::try_from(vec![drops; cpus])?, 0)?;
        let samples = StormBucket::new(SAMPLE_RATE, SAMPLE_BURST);
        maps.observe_sample_budget
            .set(0, PerCpuValues::try_from(vec![samples; cpus])?, 0)?;
    }
    maps.observe.set(0, config, 0)?;
    Ok(())
}

/// Starts the reader thread; describing stays off until an observer attaches.
pub fn start(paths: &Paths, host: &str, underlay: &str, observers: Observers) -> Result<()> {
    let mut maps = Maps::open_pinned(paths)?;
    // Every CPU that may run the programs (possible ones: a CPU brought online later too).
    let cpus = aya::util::nr_cpus().map_err(|(_, e)| e)?;
    // A daemon that died while observed left it on.
    let mut now = ObserveConfig::default();
    switch(&mut maps, now)?;
    let events = MapData::from_pin(paths.maps().join(names::EVENTS)).context("opening EVENTS")?;
    let mut ring = RingBuf::try_from(aya::maps::Map::RingBuf(events))?;
    let paths = paths.clone();
    let mut names = Names {
        host: host.to_string(),
        underlay: underlay.to_string(),
        ports: Vec::new(),
        vms: Vec::new(),
        envs: Vec::new(),
        at: None,
    };
    thread::Builder::new()
        .name("observe".into())
        .spawn(move || {
            let every = drain_every(cpus);
            loop {
                let want = observers.wanted();
                if want != now {
                    match switch(&mut maps, want) {
                        Ok(()) => {
                            info!(on = want.on, one_forwarded_in = want.every(), "observation");
                            now = want;
                        }
                        Err(e) => {
                            warn!(error = format!("{e:#}"), "cannot switch observation");
                            // Not again at once: the observers wait, the CPU does not spin.
                            thread::sleep(POLL);
                        }
                    }
                }
                if now.on == 0 {
                    observers.wait_attached();
                    // Whatever is left from the last observer is stale.
                    while ring.next().is_some() {}
                    continue;
                }
                names.refresh(&maps, &paths);
                let offset = wall_offset();
                let mut batch = Vec::new();
                while let Some(item) = ring.next() {
                    if item.len() < core::mem::size_of::<Raw>() {
                        continue;
                    }
                    // SAFETY: the programs submit whole FlowEvents (checked length); any
                    // bytes are a valid one, and read_unaligned needs no alignment.
                    let raw: Raw =
                        unsafe { core::ptr::read_unaligned(item.as_ptr() as *const Raw) };
                    batch.push(names.event(&raw, offset));
                }
                let drained = batch.len();
                if drained > 0 {
                    observers.send(&batch);
                }
                thread::sleep(every);
            }
        })
        .context("starting the observer")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drains_come_as_rarely_as_the_ring_allows_every_cpu_at_its_budgets() {
        let holds = EVENTS_BYTES as usize / (core::mem::size_of::<Raw>() + 8);
        for cpus in [1, 2, 4, 8, 16] {
            let every = drain_every(cpus);
            assert!((MIN_POLL..=POLL).contains(&every), "{cpus} CPUs: {every:?}");
            // What every CPU may describe meanwhile fits (to the nanosecond the wait is
            // rounded to), unless the shortest wait is the bound.
            let described = cpus as f64
                * ((RATE + SAMPLE_RATE) as f64 * every.as_secs_f64()
                    + (BURST + SAMPLE_BURST) as f64);
            assert!(
                described <= holds as f64 + 0.01 || every == MIN_POLL,
                "{cpus} CPUs: {described} events in {every:?}, the ring holds {holds}"
            );
        }
        // A small host waits about a second; a larger one less.
        assert!(drain_every(1) == POLL);
        assert!(drain_every(4) < drain_every(2));
    }
}
