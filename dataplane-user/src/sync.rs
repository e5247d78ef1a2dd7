//! Following the controller: register, open the sync stream, keep the host's share
//! current from its snapshot and deltas, and hand each generation to the daemon's main
//! loop, which reconciles the maps and acknowledges. Reconnects (and so re-registers and
//! gets a fresh snapshot) whenever the stream breaks or falls silent, so a restart of
//! either side converges without help.
use std::{
    collections::BTreeMap,
    io::{BufRead, BufReader},
    path::Path,
    sync::mpsc::Sender,
    thread,
    time::Duration,
};

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tracing::{info, warn};

use crate::config::{Controller, Environment, Peer};

/// A host's share of the controller's state, as last received.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Share {
    pub generation: u64,
    pub environments: Vec<Environment>,
    pub peers: Vec<Peer>,
}

/// What the main loop is asked to do for one generation.
pub struct Update {
    pub generation: u64,
    /// None: this generation did not change the host's share; acknowledge only.
    pub share: Option<Share>,
}

#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
enum Event {
    Snapshot {
        generation: u64,
        share: SnapshotShare,
    },
    Delta {
        generation: u64,
        #[serde(default)]
        upsert: Vec<Environment>,
        #[serde(default)]
        remove: Vec<String>,
        #[serde(default)]
        peers: Option<Vec<Peer>>,
    },
    Heartbeat {
        #[allow(dead_code)]
        generation: u64,
    },
}

#[derive(Deserialize)]
struct SnapshotShare {
    environments: BTreeMap<String, Environment>,
    peers: Vec<Peer>,
}

/// Silence after which the stream counts as dead (the controller beats every 2 s).
const SILENCE: Duration = Duration::from_secs(6);

#[derive(Clone)]
pub struct Client {
    base: String,
    token: String,
    host: String,
    agent: ureq::Agent,
}

impl Client {
    pub fn new(c: &Controller, host: &str) -> Result<Client> {
        let token = std::fs::read_to_string(&c.token_file)
            .with_context(|| {
                format!(
                    "controller.token_file: cannot read {}",
                    c.token_file.display()
                )
            })?
            .trim()
            .to_string();
        Ok(Client {
            base: c.url.trim_end_matches('/').to_string(),
            token,
            host: host.to_string(),
            agent: ureq::AgentBuilder::new()
                .timeout_connect(Duration::from_secs(2))
                .timeout_read(SILENCE)
                .timeout_write(Duration::from_secs(2))
                .build(),
        })
    }

    fn post(&self, path: &str, body: &Value) -> Result<()> {
        let url = format!("{}/v1/hosts/{}/{path}", self.base, self.host);
        match self
            .agent
            .post(&url)
            .set("Authorization", &format!("Bearer {}", self.token))
            .send_json(body.clone())
        {
            Ok(_) => Ok(()),
            Err(ureq::Error::Status(code, r)) => {
                let msg = r.into_string().unwrap_or_default();
                bail!("{url}: HTTP {code}: {msg}")
            }
            Err(e) => Err(e).with_context(|| format!("cannot reach the controller at {url}")),
        }
    }

    /// Tells the controller this host applied `generation` (or why it could not).
    pub fn ack(&self, generation: u64, error: Option<String>) -> Result<()> {
        self.post("ack", &json!({ "generation": generation, "error": error }))
    }

    /// Registers, then follows the stream until it breaks.
    fn follow(&self, registration: &Value, updates: &Sender<Update>) -> Result<()> {
        self.post("register", registration)?;
        let url = format!("{}/v1/hosts/{}/sync", self.base, self.host);
        let resp = self
            .agent
            .get(&url)
            .set("Authorization", &format!("Bearer {}", self.token))
            .call()
            .with_context(|| format!("opening {url}"))?;
        let mut share: Option<Share> = None;
        for line in BufReader::new(resp.into_reader()).lines() {
            let line = line.context("reading the sync stream")?;
            let event: Event = serde_json::from_str(&line)
                .with_context(|| format!("a sync event the daemon does not understand: {line}"))?;
            let update = match event {
                Event::Heartbeat { .. } => continue,
                Event::Snapshot {
                    generation,
                    share: s,
                } => {
                    info!(
                        generation,
                        environments = s.environments.len(),
                        "snapshot from the controller"
                    );
                    let new = Share {
                        generation,
                        environments: s.environments.into_values().collect(),
                        peers: s.peers,
                    };
                    share = Some(new.clone());
                    Update {
                        generation,
                        share: Some(new),
                    }
                }
                Event::Delta {
                    generation,
                    upsert,
                    remove,
                    peers,
                } => {
                    let Some(cur) = share.as_mut() else {
                        bail!("a delta before the snapshot");
                    };
                    cur.generation = generation;
                    let changed = !upsert.is_empty() || !remove.is_empty() || peers.is_some();
                    if changed {
                        cur.environments.retain(|e| {
                            !remove.contains(&e.name) && !upsert.iter().any(|u| u.name == e.name)
                        });
                        cur.environments.extend(upsert);
                        cur.environments.sort_by(|a, b| a.name.cmp(&b.name));
                        if let Some(p) = peers {
                            cur.peers = p;
                        }
                    }
                    Update {
                        generation,
                        share: changed.then(|| cur.clone()),
                    }
                }
            };
            if updates.send(update).is_err() {
                return Ok(());
            }
        }
        bail!("the controller closed the sync stream")
    }
}

/// Follows the controller on a thread of its own for as long as the daemon runs.
pub fn start(client: Client, registration: Value, updates: Sender<Update>) -> Result<()> {
    thread::Builder::new().name("sync".into()).spawn(move || {
        let mut backoff = Duration::from_millis(100);
        loop {
            match client.follow(&registration, &updates) {
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
