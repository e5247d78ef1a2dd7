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

    /// Every host's drops over the window by reason (none left out), from the first
    /// report before it (or the oldest) to the newest. A counter that went down (the maps
    /// were made anew) counts from zero.
    pub fn drops(&self) -> Vec<HostDrops> {
        let hosts = self.hosts.lock().unwrap();
        let mut out = Vec::new();
        for (host, r) in hosts.iter() {
            let (Some((_, first)), Some((_, last))) = (r.drops.front(), r.drops.back()) else {
                continue;
            };
            for (reason, &now) in last {
                let before = first.get(reason).copied().unwrap_or(0);
                let frames = if now >= before { now - before } else { now };
                if frames > 0 {
                    out.push(HostDrops {
                        host: host.clone(),
                        reason: reason.clone(),
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
        assert!(h.drops().is_empty());
        h.record_at(
            "h1",
            report(&[("storm", 25), ("spoofed_ip", 3)]),
            t0 + Duration::from_secs(5),
        );
        let d = h.drops();
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
        assert!(h.drops().is_empty(), "{:?}", h.drops());
        // Counters that went down were made anew: what they hold is new.
        h.record_at("h1", report(&[("storm", 4)]), t0 + Duration::from_secs(75));
        assert_eq!(h.drops()[0].frames, 4);
        // Map fill, with the pressure threshold.
        let maps = h.maps();
        assert_eq!((maps[0].entries, maps[0].capacity), (95, 100));
        assert!(pressed(&maps[0]));
    }
}
