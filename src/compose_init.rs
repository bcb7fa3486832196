//! `chainctl compose-init`: what a rendered compose project's one-shot `chainctl_init`
//! service does in its container before any other service starts. From the rendered
//! profile and port allocation it rebuilds the very plan the project was rendered from,
//! makes the missing secrets (Engine API JWTs; for validators the keys and control
//! tokens) in the master secrets volume, writes the network files (genesis, consensus
//! genesis, each validator's config), copies to each service's own secrets volume the
//! secrets it reads and nothing else, and hands every volume to the services' user.
//!
//! It is idempotent: keys and genesis, once made, are kept (they are the chain's
//! identity), so `docker-compose up` after `down` resumes the same chain.

use anyhow::{bail, Context as _, Result};
use chainctl_core::layout::Layout;
use chainctl_core::plan::{self, Plan};
use chainctl_core::profile::Loaded;
use chainctl_core::state::PortsFile;
use chainctl_render::compose::secrets_of;
use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};

/// What `compose-init` was told.
pub struct Args<'a> {
    /// The rendered profile.
    pub loaded: &'a Loaded,
    /// The state dir services see (the system layout).
    pub state_dir: &'a Path,
    /// The rendered ports.json.
    pub ports: &'a Path,
    /// uid and gid the services run as.
    pub owner: (u32, u32),
    /// Where each service's secrets volume is mounted (`DIR/SERVICE`).
    pub distribute: &'a Path,
    /// The [`chainctl_render::compose::digest`] of the rendered profile and ports.json.
    pub digest: &'a str,
}

/// Parses `UID:GID`.
pub fn parse_owner(s: &str) -> Result<(u32, u32)> {
    let (u, g) = s
        .split_once(':')
        .with_context(|| format!("--owner `{s}` must be UID:GID, e.g. 10001:10001"))?;
    let n = |v: &str| {
        v.parse::<u32>()
            .with_context(|| format!("--owner `{s}` must be UID:GID, e.g. 10001:10001"))
    };
    Ok((n(u)?, n(g)?))
}

/// The plan the project was rendered from. Both files must be the ones compose.yaml was
/// rendered with (the digest), and the allocation the one this chainctl gives the profile.
fn plan_of(a: &Args) -> Result<Plan> {
    let text = std::fs::read_to_string(a.ports)
        .with_context(|| format!("cannot read the rendered allocation {}", a.ports.display()))?;
    if chainctl_render::compose::digest(&a.loaded.source.text, &text) != a.digest {
        bail!(
            "{} or {} changed since compose.yaml was rendered with them: run `chainctl render compose` again instead of editing them",
            a.loaded.source.label,
            a.ports.display()
        );
    }
    let rendered: PortsFile = serde_json::from_str(&text)
        .with_context(|| format!("{} is not a chainctl port allocation", a.ports.display()))?;
    let alloc = chainctl_core::ports::allocate_from(
        a.loaded,
        &rendered.services,
        &[],
        &chainctl_core::ports::NoProbe,
    )?;
    if alloc != rendered.services {
        bail!(
            "{} does not match {}: they come from different renders; run `chainctl render compose` again",
            a.ports.display(),
            a.loaded.source.label
        );
    }
    let base = a
        .loaded
        .source
        .path
        .as_deref()
        .and_then(Path::parent)
        .unwrap_or(Path::new("/"));
    Ok(plan::build_for(
        &a.loaded.profile,
        &Layout::new(a.state_dir),
        &alloc,
        base,
        plan::Target::Container,
    )?)
}

/// The file init leaves in every service's data volume.
pub const DATA_MARKER: &str = ".chainctl-data";

/// Hands `path` to the services' user with `mode`. A symlink is refused, never
/// followed: data volumes are writable by the services, and init runs as root.
fn own(path: &Path, owner: (u32, u32), mode: u32) -> Result<()> {
    let meta = std::fs::symlink_metadata(path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    if meta.file_type().is_symlink() {
        bail!(
            "{} is a symbolic link where chainctl writes its own file: refusing to follow it; remove it (`docker-compose down -v` starts the project afresh)",
            path.display()
        );
    }
    std::os::unix::fs::lchown(path, Some(owner.0), Some(owner.1))
        .with_context(|| format!("cannot chown {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("cannot chmod {}", path.display()))
}

/// Files under `dir`, relative to it.
fn files_under(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).with_context(|| format!("cannot read {}", d.display()))? {
            let e = e?;
            let path = e.path();
            if e.file_type()?.is_dir() {
                stack.push(path);
            } else if let Ok(rel) = path.strip_prefix(dir) {
                out.push(rel.to_path_buf());
            }
        }
    }
    Ok(out)
}

/// Copies a service's secrets into its own volume (mounted at `dest`), removes any it
/// no longer reads, and hands the volume to the services' user. Returns how many.
fn distribute(
    plan: &Plan,
    svc: &plan::ServicePlan,
    dest: &Path,
    owner: (u32, u32),
) -> Result<usize> {
    if !dest.is_dir() {
        bail!(
            "{} is not mounted: service {}'s secrets volume is missing from compose.yaml; run `chainctl render compose` again",
            dest.display(),
            svc.name
        );
    }
    let master = plan.state_dir.join("secrets");
    let wanted: BTreeSet<PathBuf> = secrets_of(plan, svc)?.into_iter().collect();
    for rel in files_under(dest)? {
        if !wanted.contains(&rel) {
            let stale = dest.join(&rel);
            std::fs::remove_file(&stale)
                .with_context(|| format!("cannot remove {}", stale.display()))?;
        }
    }
    own(dest, owner, 0o700)?;
    for rel in &wanted {
        let from = master.join(rel);
        let bytes = std::fs::read(&from)
            .with_context(|| format!("cannot read the secret {}", from.display()))?;
        let to = dest.join(rel);
        let mut dir = to.parent();
        while let Some(d) = dir.filter(|d| d.starts_with(dest) && *d != dest) {
            chainctl_common::fs::private_dir(d)
                .with_context(|| format!("cannot create {}", d.display()))?;
            own(d, owner, 0o700)?;
            dir = d.parent();
        }
        chainctl_common::fs::write_atomic(&to, &bytes)
            .with_context(|| format!("cannot write {}", to.display()))?;
        own(&to, owner, 0o600)?;
    }
    Ok(wanted.len())
}

/// Prepares every volume of the project; returns what it did, one line each.
pub fn run(a: &Args) -> Result<Vec<String>> {
    let plan = plan_of(a)?;
    let p = &a.loaded.profile;
    let layout = Layout::new(a.state_dir);
    chainctl_core::jwt::ensure_secrets(&plan)?;
    chainctl_supervisor::files::write_files(p, &layout, &plan, plan::Target::Container)?;
    let mut lines = Vec::new();
    if p.validators.count > 0 {
        let net = chainctl_core::network::network_dir(&layout);
        own(&net, a.owner, 0o700)?;
        for f in files_under(&net)? {
            // Its subdirectories (the clients' peer configs in `p2p/`) too.
            for d in f.ancestors().skip(1).filter(|d| !d.as_os_str().is_empty()) {
                own(&net.join(d), a.owner, 0o700)?;
            }
            own(&net.join(f), a.owner, 0o600)?;
        }
        lines.push(format!(
            "network files in {} (validators: {})",
            net.display(),
            p.validators.count
        ));
    }
    for svc in &plan.services {
        // Docker makes a new volume root's; the service's user must own its data dir.
        if !svc.data_dir.is_dir() {
            bail!(
                "{} is not mounted: service {}'s data volume is missing from compose.yaml; run `chainctl render compose` again",
                svc.data_dir.display(),
                svc.name
            );
        }
        own(&svc.data_dir, a.owner, 0o700)?;
        // Docker copies the owner and mode of the container's own directory onto a named
        // volume that is empty when a container mounts it, which would hand the data dir
        // back to root before the service first writes there: a file keeps it non-empty.
        let marker = svc.data_dir.join(DATA_MARKER);
        chainctl_common::fs::write_atomic(
            &marker,
            format!(
                "data dir of {} (chainctl compose); this file keeps Docker from resetting the volume's owner\n",
                svc.name
            )
            .as_bytes(),
        )
        .with_context(|| format!("cannot write {}", marker.display()))?;
        own(&marker, a.owner, 0o600)?;
        let config = svc.data_dir.join("config.json");
        let validator =
            (0..p.validators.count).any(|i| chainctl_core::network::validator_name(i) == svc.name);
        if validator && config.exists() {
            own(&config, a.owner, 0o600)?;
        }
        if !svc.secrets.is_empty() {
            let n = distribute(&plan, svc, &a.distribute.join(&svc.name), a.owner)?;
            lines.push(format!("{}: {n} secret(s)", svc.name));
        }
    }
    Ok(lines)
}
