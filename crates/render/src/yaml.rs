//! The small YAML emitter compose files are written with. Every string is double-quoted
//! (JSON string syntax is valid YAML), so no value can change the file's structure and
//! docker-compose 1.x, which reads YAML 1.1, never mistakes `no` or `on` for a boolean;
//! the only unquoted scalars are the booleans and numbers it is asked for.

use std::fmt::Write;

/// A YAML node of the small shape compose needs.
#[derive(Clone)]
pub enum Node {
    /// A string, always quoted.
    Str(String),
    /// A boolean, written bare (`true` / `false`).
    Bool(bool),
    /// A whole number, written bare.
    Num(u64),
    /// A sequence.
    List(Vec<Node>),
    /// A mapping, in the given order.
    Map(Vec<(String, Node)>),
}

impl Node {
    /// A mapping from `(key, node)` pairs with `&str` keys.
    pub fn map<const N: usize>(entries: [(&str, Node); N]) -> Node {
        Node::Map(
            entries
                .into_iter()
                .map(|(k, v)| (k.to_string(), v))
                .collect(),
        )
    }
    /// A sequence of strings, each taken literally (see [`lit`]).
    pub fn strs<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> Node {
        Node::List(items.into_iter().map(lit).collect())
    }
}

/// A value compose reads literally: `$` doubled, because compose interpolates variables
/// in every value.
pub fn lit(v: impl AsRef<str>) -> Node {
    Node::Str(v.as_ref().replace('$', "$$"))
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

/// A scalar as it is written after `key: ` or `- `; `None` for collections.
fn scalar(node: &Node) -> Option<String> {
    match node {
        Node::Str(s) => Some(q(s)),
        Node::Bool(b) => Some(b.to_string()),
        Node::Num(n) => Some(n.to_string()),
        Node::List(l) if l.is_empty() => Some("[]".into()),
        Node::Map(m) if m.is_empty() => Some("{}".into()),
        _ => None,
    }
}

/// Appends `node` to `out` at `indent` spaces.
pub fn emit(out: &mut String, node: &Node, indent: usize) {
    let pad = " ".repeat(indent);
    match node {
        Node::Map(entries) => {
            for (k, v) in entries {
                match scalar(v) {
                    Some(s) => {
                        let _ = writeln!(out, "{pad}{}: {s}", key(k));
                    }
                    None => {
                        let _ = writeln!(out, "{pad}{}:", key(k));
                        emit(out, v, indent + 2);
                    }
                }
            }
        }
        Node::List(items) => {
            for item in items {
                match scalar(item) {
                    Some(s) => {
                        let _ = writeln!(out, "{pad}- {s}");
                    }
                    None => {
                        let _ = writeln!(out, "{pad}-");
                        emit(out, item, indent + 2);
                    }
                }
            }
        }
        other => {
            let _ = writeln!(out, "{pad}{}", scalar(other).unwrap_or_default());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_stay_strings_and_dollars_are_doubled() {
        let mut out = String::new();
        let doc = Node::map([
            ("no", lit("on")),
            ("read_only", Node::Bool(true)),
            ("retries", Node::Num(3)),
            ("cmd", Node::strs(["echo $HOME", "a\"b"])),
            ("empty", Node::List(vec![])),
            ("nested", Node::map([("x", lit("1"))])),
        ]);
        emit(&mut out, &doc, 0);
        assert_eq!(
            out,
            "\"no\": \"on\"\nread_only: true\nretries: 3\ncmd:\n  - \"echo $$HOME\"\n  - \"a\\\"b\"\nempty: []\nnested:\n  x: \"1\"\n"
        );
        let back: serde_yaml::Value = serde_yaml::from_str(&out).unwrap();
        assert_eq!(back["no"].as_str(), Some("on"));
        assert_eq!(back["read_only"].as_bool(), Some(true));
    }
}
