//! The XDP and TC contexts behind `dataplane_common`'s [`Frame`] interface, so the
//! host-tested parsers serve both hooks.

use aya_ebpf::{
    helpers::generated::bpf_xdp_get_buff_len,
    programs::{TcContext, XdpContext},
};
use dataplane_common::packet::{Frame, Plain};

/// A `T` at `off` of the packet data between `start` and `end`, if it lies inside.
#[inline(always)]
fn linear<T: Plain>(start: usize, end: usize, off: usize) -> Option<T> {
    if start + off + core::mem::size_of::<T>() > end {
        return None;
    }
    // SAFETY: the range lies inside the packet data, checked just above.
    Some(unsafe { core::ptr::read_unaligned((start + off) as *const T) })
}

/// Reads only the first buffer of a multi-buffer frame; `total_len` counts them all.
pub(crate) struct Pkt<'a>(pub(crate) &'a XdpContext);

impl Frame for Pkt<'_> {
    #[inline(always)]
    fn total_len(&self) -> usize {
        // SAFETY: helper on the program's own context.
        unsafe { bpf_xdp_get_buff_len(self.0.ctx) as usize }
    }

    #[inline(always)]
    fn load<T: Plain>(&self, off: usize) -> Option<T> {
        linear(self.0.data(), self.0.data_end(), off)
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
}
