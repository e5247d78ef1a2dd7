//! Frames the benchmark and the tests craft: what a VM sends (IPv4/UDP, any size), and
//! the same frame as the underlay carries it (VXLAN).
use std::net::IpAddr;

use dataplane_common::packet::{OuterHeaders, OuterHeaders6, Tunnel, Tunnel6};

/// A frame's sender or receiver: MAC and IPv4 address.
pub type Station = ([u8; 6], [u8; 4]);

/// The smallest Ethernet frame without its 4-byte FCS: "64 bytes" on the wire.
pub const MIN_FRAME: usize = 60;

/// The largest frame BPF_PROG_RUN builds in one page (an skb's test run, and the
/// live-frames mode): "MTU-size" frames of the jumbo lab are cut to it.
pub const MAX_TEST_FRAME: usize = 3_000;

/// An IPv4/UDP frame of `len` bytes (at least [`MIN_FRAME`]) from `src` to `dst`, with
/// its IP header checksummed (UDP checksum 0, which IPv4 allows).
pub fn udp_frame(src: Station, dst: Station, len: usize) -> Vec<u8> {
    let len = len.max(MIN_FRAME);
    let ip_len = (len - 14) as u16;
    let udp_len = ip_len - 20;
    let mut f = dst.0.to_vec();
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x08, 0x00, 0x45, 0]);
    f.extend_from_slice(&ip_len.to_be_bytes());
    f.extend_from_slice(&[0, 0, 0x40, 0, 64, 17, 0, 0]);
    f.extend_from_slice(&src.1);
    f.extend_from_slice(&dst.1);
    let sum = f[14..34]
        .chunks(2)
        .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
        .sum::<u32>();
    let folded = (sum & 0xffff) + (sum >> 16);
    let check = !((folded & 0xffff) + (folded >> 16)) as u16;
    f[24..26].copy_from_slice(&check.to_be_bytes());
    f.extend_from_slice(&[0x30, 0x39, 0x30, 0x3a]);
    f.extend_from_slice(&udp_len.to_be_bytes());
    f.extend_from_slice(&[0, 0]);
    f.resize(len, 0x5a);
    f
}

/// `inner` as a VXLAN packet of environment `vni` through `tunnel`.
pub fn vxlan(tunnel: &Tunnel, vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut p = OuterHeaders::new(tunnel, vni, 50000, inner.len())
        .as_bytes()
        .to_vec();
    p.extend_from_slice(inner);
    p
}

/// `inner` as a VXLAN packet of environment `vni` through `tunnel`, over IPv6.
pub fn vxlan6(tunnel: &Tunnel6, vni: u32, inner: &[u8]) -> Vec<u8> {
    let mut p = OuterHeaders6::new(tunnel, vni, 50000, inner.len())
        .as_bytes()
        .to_vec();
    p.extend_from_slice(inner);
    p
}

/// A tunnel between two hosts over either underlay family.
#[derive(Clone, Copy, Debug)]
pub enum Outer {
    V4(Tunnel),
    V6(Tunnel6),
}

impl Outer {
    /// The tunnel from the host at `src` (its underlay MAC and address) to the one at
    /// `dst`; `None` for addresses of two families.
    pub fn between(
        (src_mac, src): ([u8; 6], IpAddr),
        (dst_mac, dst): ([u8; 6], IpAddr),
    ) -> Option<Outer> {
        match (src, dst) {
            (IpAddr::V4(s), IpAddr::V4(d)) => Some(Outer::V4(Tunnel {
                src_mac,
                dst_mac,
                src_ip: s.octets(),
                dst_ip: d.octets(),
            })),
            (IpAddr::V6(s), IpAddr::V6(d)) => Some(Outer::V6(Tunnel6 {
                src_mac,
                dst_mac,
                src_ip: s.octets(),
                dst_ip: d.octets(),
            })),
            _ => None,
        }
    }

    /// `inner` as a VXLAN packet of environment `vni` through this tunnel.
    pub fn wrap(&self, vni: u32, inner: &[u8]) -> Vec<u8> {
        match self {
            Outer::V4(t) => vxlan(t, vni, inner),
            Outer::V6(t) => vxlan6(t, vni, inner),
        }
    }
}

/// xdp_md for BPF_PROG_TEST_RUN: a `len`-byte frame, all of it in the linear buffer
/// (data_end; a smaller one would put the rest in fragments, or be refused), "arrived" on
/// `ifindex`, queue 0.
pub fn xdp_md(ifindex: u32, len: usize) -> Vec<u8> {
    let mut ctx = vec![0u8; 24];
    ctx[4..8].copy_from_slice(&(len as u32).to_ne_bytes());
    ctx[12..16].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}

/// __sk_buff for BPF_PROG_TEST_RUN: the skb's device is `ifindex` (the field at byte
/// 40; the kernel refuses the fields it does not take, which are left zero).
pub fn sk_buff(ifindex: u32) -> Vec<u8> {
    let mut ctx = vec![0u8; 192];
    ctx[40..44].copy_from_slice(&ifindex.to_ne_bytes());
    ctx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_have_the_asked_length_and_a_valid_ip_checksum() {
        let a = ([2, 0, 0, 0, 1, 1], [10, 200, 1, 1]);
        let b = ([2, 0, 0, 0, 2, 1], [10, 200, 2, 1]);
        for len in [10, 60, 1464] {
            let f = udp_frame(a, b, len);
            assert_eq!(f.len(), len.max(MIN_FRAME));
            assert_eq!(u16::from_be_bytes([f[16], f[17]]) as usize, f.len() - 14);
            assert_eq!(u16::from_be_bytes([f[38], f[39]]) as usize, f.len() - 34);
            // A header with its checksum sums to 0xffff.
            let sum: u32 = f[14..34]
                .chunks(2)
                .map(|w| u32::from(u16::from_be_bytes([w[0], w[1]])))
                .sum();
            let folded = (sum & 0xffff) + (sum >> 16);
            assert_eq!((folded & 0xffff) + (folded >> 16), 0xffff);
        }
    }
}
