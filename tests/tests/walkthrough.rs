//! The README's operator guide, done as an operator does it: `violinctl` typed into a
//! real terminal (tmux) on a lab of two hosts with a QEMU guest each under libvirt, the
//! screen read back and checked at every step. The guest on h1 runs `violin-probe`
//! against the guest on h2 (a TCP echo session and pings) throughout.
use std::{
    net::SocketAddr,
    time::{Duration, Instant},
};

use violin_testbed::{
    control::vm_name,
    e2e::lab,
    lab::{switch_ns, Lab, VmKind, API_PORT},
    libvirt::{probe_report, twice_on_guest_panic, wait_echoes},
    terminal::Terminal,
};

#[test]
fn the_operator_guide_works_as_written() {
    // A guest kernel that panics is never Violin's doing (see libvirt::guest_panic): the
    // guide runs once more on a fresh lab then, and only then.
    let make = || {
        lab("wk", |s| {
            s.vm_kind = VmKind::Qemu;
            s.vms_per_host = 1;
            s.controller = true;
            s.probes = true;
            s.probe_interval_ms = Some(20);
        })
    };
    twice_on_guest_panic(make, |lab| guide(lab));
}

/// Runs `line` in the terminal; panics with the screen unless it exits `want`.
fn expect(t: &mut Terminal, line: &str, want: i32, within: Duration) -> String {
    let (code, out) = t.run(line, within).unwrap_or_else(|e| panic!("{e:#}"));
    assert_eq!(code, want, "{line}:\n{out}");
    out
}

fn guide(lab: &Lab) {
    let (h1, h2) = (lab.hosts[0].host_id(), lab.hosts[1].host_id());
    let prober = lab.vms.iter().find(|v| v.host == 0).expect("a guest on h1");
    let target = lab.vms.iter().find(|v| v.host == 1).expect("a guest on h2");
    let (a, b) = (vm_name(prober), vm_name(target));
    let short = Duration::from_secs(30);
    std::fs::write(lab.dir.join("blue.toml"), lab.env_spec(0, "blue", 1000, "")).unwrap();
    let bin = lab.sibling("violinctl");
    let daemons: Vec<String> = lab
        .hosts
        .iter()
        .map(|h| format!("http://{}", SocketAddr::from((h.underlay_ip, API_PORT))))
        .collect();
    let mut t = Terminal::open(
        &format!("violin-{}", lab.spec.name),
        &switch_ns(&lab.spec.name),
        &lab.dir,
        bin.parent().unwrap(),
        &[
            ("VIOLIN_CONTROLLER", lab.controller_urls()),
            ("VIOLIN_TOKEN_FILE", lab.token_file().display().to_string()),
            ("VIOLIN_DAEMONS", daemons.join(",")),
            (
                "VIOLIN_DAEMON_TOKEN_FILE",
                lab.daemon_token_file().display().to_string(),
            ),
        ],
    )
    .unwrap();

    // 1. Create an environment from a file: the plan, then every host applies it.
    let out = expect(&mut t, "violinctl apply blue.toml --wait", 0, short);
    for want in [
        "environment blue: ".to_string(),
        format!("+ host {h1} ("),
        format!("+ vm {a} on {h1} port {}", prober.port),
        format!("+ vm {b} on {h2} port {}", target.port),
        "applied blue".into(),
        "2 hosts applied generation".into(),
    ] {
        assert!(out.contains(&want), "no {want:?} in:\n{out}");
    }

    // 2. Look at it: the environment, the hosts in sync, the spec as stored.
    let out = expect(&mut t, "violinctl envs", 0, short);
    assert!(out.contains("blue") && out.contains("1000"), "{out}");
    let out = expect(&mut t, "violinctl hosts", 0, short);
    assert_eq!(out.matches("in sync").count(), 2, "{out}");
    let out = expect(&mut t, "violinctl get blue", 0, short);
    assert!(out.contains(&format!("name = \"{a}\"")), "{out}");
    let out = expect(&mut t, &format!("violinctl route {a} {b}"), 0, short);
    assert!(out.trim_end().ends_with("delivered"), "{out}");
    let console = &prober.guest.as_ref().unwrap().console;
    let report = wait_echoes(lab, prober, 0, 20);

    // 3. Break a rule on purpose: h1 sends the frames for b back out of a's own port.
    let out = expect(
        &mut t,
        &format!(
            "violinctl rule add blue {h1} any {b} --interface {} --wait",
            prober.port
        ),
        0,
        short,
    );
    assert!(out.contains(&format!("+ rule {h1}: any -> {b} (")), "{out}");
    let out = expect(&mut t, &format!("violinctl route {a} {b}"), 0, short);
    assert!(
        out.contains(&format!(
            "written to {h1}'s port {}, which is not the destination's",
            prober.port
        )),
        "{out}"
    );

    // 4. Find the drop: observe shows each dropped frame live, with the VMs, the flow and
    // the reason; status names the host and the reason, and exits 1.
    let out = expect(
        &mut t,
        &format!("violinctl observe --drops --vm {a} --count 3"),
        0,
        short,
    );
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    for l in lines {
        assert!(
            l.contains(&format!(
                "  {h1}  {}  blue (vni 1000)  dropped hairpin  {a} (",
                prober.port
            )) && l.contains(&format!(" -> {b} (")),
            "{out}"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (code, out) = t.run("violinctl status", short).unwrap();
        let found = out
            .lines()
            .any(|l| l.contains(&format!("- host {h1} dropped ")) && l.contains("(hairpin)"));
        if found {
            assert_eq!(code, 1, "{out}");
            assert!(out.contains("needs attention:"), "{out}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status never named the drop:\n{out}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    let stuck = probe_report(console).unwrap().tcp_echoed;

    // 5. Fix it: the rule goes, the route delivers, the session carries traffic again.
    let out = expect(
        &mut t,
        &format!("violinctl rule delete blue {h1} any {b} --wait"),
        0,
        short,
    );
    assert!(out.contains(&format!("- rule {h1}: any -> {b} (")), "{out}");
    let out = expect(&mut t, &format!("violinctl route {a} {b}"), 0, short);
    assert!(out.trim_end().ends_with("delivered"), "{out}");
    let report = wait_echoes(lab, prober, stuck.max(report.tcp_echoed), 20);

    // 6. Migrate b to h1 while the probe runs, following its progress.
    let out = expect(
        &mut t,
        &format!("violinctl migrate {b} --to {h1}"),
        0,
        Duration::from_secs(300),
    );
    assert!(out.contains("completed"), "{out}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = expect(&mut t, "violinctl vms", 0, short);
        let moved = out.lines().any(|l| {
            let cells: Vec<&str> = l.split_whitespace().collect();
            cells.first() == Some(&b.as_str()) && cells.get(1) == Some(&h1)
        });
        if moved {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{b} is not shown on {h1}:\n{out}"
        );
        std::thread::sleep(Duration::from_secs(1));
    }
    wait_echoes(lab, prober, report.tcp_echoed, 20);

    // 7. Read status: once the drops of step 3 left its minute, all is well.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let (code, out) = t.run("violinctl status", short).unwrap();
        if code == 0 {
            assert!(
                out.contains("hosts         2 of 2 in sync")
                    && out.contains("environments  blue (vni 1000, 2 VMs)")
                    && out.contains("migrations    none under way")
                    && out.trim_end().ends_with("all well"),
                "{out}"
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "status still needs attention:\n{out}"
        );
        std::thread::sleep(Duration::from_secs(5));
    }
    let screen = t.screen().unwrap();
    assert!(screen.contains("all well"), "{screen}");
}
