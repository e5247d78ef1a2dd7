//! Violin's controller. The control plane (state store, APIs, `violinctl`, policies) is
//! built under its own issue; today each `violind` is configured from its TOML file.
