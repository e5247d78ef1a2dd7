//! What the benchmark tools report to the harness, one JSON line each on standard output:
//! defined once here, written by `violin-pktgen`, `violin-nemo` and `violin-patterns`, read
//! by `violin-bench` and the tests; the BSP exchange the last two share (`bsp`); and what
//! `violin-bench` writes, `results.json` (`results`), read back by its tests.
pub mod bsp;
pub mod results;

pub mod reports {
    use serde::{Deserialize, Serialize};

    /// `violin-pktgen flood`: what the sender put on the wire.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct Flood {
        pub sent: u64,
        pub send_errors: u64,
    }

    /// `violin-pktgen sink`: what arrived, over the window from the first frame to the last.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct Sink {
        pub packets: u64,
        pub bytes: u64,
        pub secs: f64,
    }

    /// `violin-pktgen echo`: how many datagrams it sent back.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct Echo {
        pub answered: u64,
    }

    /// `violin-pktgen ping`: round-trip times in microseconds.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct Ping {
        pub p50_us: f64,
        pub p99_us: f64,
        pub min_us: f64,
        pub samples: usize,
        pub lost: u64,
    }

    /// `violin-nemo`, rank 0: the run's wall time.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct Nemo {
        pub secs: f64,
        pub iters: usize,
        pub ranks: usize,
        pub checksum: f64,
    }

    /// `violin-patterns run`, one per rank: its iteration times.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct Patterns {
        pub rank: usize,
        pub ranks: usize,
        pub topology: String,
        pub iterations: usize,
        pub message_bytes: usize,
        /// The compute phase of each iteration, ms.
        pub compute_ms: f64,
        /// Wall time of the timed iterations, s.
        pub total_s: f64,
        pub iteration_ms_mean: f64,
        pub iteration_ms_p50: f64,
        pub iteration_ms_p99: f64,
        /// The communication phase alone, mean ms.
        pub communicate_ms_mean: f64,
    }

    /// `violin-patterns edges`: the directed rank pairs of a topology.
    #[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
    pub struct Edges {
        pub topology: String,
        pub ranks: usize,
        pub edges: Vec<(usize, usize)>,
    }

    /// Prints a report as the one line the harness reads.
    pub fn print<T: Serialize>(report: &T) {
        println!(
            "{}",
            serde_json::to_string(report).expect("reports serialise")
        );
    }
}
