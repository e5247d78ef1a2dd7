//! The controller's versioned HTTP/JSON API (`/v1`), authenticated with a bearer token.
//! A rejected request changes nothing and says why, naming the field.
use std::{collections::BTreeMap, net::Ipv4Addr, sync::Arc, time::Duration};

use axum::{
    body::{Body, Bytes},
    extract::{Path, Query, Request, State},
    http::{header, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use dataplane_common::{packet::parse_mac, rules::MacMatch};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::{
    route,
    spec::{format_match, ordered_pair, plan, valid_name, Rule, Spec, SpecError, Target},
    store::{PutError, Store},
    sync::{self, Hub},
};

#[derive(Clone)]
pub struct Api {
    pub store: Arc<Store>,
    pub token: Arc<String>,
    pub hub: Arc<Hub>,
}

impl Api {
    pub fn new(store: Arc<Store>, token: String) -> anyhow::Result<Api> {
        let hub = Hub::new(store.generation()?);
        Ok(Api {
            store,
            token: Arc::new(token),
            hub,
        })
    }

    fn bound(&self) -> Option<Duration> {
        self.store
            .bound_us()
            .ok()
            .flatten()
            .map(Duration::from_micros)
    }
}

/// A 400 naming the request field at fault.
fn bad(field: &str, reason: impl Into<String>) -> Response {
    reject(field, reason).into_response()
}

/// A rejected request: its status, and the field at fault when there is one.
pub struct Reject {
    status: StatusCode,
    field: Option<String>,
    message: String,
}

impl Reject {
    fn status(status: StatusCode, message: impl Into<String>) -> Reject {
        Reject {
            status,
            field: None,
            message: message.into(),
        }
    }
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        let body = match self.field {
            Some(f) => json!({ "error": self.message, "field": f }),
            None => json!({ "error": self.message }),
        };
        (self.status, Json(body)).into_response()
    }
}

fn reject(field: &str, reason: impl Into<String>) -> Reject {
    Reject {
        status: StatusCode::BAD_REQUEST,
        field: Some(field.to_string()),
        message: format!("{field}: {}", reason.into()),
    }
}

/// Parses a JSON body; serde's message names the missing or mistyped field.
fn json_body<T: serde::de::DeserializeOwned>(body: &Bytes) -> Result<T, Reject> {
    serde_json::from_slice(body).map_err(|e| {
        let msg = e.to_string();
        let field = msg
            .split('`')
            .nth(1)
            .filter(|_| msg.contains("field"))
            .unwrap_or("body")
            .to_string();
        reject(&field, msg)
    })
}

fn error(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({ "error": msg.into() }))).into_response()
}

fn spec_error(e: SpecError) -> Response {
    let body = json!({ "error": e.to_string(), "field": e.field, "line": e.line });
    (StatusCode::BAD_REQUEST, Json(body)).into_response()
}

fn internal(e: anyhow::Error) -> Response {
    error(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}"))
}

async fn auth(State(api): State<Api>, req: Request, next: Next) -> Response {
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == api.token.as_str());
    if !ok {
        return error(
            StatusCode::UNAUTHORIZED,
            "Authorization: a valid bearer token is required",
        );
    }
    next.run(req).await
}

fn summary(spec: &Spec) -> Value {
    json!({
        "name": spec.name,
        "vni": spec.vni,
        "hosts": spec.hosts.keys().collect::<Vec<_>>(),
        "vms": spec.vms.len(),
        "restricted": !spec.allowed.is_empty(),
        "limits": spec.limits.len(),
        "links": spec.links.len(),
        "rules": spec.rules.len(),
    })
}

fn parse_body(name: &str, body: &Bytes) -> Result<(Spec, String), SpecError> {
    let text = std::str::from_utf8(body)
        .map_err(|_| SpecError {
            line: 0,
            field: "body".into(),
            reason: "the spec must be UTF-8 TOML".into(),
        })?
        .to_string();
    let spec = Spec::parse(&text)?;
    if spec.name != name {
        return Err(SpecError {
            line: 0,
            field: "environment.name".into(),
            reason: format!("{:?} does not match the URL's {name:?}", spec.name),
        });
    }
    Ok((spec, text))
}

async fn list(State(api): State<Api>) -> Response {
    match api.store.environments() {
        Ok(envs) => Json(envs.iter().map(|(_, s)| summary(s)).collect::<Vec<_>>()).into_response(),
        Err(e) => internal(e),
    }
}

async fn get_env(State(api): State<Api>, Path(name): Path<String>) -> Response {
    match api.store.get(&name) {
        Ok(Some((text, spec))) => {
            let mut v = summary(&spec);
            v["spec"] = json!(text);
            Json(v).into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no environment {name:?}")),
        Err(e) => internal(e),
    }
}

fn changes(current: Option<&Spec>, desired: &Spec) -> Vec<String> {
    plan(current, desired)
        .iter()
        .map(|c| c.to_string())
        .collect()
}

async fn plan_env(State(api): State<Api>, Path(name): Path<String>, body: Bytes) -> Response {
    let (spec, _) = match parse_body(&name, &body) {
        Ok(s) => s,
        Err(e) => return spec_error(e),
    };
    match api.store.get(&name) {
        Ok(cur) => {
            Json(json!({ "changes": changes(cur.as_ref().map(|c| &c.1), &spec) })).into_response()
        }
        Err(e) => internal(e),
    }
}

async fn put_env(State(api): State<Api>, Path(name): Path<String>, body: Bytes) -> Response {
    let (spec, text) = match parse_body(&name, &body) {
        Ok(s) => s,
        Err(e) => return spec_error(e),
    };
    let cur = match api.store.get(&name) {
        Ok(c) => c,
        Err(e) => return internal(e),
    };
    let list = changes(cur.as_ref().map(|c| &c.1), &spec);
    store_spec(&api, &spec, &text, list)
}

/// Stores a spec and tells the hosts; the response carries the generation to wait for.
fn store_spec(api: &Api, spec: &Spec, text: &str, list: Vec<String>) -> Response {
    match api.store.put(spec, text) {
        Ok(generation) => {
            api.hub.committed(generation);
            Json(json!({ "changes": list, "generation": generation })).into_response()
        }
        Err(PutError::VniTaken(other)) => spec_error(SpecError {
            line: 0,
            field: "environment.vni".into(),
            reason: format!("{} is already environment {other:?}'s", spec.vni),
        }),
        Err(PutError::Store(e)) => internal(e),
    }
}

async fn delete_env(State(api): State<Api>, Path(name): Path<String>) -> Response {
    match api.store.delete(&name) {
        Ok(Some(generation)) => {
            api.hub.committed(generation);
            Json(json!({ "deleted": name, "generation": generation })).into_response()
        }
        Ok(None) => error(StatusCode::NOT_FOUND, format!("no environment {name:?}")),
        Err(e) => internal(e),
    }
}

/// A VNET primitive: changes one stored environment. `change` checks what it adds (as
/// [`Spec::parse`] would, naming the request's field) so the large spec is not parsed
/// again; the stored text is its canonical rendering, which parses back to it (tested).
fn modify(api: &Api, name: &str, change: impl FnOnce(&mut Spec) -> Result<(), Reject>) -> Response {
    let cur = match api.store.get(name) {
        Ok(Some((_, spec))) => spec,
        Ok(None) => return error(StatusCode::NOT_FOUND, format!("no environment {name:?}")),
        Err(e) => return internal(e),
    };
    let mut next = cur.clone();
    if let Err(r) = change(&mut next) {
        return r.into_response();
    }
    // What the change did to the rest: e.g. a first explicit link ends the full mesh,
    // and rules over links it leaves out would no longer hold.
    if let Err((field, reason)) = next.check_rules() {
        return bad(
            "hosts",
            format!("the change would leave {field} invalid: {reason}"),
        );
    }
    let text = next.to_toml();
    let list = changes(Some(&cur), &next);
    store_spec(api, &next, &text, list)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LinkReq {
    hosts: [String; 2],
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

fn check_hosts(spec: &Spec, hosts: &[String; 2]) -> Result<(String, String), Reject> {
    for (i, h) in hosts.iter().enumerate() {
        if !spec.hosts.contains_key(h) {
            return Err(reject(
                &format!("hosts[{i}]"),
                format!("{h:?} is not a host of environment {}", spec.name),
            ));
        }
    }
    if hosts[0] == hosts[1] {
        return Err(reject("hosts", "a link joins two hosts"));
    }
    Ok(ordered_pair(&hosts[0], &hosts[1]))
}

async fn add_link(State(api): State<Api>, Path(name): Path<String>, body: Bytes) -> Response {
    let req: LinkReq = match json_body(&body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    if req.kind.as_deref().is_some_and(|k| k != "udp") {
        return bad("type", "overlay links are UDP (VXLAN)");
    }
    modify(&api, &name, |spec| {
        let pair = check_hosts(spec, &req.hosts)?;
        if !spec.links.insert(pair) {
            return Err(reject("hosts", "this link exists already"));
        }
        Ok(())
    })
}

async fn delete_link(
    State(api): State<Api>,
    Path((name, a, b)): Path<(String, String, String)>,
) -> Response {
    modify(&api, &name, |spec| {
        let pair = check_hosts(spec, &[a, b])?;
        if spec.rules.iter().any(|r| match &r.target {
            Target::Edge(to) => ordered_pair(&r.host, to) == pair,
            Target::Interface(_) => false,
        }) {
            return Err(reject(
                "hosts",
                "forwarding rules still use this link; delete them first",
            ));
        }
        if !spec.links.remove(&pair) {
            return Err(Reject::status(
                StatusCode::NOT_FOUND,
                format!("no link {}-{}", pair.0, pair.1),
            ));
        }
        Ok(())
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleReq {
    host: String,
    src: String,
    dst: String,
    #[serde(default)]
    edge: Option<String>,
    #[serde(default)]
    interface: Option<String>,
}

fn rule_of(spec: &Spec, req: &RuleReq, need_target: bool) -> Result<Rule, Reject> {
    if !spec.hosts.contains_key(&req.host) {
        return Err(reject(
            "host",
            format!("{:?} is not a host of environment {}", req.host, spec.name),
        ));
    }
    let src = MacMatch::parse(&req.src, false).ok_or_else(|| {
        reject(
            "src",
            format!("{:?} is not a MAC, \"not MAC\" or \"any\"", req.src),
        )
    })?;
    let dst = MacMatch::parse(&req.dst, true).ok_or_else(|| {
        reject(
            "dst",
            format!(
                "{:?} is not a MAC, \"not MAC\", \"any\" or \"none\"",
                req.dst
            ),
        )
    })?;
    let target = match (&req.edge, &req.interface) {
        (Some(h), None) => Target::Edge(h.clone()),
        (None, Some(p)) => Target::Interface(p.clone()),
        (None, None) if !need_target => Target::Interface(String::new()),
        _ => {
            return Err(reject(
                "edge",
                "give exactly one of edge (a host) or interface (a VM port)",
            ))
        }
    };
    Ok(Rule {
        host: req.host.clone(),
        src,
        dst,
        target,
    })
}

async fn add_rule(State(api): State<Api>, Path(name): Path<String>, body: Bytes) -> Response {
    let req: RuleReq = match json_body(&body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    modify(&api, &name, |spec| {
        let rule = rule_of(spec, &req, true)?;
        spec.check_rule(&rule)
            .map_err(|(f, reason)| reject(f, reason))?;
        spec.rules.push(rule);
        Ok(())
    })
}

async fn delete_rule(State(api): State<Api>, Path(name): Path<String>, body: Bytes) -> Response {
    let req: RuleReq = match json_body(&body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    modify(&api, &name, |spec| {
        let rule = rule_of(spec, &req, false)?;
        let before = spec.rules.len();
        spec.rules
            .retain(|r| !(r.host == rule.host && r.src == rule.src && r.dst == rule.dst));
        if spec.rules.len() == before {
            return Err(Reject::status(StatusCode::NOT_FOUND, "no such rule"));
        }
        Ok(())
    })
}

fn rule_json(env: &Spec, r: &Rule) -> Value {
    let (kind, to) = match &r.target {
        Target::Edge(h) => ("edge", h.clone()),
        Target::Interface(p) => ("interface", p.clone()),
    };
    let p = dataplane_common::rules::priority(&r.src, &r.dst);
    json!({
        "environment": env.name, "host": r.host, "src": format_match(&r.src),
        "dst": format_match(&r.dst), kind: to, "priority": [p.0 as u8, p.1, p.2],
        "default": matches!(r.dst, MacMatch::None),
    })
}

fn link_json(env: &Spec, a: &str, b: &str) -> Value {
    json!({
        "environment": env.name, "vni": env.vni, "hosts": [a, b], "type": "udp",
        "addresses": [env.hosts[a].to_string(), env.hosts[b].to_string()],
        "explicit": !env.links.is_empty(),
    })
}

/// Links of an environment: its explicit ones, or the full mesh among its hosts.
fn env_links(env: &Spec) -> Vec<Value> {
    let mut out = Vec::new();
    for h in env.serving_hosts() {
        for n in env.neighbours(&h) {
            if h < n {
                out.push(link_json(env, &h, &n));
            }
        }
    }
    out
}

#[derive(Deserialize)]
struct Filter {
    environment: Option<String>,
    host: Option<String>,
}

fn selected(api: &Api, f: &Filter) -> Result<Vec<Spec>, Reject> {
    let specs = api
        .store
        .specs()
        .map_err(|e| Reject::status(StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}")))?;
    if let Some(e) = &f.environment {
        if !specs.iter().any(|s| &s.name == e) {
            return Err(Reject::status(
                StatusCode::NOT_FOUND,
                format!("no environment {e:?}"),
            ));
        }
    }
    Ok(specs
        .into_iter()
        .filter(|s| f.environment.as_ref().is_none_or(|e| &s.name == e))
        .collect())
}

async fn links(State(api): State<Api>, Query(f): Query<Filter>) -> Response {
    let specs = match selected(&api, &f) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let mut out = Vec::new();
    for s in &specs {
        out.extend(env_links(s).into_iter().filter(|l| {
            f.host.as_ref().is_none_or(|h| {
                l["hosts"]
                    .as_array()
                    .is_some_and(|a| a.iter().any(|x| x == h))
            })
        }));
    }
    Json(out).into_response()
}

async fn rules(State(api): State<Api>, Query(f): Query<Filter>) -> Response {
    let specs = match selected(&api, &f) {
        Ok(s) => s,
        Err(r) => return r.into_response(),
    };
    let mut out = Vec::new();
    for s in &specs {
        for r in s
            .rules
            .iter()
            .filter(|r| f.host.as_ref().is_none_or(|h| &r.host == h))
        {
            out.push(rule_json(s, r));
        }
    }
    Json(out).into_response()
}

#[derive(Deserialize)]
struct RouteQuery {
    src: String,
    dst: String,
    environment: Option<String>,
}

async fn route_of(State(api): State<Api>, Query(q): Query<RouteQuery>) -> Response {
    let Some(src) = parse_mac(&q.src) else {
        return bad("src", format!("{:?} is not a MAC address", q.src));
    };
    let Some(dst) = parse_mac(&q.dst) else {
        return bad("dst", format!("{:?} is not a MAC address", q.dst));
    };
    let specs = match api.store.specs() {
        Ok(s) => s,
        Err(e) => return internal(e),
    };
    let spec = match route::find_env(&specs, q.environment.as_deref(), &src) {
        Ok(s) => s,
        Err((field, reason)) => return bad(field, reason),
    };
    match route::trace(spec, &src, &dst) {
        Ok(r) => Json(r).into_response(),
        Err(e) => bad("src", e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BoundReq {
    seconds: f64,
}

async fn get_bound(State(api): State<Api>) -> Response {
    Json(json!({
        "bound_seconds": api.bound().map(|d| d.as_secs_f64()),
        "measured_seconds": api.hub.measured_bound().map(|d| d.as_secs_f64()),
    }))
    .into_response()
}

async fn set_bound(State(api): State<Api>, body: Bytes) -> Response {
    let req: BoundReq = match json_body(&body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    if !(req.seconds > 0.0 && req.seconds <= 3600.0) {
        return bad("seconds", format!("{} is outside (0, 3600]", req.seconds));
    }
    match api.store.set_bound_us((req.seconds * 1e6) as u64) {
        Ok(()) => get_bound(State(api)).await,
        Err(e) => internal(e),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Registration {
    address: Ipv4Addr,
    #[serde(default)]
    api: Option<String>,
    #[serde(default)]
    interfaces: Vec<Value>,
}

fn check_host_name(host: &str) -> Result<(), Reject> {
    if valid_name(host) {
        Ok(())
    } else {
        Err(reject("host", format!("{host:?} is not a valid host name")))
    }
}

async fn register(State(api): State<Api>, Path(host): Path<String>, body: Bytes) -> Response {
    if let Err(r) = check_host_name(&host) {
        return r.into_response();
    }
    let req: Registration = match json_body(&body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    let report =
        json!({ "address": req.address.to_string(), "api": req.api, "interfaces": req.interfaces });
    match api.store.put_host(&host, &report) {
        Ok(()) => Json(json!({ "host": host, "generation": api.hub.generation() })).into_response(),
        Err(e) => internal(e),
    }
}

async fn sync_stream(State(api): State<Api>, Path(host): Path<String>) -> Response {
    if let Err(r) = check_host_name(&host) {
        return r.into_response();
    }
    let body = Body::from_stream(sync::stream(api.hub.clone(), api.store.clone(), host));
    ([(header::CONTENT_TYPE, "application/x-ndjson")], body).into_response()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Ack {
    generation: u64,
    #[serde(default)]
    error: Option<String>,
}

async fn ack(State(api): State<Api>, Path(host): Path<String>, body: Bytes) -> Response {
    let req: Ack = match json_body(&body) {
        Ok(r) => r,
        Err(r) => return r.into_response(),
    };
    if req.generation > api.hub.generation() {
        return bad(
            "generation",
            format!("{} is ahead of the controller", req.generation),
        );
    }
    api.hub.ack(&host, req.generation, req.error, api.bound());
    Json(json!({ "host": host, "generation": req.generation })).into_response()
}

#[derive(Deserialize)]
struct SyncQuery {
    generation: Option<u64>,
}

/// Which registered hosts have applied `generation` (default: the current one).
async fn sync_status(State(api): State<Api>, Query(q): Query<SyncQuery>) -> Response {
    let want = q.generation.unwrap_or_else(|| api.hub.generation());
    let registered = match api.store.hosts() {
        Ok(h) => h,
        Err(e) => return internal(e),
    };
    let live = api.hub.hosts();
    let mut hosts = Vec::new();
    let mut pending = Vec::new();
    for (name, _) in &registered {
        let s = live.get(name).cloned().unwrap_or_default();
        if s.acked < want {
            pending.push(name.clone());
        }
        hosts.push(json!({
            "name": name, "connected": s.streams > 0, "acked": s.acked,
            "latency_seconds": s.last_latency.map(|d| d.as_secs_f64()), "error": s.last_error,
        }));
    }
    Json(json!({ "generation": want, "current": api.hub.generation(), "hosts": hosts, "pending": pending }))
        .into_response()
}

async fn host_interfaces(State(api): State<Api>, Path(host): Path<String>) -> Response {
    match api.store.hosts() {
        Ok(hosts) => match hosts.into_iter().find(|(n, _)| n == &host) {
            Some((_, report)) => Json(report["interfaces"].clone()).into_response(),
            None => error(
                StatusCode::NOT_FOUND,
                format!("host {host:?} has not registered"),
            ),
        },
        Err(e) => internal(e),
    }
}

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

/// Hosts named by any environment or registered, with what runs on them and how far
/// their sync has come.
async fn hosts(State(api): State<Api>) -> Response {
    let (envs, registered) = match (api.store.specs(), api.store.hosts()) {
        (Ok(e), Ok(h)) => (e, h),
        (Err(e), _) | (_, Err(e)) => return internal(e),
    };
    let live = api.hub.hosts();
    let generation = api.hub.generation();
    let mut hosts: BTreeMap<String, Value> = BTreeMap::new();
    let blank = |h: &str| json!({ "name": h, "address": null, "environments": [], "vms": 0, "registered": false });
    for spec in &envs {
        let serving = spec.serving_hosts();
        for (h, addr) in &spec.hosts {
            let entry = hosts.entry(h.clone()).or_insert_with(|| blank(h));
            entry["address"] = json!(addr.to_string());
            if serving.contains(h) {
                entry["environments"]
                    .as_array_mut()
                    .expect("array")
                    .push(json!(spec.name));
            }
            let n = spec.vms.values().filter(|v| &v.host == h).count() as u64;
            entry["vms"] = json!(entry["vms"].as_u64().unwrap_or(0) + n);
        }
    }
    for (h, report) in &registered {
        let entry = hosts.entry(h.clone()).or_insert_with(|| blank(h));
        entry["registered"] = json!(true);
        entry["address"] = report["address"].clone();
    }
    for (h, entry) in hosts.iter_mut() {
        let s = live.get(h).cloned().unwrap_or_default();
        entry["connected"] = json!(s.streams > 0);
        entry["acked_generation"] = json!(s.acked);
        entry["in_sync"] = json!(s.acked == generation && s.streams > 0);
        entry["sync_latency_seconds"] = json!(s.last_latency.map(|d| d.as_secs_f64()));
        entry["error"] = json!(s.last_error);
    }
    Json(hosts.into_values().collect::<Vec<_>>()).into_response()
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
        .route_layer(middleware::from_fn_with_state(api.clone(), auth))
        .route("/metrics", get(metrics))
        .layer(middleware::from_fn_with_state(api.clone(), count))
        .with_state(api)
}
