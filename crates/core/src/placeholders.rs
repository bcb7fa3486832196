//! Placeholders in `command` and `env` values (`{{port.http}}`, `{{jwt_path}}`, …):
//! one parser, used by validation (to name a bad one) and by the planner (to resolve).

use std::fmt;

/// One placeholder a template may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    /// `{{port.NAME}}`: one of the service's own ports.
    Port(String),
    /// `{{port.SERVICE.NAME}}`: another service's port.
    OtherPort(String, String),
    /// `{{data_dir}}`: the service's data directory.
    DataDir,
    /// `{{state_dir}}`: the profile's state directory.
    StateDir,
    /// `{{name}}`: the service's name.
    Name,
    /// `{{chain_id}}`.
    ChainId,
    /// `{{listen.rpc}}`: the RPC listen address.
    ListenRpc,
    /// `{{listen.api}}`: the API listen address.
    ListenApi,
    /// `{{listen.rpc_host}}`: the RPC listen address as the host of a `HOST:PORT` (an
    /// IPv6 address in brackets, which Go programs require).
    ListenRpcHost,
    /// `{{host.SERVICE}}`: the address another service is reached at (loopback for
    /// processes and systemd units, the service's name on a compose network).
    Host(String),
    /// `{{jwt_path}}`: the service's single Engine API secret file.
    JwtPath,
    /// `{{jwt_path.SERVICE}}`: the secret shared with that service.
    JwtPathWith(String),
    /// `{{chainctl}}`: the chainctl binary itself (its built-in node roles).
    Chainctl,
}

impl fmt::Display for Var {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Var::Port(p) => write!(f, "{{{{port.{p}}}}}"),
            Var::OtherPort(s, p) => write!(f, "{{{{port.{s}.{p}}}}}"),
            Var::DataDir => f.write_str("{{data_dir}}"),
            Var::StateDir => f.write_str("{{state_dir}}"),
            Var::Name => f.write_str("{{name}}"),
            Var::ChainId => f.write_str("{{chain_id}}"),
            Var::ListenRpc => f.write_str("{{listen.rpc}}"),
            Var::ListenApi => f.write_str("{{listen.api}}"),
            Var::ListenRpcHost => f.write_str("{{listen.rpc_host}}"),
            Var::Host(s) => write!(f, "{{{{host.{s}}}}}"),
            Var::JwtPath => f.write_str("{{jwt_path}}"),
            Var::JwtPathWith(s) => write!(f, "{{{{jwt_path.{s}}}}}"),
            Var::Chainctl => f.write_str("{{chainctl}}"),
        }
    }
}

/// A piece of a parsed template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Segment {
    /// Text copied as is.
    Text(String),
    /// A placeholder to resolve.
    Var(Var),
}

/// The placeholders a user can write, for error messages.
pub const KNOWN: &str =
    "{{port.NAME}}, {{port.SERVICE.NAME}}, {{host.SERVICE}}, {{data_dir}}, {{state_dir}}, {{name}}, \
{{chain_id}}, {{listen.rpc}}, {{listen.rpc_host}}, {{listen.api}}, {{jwt_path}}, {{jwt_path.SERVICE}}, {{chainctl}}";

/// Splits a template into text and placeholders.
pub fn parse(template: &str) -> Result<Vec<Segment>, String> {
    let mut out = Vec::new();
    let mut rest = template;
    while let Some(start) = rest.find("{{") {
        if start > 0 {
            out.push(Segment::Text(rest[..start].to_string()));
        }
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unclosed placeholder in `{template}`: add `}}}}`"))?;
        out.push(Segment::Var(parse_var(after[..end].trim())?));
        rest = &after[end + 2..];
    }
    if !rest.is_empty() {
        out.push(Segment::Text(rest.to_string()));
    }
    Ok(out)
}

fn parse_var(name: &str) -> Result<Var, String> {
    let parts: Vec<&str> = name.split('.').collect();
    let var = match parts.as_slice() {
        ["port", p] if !p.is_empty() => Var::Port(p.to_string()),
        ["port", s, p] if !s.is_empty() && !p.is_empty() => {
            Var::OtherPort(s.to_string(), p.to_string())
        }
        ["data_dir"] => Var::DataDir,
        ["state_dir"] => Var::StateDir,
        ["name"] => Var::Name,
        ["chain_id"] => Var::ChainId,
        ["listen", "rpc"] => Var::ListenRpc,
        ["listen", "api"] => Var::ListenApi,
        ["listen", "rpc_host"] => Var::ListenRpcHost,
        ["host", s] if !s.is_empty() => Var::Host(s.to_string()),
        ["jwt_path"] => Var::JwtPath,
        ["chainctl"] => Var::Chainctl,
        ["jwt_path", s] if !s.is_empty() => Var::JwtPathWith(s.to_string()),
        _ => {
            return Err(format!(
                "unknown placeholder `{{{{{name}}}}}`: expected one of {KNOWN}"
            ))
        }
    };
    Ok(var)
}

/// Resolves a parsed template with `lookup`, which names what it cannot resolve.
pub fn render(
    segments: &[Segment],
    mut lookup: impl FnMut(&Var) -> Result<String, String>,
) -> Result<String, String> {
    let mut s = String::new();
    for seg in segments {
        match seg {
            Segment::Text(t) => s.push_str(t),
            Segment::Var(v) => s.push_str(&lookup(v)?),
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_text_and_vars() {
        let segs = parse("--http.port={{ port.http }}:{{port.el.engine}}/x").unwrap();
        assert_eq!(
            segs,
            vec![
                Segment::Text("--http.port=".into()),
                Segment::Var(Var::Port("http".into())),
                Segment::Text(":".into()),
                Segment::Var(Var::OtherPort("el".into(), "engine".into())),
                Segment::Text("/x".into()),
            ]
        );
    }

    #[test]
    fn rejects_unknown_and_unclosed() {
        assert!(parse("{{prot.http}}")
            .unwrap_err()
            .contains("unknown placeholder `{{prot.http}}`"));
        assert!(parse("{{port.http").unwrap_err().contains("unclosed"));
    }
}
