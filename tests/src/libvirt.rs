//! One libvirtd per simulated host, and the tiny guests' domains (facts in shared
//! VIRT.md).
//!
//! A host's libvirtd runs in the host's network namespace and in a private mount namespace
//! where /etc/libvirt, /etc/passwd, /etc/group, /run and /var/{lib,cache,log} are bind
//! mounts of directories under the host's own `dir`: several daemons then coexist on one
//! machine, each believing it is the system's.
use std::{
    fs,
    net::Ipv4Addr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::guest::GuestImage;

/// Environment variable naming a daemon's namespace, so that [`cleanup`] can recognise
/// the daemons it started after a crash (their own paths are all private).
const NS_MARKER: &str = "VIOLIN_LIBVIRTD_NS";
const START_TIMEOUT: Duration = Duration::from_secs(20);

/// Runs in the daemon's mount namespace with the host's dir as `$1`.
const LAUNCH: &str = r#"set -e
mount --bind "$1/etc" /etc/libvirt
mount --bind "$1/passwd" /etc/passwd
mount --bind "$1/group" /etc/group
for d in lib cache log; do mount --bind "$1/var/$d" "/var/$d"; done
mount --bind "$1/run" /run
mkdir -p /run/libvirt
if [ -n "$2" ]; then eval "$3"; fi
exec /usr/sbin/libvirtd -f /etc/libvirt/libvirtd.conf -p /run/libvirtd.pid --listen
"#;

pub struct Libvirtd {
    pub dir: PathBuf,
    pub ns: String,
    pub address: Ipv4Addr,
    child: Option<Child>,
}

impl Libvirtd {
    /// Starts the libvirtd of the host in network namespace `ns` (which has `address` on
    /// its underlay), keeping its state, configuration and logs in `dir`; its QEMU is the
    /// `qemu-system-x86_64` in `qemu_dir`. Distinct `host_uuid_seed`s give distinct host
    /// UUIDs, without which libvirt refuses to migrate ("migration to the same host").
    /// With `cgroups`, QEMUs run in cgroups of the CPU controller, so that their CPU
    /// weight and cap can be set.
    pub fn start(
        ns: &str,
        address: Ipv4Addr,
        dir: &Path,
        host_uuid_seed: usize,
        qemu_dir: &Path,
        cgroups: bool,
    ) -> Result<Libvirtd> {
        for sub in [
            "etc",
            "run",
            "var/lib/libvirt",
            "var/cache/libvirt",
            "var/log/libvirt",
        ] {
            fs::create_dir_all(dir.join(sub))
                .with_context(|| format!("creating {}", dir.join(sub).display()))?;
        }
        let dir = dir.canonicalize()?;
        for private in ["/run", "/var/lib", "/var/cache", "/var/log"] {
            if dir.starts_with(private) {
                bail!(
                    "{}: a libvirtd's dir must lie outside {private}, which it replaces",
                    dir.display()
                );
            }
        }
        write_config(&dir, address, host_uuid_seed, cgroups)?;
        let out = fs::File::create(dir.join("libvirtd.out"))?;
        let path = std::env::var("PATH").unwrap_or_default();
        let child = Command::new("ip")
            .args(["netns", "exec", ns])
            .args(["unshare", "-m", "--propagation", "private"])
            .args(["sh", "-c", LAUNCH, "sh"])
            .arg(&dir)
            // The CPU controllers, for the guests' CPU weight and cap.
            .arg(if cgroups { "cgroups" } else { "" })
            .arg(crate::sys::REMOUNT_CGROUPS)
            .env("CGROUPS", "cpu|cpuacct")
            .env("PATH", format!("{}:{path}", qemu_dir.display()))
            .env(NS_MARKER, ns)
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .context("cannot run ip netns exec ... libvirtd")?;
        let mut daemon = Libvirtd {
            dir,
            ns: ns.to_string(),
            address,
            child: Some(child),
        };
        daemon.wait_ready()?;
        Ok(daemon)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        let logs = format!(
            "see {} and {}",
            self.dir.join("libvirtd.log").display(),
            self.dir.join("libvirtd.out").display()
        );
        loop {
            let child = self.child.as_mut().expect("started");
            if let Some(status) = child.try_wait()? {
                bail!(
                    "libvirtd of {} exited during start ({status}); {logs}",
                    self.ns
                );
            }
            if virsh(&self.local_uri(), &["uri"]).is_ok() {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!(
                    "libvirtd of {} did not answer within {START_TIMEOUT:?}; {logs}",
                    self.ns
                );
            }
            thread::sleep(Duration::from_millis(100));
        }
    }

    pub fn local_uri(&self) -> String {
        format!(
            "qemu+unix:///system?socket={}",
            self.dir.join("run/libvirt/libvirt-sock").display()
        )
    }

    /// The URI other hosts reach this daemon by (peer-to-peer migration), on the underlay.
    pub fn tcp_uri(&self) -> String {
        format!("qemu+tcp://{}/system", self.address)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Destroys the domains running here (their QEMUs would outlive the daemon), then
    /// stops the daemon. Idempotent.
    pub fn stop(&mut self) {
        if self.child.is_none() {
            return;
        }
        if let Ok(names) = virsh(&self.local_uri(), &["list", "--name"]) {
            for name in names.lines().map(str::trim).filter(|n| !n.is_empty()) {
                let _ = virsh(&self.local_uri(), &["destroy", name]);
            }
        }
        self.kill_daemon();
    }

    /// Stops the daemon only: its guests run on, and a daemon started again on the same
    /// dir takes them back. Idempotent.
    pub fn kill_daemon(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        signal(child.id(), libc::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(child.try_wait(), Ok(None)) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for Libvirtd {
    fn drop(&mut self) {
        self.stop();
    }
}

fn write_config(dir: &Path, address: Ipv4Addr, host_uuid_seed: usize, cgroups: bool) -> Result<()> {
    let uuid = format!("5e1f1e00-0000-4000-8000-{:012x}", host_uuid_seed + 1);
    let log = dir.join("libvirtd.log");
    // TCP without authentication is for the lab only, where the daemon listens inside its
    // private network namespace; real hosts use TLS (listen_tls with certificates).
    let libvirtd = format!(
        "auth_unix_ro = \"none\"\nauth_unix_rw = \"none\"\nunix_sock_rw_perms = \"0700\"\n\
         host_uuid = \"{uuid}\"\nlog_outputs = \"3:file:{}\"\n\
         listen_tls = 0\nlisten_tcp = 1\nauth_tcp = \"none\"\nlisten_addr = \"{address}\"\n",
        log.display()
    );
    // QEMU runs as root with no confinement: the lab has no users or security drivers to
    // give it, and cgroups only where a test sets the guests' CPU (the machine's v1 cpu
    // controller; libvirt makes a group per domain under /machine). Migration streams
    // use the host's underlay address.
    let controllers = if cgroups { "\"cpu\", \"cpuacct\"" } else { " " };
    let qemu = format!(
        "user = \"root\"\ngroup = \"root\"\ndynamic_ownership = 0\nremember_owner = 0\n\
         security_driver = \"none\"\ncgroup_controllers = [{controllers}]\nnamespaces = [ ]\n\
         stdio_handler = \"file\"\nmigration_address = \"{address}\"\n\
         migration_host = \"{address}\"\n"
    );
    fs::write(dir.join("etc/libvirtd.conf"), libvirtd)?;
    fs::write(dir.join("etc/qemu.conf"), qemu)?;
    // libvirtd refuses to start unless its compiled-in QEMU user and group exist.
    let mut passwd = fs::read_to_string("/etc/passwd")?;
    let mut group = fs::read_to_string("/etc/group")?;
    if !passwd.contains("\nlibvirt-qemu:") {
        passwd.push_str(
            "libvirt-qemu:x:64055:64055:Libvirt Qemu:/var/lib/libvirt:/usr/sbin/nologin\n",
        );
    }
    for (name, id) in [("libvirt-qemu", 64055), ("kvm", 64056)] {
        if !group.starts_with(&format!("{name}:")) && !group.contains(&format!("\n{name}:")) {
            group.push_str(&format!("{name}:x:{id}:\n"));
        }
    }
    fs::write(dir.join("passwd"), passwd)?;
    fs::write(dir.join("group"), group)?;
    Ok(())
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) takes only integers and accesses no memory of this process. Which
    // process it reaches is a correctness matter left to the callers.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

/// After a crash: kills the libvirtds [`Libvirtd::start`] started in namespaces named
/// `prefix*` and the QEMUs of domains named `prefix*`. Best effort and silent.
pub fn cleanup(prefix: &str) {
    let Ok(procs) = fs::read_dir("/proc") else {
        return;
    };
    let marker = format!("{NS_MARKER}={prefix}");
    let guest = format!("guest={prefix}");
    for entry in procs.filter_map(|e| e.ok()) {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let nul_separated = |file: &str| -> Vec<String> {
            fs::read(entry.path().join(file))
                .map(|b| {
                    b.split(|&c| c == 0)
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect()
                })
                .unwrap_or_default()
        };
        let args = nul_separated("cmdline");
        let program = args.first().map(|a| a.rsplit('/').next().unwrap_or(a));
        let ours = match program {
            Some("libvirtd") => nul_separated("environ")
                .iter()
                .any(|v| v.starts_with(&marker)),
            Some("qemu-system-x86_64") => args.iter().any(|a| a.starts_with(&guest)),
            _ => false,
        };
        if ours {
            signal(pid, libc::SIGKILL);
        }
    }
}

pub struct GuestSpec {
    /// The domain's name; [`cleanup`] finds its QEMU by this name's prefix.
    pub name: String,
    pub mac: [u8; 6],
    pub ip: Ipv4Addr,
    pub prefix_len: u8,
    pub mtu: u32,
    /// The host-side tap device libvirt creates: the VM's port.
    pub port: String,
    /// Run violin-probe against this peer.
    pub probe: Option<Ipv4Addr>,
    /// violin-probe's interval (ms; its default, 10, when None).
    pub probe_interval_ms: Option<u32>,
    /// violin-nemo's rounds to run: `RANK/ITERS/HALO/WORK/PEERS` (see crate::guest).
    pub nemo: Option<String>,
    /// Enslave the tap to this Linux bridge (a Linux VXLAN host) instead of leaving it
    /// to Violin.
    pub bridge: Option<String>,
    /// A virtio memory balloon reporting the guest's memory statistics every second.
    pub balloon: bool,
    /// Keep the guest's CPU busy.
    pub burn: bool,
    /// Serial console log. Outside /run and /var/{lib,cache,log}, which are private to
    /// each host: during a migration both hosts' QEMUs open it.
    pub console: PathBuf,
    pub memory_mib: u32,
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('\'', "&apos;")
}

/// The libvirt domain of a tiny guest booting `image`.
pub fn domain_xml(image: &GuestImage, g: &GuestSpec) -> String {
    let mut cmdline = format!(
        "console=ttyS0 quiet panic=-1 vmip={}/{} vmmtu={}",
        g.ip, g.prefix_len, g.mtu
    );
    if let Some(peer) = g.probe {
        cmdline.push_str(&format!(" probe={peer}"));
        if let Some(ms) = g.probe_interval_ms {
            cmdline.push_str(&format!(" probems={ms}"));
        }
    }
    if let Some(nemo) = &g.nemo {
        cmdline.push_str(&format!(" nemo={nemo}"));
    }
    if g.burn {
        cmdline.push_str(" burn=1");
    }
    let balloon = if g.balloon {
        "<memballoon model='virtio'><stats period='1'/></memballoon>"
    } else {
        "<memballoon model='none'/>"
    };
    let interface = match &g.bridge {
        Some(br) => format!("bridge'>\n      <source bridge='{}'/>", xml_escape(br)),
        None => "ethernet'>".to_string(),
    };
    let mac = crate::lab::mac_string(&g.mac);
    let path = |p: &Path| xml_escape(&p.display().to_string());
    // type='qemu' is TCG: KVM here is PVM, which hangs a stock kernel. The interface is a
    // plain tap libvirt creates under the port's name; the guest computes its checksums
    // (host csum off) because Violin's XDP ports lose checksum-pending state. Event index
    // off: with it, a TCG guest migrated under traffic (QEMU 7.2 here) now and then freed a
    // transmitted buffer twice in virtio_net and panicked; 24 migrations in a row without.
    format!(
        "<domain type='qemu'>
  <name>{name}</name>
  <memory unit='MiB'>{memory}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64' machine='pc'>hvm</type>
    <kernel>{kernel}</kernel>
    <initrd>{initrd}</initrd>
    <cmdline>{cmdline}</cmdline>
  </os>
  <features><acpi/></features>
  <on_reboot>destroy</on_reboot>
  <devices>
    <emulator>{qemu}</emulator>
    <interface type='{interface}
      <target dev='{port}'/>
      <mac address='{mac}'/>
      <model type='virtio'/>
      <mtu size='{mtu}'/>
      <driver name='qemu' event_idx='off'><host csum='off'/></driver>
      <rom enabled='no'/>
    </interface>
    <serial type='file'>
      <source path='{console}' append='on'/>
    </serial>
    <controller type='usb' model='none'/>
    {balloon}
  </devices>
</domain>
",
        name = xml_escape(&g.name),
        memory = g.memory_mib,
        kernel = path(&image.kernel),
        initrd = path(&image.initrd),
        qemu = path(&image.qemu),
        port = xml_escape(&g.port),
        interface = interface,
        mtu = g.mtu,
        console = path(&g.console),
        balloon = balloon,
    )
}

/// `virsh -q -c uri args...`; fails with virsh's stderr.
pub fn virsh(uri: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["-q", "-c", uri];
    full.extend_from_slice(args);
    crate::sys::run("virsh", &full)
}

/// Defines (persistently) and starts the domain of `xml`, then waits until its guest has
/// its network up (`NETUP` on `console`). The XML is kept beside the console.
pub fn boot(uri: &str, xml: &str, console: &Path, timeout: Duration) -> Result<()> {
    let name = xml
        .split_once("<name>")
        .and_then(|(_, rest)| rest.split_once("</name>"))
        .map(|(name, _)| name.to_string())
        .context("domain XML without <name>")?;
    // The console is appended to across boots and migrations: only what follows counts.
    let seen = fs::metadata(console).map(|m| m.len() as usize).unwrap_or(0);
    let xml_file = console.with_extension("xml");
    fs::write(&xml_file, xml).with_context(|| format!("writing {}", xml_file.display()))?;
    // A stopped leftover of the same name (an earlier run's) would refuse the definition.
    let _ = virsh(uri, &["undefine", &name]);
    virsh(uri, &["define", &xml_file.to_string_lossy()])?;
    virsh(uri, &["start", &name])?;
    let start = Instant::now();
    let mut checked_state = start;
    loop {
        let text = fs::read(console).unwrap_or_default();
        let new = String::from_utf8_lossy(text.get(seen..).unwrap_or_default());
        if new.contains("NETUP") {
            return Ok(());
        }
        let tail = || {
            let lines: Vec<&str> = new.lines().collect();
            lines[lines.len().saturating_sub(15)..].join("\n")
        };
        if start.elapsed() > timeout {
            bail!(
                "domain {name}: no NETUP on {} within {timeout:?}; its last lines:\n{}",
                console.display(),
                tail()
            );
        }
        // A guest that panicked is destroyed (panic=-1, on_reboot destroy): say so now.
        if checked_state.elapsed() > Duration::from_secs(1) {
            checked_state = Instant::now();
            let state = virsh(uri, &["domstate", &name]).unwrap_or_default();
            if state.trim() != "running" {
                bail!(
                    "domain {name} is {} before NETUP; its console {} ends:\n{}",
                    state.trim(),
                    console.display(),
                    tail()
                );
            }
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// What violin-probe last reported (the line is `violin_probe::Report`'s).
pub use violin_probe::Report as ProbeReport;

/// The last complete report on a guest's console.
pub fn probe_report(console: &Path) -> Option<ProbeReport> {
    let text = fs::read(console).ok()?;
    String::from_utf8_lossy(&text)
        .lines()
        .rev()
        .find_map(ProbeReport::parse)
}

/// Waits until `prober`'s `violin-probe` has `more` TCP echoes beyond `from` (its session
/// carries traffic), failing on a broken session or after 90 s, with the daemons' logs.
pub fn wait_echoes(
    lab: &crate::lab::Lab,
    prober: &crate::lab::Vm,
    from: u64,
    more: u64,
) -> ProbeReport {
    let console = &prober.guest.as_ref().expect("a guest").console;
    let name = crate::control::vm_name(prober);
    let deadline = Instant::now() + Duration::from_secs(90);
    // The probe prints a report every 500 ms whatever the network does: a console that
    // stops growing is a guest that stopped running.
    let (mut printed, mut growing) = (0, Instant::now());
    loop {
        let size = fs::metadata(console).map_or(0, |m| m.len());
        if size != printed {
            (printed, growing) = (size, Instant::now());
        }
        assert!(
            growing.elapsed() < Duration::from_secs(20),
            "{name}: {FROZEN} for 20 s"
        );
        let r = probe_report(console);
        if let Some(r) = &r {
            assert_eq!(r.tcp_error, None, "{name}: the TCP session broke: {r:?}");
            if r.tcp_echoed >= from + more {
                return r.clone();
            }
        }
        assert!(
            Instant::now() < deadline,
            "{name}: the probe's session did not carry {more} more echoes after {from}: {r:?}\n{}",
            lab.daemon_logs()
        );
        thread::sleep(Duration::from_millis(200));
    }
}

/// What [`wait_echoes`] says of a guest whose probe stopped printing its reports: the
/// guest stopped running (QEMU 7.2's TCG, like its panics), whatever the network did.
pub const FROZEN: &str =
    "the guest stopped printing its probe reports (frozen: emulator, not Violin)";

/// What a test says of a guest that libvirt reports shut off or crashed after it ran and
/// nobody stopped it: its QEMU exited (QEMU 7.2's TCG after a move, like its panics).
pub const STOPPED: &str =
    "libvirt reports the guest stopped though nobody stopped it (emulator, not Violin)";

/// Runs `scenario` on a lab `make` builds, and takes the lab down after. When it fails
/// and a guest's kernel panicked (see [`guest_panic`]), a guest froze ([`FROZEN`]) or its
/// emulator stopped ([`STOPPED`]), it runs once more on a fresh lab, and only then; the
/// first failure is printed in full above the second run.
pub fn twice_on_guest_panic(
    make: impl Fn() -> crate::lab::Lab,
    scenario: impl Fn(&mut crate::lab::Lab),
) {
    for attempt in 1..=2 {
        let mut lab = make();
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| scenario(&mut lab)));
        match run {
            Ok(()) => return lab.down().unwrap(),
            Err(failure) => {
                let said = failure
                    .downcast_ref::<String>()
                    .map(String::as_str)
                    .or_else(|| failure.downcast_ref::<&str>().copied())
                    .unwrap_or_default();
                let emulator = guest_panic(&lab)
                    .map(|which| format!("{which}'s kernel panicked"))
                    .or_else(|| {
                        [(FROZEN, "a guest froze"), (STOPPED, "a guest stopped")]
                            .into_iter()
                            .find(|(mark, _)| said.contains(mark))
                            .map(|(_, what)| what.to_string())
                    });
                match emulator {
                    Some(what) if attempt == 1 => {
                        eprintln!("{what} (emulator, not Violin): once more");
                    }
                    _ => std::panic::resume_unwind(failure),
                }
            }
        }
    }
}

/// The first guest of `lab` whose console shows a kernel panic. QEMU 7.2's TCG here now
/// and then corrupts a guest migrated under traffic (see `domain_xml`); tests that
/// migrate run once more on a fresh lab then, and only then.
pub fn guest_panic(lab: &crate::lab::Lab) -> Option<String> {
    lab.vms.iter().find_map(|v| {
        let console = fs::read_to_string(&v.guest.as_ref()?.console).ok()?;
        console
            .contains("Kernel panic - not syncing")
            .then(|| crate::control::vm_name(v))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(probe: Option<Ipv4Addr>) -> GuestSpec {
        GuestSpec {
            name: "gq-vm1".into(),
            mac: [0x52, 0x54, 0, 0x77, 0, 2],
            ip: Ipv4Addr::new(10, 251, 9, 2),
            prefix_len: 24,
            mtu: 1450,
            port: "gqtap1".into(),
            probe,
            probe_interval_ms: None,
            nemo: None,
            bridge: None,
            console: "/tmp/gq/vm1.console".into(),
            memory_mib: 128,
            balloon: false,
            burn: false,
        }
    }

    #[test]
    fn domain_xml_has_the_essentials() {
        let image = GuestImage {
            kernel: "/g/vmlinux".into(),
            initrd: "/g/initrd.gz".into(),
            qemu: "/g/qemu/usr/bin/qemu-system-x86_64".into(),
        };
        let xml = domain_xml(&image, &spec(Some(Ipv4Addr::new(10, 251, 9, 3))));
        for part in [
            "<domain type='qemu'>",
            "<name>gq-vm1</name>",
            "<memory unit='MiB'>128</memory>",
            "<kernel>/g/vmlinux</kernel>",
            "<initrd>/g/initrd.gz</initrd>",
            "<cmdline>console=ttyS0 quiet panic=-1 vmip=10.251.9.2/24 vmmtu=1450 probe=10.251.9.3</cmdline>",
            "<on_reboot>destroy</on_reboot>",
            "<emulator>/g/qemu/usr/bin/qemu-system-x86_64</emulator>",
            "<interface type='ethernet'>",
            "<target dev='gqtap1'/>",
            "<mac address='52:54:00:77:00:02'/>",
            "<model type='virtio'/>",
            "<mtu size='1450'/>",
            "<driver name='qemu' event_idx='off'><host csum='off'/></driver>",
            "<rom enabled='no'/>",
            "<serial type='file'>",
            "<source path='/tmp/gq/vm1.console' append='on'/>",
            "<memballoon model='none'/>",
        ] {
            assert!(xml.contains(part), "{part} missing from\n{xml}");
        }
        assert!(!xml.contains("<disk"));
        assert!(!domain_xml(&image, &spec(None)).contains("probe="));
        // On a Linux VXLAN host: the same tap, on the host's bridge; a faster probe.
        let mut g = spec(Some(Ipv4Addr::new(10, 251, 9, 3)));
        g.bridge = Some("br0".into());
        g.probe_interval_ms = Some(1);
        let xml = domain_xml(&image, &g);
        assert!(
            xml.contains("<interface type='bridge'>\n      <source bridge='br0'/>"),
            "{xml}"
        );
        assert!(xml.contains("probe=10.251.9.3 probems=1"), "{xml}");
    }

    #[test]
    fn last_complete_report_wins() {
        let console =
            std::env::temp_dir().join(format!("violin-probe-test-{}", std::process::id()));
        fs::write(
            &console,
            "NETUP 2.1\r\n\
             VIOLIN-PROBE tcp_sent=1 tcp_echoed=1 tcp_max_gap_ms=0 tcp_error=none ping_sent=1 ping_received=1 ping_max_gap_ms=0\r\n\
             VIOLIN-PROBE tcp_sent=2 tcp_echoed=2 tcp_max_gap_ms=9 tcp_error=none ping_sent=2 ping_received=2 ping_max_gap_ms=8\r\n\
             VIOLIN-PROBE tcp_sent=3 tcp_ec",
        )
        .unwrap();
        let r = probe_report(&console);
        let _ = fs::remove_file(&console);
        assert_eq!(r.map(|r| (r.tcp_sent, r.ping_max_gap_ms)), Some((2, 8)));
    }
}
