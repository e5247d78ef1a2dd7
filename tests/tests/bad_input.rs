//! Crafted underlay packets are dropped or passed as specified and counted by reason,
//! while good traffic keeps flowing with no loss.
use std::{net::Ipv4Addr, thread, time::Duration};

use violin_testbed::{
    e2e::{counter, lab},
    frames::Outer,
    sys::{mac_of, ns_run},
    traffic::{ping, send_raw, wait_ping},
};

const N: usize = 25;
const VNI: u32 = 1000;

/// Makes VXLAN packets from h2 to h1 over the lab's underlay family.
struct Crafter(Outer);

impl Crafter {
    /// A well-formed VXLAN packet carrying a 60-byte inner frame.
    fn good(&self, vni: u32) -> Vec<u8> {
        let mut inner = vec![2, 0, 0, 0, 1, 1, 2, 0, 0, 0, 2, 1, 0x88, 0xb5];
        inner.resize(60, 0x5a);
        self.wrap(vni, &inner)
    }

    fn wrap(&self, vni: u32, inner: &[u8]) -> Vec<u8> {
        self.0.wrap(vni, inner)
    }

    fn edit(&self, f: &dyn Fn(&mut Vec<u8>)) -> Vec<u8> {
        let mut p = self.good(VNI);
        f(&mut p);
        p
    }
}

/// Recomputes the IPv4 header checksum after an edit (header at offset 14, `ihl` bytes).
fn fix_ip_checksum(p: &mut [u8], ihl: usize) {
    p[24] = 0;
    p[25] = 0;
    let mut sum: u32 = p[14..14 + ihl]
        .chunks(2)
        .map(|w| u16::from_be_bytes([w[0], w[1]]) as u32)
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    p[24..26].copy_from_slice(&(!(sum as u16)).to_be_bytes());
}

#[test]
fn crafted_underlay_packets_are_dropped_or_passed_by_reason() {
    crafted_underlay_packets("bi", false, false);
}

/// The same checks in XDP port mode, whose underlay program is XDP.
#[test]
fn crafted_underlay_packets_are_dropped_or_passed_by_reason_in_xdp_mode() {
    crafted_underlay_packets("bx", true, false);
}

/// The same checks over an IPv6 underlay, in both port modes.
#[test]
fn crafted_ipv6_underlay_packets_are_dropped_or_passed_by_reason() {
    crafted_underlay_packets("b6", false, true);
}

#[test]
fn crafted_ipv6_underlay_packets_are_dropped_or_passed_by_reason_in_xdp_mode() {
    crafted_underlay_packets("bw", true, true);
}

fn crafted_underlay_packets(tag: &str, xdp: bool, ipv6: bool) {
    let lab = lab(tag, |s| {
        s.vms_per_host = 1;
        s.ipv6 = ipv6;
        if xdp {
            s.violin_xdp_hosts = s.hosts;
            s.hosts = 0;
        }
    });
    // Where a frame that is not Violin's is counted as passed to the host stack.
    let pass = if xdp {
        "/actions/underlay~1pass"
    } else {
        "/actions/underlay_tc~1pass"
    };
    let a = lab.vm(0, 0, 0).clone();
    let b = lab.vm(1, 0, 0).clone();
    wait_ping(&a.ns, &b.ip.to_string(), Duration::from_secs(10)).unwrap();

    let h1 = lab.hosts[0].clone();
    let h2 = lab.hosts[1].clone();
    let outer = Outer::between(
        (mac_of(&h2.ns, "ul0").unwrap(), h2.underlay_ip),
        (mac_of(&h1.ns, "ul0").unwrap(), h1.underlay_ip),
    )
    .expect("hosts of two underlay families");
    let cases = match outer {
        Outer::V4(_) => cases4(&Crafter(outer), pass),
        Outer::V6(_) => cases6(&Crafter(outer), pass),
    };

    // Good traffic runs throughout.
    let pinger = {
        let (ns, ip) = (a.ns.clone(), b.ip.to_string());
        thread::spawn(move || ping(&ns, &ip, 150, &["-i", "0.02"]))
    };
    thread::sleep(Duration::from_millis(300));
    for (pointer, frame) in &cases {
        let before = lab.stats(0).unwrap();
        let sent = send_raw(&h2.ns, "ul0", vec![frame.clone(); N]).unwrap();
        assert_eq!(sent, N, "{pointer}: the kernel refused some frames");
        thread::sleep(Duration::from_millis(100));
        let after = lab.stats(0).unwrap();
        let delta = counter(&after, pointer) - counter(&before, pointer);
        if pointer.starts_with("/drops") {
            assert_eq!(
                delta,
                N as u64,
                "{pointer} for a {}-byte frame",
                frame.len()
            );
        } else {
            assert!(delta >= N as u64, "{pointer}: {delta} < {N}");
        }
    }
    let r = pinger.join().unwrap().unwrap();
    assert_eq!(
        r.lost(),
        0,
        "good traffic lost packets during the bad input: {r:?}"
    );

    // A VM frame that would not fit the underlay after 50 (70) bytes of encapsulation is
    // dropped and counted, never fragmented. Raise the VM's MTU past what the lab allows.
    ns_run(&a.ns, "ip", &["link", "set", "eth0", "mtu", "1500"]).unwrap();
    ns_run(&h1.ns, "ip", &["link", "set", &a.port, "mtu", "1500"]).unwrap();
    let before = lab.stats(0).unwrap();
    let r = ping(
        &a.ns,
        &b.ip.to_string(),
        5,
        &["-s", "1472", "-M", "do", "-i", "0.1"],
    )
    .unwrap();
    assert_eq!(r.received, 0);
    let after = lab.stats(0).unwrap();
    assert_eq!(
        counter(&after, "/drops/too_big") - counter(&before, "/drops/too_big"),
        5
    );
    // Frames that fit still pass.
    let r = ping(
        &a.ns,
        &b.ip.to_string(),
        5,
        &["-s", "1380", "-M", "do", "-i", "0.1"],
    )
    .unwrap();
    assert_eq!(r.lost(), 0);
    lab.down().unwrap();
}

/// Malformed and foreign packets over an IPv4 underlay: (expected counter, frame).
fn cases4<'a>(c: &Crafter, pass: &'a str) -> Vec<(&'a str, Vec<u8>)> {
    // (expected counter, frame)
    vec![
        ("/drops/truncated_outer", c.good(VNI)[..46].to_vec()),
        ("/drops/truncated_outer", c.good(VNI)[..20].to_vec()),
        // Shorter than any Ethernet frame with an IPv4 header: the kernel refuses to send
        // frames under 14 bytes, so 14 is the shortest runt it can put on the wire.
        ("/drops/truncated_outer", c.good(VNI)[..14].to_vec()),
        (
            "/drops/truncated_inner",
            c.wrap(VNI, &[2, 0, 0, 0, 1, 1, 2, 0, 0, 0]),
        ),
        ("/drops/unknown_vni", c.good(4242)),
        ("/drops/bad_vxlan_flags", c.edit(&|p| p[42] = 0)),
        (
            "/drops/bad_length",
            c.edit(&|p| p[38..40].copy_from_slice(&20u16.to_be_bytes())),
        ),
        (
            "/drops/unknown_peer",
            c.edit(&|p| {
                p[26..30].copy_from_slice(&[10, 250, 0, 99]);
                fix_ip_checksum(p, 20);
            }),
        ),
        (
            "/drops/fragment",
            c.edit(&|p| {
                p[20..22].copy_from_slice(&0x2000u16.to_be_bytes());
                fix_ip_checksum(p, 20);
            }),
        ),
        (
            "/drops/ip_options",
            c.edit(&|p| {
                p.splice(34..34, [1u8, 1, 1, 0]);
                p[14] = 0x46;
                let tot = (p.len() - 14) as u16;
                p[16..18].copy_from_slice(&tot.to_be_bytes());
                fix_ip_checksum(p, 24);
            }),
        ),
        // Not Violin's: passed to the host stack untouched.
        (
            pass,
            c.edit(&|p| {
                p[20..22].copy_from_slice(&0x0040u16.to_be_bytes());
                fix_ip_checksum(p, 20);
            }),
        ),
        (
            pass,
            c.edit(&|p| p[36..38].copy_from_slice(&53u16.to_be_bytes())),
        ),
        (
            pass,
            c.edit(&|p| {
                p[30..34].copy_from_slice(&Ipv4Addr::new(10, 250, 0, 77).octets());
                fix_ip_checksum(p, 20);
            }),
        ),
    ]
}

/// The same over an IPv6 underlay (outer IPv6 header at 14, UDP at 54, VXLAN at 62).
fn cases6<'a>(c: &Crafter, pass: &'a str) -> Vec<(&'a str, Vec<u8>)> {
    let other = |last: u8| {
        let mut a: [u8; 16] = "fd00:250::".parse::<std::net::Ipv6Addr>().unwrap().octets();
        a[15] = last;
        a
    };
    vec![
        // Cut inside the IPv6 header, and inside the VXLAN header.
        ("/drops/truncated_outer", c.good(VNI)[..40].to_vec()),
        ("/drops/truncated_outer", c.good(VNI)[..66].to_vec()),
        (
            "/drops/truncated_inner",
            c.wrap(VNI, &[2, 0, 0, 0, 1, 1, 2, 0, 0, 0]),
        ),
        ("/drops/unknown_vni", c.good(4242)),
        ("/drops/bad_vxlan_flags", c.edit(&|p| p[62] = 0)),
        (
            "/drops/bad_length",
            c.edit(&|p| p[58..60].copy_from_slice(&20u16.to_be_bytes())),
        ),
        // A zero payload length is a jumbogram's: no underlay carries one.
        (
            "/drops/truncated_outer",
            c.edit(&|p| p[18..20].copy_from_slice(&0u16.to_be_bytes())),
        ),
        (
            "/drops/unknown_peer",
            c.edit(&|p| p[22..38].copy_from_slice(&other(0x99))),
        ),
        // Not Violin's: passed to the host stack untouched.
        (pass, c.edit(&|p| p[38..54].copy_from_slice(&other(0x77)))),
        (
            pass,
            c.edit(&|p| p[56..58].copy_from_slice(&53u16.to_be_bytes())),
        ),
        // A hop-by-hop options header before UDP: Violin sends none.
        (pass, c.edit(&|p| p[20] = 0)),
    ]
}
