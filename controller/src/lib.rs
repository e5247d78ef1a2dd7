//! Violin's controller: the source of truth for environments across hosts (issue 4).
//!
//! Built so far: environment specs (`spec`), validated whole with line and field in every
//! error, and the plan that turns one spec into another. The state store, the APIs,
//! `violinctl` and the push to each `violind` come next; today each `violind` is
//! configured from its own TOML file.
pub mod spec;
