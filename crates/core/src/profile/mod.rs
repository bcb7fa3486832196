//! Profiles: parse YAML into [`Profile`], validate it, and report every problem with
//! the file, line and column, the field, and what is expected.

mod duration;
pub mod locate;
mod types;

pub use duration::Dur;
pub use types::*;

use locate::{Index, Pos};
use std::fmt;
use std::path::{Path, PathBuf};

/// Where a profile's text came from.
#[derive(Debug, Clone)]
pub struct Source {
    /// What to call it in messages: the file path, or the embedded default's label.
    pub label: String,
    /// The file it was read from, if any.
    pub path: Option<PathBuf>,
    /// The YAML text.
    pub text: String,
}

impl Source {
    /// Reads a profile file.
    pub fn from_file(path: &Path) -> Result<Source, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|e| ProfileError {
            file: path.display().to_string(),
            problems: vec![Problem {
                pos: None,
                message: format!(
                    "cannot read the profile: {e}; check the path given with -p/--profile"
                ),
            }],
        })?;
        Ok(Source {
            label: path.display().to_string(),
            path: Some(path.to_path_buf()),
            text,
        })
    }

    /// The embedded default profile (`profiles/devnet.yaml`).
    pub fn embedded_default() -> Source {
        Source {
            label: crate::DEFAULT_PROFILE_NAME.to_string(),
            path: None,
            text: crate::DEFAULT_PROFILE.to_string(),
        }
    }
}

/// One problem in a profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where, if known.
    pub pos: Option<Pos>,
    /// `field.path: what is wrong and what is expected`.
    pub message: String,
}

/// Every problem found in one profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileError {
    /// The file (or embedded label).
    pub file: String,
    /// The problems, in source order.
    pub problems: Vec<Problem>,
}

impl fmt::Display for ProfileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            match p.pos {
                Some(pos) => write!(f, "{}:{}:{}: {}", self.file, pos.line, pos.col, p.message)?,
                None => write!(f, "{}: {}", self.file, p.message)?,
            }
        }
        Ok(())
    }
}

impl std::error::Error for ProfileError {}

/// A parsed, validated profile together with its source (for later error positions).
#[derive(Debug)]
pub struct Loaded {
    /// The profile.
    pub profile: Profile,
    /// Its source.
    pub source: Source,
    /// Field positions.
    pub index: Index,
}

/// Makes the profile's file paths absolute, relative to the profile's directory, so
/// every reader (supervisor, CLI) finds the same files wherever it runs from.
pub(crate) fn resolve_paths(profile: &mut Profile, source: &Source) {
    let base = source
        .path
        .as_deref()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."));
    let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
    let mut paths: Vec<&mut PathBuf> = Vec::new();
    for tls in [&mut profile.api.tls, &mut profile.gateway.tls]
        .into_iter()
        .flatten()
    {
        paths.extend([&mut tls.cert, &mut tls.key]);
    }
    paths.extend(profile.report.canary_key.as_mut());
    paths.extend(profile.backup.as_mut().map(|b| &mut b.to));
    for p in paths {
        if p.is_relative() {
            *p = base.join(&*p);
        }
    }
}

/// Finds a program the way the supervisor will run it: a path (relative to the profile's
/// directory) or a name on `PATH`.
pub fn resolve_program(program: &str, base: &Path) -> Result<PathBuf, String> {
    use std::os::unix::fs::PermissionsExt;
    if program.contains('/') {
        let p = if Path::new(program).is_absolute() {
            PathBuf::from(program)
        } else {
            base.join(program)
        };
        match std::fs::metadata(&p) {
            Ok(m) if m.is_file() && m.permissions().mode() & 0o111 != 0 => Ok(p),
            Ok(_) => Err(format!(
                "`{}` is not an executable file: chmod +x it or fix the path",
                p.display()
            )),
            Err(_) => Err(format!(
                "program `{}` not found: fix the path or install it",
                p.display()
            )),
        }
    } else {
        which::which(program).map_err(|_| {
            format!("program `{program}` not found on PATH: install it, or give its full path")
        })
    }
}

pub(crate) fn serde_problem(e: &serde_yaml::Error) -> Problem {
    let mut message = e.to_string();
    if let Some(at) = message.rfind(" at line ") {
        message.truncate(at);
    }
    // serde_yaml names the top level `.`; say what it is.
    if let Some(rest) = message.strip_prefix(". ") {
        message = rest.to_string();
    }
    if message.starts_with("missing field") {
        message =
            format!("{message}: add it (see `chainctl schema` or profiles/example-full.yaml)");
    }
    Problem {
        pos: e.location().map(|l| Pos {
            line: l.line(),
            col: l.column(),
        }),
        message,
    }
}

/// Checks a service or profile name: it becomes part of file names and unit names.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
}

/// Whether `name` can be a `chainctl.node` label value (and so a placement target).
pub fn valid_node_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}
