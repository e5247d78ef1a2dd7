//! The distribution hub: pushes each host its share over a long-lived HTTP response per
//! registered `violind` (newline-delimited JSON events: a snapshot, then a delta per
//! generation, and heartbeats), collects the hosts' acknowledgements, and keeps what they
//! tell: sync latency, errors, and the configuration-time bound.
use std::{
    collections::{BTreeMap, VecDeque},
    convert::Infallible,
    sync::{Arc, Mutex},
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::body::Bytes;
use tokio::sync::watch;
use tracing::{info, warn};
use violin_api::share::{Share, SyncEvent};

use crate::{metrics::Metrics, share::share_of, store::Store};

/// How often an idle stream carries a heartbeat; the daemon reconnects when it hears
/// nothing for three of these.
pub const HEARTBEAT: Duration = Duration::from_secs(2);
/// Syncs remembered for the measured configuration-time bound.
const RECENT: usize = 256;

#[derive(Clone, Debug, Default)]
pub struct HostSync {
    pub streams: u32,
    pub acked: u64,
    pub acked_at_unix: Option<u64>,
    /// When each recent new generation was acknowledged (oldest first): a migration
    /// times the hosts' re-pointing by the first acknowledgement of its generation or a
    /// later one.
    pub acks: VecDeque<(u64, SystemTime)>,
    pub last_error: Option<String>,
    pub last_latency: Option<Duration>,
}

pub struct Hub {
    generation: watch::Sender<u64>,
    /// Bumped on every acknowledgement, for answers that wait for hosts to catch up.
    acks: watch::Sender<u64>,
    commits: Mutex<BTreeMap<u64, Instant>>,
    hosts: Mutex<BTreeMap<String, HostSync>>,
    recent: Mutex<VecDeque<Duration>>,
    /// Set when the controller shuts down: every sync stream ends, so that the server's
    /// graceful shutdown is not held up by streams that never end on their own (the
    /// daemons reconnect to the next controller).
    closing: watch::Sender<bool>,
    /// Bumped when a credential is revoked: streams it opened end.
    revocations: watch::Sender<u64>,
    pub metrics: Metrics,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl HostSync {
    /// When this host first acknowledged `generation` or a later one, if it has.
    pub fn applied_at(&self, generation: u64) -> Option<SystemTime> {
        self.acks
            .iter()
            .find(|(g, _)| *g >= generation)
            .map(|(_, at)| *at)
    }
}

impl Hub {
    pub fn new(generation: u64) -> Arc<Hub> {
        let metrics = Metrics::new();
        metrics.generation.set(generation as i64);
        Arc::new(Hub {
            generation: watch::Sender::new(generation),
            acks: watch::Sender::new(0),
            commits: Mutex::new(BTreeMap::new()),
            hosts: Mutex::new(BTreeMap::new()),
            recent: Mutex::new(VecDeque::new()),
            closing: watch::Sender::new(false),
            revocations: watch::Sender::new(0),
            metrics,
        })
    }

    /// A credential was revoked: the streams it opened end.
    pub fn revoked(&self) {
        self.revocations.send_modify(|n| *n += 1);
    }

    /// Ends every sync stream, now and from now on (the controller is shutting down).
    pub fn close(&self) {
        self.closing.send_replace(true);
    }

    /// Tells every stream that `generation` was committed (once: a replica may hear of
    /// a generation both from its own write and from following the store).
    pub fn committed(&self, generation: u64) {
        // The commit's time first, so that the first acknowledgement finds it.
        let mut commits = self.commits.lock().unwrap();
        commits.entry(generation).or_insert_with(Instant::now);
        while commits.len() > 1024 {
            commits.pop_first();
        }
        drop(commits);
        // Checked and sent at once: two callers racing cannot move it backwards.
        let newer = self.generation.send_if_modified(|g| {
            let newer = generation > *g;
            if newer {
                *g = generation;
            }
            newer
        });
        if newer {
            self.metrics.generation.set(generation as i64);
        }
    }

    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    pub fn hosts(&self) -> BTreeMap<String, HostSync> {
        self.hosts.lock().unwrap().clone()
    }

    /// Wakes when any host acknowledges.
    pub fn watch_acks(&self) -> watch::Receiver<u64> {
        self.acks.subscribe()
    }

    /// A host applied `generation` (or failed to, with `error`).
    pub fn ack(&self, host: &str, generation: u64, error: Option<String>, bound: Option<Duration>) {
        let committed = self.commits.lock().unwrap().get(&generation).copied();
        self.acks.send_modify(|n| *n += 1);
        let mut hosts = self.hosts.lock().unwrap();
        let h = hosts.entry(host.to_string()).or_default();
        if let Some(e) = error {
            warn!(host, generation, error = %e, "host could not apply its share");
            self.metrics
                .errors
                .with_label_values(&[host, "apply"])
                .inc();
            h.last_error = Some(e);
            return;
        }
        let first = generation > h.acked;
        if first {
            h.acks.push_back((generation, SystemTime::now()));
            if h.acks.len() > RECENT {
                h.acks.pop_front();
            }
        }
        h.acked = h.acked.max(generation);
        h.acked_at_unix = Some(unix_now());
        h.last_error = None;
        self.metrics
            .acked
            .with_label_values(&[host])
            .set(h.acked as i64);
        if let (true, Some(at)) = (first, committed) {
            let took = at.elapsed();
            h.last_latency = Some(took);
            self.metrics.latency.observe(took.as_secs_f64());
            if bound.is_some_and(|b| took > b) {
                self.metrics.over_bound.with_label_values(&[host]).inc();
            }
            let mut recent = self.recent.lock().unwrap();
            recent.push_back(took);
            if recent.len() > RECENT {
                recent.pop_front();
            }
        }
    }

    /// The longest of the recent syncs: the measured configuration-time bound.
    pub fn measured_bound(&self) -> Option<Duration> {
        self.recent.lock().unwrap().iter().max().copied()
    }

    fn opened(&self, host: &str) {
        // Every host's series exist from its first connection on, at zero.
        self.metrics.errors.with_label_values(&[host, "apply"]);
        self.metrics.over_bound.with_label_values(&[host]);
        let mut hosts = self.hosts.lock().unwrap();
        hosts.entry(host.to_string()).or_default().streams += 1;
        self.metrics
            .connected
            .set(hosts.values().filter(|h| h.streams > 0).count() as i64);
    }

    fn closed(&self, host: &str) {
        let mut hosts = self.hosts.lock().unwrap();
        if let Some(h) = hosts.get_mut(host) {
            h.streams = h.streams.saturating_sub(1);
        }
        self.metrics
            .connected
            .set(hosts.values().filter(|h| h.streams > 0).count() as i64);
    }
}

/// One host's stream; counts the host as connected while it lives.
struct Stream {
    host: String,
    hub: Arc<Hub>,
    store: Arc<Store>,
    rx: watch::Receiver<u64>,
    sent: Option<Share>,
    /// The hash of the credential that opened it (None: the controller's own token).
    credential: Option<String>,
    closing: watch::Receiver<bool>,
    revocations: watch::Receiver<u64>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        info!(host = %self.host, "sync stream closed");
        self.hub.closed(&self.host);
    }
}

fn line(event: &SyncEvent) -> Bytes {
    let mut s = serde_json::to_string(event).expect("events serialise");
    s.push('\n');
    Bytes::from(s)
}

impl Stream {
    /// Every stream cuts its host's share from the same parsed specs, without copying them.
    fn share(&self, generation: u64) -> Share {
        share_of(
            &self.host,
            generation,
            self.store.snapshot().values().map(|(_, s)| s),
            &self.store.in_flight(),
            &self.store.resources(),
        )
    }

    /// The next line; None ends the stream: the controller shuts down, or the credential
    /// that opened it was revoked.
    async fn next(&mut self) -> Option<Bytes> {
        loop {
            if *self.closing.borrow_and_update() {
                return None;
            }
            self.revocations.borrow_and_update();
            if let Some(h) = &self.credential {
                if self.store.credential_by_hash(h).is_none() {
                    info!(host = %self.host, "sync stream's credential revoked");
                    return None;
                }
            }
            if self.sent.is_none() {
                let generation = *self.rx.borrow_and_update();
                let share = self.share(generation);
                let ev = SyncEvent::Snapshot {
                    share: share.clone(),
                };
                self.sent = Some(share);
                return Some(line(&ev));
            }
            tokio::select! {
                changed = self.rx.changed() => {
                    changed.ok()?;
                    let generation = *self.rx.borrow_and_update();
                    let share = self.share(generation);
                    let ev = SyncEvent::Delta(self.sent.as_ref().expect("sent").delta_to(&share));
                    self.sent = Some(share);
                    return Some(line(&ev));
                }
                _ = tokio::time::sleep(HEARTBEAT) => {
                    return Some(line(&SyncEvent::Heartbeat { generation: *self.rx.borrow() }));
                }
                _ = self.closing.changed() => return None,
                _ = self.revocations.changed() => {}
            }
        }
    }
}

/// The body of `GET /v1/hosts/{host}/sync`.
pub fn stream(
    hub: Arc<Hub>,
    store: Arc<Store>,
    host: String,
    credential: Option<String>,
) -> impl futures_util::Stream<Item = Result<Bytes, Infallible>> {
    info!(host = %host, "sync stream opened");
    hub.opened(&host);
    let st = Stream {
        rx: hub.generation.subscribe(),
        closing: hub.closing.subscribe(),
        revocations: hub.revocations.subscribe(),
        credential,
        host,
        hub,
        store,
        sent: None,
    };
    futures_util::stream::unfold(st, |mut st| async move {
        let bytes = st.next().await?;
        Some((Ok(bytes), st))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_generation_counts_as_applied_from_its_first_acknowledgement() {
        let t = |s| UNIX_EPOCH + Duration::from_secs(s);
        let h = HostSync {
            acks: VecDeque::from([(3, t(10)), (5, t(20))]),
            ..HostSync::default()
        };
        assert_eq!(h.applied_at(2), Some(t(10)));
        assert_eq!(h.applied_at(4), Some(t(20)));
        assert_eq!(h.applied_at(5), Some(t(20)));
        assert_eq!(h.applied_at(6), None);
    }
}
