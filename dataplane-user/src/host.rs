//! The daemon's place on the machine: network namespace, privileges, bpffs and paths.
use std::{
    fs,
    io::{self, Write},
    os::fd::AsRawFd,
    path::{Path, PathBuf},
};

use anyhow::{bail, Context, Result};

pub const BPFFS: &str = "/sys/fs/bpf";
const BPF_FS_MAGIC: i64 = 0xcafe_4a11;

/// Where one host's state lives. Pins persist across daemon restarts; /run does not
/// persist across reboots, which also drop the pins.
#[derive(Clone, Debug)]
pub struct Paths {
    pub pin_root: PathBuf,
    pub run_dir: PathBuf,
}

impl Paths {
    pub fn new(host_id: &str) -> Paths {
        Paths {
            pin_root: Path::new(BPFFS).join("violin").join(host_id),
            run_dir: Path::new("/run/violin").join(host_id),
        }
    }

    pub fn maps(&self) -> PathBuf {
        self.pin_root.join("maps")
    }

    pub fn links(&self) -> PathBuf {
        self.pin_root.join("links")
    }

    pub fn link(&self, ifname: &str) -> PathBuf {
        self.links().join(ifname)
    }

    pub fn pid_file(&self) -> PathBuf {
        self.run_dir.join("violind.pid")
    }

    pub fn slow_path_stats(&self) -> PathBuf {
        self.run_dir.join("slowpath.json")
    }

    /// The environments and peers being served (from the file or the controller).
    pub fn share(&self) -> PathBuf {
        self.run_dir.join("share.json")
    }

    /// The host's domains as last reported by libvirt, for `violind stats` and /metrics.
    pub fn vms(&self) -> PathBuf {
        self.run_dir.join("vms.json")
    }
}

/// Enters a named network namespace for the whole process. Must run before any thread is
/// spawned: setns(2) changes only the calling thread, and threads inherit it.
pub fn enter_netns(name: &str) -> Result<()> {
    let path = Path::new("/run/netns").join(name);
    let f = fs::File::open(&path).with_context(|| {
        format!(
            "netns: cannot open {} (does the namespace exist?)",
            path.display()
        )
    })?;
    // SAFETY: setns(2) takes an fd and a flag by value and accesses no memory of ours;
    // `f` is the namespace file opened just above and stays open for the call.
    if unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error())
            .with_context(|| format!("netns: setns into {name}"));
    }
    Ok(())
}

/// Fails early, with the reason, when the process lacks what loading XDP needs.
pub fn check_privileges() -> Result<()> {
    let status = fs::read_to_string("/proc/self/status").context("reading /proc/self/status")?;
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    const CAP_NET_ADMIN: u32 = 12;
    const CAP_SYS_ADMIN: u32 = 21;
    const CAP_BPF: u32 = 39;
    let has = |c: u32| cap_eff & (1 << c) != 0;
    let mut missing = Vec::new();
    if !has(CAP_NET_ADMIN) {
        missing.push("CAP_NET_ADMIN");
    }
    if !has(CAP_BPF) && !has(CAP_SYS_ADMIN) {
        missing.push("CAP_BPF");
    }
    if !missing.is_empty() {
        bail!(
            "violind lacks {} (run it as root): it loads XDP programs, pins maps and binds \
             AF_XDP sockets",
            missing.join(" and ")
        );
    }
    Ok(())
}

fn is_bpffs(path: &Path) -> bool {
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: libc::statfs is a C struct of integers and integer arrays (f_fsid, f_spare),
    // so the all-zero bit pattern is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c` is a CString alive across the call, so the path is a valid NUL-terminated
    // string; `&mut st` points at a live, writable libc::statfs that statfs(2) fills, and
    // st.f_type is read only after it returned 0 (and was initialised by zeroed() anyway).
    unsafe { libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type as i64 == BPF_FS_MAGIC }
}

/// Mounts bpffs on /sys/fs/bpf when a fresh machine has not. Daemons starting together
/// must not both mount: the second mount would hide the first one's pins.
pub fn ensure_bpffs() -> Result<()> {
    let dir = Path::new(BPFFS);
    if is_bpffs(dir) {
        return Ok(());
    }
    fs::create_dir_all("/run/violin")?;
    let lock = fs::File::create("/run/violin/.bpffs.lock")?;
    // SAFETY: flock(2) takes the fd and an operation flag by value and accesses no memory of
    // ours; `lock` is the File created just above and stays open for the call (the lock is
    // released when it is dropped).
    if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
        return Err(io::Error::last_os_error()).context("locking /run/violin/.bpffs.lock");
    }
    if is_bpffs(dir) {
        return Ok(());
    }
    fs::create_dir_all(dir).with_context(|| format!("creating {BPFFS}"))?;
    let src = c"bpf";
    let target = c"/sys/fs/bpf";
    // SAFETY: `src` and `target` are 'static C-string literals, so the source, target and
    // fstype pointers are valid and NUL-terminated for the call; a null `data` pointer is
    // allowed and means no mount options. mount(2) only reads these.
    let rc = unsafe {
        libc::mount(
            src.as_ptr(),
            target.as_ptr(),
            src.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error()).context("mounting bpffs on /sys/fs/bpf");
    }
    Ok(())
}

pub fn read_pid(path: &Path) -> Option<i32> {
    fs::read_to_string(path).ok()?.trim().parse().ok()
}

/// Whether `pid` runs; an exited child its parent has not reaped yet (a zombie) does not.
pub fn process_alive(pid: i32) -> bool {
    // SAFETY: kill(2) takes only integers and accesses no memory of this process; signal 0
    // delivers nothing and only checks that `pid` exists and may be signalled.
    if unsafe { libc::kill(pid, 0) } != 0 {
        return false;
    }
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the parenthesised command name.
    let state = stat
        .rsplit(')')
        .next()
        .and_then(|s| s.trim_start().chars().next());
    !matches!(state, Some('Z') | Some('X') | None)
}

/// Claims the pid file, refusing while another live daemon holds it.
pub fn write_pid_file(path: &Path) -> Result<()> {
    if let Some(pid) = read_pid(path) {
        if pid != std::process::id() as i32 && process_alive(pid) {
            bail!(
                "another violind (pid {pid}) is running for this host ({})",
                path.display()
            );
        }
    }
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut f = fs::File::create(path).with_context(|| format!("writing {}", path.display()))?;
    writeln!(f, "{}", std::process::id())?;
    Ok(())
}
