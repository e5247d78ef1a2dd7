//! Following this host's libvirt daemon: its domain lifecycle events (libvirt pushes them
//! over the connection; nothing is polled) reach the daemon's loop at once, so that a
//! migrating VM's forwarding entry moves the instant it stops here or resumes here; the
//! domains' state, CPU and memory go to the controller with every event and every few
//! seconds, and to `violind stats` and /metrics through a file in the run directory.
use std::{
    collections::BTreeMap,
    ffi::{c_int, c_void, CStr},
    path::PathBuf,
    sync::{mpsc, Once},
    thread,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, Result};
use tracing::{info, warn};
use violin_api::{
    vm::{DomainEvent, DomainEventKind, VmReport, VmResources, VmState, VmStatus},
    IfName,
};
use virt::{
    connect::Connect,
    domain::{Domain, SchedBandwidth, SchedulerInfo},
};
use virt_sys as sys;

use crate::{config, daemon::Event, follow::Follower, host::Paths};

/// How long after a migration's event the domains are left unqueried.
const MIGRATION_QUIET: Duration = Duration::from_secs(3);

/// What the C callback hands over: the domain's name and libvirt's event codes.
struct Raw {
    name: String,
    event: c_int,
    detail: c_int,
    at_ns: u64,
}

fn unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// libvirt's lifecycle callback (registered through the generic callback type, as the
/// C API requires). Runs on this module's thread, inside `virEventRunDefaultImpl`.
unsafe extern "C" fn lifecycle(
    _conn: sys::virConnectPtr,
    dom: sys::virDomainPtr,
    event: c_int,
    detail: c_int,
    opaque: *mut c_void,
) -> c_int {
    let at_ns = unix_ns();
    // SAFETY: libvirt passes a domain valid for the callback's duration; the name it
    // returns is owned by the domain and copied before returning.
    let name = unsafe {
        let p = sys::virDomainGetName(dom);
        if p.is_null() {
            return 0;
        }
        CStr::from_ptr(p).to_string_lossy().into_owned()
    };
    // SAFETY: `opaque` is the boxed sender `register` leaked for this registration; libvirt
    // frees it (through `free_sender`) only after the callback can no longer run.
    let tx = unsafe { &*(opaque as *const mpsc::Sender<Raw>) };
    let _ = tx.send(Raw {
        name,
        event,
        detail,
        at_ns,
    });
    0
}

unsafe extern "C" fn free_sender(opaque: *mut c_void) {
    // SAFETY: `opaque` came from Box::into_raw in `register` and libvirt calls this once.
    drop(unsafe { Box::from_raw(opaque as *mut mpsc::Sender<Raw>) });
}

type Lifecycle =
    unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, c_int, c_int, *mut c_void) -> c_int;
type Generic = unsafe extern "C" fn(sys::virConnectPtr, sys::virDomainPtr, *mut c_void);

/// Subscribes to every domain's lifecycle events; returns the registration's id.
fn register(conn: &Connect, tx: mpsc::Sender<Raw>) -> Result<c_int> {
    let opaque = Box::into_raw(Box::new(tx)) as *mut c_void;
    // SAFETY: the C API takes every kind of callback as the generic type and casts it back
    // to the type of the event it registers (VIR_DOMAIN_EVENT_ID_LIFECYCLE: the lifecycle
    // signature, which `lifecycle` has) before calling it; only the pointer is converted.
    let cb = unsafe { std::mem::transmute::<Lifecycle, Generic>(lifecycle) };
    let conn = conn.as_ptr();
    // SAFETY: the connection is open; `opaque` stays valid until libvirt calls
    // `free_sender` when the registration ends.
    let id = unsafe {
        sys::virConnectDomainEventRegisterAny(
            conn,
            std::ptr::null_mut(),
            sys::VIR_DOMAIN_EVENT_ID_LIFECYCLE as c_int,
            Some(cb),
            opaque,
            Some(free_sender),
        )
    };
    if id < 0 {
        // SAFETY: the registration failed, so libvirt did not take `opaque`.
        drop(unsafe { Box::from_raw(opaque as *mut mpsc::Sender<Raw>) });
        anyhow::bail!("libvirt refused the lifecycle event subscription");
    }
    Ok(id)
}

fn kind_of(event: c_int) -> DomainEventKind {
    match event as u32 {
        sys::VIR_DOMAIN_EVENT_DEFINED => DomainEventKind::Defined,
        sys::VIR_DOMAIN_EVENT_UNDEFINED => DomainEventKind::Undefined,
        sys::VIR_DOMAIN_EVENT_STARTED => DomainEventKind::Started,
        sys::VIR_DOMAIN_EVENT_SUSPENDED => DomainEventKind::Suspended,
        sys::VIR_DOMAIN_EVENT_RESUMED => DomainEventKind::Resumed,
        sys::VIR_DOMAIN_EVENT_STOPPED => DomainEventKind::Stopped,
        _ => DomainEventKind::Other,
    }
}

/// Whether libvirt's detail code says the change belongs to a migration.
fn is_migration(event: c_int, detail: c_int) -> bool {
    let (event, detail) = (event as u32, detail as u32);
    match event {
        sys::VIR_DOMAIN_EVENT_STARTED => detail == sys::VIR_DOMAIN_EVENT_STARTED_MIGRATED,
        sys::VIR_DOMAIN_EVENT_SUSPENDED => detail == sys::VIR_DOMAIN_EVENT_SUSPENDED_MIGRATED,
        sys::VIR_DOMAIN_EVENT_RESUMED => detail == sys::VIR_DOMAIN_EVENT_RESUMED_MIGRATED,
        sys::VIR_DOMAIN_EVENT_STOPPED => detail == sys::VIR_DOMAIN_EVENT_STOPPED_MIGRATED,
        _ => false,
    }
}

/// The `<target dev=...>` of each `<interface>` in a domain's XML: its Violin ports.
pub fn ports_in_xml(xml: &str) -> Vec<IfName> {
    let mut ports = Vec::new();
    for iface in xml.split("<interface").skip(1) {
        let body = iface.split("</interface>").next().unwrap_or("");
        let Some(at) = body.find("<target dev=") else {
            continue;
        };
        let rest = &body[at + "<target dev=".len()..];
        let Some(quote) = rest.chars().next() else {
            continue;
        };
        if let Some(name) = rest[1..].split(quote).next() {
            if let Ok(n) = IfName::parse(name) {
                ports.push(n);
            }
        }
    }
    ports
}

fn state_of(raw: sys::virDomainState) -> VmState {
    match raw {
        sys::VIR_DOMAIN_RUNNING | sys::VIR_DOMAIN_BLOCKED => VmState::Running,
        sys::VIR_DOMAIN_PAUSED | sys::VIR_DOMAIN_PMSUSPENDED => VmState::Paused,
        sys::VIR_DOMAIN_SHUTOFF | sys::VIR_DOMAIN_SHUTDOWN => VmState::Shutoff,
        sys::VIR_DOMAIN_CRASHED => VmState::Crashed,
        _ => VmState::Other,
    }
}

/// Memory the guest uses by its balloon driver's statistics (available less unused), in
/// bytes; None without a balloon driver reporting them.
fn memory_used(d: &Domain) -> Option<u64> {
    let stats = d.memory_stats(0).ok()?;
    let get = |tag| stats.iter().find(|s| s.tag == tag).map(|s| s.val);
    let available = get(sys::VIR_DOMAIN_MEMORY_STAT_AVAILABLE)?;
    let unused = get(sys::VIR_DOMAIN_MEMORY_STAT_UNUSED)?;
    Some(available.saturating_sub(unused) * 1024)
}

/// The domain's CPU weight and cap (cores) from its scheduler parameters; None for what
/// the hypervisor does not tell (no CPU controller).
fn cpu_controls(d: &Domain) -> (Option<u64>, Option<f64>) {
    let Ok(p) = d.get_scheduler_parameters() else {
        return (None, None);
    };
    let cap = match (p.global_bw.quota, p.global_bw.period) {
        (Some(q), Some(period)) if q > 0 && period > 0 => Some(q as f64 / period as f64),
        _ => None,
    };
    (p.cpu_shares, cap)
}

fn status_of(d: &Domain) -> Option<VmStatus> {
    let name = d.get_name().ok()?;
    let info = d.get_info().ok()?;
    let running = state_of(info.state) == VmState::Running;
    let (cpu_weight, cpu_cap) = if running {
        cpu_controls(d)
    } else {
        (None, None)
    };
    Some(VmStatus {
        name,
        state: state_of(info.state),
        cpu_seconds: info.cpu_time as f64 / 1e9,
        memory_bytes: info.memory * 1024,
        vcpus: info.nr_virt_cpu,
        ports: d
            .get_xml_desc(0)
            .map(|x| ports_in_xml(&x))
            .unwrap_or_default(),
        max_memory_bytes: info.max_mem * 1024,
        memory_used_bytes: if running { memory_used(d) } else { None },
        cpu_weight,
        cpu_cap,
    })
}

/// This machine's memory in MiB (/proc/meminfo), the default a host offers its VMs.
pub fn host_memory_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .map_or(1024, |kib| kib / 1024)
}

/// The scheduler period a CPU cap is expressed in (libvirt's default, 100 ms).
const CAP_PERIOD_US: u64 = 100_000;

/// Whether `status` shows the CPU weight and cap `want` asks for (within rounding). The
/// balloon is not compared: the guest gives memory back at its own pace.
fn has(status: &VmStatus, want: &VmResources) -> bool {
    let weight = status.cpu_weight == Some(want.cpu_weight);
    let cap = match (status.cpu_cap, want.cpu_cap) {
        (Some(a), Some(b)) => (a - b).abs() < 0.01,
        (None, None) => true,
        _ => false,
    };
    weight && cap
}

/// Sets a running domain's CPU weight and cap and its balloon target through libvirt.
fn apply(conn: &Connect, want: &VmResources) -> Result<()> {
    let d = Domain::lookup_by_name(conn, &want.vm)?;
    let mut p = SchedulerInfo {
        cpu_shares: Some(want.cpu_weight),
        ..SchedulerInfo::default()
    };
    // A cap of the whole domain (all its vCPUs and its emulator threads); -1 lifts it.
    p.global_bw = SchedBandwidth {
        period: Some(CAP_PERIOD_US),
        quota: Some(match want.cpu_cap {
            Some(c) => ((c * CAP_PERIOD_US as f64).round() as i64).max(1000),
            None => -1,
        }),
    };
    d.set_scheduler_parameters(&p)
        .with_context(|| format!("{}: CPU weight and cap", want.vm))?;
    if let Some(m) = want.memory_mib {
        d.set_memory(m * 1024)
            .with_context(|| format!("{}: balloon to {m} MiB", want.vm))?;
    }
    Ok(())
}

/// Brings the running domains this host was given resources for to them: those not set
/// since they (re)appeared here, set differently, or whose CPU settings drifted. `applied`
/// is what was set, by VM. Says which were set.
fn enforce(
    conn: &Connect,
    vms: &[VmStatus],
    wanted: &[VmResources],
    applied: &mut BTreeMap<String, VmResources>,
) -> Vec<String> {
    applied.retain(|vm, _| {
        vms.iter()
            .any(|v| &v.name == vm && v.state == VmState::Running)
    });
    let mut set = Vec::new();
    for want in wanted {
        let Some(status) = vms.iter().find(|v| v.name == want.vm) else {
            continue;
        };
        if status.state != VmState::Running
            || (applied.get(&want.vm) == Some(want) && has(status, want))
        {
            continue;
        }
        match apply(conn, want) {
            Ok(()) => {
                info!(vm = %want.vm, weight = want.cpu_weight, cap = ?want.cpu_cap, memory_mib = ?want.memory_mib, "set the VM's resources");
                applied.insert(want.vm.clone(), want.clone());
                set.push(want.vm.clone());
            }
            Err(e) => warn!(error = format!("{e:#}"), "cannot set a VM's resources"),
        }
    }
    set
}

fn statuses(conn: &Connect) -> Vec<VmStatus> {
    let mut vms: Vec<VmStatus> = conn
        .list_all_domains(0)
        .unwrap_or_default()
        .iter()
        .filter_map(status_of)
        .collect();
    vms.sort_by(|a, b| a.name.cmp(&b.name));
    vms
}

/// The domains as last reported, for `violind stats` and /metrics.
pub fn load_vms(paths: &Paths) -> Vec<VmStatus> {
    std::fs::read(paths.vms())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_default()
}

fn store_vms(path: &PathBuf, vms: &[VmStatus]) {
    let tmp = path.with_extension("tmp");
    let ok = serde_json::to_vec(vms)
        .map_err(anyhow::Error::from)
        .and_then(|b| Ok(std::fs::write(&tmp, b)?))
        .and_then(|()| Ok(std::fs::rename(&tmp, path)?));
    if let Err(e) = ok {
        warn!(error = %e, "cannot record the domains");
    }
}

/// One connection's life: subscribe, then turn events into the daemon's events and
/// reports until the connection dies.
struct Session {
    conn: Connect,
    raw: mpsc::Receiver<Raw>,
    callback: c_int,
    /// The ports of every domain seen, so that a domain that is already gone (undefined
    /// on the source of a migration) still names its ports.
    ports: BTreeMap<String, Vec<IfName>>,
}

impl Session {
    fn open(uri: &str) -> Result<Session> {
        let conn = Connect::open(Some(uri)).with_context(|| format!("libvirt.uri: {uri}"))?;
        // Keepalives notice a daemon that died without closing the socket.
        let _ = conn.set_keep_alive(5, 3);
        let (tx, raw) = mpsc::channel();
        let callback = match register(&conn, tx) {
            Ok(id) => id,
            Err(e) => {
                // virt 0.4's Connect does not close itself.
                let mut conn = conn;
                let _ = conn.close();
                return Err(e);
            }
        };
        Ok(Session {
            conn,
            raw,
            callback,
            ports: BTreeMap::new(),
        })
    }

    /// A domain's ports: known ones from the cache, since querying a domain that is
    /// migrating delays its migration (see `follow`).
    fn ports_of(&mut self, name: &str) -> Vec<IfName> {
        if let Some(p) = self.ports.get(name).filter(|p| !p.is_empty()) {
            return p.clone();
        }
        let found = Domain::lookup_by_name(&self.conn, name)
            .and_then(|d| d.get_xml_desc(0))
            .map(|x| ports_in_xml(&x));
        match found {
            Ok(p) if !p.is_empty() => {
                self.ports.insert(name.to_string(), p.clone());
                p
            }
            _ => self.ports.get(name).cloned().unwrap_or_default(),
        }
    }

    fn events(&mut self) -> Vec<DomainEvent> {
        let raw: Vec<Raw> = self.raw.try_iter().collect();
        raw.into_iter()
            .map(|r| DomainEvent {
                ports: self.ports_of(&r.name),
                kind: kind_of(r.event),
                migration: is_migration(r.event, r.detail),
                at_ns: r.at_ns,
                vm: r.name,
            })
            .collect()
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // SAFETY: the id came from this connection's registration, which is still open.
        unsafe { sys::virConnectDomainEventDeregisterAny(self.conn.as_ptr(), self.callback) };
        // virt 0.4's Connect does not close itself.
        let _ = self.conn.close();
    }
}

/// libvirt's default event loop, registered once per process before any connection.
fn event_loop() -> Result<()> {
    static INIT: Once = Once::new();
    let mut result = Ok(());
    INIT.call_once(|| {
        result = virt::event::event_register_default_impl()
            .map_err(|e| anyhow::anyhow!("libvirt event loop: {e}"))
            .and_then(|()| {
                // A timer wakes the loop every 250 ms, so reports and liveness checks run
                // without an event.
                virt::event::event_add_timeout(250, |_, _| {}, std::ptr::null_mut())
                    .map(|_| ())
                    .map_err(|e| anyhow::anyhow!("libvirt event timer: {e}"))
            });
    });
    result
}

/// Follows the local libvirt daemon on a thread of its own, reconnecting when it goes.
/// `resources` brings the resources the controller gives this host's VMs.
pub fn start(
    cfg: &config::Libvirt,
    paths: &Paths,
    events: mpsc::Sender<Event>,
    reporter: Option<Follower>,
    resources: mpsc::Receiver<Vec<VmResources>>,
) -> Result<()> {
    event_loop()?;
    let uri = cfg.uri.clone();
    let file = paths.vms();
    let every = Duration::from_millis(u64::from(cfg.report_ms));
    let mut wanted = Vec::new();
    thread::Builder::new()
        .name("libvirt".into())
        .spawn(move || {
            let mut backoff = Duration::from_millis(200);
            loop {
                match Session::open(&uri) {
                    Ok(s) => {
                        info!(%uri, "following libvirt's domain events");
                        backoff = Duration::from_millis(200);
                        let to = Targets {
                            every,
                            rx: &resources,
                            wanted: &mut wanted,
                        };
                        if follow(s, &events, reporter.as_ref(), &file, to).is_err() {
                            return;
                        }
                        warn!(%uri, "lost the libvirt connection; reconnecting");
                    }
                    Err(e) => warn!(error = format!("{e:#}"), "cannot reach libvirt; retrying"),
                }
                thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        })?;
    Ok(())
}

/// How often to sample, and the resources to hold the domains to.
struct Targets<'a> {
    every: Duration,
    rx: &'a mpsc::Receiver<Vec<VmResources>>,
    wanted: &'a mut Vec<VmResources>,
}

/// Runs one session; Err when the daemon's loop is gone (violind is exiting).
fn follow(
    mut s: Session,
    events: &mpsc::Sender<Event>,
    reporter: Option<&Follower>,
    file: &PathBuf,
    to: Targets,
) -> Result<(), ()> {
    let mut last = None::<Instant>;
    // What this session set, by VM: a new connection (a restarted libvirtd) sets again.
    let mut applied = BTreeMap::new();
    // The last event of a migration. Querying the daemon's domains while migrations
    // switch over kept a guest paused for seconds (two guests swapping hosts: 1.1-2.1 s
    // against 0.1-0.3 s with violind not querying), so the figures wait until the
    // migrations are quiet.
    let mut migrating = None::<Instant>;
    loop {
        if let Err(e) = virt::event::event_run_default_impl() {
            warn!(error = %e, "libvirt event loop");
        }
        let happened = s.events();
        for ev in &happened {
            info!(vm = %ev.vm, kind = ?ev.kind, migration = ev.migration, "domain event");
            events.send(Event::Domain(ev.clone())).map_err(|_| ())?;
        }
        if let (Some(r), false) = (reporter, happened.is_empty()) {
            // The events first and alone: the controller switches a migration over on
            // them, and gathering the domains' figures takes a round trip per domain.
            report(
                r,
                VmReport {
                    vms: None,
                    events: happened.clone(),
                },
            );
        }
        if happened.iter().any(|e| e.migration) {
            migrating = Some(Instant::now());
        }
        let mut new_targets = false;
        while let Ok(r) = to.rx.try_recv() {
            *to.wanted = r;
            new_targets = true;
        }
        let quiet = migrating.is_none_or(|t| t.elapsed() >= MIGRATION_QUIET);
        let due =
            !happened.is_empty() || new_targets || last.is_none_or(|t| t.elapsed() >= to.every);
        if !due || !quiet {
            if !s.conn.is_alive().unwrap_or(false) {
                return Ok(());
            }
            continue;
        }
        last = Some(Instant::now());
        let mut vms = statuses(&s.conn);
        // Held to the controller's word: a VM that arrived, restarted or drifted is set
        // again, and reported as it is then.
        if !enforce(&s.conn, &vms, to.wanted, &mut applied).is_empty() {
            vms = statuses(&s.conn);
        }
        for v in &vms {
            s.ports.insert(v.name.clone(), v.ports.clone());
        }
        store_vms(file, &vms);
        if let Some(r) = reporter {
            report(
                r,
                VmReport {
                    vms: Some(vms),
                    events: Vec::new(),
                },
            );
        }
    }
}

fn report(r: &Follower, report: VmReport) {
    if let Err(e) = r.report_vms(&report) {
        warn!(
            error = format!("{e:#}"),
            "cannot report the domains to the controller"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_come_from_the_interfaces_targets() {
        let xml = "<domain><devices><interface type='ethernet'><mac address='52:54:00:00:00:01'/>\
                   <target dev='vt1' managed='yes'/><model type='virtio'/></interface>\
                   <serial><target port='0'/></serial>\
                   <interface type=\"ethernet\"><target dev=\"vt2\"/></interface></devices></domain>";
        let ports: Vec<String> = ports_in_xml(xml).iter().map(|p| p.to_string()).collect();
        assert_eq!(ports, ["vt1", "vt2"]);
        assert!(ports_in_xml("<domain/>").is_empty());
    }

    #[test]
    fn libvirt_codes_map_to_events() {
        assert_eq!(
            kind_of(sys::VIR_DOMAIN_EVENT_RESUMED as c_int),
            DomainEventKind::Resumed
        );
        assert!(is_migration(
            sys::VIR_DOMAIN_EVENT_STOPPED as c_int,
            sys::VIR_DOMAIN_EVENT_STOPPED_MIGRATED as c_int
        ));
        assert!(!is_migration(
            sys::VIR_DOMAIN_EVENT_STOPPED as c_int,
            0 // destroyed
        ));
    }
}
