//! violin-controller: the source of truth for Violin's environments.
use std::{net::SocketAddr, path::PathBuf, sync::Arc, time::Duration};

use anyhow::{bail, Context, Result};
use clap::Parser;
use controller::{api, store::Store};
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
    /// The state database (created if missing).
    #[arg(long, default_value = "/var/lib/violin/controller.redb")]
    state: PathBuf,
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
    let store = Arc::new(Store::open(&cli.state)?);
    let period = (cli.manager_period_s > 0).then(|| Duration::from_secs(cli.manager_period_s));
    let mut api = api::Api::new(store, token, params)?.with_manager(manager, period);
    if let Some(b) = brokers {
        api = api.with_brokers(b);
    }
    api::run_auto(api.clone());
    controller::autonomic::run(api.clone());
    controller::viocluster::run(api.clone());
    let hub = api.hub.clone();
    let app = api::router(api);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind(cli.listen)
            .await
            .with_context(|| format!("listen: cannot bind {}", cli.listen))?;
        // The bound address (port 0 picks one), for scripts and tests.
        println!("listening on {}", listener.local_addr()?);
        if let Err(e) = violin_api::systemd::notify("READY=1") {
            tracing::warn!(error = %e, "cannot notify systemd");
        }
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown(hub))
            .await?;
        tracing::info!("stopped");
        Ok(())
    })
}
