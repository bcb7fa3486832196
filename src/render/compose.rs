//! A compose project from the plan: `compose.yaml` (one container per service on one
//! user-defined network, named volumes for data dirs, secrets mounted read-only, ports
//! published on the profile's listen address only) and `.env`.
//!
//! Built as YAML data rather than text, so no value can break the file's structure; `$`
//! is doubled because compose interpolates variables in values.

use super::{File, RenderError};
use crate::plan::Plan;
use crate::profile::{Profile, Protocol, RestartPolicy, StopSignal};
use serde_yaml::{Mapping, Value};
use std::path::Path;

fn s(v: impl Into<String>) -> Value {
    Value::String(v.into())
}

fn esc(v: &str) -> Value {
    s(v.replace('$', "$$"))
}

/// Renders `compose.yaml` and `.env`. `plan` must be built for containers
/// ([`crate::plan::Target::Container`]); `host_secrets` is the host directory holding the
/// secrets (`chainctl jwt generate` writes them there).
pub fn render(
    profile: &Profile,
    plan: &Plan,
    host_secrets: &Path,
) -> Result<Vec<File>, RenderError> {
    let missing: Vec<String> = plan
        .services
        .iter()
        .filter(|s| s.image.is_none())
        .map(|s| format!("services.{}.image", s.name))
        .collect();
    if !missing.is_empty() {
        return Err(RenderError(format!(
            "compose runs each service from an image, and these have none: {}; add e.g. `image: ghcr.io/paradigmxyz/reth:v1.9.3` (chainctl never pulls: load or build it first)",
            missing.join(", ")
        )));
    }
    let network = format!("chainctl-{}", plan.profile);
    let publish_ip = profile.listen.rpc.to_string();
    let mut services = Mapping::new();
    let mut volumes = Mapping::new();
    for svc in &plan.services {
        let mut m = Mapping::new();
        m.insert(s("image"), s(svc.image.clone().unwrap_or_default()));
        m.insert(
            s("command"),
            Value::Sequence(svc.argv.iter().map(|a| esc(a)).collect()),
        );
        m.insert(s("working_dir"), s(svc.workdir.display().to_string()));
        let mut env = Mapping::new();
        env.insert(s("CHAINCTL_SERVICE"), s(svc.name.clone()));
        for (k, v) in &svc.env {
            env.insert(s(k.clone()), esc(v));
        }
        m.insert(s("environment"), Value::Mapping(env));
        let mut ports = Vec::new();
        for a in svc.ports.values() {
            for (on, proto) in [(a.protocol.tcp(), "tcp"), (a.protocol.udp(), "udp")] {
                if on {
                    ports.push(s(format!("{publish_ip}:{0}:{0}/{proto}", a.port)));
                }
            }
        }
        if !ports.is_empty() {
            m.insert(s("ports"), Value::Sequence(ports));
        }
        let volume = format!("{}-data", svc.name);
        let mut mounts = vec![s(format!("{volume}:{}", svc.data_dir.display()))];
        volumes.insert(s(volume), Value::Mapping(Mapping::new()));
        for secret in &svc.secrets {
            let rel = secret
                .strip_prefix(plan.state_dir.join("secrets"))
                .unwrap_or(secret);
            mounts.push(s(format!(
                "${{CHAINCTL_SECRETS_DIR}}/{}:{}:ro",
                rel.display(),
                secret.display()
            )));
        }
        m.insert(s("volumes"), Value::Sequence(mounts));
        m.insert(s("networks"), Value::Sequence(vec![s(network.clone())]));
        if !svc.depends_on.is_empty() {
            m.insert(
                s("depends_on"),
                Value::Sequence(svc.depends_on.iter().map(|d| s(d.clone())).collect()),
            );
        }
        m.insert(
            s("restart"),
            s(match svc.restart.policy {
                RestartPolicy::Always => "always",
                RestartPolicy::OnFailure => "on-failure",
                RestartPolicy::Never => "no",
            }),
        );
        m.insert(
            s("stop_signal"),
            s(match svc.stop_signal {
                StopSignal::Term => "SIGTERM",
                StopSignal::Int => "SIGINT",
                StopSignal::Quit => "SIGQUIT",
                StopSignal::Hup => "SIGHUP",
            }),
        );
        m.insert(
            s("stop_grace_period"),
            s(format!("{}s", svc.stop_grace.get().as_secs().max(1))),
        );
        let mut labels = Mapping::new();
        labels.insert(s("io.chainctl.profile"), s(plan.profile.clone()));
        labels.insert(s("io.chainctl.service"), s(svc.name.clone()));
        labels.insert(s("io.chainctl.spec-hash"), s(svc.spec_hash.clone()));
        m.insert(s("labels"), Value::Mapping(labels));
        services.insert(s(svc.name.clone()), Value::Mapping(m));
    }
    let mut root = Mapping::new();
    root.insert(s("version"), s("3.8"));
    root.insert(s("services"), Value::Mapping(services));
    let mut net = Mapping::new();
    net.insert(s("name"), s(network.clone()));
    let mut nets = Mapping::new();
    nets.insert(s(network), Value::Mapping(net));
    root.insert(s("networks"), Value::Mapping(nets));
    root.insert(s("volumes"), Value::Mapping(volumes));
    let body =
        serde_yaml::to_string(&Value::Mapping(root)).map_err(|e| RenderError(e.to_string()))?;
    let version = env!("CARGO_PKG_VERSION");
    let tcp_udp = plan
        .services
        .iter()
        .flat_map(|s| s.ports.values())
        .any(|a| a.protocol == Protocol::Both);
    let mut header = format!(
        "# Rendered by chainctl {version} from profile `{}`. Do not edit: change the profile,\n# then run `chainctl render compose` again. Ports are the plan's, published on {publish_ip} only.\n",
        plan.profile
    );
    if tcp_udp {
        header.push_str("# P2P ports are published for TCP and UDP on the same number.\n");
    }
    Ok(vec![
        File { name: "compose.yaml".into(), contents: format!("{header}{body}") },
        File {
            name: ".env".into(),
            contents: format!(
                "# Rendered by chainctl {version}: values compose.yaml reads.\nCOMPOSE_PROJECT_NAME=chainctl-{}\n# Where `chainctl jwt generate` wrote the Engine API secrets on this host.\nCHAINCTL_SECRETS_DIR={}\n",
                plan.profile,
                host_secrets.display()
            ),
        },
    ])
}
