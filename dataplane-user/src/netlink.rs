//! Host facts from the kernel over rtnetlink: the next hop towards a peer by the kernel's
//! own FIB lookup (`ip route get`), the neighbour table (ARP and IPv6's neighbour
//! discovery alike), and a subscription to
//! neighbour, link and route changes, so that the datapath's outer headers follow the
//! kernel within milliseconds and VM ports that come and go are attached as they appear.
//! Sockets are opened in the namespace the daemon entered, so they see its tables.
use std::{
    collections::BTreeMap,
    io,
    net::IpAddr,
    os::fd::AsRawFd,
    sync::{Arc, Condvar, Mutex},
    time::{Duration, Instant},
};

use dataplane_common::maps::HTB_MAJOR;
use netlink_packet_core::{DefaultNla, NLM_F_REPLACE};
use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::{
    link::{InfoData, InfoKind, InfoVxlan, LinkAttribute, LinkFlags, LinkInfo, LinkMessage},
    neighbour::{NeighbourAddress, NeighbourAttribute, NeighbourMessage, NeighbourState},
    route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage},
    tc::{TcAttribute, TcHandle, TcMessage, TcOption},
    AddressFamily, RouteNetlinkMessage,
};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};
use tracing::warn;

/// Makes the kernel resolve the next hop towards `peer` by sending it one datagram to the
/// discard port (the peer's datapath passes it to its stack, which ignores it).
pub fn probe(peer: IpAddr) {
    let any = match peer {
        IpAddr::V4(_) => "0.0.0.0:0",
        IpAddr::V6(_) => "[::]:0",
    };
    if let Ok(s) = std::net::UdpSocket::bind(any) {
        let _ = s.send_to(b"violin-neighbour-probe", (peer, 9));
    }
}

/// A change the kernel announced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fact {
    /// A neighbour's link-layer address on interface `ifindex`, or None when it is gone
    /// or unreachable.
    Neighbour {
        ifindex: u32,
        ip: IpAddr,
        mac: Option<[u8; 6]>,
    },
    /// An interface appeared (or changed) or went away.
    Link { name: String, present: bool },
    /// A routing table changed: next hops may have moved.
    Routes,
    /// Announcements were lost (the socket overflowed): links, routes and neighbours must
    /// all be looked at again. The neighbour table has been read anew already.
    Resync,
}

/// A neighbour: the interface it is on, and its address. Both name it: a link-local IPv6
/// address (a router's fe80::1) may be another neighbour's on another interface, a VM
/// port's among them.
pub type NeighbourKey = (u32, IpAddr);

/// The neighbour entry a message describes, if it is an IP one.
fn neighbour_of(m: &NeighbourMessage, gone: bool) -> Option<(NeighbourKey, Option<[u8; 6]>)> {
    let ip = m.attributes.iter().find_map(|a| match a {
        NeighbourAttribute::Destination(NeighbourAddress::Inet(ip)) => Some(IpAddr::V4(*ip)),
        NeighbourAttribute::Destination(NeighbourAddress::Inet6(ip)) => Some(IpAddr::V6(*ip)),
        _ => None,
    })?;
    let usable = !gone
        && !matches!(
            m.header.state,
            NeighbourState::Incomplete | NeighbourState::Failed | NeighbourState::None
        );
    let mac = m
        .attributes
        .iter()
        .find_map(|a| match a {
            NeighbourAttribute::LinkLayerAddress(l) if l.len() == 6 => {
                let mut mac = [0u8; 6];
                mac.copy_from_slice(l);
                Some(mac)
            }
            _ => None,
        })
        .filter(|_| usable);
    Some(((m.header.ifindex, ip), mac))
}

fn link_name(m: &LinkMessage) -> Option<String> {
    m.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.clone()),
        _ => None,
    })
}

/// What an announcement tells, if it is about something the daemon follows.
pub fn fact_of(msg: RouteNetlinkMessage) -> Option<Fact> {
    match msg {
        RouteNetlinkMessage::NewNeighbour(m) => {
            neighbour_of(&m, false).map(|((ifindex, ip), mac)| Fact::Neighbour { ifindex, ip, mac })
        }
        RouteNetlinkMessage::DelNeighbour(m) => {
            neighbour_of(&m, true).map(|((ifindex, ip), mac)| Fact::Neighbour { ifindex, ip, mac })
        }
        RouteNetlinkMessage::NewLink(m) => link_name(&m).map(|name| Fact::Link {
            name,
            present: true,
        }),
        RouteNetlinkMessage::DelLink(m) => link_name(&m).map(|name| Fact::Link {
            name,
            present: false,
        }),
        RouteNetlinkMessage::NewRoute(_) | RouteNetlinkMessage::DelRoute(_) => Some(Fact::Routes),
        _ => None,
    }
}

/// The messages in one datagram from the kernel, with their sequence numbers.
fn messages(buf: &[u8]) -> io::Result<Vec<(u32, NetlinkPayload<RouteNetlinkMessage>)>> {
    let mut out = Vec::new();
    let mut offset = 0;
    while offset < buf.len() {
        let msg = NetlinkMessage::<RouteNetlinkMessage>::deserialize(&buf[offset..])
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
        let len = msg.header.length as usize;
        out.push((msg.header.sequence_number, msg.payload));
        if len == 0 {
            break;
        }
        offset += (len + 3) & !3;
    }
    Ok(out)
}

/// A class's parent: HTB names a top-level class's parent TC_H_ROOT (in dumps too).
fn parent_handle(minor: u32) -> TcHandle {
    if minor == 0 {
        TcHandle::ROOT
    } else {
        htb_handle(minor)
    }
}

/// One class of the HTB tree that shapes bounded traffic (see `dataplane_common::maps`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HtbClass {
    /// The parent class's minor number; 0 for the root.
    pub parent: u32,
    pub minor: u32,
    /// Guaranteed and maximum rate, bytes per second.
    pub rate: u64,
    pub ceil: u64,
    /// What may leave at once after a quiet spell, bytes.
    pub burst: u64,
    /// For a leaf: its queue's size in bytes (a bfifo); None for a parent.
    pub queue: Option<u64>,
}

/// A qdisc as the kernel lists it.
struct Qdisc {
    ifindex: u32,
    parent: TcHandle,
    handle: TcHandle,
    kind: String,
}

impl Qdisc {
    /// The root HTB that [`Rtnl::ensure_htb`] installs.
    fn is_violin_root(&self) -> bool {
        self.parent == TcHandle::ROOT && self.handle == htb_root() && self.kind == "htb"
    }
}

/// The root qdisc's handle.
fn htb_root() -> TcHandle {
    TcHandle {
        major: HTB_MAJOR as u16,
        minor: 0,
    }
}

fn htb_handle(minor: u32) -> TcHandle {
    TcHandle {
        major: HTB_MAJOR as u16,
        minor: minor as u16,
    }
}

/// Frames of unbounded traffic wait in HTB's direct queue only while the device is busy;
/// it must not drop where the device without a qdisc would not.
const HTB_DIRECT_QLEN: u32 = 10_000;

/// `TCA_OPTIONS` of the HTB root (uapi linux/pkt_sched.h: TCA_HTB_INIT holds a
/// tc_htb_glob: version 3, rate2quantum, default class 0 = unclassified frames go
/// direct, debug, direct_pkts; TCA_HTB_DIRECT_QLEN a u32).
fn htb_root_options() -> Vec<TcOption> {
    const TCA_HTB_INIT: u16 = 2;
    const TCA_HTB_DIRECT_QLEN: u16 = 5;
    let glob: Vec<u8> = [3u32, 10, 0, 0, 0]
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect();
    vec![
        TcOption::Other(DefaultNla::new(TCA_HTB_INIT, glob)),
        TcOption::Other(DefaultNla::new(
            TCA_HTB_DIRECT_QLEN,
            HTB_DIRECT_QLEN.to_ne_bytes().to_vec(),
        )),
    ]
}

/// `TCA_STAB` of a qdisc: a size table without cells (tc_sizespec, tsize 0), which
/// makes the qdisc count every packet as skb->len + `overhead`. Unlike a rate's own
/// overhead field, it may be negative.
fn size_table(overhead: i32) -> Vec<u8> {
    const TCA_STAB_BASE: u16 = 1;
    const TC_LINKLAYER_ETHERNET: u32 = 1;
    let mut spec = vec![0u8, 0]; // cell_log, size_log
    spec.extend_from_slice(&0i16.to_ne_bytes()); // cell_align
    spec.extend_from_slice(&overhead.to_ne_bytes());
    for v in [TC_LINKLAYER_ETHERNET, 0, 0, 0] {
        // linklayer, mpu, mtu, tsize
        spec.extend_from_slice(&v.to_ne_bytes());
    }
    let mut nla = ((4 + spec.len()) as u16).to_ne_bytes().to_vec();
    nla.extend_from_slice(&TCA_STAB_BASE.to_ne_bytes());
    nla.extend(spec);
    nla
}

/// `TCA_OPTIONS` of an HTB class: TCA_HTB_PARMS (a tc_htb_opt: two tc_ratespecs, then
/// buffer, cbuffer, quantum, level, prio), and the 64-bit rates, which the 32-bit fields
/// cannot hold above 34 Gbit/s. The rate specs say "ethernet" so that the kernel needs no
/// rate table. Buffers are in psched ticks (64 ns).
fn htb_class_options(c: &HtbClass) -> Vec<TcOption> {
    const TCA_HTB_PARMS: u16 = 1;
    const TCA_HTB_RATE64: u16 = 6;
    const TCA_HTB_CEIL64: u16 = 7;
    const TC_LINKLAYER_ETHERNET: u8 = 1;
    let ratespec = |rate: u64| {
        let mut v = vec![0u8, TC_LINKLAYER_ETHERNET];
        v.extend_from_slice(&0u16.to_ne_bytes()); // overhead
        v.extend_from_slice(&0i16.to_ne_bytes()); // cell_align
        v.extend_from_slice(&0u16.to_ne_bytes()); // mpu
        v.extend_from_slice(&(rate.min(u64::from(u32::MAX)) as u32).to_ne_bytes());
        v
    };
    let ticks = |rate: u64| {
        let ns = u128::from(c.burst) * 1_000_000_000 / u128::from(rate.max(1));
        (ns >> 6).min(u128::from(u32::MAX)) as u32
    };
    // A tenth of a second's worth per round, as tc's default divisor would give, kept to
    // what HTB accepts without complaint.
    let quantum = (c.rate / 10).clamp(1514, 200_000) as u32;
    let mut parms = ratespec(c.rate);
    parms.extend(ratespec(c.ceil));
    for v in [ticks(c.rate), ticks(c.ceil), quantum, 0, 0] {
        parms.extend_from_slice(&v.to_ne_bytes());
    }
    vec![
        TcOption::Other(DefaultNla::new(TCA_HTB_PARMS, parms)),
        TcOption::Other(DefaultNla::new(
            TCA_HTB_RATE64,
            c.rate.to_ne_bytes().to_vec(),
        )),
        TcOption::Other(DefaultNla::new(
            TCA_HTB_CEIL64,
            c.ceil.to_ne_bytes().to_vec(),
        )),
    ]
}

/// A request/response rtnetlink socket.
pub struct Rtnl {
    socket: Socket,
    seq: u32,
}

impl Rtnl {
    pub fn open() -> io::Result<Rtnl> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        // The kernel answers at once; a bound keeps a lost answer from stalling the daemon.
        let timeout = libc::timeval {
            tv_sec: 2,
            tv_usec: 0,
        };
        // SAFETY: the fd is the socket just opened and owned by `socket`; the option value
        // points at a live timeval of the size passed.
        let rc = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&timeout as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Rtnl { socket, seq: 0 })
    }

    /// Sends `msg` and collects the answers until the request is done.
    fn request(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let mut header = NetlinkHeader::default();
        header.flags = flags;
        header.sequence_number = self.seq;
        let mut packet = NetlinkMessage::new(header, NetlinkPayload::InnerMessage(msg));
        packet.finalize();
        let mut buf = vec![0u8; packet.buffer_len()];
        packet.serialize(&mut buf);
        self.socket.send(&buf, 0)?;
        let dump = flags & NLM_F_DUMP == NLM_F_DUMP;
        let mut out = Vec::new();
        loop {
            let (data, _) = self.socket.recv_from_full()?;
            for (seq, payload) in messages(&data)? {
                // An answer to an earlier request that timed out is not this one's.
                if seq != self.seq {
                    continue;
                }
                match payload {
                    NetlinkPayload::InnerMessage(m) => {
                        out.push(m);
                        if !dump {
                            return Ok(out);
                        }
                    }
                    NetlinkPayload::Error(e) => {
                        return match e.code {
                            None => Ok(out),
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                        };
                    }
                    NetlinkPayload::Done(_) => return Ok(out),
                    _ => {}
                }
            }
        }
    }

    /// The address whose MAC the outer header needs to reach `peer`: the peer itself when
    /// it is on-link, else the gateway the kernel's FIB picks. None: no route.
    pub fn next_hop(&mut self, peer: IpAddr) -> io::Result<Option<IpAddr>> {
        let mut msg = RouteMessage::default();
        let (family, prefix, destination) = match peer {
            IpAddr::V4(a) => (AddressFamily::Inet, 32, RouteAddress::Inet(a)),
            IpAddr::V6(a) => (AddressFamily::Inet6, 128, RouteAddress::Inet6(a)),
        };
        msg.header = RouteHeader {
            address_family: family,
            destination_prefix_length: prefix,
            ..RouteHeader::default()
        };
        msg.attributes
            .push(RouteAttribute::Destination(destination));
        let answers = match self.request(RouteNetlinkMessage::GetRoute(msg), NLM_F_REQUEST) {
            Ok(a) => a,
            // ENETUNREACH / EHOSTUNREACH: no route, not a failure of the lookup.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENETUNREACH | libc::EHOSTUNREACH)
                ) =>
            {
                return Ok(None)
            }
            Err(e) => return Err(e),
        };
        Ok(answers.into_iter().find_map(|m| match m {
            RouteNetlinkMessage::NewRoute(r) => Some(
                r.attributes
                    .iter()
                    .find_map(|a| match a {
                        RouteAttribute::Gateway(RouteAddress::Inet(g)) => Some(IpAddr::V4(*g)),
                        RouteAttribute::Gateway(RouteAddress::Inet6(g)) => Some(IpAddr::V6(*g)),
                        _ => None,
                    })
                    .unwrap_or(peer),
            ),
            _ => None,
        }))
    }

    /// Creates the flow-based (`external`) VXLAN device `name` on UDP `port`, or takes
    /// the one a previous daemon left, and brings it up with `mtu`. Returns whether it
    /// was made anew.
    pub fn ensure_vxlan_external(&mut self, name: &str, port: u16, mtu: u32) -> io::Result<bool> {
        let mut msg = LinkMessage::default();
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        msg.attributes.push(LinkAttribute::Mtu(mtu));
        let mut create = msg.clone();
        create.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vxlan),
            LinkInfo::Data(InfoData::Vxlan(vec![
                InfoVxlan::CollectMetadata(true),
                InfoVxlan::Port(port),
                // Violin learns in its own table; the device only carries frames.
                InfoVxlan::Learning(false),
                // Violin sends IPv6 tunnels with a zero UDP checksum (RFC 6935), in both
                // port modes, which the kernel drops unless told to take them.
                InfoVxlan::UDPZeroCsumRX(true),
            ])),
        ]));
        let flags = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_EXCL;
        match self.request(RouteNetlinkMessage::NewLink(create), flags) {
            Ok(_) => Ok(true),
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                self.request(RouteNetlinkMessage::NewLink(msg), NLM_F_REQUEST | NLM_F_ACK)?;
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Whether interface `ifindex` is linked to a device in another network namespace
    /// (a veth whose peer is a VM's).
    pub fn peer_in_other_netns(&mut self, ifindex: u32) -> io::Result<bool> {
        let mut msg = LinkMessage::default();
        msg.header.index = ifindex;
        let answers = self.request(RouteNetlinkMessage::GetLink(msg), NLM_F_REQUEST)?;
        Ok(answers.iter().any(|m| match m {
            RouteNetlinkMessage::NewLink(l) => l
                .attributes
                .iter()
                .any(|a| matches!(a, LinkAttribute::LinkNetNsId(_))),
            _ => false,
        }))
    }

    /// Deletes the interface `name`; one that does not exist is not an error.
    pub fn delete_link(&mut self, name: &str) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes.push(LinkAttribute::IfName(name.to_string()));
        match self.request(RouteNetlinkMessage::DelLink(msg), NLM_F_REQUEST | NLM_F_ACK) {
            Err(e) if e.raw_os_error() == Some(libc::ENODEV) => Ok(()),
            other => other.map(|_| ()),
        }
    }

    /// Every qdisc of the namespace.
    fn all_qdiscs(&mut self) -> io::Result<Vec<Qdisc>> {
        let answers = self.request(
            RouteNetlinkMessage::GetQueueDiscipline(TcMessage::default()),
            NLM_F_REQUEST | NLM_F_DUMP,
        )?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewQueueDiscipline(q) => {
                    let kind = q.attributes.iter().find_map(|a| match a {
                        TcAttribute::Kind(k) => Some(k.clone()),
                        _ => None,
                    })?;
                    Some(Qdisc {
                        ifindex: q.header.index as u32,
                        parent: q.header.parent,
                        handle: q.header.handle,
                        kind,
                    })
                }
                _ => None,
            })
            .collect())
    }

    /// The qdiscs of interface `ifindex`.
    fn qdiscs(&mut self, ifindex: u32) -> io::Result<Vec<Qdisc>> {
        let mut all = self.all_qdiscs()?;
        all.retain(|q| q.ifindex == ifindex);
        Ok(all)
    }

    /// The classes of interface `ifindex`: (parent, handle).
    fn classes(&mut self, ifindex: u32) -> io::Result<Vec<(TcHandle, TcHandle)>> {
        let mut msg = TcMessage::default();
        msg.header.index = ifindex as i32;
        let answers = self.request(
            RouteNetlinkMessage::GetTrafficClass(msg),
            NLM_F_REQUEST | NLM_F_DUMP,
        )?;
        Ok(answers
            .into_iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewTrafficClass(c) if c.header.index == ifindex as i32 => {
                    Some((c.header.parent, c.header.handle))
                }
                _ => None,
            })
            .collect())
    }

    fn tc_message(
        ifindex: u32,
        parent: TcHandle,
        handle: TcHandle,
        kind: Option<&str>,
        options: Option<TcAttribute>,
    ) -> TcMessage {
        let mut msg = TcMessage::default();
        msg.header.index = ifindex as i32;
        msg.header.parent = parent;
        msg.header.handle = handle;
        if let Some(kind) = kind {
            msg.attributes.push(TcAttribute::Kind(kind.to_string()));
        }
        msg.attributes.extend(options);
        msg
    }

    const MODIFY: u16 = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE;

    /// Makes interface `ifindex`'s root qdisc the HTB tree `classes` describes (parents
    /// before their children), each leaf with a bfifo queue of its size. Classes that
    /// stay are changed in place, so their queued frames and running flows carry on; an
    /// HTB root already there is kept. HTB counts each packet `overhead` bytes longer
    /// than the skb (a size table), so that it charges what the datapath's clock does:
    /// the VM's frame without the outer headers Violin added. Returns whether the root
    /// was installed anew.
    pub fn ensure_htb(
        &mut self,
        ifindex: u32,
        overhead: i32,
        classes: &[HtbClass],
    ) -> io::Result<bool> {
        let root = htb_root();
        let fresh = !self.qdiscs(ifindex)?.iter().any(Qdisc::is_violin_root);
        if fresh {
            let opts = TcAttribute::Options(htb_root_options());
            let mut msg = Self::tc_message(ifindex, TcHandle::ROOT, root, Some("htb"), Some(opts));
            msg.attributes.push(TcAttribute::Stab(size_table(overhead)));
            self.request(RouteNetlinkMessage::NewQueueDiscipline(msg), Self::MODIFY)?;
        }
        // Classes no longer wanted, or under another parent (HTB cannot move one), go;
        // children before parents.
        let want: BTreeMap<u32, u32> = classes
            .iter()
            .map(|c| (htb_handle(c.minor).into(), parent_handle(c.parent).into()))
            .collect();
        let mut stale: Vec<(TcHandle, TcHandle)> = if fresh {
            Vec::new()
        } else {
            self.classes(ifindex)?
                .into_iter()
                .filter(|(p, h)| want.get(&u32::from(*h)) != Some(&u32::from(*p)))
                .collect()
        };
        stale.sort_by_key(|(p, _)| *p == TcHandle::ROOT);
        for (parent, handle) in stale {
            let msg = Self::tc_message(ifindex, parent, handle, None, None);
            match self.request(
                RouteNetlinkMessage::DelTrafficClass(msg),
                NLM_F_REQUEST | NLM_F_ACK,
            ) {
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {}
                other => {
                    other?;
                }
            }
        }
        let leaves: BTreeMap<u32, (TcHandle, String)> = self
            .qdiscs(ifindex)?
            .into_iter()
            .map(|q| (q.parent.into(), (q.handle, q.kind)))
            .collect();
        for c in classes {
            let handle = htb_handle(c.minor);
            let opts = TcAttribute::Options(htb_class_options(c));
            let msg = Self::tc_message(
                ifindex,
                parent_handle(c.parent),
                handle,
                Some("htb"),
                Some(opts),
            );
            self.request(RouteNetlinkMessage::NewTrafficClass(msg), Self::MODIFY)?;
            let Some(bytes) = c.queue else { continue };
            // tc_fifo_qopt: the limit, bytes for a bfifo; TCA_OPTIONS is the struct itself.
            const TCA_OPTIONS: u16 = 2;
            let limit = (bytes.min(u64::from(u32::MAX)) as u32)
                .to_ne_bytes()
                .to_vec();
            let opts = TcAttribute::Other(DefaultNla::new(TCA_OPTIONS, limit));
            // A bfifo there already is changed (its frames stay); else one replaces the
            // default leaf.
            let existing = match leaves.get(&u32::from(handle)) {
                Some((h, k)) if k == "bfifo" => *h,
                _ => TcHandle::UNSPEC,
            };
            let msg = Self::tc_message(ifindex, handle, existing, Some("bfifo"), Some(opts));
            self.request(RouteNetlinkMessage::NewQueueDiscipline(msg), Self::MODIFY)?;
        }
        Ok(fresh)
    }

    /// The interfaces whose root qdisc is Violin's HTB (in this namespace).
    pub fn htb_roots(&mut self) -> io::Result<Vec<u32>> {
        Ok(self
            .all_qdiscs()?
            .iter()
            .filter(|q| q.is_violin_root())
            .map(|q| q.ifindex)
            .collect())
    }

    /// Gives interface `ifindex` back the kernel's default qdisc if its root is the HTB
    /// tree [`Rtnl::ensure_htb`] put there.
    pub fn remove_htb(&mut self, ifindex: u32) -> io::Result<()> {
        if !self.qdiscs(ifindex)?.iter().any(Qdisc::is_violin_root) {
            return Ok(());
        }
        let root = htb_root();
        let msg = Self::tc_message(ifindex, TcHandle::ROOT, root, None, None);
        self.request(
            RouteNetlinkMessage::DelQueueDiscipline(msg),
            NLM_F_REQUEST | NLM_F_ACK,
        )
        .map(|_| ())
    }

    /// The usable neighbour entries, IPv4 and IPv6.
    pub fn neighbours(&mut self) -> io::Result<BTreeMap<NeighbourKey, [u8; 6]>> {
        let mut msg = NeighbourMessage::default();
        msg.header.family = AddressFamily::Unspec;
        let answers = self.request(
            RouteNetlinkMessage::GetNeighbour(msg),
            NLM_F_REQUEST | NLM_F_DUMP,
        )?;
        Ok(answers
            .iter()
            .filter_map(|m| match m {
                RouteNetlinkMessage::NewNeighbour(n) => neighbour_of(n, false),
                _ => None,
            })
            .filter_map(|(key, mac)| Some((key, mac?)))
            .collect())
    }
}

/// The neighbour table as the kernel last announced it, shared by the watcher (which
/// writes it) and the daemon (which waits on it when a change needs next hops now).
#[derive(Default)]
pub struct Neighbours {
    table: Mutex<BTreeMap<NeighbourKey, [u8; 6]>>,
    changed: Condvar,
}

impl Neighbours {
    /// The MAC of neighbour `ip` on interface `ifindex`; for an address that is not
    /// link-local, on whichever interface the kernel learned it if not there (the
    /// underlay's address may sit on a bridge or bond above the NIC Violin attaches to).
    /// A link-local address names a neighbour on its own link only.
    pub fn get(&self, ifindex: u32, ip: IpAddr) -> Option<[u8; 6]> {
        Self::lookup(&self.table.lock().unwrap(), ifindex, ip)
    }

    fn lookup(t: &BTreeMap<NeighbourKey, [u8; 6]>, ifindex: u32, ip: IpAddr) -> Option<[u8; 6]> {
        if let Some(mac) = t.get(&(ifindex, ip)) {
            return Some(*mac);
        }
        let scoped = matches!(ip, IpAddr::V6(a) if a.is_unicast_link_local());
        if scoped {
            return None;
        }
        t.iter().find(|((_, a), _)| *a == ip).map(|(_, mac)| *mac)
    }

    fn set(&self, key: NeighbourKey, mac: Option<[u8; 6]>) {
        let mut t = self.table.lock().unwrap();
        match mac {
            Some(m) => t.insert(key, m),
            None => t.remove(&key),
        };
        self.changed.notify_all();
    }

    fn replace(&self, table: BTreeMap<NeighbourKey, [u8; 6]>) {
        *self.table.lock().unwrap() = table;
        self.changed.notify_all();
    }

    /// Waits until every address of `ips` is known on interface `ifindex`, or
    /// `deadline`; says whether all are.
    pub fn wait_for(&self, ifindex: u32, ips: &[IpAddr], deadline: Instant) -> bool {
        let mut t = self.table.lock().unwrap();
        loop {
            if ips
                .iter()
                .all(|ip| Self::lookup(&t, ifindex, *ip).is_some())
            {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            t = self.changed.wait_timeout(t, left).unwrap().0;
        }
    }
}

/// Subscribes to neighbour, link and (the underlay family's) route announcements, loads
/// the neighbour table, and from then on keeps it current and hands every fact to `send`
/// (on a thread of its own, for as long as `send` returns true).
pub fn watch(
    v6: bool,
    send: impl Fn(Fact) -> bool + Send + 'static,
) -> io::Result<Arc<Neighbours>> {
    let mut socket = Socket::new(NETLINK_ROUTE)?;
    socket.bind_auto()?;
    // Only the underlay's family's routes: an IPv4 host would otherwise look up every
    // peer's next hop again each time a VM port's link-local IPv6 route comes or goes.
    let routes = match v6 {
        false => libc::RTNLGRP_IPV4_ROUTE,
        true => libc::RTNLGRP_IPV6_ROUTE,
    };
    for group in [libc::RTNLGRP_NEIGH, libc::RTNLGRP_LINK, routes] {
        socket.add_membership(group)?;
    }
    // Subscribed first, then the dump: no change between the two is missed.
    let neighbours = Arc::new(Neighbours::default());
    for (key, mac) in Rtnl::open()?.neighbours()? {
        neighbours.set(key, Some(mac));
    }
    let shared = neighbours.clone();
    std::thread::Builder::new()
        .name("netlink".into())
        .spawn(move || loop {
            let data = match socket.recv_from_full() {
                Ok((d, _)) => d,
                Err(e) => {
                    // ENOBUFS: the kernel dropped announcements. Read the neighbour table
                    // again and have the daemon look at links and routes again.
                    warn!(error = %e, "netlink announcements lost; re-reading host facts");
                    match Rtnl::open().and_then(|mut r| r.neighbours()) {
                        Ok(table) => shared.replace(table),
                        Err(e) => warn!(error = %e, "cannot re-read the neighbour table"),
                    }
                    if !send(Fact::Resync) {
                        return;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
            };
            let payloads = match messages(&data) {
                Ok(p) => p,
                Err(e) => {
                    warn!(error = %e, "a netlink message violind cannot read");
                    continue;
                }
            };
            for (_, p) in payloads {
                let NetlinkPayload::InnerMessage(m) = p else {
                    continue;
                };
                let Some(fact) = fact_of(m) else { continue };
                if let Fact::Neighbour { ifindex, ip, mac } = &fact {
                    shared.set((*ifindex, *ip), *mac);
                }
                if !send(fact) {
                    return;
                }
            }
        })?;
    Ok(neighbours)
}

#[cfg(test)]
mod tests {
    use super::*;
    use netlink_packet_route::neighbour::NeighbourHeader;

    fn neigh(state: NeighbourState, mac: Option<[u8; 6]>) -> NeighbourMessage {
        let mut m = NeighbourMessage::default();
        m.header = NeighbourHeader {
            family: AddressFamily::Inet,
            ifindex: 7,
            state,
            ..NeighbourHeader::default()
        };
        m.attributes
            .push(NeighbourAttribute::Destination(NeighbourAddress::Inet(
                [10, 0, 0, 2].into(),
            )));
        if let Some(mac) = mac {
            m.attributes
                .push(NeighbourAttribute::LinkLayerAddress(mac.to_vec()));
        }
        m
    }

    #[test]
    fn neighbour_announcements_become_facts() {
        let mac = [2, 0xaa, 0, 0, 0, 2];
        let ip = IpAddr::from([10, 0, 0, 2]);
        let fact = |mac| {
            Some(Fact::Neighbour {
                ifindex: 7,
                ip,
                mac,
            })
        };
        let reachable =
            RouteNetlinkMessage::NewNeighbour(neigh(NeighbourState::Reachable, Some(mac)));
        assert_eq!(fact_of(reachable), fact(Some(mac)));
        let stale = RouteNetlinkMessage::NewNeighbour(neigh(NeighbourState::Stale, Some(mac)));
        assert_eq!(fact_of(stale), fact(Some(mac)));
        let failed = RouteNetlinkMessage::NewNeighbour(neigh(NeighbourState::Failed, Some(mac)));
        assert_eq!(fact_of(failed), fact(None));
        let gone = RouteNetlinkMessage::DelNeighbour(neigh(NeighbourState::Reachable, Some(mac)));
        assert_eq!(fact_of(gone), fact(None));
    }

    #[test]
    fn a_waiter_wakes_when_the_neighbour_arrives() {
        let n = Arc::new(Neighbours::default());
        let ip = IpAddr::from([10, 0, 0, 9]);
        let setter = n.clone();
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            setter.set((3, ip), Some([2, 0, 0, 0, 0, 9]));
        });
        assert!(n.wait_for(3, &[ip], Instant::now() + Duration::from_secs(5)));
        t.join().unwrap();
        assert!(!n.wait_for(3, &[[10, 0, 0, 10].into()], Instant::now()));
        // A global address is found wherever it was learned; a link-local one only on its
        // own link, where another interface's neighbour of that address is another one.
        assert_eq!(n.get(4, ip), Some([2, 0, 0, 0, 0, 9]));
        let router: IpAddr = "fe80::1".parse().unwrap();
        n.set((5, router), Some([2, 0, 0, 0, 0, 5]));
        assert_eq!(n.get(5, router), Some([2, 0, 0, 0, 0, 5]));
        assert_eq!(n.get(3, router), None);
        assert!(!n.wait_for(3, &[router], Instant::now()));
    }
}

/// Against the kernel itself: the FIB answers for loopback (on-link, so the address is
/// its own next hop) and the neighbour table can be read.
#[cfg(test)]
mod kernel {
    use super::*;

    #[test]
    fn the_kernel_answers_route_and_neighbour_requests() {
        let mut rtnl = Rtnl::open().expect("rtnetlink socket");
        let lo = IpAddr::from([127, 0, 0, 1]);
        assert_eq!(rtnl.next_hop(lo).unwrap(), Some(lo));
        rtnl.neighbours().expect("neighbour dump");
        // A second request on the same socket still pairs answers with requests.
        assert_eq!(rtnl.next_hop(lo).unwrap(), Some(lo));
    }

    /// The HTB tree is installed, changed in place and removed in a namespace of its own
    /// (the test thread's), on a veth made there.
    #[test]
    fn htb_trees_are_installed_changed_and_removed() {
        std::thread::spawn(|| {
            // SAFETY: unshare only changes this thread's namespaces.
            let rc = unsafe { libc::unshare(libc::CLONE_NEWNET) };
            assert_eq!(rc, 0, "unshare (root?)");
            let ip = std::process::Command::new("ip")
                .args(["link", "add", "ta", "type", "veth", "peer", "name", "tb"])
                .status()
                .expect("ip");
            assert!(ip.success());
            let ifindex = crate::netdev::ifindex("ta").expect("ta");
            let mut rtnl = Rtnl::open().unwrap();
            let leaf = |parent, minor, rate| HtbClass {
                parent,
                minor,
                rate,
                ceil: rate,
                burst: 65536,
                queue: Some(1 << 20),
            };
            let vm = HtbClass {
                queue: None,
                ..leaf(0, 0xF001, 5_000_000)
            };
            let tree = vec![
                vm.clone(),
                leaf(0xF001, 0xF101, 2_500_000),
                leaf(0xF001, 1, 1_250_000),
                leaf(0, 2, 125_000_000_000),
            ];
            assert!(rtnl.ensure_htb(ifindex, -50, &tree).unwrap());
            let handle = |minor| u32::from(htb_handle(minor));
            let classes = |rtnl: &mut Rtnl| -> BTreeMap<u32, u32> {
                rtnl.classes(ifindex)
                    .unwrap()
                    .into_iter()
                    .map(|(p, h)| (u32::from(h), u32::from(p)))
                    .collect()
            };
            let root = u32::from(TcHandle::ROOT);
            let want = BTreeMap::from([
                (handle(0xF001), root),
                (handle(0xF101), handle(0xF001)),
                (handle(1), handle(0xF001)),
                (handle(2), root),
            ]);
            assert_eq!(classes(&mut rtnl), want);
            let bfifos = |rtnl: &mut Rtnl| {
                rtnl.qdiscs(ifindex)
                    .unwrap()
                    .into_iter()
                    .filter(|q| q.kind == "bfifo")
                    .count()
            };
            assert_eq!(bfifos(&mut rtnl), 3);
            // Pair 1 leaves the VM's class for the root, pair 2 goes: the root stays.
            let moved = vec![vm, leaf(0xF001, 0xF101, 5_000_000), leaf(0, 1, 1_250_000)];
            assert!(!rtnl.ensure_htb(ifindex, -50, &moved).unwrap());
            let want = BTreeMap::from([
                (handle(0xF001), root),
                (handle(0xF101), handle(0xF001)),
                (handle(1), root),
            ]);
            assert_eq!(classes(&mut rtnl), want);
            assert_eq!(bfifos(&mut rtnl), 2);
            assert_eq!(rtnl.htb_roots().unwrap(), vec![ifindex]);
            rtnl.remove_htb(ifindex).unwrap();
            assert!(rtnl.htb_roots().unwrap().is_empty());
            assert!(classes(&mut rtnl).is_empty());
            assert!(rtnl
                .qdiscs(ifindex)
                .unwrap()
                .iter()
                .all(|q| q.kind != "htb"));
        })
        .join()
        .unwrap();
    }
}
