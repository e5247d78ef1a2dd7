//! The tiny guest that real-VM tests boot under libvirt (facts in shared VIRT.md): a
//! Debian kernel decompressed to a plain vmlinux (PVH direct boot, more than twice as fast
//! as the bzImage under TCG), an initramfs of busybox, the virtio-net modules and
//! `violin-probe`, and a QEMU extracted privately from its Debian packages (installing
//! qemu-system-x86 would remove the machine's newer qemu-utils).
//!
//! `cargo xtask guest` builds it into [`dir`]; steps whose outputs exist are skipped, and
//! the initramfs is rebuilt only when something that goes into it changed.
use std::{
    fs,
    io::{ErrorKind, Write},
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{bail, Context, Result};

pub struct GuestImage {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub qemu: PathBuf,
}

/// virtio-net and the memory balloon, and what they need, in an order where each loads
/// after its dependencies.
const MODULES: [&str; 9] = [
    "virtio_ring",
    "virtio",
    "virtio_pci_legacy_dev",
    "virtio_pci_modern_dev",
    "virtio_pci",
    "failover",
    "net_failover",
    "virtio_net",
    "virtio_balloon",
];

/// The guest's /init. Its settings come from the kernel command line: `vmip=ADDR/LEN`,
/// optional `vmmtu=MTU`, `probe=PEER` (run violin-probe against PEER), `probems=N` (its
/// interval in milliseconds), `nemo=RANK/ITERS/HALO/WORK/PEERS` (run violin-nemo's
/// rounds back to back, rank 0's reports on the console as `VIOLIN-NEMO {json}`) and
/// `burn=1` (keep its CPU busy, an application that wants all the CPU it gets).
const INIT: &str = r#"#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
for m in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci failover net_failover virtio_net virtio_balloon; do
  insmod /mods/$m.ko
done
for w in $(cat /proc/cmdline); do
  case $w in vmip=*) IP=${w#vmip=};; vmmtu=*) MTU=${w#vmmtu=};; probe=*) PEER=${w#probe=};; probems=*) PROBEMS=${w#probems=};; nemo=*) NEMO=${w#nemo=};; burn=*) BURN=${w#burn=};; esac
done
if [ -n "$BURN" ]; then (while :; do :; done) & fi
ip link set lo up
if [ -n "$MTU" ]; then ip link set eth0 mtu $MTU; fi
ip link set eth0 up
ip addr add $IP dev eth0
echo "hello from $IP" > /www/index.html
httpd -p 80 -h /www
nc -ll -p 7 -e cat &
echo "NETUP $(cut -d' ' -f1 /proc/uptime)"
if [ -n "$PEER" ]; then violin-probe $PEER --interval-ms ${PROBEMS:-10} & fi
if [ -n "$NEMO" ]; then
  (IFS=/; set -- $NEMO
   while true; do
     violin-nemo --rank $1 --iters $2 --halo $3 --work $4 --peers $5 | sed 's/^/VIOLIN-NEMO /'
     sleep 1
   done) &
fi
exec setsid cttyhack sh
"#;

/// Where the image is built: `$VIOLIN_GUEST_DIR`, else `target/violin-guest`.
pub fn dir() -> PathBuf {
    std::env::var_os("VIOLIN_GUEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::workspace_root().join("target/violin-guest"))
}

fn image_in(dir: &Path) -> GuestImage {
    GuestImage {
        kernel: dir.join("vmlinux"),
        initrd: dir.join("initrd.gz"),
        qemu: dir.join("qemu/usr/bin/qemu-system-x86_64"),
    }
}

/// The image [`build`] made.
pub fn image() -> Result<GuestImage> {
    let image = image_in(&dir());
    for part in [&image.kernel, &image.initrd, &image.qemu] {
        if !part.exists() {
            bail!(
                "no guest image ({} is missing): run `cargo xtask guest`",
                part.display()
            );
        }
    }
    Ok(image)
}

/// Builds the image (cached) with `tools` (static binaries: violin-probe, violin-nemo)
/// in its /bin.
pub fn build(tools: &[PathBuf], quiet: bool) -> Result<GuestImage> {
    let dir = dir();
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let image = image_in(&dir);
    if !image.qemu.exists() {
        step(quiet, "downloading qemu-system-x86 and qemu-system-common");
        extract_qemu(&dir)?;
    }
    let modules = dir.join("modules");
    let have_modules = MODULES
        .iter()
        .all(|m| modules.join(format!("{m}.ko")).exists());
    if !image.kernel.exists() || !have_modules {
        kernel(&dir, quiet)?;
    }
    initrd(&dir, tools, quiet)?;
    Ok(image)
}

fn step(quiet: bool, msg: &str) {
    if !quiet {
        eprintln!("  · {msg}");
    }
}

fn checked(cmd: &mut Command) -> Result<String> {
    // output() gives the child an empty stdin unless the caller set one.
    let out = cmd
        .output()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !out.status.success() {
        bail!(
            "{cmd:?} failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A fresh, empty directory for a step's output: moved into place only when complete, so
/// an interrupted build starts that step over.
fn scratch(path: &Path) -> Result<()> {
    let _ = fs::remove_dir_all(path);
    fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))
}

/// `apt-get download`s `packages` into `dir/debs`; returns their files, in order.
fn download(dir: &Path, packages: &[&str]) -> Result<Vec<PathBuf>> {
    let debs = dir.join("debs");
    fs::create_dir_all(&debs)?;
    let file_of = |package: &str| -> Result<Option<PathBuf>> {
        let prefix = format!("{package}_");
        Ok(fs::read_dir(&debs)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(".deb"))
            }))
    };
    // Another version may linger from an earlier build.
    for package in packages {
        while let Some(old) = file_of(package)? {
            fs::remove_file(old)?;
        }
    }
    checked(
        Command::new("apt-get")
            .args(["download", "-q"])
            .args(packages)
            .current_dir(&debs),
    )
    .context("downloading packages (`apt-get update` first?)")?;
    packages
        .iter()
        .map(|p| file_of(p)?.with_context(|| format!("apt-get download left no {p}_*.deb")))
        .collect()
}

fn extract_qemu(dir: &Path) -> Result<()> {
    let debs = download(dir, &["qemu-system-x86", "qemu-system-common"])?;
    let root = dir.join("qemu.tmp");
    scratch(&root)?;
    for deb in &debs {
        checked(Command::new("dpkg").arg("-x").arg(deb).arg(&root))?;
    }
    // A relocated QEMU looks for its data and firmware relative to its binary: link
    // there those of the installed qemu-system-data, seabios and ipxe-qemu.
    let share = root.join("usr/share/qemu");
    fs::create_dir_all(&share)?;
    for entry in fs::read_dir("/usr/share/qemu").context("reading /usr/share/qemu")? {
        let entry = entry?;
        let link = share.join(entry.file_name());
        if link.symlink_metadata().is_err() {
            std::os::unix::fs::symlink(entry.path(), link)?;
        }
    }
    fs::create_dir_all(root.join("usr/lib"))?;
    for (target, link) in [
        ("/usr/share/seabios", "usr/share/seabios"),
        ("/usr/lib/ipxe", "usr/lib/ipxe"),
    ] {
        if root.join(link).symlink_metadata().is_err() {
            std::os::unix::fs::symlink(target, root.join(link))?;
        }
    }
    let _ = fs::remove_dir_all(dir.join("qemu"));
    fs::rename(&root, dir.join("qemu"))?;
    Ok(())
}

/// The concrete package behind `linux-image-amd64`, e.g. `linux-image-6.1.0-57-amd64`.
fn kernel_package() -> Result<String> {
    let depends = checked(Command::new("apt-cache").args(["depends", "linux-image-amd64"]))?;
    depends
        .lines()
        .find_map(|l| l.trim().strip_prefix("Depends: "))
        .filter(|p| p.starts_with("linux-image-"))
        .map(str::to_string)
        .context("apt-cache names no kernel package behind linux-image-amd64")
}

/// Downloads the kernel package; leaves `dir/vmlinux` and the modules in `dir/modules`.
fn kernel(dir: &Path, quiet: bool) -> Result<()> {
    let package = kernel_package()?;
    step(quiet, &format!("downloading the kernel ({package})"));
    let deb = download(dir, &[&package])?.remove(0);
    let tree = dir.join("kernel.tmp");
    scratch(&tree)?;
    step(quiet, "extracting the kernel and its virtio-net modules");
    let mut dpkg = Command::new("dpkg-deb")
        .arg("--fsys-tarfile")
        .arg(&deb)
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot run dpkg-deb")?;
    let tar = checked(
        Command::new("tar")
            .arg("-x")
            .arg("-C")
            .arg(&tree)
            .args(["--wildcards", "./boot/vmlinuz-*"])
            .args(MODULES.map(|m| format!("*/{m}.ko")))
            .stdin(dpkg.stdout.take().context("dpkg-deb's stdout")?),
    );
    let dpkg = dpkg.wait()?;
    tar.with_context(|| format!("extracting {}", deb.display()))?;
    if !dpkg.success() {
        bail!("dpkg-deb --fsys-tarfile {} failed ({dpkg})", deb.display());
    }
    let vmlinuz = fs::read_dir(tree.join("boot"))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .find(|p| p.to_string_lossy().contains("vmlinuz-"))
        .context("the kernel package has no /boot/vmlinuz-*")?;
    let modules = dir.join("modules.tmp");
    scratch(&modules)?;
    for m in MODULES {
        let name = format!("{m}.ko");
        let found = find_file(&tree.join("lib"), &name)
            .with_context(|| format!("the kernel package has no {name}"))?;
        fs::copy(found, modules.join(&name))?;
    }
    step(quiet, "decompressing the kernel to a plain vmlinux");
    decompress_kernel(&vmlinuz, &dir.join("vmlinux.tmp"))?;
    fs::rename(dir.join("vmlinux.tmp"), dir.join("vmlinux"))?;
    let _ = fs::remove_dir_all(dir.join("modules"));
    fs::rename(&modules, dir.join("modules"))?;
    fs::remove_dir_all(&tree)?;
    Ok(())
}

fn find_file(root: &Path, name: &str) -> Option<PathBuf> {
    for entry in fs::read_dir(root).ok()?.filter_map(|e| e.ok()) {
        let path = entry.path();
        if path.is_dir() {
            if let Some(found) = find_file(&path, name) {
                return Some(found);
            }
        } else if entry.file_name() == name {
            return Some(path);
        }
    }
    None
}

/// Debian's bzImage carries the kernel as an xz stream after its setup code: feed that
/// stream to `xz`, which stops at the stream's end and ignores the trailing data.
fn decompress_kernel(vmlinuz: &Path, out: &Path) -> Result<()> {
    const XZ_MAGIC: &[u8] = b"\xfd7zXZ\x00";
    let data = fs::read(vmlinuz)?;
    let start = data
        .windows(XZ_MAGIC.len())
        .position(|w| w == XZ_MAGIC)
        .with_context(|| format!("no xz stream in {}", vmlinuz.display()))?;
    let mut xz = Command::new("xz")
        .args(["-dc", "--single-stream"])
        .stdin(Stdio::piped())
        .stdout(fs::File::create(out)?)
        .spawn()
        .context("cannot run xz (apt-get install xz-utils)")?;
    // xz may close its input once the stream ends, before the trailing data is written.
    match xz
        .stdin
        .take()
        .context("xz's stdin")?
        .write_all(&data[start..])
    {
        Err(e) if e.kind() != ErrorKind::BrokenPipe => return Err(e).context("feeding xz"),
        _ => {}
    }
    let status = xz.wait()?;
    if !status.success() || !fs::read(out)?.starts_with(b"\x7fELF") {
        bail!(
            "xz did not decompress {} into an ELF kernel",
            vmlinuz.display()
        );
    }
    Ok(())
}

/// Builds `dir/initrd.gz` unless its stamp shows the same contents.
fn initrd(dir: &Path, tools: &[PathBuf], quiet: bool) -> Result<()> {
    let read = |p: &Path| fs::read(p).with_context(|| format!("reading {}", p.display()));
    let busybox = Path::new("/bin/busybox");
    let mut files = vec![("init".to_string(), 0o755, INIT.as_bytes().to_vec())];
    for bin in std::iter::once(busybox).chain(tools.iter().map(PathBuf::as_path)) {
        let elf = read(bin)?;
        if !is_static(&elf) {
            bail!(
                "{} is not statically linked: the guest has no libc",
                bin.display()
            );
        }
        let name = bin.file_name().context("a tool without a name")?;
        files.push((format!("bin/{}", name.to_string_lossy()), 0o755, elf));
    }
    for m in MODULES {
        let ko = read(&dir.join("modules").join(format!("{m}.ko")))?;
        files.push((format!("mods/{m}.ko"), 0o644, ko));
    }
    let stamp = format!("{:016x}\n", fnv1a(&files));
    let (initrd, stamp_file) = (dir.join("initrd.gz"), dir.join("initrd.stamp"));
    if initrd.exists() && fs::read_to_string(&stamp_file).ok().as_ref() == Some(&stamp) {
        step(quiet, "initramfs up to date");
        return Ok(());
    }
    step(quiet, "building the initramfs");
    let cpio = newc(&["bin", "dev", "mods", "proc", "sys", "www"], &files);
    let tmp = dir.join("initrd.gz.tmp");
    let mut gzip = Command::new("gzip")
        .args(["-1", "-n"])
        .stdin(Stdio::piped())
        .stdout(fs::File::create(&tmp)?)
        .spawn()
        .context("cannot run gzip")?;
    gzip.stdin
        .take()
        .context("gzip's stdin")?
        .write_all(&cpio)
        .context("feeding gzip")?;
    if !gzip.wait()?.success() {
        bail!("gzip failed");
    }
    fs::rename(&tmp, &initrd)?;
    fs::write(&stamp_file, stamp)?;
    Ok(())
}

/// Whether an ELF64 executable has no program interpreter (PT_INTERP), i.e. needs no
/// dynamic loader.
fn is_static(elf: &[u8]) -> bool {
    let u16_at = |o: usize| elf.get(o..o + 2).map(|b| u16::from_le_bytes([b[0], b[1]]));
    let u64_at = |o: usize| {
        elf.get(o..o + 8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    };
    let (Some(phoff), Some(phentsize), Some(phnum)) = (u64_at(0x20), u16_at(0x36), u16_at(0x38))
    else {
        return false;
    };
    elf.starts_with(b"\x7fELF\x02")
        && (0..usize::from(phnum)).all(|i| {
            let at = phoff as usize + i * usize::from(phentsize);
            elf.get(at..at + 4) != Some(&3u32.to_le_bytes()[..])
        })
}

/// FNV-1a over names and contents: stable across builds, unlike std's hasher.
fn fnv1a(files: &[(String, u32, Vec<u8>)]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (name, mode, data) in files {
        let len = data.len() as u64;
        for part in [
            name.as_bytes(),
            &mode.to_le_bytes(),
            &len.to_le_bytes(),
            data,
        ] {
            for &b in part {
                h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
            }
        }
    }
    h
}

/// A newc cpio archive (the initramfs format) of `dirs`, a /dev/console node (init's
/// console before devtmpfs is mounted) and `files` (name, permissions, contents).
fn newc(dirs: &[&str], files: &[(String, u32, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut ino = 0;
    let mut entry = |name: &str, mode: u32, rdev: (u32, u32), data: &[u8]| {
        ino += 1;
        let nlink = if mode & 0o040000 != 0 { 2 } else { 1 };
        let fields = [
            ino,
            mode,
            0,
            0,
            nlink,
            0,
            data.len() as u32,
            0,
            0,
            rdev.0,
            rdev.1,
            name.len() as u32 + 1,
            0,
        ];
        out.extend_from_slice(b"070701");
        for f in fields {
            out.extend_from_slice(format!("{f:08x}").as_bytes());
        }
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.resize(out.len().next_multiple_of(4), 0);
        out.extend_from_slice(data);
        out.resize(out.len().next_multiple_of(4), 0);
    };
    for d in dirs {
        entry(d, 0o040755, (0, 0), &[]);
    }
    entry("dev/console", 0o020600, (5, 1), &[]);
    for (name, perm, data) in files {
        entry(name, 0o100000 | perm, (0, 0), data);
    }
    entry("TRAILER!!!", 0, (0, 0), &[]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newc_layout() {
        let files = vec![("init".to_string(), 0o755, b"abcde".to_vec())];
        let a = newc(&["bin"], &files);
        assert!(a.starts_with(b"070701"));
        // bin: 110-byte header + "bin\0" = 114, padded to 116.
        assert_eq!(&a[116..122], b"070701");
        let init = a.windows(5).position(|w| w == b"init\0").unwrap();
        let header = &a[init - 110..init];
        assert_eq!(&header[14..22], b"000081ed", "regular file, 0755");
        assert_eq!(&header[54..62], b"00000005", "file size");
        assert_eq!(a.len() % 4, 0);
        assert!(a.windows(11).any(|w| w == b"TRAILER!!!\0"));
    }

    #[test]
    fn static_or_not() {
        let mut elf = vec![0u8; 0x40 + 2 * 56];
        elf[..5].copy_from_slice(b"\x7fELF\x02");
        elf[0x20] = 0x40; // program headers right after the ELF header
        elf[0x36] = 56;
        elf[0x38] = 2;
        elf[0x40] = 1; // PT_LOAD
        assert!(is_static(&elf));
        elf[0x40 + 56] = 3; // PT_INTERP
        assert!(!is_static(&elf));
        assert!(!is_static(b"#!/bin/sh\n"));
    }

    #[test]
    fn stamp_follows_contents() {
        let a = vec![("init".to_string(), 0o755, b"x".to_vec())];
        let mut b = a.clone();
        b[0].2 = b"y".to_vec();
        assert_ne!(fnv1a(&a), fnv1a(&b));
        assert_eq!(fnv1a(&a), fnv1a(&a.clone()));
    }
}
