//! `chainctl upgrade SERVICE --image IMAGE`: a rolling change of a client's image under
//! `runtime: swarm` or `docker`, one validator at a time, waiting for each new instance
//! to be healthy before the next, and rolling every step back when one fails.
//!
//! The running image of a service is its profile's, unless an upgrade replaced it: the
//! state dir's `upgrades.json` records `{service: {from, to}}`, and every plan (`up`, each
//! reload) runs `to` in place of `from`. An entry stops applying when the profile itself
//! names another image (the user edited it, e.g. to `to`), so the profile stays the truth.
//! A step is: record the entry, ask the supervisor to reload (it restarts just that
//! service, whose spec changed), then wait until the service runs a new instance that is
//! ready and, for clients the monitor probes, healthy (at the network's head).

use chainctl_core::control::{self, Request};
use chainctl_core::layout::Layout;
use chainctl_core::plan::Plan;
use chainctl_core::status::StatusReport;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// One service's replaced image.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Override {
    /// The profile's image it replaces.
    pub from: String,
    /// The image that runs instead.
    pub to: String,
}

/// `upgrades.json`: service → override.
pub type Overrides = BTreeMap<String, Override>;

/// Where the overrides are kept.
pub fn path(layout: &Layout) -> PathBuf {
    layout.root.join("upgrades.json")
}

/// The overrides (none when the file is missing).
pub fn read(layout: &Layout) -> Result<Overrides, String> {
    let p = path(layout);
    match std::fs::read_to_string(&p) {
        Ok(s) => serde_json::from_str(&s).map_err(|e| {
            format!(
                "{} is damaged ({e}): fix it, or delete it to run every service from its profile's image",
                p.display()
            )
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Overrides::new()),
        Err(e) => Err(format!("cannot read {}: {e}", p.display())),
    }
}

fn write(layout: &Layout, o: &Overrides) -> Result<(), String> {
    let p = path(layout);
    let json = serde_json::to_string_pretty(o).map_err(|e| e.to_string())?;
    chainctl_common::fs::write_atomic(&p, json.as_bytes())
        .map_err(|e| format!("cannot write {}: {e}", p.display()))
}

/// Runs each overridden service from its `to` image (its spec changes with it). Returns
/// the overrides still in force: one whose service is gone, or whose profile now names
/// another image than its `from`, is dropped (the profile is the truth again).
pub fn apply(o: &Overrides, plan: &mut Plan) -> Overrides {
    let mut kept = Overrides::new();
    for svc in &mut plan.services {
        if let Some(ov) = o.get(&svc.name) {
            if svc.image.as_deref() == Some(ov.from.as_str()) {
                svc.image = Some(ov.to.clone());
                svc.depends_on_content(&format!("image {}", ov.to));
                kept.insert(svc.name.clone(), ov.clone());
            }
        }
    }
    kept
}

/// Applies the state dir's overrides to `plan`, forgetting those no longer in force.
pub fn apply_saved(layout: &Layout, plan: &mut Plan) -> Result<(), String> {
    let all = read(layout)?;
    if all.is_empty() {
        return Ok(());
    }
    let kept = apply(&all, plan);
    if kept != all {
        write(layout, &kept)?;
    }
    Ok(())
}

/// The services `target` names, in validator order: one service of the plan, or every
/// execution client of a kind (`builtin`, `reth`, …).
pub fn targets(
    profile: &chainctl_core::profile::Profile,
    services: &[String],
    target: &str,
) -> Result<Vec<String>, String> {
    if services.iter().any(|s| s == target) {
        return Ok(vec![target.to_string()]);
    }
    let v = &profile.validators;
    let els: Vec<String> = (0..v.count)
        .flat_map(|i| chainctl_core::network::els_of(v, i))
        .filter(|(_, k)| chainctl_core::clients::kind_name(*k) == target)
        .map(|(name, _)| name)
        .collect();
    if els.is_empty() {
        return Err(format!(
            "`{target}` is neither a service of this profile nor a client kind its validators run: give a service ({}) or a kind (builtin, reth, geth, erigon)",
            services.join(", ")
        ));
    }
    Ok(els)
}

fn status(layout: &Layout) -> Result<StatusReport, String> {
    let r = control::call(
        &layout.control_socket(),
        &Request::Status,
        Duration::from_secs(30),
    )
    .map_err(|_| {
        format!(
            "no chainctl supervisor is running for state dir {}: start one with `chainctl up`",
            layout.root.display()
        )
    })?;
    r.status.ok_or_else(|| {
        r.error
            .unwrap_or_else(|| "the supervisor gave no status".into())
    })
}

fn reload(layout: &Layout) -> Result<(), String> {
    let r = control::call(
        &layout.control_socket(),
        &Request::Reload,
        Duration::from_secs(30),
    )
    .map_err(|e| format!("cannot ask the supervisor to reload: {e}"))?;
    if r.ok {
        Ok(())
    } else {
        Err(r.error.unwrap_or_else(|| "the supervisor refused".into()))
    }
}

/// Waits until `service` runs a new instance (not `old_pid`) of `image` that is ready
/// and has stayed healthy for `settle` (so the health seen is the new instance's, not
/// the old one's); `Err` with what was seen when it fails, gives up or times out.
fn wait_healthy(
    layout: &Layout,
    service: &str,
    image: &str,
    old_pid: Option<i32>,
    timeout: Duration,
    settle: Duration,
) -> Result<(), String> {
    let t0 = Instant::now();
    let mut healthy_since: Option<Instant> = None;
    let mut restarts_at_new: Option<u32> = None;
    loop {
        let st = status(layout)?;
        let s = st
            .services
            .iter()
            .find(|s| s.name == service)
            .ok_or_else(|| format!("the supervisor no longer runs {service}"))?;
        let last = format!(
            "state {}, health {}{}{}",
            s.state,
            s.health.as_deref().unwrap_or("not probed"),
            s.detail
                .as_deref()
                .map(|d| format!(", {d}"))
                .unwrap_or_default(),
            s.last_exit
                .as_deref()
                .map(|e| format!(", last exit {e}"))
                .unwrap_or_default()
        );
        let new = s.image.as_deref() == Some(image) && s.pid.is_some() && s.pid != old_pid;
        if s.image.as_deref() == Some(image) {
            let base = *restarts_at_new.get_or_insert(s.restarts);
            if s.restarts > base || matches!(s.state.as_str(), "given-up" | "backoff") {
                return Err(last);
            }
        }
        let healthy = matches!(s.state.as_str(), "ready" | "healthy")
            && s.health.as_deref().is_none_or(|h| h == "healthy");
        if new && healthy {
            let since = *healthy_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= settle {
                return Ok(());
            }
        } else {
            healthy_since = None;
        }
        if t0.elapsed() > timeout {
            return Err(format!(
                "not healthy after {} s ({last})",
                timeout.as_secs()
            ));
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// What one step did, for the report and for rolling back.
struct Step {
    service: String,
    /// The override it replaced (None: the profile's image ran).
    before: Option<Override>,
}

/// Sets `service`'s override (or removes it), reloads and waits for health.
fn step(
    layout: &Layout,
    service: &str,
    ov: Option<Override>,
    image: &str,
    timeout: Duration,
    settle: Duration,
) -> Result<(), String> {
    let old_pid = status(layout)?
        .services
        .iter()
        .find(|s| s.name == service)
        .and_then(|s| s.pid);
    let mut all = read(layout)?;
    match ov {
        Some(o) => all.insert(service.to_string(), o),
        None => all.remove(service),
    };
    write(layout, &all)?;
    reload(layout)?;
    wait_healthy(layout, service, image, old_pid, timeout, settle)
}

/// `chainctl upgrade`: checks, then the rolling upgrade of `target` to `image`.
pub fn upgrade(
    profile: &chainctl_core::profile::Profile,
    layout: &Layout,
    target: &str,
    image: &str,
    timeout: Duration,
    out: &mut dyn std::io::Write,
) -> Result<(), String> {
    if !profile.runtime.containers() {
        return Err(format!(
            "`chainctl upgrade --image` replaces container images, and this profile has `runtime: {}`: install the new client binary and `chainctl restart SERVICE` each one instead",
            profile.runtime.name()
        ));
    }
    let (rt, docker) = chainctl_runtime::swarm::connect_engine()?;
    match rt.block_on(docker.inspect_image(image)) {
        Ok(_) => {}
        Err(e) if chainctl_runtime::docker::not_found(&e) => {
            return Err(chainctl_runtime::docker::missing_image(
                image,
                &[target.to_string()],
            ))
        }
        Err(e) => return Err(format!("cannot inspect image `{image}`: {e}")),
    }
    let st = status(layout)?;
    let names: Vec<String> = st.services.iter().map(|s| s.name.clone()).collect();
    let mut list = Vec::new();
    for name in targets(profile, &names, target)? {
        // The profile's own image (the loaded profile has the validators' services).
        let profile_image = profile
            .services
            .get(&name)
            .and_then(|s| s.image.clone())
            .ok_or_else(|| format!("{name} has no image in the profile"))?;
        list.push((name, profile_image));
    }
    // Enough probes after a new instance is ready for a failing one to show it: the
    // monitor calls a client unhealthy after `health.failures` failed probes in a row.
    let h = &profile.health;
    let settle = h.interval.get() * (h.failures + 1);
    run(layout, &list, image, timeout, settle, out)
}

/// The rolling upgrade: `targets` are (service, its profile's image), in order.
fn run(
    layout: &Layout,
    targets: &[(String, String)],
    image: &str,
    timeout: Duration,
    settle: Duration,
    out: &mut dyn std::io::Write,
) -> Result<(), String> {
    let mut done: Vec<Step> = Vec::new();
    for (service, profile_image) in targets {
        // An override that no longer applies (the profile names another image) is gone.
        let before = read(layout)?
            .get(service)
            .filter(|o| &o.from == profile_image)
            .cloned();
        let running = before
            .as_ref()
            .map(|o| o.to.clone())
            .unwrap_or_else(|| profile_image.clone());
        if running == image {
            let _ = writeln!(out, "{service}: already runs {image}");
            continue;
        }
        let ov = (image != profile_image).then(|| Override {
            from: profile_image.clone(),
            to: image.to_string(),
        });
        let t0 = Instant::now();
        let _ = writeln!(out, "{service}: {running} -> {image} ...");
        match step(layout, service, ov, image, timeout, settle) {
            Ok(()) => {
                let _ = writeln!(
                    out,
                    "{service}: healthy on {image} after {:.1} s",
                    t0.elapsed().as_secs_f64()
                );
                done.push(Step {
                    service: service.clone(),
                    before,
                });
            }
            Err(why) => {
                let _ = writeln!(out, "{service}: FAILED on {image}: {why}; rolling back");
                done.push(Step {
                    service: service.clone(),
                    before,
                });
                let mut rollback_errors = Vec::new();
                for s in done.iter().rev() {
                    let img = s.before.as_ref().map(|o| o.to.clone()).unwrap_or_else(|| {
                        targets
                            .iter()
                            .find(|(n, _)| n == &s.service)
                            .map(|(_, i)| i.clone())
                            .unwrap_or_default()
                    });
                    match step(layout, &s.service, s.before.clone(), &img, timeout, settle) {
                        Ok(()) => {
                            let _ = writeln!(out, "{}: rolled back to {img}, healthy", s.service);
                        }
                        Err(e) => rollback_errors.push(format!("{} on {img}: {e}", s.service)),
                    }
                }
                let mut msg = format!(
                    "the upgrade of {service} to {image} failed ({why}); every service it changed was rolled back"
                );
                if !rollback_errors.is_empty() {
                    msg = format!(
                        "{msg}, but some are not healthy again: {} — see `chainctl status` and `chainctl logs SERVICE`",
                        rollback_errors.join("; ")
                    );
                } else {
                    msg.push_str(&format!(
                        ": see `chainctl logs {service}` for why {image} did not become healthy"
                    ));
                }
                return Err(msg);
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_override_applies_only_while_the_profile_names_its_from_image() {
        let mut o = Overrides::new();
        o.insert(
            "el".into(),
            Override {
                from: "chainctl:1".into(),
                to: "chainctl:2".into(),
            },
        );
        let plan_with = |image: &str| {
            let loaded = chainctl_core::loader::load(chainctl_core::profile::Source {
                label: "t.yaml".into(),
                path: None,
                text: format!(
                    "name: t\nruntime: docker\nservices:\n  el: {{command: [x], image: \"{image}\"}}\n"
                ),
            })
            .unwrap();
            chainctl_core::plan::build(
                &loaded.profile,
                &Layout::new("/nonexistent"),
                &chainctl_core::ports::Allocation::new(),
                std::path::Path::new("/"),
            )
            .unwrap()
        };
        let mut plan = plan_with("chainctl:1");
        let before = plan.services[0].spec_hash.clone();
        assert_eq!(apply(&o, &mut plan), o);
        assert_eq!(plan.services[0].image.as_deref(), Some("chainctl:2"));
        assert_ne!(plan.services[0].spec_hash, before);
        // The user edited the profile to another image: it wins.
        let mut edited = plan_with("chainctl:3");
        assert!(apply(&o, &mut edited).is_empty(), "dropped");
        assert_eq!(edited.services[0].image.as_deref(), Some("chainctl:3"));
    }
}
