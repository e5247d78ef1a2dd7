//! The lab's controller: `violin-controller` on the underlay (an address on the switch's
//! bridge, as a management host would have), the daemons following it, and `violinctl`
//! run next to it. Environment specs for the lab's VMs are generated here.
use std::{
    collections::BTreeSet,
    fmt::Write,
    fs,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::{
    lab::{switch_ns, Lab, UNDERLAY_SUBNET},
    sys::{ns_output, ns_run},
};

pub const CONTROLLER_PORT: u16 = 7800;

pub fn controller_ip() -> String {
    format!("{UNDERLAY_SUBNET}.254")
}

pub fn controller_url() -> String {
    format!("http://{}:{CONTROLLER_PORT}", controller_ip())
}

impl Lab {
    /// A binary built next to the lab's `violind` (same profile).
    pub fn sibling(&self, name: &str) -> std::path::PathBuf {
        self.spec.violind.with_file_name(name)
    }

    pub fn token_file(&self) -> std::path::PathBuf {
        self.dir.join("controller.token")
    }

    fn controller_pid_file(&self) -> std::path::PathBuf {
        self.dir.join("controller.pid")
    }

    /// The token of every daemon's own API (`api_token_file`): the lab's operators', kept
    /// apart from the controller's administrator token and from the hosts' credentials.
    pub fn daemon_token_file(&self) -> std::path::PathBuf {
        self.dir.join("daemon-api.token")
    }

    /// Host `i`'s own credential for the controller.
    pub fn host_token_file(&self, i: usize) -> std::path::PathBuf {
        self.dir.join(format!("h{}.token", i + 1))
    }

    /// Issues host `i` its credential (a host may register, sync and report only as
    /// itself) into `host_token_file(i)`.
    pub fn issue_host_credential(&self, i: usize) -> Result<()> {
        let file = self.host_token_file(i);
        let _ = fs::remove_file(&file);
        self.violinctl(&[
            "credential",
            "create",
            self.hosts[i].host_id(),
            "--role",
            "host",
            "--out",
            &file.to_string_lossy(),
        ])
        .map(|_| ())
        .with_context(|| format!("issuing {}'s credential", self.hosts[i].host_id()))
    }

    /// Starts (or restarts) the controller on the lab's state database and waits until
    /// it answers.
    pub fn start_controller(&mut self) -> Result<()> {
        let sw = switch_ns(&self.spec.name);
        let addr = format!("{}/24", controller_ip());
        let have = ns_run(&sw, "ip", &["-4", "addr", "show", "dev", "br0"])?;
        if !have.contains(&controller_ip()) {
            ns_run(&sw, "ip", &["addr", "add", &addr, "dev", "br0"])?;
            ns_run(&sw, "ip", &["link", "set", "lo", "up"])?;
        }
        for file in [self.token_file(), self.daemon_token_file()] {
            if !file.exists() {
                fs::write(&file, format!("lab-{}-{:016x}", self.spec.name, rand_u64()))?;
            }
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("controller.log"))?;
        let listen = format!("{}:{CONTROLLER_PORT}", controller_ip());
        let state = self.dir.join("controller.redb");
        // Only the network namespace: `ip netns exec` would give the controller a mount
        // namespace of its own, where the namespaces VioCluster's provisioner makes for
        // borrowed machines would be invisible to the lab.
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{sw}"))
            .arg("--")
            .arg(self.sibling("violin-controller"))
            .args(["--listen", &listen, "--state"])
            .arg(&state)
            .arg("--token-file")
            .arg(self.token_file())
            .args(
                self.spec
                    .managed
                    .as_ref()
                    .and_then(|m| m.period_s)
                    .map(|p| ["--manager-period-s".to_string(), p.to_string()])
                    .into_iter()
                    .flatten(),
            )
            .args(
                self.spec
                    .viocluster
                    .as_ref()
                    .map(|_| {
                        [
                            "--brokers".to_string(),
                            self.brokers_file().display().to_string(),
                        ]
                    })
                    .into_iter()
                    .flatten(),
            )
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .context("starting violin-controller")?;
        fs::write(self.controller_pid_file(), child.id().to_string())?;
        self.controller = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(c) = self.controller.as_mut() {
                if let Some(status) = c.try_wait()? {
                    bail!(
                        "violin-controller exited during start-up ({status}): {}",
                        fs::read_to_string(self.dir.join("controller.log")).unwrap_or_default()
                    );
                }
            }
            if self.violinctl(&["envs"]).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("violin-controller did not answer within 30 s");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Kills the controller without letting it finish anything (a crash).
    pub fn kill_controller(&mut self) -> Result<()> {
        if let Some(mut c) = self.controller.take() {
            // nsenter execs the controller, so this is its pid.
            stop_pid_now(c.id() as i32);
            let _ = c.wait();
        }
        let _ = fs::remove_file(self.controller_pid_file());
        Ok(())
    }

    /// Runs `violinctl ARGS` against the lab's controller; Ok(stdout) or Err(stderr).
    pub fn violinctl(&self, args: &[&str]) -> Result<String> {
        let sw = switch_ns(&self.spec.name);
        let token = self.token_file().to_string_lossy().into_owned();
        let url = controller_url();
        let ctl = self.sibling("violinctl").to_string_lossy().into_owned();
        let mut full = vec![ctl.as_str(), "--url", &url, "--token-file", &token];
        full.extend_from_slice(args);
        let out = ns_output(&sw, full[0], &full[1..])?;
        if !out.status.success() {
            bail!(
                "violinctl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `violinctl -o json ARGS`, read as the contract's type of that answer.
    pub fn violinctl_as<T: serde::de::DeserializeOwned>(&self, args: &[&str]) -> Result<T> {
        let mut full = vec!["-o", "json"];
        full.extend_from_slice(args);
        let out = self.violinctl(&full)?;
        serde_json::from_str(&out).with_context(|| format!("parsing violinctl output: {out}"))
    }

    /// Creates every environment of the lab through `violinctl apply --wait` (one spec per
    /// environment, `env<E>` with VNI 1000 + E, written to the lab directory); returns
    /// violinctl's output (the plans).
    pub fn apply_environments(&self) -> Result<String> {
        let mut out = String::new();
        for e in 0..self.spec.envs {
            let name = format!("env{e}");
            let spec = self.env_spec(e, &name, crate::lab::BASE_VNI + e as u32, "");
            out.push_str(&self.apply_spec(&name, &spec)?);
        }
        Ok(out)
    }

    /// The topology VTTIF declared for environment `env`: its edges as (source,
    /// destination) VM names, and how many changes it declared.
    pub fn declared_topology(&self, env: &str) -> Result<(BTreeSet<(String, String)>, u64)> {
        let t: violin_api::rest::AppTopology = self.violinctl_as(&["topology", env])?;
        let edges = t.edges.into_iter().map(|e| (e.src, e.dst)).collect();
        Ok((edges, t.changes))
    }

    /// Polls every 250 ms until `env`'s declared edges are `want` or `within` passes;
    /// returns what it saw last.
    pub fn settle_topology(
        &self,
        env: &str,
        want: &BTreeSet<(String, String)>,
        within: Duration,
    ) -> Result<(BTreeSet<(String, String)>, u64)> {
        let start = Instant::now();
        loop {
            let got = self.declared_topology(env)?;
            if got.0 == *want || start.elapsed() > within {
                return Ok(got);
            }
            thread::sleep(Duration::from_millis(250));
        }
    }

    /// Writes `spec` to the lab directory as `NAME.toml` and applies it through
    /// `violinctl apply --wait`; returns the plan violinctl printed. A failure carries the
    /// daemons' logs.
    pub fn apply_spec(&self, name: &str, spec: &str) -> Result<String> {
        let file = self.dir.join(format!("{name}.toml"));
        fs::write(&file, spec)?;
        self.violinctl(&["apply", "--wait", &file.to_string_lossy()])
            .with_context(|| format!("applying {name}\n{}", self.daemon_logs()))
    }

    /// Polls `f` every 500 ms until it gives Some; after `within`, panics with `what` and
    /// the controller's and daemons' logs (for tests, whose failures must say why).
    pub fn until<T>(
        &self,
        within: std::time::Duration,
        what: &str,
        mut f: impl FnMut() -> Option<T>,
    ) -> T {
        crate::poll::until(within, std::time::Duration::from_millis(500), what, || {
            Ok(f())
        })
        .unwrap_or_else(|e| {
            panic!(
                "{e:#}\ncontroller log:\n{}\n{}",
                fs::read_to_string(self.dir.join("controller.log")).unwrap_or_default(),
                self.daemon_logs()
            )
        })
    }

    /// The controller's /metrics text, fetched from the lab's switch namespace.
    pub fn controller_metrics(&self) -> Result<String> {
        let addr: std::net::SocketAddr = format!("{}:{CONTROLLER_PORT}", controller_ip())
            .parse()
            .context("the controller's address")?;
        let sw = crate::lab::switch_ns(&self.spec.name);
        let (code, text) = crate::traffic::http_get(&sw, addr, "/metrics")?;
        if code != 200 {
            bail!("GET /metrics: {code}: {text}");
        }
        Ok(text)
    }

    /// An environment spec holding the lab's VMs of environment `env`, named `name`.
    /// `extra` is appended (links, rules, policies).
    pub fn env_spec(&self, env: usize, name: &str, vni: u32, extra: &str) -> String {
        let vms: Vec<&crate::lab::Vm> = self.vms.iter().filter(|v| v.env == env).collect();
        self.spec_of(&vms, name, vni, extra)
    }

    /// An environment spec holding `vms` (the lab's Violin hosts all listed).
    pub fn spec_of(&self, vms: &[&crate::lab::Vm], name: &str, vni: u32, extra: &str) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "[environment]\nname = {name:?}\nvni = {vni}\n");
        for h in self.hosts.iter().filter(|h| h.kind.runs_violind()) {
            let _ = writeln!(
                s,
                "[[host]]\nname = {:?}\naddress = \"{}\"\n",
                h.host_id(),
                h.underlay_ip
            );
        }
        for v in vms {
            let _ = writeln!(
                s,
                "[[vm]]\nname = {:?}\nhost = {:?}\nport = {:?}\nmac = {:?}\nip = \"{}\"\n",
                vm_name(v),
                self.hosts[v.host].host_id(),
                v.port,
                crate::lab::mac_string(&v.mac),
                v.ip
            );
        }
        s.push_str(extra);
        s
    }
}

/// Pairs of indexes into `vms` as (source, destination) VM names, as VTTIF's edges are.
pub fn named_pairs(vms: &[crate::lab::Vm], pairs: &[(usize, usize)]) -> BTreeSet<(String, String)> {
    pairs
        .iter()
        .map(|&(a, b)| (vm_name(&vms[a]), vm_name(&vms[b])))
        .collect()
}

/// The name a VM gets in generated specs: host and index, e.g. `h1v2`; a guest's is its
/// libvirt domain's (the controller migrates it by that name).
pub fn vm_name(v: &crate::lab::Vm) -> String {
    match &v.guest {
        Some(g) => g.domain.clone(),
        None => v.ns.rsplit('-').next().unwrap_or(&v.ns).to_string(),
    }
}

fn stop_pid_now(pid: i32) {
    // SAFETY: kill(2) takes only integers and accesses no memory of this process. The only
    // caller, kill_controller, passes the id of the controller Child it waits for right
    // after; unless an earlier try_wait() already reaped it, the pid still names that child.
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    if let Ok(mut f) = fs::File::open("/dev/urandom") {
        use std::io::Read;
        let _ = f.read_exact(&mut b);
    }
    u64::from_le_bytes(b)
}
