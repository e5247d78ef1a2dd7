//! violind's and the controller's /metrics, linted by `promtool check metrics` and scraped
//! by the real Prometheus server with the shipped alerting rules; the shipped Grafana
//! dashboard's and rules' queries checked against what they export.
use std::{
    collections::BTreeSet,
    fs,
    io::Write,
    net::SocketAddr,
    path::Path,
    process::{Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use violin_api::stats::Stats;
use violin_testbed::{
    control::{controller_ip, CONTROLLER_PORT},
    e2e::lab,
    lab::{Lab, API_PORT},
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

/// Every `violin_*` name in `text`.
fn metric_names(text: &str, out: &mut BTreeSet<String>) {
    let mut rest = text;
    while let Some(i) = rest.find("violin_") {
        let name: String = rest[i..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        rest = &rest[i + name.len()..];
        out.insert(name);
    }
}

/// Every query of the dashboard: its panels' and its template variables'.
fn dashboard_queries(dashboard: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            out.push(target["expr"].as_str().expect("expr").to_string());
        }
    }
    for var in dashboard["templating"]["list"]
        .as_array()
        .expect("templating")
    {
        if var["type"] == "query" {
            out.push(var["definition"].as_str().expect("definition").to_string());
        }
    }
    out
}

/// The dashboard's conventions: every rate() and increase() over `$__rate_interval`, and
/// the `$instance` and `$vni` variables in use.
fn check_dashboard_queries(queries: &[String]) {
    for q in queries {
        for f in ["rate(", "increase("] {
            for (i, _) in q.match_indices(f) {
                let call = &q[i..];
                let end = call.find(')').expect("closing parenthesis");
                assert!(
                    call[..end].ends_with("[$__rate_interval]"),
                    "not over $__rate_interval: {q}"
                );
            }
        }
    }
    for var in ["\"$instance\"", "\"$vni\""] {
        assert!(
            queries.iter().filter(|q| q.contains(var)).count() >= 2,
            "{var} is hardly used: {queries:#?}"
        );
    }
}

/// `promtool check metrics` on `text`; panics with its complaints, if any.
fn promtool_check_metrics(what: &str, text: &str) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian package `prometheus`, installed by setup)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let complaints = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && complaints.trim().is_empty(),
        "promtool check metrics on {what}'s /metrics ({}):\n{complaints}",
        out.status
    );
}

/// `promtool` with `args` in `dir`; panics with its output when it fails.
fn promtool(dir: &Path, args: &[&str]) {
    let out = Command::new("promtool")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("promtool");
    assert!(
        out.status.success(),
        "promtool {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The value of the sample `series` (name and labels exactly as exported).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Both processes name their build, and violind each map's capacity beside its entries.
fn check_build_and_capacity(violind: &str, controller: &str) {
    for (what, text) in [("violind", violind), ("the controller", controller)] {
        let info = text
            .lines()
            .find(|l| l.starts_with("violin_build_info{"))
            .unwrap_or_else(|| panic!("no violin_build_info from {what}"));
        assert!(info.contains("version=\"0."), "{info}");
        assert!(info.contains("revision=\""), "{info}");
        assert!(info.ends_with(" 1"), "{info}");
    }
    let maps: Vec<&str> = violind
        .lines()
        .filter_map(|l| l.strip_prefix("violin_map_entries{map=\""))
        .filter_map(|l| l.split('"').next())
        .collect();
    assert!(maps.contains(&"fdb"), "{maps:?}");
    for map in maps {
        let capacity = sample(
            violind,
            &format!("violin_map_capacity_entries{{map=\"{map}\"}}"),
        );
        assert!(capacity.is_some_and(|c| c > 0.0), "no capacity of {map}");
    }
}

/// `violind stats -o FORMAT` of the first host.
fn violind_stats(lab: &Lab, format: &str) -> String {
    let cfg = lab.hosts[0].config.to_string_lossy().into_owned();
    run(
        &lab.spec.violind.to_string_lossy(),
        &["stats", "--config", &cfg, "-o", format],
    )
    .unwrap()
}

/// `violind stats` prints the `/v1/stats` body as JSON and YAML, and `wide` shows the
/// map occupancy the table leaves out.
fn check_stats_formats(lab: &Lab, api: &Stats) {
    let json: Stats = serde_json::from_str(&violind_stats(lab, "json")).unwrap();
    assert_eq!(json.ports.len(), api.ports.len());
    assert_eq!(json.map_capacity, api.map_capacity);
    let yaml = violind_stats(lab, "yaml");
    assert!(yaml.contains("\nports:\n- interface: "), "{yaml}");
    assert!(
        yaml.contains("\nmap_capacity:\n  environments: 4096\n"),
        "{yaml}"
    );
    let table = violind_stats(lab, "table");
    let wide = violind_stats(lab, "wide");
    assert!(!table.contains("CAPACITY"), "{table}");
    assert!(
        wide.contains("CAPACITY") && wide.contains("PAIR POLICIES"),
        "{wide}"
    );
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
    let a = lab.vm(0, 0, 0).clone();
    let b = lab.vm(1, 0, 0).clone();
    // A bound far above what the lab carries: its gauges are there, nothing is slowed.
    let bound = format!(
        "[[limit]]\nvm = {:?}\nrate_mbit = 100000\n",
        violin_testbed::control::vm_name(&a)
    );
    lab.apply_spec("metrics", &lab.env_spec(0, "metrics", 1000, &bound))
        .unwrap();
    let token = fs::read_to_string(lab.daemon_token_file()).unwrap();
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
        .find(|l| l.starts_with("violin_port_rx_bytes_total{interface=\"vm1\""))
        .expect("port counter");
    let value: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
    assert!(value > 5e6, "{line}");
    assert_eq!(
        sample(
            &text,
            "violin_datapath_dropped_packets_total{reason=\"too_big\"}"
        ),
        Some(0.0)
    );
    // The VMs' addresses reached the forwarding table, learned by the datapath or placed
    // by violind for the controller, and each writer's changes were counted.
    let changes: Vec<Option<f64>> = ["learned", "placed"]
        .iter()
        .map(|w| {
            sample(
                &text,
                &format!("violin_fdb_changes_total{{writer=\"{w}\"}}"),
            )
        })
        .collect();
    assert!(
        changes.iter().all(Option::is_some) && changes.iter().flatten().sum::<f64>() > 0.0,
        "{changes:?}"
    );
    promtool_check_metrics("violind", &text);
    let (status, _) = http_get(&h1.ns, api(1), "/v1/stats").unwrap();
    assert_eq!(status, 401, "/v1 answered without the token");
    let (status, json) = http_get_with(&h1.ns, api(1), "/v1/stats", Some(&token)).unwrap();
    assert_eq!(status, 200);
    // The contract's type reads the body back, and it agrees with /metrics.
    let stats: Stats = serde_json::from_str(&json).unwrap();
    assert!(stats.ports.len() >= 2);
    assert_eq!(
        stats.map_capacity.keys().collect::<Vec<_>>(),
        stats.map_entries.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        stats.map_capacity["fdb"],
        u64::from(dataplane_common::maps::FDB_ENTRIES)
    );
    check_stats_formats(&lab, &stats);
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
    promtool_check_metrics("the controller", &ctl_text);
    check_build_and_capacity(&text, &ctl_text);
    let mut names = names;
    names.extend(families(&ctl_text));

    // The shipped dashboard asks only for metrics that exist.
    let dashboard: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(workspace_root().join("deploy/grafana-dashboard.json")).unwrap(),
    )
    .unwrap();
    let queries = dashboard_queries(&dashboard);
    check_dashboard_queries(&queries);
    let mut wanted = BTreeSet::new();
    for q in &queries {
        metric_names(q, &mut wanted);
    }
    assert!(wanted.len() >= 8, "{wanted:?}");
    // And the alerting rules too.
    let alerts = fs::read_to_string(workspace_root().join("deploy/alerts.yml")).unwrap();
    metric_names(&alerts, &mut wanted);
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
        "dashboard or alerts use unknown metrics {missing:?}"
    );

    // The real Prometheus server, with the shipped scrape configuration.
    let dir = lab.dir.join("prometheus");
    fs::create_dir_all(&dir).unwrap();
    let deploy = workspace_root().join("deploy");
    let config = fs::read_to_string(deploy.join("prometheus.yml"))
        .unwrap()
        .replace("scrape_interval: 5s", "scrape_interval: 1s")
        .replace("evaluation_interval: 5s", "evaluation_interval: 1s");
    fs::write(dir.join("prometheus.yml"), config).unwrap();
    fs::write(dir.join("alerts.yml"), &alerts).unwrap();
    promtool(&deploy, &["check", "rules", "alerts.yml"]);
    promtool(&deploy, &["test", "rules", "alerts_test.yml"]);
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
        url_encode("violin_port_rx_packets_total{interface=~\"vm1\"} > 0")
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
    // The shipped rules loaded, and each evaluates against the real series without error.
    loop {
        if let Ok((200, body)) = http_get(&h1.ns, prom, "/api/v1/rules") {
            let v: serde_json::Value = serde_json::from_str(&body).unwrap();
            let rules: Vec<serde_json::Value> = v["data"]["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().cloned().unwrap_or_default())
                .collect();
            for r in &rules {
                assert_ne!(r["health"], "err", "rule failed: {r}");
            }
            if rules.len() == 4 && rules.iter().all(|r| r["health"] == "ok") {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "Prometheus never evaluated the alerting rules"
        );
        thread::sleep(Duration::from_millis(500));
    }
    lab.down().unwrap();
}
