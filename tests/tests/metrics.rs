//! violind's and the controller's /metrics, scraped by the real Prometheus server, and
//! the shipped Grafana dashboard's queries checked against what they export.
use std::{
    collections::BTreeSet,
    fs,
    net::SocketAddr,
    process::Stdio,
    thread,
    time::{Duration, Instant},
};

use violin_testbed::{
    control::{controller_ip, CONTROLLER_PORT},
    e2e::lab,
    lab::API_PORT,
    sys::{ns_command, run},
    traffic::{http_get, http_get_with, ping, tcp_transfer, url_encode, wait_ping},
    workspace_root,
};

/// Metric family names in Prometheus' text format.
fn families(text: &str) -> BTreeSet<String> {
    text.lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Every `violin_*` name a dashboard query uses.
fn dashboard_metrics(dashboard: &serde_json::Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(i) = rest.find("violin_") {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                rest = &rest[i + name.len()..];
                out.insert(name);
            }
        }
    }
    out
}

struct Prometheus(std::process::Child);

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn prometheus_scrapes_violind_and_the_controller_and_the_dashboard_queries_exist() {
    let lab = lab("pr", |s| {
        s.vms_per_host = 1;
        s.controller = true;
    });
    let spec = lab.dir.join("env.toml");
    fs::write(&spec, lab.env_spec(0, "metrics", 1000, "")).unwrap();
    lab.violinctl(&["apply", "--wait", spec.to_str().unwrap()])
        .unwrap();
    let token = fs::read_to_string(lab.token_file()).unwrap();
    let a = lab.vm(0, 0, 0).clone();
    let b = lab.vm(1, 0, 0).clone();
    wait_ping(&a.ns, &b.ip.to_string(), Duration::from_secs(10)).unwrap();
    assert_eq!(
        ping(&a.ns, &b.ip.to_string(), 10, &["-i", "0.05"])
            .unwrap()
            .lost(),
        0
    );
    tcp_transfer(&a.ns, &b.ns, b.ip, 5401, 5_000_000).unwrap();

    let h1 = lab.hosts[0].clone();
    let api = |i: usize| SocketAddr::from((lab.hosts[i].underlay_ip, API_PORT));
    let (status, text) = http_get(&h1.ns, api(0), "/metrics").unwrap();
    assert_eq!(status, 200, "{text}");
    let names = families(&text);
    let line = text
        .lines()
        .find(|l| l.starts_with("violin_port_rx_packets_total{port=\"vm1\""))
        .expect("port counter");
    let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(value > 3000.0, "{line}");
    assert!(text.contains("violin_drops_total{reason=\"too_big\"} 0"));
    let (status, _) = http_get(&h1.ns, api(1), "/v1/stats").unwrap();
    assert_eq!(status, 401, "/v1 answered without the token");
    let (status, json) = http_get_with(&h1.ns, api(1), "/v1/stats", Some(&token)).unwrap();
    assert_eq!(status, 200);
    let stats: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert!(stats["ports"].as_array().unwrap().len() >= 2);
    let (status, _) = http_get(&h1.ns, api(0), "/nonexistent").unwrap();
    assert_eq!(status, 404);

    assert!(
        text.contains("violin_vm_pair_packets_total{"),
        "no VM pair counters"
    );
    let controller = SocketAddr::from((
        controller_ip().parse::<std::net::Ipv4Addr>().unwrap(),
        CONTROLLER_PORT,
    ));
    let (status, ctl_text) = http_get(&h1.ns, controller, "/metrics").unwrap();
    assert_eq!(status, 200, "{ctl_text}");
    let mut names = names;
    names.extend(families(&ctl_text));

    // The shipped dashboard asks only for metrics that exist.
    let dashboard: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(workspace_root().join("deploy/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let wanted = dashboard_metrics(&dashboard);
    assert!(wanted.len() >= 8, "{wanted:?}");
    // A histogram's series carry suffixes its family name does not.
    let family = |n: &String| {
        ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| n.strip_suffix(suffix).filter(|f| names.contains(*f)))
            .unwrap_or(n)
            .to_string()
    };
    let missing: Vec<_> = wanted
        .iter()
        .map(family)
        .filter(|n| !names.contains(n))
        .collect();
    assert!(
        missing.is_empty(),
        "dashboard uses unknown metrics {missing:?}"
    );

    // The real Prometheus server, with the shipped scrape configuration.
    let dir = lab.dir.join("prometheus");
    fs::create_dir_all(&dir).unwrap();
    let config = fs::read_to_string(workspace_root().join("deploy/prometheus.yml"))
        .unwrap()
        .replace("scrape_interval: 5s", "scrape_interval: 1s");
    fs::write(dir.join("prometheus.yml"), config).unwrap();
    let targets = serde_json::json!([{ "targets": [api(0).to_string(), api(1).to_string()] }]);
    fs::write(dir.join("violin-targets.json"), targets.to_string()).unwrap();
    let targets = serde_json::json!([{ "targets": [controller.to_string()] }]);
    fs::write(dir.join("controller-targets.json"), targets.to_string()).unwrap();
    let cfg = dir.join("prometheus.yml").to_string_lossy().into_owned();
    run("promtool", &["check", "config", &cfg]).unwrap();
    let tsdb = format!("--storage.tsdb.path={}", dir.join("tsdb").display());
    let listen = "127.0.0.1:19090";
    let _prom = Prometheus(
        ns_command(
            &h1.ns,
            "prometheus",
            &[
                &format!("--config.file={cfg}"),
                &tsdb,
                &format!("--web.listen-address={listen}"),
            ],
        )
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("prometheus (Debian package `prometheus`, installed by setup)"),
    );
    let prom: SocketAddr = listen.parse().unwrap();
    let query = format!(
        "/api/v1/query?query={}",
        url_encode("violin_port_rx_packets_total{port=~\"vm1\"} > 0")
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok((200, body)) = http_get(&h1.ns, prom, &query) {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let series = v["data"]["result"].as_array().cloned().unwrap_or_default();
            // Both hosts' vm1, scraped and queried back.
            if series.len() == 2 {
                let instances: BTreeSet<String> = series
                    .iter()
                    .map(|s| s["metric"]["instance"].as_str().unwrap().to_string())
                    .collect();
                assert_eq!(instances.len(), 2, "{series:?}");
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never returned both hosts' series"
        );
        thread::sleep(Duration::from_millis(500));
    }
    // And the controller's: both hosts connected.
    let query = format!(
        "/api/v1/query?query={}",
        url_encode("violin_controller_hosts_connected")
    );
    loop {
        if let Ok((200, body)) = http_get(&h1.ns, prom, &query) {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let value = v["data"]["result"][0]["value"][1]
                .as_str()
                .map(str::to_string);
            if value.as_deref() == Some("2") {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never returned the controller's series"
        );
        thread::sleep(Duration::from_millis(500));
    }
    lab.down().unwrap();
}
