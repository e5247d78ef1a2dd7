//! The benchmark suites whose figures the issue tracker's targets are read from, run the
//! way an operator runs them (`violin-bench <suite> ...`, which `cargo xtask bench` calls),
//! short: every figure they promise is there, on every path, from the binaries beside
//! violin-bench (here the debug build's, which the reports must say). What the figures
//! are is not asserted: this machine is shared and noisy; `cargo xtask bench` measures.
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
};

use serde_json::Value;
use violin_testbed::e2e::require_root;

/// Runs `violin-bench args... --out <a fresh directory>` and returns the suite's
/// results.json and the directory it wrote.
fn bench(suite: &str, args: &[&str]) -> (Value, PathBuf) {
    require_root();
    // One suite at a time, as operators run them: each brings up a lab of eight hosts and
    // the line-rate suite profiles the whole machine.
    static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());
    let _turn = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
    let out = std::env::temp_dir().join(format!(
        "violin-bench-{suite}-{}-{}",
        args.join("").replace('/', "_"),
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&out);
    let run = Command::new(env!("CARGO_BIN_EXE_violin-bench"))
        .arg(suite)
        .args(args)
        .arg("--out")
        .arg(&out)
        .current_dir(violin_testbed::workspace_root())
        .output()
        .expect("running violin-bench");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        run.status.success(),
        "violin-bench {suite} failed:\n{stderr}"
    );
    // Progress goes to the operator while the suite runs.
    assert!(
        stderr.contains("==> lab up"),
        "no progress shown:\n{stderr}"
    );
    let dir = out.join(suite);
    let json = std::fs::read_to_string(dir.join("results.json")).expect("results.json");
    (
        serde_json::from_str(&json).expect("results.json parses"),
        dir,
    )
}

/// metric -> path -> the repetitions' values.
type Figures = BTreeMap<String, BTreeMap<String, Vec<f64>>>;

fn figures(results: &Value) -> Figures {
    let mut all = Figures::new();
    for s in results["samples"].as_array().expect("samples") {
        all.entry(s["metric"].as_str().expect("metric").into())
            .or_default()
            .entry(s["path"].as_str().expect("path").into())
            .or_default()
            .push(s["value"].as_f64().expect("value"));
    }
    all
}

/// Every one of `metrics` is there on each of `paths` (and no other) for each of `reps`
/// repetitions, each a positive figure.
fn assert_figures(all: &Figures, metrics: &[String], paths: &[&str], reps: usize) {
    for m in metrics {
        let per_path = all
            .get(m)
            .unwrap_or_else(|| panic!("no figure {m}; the run has {:?}", all.keys()));
        let taken: BTreeSet<&str> = per_path.keys().map(String::as_str).collect();
        assert_eq!(taken, paths.iter().copied().collect(), "{m}: paths");
        for (path, values) in per_path {
            assert_eq!(values.len(), reps, "{m} on {path}: {values:?}");
            assert!(
                values.iter().all(|v| v.is_finite() && *v > 0.0),
                "{m} on {path}: {values:?}"
            );
        }
    }
}

/// The suite declares exactly `metrics` to its report, and took figures of no other.
fn assert_declares(results: &Value, metrics: &[String]) {
    let expected: BTreeSet<&str> = metrics.iter().map(String::as_str).collect();
    let declared: BTreeSet<&str> = results["metrics"]
        .as_array()
        .expect("metrics")
        .iter()
        .map(|m| m["id"].as_str().expect("id"))
        .collect();
    assert_eq!(declared, expected, "the metrics the report declares");
    let taken = figures(results);
    let taken: BTreeSet<&str> = taken.keys().map(String::as_str).collect();
    assert_eq!(taken, expected, "the metrics the run took");
}

/// The report names the build it measured, and it is this test's (debug) one.
fn assert_names_the_build(results: &Value) {
    let binaries = results["settings"]["binaries"]
        .as_str()
        .unwrap_or_else(|| panic!("no binaries setting: {}", results["settings"]));
    assert!(binaries.contains("debug"), "{binaries}");
    let dir = Path::new(env!("CARGO_BIN_EXE_violin-bench"))
        .parent()
        .unwrap();
    assert!(binaries.contains(&dir.display().to_string()), "{binaries}");
}

const COSTS: [&str; 4] = ["encap_ns_64", "encap_ns_mtu", "decap_ns_64", "decap_ns_mtu"];

/// `bench cost --against` another build of the object: both builds' figures and their
/// ratios. Here the other build is this one's, so a ratio far from 1 would mean the two
/// are not timed alike; the bound is loose enough for a noisy machine.
#[test]
fn cost_times_both_modes_programs_against_another_object() {
    let object = violin_testbed::target_dir().join("ebpf/dataplane-ebpf");
    let object = object.to_str().unwrap();
    let (results, dir) = bench(
        "cost",
        &["--reps", "2", "--mtus", "1500", "--against", object],
    );
    let mut metrics = Vec::new();
    for id in COSTS {
        metrics.extend([id.into(), format!("{id}_against"), format!("{id}_ratio")]);
    }
    let all = figures(&results);
    assert_figures(&all, &metrics, &["violin", "violin_xdp"], 2);
    assert_declares(&results, &metrics);
    for (metric, per_path) in all {
        if metric.ends_with("_ratio") {
            for (path, values) in per_path {
                assert!(
                    values.iter().all(|r| (0.25..4.0).contains(r)),
                    "{metric} on {path}: the same object timed against itself gave {values:?}"
                );
            }
        }
    }
    assert_eq!(results["settings"]["underlay"], "IPv4");
    assert_eq!(results["settings"]["against"], object);
    assert_names_the_build(&results);
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("Encapsulation (VM port program), 64-byte frame"));
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}

#[test]
fn cost_over_an_ipv6_underlay_names_its_figures_ipv6() {
    let (results, dir) = bench("cost", &["--ipv6", "--reps", "1", "--mtus", "1500"]);
    let metrics: Vec<String> = COSTS.iter().map(|id| format!("ipv6_{id}")).collect();
    assert_figures(&figures(&results), &metrics, &["violin", "violin_xdp"], 1);
    assert_declares(&results, &metrics);
    assert_eq!(results["settings"]["underlay"], "IPv6");
    assert_names_the_build(&results);
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}

/// The line-rate figures: Mpps and CPU per frame at 64 bytes and at MTU size, per stage on
/// every tunnelled path and for the whole path on every path, and a flame graph of each
/// 64-byte figure linked from the report.
#[test]
fn linerate_measures_every_stage_of_every_path_with_flame_graphs() {
    let (results, dir) = bench("linerate", &["--quick", "--mtus", "1500"]);
    let reps = results["settings"]["repetitions"]
        .as_str()
        .expect("repetitions")
        .parse::<usize>()
        .unwrap();
    let mut stages = Vec::new();
    let mut path = Vec::new();
    for size in ["64", "mtu"] {
        for cpu in ["", "_cpu"] {
            stages.push(format!("lr_encap_{size}{cpu}"));
            stages.push(format!("lr_decap_{size}{cpu}"));
            path.push(format!("lr_path_{size}{cpu}"));
        }
    }
    let tunnels = ["linux_vxlan", "violin", "violin_xdp"];
    let all = figures(&results);
    assert_figures(&all, &stages, &tunnels, reps);
    assert_figures(
        &all,
        &path,
        &["bare", "linux_vxlan", "violin", "violin_xdp"],
        reps,
    );
    assert_declares(&results, &[stages, path].concat());
    assert_names_the_build(&results);

    // Ten flame graphs: the whole path of every path, each stage of every tunnel.
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    let profiles = results["profiles"].as_object().expect("profiles");
    assert_eq!(
        profiles.len(),
        4 + 2 * tunnels.len(),
        "{:?}",
        profiles.keys()
    );
    for title in profiles.keys() {
        let file = title
            .split("](")
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .unwrap_or_else(|| panic!("no flame graph linked in {title:?}"));
        assert!(report.contains(file), "report.md does not link {file}");
        let svg = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(svg.contains("<svg"), "{file} is not an SVG");
    }
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}
