//! Violin's datapath: XDP for VM ports and the underlay NIC, TC for VM ports in TC mode.
//!
//! One module per hook (`port_xdp`, `port_tc`, `underlay`), thin, over shared modules
//! for the maps, counters, forwarding decisions and tunnel headers. Parsing and
//! validation live in `dataplane_common::packet`, where they are unit-tested on the host.
#![no_std]
#![no_main]

mod counters;
mod forward;
mod frame;
mod maps;
mod policy;
mod port_tc;
mod port_xdp;
mod tunnel;
mod underlay;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
