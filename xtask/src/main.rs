//! `cargo xtask`: Violin's developer commands.
mod guest;
mod hpl;
mod setup;

use std::process::Command;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use violin_testbed::{
    lab::{self, Domains, Lab, LabSpec, VmKind},
    traffic,
    viocluster::Brokered,
    violind_path, workspace_root,
};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Violin's developer commands")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Install everything a fresh machine lacks (apt packages, nightly rust-src,
    /// bpf-linker). Idempotent; quick when all is present.
    Setup,
    /// Build the eBPF object and violind.
    Build,
    /// Build the eBPF object (needs nightly and bpf-linker) and copy it to FILE, for a host
    /// without them: `VIOLIN_EBPF_OBJECT=/abs/FILE cargo build -p dataplane-user` there.
    Ebpf {
        /// Where to write the object.
        #[arg(long, value_name = "FILE")]
        out: std::path::PathBuf,
    },
    /// Build the tiny guest image real-VM tests boot under libvirt (a Debian kernel,
    /// busybox and violin-probe; a private QEMU) into target/violin-guest. Cached.
    Guest {
        /// Also the benchmarks' NEMO3D stand-in, violin-nemo (`bench migrate` adds it).
        #[arg(long)]
        nemo: bool,
    },
    /// The quality gate: rustfmt and clippy (warnings denied) over the workspace and the
    /// eBPF crate.
    Lint,
    /// Run the whole test suite (unit and end-to-end; needs root).
    Test {
        /// Extra arguments for `cargo test`.
        #[arg(trailing_var_arg = true)]
        args: Vec<String>,
    },
    /// Benchmarks against the bare underlay and Linux VXLAN (needs root):
    /// `cargo xtask bench [micro|linerate|cost|observe|hpl|nemo3d|apply|migrate|bounds|adapt|adaptation|scale|all]
    /// [--quick]`; results in
    /// target/bench/.
    Bench {
        /// Arguments for violin-bench (suite, --quick, --reps N, --mtus 1500,9000).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Debian packages of violind (its eBPF object embedded), violin-controller and
    /// violinctl, with systemd units, from a release build, into target/packages/.
    Package {
        /// Their version.
        #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
        version: String,
    },
    /// The local lab of simulated hosts and VMs.
    Lab {
        #[command(subcommand)]
        action: LabCmd,
    },
}

#[derive(clap::Args, Clone)]
struct LabArgs {
    /// Lab name: prefix of every namespace and link it creates.
    #[arg(long, default_value = "vl")]
    name: String,
    /// Violin hosts.
    #[arg(long, default_value_t = 2)]
    hosts: usize,
    /// VMs per host.
    #[arg(long, default_value_t = 2)]
    vms: usize,
    /// Environments; VM j of a host joins environment j mod E.
    #[arg(long, default_value_t = 1)]
    envs: usize,
    /// Underlay MTU (1500, or 9000 for jumbo frames); VMs get 50 bytes less (70 with --ipv6).
    #[arg(long, default_value_t = 1500)]
    mtu: u32,
    /// Extra hosts that use Linux's own VXLAN device instead of Violin.
    #[arg(long, default_value_t = 0)]
    linux_vxlan_hosts: usize,
    /// Log every datapath decision through aya-log into the daemons' logs.
    #[arg(long)]
    debug_datapath: bool,
    /// How VM ports and the underlay enter the datapath: tc (the default, fastest on
    /// every figure of the micro benchmark here), or xdp (for NICs with native XDP).
    #[arg(long, default_value = "tc", value_parser = ["tc", "xdp"])]
    port_mode: String,
    /// Run violin-controller and create the environments with violinctl (the demo
    /// always does); without it each violind is configured from a generated file.
    #[arg(long)]
    controller: bool,
    /// What a VM is: a network namespace (fast), or a real QEMU guest (TCG) booted through
    /// a libvirt daemon per host, which can live-migrate.
    #[arg(long, default_value = "namespace", value_parser = ["namespace", "qemu"])]
    vm_kind: String,
    /// QEMU guests on the first host run violin-probe (TCP echo session, ping flood)
    /// against their environment's guest on the second.
    #[arg(long)]
    probes: bool,
    /// Split the hosts into this many domains (round robin), each on a switch of its
    /// own behind a shaped wide-area uplink: local and wide-area clusters on one machine.
    #[arg(long)]
    domains: Option<usize>,
    /// Each domain uplink's rate, each way.
    #[arg(long, default_value_t = 1000, requires = "domains")]
    wan_mbit: u32,
    /// One-way delay on each uplink (needs the netem qdisc in the kernel).
    #[arg(long, default_value_t = 0.0, requires = "domains")]
    wan_delay_ms: f64,
    /// Loss on each uplink, percent (needs the netem qdisc in the kernel).
    #[arg(long, default_value_t = 0.0, requires = "domains")]
    wan_loss_pct: f64,
    /// VioCluster: this many domains (hosts round robin), each a Slurm cluster in an
    /// environment of its own, and the controller's machine brokers trading machines
    /// between them (implies --controller; needs two VMs per host, the default).
    #[arg(long, value_name = "DOMAINS")]
    viocluster: Option<usize>,
    /// Seconds between the brokers' rounds.
    #[arg(long, default_value_t = 10, requires = "viocluster")]
    broker_period_s: u64,
    /// This many controller replicas on a 3-member etcd cluster, each member in a
    /// namespace of its own (implies --controller).
    #[arg(long, default_value_t = 0)]
    replicas: usize,
    /// An IPv6-only underlay (fd00:250::/64): hosts, the controller and the tunnels speak
    /// IPv6, and VMs get 70 bytes less than the underlay's MTU.
    #[arg(long)]
    ipv6: bool,
}

#[derive(Subcommand)]
enum LabCmd {
    /// Build the lab and leave it running.
    Up(LabArgs),
    /// Build the lab, show ping and a TCP transfer across hosts and the counters, and
    /// tear it down.
    Demo(LabArgs),
    /// Remove everything a lab made (also after a crash).
    Down {
        #[arg(long, default_value = "vl")]
        name: String,
    },
}

fn main() {
    if let Err(e) = run(Cli::parse()) {
        eprintln!("xtask: {e:#}");
        std::process::exit(1);
    }
}

fn cargo(args: &[&str]) -> Result<()> {
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(workspace_root())
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("`cargo {}` failed", args.join(" "));
    }
    Ok(())
}

/// Runs `cargo test`, passing its output through, and closes with one summary line over
/// all test binaries.
fn test(args: &[&str]) -> Result<()> {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(args)
        .current_dir(workspace_root())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .context("running cargo test")?;
    let (mut passed, mut failed, mut ignored) = (0u64, 0u64, 0u64);
    for line in BufReader::new(child.stdout.take().expect("piped")).lines() {
        let line = line?;
        println!("{line}");
        if let Some(rest) = line.strip_prefix("test result: ") {
            for part in rest.split(['.', ';']) {
                let mut words = part.split_whitespace();
                if let (Some(n), Some(what)) = (words.next(), words.next()) {
                    let n: u64 = n.parse().unwrap_or(0);
                    match what {
                        "passed" => passed += n,
                        "failed" => failed += n,
                        "ignored" => ignored += n,
                        _ => {}
                    }
                }
            }
        }
    }
    let status = child.wait()?;
    println!("{passed} passed, {failed} failed, {ignored} skipped");
    if !status.success() || failed > 0 {
        bail!("tests failed");
    }
    if passed == 0 {
        bail!("no test ran");
    }
    Ok(())
}

/// `cargo fmt --check` and `cargo clippy --all-targets -D warnings`, for the workspace
/// and for the eBPF crate (its own workspace, on nightly for the BPF target).
fn lint() -> Result<()> {
    eprintln!("==> rustfmt and clippy: the workspace");
    cargo(&["fmt", "--all", "--check"])?;
    cargo(&[
        "clippy",
        "--workspace",
        "--all-targets",
        "--",
        "-D",
        "warnings",
    ])?;
    eprintln!("==> rustfmt and clippy: the eBPF crate");
    let ebpf = workspace_root().join("dataplane-ebpf");
    let target = workspace_root().join("target/ebpf");
    for args in [
        vec!["fmt", "--check"],
        vec!["clippy", "--release", "--target-dir"],
    ] {
        let mut cmd = Command::new("cargo");
        cmd.current_dir(&ebpf).args(&args);
        if args[0] == "clippy" {
            cmd.arg(&target).args(["--", "-D", "warnings"]);
        }
        // The outer cargo's toolchain must not leak into the nightly build.
        for (key, _) in std::env::vars_os() {
            let key = key.to_string_lossy().into_owned();
            let leaks = (key.starts_with("CARGO") && key != "CARGO_HOME")
                || key.starts_with("RUSTC")
                || key == "RUSTFLAGS"
                || key == "RUSTDOC"
                || key == "RUSTUP_TOOLCHAIN";
            if leaks {
                cmd.env_remove(key);
            }
        }
        let status = cmd.status().context("running cargo for the eBPF crate")?;
        if !status.success() {
            bail!("`cargo {}` failed in dataplane-ebpf", args.join(" "));
        }
    }
    Ok(())
}

fn build() -> Result<()> {
    eprintln!("==> building the eBPF object, violind, violin-controller, violinctl and the benchmark tools");
    cargo(&[
        "build",
        "-p",
        "dataplane-user",
        "-p",
        "controller",
        "-p",
        "bench",
    ])
}

/// Builds violind the normal way (its build script builds the eBPF object with aya-build
/// into `target/ebpf/dataplane-ebpf`) and copies the object to `out`.
fn ebpf(out: &std::path::Path) -> Result<()> {
    eprintln!("==> building the eBPF object (with violind)");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "-p", "dataplane-user"])
        .current_dir(workspace_root())
        // Build it, rather than embed a prebuilt one.
        .env_remove("VIOLIN_EBPF_OBJECT")
        .status()
        .context("running cargo")?;
    if !status.success() {
        bail!("`cargo build -p dataplane-user` failed");
    }
    // Where dataplane-user/build.rs puts it.
    let shared = violin_testbed::target_dir().join("ebpf");
    // The lock dataplane-user/build.rs holds while it replaces the object.
    let lock = std::fs::File::create(shared.join(".aya-build.lock"))
        .context("creating target/ebpf/.aya-build.lock")?;
    lock.lock().context("locking target/ebpf/.aya-build.lock")?;
    let object = shared.join("dataplane-ebpf");
    let size = std::fs::copy(&object, out)
        .with_context(|| format!("copying {} to {}", object.display(), out.display()))?;
    drop(lock);
    let out = out.canonicalize()?;
    println!("wrote {} ({size} bytes)", out.display());
    println!(
        "on a host without nightly: VIOLIN_EBPF_OBJECT={} cargo build -p dataplane-user",
        out.display()
    );
    Ok(())
}

fn need_root(what: &str) -> Result<()> {
    if !violin_testbed::sys::is_root() {
        bail!("{what} needs root (network namespaces, XDP, bpffs)");
    }
    Ok(())
}

fn spec(a: &LabArgs) -> LabSpec {
    let xdp = a.port_mode == "xdp";
    LabSpec {
        name: a.name.clone(),
        hosts: if xdp { 0 } else { a.hosts },
        violin_xdp_hosts: if xdp { a.hosts } else { 0 },
        vms_per_host: a.vms,
        envs: a.envs,
        mtu: a.mtu,
        linux_vxlan_hosts: a.linux_vxlan_hosts,
        bare_hosts: 0,
        violind: violind_path(),
        debug_datapath: a.debug_datapath,
        // Linux VXLAN as the bench compares it: its VMs keep their default offloads.
        linux_vm_offloads: true,
        controller: a.controller || a.viocluster.is_some() || a.replicas > 0,
        vm_kind: if a.vm_kind == "qemu" {
            VmKind::Qemu
        } else {
            VmKind::Namespace
        },
        probes: a.probes,
        probe_interval_ms: None,
        nemo: None,
        domains: a.domains.map(|count| Domains {
            count,
            rate_mbit: a.wan_mbit,
            delay_ms: a.wan_delay_ms,
            loss_pct: a.wan_loss_pct,
        }),
        measure: true,
        managed: None,
        viocluster: a.viocluster.map(|domains| Brokered {
            domains,
            pool: 2,
            period_s: a.broker_period_s,
        }),
        replicas: a.replicas,
        ipv6: a.ipv6,
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Cmd::Setup => setup::run(),
        Cmd::Build => build(),
        Cmd::Ebpf { out } => ebpf(&out),
        Cmd::Guest { nemo } => {
            let image = guest::guest(false, nemo)?;
            println!("kernel: {}", image.kernel.display());
            println!("initrd: {}", image.initrd.display());
            println!("qemu:   {}", image.qemu.display());
            Ok(())
        }
        Cmd::Lint => lint(),
        Cmd::Package { version } => {
            eprintln!("==> building violind, violin-controller and violinctl (release)");
            cargo(&[
                "build",
                "--release",
                "-p",
                "dataplane-user",
                "-p",
                "controller",
            ])?;
            let out = violin_testbed::target_dir().join("packages");
            let bin = violin_testbed::target_dir().join("release");
            eprintln!("==> packaging into {}", out.display());
            for deb in violin_testbed::package::build(&bin, &out, &version)? {
                println!("{}", deb.display());
            }
            Ok(())
        }
        Cmd::Test { args } => {
            need_root("the test suite")?;
            build()?;
            // The migration tests boot real guests.
            guest::guest(false, false)?;
            eprintln!("==> running the tests");
            let mut full = vec!["test", "--workspace", "--no-fail-fast"];
            full.extend(args.iter().map(String::as_str));
            test(&full)
        }
        Cmd::Bench { args } => {
            // The adaptation and scale suites only simulate (the hosts): no root, no eBPF
            // object, no guests.
            let simulation = args
                .first()
                .is_some_and(|a| a == "adaptation" || a == "scale");
            if !simulation {
                need_root("the benchmarks")?;
                build()?;
                // The migrate suite boots real guests, and runs violin-nemo in them.
                guest::guest(false, true)?;
            }
            if simulation {
                eprintln!("==> building the benchmark tools and the controller (release)");
                cargo(&["build", "--release", "-p", "bench", "-p", "controller"])?;
            } else {
                eprintln!("==> building the benchmark tools, violind and the controller (release)");
                cargo(&[
                    "build",
                    "--release",
                    "-p",
                    "bench",
                    "-p",
                    "dataplane-user",
                    "-p",
                    "controller",
                ])?;
            }
            let bin = violin_testbed::target_dir().join("release/violin-bench");
            let status = Command::new(bin)
                .args(&args)
                .current_dir(workspace_root())
                .status()
                .context("running violin-bench")?;
            if !status.success() {
                bail!("benchmark failed");
            }
            Ok(())
        }
        Cmd::Lab { action } => match action {
            LabCmd::Up(a) => {
                need_root("the lab")?;
                build()?;
                if a.vm_kind == "qemu" {
                    guest::guest(false, false)?;
                }
                eprintln!("==> bringing lab {:?} up", a.name);
                let lab = Lab::up(spec(&a), false)?;
                // VioCluster's clusters are the lab's environments then.
                if lab.spec.controller && a.viocluster.is_none() {
                    eprintln!("==> creating the environments with violinctl");
                    print!("{}", lab.apply_environments()?);
                }
                println!("{}", lab.describe());
                lab.detach();
                Ok(())
            }
            LabCmd::Demo(mut a) => {
                need_root("the lab")?;
                build()?;
                a.controller = true;
                if a.vm_kind == "qemu" {
                    guest::guest(false, false)?;
                    a.probes = true;
                    return migration_demo(&a);
                }
                demo(&a)
            }
            LabCmd::Down { name } => {
                need_root("the lab")?;
                lab::down(&name, false)
            }
        },
    }
}

/// The demo with QEMU guests: a guest live-migrates to the other host and back while its
/// peer's probe keeps a TCP session and a ping flood to it.
fn migration_demo(a: &LabArgs) -> Result<()> {
    eprintln!("==> bringing lab {:?} up with QEMU guests", a.name);
    let lab = Lab::up(spec(a), false)?;
    if lab.hosts.len() < 2 {
        bail!("--hosts: the demo needs at least 2 Violin hosts");
    }
    eprintln!("==> creating the environments with violinctl apply");
    print!("{}", lab.apply_environments()?);
    println!("{}", lab.describe());
    let prober = lab.vm(0, 0, 0).clone();
    let mover = lab.vm(1, 0, 0).clone();
    let console = prober.guest.clone().context("a guest")?.console;
    eprintln!(
        "==> waiting for {}'s probe to reach {} ({})",
        prober.ns, mover.ns, mover.ip
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    while violin_testbed::libvirt::probe_report(&console).is_none_or(|r| r.tcp_echoed < 20) {
        if std::time::Instant::now() > deadline {
            bail!(
                "the probe got no echoes within 90 s (console: {})",
                console.display()
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    println!("{}", lab.violinctl(&["vms"])?);
    let name = violin_testbed::control::vm_name(&mover);
    for host in [&lab.hosts[0], &lab.hosts[1]] {
        eprintln!("==> violinctl migrate {name} --to {}", host.host_id());
        print!(
            "{}",
            lab.violinctl(&["migrate", &name, "--to", host.host_id()])?
        );
    }
    println!("{}", lab.violinctl(&["migrations"])?);
    let r = violin_testbed::libvirt::probe_report(&console).context("no probe report")?;
    println!(
        "probe in {}: {} TCP echoes, longest gap {} ms, session {}; {} of {} pings answered",
        prober.ns,
        r.tcp_echoed,
        r.tcp_max_gap_ms,
        r.tcp_error.as_deref().unwrap_or("intact"),
        r.ping_received,
        r.ping_sent
    );
    eprintln!("==> tearing the lab down");
    lab.down()?;
    if r.tcp_error.is_some() {
        bail!("the TCP session into the migrating guest broke");
    }
    println!("demo complete: the guest moved twice and its TCP session survived");
    Ok(())
}

fn demo(a: &LabArgs) -> Result<()> {
    eprintln!("==> bringing lab {:?} up", a.name);
    let lab = Lab::up(spec(a), false)?;
    let hosts = lab.spec.hosts + lab.spec.violin_xdp_hosts;
    if hosts < 2 {
        bail!("--hosts: the demo needs at least 2 Violin hosts");
    }
    eprintln!("==> creating the environments with violinctl apply (the plan, then every host's acknowledgement)");
    print!("{}", lab.apply_environments()?);
    println!("{}", lab.describe());
    println!("{}", lab.violinctl(&["hosts"])?);
    let src = lab.vm(0, 0, 0).clone();
    let dst = lab.vm(1, 0, 0).clone();
    println!(
        "{}",
        lab.violinctl(&[
            "route",
            &lab::mac_string(&src.mac),
            &lab::mac_string(&dst.mac),
            "--env",
            "env0"
        ])?
    );
    eprintln!(
        "==> ping {} ({}) -> {} ({}) across hosts",
        src.ns, src.ip, dst.ns, dst.ip
    );
    traffic::wait_ping(
        &src.ns,
        &dst.ip.to_string(),
        std::time::Duration::from_secs(10),
    )?;
    let p = traffic::ping(&src.ns, &dst.ip.to_string(), 5, &["-i", "0.2"])?;
    println!("ping: {} sent, {} received", p.sent, p.received);
    let p6 = traffic::ping(&src.ns, &dst.ip6, 3, &["-i", "0.2"])?;
    println!(
        "ping -6 (neighbour discovery across hosts): {} sent, {} received",
        p6.sent, p6.received
    );
    eprintln!("==> TCP transfer of 100 MB {} -> {}", src.ns, dst.ns);
    let t = traffic::tcp_transfer(&src.ns, &dst.ns, dst.ip, 5001, 100_000_000)?;
    println!(
        "tcp: {} bytes in {:.2} s ({:.2} Gb/s), checksum {}",
        t.bytes,
        t.elapsed.as_secs_f64(),
        t.gbit_per_s(),
        if t.sent_digest == t.received_digest {
            "matches"
        } else {
            "MISMATCH"
        }
    );
    for i in 0..hosts {
        println!("\n==> counters of {}", lab.hosts[i].ns);
        println!("{}", lab.stats_text(i)?);
    }
    let ok = p.received == p.sent && p6.received == p6.sent && t.sent_digest == t.received_digest;
    eprintln!("==> tearing the lab down");
    lab.down()?;
    if !ok {
        bail!("the demo saw loss or corruption (see above)");
    }
    println!("demo complete: all traffic crossed the overlay intact");
    Ok(())
}
