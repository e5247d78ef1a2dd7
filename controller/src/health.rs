//! The hosts' datapath health as they report it (drop counters by reason, map fill), kept
//! for `violinctl status`: the drops of the last minute come from the difference between
//! a host's newest report and its oldest within the window.
use std::{
    collections::{BTreeMap, VecDeque},
    sync::Mutex,
    time::{Duration, Instant},
};

use violin_api::{
    rest::{HostDrops, MapFill},
    share::DatapathHealth,
};

/// The window `violinctl status` counts drops over.
pub const WINDOW: Duration = Duration::from_secs(60);

/// Drop reasons that are policies doing their job (a bound, storm control, selected
/// connectivity): shown, but no cause for attention.
pub const BY_POLICY: [&str; 3] = ["rate_limited", "storm", "not_allowed"];

/// A map this full needs attention (new entries will soon be refused or evict others).
pub const PRESSURE: f64 = 0.9;

#[derive(Default)]
pub struct Health {
    hosts: Mutex<BTreeMap<String, Reports>>,
}

/// One host's reports over the window (and the one just before it, the baseline).
#[derive(Default)]
struct Reports {
    drops: VecDeque<(Instant, BTreeMap<String, u64>)>,
    latest: DatapathHealth,
}

impl Health {
    pub fn record(&self, host: &str, report: DatapathHealth) {
        self.record_at(host, report, Instant::now());
    }

    fn record_at(&self, host: &str, report: DatapathHealth, now: Instant) {
        let mut hosts = self.hosts.lock().unwrap();
        let r = hosts.entry(host.to_string()).or_default();
        r.drops.push_back((now, report.drops.clone()));
        // Keep one report older than the window: the baseline of what happened within it.
        while r.drops.len() > 2 && now.duration_since(r.drops[1].0) >= WINDOW {
            r.drops.pop_front();
        }
        r.latest = report;
    }

    /// Every host's drops over the window by reason (none left out): the increases
    /// between its consecutive reports, from the last one before the window (or the
    /// oldest) on. A counter that went down was made anew (the maps were), so its new
    /// value is all new. A host whose newest report is older than the window (it stopped
    /// reporting) shows none.
    pub fn drops(&self) -> Vec<HostDrops> {
        self.drops_at(Instant::now())
    }

    fn drops_at(&self, now: Instant) -> Vec<HostDrops> {
        let hosts = self.hosts.lock().unwrap();
        let mut out = Vec::new();
        for (host, r) in hosts.iter() {
            if r.drops
                .back()
                .is_none_or(|(at, _)| now.saturating_duration_since(*at) >= WINDOW)
            {
                continue;
            }
            let mut sums: BTreeMap<&str, u64> = BTreeMap::new();
            for pair in r.drops.iter().collect::<Vec<_>>().windows(2) {
                let ((_, before), (_, after)) = (pair[0], pair[1]);
                for (reason, &n) in after {
                    let was = before.get(reason).copied().unwrap_or(0);
                    *sums.entry(reason).or_default() += if n >= was { n - was } else { n };
                }
            }
            for (reason, frames) in sums {
                if frames > 0 {
                    out.push(HostDrops {
                        host: host.clone(),
                        reason: reason.to_string(),
                        frames,
                    });
                }
            }
        }
        out
    }

    /// Every host's maps as last reported.
    pub fn maps(&self) -> Vec<MapFill> {
        let hosts = self.hosts.lock().unwrap();
        let mut out = Vec::new();
        for (host, r) in hosts.iter() {
            for (map, &entries) in &r.latest.map_entries {
                out.push(MapFill {
                    host: host.clone(),
                    map: map.clone(),
                    entries,
                    capacity: r.latest.map_capacity.get(map).copied().unwrap_or(0),
                });
            }
        }
        out
    }
}

/// Whether a map is full enough to need attention.
pub fn pressed(m: &MapFill) -> bool {
    m.capacity > 0 && m.entries as f64 >= PRESSURE * m.capacity as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(drops: &[(&str, u64)]) -> DatapathHealth {
        DatapathHealth {
            drops: drops.iter().map(|(r, n)| (r.to_string(), *n)).collect(),
            map_entries: [("fdb".to_string(), 95)].into(),
            map_capacity: [("fdb".to_string(), 100)].into(),
        }
    }

    #[test]
    fn drops_count_what_happened_within_the_window() {
        let h = Health::default();
        let t0 = Instant::now();
        h.record_at("h1", report(&[("storm", 10), ("spoofed_ip", 0)]), t0);
        // One report: nothing is known to have happened within the window yet.
        assert!(h.drops_at(t0).is_empty());
        h.record_at(
            "h1",
            report(&[("storm", 25), ("spoofed_ip", 3)]),
            t0 + Duration::from_secs(5),
        );
        let d = h.drops_at(t0 + Duration::from_secs(5));
        assert_eq!(d.len(), 2, "{d:?}");
        assert_eq!((d[0].reason.as_str(), d[0].frames), ("spoofed_ip", 3));
        assert_eq!((d[1].reason.as_str(), d[1].frames), ("storm", 15));
        // A minute of quiet: the drops leave the window.
        for k in 1..=13 {
            h.record_at(
                "h1",
                report(&[("storm", 25), ("spoofed_ip", 3)]),
                t0 + Duration::from_secs(5 + 5 * k),
            );
        }
        let t70 = t0 + Duration::from_secs(70);
        assert!(h.drops_at(t70).is_empty(), "{:?}", h.drops_at(t70));
        // Counters that went down were made anew: what they hold is new, and what
        // follows adds to it.
        let t75 = t0 + Duration::from_secs(75);
        h.record_at("h1", report(&[("storm", 4)]), t75);
        h.record_at("h1", report(&[("storm", 9)]), t0 + Duration::from_secs(80));
        assert_eq!(h.drops_at(t75 + Duration::from_secs(5))[0].frames, 9);
        // A host that stopped reporting shows no drops once its last report is old.
        assert!(h.drops_at(t0 + Duration::from_secs(141)).is_empty());
        // Map fill, with the pressure threshold.
        let maps = h.maps();
        assert_eq!((maps[0].entries, maps[0].capacity), (95, 100));
        assert!(pressed(&maps[0]));
    }
}
