//! The datapath's health for the controller's `violinctl status`: drop counters by reason
//! and map fill, read from the pinned maps and reported every `[controller]
//! health_report_ms`.
use std::{thread, time::Duration};

use anyhow::{Context, Result};

use crate::{datapath::Maps, follow::Follower, host::Paths, traffic::Outage};

/// Starts the reporter thread. It reads the pinned maps through its own handle.
pub fn start(follower: Follower, paths: &Paths, interval: Duration) -> Result<()> {
    let maps = Maps::open_pinned(paths)?;
    thread::Builder::new()
        .name("health".into())
        .spawn(move || {
            let mut outage = Outage::new("health");
            loop {
                let report = crate::stats::health(&maps);
                outage.after(report.and_then(|r| follower.report_health(&r)));
                thread::sleep(interval);
            }
        })
        .context("starting the health reporter")?;
    Ok(())
}
