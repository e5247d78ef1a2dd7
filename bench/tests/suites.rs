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

use bench::results::{NetPath, Results};
use violin_testbed::e2e::require_root;

use NetPath::{Bare, LinuxVxlan, Violin, ViolinXdp};

/// Runs `violin-bench suite args... --out <a fresh directory>`; returns its results and
/// the directory it wrote them to, with what it printed on the way.
fn bench(suite: &str, args: &[&str]) -> (Results, PathBuf, String) {
    require_root();
    // Runs of violin-bench hold the machine one at a time (a second one fails at once):
    // here they queue instead.
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
    let stderr = String::from_utf8_lossy(&run.stderr).into_owned();
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
    let json = std::fs::read(dir.join("results.json")).expect("results.json");
    let results = serde_json::from_slice(&json).expect("results.json parses");
    (results, dir, stderr)
}

/// metric -> path -> the repetitions' values.
type Figures = BTreeMap<String, BTreeMap<NetPath, Vec<f64>>>;

fn figures(results: &Results) -> Figures {
    let mut all = Figures::new();
    for s in &results.samples {
        all.entry(s.metric.clone())
            .or_default()
            .entry(s.path)
            .or_default()
            .push(s.value);
    }
    all
}

/// Every one of `metrics` is there on each of `paths` (and no other) for each of `reps`
/// repetitions, each a positive figure. (A cost figure is a median of differences floored
/// at 0, which only a clock coarser than the programs could give.)
fn assert_figures(all: &Figures, metrics: &[String], paths: &[NetPath], reps: usize) {
    for m in metrics {
        let per_path = all
            .get(m)
            .unwrap_or_else(|| panic!("no figure {m}; the run has {:?}", all.keys()));
        let taken: BTreeSet<NetPath> = per_path.keys().copied().collect();
        assert_eq!(taken, paths.iter().copied().collect(), "{m}: paths");
        for (path, values) in per_path {
            assert_eq!(values.len(), reps, "{m} on {path:?}: {values:?}");
            assert!(
                values.iter().all(|v| v.is_finite() && *v > 0.0),
                "{m} on {path:?}: {values:?}"
            );
        }
    }
}

/// The suite declares exactly `metrics` to its report, and took figures of no other.
fn assert_declares(results: &Results, metrics: &[String]) {
    let expected: BTreeSet<&str> = metrics.iter().map(String::as_str).collect();
    let declared: BTreeSet<&str> = results.metrics.iter().map(|m| m.id.as_str()).collect();
    assert_eq!(declared, expected, "the metrics the report declares");
    let taken: BTreeSet<&str> = results.samples.iter().map(|s| s.metric.as_str()).collect();
    assert_eq!(taken, expected, "the metrics the run took");
}

/// The report names the build it measured: this test's debug one.
fn assert_names_the_build(results: &Results) {
    let binaries = results
        .settings
        .get("binaries")
        .unwrap_or_else(|| panic!("no binaries setting: {:?}", results.settings));
    assert!(binaries.contains("(debug build"), "{binaries}");
    let exe = Path::new(env!("CARGO_BIN_EXE_violin-bench"));
    let dir = exe.canonicalize().unwrap();
    let dir = dir.parent().unwrap().display().to_string();
    assert!(binaries.starts_with(&dir), "{binaries}, not {dir}");
}

const COSTS: [&str; 4] = ["encap_ns_64", "encap_ns_mtu", "decap_ns_64", "decap_ns_mtu"];

/// `bench cost --against` another build of the object: both builds' figures and their
/// ratios. Here the other build is this one's, so a ratio far from 1 would mean the two
/// are not timed alike; the bound is loose enough for a noisy machine (two different
/// builds have measured 0.85-1.10x).
#[test]
fn cost_times_both_modes_programs_against_another_object() {
    let object = violin_testbed::target_dir().join("ebpf/dataplane-ebpf");
    let object = object.to_str().unwrap();
    let args = ["--reps", "2", "--mtus", "1500", "--against", object];
    let (results, dir, _) = bench("cost", &args);
    let mut metrics = Vec::new();
    for id in COSTS {
        metrics.extend([id.into(), format!("{id}_against"), format!("{id}_ratio")]);
    }
    let all = figures(&results);
    assert_figures(&all, &metrics, &[Violin, ViolinXdp], 2);
    assert_declares(&results, &metrics);
    for (metric, per_path) in all {
        if metric.ends_with("_ratio") {
            for (path, values) in per_path {
                assert!(
                    values.iter().all(|r| (0.25..4.0).contains(r)),
                    "{metric} on {path:?}: the same object timed against itself gave {values:?}"
                );
            }
        }
    }
    assert_eq!(results.settings["underlay"], "IPv4");
    assert_eq!(results.settings["against"], object);
    assert_names_the_build(&results);
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    assert!(report.contains("Encapsulation (VM port program), 64-byte frame"));
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}

#[test]
fn cost_over_an_ipv6_underlay_names_its_figures_ipv6() {
    let (results, dir, _) = bench("cost", &["--ipv6", "--reps", "1", "--mtus", "1500"]);
    let metrics: Vec<String> = COSTS.iter().map(|id| format!("ipv6_{id}")).collect();
    assert_figures(&figures(&results), &metrics, &[Violin, ViolinXdp], 1);
    assert_declares(&results, &metrics);
    assert_eq!(results.settings["underlay"], "IPv6");
    assert_names_the_build(&results);
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}

/// The line-rate figures: Mpps and CPU per frame at 64 bytes and at MTU size, per stage on
/// every tunnelled path and for the whole path on every path, and a flame graph of each
/// 64-byte figure linked from the report.
#[test]
fn linerate_measures_every_stage_of_every_path_with_flame_graphs() {
    let (results, dir, stderr) = bench("linerate", &["--quick", "--mtus", "1500"]);
    let reps: usize = results.settings["repetitions"].parse().unwrap();
    let mut stages = Vec::new();
    let mut path = Vec::new();
    for size in ["64", "mtu"] {
        for cpu in ["", "_cpu"] {
            stages.push(format!("lr_encap_{size}{cpu}"));
            stages.push(format!("lr_decap_{size}{cpu}"));
            path.push(format!("lr_path_{size}{cpu}"));
        }
    }
    let tunnels = [LinuxVxlan, Violin, ViolinXdp];
    let all = figures(&results);
    assert_figures(&all, &stages, &tunnels, reps);
    assert_figures(&all, &path, &[Bare, LinuxVxlan, Violin, ViolinXdp], reps);
    assert_declares(&results, &[stages, path].concat());
    assert_names_the_build(&results);

    // Ten flame graphs: the whole path of every path, each stage of every tunnel.
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    let profiles = &results.profiles;
    assert_eq!(
        profiles.len(),
        4 + 2 * tunnels.len(),
        "{:?}; the run said:\n{stderr}",
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
