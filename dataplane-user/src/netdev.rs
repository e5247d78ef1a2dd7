//! Facts about network interfaces in the current network namespace, read through ioctls
//! (not /sys, which still shows the original namespace after setns).
use std::{
    ffi::CString,
    io,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
};

use anyhow::{bail, Context, Result};

/// An interface as the datapath needs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NetDev {
    pub name: String,
    pub ifindex: u32,
    pub mac: [u8; 6],
    pub mtu: u32,
    pub rx_queues: u32,
    /// A veth whose peer is in another network namespace (a VM's): TC can deliver into
    /// that peer directly (bpf_redirect_peer refuses a peer in its own namespace).
    pub peer_redirect: bool,
}

struct Socket(libc::c_int);

impl Socket {
    fn new() -> io::Result<Socket> {
        // SAFETY: socket(2) takes only integer arguments and accesses no memory of ours; the
        // result is checked below and then owned solely by the returned Socket.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Socket(fd))
    }

    /// The ethtool command whose request and answer is `cmd` (a repr(C) struct that
    /// starts with the command number and is as large as the kernel's for it).
    fn ethtool<T>(&self, name: &str, cmd: &mut T) -> io::Result<()> {
        let mut ifr = ifreq(name);
        ifr.ifr_ifru.ifru_data = (cmd as *mut T).cast();
        self.ioctl(libc::SIOCETHTOOL, &mut ifr)
    }

    fn ioctl(&self, request: libc::c_ulong, ifr: &mut libc::ifreq) -> io::Result<()> {
        // SAFETY: `ifr` is an exclusive reference to a live libc::ifreq, so the pointer is
        // valid for reads and writes of a whole ifreq during the call, and self.0 is the open
        // socket this wrapper owns. The requests used here (SIOCGIFHWADDR, SIOCGIFMTU,
        // SIOCETHTOOL) touch only the ifreq, except that SIOCETHTOOL also writes through
        // ifru_data, which `ethtool` points at its caller's live repr(C) command struct
        // (EthtoolChannels, EthtoolDrvinfo or EthtoolValue), of the size the kernel
        // writes for that command.
        if unsafe { libc::ioctl(self.0, request, ifr as *mut libc::ifreq) } < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

impl Drop for Socket {
    fn drop(&mut self) {
        // SAFETY: self.0 came from a successful socket() in Socket::new; Socket is neither
        // Clone nor Copy and never hands the fd out, so this is the only close of it.
        unsafe { libc::close(self.0) };
    }
}

fn ifreq(name: &str) -> libc::ifreq {
    // SAFETY: libc::ifreq is a c_char name array plus a union of integers, sockaddrs and a
    // raw pointer; all-zero is a valid value for each (ifru_data is then null).
    let mut ifr: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in ifr.ifr_name.iter_mut().zip(name.bytes().take(15)) {
        *dst = src as libc::c_char;
    }
    ifr
}

pub fn ifindex(name: &str) -> Option<u32> {
    let c = CString::new(name).ok()?;
    // SAFETY: `c` is a CString alive across the call, so the pointer is a valid
    // NUL-terminated string; if_nametoindex only reads it.
    let idx = unsafe { libc::if_nametoindex(c.as_ptr()) };
    (idx != 0).then_some(idx)
}

pub fn ifname(ifindex: u32) -> Option<String> {
    let mut buf = [0 as libc::c_char; libc::IF_NAMESIZE];
    // SAFETY: buf is a live, writable array of exactly IF_NAMESIZE c_chars, the size
    // if_indextoname requires for the name it writes.
    let p = unsafe { libc::if_indextoname(ifindex, buf.as_mut_ptr()) };
    if p.is_null() {
        return None;
    }
    // SAFETY: if_indextoname returned non-null, so it wrote a NUL-terminated name within
    // buf; buf outlives `s`, which is copied into a String right away.
    let s = unsafe { std::ffi::CStr::from_ptr(buf.as_ptr()) };
    Some(s.to_string_lossy().into_owned())
}

#[repr(C)]
#[derive(Default)]
struct EthtoolChannels {
    cmd: u32,
    max_rx: u32,
    max_tx: u32,
    max_other: u32,
    max_combined: u32,
    rx_count: u32,
    tx_count: u32,
    other_count: u32,
    combined_count: u32,
}

const ETHTOOL_GCHANNELS: u32 = 0x3c;

/// Receive queues in use; each gets its own slow-path socket. Devices without the
/// ethtool channels query (tap) have one.
fn rx_queues(sock: &Socket, name: &str) -> u32 {
    let mut ch = EthtoolChannels {
        cmd: ETHTOOL_GCHANNELS,
        ..Default::default()
    };
    if sock.ethtool(name, &mut ch).is_err() {
        return 1;
    }
    ch.rx_count.max(ch.combined_count).max(1)
}

#[repr(C)]
struct EthtoolDrvinfo {
    cmd: u32,
    driver: [u8; 32],
    version: [u8; 32],
    fw_version: [u8; 32],
    bus_info: [u8; 32],
    erom_version: [u8; 32],
    reserved2: [u8; 12],
    counts: [u32; 5],
}

const ETHTOOL_GDRVINFO: u32 = 0x3;

/// The device's driver name ("veth", "tun", ...), if it answers the ethtool query.
fn driver(sock: &Socket, name: &str) -> Option<String> {
    // SAFETY: made of integers and byte arrays only; all-zero is a valid value.
    let mut info: EthtoolDrvinfo = unsafe { std::mem::zeroed() };
    info.cmd = ETHTOOL_GDRVINFO;
    sock.ethtool(name, &mut info).ok()?;
    let end = info.driver.iter().position(|b| *b == 0).unwrap_or(32);
    Some(String::from_utf8_lossy(&info.driver[..end]).into_owned())
}

#[repr(C)]
struct EthtoolValue {
    cmd: u32,
    data: u32,
}

const ETHTOOL_GGRO: u32 = 0x2b;

/// Whether generic receive offload is on; `None` if the device does not answer.
pub fn gro(name: &str) -> Option<bool> {
    let sock = Socket::new().ok()?;
    let mut value = EthtoolValue {
        cmd: ETHTOOL_GGRO,
        data: 0,
    };
    sock.ethtool(name, &mut value).ok()?;
    Some(value.data != 0)
}

impl NetDev {
    pub fn query(name: &str) -> Result<NetDev> {
        let Some(ifindex) = ifindex(name) else {
            bail!("interface {name:?} does not exist (in this network namespace)");
        };
        let sock = Socket::new().context("socket for interface ioctls")?;
        let mut ifr = ifreq(name);
        sock.ioctl(libc::SIOCGIFHWADDR, &mut ifr)
            .with_context(|| format!("reading the MAC address of {name}"))?;
        // SAFETY: ifru_hwaddr is a libc::sockaddr (an integer and a c_char array), for which
        // every bit pattern is valid, and ifr was fully initialised by zeroed(); after the
        // successful SIOCGIFHWADDR it holds the device address.
        let sa = unsafe { ifr.ifr_ifru.ifru_hwaddr };
        let mut mac = [0u8; 6];
        for (m, b) in mac.iter_mut().zip(sa.sa_data.iter()) {
            *m = *b as u8;
        }
        let mut ifr = ifreq(name);
        sock.ioctl(libc::SIOCGIFMTU, &mut ifr)
            .with_context(|| format!("reading the MTU of {name}"))?;
        // SAFETY: ifru_mtu is a c_int, for which every bit pattern is valid, and ifr was fully
        // initialised by zeroed(); after the successful SIOCGIFMTU it holds the MTU.
        let mtu = unsafe { ifr.ifr_ifru.ifru_mtu } as u32;
        Ok(NetDev {
            name: name.to_string(),
            ifindex,
            mac,
            mtu,
            rx_queues: rx_queues(&sock, name),
            peer_redirect: driver(&sock, name).as_deref() == Some("veth")
                && crate::netlink::Rtnl::open()
                    .and_then(|mut rtnl| rtnl.peer_in_other_netns(ifindex))
                    .unwrap_or(false),
        })
    }
}

/// IPv4 and IPv6 addresses assigned to an interface.
pub fn ip_addresses(name: &str) -> Result<Vec<IpAddr>> {
    let mut head: *mut libc::ifaddrs = std::ptr::null_mut();
    // SAFETY: `&mut head` is a valid out-pointer to a local *mut ifaddrs; on success
    // getifaddrs stores a list it allocated there, freed once by freeifaddrs at the end of
    // this function (there is no early return in between).
    if unsafe { libc::getifaddrs(&mut head) } != 0 {
        return Err(io::Error::last_os_error()).context("getifaddrs");
    }
    let mut out = Vec::new();
    let mut cur = head;
    while !cur.is_null() {
        // SAFETY: cur is non-null (loop condition) and is `head` or an ifa_next link of the
        // list getifaddrs returned, which stays allocated until freeifaddrs below; the
        // reference is used only within this iteration.
        let ifa = unsafe { &*cur };
        // SAFETY: getifaddrs sets every entry's ifa_name to a NUL-terminated string inside
        // the same allocation; the CStr is used only within this iteration, before the free.
        let ifa_name = unsafe { std::ffi::CStr::from_ptr(ifa.ifa_name) };
        if !ifa.ifa_addr.is_null() && ifa_name.to_bytes() == name.as_bytes() {
            // SAFETY: ifa_addr was checked non-null just above and points at a sockaddr in
            // the getifaddrs allocation; sa_family is the leading field of every address type.
            let family = unsafe { (*ifa.ifa_addr).sa_family } as i32;
            if family == libc::AF_INET {
                // SAFETY: the family is AF_INET, for which getifaddrs stores a complete,
                // suitably aligned sockaddr_in (glibc keeps each address in a union with
                // sockaddr_in/sockaddr_in6); the reference does not outlive this iteration.
                let sin = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in) };
                out.push(Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)).into());
            } else if family == libc::AF_INET6 {
                // SAFETY: as above, for AF_INET6 and a complete sockaddr_in6.
                let sin6 = unsafe { &*(ifa.ifa_addr as *const libc::sockaddr_in6) };
                out.push(Ipv6Addr::from(sin6.sin6_addr.s6_addr).into());
            }
        }
        cur = ifa.ifa_next;
    }
    // SAFETY: head is the list from the successful getifaddrs above, freed exactly once here;
    // nothing borrowed from it survives (addresses were copied into `out` as IpAddr).
    unsafe { libc::freeifaddrs(head) };
    Ok(out)
}

pub fn format_mac(mac: &[u8; 6]) -> String {
    dataplane_common::packet::Mac(*mac).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_queried() {
        let lo = NetDev::query("lo").unwrap();
        assert_eq!(lo.ifindex, ifindex("lo").unwrap());
        assert_eq!(ifname(lo.ifindex).as_deref(), Some("lo"));
        assert!(lo.mtu >= 1500);
        assert!(lo.rx_queues >= 1);
        assert!(!lo.peer_redirect);
        let lo = ip_addresses("lo").unwrap();
        assert!(lo.contains(&Ipv4Addr::LOCALHOST.into()), "{lo:?}");
    }

    #[test]
    fn missing_interface_is_named() {
        let e = NetDev::query("nonexistent0").unwrap_err().to_string();
        assert!(e.contains("\"nonexistent0\" does not exist"), "{e}");
    }

    #[test]
    fn mac_formatting() {
        assert_eq!(format_mac(&[2, 0, 0xab, 0, 0, 1]), "02:00:ab:00:00:01");
    }
}
