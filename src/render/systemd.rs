//! systemd units from the plan: one hardened `.service` per service, a `.target` that
//! groups them, and a sysusers.d entry for the user they run as. Templates live in
//! `templates/systemd/`; quoting for systemd's command-line and environment syntax is
//! done here, so no value can break out of its field.

use super::{File, RenderError};
use crate::plan::{Plan, ServicePlan};
use crate::profile::{RestartPolicy, StopSignal};
use handlebars::Handlebars;
use serde_json::json;
use std::path::Path;

const SERVICE: &str = include_str!("../../templates/systemd/service.hbs");
const TARGET: &str = include_str!("../../templates/systemd/target.hbs");
const SYSUSERS: &str = include_str!("../../templates/systemd/sysusers.hbs");

/// The unit name of a service.
pub fn unit_name(profile: &str, service: &str) -> String {
    format!("chainctl-{profile}-{service}.service")
}

/// The target that groups a profile's units.
pub fn target_name(profile: &str) -> String {
    format!("chainctl-{profile}.target")
}

/// Quotes one word for `ExecStart=`: inside double quotes, `\` and `"` are escaped, `%`
/// (specifiers) becomes `%%` and `$` (variable expansion) becomes `$$`.
pub fn quote_exec(word: &str) -> String {
    let mut s = String::from("\"");
    for c in word.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '%' => s.push_str("%%"),
            '$' => s.push_str("$$"),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// Quotes a `KEY=value` assignment for `Environment=` (no `$` expansion there).
pub fn quote_env(key: &str, value: &str) -> String {
    quote_exec(&format!("{key}={value}")).replace("$$", "$")
}

/// A duration as systemd reads it.
fn span(d: std::time::Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Renders every file for `plan`, whose state dir must be where the units will find it.
pub fn render(plan: &Plan, user: &str) -> Result<Vec<File>, RenderError> {
    let root = &plan.state_dir;
    if root.starts_with("/home") || root.starts_with("/root") || root.starts_with("/run/user") {
        return Err(RenderError(format!(
            "state dir {} is hidden from the units by ProtectHome=yes: render with --state-dir under /var/lib (default /var/lib/chainctl/{})",
            root.display(),
            plan.profile
        )));
    }
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(handlebars::no_escape);
    for (name, t) in [
        ("service", SERVICE),
        ("target", TARGET),
        ("sysusers", SYSUSERS),
    ] {
        hb.register_template_string(name, t)
            .map_err(|e| RenderError(format!("template {name}: {e}")))?;
    }
    let version = env!("CARGO_PKG_VERSION");
    let target = target_name(&plan.profile);
    let render = |name: &str, data: serde_json::Value| {
        hb.render(name, &data)
            .map_err(|e| RenderError(format!("template {name}: {e}")))
    };
    let mut files = Vec::new();
    for s in &plan.services {
        files.push(File {
            name: unit_name(&plan.profile, &s.name),
            contents: render("service", unit_data(plan, s, user, &target, version))?,
        });
    }
    let units: Vec<String> = plan
        .services
        .iter()
        .map(|s| unit_name(&plan.profile, &s.name))
        .collect();
    files.push(File {
        name: target.clone(),
        contents: render(
            "target",
            json!({"version": version, "profile": plan.profile, "target": target, "units": units}),
        )?,
    });
    files.push(File {
        name: "chainctl.sysusers.conf".into(),
        contents: render("sysusers", json!({"version": version, "user": user}))?,
    });
    Ok(files)
}

fn unit_data(
    plan: &Plan,
    s: &ServicePlan,
    user: &str,
    target: &str,
    version: &str,
) -> serde_json::Value {
    let state_directory = s
        .data_dir
        .strip_prefix("/var/lib")
        .ok()
        .map(|p| p.display().to_string());
    let mut env: Vec<String> = vec![quote_env("CHAINCTL_SERVICE", &s.name)];
    env.extend(s.env.iter().map(|(k, v)| quote_env(k, v)));
    let codes = |c: &[i64]| {
        c.iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    json!({
        "version": version,
        "profile": plan.profile,
        "name": s.name,
        "target": target,
        "user": user,
        "requires": s.depends_on.iter().map(|d| unit_name(&plan.profile, d)).collect::<Vec<_>>(),
        "start_limit_interval": span(s.restart.give_up.window.get()),
        "start_limit_burst": s.restart.give_up.failures,
        "exec_start": s.argv.iter().map(|a| quote_exec(a)).collect::<Vec<_>>().join(" "),
        "workdir": quote_path(&s.workdir),
        "env": env,
        "state_directory": state_directory,
        "data_dir": quote_path(&s.data_dir),
        "restart": match s.restart.policy {
            RestartPolicy::Always => "always",
            RestartPolicy::OnFailure => "on-failure",
            RestartPolicy::Never => "no",
        },
        "restart_sec": span(s.restart.backoff.initial.get()),
        "success_exit_status": codes(&s.restart.success_exit_codes),
        "restart_prevent_exit_status": codes(&s.restart.prevent_exit_codes),
        "kill_signal": match s.stop_signal {
            StopSignal::Term => "SIGTERM",
            StopSignal::Int => "SIGINT",
            StopSignal::Quit => "SIGQUIT",
            StopSignal::Hup => "SIGHUP",
        },
        "timeout_stop": span(s.stop_grace.get()),
        "memory_deny_write_execute": !s.jit,
    })
}

/// Paths in `WorkingDirectory=`/`ReadWritePaths=` take no quotes; `%` still needs escaping.
fn quote_path(p: &Path) -> String {
    p.display().to_string().replace('%', "%%")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exec_words_cannot_break_out() {
        assert_eq!(quote_exec(r#"a "b" c"#), r#""a \"b\" c""#);
        assert_eq!(quote_exec("50%"), "\"50%%\"");
        assert_eq!(quote_exec("$HOME"), "\"$$HOME\"");
        assert_eq!(quote_exec(r"C:\x"), r#""C:\\x""#);
        assert_eq!(
            quote_env("URL", "http://h:1/$x%"),
            "\"URL=http://h:1/$x%%\""
        );
    }
}
