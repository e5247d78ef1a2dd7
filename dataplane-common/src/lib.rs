//! Types and packet logic shared by the XDP programs (`dataplane-ebpf`) and `violind`.
//!
//! Everything here is `no_std` and allocation-free so that the same code runs inside the
//! kernel and in unit tests on the host: the bounds logic of the datapath is tested here,
//! not left to the verifier.
#![no_std]

#[cfg(test)]
extern crate std;

pub mod counters;
pub mod maps;
pub mod observe;
pub mod packet;
pub mod rules;

/// IANA port for VXLAN (RFC 7348).
pub const VXLAN_PORT: u16 = 4789;
/// Outer Ethernet + IPv4 + UDP + VXLAN.
pub const ENCAP_OVERHEAD: u32 = 50;
/// Outer Ethernet + IPv6 + UDP + VXLAN (RFC 7348 over an IPv6 underlay).
pub const ENCAP_OVERHEAD_V6: u32 = 70;
/// Largest VXLAN network identifier (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;
