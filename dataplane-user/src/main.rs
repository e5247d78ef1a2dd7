//! violind: Violin's per-host daemon.
mod api;
mod config;
mod daemon;
mod datapath;
mod follow;
mod health;
mod host;
mod libvirt;
mod measure;
mod metrics;
mod netdev;
mod netlink;
mod observe;
mod pair_counts;
mod slowpath;
mod stats;
mod topology;
mod traffic;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "violind",
    version,
    about = "Violin's per-host virtual switch daemon"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load and attach the datapath, run the slow path, and stay in the foreground.
    /// SIGHUP reloads the configuration; SIGTERM detaches everything and exits.
    Run {
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Stop the daemon of this configuration's host.
    Stop {
        #[arg(short, long)]
        config: PathBuf,
        /// Exit but leave the pinned datapath forwarding (for upgrades and restarts).
        #[arg(long)]
        keep_forwarding: bool,
    },
    /// Print the datapath's counters and forwarding table.
    Stats {
        #[arg(short, long)]
        config: PathBuf,
        /// How to print them.
        #[arg(short, long, value_enum, default_value_t = stats::Format::Table)]
        output: stats::Format,
        /// The same as `-o json`.
        #[arg(long, conflicts_with = "output")]
        json: bool,
    },
    /// Validate a configuration file and exit.
    Check {
        #[arg(short, long)]
        config: PathBuf,
    },
}

fn main() {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "info,dataplane_ebpf=debug".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    if let Err(e) = run(Cli::parse()) {
        eprintln!("violind: {e:#}");
        std::process::exit(1);
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Run { config: path } => {
            let config = config::Config::load(&path)?;
            // Before any other thread exists: setns applies to the calling thread only.
            daemon::enter(&config)?;
            daemon::run(&path, config)
        }
        Command::Stop {
            config,
            keep_forwarding,
        } => {
            let config = config::Config::load(&config)?;
            // Cleaning up after a daemon that died happens in its namespace, where its
            // VXLAN device is.
            daemon::enter(&config)?;
            daemon::stop(&config, keep_forwarding)
        }
        Command::Stats {
            config,
            output,
            json,
        } => {
            let config = config::Config::load(&config)?;
            daemon::enter(&config)?;
            let paths = host::Paths::new(&config.host_id);
            let maps = datapath::Maps::open_pinned(&paths)?;
            let snap = stats::read(&maps, &paths, &config.underlay.interface)?;
            let format = if json { stats::Format::Json } else { output };
            print!("{}", stats::show(&snap, format)?);
            Ok(())
        }
        Command::Check { config } => {
            config::Config::load(&config)?;
            println!("{}: ok", config.display());
            Ok(())
        }
    }
}
