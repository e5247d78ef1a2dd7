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

/// The controller's address on an IPv4 lab ([`Lab::replica_addr`] on either).
pub fn controller_ip() -> String {
    format!("{UNDERLAY_SUBNET}.254")
}

/// The controller's URL on an IPv4 lab.
pub fn controller_url() -> String {
    format!("http://{}:{CONTROLLER_PORT}", controller_ip())
}

/// etcd member `k`'s (from 0) address and namespace.
fn etcd_place(lab: &str, k: usize) -> (String, String) {
    (
        format!("{lab}-e{}", k + 1),
        format!("{UNDERLAY_SUBNET}.{}", 241 + k),
    )
}

/// Members of the lab's etcd cluster.
pub const ETCD_MEMBERS: usize = 3;

impl Lab {
    /// A binary built next to the lab's `violind` (same profile).
    pub fn sibling(&self, name: &str) -> std::path::PathBuf {
        self.spec.violind.with_file_name(name)
    }

    pub fn token_file(&self) -> std::path::PathBuf {
        self.dir.join("controller.token")
    }

    /// Replica `r`'s API: the first on the underlay's address 254 (the lab's controller),
    /// the next below it.
    pub fn replica_addr(&self, r: usize) -> std::net::SocketAddr {
        let ip = self.spec.underlay_addr(254 - r as u8);
        std::net::SocketAddr::new(ip, CONTROLLER_PORT)
    }

    /// How many controller processes the lab runs.
    pub fn replica_count(&self) -> usize {
        self.spec.replicas.max(1)
    }

    /// The controller's URL, or its replicas' comma-separated (as violinctl and violind
    /// take them).
    pub fn controller_urls(&self) -> String {
        (0..self.replica_count())
            .map(|r| format!("http://{}", self.replica_addr(r)))
            .collect::<Vec<_>>()
            .join(",")
    }

    fn replica_file(&self, r: usize, ext: &str) -> std::path::PathBuf {
        match r {
            0 => self.dir.join(format!("controller.{ext}")),
            _ => self.dir.join(format!("controller-{}.{ext}", r + 1)),
        }
    }

    /// Replica `r`'s log.
    pub fn controller_log(&self, r: usize) -> std::path::PathBuf {
        self.replica_file(r, "log")
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

    /// Starts (or restarts) the controller, every replica of it (on the lab's etcd,
    /// started first if need be), and waits until it answers (and one replica leads).
    pub fn start_controller(&mut self) -> Result<()> {
        for file in [self.token_file(), self.daemon_token_file()] {
            if !file.exists() {
                fs::write(&file, format!("lab-{}-{:016x}", self.spec.name, rand_u64()))?;
            }
        }
        if self.spec.replicas > 0 && self.etcd.is_none() {
            self.start_etcd()?;
        }
        self.controllers.resize_with(self.replica_count(), || None);
        for r in 0..self.replica_count() {
            self.start_replica(r)?;
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            for r in 0..self.controllers.len() {
                if let Some(c) = self.controllers[r].as_mut() {
                    if let Some(status) = c.try_wait()? {
                        bail!(
                            "violin-controller exited during start-up ({status}): {}",
                            fs::read_to_string(self.controller_log(r)).unwrap_or_default()
                        );
                    }
                }
            }
            let leads = self.spec.replicas == 0 || self.leading_replica().is_some();
            if leads && self.violinctl(&["envs"]).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("violin-controller did not answer within 30 s");
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Starts replica `r` (the only controller when `r` is 0 without replicas).
    pub fn start_replica(&mut self, r: usize) -> Result<()> {
        let sw = switch_ns(&self.spec.name);
        let listen = self.replica_addr(r);
        let ip = listen.ip();
        let have = ns_run(&sw, "ip", &["addr", "show", "dev", "br0"])?;
        if !have.contains(&format!(" {ip}/")) {
            crate::lab::add_underlay_addr(&sw, "br0", ip)?;
            ns_run(&sw, "ip", &["link", "set", "lo", "up"])?;
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.controller_log(r))?;
        let listen = listen.to_string();
        let store: Vec<String> = match &self.etcd {
            Some(etcd) if self.spec.replicas > 0 => vec![
                "--store".into(),
                "etcd".into(),
                "--etcd-endpoints".into(),
                etcd.endpoints(),
                "--leader-ttl-s".into(),
                "3".into(),
            ],
            _ => vec![
                "--state".into(),
                self.dir.join("controller.redb").display().to_string(),
            ],
        };
        // Only the network namespace: `ip netns exec` would give the controller a mount
        // namespace of its own, where the namespaces VioCluster's provisioner makes for
        // borrowed machines would be invisible to the lab.
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{sw}"))
            .arg("--")
            .arg(self.sibling("violin-controller"))
            .args(["--listen", &listen])
            .args(&store)
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
        fs::write(self.replica_file(r, "pid"), child.id().to_string())?;
        self.controllers.resize_with(self.replica_count(), || None);
        self.controllers[r] = Some(child);
        Ok(())
    }

    /// Kills the controller, every replica, without letting it finish anything (a crash).
    pub fn kill_controller(&mut self) -> Result<()> {
        for r in 0..self.controllers.len() {
            self.kill_replica(r);
        }
        Ok(())
    }

    /// Kills replica `r` (a crash).
    pub fn kill_replica(&mut self, r: usize) {
        if let Some(mut c) = self.controllers.get_mut(r).and_then(Option::take) {
            // nsenter execs the controller, so this is its pid.
            stop_pid_now(c.id() as i32);
            let _ = c.wait();
        }
        let _ = fs::remove_file(self.replica_file(r, "pid"));
    }

    /// Replica `r`'s health as it answers it (role, leader, generation).
    pub fn replica_health(&self, r: usize) -> Option<violin_api::rest::Health> {
        let sw = switch_ns(&self.spec.name);
        let addr = self.replica_addr(r);
        let (code, body) = crate::traffic::http_get(&sw, addr, "/healthz").ok()?;
        (code == 200)
            .then(|| serde_json::from_str(&body).ok())
            .flatten()
    }

    /// The replica that leads now, by its own word.
    pub fn leading_replica(&self) -> Option<usize> {
        (0..self.replica_count()).find(|&r| {
            self.controllers.get(r).is_some_and(Option::is_some)
                && self
                    .replica_health(r)
                    .and_then(|h| h.replica)
                    .is_some_and(|p| p.role == "leader")
        })
    }

    /// The lab's etcd cluster: a namespace per member on the underlay.
    fn start_etcd(&mut self) -> Result<()> {
        let sw = switch_ns(&self.spec.name);
        let mut places = Vec::new();
        for k in 0..ETCD_MEMBERS {
            let (ns, ip) = etcd_place(&self.spec.name, k);
            let port = self.etcd_port(k);
            crate::sys::ip(&["netns", "add", &ns])?;
            ns_run(&ns, "ip", &["link", "set", "lo", "up"])?;
            crate::sys::ip(&[
                "link", "add", "name", &port, "netns", &sw, "type", "veth", "peer", "name", "ul0",
                "netns", &ns,
            ])?;
            ns_run(&sw, "ip", &["link", "set", &port, "master", "br0", "up"])?;
            ns_run(
                &ns,
                "ip",
                &["addr", "add", &format!("{ip}/24"), "dev", "ul0"],
            )?;
            ns_run(&ns, "ip", &["link", "set", "ul0", "up"])?;
            places.push((Some(ns), ip));
        }
        self.etcd = Some(crate::etcd::Cluster::start(&self.spec.name, places)?);
        Ok(())
    }

    /// etcd member `k`'s port on the switch.
    fn etcd_port(&self, k: usize) -> String {
        format!("{}e{}", self.spec.name, k + 1)
    }

    /// Cuts etcd member `k` off the underlay (`cut`), or joins it again: a partition of
    /// one member, a minority of the three.
    pub fn partition_etcd(&self, k: usize, cut: bool) -> Result<()> {
        let state = if cut { "down" } else { "up" };
        ns_run(
            &switch_ns(&self.spec.name),
            "ip",
            &["link", "set", &self.etcd_port(k), state],
        )?;
        Ok(())
    }

    /// Runs `violinctl ARGS` against the lab's controller; Ok(stdout) or Err(stderr).
    pub fn violinctl(&self, args: &[&str]) -> Result<String> {
        let (code, out, err) = self.violinctl_exit(args)?;
        if code != 0 {
            bail!("violinctl {}: {}", args.join(" "), err.trim());
        }
        Ok(out)
    }

    /// `violinctl ARGS` as an operator runs it: its exit code, standard output and error,
    /// whatever the code.
    pub fn violinctl_exit(&self, args: &[&str]) -> Result<(i32, String, String)> {
        let sw = switch_ns(&self.spec.name);
        let token = self.token_file().to_string_lossy().into_owned();
        let url = self.controller_urls();
        let ctl = self.sibling("violinctl").to_string_lossy().into_owned();
        let mut full = vec![ctl.as_str(), "--url", &url, "--token-file", &token];
        full.extend_from_slice(args);
        let out = ns_output(&sw, full[0], &full[1..])?;
        Ok((
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
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
        let addr = self.replica_addr(0);
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

/// A violin-controller run as a plain process (no lab), which prints the address it bound
/// first; killed on drop.
pub struct LocalController {
    pub child: std::process::Child,
    pub url: String,
}

impl LocalController {
    /// Spawns `cmd` (a violin-controller command line listening on port 0, say) and
    /// reads the address it bound.
    pub fn start(mut cmd: Command) -> Result<LocalController> {
        let mut child = cmd
            .stdout(Stdio::piped())
            .spawn()
            .context("starting violin-controller")?;
        let mut line = String::new();
        let stdout = child.stdout.take().context("violin-controller's stdout")?;
        std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)?;
        let Some(addr) = line.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            let _ = child.wait();
            bail!("violin-controller did not start: it said {line:?}");
        };
        Ok(LocalController {
            url: format!("http://{addr}"),
            child,
        })
    }
}

impl Drop for LocalController {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
