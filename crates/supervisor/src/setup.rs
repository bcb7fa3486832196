//! Turns a profile and a state dir into a running supervisor: load and validate, allocate
//! ports, write secrets, plan, take the lock, adopt survivors, then wire signals, the
//! control socket and the profile watcher into the loop.

use super::{Event, Progress, Supervisor};
use anyhow::{Context as _, Result};
use chainctl_core::control::{Request, Response};
use chainctl_core::layout::{default_state_dir, Layout};
use chainctl_core::plan::{self, Plan};
use chainctl_core::ports::{Allocation, HostPorts, HostProbe};
use chainctl_core::profile::{self, Loaded, Source};
use chainctl_core::state::{self, PortsFile, StateFile};
use chainctl_runtime::process::ProcessBackend;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::mpsc::{self, Sender};
use std::time::Duration;
use tracing::{info, warn};

/// Which profile to use: a file, or the embedded default.
pub fn source(profile: Option<&Path>) -> Result<Source, profile::ProfileError> {
    match profile {
        Some(p) => Source::from_file(p),
        None => Ok(Source::embedded_default()),
    }
}

/// Loads, validates and checks the binaries of a profile.
pub fn load(profile: Option<&Path>) -> Result<Loaded, profile::ProfileError> {
    let loaded = chainctl_core::loader::load(source(profile)?)?;
    chainctl_core::loader::check_binaries(&loaded)?;
    Ok(loaded)
}

/// The directory relative paths in the profile are resolved against.
pub fn base_dir(loaded: &Loaded) -> PathBuf {
    loaded
        .source
        .path
        .as_deref()
        .and_then(Path::parent)
        .map(|p| {
            if p.as_os_str().is_empty() {
                Path::new(".")
            } else {
                p
            }
        })
        .and_then(|p| p.canonicalize().ok())
        .unwrap_or_else(|| std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")))
}

/// The state dir: `--state-dir`, else the profile's `state_dir`, else the documented default.
pub fn layout(loaded: &Loaded, flag: Option<&Path>) -> Layout {
    let dir = match (flag, &loaded.profile.state_dir) {
        (Some(f), _) => f.to_path_buf(),
        (None, Some(d)) if d.is_relative() => base_dir(loaded).join(d),
        (None, Some(d)) => d.clone(),
        (None, None) => default_state_dir(&loaded.profile.name),
    };
    Layout::new(dir)
}

/// Names of services an earlier supervisor left running (per the state file).
pub fn running_services(layout: &Layout) -> Vec<String> {
    let Ok(Some(st)) = state::read_json::<StateFile>(&layout.state_file()) else {
        return Vec::new();
    };
    if st.boot_id != chainctl_core::procinfo::boot_id() {
        return Vec::new();
    }
    st.services
        .into_iter()
        .filter(|(_, r)| {
            // A swarm instance has no pid here; its task may run (on any node), holding its
            // published ports: keep them, as for a live process.
            r.handle.is_some_and(|h| {
                chainctl_runtime::swarm::is_swarm_handle(&h)
                    || chainctl_core::procinfo::instance_alive(h.pid, h.pgid, h.start_ticks)
            })
        })
        .map(|(n, _)| n)
        .collect()
}

/// Whether an error comes from a bind to an address already in use.
fn addr_in_use(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::AddrInUse)
    })
}

/// Allocates ports against the persisted allocation and the host; `persist` writes the result.
pub fn allocate(
    loaded: &Loaded,
    layout: &Layout,
    running: &[String],
    probe: &dyn HostProbe,
    persist: bool,
) -> Result<Allocation> {
    let previous = state::read_json::<PortsFile>(&layout.ports_file())?.unwrap_or_default();
    let alloc = chainctl_core::ports::allocate_from(loaded, &previous.services, running, probe)?;
    if persist {
        chainctl_common::fs::private_dir(&layout.root)
            .with_context(|| format!("cannot create state dir {}", layout.root.display()))?;
        state::write_json(
            &layout.ports_file(),
            &PortsFile {
                services: alloc.clone(),
            },
        )?;
    }
    Ok(alloc)
}

/// Loads, allocates (persisting), writes secrets and plans: what `up` and a reload do.
pub fn prepare(
    profile: Option<&Path>,
    state_dir: Option<&Path>,
    running: &[String],
) -> Result<(Loaded, Layout, Plan)> {
    let loaded = load(profile)?;
    let layout = layout(&loaded, state_dir);
    let alloc = allocate(&loaded, &layout, running, &HostPorts::read(), true)?;
    let mut plan = plan::build_runtime(&loaded.profile, &layout, &alloc, &base_dir(&loaded))?;
    for d in [layout.data_root(), layout.log_dir()] {
        chainctl_common::fs::private_dir(&d)
            .with_context(|| format!("cannot create {}", d.display()))?;
    }
    chainctl_core::jwt::ensure_secrets(&plan)?;
    // What a client reads only at start (its peers, its node id) is part of its spec.
    let read_at_start = crate::files::write_files(
        &loaded.profile,
        &layout,
        &plan,
        plan::Target::of(&loaded.profile),
    )?;
    for svc in &mut plan.services {
        if let Some(content) = read_at_start.get(&svc.name) {
            svc.depends_on_content(content);
        }
    }
    // Images replaced by `chainctl upgrade` while the profile still names the old one.
    if loaded.profile.runtime.containers() {
        crate::upgrade::apply_saved(&layout, &mut plan).map_err(anyhow::Error::msg)?;
    }
    // Services placed on another swarm node are probed at that node's address.
    if loaded.profile.runtime == chainctl_core::profile::RuntimeKind::Swarm {
        chainctl_runtime::swarm::locate(&loaded.profile.swarm, &mut plan.services)
            .map_err(anyhow::Error::msg)?;
    }
    Ok((loaded, layout, plan))
}

/// `up` starts nothing while a secret file is readable by others or owned by another
/// user than the state dir's ([`chainctl_core::secret_files`]): each problem is named
/// with the command that fixes it. With `fix`, the modes are fixed first (a `chown`
/// stays the operator's to do).
pub fn check_secret_files(profile: &profile::Profile, layout: &Layout, fix: bool) -> Result<()> {
    use chainctl_core::secret_files::{fix_modes, scan};
    let mut problems = scan(layout, profile).problems();
    if fix && problems.iter().any(|p| p.chmod.is_some()) {
        for done in fix_modes(&problems).map_err(anyhow::Error::msg)? {
            eprintln!("--fix-permissions: {done}");
            info!(fixed = %done, "secret file made private");
        }
        problems = scan(layout, profile).problems();
    }
    if problems.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = problems.iter().map(|p| format!("  - {}", p.text)).collect();
    anyhow::bail!(
        "{} problem{} with secret files; nothing was started:\n{}\nrun the commands above{}; then rotate what others could read (`chainctl jwt rotate PAIR`, a new API token or TLS key)",
        problems.len(),
        if problems.len() == 1 { "" } else { "s" },
        list.join("\n"),
        if problems.iter().any(|p| p.chmod.is_some()) {
            ", or `chainctl up --fix-permissions` to apply the chmods"
        } else {
            ""
        }
    )
}

/// Runs the supervisor in this process until it is shut down.
pub fn run(
    profile: Option<&Path>,
    state_dir: Option<&Path>,
    progress: Option<Progress>,
    fix_permissions: bool,
) -> Result<()> {
    let loaded = load(profile)?;
    let layout = layout(&loaded, state_dir);
    chainctl_common::fs::private_dir(&layout.root)
        .with_context(|| format!("cannot create state dir {}", layout.root.display()))?;
    let _lock = state::lock(&layout.lock_file())?;
    let previous = state::read_json::<StateFile>(&layout.state_file())?;
    let running = running_services(&layout);
    let (loaded, layout, plan) = prepare(profile, Some(&layout.root), &running)?;
    check_secret_files(&loaded.profile, &layout, fix_permissions)?;
    info!(profile = %loaded.profile.name, state_dir = %layout.root.display(), services = plan.services.len(), "supervisor starting");

    // Orphaned grandchildren are re-parented to us and reaped, not left as zombies.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };

    let (tx, rx) = mpsc::channel();
    spawn_signals(tx.clone())?;
    let socket = layout.control_socket();
    spawn_control(&socket, tx.clone())?;
    let profile_path = loaded
        .source
        .path
        .clone()
        .map(|p| p.canonicalize().unwrap_or(p));
    let _watcher = match &profile_path {
        Some(p) => Some(watch(p, tx.clone())?),
        None => {
            info!("running the embedded default profile: nothing to watch for edits");
            None
        }
    };
    let (rp, rs) = (profile.map(Path::to_path_buf), layout.root.clone());
    let subnet = plan.subnet.clone();
    let reloader = Box::new(move |running: &[String]| {
        // chainctl's own ports are held by this process: keep them.
        let mut running = running.to_vec();
        running.push(chainctl_core::ports::CHAINCTL.to_string());
        let (_, _, plan) = prepare(rp.as_deref(), Some(&rs), &running)?;
        // The containers' network keeps its subnet while it runs.
        if plan.subnet != subnet {
            anyhow::bail!(
                "the containers' subnet would change ({} → {}: `docker.subnet`, or external clients added to or removed from a network that had none) while the network runs on the old one: run `chainctl down`, then `up`",
                subnet.as_deref().unwrap_or("Docker's pick"),
                plan.subnet.as_deref().unwrap_or("Docker's pick")
            );
        }
        Ok(plan)
    });
    // A container's end wakes the loop as a child's SIGCHLD does.
    let wake: chainctl_runtime::Wake = {
        let tx = tx.clone();
        std::sync::Arc::new(move || {
            let _ = tx.send(Event::Child);
        })
    };
    let backend: Box<dyn chainctl_runtime::Backend> = match loaded.profile.runtime {
        chainctl_core::profile::RuntimeKind::Docker => {
            let mut d = chainctl_runtime::docker::DockerBackend::connect(
                &loaded.profile.name,
                &layout.root,
                loaded.profile.listen.rpc,
                Some(wake.clone()),
            )
            .map_err(anyhow::Error::msg)?;
            // Fail before starting anything when an image is missing (chainctl never pulls).
            d.check_images(&plan.services).map_err(anyhow::Error::msg)?;
            d.set_logs(&plan.services);
            d.set_subnet(plan.subnet.as_deref())
                .map_err(anyhow::Error::msg)?;
            Box::new(d)
        }
        chainctl_core::profile::RuntimeKind::Swarm => {
            let mut s = chainctl_runtime::swarm::SwarmBackend::connect(
                &loaded.profile.name,
                &layout.root,
                &loaded.profile.swarm,
                Some(wake.clone()),
            )
            .map_err(anyhow::Error::msg)?;
            // Fail before starting anything when an image or a placement's node is missing.
            s.check(&plan.services).map_err(anyhow::Error::msg)?;
            s.set_logs(&plan.services);
            Box::new(s)
        }
        _ => {
            let self_exe = std::env::current_exe().context("cannot find the chainctl binary")?;
            Box::new(ProcessBackend::new(self_exe))
        }
    };
    let mut attempt = 0;
    let (mut loaded, mut layout, mut plan) = (loaded, layout, plan);
    let monitor = loop {
        let settings = chainctl_monitor::Settings::new(&loaded.profile, &layout)?;
        // The API hands control requests to the loop as the control socket does.
        let forward: chainctl_core::control::Forward = {
            let tx = tx.clone();
            std::sync::Arc::new(move |req, answer| tx.send(Event::Control(req, answer)).is_ok())
        };
        match chainctl_monitor::Monitor::start(settings, &plan, forward) {
            Ok(m) => break m,
            // Another program (often another chainctl starting at the same moment, given
            // the same free port) took an `auto` port of ours between allocation and bind:
            // allocate again, which moves ours off the now busy port. A pinned port stays
            // busy and fails after the last attempt with the error that names it.
            Err(e) if attempt < 5 && addr_in_use(&e) => {
                attempt += 1;
                warn!("{e:#}; allocating chainctl's ports again");
                std::thread::sleep(Duration::from_millis(rand::random::<u64>() % 200 + 20));
                (loaded, layout, plan) = prepare(profile, Some(&layout.root), &running)?;
            }
            Err(e) => return Err(e),
        }
    };
    let mut sup = Supervisor::new(layout.clone(), plan, profile_path, backend, reloader)
        .with_monitor(monitor);
    if let Some(p) = progress {
        sup = sup.with_progress(p);
    }
    sup.adopt(previous);
    let result = sup.run(rx);
    let _ = std::fs::remove_file(&socket);
    result
}

fn spawn_signals(tx: Sender<Event>) -> Result<()> {
    use signal_hook::consts::{SIGCHLD, SIGHUP, SIGINT, SIGTERM};
    let mut signals = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP, SIGCHLD])?;
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            for sig in signals.forever() {
                let ev = match sig {
                    SIGCHLD => Event::Child,
                    SIGHUP => Event::Reload,
                    _ => Event::Shutdown,
                };
                if tx.send(ev).is_err() {
                    break;
                }
            }
        })?;
    Ok(())
}

fn spawn_control(socket: &Path, tx: Sender<Event>) -> Result<()> {
    // We hold the lock, so a socket file left here is stale.
    let _ = std::fs::remove_file(socket);
    let listener = UnixListener::bind(socket).with_context(|| {
        format!("cannot listen on {} (a Unix socket path must be under 108 bytes; use a shorter --state-dir)", socket.display())
    })?;
    std::fs::set_permissions(socket, std::fs::Permissions::from_mode(0o600))?;
    std::thread::Builder::new()
        .name("control".into())
        .spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
                let mut line = String::new();
                if BufReader::new(&conn).read_line(&mut line).is_err() {
                    continue;
                }
                let resp = match serde_json::from_str::<Request>(&line) {
                    Err(e) => Response::err(format!("bad request: {e}")),
                    Ok(req) => {
                        let (rtx, rrx) = mpsc::channel();
                        if tx.send(Event::Control(req, rtx)).is_err() {
                            break;
                        }
                        rrx.recv_timeout(Duration::from_secs(30))
                            .unwrap_or_else(|_| Response::err("the supervisor did not answer"))
                    }
                };
                let mut out = serde_json::to_string(&resp).unwrap_or_default();
                out.push('\n');
                let _ = conn.write_all(out.as_bytes());
            }
        })?;
    Ok(())
}

fn watch(profile: &Path, tx: Sender<Event>) -> Result<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let name = profile.file_name().map(|n| n.to_os_string());
    let dir = profile.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        let Ok(ev) = res else { return };
        if ev.kind.is_access() {
            return;
        }
        // Editors save by writing in place or by renaming a temp file over it: watch the
        // directory and match the file name.
        if ev
            .paths
            .iter()
            .any(|p| p.file_name().map(|n| n.to_os_string()) == name)
        {
            let _ = tx.send(Event::Reload);
        }
    })?;
    w.watch(&dir, RecursiveMode::NonRecursive)
        .with_context(|| format!("cannot watch {}", dir.display()))?;
    info!(profile = %profile.display(), "watching the profile for edits");
    Ok(w)
}

/// Polls a running supervisor until its services have settled or `deadline` passes.
pub fn wait_settled(
    socket: &Path,
    deadline: Duration,
    child_alive: &mut dyn FnMut() -> bool,
) -> Result<chainctl_core::status::StatusReport> {
    let t0 = std::time::Instant::now();
    loop {
        if let Ok(r) =
            chainctl_core::control::call(socket, &Request::Status, Duration::from_secs(5))
        {
            if let Some(st) = r.status {
                if st.settled() || t0.elapsed() >= deadline {
                    return Ok(st);
                }
            }
        } else if !child_alive() {
            anyhow::bail!("the supervisor exited during start-up");
        } else if t0.elapsed() >= deadline {
            warn!("the supervisor did not answer within {deadline:?}");
            anyhow::bail!(
                "the supervisor did not answer on {} in time",
                socket.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
