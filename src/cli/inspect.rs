//! `validate`, `plan`, `ports`, `jwt`: what a profile means, checked without running it.

use super::*;

/// A plan for inspection commands: persisted ports where they exist, else a dry run.
pub(super) fn inspect_plan(
    profile: Option<&Path>,
    state_dir: Option<&Path>,
    probe: &dyn HostProbe,
) -> Result<(chainctl_core::profile::Loaded, Layout, Plan, bool)> {
    let loaded = setup::load(profile)?;
    let layout = setup::layout(&loaded, state_dir);
    let persisted = layout.ports_file().exists();
    let running = setup::running_services(&layout);
    let alloc = setup::allocate(&loaded, &layout, &running, probe, false)?;
    let plan = plan::build_runtime(&loaded.profile, &layout, &alloc, &setup::base_dir(&loaded))?;
    Ok((loaded, layout, plan, persisted))
}

pub(super) fn validate(
    file: Option<&Path>,
    state_dir: Option<&Path>,
    output: Output,
) -> Result<ExitCode> {
    let (loaded, _layout, plan, persisted) =
        inspect_plan(file, state_dir, &chainctl_core::ports::HostPorts::read())?;
    if output == Output::Json {
        println!("{}", serde_json::to_string_pretty(&plan)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{}: valid", loaded.source.label);
    println!(
        "profile {}, state dir {}{}",
        plan.profile,
        plan.state_dir.display(),
        if persisted {
            ""
        } else {
            " (ports not yet allocated: `chainctl up` persists these)"
        }
    );
    for s in &plan.services {
        println!(
            "\n{}  (start order after: {})",
            s.name,
            if s.depends_on.is_empty() {
                "-".to_string()
            } else {
                s.depends_on.join(", ")
            }
        );
        println!(
            "  argv:     {}",
            s.argv
                .iter()
                .map(|a| shell_quote(a))
                .collect::<Vec<_>>()
                .join(" ")
        );
        for (k, v) in &s.env {
            println!("  env:      {k}={v}");
        }
        for (n, a) in &s.ports {
            println!("  port:     {n} = {}/{}", a.port, a.protocol);
        }
        println!("  data dir: {}", s.data_dir.display());
        println!(
            "  log:      {} (rotated at {} bytes, {} kept)",
            s.log_file.display(),
            s.logs.max_bytes,
            s.logs.keep
        );
        for p in &s.secrets {
            println!("  secret:   {}", p.display());
        }
        println!(
            "  restart:  {:?}, backoff {} → {} ×{}, give up after {} failures in {}",
            s.restart.policy,
            s.restart.backoff.initial,
            s.restart.backoff.max,
            s.restart.backoff.factor,
            s.restart.give_up.failures,
            s.restart.give_up.window
        );
        println!(
            "  stop:     SIG{:?}, then SIGKILL to the group after {}",
            s.stop_signal, s.stop_grace
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,@+{}".contains(&b))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

/// The ports a state dir's network has (its ports.json), else those `up` would allocate
/// on this host now; and whether they were persisted.
pub(super) fn allocation_here(
    loaded: &chainctl_core::profile::Loaded,
    layout: &Layout,
) -> Result<(chainctl_core::ports::Allocation, bool)> {
    Ok(match state::read_json::<PortsFile>(&layout.ports_file())? {
        Some(p) => (p.services, true),
        None => (
            setup::allocate(
                loaded,
                layout,
                &[],
                &chainctl_core::ports::HostPorts::read(),
                false,
            )?,
            false,
        ),
    })
}

pub(super) fn ports_cmd(
    profile: Option<&Path>,
    state_dir: Option<&Path>,
    check: bool,
) -> Result<ExitCode> {
    let loaded = setup::load(profile)?;
    let layout = setup::layout(&loaded, state_dir);
    let (alloc, persisted) = allocation_here(&loaded, &layout)?;
    let ours = chainctl_core::state::port_owners(
        state::read_json::<StateFile>(&layout.state_file())?.as_ref(),
    );
    let mut conflicts = 0;
    println!(
        "{:<24} {:<12} {:>6}  {:<8} {}",
        "SERVICE",
        "PORT",
        "NUMBER",
        "PROTO",
        if check { "HOST" } else { "" }
    );
    for (svc, ports) in &alloc {
        for (name, a) in ports {
            let mut host = String::new();
            if check {
                host = match ours.host_use(svc, a) {
                    chainctl_core::ports::HostUse::Free => "free".into(),
                    chainctl_core::ports::HostUse::Ours => "in use by this service".into(),
                    chainctl_core::ports::HostUse::Conflict(why) => {
                        conflicts += 1;
                        format!("CONFLICT: {why}")
                    }
                };
            }
            println!(
                "{svc:<24} {name:<12} {:>6}  {:<8} {host}",
                a.port,
                a.protocol.to_string()
            );
        }
    }
    if !persisted {
        println!(
            "(not yet persisted: `chainctl up` allocates and keeps these in {})",
            layout.ports_file().display()
        );
    }
    if conflicts > 0 {
        eprintln!("{conflicts} port conflict(s): stop the programs holding them, or run `chainctl down` and `chainctl up` to move chainctl's ports");
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn jwt(
    profile: Option<&Path>,
    state_dir: Option<&Path>,
    action: JwtAction,
) -> Result<ExitCode> {
    let (_loaded, layout, plan, _) =
        inspect_plan(profile, state_dir, &chainctl_core::ports::NoProbe)?;
    if plan.jwt_pairs.is_empty() {
        println!("the profile has no consensus↔execution pair (no service lists `drives:`): no JWT secret needed");
        return Ok(ExitCode::SUCCESS);
    }
    match action {
        JwtAction::Generate => {
            for pair in &plan.jwt_pairs {
                let created = chainctl_common::secrets::ensure(&pair.path)
                    .with_context(|| format!("cannot write {}", pair.path.display()))?;
                println!(
                    "{} {}--{}: {}",
                    if created { "created " } else { "kept    " },
                    pair.consensus,
                    pair.execution,
                    pair.path.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        JwtAction::Rotate { pair } => {
            let chosen: Vec<_> = plan
                .jwt_pairs
                .iter()
                .filter(|p| {
                    pair.as_deref()
                        .is_none_or(|want| want == format!("{}--{}", p.consensus, p.execution))
                })
                .collect();
            if chosen.is_empty() {
                let names: Vec<String> = plan
                    .jwt_pairs
                    .iter()
                    .map(|p| format!("{}--{}", p.consensus, p.execution))
                    .collect();
                bail!(
                    "no pair `{}`; pairs: {}",
                    pair.unwrap_or_default(),
                    names.join(", ")
                );
            }
            let running = state::holder(&layout.lock_file()).is_some();
            for p in chosen {
                chainctl_common::secrets::rotate(&p.path)
                    .with_context(|| format!("cannot rotate {}", p.path.display()))?;
                println!(
                    "rotated {}--{}: {}",
                    p.consensus,
                    p.execution,
                    p.path.display()
                );
                if running {
                    // Both ends must read the new secret: the execution client first, then its driver.
                    for svc in [&p.execution, &p.consensus] {
                        restart_service(&layout, profile, svc)?;
                        println!("  restarting {svc}");
                    }
                } else {
                    println!(
                        "  no supervisor is running: {} and {} read the new secret when they next start",
                        p.execution, p.consensus
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        JwtAction::Verify => {
            let mut bad = 0;
            for p in &plan.jwt_pairs {
                let problems = chainctl_core::jwt::pair_problems(&plan, p);
                let path = p.path.display();
                if problems.is_empty() {
                    println!(
                        "ok      {}--{}: {path} (64 hex chars, mode 0600, both ends read it)",
                        p.consensus, p.execution
                    );
                } else {
                    bad += problems.len();
                    println!("FAILED  {}--{}:", p.consensus, p.execution);
                    for pr in problems {
                        println!("  - {pr}");
                    }
                }
            }
            Ok(if bad == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
    }
}
