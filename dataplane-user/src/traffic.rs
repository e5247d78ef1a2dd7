//! VTTIF's local traffic matrix: what this host's VMs sent each other, read from the
//! datapath's per-pair counters and reported to the controller as deltas at the
//! configured rate (`[controller] traffic_report_ms`).
use std::{collections::BTreeMap, thread, time::Duration};

use anyhow::{Context, Result};
use dataplane_common::maps::PairKey;
use tracing::{info, warn};
use violin_api::{
    share::{PairTraffic, TrafficReport},
    UnicastMac, Vni,
};

use crate::{datapath::Maps, follow::Follower, host::Paths, pair_counts::pair_totals};

/// Says once when a reporter's calls to the controller start failing, and once when
/// they succeed again.
pub struct Outage {
    what: &'static str,
    failing: bool,
}

impl Outage {
    pub fn new(what: &'static str) -> Outage {
        Outage {
            what,
            failing: false,
        }
    }

    /// Takes a report's result; true when it reached the controller.
    pub fn after(&mut self, result: Result<()>) -> bool {
        match result {
            Ok(()) => {
                if self.failing {
                    info!(report = self.what, "reports reach the controller again");
                    self.failing = false;
                }
                true
            }
            Err(e) => {
                if !self.failing {
                    warn!(
                        report = self.what,
                        error = format!("{e:#}"),
                        "cannot report to the controller"
                    );
                    self.failing = true;
                }
                false
            }
        }
    }
}

/// Starts the reporter thread. It reads the pinned counters through its own handle.
pub fn start(follower: Follower, paths: &Paths, interval: Duration) -> Result<()> {
    let maps = Maps::open_pinned(paths)?;
    thread::Builder::new()
        .name("traffic".into())
        .spawn(move || {
            let mut last = totals(&maps);
            let mut outage = Outage::new("traffic");
            loop {
                thread::sleep(interval);
                let now = totals(&maps);
                let report = deltas(&last, &now);
                if report.pairs.is_empty() {
                    last = now;
                    continue;
                }
                // The next report includes what a failed one had.
                if outage.after(follower.report_traffic(&report)) {
                    last = now;
                }
            }
        })
        .context("starting the traffic reporter")?;
    Ok(())
}

fn totals(maps: &Maps) -> BTreeMap<PairKey, u64> {
    pair_totals(maps)
        .into_iter()
        .map(|(k, c)| (k, c.bytes))
        .collect()
}

/// What each pair sent between two readings. A counter that went down was evicted and
/// made anew (the map is an LRU): all it holds is new.
fn deltas(last: &BTreeMap<PairKey, u64>, now: &BTreeMap<PairKey, u64>) -> TrafficReport {
    let pairs = now
        .iter()
        .filter_map(|(k, &bytes)| {
            let before = last.get(k).copied().unwrap_or(0);
            let delta = if bytes >= before {
                bytes - before
            } else {
                bytes
            };
            if delta == 0 {
                return None;
            }
            Some(PairTraffic {
                vni: Vni::new(k.vni).ok()?,
                src: UnicastMac::new(k.src)?,
                dst: UnicastMac::new(k.dst)?,
                bytes: delta,
            })
        })
        .collect();
    TrafficReport { pairs }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_are_what_each_pair_sent_since_the_last_reading() {
        let key = |s: u8, d: u8| PairKey::new(1000, [2, 0, 0, 0, 0, s], [2, 0, 0, 0, 0, d]);
        let last = BTreeMap::from([(key(1, 2), 1000), (key(2, 1), 500), (key(3, 1), 70)]);
        let now = BTreeMap::from([
            (key(1, 2), 1500), // +500
            (key(2, 1), 500),  // idle: not reported
            (key(3, 1), 20),   // evicted and made anew
            (key(4, 1), 64),   // new
        ]);
        let r = deltas(&last, &now);
        let got: Vec<(u8, u8, u64)> = r
            .pairs
            .iter()
            .map(|p| (p.src.octets()[5], p.dst.octets()[5], p.bytes))
            .collect();
        assert_eq!(got, vec![(1, 2, 500), (3, 1, 20), (4, 1, 64)]);
        assert!(r.pairs.iter().all(|p| p.vni.get() == 1000));
    }
}
