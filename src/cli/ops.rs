//! Day-2 commands against a running network: `load`, `failover`, `report`.

use super::*;

/// The JSON-RPC URL of the profile's first execution client, from its port allocation.
pub(super) fn default_rpc(profile: Option<&Path>, state_dir: Option<&Path>) -> Result<String> {
    let layout = layout_of(profile, state_dir)?;
    let ports = state::read_json::<PortsFile>(&layout.ports_file())?.ok_or_else(|| {
        anyhow::anyhow!(
            "no --rpc given and the profile's network is not up (no {}): run `chainctl up`, or pass --rpc URL",
            layout.ports_file().display()
        )
    })?;
    let first_el = chainctl_core::network::el_name(0, 0);
    let (name, pick) = ports
        .services
        .get_key_value(&first_el)
        .and_then(|(n, p)| Some((n, p.get("http")?)))
        .or_else(|| {
            ports
                .services
                .iter()
                .find_map(|(n, p)| Some((n, p.get("http").or_else(|| p.get("rpc"))?)))
        })
        .ok_or_else(|| {
            anyhow::anyhow!("no --rpc given and the profile has no service with an `http` or `rpc` port: pass --rpc URL")
        })?;
    // Where the supervisor reaches it (another swarm node's address, or this host).
    let host = state::read_json::<StateFile>(&layout.state_file())
        .ok()
        .flatten()
        .and_then(|st| st.services.get(name).map(|r| r.plan.ready_host))
        .filter(|a| !a.is_unspecified())
        .unwrap_or(std::net::IpAddr::from([127, 0, 0, 1]));
    Ok(format!(
        "http://{}",
        std::net::SocketAddr::new(host, pick.port)
    ))
}

pub(super) fn load_cmd(
    profile: Option<&Path>,
    state_dir: Option<&Path>,
    a: LoadArgs,
) -> Result<ExitCode> {
    let rpc = match a.rpc {
        Some(r) => r,
        None => default_rpc(profile, state_dir)?,
    };
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
