//! Which build this is: the version and the git revision (set by `build.rs`), for the
//! `violin_build_info` metric every Violin process exports and the daemons' `/healthz`.

/// The workspace's version.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The git commit built from (12 hex digits), or "unknown" when built outside a checkout.
pub const REVISION: &str = match option_env!("VIOLIN_GIT_REVISION") {
    Some(r) => r,
    None => "unknown",
};

/// "VERSION (REVISION)".
pub fn describe() -> String {
    format!("{VERSION} ({REVISION})")
}
