//! Renders a plan into files other tools run: systemd units, compose files, Kubernetes
//! manifests. Pure: plan in, file names and contents out; the CLI writes them.

pub mod compose;
pub mod k8s;
pub mod systemd;
pub mod yaml;

/// One rendered file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct File {
    /// Name inside the output directory.
    pub name: String,
    /// Contents.
    pub contents: String,
}

/// Why a plan cannot be rendered for a target.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0}")]
pub struct RenderError(pub String);

/// The state dir services see when chainctl does not run them itself (systemd, compose).
pub fn system_state_dir(profile: &str) -> std::path::PathBuf {
    std::path::Path::new("/var/lib/chainctl").join(profile)
}
