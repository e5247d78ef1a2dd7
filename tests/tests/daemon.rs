//! violind's life cycle: configuration errors, reloads, privileges, and the lab's own
//! clean-up after a crash.
use std::{fs, path::Path, process::Command, time::Duration};

use violin_testbed::{
    e2e::{attached_prog, counter, lab, lab_name, require_root},
    lab::{self as testlab, Lab, LabSpec},
    sys::{ip, ns_run},
    traffic::{ping, send_raw, wait_ping},
    violind_path,
};

fn violind(args: &[&str]) -> (bool, String) {
    let out = Command::new(violind_path()).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn temp_config(name: &str, text: &str) -> String {
    let dir = std::env::temp_dir().join(format!("violin-test-{}", std::process::id()));
    fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

const BASE: &str = r#"host_id = "cfgtest"
[underlay]
interface = "lo"
address = "127.0.0.1"
[[environment]]
name = "blue"
vni = 7
ports = ["nosuchport0"]
"#;

#[test]
fn bad_configuration_is_rejected_naming_the_field() {
    require_root();
    let cases = [
        (
            BASE.replace("vni = 7", "vni = 16777216"),
            "environment[0].vni",
        ),
        (BASE.replace("vni = 7", "vni = \"seven\""), "vni"),
        (
            BASE.replace("address = \"127.0.0.1\"", "address = \"1.2.3\""),
            "address",
        ),
        (
            format!("{BASE}[[peer]]\naddress = \"10.0.0.9\"\nvnis = [8]\n"),
            "peer[0].vnis[0]",
        ),
        (
            BASE.replace("name = \"blue\"", "name = \"blue\"\nmtu = 3"),
            "unknown field `mtu`",
        ),
    ];
    for (i, (text, field)) in cases.iter().enumerate() {
        let cfg = temp_config(&format!("bad{i}.toml"), text);
        for cmd in ["check", "run"] {
            let (ok, out) = violind(&[cmd, "--config", &cfg]);
            assert!(!ok, "violind {cmd} accepted a bad config:\n{text}");
            assert!(
                out.contains(field),
                "violind {cmd}: {field:?} not named in: {out}"
            );
        }
    }
    let (ok, out) = violind(&["check", "--config", "/nonexistent/violin.toml"]);
    assert!(!ok && out.contains("cannot read config"), "{out}");
}

#[test]
fn missing_underlay_is_named_and_leaves_nothing_behind() {
    require_root();
    let cfg = temp_config(
        "missing.toml",
        &BASE.replace("interface = \"lo\"", "interface = \"nosuchul0\""),
    );
    let (ok, out) = violind(&["run", "--config", &cfg]);
    assert!(!ok);
    assert!(out.contains("underlay.interface"), "{out}");
    assert!(out.contains("\"nosuchul0\" does not exist"), "{out}");
    assert!(
        !Path::new(testlab::PIN_ROOT).join("cfgtest").exists(),
        "pins left after a failed start"
    );
    assert!(!Path::new("/run/violin/cfgtest/violind.pid").exists());
}

#[test]
fn missing_privileges_are_reported() {
    require_root();
    let cfg = temp_config("unpriv.toml", BASE);
    let dir = Path::new(&cfg).parent().unwrap().to_path_buf();
    Command::new("chmod")
        .args(["-R", "a+rX"])
        .arg(&dir)
        .status()
        .unwrap();
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
        ])
        .arg(violind_path())
        .args(["run", "--config", &cfg])
        .output()
        .expect("setpriv (util-linux)");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(text.contains("lacks CAP_NET_ADMIN"), "{text}");
    assert!(text.contains("run it as root"), "{text}");
}

#[test]
fn sighup_reloads_ports_and_keeps_the_old_config_on_error() {
    let lab = lab("hu", |_| {});
    let a = lab.vm(0, 0, 0).clone();
    let a2 = lab.vm(0, 0, 1).clone();
    let b = lab.vm(1, 0, 0).clone();
    wait_ping(&a.ns, &b.ip.to_string(), Duration::from_secs(10)).unwrap();
    wait_ping(&a2.ns, &b.ip.to_string(), Duration::from_secs(10)).unwrap();
    let original = lab.config_for(0);

    // Drop vm2 from the environment: its program is detached and it is cut off.
    let without = original.replace(&format!(", \"{}\"", a2.port), "");
    assert_ne!(without, original);
    lab.reload(0, &without).unwrap();
    assert_eq!(
        attached_prog(&lab, 0, &a2.port),
        None,
        "the removed port kept its program"
    );
    assert_eq!(
        ping(&a2.ns, &b.ip.to_string(), 3, &["-i", "0.1"])
            .unwrap()
            .received,
        0
    );
    assert_eq!(
        ping(&a.ns, &b.ip.to_string(), 3, &["-i", "0.1"])
            .unwrap()
            .lost(),
        0
    );
    let s = lab.stats(0).unwrap();
    assert!(s["fdb"]
        .as_array()
        .unwrap()
        .iter()
        .all(|e| e["location"] != format!("port {}", a2.port)));

    // A broken file is refused and the running configuration stays in force.
    let err = lab
        .reload(0, &original.replace("vni = 1000", "vni = 0"))
        .unwrap_err();
    assert!(err.to_string().contains("environment[0].vni"), "{err}");
    assert_eq!(
        ping(&a.ns, &b.ip.to_string(), 3, &["-i", "0.1"])
            .unwrap()
            .lost(),
        0
    );

    // And the port comes back.
    lab.reload(0, &original).unwrap();
    wait_ping(&a2.ns, &b.ip.to_string(), Duration::from_secs(10)).unwrap();
    lab.down().unwrap();
}

#[test]
fn sighup_switches_port_mode_without_losing_the_overlay() {
    let lab = lab("pm", |s| s.vms_per_host = 1);
    let a = lab.vm(0, 0, 0).clone();
    let b = lab.vm(1, 0, 0).clone();
    wait_ping(&a.ns, &b.ip.to_string(), Duration::from_secs(10)).unwrap();
    let h1 = lab.hosts[0].clone();
    let tc = lab.config_for(0);
    let xdp = tc.replace("port_mode = \"tc\"", "port_mode = \"xdp\"");
    assert_ne!(tc, xdp);
    let actions = |hook: &str| {
        let s = lab.stats(0).unwrap();
        counter(&s, &format!("/actions/{hook}~1redirect"))
    };
    let links = || ns_run(&h1.ns, "ip", &["-d", "link", "show"]).unwrap();
    assert!(
        links().contains("violin-vxlan"),
        "no flow-based VXLAN device in TC mode: {}",
        links()
    );
    lab.reload(0, &xdp).unwrap();
    let link = ns_run(&h1.ns, "ip", &["-d", "link", "show", &a.port]).unwrap();
    assert!(link.contains("prog/xdp"), "{link}");
    assert!(
        !links().contains("violin-vxlan"),
        "the VXLAN device outlived TC mode: {}",
        links()
    );
    let (xdp0, tc0) = (actions("port"), actions("port_tc"));
    assert_eq!(
        ping(&a.ns, &b.ip.to_string(), 5, &["-i", "0.1"])
            .unwrap()
            .lost(),
        0
    );
    assert!(
        actions("port") >= xdp0 + 5,
        "the XDP program did not forward"
    );
    assert_eq!(actions("port_tc"), tc0, "the TC port program still ran");
    // And back.
    lab.reload(0, &tc).unwrap();
    let link = ns_run(&h1.ns, "ip", &["-d", "link", "show", &a.port]).unwrap();
    assert!(
        !link.contains("prog/xdp"),
        "XDP still on the port in TC mode: {link}"
    );
    let (xdp1, tc1, under1) = (actions("port"), actions("port_tc"), actions("underlay_tc"));
    assert_eq!(
        ping(&b.ns, &a.ip.to_string(), 5, &["-i", "0.1"])
            .unwrap()
            .lost(),
        0
    );
    assert!(
        actions("port_tc") >= tc1 + 5,
        "the TC program did not forward"
    );
    assert!(
        actions("underlay_tc") >= under1 + 5,
        "the underlay's TC program did not deliver"
    );
    assert_eq!(actions("port"), xdp1, "the XDP program still ran");
    lab.down().unwrap();
}

#[test]
fn datapath_debug_logging_reaches_the_daemon_log() {
    let lab = lab("dg", |s| {
        s.vms_per_host = 1;
        s.debug_datapath = true;
    });
    let a = lab.vm(0, 0, 0).clone();
    let b = lab.vm(1, 0, 0).clone();
    wait_ping(&a.ns, &b.ip.to_string(), Duration::from_secs(10)).unwrap();
    // A frame from a VM with a multicast source address is dropped, and logged.
    let mut frame = vec![0xff; 6];
    frame.extend_from_slice(&[0x01, 0, 0x5e, 0, 0, 1, 0x88, 0xb5]);
    frame.resize(60, 0);
    send_raw(&a.ns, "eth0", vec![frame; 3]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let log = fs::read_to_string(&lab.hosts[0].log).unwrap();
        if log.contains("drop slot=") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no datapath log line:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(counter(&lab.stats(0).unwrap(), "/drops/bad_src_mac"), 3);
    lab.down().unwrap();
}

#[test]
fn lab_down_cleans_up_after_a_crash() {
    require_root();
    let name = lab_name("cr");
    let lab = Lab::up(LabSpec::new(&name, violind_path()), true).unwrap();
    let pids: Vec<u32> = (0..2).filter_map(|i| lab.daemon_pid(i)).collect();
    lab.detach();
    // The daemons die without cleaning up, as in a crash.
    for pid in &pids {
        // SAFETY: kill(2) takes only integers and accesses no memory of this process. Each
        // pid is a daemon Child this process spawned; detach() dropped the handles without
        // waiting, so they are unreaped and their pids cannot have been reused. SIGKILL
        // leaves them no chance to clean up.
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
    std::thread::sleep(Duration::from_millis(300));
    testlab::down(&name, true).unwrap();
    let ns = ip(&["netns", "list"]).unwrap();
    assert!(
        !ns.lines().any(|l| l.starts_with(&format!("{name}-"))),
        "{ns}"
    );
    for h in ["h1", "h2"] {
        assert!(!Path::new(testlab::PIN_ROOT)
            .join(format!("{name}-{h}"))
            .exists());
        assert!(!Path::new(&format!("/run/violin/{name}-{h}")).exists());
    }
    assert!(!testlab::state_dir(&name).exists());
}

/// Host facts come from the kernel as they change: a VM port that does not exist yet does
/// not fail the apply and is attached when it appears, detached when it goes; a changed
/// neighbour entry reaches the peer table without polling.
#[test]
fn ports_and_next_hops_follow_the_kernel() {
    let lab = lab("nl", |s| s.vms_per_host = 1);
    let a = lab.vm(0, 0, 0).clone();
    let b = lab.vm(1, 0, 0).clone();
    wait_ping(&a.ns, &b.ip.to_string(), Duration::from_secs(10)).unwrap();
    let h1 = lab.hosts[0].clone();
    let h2 = lab.hosts[1].clone();
    let has_port = |name: &str| {
        lab.stats(0).unwrap()["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p["interface"] == name)
    };
    let wait_until = |what: &str, f: &dyn Fn() -> bool| {
        let start = std::time::Instant::now();
        while !f() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "{what} did not happen\n{}",
                lab.daemon_logs()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        eprintln!("{what}: {:?}", start.elapsed());
    };

    // A port the configuration names before its interface exists.
    let original = lab.config_for(0);
    let late = original.replacen(
        &format!("ports = [\"{}\"]", a.port),
        &format!("ports = [\"{}\", \"vmlate\"]", a.port),
        1,
    );
    assert_ne!(late, original);
    lab.reload(0, &late).unwrap();
    assert!(!has_port("vmlate"));
    assert_eq!(
        ping(&a.ns, &b.ip.to_string(), 3, &["-i", "0.1"])
            .unwrap()
            .lost(),
        0
    );
    ns_run(
        &h1.ns,
        "ip",
        &[
            "link", "add", "vmlate", "type", "veth", "peer", "name", "vmlate-p",
        ],
    )
    .unwrap();
    ns_run(&h1.ns, "ip", &["link", "set", "vmlate", "up"]).unwrap();
    // The port's map entry comes before its program is attached and pinned.
    wait_until("the new port was attached", &|| {
        has_port("vmlate") && attached_prog(&lab, 0, "vmlate").is_some()
    });
    ns_run(&h1.ns, "ip", &["link", "del", "vmlate"]).unwrap();
    wait_until("the gone port was detached", &|| !has_port("vmlate"));

    // The next hop towards h2 changes in the kernel's neighbour table.
    let real = ns_run(&h2.ns, "cat", &["/sys/class/net/ul0/address"])
        .unwrap()
        .trim()
        .to_string();
    let peer_mac = || {
        lab.stats(0).unwrap()["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["address"] == h2.underlay_ip.to_string())
            .map(|p| p["next_hop_mac"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    assert_eq!(peer_mac(), real);
    let ip2 = h2.underlay_ip.to_string();
    let set = |mac: &str| {
        ns_run(
            &h1.ns,
            "ip",
            &[
                "neigh",
                "replace",
                &ip2,
                "lladdr",
                mac,
                "dev",
                "ul0",
                "nud",
                "permanent",
            ],
        )
        .unwrap();
    };
    set("02:00:00:99:99:99");
    wait_until("the peer took the new next hop", &|| {
        peer_mac() == "02:00:00:99:99:99"
    });
    set(&real);
    wait_until("the peer took the real next hop back", &|| {
        peer_mac() == real
    });
    wait_ping(&a.ns, &b.ip.to_string(), Duration::from_secs(10)).unwrap();
    lab.down().unwrap();
}
