//! Real etcd members (Debian's etcd-server) for the replicated controller's tests: a
//! cluster of one or more members, each with its own data directory and addresses, on
//! loopback or in lab namespaces. Members are killed (and their data removed) on drop.
use std::{
    path::PathBuf,
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

pub struct Member {
    pub name: String,
    /// Where clients reach it: `http://IP:PORT`.
    pub client_url: String,
    peer_url: String,
    /// The network namespace it runs in (None: the test's own).
    netns: Option<String>,
    dir: PathBuf,
    child: Option<Child>,
    /// The cluster's members (`--initial-cluster`) and token, for restarts.
    initial: String,
    token: String,
}

pub struct Cluster {
    pub members: Vec<Member>,
}

/// A free TCP port on loopback (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("binding a loopback port")
}

impl Member {
    fn spawn(&mut self) -> Result<()> {
        let (initial, token) = (self.initial.clone(), self.token.clone());
        let mut c = match &self.netns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, "etcd"]);
                c
            }
            None => Command::new("etcd"),
        };
        c.args(["--name", &self.name, "--data-dir"])
            .arg(&self.dir)
            .args(["--listen-client-urls", &self.client_url])
            .args(["--advertise-client-urls", &self.client_url])
            .args(["--listen-peer-urls", &self.peer_url])
            .args(["--initial-advertise-peer-urls", &self.peer_url])
            .args(["--initial-cluster", &initial])
            // A restart finds its data directory and ignores the initial flags.
            .args(["--initial-cluster-state", "new"])
            .args(["--initial-cluster-token", &token])
            // Elections in tenths of a second, so that the tests' faults heal quickly.
            .args(["--heartbeat-interval", "50", "--election-timeout", "500"])
            .stdout(Stdio::null())
            .stderr(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.with_extension("log"))
                    .map(Stdio::from)
                    .unwrap_or(Stdio::null()),
            );
        self.child =
            Some(c.spawn().context(
                "cannot run etcd (Debian's etcd-server; `cargo xtask setup` installs it)",
            )?);
        Ok(())
    }

    /// Kills the member (as a crash would); its data stays for `restart`.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts a killed member again on its data.
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        self.spawn()
    }

    /// Whether it answers a health check within `within`.
    pub fn healthy(&self, within: Duration) -> bool {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let mut c = match &self.netns {
                Some(ns) => {
                    let mut c = Command::new("ip");
                    c.args(["netns", "exec", ns, "etcdctl"]);
                    c
                }
                None => Command::new("etcdctl"),
            };
            let ok = c
                .env("ETCDCTL_API", "3")
                .args(["--endpoints", &self.client_url, "--command-timeout=1s"])
                .args(["endpoint", "health"])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if ok {
                return true;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        false
    }
}

impl Drop for Member {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(self.dir.with_extension("log"));
    }
}

impl Cluster {
    /// `n` members on loopback, named after `tag`.
    pub fn local(tag: &str, n: usize) -> Result<Cluster> {
        let places = (0..n).map(|_| (None, "127.0.0.1".to_string())).collect();
        Cluster::start(tag, places)
    }

    /// One member per (namespace, address) place; ports are picked free on loopback,
    /// which every namespace has to itself, so they only need to differ from each other.
    pub fn start(tag: &str, places: Vec<(Option<String>, String)>) -> Result<Cluster> {
        let mut members: Vec<Member> = places
            .into_iter()
            .enumerate()
            .map(|(i, (netns, ip))| {
                let name = format!("{tag}-m{}", i + 1);
                let dir =
                    std::env::temp_dir().join(format!("violin-etcd-{name}-{}", std::process::id()));
                let _ = std::fs::remove_dir_all(&dir);
                Member {
                    client_url: format!("http://{ip}:{}", free_port()),
                    peer_url: format!("http://{ip}:{}", free_port()),
                    name,
                    netns,
                    dir,
                    child: None,
                    initial: String::new(),
                    token: tag.to_string(),
                }
            })
            .collect();
        let initial = members
            .iter()
            .map(|m| format!("{}={}", m.name, m.peer_url))
            .collect::<Vec<_>>()
            .join(",");
        for m in &mut members {
            m.initial = initial.clone();
            m.spawn()?;
        }
        let cluster = Cluster { members };
        for m in &cluster.members {
            if !m.healthy(Duration::from_secs(20)) {
                bail!(
                    "etcd member {} at {} did not become healthy in 20 s; its log: {}",
                    m.name,
                    m.client_url,
                    m.dir.with_extension("log").display()
                );
            }
        }
        Ok(cluster)
    }

    /// The members' client URLs, comma-separated (as `--etcd-endpoints` takes them).
    pub fn endpoints(&self) -> String {
        self.members
            .iter()
            .map(|m| m.client_url.as_str())
            .collect::<Vec<_>>()
            .join(",")
    }
}
