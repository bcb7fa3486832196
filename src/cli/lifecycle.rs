//! `up`, `down`, `status`, `logs`: a network's life, from the command line.

use super::*;

pub(super) fn cli_args_for_child(
    profile: &Option<PathBuf>,
    state_dir: &Option<PathBuf>,
) -> Vec<std::ffi::OsString> {
    let mut args = Vec::new();
    let abs = |p: &PathBuf| {
        std::path::absolute(p)
            .unwrap_or_else(|_| p.clone())
            .into_os_string()
    };
    if let Some(p) = profile {
        args.push("--profile".into());
        args.push(abs(p));
    }
    if let Some(d) = state_dir {
        args.push("--state-dir".into());
        args.push(abs(d));
    }
    args
}

pub(super) fn print_progress(report: &StatusReport, changes: &[(String, String)]) {
    let total = report.services.len();
    let done = report
        .services
        .iter()
        .filter(|s| !matches!(s.state.as_str(), "waiting" | "starting"))
        .count();
    for (name, state) in changes {
        eprintln!("[{done}/{total}] {name}: {state}");
    }
    if report.settled() {
        print!("{}", status::table(report));
        let bad: Vec<&ServiceStatus> = report
            .services
            .iter()
            .filter(|s| !matches!(s.state.as_str(), "ready" | "healthy"))
            .collect();
        if bad.is_empty() {
            println!("all {total} services are ready; supervising (Ctrl-C stops them all)");
        } else {
            let names: Vec<&str> = bad.iter().map(|s| s.name.as_str()).collect();
            println!("{} of {total} services are not ready ({}): see `chainctl logs SERVICE`; supervising (Ctrl-C stops them all)", bad.len(), names.join(", "));
        }
        let _ = std::io::stdout().flush();
    }
}

pub(super) fn up_foreground(
    profile: Option<&Path>,
    state_dir: Option<&Path>,
    fix_permissions: bool,
) -> Result<ExitCode> {
    setup::run(
        profile,
        state_dir,
        Some(Box::new(print_progress)),
        fix_permissions,
    )?;
    Ok(ExitCode::SUCCESS)
}

pub(super) fn up_detached(
    child_args: &[std::ffi::OsString],
    profile: Option<&Path>,
    state_dir: Option<&Path>,
    fix_permissions: bool,
) -> Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    // Validate here so errors reach this terminal, not a log file.
    let loaded = setup::load(profile)?;
    let layout = setup::layout(&loaded, state_dir);
    if let Some(pid) = state::holder(&layout.lock_file()) {
        bail!("another chainctl supervisor (pid {pid}) already runs for state dir {}: use `chainctl status`, or `chainctl down` first", layout.root.display());
    }
    chainctl_common::fs::private_dir(&layout.root)?;
    // The secrets kept from an earlier run (the supervisor checks again what it writes).
    setup::check_secret_files(&loaded.profile, &layout, fix_permissions)?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(layout.supervisor_log())?;
    let mut cmd = std::process::Command::new(std::env::current_exe()?);
    cmd.args(child_args)
        .args(["up", "--supervisor"])
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            libc::setsid();
            Ok(())
        });
    }
    let mut child = cmd
        .spawn()
        .context("cannot start the background supervisor")?;
    let grace = loaded
        .profile
        .services
        .values()
        .filter_map(|s| s.startup_grace)
        .max()
        .unwrap_or(loaded.profile.supervisor.startup_grace);
    let deadline = grace
        .get()
        .max(loaded.profile.supervisor.startup_grace.get())
        + Duration::from_secs(15);
    let mut alive = || matches!(child.try_wait(), Ok(None));
    match setup::wait_settled(&layout.control_socket(), deadline, &mut alive) {
        Ok(report) => {
            // Settled services are not yet a network that answers: return once the
            // gateway has a client to give a request to (the first request after `up
            // --detach` must not fail), or say what it still waits for.
            let settings = chainctl_monitor::Settings::new(&loaded.profile, &layout).ok();
            let gateway = settings
                .as_ref()
                .and_then(|s| s.gateway_addr)
                .map(chainctl_monitor::reachable);
            let cert = settings.and_then(|s| s.gateway_tls).map(|t| t.cert);
            if let Some(gw) = gateway {
                let scheme = if cert.is_some() { "https" } else { "http" };
                if let Err(why) = wait_gateway(gw, cert.as_deref(), deadline, &mut alive) {
                    eprintln!("warning: the gateway at {scheme}://{gw} cannot serve yet: {why}; `chainctl status` shows what it waits for");
                }
            }
            let report = chainctl_core::control::call(
                &layout.control_socket(),
                &chainctl_core::control::Request::Status,
                Duration::from_secs(5),
            )
            .ok()
            .and_then(|r| r.status)
            .unwrap_or(report);
            print!("{}", status::table(&report));
            println!("supervisor running in the background (pid {}); its log: {}; stop with `chainctl down`", child.id(), layout.supervisor_log().display());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let tail = tail_lines(&layout.supervisor_log(), 20).unwrap_or_default();
            bail!(
                "{e}; last lines of {}:\n{}",
                layout.supervisor_log().display(),
                tail
            )
        }
    }
}

/// Waits until the gateway at `gw` answers a JSON-RPC read with a result (it has a
/// synced execution client behind it), for at most `limit`; the last answer otherwise.
fn wait_gateway(
    gw: std::net::SocketAddr,
    cert: Option<&Path>,
    limit: Duration,
    alive: &mut dyn FnMut() -> bool,
) -> std::result::Result<(), String> {
    let t0 = std::time::Instant::now();
    let call =
        serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "eth_blockNumber", "params": []});
    let mut why = String::from("no answer yet");
    let mut said = t0;
    while t0.elapsed() < limit {
        match chainctl_common::http::json(gw, cert, "POST", "/", None, Some(&call)) {
            Ok((_, v)) if v.get("result").is_some() => return Ok(()),
            Ok((_, v)) => {
                why = v["error"]["message"]
                    .as_str()
                    .map_or_else(|| v.to_string(), str::to_owned)
            }
            Err(e) => why = e.to_string(),
        }
        if !alive() {
            return Err("the supervisor exited".into());
        }
        if said.elapsed() >= Duration::from_secs(5) {
            eprintln!("waiting for the gateway at {gw}: {why}");
            said = std::time::Instant::now();
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(why)
}

pub(super) fn report_without_supervisor(
    layout: &Layout,
    profile: Option<&Path>,
) -> Result<StatusReport> {
    let st = state::read_json::<StateFile>(&layout.state_file())?;
    let boot = chainctl_core::procinfo::boot_id();
    let mut services = Vec::new();
    if let Some(st) = &st {
        let mut recs: Vec<_> = st.services.values().collect();
        recs.sort_by_key(|r| r.plan.depends_on.len());
        for r in recs {
            let alive = st.boot_id == boot
                && r.handle.is_some_and(|h| {
                    chainctl_core::procinfo::instance_alive(h.pid, h.pgid, h.start_ticks)
                });
            services.push(ServiceStatus {
                name: r.plan.name.clone(),
                kind: r.plan.kind.to_string(),
                backend: "process".into(),
                pid: if alive { r.handle.map(|h| h.pid) } else { None },
                image: r.plan.image.clone(),
                state: if alive { "running".into() } else { "stopped".into() },
                detail: alive.then(|| "running without a supervisor: `chainctl up` adopts it, `chainctl down` stops it".into()),
                uptime_secs: None,
                restarts: r.restarts,
                last_exit: r.last_exit.map(|e| e.to_string()),
                ports: r.plan.ports.clone(),
                address: Some(r.plan.ready_host),
                cpu_percent: None,
                memory_bytes: None,
                health: None,
                health_detail: None,
            });
        }
    } else if let Ok(loaded) = chainctl_core::loader::load(setup::source(profile)?) {
        for name in loaded.profile.services.keys() {
            services.push(ServiceStatus {
                name: name.clone(),
                kind: "command".into(),
                backend: "process".into(),
                pid: None,
                image: None,
                state: "stopped".into(),
                detail: None,
                uptime_secs: None,
                restarts: 0,
                last_exit: None,
                ports: Default::default(),
                address: None,
                cpu_percent: None,
                memory_bytes: None,
                health: None,
                health_detail: None,
            });
        }
    }
    Ok(StatusReport {
        validators: Vec::new(),
        monitor: None,
        profile: st.map(|s| s.profile).unwrap_or_default(),
        state_dir: layout.root.clone(),
        supervisor_pid: None,
        services,
    })
}

pub(super) fn status_cmd(
    profile: Option<&Path>,
    state_dir: Option<&Path>,
    output: Output,
) -> Result<ExitCode> {
    let layout = layout_of(profile, state_dir)?;
    // Through chainctl's API when the supervisor serves it; else its control socket; else
    // what the state file and the processes say.
    let from_api = running_api(&layout, profile).and_then(|api| {
        let t = api.tls_cert.as_deref();
        // Briefly: the control socket and the state file are there when it is slow.
        let wait = Duration::from_secs(3);
        match chainctl_common::http::text(
            api.addr,
            t,
            "GET",
            "/api/v1/status",
            Some(&api.token),
            None,
            wait,
        ) {
            Ok((200, text)) => serde_json::from_str::<serde_json::Value>(&text)
                .ok()
                .and_then(|mut v| {
                    serde_json::from_value::<StatusReport>(v["supervisor"].take()).ok()
                }),
            _ => None,
        }
    });
    let report = match from_api {
        Some(r) => r,
        None => match control::call(
            &layout.control_socket(),
            &Request::Status,
            Duration::from_secs(10),
        ) {
            Ok(r) if r.status.is_some() => r.status.expect("checked"),
            _ => report_without_supervisor(&layout, profile)?,
        },
    };
    let mut report = report;
    status::query_validators(&mut report);
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&report)?),
        Output::Table => print!("{}", status::table(&report)),
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn down(
    profile: Option<&Path>,
    state_dir: Option<&Path>,
    purge: bool,
    yes: bool,
) -> Result<ExitCode> {
    let layout = layout_of(profile, state_dir)?;
    if purge && !yes {
        bail!(
            "--purge deletes data dirs, secrets and logs under {}: add --yes to confirm",
            layout.root.display()
        );
    }
    let mut say = |m: String| eprintln!("{m}");
    match state::holder(&layout.lock_file()) {
        Some(pid) => {
            call_supervisor(&layout, &Request::Shutdown)?;
            chainctl_supervisor::stop::wait_for_shutdown(&layout, pid, &mut say)?;
        }
        None => chainctl_supervisor::stop::stop_unsupervised(&layout, &mut say)?,
    }
    if purge {
        // The chaos record too: it is evidence about this chain only.
        let chaos = layout.root.join("chaos");
        for p in [
            layout.data_root(),
            layout.secrets_dir(),
            layout.log_dir(),
            chaos,
        ] {
            if p.exists() {
                std::fs::remove_dir_all(&p)
                    .with_context(|| format!("cannot delete {}", p.display()))?;
            }
        }
        for f in [
            layout.ports_file(),
            layout.state_file(),
            layout.supervisor_log(),
            layout.lock_file(),
            // The planned stops are the history of this chain only, like the chaos record.
            layout.planned_stops(),
        ] {
            let _ = std::fs::remove_file(f);
        }
        let _ = std::fs::remove_dir(&layout.root);
        eprintln!("purged {}", layout.root.display());
    }
    Ok(ExitCode::SUCCESS)
}

pub(super) fn tail_lines(path: &Path, n: usize) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let len = f.metadata()?.len();
    // Read back in blocks until enough newlines are seen.
    let mut start = len;
    let mut buf = Vec::new();
    while start > 0 && buf.iter().filter(|&&b| b == b'\n').count() <= n {
        let step = start.min(64 * 1024);
        start -= step;
        f.seek(SeekFrom::Start(start))?;
        let mut chunk = vec![0; step as usize];
        f.read_exact(&mut chunk)?;
        chunk.extend_from_slice(&buf);
        buf = chunk;
    }
    let text = String::from_utf8_lossy(&buf);
    let lines: Vec<&str> = text.lines().collect();
    let from = lines.len().saturating_sub(n);
    Ok(lines[from..].iter().map(|l| format!("{l}\n")).collect())
}

pub(super) fn logs(
    profile: Option<&Path>,
    state_dir: Option<&Path>,
    service: &str,
    follow: bool,
    n: usize,
) -> Result<ExitCode> {
    let layout = layout_of(profile, state_dir)?;
    let known: Vec<String> = match state::read_json::<StateFile>(&layout.state_file())? {
        Some(st) => st.services.keys().cloned().collect(),
        None => chainctl_core::loader::load(setup::source(profile)?)
            .map(|l| l.profile.services.keys().cloned().collect())
            .unwrap_or_default(),
    };
    if !known.iter().any(|k| k == service) {
        bail!("no service named `{service}`; known: {}", known.join(", "));
    }
    let path = layout.log_file(service);
    if !path.exists() {
        bail!(
            "{} does not exist yet: `{service}` has not been started (run `chainctl up`)",
            path.display()
        );
    }
    let mut out = std::io::stdout().lock();
    out.write_all(tail_lines(&path, n)?.as_bytes())?;
    out.flush()?;
    if !follow {
        return Ok(ExitCode::SUCCESS);
    }
    use std::os::unix::fs::MetadataExt;
    let mut f = std::fs::File::open(&path)?;
    let mut pos = f.seek(SeekFrom::End(0))?;
    let mut ino = f.metadata()?.ino();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let k = f.read(&mut buf)?;
        if k > 0 {
            out.write_all(&buf[..k])?;
            out.flush()?;
            pos += k as u64;
            continue;
        }
        std::thread::sleep(Duration::from_millis(200));
        // Rotation renames the file: finish the old one, then open the new.
        match std::fs::metadata(&path) {
            Ok(m) if m.ino() != ino || m.len() < pos => {
                loop {
                    let k = f.read(&mut buf)?;
                    if k == 0 {
                        break;
                    }
                    out.write_all(&buf[..k])?;
                }
                out.flush()?;
                f = std::fs::File::open(&path)?;
                ino = m.ino();
                pos = 0;
            }
            _ => {}
        }
    }
}
