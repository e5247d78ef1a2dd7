//! Live events for `violind observe`: the datapath describes a dropped frame (and, sampled,
//! a forwarded one) into a ring buffer while someone observes, at a bounded rate, and not
//! at all otherwise. The description is parsed here, where the bounds logic is tested on
//! byte slices; the programs only fill and submit it.
use crate::packet::{be16, Frame, ETH_P_IPV4};

/// Whether anyone observes, and how (`OBSERVE`, one entry).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ObserveConfig {
    /// Non-zero while an observer is attached; zero: the programs describe nothing.
    pub on: u32,
    /// One forwarded frame in 2^32 / `below` is described (0: none, drops only): the
    /// share of u32 draws below it, as [`ObserveConfig::every`] and
    /// [`ObserveConfig::skip`] read it.
    pub below: u32,
}

impl ObserveConfig {
    /// On, describing about one forwarded frame in `every` (0: none).
    pub fn one_in(every: u32) -> ObserveConfig {
        ObserveConfig {
            on: 1,
            // One draw in n falls below 2^32 / n (every draw but one in 2^32 for n = 1).
            below: match every {
                0 => 0,
                n => share_of_u32(n),
            },
        }
    }

    /// The N of "one forwarded frame in N" (0: none).
    pub fn every(&self) -> u32 {
        match self.below {
            0 => 0,
            b => share_of_u32(b),
        }
    }

    /// How many forwarded frames pass before the next sample, from a `random` u32:
    /// uniform in 0 ..= 2 (N - 1), so N - 1 on average and one frame in N sampled (for N
    /// over 2^31, the draw itself: a u32 holds no more). A
    /// CPU counts these down, so a frame costs a decrement and the draw (and its
    /// division) comes once per sample; drawn, so that periodic traffic is not sampled
    /// in step with its period.
    pub fn skip(&self, random: u32) -> u32 {
        let n = u64::from(self.every());
        if n <= 1 {
            return 0;
        }
        (u64::from(random) % (2 * n - 1)) as u32
    }
}

/// 2^32 / `n`, rounded, at most `u32::MAX`: the threshold for one draw in `n`, and back.
fn share_of_u32(n: u32) -> u32 {
    let n = u64::from(n);
    (((1u64 << 32) + n / 2) / n).min(u64::from(u32::MAX)) as u32
}

/// `FlowEvent::reason` of a forwarded frame; a drop's is its `DropReason` plus one.
pub const FORWARDED: u8 = 0;

/// Bytes of the ring buffer the events go through.
pub const EVENTS_BYTES: u32 = 256 * 1024;

/// One frame as an observer sees it: where it was, what became of it, its addresses.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FlowEvent {
    /// bpf_ktime_get_ns when it was seen.
    pub ns: u64,
    /// The counter slot of the port it came in on (the underlay's is 0).
    pub slot: u32,
    /// The frame's length.
    pub len: u32,
    /// [`FORWARDED`], or the drop reason plus one.
    pub reason: u8,
    /// The IP protocol when the frame is IPv4, else 0.
    pub proto: u8,
    pub ethertype: [u8; 2],
    pub dst: [u8; 6],
    pub src: [u8; 6],
    pub ip_src: [u8; 4],
    pub ip_dst: [u8; 4],
    /// TCP or UDP ports of an unfragmented IPv4 packet without options beyond its
    /// header length, else zeros.
    pub sport: [u8; 2],
    pub dport: [u8; 2],
    pub _pad: [u8; 4],
}

const _: () = assert!(core::mem::size_of::<FlowEvent>() == 48);

impl FlowEvent {
    /// Describes frame `f` seen on `slot` at `ns`; `reason` is [`FORWARDED`] or a drop
    /// reason plus one. Whatever does not fit in the frame's first buffer stays zero: a
    /// runt has no addresses, a truncated IPv4 header no IPs.
    pub fn of<F: Frame + ?Sized>(f: &F, slot: u32, reason: u8, ns: u64) -> FlowEvent {
        let mut e = FlowEvent::default();
        e.fill(f, slot, reason, ns);
        e
    }

    /// [`FlowEvent::of`] written in place, every byte of it (the datapath fills ring
    /// buffer memory this way: a copy on its stack would not fit beside the deepest
    /// program's). Fields are loaded one by one, each small enough for a register.
    #[inline(always)]
    pub fn fill<F: Frame + ?Sized>(&mut self, f: &F, slot: u32, reason: u8, ns: u64) {
        self.ns = ns;
        self.slot = slot;
        self.len = f.total_len() as u32;
        self.reason = reason;
        self.proto = 0;
        self.ethertype = [0; 2];
        self.dst = [0; 6];
        self.src = [0; 6];
        self.ip_src = [0; 4];
        self.ip_dst = [0; 4];
        self.sport = [0; 2];
        self.dport = [0; 2];
        self._pad = [0; 4];
        // Farthest field first, each with its own return: once it is in the frame, the
        // nearer ones are too, and the compiler drops their checks. Checked as a tuple,
        // it may read a nearer field on a path the verifier cannot tell is impossible.
        let Some(ethertype) = f.load::<[u8; 2]>(12) else {
            return;
        };
        let (Some(dst), Some(src)) = (f.load::<[u8; 6]>(0), f.load::<[u8; 6]>(6)) else {
            return;
        };
        self.dst = dst;
        self.src = src;
        self.ethertype = ethertype;
        if be16(ethertype) != ETH_P_IPV4 {
            return;
        }
        // The destination ends the fixed header: with it, the whole header is there.
        let Some(ip_dst) = f.load::<[u8; 4]>(30) else {
            return;
        };
        let (Some([version_ihl]), Some(frag), Some([proto]), Some(ip_src)) = (
            f.load::<[u8; 1]>(14),
            f.load::<[u8; 2]>(20),
            f.load::<[u8; 1]>(23),
            f.load::<[u8; 4]>(26),
        ) else {
            return;
        };
        self.ip_src = ip_src;
        self.ip_dst = ip_dst;
        self.proto = proto;
        let ihl = usize::from(version_ihl & 0x0f) * 4;
        // Only a first fragment (offset 0, the low 13 bits) carries the ports.
        let fragment = be16(frag) & 0x1fff != 0;
        if (proto == 6 || proto == 17) && ihl >= 20 && !fragment {
            // One load for both ports: a variable offset checked once.
            if let Some([s0, s1, d0, d1]) = f.load::<[u8; 4]>(14 + ihl) {
                self.sport = [s0, s1];
                self.dport = [d0, d1];
            }
        }
    }

    /// The drop reason's index, None for a forwarded frame.
    pub fn drop_reason(&self) -> Option<u32> {
        (self.reason != FORWARDED).then(|| u32::from(self.reason) - 1)
    }
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C), two u32: no padding, every bit pattern valid.
    unsafe impl aya::Pod for super::ObserveConfig {}
    // SAFETY: repr(C): u64, two u32, then u8 and u8 arrays to 48 bytes (asserted), no
    // padding at align 8; all integers, so every bit pattern is valid.
    unsafe impl aya::Pod for super::FlowEvent {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    #[test]
    fn skips_average_one_less_than_the_sample_and_stay_within_twice_it() {
        let c = ObserveConfig::one_in(100);
        assert_eq!(ObserveConfig::one_in(1).skip(u32::MAX), 0, "every frame");
        assert_eq!(ObserveConfig::one_in(0).skip(7), 0);
        assert_eq!(c.skip(0), 0);
        assert_eq!(c.skip(198), 198, "the longest skip");
        assert_eq!(c.skip(199), 0, "and round again");
        // Over a uniform spread of draws, the mean is N - 1.
        let draws = 199 * 1000;
        let mean = (0..draws).map(|r| f64::from(c.skip(r))).sum::<f64>() / f64::from(draws);
        assert!((mean - 99.0).abs() < 1e-9, "{mean}");
        // Past 2^31 a skip is the draw itself (no larger one fits), never a wrap.
        let rare = ObserveConfig::one_in(u32::MAX);
        assert_eq!(rare.skip(u32::MAX), u32::MAX);
    }

    #[test]
    fn a_sample_of_one_in_n_draws_below_its_share_of_u32() {
        assert_eq!(ObserveConfig::one_in(0).below, 0, "drops only: no sample");
        assert_eq!(
            ObserveConfig::one_in(1).below,
            u32::MAX,
            "every frame, but one in 2^32"
        );
        for n in [2, 100, 1000, 65536] {
            let c = ObserveConfig::one_in(n);
            assert_eq!(c.on, 1);
            assert_eq!(c.every(), n, "one in {n}");
            // The share of u32 values below the threshold is 1/n.
            let share = f64::from(c.below) / 4_294_967_296.0;
            assert!(
                (share * f64::from(n) - 1.0).abs() < 1e-6,
                "one in {n}: {share}"
            );
        }
        assert_eq!(ObserveConfig::default().every(), 0);
    }

    fn udp_frame() -> Vec<u8> {
        let mut f = Vec::new();
        f.extend([2, 0, 0, 0, 2, 1, 2, 0, 0, 0, 1, 1, 0x08, 0x00]);
        f.extend([0x45, 0, 0, 32, 0, 0, 0x40, 0, 64, 17, 0, 0]);
        f.extend([10, 200, 1, 1, 10, 200, 2, 1]);
        f.extend([0x30, 0x39, 0x00, 0x35, 0, 12, 0, 0, 1, 2, 3, 4]);
        f
    }

    #[test]
    fn a_frame_is_described_as_far_as_it_goes() {
        let f = udp_frame();
        let e = FlowEvent::of(&f[..], 3, 5, 99);
        assert_eq!((e.ns, e.slot, e.len, e.reason), (99, 3, 46, 5));
        assert_eq!(e.src, [2, 0, 0, 0, 1, 1]);
        assert_eq!(e.dst, [2, 0, 0, 0, 2, 1]);
        assert_eq!(
            (e.ip_src, e.ip_dst, e.proto),
            ([10, 200, 1, 1], [10, 200, 2, 1], 17)
        );
        assert_eq!((be16(e.sport), be16(e.dport)), (12345, 53));
        assert_eq!(e.drop_reason(), Some(4));
        // Cut inside the UDP header: addresses, no ports.
        let e = FlowEvent::of(&f[..36], 3, FORWARDED, 0);
        assert_eq!((e.ip_src, e.sport), ([10, 200, 1, 1], [0, 0]));
        assert_eq!(e.drop_reason(), None);
        // Cut inside the IPv4 header, and a runt.
        assert_eq!(FlowEvent::of(&f[..20], 0, 1, 0).ip_src, [0; 4]);
        let runt = FlowEvent::of(&f[..6], 0, 1, 0);
        assert_eq!((runt.src, runt.len), ([0; 6], 6));
        // A later fragment has no ports; options move them.
        let mut frag = f.clone();
        frag[20] = 0x00;
        frag[21] = 0x10;
        assert_eq!(FlowEvent::of(&frag[..], 0, 1, 0).sport, [0, 0]);
        // A first fragment (more fragments, offset 0) has them.
        frag[20] = 0x20;
        frag[21] = 0x00;
        assert_eq!(be16(FlowEvent::of(&frag[..], 0, 1, 0).sport), 12345);
        let mut opts = f.clone();
        opts[14] = 0x46;
        opts.splice(34..34, [1, 1, 1, 0]);
        assert_eq!(be16(FlowEvent::of(&opts[..], 0, 1, 0).sport), 12345);
        // Not IPv4: Ethernet only.
        let mut arp = f.clone();
        arp[12..14].copy_from_slice(&[0x08, 0x06]);
        let e = FlowEvent::of(&arp[..], 0, 1, 0);
        assert_eq!((e.src, e.ip_src), ([2, 0, 0, 0, 1, 1], [0; 4]));
    }
}
