//! The control plane end to end: a 3-host lab whose daemons follow `violin-controller`,
//! driven only through `violinctl` (the daemons' own statistics are read to check what
//! the datapath holds).
use std::{net::SocketAddr, time::Duration};

use serde_json::Value;
use violin_api::{
    rest::{DaemonLinks, EnvSummary, HostInfo, LinkInfo, Route, RuleInfo},
    share::{Interface, InterfaceRole},
    Vni,
};
use violin_testbed::{
    control::vm_name,
    e2e::{counter, lab},
    lab::{mac_string, switch_ns, Lab, Vm, API_PORT},
    sys::ns_run,
    traffic::{http_get, http_get_with, ping, tcp_transfer, udp_blast, wait_ping},
};

fn drops(lab: &Lab, i: usize, reason: &str) -> u64 {
    counter(&lab.stats(i).unwrap(), &format!("/drops/{reason}"))
}

fn in_sync(lab: &Lab) -> bool {
    let hosts: Vec<HostInfo> = lab.violinctl_as(&["hosts"]).unwrap();
    hosts.len() == 3 && hosts.iter().all(|h| h.in_sync)
}

/// What host `i`'s maps hold for `vni` (zero row when nothing).
fn env_row(lab: &Lab, i: usize, vni: u32) -> Value {
    let stats = lab.stats(i).unwrap();
    let fdb = stats["fdb"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["vni"] == vni)
        .count();
    let row = stats["environments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["vni"] == vni)
        .cloned()
        .unwrap_or(Value::Null);
    serde_json::json!({ "fdb": fdb, "row": row })
}

fn flush_neighbours(vms: &[&Vm]) {
    for v in vms {
        ns_run(&v.ns, "ip", &["neigh", "flush", "dev", "eth0"]).unwrap();
    }
}

#[test]
fn environments_are_driven_through_violinctl_and_survive_restarts() {
    let mut lab = lab("ctl", |s| {
        s.hosts = 3;
        s.vms_per_host = 2;
        s.envs = 2;
        s.controller = true;
    });
    let (a, b, c) = (
        lab.vm(0, 0, 0).clone(),
        lab.vm(1, 0, 0).clone(),
        lab.vm(2, 0, 0).clone(),
    );
    let (ra, rc) = (lab.vm(0, 1, 0).clone(), lab.vm(2, 1, 0).clone());
    // The second environment reuses the first one's addresses.
    assert_eq!((a.mac, a.ip), (ra.mac, ra.ip));

    // An environment across three hosts.
    let blue = lab.env_spec(0, "blue", 2000, "");
    let out = lab.apply_spec("blue", &blue).unwrap();
    assert!(out.contains(&format!("+ vm {}", vm_name(&a))), "{out}");
    assert!(in_sync(&lab), "{}", lab.violinctl(&["hosts"]).unwrap());
    wait_ping(&a.ns, &c.ip.to_string(), Duration::from_secs(10)).unwrap();
    wait_ping(&b.ns, &a.ip.to_string(), Duration::from_secs(10)).unwrap();
    status_names_a_drop_and_exits_1(&lab, &a, &b);
    observe_shows_forwarded_frames(&lab, &a, &b);

    // violind shows the VMs its share names by name, the MAC beside it.
    let text = lab.stats_text(0).unwrap();
    let c_named = format!("{} ({})", vm_name(&c), mac_string(&c.mac));
    assert!(text.contains(&c_named), "{text}");
    // The other environment's VMs are on no environment yet.
    assert_eq!(
        ping(&ra.ns, &rc.ip.to_string(), 2, &["-i", "0.2"])
            .unwrap()
            .received,
        0
    );

    // A second environment with the same MACs and IPs: both work, each on its own.
    let red = lab.env_spec(1, "red", 2001, "");
    lab.apply_spec("red", &red).unwrap();
    wait_ping(&ra.ns, &rc.ip.to_string(), Duration::from_secs(10)).unwrap();
    let r = ping(&a.ns, &c.ip.to_string(), 5, &["-i", "0.05"]).unwrap();
    assert_eq!(r.lost(), 0, "blue was disturbed by red");
    let envs: Vec<EnvSummary> = lab.violinctl_as(&["envs"]).unwrap();
    assert_eq!(envs.len(), 2);
    // Each daemon speaks for itself alone: the audit log has every host registering under
    // its own credential, and none refused.
    let audit: Vec<violin_api::rest::AuditEntry> = lab.violinctl_as(&["audit"]).unwrap();
    for h in &lab.hosts {
        let id = h.host_id();
        let path = format!("/v1/hosts/{id}/register");
        assert!(
            audit
                .iter()
                .any(|e| e.who == id && e.path == path && e.status == 200),
            "{audit:?}"
        );
    }
    assert!(audit.iter().all(|e| e.status != 403), "{audit:?}");

    // A traffic bound, then a change of it: each reaches the datapath, and a blast over
    // the bound waits in the bound's queue (shaped, the rest of the path unaffected).
    let pair = format!("[[limit]]\npair = [{:?}, {:?}]\n", vm_name(&a), vm_name(&b));
    let bound_of = |lab: &Lab| -> Value {
        let stats = lab.stats(0).unwrap();
        let mac = mac_string(&a.mac);
        stats["bounds"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["src"] == mac.as_str())
            .cloned()
            .unwrap_or(Value::Null)
    };
    let tight = format!("{blue}{pair}rate_mbit = 1\nburst_kib = 16\n");
    let out = lab.apply_spec("blue", &tight).unwrap();
    assert!(out.contains("+ limit"), "{out}");
    assert_eq!(bound_of(&lab)["bytes_per_second"], 125_000);
    // 300 kB at 125 kB/s: the sender returns once its socket buffer holds the rest (about
    // 100 datagrams, their memory counted twice over), which then waits in the queue for
    // most of a second.
    udp_blast(&a.ns, SocketAddr::from((b.ip, 9)), 300, 1000).unwrap();
    let queued = bound_of(&lab)["queue_ns"].as_u64().unwrap();
    assert!(
        queued > 100_000_000,
        "a blast over 1 Mbit/s queued {queued} ns"
    );
    let loose = format!("{blue}{pair}rate_mbit = 10000\nburst_kib = 8192\n");
    let out = lab.apply_spec("blue", &loose).unwrap();
    assert!(out.contains("~ limit"), "{out}");
    assert_eq!(bound_of(&lab)["bytes_per_second"], 1_250_000_000u64);
    let before = drops(&lab, 0, "rate_limited");
    udp_blast(&a.ns, SocketAddr::from((b.ip, 9)), 2000, 1000).unwrap();
    assert_eq!(
        drops(&lab, 0, "rate_limited"),
        before,
        "the raised bound still held frames back"
    );

    // VNET primitives: a star through h2 with forwarding rules, made one primitive at a
    // time. h1 and h3 then have no link between them; h2 relays.
    let (h1, h2, h3) = (
        lab.hosts[0].host_id().to_string(),
        lab.hosts[1].host_id().to_string(),
        lab.hosts[2].host_id().to_string(),
    );
    let star = format!("{loose}[[link]]\nhosts = [{h1:?}, {h2:?}]\n");
    lab.apply_spec("blue", &star).unwrap();
    lab.violinctl(&["link", "add", "blue", &h2, &h3, "--wait"])
        .unwrap();
    let (am, cm) = (mac_string(&a.mac), mac_string(&c.mac));
    let (an, cn) = (vm_name(&a), vm_name(&c));
    let bcast = "ff:ff:ff:ff:ff:ff";
    // VMs by name or by MAC, as the operator likes.
    for (host, src, dst, edge) in [
        (&h1, "any", cn.as_str(), &h2),
        (&h3, "any", an.as_str(), &h2),
        (&h2, "any", cm.as_str(), &h3),
        (&h2, "any", am.as_str(), &h1),
        (&h2, am.as_str(), bcast, &h3),
        (&h2, cm.as_str(), bcast, &h1),
    ] {
        lab.violinctl(&[
            "rule", "add", "blue", host, src, dst, "--edge", edge, "--wait",
        ])
        .unwrap_or_else(|e| panic!("rule add at {host}: {e:#}"));
    }
    let bad = lab.violinctl(&["rule", "add", "blue", &h1, "any", "none", "--edge", &h3]);
    let msg = format!("{:#}", bad.unwrap_err());
    assert!(msg.contains("edge") && msg.contains("no link"), "{msg}");
    let links: Vec<LinkInfo> = lab.violinctl_as(&["links", "--env", "blue"]).unwrap();
    assert_eq!(links.len(), 2, "{links:?}");
    let rules: Vec<RuleInfo> = lab.violinctl_as(&["rules", "--host", &h2]).unwrap();
    assert_eq!(rules.len(), 4, "{rules:?}");
    let route: Route = lab
        .violinctl_as(&["route", &am, &cm, "--env", "blue"])
        .unwrap();
    assert!(route.delivered, "{route:?}");
    assert_eq!(route.hops.len(), 3, "{route:?}");
    let by_name: Route = lab
        .violinctl_as(&["route", &an, &cn, "--env", "blue"])
        .unwrap();
    assert_eq!(by_name, route);
    assert_eq!(by_name.src, format!("{an} ({am})"));
    let ifaces: Vec<Interface> = lab.violinctl_as(&["interfaces", &h1]).unwrap();
    assert!(
        ifaces
            .iter()
            .any(|i| i.name == "ul0" && i.role == InterfaceRole::Underlay),
        "{ifaces:?}"
    );
    // h1 no longer exchanges blue's frames with h3 (red's still go direct); they go
    // through h2.
    let h3_addr = lab.hosts[2].underlay_ip;
    let h1_addr = lab.hosts[0].underlay_ip;
    let api = SocketAddr::from((lab.hosts[0].underlay_ip, API_PORT));
    let token = std::fs::read_to_string(lab.daemon_token_file()).unwrap();
    let (code, body) = http_get_with(&lab.hosts[0].ns, api, "/v1/links", Some(&token)).unwrap();
    assert_eq!(code, 200, "{body}");
    let links: DaemonLinks = serde_json::from_str(&body).unwrap();
    let to_h3 = links
        .links
        .iter()
        .find(|l| l.peer == h3_addr)
        .unwrap_or_else(|| panic!("{links:?}"));
    assert_eq!(to_h3.vnis, [Vni::new(2001).unwrap()], "{links:?}");
    flush_neighbours(&[&a, &c]);
    let relayed = lab.peer_tx(1, h3_addr).unwrap();
    wait_ping(&a.ns, &c.ip.to_string(), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.stats_text(1).unwrap()));
    let r = ping(&a.ns, &c.ip.to_string(), 5, &["-i", "0.05"]).unwrap();
    assert_eq!(r.lost(), 0);
    assert!(
        lab.peer_tx(1, h3_addr).unwrap() >= relayed + 5,
        "h2 relayed nothing to h3"
    );
    assert!(lab.peer_tx(1, h1_addr).unwrap() >= 5);
    // The traffic matrix: a sent c frames, counted on h1.
    let stats = lab.stats(0).unwrap();
    let pair = stats["pairs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["vni"] == 2000 && p["src"] == am.as_str() && p["dst"] == cm.as_str())
        .cloned()
        .unwrap_or_else(|| panic!("no a->c pair counter: {}", stats["pairs"]));
    assert!(pair["traffic"]["packets"].as_u64().unwrap() >= 5);

    // Deleting an environment empties its part of the maps on every host.
    for i in 0..3 {
        let row = env_row(&lab, i, 2001);
        assert!(
            row["row"]["ports"] == 1,
            "red not served on host {i}: {row}"
        );
    }
    lab.violinctl(&["delete", "red", "--wait"]).unwrap();
    for i in 0..3 {
        let row = env_row(&lab, i, 2001);
        assert_eq!(row["fdb"], 0, "host {i}: {row}");
        assert!(row["row"].is_null(), "host {i} still holds red: {row}");
    }
    assert_eq!(
        ping(&ra.ns, &rc.ip.to_string(), 2, &["-i", "0.2"])
            .unwrap()
            .received,
        0
    );

    // The controller crashes: forwarding goes on. The relaying daemon crashes too, and
    // both come back to the same state.
    lab.kill_controller().unwrap();
    let r = ping(&a.ns, &c.ip.to_string(), 3, &["-i", "0.1"]).unwrap();
    assert_eq!(r.lost(), 0, "forwarding stopped with the controller");
    lab.kill_daemon(1).unwrap();
    lab.start_controller().unwrap();
    lab.start_daemon(1).unwrap();
    lab.violinctl(&["wait"]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !in_sync(&lab) {
        assert!(
            std::time::Instant::now() < deadline,
            "hosts did not converge: {}",
            lab.violinctl(&["hosts"]).unwrap()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let envs: Vec<EnvSummary> = lab.violinctl_as(&["envs"]).unwrap();
    let names: Vec<&str> = envs.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["blue"]);
    let rules: Vec<RuleInfo> = lab.violinctl_as(&["rules", "--env", "blue"]).unwrap();
    assert_eq!(rules.len(), 6);
    let r = ping(&a.ns, &c.ip.to_string(), 5, &["-i", "0.05"]).unwrap();
    assert_eq!(r.lost(), 0, "the relay did not come back");

    // And a change after the restarts reaches every host: back to a full mesh.
    lab.apply_spec("blue", &blue).unwrap();
    assert!(
        lab.peer_tx(0, h3_addr).is_some(),
        "h1 has no direct link to h3"
    );
    flush_neighbours(&[&a, &c]);
    wait_ping(&a.ns, &c.ip.to_string(), Duration::from_secs(10)).unwrap();
    daemon_api_matches_its_openapi_file(&lab, &token);
    controller_metrics_count_the_syncs(&lab);
    lab.down().unwrap();
}

/// `violinctl status` as an operator reads it: every host in sync; then a VM sends from an
/// address it was not given, its host drops the frames, and within a report or two
/// (violind reports every 5 s) status names the host and the reason and exits 1.
fn status_names_a_drop_and_exits_1(lab: &Lab, a: &Vm, b: &Vm) {
    let h1 = lab.hosts[0].host_id();
    let (_, out, err) = lab.violinctl_exit(&["status"]).unwrap();
    assert!(
        out.contains("hosts         3 of 3 in sync")
            && out.contains("environments  blue (vni 2000"),
        "{out}{err}"
    );
    // An operator watches a's drops live, straight from h1's violind.
    let observer = observe(
        lab,
        false,
        &[
            "--drops",
            "--vm",
            &vm_name(a),
            "--reason",
            "spoofed_ip",
            "--count",
            "3",
        ],
    );
    // The spoofed pings go on until the observer has its events (it attaches, and the
    // daemon switches describing on, within a moment), or for 30 s.
    ns_run(
        &a.ns,
        "ip",
        &["addr", "add", "10.200.9.99/16", "dev", "eth0"],
    )
    .unwrap();
    let mut received = 0;
    let (line, events) = observed(observer, || {
        let r = ping(
            &a.ns,
            &b.ip.to_string(),
            2,
            &["-I", "10.200.9.99", "-i", "0.1"],
        )
        .unwrap();
        received += r.received;
    });
    ns_run(
        &a.ns,
        "ip",
        &["addr", "del", "10.200.9.99/16", "dev", "eth0"],
    )
    .unwrap();
    assert_eq!(received, 0, "a spoofed source got through");
    // The pings' events (a neighbour probe the kernel sends from the spoofed address
    // would be dropped too, and has no protocol).
    assert_eq!(events.len(), 3, "{line}");
    let e = events
        .iter()
        .find(|e| e.proto.is_some())
        .unwrap_or_else(|| panic!("no IPv4 event: {line}"));
    assert_eq!(
        (e.host.as_str(), e.verdict.as_str(), e.reason.as_deref()),
        (h1, "dropped", Some("spoofed_ip")),
        "{e:?}"
    );
    assert_eq!(e.environment.as_deref(), Some("blue"), "{e:?}");
    assert_eq!(e.src_vm, Some(vm_name(a)), "{e:?}");
    assert_eq!(e.dst_vm, Some(vm_name(b)), "{e:?}");
    assert_eq!(e.src_ip, Some("10.200.9.99".parse().unwrap()), "{e:?}");
    assert_eq!(e.proto.as_deref(), Some("icmp"), "{e:?}");
    assert_eq!(e.port, a.port, "{e:?}");
    let want = format!("- host {h1} dropped ");
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (code, out, err) = lab.violinctl_exit(&["status"]).unwrap();
        let named = out
            .lines()
            .any(|l| l.contains(&want) && l.contains("(spoofed_ip) in the last minute"));
        if named {
            assert_eq!(code, 1, "{out}{err}");
            assert!(out.contains("needs attention:"), "{out}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "status never named the drop: {out}{err}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// `violinctl -o json observe --daemon <h1's violind> ARGS`, running.
/// `violinctl -o json observe ARGS` from the switch's namespace: from the first host's
/// daemon, or (`all`) from every registered host's, which violinctl finds through the
/// controller.
fn observe(lab: &Lab, all: bool, args: &[&str]) -> std::process::Child {
    let api = format!(
        "http://{}",
        SocketAddr::from((lab.hosts[0].underlay_ip, API_PORT))
    );
    let mut cmd = std::process::Command::new("ip");
    cmd.args(["netns", "exec", &switch_ns(&lab.spec.name)])
        .arg(lab.sibling("violinctl"));
    if all {
        cmd.arg("--url")
            .arg(lab.controller_urls())
            .arg("--token-file")
            .arg(lab.token_file());
    }
    cmd.args(["-o", "json", "observe"]);
    if !all {
        cmd.args(["--daemon", &api]);
    }
    cmd.arg("--daemon-token-file")
        .arg(lab.daemon_token_file())
        .args(args)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap()
}

/// Runs `traffic` until `observer` has its events, or for 30 s; its output and events.
fn observed(
    mut observer: std::process::Child,
    mut traffic: impl FnMut(),
) -> (String, Vec<violin_api::observe::FlowEvent>) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while observer.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = observer.kill();
            break;
        }
        traffic();
    }
    let seen = observer.wait_with_output().unwrap();
    let out = String::from_utf8_lossy(&seen.stdout).into_owned();
    assert!(
        seen.status.success(),
        "the observer saw too little in 30 s: {out}{}",
        String::from_utf8_lossy(&seen.stderr)
    );
    let events = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    (out, events)
}

/// Forwarded frames are observed too, a sample of them (here every one), on every host
/// when no daemon is named: the controller knows their APIs.
fn observe_shows_forwarded_frames(lab: &Lab, a: &Vm, b: &Vm) {
    // Each daemon sends what it saw about once a second: enough events for a couple of
    // seconds of pings, so that both hosts' batches are among them.
    let args = ["--vm", &vm_name(a), "--every", "1", "--count", "40"];
    let observer = observe(lab, true, &args);
    let (out, events) = observed(observer, || {
        ping(&a.ns, &b.ip.to_string(), 2, &["-i", "0.1"]).unwrap();
    });
    assert!(
        events.iter().any(|e| e.verdict == "forwarded"
            && e.reason.is_none()
            && e.src_vm == Some(vm_name(a))
            && e.dst_vm == Some(vm_name(b))
            && e.proto.as_deref() == Some("icmp")),
        "{out}"
    );
    // The echo requests leave a's host, the replies b's.
    for h in [&lab.hosts[0], &lab.hosts[1]] {
        assert!(
            events.iter().any(|e| e.host == h.host_id()),
            "no event from {}: {out}",
            h.host_id()
        );
    }
}

/// Every path in dataplane-user/openapi.json answers on a daemon: /v1 only with the
/// token, /metrics without.
fn daemon_api_matches_its_openapi_file(lab: &Lab, token: &str) {
    let doc: Value = serde_json::from_str(
        &std::fs::read_to_string(
            violin_testbed::workspace_root().join("dataplane-user/openapi.json"),
        )
        .unwrap(),
    )
    .unwrap();
    let h = &lab.hosts[1];
    let api = SocketAddr::from((h.underlay_ip, API_PORT));
    let mut checked = 0;
    for path in doc["paths"].as_object().unwrap().keys() {
        let open = doc["paths"][path]["get"]["security"] == serde_json::json!([{}]);
        let (code, body) = http_get(&h.ns, api, path).unwrap();
        if open {
            assert_eq!(code, 200, "{path}: {body}");
        } else {
            assert_eq!(code, 401, "{path} answered without a token: {body}");
            // A stream without end (read through violinctl observe above).
            if path == "/v1/observe" {
                checked += 1;
                continue;
            }
            let (code, body) = http_get_with(&h.ns, api, path, Some(token)).unwrap();
            assert_eq!(code, 200, "{path}: {body}");
            serde_json::from_str::<Value>(&body).unwrap_or_else(|e| panic!("{path}: {e}"));
        }
        checked += 1;
    }
    assert_eq!(checked, 8);
    // The served document is the file.
    let (code, body) = http_get(&h.ns, api, "/openapi.json").unwrap();
    assert_eq!(code, 200, "{body}");
    let served: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        served, doc,
        "violind's served OpenAPI document differs from its file"
    );
}

/// The controller's /metrics (open, as Prometheus scrapes it) counts the hosts' syncs.
fn controller_metrics_count_the_syncs(lab: &Lab) {
    let sw = violin_testbed::lab::switch_ns(&lab.spec.name);
    let addr: SocketAddr = format!(
        "{}:{}",
        violin_testbed::control::controller_ip(),
        violin_testbed::control::CONTROLLER_PORT
    )
    .parse()
    .unwrap();
    let (code, text) = http_get(&sw, addr, "/metrics").unwrap();
    assert_eq!(code, 200, "{text}");
    let value = |name: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{text}"))
    };
    assert_eq!(value("violin_controller_hosts_connected"), 3.0);
    assert!(value("violin_controller_sync_latency_seconds_count") >= 3.0);
    assert!(value("violin_controller_generation") >= 1.0);
    assert!(
        text.contains("violin_controller_host_acked_generation{host="),
        "{text}"
    );
}

/// An IPv6-only underlay under the controller: it listens on the underlay's IPv6
/// address, the daemons register and sync over IPv6, and the environment is a star
/// through h2 (TC mode) between h1 (TC) and h3 (XDP mode): h2 relays the floods to the
/// other hosts and sends on their frames, single and GRO-aggregated, over IPv6.
#[test]
fn the_controller_drives_an_ipv6_underlay() {
    let lab = lab("c6", |s| {
        s.hosts = 2;
        s.violin_xdp_hosts = 1;
        s.vms_per_host = 1;
        s.controller = true;
        s.ipv6 = true;
    });
    assert!(lab.controller_urls().starts_with("http://[fd00:250::fe]:"));
    let (a, c) = (lab.vm(0, 0, 0).clone(), lab.vm(2, 0, 0).clone());
    let hub = lab.hosts[1].host_id().to_string();
    let star = lab.env_spec(
        0,
        "env0",
        violin_testbed::lab::BASE_VNI,
        &format!("[adapt]\nproxy = {hub:?}\nlinks = 0\n"),
    );
    lab.apply_spec("env0", &star)
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.daemon_logs()));
    let hosts: Vec<HostInfo> = lab.violinctl_as(&["hosts"]).unwrap();
    assert!(hosts.iter().all(|h| h.in_sync), "{hosts:?}");
    for h in &lab.hosts {
        let row = hosts
            .iter()
            .find(|r| r.name == h.host_id())
            .expect("a host row");
        assert_eq!(
            row.address.as_deref(),
            Some(h.underlay_ip.to_string().as_str())
        );
    }
    let h3 = lab.hosts[2].underlay_ip.to_string();
    // Bytes the hub sent h3 (in packets a GRO aggregate would count once).
    let sent_to_h3 = || {
        let s = lab.stats(1).unwrap();
        s["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["address"] == h3.as_str())
            .map_or(0, |p| counter(p, "/stats/tx/bytes"))
    };
    let relayed = sent_to_h3();
    wait_ping(&a.ns, &c.ip.to_string(), Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("{e:#}\n{}", lab.daemon_logs()));
    let r = ping(&c.ns, &a.ip.to_string(), 10, &["-i", "0.05"]).unwrap();
    assert_eq!(r.lost(), 0, "{r:?}");
    for (from, to, port) in [(&a, &c, 5601u16), (&c, &a, 5602)] {
        let t = tcp_transfer(&from.ns, &to.ns, to.ip, port, 20_000_000).unwrap();
        assert_eq!(t.bytes, 20_000_000, "{} -> {}", from.ns, to.ns);
        assert_eq!(t.sent_digest, t.received_digest, "{} -> {}", from.ns, to.ns);
    }
    // h1 and h3 have no link: everything between them went through h2.
    let s1 = lab.stats(0).unwrap();
    let peers: Vec<&str> = s1["peers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["address"].as_str().unwrap())
        .collect();
    assert_eq!(peers, ["fd00:250::2"], "h1's only peer is the hub");
    let sent_on = sent_to_h3() - relayed;
    assert!(
        sent_on > 20_000_000,
        "the hub sent on {sent_on} bytes to h3, less than the stream h1 sent it"
    );
    lab.down().unwrap();
}
