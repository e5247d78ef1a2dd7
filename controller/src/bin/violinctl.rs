//! violinctl: operate Violin's environments through the controller.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;

#[derive(Parser)]
#[command(
    name = "violinctl",
    about = "Operate Violin's environments through the controller"
)]
struct Cli {
    /// The controller's API.
    #[arg(
        long,
        env = "VIOLIN_CONTROLLER",
        default_value = "http://127.0.0.1:7800"
    )]
    url: String,
    /// File holding the controller's bearer token.
    #[arg(long, env = "VIOLIN_TOKEN_FILE")]
    token_file: PathBuf,
    /// Output format.
    #[arg(short, long, value_enum, default_value = "table")]
    output: Output,
    #[command(subcommand)]
    command: Command,
}

#[derive(Clone, Copy, ValueEnum, PartialEq, Eq)]
enum Output {
    Table,
    Json,
}

#[derive(Subcommand)]
enum Command {
    /// Show the plan for an environment spec and apply it.
    Apply {
        file: PathBuf,
        /// Wait until every registered host has applied the change.
        #[arg(long)]
        wait: bool,
    },
    /// Show what applying a spec would change, without changing anything.
    Diff { file: PathBuf },
    /// Show one environment, with its spec.
    Get { name: String },
    /// Delete an environment.
    Delete {
        name: String,
        #[arg(long)]
        wait: bool,
    },
    /// List environments.
    Envs,
    /// List hosts: registration, sync state, what runs on them.
    Hosts,
    /// Add or delete an overlay link (UDP) between two hosts of an environment.
    Link {
        #[command(subcommand)]
        action: LinkAction,
    },
    /// List overlay links (all, or an environment's, or a host's).
    Links {
        #[arg(long)]
        env: Option<String>,
        #[arg(long)]
        host: Option<String>,
    },
    /// Add or delete a forwarding rule in a host's table.
    Rule {
        #[command(subcommand)]
        action: RuleAction,
    },
    /// List forwarding rules (all, or an environment's, or a host's).
    Rules {
        #[arg(long)]
        env: Option<String>,
        #[arg(long)]
        host: Option<String>,
    },
    /// List the network interfaces a host reported.
    Interfaces { host: String },
    /// Show the configuration-time bound, or set it (seconds).
    Bound { seconds: Option<f64> },
    /// The path a frame takes from one VM's MAC to another.
    Route {
        src: String,
        dst: String,
        /// The environment, when the source MAC is in several.
        #[arg(long)]
        env: Option<String>,
    },
    /// Wait until every registered host has applied the current state.
    Wait,
}

#[derive(Subcommand)]
enum LinkAction {
    Add {
        env: String,
        a: String,
        b: String,
        #[arg(long)]
        wait: bool,
    },
    Delete {
        env: String,
        a: String,
        b: String,
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Subcommand)]
enum RuleAction {
    /// SRC is a MAC, "not MAC" or "any"; DST also "none" (the default rule).
    Add {
        env: String,
        host: String,
        src: String,
        dst: String,
        /// Send over the link to this host.
        #[arg(
            long,
            conflicts_with = "interface",
            required_unless_present = "interface"
        )]
        edge: Option<String>,
        /// Write to this local VM port.
        #[arg(long)]
        interface: Option<String>,
        #[arg(long)]
        wait: bool,
    },
    Delete {
        env: String,
        host: String,
        src: String,
        dst: String,
        #[arg(long)]
        wait: bool,
    },
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("violinctl: {e:#}");
        std::process::exit(1);
    }
}

struct Client {
    url: String,
    token: String,
}

impl Client {
    fn call(&self, method: &str, path: &str, body: Option<&str>) -> Result<Value> {
        let req = ureq::request(method, &format!("{}{path}", self.url.trim_end_matches('/')))
            .set("Authorization", &format!("Bearer {}", self.token));
        let resp = match body {
            Some(b) => req.set("Content-Type", "application/toml").send_string(b),
            None => req.call(),
        };
        Self::answer(resp, &self.url)
    }

    fn call_json(&self, method: &str, path: &str, body: Value) -> Result<Value> {
        let req = ureq::request(method, &format!("{}{path}", self.url.trim_end_matches('/')))
            .set("Authorization", &format!("Bearer {}", self.token));
        Self::answer(req.send_json(body), &self.url)
    }

    fn get_query(&self, path: &str, query: &[(&str, &str)]) -> Result<Value> {
        let mut req = ureq::get(&format!("{}{path}", self.url.trim_end_matches('/')))
            .set("Authorization", &format!("Bearer {}", self.token));
        for (k, v) in query {
            req = req.query(k, v);
        }
        Self::answer(req.call(), &self.url)
    }

    /// Waits (with progress) until every registered host applied `generation`.
    fn wait(&self, generation: u64) -> Result<()> {
        let bound = self.call("GET", "/v1/config-time-bound", None)?;
        let limit = bound["bound_seconds"].as_f64().unwrap_or(30.0).max(1.0);
        let start = std::time::Instant::now();
        let mut last = String::new();
        loop {
            let v = self.get_query("/v1/sync", &[("generation", &generation.to_string())])?;
            let pending = joined(&v["pending"]);
            if pending.is_empty() {
                let n = v["hosts"].as_array().map_or(0, |a| a.len());
                eprintln!(
                    "{n} hosts applied generation {generation} in {:.1} ms",
                    start.elapsed().as_secs_f64() * 1e3
                );
                return Ok(());
            }
            if pending != last {
                eprintln!("waiting for {pending} to apply generation {generation}");
                last = pending.clone();
            }
            if start.elapsed().as_secs_f64() > limit {
                bail!("{pending} did not apply generation {generation} within {limit} s (the configuration-time bound)");
            }
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
    }

    fn answer(resp: Result<ureq::Response, ureq::Error>, url: &str) -> Result<Value> {
        match resp {
            Ok(r) => Ok(r.into_json()?),
            Err(ureq::Error::Status(code, r)) => {
                let v: Value = r.into_json().unwrap_or(Value::Null);
                let msg = v["error"].as_str().unwrap_or("no details").to_string();
                bail!("{msg} (HTTP {code})")
            }
            Err(e) => Err(e).with_context(|| format!("cannot reach the controller at {url}")),
        }
    }
}

/// The environment name a spec file declares (the API checks the rest).
fn spec_name(text: &str) -> Result<String> {
    let v: toml::Value = toml::from_str(text).context("the spec is not valid TOML")?;
    v.get("environment")
        .and_then(|e| e.get("name"))
        .and_then(|n| n.as_str())
        .map(str::to_string)
        .context("environment.name: missing")
}

fn generation(v: &Value) -> Result<u64> {
    v["generation"]
        .as_u64()
        .context("the controller's answer carries no generation")
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or("-").to_string()
}

fn filter<'a>(env: &'a Option<String>, host: &'a Option<String>) -> Vec<(&'a str, &'a str)> {
    let mut q = Vec::new();
    if let Some(e) = env {
        q.push(("environment", e.as_str()));
    }
    if let Some(h) = host {
        q.push(("host", h.as_str()));
    }
    q
}

fn print_changes(v: &Value) {
    let changes = v["changes"].as_array().cloned().unwrap_or_default();
    if changes.is_empty() {
        println!("no changes");
    }
    for c in changes {
        println!("{}", c.as_str().unwrap_or_default());
    }
}

/// A JSON array of strings as "a,b,c".
fn joined(v: &Value) -> String {
    let items: Vec<&str> = v
        .as_array()
        .map(|a| a.iter().filter_map(|x| x.as_str()).collect())
        .unwrap_or_default();
    items.join(",")
}

fn table(rows: &[Vec<String>]) {
    let widths: Vec<usize> = (0..rows[0].len())
        .map(|c| rows.iter().map(|r| r[c].len()).max().unwrap_or(0))
        .collect();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        println!("{}", line.join("  ").trim_end());
    }
}

fn run(cli: Cli) -> Result<()> {
    let token = std::fs::read_to_string(&cli.token_file)
        .with_context(|| format!("--token-file: cannot read {}", cli.token_file.display()))?
        .trim()
        .to_string();
    let c = Client {
        url: cli.url.clone(),
        token,
    };
    let json = cli.output == Output::Json;
    let out = match &cli.command {
        Command::Apply { file, .. } | Command::Diff { file } => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let name = spec_name(&text)?;
            let apply = matches!(cli.command, Command::Apply { .. });
            let path = if apply {
                format!("/v1/environments/{name}")
            } else {
                format!("/v1/environments/{name}/plan")
            };
            let method = if apply { "PUT" } else { "POST" };
            let v = c.call(method, &path, Some(&text))?;
            if !json {
                print_changes(&v);
                if apply {
                    println!("applied {name}");
                }
            }
            if let Command::Apply { wait: true, .. } = cli.command {
                c.wait(generation(&v)?)?;
            }
            v
        }
        Command::Get { name } => {
            let v = c.call("GET", &format!("/v1/environments/{name}"), None)?;
            if !json {
                println!("{}", v["spec"].as_str().unwrap_or_default().trim_end());
            }
            v
        }
        Command::Delete { name, wait } => {
            let v = c.call("DELETE", &format!("/v1/environments/{name}"), None)?;
            if !json {
                println!("deleted {name}");
            }
            if *wait {
                c.wait(generation(&v)?)?;
            }
            v
        }
        Command::Link { action } => {
            let (v, wait) = match action {
                LinkAction::Add { env, a, b, wait } => (
                    c.call_json(
                        "POST",
                        &format!("/v1/environments/{env}/links"),
                        serde_json::json!({ "hosts": [a, b] }),
                    )?,
                    *wait,
                ),
                LinkAction::Delete { env, a, b, wait } => (
                    c.call(
                        "DELETE",
                        &format!("/v1/environments/{env}/links/{a}/{b}"),
                        None,
                    )?,
                    *wait,
                ),
            };
            if !json {
                print_changes(&v);
            }
            if wait {
                c.wait(generation(&v)?)?;
            }
            v
        }
        Command::Rule { action } => {
            let (v, wait) = match action {
                RuleAction::Add { env, host, src, dst, edge, interface, wait } => (
                    c.call_json(
                        "POST",
                        &format!("/v1/environments/{env}/rules"),
                        serde_json::json!({ "host": host, "src": src, "dst": dst, "edge": edge, "interface": interface }),
                    )?,
                    *wait,
                ),
                RuleAction::Delete { env, host, src, dst, wait } => (
                    c.call_json(
                        "DELETE",
                        &format!("/v1/environments/{env}/rules"),
                        serde_json::json!({ "host": host, "src": src, "dst": dst }),
                    )?,
                    *wait,
                ),
            };
            if !json {
                print_changes(&v);
            }
            if wait {
                c.wait(generation(&v)?)?;
            }
            v
        }
        Command::Links { env, host } => {
            let v = c.get_query("/v1/links", &filter(env, host))?;
            if !json {
                let mut rows = vec![vec![
                    "ENVIRONMENT".into(),
                    "VNI".into(),
                    "LINK".into(),
                    "TYPE".into(),
                    "ADDRESSES".into(),
                ]];
                for l in v.as_array().cloned().unwrap_or_default() {
                    rows.push(vec![
                        str_of(&l["environment"]),
                        l["vni"].to_string(),
                        joined(&l["hosts"]).replace(',', "-"),
                        str_of(&l["type"]),
                        joined(&l["addresses"]).replace(',', "-"),
                    ]);
                }
                table(&rows);
            }
            v
        }
        Command::Rules { env, host } => {
            let v = c.get_query("/v1/rules", &filter(env, host))?;
            if !json {
                let mut rows = vec![vec![
                    "ENVIRONMENT".into(),
                    "HOST".into(),
                    "SRC".into(),
                    "DST".into(),
                    "TO".into(),
                    "PRIORITY".into(),
                ]];
                for r in v.as_array().cloned().unwrap_or_default() {
                    let to = match r["edge"].as_str() {
                        Some(h) => format!("link {}-{h}", str_of(&r["host"])),
                        None => format!("interface {}", str_of(&r["interface"])),
                    };
                    let p = r["priority"].as_array().cloned().unwrap_or_default();
                    let prio = if r["default"].as_bool() == Some(true) {
                        "default".to_string()
                    } else {
                        p.get(1).map_or(String::new(), |x| x.to_string())
                    };
                    rows.push(vec![
                        str_of(&r["environment"]),
                        str_of(&r["host"]),
                        str_of(&r["src"]),
                        str_of(&r["dst"]),
                        to,
                        prio,
                    ]);
                }
                table(&rows);
            }
            v
        }
        Command::Interfaces { host } => {
            let v = c.call("GET", &format!("/v1/hosts/{host}/interfaces"), None)?;
            if !json {
                let mut rows = vec![vec![
                    "INTERFACE".into(),
                    "INDEX".into(),
                    "ROLE".into(),
                    "MAC".into(),
                    "MTU".into(),
                ]];
                for i in v.as_array().cloned().unwrap_or_default() {
                    rows.push(vec![
                        str_of(&i["name"]),
                        i["ifindex"].to_string(),
                        str_of(&i["role"]),
                        str_of(&i["mac"]),
                        i["mtu"].to_string(),
                    ]);
                }
                table(&rows);
            }
            v
        }
        Command::Bound { seconds } => {
            let v = match seconds {
                Some(s) => c.call_json(
                    "PUT",
                    "/v1/config-time-bound",
                    serde_json::json!({ "seconds": s }),
                )?,
                None => c.call("GET", "/v1/config-time-bound", None)?,
            };
            if !json {
                let f = |x: &Value| x.as_f64().map_or("unset".into(), |s| format!("{:.3} s", s));
                println!("bound: {}", f(&v["bound_seconds"]));
                println!(
                    "measured (longest recent sync): {}",
                    f(&v["measured_seconds"])
                );
            }
            v
        }
        Command::Route { src, dst, env } => {
            let mut q = vec![("src", src.as_str()), ("dst", dst.as_str())];
            if let Some(e) = env {
                q.push(("environment", e.as_str()));
            }
            let v = c.get_query("/v1/route", &q)?;
            if !json {
                println!(
                    "{} -> {} in {}",
                    str_of(&v["src"]),
                    str_of(&v["dst"]),
                    str_of(&v["environment"])
                );
                for (i, h) in v["hops"]
                    .as_array()
                    .cloned()
                    .unwrap_or_default()
                    .iter()
                    .enumerate()
                {
                    println!(
                        "  {}. {}: {} ({})",
                        i + 1,
                        str_of(&h["host"]),
                        str_of(&h["action"]),
                        str_of(&h["decision"])
                    );
                }
                println!("{}", str_of(&v["outcome"]));
            }
            v
        }
        Command::Wait => {
            let v = c.call("GET", "/v1/sync", None)?;
            c.wait(generation(&v)?)?;
            v
        }
        Command::Envs => {
            let v = c.call("GET", "/v1/environments", None)?;
            if !json {
                let mut rows = vec![vec![
                    "NAME".into(),
                    "VNI".into(),
                    "VMS".into(),
                    "HOSTS".into(),
                ]];
                for e in v.as_array().cloned().unwrap_or_default() {
                    rows.push(vec![
                        e["name"].as_str().unwrap_or_default().to_string(),
                        e["vni"].to_string(),
                        e["vms"].to_string(),
                        joined(&e["hosts"]),
                    ]);
                }
                table(&rows);
            }
            v
        }
        Command::Hosts => {
            let v = c.call("GET", "/v1/hosts", None)?;
            if !json {
                let mut rows = vec![vec![
                    "HOST".into(),
                    "ADDRESS".into(),
                    "VMS".into(),
                    "ENVIRONMENTS".into(),
                    "SYNC".into(),
                ]];
                for h in v.as_array().cloned().unwrap_or_default() {
                    let sync = if h["error"].is_string() {
                        format!("error: {}", str_of(&h["error"]))
                    } else if h["in_sync"].as_bool() == Some(true) {
                        format!("in sync (generation {})", h["acked_generation"])
                    } else if h["connected"].as_bool() == Some(true) {
                        format!("behind (generation {})", h["acked_generation"])
                    } else if h["registered"].as_bool() == Some(true) {
                        "disconnected".into()
                    } else {
                        "not registered".into()
                    };
                    rows.push(vec![
                        h["name"].as_str().unwrap_or_default().to_string(),
                        h["address"].as_str().unwrap_or_default().to_string(),
                        h["vms"].to_string(),
                        joined(&h["environments"]),
                        sync,
                    ]);
                }
                table(&rows);
            }
            v
        }
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&out)?);
    }
    Ok(())
}
