//! The controller's versioned HTTP/JSON API (`/v1`), authenticated with a bearer token.
//! Bodies are `violin_api`'s types; a rejected request changes nothing and says why,
//! naming the field. `openapi` describes it from the same handlers and types.
use std::{collections::BTreeMap, sync::Arc, time::Duration};

use axum::{
    body::{Body, Bytes},
    extract::{MatchedPath, Path, Query, Request, State},
    http::{header, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Extension, Json, Router,
};
use dataplane_common::rules::MacMatch;
use violin_api::{
    parse::from_json,
    rest::{
        AdaptPlan, Adaptation, AppTopology, Applied, AuditEntry, AuditQuery, Bound, BoundRequest,
        BrokerRound, Brokers, Credential, CredentialRequest, EnvDetail, EnvSummary, ErrorBody,
        Filter, Health, HostInfo, HostSync, IssuedCredential, LinkInfo, LinkRequest, LinkRole,
        ManagerDecision, ManagerParams, ManagerRecord, MeasuredPair, Plan, ReplicaHealth, Role,
        Route, RouteQuery, RuleInfo, RuleRequest, Status, SyncQuery, SyncStatus, TopologyEdge,
        TopologyQuery, VmMove,
    },
    share::{
        Ack, DatapathHealth, HostMeasurements, Interface, Registered, Registration, TrafficReport,
    },
    vm::{Migration, MigrationRequest, Migrations, VmInfo, VmReport, VmUsage},
    FieldError, Name,
};

use crate::{
    adapt::{self, Adapter, HostPair},
    autonomic::{self, Autonomic},
    health,
    hub::{self, Hub},
    identity::{self, Identity},
    measure,
    migrate::{Refusal, Supervisor},
    replica::Leadership,
    route,
    spec::{duplicate_rule, ordered, plan, Rule, Spec, SpecError, Target},
    store::{PutError, Store},
    viocluster::{self, Viocluster},
    vttif::{self, Inference},
};

pub mod openapi;

#[derive(Clone)]
pub struct Api {
    pub store: Arc<Store>,
    pub token: Arc<String>,
    pub hub: Arc<Hub>,
    pub migrations: Arc<Supervisor>,
    pub vttif: Arc<Inference>,
    pub adapter: Arc<Adapter>,
    pub matrix: Arc<measure::Matrix>,
    /// The hosts' datapath health as they report it (`violinctl status`).
    pub health: Arc<health::Health>,
    pub autonomic: Arc<Autonomic>,
    /// VioCluster's brokers, when configured (`--brokers`).
    pub viocluster: Option<Arc<Viocluster>>,
    /// Whether this replica leads; a follower serves the state's reads and sends the
    /// rest to the leader.
    pub leadership: Arc<Leadership>,
}

impl Api {
    /// The only controller: it leads from the start.
    pub fn new(store: Arc<Store>, token: String, vttif: vttif::Params) -> anyhow::Result<Api> {
        let api = Api::replica(store, token, vttif, Arc::new(Leadership::solo()))?;
        api.lead()?;
        Ok(api)
    }

    /// This replica starts to lead: it picks up where the previous leader left off.
    pub fn lead(&self) -> anyhow::Result<()> {
        self.store.refresh()?;
        self.hub.metrics.leader.set(1);
        self.migrations.resume()
    }

    /// One of several replicas; `lead` once it is elected.
    pub fn replica(
        store: Arc<Store>,
        token: String,
        vttif: vttif::Params,
        leadership: Arc<Leadership>,
    ) -> anyhow::Result<Api> {
        let hub = Hub::new(store.generation()?);
        hub.metrics.registered.set(store.hosts()?.len() as i64);
        // Whatever the store catches up with (other replicas' changes), the streams send.
        let streams = hub.clone();
        store.on_generation(move |g| streams.committed(g));
        let migrations = Supervisor::new(store.clone(), hub.clone());
        let api = Api {
            leadership,
            store,
            token: Arc::new(token),
            hub,
            migrations,
            vttif: Arc::new(Inference::new(vttif)),
            adapter: Arc::new(Adapter::default()),
            matrix: Arc::new(measure::Matrix::default()),
            health: Arc::new(health::Health::default()),
            autonomic: Arc::new(Autonomic::new(ManagerParams::default(), None)),
            viocluster: None,
        };
        for spec in api.store.specs()? {
            fast_path_metric(&api, &spec);
        }
        Ok(api)
    }

    /// The adaptation manager's settings, and its automatic mode's period (None: only on
    /// request).
    pub fn with_manager(mut self, params: ManagerParams, period: Option<Duration>) -> Api {
        self.autonomic = Arc::new(Autonomic::new(params, period));
        self
    }

    /// VioCluster's brokers with this configuration.
    pub fn with_brokers(mut self, config: viocluster::Config) -> Api {
        self.viocluster = Some(Arc::new(Viocluster::new(config)));
        self
    }

    fn bound(&self) -> Option<Duration> {
        self.store
            .bound_us()
            .ok()
            .flatten()
            .map(Duration::from_micros)
    }
}

/// A rejected request: its status and body.
pub struct Reject {
    status: StatusCode,
    body: ErrorBody,
}

type Answer<T> = Result<Json<T>, Reject>;

impl Reject {
    fn status(status: StatusCode, message: impl Into<String>) -> Reject {
        Reject {
            status,
            body: ErrorBody {
                error: message.into(),
                field: None,
                line: None,
            },
        }
    }

    fn not_found(what: impl Into<String>) -> Reject {
        Reject::status(StatusCode::NOT_FOUND, what)
    }

    fn internal(e: anyhow::Error) -> Reject {
        Reject::status(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
    }
}

impl From<FieldError> for Reject {
    /// A 400 naming the field (and the spec's line, when there is one).
    fn from(e: FieldError) -> Reject {
        Reject {
            status: StatusCode::BAD_REQUEST,
            body: ErrorBody {
                error: e.to_string(),
                line: (e.line > 0).then_some(e.line),
                field: Some(e.field),
            },
        }
    }
}

impl From<anyhow::Error> for Reject {
    fn from(e: anyhow::Error) -> Reject {
        Reject::internal(e)
    }
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        (self.status, Json(self.body)).into_response()
    }
}

fn reject(field: &str, reason: impl Into<String>) -> Reject {
    FieldError::new(field, reason).into()
}

/// Who presented the bearer token: the controller's own (`admin`) or an issued
/// credential's.
fn identify(api: &Api, token: &str) -> Option<Identity> {
    let hash = identity::hash(token);
    // Equal-length hashes: the comparison's time says nothing of the admin token.
    if identity::same(&hash, &identity::hash(api.token.as_str())) {
        return Some(Identity {
            name: identity::ADMIN.into(),
            role: Role::Admin,
            credential: None,
        });
    }
    api.store.credential_by_hash(&hash).map(|c| Identity {
        name: c.name,
        role: c.role,
        credential: Some(hash),
    })
}

/// On a follower, sends what it does not answer itself to the leader: a 307 (method and
/// body kept) naming the leader in `X-Violin-Leader`, or a 503 while none is elected.
async fn to_leader(State(api): State<Api>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    if api.leadership.leading() {
        return next.run(req).await;
    }
    if crate::replica::served_by_followers(req.method().as_str(), &route) {
        // Caught up first, so that a client reads what the leader acknowledged to it.
        if let Err(e) = api.store.refresh() {
            return Reject::status(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("the state store: {e:#}"),
            )
            .into_response();
        }
        return next.run(req).await;
    }
    let Some(leader) = api.leadership.leader() else {
        let mut resp = Reject::status(
            StatusCode::SERVICE_UNAVAILABLE,
            "this controller replica follows, and no leader is elected yet: retry in a few seconds",
        )
        .into_response();
        // Tells clients the request was not served, so even a change may go elsewhere.
        let headers = resp.headers_mut();
        headers.insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
        headers.insert(
            violin_api::client::UNSERVED_HEADER,
            header::HeaderValue::from_static("no-leader"),
        );
        return resp;
    };
    let target = format!(
        "{leader}{}",
        req.uri().path_and_query().map_or("", |p| p.as_str())
    );
    let mut resp = Reject::status(
        StatusCode::TEMPORARY_REDIRECT,
        format!("this controller replica follows; the leader is {leader}"),
    )
    .into_response();
    for (name, value) in [
        (header::LOCATION.as_str(), target),
        (violin_api::client::LEADER_HEADER, leader),
    ] {
        if let Ok(v) = header::HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, v);
        }
    }
    resp
}

/// Authenticates, authorises by role (a host only as itself), and records changes and
/// refusals in the audit log with who asked.
async fn auth(State(api): State<Api>, mut req: Request, next: Next) -> Response {
    let who = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .and_then(|t| identify(&api, t));
    let Some(who) = who else {
        return Reject::status(
            StatusCode::UNAUTHORIZED,
            "Authorization: a valid bearer token is required (the controller's, or one `violinctl credential create` issued)",
        )
        .into_response();
    };
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_default();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let resp = match identity::authorize(&who, &method, &route, &path) {
        Ok(()) => {
            req.extensions_mut().insert(who.clone());
            next.run(req).await
        }
        Err(why) => Reject {
            status: StatusCode::FORBIDDEN,
            body: ErrorBody {
                error: why,
                field: Some("authorization".into()),
                line: None,
            },
        }
        .into_response(),
    };
    // A follower's redirect is recorded where the change is made, by the leader.
    let redirected = resp.status() == StatusCode::TEMPORARY_REDIRECT;
    if (identity::audited(&who, &method, &route) && !redirected)
        || resp.status() == StatusCode::FORBIDDEN
    {
        let entry = AuditEntry {
            id: 0,
            at_ms: crate::usage::now_ms(),
            who: who.name,
            role: who.role,
            method: method.to_string(),
            path,
            status: resp.status().as_u16(),
        };
        if let Err(e) = api.store.audit(entry) {
            tracing::warn!(error = format!("{e:#}"), "audit log");
        }
    }
    resp
}

/// Issue a credential: an operator's (admin, read_only) or a host's (named after the
/// host; it may only register, sync and report as that host). The token is in this
/// answer only.
#[utoipa::path(post, path = "/v1/credentials", tag = "credentials",
    request_body = CredentialRequest,
    responses((status = 200, description = "Issued", body = IssuedCredential),
              (status = 400, description = "Refused (field named)", body = ErrorBody),
              (status = 409, description = "The name is taken", body = ErrorBody)))]
async fn create_credential(
    State(api): State<Api>,
    Extension(who): Extension<Identity>,
    body: Bytes,
) -> Answer<IssuedCredential> {
    let req: CredentialRequest = from_json(&body)?;
    if req.name.as_str() == identity::ADMIN {
        return Err(reject("name", "admin is the controller's own token"));
    }
    let credential = Credential {
        name: req.name.to_string(),
        role: req.role,
        created_ms: crate::usage::now_ms(),
        created_by: who.name,
    };
    let token = identity::new_token()?;
    if !api
        .store
        .add_credential(&credential, &identity::hash(&token))?
    {
        return Err(Reject {
            status: StatusCode::CONFLICT,
            body: ErrorBody {
                error: format!(
                    "credential {} exists; delete it first to issue a new token",
                    credential.name
                ),
                field: Some("name".into()),
                line: None,
            },
        });
    }
    tracing::info!(name = %credential.name, role = credential.role.as_str(), by = %credential.created_by, "credential issued");
    Ok(Json(IssuedCredential { credential, token }))
}

/// The credentials issued (without their tokens).
#[utoipa::path(get, path = "/v1/credentials", tag = "credentials",
    responses((status = 200, description = "Credentials", body = [Credential])))]
async fn list_credentials(State(api): State<Api>) -> Json<Vec<Credential>> {
    Json(api.store.credentials())
}

/// Revoke a credential: its token is refused from now on.
#[utoipa::path(delete, path = "/v1/credentials/{name}", tag = "credentials",
    params(("name" = String, Path, description = "Credential name")),
    responses((status = 200, description = "Revoked", body = [Credential]),
              (status = 404, description = "No such credential", body = ErrorBody)))]
async fn delete_credential(
    State(api): State<Api>,
    Path(name): Path<String>,
) -> Answer<Vec<Credential>> {
    if !api.store.remove_credential(&name)? {
        return Err(Reject::not_found(format!("no credential {name:?}")));
    }
    // Its sync streams end too (the token is refused from their next request on).
    api.hub.revoked();
    Ok(Json(api.store.credentials()))
}

/// The audit log: every change made through the API, and every request refused for
/// want of a right, with who asked.
#[utoipa::path(get, path = "/v1/audit", tag = "credentials",
    params(AuditQuery),
    responses((status = 200, description = "Entries, oldest first", body = [AuditEntry])))]
async fn get_audit(State(api): State<Api>, Query(q): Query<AuditQuery>) -> Answer<Vec<AuditEntry>> {
    Ok(Json(api.store.audit_log(q.last.unwrap_or(100))?))
}

fn summary(spec: &Spec) -> EnvSummary {
    EnvSummary {
        name: spec.name.clone(),
        vni: spec.vni,
        hosts: spec.hosts.keys().cloned().collect(),
        vms: spec.vms.len(),
        restricted: !spec.allowed.is_empty(),
        limits: spec.limits.len() + spec.vm_limits.len(),
        links: spec.links.len(),
        rules: spec.rules.len(),
    }
}

fn parse_body(name: &str, body: &Bytes) -> Result<(Spec, String), SpecError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| FieldError::new("body", "the spec must be UTF-8 TOML"))?
        .to_string();
    let spec = Spec::parse(&text)?;
    if spec.name != name {
        return Err(FieldError::new(
            "environment.name",
            format!("{:?} does not match the URL's {name:?}", spec.name.as_str()),
        ));
    }
    Ok((spec, text))
}

/// List environments.
#[utoipa::path(get, path = "/v1/environments", tag = "environments",
    responses((status = 200, description = "Environments", body = [EnvSummary])))]
async fn list(State(api): State<Api>) -> Answer<Vec<EnvSummary>> {
    let envs = api.store.environments()?;
    Ok(Json(envs.iter().map(|(_, s)| summary(s)).collect()))
}

/// A 404 that names the `environment` field, so that a client can tell a missing
/// environment from a missing link or rule in it.
fn no_env(name: &str) -> Reject {
    Reject {
        status: StatusCode::NOT_FOUND,
        body: ErrorBody {
            error: format!("no environment {name:?}; `violinctl envs` lists them"),
            field: Some("environment".into()),
            line: None,
        },
    }
}

/// One environment with its spec.
#[utoipa::path(get, path = "/v1/environments/{name}", tag = "environments",
    params(("name" = String, Path, description = "Environment name")),
    responses((status = 200, description = "The environment", body = EnvDetail),
              (status = 404, description = "No such environment", body = ErrorBody)))]
async fn get_env(State(api): State<Api>, Path(name): Path<String>) -> Answer<EnvDetail> {
    match api.store.get(&name)? {
        Some((text, spec)) => Ok(Json(EnvDetail {
            summary: summary(&spec),
            spec: text,
        })),
        None => Err(no_env(&name)),
    }
}

fn changes(current: Option<&Spec>, desired: &Spec) -> Vec<String> {
    plan(current, desired)
        .iter()
        .map(|c| c.to_string())
        .collect()
}

/// What applying a spec would change, without changing anything.
#[utoipa::path(post, path = "/v1/environments/{name}/plan", tag = "environments",
    params(("name" = String, Path, description = "Environment name")),
    request_body(content = String, content_type = "application/toml", description = "An environment spec"),
    responses((status = 200, description = "The changes", body = Plan),
              (status = 400, description = "The spec is invalid (line and field)", body = ErrorBody)))]
async fn plan_env(State(api): State<Api>, Path(name): Path<String>, body: Bytes) -> Answer<Plan> {
    let (mut spec, _) = parse_body(&name, &body)?;
    let cur = api.store.get(&name)?;
    adapt::carry_fast_paths(cur.as_ref().map(|c| &c.1), &mut spec);
    Ok(Json(Plan {
        environment: name,
        changes: changes(cur.as_ref().map(|c| &c.1), &spec),
    }))
}

/// Create or replace an environment. Over an adapted environment, a spec that lists no
/// links of its own keeps the fast-path links VADAPT made.
#[utoipa::path(put, path = "/v1/environments/{name}", tag = "environments",
    params(("name" = String, Path, description = "Environment name")),
    request_body(content = String, content_type = "application/toml", description = "An environment spec"),
    responses((status = 200, description = "Applied; wait for the generation", body = Applied),
              (status = 400, description = "The spec is invalid (line and field)", body = ErrorBody)))]
async fn put_env(State(api): State<Api>, Path(name): Path<String>, body: Bytes) -> Answer<Applied> {
    let (mut spec, mut text) = parse_body(&name, &body)?;
    let _edit = api.migrations.edit_lock();
    let cur = api.store.get(&name)?;
    if adapt::carry_fast_paths(cur.as_ref().map(|c| &c.1), &mut spec) {
        text = crate::spec::edit::edit(&text, &spec)
            .map_err(|e| Reject::internal(anyhow::anyhow!("the spec: {e}")))?;
    }
    let list = changes(cur.as_ref().map(|c| &c.1), &spec);
    store_spec(&api, &spec, &text, list)
}

/// Rewrites environment `env`'s stored text with `edit` and stores the result as a PUT
/// of it would be, checked the same way (VioCluster's brokers add and remove borrowed
/// VMs so); the generation that carries it.
pub fn rewrite_spec(
    api: &Api,
    env: &str,
    edit: impl FnOnce(&str) -> anyhow::Result<String>,
) -> anyhow::Result<u64> {
    let stored = edit_stored(api, env, |text, _| {
        let text = edit(text).map_err(Reject::internal)?;
        Ok((Spec::parse(&text)?, text))
    });
    match stored {
        Ok(Json(a)) => Ok(a.generation),
        Err(r) => Err(anyhow::anyhow!("environment {env}: {}", r.body.error)),
    }
}

/// Changes a stored environment under the edit lock: `change` gets its text and spec
/// and gives the next ones, which are stored (and planned against the current).
fn edit_stored(
    api: &Api,
    name: &str,
    change: impl FnOnce(&str, &Spec) -> Result<(Spec, String), Reject>,
) -> Answer<Applied> {
    let _edit = api.migrations.edit_lock();
    let (text, cur) = match api.store.get(name)? {
        Some(stored) => stored,
        None => return Err(no_env(name)),
    };
    let (next, text) = change(&text, &cur)?;
    let list = changes(Some(&cur), &next);
    store_spec(api, &next, &text, list)
}

/// Refuses a change to an environment one of whose VMs is migrating: the migration
/// moves the VM in the stored spec itself.
fn not_migrating(api: &Api, env: &str) -> Result<(), Reject> {
    match api.store.in_flight().iter().find(|m| m.environment == env) {
        Some(m) => Err(Reject {
            status: StatusCode::CONFLICT,
            body: ErrorBody {
                error: format!(
                    "environment {env} has migration {} of {} in flight; change it when that ends",
                    m.id, m.vm
                ),
                field: Some("environment".into()),
                line: None,
            },
        }),
        None => Ok(()),
    }
}

/// Stores a spec and tells the hosts; the answer carries the generation to wait for.
fn store_spec(api: &Api, spec: &Spec, text: &str, changes: Vec<String>) -> Answer<Applied> {
    not_migrating(api, spec.name.as_str())?;
    match api.store.put(spec, text) {
        Ok(generation) => {
            api.hub.committed(generation);
            fast_path_metric(api, spec);
            Ok(Json(Applied {
                changes,
                generation,
            }))
        }
        Err(PutError::VniTaken(other)) => Err(reject(
            "environment.vni",
            format!("{} is already environment {other:?}'s", spec.vni),
        )),
        Err(PutError::Store(e)) => Err(Reject::internal(e)),
    }
}

/// The fast-path gauge of an adapted environment (gone with its `[adapt]`).
fn fast_path_metric(api: &Api, spec: &Spec) {
    let g = &api.hub.metrics.fast_paths;
    let vni = spec.vni.to_string();
    match spec.adapt {
        Some(_) => g.with_label_values(&[&vni]).set(spec.links.len() as i64),
        None => {
            let _ = g.remove_label_values(&[&vni]);
        }
    }
}

/// Delete an environment.
#[utoipa::path(delete, path = "/v1/environments/{name}", tag = "environments",
    params(("name" = String, Path, description = "Environment name")),
    responses((status = 200, description = "Deleted; wait for the generation", body = Applied),
              (status = 404, description = "No such environment", body = ErrorBody)))]
async fn delete_env(State(api): State<Api>, Path(name): Path<String>) -> Answer<Applied> {
    let _edit = api.migrations.edit_lock();
    not_migrating(&api, &name)?;
    let vni = api.store.get(&name)?.map(|(_, spec)| spec.vni.get());
    match api.store.delete(&name)? {
        Some(generation) => {
            api.hub.committed(generation);
            api.adapter.forget(&name);
            if let Some(vni) = vni {
                api.vttif.forget(vni);
                let _ = api
                    .hub
                    .metrics
                    .fast_paths
                    .remove_label_values(&[&vni.to_string()]);
                let m = &api.hub.metrics;
                let label = vni.to_string();
                let _ = m.topology_edges.remove_label_values(&[&label]);
                let _ = m.topology_changes.remove_label_values(&[&label]);
            }
            Ok(Json(Applied {
                changes: vec![format!("- environment {name}")],
                generation,
            }))
        }
        None => Err(no_env(&name)),
    }
}

/// A VNET primitive: changes one stored environment. `change` checks what it adds (as
/// [`Spec::parse`] would, naming the request's field) so the large spec is not parsed
/// again; the stored text is the operator's, with only the changed link and rule tables
/// edited (comments and layout kept), and parses back to the new spec (tested).
fn modify(
    api: &Api,
    name: &str,
    change: impl FnOnce(&mut Spec) -> Result<(), Reject>,
) -> Answer<Applied> {
    edit_stored(api, name, |text, cur| {
        let mut next = cur.clone();
        change(&mut next)?;
        // What the change did to the rest: e.g. a first explicit link ends the full mesh,
        // and rules over links it leaves out would no longer hold.
        if let Err((field, reason)) = next.check_rules() {
            return Err(reject(
                "hosts",
                format!("the change would leave {field} invalid: {reason}"),
            ));
        }
        let text = crate::spec::edit::edit(text, &next)
            .map_err(|e| Reject::internal(anyhow::anyhow!("the stored spec: {e}")))?;
        Ok((next, text))
    })
}

fn check_hosts(spec: &Spec, hosts: &[Name; 2]) -> Result<(String, String), Reject> {
    for (i, h) in hosts.iter().enumerate() {
        if !spec.hosts.contains_key(h.as_str()) {
            return Err(reject(
                &format!("hosts[{i}]"),
                format!(
                    "{:?} is not a host of environment {}",
                    h.as_str(),
                    spec.name
                ),
            ));
        }
    }
    if hosts[0] == hosts[1] {
        return Err(reject("hosts", "a link joins two hosts"));
    }
    if let Some(p) = spec
        .proxy()
        .filter(|p| hosts.iter().any(|h| h.as_str() == *p))
    {
        return Err(reject(
            "hosts",
            format!("the star through adapt.proxy {p} holds this link as long as [adapt] does"),
        ));
    }
    Ok(ordered(&hosts[0], &hosts[1]))
}

/// Add an overlay link (UDP) between two hosts of the environment.
#[utoipa::path(post, path = "/v1/environments/{name}/links", tag = "primitives",
    params(("name" = String, Path, description = "Environment name")),
    request_body = LinkRequest,
    responses((status = 200, description = "Added; wait for the generation", body = Applied),
              (status = 400, description = "Refused (field named)", body = ErrorBody),
              (status = 404, description = "No such environment", body = ErrorBody),
              (status = 409, description = "It exists already", body = ErrorBody)))]
async fn add_link(
    State(api): State<Api>,
    Path(name): Path<String>,
    body: Bytes,
) -> Answer<Applied> {
    let req: LinkRequest = from_json(&body)?;
    if req.kind.as_deref().is_some_and(|k| k != "udp") {
        return Err(reject("type", "overlay links are UDP (VXLAN)"));
    }
    modify(&api, &name, |spec| {
        let pair = check_hosts(spec, &req.hosts)?;
        if !spec.links.insert(pair) {
            return Err(Reject {
                status: StatusCode::CONFLICT,
                ..reject("hosts", "this link exists already")
            });
        }
        Ok(())
    })
}

/// Delete an overlay link.
#[utoipa::path(delete, path = "/v1/environments/{name}/links/{a}/{b}", tag = "primitives",
    params(("name" = String, Path, description = "Environment name"),
           ("a" = String, Path, description = "One host"),
           ("b" = String, Path, description = "The other host")),
    responses((status = 200, description = "Deleted; wait for the generation", body = Applied),
              (status = 400, description = "Refused (field named)", body = ErrorBody),
              (status = 404, description = "No such environment or link", body = ErrorBody)))]
async fn delete_link(
    State(api): State<Api>,
    Path((name, a, b)): Path<(String, String, String)>,
) -> Answer<Applied> {
    let hosts = [
        Name::parse(&a).map_err(|e| reject("hosts[0]", e))?,
        Name::parse(&b).map_err(|e| reject("hosts[1]", e))?,
    ];
    modify(&api, &name, |spec| {
        let pair = check_hosts(spec, &hosts)?;
        if spec.rules.iter().any(|r| match &r.target {
            Target::Edge(to) => ordered(&r.host, to) == pair,
            Target::Interface(_) => false,
        }) {
            return Err(reject(
                "hosts",
                "forwarding rules still use this link; delete them first",
            ));
        }
        if !spec.links.remove(&pair) {
            return Err(Reject::not_found(format!("no link {}-{}", pair.0, pair.1)));
        }
        Ok(())
    })
}

/// The host a rule request names, checked against the environment.
fn rule_host(spec: &Spec, req: &RuleRequest) -> Result<String, Reject> {
    if !spec.hosts.contains_key(req.host.as_str()) {
        return Err(reject(
            "host",
            format!(
                "{:?} is not a host of environment {}",
                req.host.as_str(),
                spec.name
            ),
        ));
    }
    Ok(req.host.to_string())
}

/// The rule a request adds: exactly one of edge and interface.
fn rule_of(spec: &Spec, req: &RuleRequest) -> Result<Rule, Reject> {
    let host = rule_host(spec, req)?;
    let target = match (&req.edge, &req.interface) {
        (Some(h), None) => Target::Edge(h.to_string()),
        (None, Some(p)) => Target::Interface(p.clone()),
        _ => {
            return Err(reject(
                "edge",
                "give exactly one of edge (a host) or interface (a VM port)",
            ))
        }
    };
    Ok(Rule {
        host,
        src: req.src.0,
        dst: req.dst.0,
        target,
    })
}

/// Add a forwarding rule to a host's table.
#[utoipa::path(post, path = "/v1/environments/{name}/rules", tag = "primitives",
    params(("name" = String, Path, description = "Environment name")),
    request_body = RuleRequest,
    responses((status = 200, description = "Added; wait for the generation", body = Applied),
              (status = 400, description = "Refused (field named)", body = ErrorBody),
              (status = 404, description = "No such environment", body = ErrorBody),
              (status = 409, description = "It exists already", body = ErrorBody)))]
async fn add_rule(
    State(api): State<Api>,
    Path(name): Path<String>,
    body: Bytes,
) -> Answer<Applied> {
    let req: RuleRequest = from_json(&body)?;
    modify(&api, &name, |spec| {
        let rule = rule_of(spec, &req)?;
        if let Some(reason) = duplicate_rule(&spec.rules, &rule) {
            return Err(Reject {
                status: StatusCode::CONFLICT,
                ..reject("src", reason)
            });
        }
        spec.check_rule(&rule)
            .map_err(|(f, reason)| reject(f, reason))?;
        spec.rules.push(rule);
        Ok(())
    })
}

/// Delete a forwarding rule (by host, source and destination).
#[utoipa::path(delete, path = "/v1/environments/{name}/rules", tag = "primitives",
    params(("name" = String, Path, description = "Environment name")),
    request_body = RuleRequest,
    responses((status = 200, description = "Deleted; wait for the generation", body = Applied),
              (status = 400, description = "Refused (field named)", body = ErrorBody),
              (status = 404, description = "No such environment or rule", body = ErrorBody)))]
async fn delete_rule(
    State(api): State<Api>,
    Path(name): Path<String>,
    body: Bytes,
) -> Answer<Applied> {
    let req: RuleRequest = from_json(&body)?;
    modify(&api, &name, |spec| {
        // Deleting matches on host, source and destination only.
        let host = rule_host(spec, &req)?;
        let (src, dst) = (req.src.0, req.dst.0);
        let before = spec.rules.len();
        spec.rules
            .retain(|r| !(r.host == host && r.src == src && r.dst == dst));
        if spec.rules.len() == before {
            return Err(Reject::not_found("no such rule"));
        }
        Ok(())
    })
}

fn rule_info(env: &Spec, r: &Rule) -> RuleInfo {
    let p = dataplane_common::rules::priority(&r.src, &r.dst);
    let (edge, interface) = match &r.target {
        Target::Edge(h) => (Some(h.clone()), None),
        Target::Interface(p) => (None, Some(p.clone())),
    };
    let vm = |m: &MacMatch| match m {
        MacMatch::Exact(a) | MacMatch::Not(a) => env.vm_by_mac(a).map(str::to_string),
        _ => None,
    };
    RuleInfo {
        environment: env.name.to_string(),
        host: r.host.clone(),
        src: violin_api::SrcMatch(r.src),
        dst: violin_api::DstMatch(r.dst),
        src_vm: vm(&r.src),
        dst_vm: vm(&r.dst),
        edge,
        interface,
        priority: [p.0 as u8, p.1, p.2],
        default: matches!(r.dst, MacMatch::None),
    }
}

/// Links of an environment: its explicit ones (with VADAPT's star), or the full mesh
/// among its hosts.
fn env_links(env: &Spec) -> Vec<LinkInfo> {
    let mut out = Vec::new();
    for a in env.serving_hosts() {
        for b in env.neighbours(&a) {
            if a < b {
                out.push(LinkInfo {
                    environment: env.name.to_string(),
                    vni: env.vni,
                    addresses: [env.hosts[&a], env.hosts[&b]],
                    kind: "udp".into(),
                    explicit: !env.links.is_empty() || env.adapt.is_some(),
                    role: match env.proxy() {
                        Some(p) if a == p || b == p => LinkRole::Star,
                        Some(_) => LinkRole::FastPath,
                        None if env.links.is_empty() => LinkRole::Mesh,
                        None => LinkRole::Listed,
                    },
                    hosts: [a.clone(), b],
                });
            }
        }
    }
    out
}

fn selected(api: &Api, f: &Filter) -> Result<Vec<Spec>, Reject> {
    let specs = api.store.specs()?;
    if let Some(e) = &f.environment {
        if !specs.iter().any(|s| s.name == e.as_str()) {
            return Err(no_env(e));
        }
    }
    Ok(specs
        .into_iter()
        .filter(|s| f.environment.as_ref().is_none_or(|e| s.name == e.as_str()))
        .collect())
}

/// Overlay links (all, an environment's, or a host's).
#[utoipa::path(get, path = "/v1/links", tag = "primitives", params(Filter),
    responses((status = 200, description = "Links", body = [LinkInfo]),
              (status = 404, description = "No such environment", body = ErrorBody)))]
async fn links(State(api): State<Api>, Query(f): Query<Filter>) -> Answer<Vec<LinkInfo>> {
    let mut out = Vec::new();
    for s in &selected(&api, &f)? {
        out.extend(
            env_links(s)
                .into_iter()
                .filter(|l| f.host.as_ref().is_none_or(|h| l.hosts.contains(h))),
        );
    }
    Ok(Json(out))
}

/// Forwarding rules (all, an environment's, or a host's).
#[utoipa::path(get, path = "/v1/rules", tag = "primitives", params(Filter),
    responses((status = 200, description = "Rules", body = [RuleInfo]),
              (status = 404, description = "No such environment", body = ErrorBody)))]
async fn rules(State(api): State<Api>, Query(f): Query<Filter>) -> Answer<Vec<RuleInfo>> {
    let mut out = Vec::new();
    for s in &selected(&api, &f)? {
        out.extend(
            s.rules
                .iter()
                .filter(|r| f.host.as_ref().is_none_or(|h| &r.host == h))
                .map(|r| rule_info(s, r)),
        );
    }
    Ok(Json(out))
}

/// The path a frame takes from one VM to another, host by host.
#[utoipa::path(get, path = "/v1/route", tag = "primitives", params(RouteQuery),
    responses((status = 200, description = "The route", body = Route),
              (status = 400, description = "Refused (field named)", body = ErrorBody)))]
async fn route_of(State(api): State<Api>, Query(q): Query<RouteQuery>) -> Answer<Route> {
    let specs = api.store.specs()?;
    route::between(&specs, q.environment.as_deref(), &q.src, &q.dst)
        .map(Json)
        .map_err(|(field, reason)| reject(field, reason))
}

fn bound_now(api: &Api) -> Bound {
    Bound {
        bound_seconds: api.bound().map(|d| d.as_secs_f64()),
        measured_seconds: api.hub.measured_bound().map(|d| d.as_secs_f64()),
    }
}

/// The configuration-time bound, as set and as measured.
#[utoipa::path(get, path = "/v1/config-time-bound", tag = "sync",
    responses((status = 200, description = "The bound", body = Bound)))]
async fn get_bound(State(api): State<Api>) -> Json<Bound> {
    Json(bound_now(&api))
}

/// Set the configuration-time bound.
#[utoipa::path(put, path = "/v1/config-time-bound", tag = "sync", request_body = BoundRequest,
    responses((status = 200, description = "The bound", body = Bound),
              (status = 400, description = "Refused (field named)", body = ErrorBody)))]
async fn set_bound(State(api): State<Api>, body: Bytes) -> Answer<Bound> {
    let req: BoundRequest = from_json(&body)?;
    if !(req.seconds > 0.0 && req.seconds <= 3600.0) {
        return Err(reject(
            "seconds",
            format!("{} is outside (0, 3600]", req.seconds),
        ));
    }
    api.store.set_bound_us((req.seconds * 1e6) as u64)?;
    Ok(Json(bound_now(&api)))
}

fn host_name(host: &str) -> Result<Name, Reject> {
    Name::parse(host).map_err(|e| reject("host", e))
}

/// A host (re)connects: records its address, API and interfaces.
#[utoipa::path(post, path = "/v1/hosts/{host}/register", tag = "sync",
    params(("host" = String, Path, description = "The host's id")),
    request_body = Registration,
    responses((status = 200, description = "Registered", body = Registered),
              (status = 400, description = "Refused (field named)", body = ErrorBody)))]
async fn register(
    State(api): State<Api>,
    Path(host): Path<String>,
    body: Bytes,
) -> Answer<Registered> {
    let host = host_name(&host)?;
    let req: Registration = from_json(&body)?;
    if let Some(c) = req.cpus.filter(|c| !(c.is_finite() && *c > 0.0)) {
        return Err(reject(
            "cpus",
            format!("{c} is not a positive number of cores"),
        ));
    }
    if req.memory_mib == Some(0) {
        return Err(reject("memory_mib", "must be at least 1"));
    }
    if let Some(d) = req
        .domain
        .as_deref()
        .filter(|d| d.is_empty() || d.len() > 63)
    {
        return Err(reject(
            "domain",
            format!("{d:?} must be 1 to 63 characters"),
        ));
    }
    api.store.put_host(&host, &req)?;
    api.hub
        .metrics
        .registered
        .set(api.store.hosts()?.len() as i64);
    Ok(Json(Registered {
        host,
        generation: api.hub.generation(),
    }))
}

/// The host's sync stream: newline-delimited `SyncEvent`s (a snapshot, then deltas and
/// heartbeats).
#[utoipa::path(get, path = "/v1/hosts/{host}/sync", tag = "sync",
    params(("host" = String, Path, description = "The host's id")),
    responses((status = 200, description = "One SyncEvent per line", body = violin_api::share::SyncEvent,
               content_type = "application/x-ndjson"),
              (status = 400, description = "Refused (field named)", body = ErrorBody)))]
async fn sync_stream(
    State(api): State<Api>,
    Extension(who): Extension<Identity>,
    Path(host): Path<String>,
) -> Response {
    if let Err(r) = host_name(&host) {
        return r.into_response();
    }
    let body = Body::from_stream(hub::stream(
        api.hub.clone(),
        api.store.clone(),
        host,
        who.credential,
    ));
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

/// A host applied a generation (or could not).
#[utoipa::path(post, path = "/v1/hosts/{host}/ack", tag = "sync",
    params(("host" = String, Path, description = "The host's id")),
    request_body = Ack,
    responses((status = 200, description = "Recorded", body = Ack),
              (status = 400, description = "Refused (field named)", body = ErrorBody)))]
async fn ack(State(api): State<Api>, Path(host): Path<String>, body: Bytes) -> Answer<Ack> {
    let host = host_name(&host)?;
    let req: Ack = from_json(&body)?;
    if req.generation > api.hub.generation() {
        return Err(reject(
            "generation",
            format!("{} is ahead of the controller", req.generation),
        ));
    }
    api.hub
        .ack(&host, req.generation, req.error.clone(), api.bound());
    Ok(Json(req))
}

/// Which registered hosts have applied a generation (default: the current one); with
/// `wait`, answers once none is pending or the time is up.
#[utoipa::path(get, path = "/v1/sync", tag = "sync", params(SyncQuery),
    responses((status = 200, description = "Sync state", body = SyncStatus),
              (status = 400, description = "Refused (field named)", body = ErrorBody)))]
async fn sync_status(State(api): State<Api>, Query(q): Query<SyncQuery>) -> Answer<SyncStatus> {
    let want = q.generation.unwrap_or_else(|| api.hub.generation());
    let wait = match q.wait {
        None => Duration::ZERO,
        Some(w) if (0.0..=30.0).contains(&w) => Duration::from_secs_f64(w),
        Some(w) => return Err(reject("wait", format!("{w} is outside [0, 30]"))),
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut acks = api.hub.watch_acks();
    loop {
        // Subscribed before reading, so an acknowledgement in between still wakes us.
        acks.borrow_and_update();
        let status = sync_state(&api, want)?;
        if status.pending.is_empty()
            || tokio::time::timeout_at(deadline, acks.changed())
                .await
                .is_err()
        {
            return Ok(Json(status));
        }
    }
}

fn sync_state(api: &Api, want: u64) -> Result<SyncStatus, Reject> {
    let live = api.hub.hosts();
    let mut hosts = Vec::new();
    let mut pending = Vec::new();
    for (name, _) in api.store.hosts()? {
        let s = live.get(&name).cloned().unwrap_or_default();
        if s.acked < want {
            pending.push(name.clone());
        }
        hosts.push(HostSync {
            name,
            connected: s.streams > 0,
            acked: s.acked,
            latency_seconds: s.last_latency.map(|d| d.as_secs_f64()),
            error: s.last_error,
        });
    }
    Ok(SyncStatus {
        generation: want,
        current: api.hub.generation(),
        hosts,
        pending,
    })
}

/// The interfaces a host reported when it registered.
#[utoipa::path(get, path = "/v1/hosts/{host}/interfaces", tag = "sync",
    params(("host" = String, Path, description = "The host's id")),
    responses((status = 200, description = "Interfaces", body = [Interface]),
              (status = 404, description = "The host has not registered", body = ErrorBody)))]
async fn host_interfaces(
    State(api): State<Api>,
    Path(host): Path<String>,
) -> Answer<Vec<Interface>> {
    match api.store.hosts()?.into_iter().find(|(n, _)| n == &host) {
        Some((_, report)) => Ok(Json(report.map(|r| r.interfaces).unwrap_or_default())),
        None => Err(Reject::not_found(format!(
            "host {host:?} has not registered"
        ))),
    }
}

/// The controller's Prometheus metrics (open: no token).
#[utoipa::path(get, path = "/metrics", tag = "metrics", security(()),
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
async fn metrics(State(api): State<Api>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        api.hub.metrics.render(),
    )
        .into_response()
}

async fn count(State(api): State<Api>, req: Request, next: Next) -> Response {
    let method = req.method().to_string();
    let resp = next.run(req).await;
    api.hub
        .metrics
        .requests
        .with_label_values(&[method.as_str(), resp.status().as_str()])
        .inc();
    resp
}

fn blank_host(name: &str) -> HostInfo {
    HostInfo {
        name: name.to_string(),
        address: None,
        api: None,
        environments: Vec::new(),
        vms: 0,
        registered: false,
        connected: false,
        acked_generation: 0,
        in_sync: false,
        sync_latency_seconds: None,
        error: None,
    }
}

/// Hosts named by any environment or registered, with what runs on them and how far
/// their sync has come.
#[utoipa::path(get, path = "/v1/hosts", tag = "sync",
    responses((status = 200, description = "Hosts", body = [HostInfo])))]
async fn hosts(State(api): State<Api>) -> Answer<Vec<HostInfo>> {
    Ok(Json(host_list(&api)?))
}

fn host_list(api: &Api) -> Result<Vec<HostInfo>, Reject> {
    let envs = api.store.specs()?;
    let registered = api.store.hosts()?;
    let live = api.hub.hosts();
    let generation = api.hub.generation();
    let mut hosts: BTreeMap<String, HostInfo> = BTreeMap::new();
    for spec in &envs {
        let serving = spec.serving_hosts();
        for (h, addr) in &spec.hosts {
            let entry = hosts.entry(h.clone()).or_insert_with(|| blank_host(h));
            entry.address = Some(addr.to_string());
            if serving.contains(h) {
                entry.environments.push(spec.name.to_string());
            }
            entry.vms += spec.vms.values().filter(|v| &v.host == h).count() as u64;
        }
    }
    for (h, report) in &registered {
        let entry = hosts.entry(h.clone()).or_insert_with(|| blank_host(h));
        entry.registered = true;
        if let Some(r) = report {
            entry.address = Some(r.address.to_string());
            entry.api = r.api.clone();
        }
    }
    for (h, entry) in hosts.iter_mut() {
        let s = live.get(h).cloned().unwrap_or_default();
        entry.connected = s.streams > 0;
        entry.acked_generation = s.acked;
        entry.in_sync = s.acked == generation && s.streams > 0;
        entry.sync_latency_seconds = s.last_latency.map(|d| d.as_secs_f64());
        entry.error = s.last_error;
    }
    Ok(hosts.into_values().collect())
}

impl From<Refusal> for Reject {
    fn from(r: Refusal) -> Reject {
        Reject {
            status: if r.conflict {
                StatusCode::CONFLICT
            } else {
                StatusCode::BAD_REQUEST
            },
            body: ErrorBody {
                error: format!("{}: {}", r.field, r.reason),
                field: Some(r.field),
                line: None,
            },
        }
    }
}

/// A host's domains and their lifecycle events (from its `violind`): a destination's
/// "resumed" switches a migration over.
#[utoipa::path(post, path = "/v1/hosts/{host}/vms", tag = "vms",
    params(("host" = String, Path, description = "The host's id")),
    request_body = VmReport,
    responses((status = 200, description = "Recorded", body = Object),
              (status = 400, description = "Refused (field named)", body = ErrorBody)))]
async fn report_vms(
    State(api): State<Api>,
    Path(host): Path<String>,
    body: Bytes,
) -> Answer<serde_json::Value> {
    let host = host_name(&host)?;
    let report: VmReport = from_json(&body)?;
    if let Some(vms) = &report.vms {
        api.autonomic.usage.record(&host, vms);
    }
    api.migrations.report(&host, report);
    Ok(Json(serde_json::json!({})))
}

/// What a host's VMs sent each other since its previous report (VTTIF's input).
#[utoipa::path(post, path = "/v1/hosts/{host}/traffic", tag = "hosts",
    params(("host" = String, Path, description = "Host name")),
    request_body = TrafficReport,
    responses((status = 200, description = "Taken"),
              (status = 400, description = "Refused (field named)", body = ErrorBody)))]
async fn report_traffic(
    State(api): State<Api>,
    Path(host): Path<String>,
    body: Bytes,
) -> Answer<serde_json::Value> {
    let host = host_name(&host)?;
    let mut report: TrafficReport = from_json(&body)?;
    // A host counts what its own VMs send (a migrating VM's on either side of the move):
    // a pair from another host's VM, or of an environment that does not exist, is not
    // its to report, and is refused (counted) rather than fed to the inference.
    let specs = api.store.specs()?;
    let moving = api.store.in_flight();
    let mut senders: std::collections::BTreeSet<(u32, [u8; 6])> = Default::default();
    for spec in &specs {
        for (n, v) in &spec.vms {
            let moves_here = moving.iter().any(|m| {
                m.environment == spec.name.as_str()
                    && m.vm == *n
                    && (m.from == host.as_str() || m.to == host.as_str())
            });
            if v.host == host.as_str() || moves_here {
                senders.insert((spec.vni.get(), v.mac.octets()));
            }
        }
    }
    let before = report.pairs.len();
    report
        .pairs
        .retain(|p| senders.contains(&(p.vni.get(), p.src.octets())));
    let refused = before - report.pairs.len();
    if refused > 0 {
        tracing::debug!(host = %host, refused, "traffic pairs not sent by this host's VMs");
        api.hub
            .metrics
            .traffic_refused
            .with_label_values(&[host.as_str()])
            .inc_by(refused as u64);
    }
    let served: std::collections::BTreeSet<u32> = specs.iter().map(|s| s.vni.get()).collect();
    for seen in api.vttif.report(&report, &served) {
        topology_metrics(&api, &seen);
    }
    Ok(Json(serde_json::json!({})))
}

fn topology_metrics(api: &Api, seen: &vttif::Seen) {
    let m = &api.hub.metrics;
    let vni = seen.vni.to_string();
    m.topology_edges
        .with_label_values(&[&vni])
        .set(seen.edges as i64);
    m.topology_changes
        .with_label_values(&[&vni])
        .inc_by(seen.new_changes);
}

/// An environment's application topology as VTTIF infers it from the hosts' traffic:
/// the traffic matrix over the smoothing window, and the pairs above the detection
/// threshold (relative to the busiest), declared once they held for the settle time.
/// With `after=N`, it answers once the count of changes is no longer N (or `wait` passed):
/// the changes as they are published.
#[utoipa::path(get, path = "/v1/environments/{name}/topology", tag = "environments",
    params(("name" = String, Path, description = "Environment name"), TopologyQuery),
    responses((status = 200, description = "The inferred topology", body = AppTopology),
              (status = 400, description = "Refused (field named)", body = ErrorBody),
              (status = 404, description = "No such environment", body = ErrorBody)))]
async fn get_topology(
    State(api): State<Api>,
    Path(name): Path<String>,
    Query(q): Query<TopologyQuery>,
) -> Answer<AppTopology> {
    let wait = match q.wait {
        None => Duration::ZERO,
        Some(w) if (0.0..=60.0).contains(&w) => Duration::from_secs_f64(w),
        Some(w) => return Err(reject("wait", format!("{w} is outside [0, 60]"))),
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut declared = api.vttif.watch();
    loop {
        // Subscribed before looking, so a declaration in between still wakes us.
        declared.borrow_and_update();
        let t = topology_of(&api, &name)?;
        // A count past the current one is from before a restart or a re-creation: answer.
        if q.after.is_none_or(|a| t.changes != a) || tokio::time::Instant::now() >= deadline {
            return Ok(Json(t));
        }
        // A topology is declared when a report or a look updates it: look again now and
        // then, so that one whose traffic stopped is declared too.
        let next = deadline.min(tokio::time::Instant::now() + Duration::from_millis(250));
        let _ = tokio::time::timeout_at(next, declared.changed()).await;
    }
}

fn topology_of(api: &Api, name: &str) -> Result<AppTopology, Reject> {
    let name = name.to_string();
    let Some((_, spec)) = api.store.get(&name)? else {
        return Err(no_env(&name));
    };
    let (t, changes, seen) = api.vttif.topology(spec.vni.get());
    topology_metrics(api, &seen);
    let names: BTreeMap<[u8; 6], String> = spec
        .vms
        .iter()
        .map(|(n, v)| (v.mac.octets(), n.clone()))
        .collect();
    let name_of = |m: &[u8; 6]| {
        names
            .get(m)
            .cloned()
            .unwrap_or_else(|| crate::spec::format_mac(m))
    };
    let top = t.matrix.values().copied().fold(0.0, f64::max);
    let edge = |(p, bps): (&vttif::Pair, &f64)| TopologyEdge {
        src: name_of(&p.0),
        dst: name_of(&p.1),
        bytes_per_second: *bps,
        intensity: if top > 0.0 { bps / top } else { 0.0 },
    };
    let busiest_first = |mut v: Vec<TopologyEdge>| {
        v.sort_by(|a, b| b.bytes_per_second.total_cmp(&a.bytes_per_second));
        v
    };
    let p = api.vttif.params();
    Ok(AppTopology {
        environment: name,
        smoothing_ms: p.smoothing_ms,
        threshold: p.threshold,
        settle_ms: p.settle_ms,
        changes,
        edges: busiest_first(
            t.edges
                .keys()
                .filter_map(|k| t.matrix.get_key_value(k))
                .map(edge)
                .collect(),
        ),
        matrix: busiest_first(t.matrix.iter().map(edge).collect()),
    })
}

/// What a host measured to the other hosts over the underlay (its row of the host
/// matrix), replacing its previous row.
#[utoipa::path(post, path = "/v1/hosts/{host}/measurements", tag = "hosts",
    params(("host" = String, Path, description = "Host name")),
    request_body = HostMeasurements,
    responses((status = 200, description = "Taken"),
              (status = 400, description = "Refused (field named)", body = ErrorBody),
              (status = 404, description = "The host has not registered", body = ErrorBody)))]
async fn report_measurements(
    State(api): State<Api>,
    Path(host): Path<String>,
    body: Bytes,
) -> Answer<serde_json::Value> {
    let host = host_name(&host)?;
    let m: HostMeasurements = from_json(&body)?;
    let names = host_names(&api)?;
    if !names.values().any(|n| n == host.as_str()) {
        return Err(Reject::not_found(format!("host {host} has not registered")));
    }
    for gone in api.matrix.record(host.as_str(), &m) {
        let peer = names
            .get(&gone)
            .cloned()
            .unwrap_or_else(|| gone.to_string());
        let metrics = &api.hub.metrics;
        for g in [
            &metrics.host_rtt,
            &metrics.host_bandwidth,
            &metrics.host_passive,
        ] {
            let _ = g.remove_label_values(&[host.as_str(), peer.as_str()]);
        }
    }
    let metrics = &api.hub.metrics;
    for p in &m.peers {
        let peer = names
            .get(&p.address)
            .cloned()
            .unwrap_or_else(|| p.address.to_string());
        let labels = [host.as_str(), peer.as_str()];
        let set = |g: &prometheus::GaugeVec, v: Option<f64>| match v {
            Some(v) => g.with_label_values(&labels).set(v),
            None => {
                let _ = g.remove_label_values(&labels);
            }
        };
        set(&metrics.host_rtt, p.rtt_us.map(|us| us / 1e6));
        set(&metrics.host_bandwidth, p.bandwidth_bytes_per_second);
        set(&metrics.host_passive, p.passive_bytes_per_second);
    }
    Ok(Json(serde_json::json!({})))
}

/// Registered hosts by underlay address.
fn host_names(api: &Api) -> Result<BTreeMap<std::net::IpAddr, String>, Reject> {
    Ok(api
        .store
        .hosts()?
        .into_iter()
        .filter_map(|(name, r)| Some((r?.address, name)))
        .collect())
}

/// The host matrix: what each host last measured to each other (round trip, packet-train
/// bandwidth, the passive estimate from its own traffic) and how old that is.
#[utoipa::path(get, path = "/v1/measurements", tag = "hosts",
    responses((status = 200, description = "The matrix", body = [MeasuredPair])))]
async fn measurements(State(api): State<Api>) -> Answer<Vec<MeasuredPair>> {
    Ok(Json(api.matrix.pairs(&host_names(&api)?)))
}

/// The stored spec of an adapted environment; the error says when it is not one.
fn adapted(api: &Api, name: &str) -> Result<Spec, Reject> {
    let Some((_, spec)) = api.store.get(name)? else {
        return Err(no_env(name));
    };
    if spec.adapt.is_none() {
        return Err(reject(
            "adapt",
            format!("environment {name} has no [adapt] section: its overlay is the links it lists"),
        ));
    }
    Ok(spec)
}

/// What VADAPT would change in an adapted environment's overlay now: the host pairs the
/// inferred topology asks fast-path links for, busiest first, and the links to add or
/// remove, each with its reason.
#[utoipa::path(get, path = "/v1/environments/{name}/adapt", tag = "adaptation",
    params(("name" = String, Path, description = "Environment name")),
    responses((status = 200, description = "The plan", body = AdaptPlan),
              (status = 400, description = "Not an adapted environment", body = ErrorBody),
              (status = 404, description = "No such environment", body = ErrorBody)))]
async fn get_adapt(State(api): State<Api>, Path(name): Path<String>) -> Answer<AdaptPlan> {
    let spec = adapted(&api, &name)?;
    let topo = api.vttif.topology(spec.vni.get()).0;
    let d = decide(&api, spec, topo, &Default::default(), true)?;
    let mut plan =
        adapt::describe(&d.spec, &d.demands, d.steps).ok_or_else(|| reject("adapt", "gone"))?;
    (plan.moves, plan.mapping) = (d.moves, d.mapping);
    Ok(Json(plan))
}

/// Adapts an environment to its inferred topology now (the plan of `GET .../adapt`): its
/// fast-path links, then the live migrations of VADAPT's mapping; the answer is the
/// adaptation, whose measured effect fills in once every host applied it
/// (`GET /v1/adaptations`; the migrations: `GET /v1/migrations`).
#[utoipa::path(post, path = "/v1/environments/{name}/adapt", tag = "adaptation",
    params(("name" = String, Path, description = "Environment name")),
    responses((status = 200, description = "Made (no steps: the overlay fit already)", body = Adaptation),
              (status = 400, description = "Not an adapted environment", body = ErrorBody),
              (status = 404, description = "No such environment", body = ErrorBody),
              (status = 409, description = "Links to change while a migration in the environment is in flight (refused moves are in the answer's `refused`)", body = ErrorBody)))]
async fn post_adapt(State(api): State<Api>, Path(name): Path<String>) -> Answer<Adaptation> {
    let spec = adapted(&api, &name)?;
    let topo = api.vttif.topology(spec.vni.get()).0;
    let d = decide(&api, spec, topo, &Default::default(), true)?;
    adapt_now(&api, d, "manual").map(Json)
}

/// The adaptations made (newest last), each with its steps, their reasons and its
/// measured effect: reconfiguration time and the environment's traffic before and after.
#[utoipa::path(get, path = "/v1/adaptations", tag = "adaptation", params(Filter),
    responses((status = 200, description = "Adaptations", body = [Adaptation])))]
async fn list_adaptations(
    State(api): State<Api>,
    Query(f): Query<Filter>,
) -> Json<Vec<Adaptation>> {
    Json(api.adapter.log(f.environment.as_deref()))
}

/// What VADAPT decides for an adapted environment from its inferred topology `topo`: the
/// fast-path links to add or remove (keeping those in `held`), and, with `migrate`, the
/// live migrations of its mapping onto the measured host matrix.
pub struct Decision {
    pub spec: Spec,
    pub topo: vttif::Topology,
    pub demands: Vec<adapt::Demand>,
    pub steps: Vec<adapt::AdaptStep>,
    pub moves: Vec<VmMove>,
    /// Why the mapping moves these VMs, or none.
    pub mapping: String,
}

pub fn decide(
    api: &Api,
    spec: Spec,
    topo: vttif::Topology,
    held: &std::collections::BTreeSet<HostPair>,
    migrate: bool,
) -> Result<Decision, Reject> {
    let demands = adapt::demands(&spec, &topo);
    let steps = adapt::plan(&spec, &demands, held);
    let (moves, mapping) = if migrate {
        adapt::map_vms(&spec, &topo, &api.matrix.pairs(&host_names(api)?))
    } else {
        (
            Vec::new(),
            "automatic mode does not migrate (migrate = false)".into(),
        )
    };
    Ok(Decision {
        spec,
        topo,
        demands,
        steps,
        moves,
        mapping,
    })
}

/// Carries a decision out: the fast-path links first, then the live migrations (the spec
/// is not changed while a migration is in flight; the next adaptation fits the links to
/// the new places); logs and records the adaptation, and measures its effect.
pub fn adapt_now(api: &Api, d: Decision, trigger: &str) -> Result<Adaptation, Reject> {
    let decided = std::time::SystemTime::now();
    let Decision {
        spec,
        topo,
        steps,
        moves,
        ..
    } = d;
    let name = spec.name.as_str();
    let vni = spec.vni.get();
    let mut rec = Adaptation {
        id: 0,
        environment: name.to_string(),
        trigger: trigger.to_string(),
        at_unix_ms: decided
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
        steps: steps.clone(),
        changes: Vec::new(),
        moves: moves.clone(),
        migrations: Vec::new(),
        refused: Vec::new(),
        generation: None,
        reconfigure_ms: None,
        traffic_before: adapt::total(&topo),
        traffic_after: None,
    };
    if !steps.is_empty() {
        let applied = modify(api, name, |s| {
            adapt::apply_steps(s, &steps);
            Ok(())
        })?
        .0;
        rec.changes = applied.changes;
        rec.generation = Some(applied.generation);
        api.hub
            .metrics
            .adaptations
            .with_label_values(&[&vni.to_string(), trigger])
            .inc();
    }
    for s in &rec.steps {
        tracing::info!(
            environment = name,
            trigger,
            action = %s.action,
            link = %s.hosts.join("-"),
            reason = %s.reason,
            "adaptation"
        );
    }
    for m in &moves {
        let req = violin_api::vm::MigrationRequest {
            vm: Name::parse(&m.vm).ok(),
            environment: Name::parse(name).ok(),
            to: Name::parse(&m.to).into_iter().collect(),
            bandwidth_mib_s: None,
        };
        tracing::info!(environment = name, trigger, vm = %m.vm, from = %m.from, to = %m.to, reason = %m.reason, "adaptation: migrate");
        match api.migrations.start(req) {
            Ok(started) => rec.migrations.extend(started.iter().map(|s| s.id)),
            Err(r) => {
                tracing::warn!(environment = name, vm = %m.vm, reason = %r.reason, "adaptation: migration refused");
                rec.refused
                    .push(format!("{} to {}: {}: {}", m.vm, m.to, r.field, r.reason));
            }
        }
    }
    let rec = api.adapter.record(rec);
    if let Some(generation) = rec.generation {
        measure(api.clone(), &spec, rec.id, generation, decided);
    }
    Ok(rec)
}

/// Measures an adaptation's effect in the background: when every registered host of the
/// environment applied its generation, and the environment's traffic one VTTIF window
/// after that.
fn measure(api: Api, spec: &Spec, id: u64, generation: u64, decided: std::time::SystemTime) {
    let registered: std::collections::BTreeSet<String> = api
        .store
        .hosts()
        .map(|h| h.into_iter().map(|(n, _)| n).collect())
        .unwrap_or_default();
    let hosts: Vec<String> = spec
        .serving_hosts()
        .into_iter()
        .filter(|h| registered.contains(h))
        .collect();
    let vni = spec.vni.get();
    std::thread::spawn(move || {
        // No host to wait for: no reconfiguration to time.
        let deadline = if hosts.is_empty() {
            std::time::Instant::now()
        } else {
            std::time::Instant::now() + Duration::from_secs(10)
        };
        while std::time::Instant::now() < deadline {
            let live = api.hub.hosts();
            let at: Option<Vec<std::time::SystemTime>> = hosts
                .iter()
                .map(|h| live.get(h).and_then(|s| s.applied_at(generation)))
                .collect();
            if let Some(at) = at {
                let done = at.into_iter().max().unwrap_or(decided);
                let took = done.duration_since(decided).unwrap_or_default();
                api.hub
                    .metrics
                    .adapt_reconfigure
                    .observe(took.as_secs_f64());
                api.adapter
                    .update(id, |a| a.reconfigure_ms = Some(took.as_secs_f64() * 1e3));
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(api.vttif.params().smoothing_ms));
        let after = adapt::total(&api.vttif.topology(vni).0);
        api.adapter.update(id, |a| a.traffic_after = Some(after));
    });
}

/// Automatic mode: twice a second, every environment with `[adapt] auto = true` is fitted
/// to its inferred topology, with its hysteresis (at most one adaptation per `hold_ms`;
/// a fast-path link goes once unused for `hold_ms`).
pub fn run_auto(api: Api) {
    std::thread::spawn(move || loop {
        std::thread::sleep(Duration::from_millis(500));
        if !api.leadership.leading() {
            continue;
        }
        let Ok(specs) = api.store.specs() else {
            continue;
        };
        for spec in specs {
            let Some(a) = spec.adapt.as_ref().filter(|a| a.auto) else {
                continue;
            };
            // Its moves are under way: the next look sees them done.
            if api
                .store
                .in_flight()
                .iter()
                .any(|m| m.environment == spec.name.as_str())
            {
                continue;
            }
            let (name, hold_ms, migrate) = (spec.name.to_string(), a.hold_ms, a.migrate);
            let topo = api.vttif.topology(spec.vni.get()).0;
            let now = std::time::Instant::now();
            let demands = adapt::demands(&spec, &topo);
            let Some(held) = api.adapter.auto_held(&spec, &demands, hold_ms, now) else {
                continue;
            };
            let Ok(mut d) = decide(&api, spec, topo, &held, migrate) else {
                continue;
            };
            // Moves refused last time (e.g. VMs that are not libvirt domains) are not
            // tried again until the mapping asks for others.
            let refused_before = api
                .adapter
                .log(Some(&name))
                .into_iter()
                .rev()
                .find(|r| !r.moves.is_empty())
                .filter(|r| !r.refused.is_empty())
                .map(|r| r.moves);
            if refused_before.as_ref() == Some(&d.moves) {
                d.moves.clear();
            }
            if d.steps.is_empty() && d.moves.is_empty() {
                continue;
            }
            match adapt_now(&api, d, "auto") {
                Ok(_) => api.adapter.auto_done(&name, now),
                Err(e) => {
                    tracing::debug!(environment = %name, error = %e.body.error, "automatic adaptation waits")
                }
            }
        }
    });
}

/// What the adaptation manager would do now: every VM's predicted use, desired level
/// and CPU share, the environments it would move between domains and the VMs between
/// hosts, with its reasons. Nothing changes (a dry run).
#[utoipa::path(get, path = "/v1/manager", tag = "manager",
    responses((status = 200, description = "The decision", body = ManagerDecision)))]
async fn get_manager(State(api): State<Api>) -> Answer<ManagerDecision> {
    let (_, d) = autonomic::decide(&api)?;
    Ok(Json(d))
}

/// Decide and carry the decision out: CPU weights, caps and balloon targets go to the
/// hosts, moves to the migration supervisor (follow them in `/v1/migrations`).
#[utoipa::path(post, path = "/v1/manager", tag = "manager",
    responses((status = 200, description = "The decision and what came of it", body = ManagerRecord)))]
async fn post_manager(State(api): State<Api>) -> Answer<ManagerRecord> {
    let (snap, d) = autonomic::decide(&api)?;
    let shares = autonomic::resources(&snap, &d);
    Ok(Json(autonomic::carry_out(&api, d, shares, "manual")?))
}

/// The adaptation manager's decisions carried out, oldest first, with their reasons.
#[utoipa::path(get, path = "/v1/manager/log", tag = "manager",
    responses((status = 200, description = "Decisions", body = [ManagerRecord])))]
async fn manager_log(State(api): State<Api>) -> Json<Vec<ManagerRecord>> {
    Json(api.autonomic.log())
}

fn brokers_of(api: &Api) -> Result<Arc<Viocluster>, Reject> {
    api.viocluster.clone().ok_or_else(|| {
        Reject::not_found("VioCluster is not configured: start the controller with --brokers FILE")
    })
}

/// Whether the controller can do its job: its state database answers. Open to all, for
/// load balancers, systemd and probes.
#[utoipa::path(get, path = "/healthz", tag = "meta", security(()),
    responses((status = 200, description = "Serving", body = Health),
              (status = 503, description = "The state database does not answer", body = Health)))]
async fn health(State(api): State<Api>) -> Response {
    let (ok, health) = controller_health(&api);
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(health)).into_response()
}

/// This replica's health, and whether its store answers.
fn controller_health(api: &Api) -> (bool, Health) {
    let version = violin_api::build::describe();
    let replica = Some(ReplicaHealth {
        role: api.leadership.role().into(),
        leader: api.leadership.leader(),
        store: api.store.engine().into(),
    });
    // The store answers a read of its revision, or the replica cannot serve.
    match api.store.refresh().and_then(|_| api.store.generation()) {
        Ok(generation) => (
            true,
            Health {
                status: "ok".into(),
                generation,
                version,
                replica,
            },
        ),
        Err(e) => (
            false,
            Health {
                status: format!("the state store: {e:#}"),
                generation: 0,
                version,
                replica,
            },
        ),
    }
}

/// The whole installation on one screen: the controller and its store, the hosts and how
/// far their sync has come, the environments, what the datapaths dropped over the last
/// minute, how full their maps are, migrations under way, and what needs attention.
#[utoipa::path(get, path = "/v1/status", tag = "meta",
    responses((status = 200, description = "The installation", body = Status)))]
async fn status(State(api): State<Api>) -> Json<Status> {
    let (ok, controller) = controller_health(&api);
    let mut attention = Vec::new();
    if !ok {
        attention.push(format!(
            "the controller's {}: check the store (etcd: `etcdctl endpoint health`; redb: the --state file's disk)",
            controller.status
        ));
    }
    // With the store down these are empty; the line above says why.
    let hosts = host_list(&api).unwrap_or_default();
    let environments: Vec<EnvSummary> = api
        .store
        .specs()
        .map(|specs| specs.iter().map(summary).collect())
        .unwrap_or_default();
    for h in hosts.iter().filter(|h| !h.in_sync) {
        attention.push(format!(
            "host {} is {}: see `violinctl hosts`, and violind's log on {0} (`journalctl -u violind`)",
            h.name,
            h.sync_state()
        ));
    }
    let drops = api.health.drops();
    for d in drops
        .iter()
        .filter(|d| !health::BY_POLICY.contains(&d.reason.as_str()))
    {
        attention.push(format!(
            "host {} dropped {} frame{} ({}) in the last minute: `violind stats` on {0} counts them by port",
            d.host,
            d.frames,
            if d.frames == 1 { "" } else { "s" },
            d.reason
        ));
    }
    let maps = api.health.maps();
    for m in maps.iter().filter(|m| health::pressed(m)) {
        attention.push(format!(
            "host {}'s {} map is {} of {} full: spread the environments over more hosts",
            m.host, m.map, m.entries, m.capacity
        ));
    }
    let migrations = api
        .migrations
        .migrations()
        .into_iter()
        .filter(|m| !m.phase.finished())
        .collect();
    Json(Status {
        controller,
        hosts,
        environments,
        drops,
        maps,
        migrations,
        attention,
        window_seconds: health::WINDOW.as_secs(),
    })
}

/// What a host's datapath dropped (totals by reason) and how full its maps are.
#[utoipa::path(post, path = "/v1/hosts/{host}/health", tag = "hosts",
    params(("host" = String, Path, description = "Host name")),
    request_body = DatapathHealth,
    responses((status = 200, description = "Taken"),
              (status = 400, description = "Refused (field named)", body = ErrorBody)))]
async fn report_health(
    State(api): State<Api>,
    Path(host): Path<String>,
    body: Bytes,
) -> Answer<serde_json::Value> {
    let host = host_name(&host)?;
    let report: DatapathHealth = from_json(&body)?;
    api.health.record(host.as_str(), report);
    Ok(Json(serde_json::json!({})))
}

/// VioCluster: the standing loans and the latest brokering rounds, each with every
/// domain's demand, machines and need, the trades agreed and those carried out.
#[utoipa::path(get, path = "/v1/brokers", tag = "manager",
    responses((status = 200, description = "Loans and rounds", body = Brokers),
              (status = 404, description = "VioCluster is not configured", body = ErrorBody)))]
async fn get_brokers(State(api): State<Api>) -> Answer<Brokers> {
    let v = brokers_of(&api)?;
    Ok(Json(viocluster::status(&api, &v)?))
}

/// Run a brokering round now: the brokers read their schedulers and trade; lent machines
/// boot and join their borrowers' environments, reclaimed ones stop.
#[utoipa::path(post, path = "/v1/brokers/round", tag = "manager",
    responses((status = 200, description = "The round", body = BrokerRound),
              (status = 404, description = "VioCluster is not configured", body = ErrorBody)))]
async fn post_round(State(api): State<Api>) -> Answer<BrokerRound> {
    let v = brokers_of(&api)?;
    // Schedulers and provisioners take seconds to answer.
    let round = tokio::task::spawn_blocking(move || viocluster::round(&api, &v, "manual"))
        .await
        .map_err(|e| Reject::internal(e.into()))??;
    Ok(Json(round))
}

/// Every VM's use over time (CPU in cores, memory), as its host's libvirt reports it.
#[utoipa::path(get, path = "/v1/usage", tag = "manager",
    responses((status = 200, description = "Histories", body = [VmUsage])))]
async fn get_usage(State(api): State<Api>) -> Json<Vec<VmUsage>> {
    Json(autonomic::usage(&api))
}

/// Every VM the hosts report: state, CPU, memory, ports, and its environment.
#[utoipa::path(get, path = "/v1/vms", tag = "vms",
    responses((status = 200, description = "VMs", body = [VmInfo])))]
async fn vms(State(api): State<Api>) -> Json<Vec<VmInfo>> {
    Json(api.migrations.vms())
}

/// Live-migrate a VM to a host, or every VM of an environment to a list of hosts. The
/// answer comes once the migrations started; follow them by id.
#[utoipa::path(post, path = "/v1/migrations", tag = "vms",
    request_body = MigrationRequest,
    responses((status = 202, description = "Started", body = Migrations),
              (status = 400, description = "Refused (field named)", body = ErrorBody),
              (status = 409, description = "Refused by the current state (field named)", body = ErrorBody)))]
async fn start_migration(State(api): State<Api>, body: Bytes) -> Result<Response, Reject> {
    let req: MigrationRequest = from_json(&body)?;
    let migrations = api.migrations.start(req)?;
    Ok((StatusCode::ACCEPTED, Json(Migrations { migrations })).into_response())
}

/// Every recorded migration, oldest first.
#[utoipa::path(get, path = "/v1/migrations", tag = "vms",
    responses((status = 200, description = "Migrations", body = [Migration])))]
async fn list_migrations(State(api): State<Api>) -> Json<Vec<Migration>> {
    Json(api.migrations.migrations())
}

fn migration_id(id: &str) -> Result<u64, Reject> {
    id.parse()
        .map_err(|_| reject("id", format!("{id:?} is not a migration id")))
}

/// One migration, with its progress while it runs.
#[utoipa::path(get, path = "/v1/migrations/{id}", tag = "vms",
    params(("id" = u64, Path, description = "Migration id")),
    responses((status = 200, description = "The migration", body = Migration),
              (status = 404, description = "No such migration", body = ErrorBody)))]
async fn get_migration(State(api): State<Api>, Path(id): Path<String>) -> Answer<Migration> {
    let id = migration_id(&id)?;
    api.migrations
        .migration(id)
        .map(Json)
        .ok_or_else(|| Reject::not_found(format!("there is no migration {id}")))
}

/// Cancel a migration still copying: libvirt aborts it and everything is rolled back.
#[utoipa::path(delete, path = "/v1/migrations/{id}", tag = "vms",
    params(("id" = u64, Path, description = "Migration id")),
    responses((status = 200, description = "Cancelling", body = Migration),
              (status = 404, description = "No such migration", body = ErrorBody),
              (status = 409, description = "Already ended or switched over", body = ErrorBody)))]
async fn cancel_migration(State(api): State<Api>, Path(id): Path<String>) -> Answer<Migration> {
    let id = migration_id(&id)?;
    // Reaching the source's libvirt blocks: not on the runtime the sync streams share.
    let supervisor = api.migrations.clone();
    let cancelled = tokio::task::spawn_blocking(move || supervisor.cancel(id))
        .await
        .map_err(|e| Reject::internal(anyhow::anyhow!("cancelling: {e}")))?;
    cancelled.map(Json).map_err(|r| {
        if r.conflict {
            r.into()
        } else {
            Reject::not_found(r.reason)
        }
    })
}

/// This document (open: no token).
#[utoipa::path(get, path = "/openapi.json", tag = "metrics", security(()),
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
async fn openapi_json() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi::document())
}

pub fn router(api: Api) -> Router {
    Router::new()
        .route("/v1/environments", get(list))
        .route(
            "/v1/environments/{name}",
            get(get_env).put(put_env).delete(delete_env),
        )
        .route("/v1/environments/{name}/plan", post(plan_env))
        .route("/v1/environments/{name}/links", post(add_link))
        .route(
            "/v1/environments/{name}/links/{a}/{b}",
            axum::routing::delete(delete_link),
        )
        .route(
            "/v1/environments/{name}/rules",
            post(add_rule).delete(delete_rule),
        )
        .route("/v1/links", get(links))
        .route("/v1/rules", get(rules))
        .route("/v1/route", get(route_of))
        .route("/v1/config-time-bound", get(get_bound).put(set_bound))
        .route("/v1/sync", get(sync_status))
        .route("/v1/hosts", get(hosts))
        .route("/v1/hosts/{host}/register", post(register))
        .route("/v1/hosts/{host}/sync", get(sync_stream))
        .route("/v1/hosts/{host}/ack", post(ack))
        .route("/v1/hosts/{host}/interfaces", get(host_interfaces))
        .route("/v1/hosts/{host}/vms", post(report_vms))
        .route("/v1/hosts/{host}/traffic", post(report_traffic))
        .route("/v1/hosts/{host}/health", post(report_health))
        .route("/v1/status", get(status))
        .route("/v1/environments/{name}/topology", get(get_topology))
        .route(
            "/v1/environments/{name}/adapt",
            get(get_adapt).post(post_adapt),
        )
        .route("/v1/adaptations", get(list_adaptations))
        .route("/v1/hosts/{host}/measurements", post(report_measurements))
        .route("/v1/measurements", get(measurements))
        .route("/v1/vms", get(vms))
        .route("/v1/usage", get(get_usage))
        .route("/v1/manager", get(get_manager).post(post_manager))
        .route("/v1/manager/log", get(manager_log))
        .route(
            "/v1/credentials",
            post(create_credential).get(list_credentials),
        )
        .route(
            "/v1/credentials/{name}",
            axum::routing::delete(delete_credential),
        )
        .route("/v1/audit", get(get_audit))
        .route("/v1/brokers", get(get_brokers))
        .route("/v1/brokers/round", post(post_round))
        .route("/v1/migrations", post(start_migration).get(list_migrations))
        .route(
            "/v1/migrations/{id}",
            get(get_migration).delete(cancel_migration),
        )
        // Authenticated first: a follower sends on only requests it would take.
        .route_layer(middleware::from_fn_with_state(api.clone(), to_leader))
        .route_layer(middleware::from_fn_with_state(api.clone(), auth))
        .route("/metrics", get(metrics))
        .route("/healthz", get(health))
        .route("/openapi.json", get(openapi_json))
        .layer(middleware::from_fn_with_state(api.clone(), count))
        .with_state(api)
}
