//! What each VM pair sent (the local traffic matrix VTTIF reads). The programs count a
//! frame in one of two places: the sending CPU's cell for the pair in `PAIR_CELLS`, or,
//! when another pair holds that cell, the pair's entry in `PAIR_TRAFFIC` (see
//! `dataplane_common::maps::PAIR_CELL_COUNT`). A pair's traffic is the sum of both.

use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    os::fd::{AsFd, AsRawFd},
};

use anyhow::{anyhow, Result};
use aya::maps::{IterableMap, MapData, PerCpuArray, PerCpuValues};
use dataplane_common::{
    counters::Counter,
    maps::{PairCell, PairKey, PAIR_CELL_COUNT},
};
use tracing::warn;

use crate::datapath::Maps;

/// What each VM pair sent, summed over CPUs and both places, by pair.
pub fn pair_totals(maps: &Maps) -> Vec<(PairKey, Counter)> {
    let mut totals: BTreeMap<PairKey, Counter> = BTreeMap::new();
    for (key, per_cpu) in maps.pair_traffic.iter().filter_map(|r| r.ok()) {
        let total = totals.entry(key).or_default();
        for c in per_cpu.iter() {
            total.merge(c);
        }
    }
    if let Some(cells) = &maps.pair_cells {
        match read_cells(cells) {
            Ok((cpus, all)) => {
                for per_cpu in all.chunks(cpus) {
                    add_cells(&mut totals, per_cpu);
                }
            }
            Err(e) => warn!("reading PAIR_CELLS: {e:#}"),
        }
    }
    totals.into_iter().collect()
}

/// Every position's cells, one per possible CPU each, position by position from 0 (the
/// count of CPUs first), in one BPF_MAP_LOOKUP_BATCH rather than a lookup (a system call)
/// per position: violind reads them at every traffic report (`traffic_report_ms`). aya
/// has no batch calls.
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
    // ENOENT: the whole array was read (the kernel's way of saying there is no more).
    if r < 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ENOENT) {
            return Err(anyhow!("BPF_MAP_LOOKUP_BATCH on PAIR_CELLS: {e}"));
        }
    }
    values.truncate(attr.count as usize * cpus);
    Ok((cpus, values))
}

/// Positions of `PAIR_CELLS` a pair holds on some CPU: when they run out, new pairs are
/// counted in `PAIR_TRAFFIC`, a hash lookup per frame.
pub fn pair_cells_held(maps: &Maps) -> usize {
    let Some(Ok((cpus, all))) = maps.pair_cells.as_ref().map(read_cells) else {
        return 0;
    };
    all.chunks(cpus)
        .filter(|per_cpu| per_cpu.iter().any(|c| !c.is_empty()))
        .count()
}

/// Adds the pairs' counts in one position's cells (one per CPU) to `totals`.
fn add_cells(totals: &mut BTreeMap<PairKey, Counter>, cells: &[PairCell]) {
    for cell in cells.iter().filter(|c| !c.is_empty()) {
        totals.entry(cell.key).or_default().merge(&cell.traffic);
    }
}

/// Forgets the counts of pairs whose environment is no longer in `vnis`: their
/// `PAIR_TRAFFIC` entries go and their cells are emptied for other pairs to take.
///
/// A position is written back whole (one value per CPU), so a frame that another CPU
/// counts there between this read and write is lost; it happens only at a position
/// where a removed environment's pair held a cell, and only while the change is applied.
pub fn forget_environments(maps: &mut Maps, vnis: &BTreeSet<u32>) {
    let stale: Vec<PairKey> = maps
        .pair_traffic
        .keys()
        .filter_map(|k| k.ok())
        .filter(|k| !vnis.contains(&k.vni))
        .collect();
    for k in &stale {
        let _ = maps.pair_traffic.remove(k);
    }
    // Reading every position costs a system call each: only once an environment went.
    if maps
        .cells_vnis
        .as_ref()
        .is_some_and(|before| before.is_subset(vnis))
    {
        maps.cells_vnis = Some(vnis.clone());
        return;
    }
    let Some(cells) = maps.pair_cells.as_mut() else {
        return;
    };
    let (cpus, mut all) = match read_cells(cells) {
        Ok(read) => read,
        Err(e) => {
            warn!("reading PAIR_CELLS to empty removed environments' cells: {e:#}");
            return;
        }
    };
    let mut done = true;
    for (index, per_cpu) in (0..PAIR_CELL_COUNT).zip(all.chunks_mut(cpus)) {
        if !empty_stale(per_cpu, vnis) {
            continue;
        }
        let written = PerCpuValues::try_from(per_cpu.to_vec())
            .map_err(anyhow::Error::from)
            .and_then(|v| Ok(cells.set(index, v, 0)?));
        if let Err(e) = written {
            warn!(
                index,
                "emptying the pair cells of removed environments: {e:#}"
            );
            done = false;
        }
    }
    // A position not emptied is tried again at the next change.
    if done {
        maps.cells_vnis = Some(vnis.clone());
    }
}

/// Empties the cells of `cells` whose pair's environment is not in `vnis`; whether any was.
fn empty_stale(cells: &mut [PairCell], vnis: &BTreeSet<u32>) -> bool {
    let mut changed = false;
    for cell in cells.iter_mut() {
        if !cell.is_empty() && !vnis.contains(&cell.key.vni) {
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
        let mut totals = BTreeMap::from([(
            a.key,
            Counter {
                packets: 10,
                bytes: 1000,
            },
        )]);
        // Two CPUs hold cells of the pair `a` at one position; one CPU's is empty.
        add_cells(&mut totals, &[a, PairCell::default(), a]);
        add_cells(&mut totals, &[b]);
        assert_eq!(
            totals[&a.key],
            Counter {
                packets: 16,
                bytes: 1600
            }
        );
        assert_eq!(totals[&b.key], b.traffic);
        assert_eq!(totals.len(), 2);
    }

    #[test]
    fn only_removed_environments_cells_are_emptied() {
        let live = BTreeSet::from([1001]);
        let mut cells = [cell(1001, 2, 3, 300), PairCell::default()];
        assert!(!empty_stale(&mut cells, &live));
        assert_eq!(cells[0], cell(1001, 2, 3, 300));

        let mut cells = [cell(1001, 2, 3, 300), cell(1002, 2, 1, 64)];
        assert!(empty_stale(&mut cells, &live));
        assert_eq!(cells, [cell(1001, 2, 3, 300), PairCell::default()]);
        assert!(cells[1].is_empty());
    }
}
