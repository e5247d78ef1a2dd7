use super::*;
use crate::maps::addr_words;
use std::vec::Vec;

const LOCAL: [u8; 4] = [10, 0, 0, 1];
const PEER: [u8; 4] = [10, 0, 0, 2];
const VM_A: [u8; 6] = [2, 0, 0, 0, 0, 1];
const VM_B: [u8; 6] = [2, 0, 0, 0, 0, 2];

fn inner_frame(len: usize) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&VM_B);
    f.extend_from_slice(&VM_A);
    f.extend_from_slice(&[0x08, 0x06]);
    f.resize(len, 0xab);
    f
}

/// The Ethernet header at the start of `f`, read as the wire has it.
fn inner_header(f: &[u8]) -> EthHdr {
    f.load::<EthHdr>(0).expect("a whole Ethernet header")
}

#[test]
fn an_ethernet_header_read_in_words_keeps_every_byte_in_place() {
    // Every byte different, so that a byte taken from the wrong place of a word shows.
    let bytes: Vec<u8> = (1..=20).collect();
    for off in [0, 3, 6] {
        let eth = load_eth(&bytes[..], off).unwrap();
        let at = |i: usize| bytes[off + i];
        assert_eq!(eth.dst(), core::array::from_fn(at));
        assert_eq!(eth.src(), core::array::from_fn(|i| at(6 + i)));
        assert_eq!(eth.ethertype, [at(12), at(13)]);
        assert_eq!(eth.header(), inner_header(&bytes[off..]));
        // Stored word by word in memory order, as the TC programs write a header, the
        // words give back the header's bytes.
        let (addrs, ethertype) = eth.words();
        let stored: Vec<u8> = addrs
            .iter()
            .flat_map(|w| w.to_ne_bytes())
            .chain(ethertype.to_ne_bytes())
            .collect();
        assert_eq!(stored, bytes[off..off + 14]);
    }
    assert_eq!(load_eth(&bytes[..13], 0), None);
    assert_eq!(load_eth(&bytes[..], 7), None);
}

fn encapsulate(inner: &[u8], vni: u32) -> Vec<u8> {
    let t = Tunnel {
        src_mac: [2, 1, 1, 1, 1, 2],
        dst_mac: [2, 1, 1, 1, 1, 1],
        src_ip: PEER,
        dst_ip: LOCAL,
    };
    let h = OuterHeaders::new(&t, vni, 50000, inner.len());
    let mut p = h.as_bytes().to_vec();
    p.extend_from_slice(inner);
    p
}

fn classify(p: &[u8]) -> UnderlayVerdict<()> {
    classify_underlay(p, LOCAL, |a| (a == PEER).then_some(()))
}

fn dropped(p: &[u8]) -> DropReason {
    match classify(p) {
        UnderlayVerdict::Drop(r) => r,
        v => panic!("expected a drop, got {v:?}"),
    }
}

#[test]
fn good_vxlan_is_accepted_with_its_vni_and_inner_header() {
    let p = encapsulate(&inner_frame(60), 0x123456);
    let UnderlayVerdict::Vxlan(v) = classify(&p) else {
        panic!("not accepted")
    };
    assert_eq!(v.vni, 0x123456);
    assert_eq!(v.peer, PEER);
    assert_eq!(v.inner.src(), VM_A);
    assert_eq!(v.inner.dst(), VM_B);
    assert_eq!(v.inner.header(), inner_header(&p[50..]));
    assert_eq!(v.inner_len, 60);
    assert_eq!(v.trailer, 0);
}

#[test]
fn outer_headers_match_rfc7348_layout() {
    let p = encapsulate(&inner_frame(100), 7);
    assert_eq!(p.len(), 150);
    assert_eq!(&p[12..14], &[0x08, 0x00]);
    assert_eq!(p[14], 0x45);
    assert_eq!(u16::from_be_bytes([p[16], p[17]]), 136);
    assert_eq!(p[23], 17);
    assert_eq!(u16::from_be_bytes([p[36], p[37]]), 4789);
    assert_eq!(u16::from_be_bytes([p[38], p[39]]), 116);
    assert_eq!(&p[42..50], &[0x08, 0, 0, 0, 0, 0, 7, 0]);
    // A correct IPv4 header sums to 0xffff including its checksum.
    let mut sum: u32 = 0;
    for w in p[14..34].chunks(2) {
        sum += u16::from_be_bytes([w[0], w[1]]) as u32;
    }
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    assert_eq!(sum, 0xffff);
}

#[test]
fn non_violin_traffic_passes() {
    // ARP on the underlay.
    let mut arp = inner_frame(60);
    arp[12..14].copy_from_slice(&[0x08, 0x06]);
    assert_eq!(classify(&arp), UnderlayVerdict::Pass);
    // UDP to another port.
    let mut p = encapsulate(&inner_frame(60), 1);
    p[36..38].copy_from_slice(&53u16.to_be_bytes());
    assert_eq!(classify(&p), UnderlayVerdict::Pass);
    // VXLAN addressed to someone else.
    let mut p = encapsulate(&inner_frame(60), 1);
    p[30..34].copy_from_slice(&[10, 0, 0, 9]);
    assert_eq!(classify(&p), UnderlayVerdict::Pass);
    // TCP.
    let mut p = encapsulate(&inner_frame(60), 1);
    p[23] = 6;
    assert_eq!(classify(&p), UnderlayVerdict::Pass);
    // A later fragment.
    let mut p = encapsulate(&inner_frame(60), 1);
    p[20..22].copy_from_slice(&0x0010u16.to_be_bytes());
    assert_eq!(classify(&p), UnderlayVerdict::Pass);
}

#[test]
fn malformed_vxlan_is_dropped_by_reason() {
    let good = encapsulate(&inner_frame(60), 1);
    assert_eq!(dropped(&good[..10]), DropReason::Runt);
    assert_eq!(dropped(&good[..30]), DropReason::TruncatedOuter);
    // Cut inside the VXLAN header: the IP length now claims more than arrived.
    assert_eq!(dropped(&good[..46]), DropReason::TruncatedOuter);
    assert_eq!(dropped(&good[..80]), DropReason::TruncatedOuter);

    let mut p = good.clone();
    p[26..30].copy_from_slice(&[10, 0, 0, 77]);
    assert_eq!(dropped(&p), DropReason::UnknownPeer);

    let mut p = good.clone();
    p[42] = 0;
    assert_eq!(dropped(&p), DropReason::BadVxlanFlags);

    let mut p = good.clone();
    p[20..22].copy_from_slice(&0x2000u16.to_be_bytes());
    assert_eq!(dropped(&p), DropReason::Fragment);

    let mut p = good.clone();
    p[38..40].copy_from_slice(&10u16.to_be_bytes());
    assert_eq!(dropped(&p), DropReason::BadLength);

    let short_inner = encapsulate(&inner_frame(60)[..10], 1);
    assert_eq!(dropped(&short_inner), DropReason::TruncatedInner);
}

/// Asserts how `classify` judges `good`, a whole VXLAN packet, cut at every length: a
/// runt under 14 bytes; truncated while the IP header and its addresses end past the cut
/// (`ip_end`); passed while the UDP header does (`udp_end`), since without it the packet
/// is not known to be VXLAN; truncated beyond, where the IP length claims more than
/// arrived; and accepted whole.
fn assert_judged_by_what_arrived<A: PartialEq + core::fmt::Debug>(
    good: &[u8],
    (ip_end, udp_end): (usize, usize),
    classify: impl Fn(&[u8]) -> UnderlayVerdict<(), A>,
) {
    for len in 0..good.len() {
        let want = if len < ETH_HLEN {
            UnderlayVerdict::Drop(DropReason::Runt)
        } else if (ip_end..udp_end).contains(&len) {
            UnderlayVerdict::Pass
        } else {
            UnderlayVerdict::Drop(DropReason::TruncatedOuter)
        };
        assert_eq!(classify(&good[..len]), want, "cut at {len}");
    }
    assert!(matches!(classify(good), UnderlayVerdict::Vxlan(_)));
}

#[test]
fn a_vxlan_packet_cut_anywhere_is_judged_by_what_arrived() {
    assert_judged_by_what_arrived(&encapsulate(&inner_frame(60), 1), (34, 42), classify);
}

#[test]
fn ip_options_are_dropped() {
    let good = encapsulate(&inner_frame(60), 1);
    let mut p = good[..34].to_vec();
    p[14] = 0x46;
    p.extend_from_slice(&[1, 1, 1, 0]); // NOP NOP NOP EOL
    p.extend_from_slice(&good[34..]);
    let tot = (p.len() - 14) as u16;
    p[16..18].copy_from_slice(&tot.to_be_bytes());
    assert_eq!(dropped(&p), DropReason::IpOptions);
}

#[test]
fn ethernet_padding_is_reported_as_trailer() {
    let mut p = encapsulate(&inner_frame(20), 1);
    p.extend_from_slice(&[0; 6]);
    let UnderlayVerdict::Vxlan(v) = classify(&p) else {
        panic!("not accepted")
    };
    assert_eq!(v.inner_len, 20);
    assert_eq!(v.trailer, 6);
}

#[test]
fn port_frames_need_a_unicast_nonzero_source() {
    let f = inner_frame(60);
    let eth = classify_port(&f[..]).unwrap();
    assert_eq!((eth.src(), eth.dst()), (VM_A, VM_B));
    assert_eq!(eth.header(), inner_header(&f));
    assert_eq!(classify_port(&f[..13]), Err(DropReason::Runt));
    let mut m = f.clone();
    m[6] = 0x01;
    assert_eq!(classify_port(&m[..]), Err(DropReason::BadSrcMac));
    let mut z = f.clone();
    z[6..12].fill(0);
    assert_eq!(classify_port(&z[..]), Err(DropReason::BadSrcMac));
}

#[test]
fn mtu_check_accounts_for_fifty_bytes() {
    assert!(fits_underlay(1514, 1550));
    assert!(!fits_underlay(1515, 1550));
    assert!(fits_underlay(1464, 1500));
    assert!(!fits_underlay(1465, 1500));
    assert_eq!(Family::V4.vm_mtu(1500), 1450);
    assert_eq!(Family::V4.vm_mtu(9000), 8950);
}

#[test]
fn flow_hash_separates_flows_and_is_stable() {
    let mut a = inner_frame(60);
    a[12..14].copy_from_slice(&[0x08, 0x00]);
    a[14] = 0x45;
    a[20..22].copy_from_slice(&[0x40, 0]); // DF, not a fragment
    a[23] = 6;
    a[34..38].copy_from_slice(&[0x10, 0x00, 0x00, 0x50]);
    let mut b = a.clone();
    b[34..38].copy_from_slice(&[0x10, 0x01, 0x00, 0x50]);
    assert_eq!(flow_hash(&a[..], 0), flow_hash(&a[..], 0));
    assert_ne!(flow_hash(&a[..], 0), flow_hash(&b[..], 0));
    let p = source_port(flow_hash(&a[..], 0));
    assert!(p >= 49152);
}

/// An IPv4 UDP frame from `sport` to port 80 of the inner frame's addresses.
fn udp4_frame(sport: u16) -> Vec<u8> {
    let mut a = inner_frame(60);
    a[12..14].copy_from_slice(&[0x08, 0x00]);
    a[14] = 0x45;
    a[20..22].copy_from_slice(&[0x40, 0]); // DF, not a fragment
    a[23] = IPPROTO_UDP;
    a[26..30].copy_from_slice(&[10, 0, 0, 1]);
    a[30..34].copy_from_slice(&[10, 0, 0, 2]);
    a[34..36].copy_from_slice(&sport.to_be_bytes());
    a[36..38].copy_from_slice(&80u16.to_be_bytes());
    a
}

#[test]
fn flow_hash_takes_an_ip_flow_by_its_addresses_protocol_and_ports_alone() {
    let a = udp4_frame(4096);
    let h = flow_hash(&a[..], 0);
    // The MACs, the TTL, the length and the checksum are not the flow's.
    let mut same = a.clone();
    same[0..12].copy_from_slice(&[2, 9, 9, 9, 9, 9, 2, 8, 8, 8, 8, 8]);
    same[22] = 7;
    same[16..18].copy_from_slice(&[0, 46]);
    same[24..26].copy_from_slice(&[0x12, 0x34]);
    assert_eq!(flow_hash(&same[..], 0), h);
    for (what, at, byte) in [
        ("source", 29, 9),
        ("destination", 33, 9),
        ("protocol", 23, 6),
        ("source port", 35, 1),
        ("destination port", 37, 81),
    ] {
        let mut other = a.clone();
        other[at] = byte;
        assert_ne!(flow_hash(&other[..], 0), h, "{what}");
    }
    // The ports are left out of a fragment's hash, first (MF set) or later (a non-zero
    // offset; it carries none), so that all of a packet's fragments go alike; and out of
    // a header with options, where they are elsewhere.
    for (what, at, bytes) in [
        ("first fragment", 20, [0x20, 0]),
        ("later fragment", 20, [0, 0x10]),
        ("options", 14, [0x46, 0]),
    ] {
        let mut p = a.clone();
        p[at..at + 2].copy_from_slice(&bytes);
        let mut other_ports = p.clone();
        other_ports[34..36].copy_from_slice(&5000u16.to_be_bytes());
        assert_eq!(
            flow_hash(&p[..], 0),
            flow_hash(&other_ports[..], 0),
            "{what}"
        );
    }
    // Found at an offset as at the start (behind outer headers).
    let mut behind = Vec::from([0u8; 50]);
    behind.extend_from_slice(&a);
    assert_eq!(flow_hash(&behind[..], 50), h);
    // A header cut before its destination address is not hashed in part: two such frames
    // whose source addresses differ hash alike.
    let mut other_src = a.clone();
    other_src[29] = 9;
    assert_eq!(flow_hash(&a[..32], 0), flow_hash(&other_src[..32], 0));
}

#[test]
fn flow_hash_takes_other_frames_by_their_macs() {
    let arp = inner_frame(60);
    let mut other = arp.clone();
    other[5] ^= 1;
    assert_ne!(flow_hash(&arp[..], 0), flow_hash(&other[..], 0));
    // Their payload is not: an ARP request and its retry for another address alike.
    let mut other_payload = arp.clone();
    other_payload[41] ^= 1;
    assert_eq!(flow_hash(&arp[..], 0), flow_hash(&other_payload[..], 0));
}

#[test]
fn a_word_of_a_frame_is_its_bytes_in_memory_order() {
    let f = [1u8, 2, 3, 4, 5];
    assert_eq!(f[..].load_word(1), Some(u32::from_ne_bytes([2, 3, 4, 5])));
    assert_eq!(f[..].load_word(2), None);
}

#[test]
fn gso_segments_are_measured_from_their_headers() {
    let mut f = inner_frame(200);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[14] = 0x45;
    f[23] = 6;
    f[34 + 12] = 8 << 4; // TCP data offset: 32 bytes (timestamps)
    assert_eq!(gso_segment_len(&f[..], 1398), 14 + 20 + 32 + 1398);
    // Unknown L3: the worst case.
    let g = inner_frame(60);
    assert_eq!(gso_segment_len(&g[..], 1000), 14 + 60 + 60 + 1000);
}

#[test]
fn ports_only_send_with_their_assigned_addresses() {
    use crate::maps::{PORT_CHECK_IP, PORT_CHECK_MAC};
    let ip = [10, 200, 1, 1];
    let mut f = inner_frame(60);
    f[12..14].copy_from_slice(&[0x08, 0x00]);
    f[26..30].copy_from_slice(&ip);
    let eth = classify_port(&f[..]).unwrap();
    let both = PORT_CHECK_MAC | PORT_CHECK_IP;
    assert_eq!(check_source(&f[..], &eth, both, &VM_A, &ip), Ok(()));
    assert_eq!(
        check_source(&f[..], &eth, both, &VM_B, &ip),
        Err(DropReason::SpoofedMac)
    );
    assert_eq!(
        check_source(&f[..], &eth, both, &VM_A, &[10, 200, 1, 2]),
        Err(DropReason::SpoofedIp)
    );
    // Without the flags nothing is checked.
    assert_eq!(check_source(&f[..], &eth, 0, &VM_B, &[9, 9, 9, 9]), Ok(()));
    // ARP: the sender protocol address counts; a probe (0.0.0.0) passes.
    let mut arp = inner_frame(60);
    arp[28..32].copy_from_slice(&ip);
    let eth = classify_port(&arp[..]).unwrap();
    assert_eq!(
        check_source(&arp[..], &eth, PORT_CHECK_IP, &VM_A, &ip),
        Ok(())
    );
    arp[28..32].copy_from_slice(&[10, 200, 1, 9]);
    assert_eq!(
        check_source(&arp[..], &eth, PORT_CHECK_IP, &VM_A, &ip),
        Err(DropReason::SpoofedIp)
    );
    arp[28..32].copy_from_slice(&[0, 0, 0, 0]);
    assert_eq!(
        check_source(&arp[..], &eth, PORT_CHECK_IP, &VM_A, &ip),
        Ok(())
    );
}

#[test]
fn macs_parse_strictly() {
    assert_eq!(parse_mac("02:00:ab:00:00:01"), Some([2, 0, 0xab, 0, 0, 1]));
    for bad in [
        "02:00:00:00:01",
        "02:00:00:00:00:01:02",
        "2:00:00:00:00:01",
        "zz:00:00:00:00:01",
        "",
    ] {
        assert_eq!(parse_mac(bad), None, "{bad}");
    }
}

#[test]
fn macs_print_as_they_parse() {
    let m = [0x02, 0, 0xab, 0, 0x01, 0xff];
    let text = std::format!("{}", Mac(m));
    assert_eq!(text, "02:00:ab:00:01:ff");
    assert_eq!(parse_mac(&text), Some(m));
}

#[test]
fn ipv6_flows_hash_apart() {
    let mut a = inner_frame(80);
    a[12..14].copy_from_slice(&[0x86, 0xdd]);
    a[14] = 0x60;
    a[14 + 6] = IPPROTO_TCP;
    a[22..38].copy_from_slice(&[0xfd, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1]);
    a[38..54].copy_from_slice(&[0xfd, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 1]);
    a[54..58].copy_from_slice(&[0xc0, 0x00, 0x00, 0x50]);
    let mut b = a.clone();
    b[54..58].copy_from_slice(&[0xc0, 0x01, 0x00, 0x50]);
    let mut c = a.clone();
    c[38 + 15] = 2;
    assert_eq!(flow_hash(&a[..], 0), flow_hash(&a[..], 0));
    assert_ne!(flow_hash(&a[..], 0), flow_hash(&b[..], 0), "ports");
    assert_ne!(flow_hash(&a[..], 0), flow_hash(&c[..], 0), "addresses");
}

#[test]
fn transport_protocol_is_read_behind_the_tunnel() {
    let mut v4 = inner_frame(60);
    v4[12..14].copy_from_slice(&[0x08, 0x00]);
    v4[14] = 0x45;
    v4[23] = IPPROTO_TCP;
    let outer = encapsulate(&v4, 7);
    assert_eq!(ip_protocol(&outer[..], INNER_OFFSET), Some(IPPROTO_TCP));
    let mut v6 = inner_frame(60);
    v6[12..14].copy_from_slice(&[0x86, 0xdd]);
    v6[14 + 6] = IPPROTO_UDP;
    assert_eq!(ip_protocol(&v6[..], 0), Some(IPPROTO_UDP));
    // ARP has none; a frame cut inside the IP header has none either.
    assert_eq!(ip_protocol(&inner_frame(60)[..], 0), None);
    assert_eq!(ip_protocol(&v4[..20], 0), None);
    assert_eq!(ip_protocol(&v6[..20], 0), None);
}

const LOCAL6: [u8; 16] = [0xfd, 0, 0, 0x50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
const PEER6: [u8; 16] = [0xfd, 0, 0, 0x50, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];

fn encapsulate6(inner: &[u8], vni: u32) -> Vec<u8> {
    let t = Tunnel6 {
        src_mac: [2, 1, 1, 1, 1, 2],
        dst_mac: [2, 1, 1, 1, 1, 1],
        src_ip: PEER6,
        dst_ip: LOCAL6,
    };
    let mut p = OuterHeaders6::new(&t, vni, 50000, inner.len())
        .as_bytes()
        .to_vec();
    p.extend_from_slice(inner);
    p
}

fn classify6(p: &[u8]) -> UnderlayVerdict<(), [u8; 16]> {
    classify_underlay6(p, addr_words(LOCAL6), |a| (*a == PEER6).then_some(()))
}

fn dropped6(p: &[u8]) -> DropReason {
    match classify6(p) {
        UnderlayVerdict::Drop(r) => r,
        v => panic!("expected a drop, got {v:?}"),
    }
}

#[test]
fn outer_ipv6_headers_match_rfc7348_layout() {
    let p = encapsulate6(&inner_frame(100), 7);
    assert_eq!(p.len(), 170);
    assert_eq!(&p[12..14], &[0x86, 0xdd]);
    assert_eq!(p[14] >> 4, 6);
    let label = u32::from_be_bytes([p[14], p[15], p[16], p[17]]) & 0xfffff;
    assert_ne!(label, 0, "a flow label");
    assert_eq!(label, flow_label(50000));
    // Payload length: UDP + VXLAN + inner.
    assert_eq!(u16::from_be_bytes([p[18], p[19]]), 116);
    assert_eq!((p[20], p[21]), (17, 64));
    assert_eq!(&p[22..38], &PEER6);
    assert_eq!(&p[38..54], &LOCAL6);
    assert_eq!(u16::from_be_bytes([p[56], p[57]]), 4789);
    assert_eq!(u16::from_be_bytes([p[58], p[59]]), 116);
    assert_eq!(&p[60..62], &[0, 0], "zero UDP checksum");
    assert_eq!(&p[62..70], &[0x08, 0, 0, 0, 0, 0, 7, 0]);
    assert_eq!(&p[70..], &inner_frame(100)[..]);
}

#[test]
fn good_vxlan_over_ipv6_is_accepted() {
    let mut p = encapsulate6(&inner_frame(60), 0xabcdef);
    p.extend_from_slice(&[0; 4]);
    let UnderlayVerdict::Vxlan(v) = classify6(&p) else {
        panic!("not accepted")
    };
    assert_eq!(
        (v.vni, v.peer, v.inner_len, v.trailer),
        (0xabcdef, PEER6, 60, 4)
    );
    assert_eq!((v.inner.src(), v.inner.dst()), (VM_A, VM_B));
}

#[test]
fn ipv6_underlay_passes_what_is_not_violins() {
    // IPv4 VXLAN, and an IPv6 packet to someone else, to another port, with an
    // extension header, or not UDP.
    assert_eq!(
        classify6(&encapsulate(&inner_frame(60), 1)),
        UnderlayVerdict::Pass
    );
    let good = encapsulate6(&inner_frame(60), 1);
    let mut p = good.clone();
    p[53] = 9;
    assert_eq!(classify6(&p), UnderlayVerdict::Pass);
    let mut p = good.clone();
    p[56..58].copy_from_slice(&53u16.to_be_bytes());
    assert_eq!(classify6(&p), UnderlayVerdict::Pass);
    let mut p = good.clone();
    p[20] = 0; // hop-by-hop options
    assert_eq!(classify6(&p), UnderlayVerdict::Pass);
    let mut p = good.clone();
    p[20] = 6;
    assert_eq!(classify6(&p), UnderlayVerdict::Pass);
    let mut p = good.clone();
    p[14] = 0x45;
    assert_eq!(classify6(&p), UnderlayVerdict::Pass);
}

#[test]
fn malformed_vxlan_over_ipv6_is_dropped_by_reason() {
    let good = encapsulate6(&inner_frame(60), 1);
    assert_eq!(dropped6(&good[..10]), DropReason::Runt);
    assert_eq!(dropped6(&good[..40]), DropReason::TruncatedOuter);
    assert_eq!(dropped6(&good[..66]), DropReason::TruncatedOuter);
    assert_eq!(dropped6(&good[..100]), DropReason::TruncatedOuter);
    let mut p = good.clone();
    p[37] = 77;
    assert_eq!(dropped6(&p), DropReason::UnknownPeer);
    let mut p = good.clone();
    p[62] = 0;
    assert_eq!(dropped6(&p), DropReason::BadVxlanFlags);
    let mut p = good.clone();
    p[58..60].copy_from_slice(&10u16.to_be_bytes());
    assert_eq!(dropped6(&p), DropReason::BadLength);
    let mut p = good.clone();
    p[18..20].copy_from_slice(&0u16.to_be_bytes());
    assert_eq!(dropped6(&p), DropReason::TruncatedOuter, "a jumbogram");
    let short_inner = encapsulate6(&inner_frame(60)[..10], 1);
    assert_eq!(dropped6(&short_inner), DropReason::TruncatedInner);
}

#[test]
fn a_vxlan_packet_over_ipv6_cut_anywhere_is_judged_by_what_arrived() {
    assert_judged_by_what_arrived(&encapsulate6(&inner_frame(60), 6), (54, 62), classify6);
}

#[test]
fn ipv6_underlay_costs_seventy_bytes() {
    // A VM frame of its MTU plus its Ethernet header fits; one byte more does not.
    assert!(fits_underlay6(1430 + 14, 1500));
    assert!(!fits_underlay6(1431 + 14, 1500));
    assert_eq!(Family::V6.vm_mtu(1500), 1430);
    assert_eq!(Family::V6.vm_mtu(60), 0);
}

#[test]
fn ipv4_addresses_map_into_sixteen_bytes_and_back() {
    let m = v4_mapped(LOCAL);
    assert_eq!(mapped_v4(addr_words(m)), Some(LOCAL));
    assert_eq!(mapped_v4(addr_words(LOCAL6)), None);
    // ::1 and :: are IPv6, not mapped IPv4.
    let mut lo = [0u8; 16];
    assert_eq!(mapped_v4(addr_words(lo)), None);
    lo[15] = 1;
    assert_eq!(mapped_v4(addr_words(lo)), None);
    // Any byte of the prefix other than the mapping's makes it IPv6.
    for i in 0..12 {
        let mut a = m;
        a[i] ^= 0x10;
        assert_eq!(mapped_v4(addr_words(a)), None, "byte {i} changed");
    }
    assert_eq!(
        std::net::Ipv6Addr::from(m),
        std::net::Ipv4Addr::from(LOCAL).to_ipv6_mapped()
    );
}

#[test]
fn the_local_address_picks_the_family() {
    let (local4, local6) = (addr_words(v4_mapped(LOCAL)), addr_words(LOCAL6));
    let known = |a: &[u8; 16]| (*a == v4_mapped(PEER) || *a == PEER6).then_some(());
    let UnderlayVerdict::Vxlan(v) =
        classify_tunnel(&encapsulate(&inner_frame(60), 5)[..], local4, known)
    else {
        panic!("IPv4 not accepted")
    };
    assert_eq!((v.peer, v.outer_len, v.vni), (v4_mapped(PEER), 50, 5));
    let UnderlayVerdict::Vxlan(v) =
        classify_tunnel(&encapsulate6(&inner_frame(60), 6)[..], local6, known)
    else {
        panic!("IPv6 not accepted")
    };
    assert_eq!((v.peer, v.outer_len, v.vni), (PEER6, 70, 6));
    // Each family's host leaves the other's tunnels to its stack.
    let p = encapsulate6(&inner_frame(60), 6);
    assert_eq!(
        classify_tunnel(&p[..], local4, known),
        UnderlayVerdict::Pass
    );
    let p = encapsulate(&inner_frame(60), 5);
    assert_eq!(
        classify_tunnel(&p[..], local6, known),
        UnderlayVerdict::Pass
    );
}

/// (VNI, outer source port, inner length) for the outer headers' tests: the smallest and
/// the largest values each field takes.
const HEADER_CASES: [(u32, u16, usize); 3] = [
    (0x00ab_cdef, 49153, 60),
    (1, 65535, 1500),
    (0xffffff, 49152, 65000),
];

/// The bytes a words function (`outer_words`, `outer_words6`) stores: each word where the
/// one before ended, then the tail.
fn stored(words: impl FnOnce(&mut dyn FnMut(usize, u32)) -> u16) -> Vec<u8> {
    let mut bytes = Vec::new();
    let tail = words(&mut |off, w| {
        assert_eq!(off, bytes.len());
        bytes.extend_from_slice(&w.to_ne_bytes());
    });
    bytes.extend_from_slice(&tail.to_ne_bytes());
    bytes
}

#[test]
fn outer_headers_in_words_are_their_bytes() {
    let tunnels = [
        Tunnel {
            src_mac: [0x02, 0x11, 0x22, 0x33, 0x44, 0x55],
            dst_mac: [0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54],
            src_ip: [10, 250, 0, 1],
            dst_ip: [192, 168, 255, 254],
        },
        Tunnel {
            src_mac: [0xff; 6],
            dst_mac: [0x01; 6],
            src_ip: [255, 255, 255, 255],
            dst_ip: [0, 0, 0, 1],
        },
    ];
    for t in &tunnels {
        for (vni, sport, inner_len) in HEADER_CASES {
            let bytes = stored(|put| outer_words(t, vni, sport, inner_len, put));
            let want = OuterHeaders::new(t, vni, sport, inner_len);
            assert_eq!(
                &bytes[..],
                &want.as_bytes()[..],
                "{t:?} {vni:#x} {sport} {inner_len}"
            );
        }
    }
}

#[test]
fn ipv6_outer_headers_in_words_are_their_bytes() {
    // Every byte of each address different, so that a half word taken from the wrong
    // place shows.
    let ip = |first: u8| core::array::from_fn::<u8, 16, _>(|i| first.wrapping_add(i as u8));
    let tunnels = [
        Tunnel6 {
            src_mac: [0x02, 0x11, 0x22, 0x33, 0x44, 0x55],
            dst_mac: [0xfe, 0xdc, 0xba, 0x98, 0x76, 0x54],
            src_ip: ip(0x10),
            dst_ip: ip(0xa0),
        },
        Tunnel6 {
            src_mac: [0xff; 6],
            dst_mac: [0x01; 6],
            src_ip: PEER6,
            dst_ip: LOCAL6,
        },
    ];
    for t in &tunnels {
        let ends = Ends {
            src_mac: &t.src_mac,
            dst_mac: &t.dst_mac,
            src_ip: addr_words(t.src_ip),
            dst_ip: addr_words(t.dst_ip),
        };
        for (vni, sport, inner_len) in HEADER_CASES {
            let bytes = stored(|put| outer_words6(&ends, vni, sport, inner_len, put));
            let want = OuterHeaders6::new(t, vni, sport, inner_len);
            assert_eq!(
                &bytes[..],
                &want.as_bytes()[..],
                "{t:?} {vni:#x} {sport} {inner_len}"
            );
        }
    }
}
