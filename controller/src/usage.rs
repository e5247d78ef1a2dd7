//! The VMs' use over time, from the hosts' libvirt reports: the adaptation manager's
//! history (equation 6.1 predicts from it). Kept in memory: after a restart the manager
//! waits for a few samples again rather than predicting from stale ones.
use std::{
    collections::{BTreeMap, VecDeque},
    sync::Mutex,
    time::{SystemTime, UNIX_EPOCH},
};

use violin_api::vm::{UsageSample, VmState, VmStatus};

/// Samples kept per VM.
pub const KEEP: usize = 240;

#[derive(Clone, Debug)]
pub struct History {
    pub host: String,
    /// The latest status reported.
    pub status: VmStatus,
    /// CPU seconds and time (ms) of the latest report, to turn the next into a rate.
    last: (f64, u64),
    pub samples: VecDeque<UsageSample>,
}

#[derive(Default)]
pub struct Usage {
    vms: Mutex<BTreeMap<String, History>>,
}

/// Unix time in milliseconds, as the usage samples and the manager's records carry it.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl Usage {
    /// A host's report of its domains. A VM that moved starts its rate afresh on its new
    /// host (its CPU time restarts with the destination's QEMU).
    pub fn record(&self, host: &str, vms: &[VmStatus]) {
        self.record_at(host, vms, now_ms());
    }

    pub fn record_at(&self, host: &str, vms: &[VmStatus], at_ms: u64) {
        let mut all = self.vms.lock().unwrap();
        for v in vms.iter().filter(|v| v.state == VmState::Running) {
            let h = all.entry(v.name.clone()).or_insert_with(|| History {
                host: host.to_string(),
                status: v.clone(),
                last: (v.cpu_seconds, at_ms),
                samples: VecDeque::new(),
            });
            let moved = h.host != host;
            let (cpu0, t0) = h.last;
            if !moved && at_ms > t0 && v.cpu_seconds >= cpu0 {
                let dt = (at_ms - t0) as f64 / 1000.0;
                h.samples.push_back(UsageSample {
                    at_ms,
                    cpu_cores: (v.cpu_seconds - cpu0) / dt,
                    memory_mib: v.memory_bytes as f64 / 1048576.0,
                    memory_used_mib: v.memory_used_bytes.map(|b| b as f64 / 1048576.0),
                    cpu_cap: v.cpu_cap,
                });
                while h.samples.len() > KEEP {
                    h.samples.pop_front();
                }
            }
            h.host = host.to_string();
            h.status = v.clone();
            h.last = (v.cpu_seconds, at_ms);
        }
    }

    pub fn histories(&self) -> BTreeMap<String, History> {
        self.vms.lock().unwrap().clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(name: &str, cpu: f64) -> VmStatus {
        VmStatus {
            name: name.into(),
            state: VmState::Running,
            cpu_seconds: cpu,
            memory_bytes: 256 << 20,
            vcpus: 1,
            ports: Vec::new(),
            max_memory_bytes: 256 << 20,
            memory_used_bytes: Some(100 << 20),
            cpu_weight: Some(1024),
            cpu_cap: None,
        }
    }

    #[test]
    fn cpu_time_becomes_cores_and_a_move_restarts_the_rate() {
        let u = Usage::default();
        u.record_at("h1", &[status("a", 10.0)], 1000);
        u.record_at("h1", &[status("a", 12.5)], 6000);
        let h = &u.histories()["a"];
        assert_eq!(h.samples.len(), 1);
        assert!((h.samples[0].cpu_cores - 0.5).abs() < 1e-9);
        assert_eq!(h.samples[0].memory_used_mib, Some(100.0));
        // Arrived on h2 with a fresh QEMU (CPU time from 0): no sample from that step.
        u.record_at("h2", &[status("a", 0.2)], 7000);
        u.record_at("h2", &[status("a", 1.2)], 9000);
        let h = &u.histories()["a"];
        assert_eq!(h.host, "h2");
        assert_eq!(h.samples.len(), 2);
        assert!((h.samples[1].cpu_cores - 0.5).abs() < 1e-9);
    }
}
