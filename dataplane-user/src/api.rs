//! violind's HTTP endpoint: `/metrics` for Prometheus and `/v1/stats` (JSON). It runs on
//! its own thread with a small tokio runtime; each request reads the pinned maps, so it
//! shares no state with the datapath threads.
use std::{net::SocketAddr, thread};

use anyhow::{Context, Result};
use axum::{
    extract::State,
    http::{header, StatusCode},
    response::{IntoResponse, Response},
    routing::get,
    Json, Router,
};
use tracing::{error, info};

use crate::{datapath::Maps, host::Paths, metrics, stats::Snapshot};

#[derive(Clone)]
struct Api {
    paths: Paths,
    underlay: String,
}

impl Api {
    fn snapshot(&self) -> Result<Snapshot> {
        let maps = Maps::open_pinned(&self.paths)?;
        Snapshot::read(&maps, &self.paths, &self.underlay)
    }
}

fn failure(e: anyhow::Error) -> Response {
    (StatusCode::INTERNAL_SERVER_ERROR, format!("{e:#}\n")).into_response()
}

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

async fn get_stats(State(api): State<Api>) -> Response {
    match api.snapshot() {
        Ok(s) => Json(s).into_response(),
        Err(e) => failure(e),
    }
}

/// Binds `listen` now (so a bad address fails the start) and serves on a new thread.
pub fn serve(listen: SocketAddr, paths: &Paths, underlay: &str) -> Result<()> {
    let std_listener = std::net::TcpListener::bind(listen)
        .with_context(|| format!("api_listen: cannot listen on {listen}"))?;
    std_listener.set_nonblocking(true)?;
    let api = Api {
        paths: paths.clone(),
        underlay: underlay.to_string(),
    };
    let app = Router::new()
        .route("/metrics", get(get_metrics))
        .route("/v1/stats", get(get_stats))
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
    info!(%listen, "serving /metrics and /v1/stats");
    Ok(())
}
