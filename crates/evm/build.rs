//! Records the git commit the binary is built from (engine_getClientVersionV1 reports it).

use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    Command::new("git")
        .args(args)
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
}

fn main() {
    let commit = git(&["rev-parse", "HEAD"])
        .map(|s| s.chars().take(8).collect::<String>())
        .filter(|s| s.len() == 8 && s.chars().all(|c| c.is_ascii_hexdigit()))
        .unwrap_or_else(|| "00000000".into());
    println!("cargo:rustc-env=CHAINCTL_COMMIT={commit}");
    // Run again when the commit moves: HEAD, and the branch it names. Git says where they
    // are (a worktree's HEAD is not under `.git/`); a path that does not exist would make
    // cargo run this script, and rebuild the engine and all above it, at every build.
    println!("cargo:rerun-if-changed=build.rs");
    for what in ["HEAD", "refs/heads"] {
        if let Some(p) = git(&["rev-parse", "--path-format=absolute", "--git-path", what]) {
            if std::path::Path::new(&p).exists() {
                println!("cargo:rerun-if-changed={p}");
            }
        }
    }
}
