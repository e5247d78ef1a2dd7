//! Following the controller: register, open the sync stream, keep the host's share
//! current from its snapshot and deltas, and hand each generation to the daemon's main
//! loop, which reconciles the maps and acknowledges. Reconnects (and so re-registers and
//! gets a fresh snapshot) whenever the stream breaks or falls silent, so a restart of
//! either side converges without help.
use std::{path::Path, sync::mpsc::Sender, thread, time::Duration};

use anyhow::{bail, Context, Result};
use tracing::{info, warn};
use violin_api::{
    client::{read_token, Client, Timeouts},
    share::{Ack, Registration, Share, SyncEvent},
    Name,
};

use crate::{config::Controller, daemon::Event};

/// What the main loop is asked to do for one generation.
pub struct Update {
    pub generation: u64,
    /// None: this generation did not change the host's share; acknowledge only.
    pub share: Option<Share>,
}

/// Silence after which the stream counts as dead (the controller beats every 2 s).
const SILENCE: Duration = Duration::from_secs(6);

/// This host's side of the conversation with the controller.
#[derive(Clone)]
pub struct Follower {
    client: Client,
    host: Name,
}

impl Follower {
    pub fn new(c: &Controller, host: &Name) -> Result<Follower> {
        let token = read_token(&c.token_file).with_context(|| {
            format!(
                "controller.token_file: cannot read {}",
                c.token_file.display()
            )
        })?;
        let timeouts = Timeouts {
            connect: Duration::from_secs(2),
            read: SILENCE,
        };
        Ok(Follower {
            client: Client::new(&c.url, &token, timeouts),
            host: host.clone(),
        })
    }

    /// Tells the controller this host applied `generation` (or why it could not).
    pub fn ack(&self, generation: u64, error: Option<String>) -> Result<()> {
        self.client.ack(&self.host, &Ack { generation, error })?;
        Ok(())
    }

    /// Reports the host's domains (and the events since the last report).
    pub fn report_vms(&self, report: &violin_api::vm::VmReport) -> Result<()> {
        self.client.report_vms(&self.host, report)?;
        Ok(())
    }

    /// The other hosts' underlay addresses, as the controller has them registered.
    pub fn hosts(&self) -> Result<Vec<std::net::IpAddr>> {
        Ok(self
            .client
            .hosts()?
            .into_iter()
            .filter_map(|h| h.address?.parse().ok())
            .collect())
    }

    pub fn report_measurements(&self, m: &violin_api::share::HostMeasurements) -> Result<()> {
        self.client.report_measurements(&self.host, m)?;
        Ok(())
    }

    /// Reports what the host's VMs sent each other since the last report (VTTIF).
    pub fn report_traffic(&self, report: &violin_api::share::TrafficReport) -> Result<()> {
        self.client.report_traffic(&self.host, report)?;
        Ok(())
    }

    /// Reports the datapath's drops and map fill (`violinctl status`).
    pub fn report_health(&self, report: &violin_api::share::DatapathHealth) -> Result<()> {
        self.client.report_health(&self.host, report)?;
        Ok(())
    }

    /// Registers, then follows the stream until it breaks.
    fn follow(&self, registration: &Registration, updates: &Sender<Event>) -> Result<()> {
        self.client.register(&self.host, registration)?;
        let events = self.client.sync_stream(&self.host)?;
        let mut share: Option<Share> = None;
        for event in events {
            let update = match event.map_err(anyhow::Error::msg)? {
                SyncEvent::Heartbeat { .. } => continue,
                SyncEvent::Snapshot { share: s } => {
                    info!(
                        generation = s.generation,
                        environments = s.environments.len(),
                        "snapshot from the controller"
                    );
                    share = Some(s.clone());
                    Update {
                        generation: s.generation,
                        share: Some(s),
                    }
                }
                SyncEvent::Delta(delta) => {
                    let Some(cur) = share.as_mut() else {
                        bail!("a delta before the snapshot");
                    };
                    let generation = delta.generation;
                    let changed = cur.apply(delta);
                    Update {
                        generation,
                        share: changed.then(|| cur.clone()),
                    }
                }
            };
            if updates.send(Event::Controller(update)).is_err() {
                return Ok(());
            }
        }
        bail!("the controller closed the sync stream")
    }
}

/// Follows the controller on a thread of its own for as long as the daemon runs.
pub fn start(follower: Follower, registration: Registration, updates: Sender<Event>) -> Result<()> {
    thread::Builder::new()
        .name("follow".into())
        .spawn(move || {
            let mut backoff = Duration::from_millis(100);
            loop {
                let started = std::time::Instant::now();
                // After a long healthy stream a break is news: reconnect at once.
                let result = follower.follow(&registration, &updates);
                if started.elapsed() > Duration::from_secs(30) {
                    backoff = Duration::from_millis(100);
                }
                match result {
                    Ok(()) => return,
                    Err(e) => warn!(
                        error = format!("{e:#}"),
                        "controller sync interrupted; reconnecting"
                    ),
                }
                thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(2));
            }
        })?;
    Ok(())
}

/// The last applied share, kept so that a restarted daemon serves it before the
/// controller answers.
pub fn load_cached(path: &Path) -> Option<Share> {
    let bytes = std::fs::read(path).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn store_cached(path: &Path, share: &Share) -> Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec(share)?)?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}
