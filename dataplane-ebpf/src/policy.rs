//! Policies on frames from VM ports, shared by the XDP and TC port programs.

use aya_ebpf::helpers::generated::bpf_ktime_get_ns;
use dataplane_common::{
    counters::DropReason,
    maps::{PairKey, PortInfo, PAIR_ALLOWED, PAIR_LIMITED, PORT_LIMITED, PORT_RESTRICTED},
    packet::{check_source, is_multicast, EthHdr, Frame},
};

use crate::maps::PAIRS;

/// Enforced here because the VM cannot reach it: the source must be the port's own, and
/// in environments with a pair policy a unicast frame must be between an allowed pair
/// and within the pair's traffic bound.
#[inline(always)]
pub(crate) fn port_policy<F: Frame>(
    f: &F,
    port: &PortInfo,
    eth: &EthHdr,
    len: usize,
) -> Result<(), DropReason> {
    check_source(f, eth, port.flags, &port.mac, &port.ip)?;
    if port.flags & (PORT_RESTRICTED | PORT_LIMITED) == 0 || is_multicast(&eth.dst) {
        return Ok(());
    }
    let key = PairKey::new(port.vni, eth.src, eth.dst);
    let Some(state) = PAIRS.get_ptr_mut(key) else {
        if port.flags & PORT_RESTRICTED != 0 {
            return Err(DropReason::NotAllowed);
        }
        return Ok(());
    };
    // SAFETY: the entry stays valid for this program run; races between CPUs only blur
    // the bucket (see PairState).
    let state = unsafe { &mut *state };
    if port.flags & PORT_RESTRICTED != 0 && state.flags & PAIR_ALLOWED == 0 {
        return Err(DropReason::NotAllowed);
    }
    // SAFETY: helper without arguments.
    if state.flags & PAIR_LIMITED != 0 && !state.take(unsafe { bpf_ktime_get_ns() }, len as u64) {
        return Err(DropReason::RateLimited);
    }
    Ok(())
}
