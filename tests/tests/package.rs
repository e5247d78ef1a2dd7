//! The Debian packages, installed into a fresh root: their metadata and files, their
//! systemd units verified, and the packaged violind upgraded under traffic the way its
//! unit has systemd do it (KillSignal, then the new binary, readiness by sd_notify),
//! without losing a frame.
use std::{
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    time::Duration,
};

use violin_testbed::{
    e2e::lab,
    lab::API_PORT,
    package,
    sys::{output, run},
    traffic::{http_get, ping, wait_ping},
};

fn extract(debs: &[PathBuf], root: &Path) {
    for deb in debs {
        run(
            "dpkg-deb",
            &["-x", &deb.to_string_lossy(), &root.to_string_lossy()],
        )
        .unwrap();
    }
}

/// A unit file's `key=` value.
fn unit_value(unit: &str, key: &str) -> String {
    unit.lines()
        .find_map(|l| l.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("no {key}= in\n{unit}"))
        .to_string()
}

#[test]
fn packages_install_verify_and_upgrade_violind_without_losing_traffic() {
    let dir = std::env::temp_dir().join(format!("violin-pkg-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let bin = violin_testbed::target_dir().join("debug");
    let v1 = package::build(&bin, &dir.join("v1"), "0.1.0").unwrap();
    let v2 = package::build(&bin, &dir.join("v2"), "0.1.1").unwrap();
    assert_eq!(v1.len(), 3);

    // Metadata: names, versions, and what the binaries load.
    for (deb, name) in v1.iter().zip(["violind", "violin-controller", "violinctl"]) {
        let info = run("dpkg-deb", &["-I", &deb.to_string_lossy()]).unwrap();
        assert!(info.contains(&format!("Package: {name}")), "{info}");
        assert!(info.contains("Version: 0.1.0"), "{info}");
        let depends = info
            .lines()
            .find(|l| l.trim_start().starts_with("Depends:"))
            .unwrap_or_else(|| panic!("{info}"));
        assert!(depends.contains("libc6"), "{depends}");
    }
    let root1 = dir.join("root1");
    let root2 = dir.join("root2");
    extract(&v1, &root1);
    extract(&v2, &root2);
    for f in [
        "usr/sbin/violind",
        "usr/sbin/violin-controller",
        "usr/bin/violinctl",
        "lib/systemd/system/violind.service",
        "lib/systemd/system/violin-controller.service",
        "etc/default/violin-controller",
        "usr/share/bash-completion/completions/violinctl",
    ] {
        assert!(root1.join(f).exists(), "{f} is not in the packages");
    }
    // The packaged violind carries its datapath: it needs no compiler to run.
    let version = run(
        &root1.join("usr/sbin/violind").to_string_lossy(),
        &["--version"],
    )
    .unwrap();
    assert!(version.contains("violind"), "{version}");

    // systemd accepts the units as installed: verified where the packages' programs are
    // on the path their ExecStart names (the machine's /usr/sbin with the root's laid
    // over it, in a mount namespace of the check's own).
    let units = format!(
        "{0}/lib/systemd/system/violind.service {0}/lib/systemd/system/violin-controller.service",
        root1.display()
    );
    let script = format!(
        "mount -t overlay overlay -o lowerdir={}/usr/sbin:/usr/sbin /usr/sbin && systemd-analyze verify {units}",
        root1.display()
    );
    let o = output(
        "unshare",
        &["-m", "--propagation", "private", "sh", "-c", &script],
    )
    .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "systemd-analyze verify: {err}");
    assert!(!err.contains(".service"), "systemd-analyze verify: {err}");
    let unit = std::fs::read_to_string(root1.join("lib/systemd/system/violind.service")).unwrap();
    assert_eq!(unit_value(&unit, "Type"), "notify");
    let kill_signal = unit_value(&unit, "KillSignal");
    assert_eq!(unit_value(&unit, "ExecReload"), "/bin/kill -HUP $MAINPID");

    // The packaged violind in a lab, with a manager listening for its notifications.
    let notify_path = dir.join("notify");
    let manager = UnixDatagram::bind(&notify_path).unwrap();
    manager
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    // This test binary runs this one test: the daemons it starts inherit the variable.
    std::env::set_var("NOTIFY_SOCKET", &notify_path);
    let mut lab = lab("pk", |s| {
        s.vms_per_host = 1;
        s.violind = root1.join("usr/sbin/violind");
    });
    let heard = |want: &str| {
        let mut buf = [0u8; 256];
        loop {
            let n = manager
                .recv(&mut buf)
                .unwrap_or_else(|e| panic!("no {want}: {e}"));
            if String::from_utf8_lossy(&buf[..n]).contains(want) {
                return;
            }
        }
    };
    heard("READY=1");
    heard("READY=1");
    let (a, b) = (lab.vm(0, 0, 0).clone(), lab.vm(1, 0, 0).clone());
    wait_ping(&a.ns, &b.ip.to_string(), Duration::from_secs(10)).unwrap();

    // The upgrade: frames flow all along while each host's daemon is stopped as its unit
    // stops it and the new package's binary starts.
    let pinger = {
        let (ns, ip) = (a.ns.clone(), b.ip.to_string());
        std::thread::spawn(move || ping(&ns, &ip, 1500, &["-i", "0.01"]).unwrap())
    };
    std::thread::sleep(Duration::from_millis(500));
    lab.spec.violind = root2.join("usr/sbin/violind");
    for i in 0..2 {
        let status = lab.signal_daemon(i, &kill_signal).unwrap();
        assert!(status.success(), "{status}");
        heard("STOPPING=1");
        lab.start_daemon(i).unwrap();
        heard("READY=1");
    }
    let r = pinger.join().unwrap();
    assert_eq!(r.lost(), 0, "frames lost during the upgrade: {r:?}");
    std::env::remove_var("NOTIFY_SOCKET");
    // The new daemons answer their health check, open to all.
    for h in &lab.hosts {
        let addr = std::net::SocketAddr::from((h.underlay_ip, API_PORT));
        let (code, body) = http_get(&h.ns, addr, "/healthz").unwrap();
        assert_eq!(code, 200, "{body}");
        assert!(body.contains("\"ok\""), "{body}");
    }
    lab.down().unwrap();
    let _ = std::fs::remove_dir_all(&dir);
}
