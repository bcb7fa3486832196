//! A compose project from the plan: `compose.yaml` (one container per service on one
//! user-defined network, named volumes for data dirs, secrets mounted read-only, ports
//! published on the profile's listen address only) and `.env`.
//!
//! Written by a small emitter that double-quotes every string (JSON string syntax is
//! valid YAML), so no value can change the file's structure and docker-compose 1.x,
//! which reads YAML 1.1, never mistakes `no` or `on` for a boolean. `$` is doubled
//! everywhere because compose interpolates variables in every value.

use super::{File, RenderError};
use crate::plan::Plan;
use crate::profile::{Profile, Protocol};
use std::fmt::Write;
use std::net::IpAddr;
use std::path::Path;

/// A YAML node of the small shape compose needs.
enum Node {
    Str(String),
    List(Vec<Node>),
    Map(Vec<(String, Node)>),
}

fn q(s: &str) -> String {
    serde_json::to_string(s).expect("strings serialise")
}

/// A map key, plain where every YAML reader agrees it is a string, else quoted: YAML 1.1
/// (docker-compose 1.x) reads `YES`, `no`, `On`, `null` or `1e3` as other types.
fn key(k: &str) -> String {
    const SPECIAL: &[&str] = &["y", "n", "yes", "no", "on", "off", "true", "false", "null"];
    let plain = k.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
        && !SPECIAL.contains(&k.to_ascii_lowercase().as_str());
    if plain {
        k.to_string()
    } else {
        q(k)
    }
}

fn emit(out: &mut String, node: &Node, indent: usize) {
    let pad = " ".repeat(indent);
    match node {
        Node::Map(entries) => {
            for (k, v) in entries {
                match v {
                    Node::Str(s) => {
                        let _ = writeln!(out, "{pad}{}: {}", key(k), q(s));
                    }
                    Node::List(l) if l.is_empty() => {
                        let _ = writeln!(out, "{pad}{}: []", key(k));
                    }
                    Node::Map(m) if m.is_empty() => {
                        let _ = writeln!(out, "{pad}{}: {{}}", key(k));
                    }
                    _ => {
                        let _ = writeln!(out, "{pad}{}:", key(k));
                        emit(out, v, indent + 2);
                    }
                }
            }
        }
        Node::List(items) => {
            for item in items {
                match item {
                    Node::Str(s) => {
                        let _ = writeln!(out, "{pad}- {}", q(s));
                    }
                    other => {
                        let _ = writeln!(out, "{pad}-");
                        emit(out, other, indent + 2);
                    }
                }
            }
        }
        Node::Str(s) => {
            let _ = writeln!(out, "{pad}{}", q(s));
        }
    }
}

/// A value compose reads literally: `$` doubled.
fn lit(v: impl AsRef<str>) -> Node {
    Node::Str(v.as_ref().replace('$', "$$"))
}

fn abs(p: &Path, what: &str) -> Result<String, RenderError> {
    if !p.is_absolute() {
        return Err(RenderError(format!(
            "{what} `{}` must be an absolute path inside the container",
            p.display()
        )));
    }
    Ok(p.display().to_string())
}

/// Renders `compose.yaml` and `.env`. `plan` must be built for containers
/// ([`crate::plan::Target::Container`]); `host_secrets` is the host directory holding the
/// secrets (where `chainctl jwt generate` writes them for the same state dir).
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
    let secrets_dir = host_secrets.display().to_string();
    if !host_secrets.is_absolute()
        || secrets_dir
            .chars()
            .any(|c| c.is_whitespace() || c.is_control() || "$#'\"\\".contains(c))
    {
        return Err(RenderError(format!(
            "secrets dir `{secrets_dir}` cannot go into .env: use an absolute --state-dir without spaces, quotes, `$` or `#`"
        )));
    }
    let network = format!("chainctl-{}", plan.profile);
    let publish = match profile.listen.rpc {
        IpAddr::V6(a) => format!("[{a}]"),
        IpAddr::V4(a) => a.to_string(),
    };
    let mut services = Vec::new();
    let mut volumes = Vec::new();
    for svc in &plan.services {
        let (program, args) = svc
            .argv
            .split_first()
            .ok_or_else(|| RenderError(format!("service {} has no command", svc.name)))?;
        let mut m: Vec<(String, Node)> = vec![
            (
                "image".into(),
                lit(svc.image.as_deref().unwrap_or_default()),
            ),
            // The program replaces the image's entrypoint, so an image such as reth's,
            // whose entrypoint is the client, does not run it twice.
            ("entrypoint".into(), Node::List(vec![lit(program)])),
            ("command".into(), Node::List(args.iter().map(lit).collect())),
            (
                "working_dir".into(),
                lit(abs(
                    &svc.workdir,
                    &format!("services.{}.workdir", svc.name),
                )?),
            ),
        ];
        let mut env = vec![("CHAINCTL_SERVICE".to_string(), lit(&svc.name))];
        env.extend(svc.env.iter().map(|(k, v)| (k.clone(), lit(v))));
        m.push(("environment".into(), Node::Map(env)));
        let mut ports = Vec::new();
        for a in svc.ports.values() {
            for (on, proto) in [(a.protocol.tcp(), "tcp"), (a.protocol.udp(), "udp")] {
                if on {
                    ports.push(lit(format!("{publish}:{0}:{0}/{proto}", a.port)));
                }
            }
        }
        if !ports.is_empty() {
            m.push(("ports".into(), Node::List(ports)));
        }
        let volume = format!("{}-data", svc.name);
        let mut mounts = vec![lit(format!("{volume}:{}", abs(&svc.data_dir, "data dir")?))];
        volumes.push((volume, Node::Map(Vec::new())));
        for secret in &svc.secrets {
            let rel = secret
                .strip_prefix(plan.state_dir.join("secrets"))
                .unwrap_or(secret);
            // `${CHAINCTL_SECRETS_DIR}` is the one variable compose should expand.
            let inside = abs(secret, "secret")?.replace('$', "$$");
            mounts.push(Node::Str(format!(
                "${{CHAINCTL_SECRETS_DIR}}/{}:{inside}:ro",
                rel.display().to_string().replace('$', "$$")
            )));
        }
        m.push(("volumes".into(), Node::List(mounts)));
        m.push(("networks".into(), Node::List(vec![lit(&network)])));
        if !svc.depends_on.is_empty() {
            m.push((
                "depends_on".into(),
                Node::List(svc.depends_on.iter().map(lit).collect()),
            ));
        }
        m.push((
            "restart".into(),
            lit(svc.restart.policy.service_manager_word()),
        ));
        m.push(("stop_signal".into(), lit(svc.stop_signal.signal().as_str())));
        m.push((
            "stop_grace_period".into(),
            lit(format!("{}s", svc.stop_grace.get().as_secs().max(1))),
        ));
        m.push((
            "labels".into(),
            Node::Map(vec![
                ("io.chainctl.profile".into(), lit(&plan.profile)),
                ("io.chainctl.service".into(), lit(&svc.name)),
                ("io.chainctl.spec-hash".into(), lit(&svc.spec_hash)),
            ]),
        ));
        services.push((svc.name.clone(), Node::Map(m)));
    }
    let root = Node::Map(vec![
        ("version".into(), Node::Str("3.8".into())),
        ("services".into(), Node::Map(services)),
        (
            "networks".into(),
            Node::Map(vec![(
                network.clone(),
                Node::Map(vec![("name".into(), lit(&network))]),
            )]),
        ),
        ("volumes".into(), Node::Map(volumes)),
    ]);
    let version = env!("CARGO_PKG_VERSION");
    let mut body = format!(
        "# Rendered by chainctl {version} from profile `{}`. Do not edit: change the profile,\n# then run `chainctl render compose` again. Ports are the plan's, published on {publish} only.\n",
        plan.profile
    );
    if plan
        .services
        .iter()
        .flat_map(|s| s.ports.values())
        .any(|a| a.protocol == Protocol::Both)
    {
        body.push_str("# P2P ports are published for TCP and UDP on the same number.\n");
    }
    emit(&mut body, &root, 0);
    Ok(vec![
        File { name: "compose.yaml".into(), contents: body },
        File {
            name: ".env".into(),
            contents: format!(
                "# Rendered by chainctl {version}: values compose.yaml reads.\nCOMPOSE_PROJECT_NAME=chainctl-{}\n# Where `chainctl jwt generate` writes the Engine API secrets for this state dir.\nCHAINCTL_SECRETS_DIR={secrets_dir}\n",
                plan.profile
            ),
        },
    ])
}
