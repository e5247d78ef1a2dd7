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

use crate::{
    datapath::Maps,
    follow::Follower,
    host::Paths,
    pair_counts::{pair_parts, Cells},
};

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

/// Each pair's bytes in each place (cells, hash map).
fn totals(maps: &Maps) -> BTreeMap<PairKey, [u64; 2]> {
    pair_parts(maps, Cells::read(maps).as_ref())
        .into_iter()
        .map(|(k, p)| (k, [p.cells.bytes, p.hash.bytes]))
        .collect()
}

/// What each pair sent between two readings, place by place. A count that went down was
/// made anew (the hash map evicted the pair, or violind emptied its cell): all it holds
/// is new. Taken place by place, the other place's count is not reported again.
fn deltas(last: &BTreeMap<PairKey, [u64; 2]>, now: &BTreeMap<PairKey, [u64; 2]>) -> TrafficReport {
    let pairs = now
        .iter()
        .filter_map(|(k, places)| {
            let before = last.get(k).copied().unwrap_or_default();
            let delta: u64 = places
                .iter()
                .zip(before)
                .map(|(&now, before)| if now >= before { now - before } else { now })
                .sum();
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
        let last = BTreeMap::from([
            (key(1, 2), [1000, 0]),
            (key(2, 1), [500, 0]),
            (key(3, 1), [0, 70]),
            (key(5, 1), [4000, 300]),
        ]);
        let now = BTreeMap::from([
            (key(1, 2), [1500, 0]), // +500
            (key(2, 1), [500, 0]),  // idle: not reported
            (key(3, 1), [0, 20]),   // evicted and made anew
            (key(4, 1), [64, 0]),   // new
            // Its hash entry evicted and made anew: the 4000 bytes in its cells are not
            // reported again.
            (key(5, 1), [4100, 10]),
        ]);
        let r = deltas(&last, &now);
        let got: Vec<(u8, u8, u64)> = r
            .pairs
            .iter()
            .map(|p| (p.src.octets()[5], p.dst.octets()[5], p.bytes))
            .collect();
        assert_eq!(got, vec![(1, 2, 500), (3, 1, 20), (4, 1, 64), (5, 1, 110)]);
        assert!(r.pairs.iter().all(|p| p.vni.get() == 1000));
    }
}
