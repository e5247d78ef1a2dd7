//! What each VM pair sent (the local traffic matrix VTTIF reads). The programs count a
//! frame in one of two places: the sending CPU's cell for the pair in `PAIR_CELLS`, or,
//! when another pair holds that cell, the pair's entry in `PAIR_TRAFFIC` (see
//! `dataplane_common::maps::PAIR_CELL_COUNT`). A pair's traffic is the sum of both.

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    os::fd::{AsFd, AsRawFd},
};

use anyhow::{anyhow, bail, Result};
use aya::maps::{IterableMap, MapData, PerCpuArray, PerCpuValues};
use dataplane_common::{
    counters::Counter,
    maps::{PairCell, PairKey, PAIR_CELL_COUNT},
};
use tracing::warn;

use crate::datapath::Maps;

/// A pair's counts in each place, summed over CPUs. Each place goes down on its own
/// (the hash map evicts, violind empties cells), so a reader of changes takes each apart.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PairParts {
    pub cells: Counter,
    pub hash: Counter,
}

impl PairParts {
    pub fn total(&self) -> Counter {
        let mut t = self.cells;
        t.merge(&self.hash);
        t
    }
}

/// Every position's cells, one per possible CPU each, as read at one moment: read once
/// for everything a reading of the maps shows of them.
pub struct Cells {
    cpus: usize,
    all: Vec<PairCell>,
}

impl Cells {
    /// The cells in `maps`; None where the object has none, or (logged) they cannot be
    /// read.
    pub fn read(maps: &Maps) -> Option<Cells> {
        match read_cells(maps.pair_cells.as_ref()?) {
            Ok((cpus, all)) => Some(Cells { cpus, all }),
            Err(e) => {
                warn!("reading PAIR_CELLS: {e:#}");
                None
            }
        }
    }

    /// Cells pairs hold, over all CPUs: when a CPU's run out, its new pairs are counted
    /// in `PAIR_TRAFFIC`, a hash lookup per frame. With the capacity, `PAIR_CELL_COUNT`
    /// per CPU.
    pub fn held(&self) -> (usize, u32) {
        let held = self.all.iter().filter(|c| !c.is_empty()).count();
        (held, PAIR_CELL_COUNT * self.cpus as u32)
    }
}

/// What each VM pair sent, summed over CPUs and both places, by pair.
pub fn pair_totals(maps: &Maps, cells: Option<&Cells>) -> Vec<(PairKey, Counter)> {
    pair_parts(maps, cells)
        .into_iter()
        .map(|(k, p)| (k, p.total()))
        .collect()
}

/// What each VM pair sent, summed over CPUs, in each place (`cells`: as read from `maps`).
pub fn pair_parts(maps: &Maps, cells: Option<&Cells>) -> BTreeMap<PairKey, PairParts> {
    let mut parts: BTreeMap<PairKey, PairParts> = BTreeMap::new();
    for (key, per_cpu) in maps.pair_traffic.iter().filter_map(|r| r.ok()) {
        let hash = &mut parts.entry(key).or_default().hash;
        for c in per_cpu.iter() {
            hash.merge(c);
        }
    }
    if let Some(cells) = cells {
        for per_cpu in cells.all.chunks(cells.cpus) {
            add_cells(&mut parts, per_cpu);
        }
    }
    parts
}

/// Every position's cells, one per possible CPU each, position by position from 0 (the
/// count of CPUs first), in one BPF_MAP_LOOKUP_BATCH rather than a lookup (a system call)
/// per position: violind reads them at every traffic report (`traffic_report_ms`), 32
/// bytes per position and CPU. aya has no batch calls.
fn read_cells(cells: &PerCpuArray<MapData, PairCell>) -> Result<(usize, Vec<PairCell>)> {
    /// `struct bpf_attr`'s member for the BPF_MAP_*_BATCH commands (linux/bpf.h).
    #[repr(C)]
    struct Batch {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }
    const BPF_MAP_LOOKUP_BATCH: libc::c_long = 24;
    let cpus = aya::util::nr_cpus().map_err(|(what, e)| anyhow!("{what}: {e}"))?;
    // The kernel lays out each CPU's value at a multiple of 8 bytes; a PairCell is 32.
    const _: () = assert!(size_of::<PairCell>().is_multiple_of(8));
    let n = PAIR_CELL_COUNT as usize;
    let mut keys = vec![0u32; n];
    let mut values = vec![PairCell::default(); n * cpus];
    let mut next = 0u32;
    let mut attr = Batch {
        in_batch: 0,
        out_batch: &mut next as *mut u32 as u64,
        keys: keys.as_mut_ptr() as u64,
        values: values.as_mut_ptr() as u64,
        count: n as u32,
        map_fd: cells.map().fd().as_fd().as_raw_fd() as u32,
        elem_flags: 0,
        flags: 0,
    };
    // SAFETY: `attr` is the batch member of bpf_attr, with the size passed; the kernel
    // writes at most `count` keys (u32, the array's key) into `keys`, `count` times
    // `cpus` values of 32 bytes into `values` (both that long), a u32 batch token into
    // `next`, and `count` back into `attr`; all live across the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_LOOKUP_BATCH,
            &mut attr as *mut Batch,
            size_of::<Batch>() as u32,
        )
    };
    // ENOENT says the batch reached the array's end before `count`: not an error (this
    // asks for exactly its size, where the kernel returns 0, but a map pinned with fewer
    // entries would end early).
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOENT) {
            bail!("BPF_MAP_LOOKUP_BATCH on PAIR_CELLS: {e}");
        }
    }
    let filled = attr.count as usize;
    // Callers take the i-th run of values as position i.
    if keys[..filled]
        .iter()
        .enumerate()
        .any(|(i, &k)| k as usize != i)
    {
        bail!("BPF_MAP_LOOKUP_BATCH on PAIR_CELLS gave its positions out of order");
    }
    values.truncate(filled * cpus);
    Ok((cpus, values))
}

/// Adds the pairs' counts in one position's cells (one per CPU) to `parts`.
fn add_cells(parts: &mut BTreeMap<PairKey, PairParts>, cells: &[PairCell]) {
    for cell in cells.iter().filter(|c| !c.is_empty()) {
        parts
            .entry(cell.key)
            .or_default()
            .cells
            .merge(&cell.traffic);
    }
}

/// Forgets the counts of pairs that are no longer here. Their `PAIR_TRAFFIC` entries go
/// with their environment (the LRU map ages out the rest); their cells are emptied, for
/// other pairs to take, once the environment went or the source is no longer an address
/// behind a local port (`local`: the forwarding table's local entries, as (VNI, MAC)),
/// so that VMs that left or migrated away do not keep cells for good. A live VM whose
/// entry the table evicted loses its counts so far in the cells and takes a cell again
/// with its next frame.
///
/// A position is written back whole, one value per CPU, from another CPU than the
/// programs': a frame counted at that position between the read and the write is lost,
/// and a pair that took an empty cell there meanwhile loses it (it takes it again with
/// its next frame). That happens only at positions with a cell to empty, while a change
/// is applied.
pub fn forget_pairs(maps: &mut Maps, vnis: &BTreeSet<u32>, local: &BTreeSet<(u32, [u8; 6])>) {
    let stale: Vec<PairKey> = maps
        .pair_traffic
        .keys()
        .filter_map(|k| k.ok())
        .filter(|k| !vnis.contains(&k.vni))
        .collect();
    for k in &stale {
        let _ = maps.pair_traffic.remove(k);
    }
    let Some(cells) = maps.pair_cells.as_mut() else {
        return;
    };
    let (cpus, mut all) = match read_cells(cells) {
        Ok(read) => read,
        Err(e) => {
            warn!("reading PAIR_CELLS to empty the cells of pairs gone: {e:#}");
            return;
        }
    };
    let here = |k: &PairKey| vnis.contains(&k.vni) && local.contains(&(k.vni, k.src));
    for (index, per_cpu) in (0..PAIR_CELL_COUNT).zip(all.chunks_mut(cpus)) {
        if !empty_gone(per_cpu, here) {
            continue;
        }
        let written = PerCpuValues::try_from(per_cpu.to_vec())
            .map_err(anyhow::Error::from)
            .and_then(|v| Ok(cells.set(index, v, 0)?));
        if let Err(e) = written {
            warn!(index, "emptying the cells of pairs gone: {e:#}");
        }
    }
}

/// Empties the cells of `cells` whose pair is not `here`; whether any was.
fn empty_gone(cells: &mut [PairCell], here: impl Fn(&PairKey) -> bool) -> bool {
    let mut changed = false;
    for cell in cells.iter_mut() {
        if !cell.is_empty() && !here(&cell.key) {
            *cell = PairCell::default();
            changed = true;
        }
    }
    changed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(vni: u32, dst: u8, packets: u64, bytes: u64) -> PairCell {
        PairCell {
            key: PairKey::new(vni, [2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, dst]),
            traffic: Counter { packets, bytes },
        }
    }

    #[test]
    fn cells_add_to_what_the_hash_map_counted() {
        let a = cell(1001, 2, 3, 300);
        let b = cell(1001, 3, 1, 64);
        let hashed = Counter {
            packets: 10,
            bytes: 1000,
        };
        let mut parts = BTreeMap::from([(
            a.key,
            PairParts {
                hash: hashed,
                ..Default::default()
            },
        )]);
        // Two CPUs hold cells of the pair `a` at one position; one CPU's is empty.
        add_cells(&mut parts, &[a, PairCell::default(), a]);
        add_cells(&mut parts, &[b]);
        let cells_a = Counter {
            packets: 6,
            bytes: 600,
        };
        assert_eq!(parts[&a.key].cells, cells_a);
        assert_eq!(parts[&a.key].hash, hashed);
        assert_eq!(
            parts[&a.key].total(),
            Counter {
                packets: 16,
                bytes: 1600
            }
        );
        assert_eq!(parts[&b.key].total(), b.traffic);
        assert_eq!(parts.len(), 2);
    }

    #[test]
    fn only_the_cells_of_pairs_gone_are_emptied() {
        let here = |k: &PairKey| k.vni == 1001;
        let mut cells = [cell(1001, 2, 3, 300), PairCell::default()];
        assert!(!empty_gone(&mut cells, here));
        assert_eq!(cells[0], cell(1001, 2, 3, 300));

        let mut cells = [cell(1001, 2, 3, 300), cell(1002, 2, 1, 64)];
        assert!(empty_gone(&mut cells, here));
        assert_eq!(cells, [cell(1001, 2, 3, 300), PairCell::default()]);
        assert!(cells[1].is_empty());
    }
}
