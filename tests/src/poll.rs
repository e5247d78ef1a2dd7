//! Waiting for what the system under test reaches in its own time (a declared topology, a
//! finished migration, a filled matrix), polling instead of sleeping a guessed time.
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

/// Calls `f` every `every` until it gives Some; fails naming `what` after `within`. An
/// error from `f` ends the wait at once.
pub fn until<T>(
    within: Duration,
    every: Duration,
    what: &str,
    mut f: impl FnMut() -> Result<Option<T>>,
) -> Result<T> {
    let start = Instant::now();
    loop {
        if let Some(t) = f()? {
            return Ok(t);
        }
        if start.elapsed() > within {
            bail!("{what}: not within {within:?}");
        }
        std::thread::sleep(every);
    }
}
