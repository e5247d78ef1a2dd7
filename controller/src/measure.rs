//! The host matrix: what each host's violind measured to every other host over the
//! underlay (round trip, packet-train bandwidth, and the passive estimate from its own
//! traffic), as they last reported it. VADAPT maps VMs onto hosts with it.
use std::{collections::BTreeMap, net::IpAddr, sync::Mutex, time::Instant};

pub use violin_api::rest::MeasuredPair;
use violin_api::share::{HostMeasurements, PeerMeasurement};

/// A report older than this is not used (a host that stopped reporting).
pub const STALE_SECS: f64 = 30.0;

#[derive(Default)]
pub struct Matrix {
    cells: Mutex<BTreeMap<(String, IpAddr), (PeerMeasurement, Instant)>>,
}

impl Matrix {
    /// Host `from`'s row, replacing its previous one; returns the peers it no longer
    /// names. Rows no host renewed for [`STALE_SECS`] go.
    pub fn record(&self, from: &str, m: &HostMeasurements) -> Vec<IpAddr> {
        let now = Instant::now();
        let mut cells = self.cells.lock().unwrap();
        let mut gone = Vec::new();
        cells.retain(|(f, to), (_, at)| {
            if f == from {
                if !m.peers.iter().any(|p| p.address == *to) {
                    gone.push(*to);
                }
                return false;
            }
            at.elapsed().as_secs_f64() < STALE_SECS
        });
        for p in &m.peers {
            cells.insert((from.to_string(), p.address), (p.clone(), now));
        }
        gone
    }

    /// Every cell, with the other host named by `names` (underlay address to host).
    pub fn pairs(&self, names: &BTreeMap<IpAddr, String>) -> Vec<MeasuredPair> {
        self.cells
            .lock()
            .unwrap()
            .iter()
            .map(|((from, to), (m, at))| MeasuredPair {
                from: from.clone(),
                to: names.get(to).cloned().unwrap_or_else(|| to.to_string()),
                rtt_us: m.rtt_us,
                bandwidth_bytes_per_second: m.bandwidth_bytes_per_second,
                passive_bytes_per_second: m.passive_bytes_per_second,
                probes_lost: m.probes_lost,
                age_seconds: at.elapsed().as_secs_f64(),
            })
            .collect()
    }

    /// The throughput estimate between two hosts by name, bytes/s: each direction's best
    /// fresh figure (active or passive), and of the two directions the slower, as a path
    /// is only as fast as its slower way (and one noisy train does not make it fast);
    /// one direction alone when only it is measured.
    pub fn throughput(pairs: &[MeasuredPair], a: &str, b: &str) -> Option<f64> {
        let way = |from: &str, to: &str| {
            pairs
                .iter()
                .filter(|p| p.age_seconds < STALE_SECS && p.from == from && p.to == to)
                .flat_map(|p| [p.bandwidth_bytes_per_second, p.passive_bytes_per_second])
                .flatten()
                .fold(None, |m: Option<f64>, x| Some(m.map_or(x, |m| m.max(x))))
        };
        match (way(a, b), way(b, a)) {
            (Some(x), Some(y)) => Some(x.min(y)),
            (x, y) => x.or(y),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(addr: [u8; 4], bw: Option<f64>, passive: Option<f64>) -> PeerMeasurement {
        PeerMeasurement {
            address: IpAddr::from(addr),
            rtt_us: Some(100.0),
            bandwidth_bytes_per_second: bw,
            passive_bytes_per_second: passive,
            probes_lost: 0,
        }
    }

    #[test]
    fn rows_replace_and_throughput_takes_the_best_of_both_ends() {
        let m = Matrix::default();
        let names = BTreeMap::from([
            (IpAddr::from([10, 0, 0, 1]), "h1".to_string()),
            (IpAddr::from([10, 0, 0, 2]), "h2".to_string()),
        ]);
        m.record(
            "h1",
            &HostMeasurements {
                peers: vec![cell([10, 0, 0, 2], Some(5e6), None)],
            },
        );
        m.record(
            "h2",
            &HostMeasurements {
                peers: vec![cell([10, 0, 0, 1], Some(4e6), Some(7e6))],
            },
        );
        let pairs = m.pairs(&names);
        assert_eq!(pairs.len(), 2);
        // h1 -> h2 5e6; h2 -> h1 7e6 (passive): the slower way.
        assert_eq!(Matrix::throughput(&pairs, "h1", "h2"), Some(5e6));
        assert_eq!(Matrix::throughput(&pairs, "h1", "h9"), None);
        // A new row replaces the old one whole, and says which peers it dropped.
        let gone = m.record("h1", &HostMeasurements { peers: vec![] });
        assert_eq!(gone, [IpAddr::from([10, 0, 0, 2])]);
        assert_eq!(m.pairs(&names).len(), 1);
    }
}
