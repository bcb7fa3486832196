//! Renders a plan into files other tools run: systemd units, compose files, Kubernetes
//! manifests. Pure: plan in, file names and contents out; the CLI writes them.
//!
//! Layer 4: on chainctl-core and chainctl-common; it must never depend on a backend, the
//! monitor or the supervisor.

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

/// What every service of an image-based target (compose, Kubernetes) must have: an
/// image. `runs` names the target in the error ("compose runs", "a cluster runs"),
/// `pulls` where images come from.
pub fn require_images(
    plan: &chainctl_core::plan::Plan,
    runs: &str,
    pulls: &str,
) -> Result<(), RenderError> {
    let missing: Vec<String> = plan
        .services
        .iter()
        .filter(|s| s.image.is_none())
        .map(|s| format!("services.{}.image", s.name))
        .collect();
    if !missing.is_empty() {
        return Err(RenderError(format!(
            "{runs} each service from an image, and these have none: {}; add e.g. \
             `image: ghcr.io/paradigmxyz/reth:v1.9.3` ({pulls})",
            missing.join(", ")
        )));
    }
    Ok(())
}

/// A service's secrets relative to the state dir's `secrets/` (where a container target
/// mounts them). A secret elsewhere is a file of this host, which the target cannot
/// hold: refused, with `fix` (the target's remedy) in the error.
pub fn relative_secrets(
    plan: &chainctl_core::plan::Plan,
    svc: &chainctl_core::plan::ServicePlan,
    fix: &str,
) -> Result<Vec<std::path::PathBuf>, RenderError> {
    let root = plan.state_dir.join("secrets");
    svc.secrets
        .iter()
        .map(|s| {
            s.strip_prefix(&root)
                .map(std::path::Path::to_path_buf)
                .map_err(|_| {
                    RenderError(format!(
                        "service {}: its secret {} is a file of this host, and {fix}",
                        svc.name,
                        s.display()
                    ))
                })
        })
        .collect()
}
