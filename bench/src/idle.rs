//! The guest's idle policy while a suite runs (`--halt-poll-ns`). In a VM whose idle CPUs
//! halt at once (the haltpoll cpuidle driver with `guest_halt_poll_ns` 0), waking a process
//! on another CPU costs the waker an exit to the hypervisor; a bulk TCP stream wakes its
//! receiver tens of thousands of times a second, so that cost, not the datapath, sets much
//! of a TCP figure, and it weighs most on the path whose receiver sleeps most. Physical
//! hosts, which the lab stands for, wake an idle core without one. Letting idle CPUs poll
//! a while before they halt takes it out alike for every path; the machine's own value is
//! put back afterwards, and by the next run if this one was killed.

use std::{
    fs,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

/// The haltpoll cpuidle driver's longest poll before a halt, in ns.
const PARAM: &str = "/sys/module/haltpoll/parameters/guest_halt_poll_ns";

/// The setting while it is changed: put back when dropped.
pub struct HaltPoll {
    param: PathBuf,
    /// The machine's own value, also kept in `saved` until it is put back.
    own: String,
    saved: PathBuf,
}

impl HaltPoll {
    /// Sets the machine's poll to `ns`, keeping its own value in `saved` (a run killed
    /// before putting it back leaves that file, from which the next run restores it).
    pub fn set(ns: u64, saved: &Path) -> Result<HaltPoll> {
        Self::set_at(Path::new(PARAM), ns, saved)
    }

    fn set_at(param: &Path, ns: u64, saved: &Path) -> Result<HaltPoll> {
        restore_left(param, saved)?;
        let own = fs::read_to_string(param)
            .with_context(|| {
                format!(
                    "--halt-poll-ns: {} is missing (it needs a VM with the haltpoll cpuidle driver)",
                    param.display()
                )
            })?
            .trim()
            .to_string();
        if let Some(dir) = saved.parent() {
            fs::create_dir_all(dir)?;
        }
        fs::write(saved, &own).with_context(|| format!("writing {}", saved.display()))?;
        fs::write(param, ns.to_string())
            .with_context(|| format!("--halt-poll-ns: writing {}", param.display()))?;
        Ok(HaltPoll {
            param: param.into(),
            own,
            saved: saved.into(),
        })
    }

    /// What the reports say of it.
    pub fn describe(&self, ns: u64) -> String {
        format!(
            "idle CPUs poll up to {ns} ns before halting during the run (guest_halt_poll_ns; the machine's own value, {}, restored after it), alike for every path",
            self.own
        )
    }
}

impl Drop for HaltPoll {
    fn drop(&mut self) {
        match fs::write(&self.param, &self.own) {
            Ok(()) => {
                let _ = fs::remove_file(&self.saved);
            }
            Err(e) => eprintln!(
                "violin-bench: could not put {} back to {}: {e} (saved in {})",
                self.param.display(),
                self.own,
                self.saved.display()
            ),
        }
    }
}

/// Puts back the value a killed run left in `saved`, if any.
fn restore_left(param: &Path, saved: &Path) -> Result<()> {
    let Ok(own) = fs::read_to_string(saved) else {
        return Ok(());
    };
    fs::write(param, own.trim())
        .with_context(|| format!("restoring {} from {}", param.display(), saved.display()))?;
    eprintln!(
        "==> put {} back to {} (left by a run that did not finish)",
        param.display(),
        own.trim()
    );
    fs::remove_file(saved)?;
    Ok(())
}

/// Puts back what a killed run left, for runs without `--halt-poll-ns`.
pub fn restore(saved: &Path) -> Result<()> {
    restore_left(Path::new(PARAM), saved)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_machines_value_comes_back_when_the_run_ends_or_at_the_next_run() {
        let dir = std::env::temp_dir().join(format!("violin-idle-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let param = dir.join("guest_halt_poll_ns");
        let saved = dir.join("saved");
        fs::write(&param, "0\n").unwrap();
        let guard = HaltPoll::set_at(&param, 200_000, &saved).unwrap();
        assert_eq!(fs::read_to_string(&param).unwrap(), "200000");
        assert!(guard.describe(200_000).contains("own value, 0,"));
        drop(guard);
        assert_eq!(fs::read_to_string(&param).unwrap(), "0");
        assert!(!saved.exists());
        // A run killed while it was set leaves the saved value; the next one puts it back
        // before taking the machine's value as its own.
        let guard = HaltPoll::set_at(&param, 100_000, &saved).unwrap();
        std::mem::forget(guard);
        assert_eq!(fs::read_to_string(&param).unwrap(), "100000");
        let guard = HaltPoll::set_at(&param, 50_000, &saved).unwrap();
        assert!(guard.describe(50_000).contains("own value, 0,"));
        drop(guard);
        assert_eq!(fs::read_to_string(&param).unwrap(), "0");
        // A missing parameter is a clear error naming the option.
        let err = HaltPoll::set_at(&dir.join("none"), 1, &saved)
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains("--halt-poll-ns"));
        fs::remove_dir_all(&dir).unwrap();
    }
}
