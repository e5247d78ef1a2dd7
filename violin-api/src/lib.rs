//! Violin's contract: every type that crosses a process boundary, defined once.
//!
//! `types` holds the parsed values (names, VNIs, unicast MACs, rule matches, limits) with
//! their one error text each; `parse` turns TOML and JSON documents into them with errors
//! naming field and line; `spec` is an environment spec's document; `share` is what a host
//! serves and the sync conversation that keeps it current; `rest` the request and response
//! bodies of the controller's and violind's APIs; `stats` violind's counters
//! (`/v1/stats`); `observe` the live events violind streams (`/v1/observe`); `vm` the VMs
//! hosts report and the live migrations the controller runs; `client` the typed HTTP
//! client all of them use; `openapi` what both APIs' documents share; `output` the YAML
//! the command-line tools print; `build` the version and git revision; `systemd` the
//! readiness notifications both daemons send.
pub mod build;
pub mod client;
pub mod observe;
pub mod openapi;
pub mod output;
pub mod parse;
pub mod rest;
pub mod share;
pub mod spec;
pub mod stats;
pub mod systemd;
pub mod types;
pub mod vm;

pub use parse::FieldError;
pub use types::{BurstKib, DstMatch, IfName, Limit, Name, RateMbit, SrcMatch, UnicastMac, Vni};
