//! The one HTTP client of the controller's API, typed by the contract, used by violinctl,
//! violind, the bench and the tests. `http://` and `https://` (rustls, the system's trust
//! store) both work.
use std::{
    fmt,
    io::{BufRead, BufReader},
    path::Path,
    time::Duration,
};

use serde::{de::DeserializeOwned, Serialize};

use crate::{
    rest::{
        AdaptPlan, Adaptation, AppTopology, Applied, AuditEntry, Bound, BoundRequest, BrokerRound,
        Brokers, Credential, CredentialRequest, DaemonLinks, DaemonRules, EnvDetail, EnvSummary,
        ErrorBody, Filter, HostInfo, IssuedCredential, LinkInfo, LinkRequest, ManagerDecision,
        ManagerRecord, MeasuredPair, Plan, Route, RouteQuery, RuleInfo, RuleRequest, SyncStatus,
    },
    share::{Ack, HostMeasurements, Interface, Registered, Registration, SyncEvent, TrafficReport},
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

#[derive(Clone)]
pub struct Client {
    base: String,
    auth: String,
    agent: ureq::Agent,
}

/// Reads a bearer token file (trimmed).
pub fn read_token(path: &Path) -> std::io::Result<String> {
    Ok(std::fs::read_to_string(path)?.trim().to_string())
}

impl Client {
    pub fn new(base: &str, token: &str, timeouts: Timeouts) -> Client {
        Client {
            base: base.trim_end_matches('/').to_string(),
            auth: format!("Bearer {token}"),
            agent: ureq::AgentBuilder::new()
                .timeout_connect(timeouts.connect)
                .timeout_read(timeouts.read)
                .timeout_write(timeouts.connect)
                .build(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        self.agent
            .request(method, &format!("{}{path}", self.base))
            .set("Authorization", &self.auth)
    }

    fn answer<T: DeserializeOwned>(
        &self,
        path: &str,
        resp: std::result::Result<ureq::Response, ureq::Error>,
    ) -> Result<T> {
        let url = format!("{}{path}", self.base);
        match resp {
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
        self.answer(path, self.request("GET", path).call())
    }

    fn get_query<T: DeserializeOwned, Q: Serialize>(&self, path: &str, query: &Q) -> Result<T> {
        let mut req = self.request("GET", path);
        if let Ok(serde_json::Value::Object(m)) = serde_json::to_value(query) {
            for (k, v) in m {
                let v = match v {
                    serde_json::Value::String(s) => s,
                    serde_json::Value::Null => continue,
                    other => other.to_string(),
                };
                req = req.query(&k, &v);
            }
        }
        self.answer(path, req.call())
    }

    fn send<T: DeserializeOwned, B: Serialize>(
        &self,
        method: &str,
        path: &str,
        body: &B,
    ) -> Result<T> {
        self.answer(path, self.request(method, path).send_json(body))
    }

    fn send_toml<T: DeserializeOwned>(&self, method: &str, path: &str, text: &str) -> Result<T> {
        let req = self
            .request(method, path)
            .set("Content-Type", "application/toml");
        self.answer(path, req.send_string(text))
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
        self.answer(&path, self.request("DELETE", &path).call())
    }

    pub fn add_link(&self, env: &str, req: &LinkRequest) -> Result<Applied> {
        self.send("POST", &format!("/v1/environments/{env}/links"), req)
    }

    pub fn delete_link(&self, env: &str, a: &str, b: &str) -> Result<Applied> {
        let path = format!("/v1/environments/{env}/links/{a}/{b}");
        self.answer(&path, self.request("DELETE", &path).call())
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
        self.answer(&path, self.request("DELETE", &path).call())
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
        self.answer(&path, self.request("DELETE", &path).call())
    }

    /// Opens `host`'s sync stream: its events, one per line, until it breaks.
    pub fn sync_stream(&self, host: &str) -> Result<SyncEvents> {
        let path = format!("/v1/hosts/{host}/sync");
        match self.request("GET", &path).call() {
            Ok(r) => Ok(SyncEvents {
                lines: Box::new(BufReader::new(r.into_reader()).lines()),
            }),
            Err(e) => Err(self.answer::<()>(&path, Err(e)).unwrap_err()),
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

/// The events of a sync stream.
pub struct SyncEvents {
    lines: Box<dyn Iterator<Item = std::io::Result<String>> + Send>,
}

impl Iterator for SyncEvents {
    type Item = std::result::Result<SyncEvent, String>;

    fn next(&mut self) -> Option<Self::Item> {
        let line = match self.lines.next()? {
            Ok(l) => l,
            Err(e) => return Some(Err(format!("reading the sync stream: {e}"))),
        };
        Some(
            serde_json::from_str(&line)
                .map_err(|e| format!("a sync event this build does not understand ({e}): {line}")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
