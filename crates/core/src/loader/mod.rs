//! Loading a profile: parse it (with line and column for every problem), check what can
//! be checked without running anything, and add the services its `validators` section
//! generates; then, separately, check the host (programs, client versions, TLS files).
//!
//! It sits above the profile's types, the client adapters, the topology and the port
//! rules, because validation asks each of them.

mod validate;

use std::collections::BTreeMap;
use std::path::Path;

use crate::clients;
use crate::network::{chainctl_image, els_of, validator_name};
use crate::profile::locate::Index;
use crate::profile::{
    CommandService, ExecutionKind, Loaded, PortSpec, Problem, Profile, ProfileError, Source,
};

/// Parses and validates a profile (no I/O: binaries are checked by [`check_binaries`]).
pub fn load(source: Source) -> Result<Loaded, ProfileError> {
    let err = |problems: Vec<Problem>| ProfileError {
        file: source.label.clone(),
        problems,
    };
    if source.text.trim().is_empty() {
        return Err(err(vec![Problem {
            pos: None,
            message: "the profile is empty: it needs at least `name:` and one service".into(),
        }]));
    }
    let index = Index::build(&source.text);
    if !index.duplicates.is_empty() {
        let problems = index
            .duplicates
            .iter()
            .map(|(path, again, first)| Problem {
                pos: Some(*again),
                message: format!(
                    "{path}: duplicate key (first defined at line {}); every name must be unique, rename or remove one",
                    first.line
                ),
            })
            .collect();
        return Err(err(problems));
    }
    let profile: Profile = serde_yaml::from_str(&source.text)
        .map_err(|e| err(vec![crate::profile::serde_problem(&e)]))?;
    let mut problems = validate::validate(&profile, &index);
    problems.sort_by_key(|p| p.pos.map(|p| (p.line, p.col)));
    if !problems.is_empty() {
        return Err(err(problems));
    }
    let mut profile = profile;
    expand(&mut profile);
    crate::profile::resolve_paths(&mut profile, &source);
    Ok(Loaded {
        profile,
        source,
        index,
    })
}

/// Add the generated services of the validators to the profile: each execution client
/// from its adapter ([`crate::clients`]), then the validator that drives them.
pub fn expand(p: &mut Profile) {
    let v = p.validators.clone();
    let all_els: Vec<String> = (0..v.count)
        .flat_map(|i| els_of(&v, i).into_iter().map(|(n, _)| n))
        .collect();
    let external: Vec<String> = clients::p2p::external_els(p)
        .into_iter()
        .map(|(n, _)| n)
        .collect();
    for i in 0..v.count {
        let els = els_of(&v, i);
        for (el, kind) in &els {
            let peers: Vec<String> = all_els.iter().filter(|o| *o != el).cloned().collect();
            let tx_sources: Vec<String> = external.iter().filter(|o| *o != el).cloned().collect();
            let p2p_peers = tx_sources.len();
            let settings = v.clients.of(*kind);
            let binary = clients::binary_of(&v.clients, *kind);
            let ctx = clients::ElContext {
                name: el,
                peers: &peers,
                p2p_peers,
                tx_sources: &tx_sources,
                binary: &binary,
                extra_args: settings.map(|c| c.args.as_slice()).unwrap_or(&[]),
                image: settings.and_then(|c| c.image.clone()),
            };
            p.services.insert(el.clone(), clients::service(*kind, &ctx));
        }
        p.services.insert(
            validator_name(i),
            CommandService {
                command: [
                    "{{chainctl}}",
                    "node",
                    "consensus",
                    "--home",
                    "{{data_dir}}",
                ]
                .map(String::from)
                .to_vec(),
                env: BTreeMap::new(),
                workdir: None,
                ports: [("p2p", PortSpec::AUTO_TCP), ("status", PortSpec::AUTO_TCP)]
                    .into_iter()
                    .map(|(k, v)| (k.to_string(), v))
                    .collect(),
                depends_on: Vec::new(),
                drives: els.into_iter().map(|(n, _)| n).collect(),
                ready_ports: Some(vec!["status".into()]),
                restart: Default::default(),
                stop: None,
                startup_grace: None,
                image: Some(chainctl_image()),
                jit: false,
            },
        );
    }
}

/// The external execution clients the validators run, with the binary each runs.
pub fn external_clients(loaded: &Loaded) -> Vec<(ExecutionKind, String)> {
    let v = &loaded.profile.validators;
    if v.count == 0 {
        return Vec::new();
    }
    v.execution
        .kinds()
        .into_iter()
        .filter(|k| *k != ExecutionKind::Builtin)
        .map(|k| (k, clients::binary_of(&v.clients, k)))
        .collect()
}

/// Checks that every `command` names a program that exists and is executable, that every
/// external execution client is installed in a version known to work, and that the API's
/// TLS files load.
pub fn check_binaries(loaded: &Loaded) -> Result<(), ProfileError> {
    check_host(loaded, true)
}

/// What [`check_binaries`] checks, with or without the execution clients (`doctor`
/// checks those itself, to print each version found).
pub fn check_host(loaded: &Loaded, with_clients: bool) -> Result<(), ProfileError> {
    let base = loaded
        .source
        .path
        .as_deref()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."));
    let mut problems = Vec::new();
    // Under `runtime: docker` programs and working dirs are inside the images.
    let on_host = !loaded.profile.runtime.containers();
    for (name, svc) in loaded.profile.services.iter().filter(|_| on_host) {
        if let Some(w) = &svc.workdir {
            let dir = if w.is_relative() {
                base.join(w)
            } else {
                w.clone()
            };
            if !dir.is_dir() {
                let field = format!("services.{name}.workdir");
                problems.push(Problem {
                    pos: loaded.index.value(&field),
                    message: format!(
                        "{field}: `{}` is not a directory: create it or fix the path",
                        dir.display()
                    ),
                });
            }
        }
        let Some(program) = svc.command.first() else {
            continue;
        };
        if program.contains("{{") {
            continue; // resolved at plan time; checked when the service starts
        }
        if let Err(why) = crate::profile::resolve_program(program, base) {
            let field = format!("services.{name}.command[0]");
            problems.push(Problem {
                pos: loaded.index.value(&field),
                message: format!("{field}: {why}"),
            });
        }
    }
    // External execution clients: installed, and of a version known to work.
    for (kind, binary) in external_clients(loaded)
        .into_iter()
        .filter(|_| on_host && with_clients)
    {
        if let Err(e) = clients::version::check(kind, &binary) {
            problems.push(Problem {
                pos: loaded.index.value("validators.execution"),
                message: format!("validators.execution: {e}"),
            });
        }
    }
    for (setting, tls) in [
        ("api.tls", &loaded.profile.api.tls),
        ("gateway.tls", &loaded.profile.gateway.tls),
    ] {
        let Some(tls) = tls else { continue };
        // Load exactly what will be served, so a bad file stops `up` before anything
        // starts rather than leaving a network without its API or gateway.
        if let Err(why) = chainctl_common::tls::server_config(setting, &tls.cert, &tls.key) {
            let field = if why.starts_with(&format!("{setting}.key")) {
                format!("{setting}.key")
            } else {
                format!("{setting}.cert")
            };
            problems.push(Problem {
                pos: loaded.index.value(&field),
                message: why,
            });
        }
    }
    if let Some(key) = &loaded.profile.report.canary_key {
        if let Err(why) = crate::network::key_file_signer(key) {
            problems.push(Problem {
                pos: loaded.index.value("report.canary_key"),
                message: format!("report.canary_key: {why}"),
            });
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(ProfileError {
            file: loaded.source.label.clone(),
            problems,
        })
    }
}
