//! The controller's versioned HTTP/JSON API (`/v1`), authenticated with a bearer token.
//! A rejected request changes nothing and says why, naming the field.
use std::sync::Arc;

use axum::{
    body::Bytes,
    extract::{Path, Request, State},
    http::{header, StatusCode},
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
    Json, Router,
};
use serde_json::{json, Value};

use crate::{
    spec::{plan, Spec, SpecError},
    store::{PutError, Store},
};

#[derive(Clone)]
pub struct Api {
    pub store: Arc<Store>,
    pub token: Arc<String>,
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
    match api.store.put(&spec, &text) {
        Ok(()) => Json(json!({ "changes": list })).into_response(),
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
        Ok(true) => Json(json!({ "deleted": name })).into_response(),
        Ok(false) => error(StatusCode::NOT_FOUND, format!("no environment {name:?}")),
        Err(e) => internal(e),
    }
}

/// Hosts named by any environment, with what runs on them.
async fn hosts(State(api): State<Api>) -> Response {
    let envs = match api.store.environments() {
        Ok(e) => e,
        Err(e) => return internal(e),
    };
    let mut hosts: std::collections::BTreeMap<String, Value> = Default::default();
    for (_, spec) in &envs {
        for (h, addr) in &spec.hosts {
            let entry = hosts.entry(h.clone()).or_insert_with(
                || json!({ "name": h, "address": addr.to_string(), "environments": [], "vms": 0 }),
            );
            entry["environments"]
                .as_array_mut()
                .expect("array")
                .push(json!(spec.name));
            let n = spec.vms.values().filter(|v| &v.host == h).count() as u64;
            entry["vms"] = json!(entry["vms"].as_u64().unwrap_or(0) + n);
        }
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
        .route("/v1/hosts", get(hosts))
        .route_layer(middleware::from_fn_with_state(api.clone(), auth))
        .with_state(api)
}
