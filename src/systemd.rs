//! `chainctl systemd install|uninstall|status|restart`: puts the rendered units where
//! systemd reads them and drives them through `systemctl`. It runs `daemon-reload`
//! itself whenever a unit file changed (and says so), restarts only the services whose
//! unit changed, and reports drift: a unit on disk that differs from what the profile
//! renders.

use anyhow::{bail, Context as _, Result};
use chainctl_render::{systemd as units, File};
use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// Where units are installed by default.
pub const UNIT_DIR: &str = "/etc/systemd/system";
/// Where the sysusers.d entry goes.
pub const SYSUSERS_DIR: &str = "/etc/sysusers.d";

fn systemctl(args: &[&str]) -> Result<String> {
    let out = Command::new("systemctl")
        .args(args)
        .output()
        .context("cannot run systemctl: this command needs a host where systemd is PID 1")?;
    if !out.status.success() {
        bail!(
            "systemctl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// How the files on disk compare with what the profile renders.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Drift {
    /// Rendered, not on disk.
    pub missing: Vec<String>,
    /// On disk with other contents.
    pub changed: Vec<String>,
    /// On disk for this profile, no longer rendered.
    pub stale: Vec<String>,
}

impl Drift {
    /// Whether disk and profile agree.
    pub fn is_empty(&self) -> bool {
        self.missing.is_empty() && self.changed.is_empty() && self.stale.is_empty()
    }
}

/// Compares rendered unit files with `dir`.
pub fn drift(profile: &str, files: &[File], dir: &Path) -> Drift {
    let mut d = Drift::default();
    for f in files.iter().filter(|f| is_unit(&f.name)) {
        match std::fs::read_to_string(dir.join(&f.name)) {
            Err(_) => d.missing.push(f.name.clone()),
            Ok(old) if old != f.contents => d.changed.push(f.name.clone()),
            Ok(_) => {}
        }
    }
    let prefix = format!("chainctl-{profile}-");
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.starts_with(&prefix)
                && (name.ends_with(".service") || name.ends_with(".timer"))
                && !files.iter().any(|f| f.name == name)
            {
                d.stale.push(name);
            }
        }
    }
    d.stale.sort();
    d
}

fn is_unit(name: &str) -> bool {
    name.ends_with(".service") || name.ends_with(".target") || name.ends_with(".timer")
}

/// Numeric uid and gid of a user, from /etc/passwd.
fn ids(user: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.first() == Some(&user))
            .then(|| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?)))
            .flatten()
    })
}

/// What `install` needs besides the rendered files.
pub struct Install<'a> {
    /// Profile name.
    pub profile: &'a str,
    /// Rendered files (units, target, sysusers entry).
    pub files: &'a [File],
    /// The JWT secret files the units read.
    pub secrets: &'a [PathBuf],
    /// Files and directories chainctl wrote for the units (validators' genesis, keys,
    /// configs): made the user's, recursively.
    pub owned: &'a [PathBuf],
    /// The state dir the units use (owned by the user).
    pub state_dir: &'a Path,
    /// The user units run as.
    pub user: &'a str,
    /// Unit directory.
    pub unit_dir: &'a Path,
    /// Start (or restart changed) units after installing.
    pub start: bool,
}

/// `chown -R`, without following symbolic links.
fn chown_tree(p: &Path, uid: u32, gid: u32) -> Result<()> {
    let meta = match std::fs::symlink_metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", p.display())),
    };
    std::os::unix::fs::lchown(p, Some(uid), Some(gid))
        .with_context(|| format!("cannot chown {}", p.display()))?;
    if meta.is_dir() {
        for e in std::fs::read_dir(p).with_context(|| format!("cannot read {}", p.display()))? {
            chown_tree(&e?.path(), uid, gid)?;
        }
    }
    Ok(())
}

/// Installs and starts; returns the lines to print.
pub fn install(i: &Install) -> Result<Vec<String>> {
    let mut say = Vec::new();
    // 1. The user, through systemd-sysusers.
    if let Some(f) = i.files.iter().find(|f| f.name.ends_with(".sysusers.conf")) {
        std::fs::create_dir_all(SYSUSERS_DIR)?;
        let path = Path::new(SYSUSERS_DIR).join("chainctl.conf");
        std::fs::write(&path, &f.contents)
            .with_context(|| format!("cannot write {}", path.display()))?;
        let st = Command::new("systemd-sysusers")
            .arg(&path)
            .status()
            .context("cannot run systemd-sysusers")?;
        if !st.success() {
            bail!("systemd-sysusers {} failed", path.display());
        }
    }
    let (uid, gid) = ids(i.user)
        .with_context(|| format!("user `{}` does not exist after systemd-sysusers", i.user))?;
    // 2. The state dir belongs to the user (0700); its parent stays traversable, as
    //    systemd's StateDirectory= creates the data dirs beneath it.
    if let Some(parent) = i.state_dir.parent() {
        if !parent.exists() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
            std::fs::set_permissions(parent, std::fs::Permissions::from_mode(0o755))?;
        }
    }
    chainctl_common::fs::private_dir(i.state_dir)
        .with_context(|| format!("cannot create {}", i.state_dir.display()))?;
    std::os::unix::fs::chown(i.state_dir, Some(uid), Some(gid))
        .with_context(|| format!("cannot chown {}", i.state_dir.display()))?;
    // 3. Secrets: one per pair, 0600, owned by the user (its dirs 0700).
    for s in i.secrets {
        chainctl_common::secrets::ensure(s)
            .with_context(|| format!("cannot write {}", s.display()))?;
        for p in [
            Some(s.as_path()),
            s.parent(),
            s.parent().and_then(Path::parent),
        ]
        .into_iter()
        .flatten()
        {
            std::os::unix::fs::chown(p, Some(uid), Some(gid))
                .with_context(|| format!("cannot chown {}", p.display()))?;
        }
    }
    for p in i.owned {
        chown_tree(p, uid, gid)?;
    }
    // 4. Unit files: stop and remove units dropped from the profile, write changed ones.
    let d = drift(i.profile, i.files, i.unit_dir);
    for stale in &d.stale {
        let _ = systemctl(&["disable", "--now", stale]);
        std::fs::remove_file(i.unit_dir.join(stale))?;
        say.push(format!("removed {stale} (no longer in the profile)"));
    }
    for f in i.files.iter().filter(|f| is_unit(&f.name)) {
        if d.missing.contains(&f.name) || d.changed.contains(&f.name) {
            let path = i.unit_dir.join(&f.name);
            std::fs::write(&path, &f.contents)
                .with_context(|| format!("cannot write {}", path.display()))?;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644))?;
            say.push(format!(
                "{} {}",
                if d.missing.contains(&f.name) {
                    "wrote  "
                } else {
                    "updated"
                },
                path.display()
            ));
        }
    }
    // 5. systemd only sees changed files after a reload: never leave that to the user.
    if d.is_empty() {
        say.push("unit files unchanged: no daemon-reload needed".into());
    } else {
        systemctl(&["daemon-reload"])?;
        say.push("unit files changed: ran `systemctl daemon-reload`".into());
    }
    let target = units::target_name(i.profile);
    systemctl(&["enable", &target])?;
    // Scheduled backups (`backup:`): their timer, started with the network.
    for t in i.files.iter().filter(|f| f.name.ends_with(".timer")) {
        if i.start {
            systemctl(&["enable", "--now", &t.name])?;
            say.push(format!("enabled and started {}", t.name));
        } else {
            systemctl(&["enable", &t.name])?;
        }
    }
    if i.start {
        // A changed service restarts alone; the target starts whatever is not running.
        let changed: Vec<&str> = d
            .changed
            .iter()
            .map(String::as_str)
            .filter(|n| n.ends_with(".service"))
            .collect();
        if !changed.is_empty() {
            let mut args = vec!["try-restart"];
            args.extend(&changed);
            systemctl(&args)?;
            say.push(format!("restarted {}", changed.join(", ")));
        }
        systemctl(&["start", &target])?;
        say.push(format!("enabled and started {target}"));
    }
    Ok(say)
}

/// Stops, disables and removes every unit of the profile.
pub fn uninstall(profile: &str, unit_dir: &Path) -> Result<Vec<String>> {
    let mut say = Vec::new();
    let target = units::target_name(profile);
    let prefix = format!("chainctl-{profile}-");
    let mut names: Vec<String> = std::fs::read_dir(unit_dir)
        .map(|r| {
            r.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| {
                    n.starts_with(&prefix) && (n.ends_with(".service") || n.ends_with(".timer"))
                })
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    if unit_dir.join(&target).exists() {
        names.push(target);
    }
    if names.is_empty() {
        say.push(format!(
            "no unit of profile {profile} in {}",
            unit_dir.display()
        ));
        return Ok(say);
    }
    let mut args = vec!["disable", "--now"];
    args.extend(names.iter().map(String::as_str));
    systemctl(&args)?;
    for n in &names {
        std::fs::remove_file(unit_dir.join(n))?;
        say.push(format!("removed {n}"));
    }
    systemctl(&["daemon-reload"])?;
    say.push("ran `systemctl daemon-reload`".into());
    Ok(say)
}

/// One unit's live state, from `systemctl show`.
pub fn show(unit: &str) -> Result<BTreeMap<String, String>> {
    let out = systemctl(&["show", unit, "--property=ActiveState,SubState,MainPID,NRestarts,ExecMainStatus,NeedDaemonReload,UnitFileState"])?;
    Ok(out
        .lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect())
}
