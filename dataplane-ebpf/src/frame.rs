//! The XDP and TC contexts behind `dataplane_common`'s [`Frame`] interface, so the
//! host-tested parsers serve both hooks.

use aya_ebpf::{
    helpers::generated::bpf_xdp_get_buff_len,
    programs::{TcContext, XdpContext},
};
use dataplane_common::packet::{outer_words, outer_words6, Ends, Eth, Frame, Plain, Tunnel};

/// A `T` at `off` of the packet data between `start` and `end`, if it lies inside.
#[inline(always)]
fn linear<T: Plain>(start: usize, end: usize, off: usize) -> Option<T> {
    if start + off + core::mem::size_of::<T>() > end {
        return None;
    }
    // SAFETY: the range lies inside the packet data, checked just above.
    Some(unsafe { core::ptr::read_unaligned((start + off) as *const T) })
}

/// The 4 bytes at `off` of the packet data between `start` and `end`, if they lie inside,
/// as one 32-bit load: packet data has no known alignment, so a word read through
/// [`linear`] becomes four loads and the shifts that join them.
#[inline(always)]
fn linear_word(start: usize, end: usize, off: usize) -> Option<u32> {
    let at = start + off;
    if at + 4 > end {
        return None;
    }
    let word: u32;
    // SAFETY: the 4 bytes at `at` lie inside the packet data, checked just above, and the
    // instruction reads them alone. The verifier takes packet loads at any alignment where
    // the CPU does (x86); on a CPU that needs aligned loads it refuses a misaligned one
    // (as the inner headers' words behind 50 bytes of outer headers would be) and the
    // program does not load, so no such load ever runs.
    unsafe {
        core::arch::asm!(
            "{word} = *(u32 *)({at} + 0)",
            at = in(reg) at,
            word = lateout(reg) word,
            options(readonly, nostack, preserves_flags),
        )
    };
    Some(word)
}

/// Stores `word` in the 4 packet bytes at `at`, one instruction.
///
/// # Safety
///
/// The 4 bytes at `at` must lie in the packet data (bounds-checked by the caller against
/// its end).
#[inline(always)]
unsafe fn store_word(at: usize, word: u32) {
    // SAFETY: the caller's; the instruction writes those 4 bytes alone. Misaligned packet
    // stores are taken by the verifier where the CPU takes them, as the loads in
    // linear_word.
    unsafe {
        core::arch::asm!(
            "*(u32 *)({at} + 0) = {word}",
            at = in(reg) at,
            word = in(reg) word,
            options(nostack, preserves_flags),
        )
    };
}

/// [`store_word`] for the 2 bytes at `at`.
///
/// # Safety
///
/// As for [`store_word`], for 2 bytes.
#[inline(always)]
unsafe fn store_half(at: usize, half: u16) {
    // SAFETY: as in store_word.
    unsafe {
        core::arch::asm!(
            "*(u16 *)({at} + 0) = {half}",
            at = in(reg) at,
            half = in(reg) half,
            options(nostack, preserves_flags),
        )
    };
}

/// Stores IPv4 outer headers ([`outer_words`]) at `start`, one instruction per word.
///
/// # Safety
///
/// The 50 bytes at `start` must lie in the packet data (bounds-checked by the caller
/// against its end).
#[inline(always)]
pub(crate) unsafe fn store_outer_words(
    start: usize,
    t: &Tunnel,
    vni: u32,
    sport: u16,
    inner_len: usize,
) {
    // SAFETY: `off` is below 48, so each word lies in the 50 bytes the caller checked.
    let tail = outer_words(t, vni, sport, inner_len, |off, word| unsafe {
        store_word(start + off, word)
    });
    // SAFETY: bytes 48 and 49 of the same 50.
    unsafe { store_half(start + 48, tail) };
}

/// Stores IPv6 outer headers ([`outer_words6`]) at `start`, one instruction per word.
///
/// # Safety
///
/// The 70 bytes at `start` must lie in the packet data (bounds-checked by the caller
/// against its end).
#[inline(always)]
pub(crate) unsafe fn store_outer6_words(
    start: usize,
    t: &Ends,
    vni: u32,
    sport: u16,
    inner_len: usize,
) {
    // SAFETY: `off` is below 68, so each word lies in the 70 bytes the caller checked.
    let tail = outer_words6(t, vni, sport, inner_len, |off, word| unsafe {
        store_word(start + off, word)
    });
    // SAFETY: bytes 68 and 69 of the same 70.
    unsafe { store_half(start + 68, tail) };
}

/// Stores an Ethernet header ([`Eth::words`]) at `at`, one instruction per word, where a
/// copy of its wire layout is fourteen byte stores.
///
/// # Safety
///
/// The 14 bytes at `at` must lie in the packet data (bounds-checked by the caller against
/// its end).
#[inline(always)]
pub(crate) unsafe fn store_eth_words(at: usize, eth: &Eth) {
    let ([a, b, c], ethertype) = eth.words();
    // SAFETY: bytes 0-13 of the 14 the caller checked.
    unsafe {
        store_word(at, a);
        store_word(at + 4, b);
        store_word(at + 8, c);
        store_half(at + 12, ethertype);
    }
}

/// Reads only the first buffer of a multi-buffer frame; `total_len` counts them all. The
/// length is asked of the kernel once, when the frame is taken (a helper call, which
/// the parsers would otherwise make at every check of a length).
pub(crate) struct Pkt<'a> {
    ctx: &'a XdpContext,
    len: usize,
}

impl<'a> Pkt<'a> {
    #[inline(always)]
    pub(crate) fn new(ctx: &'a XdpContext) -> Self {
        // SAFETY: helper on the program's own context.
        let len = unsafe { bpf_xdp_get_buff_len(ctx.ctx) as usize };
        Pkt { ctx, len }
    }

    /// The frame, whose length in all its buffers the caller knows to be `len`.
    #[inline(always)]
    pub(crate) fn with_len(ctx: &'a XdpContext, len: usize) -> Self {
        Pkt { ctx, len }
    }
}

impl Frame for Pkt<'_> {
    #[inline(always)]
    fn total_len(&self) -> usize {
        self.len
    }

    #[inline(always)]
    fn load<T: Plain>(&self, off: usize) -> Option<T> {
        linear(self.ctx.data(), self.ctx.data_end(), off)
    }

    #[inline(always)]
    fn load_word(&self, off: usize) -> Option<u32> {
        linear_word(self.ctx.data(), self.ctx.data_end(), off)
    }
}

/// Reads the linear part of the skb alone: for describing a frame to observers, where
/// what lies beyond is left out rather than fetched.
pub(crate) struct SkbHead<'a>(pub(crate) &'a TcContext);

impl Frame for SkbHead<'_> {
    #[inline(always)]
    fn total_len(&self) -> usize {
        self.0.len() as usize
    }

    #[inline(always)]
    fn load<T: Plain>(&self, off: usize) -> Option<T> {
        linear(self.0.data(), self.0.data_end(), off)
    }

    #[inline(always)]
    fn load_word(&self, off: usize) -> Option<u32> {
        linear_word(self.0.data(), self.0.data_end(), off)
    }
}

/// Reads the linear part of the skb directly, and what lies beyond it (paged data)
/// through bpf_skb_load_bytes: a helper call per header costs more than the program's
/// own work on a small frame.
pub(crate) struct Skb<'a>(pub(crate) &'a TcContext);

impl Frame for Skb<'_> {
    #[inline(always)]
    fn total_len(&self) -> usize {
        self.0.len() as usize
    }

    #[inline(always)]
    fn load<T: Plain>(&self, off: usize) -> Option<T> {
        let start = self.0.data();
        if start + off + core::mem::size_of::<T>() <= self.0.data_end() {
            // SAFETY: the range lies inside the linear data, checked just above.
            return Some(unsafe { core::ptr::read_unaligned((start + off) as *const T) });
        }
        self.0.load::<T>(off).ok()
    }

    #[inline(always)]
    fn load_word(&self, off: usize) -> Option<u32> {
        linear_word(self.0.data(), self.0.data_end(), off)
            .or_else(|| self.0.load::<[u8; 4]>(off).ok().map(u32::from_ne_bytes))
    }
}
