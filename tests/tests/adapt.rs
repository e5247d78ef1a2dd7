//! VADAPT end to end, as an operator drives it: an environment whose overlay is a star
//! through a proxy host carries every frame between the other hosts through the proxy
//! (ARP included: the hub relays floods); once VTTIF sees which VMs talk, `violinctl adapt`
//! plans the fast-path link, `--apply` adds it, the traffic then takes it (the hosts'
//! peer counters), `--explain` gives the reason and the measured effect, and automatic
//! mode removes the link once the application stopped using it. In both port modes.
use std::{thread, time::Duration};

use violin_api::rest::{AdaptPlan, Adaptation, LinkInfo, LinkRole, Route};
use violin_testbed::{
    e2e::lab,
    lab::{mac_string, Lab},
    poll,
    traffic::{wait_ping, UdpPattern},
};

/// TC port mode (the default): the hub relays floods in its underlay TC program.
#[test]
fn a_star_gains_the_fast_path_the_traffic_asks_for() {
    adapt("at", false);
}

/// XDP port mode: the hub relays floods in the slow path.
#[test]
fn a_star_gains_the_fast_path_the_traffic_asks_for_in_xdp_mode() {
    adapt("ax", true);
}

/// Polls `f` every 200 ms until it gives Some, or panics with `what` after `within`.
fn until<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    poll::until(within, Duration::from_millis(200), what, || Ok(f()))
        .unwrap_or_else(|e| panic!("{e:#}"))
}

fn fast_paths(lab: &Lab) -> Vec<String> {
    let links: Vec<LinkInfo> = lab.violinctl_as(&["links", "--env", "blue"]).unwrap();
    links
        .iter()
        .filter(|l| l.role == LinkRole::FastPath)
        .map(|l| l.hosts.join("-"))
        .collect()
}

fn adapt(tag: &str, xdp: bool) {
    let lab = lab(tag, |s| {
        s.hosts = 3;
        s.vms_per_host = 1;
        s.controller = true;
        if xdp {
            s.violin_xdp_hosts = s.hosts;
            s.hosts = 0;
        }
    });
    let (a, b, c) = (
        lab.vm(0, 0, 0).clone(),
        lab.vm(1, 0, 0).clone(),
        lab.vm(2, 0, 0).clone(),
    );
    let ids: Vec<String> = (0..3).map(|i| lab.hosts[i].host_id().to_string()).collect();
    let ul = |i: usize| lab.hosts[i].underlay_ip;
    let adapt = format!("[adapt]\nproxy = {:?}\nlinks = 1\n", ids[0]);
    let spec = lab.env_spec(0, "blue", 2300, &adapt);
    let out = lab.apply_spec("blue", &spec).unwrap();
    assert!(out.contains("+ adapt: star through"), "{out}");

    // b and c find each other (ARP relayed by the hub) with no link between their hosts.
    for (from, to) in [(&b, &c), (&c, &b), (&a, &c)] {
        wait_ping(&from.ns, &to.ip.to_string(), Duration::from_secs(10)).unwrap_or_else(|e| {
            panic!(
                "{} -> {}: {e:#}\n{}",
                from.ns,
                to.ns,
                lab.stats_text(0).unwrap()
            )
        });
    }
    assert_eq!(lab.peer_tx(1, ul(2)), None, "h2 has a link to h3 in a star");
    let route: Route = lab
        .violinctl_as(&["route", &mac_string(&b.mac), &mac_string(&c.mac)])
        .unwrap();
    assert!(route.delivered && route.hops.len() == 3, "{route:?}");

    // b and c talk: the plan asks for their hosts' fast path.
    let talking = [b.clone(), c.clone()];
    let traffic = UdpPattern::between(&talking, &[(0, 1), (1, 0)], 9800, 300).unwrap();
    let plan: AdaptPlan = until(Duration::from_secs(10), "a plan with a step", || {
        let p: AdaptPlan = lab.violinctl_as(&["adapt", "blue", "--plan"]).unwrap();
        (!p.steps.is_empty()).then_some(p)
    });
    assert_eq!(plan.steps.len(), 1, "{plan:?}");
    assert_eq!(plan.steps[0].action, "add");
    assert_eq!(plan.steps[0].hosts, [ids[1].clone(), ids[2].clone()]);
    let via_hub = lab.peer_tx(0, ul(2)).unwrap();
    thread::sleep(Duration::from_millis(500));
    assert!(
        lab.peer_tx(0, ul(2)).unwrap() > via_hub + 50,
        "the hub relays b's frames to c"
    );

    let done: Vec<Adaptation> = lab
        .violinctl_as(&["adapt", "blue", "--apply", "--wait"])
        .unwrap();
    assert_eq!(done[0].steps.len(), 1, "{done:?}");
    assert_eq!(fast_paths(&lab), [format!("{}-{}", ids[1], ids[2])]);
    // The traffic takes the fast path: h2 now sends h3 directly, the hub no longer relays.
    thread::sleep(Duration::from_millis(300));
    let (direct, relayed) = (
        lab.peer_tx(1, ul(2)).unwrap(),
        lab.peer_tx(0, ul(2)).unwrap(),
    );
    thread::sleep(Duration::from_secs(1));
    let direct_gain = lab.peer_tx(1, ul(2)).unwrap() - direct;
    let relay_gain = lab.peer_tx(0, ul(2)).unwrap() - relayed;
    assert!(
        direct_gain >= 200,
        "h2 sent h3 {direct_gain} frames directly in a second"
    );
    assert!(
        relay_gain <= 10,
        "the hub still relayed {relay_gain} frames to h3"
    );
    let route: Route = lab
        .violinctl_as(&["route", &mac_string(&b.mac), &mac_string(&c.mac)])
        .unwrap();
    assert!(route.delivered && route.hops.len() == 2, "{route:?}");
    // Explained, with the effect measured once every host applied it.
    let explained: Adaptation = until(Duration::from_secs(10), "the measured effect", || {
        let log: Vec<Adaptation> = lab.violinctl_as(&["adapt", "blue", "--explain"]).unwrap();
        log.into_iter()
            .find(|a| a.id == done[0].id && a.traffic_after.is_some())
    });
    let ms = explained.reconfigure_ms.expect("every host applied it");
    assert!(ms > 0.0, "{explained:?}");
    assert!(explained.traffic_before > 0.0, "{explained:?}");
    assert!(explained.steps[0].reason.contains("proxy"), "{explained:?}");
    let text = lab.violinctl(&["adapt", "blue", "--explain"]).unwrap();
    assert!(text.contains("reconfigured in"), "{text}");
    traffic.stop().unwrap();

    // Automatic mode: the application stopped, so the fast path goes after the hold.
    let auto = format!("{adapt}auto = true\nhold_ms = 1000\n");
    let out = lab
        .apply_spec("blue", &lab.env_spec(0, "blue", 2300, &auto))
        .unwrap();
    assert!(
        !out.contains("- link"),
        "re-applying the spec kept VADAPT's link: {out}"
    );
    until(
        Duration::from_secs(15),
        "the unused fast path removed",
        || fast_paths(&lab).is_empty().then_some(()),
    );
    let log: Vec<Adaptation> = lab.violinctl_as(&["adapt", "blue", "--explain"]).unwrap();
    let last = log.last().unwrap();
    assert_eq!(last.trigger, "auto", "{log:?}");
    assert_eq!(last.steps[0].action, "remove", "{last:?}");
    // And back through the hub.
    wait_ping(&b.ns, &c.ip.to_string(), Duration::from_secs(10)).unwrap();
    lab.down().unwrap();
}

/// VADAPT's mapping in the lab: two talking VMs whose hosts sit in different domains
/// (40 Mbit/s uplinks) are planned onto one domain's hosts, measured to be faster; namespace
/// VMs cannot live-migrate, so `--apply` records the supervisor's refusal, by VM.
#[test]
fn the_mapping_puts_talking_vms_on_the_measured_fast_hosts() {
    let lab = lab("am", |s| {
        s.hosts = 4;
        s.vms_per_host = 1;
        s.controller = true;
        s.domains = Some(violin_testbed::lab::Domains::shaped(2, 40));
    });
    let ids: Vec<String> = (0..4).map(|i| lab.hosts[i].host_id().to_string()).collect();
    let adapt = format!("[adapt]\nproxy = {:?}\nvms_per_host = 2\n", ids[0]);
    lab.apply_spec("blue", &lab.env_spec(0, "blue", 2310, &adapt))
        .unwrap();
    let (a, b) = (lab.vm(0, 0, 0).clone(), lab.vm(1, 0, 0).clone());
    wait_ping(&a.ns, &b.ip.to_string(), Duration::from_secs(10)).unwrap();
    let talking = [a.clone(), b.clone()];
    let traffic = UdpPattern::between(&talking, &[(0, 1), (1, 0)], 9810, 300).unwrap();
    let plan: AdaptPlan = until(Duration::from_secs(30), "a mapping with moves", || {
        let p: AdaptPlan = lab.violinctl_as(&["adapt", "blue"]).unwrap();
        (!p.moves.is_empty()).then_some(p)
    });
    assert_eq!(plan.moves.len(), 1, "{plan:?}");
    assert!(plan.mapping.contains("as well as"), "{}", plan.mapping);
    let text = lab.violinctl(&["adapt", "blue"]).unwrap();
    assert!(text.contains("MIGRATE"), "{text}");
    // What --apply maps (from measurements newer than the plan's: which of the two equally
    // fast domains wins is the measurements' noise).
    let done: Vec<Adaptation> = lab.violinctl_as(&["adapt", "blue", "--apply"]).unwrap();
    assert_eq!(done[0].moves.len(), 1, "{done:?}");
    let m = &done[0].moves[0];
    let host = |name: &str| ids.iter().position(|h| h == name).unwrap();
    // The mover joins the other VM's domain; the other stays.
    let stays = if m.vm == violin_testbed::control::vm_name(&a) {
        1
    } else {
        0
    };
    assert_eq!(lab.domain_of(stays), lab.domain_of(host(&m.to)), "{done:?}");
    assert!(done[0].migrations.is_empty(), "{done:?}");
    assert!(
        done[0].refused.len() == 1 && done[0].refused[0].starts_with(&m.vm),
        "{done:?}"
    );
    traffic.stop().unwrap();
    lab.down().unwrap();
}
