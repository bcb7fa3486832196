//! Day-2 commands against a running network: `load`, `failover`, `report`.

use super::*;

/// The JSON-RPC endpoints of the profile's running network, from its state dir: the
/// gateway (when the profile has one), then every execution client, by name.
pub(super) fn network_rpcs(
    profile: Option<&Path>,
    state_dir: Option<&Path>,
) -> Result<(Option<String>, Vec<String>)> {
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
    let url = |ip: std::net::IpAddr, port: u16| {
        let a = chainctl_monitor::reachable(std::net::SocketAddr::new(ip, port));
        format!("http://{a}")
    };
    // The gateway where the supervisor put it, from the profile the network was started
    // with (the state file names it).
    let path = profile
        .map(Path::to_path_buf)
        .or_else(|| st.as_ref()?.profile_path.clone());
    let gateway = setup::source(path.as_deref())
        .ok()
        .and_then(|s| chainctl_core::loader::load(s).ok())
        .and_then(|l| chainctl_monitor::Settings::new(&l.profile, &layout).ok())
        .and_then(|s| s.gateway_addr)
        .map(|a| url(a.ip(), a.port()));
    // Where the supervisor reaches each client (another swarm node's address, or here),
    // on the port its adapter serves HTTP on.
    let plans: Vec<&chainctl_core::plan::ServicePlan> = st
        .iter()
        .flat_map(|st| st.services.values())
        .map(|r| &r.plan)
        .collect();
    let mut els: Vec<String> = plans
        .iter()
        .filter_map(|p| {
            let http = p
                .ports
                .get(chainctl_core::clients::endpoints(p.client?).http)?;
            Some(url(p.ready_host, http.port))
        })
        .collect();
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

pub(super) fn load_cmd(
    profile: Option<&Path>,
    state_dir: Option<&Path>,
    a: LoadArgs,
) -> Result<ExitCode> {
    // The gateway by default (it keeps serving when a client dies), else the first
    // client; every client of the network is a witness (blocks and receipts).
    let network = network_rpcs(profile, state_dir);
    let rpc = match (a.rpc, &network) {
        (Some(r), _) => r,
        (None, Ok((gateway, els))) => gateway.clone().or_else(|| els.first().cloned()).ok_or_else(|| {
            anyhow::anyhow!("no --rpc given and the profile's network has no gateway and no execution client: pass --rpc URL")
        })?,
        (None, Err(e)) => return Err(anyhow::anyhow!("{e:#}")),
    };
    let witnesses = network.map(|(_, els)| els).unwrap_or_default();
    let accounts = a
        .accounts
        .unwrap_or_else(|| a.tps.div_ceil(chainctl_load::MAX_TPS_PER_ACCOUNT).max(1) as u32);
    let summary = chainctl_load::run(chainctl_load::Config {
        rpc,
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
    drill: bool,
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
    };
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
