//! violind's HTTP endpoint: `/metrics` for Prometheus and `/v1/stats` (JSON). It runs on
//! its own thread with a small tokio runtime; each request reads the pinned maps, so it
//! shares no state with the datapath threads.
use std::{collections::BTreeSet, net::SocketAddr, thread, time::Duration};

use anyhow::{Context, Result};
use axum::{
    extract::{Query, State},
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use tracing::{error, info};
use violin_api::{
    observe::{FlowEvent, ObserveQuery},
    rest::{DaemonLink, DaemonLinks, DaemonRule, DaemonRules, ErrorBody, Health},
    share::{Interface, InterfaceRole, Share},
};

use crate::{datapath::Maps, follow, host::Paths, metrics, observe::Observers, stats};

#[derive(Clone)]
struct Api {
    paths: Paths,
    underlay: String,
    observers: Observers,
    /// Bearer token `/v1` requires; None leaves it open (logged at start).
    token: Option<String>,
}

async fn auth(
    State(api): State<Api>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let Some(token) = &api.token else {
        return next.run(req).await;
    };
    let ok = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|t| t == token);
    if !ok {
        let body = ErrorBody {
            error: "Authorization: a valid bearer token is required".into(),
            field: None,
            line: None,
        };
        return (StatusCode::UNAUTHORIZED, Json(body)).into_response();
    }
    next.run(req).await
}

impl Api {
    fn snapshot(&self) -> Result<violin_api::stats::Stats> {
        let maps = Maps::open_pinned(&self.paths)?;
        stats::read(&maps, &self.paths, &self.underlay)
    }
}

fn failure(e: anyhow::Error) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}\n")).into_response()
}

/// The datapath's counters for Prometheus (open: no token).
#[utoipa::path(get, path = "/metrics", tag = "metrics", security(()),
    responses((status = 200, description = "Prometheus text format", body = String, content_type = "text/plain")))]
async fn get_metrics(State(api): State<Api>) -> Response {
    match api.snapshot().and_then(|s| metrics::render(&s)) {
        Ok(text) => (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Err(e) => failure(e),
    }
}

/// Whether the daemon has a datapath (its maps are pinned), with the generation of the
/// share it last applied. Open to all, for systemd and probes.
#[utoipa::path(get, path = "/healthz", tag = "daemon", security(()),
    responses((status = 200, description = "Forwarding", body = Health),
              (status = 503, description = "No datapath", body = Health)))]
async fn get_health(State(api): State<Api>) -> Response {
    let generation = follow::load_cached(&api.paths.share()).map_or(0, |s| s.generation);
    let ok = crate::datapath::Datapath::has_pinned_state(&api.paths);
    let h = Health {
        status: if ok { "ok" } else { "no datapath pinned" }.into(),
        generation,
        version: violin_api::build::describe(),
        replica: None,
    };
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(h)).into_response()
}

/// Live events: every frame the datapath drops from now on, and one in `every` it
/// forwards from VM ports (each CPU bounded to `observe::RATE` drops and
/// `observe::SAMPLE_RATE` samples a second), named and
/// filtered, one JSON object per line, until the client goes; an empty line every 2 s
/// when nothing happens. Nobody observing, the programs describe nothing.
#[utoipa::path(get, path = "/v1/observe", tag = "datapath", params(ObserveQuery),
    responses((status = 200, description = "Events, one per line", body = FlowEvent, content_type = "application/x-ndjson")))]
async fn observe(State(api): State<Api>, Query(query): Query<ObserveQuery>) -> Response {
    // Batches of one drain each, about one a second: an observer may fall seconds behind
    // before it loses any.
    let (tx, rx) = tokio::sync::mpsc::channel::<Vec<FlowEvent>>(16);
    api.observers.attach(query, tx);
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        let line = match tokio::time::timeout(Duration::from_secs(2), rx.recv()).await {
            // One write for the batch: the client wakes once per drain.
            Ok(Some(batch)) => batch.iter().fold(String::new(), |mut out, e| {
                out += &serde_json::to_string(e).unwrap_or_default();
                out.push('\n');
                out
            }),
            Ok(None) => return None,
            // A line now and then: a client that went away is noticed when it fails.
            Err(_) => "\n".to_string(),
        };
        Some((Ok::<_, std::convert::Infallible>(line), rx))
    });
    (
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        axum::body::Body::from_stream(lines),
    )
        .into_response()
}

/// The datapath's counters, forwarding table and map contents.
#[utoipa::path(get, path = "/v1/stats", tag = "datapath",
    responses((status = 200, description = "The counters", body = violin_api::stats::Stats)))]
async fn get_stats(State(api): State<Api>) -> Response {
    match api.snapshot() {
        Ok(s) => Json(s).into_response(),
        Err(e) => failure(e),
    }
}

/// The interfaces of this host's namespace, as the controller lists them.
pub fn interfaces(underlay: &str, ports: &BTreeSet<String>) -> Vec<Interface> {
    let mut out = Vec::new();
    // SAFETY: if_nameindex returns null (handled) or an array ending in an entry whose
    // if_index is 0; the loop stops there, so `p` never reads past the end. Each if_name is
    // a NUL-terminated string owned by the array and is copied into a String before
    // if_freenameindex frees the array, exactly once, with no early return after the check.
    unsafe {
        let list = libc::if_nameindex();
        if list.is_null() {
            return out;
        }
        let mut p = list;
        while (*p).if_index != 0 {
            let name = std::ffi::CStr::from_ptr((*p).if_name)
                .to_string_lossy()
                .into_owned();
            let role = if name == underlay {
                InterfaceRole::Underlay
            } else if ports.contains(&name) {
                InterfaceRole::Port
            } else {
                InterfaceRole::Other
            };
            let dev = crate::netdev::NetDev::query(&name).ok();
            out.push(Interface {
                ifindex: (*p).if_index,
                role,
                mac: dev.as_ref().map(|d| crate::netdev::format_mac(&d.mac)),
                mtu: dev.as_ref().map(|d| d.mtu),
                name,
            });
            p = p.add(1);
        }
        libc::if_freenameindex(list);
    }
    out
}

fn served(api: &Api) -> Share {
    follow::load_cached(&api.paths.share()).unwrap_or_default()
}

/// VNET's "list the available network interfaces".
#[utoipa::path(get, path = "/v1/interfaces", tag = "datapath",
    responses((status = 200, description = "This host's interfaces", body = [Interface])))]
async fn get_interfaces(State(api): State<Api>) -> Response {
    let share = served(&api);
    let ports = share
        .environments
        .iter()
        .flat_map(|e| e.ports.iter().map(|p| p.to_string()))
        .collect();
    Json(interfaces(&api.underlay, &ports)).into_response()
}

/// VNET's "list all the links to and from a daemon": the peers and the environments
/// whose frames travel over each.
#[utoipa::path(get, path = "/v1/links", tag = "datapath",
    responses((status = 200, description = "Links to peers", body = DaemonLinks)))]
async fn get_links(State(api): State<Api>) -> Response {
    let share = served(&api);
    let links = share
        .peers
        .into_iter()
        .map(|p| DaemonLink {
            peer: p.address,
            kind: "udp".into(),
            vnis: p.vnis,
        })
        .collect();
    Json(DaemonLinks {
        generation: share.generation,
        links,
    })
    .into_response()
}

/// VNET's "list all the forwarding rules at a daemon".
#[utoipa::path(get, path = "/v1/rules", tag = "datapath",
    responses((status = 200, description = "Forwarding rules served", body = DaemonRules)))]
async fn get_rules(State(api): State<Api>) -> Response {
    let share = served(&api);
    let rules = share
        .environments
        .iter()
        .flat_map(|e| {
            e.rules.iter().map(move |r| DaemonRule {
                environment: e.name.clone(),
                vni: e.vni,
                rule: r.clone(),
            })
        })
        .collect();
    Json(DaemonRules {
        generation: share.generation,
        rules,
    })
    .into_response()
}

/// This document (open: no token).
#[utoipa::path(get, path = "/openapi.json", tag = "metrics", security(()),
    responses((status = 200, description = "The OpenAPI document", body = Object)))]
async fn get_openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(openapi::document())
}

mod openapi {
    use utoipa::OpenApi;
    use violin_api::{openapi::Bearer, rest::ErrorBody};

    use super::*;

    #[derive(OpenApi)]
    #[openapi(
        info(title = "violind API", version = "1",
             description = "A host's datapath: counters, interfaces, links and rules. /v1 needs `Authorization: Bearer TOKEN` when api_token_file (or the controller's token) is set."),
        paths(get_stats, get_interfaces, get_links, get_rules, observe, get_metrics, get_health, get_openapi),
        components(schemas(ErrorBody)),
        modifiers(&Bearer),
        security(("bearer" = []))
    )]
    struct ApiDoc;

    pub fn document() -> utoipa::openapi::OpenApi {
        ApiDoc::openapi()
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn openapi_file_is_the_generated_document() {
            violin_api::openapi::check_file(
                concat!(env!("CARGO_MANIFEST_DIR"), "/openapi.json"),
                &super::document(),
                "VIOLIN_WRITE_OPENAPI=1 cargo test -p dataplane-user openapi",
            );
        }
    }
}

/// Binds `listen` now (so a bad address fails the start) and serves on a new thread.
/// `/metrics` is open (Prometheus scrapes it); `/v1` needs `token` when one is given.
pub fn serve(
    listen: SocketAddr,
    paths: &Paths,
    underlay: &str,
    token: Option<String>,
    observers: Observers,
) -> Result<()> {
    let std_listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("api_listen: cannot listen on {listen}"))?;
    std_listener.set_nonblocking(true)?;
    if token.is_none() {
        tracing::warn!(%listen, "the /v1 API is not authenticated: set api_token_file");
    }
    let api = Api {
        paths: paths.clone(),
        underlay: underlay.to_string(),
        observers,
        token,
    };
    let app = Router::new()
        .route("/v1/stats", get(get_stats))
        .route("/v1/interfaces", get(get_interfaces))
        .route("/v1/links", get(get_links))
        .route("/v1/rules", get(get_rules))
        .route("/v1/observe", get(observe))
        .route_layer(axum::middleware::from_fn_with_state(api.clone(), auth))
        .route("/metrics", get(get_metrics))
        .route("/healthz", get(get_health))
        .route("/openapi.json", get(get_openapi))
        .with_state(api);
    thread::Builder::new().name("api".into()).spawn(move || {
        let rt = match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => return error!(error = %e, "api runtime"),
        };
        rt.block_on(async move {
            let listener = match tokio::net::TcpListener::from_std(std_listener) {
                Ok(l) => l,
                Err(e) => return error!(error = %e, "api listener"),
            };
            if let Err(e) = axum::serve(listener, app).await {
                error!(error = %e, "api server stopped");
            }
        });
    })?;
    info!(%listen, "serving /metrics and /v1 (stats, interfaces, links, rules)");
    Ok(())
}
