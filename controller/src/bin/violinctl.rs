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
    Apply { file: PathBuf },
    /// Show what applying a spec would change, without changing anything.
    Diff { file: PathBuf },
    /// Show one environment, with its spec.
    Get { name: String },
    /// Delete an environment.
    Delete { name: String },
    /// List environments.
    Envs,
    /// List hosts.
    Hosts,
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
        match resp {
            Ok(r) => Ok(r.into_json()?),
            Err(ureq::Error::Status(code, r)) => {
                let v: Value = r.into_json().unwrap_or(Value::Null);
                let msg = v["error"].as_str().unwrap_or("no details").to_string();
                bail!("{msg} (HTTP {code})")
            }
            Err(e) => {
                Err(e).with_context(|| format!("cannot reach the controller at {}", self.url))
            }
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
        Command::Apply { file } | Command::Diff { file } => {
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
            v
        }
        Command::Get { name } => {
            let v = c.call("GET", &format!("/v1/environments/{name}"), None)?;
            if !json {
                println!("{}", v["spec"].as_str().unwrap_or_default().trim_end());
            }
            v
        }
        Command::Delete { name } => {
            let v = c.call("DELETE", &format!("/v1/environments/{name}"), None)?;
            if !json {
                println!("deleted {name}");
            }
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
                ]];
                for h in v.as_array().cloned().unwrap_or_default() {
                    rows.push(vec![
                        h["name"].as_str().unwrap_or_default().to_string(),
                        h["address"].as_str().unwrap_or_default().to_string(),
                        h["vms"].to_string(),
                        joined(&h["environments"]),
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
