//! `violind run`: set the datapath up, keep the slow path and next hops current, reload on
//! SIGHUP, and on exit either detach everything (SIGTERM/SIGINT) or leave the pinned
//! datapath forwarding for the next daemon (SIGUSR1, `violind stop --keep-forwarding`).
//!
//! The daemon waits on one channel of events: the controller's generations (from
//! `follow`) and the kernel's facts (from `netlink`: neighbours, links, routes). Nothing
//! is polled: a neighbour change reaches the PEERS map when the kernel announces it, and
//! a VM port is attached when its interface appears and detached when it goes.
use std::{
    collections::{BTreeMap, BTreeSet},
    net::IpAddr,
    path::Path,
    sync::{mpsc, Arc, RwLock},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use tracing::{error, info, warn};

use dataplane_common::{maps::programs, VXLAN_PORT};
use violin_api::{
    share::{Registration, Share},
    vm::VmResources,
    vm::{DomainEvent, DomainEventKind},
};

use crate::{
    config::{Config, PortMode},
    datapath::{self, tc_pin_name, xdp_pin_name, Datapath, TUNNEL_DEVICE},
    follow::{self, Follower, Update},
    host::{self, Paths},
    netdev::{self, NetDev},
    netlink::{self, Fact, Neighbours, Rtnl},
    slowpath::SlowPath,
    topology::{current_moves, Moved, Moves, Topology},
};

/// What the daemon's loop reacts to.
pub enum Event {
    /// A generation from the controller.
    Controller(Update),
    /// A change the kernel announced.
    Kernel(Fact),
    /// A lifecycle change the host's libvirt daemon announced.
    Domain(DomainEvent),
    /// A signal to the daemon: SIGHUP, SIGTERM, SIGINT or SIGUSR1.
    Signal(i32),
}

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

/// Attaches the programs to the underlay and every port, XDP or TC per `port_mode` (and
/// TC on the ports in XDP mode as well, for bounded traffic, which XDP cannot delay), and
/// detaches every other pinned link: interfaces no longer configured, and the programs of
/// the other mode. In TC mode the flow-based VXLAN device is made first (GRO aggregates
/// reach Violin through it); in XDP mode it is removed, last, so that no frame falls
/// between two modes.
fn attach_all(dp: &mut Datapath, rtnl: &mut Rtnl, topo: &Topology, mode: PortMode) -> Result<()> {
    let underlay = &topo.underlay;
    let mut wanted: BTreeSet<String> = BTreeSet::new();
    match mode {
        PortMode::Xdp => {
            dp.attach_xdp(programs::UNDERLAY, underlay)?;
            wanted.insert(xdp_pin_name(&underlay.name));
        }
        PortMode::Tc => {
            let mtu = topo.family().vm_mtu(topo.underlay_mtu);
            rtnl.ensure_vxlan_external(TUNNEL_DEVICE, VXLAN_PORT, mtu)
                .with_context(|| format!("creating the flow-based VXLAN device {TUNNEL_DEVICE}"))?;
            let tunnel = NetDev::query(TUNNEL_DEVICE)?;
            dp.attach_tc(programs::TUNNEL_TC, &tunnel)?;
            dp.attach_tc(programs::UNDERLAY_TC, underlay)?;
            wanted.insert(tc_pin_name(TUNNEL_DEVICE));
            wanted.insert(tc_pin_name(&underlay.name));
            if netdev::gro(&underlay.name) == Some(false) {
                warn!(
                    iface = %underlay.name,
                    "GRO is off on the underlay: in TC port mode a TCP stream then crosses \
                     the datapath one segment at a time (ethtool -K {} gro on)",
                    underlay.name
                );
            }
        }
    }
    for p in &topo.ports {
        // In XDP mode too, and first: the XDP program passes bounded frames on to it, to
        // be shaped, and none must reach the host's stack instead.
        dp.attach_tc(programs::PORT_TC, &p.dev)?;
        wanted.insert(tc_pin_name(&p.dev.name));
        if mode == PortMode::Xdp {
            dp.attach_xdp(programs::PORT, &p.dev)?;
            wanted.insert(xdp_pin_name(&p.dev.name));
        }
    }
    for name in datapath::pinned_links(dp.paths()) {
        if !wanted.contains(&name) {
            datapath::detach(dp.paths(), &name);
        }
    }
    if mode == PortMode::Xdp {
        rtnl.delete_link(TUNNEL_DEVICE)
            .with_context(|| format!("removing the VXLAN device {TUNNEL_DEVICE}"))?;
    }
    Ok(())
}

/// Puts on the devices bounded traffic leaves by the HTB trees that shape it (see
/// `Topology::shaping`), and takes Violin's HTB off every other device of the namespace
/// (one violind serves it): a port or underlay no longer bounded, or no longer Violin's.
/// Without the trees a bound would not hold, so a failure fails the change.
fn ensure_shaping(rtnl: &mut Rtnl, topo: &Topology) -> Result<()> {
    let wanted = topo.shaping();
    for s in &wanted {
        let fresh = rtnl
            .ensure_htb(s.ifindex, s.overhead, &s.classes)
            .with_context(|| {
                format!(
                    "installing the HTB qdisc that shapes bounds on {}",
                    s.device
                )
            })?;
        if fresh {
            info!(iface = %s.device, classes = s.classes.len(), "HTB qdisc installed for shaping");
        }
    }
    let keep: BTreeSet<u32> = wanted.iter().map(|s| s.ifindex).collect();
    for ifindex in rtnl.htb_roots().context("listing qdiscs")? {
        if !keep.contains(&ifindex) {
            rtnl.remove_htb(ifindex)
                .with_context(|| format!("removing the HTB qdisc of interface {ifindex}"))?;
            info!(ifindex, "HTB qdisc removed: no bound leaves by it");
        }
    }
    Ok(())
}

/// Peers' next hops as the kernel resolves them: the FIB's answer per peer (kept until
/// the routes change) and the neighbour table the netlink watcher keeps current.
struct NextHops {
    rtnl: Rtnl,
    neighbours: Arc<Neighbours>,
    hops: BTreeMap<IpAddr, Option<IpAddr>>,
    /// Peers whose next hop was asked for (the hop, and when), so that an unanswered
    /// one is asked again after a while, not on every event.
    probed: BTreeMap<IpAddr, (IpAddr, Instant)>,
}

/// How long an unanswered next hop waits before it is asked for again.
const REPROBE: Duration = Duration::from_secs(1);

impl NextHops {
    fn hop(&mut self, peer: IpAddr) -> Option<IpAddr> {
        if let Some(h) = self.hops.get(&peer) {
            return *h;
        }
        let hop = self.rtnl.next_hop(peer).unwrap_or_else(|e| {
            warn!(%peer, error = %e, "route lookup failed");
            None
        });
        self.hops.insert(peer, hop);
        hop
    }

    /// Whether `ip` is the next hop of a peer.
    fn is_hop(&self, ip: IpAddr) -> bool {
        self.hops.values().any(|h| *h == Some(ip))
    }

    /// Whether some peer's next hop is still unknown.
    fn unresolved(&self, topology: &RwLock<Topology>) -> bool {
        topology
            .read()
            .unwrap()
            .peers
            .iter()
            .any(|p| p.next_hop_mac.is_none())
    }

    /// The routing table changed: every peer's next hop is looked up again.
    fn routes_changed(&mut self) {
        self.hops.clear();
        self.probed.clear();
    }

    /// Publishes every peer whose next-hop MAC changed. With `settle`, first makes the
    /// kernel resolve unknown next hops and waits (briefly) for the answers, so that a
    /// change is acknowledged when its links can carry frames.
    fn publish(
        &mut self,
        dp: &mut Datapath,
        topology: &RwLock<Topology>,
        settle: Option<Duration>,
    ) {
        let (peers, underlay) = {
            let t = topology.read().unwrap();
            (t.peers.clone(), t.underlay.ifindex)
        };
        let hops: Vec<(usize, Option<IpAddr>)> = peers
            .iter()
            .enumerate()
            .map(|(i, p)| (i, self.hop(p.addr)))
            .collect();
        let unknown: Vec<IpAddr> = hops
            .iter()
            .filter_map(|(i, h)| {
                let hop = (*h)?;
                self.neighbours
                    .get(underlay, hop)
                    .is_none()
                    .then_some((peers[*i].addr, hop))
            })
            .map(|(peer, hop)| {
                // One datagram makes the kernel ask for the next hop's MAC.
                let due = self
                    .probed
                    .get(&peer)
                    .is_none_or(|(h, at)| *h != hop || at.elapsed() >= REPROBE);
                if due {
                    self.probed.insert(peer, (hop, Instant::now()));
                    netlink::probe(peer);
                }
                hop
            })
            .collect();
        if let (Some(wait), false) = (settle, unknown.is_empty()) {
            self.neighbours
                .wait_for(underlay, &unknown, Instant::now() + wait);
        }
        let mut t = topology.write().unwrap();
        for (i, hop) in hops {
            // The underlay's neighbour: frames to peers leave by it alone.
            let mac = hop.and_then(|h| self.neighbours.get(underlay, h));
            let peer = &mut t.peers[i];
            if mac.is_none() || mac == peer.next_hop_mac {
                continue;
            }
            peer.next_hop_mac = mac;
            match Topology::publish_peer(&mut dp.maps, peer) {
                Ok(()) => {
                    info!(peer = %peer.addr, mac = %crate::netdev::format_mac(&mac.unwrap_or_default()), "next hop resolved")
                }
                Err(e) => warn!(peer = %peer.addr, error = %e, "cannot update peer"),
            }
        }
    }
}

/// How long a change waits for its new peers' next hops (one ARP exchange on a LAN).
const SETTLE: Duration = Duration::from_millis(500);

/// What the programs and the slow path's sockets depend on: each resolved port's name,
/// interface, environment and queues. When any of it changes, both are redone; the order
/// does not count (a port attached late keeps its slot, and sorts differently after).
fn attached_ports(t: &Topology) -> BTreeSet<(String, u32, u32, u32)> {
    t.ports
        .iter()
        .map(|p| (p.dev.name.clone(), p.dev.ifindex, p.vni, p.queues()))
        .collect()
}

/// Records what is being served, for the API's listings and a restart's first setup.
fn record(paths: &Paths, config: &Config, generation: u64) {
    let share = Share {
        generation,
        environments: config.environments.clone(),
        peers: config.peers.clone(),
        resources: Vec::new(),
    };
    if let Err(e) = follow::store_cached(&paths.share(), &share) {
        warn!(error = %e, "cannot record the served share");
    }
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

/// A running daemon: what it serves and the datapath serving it.
struct Daemon {
    paths: Paths,
    config_path: std::path::PathBuf,
    /// The file as last loaded (host settings; environments and peers too without a
    /// controller).
    file: Config,
    /// What is served: the file's settings with the controller's share.
    config: Config,
    generation: u64,
    dp: Datapath,
    topology: Arc<RwLock<Topology>>,
    slow: Option<SlowPath>,
    hops: NextHops,
    follower: Option<Follower>,
    /// Why the controller's latest share could not be applied: until one is, every
    /// generation is acknowledged with this error, not as applied.
    refused: Option<String>,
    /// Migrating VMs that libvirt says resumed or stopped here, ahead of the controller.
    moves: Moves,
    /// To the libvirt thread: the resources the controller gives this host's VMs.
    resources: Option<mpsc::Sender<Vec<VmResources>>>,
}

impl Daemon {
    fn start(
        config_path: &Path,
        file: Config,
        paths: Paths,
        events: &mpsc::Sender<Event>,
    ) -> Result<Daemon> {
        let (config, generation) = initial(&paths, &file);
        let tx = events.clone();
        let v6 = config.underlay.address.is_ipv6();
        let neighbours = netlink::watch(v6, move |f| tx.send(Event::Kernel(f)).is_ok())
            .context("subscribing to the kernel's neighbour, link and route changes")?;
        let mut hops = NextHops {
            rtnl: Rtnl::open().context("opening rtnetlink")?,
            neighbours,
            hops: BTreeMap::new(),
            probed: BTreeMap::new(),
        };
        let mut dp = Datapath::load(&paths, config.debug_datapath)?;
        let topo = Topology::resolve(&config, &dp.maps, &Moves::new())?;
        topo.apply(&mut dp.maps)?;
        ensure_shaping(&mut hops.rtnl, &topo)?;
        let topology = Arc::new(RwLock::new(topo));
        // Sockets first, programs second: a broadcast that reaches a program finds its
        // socket bound.
        let slow = Some(SlowPath::start(topology.clone(), &paths, Vec::new())?);
        attach_all(
            &mut dp,
            &mut hops.rtnl,
            &topology.read().unwrap(),
            config.port_mode,
        )?;
        let mut d = Daemon {
            paths,
            config_path: config_path.to_path_buf(),
            file,
            config,
            generation,
            dp,
            topology,
            slow,
            hops,
            follower: None,
            refused: None,
            moves: Moves::new(),
            resources: None,
        };
        d.hops.publish(&mut d.dp, &d.topology, Some(SETTLE));
        if let Some(listen) = d.config.api_listen {
            // Observers attach through the API; without it nobody can.
            let observers = crate::observe::Observers::default();
            crate::observe::start(
                &d.paths,
                d.config.host_id.as_str(),
                &d.config.underlay.interface,
                observers.clone(),
            )?;
            crate::api::serve(
                listen,
                &d.paths,
                &d.config.underlay.interface,
                d.config.api_token()?,
                observers,
            )?;
        }
        std::fs::write(ready_file(&d.paths), b"")?;
        Ok(d)
    }

    /// Registers with the controller, when there is one, and follows it.
    fn follow_controller(&mut self, events: mpsc::Sender<Event>) -> Result<()> {
        let Some(c) = &self.file.controller else {
            return Ok(());
        };
        let ports = self.config.ports().map(|(p, _)| p.to_string()).collect();
        let registration = Registration {
            address: self.config.underlay.address,
            api: self.config.api_listen.map(|a| a.to_string()),
            interfaces: crate::api::interfaces(&self.config.underlay.interface, &ports),
            libvirt: self
                .file
                .libvirt
                .as_ref()
                .and_then(|l| l.remote_uri.clone()),
            domain: self
                .file
                .libvirt
                .as_ref()
                .and_then(|l| l.domain.as_ref().map(|d| d.to_string())),
            cpus: self.file.libvirt.as_ref().map(|l| {
                l.cpus.unwrap_or_else(|| {
                    thread::available_parallelism().map_or(1.0, |n| n.get() as f64)
                })
            }),
            memory_mib: self
                .file
                .libvirt
                .as_ref()
                .map(|l| l.memory_mib.unwrap_or_else(crate::libvirt::host_memory_mib)),
        };
        let follower = Follower::new(c, &self.config.host_id)?;
        follow::start(follower.clone(), registration, events)?;
        let every = Duration::from_millis(u64::from(c.traffic_report_ms));
        if let Err(e) = crate::traffic::start(follower.clone(), &self.paths, every) {
            // The topology inference goes without this host; forwarding does not.
            warn!(
                error = format!("{e:#}"),
                "traffic reports to the controller are off"
            );
        }
        let every = Duration::from_millis(u64::from(c.health_report_ms));
        if let Err(e) = crate::health::start(follower.clone(), &self.paths, every) {
            // `violinctl status` goes without this host's drops; forwarding does not.
            warn!(
                error = format!("{e:#}"),
                "health reports to the controller are off"
            );
        }
        if c.measure_ms > 0 {
            let every = Duration::from_millis(u64::from(c.measure_ms));
            let (local, port) = (self.config.underlay.address, c.measure_port);
            if let Err(e) = crate::measure::start(follower.clone(), &self.paths, local, port, every)
            {
                // VADAPT maps VMs without this host's row; forwarding goes on.
                warn!(
                    error = format!("{e:#}"),
                    "measurements of the other hosts are off"
                );
            }
        }
        self.follower = Some(follower);
        Ok(())
    }

    /// Follows the host's libvirt daemon, when one is configured.
    fn follow_libvirt(&mut self, events: mpsc::Sender<Event>) -> Result<()> {
        match &self.file.libvirt {
            Some(l) => {
                let (tx, rx) = mpsc::channel();
                self.resources = Some(tx);
                crate::libvirt::start(l, &self.paths, events, self.follower.clone(), rx)
            }
            None => Ok(()),
        }
    }

    /// A domain resumed or stopped: a migrating VM's frames follow it at once, here or to
    /// the host it went to, without waiting for the controller's next generation.
    fn domain_event(&mut self, ev: DomainEvent) {
        let mut moves = self.moves.clone();
        for env in &self.config.environments {
            for vm in env.vms.iter().filter(|v| ev.ports.contains(&v.port)) {
                let key = (env.vni.get(), vm.mac.octets());
                let moved = match (ev.kind, vm.leaving_to, vm.arriving_from) {
                    (DomainEventKind::Resumed, Some(_), _) => None,
                    (DomainEventKind::Resumed, None, Some(_)) => Some(Moved::Here),
                    (DomainEventKind::Suspended, Some(_), _) if ev.migration => Some(Moved::Away),
                    (DomainEventKind::Stopped, Some(_), _) => Some(Moved::Away),
                    (DomainEventKind::Stopped, None, Some(_)) => None,
                    _ => continue,
                };
                match moved {
                    Some(m) => moves.insert(key, m),
                    None => moves.remove(&key),
                };
            }
        }
        if moves == self.moves {
            return;
        }
        info!(vm = %ev.vm, event = ?ev.kind, "a migrating VM moved; re-pointing its address");
        let before = std::mem::replace(&mut self.moves, moves);
        if let Err(e) = self.reconfigure(self.config.clone()) {
            self.moves = before;
            error!(vm = %ev.vm, error = format!("{e:#}"), "cannot re-point the VM");
        }
    }

    /// SIGHUP: the file again, with the controller's share if there is a controller.
    fn reload(&mut self) {
        info!(config = %self.config_path.display(), "SIGHUP: reloading");
        let reloaded = Config::load(&self.config_path).and_then(|file| {
            let new = if file.controller.is_some() {
                file.with_share(self.config.environments.clone(), self.config.peers.clone())?
            } else {
                file.clone()
            };
            Ok((file, new))
        });
        match reloaded.and_then(|(file, new)| self.reconfigure(new).map(|()| file)) {
            Ok(file) => {
                self.file = file;
                record(&self.paths, &self.config, self.generation);
                info!("reload complete");
            }
            Err(e) => error!(
                error = format!("{e:#}"),
                "reload failed; keeping the running configuration"
            ),
        }
    }

    /// A generation from the controller: applied (when it changed this host's share),
    /// recorded and acknowledged, or refused with the reason.
    fn controller_update(&mut self, update: Update) {
        let result = match update.share {
            None => match &self.refused {
                None => Ok(()),
                Some(why) => Err(anyhow::anyhow!("{why}")),
            },
            Some(share) => {
                if let Some(tx) = &self.resources {
                    let _ = tx.send(share.resources);
                }
                self.file.with_share(share.environments, share.peers)
            }
            .map_err(anyhow::Error::from)
            .and_then(|new| {
                // Moves the controller has caught up with are its word now (kept if
                // the share cannot be applied).
                let current = current_moves(&new, &self.moves);
                let before = std::mem::replace(&mut self.moves, current);
                self.reconfigure(new).inspect_err(|_| self.moves = before)
            }),
        };
        let error = result.err().map(|e| format!("{e:#}"));
        self.refused = error.clone();
        match &error {
            None => {
                self.generation = update.generation;
                record(&self.paths, &self.config, self.generation);
            }
            Some(e) => {
                error!(generation = update.generation, error = %e, "cannot apply the controller's share")
            }
        }
        if let Some(f) = &self.follower {
            if let Err(e) = f.ack(update.generation, error) {
                warn!(
                    error = format!("{e:#}"),
                    "cannot acknowledge to the controller"
                );
            }
        }
    }

    /// A change in the kernel: next hops follow neighbours and routes; ports follow links.
    fn kernel_fact(&mut self, fact: Fact) {
        match fact {
            Fact::Neighbour { ip, mac, .. } => {
                if self.hops.is_hop(ip) {
                    if mac.is_none() {
                        // Gone or failed: ask again rather than wait for traffic.
                        self.hops.probed.retain(|_, (hop, _)| *hop != ip);
                    }
                    self.hops.publish(&mut self.dp, &self.topology, None);
                }
            }
            Fact::Routes => {
                self.hops.routes_changed();
                self.hops.publish(&mut self.dp, &self.topology, None);
            }
            Fact::Resync => {
                // Announcements were lost: everything is looked at again.
                self.hops.routes_changed();
                if let Err(e) = self.reconfigure(self.config.clone()) {
                    error!(
                        error = format!("{e:#}"),
                        "cannot resynchronise with the kernel"
                    );
                }
            }
            Fact::Link { name, present } => {
                let configured = self.config.ports().any(|(p, _)| p == name);
                let attached = self
                    .topology
                    .read()
                    .unwrap()
                    .ports
                    .iter()
                    .any(|p| p.dev.name == name);
                if configured && present != attached {
                    info!(port = %name, present, "VM port {}", if present { "appeared" } else { "went away" });
                    if let Err(e) = self.reconfigure(self.config.clone()) {
                        error!(port = %name, error = format!("{e:#}"), "cannot follow the port");
                    }
                }
            }
        }
    }

    /// Moves the running datapath to `new`. The programs are re-attached and the slow
    /// path's sockets rebuilt only when the attached ports (or their environment or
    /// queues) change; on failure what ran before is put back so forwarding continues.
    fn reconfigure(&mut self, new: Config) -> Result<()> {
        let current = &self.config;
        let current_mode = current.port_mode;
        if new.host_id != current.host_id || new.netns != current.netns {
            bail!("host_id and netns cannot change while running; restart violind instead");
        }
        // The programs size their headers by the host's family and the peers' as the maps
        // say it, written one after the other: no frame may see them disagree.
        if new.underlay.address.is_ipv6() != current.underlay.address.is_ipv6() {
            bail!(
                "underlay.address cannot change between IPv4 and IPv6 while running; \
                 restart violind instead"
            );
        }
        if new.debug_datapath != current.debug_datapath || new.api_listen != current.api_listen {
            warn!("debug_datapath and api_listen take effect at the next start");
        }
        let started = Instant::now();
        let topo = Topology::resolve(&new, &self.dp.maps, &self.moves)?;
        let ports_changed = attached_ports(&topo) != attached_ports(&self.topology.read().unwrap())
            || current.port_mode != new.port_mode
            || current.underlay != new.underlay;
        // The slow path stops while the ports change; its sockets are handed back and
        // those still wanted are kept.
        let reuse = if ports_changed {
            self.slow.take().map(SlowPath::stop).unwrap_or_default()
        } else {
            Vec::new()
        };
        let previous = self.topology.read().unwrap().clone();
        let applied = topo.apply(&mut self.dp.maps).and_then(|()| {
            ensure_shaping(&mut self.hops.rtnl, &topo)?;
            *self.topology.write().unwrap() = topo.clone();
            if ports_changed {
                // Sockets first, programs second, as at start.
                self.resume_slow_path(reuse)?;
                attach_all(&mut self.dp, &mut self.hops.rtnl, &topo, new.port_mode)?;
            }
            Ok(())
        });
        if let Err(e) = applied {
            // Back to what ran before, and the slow path with it, whatever else fails.
            *self.topology.write().unwrap() = previous.clone();
            let restored = previous.apply(&mut self.dp.maps).and_then(|()| {
                ensure_shaping(&mut self.hops.rtnl, &previous)?;
                if ports_changed {
                    attach_all(&mut self.dp, &mut self.hops.rtnl, &previous, current_mode)?;
                }
                Ok(())
            });
            if ports_changed {
                if let Some(slow) = self.slow.take() {
                    let sockets = slow.stop();
                    self.resume_slow_path(sockets)?;
                } else {
                    self.resume_slow_path(Vec::new())?;
                }
            }
            restored.context("restoring the previous configuration")?;
            return Err(e);
        }
        self.hops
            .publish(&mut self.dp, &self.topology, Some(SETTLE));
        info!(
            ports_changed,
            took_ms = started.elapsed().as_secs_f64() * 1e3,
            "configuration applied"
        );
        self.config = new;
        Ok(())
    }

    /// Starts the slow path again if a port change stopped it, on `reuse`'s sockets.
    fn resume_slow_path(&mut self, reuse: Vec<crate::slowpath::Xsk>) -> Result<()> {
        if self.slow.is_none() {
            let paths = self.dp.paths();
            self.slow = Some(SlowPath::start(self.topology.clone(), paths, reuse)?);
        }
        Ok(())
    }

    /// Stops: the slow path always; the datapath too unless it keeps forwarding.
    fn exit(mut self, keep_forwarding: bool) -> Result<()> {
        drop(self.slow.take());
        let _ = std::fs::remove_file(ready_file(&self.paths));
        if keep_forwarding {
            info!("exiting; the pinned datapath keeps forwarding");
        } else {
            drop(self.dp);
            datapath::teardown(&self.paths)?;
            info!("datapath detached and unpinned");
        }
        let _ = std::fs::remove_file(self.paths.pid_file());
        Ok(())
    }
}

fn notify(state: &str) {
    if let Err(e) = violin_api::systemd::notify(state) {
        warn!(state, error = %e, "cannot notify systemd");
    }
}

/// How often the main loop looks at what wants a look (see `run`).
const TICK: Duration = Duration::from_millis(100);

pub fn run(config_path: &Path, file_config: Config) -> Result<()> {
    host::check_privileges()?;
    host::ensure_bpffs()?;
    let paths = Paths::new(&file_config.host_id);
    host::write_pid_file(&paths.pid_file())?;
    let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT, SIGHUP, SIGUSR1])
        .context("installing signal handlers")?;
    let resumed = Datapath::has_pinned_state(&paths);
    let (tx, events) = mpsc::channel::<Event>();
    let mut daemon = match Daemon::start(config_path, file_config, paths.clone(), &tx) {
        Ok(d) => d,
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
    info!(host = %daemon.config.host_id, config = %config_path.display(), "violind ready");
    // Under systemd (Type=notify): the datapath forwards now.
    notify("READY=1");
    record(&daemon.paths, &daemon.config, daemon.generation);
    daemon.follow_controller(tx.clone())?;
    let to_loop = tx.clone();
    thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                if to_loop.send(Event::Signal(sig)).is_err() {
                    return;
                }
            }
        })
        .context("starting the signal thread")?;
    daemon.follow_libvirt(tx)?;
    let keep_forwarding = loop {
        daemon.dp.flush_logs();
        // Asleep until something happens: on a host whose CPUs are busy forwarding,
        // every wake-up preempts that work. Only the programs' log (debug_datapath)
        // wants a look every TICK, and next hops nobody has answered for yet one every
        // REPROBE (answers come as kernel facts).
        let event = if daemon.dp.logging() {
            events.recv_timeout(TICK)
        } else if daemon.hops.unresolved(&daemon.topology) {
            events.recv_timeout(REPROBE)
        } else {
            events
                .recv()
                .map_err(|_| mpsc::RecvTimeoutError::Disconnected)
        };
        match event {
            Ok(Event::Signal(SIGHUP)) => daemon.reload(),
            Ok(Event::Signal(sig)) => break sig == SIGUSR1,
            Ok(Event::Controller(update)) => daemon.controller_update(update),
            Ok(Event::Kernel(fact)) => daemon.kernel_fact(fact),
            Ok(Event::Domain(ev)) => daemon.domain_event(ev),
            Err(mpsc::RecvTimeoutError::Timeout) => {
                // Next hops nobody has answered for yet are asked for again.
                if daemon.hops.unresolved(&daemon.topology) {
                    daemon.hops.publish(&mut daemon.dp, &daemon.topology, None);
                }
            }
            // Not while the signal thread holds its sender, which it does for good.
            Err(mpsc::RecvTimeoutError::Disconnected) => thread::sleep(TICK),
        }
    };
    notify("STOPPING=1");
    daemon.exit(keep_forwarding)
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
