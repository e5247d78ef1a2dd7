//! Loading the XDP programs, attaching them through pinned links, and the typed maps.
//!
//! Maps and links are pinned under /sys/fs/bpf/violin/<host>/ so that the datapath keeps
//! forwarding while `violind` is down; a restarted daemon reuses the maps (learned
//! addresses, counters) and swaps its freshly loaded program into the pinned links.
use std::{collections::BTreeSet, fs, io, path::Path};

use anyhow::{anyhow, bail, Context, Result};
use aya::{
    maps::{Array, DevMapHash, HashMap, Map, MapData, PerCpuArray, PerCpuHashMap, XskMap},
    programs::{
        links::{FdLink, PinnedLink},
        SchedClassifier, TcAttachType, Xdp, XdpMode,
    },
    Ebpf, EbpfLoader,
};
use dataplane_common::{
    counters::{Counter, DropReason, PeerStats, PortStats, ACTION_SLOTS, HOOKS},
    maps::{
        names, programs, FdbEntry, FdbKey, FloodList, HostConfig, PairCell, PairKey, PairState,
        PeerInfo, PeerSlot, PortIndexEntry, PortInfo, PortSlot, Shaper, StormBucket, VniIndexEntry,
        VniInfo, FDB_EPOCH_PLACED,
    },
    observe::ObserveConfig,
};
use tracing::{info, warn};

use crate::{host::Paths, netdev::NetDev};

static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/dataplane-ebpf.o"));

/// The datapath's maps, typed.
pub struct Maps {
    pub config: Array<MapData, HostConfig>,
    pub ports: HashMap<MapData, u32, PortInfo>,
    pub vnis: HashMap<MapData, u32, VniInfo>,
    pub peers: HashMap<MapData, [u8; 16], PeerInfo>,
    pub fdb: HashMap<MapData, FdbKey, FdbEntry>,
    /// Counts of changes to `fdb`; violind's own go in `FDB_EPOCH_PLACED` (see
    /// `Maps::fdb_changed`). None in maps pinned by a datapath that predates it, whose
    /// programs remember nothing of the table (`violind stats` still reads the rest).
    pub fdb_epoch: Option<Array<MapData, u64>>,
    pub tx_ports: DevMapHash<MapData>,
    pub port_stats: PerCpuArray<MapData, PortStats>,
    pub peer_stats: PerCpuArray<MapData, PeerStats>,
    pub drops: PerCpuArray<MapData, u64>,
    pub actions: PerCpuArray<MapData, u64>,
    pub flood: HashMap<MapData, u32, FloodList>,
    pub port_slots: Array<MapData, PortSlot>,
    pub peer_slots: Array<MapData, PeerSlot>,
    pub port_index: Array<MapData, PortIndexEntry>,
    pub peer_index: Array<MapData, PeerSlot>,
    pub vni_index: Array<MapData, VniIndexEntry>,
    pub pairs: HashMap<MapData, PairKey, PairState>,
    pub routes: HashMap<MapData, PairKey, FdbEntry>,
    pub pair_traffic: PerCpuHashMap<MapData, PairKey, Counter>,
    /// Each CPU's cells of pair counts (see `pair_counts`). None in maps pinned by a
    /// datapath that predates them, which counted in `pair_traffic` alone.
    pub pair_cells: Option<PerCpuArray<MapData, PairCell>>,
    pub storm: Array<MapData, StormBucket>,
    pub vm_bounds: Array<MapData, Shaper>,
    pub observe: Array<MapData, ObserveConfig>,
    pub observe_budget: PerCpuArray<MapData, StormBucket>,
    pub observe_sample_budget: PerCpuArray<MapData, StormBucket>,
    /// Whether the last `Topology::apply` wrote the direct-mapped indexes whole, so the
    /// next may find what they hold from the hash maps' keys; false for maps just opened.
    pub indexes_clean: bool,
}

fn typed<T>(map: Map, name: &str) -> Result<T>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    T::try_from(map).with_context(|| format!("map {name} has an unexpected type"))
}

/// [`typed`] for a map an older datapath's pins may lack: `None` when `got` is an error
/// (as before, whatever the error).
fn optional<T>(got: Result<Map>, name: &str) -> Result<Option<T>>
where
    T: TryFrom<Map, Error = aya::maps::MapError>,
{
    got.ok().map(|m| typed(m, name)).transpose()
}

impl Maps {
    fn build(mut get: impl FnMut(&'static str) -> Result<Map>) -> Result<Maps> {
        Ok(Maps {
            config: typed(get(names::CONFIG)?, names::CONFIG)?,
            ports: typed(get(names::PORTS)?, names::PORTS)?,
            vnis: typed(get(names::VNIS)?, names::VNIS)?,
            peers: typed(get(names::PEERS)?, names::PEERS)?,
            fdb: typed(get(names::FDB)?, names::FDB)?,
            fdb_epoch: optional(get(names::FDB_EPOCH), names::FDB_EPOCH)?,
            tx_ports: typed(get(names::TX_PORTS)?, names::TX_PORTS)?,
            port_stats: typed(get(names::PORT_STATS)?, names::PORT_STATS)?,
            peer_stats: typed(get(names::PEER_STATS)?, names::PEER_STATS)?,
            drops: typed(get(names::DROPS)?, names::DROPS)?,
            actions: typed(get(names::ACTIONS)?, names::ACTIONS)?,
            flood: typed(get(names::FLOOD)?, names::FLOOD)?,
            port_slots: typed(get(names::PORT_SLOTS)?, names::PORT_SLOTS)?,
            peer_slots: typed(get(names::PEER_SLOTS)?, names::PEER_SLOTS)?,
            port_index: typed(get(names::PORT_INDEX)?, names::PORT_INDEX)?,
            peer_index: typed(get(names::PEER_INDEX)?, names::PEER_INDEX)?,
            vni_index: typed(get(names::VNI_INDEX)?, names::VNI_INDEX)?,
            pairs: typed(get(names::PAIRS)?, names::PAIRS)?,
            routes: typed(get(names::ROUTES)?, names::ROUTES)?,
            pair_traffic: typed(get(names::PAIR_TRAFFIC)?, names::PAIR_TRAFFIC)?,
            pair_cells: optional(get(names::PAIR_CELLS), names::PAIR_CELLS)?,
            storm: typed(get(names::STORM)?, names::STORM)?,
            vm_bounds: typed(get(names::VM_BOUNDS)?, names::VM_BOUNDS)?,
            observe: typed(get(names::OBSERVE)?, names::OBSERVE)?,
            observe_budget: typed(get(names::OBSERVE_BUDGET)?, names::OBSERVE_BUDGET)?,
            observe_sample_budget: typed(
                get(names::OBSERVE_SAMPLE_BUDGET)?,
                names::OBSERVE_SAMPLE_BUDGET,
            )?,
            indexes_clean: false,
        })
    }

    /// Tells the datapath that violind changed the forwarding table, after the change: each
    /// CPU then forgets what it remembered of the table (the eBPF `memo`). violind is this
    /// count's only writer, so reading and writing it back loses nothing.
    pub fn fdb_changed(&mut self) -> Result<()> {
        let Some(epoch) = self.fdb_epoch.as_mut() else {
            return Ok(());
        };
        let n = epoch.get(&FDB_EPOCH_PLACED, 0)?;
        epoch
            .set(FDB_EPOCH_PLACED, n.wrapping_add(1), 0)
            .context("counting a change of the forwarding table in FDB_EPOCH")
    }

    /// Opens the maps a (possibly stopped) daemon left pinned, for `violind stats`.
    pub fn open_pinned(paths: &Paths) -> Result<Maps> {
        let dir = paths.maps();
        if !dir.exists() {
            bail!(
                "no datapath is pinned at {} (is violind running for this host?)",
                dir.display()
            );
        }
        Maps::build(|name| {
            let data = MapData::from_pin(dir.join(name))
                .with_context(|| format!("opening pinned map {name}"))?;
            Map::from_map_data(data).with_context(|| format!("map {name}"))
        })
    }
}

/// The slow path's own handle on the XSKMAP (it binds and unbinds sockets).
pub fn open_xsk_map(paths: &Paths) -> Result<XskMap<MapData>> {
    let data = MapData::from_pin(paths.maps().join(names::XSKS)).context("opening pinned XSKS")?;
    typed(Map::from_map_data(data)?, names::XSKS)
}

pub struct Datapath {
    ebpf: Ebpf,
    pub maps: Maps,
    paths: Paths,
    logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
}

impl Datapath {
    /// Whether a previous daemon left maps pinned for this host.
    pub fn has_pinned_state(paths: &Paths) -> bool {
        paths.maps().join(names::FDB).exists()
    }

    /// Loads both programs, reusing pinned maps when a previous daemon left them.
    pub fn load(paths: &Paths, debug_datapath: bool) -> Result<Datapath> {
        let maps_dir = paths.maps();
        fs::create_dir_all(&maps_dir)
            .with_context(|| format!("creating pin directory {}", maps_dir.display()))?;
        fs::create_dir_all(paths.links())?;
        let resumed = Self::has_pinned_state(paths);
        check_pinned_sizes(&maps_dir)?;
        // aya-log level: 0 silences every log call in the programs.
        let level: u8 = if debug_datapath { 4 } else { 0 };
        let mut ebpf = EbpfLoader::new()
            .default_map_pin_directory(&maps_dir)
            .override_global(aya_log::LEVEL, &level, false)
            .load(OBJECT)
            .map_err(|e| {
                anyhow!(
                    "loading the XDP object failed: {e}. If pinned maps in {} come from an \
                     incompatible version, remove them with `violind stop`",
                    maps_dir.display()
                )
            })?;
        if resumed {
            info!(pins = %maps_dir.display(), "resuming pinned datapath state");
        }
        let logger = if debug_datapath {
            Some(aya_log::EbpfLogger::init(&mut ebpf).context("starting aya-log reader")?)
        } else {
            None
        };
        for name in [programs::PORT, programs::UNDERLAY] {
            let prog: &mut Xdp = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing from the object"))?
                .try_into()?;
            prog.load()
                .with_context(|| format!("the kernel rejected program {name}"))?;
        }
        for name in [
            programs::PORT_TC,
            programs::UNDERLAY_TC,
            programs::TUNNEL_TC,
        ] {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing from the object"))?
                .try_into()?;
            prog.load()
                .with_context(|| format!("the kernel rejected program {name}"))?;
        }
        let maps = Maps::build(|name| {
            ebpf.take_map(name)
                .ok_or_else(|| anyhow!("map {name} missing from the object"))
        })?;
        // These programs remember the table: violind must be able to end their memories.
        if maps.fdb_epoch.is_none() {
            bail!("map {} missing from the object", names::FDB_EPOCH);
        }
        // And they count pairs in cells: violind must read and empty them.
        if maps.pair_cells.is_none() {
            bail!("map {} missing from the object", names::PAIR_CELLS);
        }
        Ok(Datapath {
            ebpf,
            maps,
            paths: paths.clone(),
            logger,
        })
    }

    /// Attaches an XDP program to `dev` in driver mode through a pinned link. If a link is
    /// already pinned for the interface (a previous daemon), the new program replaces the
    /// old one atomically: forwarding never stops.
    pub fn attach_xdp(&mut self, program: &str, dev: &NetDev) -> Result<()> {
        let pin = self.paths.link(&xdp_pin_name(&dev.name));
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(program)
            .ok_or_else(|| anyhow!("program {program} missing"))?
            .try_into()?;
        let replaced = take_pinned_link(&pin)
            .and_then(|old| old.try_into().ok())
            .and_then(|old| match prog.attach_to_link(old) {
                Ok(id) => Some(id),
                Err(e) => {
                    warn!(iface = %dev.name, error = %e, "stale pinned link; attaching anew");
                    None
                }
            });
        let link_id = match replaced {
            Some(id) => id,
            None => prog
                .attach_to_if_index(dev.ifindex, XdpMode::Driver)
                .with_context(|| {
                    format!(
                        "attaching XDP in driver mode to {} (another XDP program attached?)",
                        dev.name
                    )
                })?,
        };
        let link: FdLink = prog
            .take_link(link_id)?
            .try_into()
            .map_err(|_| anyhow!("kernel attached {} without a bpf_link", dev.name))?;
        pin_link(link, &pin)
    }

    /// Attaches a TC program to `dev`'s ingress through a pinned TCX link, replacing a
    /// pinned one's program atomically as [`Datapath::attach_xdp`] does.
    pub fn attach_tc(&mut self, program: &str, dev: &NetDev) -> Result<()> {
        let pin = self.paths.link(&tc_pin_name(&dev.name));
        let prog: &mut SchedClassifier = self
            .ebpf
            .program_mut(program)
            .ok_or_else(|| anyhow!("program {program} missing"))?
            .try_into()?;
        let replaced = take_pinned_link(&pin)
            .and_then(|old| old.try_into().ok())
            .and_then(|old| match prog.attach_to_link(old) {
                Ok(id) => Some(id),
                Err(e) => {
                    warn!(iface = %dev.name, error = %e, "stale pinned link; attaching anew");
                    None
                }
            });
        let link_id = match replaced {
            Some(id) => id,
            None => prog
                .attach(&dev.name, TcAttachType::Ingress)
                .with_context(|| format!("attaching TC (tcx ingress) to {}", dev.name))?,
        };
        let link: FdLink = prog
            .take_link(link_id)?
            .try_into()
            .map_err(|_| anyhow!("kernel attached TC on {} without a bpf_link", dev.name))?;
        pin_link(link, &pin)
    }

    /// Whether the programs log (debug_datapath): their log wants flushing now and then.
    pub fn logging(&self) -> bool {
        self.logger.is_some()
    }

    /// Forwards pending aya-log records from the programs to the daemon's log.
    pub fn flush_logs(&mut self) {
        if let Some(l) = &mut self.logger {
            l.flush();
        }
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }
}

/// Refuses maps a daemon of another version pinned with other sizes or flags: aya would
/// take them as they are, and the counters of hooks and drop reasons they lack would be
/// lost (and `violind stats` fail reading them), entries of another layout (underlay
/// addresses took 4 bytes before the IPv6 underlay) would be read as garbage, or flood
/// lists read in place could be reused under a program (FLOOD must not be preallocated,
/// see the eBPF `flood_list`).
fn check_pinned_sizes(dir: &Path) -> Result<()> {
    const NO_PREALLOC: u32 = 1;
    let size = |n: usize| Some(n as u32);
    // Name, entries, flags, key size, value size.
    let expected = [
        (
            names::ACTIONS,
            Some(HOOKS.len() as u32 * ACTION_SLOTS),
            0,
            None,
            None,
        ),
        (names::DROPS, Some(DropReason::COUNT), 0, None, None),
        (
            names::FLOOD,
            None,
            NO_PREALLOC,
            None,
            size(size_of::<FloodList>()),
        ),
        (names::CONFIG, None, 0, None, size(size_of::<HostConfig>())),
        (names::PEERS, None, 0, size(16), None),
        (names::FDB, None, 0, None, size(size_of::<FdbEntry>())),
        (names::ROUTES, None, 0, None, size(size_of::<FdbEntry>())),
    ];
    for (name, entries, flags, key, value) in expected {
        let pin = dir.join(name);
        if !pin.exists() {
            continue;
        }
        let info = aya::maps::MapInfo::from_pin(&pin)
            .with_context(|| format!("reading pinned map {}", pin.display()))?;
        let sized = entries.is_none_or(|n| n == info.max_entries())
            && key.is_none_or(|n| n == info.key_size())
            && value.is_none_or(|n| n == info.value_size());
        if !sized || info.map_flags() & flags != flags {
            bail!(
                "pinned map {name} (entries {}, key {} bytes, value {} bytes, flags {:#x}) \
                 was made by another version of violind. Stop that datapath with `violind \
                 stop` (forwarding stops until this violind starts) and start again",
                info.max_entries(),
                info.key_size(),
                info.value_size(),
                info.map_flags()
            );
        }
    }
    Ok(())
}

/// The flow-based (`external`) VXLAN device of TC port mode, one per network namespace
/// (as one violind is): GRO aggregates reach `violin_tunnel_tc` through it.
pub const TUNNEL_DEVICE: &str = "violin-vxlan";

/// Pin names of an interface's links: its XDP program, and its TC program (TC mode).
/// bpffs refuses names with dots, which interface names may have (VLANs: eth0.100);
/// ':' is not allowed in interface names, so the mapping cannot collide.
pub fn xdp_pin_name(ifname: &str) -> String {
    format!("xdp:{}", ifname.replace('.', ":"))
}

pub fn tc_pin_name(ifname: &str) -> String {
    format!("tc:{}", ifname.replace('.', ":"))
}

fn pin_link(link: FdLink, pin: &Path) -> Result<()> {
    link.pin(pin)
        .with_context(|| format!("pinning link {}", pin.display()))?;
    Ok(())
}

/// Takes a pinned link out of bpffs, keeping it alive as an open fd.
fn take_pinned_link(pin: &Path) -> Option<FdLink> {
    let pinned = PinnedLink::from_pin(pin).ok()?;
    match pinned.unpin() {
        Ok(link) => Some(link),
        Err(e) => {
            warn!(pin = %pin.display(), error = %e, "cannot unpin link");
            None
        }
    }
}

/// Detaches a program by dropping its pinned link (named as [`xdp_pin_name`] or
/// [`tc_pin_name`] give).
pub fn detach(paths: &Paths, pin_name: &str) {
    let pin = paths.link(pin_name);
    if let Some(link) = take_pinned_link(&pin) {
        drop(link);
        info!(link = pin_name, "detached");
    }
}

/// Names of the pinned links.
pub fn pinned_links(paths: &Paths) -> Vec<String> {
    fs::read_dir(paths.links())
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Detaches everything and removes all pins of a host: nothing is left behind.
pub fn teardown(paths: &Paths) -> Result<()> {
    let links = pinned_links(paths);
    for ifname in &links {
        detach(paths, ifname);
    }
    // The HTB qdiscs shaping needed, on the interfaces the programs were on.
    if let Ok(mut rtnl) = crate::netlink::Rtnl::open() {
        let ifaces: BTreeSet<&str> = links
            .iter()
            .filter_map(|l| l.split_once(':'))
            .map(|(_, i)| i)
            .collect();
        for pinned in ifaces {
            let name = pinned.replace(':', ".");
            if let Some(ifindex) = crate::netdev::ifindex(&name) {
                if let Err(e) = rtnl.remove_htb(ifindex) {
                    warn!(iface = %name, error = %e, "could not remove the HTB qdisc");
                }
            }
        }
    }
    match fs::remove_dir_all(&paths.pin_root) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("removing {}", paths.pin_root.display())),
    }
    // Last, and not fatal: the pins are what keeps the datapath alive.
    if let Err(e) =
        crate::netlink::Rtnl::open().and_then(|mut rtnl| rtnl.delete_link(TUNNEL_DEVICE))
    {
        warn!(device = TUNNEL_DEVICE, error = %e, "could not remove the VXLAN device");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use object::{Object, ObjectSection, ObjectSymbol, RelocationTarget, SymbolKind};

    /// compiler-builtins' byte-by-byte loops.
    const BYTE_LOOPS: [&str; 3] = ["memset", "memmove", "memcpy"];

    /// Where the functions of an eBPF object, programs or not, call compiler-builtins'
    /// `memset`, `memmove` or `memcpy`, as "function calls memset at offset", beside the
    /// count of programs. The BPF backend calls these, byte-by-byte loops, for zeroings
    /// and copies it does not expand, with no source line to show it. The observers'
    /// `describe` (run only while `violinctl observe` samples) may.
    fn byte_loop_calls(elf: &[u8]) -> (usize, Vec<String>, usize) {
        let file = object::File::parse(elf).expect("an ELF object");
        let functions: Vec<_> = file
            .symbols()
            .filter(|s| s.kind() == SymbolKind::Text)
            .filter(|s| s.name().is_ok_and(|n| !BYTE_LOOPS.contains(&n)))
            .collect();
        let programs = functions
            .iter()
            .filter(|s| s.name().is_ok_and(|n| n.starts_with("violin_")))
            .count();
        let (mut calls, mut observers) = (Vec::new(), 0);
        for section in file.sections() {
            for (offset, reloc) in section.relocations() {
                let RelocationTarget::Symbol(i) = reloc.target() else {
                    continue;
                };
                let target = file.symbol_by_index(i).and_then(|s| s.name()).unwrap_or("");
                if !BYTE_LOOPS.contains(&target) {
                    continue;
                }
                let caller = functions.iter().find(|f| {
                    f.section_index() == Some(section.index())
                        && (f.address()..f.address() + f.size()).contains(&offset)
                });
                let name = caller.and_then(|f| f.name().ok()).unwrap_or("?");
                if name.contains("describe") {
                    observers += 1;
                } else {
                    calls.push(format!(
                        "{name} calls {target} at {offset:#x} of its section"
                    ));
                }
            }
        }
        (programs, calls, observers)
    }

    #[test]
    fn no_function_calls_a_byte_loop_but_the_observers() {
        let (programs, calls, observers) = byte_loop_calls(super::OBJECT);
        // Both ports and the underlay in both modes, the tunnel device, the bench's two.
        assert!(programs >= 7, "found {programs} programs in the object");
        // The observers' calls show that the calls are seen at all: a linker that bound
        // the builtins locally would leave no relocation to find.
        assert!(
            observers > 0,
            "no call of memset from the observers' describe found: either describe no \
             longer makes one (then find another call this test can see) or the builtins' \
             calls no longer show as relocations"
        );
        assert!(
            calls.is_empty(),
            "a byte loop is called on the forwarding path (see bench/README.md, cost: find \
             the value the compiler zeroes or copies there and write it by words): {calls:?}"
        );
    }
}
