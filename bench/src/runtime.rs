//! What the forwarding programs take per run on a figure's own frames, from the kernel's
//! run-time statistics: while a [`Sampler`] lives, the kernel counts each program's runs
//! and the time they took (BPF_ENABLE_STATS; it reads the clock twice a run, so the
//! statistics are never on while a timed figure is taken). `cost` times a program through
//! BPF_PROG_TEST_RUN on one frame after another, its code and data warm; here it runs
//! among the rest of the path's work, as on a round trip, where a context switch and two
//! system calls come between frames and take much of what it touches out of the caches.
use std::{fs, os::fd::OwnedFd, path::Path, time::Duration};

use anyhow::{anyhow, Context, Result};
use aya::{
    programs::{links::FdLink, links::PinnedLink, loaded_programs, ProgramType},
    sys::{enable_stats, Stats},
};

/// A program's runs and their time, as counted so far or over a span.
#[derive(Clone, Debug, PartialEq)]
pub struct Runs {
    pub id: u32,
    /// As the kernel keeps it: at most 15 bytes (`violin_underlay_tc` is `violin_underlay`,
    /// as is the XDP program).
    pub name: String,
    /// An XDP program, not a TC one: what tells two programs the cut leaves one name.
    pub xdp: bool,
    pub count: u64,
    pub time: Duration,
}

/// The programs behind the links pinned in `dir` (a violind's `links/` directory).
pub fn linked_programs(dir: &Path) -> Result<Vec<u32>> {
    let entries = fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))?;
    let mut ids = Vec::new();
    for entry in entries {
        let pin = entry?.path();
        let link: FdLink = PinnedLink::from_pin(&pin)
            .with_context(|| format!("opening the pinned link {}", pin.display()))?
            .into();
        ids.push(link.info()?.program_id());
    }
    Ok(ids)
}

/// The kernel's counts for the programs `ids`, all of which must be loaded.
fn snapshot(ids: &[u32]) -> Result<Vec<Runs>> {
    let mut found = Vec::new();
    let mut failed = None;
    for info in loaded_programs() {
        // A program another process unloads while the kernel's list is walked fails its
        // own entry; only a failure that leaves one of ours out counts.
        let info = match info {
            Ok(info) => info,
            Err(e) => {
                failed = Some(e);
                continue;
            }
        };
        if ids.contains(&info.id()) {
            found.push(Runs {
                id: info.id(),
                name: info.name_as_str().unwrap_or_default().to_string(),
                xdp: info.program_type() == ProgramType::Xdp.into(),
                count: info.run_count(),
                time: info.run_time(),
            });
        }
    }
    if let Some(missing) = ids.iter().find(|id| !found.iter().any(|r| r.id == **id)) {
        let e = anyhow!("program {missing} is not among the loaded programs");
        return Err(match failed {
            Some(f) => e.context(f),
            None => e,
        });
    }
    Ok(found)
}

/// The kernel's run-time statistics on, for a set of programs, from `start` to `finish`.
pub struct Sampler {
    before: Vec<Runs>,
    /// The statistics stay on while this is open.
    _on: OwnedFd,
}

impl Sampler {
    pub fn start(ids: &[u32]) -> Result<Sampler> {
        let on = enable_stats(Stats::RunTime).context("BPF_ENABLE_STATS (run time)")?;
        Ok(Sampler {
            before: snapshot(ids)?,
            _on: on,
        })
    }

    /// Each program's runs and time since `start`.
    pub fn finish(self) -> Result<Vec<Runs>> {
        let ids: Vec<u32> = self.before.iter().map(|r| r.id).collect();
        let after = snapshot(&ids)?;
        Ok(since(&self.before, &after))
    }
}

/// The runs of `after` less those of `before`, program by program.
fn since(before: &[Runs], after: &[Runs]) -> Vec<Runs> {
    after
        .iter()
        .map(|a| {
            let b = before.iter().find(|b| b.id == a.id);
            Runs {
                count: a.count - b.map_or(0, |b| b.count),
                time: a.time.saturating_sub(b.map_or(Duration::ZERO, |b| b.time)),
                ..a.clone()
            }
        })
        .collect()
}

/// A program's name as the kernel keeps it (`BPF_OBJ_NAME_LEN` less its NUL).
fn kernel_name(name: &str) -> &str {
    &name[..name.len().min(15)]
}

/// Nanoseconds per run of the programs `name` (as the object names it) of one kind (XDP
/// or TC) taken together: the same program on each host of a path; None if it did not
/// run.
pub fn per_run(runs: &[Runs], name: &str, xdp: bool) -> Option<f64> {
    let of = || {
        runs.iter()
            .filter(|r| r.xdp == xdp && r.name == kernel_name(name))
    };
    let count: u64 = of().map(|r| r.count).sum();
    let time: Duration = of().map(|r| r.time).sum();
    (count > 0).then(|| time.as_nanos() as f64 / count as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(id: u32, name: &str, xdp: bool, count: u64, ns: u64) -> Runs {
        Runs {
            id,
            name: name.into(),
            xdp,
            count,
            time: Duration::from_nanos(ns),
        }
    }

    #[test]
    fn a_span_counts_only_its_own_runs_and_pools_the_hosts() {
        let before = [
            runs(7, "violin_port_tc", false, 100, 50_000),
            runs(9, "violin_port_tc", false, 0, 0),
        ];
        let after = [
            runs(7, "violin_port_tc", false, 300, 90_000),
            runs(9, "violin_port_tc", false, 200, 80_000),
        ];
        let span = since(&before, &after);
        assert_eq!(span[0].count, 200);
        assert_eq!(span[0].time, Duration::from_nanos(40_000));
        // (40 000 + 80 000) ns over 400 runs.
        assert_eq!(per_run(&span, "violin_port_tc", false), Some(300.0));
        assert_eq!(per_run(&span, "violin_underlay_tc", false), None);
    }

    #[test]
    fn names_are_matched_as_the_kernel_cuts_them_and_by_kind() {
        let span = [
            runs(3, "violin_underlay", false, 10, 2_000),
            runs(4, "violin_underlay", true, 10, 1_000),
            runs(5, "violin_port", true, 10, 500),
        ];
        // violin_underlay_tc is kept as violin_underlay, the XDP program's name.
        assert_eq!(per_run(&span, "violin_underlay_tc", false), Some(200.0));
        assert_eq!(per_run(&span, "violin_underlay", true), Some(100.0));
        assert_eq!(per_run(&span, "violin_port_tc", false), None);
        assert_eq!(per_run(&span, "violin_port", true), Some(50.0));
    }
}
