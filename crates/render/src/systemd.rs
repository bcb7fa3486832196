//! systemd units from the plan: one hardened `.service` per service, a `.target` that
//! groups them, and a sysusers.d entry for the user they run as. Templates live in
//! `templates/systemd/`; quoting for systemd's command-line and environment syntax is
//! done here, so no value can break out of its field.

use super::{File, RenderError};
use chainctl_core::plan::{Plan, ServicePlan};
use handlebars::Handlebars;
use serde_json::json;
use std::path::Path;

const SERVICE: &str = include_str!("../../../templates/systemd/service.hbs");
const TARGET: &str = include_str!("../../../templates/systemd/target.hbs");
const SYSUSERS: &str = include_str!("../../../templates/systemd/sysusers.hbs");
const BACKUP_SERVICE: &str = include_str!("../../../templates/systemd/backup.service.hbs");
const BACKUP_TIMER: &str = include_str!("../../../templates/systemd/backup.timer.hbs");

/// Scheduled backups of a network under systemd: what the timer runs.
pub struct BackupJob<'a> {
    pub schedule: &'a chainctl_core::profile::BackupSchedule,
    /// The chainctl binary the unit runs.
    pub chainctl: &'a str,
    /// The profile file (`None`: the embedded default).
    pub profile_file: Option<&'a Path>,
}

/// A oneshot `chainctl backup` unit and the timer that runs it at `backup.every` (no
/// supervisor runs under systemd to schedule them).
pub fn backup_units(plan: &Plan, user: &str, job: &BackupJob) -> Result<Vec<File>, RenderError> {
    let mut hb = Handlebars::new();
    hb.set_strict_mode(true);
    hb.register_escape_fn(handlebars::no_escape);
    for (name, t) in [("service", BACKUP_SERVICE), ("timer", BACKUP_TIMER)] {
        hb.register_template_string(name, t)
            .map_err(|e| RenderError(format!("template backup {name}: {e}")))?;
    }
    let s = job.schedule;
    let to = unit_path(&s.to, "backup.to")?;
    let state_dir = unit_path(&plan.state_dir, "the state dir")?;
    let mut words = vec![quote_program(job.chainctl)?];
    if let Some(f) = job.profile_file {
        words.push(quote_exec("--profile"));
        words.push(quote_exec(&f.display().to_string()));
    }
    for w in [
        "--state-dir",
        &plan.state_dir.display().to_string(),
        "backup",
        "--to",
        &s.to.display().to_string(),
        "--keep",
        &s.keep.to_string(),
    ] {
        words.push(quote_exec(w));
    }
    if !s.recipients.is_empty() {
        words.push(quote_exec("--include-secrets"));
        for r in &s.recipients {
            words.push(quote_exec("--recipient"));
            words.push(quote_exec(r));
        }
    }
    let service = unit_name(&plan.profile, "backup");
    let timer = service.replace(".service", ".timer");
    let data = json!({
        "version": env!("CARGO_PKG_VERSION"),
        "profile": plan.profile,
        "target": target_name(&plan.profile),
        "user": user,
        "to": to,
        "state_dir": state_dir,
        "every": humantime::format_duration(s.every.get()).to_string(),
        "every_secs": s.every.get().as_secs(),
        "exec_start": words.join(" "),
        "service": service,
        "timer": timer,
    });
    let render = |name: &str| {
        hb.render(name, &data)
            .map_err(|e| RenderError(format!("template backup {name}: {e}")))
    };
    Ok(vec![
        File {
            name: service.clone(),
            contents: render("service")?,
        },
        File {
            name: timer.clone(),
            contents: render("timer")?,
        },
    ])
}

/// The unit name of a service.
pub fn unit_name(profile: &str, service: &str) -> String {
    format!("chainctl-{profile}-{service}.service")
}

/// The target that groups a profile's units.
pub fn target_name(profile: &str) -> String {
    format!("chainctl-{profile}.target")
}

/// Quotes a word inside double quotes as systemd.syntax(7) reads it: `\\` and `"` escaped,
/// control characters as `\xNN` (a raw newline, CR or NUL would end the line and let a
/// value write a directive of its own), `%` (specifiers) doubled.
fn quote(word: &str, dollar: bool) -> String {
    let mut s = String::from("\"");
    for c in word.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '%' => s.push_str("%%"),
            '$' if dollar => s.push_str("$$"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                s.push_str(&format!("\\x{:02x}", c as u32))
            }
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

/// Quotes one argument for `ExecStart=` (`$` doubled: systemd expands variables there).
pub fn quote_exec(word: &str) -> String {
    quote(word, true)
}

/// Quotes the program of `ExecStart=`. systemd reads `-`, `@`, `+`, `!` and `:` at its
/// start as flags even inside quotes (`+` would drop every sandboxing setting), so a
/// program must start with `/` or a plain character; it is not variable-expanded.
pub fn quote_program(program: &str) -> Result<String, RenderError> {
    match program.chars().next() {
        Some(c) if c == '/' || c == '.' || c == '_' || c.is_ascii_alphanumeric() => Ok(quote(program, false)),
        _ => Err(RenderError(format!(
            "program `{program}` starts with a character systemd reads as an ExecStart= flag: give a path or a plain name"
        ))),
    }
}

/// Quotes a `KEY=value` assignment for `Environment=` (no `$` expansion there).
pub fn quote_env(key: &str, value: &str) -> String {
    quote(&format!("{key}={value}"), false)
}

/// A duration as systemd reads it, rounded up to whole milliseconds (never 0, which
/// would mean "no limit" for TimeoutStopSec= and StartLimitIntervalSec=).
fn span(d: std::time::Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs().max(1))
    } else {
        format!("{}ms", d.as_nanos().div_ceil(1_000_000))
    }
}

/// A path for `WorkingDirectory=`/`ReadWritePaths=`/`StateDirectory=`: absolute (or
/// relative to /var/lib for StateDirectory), no whitespace or control characters (these
/// settings split on whitespace), `%` doubled.
fn unit_path(p: &Path, what: &str) -> Result<String, RenderError> {
    let s = p.display().to_string();
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(RenderError(format!(
            "{what} `{s}` contains whitespace or control characters, which unit files cannot hold"
        )));
    }
    Ok(s.replace('%', "%%"))
}

/// Renders every file for `plan`, whose state dir must be where the units will find it.
pub fn render(plan: &Plan, user: &str) -> Result<Vec<File>, RenderError> {
    let root = &plan.state_dir;
    let hidden = [
        ("/home", "ProtectHome=yes"),
        ("/root", "ProtectHome=yes"),
        ("/run/user", "ProtectHome=yes"),
        ("/tmp", "PrivateTmp=yes"),
        ("/var/tmp", "PrivateTmp=yes"),
    ];
    if let Some((_, by)) = hidden.iter().find(|(p, _)| root.starts_with(p)) {
        return Err(RenderError(format!(
            "state dir {} is hidden from the units by {by}: render with --state-dir under /var/lib (default /var/lib/chainctl/{})",
            root.display(),
            plan.profile
        )));
    }
    if !root.is_absolute() {
        return Err(RenderError(format!(
            "state dir {} must be absolute for systemd units",
            root.display()
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
            contents: render("service", unit_data(plan, s, user, &target, version)?)?,
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
) -> Result<serde_json::Value, RenderError> {
    let state_directory = match s.data_dir.strip_prefix("/var/lib") {
        Ok(p) => Some(unit_path(p, "data dir")?),
        Err(_) => None,
    };
    let (program, args) = s
        .argv
        .split_first()
        .ok_or_else(|| RenderError(format!("service {} has no command", s.name)))?;
    let hidden = ["/home/", "/root/", "/run/user/", "/tmp/", "/var/tmp/"];
    // An external client runs through `chainctl client-exec … -- INIT… CLIENT…`: its
    // programs must be visible too.
    let programs = chainctl_core::clients::programs_of(&s.argv);
    for prog in programs {
        if let Some(h) = hidden.iter().find(|h| prog.starts_with(*h)) {
            return Err(RenderError(format!(
                "service {}: its program {prog} is under {h}, which the units' ProtectHome=/PrivateTmp= hide from it: install it under /usr/local/bin (or /opt) and render again",
                s.name
            )));
        }
    }
    // chainctl's own node roles speak sd_notify.
    let notify = args.first().map(String::as_str) == Some("node")
        && Path::new(program)
            .file_name()
            .is_some_and(|n| n == "chainctl");
    let mut exec = vec![quote_program(program)?];
    exec.extend(args.iter().map(|a| quote_exec(a)));
    let mut env: Vec<String> = vec![quote_env("CHAINCTL_SERVICE", &s.name)];
    env.extend(s.env.iter().map(|(k, v)| quote_env(k, v)));
    let codes = |c: &[i64]| {
        c.iter()
            .map(|c| c.to_string())
            .collect::<Vec<_>>()
            .join(" ")
    };
    Ok(json!({
        "version": version,
        "profile": plan.profile,
        "name": s.name,
        "target": target,
        "user": user,
        "requires": s.depends_on.iter().map(|d| unit_name(&plan.profile, d)).collect::<Vec<_>>(),
        "start_limit_interval": span(s.restart.give_up.window.get()),
        "start_limit_burst": s.restart.give_up.failures,
        "exec_start": exec.join(" "),
        "workdir": unit_path(&s.workdir, "workdir")?,
        "env": env,
        "state_directory": state_directory,
        "data_dir": unit_path(&s.data_dir, "data dir")?,
        "restart": s.restart.policy.service_manager_word(),
        "restart_sec": span(s.restart.backoff.initial.get()),
        "success_exit_status": codes(&s.restart.success_exit_codes),
        "restart_prevent_exit_status": codes(&s.restart.prevent_exit_codes),
        "kill_signal": s.stop_signal.signal().as_str(),
        "timeout_stop": span(s.stop_grace.get()),
        "memory_deny_write_execute": !s.jit,
        "notify": notify,
    }))
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
        assert_eq!(quote_exec("a;b"), "\"a;b\"");
        assert_eq!(
            quote_env("URL", "http://h:1/$x%"),
            "\"URL=http://h:1/$x%%\""
        );
        // A CR, LF or NUL would end the line: they become \xNN escapes.
        assert_eq!(
            quote_env("A", "x\rUser=root\n\0"),
            r#""A=x\x0dUser=root\x0a\x00""#
        );
    }

    #[test]
    fn programs_cannot_carry_execstart_flags() {
        for bad in [
            "+/bin/sh", "-/bin/sh", "@/bin/sh", "!/bin/sh", ":/bin/sh", "",
        ] {
            assert!(quote_program(bad).is_err(), "{bad}");
        }
        assert_eq!(
            quote_program("/opt/$x/reth").unwrap(),
            "\"/opt/$x/reth\"",
            "no $ expansion in the program"
        );
        assert_eq!(quote_program("python3").unwrap(), "\"python3\"");
    }

    #[test]
    fn spans_never_round_to_zero() {
        assert_eq!(span(std::time::Duration::from_micros(10)), "1ms");
        assert_eq!(span(std::time::Duration::ZERO), "1s");
        assert_eq!(span(std::time::Duration::from_millis(1500)), "1500ms");
    }
}
