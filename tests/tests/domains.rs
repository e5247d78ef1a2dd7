//! Lab domains: hosts split into domains behind shaped wide-area uplinks, so that a local
//! and a wide-area cluster run on one machine. Traffic across domains is held to the
//! uplinks' rate, traffic within one is not; delay and loss need the kernel's netem.
use std::time::Duration;

use violin_testbed::{
    e2e::lab,
    iperf::{self, Load},
    lab::{Domains, Lab, LabSpec},
    traffic::wait_ping,
};

const WAN_MBIT: u32 = 40;

#[test]
fn traffic_across_domains_is_held_to_the_uplink_rate() {
    let lab = lab("dm", |s| {
        s.hosts = 4;
        s.vms_per_host = 1;
        s.domains = Some(Domains::shaped(2, WAN_MBIT));
    });
    assert_eq!(
        (0..4).map(|i| lab.domain_of(i)).collect::<Vec<_>>(),
        [0, 1, 0, 1]
    );
    assert!(lab.describe().contains("domain 1:"), "{}", lab.describe());
    // a and b share domain 0; c is in domain 1.
    let (a, b, c) = (lab.vm(0, 0, 0), lab.vm(2, 0, 0), lab.vm(1, 0, 0));
    for to in [b, c] {
        wait_ping(&a.ns, &to.ip.to_string(), Duration::from_secs(10)).unwrap();
    }
    let tcp = |to: &violin_testbed::lab::Vm, port| {
        iperf::run(&a.ns, &to.ns, to.ip, Load::Tcp { streams: 1 }, 3.0, port)
            .unwrap()
            .mbit_per_s
    };
    let across = tcp(c, 5301);
    let within = tcp(b, 5302);
    assert!(
        across <= WAN_MBIT as f64 * 1.1,
        "{across:.1} Mbit/s across domains, over the {WAN_MBIT} Mbit/s uplinks"
    );
    assert!(
        across >= WAN_MBIT as f64 * 0.5,
        "{across:.1} Mbit/s across domains: the uplinks starve TCP"
    );
    assert!(
        within > WAN_MBIT as f64 * 3.0,
        "{within:.1} Mbit/s within a domain: shaped too"
    );
    lab.down().unwrap();
}

/// Delay on the uplinks: added to the round trip across domains where the kernel has
/// netem; refused, naming the option and the missing qdisc, where it has not.
#[test]
fn uplink_delay_is_netems_or_refused_by_name() {
    let mut spec = LabSpec::new(
        &violin_testbed::e2e::lab_name("dd"),
        violin_testbed::violind_path(),
    );
    violin_testbed::e2e::require_root();
    spec.hosts = 2;
    spec.vms_per_host = 1;
    spec.domains = Some(Domains {
        count: 2,
        rate_mbit: 100,
        delay_ms: 20.0,
        loss_pct: 0.0,
    });
    match Lab::up(spec, true) {
        Ok(lab) => {
            let (a, b) = (lab.vm(0, 0, 0), lab.vm(1, 0, 0));
            wait_ping(&a.ns, &b.ip.to_string(), Duration::from_secs(10)).unwrap();
            let rtts = violin_testbed::iperf::ping_rtts(&a.ns, &b.ip.to_string(), 5, 0.2).unwrap();
            assert!(
                rtts.iter().all(|&ms| ms >= 40.0),
                "two 20 ms uplinks each way: {rtts:?} ms"
            );
            lab.down().unwrap();
        }
        Err(e) => {
            let msg = format!("{e:#}");
            assert!(
                msg.contains("--wan-delay-ms") && msg.contains("netem"),
                "{msg}"
            );
        }
    }
}
