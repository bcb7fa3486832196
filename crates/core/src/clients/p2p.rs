//! Static peering between the network's own external execution clients (Reth, Geth,
//! Erigon). Discovery is off everywhere (a devnet must never wander onto another
//! network's peers); instead every such client gets a node key of its own, kept in the
//! state dir like the validators' keys, and the enode URLs of the others, so transactions
//! sent to any one of them reach the one whose validator proposes next, whatever client
//! it is.
//!
//! - Node key: `secrets/p2p/<service>.key`, 64 hex characters and nothing else (mode
//!   0600). Reth's `--p2p-secret-key` parses the file's whole text as a key (no trailing
//!   newline allowed; `crates/node/core/src/args/secret_key.rs`); Geth's and Erigon's
//!   `--nodekey` read 64 hex characters (`crypto.LoadECDSA`).
//! - Peers, in the file each client reads them from, given with `--config`: Reth's TOML
//!   config (`network/p2p/<service>.reth.toml`, `[peers] trusted_nodes`; reth-config's
//!   `Config`, every other setting its default) and Geth's (`network/p2p/<service>.toml`,
//!   `[Node.P2P] StaticNodes`, `TrustedNodes`: Geth takes static peers only from there).
//!   Erigon takes them only as flags: `network/p2p/<service>.peers`, one enode URL per
//!   line, which `chainctl client-exec --peers-file` turns into `--staticpeers` and
//!   `--trustedpeers` at start.
//!
//! A client is reached at the profile's listen address on this host (processes, systemd
//! units) and at its fixed address in `docker.subnet` in containers of this host
//! (`runtime: docker`, compose). On a cluster (Kubernetes, Swarm) addresses are the
//! cluster's, and Reth resolves a peer's name only once, when it starts: clients there
//! keep their keys and have no peers (their config files list none). In containers
//! nothing runs before the client to add flags, so Erigon has no peers there.

use crate::layout::Layout;
use crate::profile::{ExecutionKind, Profile};
use anyhow::{Context as _, Result};
use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};

/// The files of one client, relative to the state dir: its node key (a secret), its
/// peers and Geth's config. The paths below and the arguments the adapters emit are both
/// made from these, so they cannot drift apart.
const KEY: &str = "secrets/p2p/{}.key";
const PEERS: &str = "network/p2p/{}.peers";
const GETH_CONFIG: &str = "network/p2p/{}.toml";
const RETH_CONFIG: &str = "network/p2p/{}.reth.toml";

fn path_of(layout: &Layout, file: &str, service: &str) -> PathBuf {
    layout.root.join(file.replace("{}", service))
}

fn arg_of(file: &str) -> String {
    format!("{{{{state_dir}}}}/{}", file.replace("{}", "{{name}}"))
}

/// The node key of an external client.
pub fn key_path(layout: &Layout, service: &str) -> PathBuf {
    path_of(layout, KEY, service)
}

/// The enode URLs of a client's peers, one per line.
pub fn peers_path(layout: &Layout, service: &str) -> PathBuf {
    path_of(layout, PEERS, service)
}

/// Geth's config file with its static and trusted peers.
pub fn geth_config_path(layout: &Layout, service: &str) -> PathBuf {
    path_of(layout, GETH_CONFIG, service)
}

/// Reth's config file with its trusted peers.
pub fn reth_config_path(layout: &Layout, service: &str) -> PathBuf {
    path_of(layout, RETH_CONFIG, service)
}

/// [`key_path`] as an argument (placeholders the planner resolves).
pub fn key_arg() -> String {
    arg_of(KEY)
}
/// [`peers_path`] as an argument.
pub fn peers_arg() -> String {
    arg_of(PEERS)
}
/// [`geth_config_path`] as an argument.
pub fn geth_config_arg() -> String {
    arg_of(GETH_CONFIG)
}
/// [`reth_config_path`] as an argument.
pub fn reth_config_arg() -> String {
    arg_of(RETH_CONFIG)
}

/// The external clients of the network (those that speak devp2p), with their kinds.
pub fn external_els(p: &Profile) -> Vec<(String, ExecutionKind)> {
    (0..p.validators.count)
        .flat_map(|i| crate::network::els_of(&p.validators, i))
        .filter(|(_, k)| *k != ExecutionKind::Builtin)
        .collect()
}

/// Why a node key file cannot be used: the file, what is wrong and what to do.
#[derive(Debug, thiserror::Error)]
#[error("node key {path}: {why}")]
pub struct KeyError {
    /// The file.
    pub path: String,
    /// What is wrong, and the fix.
    pub why: String,
}

/// Reads a node key file: 64 hex characters and nothing else, readable by its owner only.
pub fn read_key(path: &Path) -> Result<secp256k1::SecretKey, KeyError> {
    use std::os::unix::fs::PermissionsExt as _;
    let shown = path.display().to_string();
    let err = |why: String| KeyError {
        path: shown.clone(),
        why,
    };
    let text = std::fs::read_to_string(path).map_err(|e| {
        err(format!(
            "cannot read it ({e}): it must be a file readable by the user chainctl and the client run as"
        ))
    })?;
    let mode = std::fs::metadata(path)
        .map_err(|e| err(e.to_string()))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(err(format!(
            "its mode is {:o}: a secret key must be readable by its owner only: `chmod 600 {shown}`",
            mode & 0o777
        )));
    }
    let trimmed = text.trim();
    let hex_part = trimmed.strip_prefix("0x").unwrap_or(trimmed);
    let replace =
        "delete the file and chainctl makes a new one (the client's peer id changes with it)";
    if hex_part.len() != 64 || !hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(err(format!(
            "it is not a node key (64 hex characters): {replace}"
        )));
    }
    if hex_part != text {
        // Reth reads the whole text as the key: a newline, spaces or `0x` would stop it.
        return Err(err(format!(
            "it holds the key with a `0x`, spaces or a newline around it, which Reth refuses: keep the 64 hex characters alone (`printf %s {hex_part} > {shown}`)"
        )));
    }
    let mut b = [0u8; 32];
    hex::decode_to_slice(hex_part, &mut b).map_err(|e| err(e.to_string()))?;
    secp256k1::SecretKey::from_slice(&b).map_err(|_| {
        err(format!(
            "it is not a valid secp256k1 secret key (zero, or not below the group order): {replace}"
        ))
    })
}

/// The node key at `path`, made (0600, in a 0700 dir) when missing.
pub fn ensure_key(path: &Path) -> Result<secp256k1::SecretKey> {
    if !path.exists() {
        if let Some(d) = path.parent() {
            chainctl_common::fs::private_dir(d)
                .with_context(|| format!("cannot create {}", d.display()))?;
        }
        let key = loop {
            let mut b = [0u8; 32];
            rand::RngCore::fill_bytes(&mut rand::rngs::OsRng, &mut b);
            // Zero or ≥ the group order: about one in 2^128; draw again.
            if let Ok(k) = secp256k1::SecretKey::from_slice(&b) {
                break k;
            }
        };
        chainctl_common::fs::write_atomic(path, hex::encode(key.secret_bytes()).as_bytes())
            .with_context(|| format!("cannot write {}", path.display()))?;
        tracing::info!(path = %path.display(), "generated a node key");
    }
    Ok(read_key(path)?)
}

/// A node's id in an enode URL: its uncompressed public key without the `04` prefix.
pub fn node_id(key: &secp256k1::SecretKey) -> String {
    let public = secp256k1::PublicKey::from_secret_key(secp256k1::SECP256K1, key);
    hex::encode(&public.serialize_uncompressed()[1..])
}

/// `enode://ID@IP:PORT`: TCP and UDP on one number, so no `discport`.
pub fn enode(id: &str, ip: IpAddr, port: u16) -> String {
    format!("enode://{id}@{}", std::net::SocketAddr::new(ip, port))
}

/// Geth's config: only the peers (every other setting comes from its flags, which Geth
/// applies over the file).
pub fn geth_config(peers: &[String]) -> String {
    let list = quoted(peers);
    format!(
        "# Written by chainctl: the network's other execution clients.\n[Node.P2P]\nStaticNodes = [{list}]\nTrustedNodes = [{list}]\n"
    )
}

/// Reth's config: only the trusted peers (every other setting is its default, or comes
/// from its flags). Reth writes a config file only when it is missing.
pub fn reth_config(peers: &[String]) -> String {
    format!(
        "# Written by chainctl: the network's other execution clients.\n[peers]\ntrusted_nodes = [{}]\n",
        quoted(peers)
    )
}

fn quoted(peers: &[String]) -> String {
    peers
        .iter()
        .map(|e| format!("\"{e}\""))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The file a client of `kind` reads its peers from, and its content listing `peers`:
/// Reth's and Geth's TOML configs, Erigon's list for `client-exec`.
pub fn peers_file(
    layout: &Layout,
    service: &str,
    kind: ExecutionKind,
    peers: &[String],
) -> (PathBuf, String) {
    match kind {
        ExecutionKind::Reth => (reth_config_path(layout, service), reth_config(peers)),
        ExecutionKind::Geth => (geth_config_path(layout, service), geth_config(peers)),
        _ => (
            peers_path(layout, service),
            format!("{}\n", peers.join("\n")),
        ),
    }
}

/// Writes every external client's node key (kept once made) and its peers: where every
/// client has an address others reach it at (`address` gives it), the enode of every
/// other external client; else, when its file is missing, none. `p2p_port` gives a
/// service's planned P2P port. Returns, for each client, what it reads at start (its
/// node id and its peers): when that changes, a running client must be restarted to see
/// it (the plan's `depends_on_content`).
pub fn write_files(
    p: &Profile,
    layout: &Layout,
    address: impl Fn(&str) -> Option<IpAddr>,
    p2p_port: impl Fn(&str) -> Result<u16>,
) -> Result<BTreeMap<String, String>> {
    let mut nodes = Vec::new();
    for (el, kind) in external_els(p) {
        let id = node_id(&ensure_key(&key_path(layout, &el))?);
        nodes.push((el, kind, id));
    }
    let mut read_at_start: BTreeMap<String, String> = nodes
        .iter()
        .map(|(el, _, id)| (el.clone(), format!("node id {id}\n")))
        .collect();
    // Every client needs an address for any to have peers. Without addresses (a cluster)
    // the files are made when missing, never emptied: rendering manifests from the state
    // dir of a network running on this host must not take its clients' peers away.
    let ips = nodes
        .iter()
        .map(|(el, ..)| address(el))
        .collect::<Option<Vec<IpAddr>>>();
    let addressed = ips.is_some();
    let enodes = match ips {
        Some(ips) => nodes
            .iter()
            .zip(ips)
            .map(|((el, _, id), ip)| Ok(Some(enode(id, ip, p2p_port(el)?))))
            .collect::<Result<Vec<_>>>()?,
        None => vec![None; nodes.len()],
    };
    for (i, (el, kind, _)) in nodes.iter().enumerate() {
        let others: Vec<String> = enodes
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .filter_map(|(_, e)| e.clone())
            .collect();
        // The file this client reads its peers from (a config file is read even when it
        // lists none: a missing one Reth would create, in a read-only mount).
        let (path, content) = peers_file(layout, el, *kind, &others);
        if let Some(d) = path.parent() {
            chainctl_common::fs::private_dir(d)
                .with_context(|| format!("cannot create {}", d.display()))?;
        }
        if addressed || !path.exists() {
            chainctl_common::fs::write_atomic(&path, content.as_bytes())
                .with_context(|| format!("cannot write {}", path.display()))?;
        }
        if let Some(r) = read_at_start.get_mut(el) {
            r.push_str(&others.join("\n"));
            r.push('\n');
        }
    }
    Ok(read_at_start)
}

/// The enode URLs in a peers file, checked.
pub fn read_peers(path: &Path) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(path).with_context(|| {
        format!(
            "cannot read the peers file {}: `chainctl up` (or, for units, `chainctl systemd install`; `render systemd` writes no network files) writes it before the client starts",
            path.display()
        )
    })?;
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if !line.starts_with("enode://") || !line.contains('@') {
            anyhow::bail!(
                "{}:{}: `{line}` is not an enode URL (enode://ID@IP:PORT); `chainctl up` rewrites this file",
                path.display(),
                n + 1
            );
        }
        out.push(line.to_string());
    }
    Ok(out)
}

/// The client's words with the peers added: each flag followed by the comma-separated
/// URLs (nothing when there are no peers).
pub fn with_peers(client: &[String], peers: &[String], flags: &[String]) -> Vec<String> {
    let mut out = client.to_vec();
    if !peers.is_empty() {
        for f in flags {
            out.push(f.clone());
            out.push(peers.join(","));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The node id of a well-known key: the first development account's key, whose
    /// address (the last 20 bytes of keccak256 of this id) is documented.
    #[test]
    fn the_node_id_is_the_public_key_of_the_address_everyone_knows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k.key");
        chainctl_common::fs::write_atomic(
            &path,
            b"ac0974bec39a17e36ba4a6b4d238ff944bacb478cbed5efcae784d7bf4f2ff80",
        )
        .unwrap();
        let id = node_id(&read_key(&path).unwrap());
        assert_eq!(id.len(), 128);
        let hash = alloy_primitives::keccak256(hex::decode(&id).unwrap());
        assert_eq!(
            hex::encode(&hash[12..]),
            "f39fd6e51aad88f6f4ce6ab8827279cfffb92266"
        );
        assert_eq!(
            enode(&id, IpAddr::from([127, 0, 0, 1]), 30303),
            format!("enode://{id}@127.0.0.1:30303")
        );
        assert_eq!(enode("ab", "::1".parse().unwrap(), 1), "enode://ab@[::1]:1");
    }

    /// A made key is kept and is what the clients read; a damaged one is refused naming
    /// the file and the fix.
    #[test]
    fn node_keys_are_made_once_and_damaged_ones_refused() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p2p/a.key");
        let k = ensure_key(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.len(), 64, "no newline: Reth would refuse it");
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(ensure_key(&path).unwrap(), k, "kept");
        let refused = |content: &str, mode: u32, want: &str| {
            std::fs::write(&path, content).unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let e = ensure_key(&path).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("node key {}: ", path.display())) && e.contains(want),
                "{content:?} {mode:o}: {e}"
            );
        };
        refused(
            &format!("{text}\n"),
            0o600,
            "keep the 64 hex characters alone",
        );
        refused(
            &format!("0x{text}"),
            0o600,
            "keep the 64 hex characters alone",
        );
        refused("0x12", 0o600, "delete the file");
        refused(&"zz".repeat(32), 0o600, "delete the file");
        refused(&"0".repeat(64), 0o600, "not a valid secp256k1 secret key");
        refused(&text, 0o644, "`chmod 600 ");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(ensure_key(&path).unwrap(), k, "the good key again");
    }

    #[test]
    fn peers_become_each_flag_with_the_list() {
        let client: Vec<String> = vec!["reth".into(), "node".into()];
        let peers = vec![
            "enode://a@1.2.3.4:1".to_string(),
            "enode://b@1.2.3.4:2".into(),
        ];
        let flags = vec!["--staticpeers".to_string(), "--trustedpeers".into()];
        assert_eq!(
            with_peers(&client, &peers, &flags),
            [
                "reth",
                "node",
                "--staticpeers",
                "enode://a@1.2.3.4:1,enode://b@1.2.3.4:2",
                "--trustedpeers",
                "enode://a@1.2.3.4:1,enode://b@1.2.3.4:2"
            ]
        );
        assert_eq!(with_peers(&client, &[], &flags), client);
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.peers");
        std::fs::write(&f, "enode://a@1.2.3.4:1\n\nenode://b@1.2.3.4:2\n").unwrap();
        assert_eq!(read_peers(&f).unwrap(), peers);
        std::fs::write(&f, "enode://a@1.2.3.4:1\nhttp://x\n").unwrap();
        let e = read_peers(&f).unwrap_err().to_string();
        assert!(e.contains(":2: `http://x` is not an enode URL"), "{e}");
        let e = read_peers(&dir.path().join("none"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("/none: `chainctl up` (or, for units"), "{e}");
    }

    #[test]
    fn geths_config_lists_the_peers_as_static_and_trusted() {
        let c = geth_config(&["enode://a@1.2.3.4:1".into(), "enode://b@1.2.3.4:2".into()]);
        assert!(c.contains(
            "[Node.P2P]\nStaticNodes = [\"enode://a@1.2.3.4:1\", \"enode://b@1.2.3.4:2\"]\n"
        ));
        assert!(c.contains("TrustedNodes = [\"enode://a@1.2.3.4:1\""));
        assert!(geth_config(&[]).contains("StaticNodes = []"));
    }
}
