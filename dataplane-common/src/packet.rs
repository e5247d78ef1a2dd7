//! Header layouts, validation of received frames, and VXLAN encapsulation.
//!
//! The XDP programs call these through the [`Frame`] trait, which they implement over the
//! packet buffer with explicit bounds checks; the unit tests implement it over byte slices.

use crate::counters::DropReason;
use crate::maps::same_words;
use crate::{ENCAP_OVERHEAD, ENCAP_OVERHEAD_V6, VXLAN_PORT};

pub const ETH_HLEN: usize = 14;
pub const IPV4_HLEN: usize = 20;
pub const IPV6_HLEN: usize = 40;
pub const UDP_HLEN: usize = 8;
pub const VXLAN_HLEN: usize = 8;
pub const ETH_P_IPV4: u16 = 0x0800;
pub const ETH_P_IPV6: u16 = 0x86dd;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;
/// VXLAN "I" flag: the VNI is valid (RFC 7348 section 5).
pub const VXLAN_FLAG_I: u8 = 0x08;
/// Where the inner frame starts in an encapsulated packet.
pub const INNER_OFFSET: usize = ENCAP_OVERHEAD as usize;
/// Where the inner frame starts in a packet encapsulated over IPv6.
pub const INNER_OFFSET_V6: usize = ENCAP_OVERHEAD_V6 as usize;
/// Hop limit of the outer IPv6 header, and the outer IPv4 header's TTL.
const HOP_LIMIT: u8 = 64;
/// The outer IPv4 header's first byte: version 4, a 20-byte header.
const IPV4_VERSION_IHL: u8 = 0x45;
/// The outer IPv4 header's fragment field: Don't Fragment, since Violin never fragments.
const IPV4_DF: u16 = 0x4000;

/// Types for which every byte pattern is a valid value, so they may be read straight out
/// of packet data.
///
/// # Safety
/// Implement only for types made of integers and byte arrays with no padding and no
/// invariants (no `bool`, `char`, references or enums).
pub unsafe trait Plain: Copy {}

// SAFETY: a byte array has no invalid bit patterns and no padding.
unsafe impl<const N: usize> Plain for [u8; N] {}

/// Read-only view of a received frame.
pub trait Frame {
    /// Length of the whole frame, including multi-buffer fragments.
    fn total_len(&self) -> usize;
    /// Reads a `T` at byte offset `off` of the first buffer, or `None` if it does not fit
    /// there. Headers are always parsed from the first buffer.
    fn load<T: Plain>(&self, off: usize) -> Option<T>;
    /// The 4 bytes at `off` of the first buffer as a word in native byte order, or `None`
    /// if they do not fit there: callers hash the word as it is, or take its bytes out
    /// with `to_ne_bytes`. The programs read it from the linear data with one load;
    /// through [`Frame::load`] the compiler assembles a word of packet data byte by byte,
    /// since packet data has no known alignment.
    fn load_word(&self, off: usize) -> Option<u32> {
        self.load::<[u8; 4]>(off).map(u32::from_ne_bytes)
    }
}

impl Frame for [u8] {
    fn total_len(&self) -> usize {
        self.len()
    }

    fn load<T: Plain>(&self, off: usize) -> Option<T> {
        let end = off.checked_add(core::mem::size_of::<T>())?;
        if end > self.len() {
            return None;
        }
        // SAFETY: off + size_of::<T>() was computed without overflow and checked to be at most
        // self.len(), so the source bytes lie inside this slice, and read_unaligned needs no
        // alignment. `T: Plain` promises that any bytes are a valid T.
        Some(unsafe { core::ptr::read_unaligned(self.as_ptr().add(off) as *const T) })
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EthHdr {
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ethertype: [u8; 2],
}

// SAFETY: repr(C), made only of u8 and u8 arrays (or such headers): no padding, no
// invalid bit patterns.
unsafe impl Plain for EthHdr {}

/// A frame's Ethernet header as the programs hold it ([`load_eth`]): the addresses' twelve
/// bytes as three words in memory order, and the EtherType. An [`EthHdr`] is byte arrays,
/// which the BPF backend stores to the stack a byte at a time; the code that compares or
/// hashes the addresses then reads them back in words, and a load spanning several
/// smaller stores cannot be served from the CPU's store buffer: it waits for them to reach
/// the cache, several times a frame. Words stored are words read. Not the wire's layout
/// (16 bytes with padding): a frame gets [`Eth::header`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Eth {
    addrs: [u32; 3],
    pub ethertype: [u8; 2],
}

impl Eth {
    #[inline(always)]
    pub const fn dst(&self) -> [u8; 6] {
        let (a, b) = (self.addrs[0].to_ne_bytes(), self.addrs[1].to_ne_bytes());
        [a[0], a[1], a[2], a[3], b[0], b[1]]
    }

    #[inline(always)]
    pub const fn src(&self) -> [u8; 6] {
        let (b, c) = (self.addrs[1].to_ne_bytes(), self.addrs[2].to_ne_bytes());
        [b[2], b[3], c[0], c[1], c[2], c[3]]
    }

    /// The header's first twelve bytes (the two MACs) as three words in memory order, and
    /// its last two (the EtherType) as a half word in memory order: what a program that
    /// writes the header stores, one instruction each.
    #[inline(always)]
    pub const fn words(&self) -> ([u32; 3], u16) {
        (self.addrs, u16::from_ne_bytes(self.ethertype))
    }

    /// The header as the wire has it.
    #[inline(always)]
    pub const fn header(&self) -> EthHdr {
        EthHdr {
            dst: self.dst(),
            src: self.src(),
            ethertype: self.ethertype,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ipv4Hdr {
    pub version_ihl: u8,
    pub tos: u8,
    pub tot_len: [u8; 2],
    pub id: [u8; 2],
    pub frag_off: [u8; 2],
    pub ttl: u8,
    pub protocol: u8,
    pub check: [u8; 2],
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

// SAFETY: repr(C), made only of u8 and u8 arrays (or such headers): no padding, no
// invalid bit patterns.
unsafe impl Plain for Ipv4Hdr {}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Ipv6Hdr {
    /// Version (4 bits), traffic class (8) and flow label (20).
    pub vtc_flow: [u8; 4],
    pub payload_len: [u8; 2],
    pub next_header: u8,
    pub hop_limit: u8,
    pub src: [u8; 16],
    pub dst: [u8; 16],
}

// SAFETY: repr(C), made only of u8 and u8 arrays (or such headers): no padding, no
// invalid bit patterns.
unsafe impl Plain for Ipv6Hdr {}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpHdr {
    pub source: [u8; 2],
    pub dest: [u8; 2],
    pub len: [u8; 2],
    pub check: [u8; 2],
}

// SAFETY: repr(C), made only of u8 and u8 arrays (or such headers): no padding, no
// invalid bit patterns.
unsafe impl Plain for UdpHdr {}

#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VxlanHdr {
    pub flags: u8,
    pub reserved1: [u8; 3],
    pub vni: [u8; 3],
    pub reserved2: u8,
}

// SAFETY: repr(C), made only of u8 and u8 arrays (or such headers): no padding, no
// invalid bit patterns.
unsafe impl Plain for VxlanHdr {}

/// Everything Violin puts in front of a VM's frame.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OuterHeaders {
    pub eth: EthHdr,
    pub ip: Ipv4Hdr,
    pub udp: UdpHdr,
    pub vxlan: VxlanHdr,
}

// SAFETY: repr(C), made only of u8 and u8 arrays (or such headers): no padding, no
// invalid bit patterns.
unsafe impl Plain for OuterHeaders {}

const _: () = assert!(core::mem::size_of::<OuterHeaders>() == ENCAP_OVERHEAD as usize);

/// Everything Violin puts in front of a VM's frame over an IPv6 underlay.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OuterHeaders6 {
    pub eth: EthHdr,
    pub ip: Ipv6Hdr,
    pub udp: UdpHdr,
    pub vxlan: VxlanHdr,
}

// SAFETY: repr(C), made only of u8 and u8 arrays (or such headers): no padding, no
// invalid bit patterns.
unsafe impl Plain for OuterHeaders6 {}

const _: () = assert!(core::mem::size_of::<OuterHeaders6>() == ENCAP_OVERHEAD_V6 as usize);

/// The IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, RFC 4291 section 2.5.5.2) of an IPv4
/// address: how an address of either family fits one 16-byte field.
#[inline(always)]
pub const fn v4_mapped(a: [u8; 4]) -> [u8; 16] {
    // Written as two words: as sixteen bytes, the ten leading zeros become a call of a
    // byte-by-byte `memset` in the BPF backend, on every frame the underlay decapsulates.
    let low = u64::from_ne_bytes([0, 0, 0xff, 0xff, a[0], a[1], a[2], a[3]]);
    // SAFETY: both are 16 bytes, any bytes are a valid [u8; 16], and each word lands on
    // the bytes it was made of.
    unsafe { core::mem::transmute::<[u64; 2], [u8; 16]>([0, low]) }
}

/// The last four bytes of a 16-byte address: the IPv4 address of an IPv4-mapped one. For
/// the datapath's IPv4 paths, which run only on a host whose underlay is IPv4.
#[inline(always)]
pub const fn v4_of(a: &[u8; 16]) -> [u8; 4] {
    [a[12], a[13], a[14], a[15]]
}

/// The IPv4 address a 16-byte address maps, or `None` for a real IPv6 address. The
/// address comes as its four words in memory order (`maps::addr_words`): the datapath
/// reads it out of a map value, where the bytes would be sixteen loads.
#[inline(always)]
pub const fn mapped_v4(a: [u32; 4]) -> Option<[u8; 4]> {
    const MAPPED: u32 = u32::from_ne_bytes([0, 0, 0xff, 0xff]);
    if a[0] | a[1] == 0 && a[2] == MAPPED {
        Some(a[3].to_ne_bytes())
    } else {
        None
    }
}

/// Shows a MAC address as "aa:bb:cc:dd:ee:ff", the form [`parse_mac`] reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mac(pub [u8; 6]);

impl core::fmt::Display for Mac {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// Parses a MAC address written "aa:bb:cc:dd:ee:ff" (configuration files, specs).
pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in mac.iter_mut() {
        let p = parts.next()?;
        if p.len() != 2 {
            return None;
        }
        *b = u8::from_str_radix(p, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

#[inline(always)]
pub const fn is_multicast(mac: &[u8; 6]) -> bool {
    mac[0] & 1 != 0
}

#[inline(always)]
pub const fn is_zero(mac: &[u8; 6]) -> bool {
    mac[0] | mac[1] | mac[2] | mac[3] | mac[4] | mac[5] == 0
}

/// A big-endian (network order) u16 from its two bytes.
#[inline(always)]
pub const fn be16(b: [u8; 2]) -> u16 {
    u16::from_be_bytes(b)
}

/// What the underlay program does with a frame from the wire.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnderlayVerdict<P, A = [u8; 4]> {
    /// Not Violin's: hand it to the host stack untouched.
    Pass,
    Drop(DropReason),
    Vxlan(VxlanInfo<P, A>),
}

/// A validated VXLAN packet from a configured peer; `A` is the underlay's address type
/// (`[u8; 4]` over IPv4, `[u8; 16]` over IPv6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VxlanInfo<P, A = [u8; 4]> {
    pub peer: A,
    /// What `lookup_peer` returned for the sender.
    pub peer_info: P,
    pub vni: u32,
    pub inner: Eth,
    /// Inner frame length as the outer headers declare it.
    pub inner_len: usize,
    /// Bytes after the declared end (Ethernet padding); trimmed before delivery.
    pub trailer: usize,
    /// Where the inner frame starts: the outer headers' length (50 over IPv4, 70 over
    /// IPv6).
    pub outer_len: usize,
}

/// Classifies a frame received on the underlay NIC. Only UDP/4789 addressed to
/// `local` is Violin's; `lookup_peer` finds a configured peer by its address.
#[inline(always)]
pub fn classify_underlay<F: Frame + ?Sized, P>(
    f: &F,
    local: [u8; 4],
    lookup_peer: impl Fn([u8; 4]) -> Option<P>,
) -> UnderlayVerdict<P> {
    classify_v4(f, local, lookup_peer, |a| a)
}

/// [`classify_underlay`] naming the sender as `peer_as` makes it: the verdict is built
/// once, in the form the caller keeps (a copy costs stack in the datapath).
#[inline(always)]
fn classify_v4<F: Frame + ?Sized, P, A>(
    f: &F,
    local: [u8; 4],
    lookup_peer: impl Fn([u8; 4]) -> Option<P>,
    peer_as: impl Fn([u8; 4]) -> A,
) -> UnderlayVerdict<P, A> {
    use UnderlayVerdict::{Drop, Pass};
    // Headers are read in the pieces used, as in classify_underlay6.
    let Some(ethertype) = f.load::<[u8; 2]>(ETH_HLEN - 2) else {
        return Drop(DropReason::Runt);
    };
    if be16(ethertype) != ETH_P_IPV4 {
        return Pass;
    }
    // The header in words (`Frame::load_word`), in memory order: version and IHL, TOS,
    // total length; id, fragment offset; TTL, protocol, checksum; then the destination.
    // Too short for them: too short for any IPv4 packet, which the stack would only
    // discard.
    // (One at a time: in the datapath a value read on a path where the other read failed
    // would be an uninitialised register, which the verifier refuses.)
    let Some(w0) = f.load_word(ETH_HLEN) else {
        return Drop(DropReason::TruncatedOuter);
    };
    let Some(w1) = f.load_word(ETH_HLEN + 4) else {
        return Drop(DropReason::TruncatedOuter);
    };
    let Some(w2) = f.load_word(ETH_HLEN + 8) else {
        return Drop(DropReason::TruncatedOuter);
    };
    let Some(dst) = f.load_word(ETH_HLEN + 16) else {
        return Drop(DropReason::TruncatedOuter);
    };
    let (w0, w1) = (w0.to_ne_bytes(), w1.to_ne_bytes());
    let (version_ihl, protocol) = (w0[0], w2.to_ne_bytes()[1]);
    if version_ihl >> 4 != 4 || protocol != IPPROTO_UDP || dst != u32::from_ne_bytes(local) {
        return Pass;
    }
    let ihl = ((version_ihl & 0x0f) as usize) * 4;
    if ihl < IPV4_HLEN {
        return Pass;
    }
    let frag = be16([w1[2], w1[3]]);
    // A later fragment carries no UDP header: it cannot be told apart from the host's own
    // fragmented traffic, so it goes to the stack (whose reassembly will time out for a
    // VXLAN packet whose first fragment was dropped here).
    if frag & 0x1fff != 0 {
        return Pass;
    }
    // The UDP header: the ports, then the length and the checksum.
    let Some(ports) = f.load_word(ETH_HLEN + ihl) else {
        return Pass;
    };
    let Some(udp_len) = f.load_word(ETH_HLEN + ihl + 4) else {
        return Pass;
    };
    let ports = ports.to_ne_bytes();
    if be16([ports[2], ports[3]]) != VXLAN_PORT {
        return Pass;
    }
    let Some(src) = f.load_word(ETH_HLEN + 12).map(u32::to_ne_bytes) else {
        return Pass;
    };
    let Some(peer_info) = lookup_peer(src) else {
        return Drop(DropReason::UnknownPeer);
    };
    if frag & 0x2000 != 0 {
        return Drop(DropReason::Fragment);
    }
    if ihl != IPV4_HLEN {
        return Drop(DropReason::IpOptions);
    }
    let tot_len = be16([w0[2], w0[3]]) as usize;
    if tot_len < IPV4_HLEN + UDP_HLEN + VXLAN_HLEN || ETH_HLEN + tot_len > f.total_len() {
        return Drop(DropReason::TruncatedOuter);
    }
    let udp_len = udp_len.to_ne_bytes();
    if be16([udp_len[0], udp_len[1]]) as usize != tot_len - IPV4_HLEN {
        return Drop(DropReason::BadLength);
    }
    let inner_len = tot_len - IPV4_HLEN - UDP_HLEN - VXLAN_HLEN;
    if inner_len < ETH_HLEN {
        return Drop(DropReason::TruncatedInner);
    }
    // The VXLAN header: the flags and reserved bytes, then the VNI and a reserved byte.
    let Some(flags) = f.load_word(ETH_HLEN + IPV4_HLEN + UDP_HLEN) else {
        return Drop(DropReason::TruncatedOuter);
    };
    let Some(vni) = f.load_word(ETH_HLEN + IPV4_HLEN + UDP_HLEN + 4) else {
        return Drop(DropReason::TruncatedOuter);
    };
    if flags.to_ne_bytes()[0] & VXLAN_FLAG_I == 0 {
        return Drop(DropReason::BadVxlanFlags);
    }
    let vni = vni.to_ne_bytes();
    let Some(inner) = load_eth(f, INNER_OFFSET) else {
        return Drop(DropReason::TruncatedInner);
    };
    UnderlayVerdict::Vxlan(VxlanInfo {
        peer: peer_as(src),
        peer_info,
        vni: u32::from_be_bytes([0, vni[0], vni[1], vni[2]]),
        inner,
        inner_len,
        trailer: f.total_len() - ETH_HLEN - tot_len,
        outer_len: INNER_OFFSET,
    })
}

/// [`classify_underlay`] or [`classify_underlay6`], by the family of `local` (16 bytes,
/// IPv4-mapped for IPv4, as the maps hold it, given as words: see [`mapped_v4`]); the
/// sender comes back in 16 bytes.
#[inline(always)]
pub fn classify_tunnel<F: Frame + ?Sized, P>(
    f: &F,
    local: [u32; 4],
    lookup_peer: impl Fn(&[u8; 16]) -> Option<P>,
) -> UnderlayVerdict<P, [u8; 16]> {
    let Some(local4) = mapped_v4(local) else {
        return classify_underlay6(f, local, lookup_peer);
    };
    classify_v4(f, local4, |a| lookup_peer(&v4_mapped(a)), v4_mapped)
}

/// [`classify_underlay`] over an IPv6 underlay: only UDP/4789 addressed to `local` right
/// behind the fixed header is Violin's. A packet with extension headers goes to the stack
/// (Violin sends none). The UDP checksum is not verified: Violin sends zero, as RFC 6935
/// allows for tunnels, and a non-zero one was the sender's choice. `local` comes as its
/// words in memory order (`maps::addr_words`), and the header is read in words
/// ([`Frame::load_word`]), as IPv4's classification reads its own: the addresses' 32 bytes
/// would otherwise be loaded and copied a byte at a time.
#[inline(always)]
pub fn classify_underlay6<F: Frame + ?Sized, P>(
    f: &F,
    local: [u32; 4],
    lookup_peer: impl Fn(&[u8; 16]) -> Option<P>,
) -> UnderlayVerdict<P, [u8; 16]> {
    use UnderlayVerdict::{Drop, Pass};
    let Some(ethertype) = f.load::<[u8; 2]>(ETH_HLEN - 2) else {
        return Drop(DropReason::Runt);
    };
    if be16(ethertype) != ETH_P_IPV6 {
        return Pass;
    }
    // The header's first two words: version, traffic class and flow label; payload
    // length, next header, hop limit. (One at a time, as in classify_v4: in the datapath
    // a value read on a path where another read failed would be an uninitialised
    // register, which the verifier refuses.)
    let Some(w0) = f.load_word(ETH_HLEN) else {
        return Drop(DropReason::TruncatedOuter);
    };
    let Some(w1) = f.load_word(ETH_HLEN + 4) else {
        return Drop(DropReason::TruncatedOuter);
    };
    if f.total_len() < ETH_HLEN + IPV6_HLEN {
        return Drop(DropReason::TruncatedOuter);
    }
    let w1 = w1.to_ne_bytes();
    if w0.to_ne_bytes()[0] >> 4 != 6 || w1[2] != IPPROTO_UDP {
        return Pass;
    }
    match load_addr(f, ETH_HLEN + 24) {
        Some(dst) if same_words(dst, local) => {}
        _ => return Pass,
    }
    // The UDP header: the ports, then the length and the checksum.
    let Some(ports) = f.load_word(ETH_HLEN + IPV6_HLEN) else {
        return Pass;
    };
    let Some(udp_len) = f.load_word(ETH_HLEN + IPV6_HLEN + 4) else {
        return Pass;
    };
    let ports = ports.to_ne_bytes();
    if be16([ports[2], ports[3]]) != VXLAN_PORT {
        return Pass;
    }
    let Some(src) = load_addr(f, ETH_HLEN + 8) else {
        return Pass;
    };
    // SAFETY: both are 16 bytes, and any bytes are valid.
    let src = unsafe { core::mem::transmute::<[u32; 4], [u8; 16]>(src) };
    let Some(peer_info) = lookup_peer(&src) else {
        return Drop(DropReason::UnknownPeer);
    };
    let payload = be16([w1[0], w1[1]]) as usize;
    // A zero payload length is a jumbogram's (RFC 2675); the underlay carries none.
    if payload < UDP_HLEN + VXLAN_HLEN || ETH_HLEN + IPV6_HLEN + payload > f.total_len() {
        return Drop(DropReason::TruncatedOuter);
    }
    let udp_len = udp_len.to_ne_bytes();
    if be16([udp_len[0], udp_len[1]]) as usize != payload {
        return Drop(DropReason::BadLength);
    }
    let inner_len = payload - UDP_HLEN - VXLAN_HLEN;
    if inner_len < ETH_HLEN {
        return Drop(DropReason::TruncatedInner);
    }
    // The VXLAN header: the flags and reserved bytes, then the VNI and a reserved byte.
    let Some(flags) = f.load_word(ETH_HLEN + IPV6_HLEN + UDP_HLEN) else {
        return Drop(DropReason::TruncatedOuter);
    };
    let Some(vni) = f.load_word(ETH_HLEN + IPV6_HLEN + UDP_HLEN + 4) else {
        return Drop(DropReason::TruncatedOuter);
    };
    if flags.to_ne_bytes()[0] & VXLAN_FLAG_I == 0 {
        return Drop(DropReason::BadVxlanFlags);
    }
    let vni = vni.to_ne_bytes();
    let Some(inner) = load_eth(f, INNER_OFFSET_V6) else {
        return Drop(DropReason::TruncatedInner);
    };
    UnderlayVerdict::Vxlan(VxlanInfo {
        peer: src,
        peer_info,
        vni: u32::from_be_bytes([0, vni[0], vni[1], vni[2]]),
        inner,
        inner_len,
        trailer: f.total_len() - ETH_HLEN - IPV6_HLEN - payload,
        outer_len: INNER_OFFSET_V6,
    })
}

/// The 16-byte address at `off` as its four words in memory order (`maps::addr_words`).
#[inline(always)]
fn load_addr<F: Frame + ?Sized>(f: &F, off: usize) -> Option<[u32; 4]> {
    Some([
        f.load_word(off)?,
        f.load_word(off + 4)?,
        f.load_word(off + 8)?,
        f.load_word(off + 12)?,
    ])
}

/// The Ethernet header at `off` as an [`Eth`], read in three words and the EtherType (see
/// [`Frame::load_word`]). `None` if it does not fit in the first buffer.
#[inline(always)]
pub fn load_eth<F: Frame + ?Sized>(f: &F, off: usize) -> Option<Eth> {
    // One at a time, as in classify_v4.
    let a = f.load_word(off)?;
    let b = f.load_word(off + 4)?;
    let c = f.load_word(off + 8)?;
    let ethertype = f.load::<[u8; 2]>(off + 12)?;
    Some(Eth {
        addrs: [a, b, c],
        ethertype,
    })
}

/// Validates a frame a VM sent into its port and returns its Ethernet header.
#[inline(always)]
pub fn classify_port<F: Frame + ?Sized>(f: &F) -> Result<Eth, DropReason> {
    let eth = load_eth(f, 0).ok_or(DropReason::Runt)?;
    let src = eth.src();
    if is_multicast(&src) || is_zero(&src) {
        return Err(DropReason::BadSrcMac);
    }
    Ok(eth)
}

/// Anti-spoofing: a port only sends with the MAC (and, if given, IPv4 address) assigned to
/// it. `flags` are the port's `PORT_CHECK_*` flags.
#[inline(always)]
pub fn check_source<F: Frame + ?Sized>(
    f: &F,
    eth: &Eth,
    flags: u32,
    mac: &[u8; 6],
    ip: &[u8; 4],
) -> Result<(), DropReason> {
    use crate::maps::{PORT_CHECK_IP, PORT_CHECK_MAC};
    if flags & PORT_CHECK_MAC != 0 && eth.src() != *mac {
        return Err(DropReason::SpoofedMac);
    }
    if flags & PORT_CHECK_IP == 0 {
        return Ok(());
    }
    // IPv4 source address, or the ARP sender protocol address: both at 26..30 / 28..32.
    let src = match be16(eth.ethertype) {
        ETH_P_IPV4 => f.load::<[u8; 4]>(ETH_HLEN + 12),
        0x0806 => f.load::<[u8; 4]>(ETH_HLEN + 14),
        _ => return Ok(()),
    };
    match src {
        Some(a) if a == *ip => Ok(()),
        // An ARP probe (RFC 5227) announces no address yet.
        Some([0, 0, 0, 0]) if be16(eth.ethertype) == 0x0806 => Ok(()),
        _ => Err(DropReason::SpoofedIp),
    }
}

/// Whether a VM frame of `frame_len` bytes (Ethernet header included) still fits the
/// underlay IP MTU once encapsulated. Violin never fragments.
#[inline(always)]
pub const fn fits_underlay(frame_len: usize, underlay_mtu: u32) -> bool {
    frame_len + IPV4_HLEN + UDP_HLEN + VXLAN_HLEN <= underlay_mtu as usize
}

/// Length on the wire of each segment of a GSO super-frame: its Ethernet, IP and TCP/UDP
/// headers plus `gso_size` bytes of payload. Headers it cannot parse count as the largest
/// they could be, so the MTU check errs towards dropping.
#[inline(always)]
pub fn gso_segment_len<F: Frame + ?Sized>(f: &F, gso_size: usize) -> usize {
    const WORST: usize = ETH_HLEN + 60 + 60;
    let Some(ethertype) = f.load::<[u8; 2]>(ETH_HLEN - 2) else {
        return WORST + gso_size;
    };
    let (l3, proto) = match be16(ethertype) {
        ETH_P_IPV4 => match f.load::<Ipv4Hdr>(ETH_HLEN) {
            Some(ip) => (((ip.version_ihl & 0x0f) as usize) * 4, ip.protocol),
            None => return WORST + gso_size,
        },
        0x86dd => match f.load::<[u8; 8]>(ETH_HLEN) {
            Some(h) => (40, h[6]),
            None => return WORST + gso_size,
        },
        _ => return WORST + gso_size,
    };
    let l4 = match proto {
        IPPROTO_TCP => match f.load::<[u8; 13]>(ETH_HLEN + l3) {
            Some(t) => ((t[12] >> 4) as usize) * 4,
            None => 60,
        },
        IPPROTO_UDP => UDP_HLEN,
        _ => 60,
    };
    ETH_HLEN + l3 + l4 + gso_size
}

/// [`fits_underlay`] over an IPv6 underlay (20 bytes more of outer header).
#[inline(always)]
pub const fn fits_underlay6(frame_len: usize, underlay_mtu: u32) -> bool {
    frame_len + IPV6_HLEN + UDP_HLEN + VXLAN_HLEN <= underlay_mtu as usize
}

/// The underlay's address family: what the outer headers cost.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Family {
    #[default]
    V4,
    V6,
}

impl Family {
    /// Bytes Violin puts in front of a VM's frame.
    pub const fn overhead(self) -> u32 {
        match self {
            Family::V4 => ENCAP_OVERHEAD,
            Family::V6 => ENCAP_OVERHEAD_V6,
        }
    }

    /// Largest VM MTU (IP MTU inside the VM) for an underlay IP MTU of this family.
    pub const fn vm_mtu(self, underlay_mtu: u32) -> u32 {
        underlay_mtu.saturating_sub(self.overhead())
    }

    /// Whether a VM frame of `frame_len` bytes fits an underlay IP MTU once encapsulated.
    pub const fn fits(self, frame_len: usize, underlay_mtu: u32) -> bool {
        match self {
            Family::V4 => fits_underlay(frame_len, underlay_mtu),
            Family::V6 => fits_underlay6(frame_len, underlay_mtu),
        }
    }
}

/// [`flow_hash`]'s part for the IPv6 header at `off`: the addresses, the next header and,
/// when that is TCP or UDP (no extension headers), the ports.
#[inline(always)]
fn ipv6_flow_hash<F: Frame + ?Sized>(f: &F, off: usize, mut h: u32) -> u32 {
    // Next header at byte 6, addresses at 8..40, the transport header after 40.
    let Some(next) = f.load_word(off + 4).map(|w| w.to_ne_bytes()[2]) else {
        return h;
    };
    for word in 0..8 {
        if let Some(w) = f.load_word(off + 8 + 4 * word) {
            h = mix(h, w);
        }
    }
    h = mix(h, next as u32);
    if next == IPPROTO_TCP || next == IPPROTO_UDP {
        if let Some(ports) = f.load_word(off + 40) {
            h = mix(h, ports);
        }
    }
    h
}

#[inline(always)]
const fn mix(mut h: u32, v: u32) -> u32 {
    h ^= v;
    h = h.wrapping_mul(0x9e37_79b1);
    h ^ (h >> 15)
}

/// The transport protocol of the frame whose Ethernet header is at `off`: IPv4's protocol
/// or IPv6's next header (extension headers are not followed). `None` for other frames
/// and for frames cut short.
#[inline(always)]
pub fn ip_protocol<F: Frame + ?Sized>(f: &F, off: usize) -> Option<u8> {
    match be16(f.load::<[u8; 2]>(off + ETH_HLEN - 2)?) {
        ETH_P_IPV4 => Some(f.load::<Ipv4Hdr>(off + ETH_HLEN)?.protocol),
        // The next-header byte sits 6 bytes into the fixed IPv6 header.
        ETH_P_IPV6 => Some(f.load::<[u8; 1]>(off + ETH_HLEN + 6)?[0]),
        _ => None,
    }
}

/// Hash of the inner flow, so that the underlay's ECMP and RSS spread tunnels the way they
/// spread the flows: for IPv4 and IPv6 the addresses, the protocol and the TCP/UDP ports
/// (what the kernel's flow hash, which its own tunnels take, covers), for other frames
/// the MACs and the EtherType. Read in words ([`Frame::load_word`]) in native byte order:
/// only equality counts, and the datapath and the slow path of a host hash alike.
#[inline(always)]
pub fn flow_hash<F: Frame + ?Sized>(f: &F, off: usize) -> u32 {
    let Some(ethertype) = f.load::<[u8; 2]>(off + 12).map(be16) else {
        return 0;
    };
    let mut h = 0x811c_9dc5;
    match ethertype {
        ETH_P_IPV4 => ipv4_flow_hash(f, off + ETH_HLEN, h),
        ETH_P_IPV6 => ipv6_flow_hash(f, off + ETH_HLEN, h),
        _ => {
            for word in 0..3 {
                if let Some(w) = f.load_word(off + 4 * word) {
                    h = mix(h, w);
                }
            }
            mix(h, ethertype as u32)
        }
    }
}

/// [`flow_hash`]'s part for the IPv4 header at `off`: the addresses, the protocol and,
/// for TCP and UDP in an unfragmented packet without options, the ports.
#[inline(always)]
fn ipv4_flow_hash<F: Frame + ?Sized>(f: &F, off: usize, mut h: u32) -> u32 {
    // Version and header length in byte 0, the fragment offset in 6..8, the protocol in
    // byte 9, the addresses in 12..20.
    // One word after another, each used only past its own check: loaded together and
    // checked at once, a word that was never read may be computed with anyway, and the
    // verifier refuses arithmetic on what its register held instead.
    let Some(w0) = f.load_word(off) else {
        return h;
    };
    let Some(w1) = f.load_word(off + 4) else {
        return h;
    };
    let Some(w2) = f.load_word(off + 8) else {
        return h;
    };
    let Some(src) = f.load_word(off + 12) else {
        return h;
    };
    let Some(dst) = f.load_word(off + 16) else {
        return h;
    };
    let version_ihl = w0.to_ne_bytes()[0];
    let frag = w1.to_ne_bytes();
    let protocol = w2.to_ne_bytes()[1];
    h = mix(h, src);
    h = mix(h, dst);
    h = mix(h, protocol as u32);
    let unfragmented = be16([frag[2], frag[3]]) & 0x3fff == 0;
    if unfragmented
        && version_ihl & 0x0f == 5
        && (protocol == IPPROTO_TCP || protocol == IPPROTO_UDP)
    {
        if let Some(ports) = f.load_word(off + IPV4_HLEN) {
            h = mix(h, ports);
        }
    }
    h
}

/// Outer UDP source port from the flow hash, in the dynamic range as RFC 7348 advises.
#[inline(always)]
pub const fn source_port(hash: u32) -> u16 {
    49152 | ((hash ^ (hash >> 16)) & 0x3fff) as u16
}

/// RFC 1071 checksum of an IPv4 header whose checksum field is zero.
#[inline(always)]
pub fn ipv4_checksum(ip: &Ipv4Hdr) -> [u8; 2] {
    // Summed word by word as read, without an array of them: in the datapath an array is
    // stack the programs cannot spare.
    let w = |a: u8, b: u8| u16::from_be_bytes([a, b]) as u32;
    let sum = w(ip.version_ihl, ip.tos)
        + be16(ip.tot_len) as u32
        + be16(ip.id) as u32
        + be16(ip.frag_off) as u32
        + w(ip.ttl, ip.protocol)
        + be16(ip.check) as u32
        + w(ip.src[0], ip.src[1])
        + w(ip.src[2], ip.src[3])
        + w(ip.dst[0], ip.dst[1])
        + w(ip.dst[2], ip.dst[3]);
    folded_checksum(sum)
}

/// The checksum field for a sum of 16-bit words (RFC 1071): carries folded in twice
/// (enough for a header's few words), then complemented.
#[inline(always)]
const fn folded_checksum(mut sum: u32) -> [u8; 2] {
    sum = (sum & 0xffff) + (sum >> 16);
    sum = (sum & 0xffff) + (sum >> 16);
    (!(sum as u16)).to_be_bytes()
}

/// Addresses of one tunnel endpoint pair.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tunnel {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src_ip: [u8; 4],
    pub dst_ip: [u8; 4],
}

/// The addresses of a [`Tunnel6`] as the datapath reads them: the MACs borrowed, the IPv6
/// addresses as their words in memory order (`maps::addr_words`), which the BPF backend
/// reads with one load each where an address's bytes would be sixteen.
pub struct Ends<'a> {
    pub src_mac: &'a [u8; 6],
    pub dst_mac: &'a [u8; 6],
    pub src_ip: [u32; 4],
    pub dst_ip: [u32; 4],
}

/// Addresses of one tunnel endpoint pair over an IPv6 underlay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tunnel6 {
    pub src_mac: [u8; 6],
    pub dst_mac: [u8; 6],
    pub src_ip: [u8; 16],
    pub dst_ip: [u8; 16],
}

impl OuterHeaders6 {
    /// Headers for a VM frame of `inner_len` bytes over IPv6. The flow label carries the
    /// source port's entropy too (RFC 6438), so routers that hash only the IPv6 header
    /// still spread the tunnels; the UDP checksum is zero (RFC 6935: receivers must allow
    /// it, which Linux's VXLAN devices do with `udp6zerocsumrx`).
    #[inline(always)]
    pub fn new(t: &Tunnel6, vni: u32, sport: u16, inner_len: usize) -> OuterHeaders6 {
        let mut h = OuterHeaders6::default();
        h.fill(t, vni, sport, inner_len);
        h
    }

    /// Writes every byte of the headers of [`OuterHeaders6::new`] over what `self` held.
    /// The datapath writes them as words instead ([`outer_words6`], checked against these).
    #[inline(always)]
    fn fill(&mut self, t: &Tunnel6, vni: u32, sport: u16, inner_len: usize) {
        let udp_len = ((inner_len + UDP_HLEN + VXLAN_HLEN) as u16).to_be_bytes();
        let vni = vni.to_be_bytes();
        self.eth.dst = t.dst_mac;
        self.eth.src = t.src_mac;
        self.ip.src = t.src_ip;
        self.ip.dst = t.dst_ip;
        self.eth.ethertype = ETH_P_IPV6.to_be_bytes();
        self.ip.vtc_flow = (6 << 28 | flow_label(sport)).to_be_bytes();
        self.ip.payload_len = udp_len;
        self.ip.next_header = IPPROTO_UDP;
        self.ip.hop_limit = HOP_LIMIT;
        fill_udp_vxlan(&mut self.udp, &mut self.vxlan, sport, udp_len, vni);
    }

    pub fn as_bytes(&self) -> &[u8; ENCAP_OVERHEAD_V6 as usize] {
        // SAFETY: as for OuterHeaders::as_bytes: repr(C) over headers made only of u8 and
        // [u8; N], alignment 1, no padding, size pinned to ENCAP_OVERHEAD_V6 by the const
        // assert; the reference borrows `self`.
        unsafe { &*(self as *const OuterHeaders6 as *const [u8; ENCAP_OVERHEAD_V6 as usize]) }
    }
}

/// The UDP and VXLAN headers both families' outer headers end with: a zero UDP checksum,
/// and the VNI valid.
#[inline(always)]
fn fill_udp_vxlan(udp: &mut UdpHdr, vxlan: &mut VxlanHdr, sport: u16, len: [u8; 2], vni: [u8; 4]) {
    udp.source = sport.to_be_bytes();
    udp.dest = VXLAN_PORT.to_be_bytes();
    udp.len = len;
    udp.check = [0, 0];
    vxlan.flags = VXLAN_FLAG_I;
    // Byte by byte: an all-zero array is written with a memset, which eBPF gets as a call
    // of a byte loop on the path of every frame it encapsulates.
    vxlan.reserved1[0] = 0;
    vxlan.reserved1[1] = 0;
    vxlan.reserved1[2] = 0;
    vxlan.vni = [vni[1], vni[2], vni[3]];
    vxlan.reserved2 = 0;
}

/// A non-zero 20-bit flow label from an outer source port (whose low 14 bits are the
/// flow's hash); zero would say "no label".
#[inline(always)]
pub const fn flow_label(sport: u16) -> u32 {
    let h = (sport as u32 & 0x3fff).wrapping_mul(0x9e37_79b1);
    (h >> 12) | 1
}

/// [`OuterHeaders::new`]'s 50 bytes as the datapath stores them into a packet: `put(off,
/// word)` for each 32-bit word at offsets 0 to 44, its bytes in memory order (native byte
/// order, as [`Frame::load_word`] reads them); the last two bytes are returned the same
/// way. Written as fields, the headers are a byte store each, or a stack copy and a byte
/// copy, since packet data has no known alignment; the programs store these words with one
/// instruction each.
#[inline(always)]
pub fn outer_words(
    t: &Tunnel,
    vni: u32,
    sport: u16,
    inner_len: usize,
    mut put: impl FnMut(usize, u32),
) -> u16 {
    let w = u32::from_ne_bytes;
    let (et, df) = (ETH_P_IPV4.to_be_bytes(), IPV4_DF.to_be_bytes());
    let udp_len = (inner_len + UDP_HLEN + VXLAN_HLEN) as u16;
    let tot_len = udp_len + IPV4_HLEN as u16;
    let (d, s, src, dst) = (t.dst_mac, t.src_mac, t.src_ip, t.dst_ip);
    let check = outer_ipv4_checksum(tot_len, src, dst);
    let (len, sp, dp) = (
        tot_len.to_be_bytes(),
        sport.to_be_bytes(),
        VXLAN_PORT.to_be_bytes(),
    );
    let (ul, v) = (udp_len.to_be_bytes(), vni.to_be_bytes());
    // Ethernet; version and IHL, TOS; total length, id; DF, TTL, protocol.
    put(0, w([d[0], d[1], d[2], d[3]]));
    put(4, w([d[4], d[5], s[0], s[1]]));
    put(8, w([s[2], s[3], s[4], s[5]]));
    put(12, w([et[0], et[1], IPV4_VERSION_IHL, 0]));
    put(16, w([len[0], len[1], 0, 0]));
    put(20, w([df[0], df[1], HOP_LIMIT, IPPROTO_UDP]));
    // Checksum, addresses; UDP ports, length, checksum; VXLAN flags, reserved, VNI.
    put(24, w([check[0], check[1], src[0], src[1]]));
    put(28, w([src[2], src[3], dst[0], dst[1]]));
    put(32, w([dst[2], dst[3], sp[0], sp[1]]));
    put(36, w([dp[0], dp[1], ul[0], ul[1]]));
    put(40, w([0, 0, VXLAN_FLAG_I, 0]));
    put(44, w([0, 0, v[1], v[2]]));
    u16::from_ne_bytes([v[3], 0])
}

/// [`OuterHeaders6::new`]'s 70 bytes as the datapath stores them, as [`outer_words`]
/// gives IPv4's: `put(off, word)` for each word at offsets 0 to 64, the last two bytes
/// returned.
#[inline(always)]
pub fn outer_words6(
    t: &Ends,
    vni: u32,
    sport: u16,
    inner_len: usize,
    mut put: impl FnMut(usize, u32),
) -> u16 {
    let w = u32::from_ne_bytes;
    let (d, s) = (t.dst_mac, t.src_mac);
    let (et, vf) = (
        ETH_P_IPV6.to_be_bytes(),
        (6 << 28 | flow_label(sport)).to_be_bytes(),
    );
    let ul = ((inner_len + UDP_HLEN + VXLAN_HLEN) as u16).to_be_bytes();
    let (sp, dp, v) = (
        sport.to_be_bytes(),
        VXLAN_PORT.to_be_bytes(),
        vni.to_be_bytes(),
    );
    let (a, b) = (
        t.src_ip.map(u32::to_ne_bytes),
        t.dst_ip.map(u32::to_ne_bytes),
    );
    // The addresses start 2 bytes into a word of the packet: each such word is the back
    // half of one of the address's words and the front half of the next.
    let across = |x: [u8; 4], y: [u8; 4]| w([x[2], x[3], y[0], y[1]]);
    // Ethernet; version, traffic class and flow label; payload length.
    put(0, w([d[0], d[1], d[2], d[3]]));
    put(4, w([d[4], d[5], s[0], s[1]]));
    put(8, w([s[2], s[3], s[4], s[5]]));
    put(12, w([et[0], et[1], vf[0], vf[1]]));
    put(16, w([vf[2], vf[3], ul[0], ul[1]]));
    // Next header, hop limit, the addresses.
    put(20, w([IPPROTO_UDP, HOP_LIMIT, a[0][0], a[0][1]]));
    put(24, across(a[0], a[1]));
    put(28, across(a[1], a[2]));
    put(32, across(a[2], a[3]));
    put(36, across(a[3], b[0]));
    put(40, across(b[0], b[1]));
    put(44, across(b[1], b[2]));
    put(48, across(b[2], b[3]));
    // UDP ports, length, checksum; VXLAN flags, reserved, VNI.
    put(52, w([b[3][2], b[3][3], sp[0], sp[1]]));
    put(56, w([dp[0], dp[1], ul[0], ul[1]]));
    put(60, w([0, 0, VXLAN_FLAG_I, 0]));
    put(64, w([0, 0, v[1], v[2]]));
    u16::from_ne_bytes([v[3], 0])
}

/// [`ipv4_checksum`] of the outer IPv4 header ([`OuterHeaders::new`], [`outer_words`]),
/// from what varies in it.
#[inline(always)]
fn outer_ipv4_checksum(tot_len: u16, src: [u8; 4], dst: [u8; 4]) -> [u8; 2] {
    let w = |a: u8, b: u8| ((a as u32) << 8) | b as u32;
    // Version and IHL with the TOS, DF, and the TTL with the protocol; the id is zero.
    let fixed = w(IPV4_VERSION_IHL, 0) + IPV4_DF as u32 + w(HOP_LIMIT, IPPROTO_UDP);
    folded_checksum(
        fixed
            + tot_len as u32
            + w(src[0], src[1])
            + w(src[2], src[3])
            + w(dst[0], dst[1])
            + w(dst[2], dst[3]),
    )
}

impl OuterHeaders {
    /// Headers for a VM frame of `inner_len` bytes. The outer UDP checksum is zero, as
    /// RFC 7348 allows over IPv4; DF is set because Violin never fragments.
    #[inline(always)]
    pub fn new(t: &Tunnel, vni: u32, sport: u16, inner_len: usize) -> OuterHeaders {
        let mut h = OuterHeaders::default();
        h.fill(t, vni, sport, inner_len);
        h
    }

    /// Writes every byte of the headers of [`OuterHeaders::new`] over what `self` held.
    /// The datapath writes them as words instead ([`outer_words`], checked against these).
    #[inline(always)]
    fn fill(&mut self, t: &Tunnel, vni: u32, sport: u16, inner_len: usize) {
        let udp_len = (inner_len + UDP_HLEN + VXLAN_HLEN) as u16;
        let vni = vni.to_be_bytes();
        self.eth.dst = t.dst_mac;
        self.eth.src = t.src_mac;
        self.eth.ethertype = ETH_P_IPV4.to_be_bytes();
        self.ip.version_ihl = IPV4_VERSION_IHL;
        self.ip.tos = 0;
        self.ip.tot_len = (udp_len + IPV4_HLEN as u16).to_be_bytes();
        self.ip.id = [0, 0];
        self.ip.frag_off = IPV4_DF.to_be_bytes();
        self.ip.ttl = HOP_LIMIT;
        self.ip.protocol = IPPROTO_UDP;
        self.ip.check = [0, 0];
        self.ip.src = t.src_ip;
        self.ip.dst = t.dst_ip;
        self.ip.check = ipv4_checksum(&self.ip);
        fill_udp_vxlan(
            &mut self.udp,
            &mut self.vxlan,
            sport,
            udp_len.to_be_bytes(),
            vni,
        );
    }

    pub fn as_bytes(&self) -> &[u8; ENCAP_OVERHEAD as usize] {
        // SAFETY: OuterHeaders is repr(C) over EthHdr, Ipv4Hdr, UdpHdr and VxlanHdr, whose
        // fields are all u8 or [u8; N]: alignment 1 (as for [u8; N]), no padding, so every
        // byte is initialised, and the const assert pins its size to ENCAP_OVERHEAD. The
        // returned reference borrows `self`, so it cannot outlive or alias a mutation of it.
        unsafe { &*(self as *const OuterHeaders as *const [u8; ENCAP_OVERHEAD as usize]) }
    }
}

#[cfg(test)]
mod tests;
