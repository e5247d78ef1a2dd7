//! Live migration supervision. For each VM to move, the controller
//!
//! 1. records the migration (phase `preparing`), which puts the VM into the destination's
//!    share (port, policies, anti-spoofing; frames still to the source) and tells the
//!    source where it goes, and waits until both hosts applied that;
//! 2. drives libvirt's peer-to-peer live migration from the source's daemon to the
//!    destination's (`migrating`), reading the job's progress as it goes;
//! 3. the instant the destination's `violind` reports that the guest resumed there (or
//!    libvirt returns, whichever comes first), commits the VM's new host (`switching`):
//!    every host of the environment re-points the VM's MAC; the source, which moved it
//!    on its own when the guest stopped there, forwards what still arrives;
//! 4. records libvirt's downtime and total time and the network's reconvergence (resume
//!    to the last host's acknowledgement) and ends `completed`.
//!
//! A migration libvirt refuses, fails or is asked to abort ends `failed`: the in-flight
//! record is closed, which takes the VM out of the destination's share again, and the
//! error says why and that the VM stayed where it was.
use std::{
    collections::BTreeMap,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{anyhow, Context, Result};
use tracing::{error, info, warn};
use violin_api::vm::{
    DomainEvent, DomainEventKind, Migration, MigrationPhase, MigrationRequest, VmInfo, VmReport,
};
use virt::{connect::Connect, domain::Domain};
use virt_sys as sys;

use crate::{hub::Hub, spec::Spec, store::Store};

/// How long the hosts get to apply a migration's preparation, and later its switch.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a request was refused: the field at fault, the reason, and whether it is a
/// conflict with the current state (409) rather than a malformed request (400).
#[derive(Debug)]
pub struct Refusal {
    pub field: String,
    pub reason: String,
    pub conflict: bool,
}

fn refuse(field: &str, reason: impl Into<String>, conflict: bool) -> Refusal {
    Refusal {
        field: field.into(),
        reason: reason.into(),
        conflict,
    }
}

/// One VM's move, as planned.
struct Move {
    source_uri: String,
    dest_uri: String,
    environment: String,
    vm: String,
    from: String,
    to: String,
}

/// A migration in flight, as the controller follows it.
#[derive(Clone)]
struct Live {
    record: Migration,
    source_uri: String,
    dest_uri: String,
    /// When the guest resumed on the destination (its host's event, else libvirt's return).
    resumed: Option<SystemTime>,
    switched: Option<u64>,
    cancelled: bool,
    /// libvirt finished the move: the VM runs on the destination whatever comes after.
    moved: bool,
    /// MiB/s, 0 for libvirt's default.
    bandwidth: u64,
}

pub struct Supervisor {
    store: Arc<Store>,
    hub: Arc<Hub>,
    live: Mutex<BTreeMap<u64, Live>>,
    /// The hosts' domains, as their last reports said.
    vms: Mutex<BTreeMap<String, Vec<violin_api::vm::VmStatus>>>,
    /// Serialises id allocation, the checks that no VM moves twice at once, and every
    /// change made to a stored spec: this module's (a switch, a followed move) and the
    /// API's (see [`Supervisor::edit_lock`]).
    edits: Mutex<()>,
}

fn unix(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn libvirt_error(e: virt::error::Error) -> anyhow::Error {
    anyhow!("{}", e.message())
}

impl Supervisor {
    /// Closes what a previous controller left in flight: it cannot follow those jobs.
    pub fn new(store: Arc<Store>, hub: Arc<Hub>) -> Arc<Supervisor> {
        Arc::new(Supervisor {
            store,
            hub,
            live: Mutex::new(BTreeMap::new()),
            vms: Mutex::new(BTreeMap::new()),
            edits: Mutex::new(()),
        })
    }

    /// Settles the migrations a previous leader left in flight: a replica does this
    /// when it starts to lead (the only replica, at start).
    pub fn resume(&self) -> Result<()> {
        let (store, hub) = (&self.store, &self.hub);
        for mut m in store.in_flight() {
            let (phase, host) = match m.phase {
                // The spec already places it at the destination.
                MigrationPhase::Switching => (MigrationPhase::Completed, &m.to),
                _ => (MigrationPhase::Failed, &m.from),
            };
            m.error = Some(format!(
                "the controller restarted during the migration; {} is placed on {host} until its hosts report where it runs",
                m.vm
            ));
            m.phase = phase;
            if let Some(g) = store.record_migration(&m, true, None)? {
                hub.committed(g);
            }
        }
        Ok(())
    }

    /// Every recorded migration, with the live progress of those in flight.
    pub fn migrations(&self) -> Vec<Migration> {
        let live = self.live.lock().unwrap();
        self.store
            .migrations()
            .into_values()
            .map(|m| live.get(&m.id).map_or(m, |l| l.record.clone()))
            .collect()
    }

    pub fn migration(&self, id: u64) -> Option<Migration> {
        if let Some(l) = self.live.lock().unwrap().get(&id) {
            return Some(l.record.clone());
        }
        self.store.migrations().remove(&id)
    }

    /// Asks libvirt to abort a migration still copying; the job then fails and rolls back.
    pub fn cancel(&self, id: u64) -> Result<Migration, Refusal> {
        let (uri, vm) = {
            let mut live = self.live.lock().unwrap();
            let Some(l) = live.get_mut(&id) else {
                return Err(match self.store.migrations().get(&id) {
                    Some(m) => refuse(
                        "id",
                        format!("migration {id} already ended ({:?})", m.phase),
                        true,
                    ),
                    None => refuse("id", format!("there is no migration {id}"), false),
                });
            };
            if l.switched.is_some() {
                return Err(refuse(
                    "id",
                    format!("migration {id} already switched over"),
                    true,
                ));
            }
            l.cancelled = true;
            (l.source_uri.clone(), l.record.vm.clone())
        };
        let aborted = with_domain(&uri, &vm, |d| {
            // SAFETY: the domain pointer is valid while `d` lives; virDomainAbortJob only
            // signals the daemon.
            let r = unsafe { sys::virDomainAbortJob(d.as_ptr()) };
            if r < 0 {
                Err(libvirt_error(virt::error::Error::last_error()))
            } else {
                Ok(())
            }
        });
        if let Err(e) = aborted {
            // Not copying yet (still preparing): `drive` checks the flag again just before
            // it starts the copy.
            info!(
                id,
                error = format!("{e:#}"),
                "abort: no libvirt job to abort yet"
            );
        }
        Ok(self.migration(id).expect("it was live"))
    }

    /// A host's report: its domains, and events that may switch a migration over.
    pub fn report(self: &Arc<Self>, host: &str, report: VmReport) {
        for ev in &report.events {
            if ev.kind == DomainEventKind::Resumed {
                self.resumed(host, ev);
            }
        }
        if let Some(vms) = report.vms {
            // A VM running where its spec does not place it, with no migration of it under
            // way, moved without the controller hearing the resume (made with libvirt while
            // the controller was down, or its switch failed): the environment follows.
            // A report taken just before a migration may arrive just after it: a VM moved in
            // the last seconds is left alone.
            let settled = unix(SystemTime::now()) - 10.0;
            let recent: Vec<String> = self
                .store
                .migrations()
                .into_values()
                .filter(|m| m.started + m.total_seconds.unwrap_or(0.0) > settled)
                .map(|m| m.vm)
                .collect();
            for v in vms
                .iter()
                .filter(|v| v.state == violin_api::vm::VmState::Running)
            {
                let moving = self
                    .live
                    .lock()
                    .unwrap()
                    .values()
                    .any(|l| l.record.vm == v.name);
                if !moving && !recent.contains(&v.name) {
                    if let Err(e) = self.follow(host, &v.name, &v.ports) {
                        error!(vm = %v.name, host, error = format!("{e:#}"), "cannot follow the VM");
                    }
                }
            }
            self.vms.lock().unwrap().insert(host.to_string(), vms);
        }
    }

    /// The VMs every host reports, with the environment whose spec names each.
    pub fn vms(&self) -> Vec<VmInfo> {
        let specs = self.store.snapshot();
        let mut out = Vec::new();
        for (host, vms) in self.vms.lock().unwrap().iter() {
            for v in vms {
                let found = specs
                    .values()
                    .find_map(|(_, s)| s.vms.get(&v.name).map(|vm| (s.name.to_string(), vm.mac)));
                out.push(VmInfo {
                    host: host.clone(),
                    environment: found.as_ref().map(|f| f.0.clone()),
                    mac: found.map(|f| f.1),
                    status: v.clone(),
                });
            }
        }
        out
    }

    fn resumed(self: &Arc<Self>, host: &str, ev: &DomainEvent) {
        let id = self
            .live
            .lock()
            .unwrap()
            .values()
            .find(|l| l.record.vm == ev.vm && l.record.to == host)
            .map(|l| l.record.id);
        if let Some(id) = id {
            let at = UNIX_EPOCH + Duration::from_nanos(ev.at_ns);
            info!(id, vm = %ev.vm, host, "the VM resumed on its destination; switching");
            if let Err(e) = self.switch(id, at) {
                error!(id, error = format!("{e:#}"), "cannot switch the VM over");
            }
        } else if ev.migration {
            if let Err(e) = self.follow(host, &ev.vm, &ev.ports) {
                error!(vm = %ev.vm, host, error = format!("{e:#}"), "cannot follow the VM");
            }
        }
    }

    /// A VM the controller did not move runs on another host than its spec says: its
    /// environment follows it there (the VM is known by its domain's name and its port),
    /// and the move is recorded.
    fn follow(&self, host: &str, vm: &str, ports: &[violin_api::IfName]) -> Result<()> {
        let _edits = self.edits.lock().unwrap();
        let specs = self.store.snapshot();
        let found = specs.values().find(|(_, s)| {
            s.vms
                .get(vm)
                .is_some_and(|v| v.host != host && ports.contains(&v.port))
        });
        let Some((text, spec)) = found else {
            return Ok(());
        };
        if !spec.hosts.contains_key(host) {
            warn!(vm, host, env = %spec.name, "the VM runs on a host its environment does not list; not followed");
            return Ok(());
        }
        let port = &spec.vms[vm].port;
        if port_taken(&specs, spec, vm, host) {
            warn!(vm, host, %port, "the VM's port is another VM's on that host; not followed");
            return Ok(());
        }
        let from = spec.vms[vm].host.clone();
        let mut next = spec.clone();
        next.vms.get_mut(vm).expect("found above").host = host.to_string();
        let text = crate::spec::edit::set_vm_host(text, vm, host)?;
        let id = self.store.next_migration_id();
        let now = unix(SystemTime::now());
        let mut record = Migration::new(id, vm, spec.name.as_str(), &from, host, now);
        record.phase = MigrationPhase::Completed;
        record.followed = true;
        info!(vm, from = %record.from, to = host, "a VM moved outside the controller; following it");
        let g = self
            .store
            .record_migration(&record, true, Some((&next, &text)))?
            .expect("a commit has a generation");
        self.hub.committed(g);
        self.hub
            .metrics
            .migrations
            .with_label_values(&["followed"])
            .inc();
        Ok(())
    }

    /// Commits the VM's new host once (the first of the resume event and libvirt's
    /// return); every host of the environment re-points its MAC.
    fn switch(&self, id: u64, resumed: SystemTime) -> Result<()> {
        let _edits = self.edits.lock().unwrap();
        let mut live = self.live.lock().unwrap();
        let Some(l) = live.get_mut(&id) else {
            return Ok(());
        };
        if l.switched.is_some() {
            return Ok(());
        }
        let m = &l.record;
        let (text, spec) = self
            .store
            .get(&m.environment)?
            .ok_or_else(|| anyhow!("environment {} is gone", m.environment))?;
        let mut next: Spec = spec.clone();
        let vm = next
            .vms
            .get_mut(&m.vm)
            .ok_or_else(|| anyhow!("{} is no longer a VM of {}", m.vm, m.environment))?;
        vm.host = m.to.clone();
        let text = crate::spec::edit::set_vm_host(&text, &m.vm, &m.to)?;
        let mut record = m.clone();
        record.phase = MigrationPhase::Switching;
        let g = self
            .store
            .record_migration(&record, true, Some((&next, &text)))?
            .expect("a commit has a generation");
        l.record = record;
        l.switched = Some(g);
        l.resumed = Some(resumed);
        drop(live);
        self.hub.committed(g);
        Ok(())
    }

    /// Held by every read-modify-write of a stored spec, so that two writers (a request,
    /// automatic adaptation, a migration's switch) never overwrite each other's change
    /// or bring back an environment deleted in between.
    pub fn edit_lock(&self) -> std::sync::MutexGuard<'_, ()> {
        self.edits.lock().unwrap()
    }

    /// Checks a request and starts its migrations; they go on in threads of their own.
    pub fn start(self: &Arc<Self>, req: MigrationRequest) -> Result<Vec<Migration>, Refusal> {
        let _edits = self.edits.lock().unwrap();
        let plan = self.plan(&req)?;
        let first_id = self.store.next_migration_id();
        let mut started = Vec::new();
        for (id, mv) in (first_id..).zip(plan) {
            let record = Migration::new(
                id,
                &mv.vm,
                &mv.environment,
                &mv.from,
                &mv.to,
                unix(SystemTime::now()),
            );
            let g = self
                .store
                .record_migration(&record, true, None)
                .map_err(|e| refuse("state", format!("{e:#}"), false))?
                .expect("a commit has a generation");
            self.hub.committed(g);
            self.hub.metrics.migrations_in_flight.inc();
            info!(id = record.id, vm = %record.vm, from = %record.from, to = %record.to, "migration requested");
            self.live.lock().unwrap().insert(
                record.id,
                Live {
                    record: record.clone(),
                    source_uri: mv.source_uri,
                    dest_uri: mv.dest_uri,
                    resumed: None,
                    switched: None,
                    cancelled: false,
                    moved: false,
                    bandwidth: req.bandwidth_mib_s.unwrap_or(0),
                },
            );
            let me = self.clone();
            let id = record.id;
            thread::Builder::new()
                .name(format!("migrate-{id}"))
                .spawn(move || me.run(id, g))
                .map_err(|e| refuse("state", e.to_string(), false))?;
            started.push(record);
        }
        Ok(started)
    }

    /// The VMs a request names: one (`vm`, in its environment) or an environment's all.
    fn chosen<'a>(
        req: &MigrationRequest,
        specs: &'a BTreeMap<String, (String, Spec)>,
    ) -> Result<(&'a Spec, Vec<String>), Refusal> {
        match (&req.vm, &req.environment) {
            (None, None) => Err(refuse("vm", "name a VM or an environment", false)),
            (Some(vm), env) => {
                let holders: Vec<&Spec> = specs
                    .values()
                    .map(|(_, s)| s)
                    .filter(|s| s.vms.contains_key(vm.as_str()))
                    .filter(|s| env.as_ref().is_none_or(|e| s.name == *e))
                    .collect();
                match holders.as_slice() {
                    [s] if req.to.len() == 1 => Ok((*s, vec![vm.to_string()])),
                    [_] => Err(refuse("to", "one VM goes to one host", false)),
                    [] => {
                        let named = env
                            .as_ref()
                            .map(|e| format!(" named {e:?}"))
                            .unwrap_or_default();
                        let why = format!("{vm:?} is not a VM of any environment{named}");
                        Err(refuse("vm", why, false))
                    }
                    _ => {
                        let why =
                            format!("{vm:?} is in several environments; name its environment");
                        Err(refuse("vm", why, false))
                    }
                }
            }
            (None, Some(env)) => match specs.get(env.as_str()) {
                Some((_, s)) => Ok((s, s.vms.keys().cloned().collect())),
                None => Err(refuse(
                    "environment",
                    format!("there is no environment {env:?}"),
                    false,
                )),
            },
        }
    }

    /// Each move the request asks for, checked against the state; a VM already where it
    /// is asked to go is left out of an environment's move (and refused on its own).
    fn plan(&self, req: &MigrationRequest) -> Result<Vec<Move>, Refusal> {
        if req.to.is_empty() {
            return Err(refuse("to", "name at least one destination host", false));
        }
        if req.bandwidth_mib_s == Some(0) {
            return Err(refuse("bandwidth_mib_s", "must be at least 1 MiB/s", false));
        }
        let specs = self.store.snapshot();
        let (spec, vms) = Self::chosen(req, &specs)?;
        if let Some(m) = self
            .store
            .in_flight()
            .iter()
            .find(|m| m.environment == spec.name.as_str())
        {
            let why = format!(
                "environment {} has migration {} of {} in flight",
                spec.name, m.id, m.vm
            );
            return Err(refuse("vm", why, true));
        }
        let mut plan: Vec<Move> = Vec::new();
        for (i, vm) in vms.iter().enumerate() {
            let to = req.to[i % req.to.len()].to_string();
            let field = match req.vm {
                Some(_) => "to".to_string(),
                None => format!("to[{}]", i % req.to.len()),
            };
            let from = &spec.vms[vm].host;
            if *from == to {
                if req.vm.is_some() {
                    return Err(refuse(&field, format!("{vm} already runs on {to}"), true));
                }
                continue;
            }
            self.check_move(&specs, spec, vm, &to, &field)?;
            let port = &spec.vms[vm].port;
            if let Some(other) = plan
                .iter()
                .find(|m| m.to == to && spec.vms[&m.vm].port == *port)
            {
                let why = format!("{vm} and {} would both bring port {port} to {to}", other.vm);
                return Err(refuse(&field, why, true));
            }
            let (source_uri, dest_uri) = self.uris(from, &to)?;
            plan.push(Move {
                source_uri,
                dest_uri,
                environment: spec.name.to_string(),
                vm: vm.clone(),
                from: from.clone(),
                to,
            });
        }
        if plan.is_empty() {
            return Err(refuse("to", "every VM already runs where asked", true));
        }
        Ok(plan)
    }

    /// Whether `vm` of `spec` may go to `to`: a host of the environment, its port free
    /// there, and both hosts' daemons connected (they must be prepared).
    fn check_move(
        &self,
        specs: &BTreeMap<String, (String, Spec)>,
        spec: &Spec,
        vm: &str,
        to: &str,
        field: &str,
    ) -> Result<(), Refusal> {
        let v = &spec.vms[vm];
        if !spec.hosts.contains_key(to) {
            let why = format!("{to:?} is not a host of environment {}", spec.name);
            return Err(refuse(field, why, false));
        }
        if port_taken(specs, spec, vm, to) {
            let why = format!("port {} is already a VM's on {to}", v.port);
            return Err(refuse(field, why, true));
        }
        let hosts = self.hub.hosts();
        for (h, f) in [(v.host.as_str(), "vm"), (to, field)] {
            if hosts.get(h).is_none_or(|s| s.streams == 0) {
                let why = format!("{h}'s violind is not connected to the controller");
                return Err(refuse(f, why, true));
            }
        }
        Ok(())
    }

    /// The libvirt URIs both hosts registered.
    fn uris(&self, from: &str, to: &str) -> Result<(String, String), Refusal> {
        let hosts = self
            .store
            .hosts()
            .map_err(|e| refuse("state", format!("{e:#}"), false))?;
        let uri = |h: &str, field: &str| {
            hosts
                .iter()
                .find(|(n, _)| n == h)
                .and_then(|(_, r)| r.as_ref()?.libvirt.clone())
                .ok_or_else(|| refuse(field, format!("{h} registered no libvirt URI ([libvirt] remote_uri in its violind configuration)"), true))
        };
        Ok((uri(from, "vm")?, uri(to, "to")?))
    }

    /// One migration, start to end, on its own thread.
    fn run(self: Arc<Self>, id: u64, prepared: u64) {
        let started = Instant::now();
        let result = self.drive(id, prepared);
        let mut live = self.live.lock().unwrap();
        let Some(l) = live.remove(&id) else { return };
        drop(live);
        let mut m = l.record;
        m.total_seconds = Some(started.elapsed().as_secs_f64());
        let switched = l.switched.is_some() || l.moved;
        match result {
            Ok(stats) => {
                m.phase = MigrationPhase::Completed;
                m.downtime_seconds = stats.downtime;
                m.reconvergence_seconds = stats.reconvergence;
                if let Some(t) = stats.elapsed {
                    m.total_seconds = Some(t);
                }
            }
            Err(e) if switched => {
                // The guest runs on the destination: that is where it stays (if the switch
                // itself failed, the hosts' reports put the VM there, see `report`).
                m.phase = MigrationPhase::Completed;
                m.error = Some(format!("{e:#} (after the VM resumed on {})", m.to));
            }
            Err(e) => {
                m.phase = MigrationPhase::Failed;
                let why = if l.cancelled {
                    format!("cancelled ({e:#})")
                } else {
                    format!("{e:#}")
                };
                m.error = Some(format!("{why}; rolled back: {} stays on {}", m.vm, m.from));
            }
        }
        let metrics = &self.hub.metrics;
        metrics.migrations_in_flight.dec();
        let result = if m.phase == MigrationPhase::Completed {
            "completed"
        } else {
            "failed"
        };
        metrics.migrations.with_label_values(&[result]).inc();
        if m.phase == MigrationPhase::Completed {
            if let Some(t) = m.total_seconds {
                metrics.migration_duration.observe(t);
            }
            if let Some(t) = m.downtime_seconds {
                metrics.migration_downtime.observe(t);
            }
            if let Some(t) = m.reconvergence_seconds {
                metrics.migration_reconvergence.observe(t);
            }
        }
        // Closing a migration changes shares: without a switch it takes the VM out of the
        // destination's (the rollback); after one, the source stops serving the
        // environment for it.
        match self.store.record_migration(&m, true, None) {
            Ok(Some(g)) => self.hub.committed(g),
            Ok(None) => {}
            Err(e) => error!(
                id,
                error = format!("{e:#}"),
                "cannot record the migration's end"
            ),
        }
        match &m.error {
            None => {
                info!(id, vm = %m.vm, to = %m.to, total = ?m.total_seconds, downtime = ?m.downtime_seconds, reconvergence = ?m.reconvergence_seconds, "migration completed")
            }
            Some(e) => warn!(id, vm = %m.vm, error = %e, "migration ended with an error"),
        }
    }

    /// Waits until every named host applied `generation`; the last acknowledgement's time.
    fn wait_applied(&self, hosts: &[String], generation: u64) -> Result<SystemTime> {
        let deadline = Instant::now() + SYNC_TIMEOUT;
        loop {
            let state = self.hub.hosts();
            let lagging: Vec<&String> = hosts
                .iter()
                .filter(|h| state.get(*h).is_none_or(|s| s.acked < generation))
                .collect();
            if lagging.is_empty() {
                return Ok(hosts
                    .iter()
                    .filter_map(|h| state.get(h)?.applied_at(generation))
                    .max()
                    .unwrap_or_else(SystemTime::now));
            }
            if Instant::now() > deadline {
                anyhow::bail!(
                    "{} did not apply generation {generation} within {} s",
                    lagging
                        .iter()
                        .map(|h| h.as_str())
                        .collect::<Vec<_>>()
                        .join(", "),
                    SYNC_TIMEOUT.as_secs()
                );
            }
            thread::sleep(Duration::from_millis(1));
        }
    }

    /// Changes the live migration with `f`; a copy of it as changed.
    fn update(&self, id: u64, f: impl FnOnce(&mut Live)) -> Result<Live> {
        let mut live = self.live.lock().unwrap();
        let l = live
            .get_mut(&id)
            .ok_or_else(|| anyhow!("migration {id} is gone"))?;
        f(l);
        Ok(l.clone())
    }

    fn drive(self: &Arc<Self>, id: u64, prepared: u64) -> Result<Outcome> {
        let l = self.update(id, |_| {})?;
        let m = l.record.clone();
        self.wait_applied(&[m.from.clone(), m.to.clone()], prepared)
            .context("preparing the hosts")?;
        let l = self.update(id, |l| l.record.phase = MigrationPhase::Migrating)?;
        if l.cancelled {
            anyhow::bail!("the operator cancelled it before the copy began");
        }
        let _ = self.store.record_migration(&l.record, false, None);
        let progress = self.follow_progress(id, &l.source_uri, &m.vm);
        let moved = with_domain(&l.source_uri, &m.vm, |d| {
            // A cancel that came while the hosts were being prepared.
            if self.update(id, |_| {})?.cancelled {
                anyhow::bail!("the operator cancelled it before the copy began");
            }
            let flags = sys::VIR_MIGRATE_LIVE
                | sys::VIR_MIGRATE_PEER2PEER
                | sys::VIR_MIGRATE_PERSIST_DEST
                | sys::VIR_MIGRATE_UNDEFINE_SOURCE;
            d.migrate_to_uri(&l.dest_uri, flags, None, l.bandwidth)
                .map_err(libvirt_error)
                .with_context(|| format!("libvirt could not migrate {} to {}", m.vm, m.to))
        });
        progress.stop();
        moved?;
        self.update(id, |l| l.moved = true)?;
        // libvirt returned after the guest resumed; if the destination's event has not
        // come yet, its return is the switch.
        self.switch(id, SystemTime::now())?;
        let l = self.update(id, |_| {})?;
        let hosts: Vec<String> = self
            .store
            .get(&m.environment)?
            .map(|(_, s)| s.serving_hosts().into_iter().collect())
            .unwrap_or_default();
        let applied = self.wait_applied(&hosts, l.switched.expect("switched"))?;
        let reconvergence = l
            .resumed
            .and_then(|r| applied.duration_since(r).ok())
            .map(|d| d.as_secs_f64());
        let job = with_domain(&l.dest_uri, &m.vm, |d| {
            d.get_job_stats(sys::VIR_DOMAIN_JOB_STATS_COMPLETED)
                .map_err(libvirt_error)
        });
        let (downtime, elapsed) = match job {
            Ok(j) => {
                let _ = self.update(id, |l| {
                    l.record.data_processed_bytes = j.data_processed.unwrap_or(0);
                    l.record.data_total_bytes = j.data_total.unwrap_or(0);
                });
                (
                    j.downtime.map(|ms| ms as f64 / 1e3),
                    j.time_elapsed.map(|ms| ms as f64 / 1e3),
                )
            }
            Err(e) => {
                warn!(id, error = format!("{e:#}"), "no completed job statistics");
                (None, None)
            }
        };
        Ok(Outcome {
            downtime,
            elapsed,
            reconvergence,
        })
    }

    /// Polls libvirt's job on the source for the bytes copied, into the live record. Each
    /// query takes the source's QEMU monitor, which the switch-over needs too, so it polls
    /// only every 500 ms and stops once little is left to copy.
    fn follow_progress(self: &Arc<Self>, id: u64, uri: &str, vm: &str) -> Progress {
        const EVERY: Duration = Duration::from_millis(500);
        const NEAR_THE_END: u64 = 16 << 20;
        let stop = Arc::new(AtomicBool::new(false));
        let (me, uri, vm, flag) = (self.clone(), uri.to_string(), vm.to_string(), stop.clone());
        let handle = thread::spawn(move || {
            let _ = with_domain(&uri, &vm, |d| {
                while !flag.load(Ordering::Relaxed) {
                    thread::sleep(EVERY);
                    // An ended job reads as zeros: keep the last figures then.
                    let Some(j) = d
                        .get_job_info()
                        .ok()
                        .filter(|j| j.data_total.unwrap_or(0) > 0)
                    else {
                        continue;
                    };
                    if let Some(l) = me.live.lock().unwrap().get_mut(&id) {
                        l.record.data_processed_bytes = j.data_processed.unwrap_or(0);
                        l.record.data_total_bytes = j.data_total.unwrap_or(0);
                    }
                    if j.data_remaining.unwrap_or(u64::MAX) < NEAR_THE_END {
                        break;
                    }
                }
                Ok(())
            });
        });
        Progress {
            stop,
            handle: Some(handle),
        }
    }
}

struct Outcome {
    downtime: Option<f64>,
    elapsed: Option<f64>,
    reconvergence: Option<f64>,
}

/// The progress poller of one migration; stopped when libvirt returns.
struct Progress {
    stop: Arc<AtomicBool>,
    handle: Option<thread::JoinHandle<()>>,
}

impl Progress {
    fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// Whether `vm`'s port (of `spec`) is another VM's on `host`, in any environment.
fn port_taken(specs: &BTreeMap<String, (String, Spec)>, spec: &Spec, vm: &str, host: &str) -> bool {
    let port = &spec.vms[vm].port;
    specs.values().any(|(_, s)| {
        s.vms
            .iter()
            .any(|(n, o)| o.host == host && &o.port == port && !(s.name == spec.name && n == vm))
    })
}

/// Runs `f` on domain `vm` of the libvirt daemon at `uri`, closing the connection after.
fn with_domain<T>(uri: &str, vm: &str, f: impl FnOnce(&Domain) -> Result<T>) -> Result<T> {
    let mut conn = Connect::open(Some(uri))
        .map_err(libvirt_error)
        .with_context(|| format!("cannot reach libvirt at {uri}"))?;
    let out = Domain::lookup_by_name(&conn, vm)
        .map_err(libvirt_error)
        .with_context(|| format!("libvirt at {uri} has no domain {vm}"))
        .and_then(|d| f(&d));
    let _ = conn.close();
    out
}
