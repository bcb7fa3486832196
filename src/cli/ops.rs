//! Day-2 commands against a running network: `load`, `failover`, `report`.

use super::*;

/// A JSON-RPC URL and, when it is HTTPS, the certificate chainctl trusts there (the
/// gateway's `gateway.tls.cert`, or `--rpc-cert`).
type Endpoint = (String, Option<PathBuf>);

/// The JSON-RPC endpoints of the profile's running network, from its state dir: the
/// gateway (when the profile has one), then every execution client, by name.
pub(super) fn network_rpcs(
    profile: Option<&Path>,
    state_dir: Option<&Path>,
) -> Result<(Option<Endpoint>, Vec<String>)> {
    let layout = layout_of(profile, state_dir)?;
    let ports = state::read_json::<PortsFile>(&layout.ports_file())?.ok_or_else(|| {
        anyhow::anyhow!(
            "no --rpc given and the profile's network is not up (no {}): run `chainctl up`, or pass --rpc URL",
            layout.ports_file().display()
        )
    })?;
    let st = state::read_json::<StateFile>(&layout.state_file())
        .ok()
        .flatten();
    let url = |ip, port| format!("http://{}", reach(ip, port));
    // The gateway where the supervisor put it, from the profile the network was started
    // with (the state file names it).
    let path = profile
        .map(Path::to_path_buf)
        .or_else(|| st.as_ref()?.profile_path.clone());
    let gateway = setup::source(path.as_deref())
        .ok()
        .and_then(|s| chainctl_core::loader::load(s).ok())
        .and_then(|l| chainctl_monitor::Settings::new(&l.profile, &layout).ok())
        .and_then(|s| {
            let a = s.gateway_addr?;
            let cert = s.gateway_tls.map(|t| t.cert);
            let scheme = if cert.is_some() { "https" } else { "http" };
            Some((format!("{scheme}://{}", reach(a.ip(), a.port())), cert))
        });
    // Where the supervisor reaches each client (another swarm node's address, or here),
    // on the port its adapter serves HTTP on.
    let plans: Vec<&chainctl_core::plan::ServicePlan> = st
        .iter()
        .flat_map(|st| st.services.values())
        .map(|r| &r.plan)
        .collect();
    let mut els: Vec<String> = plans.iter().filter_map(|p| el_url(p)).collect();
    // No generated client (a profile of hand-written services, or a state dir written
    // before the plan named its clients): the services with an `http` or `rpc` port.
    if els.is_empty() {
        els = ports
            .services
            .iter()
            .filter(|(n, _)| n.as_str() != chainctl_core::ports::CHAINCTL)
            .filter_map(|(n, p)| {
                let a = p.get("http").or_else(|| p.get("rpc"))?;
                let host = plans
                    .iter()
                    .find(|p| p.name == *n)
                    .map_or(std::net::IpAddr::from([127, 0, 0, 1]), |p| p.ready_host);
                Some(url(host, a.port))
            })
            .collect();
    }
    Ok((gateway, els))
}

/// Where this host reaches `ip:port` (loopback for a listener on every address).
fn reach(ip: std::net::IpAddr, port: u16) -> std::net::SocketAddr {
    chainctl_monitor::reachable(std::net::SocketAddr::new(ip, port))
}

/// A generated execution client's JSON-RPC URL (where the supervisor reaches it, on the
/// port its adapter serves HTTP on).
fn el_url(p: &chainctl_core::plan::ServicePlan) -> Option<String> {
    let http = p
        .ports
        .get(chainctl_core::clients::endpoints(p.client?).http)?;
    Some(format!("http://{}", reach(p.ready_host, http.port)))
}

/// Where load goes: `--rpc` (with the certificate `--rpc-cert` pins), else the gateway
/// (it keeps serving when a client dies; pinned to `gateway.tls.cert` when it serves
/// HTTPS), else the first client; and every client of the network as a witness (blocks
/// and receipts).
fn load_endpoints(
    profile: Option<&Path>,
    state_dir: Option<&Path>,
    rpc: Option<String>,
    rpc_cert: Option<PathBuf>,
) -> Result<(Endpoint, Vec<String>)> {
    let network = network_rpcs(profile, state_dir);
    let rpc = match (rpc, &network) {
        (Some(r), _) => (r, rpc_cert),
        (None, Ok((gateway, els))) => gateway
            .clone()
            .or_else(|| els.first().map(|e| (e.clone(), None)))
            .ok_or_else(|| {
                anyhow::anyhow!("no --rpc given and the profile's network has no gateway and no execution client: pass --rpc URL")
            })?,
        (None, Err(e)) => return Err(anyhow::anyhow!("{e:#}")),
    };
    Ok((rpc, network.map(|(_, els)| els).unwrap_or_default()))
}

pub(super) fn chaos_cmd(
    profile_arg: &Option<PathBuf>,
    state_dir_arg: &Option<PathBuf>,
    a: ChaosArgs,
) -> Result<ExitCode> {
    let (profile, state_dir) = (profile_arg.as_deref(), state_dir_arg.as_deref());
    let layout = layout_of(profile, state_dir)?;
    let st = state::read_json::<StateFile>(&layout.state_file())?.ok_or_else(|| {
        anyhow::anyhow!(
            "the network is not up (no {}): run `chainctl up --detach` first",
            layout.state_file().display()
        )
    })?;
    // The profile the network runs with (the state file names it), for its name, block
    // time and runtime.
    let path = profile
        .map(Path::to_path_buf)
        .or_else(|| st.profile_path.clone());
    let loaded = chainctl_core::loader::load(setup::source(path.as_deref())?)?;
    let p = &loaded.profile;
    let injector = match p.runtime {
        chainctl_core::profile::RuntimeKind::Process => chainctl_chaos::Injector::Process,
        chainctl_core::profile::RuntimeKind::Docker => chainctl_chaos::Injector::Docker {
            profile: p.name.clone(),
        },
        other => bail!(
            "chaos runs on the process and docker runtimes (signals to processes, `docker kill`/`docker pause`); this profile's runtime is {other:?}: its services are not on this host for chainctl to hit"
        ),
    };
    // The validators (a `status` port and a validator config) and their clients (the
    // services they depend on that are generated execution clients).
    let plans: BTreeMap<&str, &chainctl_core::plan::ServicePlan> = st
        .services
        .values()
        .map(|r| (r.plan.name.as_str(), &r.plan))
        .collect();
    let mut validators = Vec::new();
    for v in plans.values() {
        let Some(status) = status::validator_status_port(&layout.root, &v.name, &v.ports) else {
            continue;
        };
        let els = v
            .depends_on
            .iter()
            .filter_map(|d| {
                let e = plans.get(d.as_str())?;
                Some(chainctl_chaos::ElNode {
                    name: e.name.clone(),
                    rpc: el_url(e)?,
                })
            })
            .collect();
        validators.push(chainctl_chaos::ValidatorNode {
            name: v.name.clone(),
            status: reach(v.ready_host, status.port),
            els,
        });
    }
    let topology = chainctl_chaos::Topology { validators };
    if topology.validators.is_empty() {
        bail!("the network has no validators (`validators:` in the profile): chaos measures recovery by the chain's head");
    }
    let max_down = a.max_down.unwrap_or_else(|| topology.tolerated());
    if max_down > topology.tolerated() {
        eprintln!(
            "warning: --max-down {max_down} is more than the {} validator(s) {} validators tolerate: the chain will stop while they are down",
            topology.tolerated(),
            topology.validators.len()
        );
    }
    let seed = a.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1)
    });
    let load = if a.tps > 0 {
        let ((rpc, rpc_cert), witnesses) = load_endpoints(profile, state_dir, a.rpc, None)?;
        let cfg = chainctl_load::Config {
            rpc,
            rpc_cert,
            tps: a.tps,
            duration: a.duration,
            accounts: chainctl_load::accounts_for(a.tps),
            first_account: 0,
            kind: chainctl_load::Kind::Transfer,
            mnemonic: chainctl_core::network::DEV_MNEMONIC.to_string(),
            drain: Duration::from_secs(30),
            progress: false,
            witnesses,
        };
        cfg.check()?;
        Some(cfg)
    } else {
        None
    };
    // After the `supervisor` fault: `chainctl up --detach` with this command's profile and
    // state dir, as an operator would.
    let child_args = cli_args_for_child(profile_arg, state_dir_arg);
    let restart_supervisor = std::sync::Arc::new(move || -> Result<()> {
        let o = std::process::Command::new(std::env::current_exe()?)
            .args(&child_args)
            .args(["up", "--detach"])
            .stdin(std::process::Stdio::null())
            .output()
            .context("cannot run chainctl up --detach")?;
        if !o.status.success() {
            bail!(
                "chainctl up --detach: {}",
                String::from_utf8_lossy(&o.stderr).trim()
            );
        }
        Ok(())
    });
    eprintln!(
        "chaos on {}: {} every {}..{} for {} (seed {seed}; repeat with --seed {seed}), at most {max_down} validator(s) down at once{}",
        p.name,
        a.faults.iter().map(|k| k.name()).collect::<Vec<_>>().join(", "),
        humantime::format_duration(a.every.0),
        humantime::format_duration(a.every.1),
        humantime::format_duration(a.duration),
        if a.tps > 0 { format!(", {} tx/s of load", a.tps) } else { String::new() }
    );
    let record = chainctl_chaos::run(chainctl_chaos::Config {
        profile: p.name.clone(),
        topology,
        kinds: a.faults,
        duration: a.duration,
        every: a.every,
        pause_for: a.pause_for,
        partition_for: a.partition_for,
        max_down,
        count: a.count,
        seed,
        block_time: p.chain.block_time.get(),
        load,
        control_socket: layout.control_socket(),
        injector,
        restart_supervisor,
        settle_limit: a.settle,
        progress: true,
    })?;
    // Kept for `chainctl report`: evidence with its age.
    let out = layout.chaos_result();
    if let Some(dir) = out.parent() {
        chainctl_common::fs::private_dir(dir)?;
    }
    chainctl_common::fs::write_atomic(&out, serde_json::to_string_pretty(&record)?.as_bytes())
        .with_context(|| format!("writing {}", out.display()))?;
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&record)?),
        Output::Table => print!("{}", chainctl_chaos::table(&record)),
    }
    Ok(if record.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub(super) fn load_cmd(
    profile: Option<&Path>,
    state_dir: Option<&Path>,
    a: LoadArgs,
) -> Result<ExitCode> {
    let ((rpc, rpc_cert), witnesses) = load_endpoints(profile, state_dir, a.rpc, a.rpc_cert)?;
    let accounts = a
        .accounts
        .unwrap_or_else(|| chainctl_load::accounts_for(a.tps));
    let summary = chainctl_load::run(chainctl_load::Config {
        rpc,
        rpc_cert,
        tps: a.tps,
        duration: a.duration,
        accounts,
        first_account: a.first_account,
        kind: a.kind,
        mnemonic: a
            .mnemonic
            .unwrap_or_else(|| chainctl_core::network::DEV_MNEMONIC.to_string()),
        drain: a.drain,
        progress: true,
        witnesses,
    })?;
    match a.output {
        Output::Json => println!("{}", serde_json::to_string_pretty(&summary)?),
        _ => summary.print(),
    }
    Ok(if summary.clean() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub(super) fn failover_cmd(
    profile: Option<&Path>,
    state_dir: Option<&Path>,
    validator: String,
    to: Option<String>,
) -> Result<ExitCode> {
    let loaded = setup::load(profile)?;
    let layout = setup::layout(&loaded, state_dir);
    let api = chainctl_monitor::api_endpoint(&layout, &loaded.profile)?;
    let addr = api.addr;
    let body = serde_json::json!({"validator": validator, "to": to});
    let path = "/api/v1/failover";
    let answer = chainctl_common::http::json(
        addr,
        api.tls_cert.as_deref(),
        "POST",
        path,
        Some(&api.token),
        Some(&body),
    );
    let (code, v) = answer.map_err(|e| {
        anyhow::anyhow!("chainctl's API at {addr} does not answer ({e}): is the network up?")
    })?;
    if code == 200 {
        println!(
            "{validator}: active execution client is now {}",
            v["active"].as_str().unwrap_or("?")
        );
        Ok(ExitCode::SUCCESS)
    } else {
        anyhow::bail!(
            "failover of {validator} refused: {}",
            v["error"].as_str().unwrap_or("no reason given")
        )
    }
}

pub(super) fn report_cmd(
    profile: Option<&Path>,
    state_dir: Option<&Path>,
    format: chainctl_report::render::Format,
    out: Option<&Path>,
    (drill, canary): (bool, bool),
    window: std::time::Duration,
) -> Result<ExitCode> {
    // Exit 2, not 1, when the report cannot be made: a gate must not read "could not
    // look" as "not ready" (or the reverse).
    let could_not = |e: anyhow::Error| {
        eprintln!("error: the readiness report could not run: {e:#}");
        Ok(ExitCode::from(2))
    };
    let (loaded, layout, mut plan, _) =
        match inspect_plan(profile, state_dir, &chainctl_core::ports::NoProbe) {
            Ok(x) => x,
            Err(e) => return could_not(e),
        };
    // The services placed on other swarm nodes are probed there.
    if loaded.profile.runtime == chainctl_core::profile::RuntimeKind::Swarm {
        if let Err(e) = chainctl_runtime::swarm::locate(&loaded.profile.swarm, &mut plan.services) {
            return could_not(anyhow::anyhow!(
                "cannot tell which swarm node runs which service: {e}"
            ));
        }
    }
    let inputs = chainctl_report::evidence::Inputs {
        profile: &loaded.profile,
        layout: &layout,
        plan: &plan,
        window,
        drill,
        canary,
    };
    if canary {
        eprintln!("canary: a 0-value transfer to itself through the gateway, followed to every execution client's receipt…");
    }
    if drill {
        eprintln!("failover drill: killing one validator's active execution client (it is restarted and checked)…");
    }
    let evidence = match chainctl_report::evidence::gather(&inputs) {
        Ok(e) => e,
        Err(e) => return could_not(e),
    };
    let report = chainctl_report::assemble(
        loaded.profile.name.clone(),
        window.as_secs(),
        chainctl_report::checks::all(&evidence),
        chainctl_report::checks::service_rows(&evidence),
        evidence.ports.clone(),
        evidence
            .chain
            .as_ref()
            .map(|b| b.iter().map(|b| (b.number, b.timestamp, b.txs)).collect())
            .unwrap_or_default(),
    );
    let text = chainctl_report::render::render(&report, format);
    match out {
        Some(p) => {
            if let Err(e) = std::fs::write(p, &text) {
                return could_not(anyhow::anyhow!("cannot write {}: {e}", p.display()));
            }
            eprintln!(
                "{}: {} (score {:.1}) written to {}",
                report.profile,
                if report.verdict == chainctl_report::Verdict::Ready {
                    "READY"
                } else {
                    "NOT READY"
                },
                report.score,
                p.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(match report.verdict {
        chainctl_report::Verdict::Ready => ExitCode::SUCCESS,
        chainctl_report::Verdict::NotReady => ExitCode::from(1),
    })
}
