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
//! of a 64-byte flood's rate. So the thread drains at most once a second (each drain
//! wakes the observers' connections too), sooner only as the ring fills fast.
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
pub const SAMPLE_RATE: u32 = 200;
const SAMPLE_BURST: u32 = 20;
/// How often the reader drains the ring buffer while events are few: they reach
/// observers in batches, a second's at a time.
const POLL: Duration = Duration::from_secs(1);
/// The shortest wait between drains, however fast events come.
const MIN_POLL: Duration = Duration::from_millis(10);
/// The events a quarter of the ring holds (each takes an 8-byte header too): the reader
/// drains before that many come, so the many CPUs of a large host at their budgets do
/// not overflow it between drains.
const QUARTER_RING: usize = EVENTS_BYTES as usize / (core::mem::size_of::<Raw>() + 8) / 4;

/// One attached observer: its filter, and where its events go (a batch per drain).
type Observer = (ObserveQuery, Sender<Vec<FlowEvent>>);

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
        drop(attached.wait_while(all, |all| {
            all.retain(|(_, s)| !s.is_closed());
            all.is_empty()
        }));
    }

    /// Forgets observers that went away; what those left ask of the programs: on while
    /// any is attached, one forwarded frame in the fewest any asks for (none when all
    /// want drops only).
    fn wanted(&self) -> ObserveConfig {
        let mut all = self.all();
        all.retain(|(_, s)| !s.is_closed());
        if all.is_empty() {
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

/// How long to wait before the next drain, after one that found `drained` events come
/// in `since` the one before: `POLL`, or less so that at that rate the ring is at most a
/// quarter full when drained.
fn next_drain(drained: usize, since: Duration) -> Duration {
    if drained == 0 {
        return POLL;
    }
    since
        .mul_f64(QUARTER_RING as f64 / drained as f64)
        .clamp(MIN_POLL, POLL)
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
            let mut last_drain = Instant::now();
            loop {
                let want = observers.wanted();
                if want != now {
                    match switch(&mut maps, want) {
                        Ok(()) => {
                            info!(on = want.on, one_forwarded_in = want.every(), "observation");
                            now = want;
                        }
                        Err(e) => warn!(error = format!("{e:#}"), "cannot switch observation"),
                    }
                }
                if now.on == 0 {
                    observers.wait_attached();
                    // Whatever is left from the last observer is stale.
                    while ring.next().is_some() {}
                    last_drain = Instant::now();
                    continue;
                }
                let since = last_drain.elapsed();
                last_drain = Instant::now();
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
                thread::sleep(next_drain(drained, since));
            }
        })
        .context("starting the observer")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drains_come_once_a_second_unless_a_quarter_of_the_ring_fills_sooner() {
        assert_eq!(next_drain(0, Duration::from_secs(1)), POLL, "nothing came");
        assert_eq!(next_drain(10, Duration::from_secs(1)), POLL, "a trickle");
        // A quarter of the ring in half a second: the next drain within half a second.
        let half = next_drain(QUARTER_RING, Duration::from_millis(500));
        assert_eq!(half, Duration::from_millis(500));
        // Twice as fast: half as long.
        let quarter = next_drain(2 * QUARTER_RING, Duration::from_millis(500));
        assert_eq!(quarter, Duration::from_millis(250));
        // However fast they come, the reader leaves the CPUs some time.
        assert_eq!(next_drain(1_000_000, Duration::from_millis(10)), MIN_POLL);
    }
}
