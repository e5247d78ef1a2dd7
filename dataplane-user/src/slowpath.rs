//! The slow path: broadcast, multicast and unknown-unicast frames reach `violind` through
//! AF_XDP sockets (one per interface and rx queue, registered in the XSKMAP) and are
//! replicated here: to every other local port of the environment, and, encapsulated, once
//! to every remote host serving it (head-end replication). Frames from the underlay are
//! delivered to local ports only (split horizon), so a flood never loops; only a star's
//! hub, to which the other hosts flood alone, relays them on to its other peers.
use std::{
    net::IpAddr,
    num::NonZeroU32,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, RwLock,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{anyhow, Context, Result};
use dataplane_common::{
    maps::addr_words,
    packet::{
        classify_underlay, classify_underlay6, flow_hash, source_port, OuterHeaders, OuterHeaders6,
        Tunnel, Tunnel6, UnderlayVerdict, INNER_OFFSET, INNER_OFFSET_V6,
    },
};
use std::io::Write;
use tracing::{debug, info, warn};
use xsk_rs::{
    config::{BindFlags, FrameSize, Interface, LibxdpFlags, QueueSize, SocketConfig, UmemConfig},
    CompQueue, FillQueue, FrameDesc, RxQueue, Socket, TxQueue, Umem,
};

use crate::{host::Paths, topology::Topology};

const FRAMES: u32 = 512;
const RING: u32 = 256;
const FRAME_SIZE: u32 = 4096;
const BATCH: usize = 64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    Port { vni: u32 },
    Underlay,
}

/// Counters of one socket, written to `slowpath.json` for `violind stats`.
pub type XskCounters = violin_api::stats::SlowPathSocket;

pub struct Xsk {
    side: Side,
    /// The interface the socket is bound to: a port re-created under the same name is a
    /// new interface and needs a new socket.
    ifindex: u32,
    umem: Umem,
    tx: TxQueue,
    rx: RxQueue,
    fq: FillQueue,
    cq: CompQueue,
    tx_free: Vec<FrameDesc>,
    counters: XskCounters,
}

fn socket_config() -> Result<SocketConfig> {
    Ok(SocketConfig::builder()
        .rx_queue_size(QueueSize::new(RING)?)
        .tx_queue_size(QueueSize::new(RING)?)
        // Violin's own XDP program redirects into the XSKMAP; libxdp must not load its own.
        .libxdp_flags(LibxdpFlags::XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD)
        // veth and tap have no zero-copy mode.
        .bind_flags(BindFlags::XDP_COPY)
        .build())
}

impl Xsk {
    fn open(ifname: &str, queue: u32, side: Side) -> Result<Xsk> {
        let umem_config = UmemConfig::builder()
            .frame_size(FrameSize::new(FRAME_SIZE)?)
            .fill_queue_size(QueueSize::new(RING)?)
            .comp_queue_size(QueueSize::new(RING)?)
            .build()?;
        let (umem, mut descs) = Umem::new(umem_config, NonZeroU32::new(FRAMES).unwrap(), false)
            .map_err(|e| anyhow!("UMEM for {ifname}: {e}"))?;
        let iface = Interface::new(std::ffi::CString::new(ifname)?);
        // Rebinding a queue right after the previous socket closed can fail with EBUSY
        // for a moment.
        let mut attempt = 0;
        let (tx, rx, fq_cq) = loop {
            // SAFETY: Socket::new requires XSK_LIBXDP_FLAGS_INHIBIT_PROG_LOAD when the UMEM is
            // shared and the (interface, queue) pair is already bound, else dropping sockets
            // can double-free. `umem` was created just above for this one socket, and
            // socket_config() sets that flag anyway, so the requirement holds on every retry.
            match unsafe { Socket::new(socket_config()?, &umem, &iface, queue) } {
                Ok(s) => break s,
                Err(e) if attempt < 40 => {
                    debug!(iface = ifname, queue, error = %e, "AF_XDP bind failed; retrying");
                    attempt += 1;
                    thread::sleep(Duration::from_millis(50));
                }
                Err(e) => return Err(anyhow!("AF_XDP socket on {ifname} queue {queue}: {e}")),
            }
        };
        let (mut fq, cq) = fq_cq.ok_or_else(|| anyhow!("no fill/completion queue"))?;
        let tx_free = descs.split_off(descs.len() / 2);
        // SAFETY: `descs` came from Umem::new for `umem`, the UMEM `fq` belongs to. They are
        // the first half of its frames, disjoint from `tx_free` (the second half), and none
        // has been given to any ring yet, so handing them to the kernel creates no aliasing.
        let filled = unsafe { fq.produce(&descs) };
        if filled != descs.len() {
            return Err(anyhow!(
                "fill ring of {ifname} took {filled} of {}",
                descs.len()
            ));
        }
        Ok(Xsk {
            side,
            ifindex: crate::netdev::ifindex(ifname).unwrap_or(0),
            umem,
            tx,
            rx,
            fq,
            cq,
            tx_free,
            counters: XskCounters {
                interface: ifname.to_string(),
                queue,
                ..Default::default()
            },
        })
    }

    fn fd(&self) -> i32 {
        self.rx.fd().as_raw_fd()
    }

    /// Takes back transmit frames the kernel is done with.
    fn reclaim(&mut self) {
        let mut done = [FrameDesc::default(); BATCH];
        loop {
            // SAFETY: self.cq is the completion ring of self.umem, and `done` is scratch space
            // it overwrites; it yields frames of that UMEM the kernel has finished sending, so
            // they are in no ring any more and may rejoin tx_free.
            let n = unsafe { self.cq.consume(&mut done) };
            self.tx_free.extend_from_slice(&done[..n]);
            if n < BATCH {
                break;
            }
        }
    }

    /// Sends one frame made of `head` followed by `body`.
    fn send(&mut self, head: &[u8], body: &[u8]) {
        if self.tx_free.is_empty() {
            self.reclaim();
        }
        let Some(mut desc) = self.tx_free.pop() else {
            self.counters.tx_no_frame += 1;
            return;
        };
        // SAFETY: `desc` was popped from tx_free, which holds frames of self.umem that are in
        // no ring (never given to the fill ring, returned by the completion ring, or refused by
        // the tx ring), so nothing else, kernel or user space, accesses this frame while
        // `data` lives. The cursor keeps writes inside the frame.
        let written = unsafe {
            let mut data = self.umem.data_mut(&mut desc);
            let mut cur = data.cursor();
            cur.write_all(head).and_then(|_| cur.write_all(body))
        };
        if written.is_err() {
            self.counters.dropped += 1;
            self.tx_free.push(desc);
            return;
        }
        // SAFETY: self.tx is the tx ring of self.umem's socket and `desc` is a frame of that
        // UMEM held only by us (its `data` view has ended) and in no other ring; once
        // submitted it is not touched again until reclaim() takes it from the completion
        // ring. produce is all-or-nothing: on 0 nothing was submitted and the frame is ours.
        if unsafe { self.tx.produce(std::slice::from_ref(&desc)) } == 0 {
            self.counters.tx_no_frame += 1;
            self.tx_free.push(desc);
            return;
        }
        self.counters.tx += 1;
        // The frame is the kernel's now, whatever the wakeup says: a failed one (EAGAIN
        // while the ring drains) leaves it for the next wakeup, and its descriptor comes
        // back through the completion ring as usual.
        if self.tx.needs_wakeup() {
            let _ = self.tx.wakeup();
        }
    }

    fn refresh_kernel_counters(&mut self) {
        if let Ok(s) = self.rx.fd().xdp_statistics() {
            self.counters.kernel_rx_dropped = s.rx_dropped();
            self.counters.kernel_rx_ring_full = s.rx_ring_full();
            self.counters.kernel_fill_ring_empty = s.rx_fill_ring_empty_descs();
        }
    }
}

/// A running slow path; dropping it stops the thread and closes the sockets.
pub struct SlowPath {
    stop: Arc<AtomicBool>,
    /// Wakes the thread out of poll(2) when it is asked to stop.
    wake: OwnedFd,
    handle: Option<thread::JoinHandle<Vec<Xsk>>>,
}

/// A socket the slow path wants: interface, queue, role and XSKMAP index.
type Wanted = (String, u32, Side, u32);

/// Every socket a topology needs: one per queue of the underlay and of each port.
fn wanted_sockets(topo: &Topology) -> Vec<Wanted> {
    let mut wanted = Vec::new();
    let cfg = topo.host_config();
    for q in 0..cfg.underlay_queues {
        wanted.push((
            topo.underlay.name.clone(),
            q,
            Side::Underlay,
            cfg.underlay_xsk_base + q,
        ));
    }
    for p in &topo.ports {
        for q in 0..p.queues() {
            let side = Side::Port { vni: p.vni };
            wanted.push((p.dev.name.clone(), q, side, p.xsk_base() + q));
        }
    }
    wanted
}

/// The sockets for `wanted`, in order: those of `reuse` that still fit (same interface,
/// queue and role) are kept, since rebinding a queue just released fails for a while;
/// the rest are opened. Returns them with how many were kept.
fn bind_sockets(wanted: &[Wanted], mut reuse: Vec<Xsk>) -> Result<(Vec<Xsk>, usize)> {
    let mut slots: Vec<Option<Xsk>> = wanted
        .iter()
        .map(|(name, q, side, _)| {
            let ifindex = crate::netdev::ifindex(name).unwrap_or(0);
            let i = reuse.iter().position(|x| {
                &x.counters.interface == name
                    && x.counters.queue == *q
                    && x.side == *side
                    && x.ifindex == ifindex
            })?;
            Some(reuse.swap_remove(i))
        })
        .collect();
    let kept = slots.iter().filter(|s| s.is_some()).count();
    // Closing a socket waits for the kernel (an RCU grace period): not on this path.
    if !reuse.is_empty() {
        thread::spawn(move || drop(reuse));
    }
    // Opening one costs about as much (UMEM pinning, bind): the new ones open at once.
    let opened: Vec<(usize, Result<Xsk>)> = thread::scope(|scope| {
        let handles: Vec<_> = slots
            .iter()
            .enumerate()
            .filter(|(_, s)| s.is_none())
            .map(|(i, _)| {
                let (name, q, side, _) = wanted[i].clone();
                (i, scope.spawn(move || Xsk::open(&name, q, side)))
            })
            .collect();
        handles
            .into_iter()
            .map(|(i, h)| {
                let r = h
                    .join()
                    .unwrap_or_else(|_| Err(anyhow!("opening a socket panicked")));
                (i, r)
            })
            .collect()
    });
    for (i, r) in opened {
        slots[i] = Some(r?);
    }
    let sockets = slots
        .into_iter()
        .map(|s| s.expect("every slot filled"))
        .collect();
    Ok((sockets, kept))
}

impl SlowPath {
    /// Binds a socket per interface and queue of `topology` and starts the thread.
    /// Sockets in `reuse` that still fit (same interface, queue and role) are kept rather
    /// than closed and rebound: rebinding a queue just released fails for a while.
    pub fn start(
        topology: Arc<RwLock<Topology>>,
        paths: &Paths,
        reuse: Vec<Xsk>,
    ) -> Result<SlowPath> {
        let mut xsk_map = crate::datapath::open_xsk_map(paths)?;
        let wanted = wanted_sockets(&topology.read().unwrap());
        let (sockets, kept) = bind_sockets(&wanted, reuse)?;
        for ((name, _, _, index), xsk) in wanted.iter().zip(&sockets) {
            xsk_map
                .set(*index, xsk.fd(), 0)
                .with_context(|| format!("registering the AF_XDP socket of {name}"))?;
        }
        info!(sockets = sockets.len(), kept, "slow path bound");
        let stop = Arc::new(AtomicBool::new(false));
        // SAFETY: eventfd(2) takes only integer arguments and accesses no memory of ours; the
        // result is checked below before being wrapped in an OwnedFd.
        let wake = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if wake < 0 {
            return Err(std::io::Error::last_os_error()).context("eventfd for the slow path");
        }
        // SAFETY: `wake` is the non-negative descriptor eventfd just returned; nothing else
        // holds or closes it, so the OwnedFd becomes its sole owner.
        let wake = unsafe { OwnedFd::from_raw_fd(wake) };
        let stats_path = paths.slow_path_stats();
        let handle = thread::Builder::new().name("slow-path".into()).spawn({
            let stop = stop.clone();
            let wake = wake.as_raw_fd();
            move || run(sockets, topology, stop, wake, stats_path)
        })?;
        Ok(SlowPath {
            stop,
            wake,
            handle: Some(handle),
        })
    }

    /// Stops the thread and hands its sockets back (for [`SlowPath::start`] to reuse).
    pub fn stop(mut self) -> Vec<Xsk> {
        self.halt()
    }

    fn halt(&mut self) -> Vec<Xsk> {
        self.stop.store(true, Ordering::Relaxed);
        let one: u64 = 1;
        // SAFETY: `&one` points at a live u64 on this stack frame, valid for reads of the
        // size_of::<u64>() bytes passed, and self.wake is the eventfd this SlowPath owns,
        // open while `self` is borrowed.
        unsafe {
            libc::write(
                self.wake.as_raw_fd(),
                (&one as *const u64).cast(),
                std::mem::size_of::<u64>(),
            )
        };
        self.handle
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for SlowPath {
    fn drop(&mut self) {
        drop(self.halt());
    }
}

/// Index of the socket transmitting on an interface (its queue 0).
fn tx_socket(sockets: &[Xsk], ifname: &str) -> Option<usize> {
    sockets
        .iter()
        .position(|s| s.counters.interface == ifname && s.counters.queue == 0)
}

fn run(
    mut sockets: Vec<Xsk>,
    topology: Arc<RwLock<Topology>>,
    stop: Arc<AtomicBool>,
    wake: RawFd,
    stats_path: std::path::PathBuf,
) -> Vec<Xsk> {
    let mut pollfds: Vec<libc::pollfd> = sockets
        .iter()
        .map(|s| libc::pollfd {
            fd: s.fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    // Last: only wakes the loop to look at `stop`.
    pollfds.push(libc::pollfd {
        fd: wake,
        events: libc::POLLIN,
        revents: 0,
    });
    let mut descs = [FrameDesc::default(); BATCH];
    let mut frame = Vec::with_capacity(FRAME_SIZE as usize);
    let mut last_stats = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        // SAFETY: pollfds is a live Vec<pollfd> and nfds is exactly its length, so the kernel
        // reads and writes only within it. Its fds are the sockets' (owned by `sockets`) and
        // the eventfd, whose OwnedFd SlowPath keeps until halt() has joined this thread.
        // A second at most: the counters go out once a second, and a forwarding host
        // pays for every needless wake-up.
        let n = unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, 1000) };
        if n > 0 {
            for i in 0..sockets.len() {
                if pollfds[i].revents & libc::POLLIN == 0 {
                    continue;
                }
                // SAFETY: sockets[i].rx is the rx ring of sockets[i].umem, and `descs` is
                // scratch space it overwrites; it yields frames of that same UMEM the kernel
                // has filled and handed back to user space.
                let got = unsafe { sockets[i].rx.consume(&mut descs) };
                for desc in &descs[..got] {
                    frame.clear();
                    // SAFETY: desc was just consumed from socket i's rx ring, so it is a frame
                    // of sockets[i].umem that the kernel no longer writes and that is in no
                    // ring; no mutable view of it exists (send() writes only tx_free frames,
                    // which are disjoint), and the Data view ends once copied into `frame`.
                    frame.extend_from_slice(unsafe { sockets[i].umem.data(desc) }.contents());
                    sockets[i].counters.rx += 1;
                    let topo = topology.read().unwrap();
                    replicate(&mut sockets, i, &frame, &topo);
                }
                // SAFETY: these are frames of sockets[i].umem, the UMEM of sockets[i].fq, just
                // consumed from its rx ring; their contents were copied out, no view of them
                // remains, and they are in neither the tx ring nor tx_free. (The count is not
                // checked; the fill ring has room for all RING receive frames anyway.)
                unsafe { sockets[i].fq.produce(&descs[..got]) };
            }
        }
        if last_stats.elapsed() >= Duration::from_secs(1) {
            last_stats = Instant::now();
            write_stats(&mut sockets, &stats_path);
        }
    }
    write_stats(&mut sockets, &stats_path);
    sockets
}

fn replicate(sockets: &mut [Xsk], from: usize, frame: &[u8], topo: &Topology) {
    match sockets[from].side {
        Side::Underlay => {
            let Some((vni, peer, inner)) = from_peer(frame, topo) else {
                sockets[from].counters.dropped += 1;
                return;
            };
            for port in topo.ports_in(vni) {
                if let Some(t) = tx_socket(sockets, &port.dev.name) {
                    sockets[t].send(&[], inner);
                }
            }
            if topo.is_hub(vni) {
                let others = topo.peers_serving(vni).filter(|p| p.addr != peer);
                encapsulate(sockets, from, inner, vni, others, topo);
            }
        }
        Side::Port { vni } => {
            let src_if = sockets[from].counters.interface.clone();
            for port in topo.ports_in(vni).filter(|p| p.dev.name != src_if) {
                if let Some(t) = tx_socket(sockets, &port.dev.name) {
                    sockets[t].send(&[], frame);
                }
            }
            encapsulate(sockets, from, frame, vni, topo.flood_peers(vni), topo);
        }
    }
}

/// A valid VXLAN packet from a configured peer, over the host's underlay family: its VNI,
/// its sender and the inner frame.
fn from_peer<'f>(frame: &'f [u8], topo: &Topology) -> Option<(u32, IpAddr, &'f [u8])> {
    let known = |a: IpAddr| topo.peers.iter().any(|p| p.addr == a).then_some(());
    match topo.underlay_addr {
        IpAddr::V4(local) => {
            let known = |a: [u8; 4]| known(a.into());
            match classify_underlay(frame, local.octets(), known) {
                UnderlayVerdict::Vxlan(v) => Some((
                    v.vni,
                    v.peer.into(),
                    &frame[INNER_OFFSET..INNER_OFFSET + v.inner_len],
                )),
                _ => None,
            }
        }
        IpAddr::V6(local) => {
            let known = |a: &[u8; 16]| known((*a).into());
            match classify_underlay6(frame, addr_words(local.octets()), known) {
                UnderlayVerdict::Vxlan(v) => Some((
                    v.vni,
                    v.peer.into(),
                    &frame[INNER_OFFSET_V6..INNER_OFFSET_V6 + v.inner_len],
                )),
                _ => None,
            }
        }
    }
}

/// One encapsulated copy of `frame` to each of `peers`.
fn encapsulate<'a>(
    sockets: &mut [Xsk],
    from: usize,
    frame: &[u8],
    vni: u32,
    peers: impl Iterator<Item = &'a crate::topology::Peer>,
    topo: &Topology,
) {
    if !topo.family().fits(frame.len(), topo.underlay_mtu) {
        sockets[from].counters.dropped += 1;
        return;
    }
    let Some(ul) = tx_socket(sockets, &topo.underlay.name) else {
        return;
    };
    let sport = source_port(flow_hash(frame, 0));
    for peer in peers {
        let Some(mac) = peer.next_hop_mac else {
            sockets[from].counters.dropped += 1;
            continue;
        };
        match (topo.underlay_addr, peer.addr) {
            (IpAddr::V4(src), IpAddr::V4(dst)) => {
                let tunnel = Tunnel {
                    src_mac: topo.underlay.mac,
                    dst_mac: mac,
                    src_ip: src.octets(),
                    dst_ip: dst.octets(),
                };
                let outer = OuterHeaders::new(&tunnel, vni, sport, frame.len());
                sockets[ul].send(outer.as_bytes(), frame);
            }
            (IpAddr::V6(src), IpAddr::V6(dst)) => {
                let tunnel = Tunnel6 {
                    src_mac: topo.underlay.mac,
                    dst_mac: mac,
                    src_ip: src.octets(),
                    dst_ip: dst.octets(),
                };
                let outer = OuterHeaders6::new(&tunnel, vni, sport, frame.len());
                sockets[ul].send(outer.as_bytes(), frame);
            }
            // The configuration admits no peer of another family.
            _ => sockets[from].counters.dropped += 1,
        }
    }
}

fn write_stats(sockets: &mut [Xsk], path: &std::path::Path) {
    for s in sockets.iter_mut() {
        s.reclaim();
        s.refresh_kernel_counters();
    }
    let all: Vec<&XskCounters> = sockets.iter().map(|s| &s.counters).collect();
    let tmp = path.with_extension("tmp");
    let res = serde_json::to_vec_pretty(&all)
        .map_err(anyhow::Error::from)
        .and_then(|b| Ok(std::fs::write(&tmp, b)?))
        .and_then(|_| Ok(std::fs::rename(&tmp, path)?));
    if let Err(e) = res {
        warn!(error = %e, path = %path.display(), "cannot write slow-path counters");
    }
}
