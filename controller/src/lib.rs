//! Violin's controller: the source of truth for environments across hosts (issue 4).
//!
//! Built so far: environment specs (`spec`), validated whole with line and field in every
//! error, and the plan that turns one spec into another; the state store (`store`, redb);
//! the authenticated `/v1` API (`api`) served by `violin-controller`; and `violinctl`.
//! Still to come: pushing each host's share to its `violind` (today each `violind` is
//! configured from its own TOML file), the VNET primitives, and controller metrics.
pub mod api;
pub mod spec;
pub mod store;
