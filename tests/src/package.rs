//! Debian packages of Violin (`cargo xtask package`): violind (its eBPF object embedded,
//! so a host needs no nightly compiler or bpf-linker), violin-controller and violinctl,
//! the daemons with systemd units. Built with `dpkg-deb` from binaries already built;
//! `Depends` comes from the libraries the binaries load (`ldd`, `dpkg -S`).
use std::{
    collections::BTreeSet,
    fs,
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

use crate::sys::{output, run};

/// violind's unit. Readiness comes from the daemon (sd_notify), once its datapath is
/// attached. Stopping sends SIGUSR1: the daemon exits and leaves the pinned datapath
/// forwarding, so a restart or an upgrade does not interrupt traffic (`violind stop
/// --config ...` without `--keep-forwarding` removes the datapath).
pub const VIOLIND_UNIT: &str = "\
[Unit]
Description=Violin dataplane daemon
Documentation=file:///usr/share/doc/violind/README.md
Wants=network-online.target
After=network-online.target libvirtd.service

[Service]
Type=notify
NotifyAccess=main
ExecStartPre=/usr/sbin/violind check --config /etc/violin/violind.toml
ExecStart=/usr/sbin/violind run --config /etc/violin/violind.toml
ExecReload=/bin/kill -HUP $MAINPID
KillSignal=SIGUSR1
Restart=on-failure
RestartSec=2
LimitMEMLOCK=infinity

[Install]
WantedBy=multi-user.target
";

/// The controller's unit: its flags in /etc/default/violin-controller; SIGTERM finishes
/// the requests under way and ends the daemons' streams (they reconnect).
pub const CONTROLLER_UNIT: &str = "\
[Unit]
Description=Violin controller
Documentation=file:///usr/share/doc/violin-controller/README.md
Wants=network-online.target
After=network-online.target

[Service]
Type=notify
NotifyAccess=main
EnvironmentFile=-/etc/default/violin-controller
ExecStart=/usr/sbin/violin-controller $VIOLIN_CONTROLLER_ARGS
StateDirectory=violin
# Past the longest request (a `wait` of 30 s) a graceful stop finishes.
TimeoutStopSec=45
Restart=on-failure
RestartSec=2

[Install]
WantedBy=multi-user.target
";

const CONTROLLER_DEFAULTS: &str = "\
# violin-controller's flags (see `violin-controller --help`). The token file must hold the
# administrators' bearer token (16 characters at least); hosts and other operators get
# credentials of their own (`violinctl credential create`).
# Hosts reach it over the network: listen where they can (the API needs a token).
VIOLIN_CONTROLLER_ARGS=\"--listen 0.0.0.0:7800 --state /var/lib/violin/controller.redb --token-file /etc/violin/token\"
";

const VIOLIND_EXAMPLE: &str = "\
# /etc/violin/violind.toml (see the README's violind section).
host_id = \"h1\"
api_listen = \"10.250.0.1:9600\"

[underlay]
interface = \"eth0\"
address = \"10.250.0.1\"

[controller]
url = \"http://10.250.0.254:7800\"
token_file = \"/etc/violin/h1.token\"   # violinctl credential create h1 --role host --out ...
";

/// On install and upgrade: systemd learns the units, and a running daemon is restarted
/// into the new binary (violind's stop keeps forwarding meanwhile).
fn postinst(unit: &str) -> String {
    format!(
        "#!/bin/sh\nset -e\nif [ -d /run/systemd/system ]; then\n  systemctl daemon-reload >/dev/null || true\n  \
         if [ \"$1\" = configure ] && [ -n \"$2\" ]; then\n    systemctl try-restart {unit} >/dev/null || true\n  fi\nfi\n"
    )
}

/// On removal: `detach` (a command), then the unit disabled and stopped.
fn prerm(unit: &str, detach: &str) -> String {
    format!(
        "#!/bin/sh\nset -e\nif [ \"$1\" = remove ]; then\n  {detach}\n  \
         if [ -d /run/systemd/system ]; then\n    systemctl disable --now {unit} >/dev/null 2>&1 || true\n  fi\nfi\n"
    )
}

const POSTRM: &str =
    "#!/bin/sh\nset -e\nif [ -d /run/systemd/system ]; then\n  systemctl daemon-reload >/dev/null || true\nfi\n";

struct Package {
    name: &'static str,
    description: &'static str,
    /// (path in the package, contents, mode)
    files: Vec<(String, Vec<u8>, u32)>,
    /// Binaries whose libraries it depends on.
    binaries: Vec<PathBuf>,
    conffiles: Vec<&'static str>,
    postinst: Option<String>,
    prerm: Option<String>,
    postrm: Option<String>,
}

/// The Debian packages the libraries `binary` loads come from.
fn library_packages(binary: &Path) -> Result<BTreeSet<String>> {
    let out = run("ldd", &[&binary.to_string_lossy()])?;
    let mut pkgs = BTreeSet::new();
    if let Some(l) = out.lines().find(|l| l.contains("not found")) {
        bail!(
            "{} loads a library this machine lacks: {}",
            binary.display(),
            l.trim()
        );
    }
    for lib in out.lines().filter_map(|l| {
        let path = l.split("=>").nth(1)?.split_whitespace().next()?;
        path.starts_with('/').then(|| path.to_string())
    }) {
        // Under merged /usr a library's path may be either spelling.
        let real = fs::canonicalize(&lib).unwrap_or_else(|_| PathBuf::from(&lib));
        let candidates = [
            lib.clone(),
            real.to_string_lossy().into_owned(),
            format!("/usr{lib}"),
            lib.strip_prefix("/usr").unwrap_or(&lib).to_string(),
        ];
        let found = candidates.iter().find_map(|p| {
            let o = output("dpkg", &["-S", p]).ok()?;
            if !o.status.success() {
                return None;
            }
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            // "diversion by ..." lines name no owner.
            let owner = text.lines().find(|l| !l.starts_with("diversion by"))?;
            let name = owner.split(':').next()?.trim().to_string();
            (!name.is_empty()).then_some(name)
        });
        match found {
            Some(p) => {
                pkgs.insert(p);
            }
            None => bail!(
                "no Debian package provides {lib}, which {} loads",
                binary.display()
            ),
        }
    }
    Ok(pkgs)
}

fn read(path: &Path) -> Result<Vec<u8>> {
    fs::read(path).with_context(|| format!("{} is missing (build it first)", path.display()))
}

/// Builds the three packages, version `version`, from the binaries in `bin` (e.g.
/// `target/release`) into `out`; their paths.
pub fn build(bin: &Path, out: &Path, version: &str) -> Result<Vec<PathBuf>> {
    let root = crate::workspace_root();
    let arch = run("dpkg", &["--print-architecture"])?.trim().to_string();
    let readme = read(&root.join("README.md"))?;
    let violind = bin.join("violind");
    let controller = bin.join("violin-controller");
    let violinctl = bin.join("violinctl");
    let completion = run(&violinctl.to_string_lossy(), &["completion", "bash"])?;
    let doc = |pkg: &str| format!("usr/share/doc/{pkg}/README.md");
    let packages = [
        Package {
            name: "violind",
            description: "Violin dataplane daemon: XDP/TC virtual networks of VMs across hosts\n \
                 violind attaches Violin's eBPF datapath (embedded; no compiler needed) to a\n \
                 host's VM ports and underlay, and follows the Violin controller.",
            files: vec![
                ("usr/sbin/violind".into(), read(&violind)?, 0o755),
                (
                    "lib/systemd/system/violind.service".into(),
                    VIOLIND_UNIT.into(),
                    0o644,
                ),
                (
                    "usr/share/doc/violind/violind.toml.example".into(),
                    VIOLIND_EXAMPLE.into(),
                    0o644,
                ),
                (doc("violind"), readme.clone(), 0o644),
            ],
            binaries: vec![violind],
            conffiles: Vec::new(),
            postinst: Some(postinst("violind.service")),
            // Removed (not upgraded): the daemon stops and takes its datapath away.
            prerm: Some(prerm(
                "violind.service",
                "/usr/sbin/violind stop --config /etc/violin/violind.toml >/dev/null 2>&1 || true",
            )),
            postrm: Some(POSTRM.into()),
        },
        Package {
            name: "violin-controller",
            description: "Violin controller: the source of truth of Violin's virtual networks\n \
                 Environments, hosts' shares, live migration and adaptation, behind an\n \
                 authenticated HTTP API.",
            files: vec![
                (
                    "usr/sbin/violin-controller".into(),
                    read(&controller)?,
                    0o755,
                ),
                (
                    "lib/systemd/system/violin-controller.service".into(),
                    CONTROLLER_UNIT.into(),
                    0o644,
                ),
                (
                    "etc/default/violin-controller".into(),
                    CONTROLLER_DEFAULTS.into(),
                    0o644,
                ),
                (doc("violin-controller"), readme.clone(), 0o644),
            ],
            binaries: vec![controller],
            conffiles: vec!["/etc/default/violin-controller"],
            postinst: Some(postinst("violin-controller.service")),
            prerm: Some(prerm("violin-controller.service", ":")),
            postrm: Some(POSTRM.into()),
        },
        Package {
            name: "violinctl",
            description: "Violin's command line: environments, hosts, migrations, credentials\n \
                 violinctl drives the Violin controller's API.",
            files: vec![
                ("usr/bin/violinctl".into(), read(&violinctl)?, 0o755),
                (
                    "usr/share/bash-completion/completions/violinctl".into(),
                    completion.into_bytes(),
                    0o644,
                ),
                (doc("violinctl"), readme, 0o644),
            ],
            binaries: vec![violinctl],
            conffiles: Vec::new(),
            postinst: None,
            prerm: None,
            postrm: None,
        },
    ];
    fs::create_dir_all(out)?;
    let mut debs = Vec::new();
    for p in packages {
        let dir = out.join(format!("{}_{version}", p.name));
        let _ = fs::remove_dir_all(&dir);
        for (path, bytes, mode) in &p.files {
            let f = dir.join(path);
            fs::create_dir_all(f.parent().expect("a parent"))?;
            fs::write(&f, bytes)?;
            fs::set_permissions(&f, fs::Permissions::from_mode(*mode))?;
            // As Debian's dh_strip does: the programs without their debugging sections.
            if bytes.starts_with(b"\x7fELF") {
                run("strip", &["--strip-debug", &f.to_string_lossy()])?;
            }
        }
        let mut depends = BTreeSet::new();
        for b in &p.binaries {
            depends.extend(library_packages(b)?);
        }
        let size_kib = run("du", &["-sk", &dir.to_string_lossy()])?
            .split_whitespace()
            .next()
            .and_then(|k| k.parse::<u64>().ok())
            .unwrap_or(1);
        let debian = dir.join("DEBIAN");
        fs::create_dir_all(&debian)?;
        fs::write(
            debian.join("control"),
            format!(
                "Package: {}\nVersion: {version}\nArchitecture: {arch}\nMaintainer: Violin developers <violin@localhost>\n\
                 Section: net\nPriority: optional\nInstalled-Size: {size_kib}\n{}Description: {}\n",
                p.name,
                match depends.is_empty() {
                    true => String::new(),
                    false => format!("Depends: {}\n", depends.into_iter().collect::<Vec<_>>().join(", ")),
                },
                p.description
            ),
        )?;
        if !p.conffiles.is_empty() {
            fs::write(debian.join("conffiles"), p.conffiles.join("\n") + "\n")?;
        }
        for (name, script) in [
            ("postinst", &p.postinst),
            ("prerm", &p.prerm),
            ("postrm", &p.postrm),
        ] {
            if let Some(script) = script {
                let f = debian.join(name);
                fs::write(&f, script)?;
                fs::set_permissions(&f, fs::Permissions::from_mode(0o755))?;
            }
        }
        // Every directory as dpkg wants it, whatever the umask.
        run(
            "find",
            &[
                &dir.to_string_lossy(),
                "-type",
                "d",
                "-exec",
                "chmod",
                "0755",
                "{}",
                "+",
            ],
        )?;
        let deb = out.join(format!("{}_{version}_{arch}.deb", p.name));
        run(
            "dpkg-deb",
            &[
                "--root-owner-group",
                // Fast to build and to unpack; dpkg reads it since 1.21.18 (Debian 12).
                "-Zzstd",
                "--build",
                &dir.to_string_lossy(),
                &deb.to_string_lossy(),
            ],
        )
        .with_context(|| format!("packaging {}", p.name))?;
        fs::remove_dir_all(&dir)?;
        debs.push(deb);
    }
    Ok(debs)
}
