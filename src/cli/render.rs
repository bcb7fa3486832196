//! `render` and `systemd`: units, compose projects and Kubernetes manifests from the plan.

use super::*;

/// The systemd files for a profile: what `render systemd` writes and `systemd install`
/// installs, with the plan they come from.
pub(super) fn systemd_files(
    loaded: &chainctl_core::profile::Loaded,
    state_dir: Option<&Path>,
    user: &str,
    chainctl: Option<&Path>,
) -> Result<(Plan, Vec<chainctl_render::File>)> {
    use chainctl_render as render;
    if !chainctl_core::profile::valid_name(user) {
        bail!("--user `{user}` is not a valid user name: use lowercase letters, digits and `-`");
    }
    let p = &loaded.profile;
    // Units see the system layout: --state-dir, else /var/lib/chainctl/NAME.
    let layout = Layout::new(
        state_dir
            .map(Path::to_path_buf)
            .unwrap_or_else(|| render::system_state_dir(&p.name)),
    );
    let alloc = setup::allocate(loaded, &layout, &[], &chainctl_core::ports::NoProbe, false)?;
    let mut plan = plan::build(p, &layout, &alloc, &setup::base_dir(loaded))?;
    if let Some(path) = chainctl {
        if !path.is_absolute() {
            bail!(
                "--chainctl `{}` must be an absolute path: systemd runs the units' programs by absolute path",
                path.display()
            );
        }
        // The plan runs chainctl's own roles with this binary; the units run the given one.
        let me = std::env::current_exe()
            .context("cannot find the chainctl binary")?
            .display()
            .to_string();
        for svc in &mut plan.services {
            if svc.argv.first() == Some(&me) {
                svc.argv[0] = path.display().to_string();
            }
        }
    }
    let mut files = render::systemd::render(&plan, user)?;
    if let Some(schedule) = &p.backup {
        let me = std::env::current_exe()
            .context("cannot find the chainctl binary")?
            .display()
            .to_string();
        let chainctl = chainctl.map_or(me, |c| c.display().to_string());
        let profile_file = match &loaded.source.path {
            Some(f) => Some(std::path::absolute(f).with_context(|| format!("{}", f.display()))?),
            None => None,
        };
        files.extend(render::systemd::backup_units(
            &plan,
            user,
            &render::systemd::BackupJob {
                schedule,
                chainctl: &chainctl,
                profile_file: profile_file.as_deref(),
            },
        )?);
    }
    Ok((plan, files))
}

/// For `systemd install`: the validators' files (genesis, keys, control tokens, each
/// one's config with this host's addresses) in the system state dir, laid out as systemd
/// would lay it out (the state dir's parent and the data root traversable, 0755 and
/// root's). Returns what must become the units' user's (done by the install).
pub(super) fn systemd_network_files(
    p: &chainctl_core::profile::Profile,
    plan: &Plan,
) -> Result<Vec<PathBuf>> {
    use std::os::unix::fs::PermissionsExt as _;
    let layout = Layout::new(&plan.state_dir);
    for d in [plan.state_dir.parent(), Some(layout.data_root().as_path())]
        .into_iter()
        .flatten()
    {
        if !d.exists() {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    chainctl_common::fs::private_dir(&plan.state_dir)
        .with_context(|| format!("cannot create {}", plan.state_dir.display()))?;
    chainctl_supervisor::files::write_files(p, &layout, plan, plan::Target::Host)?;
    let mut owned = Vec::new();
    if p.validators.count > 0 {
        owned.push(chainctl_core::network::network_dir(&layout));
        owned.push(layout.secrets_dir().join("validators"));
        if !chainctl_core::clients::p2p::external_els(p).is_empty() {
            owned.push(layout.secrets_dir().join("p2p"));
        }
        for i in 0..p.validators.count {
            owned.push(layout.data_dir(&chainctl_core::network::validator_name(i)));
        }
    }
    Ok(owned)
}

pub(super) fn systemd_cmd(
    profile: Option<&Path>,
    state_dir: Option<&Path>,
    action: SystemdAction,
) -> Result<ExitCode> {
    use crate::systemd;
    let loaded = chainctl_core::loader::load(setup::source(profile)?)?;
    let name = loaded.profile.name.clone();
    match action {
        SystemdAction::Install {
            unit_dir,
            user,
            no_start,
        } => {
            let (plan, files) = systemd_files(&loaded, state_dir, &user, None)?;
            let secrets: Vec<PathBuf> = plan.jwt_pairs.iter().map(|j| j.path.clone()).collect();
            let owned = systemd_network_files(&loaded.profile, &plan)?;
            let lines = systemd::install(&systemd::Install {
                profile: &name,
                files: &files,
                secrets: &secrets,
                owned: &owned,
                state_dir: &plan.state_dir,
                user: &user,
                unit_dir: &unit_dir,
                start: !no_start,
            })?;
            for l in lines {
                println!("{l}");
            }
            Ok(ExitCode::SUCCESS)
        }
        SystemdAction::Uninstall { unit_dir } => {
            for l in systemd::uninstall(&name, &unit_dir)? {
                println!("{l}");
            }
            Ok(ExitCode::SUCCESS)
        }
        SystemdAction::Status { unit_dir, user } => {
            let (plan, files) = systemd_files(&loaded, state_dir, &user, None)?;
            let mut bad = false;
            println!(
                "{:<40} {:<10} {:<10} {:>8} {:>8} {:>9}",
                "UNIT", "ACTIVE", "SUB", "PID", "RESTARTS", "LAST EXIT"
            );
            let mut unit_names: Vec<String> = plan
                .services
                .iter()
                .map(|s| chainctl_render::systemd::unit_name(&name, &s.name))
                .collect();
            unit_names.push(chainctl_render::systemd::target_name(&name));
            for u in &unit_names {
                let p = systemd::show(u)?;
                let get = |k: &str| p.get(k).cloned().unwrap_or_else(|| "-".into());
                println!(
                    "{u:<40} {:<10} {:<10} {:>8} {:>8} {:>9}",
                    get("ActiveState"),
                    get("SubState"),
                    get("MainPID"),
                    get("NRestarts"),
                    get("ExecMainStatus")
                );
                if get("NeedDaemonReload") == "yes" {
                    bad = true;
                    println!("  {u}: its file changed on disk since systemd read it: run `chainctl systemd install` (it reloads)");
                }
            }
            let d = systemd::drift(&name, &files, &unit_dir);
            for (what, list) in [
                ("missing", &d.missing),
                ("differs from the profile", &d.changed),
                ("no longer in the profile", &d.stale),
            ] {
                for u in list {
                    bad = true;
                    println!("drift: {u} {what}: run `chainctl systemd install`");
                }
            }
            if !bad {
                println!("no drift: the units on disk are what the profile renders");
            }
            Ok(if bad {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            })
        }
        SystemdAction::Restart { service } => {
            if !loaded.profile.services.contains_key(&service) {
                let known: Vec<&str> = loaded.profile.services.keys().map(String::as_str).collect();
                bail!("no service named `{service}`; known: {}", known.join(", "));
            }
            let unit = chainctl_render::systemd::unit_name(&name, &service);
            let st = std::process::Command::new("systemctl")
                .args(["restart", &unit])
                .status()
                .context("cannot run systemctl")?;
            if !st.success() {
                bail!("systemctl restart {unit} failed: see `journalctl -u {unit}`");
            }
            println!("restarted {unit}");
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(super) fn render(
    profile: Option<&Path>,
    state_dir: Option<&Path>,
    what: RenderWhat,
    out: &Path,
    user: &str,
    chainctl: Option<&Path>,
) -> Result<ExitCode> {
    use chainctl_render as render;
    let loaded = chainctl_core::loader::load(setup::source(profile)?)?;
    let p = &loaded.profile;
    let base = setup::base_dir(&loaded);
    // Ports come from the state dir's ports.json when it has one (as `up` would use),
    // else from a host-independent allocation, so rendering is reproducible.
    let (files, secrets) = match what {
        RenderWhat::Systemd => {
            let (plan, files) = systemd_files(&loaded, state_dir, user, chainctl)?;
            let secrets: Vec<PathBuf> = plan.jwt_pairs.iter().map(|j| j.path.clone()).collect();
            (files, secrets)
        }
        RenderWhat::Compose => {
            // Ports as `up` with this state dir would have them; inside the containers,
            // the system layout. Secrets are made by the project itself (chainctl_init).
            let layout = setup::layout(&loaded, state_dir);
            let alloc =
                setup::allocate(&loaded, &layout, &[], &chainctl_core::ports::NoProbe, false)?;
            let inside = Layout::new(render::system_state_dir(&p.name));
            let plan = plan::build_for(p, &inside, &alloc, &base, plan::Target::Container)?;
            let files = render::compose::render(&render::compose::Inputs {
                profile: p,
                plan: &plan,
                profile_text: &loaded.source.text,
                profile_label: &loaded.source.label,
                ports: &alloc,
            })?;
            (files, Vec::new())
        }
        RenderWhat::K8s => (k8s_files(&loaded, state_dir)?, Vec::new()),
    };
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    for f in &files {
        let path = out.join(&f.name);
        let unchanged = std::fs::read_to_string(&path).is_ok_and(|old| old == f.contents);
        if f.name == render::k8s::SECRETS_FILE {
            // Keys and Engine API secrets: only the owner reads them, even unchanged.
            if !unchanged {
                chainctl_common::fs::write_atomic(&path, f.contents.as_bytes())
                    .with_context(|| format!("cannot write {}", path.display()))?;
            }
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
                .with_context(|| format!("cannot chmod {}", path.display()))?;
        } else if !unchanged {
            std::fs::write(&path, &f.contents)
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        println!(
            "{} {}",
            if unchanged { "unchanged" } else { "wrote    " },
            path.display()
        );
    }
    let missing: Vec<String> = secrets
        .iter()
        .filter(|p| !p.exists())
        .map(|p| p.display().to_string())
        .collect();
    if !missing.is_empty() {
        let dir = secrets
            .first()
            .and_then(|p| p.parent())
            .and_then(Path::parent)
            .and_then(Path::parent)
            .map(|d| d.display().to_string())
            .unwrap_or_default();
        eprintln!(
            "note: {} secret file(s) do not exist yet ({}): run `chainctl -p PROFILE --state-dir {dir} jwt generate` first, then `chown -R {user}: {dir}/secrets` so the units can read them",
            missing.len(),
            missing.join(", "),
        );
    }
    if let RenderWhat::K8s = what {
        println!(
            "apply with `kubectl apply -n NAMESPACE -f network.yaml -f {} -f manifests.yaml` in {} \
             (images {} and the profile's must be where the cluster pulls from); {} is secret: do not commit it",
            render::k8s::SECRETS_FILE,
            out.display(),
            chainctl_core::network::chainctl_image(),
            render::k8s::SECRETS_FILE,
        );
    }
    if let RenderWhat::Compose = what {
        println!(
            "start it with `docker-compose up -d` in {} (the image {} must exist: `chainctl image build`)",
            out.display(),
            chainctl_core::network::chainctl_image()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Kubernetes manifests of a profile. The network's genesis, keys and secrets are the
/// state dir's (made there first when missing, as `up` makes them, so rendering again
/// keeps the same chain and keys); the containers see them at the system layout.
pub(super) fn k8s_files(
    loaded: &chainctl_core::profile::Loaded,
    state_dir: Option<&Path>,
) -> Result<Vec<chainctl_render::File>> {
    use chainctl_render as render;
    let p = &loaded.profile;
    let base = setup::base_dir(loaded);
    let layout = setup::layout(loaded, state_dir);
    let alloc = setup::allocate(loaded, &layout, &[], &chainctl_core::ports::NoProbe, false)?;
    let inside = Layout::new(render::system_state_dir(&p.name));
    let plan = plan::build_for(p, &inside, &alloc, &base, plan::Target::Cluster)?;
    render::k8s::preflight(p, &plan)?;
    let here = plan::build_for(p, &layout, &alloc, &base, plan::Target::Cluster)?;
    chainctl_common::fs::private_dir(&layout.root)
        .with_context(|| format!("cannot create the state dir {}", layout.root.display()))?;
    chainctl_core::jwt::ensure_secrets(&here)?;
    chainctl_supervisor::files::write_files(p, &layout, &here, plan::Target::Cluster)?;
    // The state dir's paths, as the containers see them.
    let rebase = |path: &Path| -> Result<PathBuf> {
        let rel = path.strip_prefix(&layout.root).with_context(|| {
            format!(
                "{} is outside the state dir {}: a cluster cannot mount it",
                path.display(),
                layout.root.display()
            )
        })?;
        Ok(inside.root.join(rel))
    };
    let mut network = BTreeMap::new();
    let net = chainctl_core::network::network_dir(&layout);
    if p.validators.count > 0 {
        for e in
            std::fs::read_dir(&net).with_context(|| format!("cannot read {}", net.display()))?
        {
            let e = e?;
            if e.file_type()?.is_file() {
                let text = std::fs::read_to_string(e.path())
                    .with_context(|| format!("cannot read {}", e.path().display()))?;
                network.insert(e.file_name().to_string_lossy().into_owned(), text);
            }
        }
        // The config files Reth and Geth read their peers from, listing none: pod
        // addresses are the cluster's (the state dir's own are for this host).
        // (Erigon's list is read by `client-exec` only, which no container runs.)
        use chainctl_core::clients::p2p;
        for (el, kind) in p2p::external_els(p) {
            if kind == chainctl_core::profile::ExecutionKind::Erigon {
                continue;
            }
            let (path, content) = p2p::peers_file(&layout, &el, kind, &[]);
            network.insert(path.strip_prefix(&net)?.display().to_string(), content);
        }
    }
    let mut configs = BTreeMap::new();
    for i in 0..p.validators.count {
        let name = chainctl_core::network::validator_name(i);
        let svc = here
            .service(&name)
            .with_context(|| format!("the plan has no service `{name}`"))?;
        let mut f = chainctl_common::validator::NodeFile::load(&svc.data_dir.join("config.json"))
            .map_err(anyhow::Error::msg)?;
        f.genesis = rebase(&f.genesis)?;
        f.key = rebase(&f.key)?;
        f.control_token = rebase(&f.control_token)?;
        for el in &mut f.execution {
            el.jwt_secret = rebase(&el.jwt_secret)?;
        }
        configs.insert(name, serde_json::to_string_pretty(&f)? + "\n");
    }
    let mut secrets = BTreeMap::new();
    let root = layout.secrets_dir();
    for svc in &here.services {
        for s in &svc.secrets {
            if let Ok(rel) = s.strip_prefix(&root) {
                let bytes = std::fs::read(s)
                    .with_context(|| format!("cannot read the secret {}", s.display()))?;
                secrets.insert(rel.to_path_buf(), bytes);
            }
        }
    }
    Ok(render::k8s::render(&render::k8s::Inputs {
        profile: p,
        plan: &plan,
        network: &network,
        configs: &configs,
        secrets: &secrets,
    })?)
}
