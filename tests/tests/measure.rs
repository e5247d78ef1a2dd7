//! Host-to-host measurement: every violind probes every other registered host over the
//! underlay and reports to the controller, whose host matrix `violinctl measurements`
//! shows. Across lab domains (uplinks shaped to 40 Mbit/s) the packet-train estimate sees
//! the uplink; within a domain it sees a far faster path.
use std::time::{Duration, Instant};

use violin_api::rest::MeasuredPair;
use violin_testbed::{e2e::lab, lab::Domains, traffic::http_get};

const WAN_MBIT: f64 = 40.0;

#[test]
fn the_host_matrix_sees_the_shaped_uplinks() {
    let lab = lab("ms", |s| {
        s.hosts = 4;
        s.vms_per_host = 1;
        s.controller = true;
        s.domains = Some(Domains::shaped(2, WAN_MBIT as u32));
    });
    let names: Vec<String> = (0..4).map(|i| lab.hosts[i].host_id().to_string()).collect();
    let start = Instant::now();
    let full = |m: &[MeasuredPair]| {
        m.len() == 12
            && m.iter()
                .all(|p| p.rtt_us.is_some() && p.bandwidth_bytes_per_second.is_some())
    };
    loop {
        let m: Vec<MeasuredPair> = lab.violinctl_as(&["measurements"]).unwrap();
        if full(&m) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the matrix is not full after 30 s: {m:?}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    // A few more rounds, so each figure is the median of several trains.
    std::thread::sleep(Duration::from_secs(6));
    let matrix: Vec<MeasuredPair> = lab.violinctl_as(&["measurements"]).unwrap();
    assert!(full(&matrix), "{matrix:?}");
    let mbit = |p: &MeasuredPair| p.bandwidth_bytes_per_second.unwrap() * 8.0 / 1e6;
    for p in &matrix {
        let (a, b) = (
            names.iter().position(|n| *n == p.from).unwrap(),
            names.iter().position(|n| *n == p.to).unwrap(),
        );
        let across = lab.domain_of(a) != lab.domain_of(b);
        assert!(
            p.rtt_us.unwrap() > 0.0 && p.rtt_us.unwrap() < 100_000.0,
            "{p:?}"
        );
        if across {
            assert!(
                mbit(p) < WAN_MBIT * 2.0,
                "{} -> {}: {:.1} Mbit/s across {WAN_MBIT} Mbit/s uplinks",
                p.from,
                p.to,
                mbit(p)
            );
        } else {
            assert!(
                mbit(p) > WAN_MBIT * 3.0,
                "{} -> {}: {:.1} Mbit/s within a domain",
                p.from,
                p.to,
                mbit(p)
            );
        }
    }
    let text = lab.violinctl(&["measurements"]).unwrap();
    assert!(text.contains("TRAIN MBIT/S"), "{text}");
    let controller: std::net::SocketAddr = format!(
        "{}:{}",
        violin_testbed::control::controller_ip(),
        violin_testbed::control::CONTROLLER_PORT
    )
    .parse()
    .unwrap();
    let (_, metrics) = http_get(&lab.hosts[0].ns, controller, "/metrics").unwrap();
    assert!(
        metrics.contains("violin_controller_host_bandwidth_bytes_per_second{"),
        "{metrics}"
    );
    lab.down().unwrap();
}
