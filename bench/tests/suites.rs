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

use NetPath::{LinuxVxlan, Violin, ViolinXdp};

/// A run's output directory, removed when the test ends, passed or not.
struct Out(PathBuf);

impl Drop for Out {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `violin-bench suite args... --out <a fresh directory>`; returns its results, the
/// directory it wrote them to (held until the caller drops it) and what it printed.
fn bench(suite: &str, args: &[&str]) -> (Results, Out, String) {
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
    let out = Out(out);
    let _ = std::fs::remove_dir_all(&out.0);
    let run = Command::new(env!("CARGO_BIN_EXE_violin-bench"))
        .arg(suite)
        .args(args)
        .arg("--out")
        .arg(&out.0)
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
    let json = std::fs::read(out.0.join(suite).join("results.json")).expect("results.json");
    let results = serde_json::from_slice(&json).expect("results.json parses");
    (results, out, stderr)
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

/// `bench cost --against` another build of the object: both builds' figures, timed in
/// turns, and each repetition's ratio of the two (here the other build is this one's).
#[test]
fn cost_times_both_modes_programs_against_another_object() {
    let object = violin_testbed::target_dir().join("ebpf/dataplane-ebpf");
    let object = object.to_str().unwrap();
    let args = ["--reps", "2", "--mtus", "1500", "--against", object];
    let (results, out, _) = bench("cost", &args);
    let mut metrics = Vec::new();
    for id in COSTS {
        metrics.extend([id.into(), format!("{id}_against"), format!("{id}_ratio")]);
    }
    let all = figures(&results);
    assert_figures(&all, &metrics, &[Violin, ViolinXdp], 2);
    assert_declares(&results, &metrics);
    let of = |metric: &str, path: NetPath, rep: usize| {
        let s = results
            .samples
            .iter()
            .find(|s| (s.metric.as_str(), s.path, s.rep) == (metric, path, rep));
        s.unwrap_or_else(|| panic!("no {metric} on {path:?} in repetition {rep}"))
            .value
    };
    for id in COSTS {
        for path in [Violin, ViolinXdp] {
            for rep in 0..2 {
                let ours = of(id, path, rep);
                let theirs = of(&format!("{id}_against"), path, rep);
                let ratio = of(&format!("{id}_ratio"), path, rep);
                assert!(
                    (ratio - ours / theirs).abs() <= 1e-9 * ratio,
                    "{id} on {path:?}, repetition {rep}: ratio {ratio} of {ours} over {theirs}"
                );
            }
        }
    }
    assert_eq!(results.settings["underlay"], "IPv4");
    assert_eq!(results.settings["against"], object);
    assert_names_the_build(&results);
    let report = std::fs::read_to_string(out.0.join("cost/report.md")).unwrap();
    assert!(report.contains("Encapsulation (VM port program), 64-byte frame"));
}

#[test]
fn cost_over_an_ipv6_underlay_names_its_figures_ipv6() {
    let (results, _out, _) = bench("cost", &["--ipv6", "--reps", "1", "--mtus", "1500"]);
    let metrics: Vec<String> = COSTS.iter().map(|id| format!("ipv6_{id}")).collect();
    assert_figures(&figures(&results), &metrics, &[Violin, ViolinXdp], 1);
    assert_declares(&results, &metrics);
    assert_eq!(results.settings["underlay"], "IPv6");
    assert_names_the_build(&results);
}

/// The line-rate figures' ids: (each stage's, the whole path's).
fn linerate_metrics() -> (Vec<String>, Vec<String>) {
    let mut stages = Vec::new();
    let mut whole = Vec::new();
    for size in ["64", "mtu"] {
        for cpu in ["", "_cpu"] {
            stages.push(format!("lr_encap_{size}{cpu}"));
            stages.push(format!("lr_decap_{size}{cpu}"));
            whole.push(format!("lr_path_{size}{cpu}"));
        }
    }
    (stages, whole)
}

const TUNNELS: [NetPath; 3] = [LinuxVxlan, Violin, ViolinXdp];

/// The line-rate flame graphs at 1500: the whole path of every path, each stage of every
/// tunnel.
fn linerate_flame_graphs() -> Vec<String> {
    let mut files: Vec<String> = NetPath::ALL
        .iter()
        .map(|p| format!("flame-lr-path-{}-1500.svg", p.slug()))
        .collect();
    for stage in ["encap", "decap"] {
        files.extend(
            TUNNELS
                .iter()
                .map(|p| format!("flame-lr-{stage}-{}-1500.svg", p.slug())),
        );
    }
    files
}

/// Without perf a suite takes its figures but no flame graph.
fn require_perf() {
    let perf = Command::new("perf").arg("--version").output();
    assert!(
        perf.is_ok_and(|o| o.status.success()),
        "perf is needed for the flame graphs: run `cargo xtask setup` (it installs linux-perf)"
    );
}

/// The run profiled exactly `files`, and its report links each, an SVG.
fn assert_flame_graphs(results: &Results, dir: &Path, files: &[String], stderr: &str) {
    let linked: BTreeSet<&str> = results
        .profiles
        .keys()
        .map(|title| {
            title
                .split("](")
                .nth(1)
                .and_then(|rest| rest.split(')').next())
                .unwrap_or_else(|| panic!("no flame graph linked in {title:?}"))
        })
        .collect();
    let expected: BTreeSet<&str> = files.iter().map(String::as_str).collect();
    assert_eq!(linked, expected, "flame graphs; the run said:\n{stderr}");
    let report = std::fs::read_to_string(dir.join("report.md")).unwrap();
    for file in linked {
        assert!(report.contains(file), "report.md does not link {file}");
        let svg = std::fs::read_to_string(dir.join(file)).unwrap();
        assert!(svg.contains("<svg"), "{file} is not an SVG");
    }
}

/// --quick's repetitions.
const QUICK_REPS: usize = 2;

/// The line-rate figures: Mpps and CPU per frame at 64 bytes and at MTU size, per stage on
/// every tunnelled path and for the whole path on every path, and a flame graph of each
/// 64-byte figure linked from the report.
#[test]
fn linerate_measures_every_stage_of_every_path_with_flame_graphs() {
    require_perf();
    let (results, out, stderr) = bench("linerate", &["--quick", "--mtus", "1500"]);
    assert_eq!(results.settings["repetitions"], QUICK_REPS.to_string());
    let (stages, whole) = linerate_metrics();
    let all = figures(&results);
    assert_figures(&all, &stages, &TUNNELS, QUICK_REPS);
    assert_figures(&all, &whole, &NetPath::ALL, QUICK_REPS);
    assert_declares(&results, &[stages, whole].concat());
    assert_names_the_build(&results);
    let dir = out.0.join("linerate");
    assert_flame_graphs(&results, &dir, &linerate_flame_graphs(), &stderr);
}

/// The micro suite, whose figures the README's table comes from: bulk TCP (and its split
/// between sending and receiving host), 64-byte frames, round trips and the programs'
/// run-time cost on their frames, each again over an IPv6 underlay; the programs' test-run
/// costs over both underlays; the line-rate figures; and flame graphs of one TCP stream and
/// of the 64-byte flood on every path beside the line rate's.
#[test]
fn micro_takes_every_figure_and_flame_graph_on_every_path() {
    require_perf();
    let (results, out, stderr) = bench("micro", &["--quick", "--mtus", "1500"]);
    assert_eq!(results.settings["repetitions"], QUICK_REPS.to_string());
    let both = |ids: &[&str]| -> Vec<String> {
        let v4 = ids.iter().map(|id| id.to_string());
        v4.clone()
            .chain(v4.map(|id| format!("ipv6_{id}")))
            .collect()
    };
    let socket = both(&[
        "tcp1",
        "tcp4",
        "udp64_rate",
        "udp64_cpu",
        "rtt_p50",
        "rtt_p99",
    ]);
    let programs = both(
        &["run_encap_ns", "run_decap_ns"]
            .iter()
            .chain(&COSTS)
            .copied()
            .collect::<Vec<_>>(),
    );
    let split = vec!["tcp1_send".to_string(), "tcp1_recv".to_string()];
    let (stages, whole) = linerate_metrics();
    let all = figures(&results);
    assert_figures(&all, &socket, &NetPath::ALL, QUICK_REPS);
    assert_figures(&all, &programs, &[Violin, ViolinXdp], QUICK_REPS);
    // A Violin VM (TC mode) against a Linux VXLAN one, each way.
    assert_figures(&all, &split, &[LinuxVxlan, Violin], QUICK_REPS);
    assert_figures(&all, &stages, &TUNNELS, QUICK_REPS);
    assert_figures(&all, &whole, &NetPath::ALL, QUICK_REPS);
    assert_declares(&results, &[socket, programs, split, stages, whole].concat());
    assert_names_the_build(&results);
    let mut files = linerate_flame_graphs();
    for figure in ["tcp1", "udp64"] {
        files.extend(
            NetPath::ALL
                .iter()
                .map(|p| format!("flame-{figure}-{}-1500.svg", p.slug())),
        );
    }
    assert_flame_graphs(&results, &out.0.join("micro"), &files, &stderr);
}
