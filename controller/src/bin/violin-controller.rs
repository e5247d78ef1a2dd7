//! violin-controller: the source of truth for Violin's environments.
use std::{net::SocketAddr, path::PathBuf, sync::Arc};

use anyhow::{bail, Context, Result};
use clap::Parser;
use controller::{api, store::Store};

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
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("violin-controller: {e:#}");
        std::process::exit(1);
    }
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
    let store = Arc::new(Store::open(&cli.state)?);
    let api = api::Api::new(store, token)?;
    api::run_auto(api.clone());
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
        axum::serve(listener, app).await?;
        Ok(())
    })
}
