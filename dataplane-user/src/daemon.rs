//! `violind run`: set the datapath up, keep the slow path and next hops current, reload on
//! SIGHUP, and on exit either detach everything (SIGTERM/SIGINT) or leave the pinned
//! datapath forwarding for the next daemon (SIGUSR1, `violind stop --keep-forwarding`).
use std::{
    collections::BTreeSet,
    path::Path,
    sync::{mpsc, Arc, RwLock},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use tracing::{error, info, warn};

use dataplane_common::maps::programs;
use violin_api::share::{Registration, Share};

use crate::{
    config::{Config, PortMode},
    datapath::{self, tc_pin_name, xdp_pin_name, Datapath},
    follow::{self, Follower, Update},
    host::{self, Paths},
    neighbor,
    slowpath::SlowPath,
    topology::Topology,
};

/// Enters the configured namespace. Must precede every thread the process starts.
pub fn enter(config: &Config) -> Result<()> {
    if let Some(ns) = &config.netns {
        host::enter_netns(ns)?;
    }
    Ok(())
}

fn ready_file(paths: &Paths) -> std::path::PathBuf {
    paths.run_dir.join("ready")
}

/// Attaches the programs to the underlay and every port (XDP or TC per `port_mode`), and
/// detaches every other pinned link: interfaces no longer configured, and a port's
/// program of the other mode.
fn attach_all(dp: &mut Datapath, topo: &Topology, mode: PortMode) -> Result<()> {
    dp.attach_xdp(programs::UNDERLAY, &topo.underlay)?;
    let mut wanted: BTreeSet<String> = BTreeSet::from([xdp_pin_name(&topo.underlay.name)]);
    for p in &topo.ports {
        match mode {
            PortMode::Xdp => {
                datapath::detach(dp.paths(), &tc_pin_name(&p.dev.name));
                dp.attach_xdp(programs::PORT, &p.dev)?;
                wanted.insert(xdp_pin_name(&p.dev.name));
            }
            PortMode::Tc => {
                datapath::detach(dp.paths(), &xdp_pin_name(&p.dev.name));
                dp.attach_tc(programs::PORT_TC, &p.dev)?;
                wanted.insert(tc_pin_name(&p.dev.name));
            }
        }
    }
    for name in datapath::pinned_links(dp.paths()) {
        if !wanted.contains(&name) {
            datapath::detach(dp.paths(), &name);
        }
    }
    Ok(())
}

/// Looks up each peer's next hop; publishes changes to the datapath and slow path. With
/// `settle`, waits (briefly) for next hops still unknown, so that a change is acknowledged
/// when its links can carry frames, not a refresh later.
fn refresh_next_hops(dp: &mut Datapath, topology: &RwLock<Topology>, settle: Option<Duration>) {
    let deadline = settle.map(|d| Instant::now() + d);
    let mut probed = false;
    loop {
        let peers = topology.read().unwrap().peers.clone();
        let mut unresolved = 0;
        for (i, peer) in peers.iter().enumerate() {
            let mac = neighbor::lookup(peer.addr);
            if mac.is_none() {
                unresolved += 1;
                if !probed {
                    neighbor::probe(peer.addr);
                }
            }
            if mac == peer.next_hop_mac || mac.is_none() {
                continue;
            }
            let mut t = topology.write().unwrap();
            t.peers[i].next_hop_mac = mac;
            if let Err(e) = Topology::publish_peer(&mut dp.maps, &t.peers[i]) {
                warn!(peer = %peer.addr, error = %e, "cannot update peer");
            } else {
                info!(peer = %peer.addr, mac = %crate::netdev::format_mac(&mac.unwrap()), "next hop resolved");
            }
        }
        probed = true;
        match deadline {
            Some(d) if unresolved > 0 && Instant::now() < d => {
                thread::sleep(Duration::from_millis(1))
            }
            _ => return,
        }
    }
}

/// How long a change waits for its new peers' next hops (one ARP exchange on a LAN).
const SETTLE: Duration = Duration::from_millis(500);

/// Resolves and applies `config`; attaches the programs unless `attached` says they
/// already sit where this configuration wants them (same ports, mode and underlay).
fn setup(config: &Config, dp: &mut Datapath, attached: bool) -> Result<Topology> {
    let topo = Topology::resolve(config, &dp.maps)?;
    topo.apply(&mut dp.maps)?;
    if !attached {
        attach_all(dp, &topo, config.port_mode)?;
    }
    Ok(topo)
}

type Running = (Datapath, Arc<RwLock<Topology>>, Option<SlowPath>);

/// Records what is being served, for the API's listings and a restart's first setup.
fn record(paths: &Paths, config: &Config, generation: u64) {
    let share = Share {
        generation,
        environments: config.environments.clone(),
        peers: config.peers.clone(),
    };
    if let Err(e) = follow::store_cached(&paths.share(), &share) {
        warn!(error = %e, "cannot record the served share");
    }
}

fn start(config: &Config, paths: &Paths) -> Result<Running> {
    let mut dp = Datapath::load(paths, config.debug_datapath)?;
    let topology = Arc::new(RwLock::new(setup(config, &mut dp, false)?));
    refresh_next_hops(&mut dp, &topology, Some(SETTLE));
    let slow = Some(SlowPath::start(topology.clone(), paths, Vec::new())?);
    if let Some(listen) = config.api_listen {
        crate::api::serve(
            listen,
            paths,
            &config.underlay.interface,
            config.api_token()?,
        )?;
    }
    std::fs::write(ready_file(paths), b"")?;
    Ok((dp, topology, slow))
}

/// With a controller: the share served before (if this is a restart) on top of the file's
/// host settings, so forwarding goes on unchanged until the controller answers.
fn initial(paths: &Paths, file: &Config) -> (Config, u64) {
    if file.controller.is_none() {
        return (file.clone(), 0);
    }
    match follow::load_cached(&paths.share()) {
        Some(s) => match file.with_share(s.environments, s.peers) {
            Ok(c) => {
                info!(
                    generation = s.generation,
                    "serving the last share until the controller answers"
                );
                (c, s.generation)
            }
            Err(e) => {
                warn!(error = %e, "the recorded share does not fit this configuration; ignoring it");
                (file.clone(), 0)
            }
        },
        None => (file.clone(), 0),
    }
}

pub fn run(config_path: &Path, file_config: Config) -> Result<()> {
    host::check_privileges()?;
    host::ensure_bpffs()?;
    let paths = Paths::new(&file_config.host_id);
    host::write_pid_file(&paths.pid_file())?;
    let (config, mut generation) = initial(&paths, &file_config);
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])
        .context("installing signal handlers")?;
    let resumed = Datapath::has_pinned_state(&paths);
    let started = start(&config, &paths);
    let (mut dp, topology, mut slow) = match started {
        Ok(s) => s,
        Err(e) => {
            // A failed first start leaves nothing behind; a failed restart leaves the
            // previous daemon's datapath forwarding.
            if !resumed {
                let _ = datapath::teardown(&paths);
            }
            let _ = std::fs::remove_file(paths.pid_file());
            return Err(e);
        }
    };
    info!(host = %config.host_id, config = %config_path.display(), "violind ready");
    record(&paths, &config, generation);

    let (tx, updates) = mpsc::channel::<Update>();
    let mut acks = None;
    if let Some(c) = &file_config.controller {
        let ports = config.ports().map(|(p, _)| p.to_string()).collect();
        let registration = Registration {
            address: config.underlay.address,
            api: config.api_listen.map(|a| a.to_string()),
            interfaces: crate::api::interfaces(&config.underlay.interface, &ports),
        };
        let follower = Follower::new(c, &config.host_id)?;
        follow::start(follower.clone(), registration, tx)?;
        acks = Some(follower);
    }

    let mut file_config = file_config;
    let mut config = config;
    let mut last_refresh = Instant::now();
    let keep_forwarding = loop {
        let mut exit = None;
        for sig in signals.pending() {
            match sig {
                SIGHUP => {
                    info!(config = %config_path.display(), "SIGHUP: reloading");
                    let reloaded = Config::load(config_path).and_then(|file| {
                        let new = if file.controller.is_some() {
                            file.with_share(config.environments.clone(), config.peers.clone())?
                        } else {
                            file.clone()
                        };
                        reconfigure(&config, new, &mut dp, &topology, &mut slow).map(|c| (file, c))
                    });
                    match reloaded {
                        Ok((file, c)) => {
                            file_config = file;
                            config = c;
                            record(&paths, &config, generation);
                            info!("reload complete");
                        }
                        Err(e) => error!(
                            error = format!("{e:#}"),
                            "reload failed; keeping the running configuration"
                        ),
                    }
                }
                SIGUSR1 => exit = Some(true),
                _ => exit = Some(false),
            }
        }
        if let Some(keep) = exit {
            break keep;
        }
        if last_refresh.elapsed() >= Duration::from_secs(1) {
            last_refresh = Instant::now();
            refresh_next_hops(&mut dp, &topology, None);
        }
        dp.flush_logs();
        match updates.recv_timeout(Duration::from_millis(100)) {
            Ok(update) => {
                let result = match update.share {
                    None => Ok(()),
                    Some(share) => file_config
                        .with_share(share.environments, share.peers)
                        .map_err(anyhow::Error::from)
                        .and_then(|new| reconfigure(&config, new, &mut dp, &topology, &mut slow))
                        .map(|c| config = c),
                };
                let error = result.err().map(|e| format!("{e:#}"));
                match &error {
                    None => {
                        generation = update.generation;
                        record(&paths, &config, generation);
                    }
                    Some(e) => {
                        error!(generation = update.generation, error = %e, "cannot apply the controller's share")
                    }
                }
                if let Some(client) = &acks {
                    if let Err(e) = client.ack(update.generation, error) {
                        warn!(
                            error = format!("{e:#}"),
                            "cannot acknowledge to the controller"
                        );
                    }
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => thread::sleep(Duration::from_millis(100)),
        }
    };
    drop(slow.take());
    let _ = std::fs::remove_file(ready_file(&paths));
    if keep_forwarding {
        info!("exiting; the pinned datapath keeps forwarding");
    } else {
        drop(dp);
        datapath::teardown(&paths)?;
        info!("datapath detached and unpinned");
    }
    let _ = std::fs::remove_file(paths.pid_file());
    Ok(())
}

/// Moves the running datapath from `current` to `new`. The slow path's sockets are
/// rebuilt only when the set of ports changed; on failure the old configuration is put
/// back so forwarding continues.
fn reconfigure(
    current: &Config,
    new: Config,
    dp: &mut Datapath,
    topology: &Arc<RwLock<Topology>>,
    slow: &mut Option<SlowPath>,
) -> Result<Config> {
    if new.host_id != current.host_id || new.netns != current.netns {
        bail!("host_id and netns cannot change while running; restart violind instead");
    }
    if new.debug_datapath != current.debug_datapath || new.api_listen != current.api_listen {
        warn!("debug_datapath and api_listen take effect at the next start");
    }
    let ports_changed = current.ports().collect::<Vec<_>>() != new.ports().collect::<Vec<_>>()
        || current.port_mode != new.port_mode
        || current.underlay != new.underlay;
    // The slow path stops while the ports change; its sockets are handed back and those
    // still wanted are kept.
    let reuse = if ports_changed {
        slow.take().map(SlowPath::stop).unwrap_or_default()
    } else {
        Vec::new()
    };
    let started = Instant::now();
    let topo = match setup(&new, dp, !ports_changed) {
        Ok(t) => t,
        Err(e) => {
            let old = setup(current, dp, false).context("restoring the previous configuration")?;
            *topology.write().unwrap() = old;
            if slow.is_none() {
                *slow = Some(SlowPath::start(topology.clone(), dp.paths(), reuse)?);
            }
            return Err(e);
        }
    };
    *topology.write().unwrap() = topo;
    refresh_next_hops(dp, topology, Some(SETTLE));
    if slow.is_none() {
        *slow = Some(SlowPath::start(topology.clone(), dp.paths(), reuse)?);
    }
    info!(
        ports_changed,
        took_ms = started.elapsed().as_secs_f64() * 1e3,
        "configuration applied"
    );
    Ok(new)
}

/// `violind stop`: signals the running daemon and waits for it to exit. With no daemon
/// running, it removes what a crashed one left pinned (unless keeping forwarding).
pub fn stop(config: &Config, keep_forwarding: bool) -> Result<()> {
    let paths = Paths::new(&config.host_id);
    let sig = if keep_forwarding {
        libc::SIGUSR1
    } else {
        libc::SIGTERM
    };
    match host::read_pid(&paths.pid_file()).filter(|&p| host::process_alive(p)) {
        Some(pid) => {
            // SAFETY: kill(2) takes only integers and accesses no memory of this process.
            // `pid` passed process_alive(), whose /proc/<pid>/stat check fails for 0 and
            // negative values, so this cannot signal a process group or every process.
            unsafe { libc::kill(pid, sig) };
            let deadline = Instant::now() + Duration::from_secs(15);
            while host::process_alive(pid) {
                if Instant::now() > deadline {
                    bail!("violind (pid {pid}) did not exit within 15 s");
                }
                thread::sleep(Duration::from_millis(50));
            }
            info!(pid, "violind stopped");
        }
        None if keep_forwarding => info!("violind is not running"),
        None => {
            host::ensure_bpffs()?;
            datapath::teardown(&paths)?;
            let _ = std::fs::remove_file(paths.pid_file());
            info!("violind was not running; removed its pinned datapath");
        }
    }
    Ok(())
}
