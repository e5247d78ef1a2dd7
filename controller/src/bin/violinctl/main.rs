//! violinctl: operate Violin's environments through the controller.
//!
//! Exit codes: 0 done; 1 `diff` found differences, or `status` something that needs
//! attention; 2 an error (the message says which field or host); 3 a `--wait` that timed
//! out (the message names the hosts that lag).
use std::{
    io::{Read, Write},
    path::{Path, PathBuf},
    process::ExitCode,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use clap::{CommandFactory, Parser, Subcommand};
use dataplane_common::rules::MacMatch;
use serde::Deserialize;
use violin_api::{
    client::{read_token, Client, Timeouts},
    observe::{FlowEvent, ObserveQuery},
    rest::{Applied, CredentialRequest, Filter, LinkRequest, Role, RouteQuery, RuleRequest},
    vm::{Migration, MigrationPhase, MigrationRequest},
    DstMatch, IfName, Name, SrcMatch,
};

mod output;
use output::{show, Output};

#[derive(Parser)]
#[command(
    name = "violinctl",
    version,
    about = "Operate Violin's environments through the controller",
    after_help = "The controller and token come from --url/--token-file, else VIOLIN_CONTROLLER/\
                  VIOLIN_TOKEN_FILE, else the config file (`controller = \"...\"`, \
                  `token_file = \"...\"`).\nExit codes: 0 done, 1 diff found differences or \
                  status something that needs attention, 2 error, 3 --wait timed out."
)]
struct Cli {
    /// The controller's API (http:// or https://); for replicas, their URLs
    /// comma-separated: violinctl moves to the next when one cannot be reached and
    /// follows a follower to the leader.
    #[arg(long, env = "VIOLIN_CONTROLLER", global = true)]
    url: Option<String>,
    /// File holding the controller's bearer token.
    #[arg(long, env = "VIOLIN_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    /// Config file with `controller` and `token_file` [default: ~/.config/violin/violinctl.toml,
    /// then /etc/violin/violinctl.toml].
    #[arg(long, env = "VIOLINCTL_CONFIG", global = true)]
    config: Option<PathBuf>,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table", global = true)]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

/// How long `--wait` waits.
#[derive(clap::Args, Clone, Copy)]
struct Wait {
    /// Wait until every registered host has applied the change.
    #[arg(long)]
    wait: bool,
    /// Give up waiting after this many seconds, e.g. 10 [default: the configuration-time
    /// bound, or 30].
    #[arg(long, value_name = "SECONDS", requires = "wait", value_parser = seconds)]
    timeout: Option<f64>,
}

#[derive(Subcommand)]
enum Command {
    /// Show the plan for an environment spec and apply it.
    ///
    /// Example: `violinctl apply blue.toml --wait`.
    Apply {
        /// The spec file ("-" for standard input), e.g. blue.toml.
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: Option<PathBuf>,
        /// The spec file, as a positional argument, e.g. blue.toml.
        #[arg(conflicts_with = "file", required_unless_present = "file")]
        path: Option<PathBuf>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Show what applying specs would change, environment by environment, every changed
    /// field as old -> new; exits 1 when something would change, 0 when nothing would.
    ///
    /// Example: `violinctl diff blue.toml red.toml`.
    Diff {
        /// A spec file ("-" for standard input), e.g. blue.toml; may be given more than once.
        #[arg(short = 'f', long = "filename", value_name = "FILE")]
        file: Vec<PathBuf>,
        /// Spec files, as positional arguments, e.g. blue.toml red.toml.
        #[arg(required_unless_present = "file")]
        path: Vec<PathBuf>,
    },
    /// Show one environment, with its spec.
    ///
    /// Example: `violinctl get blue`.
    Get {
        /// The environment, e.g. blue.
        name: Name,
    },
    /// Delete an environment.
    ///
    /// Example: `violinctl delete blue --if-exists --wait`.
    Delete {
        /// The environment, e.g. blue.
        name: Name,
        /// Succeed when there is no such environment.
        #[arg(long)]
        if_exists: bool,
        #[command(flatten)]
        wait: Wait,
    },
    /// The whole installation on one screen: the controller and its store, hosts in and
    /// out of sync, environments, the datapaths' drops by reason over the last minute, the
    /// fullest map, migrations under way, and what needs attention (each with what to do
    /// next). Exits 1 when something needs attention.
    ///
    /// Example: `violinctl status || echo "look at it"`.
    Status,
    /// List environments.
    ///
    /// Example: `violinctl envs -o wide`.
    Envs,
    /// List hosts: registration, sync state, what runs on them.
    ///
    /// Example: `violinctl hosts`.
    Hosts,
    /// Add or delete an overlay link (UDP) between two hosts of an environment.
    ///
    /// Example: `violinctl link add blue h1 h2 --wait`.
    Link {
        #[command(subcommand)]
        action: LinkAction,
    },
    /// List overlay links (all, an environment's, or a host's).
    ///
    /// Example: `violinctl links --env blue`.
    Links {
        /// Only this environment's, e.g. blue.
        #[arg(long)]
        env: Option<String>,
        /// Only links of this host, e.g. h1.
        #[arg(long)]
        host: Option<String>,
    },
    /// Add or delete a forwarding rule in a host's table.
    ///
    /// Example: `violinctl rule add blue h1 h1v1 h2v1 --edge h2`.
    Rule {
        #[command(subcommand)]
        action: RuleAction,
    },
    /// List forwarding rules (all, an environment's, or a host's).
    ///
    /// Example: `violinctl rules --env blue --host h1`.
    Rules {
        /// Only this environment's, e.g. blue.
        #[arg(long)]
        env: Option<String>,
        /// Only this host's table, e.g. h1.
        #[arg(long)]
        host: Option<String>,
    },
    /// List the network interfaces a host reported.
    ///
    /// Example: `violinctl interfaces h1`.
    Interfaces {
        /// The host, e.g. h1.
        host: Name,
    },
    /// The application topology VTTIF inferred for an environment from its traffic: the
    /// edges (pairs above the detection threshold) and the traffic matrix.
    ///
    /// Example: `violinctl topology blue --watch`.
    Topology {
        /// The environment, e.g. blue.
        env: Name,
        /// Keep showing it, once per change (Ctrl-C ends).
        #[arg(long)]
        watch: bool,
    },
    /// The host matrix: what each host's violind measured to each other host over the
    /// underlay (round trip, packet-train bandwidth, passive estimate).
    ///
    /// Example: `violinctl measurements -o json`.
    Measurements,
    /// VADAPT: fit an adapted environment's overlay (a star through its proxy) to the
    /// application's inferred topology with fast-path links. Without an environment: the
    /// adaptation manager, which balances CPU between domains and hosts by moving
    /// environments and VMs and sets each VM's CPU share and balloon. Without a flag, the
    /// plan (a dry run).
    ///
    /// Examples: `violinctl adapt blue --apply`, `violinctl adapt --explain`.
    Adapt {
        /// The environment (its spec has an [adapt] section), e.g. blue; none: the adaptation
        /// manager.
        env: Option<Name>,
        /// Print the plan: the host pairs the topology asks for and the links to add or
        /// remove, with reasons (the default).
        #[arg(long, conflicts_with_all = ["apply", "explain"])]
        plan: bool,
        /// Make the plan's changes.
        #[arg(long, conflicts_with = "explain")]
        apply: bool,
        /// The adaptations made, with their reasons and measured effect.
        #[arg(long)]
        explain: bool,
        #[command(flatten)]
        wait: Wait,
    },
    /// Show the configuration-time bound, or set it.
    ///
    /// Example: `violinctl bound 2.5`.
    Bound {
        /// The new bound in seconds, in (0, 3600], e.g. 2.5.
        seconds: Option<f64>,
    },
    /// The path a frame takes from one VM to another, host by host: which rule or learned
    /// entry decides at each, and whether it arrives.
    ///
    /// Example: `violinctl route h1v1 h2v1`.
    Route {
        /// The source VM: its name in the spec or its MAC, e.g. h1v1.
        src: String,
        /// The destination: a VM's name, or any MAC, e.g. h2v1 (or ff:ff:ff:ff:ff:ff for a
        /// broadcast).
        dst: String,
        /// The environment, when the source is in several, e.g. blue.
        #[arg(long)]
        env: Option<String>,
    },
    /// Wait until every registered host has applied the current state.
    ///
    /// Example: `violinctl wait --timeout 10`.
    Wait {
        /// Give up after this many seconds, e.g. 10 [default: the configuration-time bound,
        /// or 30].
        #[arg(long, value_name = "SECONDS", value_parser = seconds)]
        timeout: Option<f64>,
    },
    /// Live-migrate a VM to a host, or a whole environment (--env) to hosts (its VMs go to
    /// them in turn, by name); follows the migrations until they end. --cancel ID aborts one.
    ///
    /// Example: `violinctl migrate h1v1 --to h2`.
    Migrate {
        /// The VM (its libvirt domain's name), e.g. h2v1.
        #[arg(required_unless_present_any = ["env", "cancel"], conflicts_with = "cancel")]
        vm: Option<Name>,
        /// Migrate every VM of this environment (with a VM: the VM's environment), e.g. blue.
        #[arg(long)]
        env: Option<Name>,
        /// The destination host(s), e.g. h1 (or h1 h3 with --env).
        #[arg(long, num_args = 1.., required_unless_present = "cancel")]
        to: Vec<Name>,
        /// Return once started instead of following the migrations.
        #[arg(long)]
        no_follow: bool,
        /// Cap the memory copy at this many MiB/s (libvirt's default: unlimited), e.g. 500.
        #[arg(long, value_name = "MIB_S", value_parser = clap::value_parser!(u64).range(1..))]
        bandwidth: Option<u64>,
        /// Cancel the migration with this id (libvirt aborts it; everything rolls back), e.g. 7.
        #[arg(long, value_name = "ID", conflicts_with_all = ["env", "to"])]
        cancel: Option<u64>,
    },
    /// List recorded migrations: phase, progress, total time, downtime, reconvergence.
    ///
    /// Example: `violinctl migrations`.
    Migrations,
    /// List the VMs the hosts' libvirt daemons report: host, state, CPU, memory.
    ///
    /// Example: `violinctl vms`.
    Vms,
    /// The VMs' use over time as the adaptation manager sees it: CPU in cores, memory,
    /// and the cap they were given, sample by sample (the latest few; all with -o json).
    ///
    /// Example: `violinctl usage h1v1`.
    Usage {
        /// Only this VM, e.g. h1v1.
        vm: Option<String>,
        /// Samples shown per VM (table output), e.g. 20.
        #[arg(long, default_value_t = 5)]
        last: usize,
    },
    /// VioCluster: the machines domains lend each other (loans) and the brokers' latest
    /// rounds, each domain's demand, machines and need (n = d - ((|P| - |L|) + |V|)).
    ///
    /// Example: `violinctl brokers --round`.
    Brokers {
        /// Run a round now: read the schedulers, trade, boot lent machines, stop
        /// reclaimed ones.
        #[arg(long)]
        round: bool,
    },
    /// Credentials: issue one to an operator (admin or read-only) or to a host (named
    /// after it: it may only register, sync and report as that host), list, revoke.
    ///
    /// Example: `violinctl credential create h1 --role host --out /etc/violin/h1.token`.
    Credential {
        #[command(subcommand)]
        action: CredentialAction,
    },
    /// The audit log: every change made through the API, and every request refused for
    /// want of a right, with who asked.
    ///
    /// Example: `violinctl audit --last 20`.
    Audit {
        /// The latest this many entries, e.g. 200.
        #[arg(long, default_value_t = 50)]
        last: usize,
    },
    /// Live events from the hosts' datapaths, straight from each violind (by default
    /// every registered host's, found through the controller): every frame
    /// dropped from now on and one in --every forwarded from VM ports, with time, host,
    /// port, environment, source and destination (VM names, MACs, IPs, ports), verdict
    /// and reason. Each CPU of a host describes at most 2000 drops and 100 forwarded
    /// frames a second; nobody observing, the datapath describes nothing. Ctrl-C ends, or
    /// --count.
    ///
    /// Example: `violinctl observe --drops --vm h1v1` (every registered host), or
    /// `violinctl observe --daemon http://10.250.0.1:9600 --drops`.
    Observe {
        /// The daemons' API URLs (each host's `api_listen`), comma-separated, e.g.
        /// http://10.250.0.1:9600,http://10.250.0.2:9600 [default: every registered
        /// host's, from the controller].
        #[arg(long, env = "VIOLIN_DAEMONS", value_name = "URLS")]
        daemon: Option<String>,
        /// File holding the daemons' API token (their `api_token_file`), e.g.
        /// /etc/violin/api.token.
        #[arg(long, env = "VIOLIN_DAEMON_TOKEN_FILE", value_name = "FILE")]
        daemon_token_file: Option<PathBuf>,
        /// Only dropped frames.
        #[arg(long)]
        drops: bool,
        /// Show one forwarded frame in this many, drawn at random, e.g. 10 [default: 100].
        #[arg(long, value_name = "N", conflicts_with = "drops", value_parser = clap::value_parser!(u32).range(1..))]
        every: Option<u32>,
        /// Only frames from or to this VM (its name or MAC), e.g. h1v1.
        #[arg(long)]
        vm: Option<String>,
        /// Only this environment's frames (its name or VNI), e.g. blue.
        #[arg(long)]
        env: Option<String>,
        /// Only drops for this reason, as `violind stats` names it, e.g. hairpin.
        #[arg(long)]
        reason: Option<String>,
        /// Stop after this many events, e.g. 10.
        #[arg(long, value_name = "N")]
        count: Option<u64>,
    },
    /// Print a shell completion script.
    ///
    /// Example: `source <(violinctl completion bash)`.
    Completion {
        /// The shell, e.g. bash.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum CredentialAction {
    /// Issue a credential and print its token (shown this once), or write it to --out.
    ///
    /// Example: `violinctl credential create alice --role read-only --out alice.token`.
    Create {
        /// Its name: an operator's, or the host's name for a host, e.g. alice or h1.
        name: Name,
        /// What it may do, e.g. read-only.
        #[arg(long, value_enum)]
        role: RoleArg,
        /// Write the token to this file (mode 0600) instead of printing it, e.g. h1.token.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// List the credentials issued (never their tokens).
    ///
    /// Example: `violinctl credential list`.
    List,
    /// Revoke a credential: its token is refused from now on.
    ///
    /// Example: `violinctl credential delete alice`.
    Delete {
        /// The credential's name, e.g. alice.
        name: String,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
enum RoleArg {
    /// Everything.
    Admin,
    /// Reads only.
    ReadOnly,
    /// A violind: registers, syncs and reports as the host it is named after.
    Host,
}

#[derive(Subcommand)]
enum LinkAction {
    /// Add a link between HOST_A and HOST_B.
    ///
    /// Example: `violinctl link add blue h1 h2`.
    Add {
        /// The environment, e.g. blue.
        env: Name,
        /// One host of the environment, e.g. h1.
        host_a: Name,
        /// Another host of the environment, e.g. h2.
        host_b: Name,
        /// Succeed when the link exists already.
        #[arg(long)]
        may_exist: bool,
        #[command(flatten)]
        wait: Wait,
    },
    /// Delete the link between HOST_A and HOST_B.
    ///
    /// Example: `violinctl link delete blue h1 h2 --if-exists`.
    Delete {
        /// The environment, e.g. blue.
        env: Name,
        /// One host of the link, e.g. h1.
        host_a: Name,
        /// The other host of the link, e.g. h2.
        host_b: Name,
        /// Succeed when there is no such link.
        #[arg(long)]
        if_exists: bool,
        #[command(flatten)]
        wait: Wait,
    },
}

#[derive(Subcommand)]
enum RuleAction {
    /// Add a rule to HOST's table: frames from SRC to DST go over --edge or out of --interface.
    ///
    /// Example: `violinctl rule add blue h1 any h2v1 --edge h2 --wait`.
    Add {
        /// The environment, e.g. blue.
        env: Name,
        /// The host whose table gets the rule, e.g. h1.
        host: Name,
        /// Source: a VM of the environment by name or MAC, "not VM", or "any", e.g. h1v1.
        src: String,
        /// Destination: a VM by name or MAC, "not VM", "any", or "none" (the default rule),
        /// e.g. "not h2v1".
        dst: String,
        /// Send over the link to this host, e.g. h2.
        #[arg(
            long,
            conflicts_with = "interface",
            required_unless_present = "interface"
        )]
        edge: Option<Name>,
        /// Write to this local VM port, e.g. vm1.
        #[arg(long)]
        interface: Option<IfName>,
        /// Succeed when the host has a rule for SRC and DST already.
        #[arg(long)]
        may_exist: bool,
        #[command(flatten)]
        wait: Wait,
    },
    /// Delete HOST's rule for SRC and DST.
    ///
    /// Example: `violinctl rule delete blue h1 any h2v1`.
    Delete {
        /// The environment, e.g. blue.
        env: Name,
        /// The host whose table holds the rule, e.g. h1.
        host: Name,
        /// Source, as the rule was added: a VM by name or MAC, "not VM", or "any", e.g. any.
        src: String,
        /// Destination, as the rule was added: a VM by name or MAC, "not VM", "any" or
        /// "none", e.g. h2v1.
        dst: String,
        /// Succeed when there is no such rule.
        #[arg(long)]
        if_exists: bool,
        #[command(flatten)]
        wait: Wait,
    },
}

/// A number of seconds to wait: finite and positive.
fn seconds(s: &str) -> std::result::Result<f64, String> {
    match s.parse::<f64>() {
        Ok(v) if v.is_finite() && v > 0.0 && v <= 86400.0 => Ok(v),
        _ => Err(format!("{s:?} is not a number of seconds in (0, 86400]")),
    }
}

/// How a run ends, beyond success.
enum Outcome {
    Done,
    Differences,
    /// `status` found something an operator should look at.
    Attention,
}

/// A `--wait` that ran out of time.
#[derive(Debug)]
struct TimedOut(String);

impl std::fmt::Display for TimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TimedOut {}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::Completion { shell } = cli.command {
        let mut cmd = Cli::command();
        clap_complete::generate(shell, &mut cmd, "violinctl", &mut std::io::stdout());
        return ExitCode::SUCCESS;
    }
    // Straight from the daemons: no controller needed unless it is to name them.
    let outcome = match &cli.command {
        Command::Observe { .. } => observe(&cli).map(|()| Outcome::Done),
        _ => connect(&cli).and_then(|c| run(&c, &cli)),
    };
    match outcome {
        Ok(Outcome::Done) => ExitCode::SUCCESS,
        Ok(Outcome::Differences | Outcome::Attention) => ExitCode::from(1),
        Err(e) => {
            eprintln!("violinctl: {e:#}");
            // The daemons' errors name --daemon already; the hints are the controller's.
            let controller = !matches!(cli.command, Command::Observe { .. });
            if let Some(hint) = e
                .downcast_ref::<violin_api::client::Error>()
                .filter(|_| controller)
                .and_then(hint)
            {
                eprintln!("hint: {hint}");
            }
            if e.downcast_ref::<TimedOut>().is_some() {
                ExitCode::from(3)
            } else {
                ExitCode::from(2)
            }
        }
    }
}

/// What to do next after a failure that does not say so itself.
fn hint(e: &violin_api::client::Error) -> Option<&'static str> {
    match e.status() {
        None => Some(
            "is violin-controller running there? Name it with --url, VIOLIN_CONTROLLER or \
             `controller` in the config file (several replicas comma-separated)",
        ),
        Some(401) => Some(
            "the token was refused: check --token-file (an administrator's token, or one \
             `violinctl credential create` issued and not revoked)",
        ),
        Some(503) => {
            Some("the controller cannot serve now: `violinctl status` or its /healthz says why")
        }
        _ => None,
    }
}

/// `controller` and `token_file` from a config file.
#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    controller: Option<String>,
    token_file: Option<PathBuf>,
}

fn settings(explicit: Option<&Path>) -> Result<Settings> {
    let candidates: Vec<PathBuf> = match explicit {
        Some(p) => vec![p.to_path_buf()],
        None => std::env::var_os("HOME")
            .map(|h| PathBuf::from(h).join(".config/violin/violinctl.toml"))
            .into_iter()
            .chain([PathBuf::from("/etc/violin/violinctl.toml")])
            .collect(),
    };
    for path in candidates {
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                return violin_api::parse::from_toml(&text, "config")
                    .with_context(|| format!("{}", path.display()))
            }
            Err(e) if explicit.is_some() => {
                bail!("--config: cannot read {}: {e}", path.display())
            }
            Err(_) => continue,
        }
    }
    Ok(Settings::default())
}

fn connect(cli: &Cli) -> Result<Client> {
    let file = settings(cli.config.as_deref())?;
    let url = cli
        .url
        .clone()
        .or(file.controller)
        .unwrap_or_else(|| "http://127.0.0.1:7800".into());
    let token_file = cli.token_file.clone().or(file.token_file).context(
        "no token: give --token-file, VIOLIN_TOKEN_FILE or token_file in the config file",
    )?;
    let token = read_token(&token_file)
        .with_context(|| format!("--token-file: cannot read {}", token_file.display()))?;
    // A brokering round boots and halts VMs through the provisioner (up to 5 minutes each).
    let timeouts = match cli.command {
        Command::Brokers { round: true } => Timeouts {
            read: Duration::from_secs(1800),
            ..Timeouts::default()
        },
        _ => Timeouts::default(),
    };
    Ok(Client::new(&url, &token, timeouts))
}

/// A file beside `path` for a token, readable by its owner only; made before the
/// credential is issued, so that a path that cannot be written loses no token.
fn secret_file(path: &Path) -> Result<(PathBuf, std::fs::File)> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("--out: cannot write beside {}", path.display()))?;
    Ok((tmp, f))
}

/// Writes the token and puts the file in place (an existing file is replaced whole, so
/// its old mode does not carry over).
fn write_secret(tmp: &Path, mut f: std::fs::File, path: &Path, token: &str) -> Result<()> {
    use std::io::Write;
    writeln!(f, "{token}")
        .and_then(|()| f.sync_all())
        .and_then(|()| std::fs::rename(tmp, path))
        .with_context(|| format!("--out: cannot write {}", path.display()))
}

fn read_spec(file: &Option<PathBuf>, path: &Option<PathBuf>) -> Result<String> {
    read_spec_file(
        file.as_ref()
            .or(path.as_ref())
            .context("give a spec file")?,
    )
}

fn read_spec_file(f: &Path) -> Result<String> {
    if f == Path::new("-") {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .context("reading the spec from standard input")?;
        return Ok(text);
    }
    std::fs::read_to_string(f).with_context(|| format!("cannot read {}", f.display()))
}

/// The environment name a spec declares. The document is read as the controller reads it,
/// so a malformed one is refused here with its line and field; the controller checks the
/// rest (hosts, VMs and rules that refer to each other).
fn spec_name(text: &str) -> Result<String> {
    Ok(violin_api::spec::Document::parse(text)?
        .environment
        .name
        .to_string())
}

/// An environment's changes under its name, one per line.
fn print_changes(env: &str, changes: &[String]) {
    match changes.len() {
        0 => println!("environment {env}: no changes"),
        1 => println!("environment {env}: 1 change"),
        n => println!("environment {env}: {n} changes"),
    }
    for c in changes {
        println!("  {c}");
    }
}

/// Waits, watching the controller, until every registered host applied `generation`.
fn wait(c: &Client, generation: u64, timeout: Option<f64>) -> Result<()> {
    let limit = match timeout {
        Some(t) => t,
        None => c.bound()?.bound_seconds.unwrap_or(30.0).max(1.0),
    };
    let start = Instant::now();
    let deadline = start + Duration::from_secs_f64(limit);
    let mut last = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let status = c.watch_sync(generation, left.min(Duration::from_secs(5)))?;
        if status.pending.is_empty() {
            eprintln!(
                "{} hosts applied generation {generation} in {:.1} ms",
                status.hosts.len(),
                start.elapsed().as_secs_f64() * 1e3
            );
            return Ok(());
        }
        if status.pending != last {
            eprintln!(
                "waiting for {} to apply generation {generation}",
                status.pending.join(",")
            );
            last = status.pending;
        }
        if Instant::now() >= deadline {
            return Err(TimedOut(format!(
                "timed out: {} did not apply generation {generation} within {limit} s",
                last.join(",")
            ))
            .into());
        }
    }
}

/// A change's answer: shown, then waited for.
fn changed(c: &Client, out: Output, env: &str, applied: Applied, w: Wait) -> Result<Outcome> {
    show(out, &applied, |a| print_changes(env, &a.changes))?;
    if w.wait {
        wait(c, applied.generation, w.timeout)?;
    }
    Ok(Outcome::Done)
}

/// Treats the status the flag forgives as "nothing to do". A missing environment is
/// forgiven only when the environment is what the command is about (`delete`); for a
/// primitive it is a typo, not a link or rule already gone.
fn tolerate(
    r: violin_api::client::Result<Applied>,
    status: u16,
    flag: bool,
    about_environment: bool,
) -> Result<Option<Applied>> {
    match r {
        Ok(a) => Ok(Some(a)),
        Err(e)
            if flag
                && e.status() == Some(status)
                && (about_environment || e.field() != Some("environment")) =>
        {
            eprintln!("{e}; nothing to do");
            Ok(None)
        }
        Err(e) => Err(e.into()),
    }
}

fn run(c: &Client, cli: &Cli) -> Result<Outcome> {
    let out = cli.output;
    match &cli.command {
        Command::Apply {
            file,
            path,
            wait: w,
        } => {
            let text = read_spec(file, path)?;
            let name = spec_name(&text)?;
            let applied = c.apply(&name, &text)?;
            if out.is_text() {
                print_changes(&name, &applied.changes);
                println!("applied {name}");
            } else {
                show(out, &applied, |_| {})?;
            }
            if w.wait {
                wait(c, applied.generation, w.timeout)?;
            }
            Ok(Outcome::Done)
        }
        Command::Diff { file, path } => {
            let mut plans = Vec::new();
            for f in file.iter().chain(path) {
                let text = read_spec_file(f)?;
                let name = spec_name(&text).with_context(|| format!("{}", f.display()))?;
                if plans
                    .iter()
                    .any(|p: &violin_api::rest::Plan| p.environment == name)
                {
                    bail!(
                        "{}: environment {name} is in an earlier file too; give each once",
                        f.display()
                    );
                }
                plans.push(c.plan(&name, &text)?);
            }
            show(out, &plans, |plans| {
                for p in plans {
                    print_changes(&p.environment, &p.changes)
                }
            })?;
            Ok(if plans.iter().all(|p| p.changes.is_empty()) {
                Outcome::Done
            } else {
                Outcome::Differences
            })
        }
        Command::Get { name } => {
            let env = c.environment(name)?;
            show(out, &env, |e| println!("{}", e.spec.trim_end()))?;
            Ok(Outcome::Done)
        }
        Command::Delete {
            name,
            if_exists,
            wait: w,
        } => match tolerate(c.delete(name), 404, *if_exists, true)? {
            Some(a) => {
                if out.is_text() {
                    println!("deleted {name}");
                }
                changed(c, out, name, a, *w)
            }
            None => Ok(Outcome::Done),
        },
        Command::Link { action } => link(c, out, action),
        Command::Rule { action } => rule(c, out, action),
        Command::Wait { timeout } => {
            let status = c.sync_status(None)?;
            wait(c, status.generation, *timeout)?;
            show(out, &c.sync_status(Some(status.generation))?, |_| {})?;
            Ok(Outcome::Done)
        }
        Command::Migrate {
            vm,
            env,
            to,
            no_follow,
            bandwidth,
            cancel,
        } => {
            if let Some(id) = cancel {
                let m = c.cancel_migration(*id)?;
                show(out, &m, |m| {
                    eprintln!("cancelling migration {} of {}", m.id, m.vm)
                })?;
                return Ok(Outcome::Done);
            }
            let req = MigrationRequest {
                vm: vm.clone(),
                environment: env.clone(),
                to: to.clone(),
                bandwidth_mib_s: *bandwidth,
            };
            let started = c.migrate(&req)?;
            if *no_follow {
                output::migrations(out, &started.migrations)?;
                return Ok(Outcome::Done);
            }
            let ended = follow(c, &started.migrations)?;
            output::migrations(out, &ended)?;
            match ended.iter().find(|m| m.phase == MigrationPhase::Failed) {
                Some(m) => bail!(
                    "migration {} of {} failed: {}",
                    m.id,
                    m.vm,
                    m.error.as_deref().unwrap_or("no reason given")
                ),
                None => Ok(Outcome::Done),
            }
        }
        Command::Adapt {
            env,
            apply,
            explain,
            wait: w,
            ..
        } => {
            let Some(env) = env else {
                if *explain {
                    output::manager_log(out, &c.manager_log()?)?;
                } else if *apply {
                    let r = c.manage()?;
                    output::manager_log(out, std::slice::from_ref(&r))?;
                    if let (true, Some(g)) = (w.wait, r.generation) {
                        wait(c, g, w.timeout)?;
                    }
                } else {
                    output::manager_decision(out, &c.manager()?)?;
                }
                return Ok(Outcome::Done);
            };
            if *explain {
                let f = filter(&Some(env.to_string()), &None);
                output::adaptations(out, &c.adaptations(&f)?)?;
            } else if *apply {
                let a = c.adapt(env.as_str())?;
                output::adaptations(out, std::slice::from_ref(&a))?;
                if let (true, Some(g)) = (w.wait, a.generation) {
                    wait(c, g, w.timeout)?;
                }
            } else {
                output::adapt_plan(out, &c.adapt_plan(env.as_str())?)?;
            }
            Ok(Outcome::Done)
        }
        Command::Status => {
            let s = c.status()?;
            output::status(out, &s)?;
            Ok(if s.attention.is_empty() {
                Outcome::Done
            } else {
                Outcome::Attention
            })
        }
        Command::Completion { .. } | Command::Observe { .. } => Ok(Outcome::Done),
        _ => list(c, out, &cli.command).map(|()| Outcome::Done),
    }
}

/// `violinctl observe`: one reader per daemon, their events printed as they come.
fn observe(cli: &Cli) -> Result<()> {
    let Command::Observe {
        daemon,
        daemon_token_file,
        drops,
        every,
        vm,
        env,
        reason,
        count,
    } = &cli.command
    else {
        unreachable!("only observe")
    };
    let token = match daemon_token_file {
        Some(f) => read_token(f)
            .with_context(|| format!("--daemon-token-file: cannot read {}", f.display()))?,
        None => String::new(),
    };
    let query = ObserveQuery {
        drops: *drops,
        every: *every,
        vm: vm.clone(),
        env: env.clone(),
        reason: reason.clone(),
    };
    let urls = match daemon {
        Some(daemon) => violin_api::client::urls(daemon),
        None => registered_daemons(cli)?,
    };
    if urls.is_empty() {
        bail!("--daemon: give at least one violind URL (a host's api_listen)");
    }
    let (tx, rx) = std::sync::mpsc::channel::<Result<Vec<FlowEvent>, String>>();
    for url in urls {
        // The daemons send a line every 2 s at least.
        let timeouts = Timeouts {
            connect: Duration::from_secs(3),
            read: Duration::from_secs(10),
        };
        let client = Client::new(&url, &token, timeouts);
        let (tx, query) = (tx.clone(), query.clone());
        let events = client
            .observe(&query)
            .with_context(|| format!("--daemon {url}"))?;
        std::thread::spawn(move || {
            for batch in events {
                let batch = batch.map_err(|e| format!("--daemon {url}: {e}"));
                let failed = batch.is_err();
                if tx.send(batch).is_err() || failed {
                    return;
                }
            }
            let _ = tx.send(Err(format!("--daemon {url}: the daemon ended the stream")));
        });
    }
    drop(tx);
    // A sampled drain's worth in one write.
    let mut out = std::io::BufWriter::with_capacity(64 * 1024, std::io::stdout().lock());
    let mut seen = 0;
    // A batch at a time, one write each: a pipe sees events as they come, and a busy
    // datapath costs neither a wake-up nor a write per event.
    while count.is_none_or(|n| seen < n) {
        let batch = rx.recv().context("every daemon's stream ended")?;
        let room = count.map_or(usize::MAX, |n| {
            usize::try_from(n - seen).unwrap_or(usize::MAX)
        });
        for e in batch.map_err(anyhow::Error::msg)?.iter().take(room) {
            output::event(cli.output, e, &mut out)?;
            seen += 1;
        }
        out.flush()?;
    }
    Ok(())
}

/// The APIs of the hosts registered with the controller, as URLs; an error names the
/// controller or, when no host serves an API, what to give instead.
fn registered_daemons(cli: &Cli) -> Result<Vec<String>> {
    let hosts = connect(cli)?
        .hosts()
        .context("finding the daemons through the controller (or give --daemon URLS)")?;
    let urls: Vec<String> = hosts.iter().filter_map(daemon_url).collect();
    if urls.is_empty() {
        bail!(
            "--daemon: no host registered with the controller serves an API (violind's \
             api_listen); give the daemons' URLs"
        );
    }
    Ok(urls)
}

/// A registered host's API as a URL: a daemon listening on every address
/// (`0.0.0.0:9600`) is reached at the host's own address.
fn daemon_url(h: &violin_api::rest::HostInfo) -> Option<String> {
    let api = h.api.as_ref()?;
    let at = match api.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_unspecified() => {
            let ip: std::net::IpAddr = h.address.as_ref()?.parse().ok()?;
            std::net::SocketAddr::new(ip, a.port()).to_string()
        }
        _ => api.clone(),
    };
    Some(format!("http://{at}"))
}

/// Follows migrations until each ends, a progress line (on stderr) whenever one moves on.
fn follow(c: &Client, started: &[Migration]) -> Result<Vec<Migration>> {
    let mut now: Vec<Migration> = started.to_vec();
    let mut shown: Vec<String> = vec![String::new(); now.len()];
    loop {
        for (m, last) in now.iter_mut().zip(shown.iter_mut()) {
            if !m.phase.finished() {
                *m = c.migration(m.id)?;
            }
            let line = output::progress(m);
            if line != *last {
                eprintln!("{line}");
                *last = line;
            }
        }
        if now.iter().all(|m| m.phase.finished()) {
            return Ok(now);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn link(c: &Client, out: Output, action: &LinkAction) -> Result<Outcome> {
    let (LinkAction::Add { env, .. } | LinkAction::Delete { env, .. }) = action;
    let (result, w) = match action {
        LinkAction::Add {
            env,
            host_a,
            host_b,
            may_exist,
            wait,
        } => {
            let req = LinkRequest {
                hosts: [host_a.clone(), host_b.clone()],
                kind: None,
            };
            (
                tolerate(c.add_link(env, &req), 409, *may_exist, false)?,
                *wait,
            )
        }
        LinkAction::Delete {
            env,
            host_a,
            host_b,
            if_exists,
            wait,
        } => (
            tolerate(c.delete_link(env, host_a, host_b), 404, *if_exists, false)?,
            *wait,
        ),
    };
    match result {
        Some(a) => changed(c, out, env, a, w),
        None => Ok(Outcome::Done),
    }
}

/// A VM of an environment by name or MAC: a rule's side as the operator gives it.
struct VmNames<'a> {
    c: &'a Client,
    env: &'a str,
    /// The environment's VMs and MACs, read when a name is first given.
    vms: std::cell::OnceCell<Vec<(String, [u8; 6])>>,
}

impl VmNames<'_> {
    fn vms(&self) -> Result<&[(String, [u8; 6])]> {
        if let Some(v) = self.vms.get() {
            return Ok(v);
        }
        let detail = self.c.environment(self.env)?;
        let doc = violin_api::spec::Document::parse(&detail.spec)?;
        let vms = doc
            .vms
            .iter()
            .map(|v| (v.name.get_ref().to_string(), v.mac.get_ref().octets()))
            .collect();
        Ok(self.vms.get_or_init(|| vms))
    }

    /// `text` as a match: a MAC form (`02:..`, `not 02:..`, `any`, and `none` for a
    /// destination) or a VM's name (`h1v1`, `not h1v1`).
    fn resolve(&self, field: &str, text: &str, dst: bool) -> Result<MacMatch> {
        let parsed = if dst {
            DstMatch::parse(text).map(|m| m.0)
        } else {
            SrcMatch::parse(text).map(|m| m.0)
        };
        if let Ok(m) = parsed {
            return Ok(m);
        }
        let (not, name) = match text.strip_prefix("not ") {
            Some(n) => (true, n.trim()),
            None => (false, text.trim()),
        };
        let vms = self.vms()?;
        match vms.iter().find(|(n, _)| n == name) {
            Some((_, mac)) if not => Ok(MacMatch::Not(*mac)),
            Some((_, mac)) => Ok(MacMatch::Exact(*mac)),
            None => bail!(
                "{field}: {text:?} is neither a VM of environment {} ({}) nor {}; see `violinctl get {}`",
                self.env,
                vms.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", "),
                if dst {
                    "a MAC, \"not MAC\", \"any\" or \"none\""
                } else {
                    "a MAC, \"not MAC\" or \"any\""
                },
                self.env
            ),
        }
    }
}

fn rule(c: &Client, out: Output, action: &RuleAction) -> Result<Outcome> {
    let (RuleAction::Add { env, .. } | RuleAction::Delete { env, .. }) = action;
    let names = VmNames {
        c,
        env,
        vms: Default::default(),
    };
    let (result, w) = match action {
        RuleAction::Add {
            env,
            host,
            src,
            dst,
            edge,
            interface,
            may_exist,
            wait,
        } => {
            let req = RuleRequest {
                host: host.clone(),
                src: SrcMatch(names.resolve("src", src, false)?),
                dst: DstMatch(names.resolve("dst", dst, true)?),
                edge: edge.clone(),
                interface: interface.clone(),
            };
            (
                tolerate(c.add_rule(env, &req), 409, *may_exist, false)?,
                *wait,
            )
        }
        RuleAction::Delete {
            env,
            host,
            src,
            dst,
            if_exists,
            wait,
        } => {
            let req = RuleRequest {
                host: host.clone(),
                src: SrcMatch(names.resolve("src", src, false)?),
                dst: DstMatch(names.resolve("dst", dst, true)?),
                edge: None,
                interface: None,
            };
            (
                tolerate(c.delete_rule(env, &req), 404, *if_exists, false)?,
                *wait,
            )
        }
    };
    match result {
        Some(a) => changed(c, out, env, a, w),
        None => Ok(Outcome::Done),
    }
}

fn filter(env: &Option<String>, host: &Option<String>) -> Filter {
    Filter {
        environment: env.clone(),
        host: host.clone(),
    }
}

/// The read-only listings.
fn list(c: &Client, out: Output, command: &Command) -> Result<()> {
    match command {
        Command::Envs => output::envs(out, &c.environments()?),
        Command::Hosts => output::hosts(out, &c.hosts()?),
        Command::Links { env, host } => output::links(out, &c.links(&filter(env, host))?),
        Command::Rules { env, host } => output::rules(out, &c.rules(&filter(env, host))?),
        Command::Interfaces { host } => output::interfaces(out, &c.interfaces(host)?),
        Command::Bound { seconds } => {
            let b = match seconds {
                Some(s) => c.set_bound(*s)?,
                None => c.bound()?,
            };
            show(out, &b, |b| {
                let f = |x: Option<f64>| x.map_or("unset".into(), |s| format!("{s:.3} s"));
                println!("bound: {}", f(b.bound_seconds));
                println!("measured (longest recent sync): {}", f(b.measured_seconds));
            })
        }
        Command::Route { src, dst, env } => {
            let q = RouteQuery {
                src: src.clone(),
                dst: dst.clone(),
                environment: env.clone(),
            };
            output::route(out, &c.route(&q)?)
        }
        Command::Migrations => output::migrations(out, &c.migrations()?),
        Command::Measurements => output::measurements(out, &c.measurements()?),
        Command::Vms => output::vms(out, &c.vms()?),
        Command::Audit { last } => output::audit(out, &c.audit(*last)?),
        Command::Credential { action } => match action {
            CredentialAction::Create {
                name,
                role,
                out: file,
            } => {
                let role = match role {
                    RoleArg::Admin => Role::Admin,
                    RoleArg::ReadOnly => Role::ReadOnly,
                    RoleArg::Host => Role::Host,
                };
                let secret = file.as_deref().map(secret_file).transpose()?;
                let issued = c.create_credential(&CredentialRequest {
                    name: name.clone(),
                    role,
                });
                let issued = match (issued, &secret) {
                    (Ok(i), _) => i,
                    (Err(e), Some((tmp, _))) => {
                        let _ = std::fs::remove_file(tmp);
                        return Err(e.into());
                    }
                    (Err(e), None) => return Err(e.into()),
                };
                match (file, secret) {
                    (Some(path), Some((tmp, f))) => {
                        write_secret(&tmp, f, path, &issued.token)?;
                        eprintln!(
                            "credential {} ({}) issued; its token is in {}",
                            name,
                            role.as_str(),
                            path.display()
                        );
                        Ok(())
                    }
                    _ => show(out, &issued, |i| println!("{}", i.token)),
                }
            }
            CredentialAction::List => output::credentials(out, &c.credentials()?),
            CredentialAction::Delete { name } => {
                output::credentials(out, &c.delete_credential(name)?)
            }
        },
        Command::Brokers { round: true } => output::broker_round(out, &c.broker_round()?),
        Command::Brokers { round: false } => output::brokers(out, &c.brokers()?),
        Command::Usage { vm, last } => {
            let mut all = c.usage()?;
            if let Some(v) = vm {
                all.retain(|u| &u.vm == v);
                if all.is_empty() {
                    anyhow::bail!("vm: no usage recorded for {v:?} (see `violinctl vms`)");
                }
            }
            output::usage(out, &all, *last)
        }
        Command::Topology { env, watch } => {
            if !*watch {
                return output::topology(out, &c.topology(env.as_str())?);
            }
            // The controller answers as soon as a change is declared past the last one
            // shown; a failed call is said and retried, so a controller restart does not
            // end the watch.
            let mut last = None;
            loop {
                let next = match last {
                    None => c.topology(env.as_str()),
                    Some(n) => c.watch_topology(env.as_str(), n, Duration::from_secs(25)),
                };
                match next {
                    Ok(t) if last != Some(t.changes) => {
                        last = Some(t.changes);
                        output::topology(out, &t)?;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        eprintln!("violinctl: {e:#}");
                        std::thread::sleep(Duration::from_secs(1));
                    }
                }
            }
        }
        _ => unreachable!("changes are handled by run"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_daemon_on_every_address_is_reached_at_its_hosts() {
        let host = |address: Option<&str>, api: Option<&str>| violin_api::rest::HostInfo {
            name: "h1".into(),
            address: address.map(String::from),
            api: api.map(String::from),
            environments: Vec::new(),
            vms: 0,
            registered: true,
            connected: true,
            acked_generation: 0,
            in_sync: true,
            sync_latency_seconds: None,
            error: None,
        };
        let url = |a, b| daemon_url(&host(a, b));
        assert_eq!(
            url(Some("10.0.0.1"), Some("10.0.0.9:9600")).as_deref(),
            Some("http://10.0.0.9:9600")
        );
        assert_eq!(
            url(Some("10.0.0.1"), Some("0.0.0.0:9600")).as_deref(),
            Some("http://10.0.0.1:9600")
        );
        assert_eq!(
            url(Some("fd00::1"), Some("[::]:9600")).as_deref(),
            Some("http://[fd00::1]:9600")
        );
        assert_eq!(url(Some("10.0.0.1"), None), None, "no API, no URL");
        assert_eq!(url(None, Some("0.0.0.0:9600")), None, "nowhere to reach it");
    }

    /// Every command of the tree, with its path (`violinctl rule add`).
    fn commands(cmd: &clap::Command, path: String, out: &mut Vec<(String, clap::Command)>) {
        for sub in cmd.get_subcommands() {
            let p = format!("{path} {}", sub.get_name());
            out.push((p.clone(), sub.clone()));
            commands(sub, p, out);
        }
    }

    #[test]
    fn every_command_has_an_example_and_every_argument_help() {
        let mut all = Vec::new();
        commands(&Cli::command(), "violinctl".into(), &mut all);
        assert!(all.len() > 25, "{}", all.len());
        // An argument that takes a value shows one (or lists the values it takes).
        let mut unexampled = Vec::new();
        for (path, cmd) in &all {
            let long = cmd
                .get_long_about()
                .map(|a| a.to_string())
                .unwrap_or_default();
            assert!(
                long.contains("Example: `") || long.contains("Examples: `"),
                "{path} has no example in its help"
            );
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if arg.is_global_set() || id == "help" || id == "version" {
                    continue;
                }
                let help = arg.get_help().map(|h| h.to_string());
                assert!(help.is_some(), "{path}: argument {id} has no help");
                if arg.get_action().takes_values()
                    && arg.get_possible_values().is_empty()
                    && !help.is_some_and(|h| h.contains("e.g."))
                {
                    unexampled.push(format!("{path} {id}"));
                }
            }
        }
        assert!(unexampled.is_empty(), "no example value: {unexampled:?}");
    }
}
