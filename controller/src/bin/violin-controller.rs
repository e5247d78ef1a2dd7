//! violin-controller: the source of truth for Violin's environments.
use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{bail, Context, Result};
use clap::Parser;
use controller::{api, etcd::Etcd, replica::Leadership, store::Store};
use violin_api::rest::ManagerParams;

#[derive(Parser)]
#[command(
    name = "violin-controller",
    about = "Violin's controller: environments across hosts"
)]
struct Cli {
    /// Address of the HTTP API.
    #[arg(long, default_value = "127.0.0.1:7800")]
    listen: SocketAddr,
    /// Where the state is kept: `redb`, an embedded database (`--state`), or `etcd`, an
    /// etcd cluster (`--etcd-endpoints`) shared by several controller replicas.
    #[arg(long, value_enum, default_value = "redb")]
    store: StoreKind,
    /// The embedded state database (created if missing).
    #[arg(long, default_value = "/var/lib/violin/controller.redb")]
    state: PathBuf,
    /// The etcd members' client URLs, comma-separated (with `--store etcd`).
    #[arg(long, value_name = "URLS")]
    etcd_endpoints: Option<String>,
    /// The key prefix of Violin's state in etcd (several installations may share one
    /// cluster under different prefixes).
    #[arg(long, default_value = "/violin/")]
    etcd_prefix: String,
    /// This replica's URL as clients reach it: followers send writes there while it
    /// leads (with `--store etcd`; default: `http://` and the bound address).
    #[arg(long, value_name = "URL")]
    advertise_url: Option<String>,
    /// The lead's lease: a replica that stops renewing it (crashed, cut off) loses the
    /// lead after this many seconds, and another takes over.
    #[arg(long, default_value_t = 5)]
    leader_ttl_s: u64,
    /// File holding the bearer token clients must present.
    #[arg(long)]
    token_file: PathBuf,
    /// VTTIF's smoothing window: the traffic matrix is aggregated over it, ms.
    #[arg(long, default_value_t = 2000)]
    vttif_smoothing_ms: u64,
    /// VTTIF's detection threshold: the fraction of the busiest pair's traffic a pair
    /// needs to be part of the topology, in (0, 1].
    #[arg(long, default_value_t = 0.1)]
    vttif_threshold: f64,
    /// How long a new inferred topology must hold before VTTIF declares it, ms (at most
    /// the window).
    #[arg(long, default_value_t = 500)]
    vttif_settle_ms: u64,
    /// The adaptation manager's automatic mode: decide every this many seconds (0: only
    /// on request, `violinctl adapt --apply`).
    #[arg(long, default_value_t = 0)]
    manager_period_s: u64,
    /// Samples the manager's moving average spans (equation 6.1).
    #[arg(long, default_value_t = ManagerParams::default().window)]
    manager_window: usize,
    /// Over-allocation below full use: VMs are kept 1/alpha used (equation 6.2).
    #[arg(long, default_value_t = ManagerParams::default().alpha)]
    manager_alpha: f64,
    /// Over-allocation of a fully used VM (equation 6.3).
    #[arg(long, default_value_t = ManagerParams::default().beta)]
    manager_beta: f64,
    /// A migration must improve the balance by at least this share of it.
    #[arg(long, default_value_t = ManagerParams::default().min_gain)]
    manager_min_gain: f64,
    /// Migrations per decision at most (0: the manager only sets CPU and memory).
    #[arg(long, default_value_t = ManagerParams::default().max_migrations)]
    manager_max_migrations: usize,
    /// VioCluster: the machine brokers' configuration (domains, their clusters' Slurm,
    /// policies, pools and the provisioner); without it no broker runs.
    #[arg(long, value_name = "FILE")]
    brokers: Option<PathBuf>,
}

#[derive(Clone, Copy, PartialEq, clap::ValueEnum)]
enum StoreKind {
    Redb,
    Etcd,
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("violin-controller: {e:#}");
        std::process::exit(1);
    }
}

/// The next delivery of `s`, or never when it could not be caught.
async fn wait(s: Option<&mut tokio::signal::unix::Signal>) {
    match s {
        Some(s) => {
            s.recv().await;
        }
        None => std::future::pending::<()>().await,
    }
}

/// Waits for SIGTERM or SIGINT, then ends the sync streams, so that the server stops
/// taking connections and finishes the requests under way (every change is already in
/// the database when it is answered).
async fn shutdown(hub: Arc<controller::hub::Hub>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).ok();
    let mut int = signal(SignalKind::interrupt()).ok();
    if term.is_none() {
        tracing::warn!("cannot catch SIGTERM: stopping ends requests under way");
    }
    tokio::select! {
        _ = wait(term.as_mut()) => {}
        _ = wait(int.as_mut()) => {}
    }
    tracing::info!("stopping: finishing the requests under way");
    let _ = violin_api::systemd::notify("STOPPING=1");
    hub.close();
}

fn run(cli: Cli) -> Result<()> {
    let token = std::fs::read_to_string(&cli.token_file)
        .with_context(|| format!("token_file: cannot read {}", cli.token_file.display()))?
        .trim()
        .to_string();
    if token.len() < 16 {
        bail!("token_file: the token must be at least 16 characters");
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let params = controller::vttif::Params {
        smoothing_ms: cli.vttif_smoothing_ms,
        threshold: cli.vttif_threshold,
        settle_ms: cli.vttif_settle_ms,
    };
    // The check names the parameter as the struct does; say it as the flag.
    params
        .check()
        .map_err(|e| anyhow::anyhow!("--vttif-{}", e.replacen('_', "-", 1)))?;
    let manager = ManagerParams {
        window: cli.manager_window,
        alpha: cli.manager_alpha,
        beta: cli.manager_beta,
        min_gain: cli.manager_min_gain,
        max_migrations: cli.manager_max_migrations,
        migrate: cli.manager_max_migrations > 0,
        ..ManagerParams::default()
    };
    manager
        .check()
        .map_err(|e| anyhow::anyhow!("--manager-{}", e.replacen('_', "-", 1)))?;
    let brokers = cli
        .brokers
        .as_deref()
        .map(controller::viocluster::Config::load)
        .transpose()
        .context("--brokers")?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(cli.listen))
        .with_context(|| format!("listen: cannot bind {}", cli.listen))?;
    let bound = listener.local_addr()?;
    let period = (cli.manager_period_s > 0).then(|| Duration::from_secs(cli.manager_period_s));
    let (mut api, etcd) = match cli.store {
        StoreKind::Redb => {
            let store = Arc::new(Store::open(&cli.state)?);
            (api::Api::new(store, token, params)?, None)
        }
        StoreKind::Etcd => {
            let endpoints = violin_api::client::urls(cli.etcd_endpoints.as_deref().unwrap_or(""));
            if endpoints.is_empty() {
                bail!("--etcd-endpoints: required with --store etcd (the members' client URLs, comma-separated)");
            }
            if cli.leader_ttl_s < 2 {
                bail!("--leader-ttl-s: must be at least 2");
            }
            let me = match cli.advertise_url.clone() {
                Some(u) if u.starts_with("http://") || u.starts_with("https://") => {
                    u.trim_end_matches('/').to_string()
                }
                Some(u) => bail!("--advertise-url: {u:?} is not an http(s) URL"),
                None if bound.ip().is_unspecified() => bail!(
                    "--advertise-url: required when listening on {bound}: the other replicas must name this one to clients"
                ),
                None => format!("http://{bound}"),
            };
            let etcd = Arc::new(Etcd::connect(&endpoints, &cli.etcd_prefix)?);
            let store = Arc::new(Store::on(Box::new(etcd.clone()))?);
            let leadership = Arc::new(Leadership::replica(me));
            let api = api::Api::replica(store, token, params, leadership)?;
            (api, Some(etcd))
        }
    };
    api = api.with_manager(manager, period);
    if let Some(b) = brokers {
        api = api.with_brokers(b);
    }
    if let Some(etcd) = &etcd {
        // Other replicas' writes reach this one's streams and reads within a moment.
        api.store.follow(Duration::from_millis(200));
        let leading = api.clone();
        controller::etcd::campaign(
            etcd,
            api.leadership.clone(),
            Duration::from_secs(cli.leader_ttl_s),
            move || {
                if let Err(e) = leading.lead() {
                    tracing::error!(
                        error = format!("{e:#}"),
                        "cannot take up the lead; stopping"
                    );
                    std::process::exit(1);
                }
            },
            |why| {
                // Its writes are fenced off already; a restart joins as a follower.
                tracing::error!(why, "this replica lost the lead; stopping");
                std::process::exit(75);
            },
        );
    }
    api::run_auto(api.clone());
    controller::autonomic::run(api.clone());
    controller::viocluster::run(api.clone());
    let hub = api.hub.clone();
    tracing::info!(
        store = api.store.engine(),
        role = api.leadership.role(),
        "serving"
    );
    let app = api::router(api);
    rt.block_on(async move {
        // The bound address (port 0 picks one), for scripts and tests.
        println!("listening on {bound}");
        if let Err(e) = violin_api::systemd::notify("READY=1") {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown(hub))
            .await?;
        tracing::info!("stopped");
        Ok::<_, anyhow::Error>(())
    })?;
    // Another replica takes over at once rather than when the lease runs out.
    if let Some(etcd) = etcd {
        etcd.resign();
    }
    Ok(())
}
