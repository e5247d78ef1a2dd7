//! Each CPU's memory of what its recent forwarding-table lookups found (`FDB_MEMO`), so
//! that the two lookups of every frame, learning its source and finding its destination,
//! take an inlined array lookup rather than two calls that hash a key (when the memory
//! holds the key; a miss costs the lookup and a little more).
//!
//! A memory is `(key, entry)` as the table held it at an epoch (`FDB_EPOCH`, two counts
//! of changes: the programs' learning writes and violind's reconciliations that changed
//! the table). It is believed only while both counts are unchanged, so a change of the
//! table, by any writer that counts it, forgets every CPU's memories at once; the LRU
//! table evicts only when an insert needs room, and every insert moves the epoch after
//! it. The epoch is read before the table, so a change racing the lookup leaves a memory
//! of an older epoch, forgotten at the next frame. That holds where stores and loads keep
//! program order, as on x86; on a weakly ordered CPU a reader may see the new epoch with
//! the old entry (the programs' atomic add orders nothing), and the memory then lasts
//! until the age bound. A memory is also forgotten after [`MEMO_JIFFIES`], which bounds
//! what a writer that does not count can leave stale: an edit with bpftool, a datapath of
//! an older version during a restart, or violind between its change and its count.

use core::ptr::{addr_of, addr_of_mut, copy_nonoverlapping, null_mut, read_volatile};

use aya_ebpf::{helpers::generated::bpf_jiffies64, macros::map, maps::PerCpuArray};
use dataplane_common::maps::{
    fdb_memo_index, FdbEntry, FdbKey, FDB_EPOCH_LEARNED, FDB_EPOCH_PLACED, FDB_MEMO_SIZE,
};

use crate::{
    counters::atomic_add,
    maps::{FDB, FDB_EPOCH},
};

#[repr(C)]
#[derive(Clone, Copy)]
struct Memo {
    key: FdbKey,
    entry: FdbEntry,
    /// The epoch when taken, as [`epoch`] folds it.
    epoch: u64,
    /// jiffies when taken. A new map's zeros are never fresh: jiffies start near 2^32.
    at: u64,
}

/// Not pinned: a restarted datapath starts with no memories.
#[map]
static FDB_MEMO: PerCpuArray<Memo> = PerCpuArray::with_max_entries(FDB_MEMO_SIZE, 0);

/// How long a memory is believed at most: 0.1 to 1 s by the kernel's HZ. The lookups a
/// memory saves are many per jiffy on a busy flow; one every hundred costs nothing.
const MEMO_JIFFIES: u64 = 100;

/// Both counts of `FDB_EPOCH` in one word, read before the table: one value to keep
/// across the table's lookups, where the programs' stacks have no room for more. The
/// learning count takes the low 40 bits' worth of change and violind's the bits above;
/// two epochs fold alike only after 2^40 learning writes or 2^24 of violind's, which no
/// memory lives to see.
///
/// A frame reads it once, before learning its source, and its destination's lookup uses
/// it too: that lookup then believes what was so when the frame began, as one racing
/// another CPU's change would. Not after the frame's own write: [`learn`] then hands back
/// no epoch, and the lookup goes to the table (a frame to its own source, a hairpin, must
/// find where the source is now, not the memory of where it was).
#[inline(always)]
pub(crate) fn epoch() -> Option<u64> {
    let learned = FDB_EPOCH.get_ptr(FDB_EPOCH_LEARNED)?;
    let placed = FDB_EPOCH.get_ptr(FDB_EPOCH_PLACED)?;
    // SAFETY: elements of the array, live for this program run; volatile, so each is
    // read once, here, before the table.
    unsafe { Some(read_volatile(learned) ^ (read_volatile(placed) << 40)) }
}

#[inline(always)]
fn jiffies() -> u64 {
    // SAFETY: a helper without arguments (the verifier inlines it as a load).
    unsafe { bpf_jiffies64() }
}

/// Whether this CPU's memory `m` holds `key` as of `epoch`.
#[inline(always)]
fn recall(m: *const Memo, key: &FdbKey, epoch: u64) -> bool {
    // SAFETY: an element of this CPU's array, live for this program run; nothing else on
    // this CPU runs meanwhile.
    let m = unsafe { &*m };
    m.epoch == epoch && jiffies().wrapping_sub(m.at) < MEMO_JIFFIES && m.key.same(key)
}

#[inline(always)]
fn remember(m: *mut Memo, key: &FdbKey, entry: &FdbEntry, epoch: u64) {
    // SAFETY: as in recall; `entry` is a table value or a stack value, never this CPU's
    // memory, so the copy does not overlap (a plain assignment may overlap as far as the
    // compiler knows, and becomes a call of a byte-by-byte memmove).
    unsafe {
        (*m).key = *key;
        copy_nonoverlapping(entry, addr_of_mut!((*m).entry), 1);
        (*m).epoch = epoch;
        (*m).at = jiffies();
    }
}

/// The table's entry for `key`, from this CPU's memory when it holds it as of `epoch`
/// (the frame's, from [`epoch`]).
#[inline(always)]
pub(crate) fn fdb(key: &FdbKey, epoch: Option<u64>) -> Option<FdbEntry> {
    let e = lookup(key, epoch);
    // Every table entry has a kind; the empty value (kind 0) says there is none.
    (e.kind != 0).then_some(e)
}

/// This CPU's memory at `key`'s position and the frame's epoch, or a null memory when
/// either cannot be had. Plain values, defined on every path: a merged `Option`'s undefined
/// payload lets the compiler copy a register no path wrote, which the verifier refuses
/// (and which build of the object does so depends on where it was built).
#[inline(always)]
fn memory(key: &FdbKey, epoch: Option<u64>) -> (*mut Memo, u64) {
    match (FDB_MEMO.get_ptr_mut(fdb_memo_index(key)), epoch) {
        (Some(m), Some(epoch)) => (m, epoch),
        _ => (null_mut(), 0),
    }
}

/// [`fdb`] as a value defined on every path (see [`memory`]): the empty entry when the
/// table has none.
#[inline(always)]
fn lookup(key: &FdbKey, epoch: Option<u64>) -> FdbEntry {
    let (m, epoch) = memory(key, epoch);
    if !m.is_null() && recall(m, key, epoch) {
        // SAFETY: as in recall.
        return unsafe { *addr_of!((*m).entry) };
    }
    // SAFETY: copied out of the map before use.
    match unsafe { FDB.get(key) } {
        Some(e) => {
            if !m.is_null() {
                remember(m, key, e, epoch);
            }
            *e
        }
        None => FdbEntry::default(),
    }
}

/// Whether learning `entry` leaves `known` as it is: static entries (placements by the
/// controller) are never learned over, and an equal entry needs no write.
#[inline(always)]
fn unchanged_by(known: &FdbEntry, entry: &FdbEntry) -> bool {
    known.is_static() || known == entry
}

/// Records that `key` (a frame's source) lives at `entry`, writing only when that changed:
/// a map write per packet would bounce the entry's cache line between CPUs. A static
/// entry (a placement by the controller) is never overwritten. `frame` is the frame's
/// epoch ([`epoch`]); what comes back is the epoch its later lookups may believe
/// memories of: the same, or none once this wrote the table.
#[inline(always)]
pub(crate) fn learn(key: &FdbKey, entry: FdbEntry, frame: Option<u64>) -> Option<u64> {
    let (m, epoch) = memory(key, frame);
    if !m.is_null() && recall(m, key, epoch) {
        // SAFETY: as in recall.
        let known = unsafe { &*addr_of!((*m).entry) };
        if unchanged_by(known, &entry) {
            return frame;
        }
    }
    // Compared in place rather than copied out: the copy costs instructions on the path
    // of every frame this CPU does not remember.
    // SAFETY: the entry is only read for the comparison and the memory; a concurrent
    // update moves the epoch, which forgets the memory.
    if let Some(old) = unsafe { FDB.get(key) } {
        if unchanged_by(old, &entry) {
            if !m.is_null() {
                remember(m, key, old, epoch);
            }
            return frame;
        }
    }
    let _ = FDB.insert(key, entry, 0);
    // After the write: a lookup that read the table before it took the old epoch.
    if let Some(learned) = FDB_EPOCH.get_ptr_mut(FDB_EPOCH_LEARNED) {
        // Every CPU adds to it atomically; a u64 as an i64, since only the change counts.
        atomic_add(learned as *mut i64, 1);
    }
    None
}
