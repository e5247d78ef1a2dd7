//! A tap device with the test process as its "guest": frames written to the tap fd enter
//! the host as a VM's would (as QEMU's would), and frames for the VM are read back.
use std::{
    fs::{File, OpenOptions},
    io::{Read, Write},
    net::Ipv4Addr,
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};

use crate::sys::{in_netns, ns_run};

pub struct TapGuest {
    file: File,
}

const IFF_TAP: libc::c_short = 0x0002;
const IFF_NO_PI: libc::c_short = 0x1000;
const TUNSETIFF: libc::c_ulong = 0x4004_54ca;

impl TapGuest {
    /// Creates tap `name` in namespace `ns` with `mtu`, up, and attaches to it.
    pub fn create(ns: &str, name: &str, mtu: u32) -> Result<TapGuest> {
        ns_run(ns, "ip", &["tuntap", "add", "dev", name, "mode", "tap"])?;
        ns_run(
            ns,
            "ip",
            &["link", "set", name, "mtu", &mtu.to_string(), "up"],
        )?;
        let name = name.to_string();
        let file = in_netns(ns, move || {
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .open("/dev/net/tun")
                .context("opening /dev/net/tun")?;
            // SAFETY: libc::ifreq is a c_char name array plus a union of integers, sockaddrs
            // and a raw pointer; all-zero is a valid value for each.
            let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
            for (d, s) in ifr.ifr_name.iter_mut().zip(name.bytes()) {
                *d = s as libc::c_char;
            }
            ifr.ifr_ifru.ifru_flags = IFF_TAP | IFF_NO_PI;
            // SAFETY: `file` is the open /dev/net/tun File and `&mut ifr` points at a live,
            // writable ifreq for the call, the struct TUNSETIFF reads (name, ifru_flags) and
            // writes back. Its name is NUL-terminated: `ip tuntap add` above accepted it, so
            // it is at most 15 bytes, and the rest of the zeroed ifr_name stays 0.
            if unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut ifr) } < 0 {
                bail!("TUNSETIFF {name}: {}", std::io::Error::last_os_error());
            }
            // SAFETY: F_GETFL and F_SETFL take and return plain integers and access no memory
            // of ours; `file` is the File opened above and stays open for both calls.
            unsafe {
                let fl = libc::fcntl(file.as_raw_fd(), libc::F_GETFL);
                libc::fcntl(file.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK);
            }
            Ok(file)
        })?;
        Ok(TapGuest { file })
    }

    pub fn send(&mut self, frame: &[u8]) -> Result<()> {
        self.file.write_all(frame).context("writing to the tap")
    }

    /// The next frame for which `want` holds, within `timeout`.
    pub fn recv_matching(
        &mut self,
        timeout: Duration,
        want: impl Fn(&[u8]) -> bool,
    ) -> Result<Vec<u8>> {
        let deadline = Instant::now() + timeout;
        let mut buf = vec![0u8; 65536];
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                bail!("no matching frame on the tap within {timeout:?}");
            }
            let mut pfd = libc::pollfd {
                fd: self.file.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `pfd` is a live pollfd on this stack frame and nfds is 1, so the kernel
            // touches only that struct; its fd is self.file's, open while `self` is borrowed.
            unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) };
            match self.file.read(&mut buf) {
                Ok(n) if want(&buf[..n]) => return Ok(buf[..n].to_vec()),
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(e).context("reading the tap"),
            }
        }
    }
}

fn checksum(data: &[u8]) -> [u8; 2] {
    let mut sum: u32 = data
        .chunks(2)
        .map(|w| u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]) as u32)
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    (!(sum as u16)).to_be_bytes()
}

/// Broadcast ARP request "who has `target`" from (`mac`, `ip`).
pub fn arp_request(mac: [u8; 6], ip: Ipv4Addr, target: Ipv4Addr) -> Vec<u8> {
    let mut f = vec![0xff; 6];
    f.extend_from_slice(&mac);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&mac);
    f.extend_from_slice(&ip.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&target.octets());
    f.resize(60, 0);
    f
}

/// The sender MAC of an ARP reply to `ip` about `target`, if `f` is one.
pub fn arp_reply_from(f: &[u8], ip: Ipv4Addr, target: Ipv4Addr) -> Option<[u8; 6]> {
    let is_reply = f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 2];
    if is_reply && f[28..32] == target.octets() && f[38..42] == ip.octets() {
        f[22..28].try_into().ok()
    } else {
        None
    }
}

/// An ICMP echo request with `payload` bytes of data.
pub fn icmp_echo(
    src: ([u8; 6], Ipv4Addr),
    dst: ([u8; 6], Ipv4Addr),
    seq: u16,
    payload: usize,
) -> Vec<u8> {
    let mut icmp = vec![8, 0, 0, 0, 0x12, 0x34];
    icmp.extend_from_slice(&seq.to_be_bytes());
    icmp.extend((0..payload).map(|i| i as u8));
    let c = checksum(&icmp);
    icmp[2..4].copy_from_slice(&c);
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + icmp.len()) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 0, 0x40, 0, 64, 1, 0, 0]);
    ip.extend_from_slice(&src.1.octets());
    ip.extend_from_slice(&dst.1.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c);
    let mut f = dst.0.to_vec();
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend_from_slice(&ip);
    f.extend_from_slice(&icmp);
    f
}

/// Whether `f` is an ICMP echo reply with sequence `seq` from `from`.
pub fn is_echo_reply(f: &[u8], from: Ipv4Addr, seq: u16) -> bool {
    f.len() >= 42
        && f[12..14] == [0x08, 0x00]
        && f[23] == 1
        && f[26..30] == from.octets()
        && f[34] == 0
        && f[40..42] == seq.to_be_bytes()
}
