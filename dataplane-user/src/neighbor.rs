//! Finding the underlay next-hop MAC of each peer from the kernel's routing and neighbour
//! tables, so the datapath writes outer headers without a FIB lookup per packet.
use std::{fs, net::Ipv4Addr, net::UdpSocket};

/// One IPv4 route from /proc/net/route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Route {
    pub dest: Ipv4Addr,
    pub mask: Ipv4Addr,
    pub gateway: Ipv4Addr,
}

/// /proc/net/route prints addresses as host-order hex of the network-order value.
fn proc_addr(hex: &str) -> Option<Ipv4Addr> {
    let v = u32::from_str_radix(hex, 16).ok()?;
    Some(Ipv4Addr::from(v.to_le_bytes()))
}

pub fn parse_routes(text: &str) -> Vec<Route> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 8 {
                return None;
            }
            Some(Route {
                dest: proc_addr(f[1])?,
                gateway: proc_addr(f[2])?,
                mask: proc_addr(f[7])?,
            })
        })
        .collect()
}

/// The address whose MAC the outer header needs: the peer on-link, else its gateway.
pub fn next_hop(routes: &[Route], peer: Ipv4Addr) -> Option<Ipv4Addr> {
    let p = u32::from(peer);
    routes
        .iter()
        .filter(|r| p & u32::from(r.mask) == u32::from(r.dest))
        .max_by_key(|r| u32::from(r.mask).count_ones())
        .map(|r| {
            if r.gateway.is_unspecified() {
                peer
            } else {
                r.gateway
            }
        })
}

/// Complete entries of /proc/net/arp.
pub fn parse_arp(text: &str) -> Vec<(Ipv4Addr, [u8; 6])> {
    text.lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.len() < 4 {
                return None;
            }
            let flags = u32::from_str_radix(f[2].trim_start_matches("0x"), 16).ok()?;
            if flags & 0x2 == 0 {
                return None;
            }
            let mut mac = [0u8; 6];
            let mut parts = f[3].split(':');
            for b in mac.iter_mut() {
                *b = u8::from_str_radix(parts.next()?, 16).ok()?;
            }
            Some((f[0].parse().ok()?, mac))
        })
        .collect()
}

/// MAC of the next hop towards `peer`, if the kernel knows it.
pub fn lookup(peer: Ipv4Addr) -> Option<[u8; 6]> {
    // thread-self: the namespace this thread entered, whatever the process started in.
    let routes = parse_routes(&fs::read_to_string("/proc/thread-self/net/route").ok()?);
    let hop = next_hop(&routes, peer)?;
    let arp = parse_arp(&fs::read_to_string("/proc/thread-self/net/arp").ok()?);
    arp.into_iter().find(|(a, _)| *a == hop).map(|(_, m)| m)
}

/// Makes the kernel resolve the next hop towards `peer` by sending it one datagram to the
/// discard port (the peer's datapath passes it to its stack, which ignores it).
pub fn probe(peer: Ipv4Addr) {
    if let Ok(s) = UdpSocket::bind("0.0.0.0:0") {
        let _ = s.send_to(b"violin-neighbour-probe", (peer, 9));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROUTE: &str =
        "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT
ul0\t00000000\t0100000A\t0003\t0\t0\t0\t00000000\t0\t0\t0
ul0\t0000000A\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0
";
    const ARP: &str =
        "IP address       HW type     Flags       HW address            Mask     Device
10.0.0.2         0x1         0x2         02:aa:bb:cc:dd:02     *        ul0
10.0.0.3         0x1         0x0         00:00:00:00:00:00     *        ul0
";

    #[test]
    fn on_link_peer_is_its_own_next_hop() {
        let r = parse_routes(ROUTE);
        assert_eq!(r.len(), 2);
        assert_eq!(
            next_hop(&r, Ipv4Addr::new(10, 0, 0, 2)),
            Some(Ipv4Addr::new(10, 0, 0, 2))
        );
    }

    #[test]
    fn remote_peer_goes_through_the_gateway() {
        let r = parse_routes(ROUTE);
        assert_eq!(
            next_hop(&r, Ipv4Addr::new(192, 0, 2, 7)),
            Some(Ipv4Addr::new(10, 0, 0, 1))
        );
    }

    #[test]
    fn only_complete_arp_entries_count() {
        let a = parse_arp(ARP);
        assert_eq!(
            a,
            vec![(Ipv4Addr::new(10, 0, 0, 2), [2, 0xaa, 0xbb, 0xcc, 0xdd, 2])]
        );
    }
}
