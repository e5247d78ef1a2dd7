//! The one HTTP client of the controller's API, typed by the contract, used by violinctl,
//! violind, the bench and the tests. `http://` and `https://` (rustls, the system's trust
//! store) both work.
//!
//! A client may know several controller replicas (a comma-separated list of URLs): it
//! talks to one, moves to the next when that one cannot be reached, and follows a
//! follower's redirect (307 with `X-Violin-Leader`) to the leader, keeping it for the
//! calls after; while no replica knows a leader (an election), it waits for one.
use std::{
    fmt,
    io::{BufRead, BufReader},
    path::Path,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde::{de::DeserializeOwned, Serialize};

use crate::{
    observe::{FlowEvent, ObserveQuery},
    rest::{
        AdaptPlan, Adaptation, AppTopology, Applied, AuditEntry, Bound, BoundRequest, BrokerRound,
        Brokers, Credential, CredentialRequest, DaemonLinks, DaemonRules, EnvDetail, EnvSummary,
        ErrorBody, Filter, HostInfo, IssuedCredential, LinkInfo, LinkRequest, ManagerDecision,
        ManagerRecord, MeasuredPair, Plan, Route, RouteQuery, RuleInfo, RuleRequest, Status,
        SyncStatus,
    },
    share::{
        Ack, DatapathHealth, HostMeasurements, Interface, Registered, Registration, SyncEvent,
        TrafficReport,
    },
    vm::{Migration, MigrationRequest, Migrations, VmInfo, VmReport, VmUsage},
};

/// Why a call failed: the controller refused it (with its status and body), or it could
/// not be reached or understood.
#[derive(Debug)]
pub enum Error {
    Refused { status: u16, body: ErrorBody },
    Transport { url: String, reason: String },
}

impl Error {
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Refused { status, .. } => Some(*status),
            Error::Transport { .. } => None,
        }
    }

    /// The request field the refusal names, if any.
    pub fn field(&self) -> Option<&str> {
        match self {
            Error::Refused { body, .. } => body.field.as_deref(),
            Error::Transport { .. } => None,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Refused { status, body } => write!(f, "{} (HTTP {status})", body.error),
            Error::Transport { url, reason } => write!(f, "cannot reach {url}: {reason}"),
        }
    }
}

impl std::error::Error for Error {}

pub type Result<T> = std::result::Result<T, Error>;

/// How long a request may take to connect and to answer (a sync stream's reader sets the
/// read timeout to its silence limit).
#[derive(Clone, Copy, Debug)]
pub struct Timeouts {
    pub connect: Duration,
    pub read: Duration,
}

impl Default for Timeouts {
    fn default() -> Timeouts {
        Timeouts {
            connect: Duration::from_secs(5),
            read: Duration::from_secs(30),
        }
    }
}

/// The header a follower that knows no leader sets on its 503: the request was not
/// served, so even a change may go to another replica.
pub const UNSERVED_HEADER: &str = "X-Violin-Unserved";

/// How long a call waits for replicas that know no leader yet to elect one.
const NO_LEADER_PATIENCE: Duration = Duration::from_secs(15);

/// The header a follower names the leader's URL in.
pub const LEADER_HEADER: &str = "X-Violin-Leader";

#[derive(Clone)]
pub struct Client {
    /// The replicas' URLs and the one spoken to now; clones share it, so a failover
    /// found by one call holds for every user of the client.
    bases: Arc<Mutex<(Vec<String>, usize)>>,
    auth: String,
    agent: ureq::Agent,
}

/// A request's body.
enum Payload<'a> {
    None,
    Json(serde_json::Value),
    Toml(&'a str),
}

/// A query's fields as URL query pairs (absent ones left out).
fn pairs<Q: Serialize>(query: &Q) -> Vec<(String, String)> {
    let mut pairs = Vec::new();
    if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(query) {
        for (k, v) in m {
            let v = match v {
                serde_json::Value::String(s) => s,
                serde_json::Value::Null => continue,
                other => other.to_string(),
            };
            pairs.push((k, v));
        }
    }
    pairs
}

/// Splits a comma-separated list of controller URLs (trailing slashes dropped).
pub fn urls(list: &str) -> Vec<String> {
    list.split(',')
        .map(|u| u.trim().trim_end_matches('/').to_string())
        .filter(|u| !u.is_empty())
        .collect()
}

/// Reads a bearer token file (trimmed).
pub fn read_token(path: &Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_string())
}

impl Client {
    pub fn new(base: &str, token: &str, timeouts: Timeouts) -> Client {
        Client {
            bases: Arc::new(Mutex::new((urls(base), 0))),
            auth: format!("Bearer {token}"),
            agent: ureq::AgentBuilder::new()
                .timeout_connect(timeouts.connect)
                .timeout_read(timeouts.read)
                .timeout_write(timeouts.connect)
                // A follower's redirect is followed here, body and all (see `call`).
                .redirects(0)
                .build(),
        }
    }

    /// The URL spoken to now.
    pub fn base(&self) -> String {
        let b = self.bases.lock().unwrap();
        b.0.get(b.1).cloned().unwrap_or_default()
    }

    /// Speaks to `url` from now on (added to the list if it was not in it).
    fn switch_to(&self, url: &str) {
        let mut b = self.bases.lock().unwrap();
        let i = match b.0.iter().position(|u| u == url) {
            Some(i) => i,
            None => {
                b.0.push(url.to_string());
                b.0.len() - 1
            }
        };
        b.1 = i;
    }

    /// Moves to the next URL of the list; false when there is no other.
    fn rotate(&self, from: &str) -> bool {
        let mut b = self.bases.lock().unwrap();
        if b.0.len() < 2 {
            return false;
        }
        // Another call may have moved on already.
        if b.0.get(b.1).is_some_and(|u| u == from) {
            b.1 = (b.1 + 1) % b.0.len();
        }
        true
    }

    /// Sends a request to the replica spoken to; when it cannot be reached (or, for a
    /// read, does not answer) tries the others once each, and follows a follower's
    /// redirect to the leader. Returns the URL last
    /// tried with the answer.
    fn call(
        &self,
        method: &str,
        path: &str,
        query: &[(String, String)],
        payload: &Payload,
    ) -> (String, std::result::Result<ureq::Response, ureq::Error>) {
        let n = self.bases.lock().unwrap().0.len();
        // Reads that failed midway may be tried this many times in all.
        let mut tries = n + 2;
        // A failover (the leader gone, the others electing, followers still naming the
        // old one) takes up to a lead's lease, 5 s by default: until then a client waits,
        // asking each replica in turn and resting after each round.
        let patience = Instant::now() + NO_LEADER_PATIENCE;
        let mut waits = 0;
        let mut last;
        loop {
            let base = self.base();
            let mut req = self
                .agent
                .request(method, &format!("{base}{path}"))
                .set("Authorization", &self.auth);
            for (k, v) in query {
                req = req.query(k, v);
            }
            let resp = match payload {
                Payload::None => req.call(),
                Payload::Json(v) => req.send_json(v),
                Payload::Toml(t) => req.set("Content-Type", "application/toml").send_string(t),
            };
            match resp {
                Ok(r) if matches!(r.status(), 307 | 308) => {
                    let Some(leader) = r.header(LEADER_HEADER).map(|l| l.trim_end_matches('/'))
                    else {
                        return (base, Ok(r));
                    };
                    if leader == base {
                        return (base, Ok(r));
                    }
                    self.switch_to(leader);
                    last = (base, Ok(r));
                }
                // A follower that knows no leader yet served nothing (it says so): the
                // others are asked, then all again until one leads.
                Err(ureq::Error::Status(503, r)) if r.header(UNSERVED_HEADER).is_some() => {
                    self.rotate(&base);
                    last = (base, Err(ureq::Error::Status(503, r)));
                }
                // Nothing reached a replica that refused the connection: another may
                // serve it (with one replica, the error is the answer).
                Err(ureq::Error::Transport(t))
                    if matches!(
                        t.kind(),
                        ureq::ErrorKind::ConnectionFailed | ureq::ErrorKind::Dns
                    ) =>
                {
                    let moved = self.rotate(&base);
                    last = (base, Err(ureq::Error::Transport(t)));
                    if !moved {
                        break;
                    }
                }
                // A read that failed midway is asked again elsewhere; a change is not: a
                // lost answer must not make it twice.
                Err(ureq::Error::Transport(t)) if matches!(method, "GET" | "HEAD") => {
                    let moved = self.rotate(&base);
                    last = (base, Err(ureq::Error::Transport(t)));
                    tries -= 1;
                    if !moved || tries == 0 {
                        break;
                    }
                    continue;
                }
                other => return (base, other),
            }
            waits += 1;
            if Instant::now() >= patience {
                break;
            }
            if waits % n.max(1) == 0 {
                std::thread::sleep(Duration::from_millis(250));
            }
        }
        last
    }

    fn answer<T: DeserializeOwned>(
        &self,
        path: &str,
        (base, resp): (String, std::result::Result<ureq::Response, ureq::Error>),
    ) -> Result<T> {
        let url = format!("{base}{path}");
        match resp {
            Ok(r) if r.status() >= 300 => Err(Error::Refused {
                status: r.status(),
                body: ErrorBody {
                    error: format!(
                        "redirected to {} without a leader to follow",
                        r.header("Location").unwrap_or("nowhere")
                    ),
                    field: None,
                    line: None,
                },
            }),
            Ok(r) => r.into_json().map_err(|e| Error::Transport {
                url,
                reason: format!("unexpected answer: {e}"),
            }),
            Err(ureq::Error::Status(status, r)) => {
                let text = r.into_string().unwrap_or_default();
                let body = serde_json::from_str(&text).unwrap_or(ErrorBody {
                    error: if text.is_empty() {
                        "no details".into()
                    } else {
                        text
                    },
                    field: None,
                    line: None,
                });
                Err(Error::Refused { status, body })
            }
            Err(e) => Err(Error::Transport {
                url,
                reason: e.to_string(),
            }),
        }
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T> {
        self.answer(path, self.call("GET", path, &[], &Payload::None))
    }

    /// A request without a body (`DELETE`s).
    fn bare<T: DeserializeOwned>(&self, method: &str, path: &str) -> Result<T> {
        self.answer(path, self.call(method, path, &[], &Payload::None))
    }

    fn get_query<T: DeserializeOwned, Q: Serialize>(&self, path: &str, query: &Q) -> Result<T> {
        self.answer(path, self.call("GET", path, &pairs(query), &Payload::None))
    }

    fn send<T: DeserializeOwned, B: Serialize>(
        &self,
        method: &str,
        path: &str,
        body: &B,
    ) -> Result<T> {
        let value = serde_json::to_value(body).map_err(|e| Error::Transport {
            url: format!("{}{path}", self.base()),
            reason: format!("cannot encode the request: {e}"),
        })?;
        self.answer(path, self.call(method, path, &[], &Payload::Json(value)))
    }

    fn send_toml<T: DeserializeOwned>(&self, method: &str, path: &str, text: &str) -> Result<T> {
        self.answer(path, self.call(method, path, &[], &Payload::Toml(text)))
    }

    pub fn environments(&self) -> Result<Vec<EnvSummary>> {
        self.get("/v1/environments")
    }

    pub fn environment(&self, name: &str) -> Result<EnvDetail> {
        self.get(&format!("/v1/environments/{name}"))
    }

    pub fn plan(&self, name: &str, spec: &str) -> Result<Plan> {
        self.send_toml("POST", &format!("/v1/environments/{name}/plan"), spec)
    }

    pub fn apply(&self, name: &str, spec: &str) -> Result<Applied> {
        self.send_toml("PUT", &format!("/v1/environments/{name}"), spec)
    }

    pub fn delete(&self, name: &str) -> Result<Applied> {
        let path = format!("/v1/environments/{name}");
        self.bare("DELETE", &path)
    }

    pub fn add_link(&self, env: &str, req: &LinkRequest) -> Result<Applied> {
        self.send("POST", &format!("/v1/environments/{env}/links"), req)
    }

    pub fn delete_link(&self, env: &str, a: &str, b: &str) -> Result<Applied> {
        let path = format!("/v1/environments/{env}/links/{a}/{b}");
        self.bare("DELETE", &path)
    }

    pub fn add_rule(&self, env: &str, req: &RuleRequest) -> Result<Applied> {
        self.send("POST", &format!("/v1/environments/{env}/rules"), req)
    }

    pub fn delete_rule(&self, env: &str, req: &RuleRequest) -> Result<Applied> {
        self.send("DELETE", &format!("/v1/environments/{env}/rules"), req)
    }

    pub fn links(&self, filter: &Filter) -> Result<Vec<LinkInfo>> {
        self.get_query("/v1/links", filter)
    }

    pub fn rules(&self, filter: &Filter) -> Result<Vec<RuleInfo>> {
        self.get_query("/v1/rules", filter)
    }

    pub fn route(&self, query: &RouteQuery) -> Result<Route> {
        self.get_query("/v1/route", query)
    }

    pub fn bound(&self) -> Result<Bound> {
        self.get("/v1/config-time-bound")
    }

    pub fn set_bound(&self, seconds: f64) -> Result<Bound> {
        self.send("PUT", "/v1/config-time-bound", &BoundRequest { seconds })
    }

    pub fn sync_status(&self, generation: Option<u64>) -> Result<SyncStatus> {
        let q = crate::rest::SyncQuery {
            generation,
            wait: None,
        };
        self.get_query("/v1/sync", &q)
    }

    /// The sync state of `generation`, answered as soon as every host applied it or after
    /// `wait`: the controller watches the acknowledgements, so nobody polls.
    pub fn watch_sync(&self, generation: u64, wait: Duration) -> Result<SyncStatus> {
        let q = crate::rest::SyncQuery {
            generation: Some(generation),
            wait: Some(wait.as_secs_f64()),
        };
        self.get_query("/v1/sync", &q)
    }

    pub fn hosts(&self) -> Result<Vec<HostInfo>> {
        self.get("/v1/hosts")
    }

    pub fn interfaces(&self, host: &str) -> Result<Vec<Interface>> {
        self.get(&format!("/v1/hosts/{host}/interfaces"))
    }

    pub fn register(&self, host: &str, reg: &Registration) -> Result<Registered> {
        self.send("POST", &format!("/v1/hosts/{host}/register"), reg)
    }

    pub fn ack(&self, host: &str, ack: &Ack) -> Result<Ack> {
        self.send("POST", &format!("/v1/hosts/{host}/ack"), ack)
    }

    /// What a host's VMs sent each other since its previous report.
    pub fn report_traffic(&self, host: &str, report: &TrafficReport) -> Result<()> {
        self.send::<serde_json::Value, _>("POST", &format!("/v1/hosts/{host}/traffic"), report)?;
        Ok(())
    }

    /// What the host's datapath dropped and how full its maps are (`violinctl status`).
    pub fn report_health(&self, host: &str, report: &DatapathHealth) -> Result<()> {
        self.send::<serde_json::Value, _>("POST", &format!("/v1/hosts/{host}/health"), report)?;
        Ok(())
    }

    /// The whole installation at a glance, with what needs attention.
    pub fn status(&self) -> Result<Status> {
        self.get("/v1/status")
    }

    /// An environment's application topology, as VTTIF infers it.
    pub fn topology(&self, env: &str) -> Result<AppTopology> {
        self.get(&format!("/v1/environments/{env}/topology"))
    }

    /// The topology once more than `after` changes were declared, or after `wait`.
    pub fn watch_topology(&self, env: &str, after: u64, wait: Duration) -> Result<AppTopology> {
        let q = crate::rest::TopologyQuery {
            after: Some(after),
            wait: Some(wait.as_secs_f64()),
        };
        self.get_query(&format!("/v1/environments/{env}/topology"), &q)
    }

    /// A host's measurements of the other hosts.
    pub fn report_measurements(&self, host: &str, m: &HostMeasurements) -> Result<()> {
        self.send::<serde_json::Value, _>("POST", &format!("/v1/hosts/{host}/measurements"), m)?;
        Ok(())
    }

    /// The host matrix: what each host measured to each other.
    pub fn measurements(&self) -> Result<Vec<MeasuredPair>> {
        self.get("/v1/measurements")
    }

    /// What VADAPT would change in an adapted environment's overlay now.
    pub fn adapt_plan(&self, env: &str) -> Result<AdaptPlan> {
        self.get(&format!("/v1/environments/{env}/adapt"))
    }

    /// Makes VADAPT's plan for an environment now.
    pub fn adapt(&self, env: &str) -> Result<Adaptation> {
        self.send("POST", &format!("/v1/environments/{env}/adapt"), &())
    }

    /// The adaptations made (`environment` filters), oldest first.
    pub fn adaptations(&self, filter: &Filter) -> Result<Vec<Adaptation>> {
        self.get_query("/v1/adaptations", filter)
    }

    /// What the adaptation manager would do now (nothing changes).
    pub fn manager(&self) -> Result<ManagerDecision> {
        self.get("/v1/manager")
    }

    /// Has the adaptation manager decide and carry its decision out.
    pub fn manage(&self) -> Result<ManagerRecord> {
        self.send("POST", "/v1/manager", &())
    }

    /// The adaptation manager's decisions carried out, oldest first.
    pub fn manager_log(&self) -> Result<Vec<ManagerRecord>> {
        self.get("/v1/manager/log")
    }

    /// Issues a credential; its token is in the answer only.
    pub fn create_credential(&self, req: &CredentialRequest) -> Result<IssuedCredential> {
        self.send("POST", "/v1/credentials", req)
    }

    pub fn credentials(&self) -> Result<Vec<Credential>> {
        self.get("/v1/credentials")
    }

    /// Revokes a credential; the ones left.
    pub fn delete_credential(&self, name: &str) -> Result<Vec<Credential>> {
        let path = format!("/v1/credentials/{name}");
        self.bare("DELETE", &path)
    }

    /// The latest `last` audit entries, oldest first.
    pub fn audit(&self, last: usize) -> Result<Vec<AuditEntry>> {
        self.get(&format!("/v1/audit?last={last}"))
    }

    /// VioCluster's loans and latest brokering rounds.
    pub fn brokers(&self) -> Result<Brokers> {
        self.get("/v1/brokers")
    }

    /// Runs a brokering round now.
    pub fn broker_round(&self) -> Result<BrokerRound> {
        self.send("POST", "/v1/brokers/round", &())
    }

    /// Every VM's use over time.
    pub fn usage(&self) -> Result<Vec<VmUsage>> {
        self.get("/v1/usage")
    }

    /// A host's domains and the lifecycle events since its last report.
    pub fn report_vms(&self, host: &str, report: &VmReport) -> Result<()> {
        self.send::<serde_json::Value, _>("POST", &format!("/v1/hosts/{host}/vms"), report)?;
        Ok(())
    }

    /// Every VM the hosts' libvirt daemons report.
    pub fn vms(&self) -> Result<Vec<VmInfo>> {
        self.get("/v1/vms")
    }

    /// Starts live migrations; they go on in the controller (follow them by id).
    pub fn migrate(&self, req: &MigrationRequest) -> Result<Migrations> {
        self.send("POST", "/v1/migrations", req)
    }

    /// Every recorded migration, oldest first.
    pub fn migrations(&self) -> Result<Vec<Migration>> {
        self.get("/v1/migrations")
    }

    pub fn migration(&self, id: u64) -> Result<Migration> {
        self.get(&format!("/v1/migrations/{id}"))
    }

    /// Asks libvirt to abort a migration in flight; it then rolls back.
    pub fn cancel_migration(&self, id: u64) -> Result<Migration> {
        let path = format!("/v1/migrations/{id}");
        self.bare("DELETE", &path)
    }

    /// Opens `host`'s sync stream: its events, one per line, until it breaks.
    pub fn sync_stream(&self, host: &str) -> Result<SyncEvents> {
        let path = format!("/v1/hosts/{host}/sync");
        match self.call("GET", &path, &[], &Payload::None) {
            (_, Ok(r)) if r.status() < 300 => Ok(SyncEvents {
                lines: Box::new(BufReader::new(r.into_reader()).lines()),
                bytes: 0,
            }),
            answer => Err(self.answer::<()>(&path, answer).unwrap_err()),
        }
    }

    /// violind's live events (its own API): every frame its datapath drops from now on
    /// that `query` matches, as they come, without end.
    pub fn observe(&self, query: &ObserveQuery) -> Result<Observed> {
        let path = "/v1/observe";
        match self.call("GET", path, &pairs(query), &Payload::None) {
            (_, Ok(r)) if r.status() < 300 => Ok(Observed::new(r.into_reader())),
            answer => Err(self.answer::<()>(path, answer).unwrap_err()),
        }
    }

    /// violind's listings (its own API, same client).
    pub fn daemon_links(&self) -> Result<DaemonLinks> {
        self.get("/v1/links")
    }

    pub fn daemon_rules(&self) -> Result<DaemonRules> {
        self.get("/v1/rules")
    }
}

/// violind's events, a batch at a time: what has arrived when the last read is used up
/// (the daemon writes each drain's at once, about a second's worth). A batch is one
/// wake-up of whoever waits for it; an event each would cost a busy host one per event.
/// The stream ends at its first failure (after the events read before it).
pub struct Observed {
    reader: BufReader<Box<dyn std::io::Read + Send + Sync>>,
    /// A failure after some events of a batch, for the call after that batch.
    failed: Option<std::io::Error>,
    /// A failure was handed out: what follows it may start in the middle of a line.
    ended: bool,
}

impl Observed {
    /// Holds a drain of samples (about 300 bytes each) in a read or two; a flood of
    /// drops takes more reads, each its own batch.
    const READ: usize = 64 * 1024;

    pub fn new(from: Box<dyn std::io::Read + Send + Sync>) -> Observed {
        Observed {
            reader: BufReader::with_capacity(Self::READ, from),
            failed: None,
            ended: false,
        }
    }
}

impl Iterator for Observed {
    type Item = std::io::Result<Vec<FlowEvent>>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.ended {
            return None;
        }
        if let Some(e) = self.failed.take() {
            self.ended = true;
            return Some(Err(e));
        }
        let mut batch = Vec::new();
        let mut line = String::new();
        loop {
            line.clear();
            let read = self.reader.read_line(&mut line).and_then(|n| {
                // The daemon's keep-alive lines are empty.
                if n == 0 || line.trim().is_empty() {
                    return Ok(n);
                }
                let e = serde_json::from_str(&line)
                    .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
                batch.push(e);
                Ok(n)
            });
            match read {
                // The end of the stream.
                Ok(0) => return (!batch.is_empty()).then_some(Ok(batch)),
                Ok(_) if self.reader.buffer().is_empty() && !batch.is_empty() => {
                    return Some(Ok(batch))
                }
                Ok(_) => {}
                Err(e) if batch.is_empty() => {
                    self.ended = true;
                    return Some(Err(e));
                }
                Err(e) => {
                    self.failed = Some(e);
                    return Some(Ok(batch));
                }
            }
        }
    }
}

/// The events of a sync stream.
pub struct SyncEvents {
    lines: Box<dyn Iterator<Item = std::io::Result<String>> + Send>,
    bytes: u64,
}

impl SyncEvents {
    /// The bytes of the events read so far (newlines included, HTTP framing not).
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
}

impl Iterator for SyncEvents {
    type Item = std::result::Result<SyncEvent, String>;

    fn next(&mut self) -> Option<Self::Item> {
        let line = match self.lines.next()? {
            Ok(l) => l,
            Err(e) => return Some(Err(format!("reading the sync stream: {e}"))),
        };
        self.bytes += line.len() as u64 + 1;
        Some(
            serde_json::from_str(&line)
                .map_err(|e| format!("a sync event this build does not understand ({e}): {line}")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    /// Answers one request on `l` with `head` (status line and headers) and `body`;
    /// returns the request's first line.
    fn answer_once(l: std::net::TcpListener, head: String, body: &'static str) -> String {
        let (mut s, _) = l.accept().unwrap();
        let mut buf = vec![0u8; 4096];
        let mut got = Vec::new();
        // Read the head and the body its Content-Length announces.
        loop {
            let n = s.read(&mut buf).unwrap();
            got.extend_from_slice(&buf[..n]);
            let text = String::from_utf8_lossy(&got).to_string();
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text
                    .lines()
                    .find_map(|l| {
                        l.to_lowercase()
                            .strip_prefix("content-length:")
                            .map(|v| v.trim().parse::<usize>().unwrap())
                    })
                    .unwrap_or(0);
                if got.len() >= end + 4 + len {
                    break;
                }
            }
        }
        write!(
            s,
            "{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        String::from_utf8_lossy(&got)
            .lines()
            .next()
            .unwrap()
            .to_string()
    }

    /// A list of replicas: the first cannot be reached, the second is a follower that
    /// redirects, the third the leader; a PUT with its body lands on the leader, and the
    /// client keeps speaking to it.
    #[test]
    fn fails_over_and_follows_the_leader() {
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_url = format!("http://{}", dead.local_addr().unwrap());
        drop(dead);
        let follower = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let leader = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let follower_url = format!("http://{}", follower.local_addr().unwrap());
        let leader_url = format!("http://{}", leader.local_addr().unwrap());
        let redirect = format!(
            "HTTP/1.1 307 Temporary Redirect\r\nLocation: {leader_url}/v1/config-time-bound\r\n{LEADER_HEADER}: {leader_url}"
        );
        let f = std::thread::spawn(move || answer_once(follower, redirect, ""));
        let l = std::thread::spawn(move || {
            let head = "HTTP/1.1 200 OK\r\nContent-Type: application/json".to_string();
            let first = answer_once(
                leader.try_clone().unwrap(),
                head.clone(),
                r#"{"bound_seconds":2.0,"measured_seconds":null}"#,
            );
            let second = answer_once(
                leader,
                head,
                r#"{"bound_seconds":2.0,"measured_seconds":null}"#,
            );
            (first, second)
        });
        let c = Client::new(
            &format!("{dead_url}, {follower_url}/,{leader_url}"),
            "token",
            Timeouts::default(),
        );
        c.set_bound(2.0).expect("the leader answers");
        assert_eq!(c.base(), leader_url);
        c.bound().expect("the leader answers again");
        assert!(f.join().unwrap().starts_with("PUT /v1/config-time-bound"));
        let (first, second) = l.join().unwrap();
        assert!(first.starts_with("PUT /v1/config-time-bound"), "{first}");
        assert!(second.starts_with("GET /v1/config-time-bound"), "{second}");
    }

    /// An `https://` URL is spoken to (TLS is built in): with nothing listening, the
    /// error is the refused connection, not an unknown scheme.
    #[test]
    fn https_urls_are_supported() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let c = Client::new(
            &format!("https://127.0.0.1:{port}/"),
            "token",
            Timeouts::default(),
        );
        assert_eq!(c.base(), format!("https://127.0.0.1:{port}"));
        match c.environments() {
            Err(Error::Transport { reason, .. }) => {
                assert!(!reason.to_lowercase().contains("scheme"), "{reason}");
                assert!(
                    reason.contains("refused") || reason.contains("Connection"),
                    "{reason}"
                );
            }
            other => panic!("{other:?}"),
        }
    }

    /// A reader that hands out one piece per read, as a socket would.
    struct Pieces(Vec<&'static str>);

    impl Read for Pieces {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() {
                return Ok(0);
            }
            let piece = self.0.remove(0).as_bytes();
            buf[..piece.len()].copy_from_slice(piece);
            Ok(piece.len())
        }
    }

    const EVENT: &str = r#"{"time":1.5,"host":"h1","port":"vm1","verdict":"dropped","reason":"no_route","src_mac":"02:00:00:00:01:01","dst_mac":"02:00:00:00:02:01","ethertype":"0x0800","len":60}
"#;

    #[test]
    fn observed_events_come_a_read_at_a_time_without_keep_alives() {
        let two = Box::leak(format!("{EVENT}{EVENT}").into_boxed_str());
        let mut o = Observed::new(Box::new(Pieces(vec![two, "\n", "\n", EVENT])));
        let batch = o.next().unwrap().unwrap();
        assert_eq!(batch.len(), 2);
        assert_eq!(batch[0].reason.as_deref(), Some("no_route"));
        // Keep-alive lines make no batch; the next read's event does.
        assert_eq!(o.next().unwrap().unwrap().len(), 1);
        assert!(o.next().is_none());
    }

    #[test]
    fn a_malformed_event_fails_after_the_good_ones_before_it() {
        // In a read of its own, and after good ones in the same read.
        let mut o = Observed::new(Box::new(Pieces(vec![EVENT, "{\"time\":\n"])));
        assert_eq!(o.next().unwrap().unwrap().len(), 1);
        assert!(o.next().unwrap().is_err());
        let mut o = Observed::new(Box::new(Pieces(vec![Box::leak(
            format!("{EVENT}{{\"time\":\n").into_boxed_str(),
        )])));
        assert_eq!(o.next().unwrap().unwrap().len(), 1);
        let e = o.next().unwrap().unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        // Nothing after a failure: it could start in the middle of a line.
        let mut o = Observed::new(Box::new(Pieces(vec!["{\"time\":\n", EVENT])));
        assert!(o.next().unwrap().is_err());
        assert!(o.next().is_none());
    }

    #[test]
    fn an_event_split_across_reads_waits_for_its_end() {
        let (head, tail) = EVENT.split_at(40);
        let with_keep_alive = Box::leak(format!("{EVENT}\n").into_boxed_str());
        let mut o = Observed::new(Box::new(Pieces(vec![head, tail, with_keep_alive])));
        assert_eq!(o.next().unwrap().unwrap().len(), 1);
        assert_eq!(o.next().unwrap().unwrap().len(), 1);
        assert!(o.next().is_none());
    }
}
