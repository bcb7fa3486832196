//! Profiles: parse YAML into [`Profile`], validate it, and report every problem with
//! the file, line and column, the field, and what is expected.

mod duration;
pub mod locate;
mod types;
mod validate;
pub use validate::valid_node_name;

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
    let profile: Profile =
        serde_yaml::from_str(&source.text).map_err(|e| err(vec![serde_problem(&e)]))?;
    let mut problems = validate::validate(&profile, &index);
    problems.sort_by_key(|p| p.pos.map(|p| (p.line, p.col)));
    if !problems.is_empty() {
        return Err(err(problems));
    }
    let mut profile = profile;
    crate::network::expand(&mut profile);
    resolve_paths(&mut profile, &source);
    Ok(Loaded {
        profile,
        source,
        index,
    })
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
        .map(|k| (k, crate::clients::binary_of(&v.clients, k)))
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
        if let Err(why) = resolve_program(program, base) {
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
        if let Err(e) = crate::clients::version::check(kind, &binary) {
            problems.push(Problem {
                pos: loaded.index.value("validators.execution"),
                message: format!("validators.execution: {e}"),
            });
        }
    }
    if let Some(tls) = &loaded.profile.api.tls {
        // Load exactly what the API will serve, so a bad file stops `up` before anything
        // starts rather than leaving a network without its API.
        if let Err(why) = chainctl_common::tls::server_config(&tls.cert, &tls.key) {
            let field = if why.starts_with("api.tls.key") {
                "api.tls.key"
            } else {
                "api.tls.cert"
            };
            problems.push(Problem {
                pos: loaded.index.value(field),
                message: why,
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

/// Makes the profile's file paths absolute, relative to the profile's directory, so
/// every reader (supervisor, CLI) finds the same files wherever it runs from.
fn resolve_paths(profile: &mut Profile, source: &Source) {
    let base = source
        .path
        .as_deref()
        .and_then(Path::parent)
        .unwrap_or(Path::new("."));
    let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
    if let Some(tls) = &mut profile.api.tls {
        for p in [&mut tls.cert, &mut tls.key] {
            if p.is_relative() {
                *p = base.join(&*p);
            }
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

fn serde_problem(e: &serde_yaml::Error) -> Problem {
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
