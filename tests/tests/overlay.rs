//! Two Violin hosts, two VMs each, one environment: the VMs see one Ethernet LAN.
use std::time::Duration;

use dataplane_common::maps::{peer_index, port_index, vni_index, VNI_INDEX_LIVE};
use violin_testbed::{
    e2e::{counter, lab, pinned_slot, port},
    sys::{link_packets, ns_run},
    traffic::{ping, tcp_exchange, tcp_transfer, wait_ping, Capture},
};

#[test]
fn ping_and_tcp_cross_hosts_both_ways_without_static_arp() {
    cross_hosts("ov", |_| {});
}

/// XDP port mode: the VMs checksum what they send, broadcasts go through the AF_XDP slow
/// path, and the same traffic must work.
#[test]
fn xdp_port_mode_carries_the_same_traffic_with_vm_offloads_off() {
    cross_hosts("xd", |s| {
        s.violin_xdp_hosts = s.hosts;
        s.hosts = 0;
    });
}

/// An IPv6-only underlay: the tunnels are VXLAN over IPv6 (70 bytes of headers), in TC
/// port mode, and in XDP port mode with its AF_XDP slow path.
#[test]
fn an_ipv6_underlay_carries_the_same_traffic() {
    cross_hosts("o6", |s| s.ipv6 = true);
}

#[test]
fn an_ipv6_underlay_carries_the_same_traffic_in_xdp_mode() {
    cross_hosts("x6", |s| {
        s.ipv6 = true;
        s.violin_xdp_hosts = s.hosts;
        s.hosts = 0;
    });
}

fn cross_hosts(tag: &str, adjust: impl FnOnce(&mut violin_testbed::lab::LabSpec)) {
    let lab = lab(tag, adjust);
    let a = lab.vm(0, 0, 0).clone();
    let b = lab.vm(1, 0, 0).clone();
    let a2 = lab.vm(0, 0, 1).clone();

    wait_ping(&a.ns, &b.ip.to_string(), Duration::from_secs(10)).unwrap();
    for (from, to) in [(&a, &b), (&b, &a), (&a, &a2)] {
        let r = ping(&from.ns, &to.ip.to_string(), 10, &["-i", "0.05"]).unwrap();
        assert_eq!(
            r.lost(),
            0,
            "{} -> {}: {r:?}\n{}",
            from.ns,
            to.ns,
            lab.daemon_logs()
        );
    }
    // IPv6 neighbour discovery is multicast: it crosses hosts through the slow path.
    let r = ping(&a.ns, &b.ip6, 5, &["-i", "0.1"]).unwrap();
    assert_eq!(r.lost(), 0, "ping -6 {r:?}");

    for (from, to, port_no) in [(&a, &b, 5101u16), (&b, &a, 5102)] {
        let t = tcp_transfer(&from.ns, &to.ns, to.ip, port_no, 100_000_000).unwrap();
        assert_eq!(t.bytes, 100_000_000, "{} -> {}", from.ns, to.ns);
        assert_eq!(
            t.sent_digest, t.received_digest,
            "corrupted stream {} -> {}",
            from.ns, to.ns
        );
    }

    // Between the two VMs of one host. In TC mode the frames of an unbounded pair (and
    // VM) go straight into the other VM (bpf_redirect_peer): its port transmits none of
    // the stream, and violind counts it as the port's all the same.
    let kernel_tx = || link_packets(&lab.hosts[0].ns, &a2.port).unwrap().tx_bytes;
    let counted_tx = || counter(port(&lab.stats(0).unwrap(), &a2.port), "/stats/tx/bytes");
    let (kernel_before, counted_before) = (kernel_tx(), counted_tx());
    let t = tcp_transfer(&a.ns, &a2.ns, a2.ip, 5103, 20_000_000).unwrap();
    assert_eq!(t.bytes, 20_000_000, "{} -> {}", a.ns, a2.ns);
    assert_eq!(
        t.sent_digest, t.received_digest,
        "corrupted stream on one host"
    );
    let (kernel, counted) = (kernel_tx() - kernel_before, counted_tx() - counted_before);
    assert!(
        counted >= 20_000_000,
        "violind counted {counted} bytes to {}",
        a2.port
    );
    if lab.spec.violin_xdp_hosts == 0 {
        // Floods (ARP, IPv6 multicast) still leave by the port: a few small frames.
        assert!(
            kernel < 1_000_000,
            "{} transmitted {kernel} of the {counted} bytes to its VM",
            a2.port
        );
    }

    // Addresses were learned, not configured.
    for vm in [&a, &b] {
        let neigh = ns_run(&vm.ns, "ip", &["neigh", "show", "dev", "eth0"]).unwrap();
        assert!(!neigh.contains("PERMANENT"), "{}: {neigh}", vm.ns);
    }
    let s = lab.stats(0).unwrap();
    if lab.spec.violin_xdp_hosts > 0 {
        // XDP sees every 1450-byte segment on its own, both ways.
        assert!(counter(port(&s, "vm1"), "/stats/rx/packets") > 70_000);
        assert!(counter(&s, "/peers/0/stats/tx/packets") > 70_000);
        assert!(counter(&s, "/peers/0/stats/rx/packets") > 70_000);
    } else {
        // TC mode carries a VM's TSO super-frames whole, and receives a stream's segments
        // merged by GRO through the flow-based VXLAN device: fewer, larger packets, and
        // both of TC's receive paths in use (single frames natively, aggregates through
        // the device).
        assert!(counter(port(&s, "vm1"), "/stats/rx/packets") > 1_000);
        assert!(counter(&s, "/peers/0/stats/tx/packets") > 1_000);
        assert!(counter(&s, "/peers/0/stats/rx/packets") > 1_000);
        assert!(
            counter(&s, "/actions/tunnel~1redirect") > 100,
            "{}",
            s["actions"]
        );
        assert!(
            counter(&s, "/actions/underlay_tc~1redirect") > 10,
            "{}",
            s["actions"]
        );
    }
    let drops: u64 = s["drops"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_u64().unwrap())
        .sum();
    assert_eq!(drops, 0, "unexpected drops: {}", s["drops"]);
    let h2 = lab.hosts[1].underlay_ip;
    assert_eq!(s["peers"][0]["address"], h2.to_string(), "{}", s["peers"]);
    // The forwarding path finds the peer and the delivering port by slot: the arrays hold
    // what the hash maps do (a stale slot would only cost a hash lookup, so look).
    let slot = |map: &str, slot: u32| pinned_slot(&lab, 0, map, slot);
    let peer = slot("PEER_SLOTS", 0);
    let addr: Vec<u8> = match h2 {
        std::net::IpAddr::V4(a) => [[0u8; 10].as_slice(), &[0xff, 0xff], &a.octets()].concat(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    };
    assert_eq!(&peer[..16], &addr[..], "PEER_SLOTS[0]: {peer:?}");
    assert_eq!(peer[22], 1, "PEER_SLOTS[0] unresolved: {peer:?}");
    let ifindex: u32 = ns_run(
        &lab.hosts[0].ns,
        "cat",
        &[&format!("/sys/class/net/{}/ifindex", a.port)],
    )
    .unwrap()
    .trim()
    .parse()
    .unwrap();
    let a_slot = counter(port(&s, &a.port), "/slot") as u32;
    let held = slot("PORT_SLOTS", a_slot);
    assert_eq!(
        held[..4],
        ifindex.to_ne_bytes(),
        "PORT_SLOTS[{a_slot}]: {held:?}"
    );
    // The per-frame lookups by key find the port, the peer and the environment in their
    // direct-mapped indexes rather than by hashing the key.
    let at = port_index(ifindex);
    let held = slot("PORT_INDEX", at);
    assert_eq!(
        held[..4],
        ifindex.to_ne_bytes(),
        "PORT_INDEX[{at}]: {held:?}"
    );
    assert_eq!(
        held[4..8],
        a.vni.to_ne_bytes(),
        "PORT_INDEX[{at}]: {held:?}"
    );
    let at = peer_index(&addr.clone().try_into().unwrap());
    let held = slot("PEER_INDEX", at);
    assert_eq!(&held[..16], &addr[..], "PEER_INDEX[{at}]: {held:?}");
    let at = vni_index(a.vni);
    let held = slot("VNI_INDEX", at);
    assert_eq!(
        held[..4],
        (a.vni | VNI_INDEX_LIVE).to_ne_bytes(),
        "VNI_INDEX[{at}]: {held:?}"
    );
    let fdb = s["fdb"].as_array().unwrap();
    let location = format!("peer {h2}");
    assert!(
        fdb.iter()
            .any(|e| e["mac"] == "02:00:00:00:02:01" && e["location"] == location),
        "{fdb:?}"
    );
    if lab.spec.violin_xdp_hosts == 0 {
        lone_segments_skip_the_device(&lab, &a, &b);
        udp_gso_super_frames_cross_whole(&lab, &a, &b);
    }
    if lab.spec.ipv6 {
        // Nothing but IPv6 on the underlay: the tunnels could not have been IPv4.
        let v4 = ns_run(
            &lab.hosts[0].ns,
            "ip",
            &["-4", "addr", "show", "dev", "ul0"],
        )
        .unwrap();
        assert!(v4.trim().is_empty(), "IPv4 on an IPv6 underlay: {v4}");
        // The VMs' MTU leaves room for 70 bytes of headers.
        let mtu = ns_run(&a.ns, "cat", &["/sys/class/net/eth0/mtu"]).unwrap();
        assert_eq!(mtu.trim(), (lab.spec.mtu - 70).to_string());
    }
    lab.down().unwrap();
}

/// TC mode: the segments of a request/response exchange, alone on the wire with nothing
/// of their stream in the flow-based VXLAN device, are delivered by the underlay program
/// itself rather than through the device (the latency of small messages).
fn lone_segments_skip_the_device(
    lab: &violin_testbed::lab::Lab,
    a: &violin_testbed::lab::Vm,
    b: &violin_testbed::lab::Vm,
) {
    let counts = |host: usize| {
        let s = lab.stats(host).unwrap();
        (
            counter(&s, "/actions/underlay_tc~1redirect"),
            counter(&s, "/actions/tunnel~1redirect"),
        )
    };
    let before = [counts(0), counts(1)];
    let rounds = 200;
    tcp_exchange(&a.ns, &b.ns, b.ip, 5104, rounds, 64).unwrap();
    for (host, (direct0, device0)) in before.into_iter().enumerate() {
        let (direct, device) = counts(host);
        // Each host receives the 200 requests or the 200 echoes, plus the handshake and
        // some pure ACKs.
        assert!(
            direct - direct0 >= rounds as u64,
            "host {host}: {} frames delivered directly, {} through the device",
            direct - direct0,
            device - device0
        );
        assert!(
            device - device0 < rounds as u64 / 10,
            "host {host}: {} frames through the device, {} directly",
            device - device0,
            direct - direct0
        );
    }
}

/// TC mode: a VM's UDP segmentation offload (UDP_SEGMENT) super-frames are encapsulated
/// whole, as TCP's are, and arrive as the datagrams the VM cut them into.
fn udp_gso_super_frames_cross_whole(
    lab: &violin_testbed::lab::Lab,
    a: &violin_testbed::lab::Vm,
    b: &violin_testbed::lab::Vm,
) {
    use std::{net::UdpSocket, os::fd::AsRawFd};
    use violin_testbed::sys::in_netns;

    const SEGMENT: usize = 1000;
    const SENDS: usize = 5;
    let b_ip = b.ip;
    let rx = in_netns(&b.ns, move || Ok(UdpSocket::bind((b_ip, 9998))?)).unwrap();
    rx.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let before = counter(port(&lab.stats(0).unwrap(), &a.port), "/stats/rx/packets");
    in_netns(&a.ns, move || {
        let tx = UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0))?;
        let segment = SEGMENT as libc::c_int;
        // SAFETY: setsockopt(2) reads size_of::<c_int>() bytes from `segment`, a live
        // c_int; the fd is the socket `tx` owns.
        let rc = unsafe {
            libc::setsockopt(
                tx.as_raw_fd(),
                libc::SOL_UDP,
                libc::UDP_SEGMENT,
                (&segment as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as u32,
            )
        };
        anyhow::ensure!(rc == 0, "UDP_SEGMENT: {}", std::io::Error::last_os_error());
        for i in 0..SENDS {
            tx.send_to(&vec![i as u8; 8 * SEGMENT], (b_ip, 9998))?;
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    })
    .unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 65536];
    while let Ok(n) = rx.recv(&mut buf) {
        got.push(buf[..n].to_vec());
    }
    assert_eq!(got.len(), 8 * SENDS, "datagrams received");
    for (k, d) in got.iter().enumerate() {
        assert_eq!(d.len(), SEGMENT, "datagram {k}");
        assert!(d.iter().all(|&x| x == d[0]), "datagram {k} mixes two sends");
    }
    // Five super-frames, not forty datagrams, crossed the VM's port (plus stray ARP).
    let after = counter(port(&lab.stats(0).unwrap(), &a.port), "/stats/rx/packets");
    assert!(after - before < 20, "{} frames from the VM", after - before);
}

#[test]
fn jumbo_frames_carry_8950_byte_vm_frames() {
    let lab = lab("jb", |s| {
        s.mtu = 9000;
        s.vms_per_host = 1;
    });
    let a = lab.vm(0, 0, 0).clone();
    let b = lab.vm(1, 0, 0).clone();
    wait_ping(&a.ns, &b.ip.to_string(), Duration::from_secs(10)).unwrap();
    // 8922 + 8 (ICMP) + 20 (IP) = 8950, the VM MTU; DF set so nothing may fragment.
    let r = ping(
        &a.ns,
        &b.ip.to_string(),
        5,
        &["-s", "8922", "-M", "do", "-i", "0.1"],
    )
    .unwrap();
    assert_eq!(r.lost(), 0, "jumbo ping {r:?}\n{}", lab.daemon_logs());
    // What reaches the far host, segmented by the switch: a VM's TSO super-frames leave
    // encapsulated with the VM's own segment size, so full segments fill the underlay
    // MTU exactly (the tunnel's 50 bytes are in the VM's MTU already).
    let file = violin_testbed::e2e::scratch(&lab, "jumbo.pcap");
    let sw = violin_testbed::lab::switch_ns(&lab.spec.name);
    let filter = format!(
        "udp dst port 4789 and src host {}",
        lab.hosts[0].underlay_ip
    );
    let cap = Capture::start(&sw, &lab.hosts[1].bridge_port, &filter, &file).unwrap();
    let t = tcp_transfer(&a.ns, &b.ns, b.ip, 5103, 50_000_000).unwrap();
    assert_eq!(t.sent_digest, t.received_digest);
    let frames = cap.stop().unwrap();
    let lengths: Vec<usize> = frames
        .iter()
        .filter_map(|f| {
            let b = hex_bytes(f);
            b.get(2..4)
                .map(|l| u16::from_be_bytes([l[0], l[1]]) as usize)
        })
        .collect();
    let largest = lengths.iter().copied().max().unwrap_or(0);
    assert_eq!(
        largest,
        lab.spec.mtu as usize,
        "largest outer packet of {} captured",
        lengths.len()
    );
    let s = lab.stats(0).unwrap();
    assert_eq!(counter(&s, "/drops/too_big"), 0);
    lab.down().unwrap();
}

/// The outer UDP source port carries the inner flow's entropy (so that underlay ECMP and
/// RSS spread tunnels as they spread flows), for IPv4 and IPv6 inner flows alike and in
/// both port modes: different flows between the same two VMs leave on many ports, and
/// one flow always on the same.
#[test]
fn tunnels_spread_inner_flows_over_outer_source_ports() {
    for (tag, xdp) in [("sp", false), ("sx", true)] {
        spread(tag, xdp);
    }
}

fn spread(tag: &str, xdp: bool) {
    use std::net::{IpAddr, Ipv6Addr, UdpSocket};
    use violin_testbed::{e2e::scratch, sys::in_netns};

    const FLOWS: u16 = 16;
    let lab = lab(tag, |s| {
        if xdp {
            s.violin_xdp_hosts = s.hosts;
            s.hosts = 0;
        }
    });
    let a = lab.vm(0, 0, 0).clone();
    let b = lab.vm(1, 0, 0).clone();
    wait_ping(&a.ns, &b.ip.to_string(), Duration::from_secs(10)).unwrap();
    // Neighbour discovery first, so that every datagram below leaves at once.
    let r = ping(&a.ns, &b.ip6, 3, &["-i", "0.1"]).unwrap();
    assert_eq!(r.lost(), 0, "ping -6 {r:?}");
    let (a6, b6): (Ipv6Addr, Ipv6Addr) = (a.ip6.parse().unwrap(), b.ip6.parse().unwrap());
    let file = scratch(&lab, "underlay.pcap");
    // On the switch's port, where both modes' frames are skbs (an XDP redirect out of the
    // host's underlay veth passes no packet tap there).
    let sw = violin_testbed::lab::switch_ns(&lab.spec.name);
    let cap = Capture::start(&sw, &lab.hosts[0].bridge_port, "udp dst port 4789", &file).unwrap();
    in_netns(&a.ns, || {
        for (src, dst) in [
            (IpAddr::from(a.ip), IpAddr::from(b.ip)),
            (a6.into(), b6.into()),
        ] {
            for i in 0..FLOWS {
                let sock = UdpSocket::bind((src, 21000 + i))?;
                for _ in 0..3 {
                    sock.send_to(b"flow", (dst, 9))?;
                    // Paced: a burst of all of them at once overflowed the lab's veth
                    // queues beyond the host (every frame left it, by violind's counters).
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        }
        Ok(())
    })
    .unwrap();
    let frames = cap.stop().unwrap();
    // (inner family, inner source port) -> the outer source ports it left on.
    let mut ports: std::collections::BTreeMap<(u8, u16), std::collections::BTreeSet<u16>> =
        Default::default();
    for bytes in frames.iter().map(|f| hex_bytes(f)) {
        // Outer IPv4 (20 bytes), UDP (8), VXLAN (8), then the inner Ethernet frame.
        let Some(inner) = bytes.get(36..) else {
            continue;
        };
        let be16 =
            |b: &[u8], at: usize| b.get(at..at + 2).map(|p| u16::from_be_bytes([p[0], p[1]]));
        let (Some(outer), Some(ethertype)) = (be16(&bytes, 20), be16(inner, 12)) else {
            continue;
        };
        let (family, sport) = match ethertype {
            0x0800 if inner.get(23) == Some(&17) => (4, be16(inner, 34)),
            0x86dd if inner.get(20) == Some(&17) => (6, be16(inner, 54)),
            _ => continue,
        };
        if let Some(sport) = sport.filter(|p| (21000..21000 + FLOWS).contains(p)) {
            ports.entry((family, sport)).or_default().insert(outer);
        }
    }
    for family in [4u8, 6] {
        let flows: Vec<_> = ports.iter().filter(|((f, _), _)| *f == family).collect();
        assert_eq!(
            flows.len(),
            FLOWS as usize,
            "{tag}: IPv{family} flows seen on the underlay: {ports:?}; frames captured: {}, \
             the first: {:?}",
            frames.len(),
            frames.first()
        );
        for ((_, sport), outer) in &flows {
            assert_eq!(
                outer.len(),
                1,
                "{tag}: IPv{family} flow {sport} left on {outer:?}"
            );
        }
        let distinct: std::collections::BTreeSet<u16> =
            flows.iter().flat_map(|(_, o)| o.iter().copied()).collect();
        // 16 flows hashed into 16384 ports: fewer than 8 distinct would take a broken hash.
        assert!(
            distinct.len() >= 8,
            "{tag}: IPv{family}: 16 flows left on only {distinct:?}"
        );
    }
    lab.down().unwrap();
}

/// The bytes of tcpdump's `-x` hex dump within one captured frame's text.
fn hex_bytes(frame: &str) -> Vec<u8> {
    let mut out = Vec::new();
    let mut in_dump = false;
    for tok in frame.split_whitespace() {
        if tok.starts_with("0x") && tok.ends_with(':') {
            in_dump = true;
            continue;
        }
        if !in_dump || tok.len() % 2 != 0 || !tok.chars().all(|c| c.is_ascii_hexdigit()) {
            continue;
        }
        for i in (0..tok.len()).step_by(2) {
            out.push(u8::from_str_radix(&tok[i..i + 2], 16).unwrap());
        }
    }
    out
}
