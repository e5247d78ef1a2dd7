//! Simulated hosts for the control plane at scale: each speaks the controller's real sync
//! protocol through the same client violind uses (register, the sync stream's snapshot
//! and deltas, an acknowledgement per generation) and keeps its share as violind would,
//! with no datapath behind it. A host is a thread; a fleet of them is many hosts. Like
//! violind, a host whose registration or stream fails tries again after a backoff (a
//! thousand hosts connecting at once overflow a listen queue).
use std::{
    net::Ipv4Addr,
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Condvar, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Result};
use violin_api::{
    client::{Client, Timeouts},
    share::{Ack, Registration, Share, SyncEvent},
};

/// What one simulated host saw: every event with its size and when it acknowledged it.
#[derive(Clone, Debug, Default)]
pub struct HostLog {
    pub name: String,
    /// (generation, when acknowledged, the event's bytes, whether its share changed)
    pub acks: Vec<(u64, Instant, u64, bool)>,
    /// The share as it stands.
    pub share: Option<Share>,
    /// The last error it met (it then connected again), and how many it met.
    pub error: Option<String>,
    pub errors: u32,
}

impl HostLog {
    /// When it first acknowledged `generation` or a later one.
    pub fn acked_at(&self, generation: u64) -> Option<Instant> {
        self.acks
            .iter()
            .find(|(g, ..)| *g >= generation)
            .map(|(_, at, ..)| *at)
    }

    /// The bytes of the event that carried `generation` (the first at or after it).
    pub fn bytes_for(&self, generation: u64) -> Option<u64> {
        self.acks
            .iter()
            .find(|(g, ..)| *g >= generation)
            .map(|(_, _, b, _)| *b)
    }
}

struct Host {
    log: Mutex<HostLog>,
    acked: AtomicU64,
}

pub struct Fleet {
    hosts: Vec<Arc<Host>>,
    /// Notified on every acknowledgement, so that a waiter need not poll.
    woken: Arc<(Mutex<u64>, Condvar)>,
    /// Set when the fleet is dropped: hosts stop reconnecting.
    stop: Arc<AtomicBool>,
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Fleet {
    /// Starts a host per (name, underlay address, its own credential's token), following
    /// the controller at `urls` (one or several replicas, as violind takes them).
    pub fn start(urls: &str, hosts: &[(String, Ipv4Addr, String)]) -> Result<Fleet> {
        let woken = Arc::new((Mutex::new(0u64), Condvar::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let mut out = Vec::new();
        for (name, address, token) in hosts {
            let host = Arc::new(Host {
                log: Mutex::new(HostLog {
                    name: name.clone(),
                    ..HostLog::default()
                }),
                acked: AtomicU64::new(0),
            });
            let client = Client::new(
                urls,
                token,
                Timeouts {
                    connect: Duration::from_secs(10),
                    read: Duration::from_secs(30),
                },
            );
            let (h, w, name, address) = (host.clone(), woken.clone(), name.clone(), *address);
            let stop = stop.clone();
            thread::Builder::new()
                .name(format!("sim-{name}"))
                .stack_size(256 * 1024)
                .spawn(move || {
                    let mut backoff = Duration::from_millis(100);
                    while !stop.load(Ordering::SeqCst) {
                        if let Err(e) = follow(&client, &name, address, &h, &w) {
                            let mut log = h.log.lock().unwrap();
                            log.error = Some(format!("{e:#}"));
                            log.errors += 1;
                        }
                        thread::sleep(backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                })?;
            out.push(host);
        }
        Ok(Fleet {
            hosts: out,
            woken,
            stop,
        })
    }

    /// Waits until every host acknowledged `generation` (or a later one); when the last
    /// did. Fails after `within`, naming a host that lags and why.
    pub fn wait_acked(&self, generation: u64, within: Duration) -> Result<Instant> {
        let deadline = Instant::now() + within;
        let (lock, cv) = &*self.woken;
        let mut n = lock.lock().unwrap();
        loop {
            let behind = self
                .hosts
                .iter()
                .find(|h| h.acked.load(Ordering::SeqCst) < generation);
            let Some(lagging) = behind else {
                break;
            };
            let now = Instant::now();
            if now >= deadline {
                let log = lagging.log.lock().unwrap();
                bail!(
                    "{} of {} hosts did not acknowledge generation {generation} within {within:?}: {} is at {}{}",
                    self.hosts
                        .iter()
                        .filter(|h| h.acked.load(Ordering::SeqCst) < generation)
                        .count(),
                    self.hosts.len(),
                    log.name,
                    lagging.acked.load(Ordering::SeqCst),
                    log.error
                        .as_deref()
                        .map(|e| format!(" ({e})"))
                        .unwrap_or_default()
                );
            }
            n = cv
                .wait_timeout(n, (deadline - now).min(Duration::from_millis(100)))
                .unwrap()
                .0;
        }
        drop(n);
        Ok(self
            .logs()
            .iter()
            .filter_map(|l| l.acked_at(generation))
            .max()
            .expect("hosts acknowledged"))
    }

    /// Every host's log, as of now.
    pub fn logs(&self) -> Vec<HostLog> {
        self.hosts
            .iter()
            .map(|h| h.log.lock().unwrap().clone())
            .collect()
    }
}

/// One host: registers, follows the stream, acknowledges each generation; returns when
/// the stream ends (the controller stopped).
fn follow(
    client: &Client,
    name: &str,
    address: Ipv4Addr,
    host: &Host,
    woken: &(Mutex<u64>, Condvar),
) -> Result<()> {
    let registration = Registration {
        address: address.into(),
        api: None,
        interfaces: Vec::new(),
        libvirt: None,
        domain: None,
        cpus: None,
        memory_mib: None,
    };
    client.register(name, &registration)?;
    let mut events = client.sync_stream(name)?;
    let mut share: Option<Share> = None;
    let mut seen = 0;
    while let Some(event) = events.next() {
        let (generation, changed) = match event.map_err(anyhow::Error::msg)? {
            SyncEvent::Heartbeat { .. } => {
                seen = events.bytes();
                continue;
            }
            SyncEvent::Snapshot { share: s } => {
                let g = s.generation;
                share = Some(s);
                (g, true)
            }
            SyncEvent::Delta(d) => {
                let Some(cur) = share.as_mut() else {
                    bail!("a delta before the snapshot");
                };
                let g = d.generation;
                (g, cur.apply(d))
            }
        };
        let bytes = events.bytes() - seen;
        seen = events.bytes();
        client.ack(
            name,
            &Ack {
                generation,
                error: None,
            },
        )?;
        let at = Instant::now();
        {
            let mut log = host.log.lock().unwrap();
            log.acks.push((generation, at, bytes, changed));
            log.share = share.clone();
        }
        host.acked.store(generation, Ordering::SeqCst);
        let (lock, cv) = woken;
        *lock.lock().unwrap() += 1;
        cv.notify_all();
    }
    Ok(())
}
