//! Violin's datapath: XDP on VM ports and the underlay NIC (`port_mode = "xdp"`), or TC
//! on VM ports, the underlay NIC and the flow-based VXLAN device (`port_mode = "tc"`).
//!
//! One module per hook (`port_xdp`, `underlay`; `port_tc`, `underlay_tc`, `tunnel_tc`),
//! thin, over shared modules for the maps, counters, forwarding decisions and tunnel
//! headers. Parsing and validation live in `dataplane_common::packet`, where they are
//! unit-tested on the host. `bench` holds the benchmark's frame source and sink, which
//! violind does not load.
#![no_std]
#![feature(asm_experimental_arch)]
#![no_main]

mod bench;
mod counters;
mod delivery;
mod forward;
mod frame;
mod inflight;
mod maps;
mod memo;
mod observe;
mod policy;
mod port_tc;
mod port_xdp;
mod tunnel;
mod tunnel_tc;
mod underlay;
mod underlay_tc;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
