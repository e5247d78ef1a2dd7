//! Records the git revision the binaries are built from, for `violin_build_info`
//! (`violin_api::build::REVISION`); none outside a git checkout or without git.
use std::{env, fs, path::PathBuf, process::Command};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR").unwrap())
        .parent()
        .unwrap()
        .to_path_buf();
    let git = root.join(".git");
    // Re-run when HEAD moves: on a checkout (HEAD) or a commit (the branch's ref).
    if git.is_dir() {
        println!("cargo:rerun-if-changed={}", git.join("HEAD").display());
        let head = fs::read_to_string(git.join("HEAD")).unwrap_or_default();
        if let Some(r) = head.trim().strip_prefix("ref: ") {
            for path in [git.join(r), git.join("packed-refs")] {
                if path.exists() {
                    println!("cargo:rerun-if-changed={}", path.display());
                }
            }
        }
    }
    let revision = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .current_dir(&root)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok());
    if let Some(r) = revision {
        println!("cargo:rustc-env=VIOLIN_GIT_REVISION={}", r.trim());
    }
}
