//! Every file chainctl keeps a secret in (or was given one in) and whether it is
//! private: the state dir, its `secrets/` tree (JWT secrets, validator keys, control and
//! API tokens, P2P node keys) and the key files the profile names outside it (the
//! API's TLS key, the canary's key). Files must be 0600 or stricter, the state dir and
//! the directories of the secrets tree 0700, all owned by the state dir's owner. `chainctl up` refuses to start on any problem (or fixes the
//! modes with `--fix-permissions`); `chainctl report` fails `security.secret_files`.

use std::path::{Path, PathBuf};

use crate::layout::Layout;
use crate::profile::Profile;

/// A file or directory holding secrets, as the file system has it.
#[derive(Debug, Clone)]
pub struct SecretPath {
    pub path: PathBuf,
    pub dir: bool,
    /// Permission bits (`st_mode & 0o7777`).
    pub mode: u32,
    pub uid: u32,
}

/// Every secret chainctl keeps or was given: what was found, and what could not be read.
#[derive(Debug, Clone, Default)]
pub struct SecretScan {
    /// The owner every secret must have: the state dir's.
    pub owner: Option<u32>,
    pub paths: Vec<SecretPath>,
    pub errors: Vec<String>,
}

/// One thing wrong with a secret path, and the mode that fixes it when a `chmod` does.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub path: PathBuf,
    /// What is wrong and the command that fixes it.
    pub text: String,
    pub chmod: Option<u32>,
}

/// Owner and mode of every secret path, through symlinks (a state dir linked elsewhere
/// is judged by what it points to).
pub fn scan(layout: &Layout, profile: &Profile) -> SecretScan {
    use std::os::unix::fs::MetadataExt as _;
    let mut scan = SecretScan::default();
    let look = |path: &Path, scan: &mut SecretScan| match std::fs::metadata(path) {
        Ok(m) => scan.paths.push(SecretPath {
            path: path.to_path_buf(),
            dir: m.is_dir(),
            mode: m.mode() & 0o7777,
            uid: m.uid(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => scan.errors.push(format!("{}: {e}", path.display())),
    };
    look(&layout.root, &mut scan);
    scan.owner = scan.paths.first().map(|p| p.uid);
    let mut todo = vec![layout.secrets_dir()];
    while let Some(dir) = todo.pop() {
        look(&dir, &mut scan);
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            match e.file_type() {
                Ok(t) if t.is_dir() => todo.push(p),
                _ => look(&p, &mut scan),
            }
        }
    }
    // Keys the profile names outside the state dir: the API's TLS key, the canary's —
    // the files only: their directories are the operator's (`/etc/ssl/private`, a
    // home), and one others can list shows names, not a 0600 file's content.
    let given = [
        profile.api.tls.as_ref().map(|t| &t.key),
        profile.report.canary_key.as_ref(),
    ];
    for key in given.into_iter().flatten() {
        look(key, &mut scan);
    }
    scan
}

impl SecretScan {
    /// Secret files found (not directories).
    pub fn files(&self) -> usize {
        self.paths.iter().filter(|p| !p.dir).count()
    }

    /// Everything wrong, each with its fix: a mode others can use (`chmod`), another
    /// owner than the state dir's (`chown`), a path that could not be read.
    pub fn problems(&self) -> Vec<Problem> {
        let mut out: Vec<Problem> = self
            .errors
            .iter()
            .map(|e| Problem {
                path: PathBuf::new(),
                text: e.clone(),
                chmod: None,
            })
            .collect();
        for p in &self.paths {
            let shown = p.path.display();
            if p.mode & 0o077 != 0 {
                out.push(if p.dir {
                    Problem {
                        path: p.path.clone(),
                        text: format!(
                            "{shown} is a directory of mode {:04o}: others can list or enter it — `chmod 700 {shown}`",
                            p.mode
                        ),
                        chmod: Some(0o700),
                    }
                } else {
                    Problem {
                        path: p.path.clone(),
                        text: format!(
                            "{shown} is mode {:04o}: others can read it — `chmod 600 {shown}`",
                            p.mode
                        ),
                        chmod: Some(0o600),
                    }
                });
            }
            if let Some(owner) = self.owner.filter(|o| *o != p.uid) {
                out.push(Problem {
                    path: p.path.clone(),
                    text: format!(
                        "{shown} is owned by uid {}, not by the state dir's owner (uid {owner}) — `chown {owner} {shown}`",
                        p.uid
                    ),
                    chmod: None,
                });
            }
        }
        out
    }
}

/// Applies the `chmod` of each problem that has one; returns what was changed, or the
/// first path that could not be changed.
pub fn fix_modes(problems: &[Problem]) -> Result<Vec<String>, String> {
    use std::os::unix::fs::PermissionsExt as _;
    let mut done = Vec::new();
    for p in problems {
        if let Some(mode) = p.chmod {
            std::fs::set_permissions(&p.path, std::fs::Permissions::from_mode(mode))
                .map_err(|e| format!("cannot chmod {:o} {}: {e}", mode, p.path.display()))?;
            done.push(format!("chmod {:o} {}", mode, p.path.display()));
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt as _;

    #[test]
    fn a_readable_key_is_a_problem_with_its_chmod_and_the_fix_applies_it() {
        let dir = tempfile::tempdir().unwrap();
        let layout = Layout::new(dir.path().join("state"));
        let keys = layout.secrets_dir().join("validators");
        std::fs::create_dir_all(&keys).unwrap();
        for d in [&layout.root, &layout.secrets_dir(), &keys] {
            std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        let key = keys.join("val-0.key");
        std::fs::write(&key, "00").unwrap();
        std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
        let profile: Profile = serde_yaml::from_str("name: t\n").unwrap();
        let s = scan(&layout, &profile);
        assert_eq!(s.files(), 1);
        let p = s.problems();
        assert_eq!(p.len(), 1, "{p:?}");
        assert!(
            p[0].text.contains("mode 0644") && p[0].text.contains("chmod 600"),
            "{p:?}"
        );
        assert_eq!(fix_modes(&p).unwrap().len(), 1);
        assert!(scan(&layout, &profile).problems().is_empty());
        let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
    }
}
