//! Running commands and entering network namespaces.
use std::{
    fs::File,
    os::fd::AsRawFd,
    process::{Command, Output, Stdio},
    thread,
};

use anyhow::{anyhow, bail, Context, Result};

/// Runs a command to completion; fails with its stderr when it exits non-zero.
pub fn run(program: &str, args: &[&str]) -> Result<String> {
    let out = output(program, args)?;
    if !out.status.success() {
        bail!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

pub fn output(program: &str, args: &[&str]) -> Result<Output> {
    Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {program} (is it installed? `cargo xtask setup`)"))
}

/// `ip` with arguments.
pub fn ip(args: &[&str]) -> Result<String> {
    run("ip", args)
}

/// Kills every process in network namespace `ns` (a batch job's, say, that would outlive
/// it). Reads /proc itself: `ip netns pids` gives up on processes it cannot inspect.
pub fn kill_ns_processes(ns: &str) {
    use std::os::unix::fs::MetadataExt;
    let Ok(target) = std::fs::metadata(format!("/run/netns/{ns}")) else {
        return;
    };
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let name = p.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        if let Ok(m) = std::fs::metadata(p.path().join("ns/net")) {
            if m.ino() == target.ino() && m.dev() == target.dev() {
                let _ = run("kill", &["-9", pid]);
            }
        }
    }
}

/// Runs a command inside a network namespace.
pub fn ns_run(ns: &str, program: &str, args: &[&str]) -> Result<String> {
    let mut full = vec!["netns", "exec", ns, program];
    full.extend_from_slice(args);
    run("ip", &full)
}

pub fn ns_output(ns: &str, program: &str, args: &[&str]) -> Result<Output> {
    let mut full = vec!["netns", "exec", ns, program];
    full.extend_from_slice(args);
    output("ip", &full)
}

/// Shell that gives a process under `ip netns exec` (which mounts the namespace's sysfs
/// over /sys, hiding the cgroup hierarchies) the machine's cgroups back, in its own mount
/// namespace (run it under `unshare -m --propagation private`): the unified v2 hierarchy,
/// or the v1 hierarchies whose controllers match the extended regex in `$CGROUPS`, apart
/// or co-mounted as the machine has them.
pub const REMOUNT_CGROUPS: &str = r#"
if grep -q '^cgroup2 /sys/fs/cgroup cgroup2' /proc/1/mounts; then
  mount -t cgroup2 cgroup2 /sys/fs/cgroup
else
  mount -t tmpfs cgroup /sys/fs/cgroup
  grep '^cgroup /sys/fs/cgroup/' /proc/1/mounts | while read -r _ dir _ opts _; do
    ctrls=$(echo "$opts" | tr ',' '\n' | grep -xE "$CGROUPS" | paste -sd, -)
    [ -n "$ctrls" ] || continue
    mkdir -p "$dir"
    mount -t cgroup -o "$ctrls" cgroup "$dir"
  done
fi
"#;

/// A command for `ip netns exec`, to spawn in the background.
pub fn ns_command(ns: &str, program: &str, args: &[&str]) -> Command {
    let mut c = Command::new("ip");
    c.args(["netns", "exec", ns, program]).args(args);
    c
}

/// Runs `f` on a new thread that has entered network namespace `ns`: sockets it opens
/// and interfaces it names by index live there. Only that thread changes namespace; `f`
/// may borrow from the caller (the thread is scoped).
pub fn in_netns<T, F>(ns: &str, f: F) -> Result<T>
where
    T: Send,
    F: FnOnce() -> Result<T> + Send,
{
    let path = format!("/run/netns/{ns}");
    let file = File::open(&path).with_context(|| format!("opening {path}"))?;
    thread::scope(|scope| {
        scope
            .spawn(move || {
                // SAFETY: libc_setns only forwards to setns(2), which takes the fd and a flag
                // by value and accesses no memory of ours; `file`, moved into this thread, is
                // the namespace file opened above and stays open for the call. Only this new
                // thread changes netns.
                if unsafe { libc_setns(file.as_raw_fd()) } != 0 {
                    return Err(anyhow!(
                        "setns into {path}: {}",
                        std::io::Error::last_os_error()
                    ));
                }
                f()
            })
            .join()
            .map_err(|_| anyhow!("thread in namespace {ns} panicked"))?
    })
}

/// Like [`in_netns`] but returns at once; join the handle for the result.
pub fn spawn_in_netns<T, F>(ns: &str, f: F) -> Result<thread::JoinHandle<Result<T>>>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T> + Send + 'static,
{
    let path = format!("/run/netns/{ns}");
    let file = File::open(&path).with_context(|| format!("opening {path}"))?;
    Ok(thread::spawn(move || {
        // SAFETY: libc_setns only forwards to setns(2), which takes the fd and a flag by value
        // and accesses no memory of ours; `file`, moved into this thread, is the namespace
        // file opened above and stays open for the call. Only this new thread changes netns.
        if unsafe { libc_setns(file.as_raw_fd()) } != 0 {
            return Err(anyhow!(
                "setns into {path}: {}",
                std::io::Error::last_os_error()
            ));
        }
        f()
    }))
}

unsafe fn libc_setns(fd: i32) -> i32 {
    // SAFETY: setns(2) takes an integer fd and flag and accesses no memory of ours, so it has
    // no memory-safety precondition (a bad fd only yields EBADF). CLONE_NEWNET is permitted
    // in a multi-threaded process and affects only the calling thread.
    unsafe { libc::setns(fd, libc::CLONE_NEWNET) }
}

pub fn is_root() -> bool {
    // SAFETY: geteuid(2) takes no arguments, always succeeds and accesses no memory of ours.
    unsafe { libc::geteuid() == 0 }
}

/// The MAC address of interface `iface` in namespace `ns`.
pub fn mac_of(ns: &str, iface: &str) -> Result<[u8; 6]> {
    let out = ns_run(ns, "ip", &["-o", "link", "show", iface])?;
    let hex = out
        .split("link/ether ")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .with_context(|| format!("no MAC for {iface} in {ns}"))?;
    let mut mac = [0u8; 6];
    for (m, h) in mac.iter_mut().zip(hex.split(':')) {
        *m = u8::from_str_radix(h, 16)?;
    }
    Ok(mac)
}

/// The ifindex of interface `iface` in namespace `ns`.
pub fn ifindex_of(ns: &str, iface: &str) -> Result<u32> {
    let out = ns_run(ns, "ip", &["-o", "link", "show", iface])?;
    out.split(':')
        .next()
        .and_then(|s| s.trim().parse().ok())
        .with_context(|| format!("no ifindex for {iface} in {ns}"))
}

/// Packets interface `iface` in namespace `ns` has received, sent, and failed to send,
/// and the bytes it has sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LinkPackets {
    pub rx: u64,
    pub tx: u64,
    pub tx_dropped: u64,
    pub tx_bytes: u64,
}

/// The kernel's packet counters of `iface` in `ns` (`ip -s -j link`).
pub fn link_packets(ns: &str, iface: &str) -> Result<LinkPackets> {
    let out = ns_run(ns, "ip", &["-s", "-j", "link", "show", iface])?;
    let v: serde_json::Value =
        serde_json::from_str(&out).with_context(|| format!("ip -s -j link: {out}"))?;
    let n = |p: &str| {
        v.pointer(p)
            .and_then(|x| x.as_u64())
            .with_context(|| format!("no {p} for {iface} in {ns}: {out}"))
    };
    Ok(LinkPackets {
        rx: n("/0/stats64/rx/packets")?,
        tx: n("/0/stats64/tx/packets")?,
        tx_dropped: n("/0/stats64/tx/dropped")?,
        tx_bytes: n("/0/stats64/tx/bytes")?,
    })
}

/// CPU seconds process `pid` has used (user and system), from /proc.
pub fn cpu_seconds(pid: u32) -> Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = stat.rsplit(')').next().unwrap_or_default();
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .map(str::parse)
        .collect::<std::result::Result<_, _>>()
        .with_context(|| format!("/proc/{pid}/stat: {stat}"))?;
    if f.len() != 2 {
        bail!("/proc/{pid}/stat has no CPU times: {stat}");
    }
    // SAFETY: sysconf only reads its integer argument.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Ok((f[0] + f[1]) as f64 / hz)
}
