//! `chainctl restore`: a backup put back into a service's data dir, and the service
//! started again to rejoin the network.

use std::path::{Path, PathBuf};

use chainctl_common::validator::SignFloor;
use chainctl_core::control::Request;

use crate::network::{Network, Role, Service};
use crate::take::HashingReader;
use crate::vault::{self, Unlock};
use crate::NETWORK;
use chainctl_core::backup::{verify, FileEntry, Manifest, ServiceEntry};

/// What `chainctl restore` was asked.
pub struct RestoreOptions {
    /// The backup's directory.
    pub from: PathBuf,
    /// The services (a validator stands for itself and its execution clients); every
    /// service of the backup when empty.
    pub services: Vec<String>,
    /// What opens the backup's secrets; without it, data only.
    pub unlock: Option<Unlock>,
    /// Restore the execution clients named from this other execution client's snapshot
    /// in the backup (same chain, both built-in engines): a new or broken client starts
    /// near the head instead of replaying every block since genesis.
    pub source: Option<String>,
    /// Start the restored services through the running supervisor.
    pub start: bool,
    /// The lowest signing floor to give a restored validator (the last height its key
    /// may have signed), for when no other validator answers to say how far the network
    /// got.
    pub sign_floor: Option<u64>,
}

/// What a restore did, one line per step, for the operator.
#[derive(Debug, Default)]
pub struct Restored {
    pub lines: Vec<String>,
}

/// Unix seconds now.
fn now_unix() -> u64 {
    chainctl_common::time::now_ms() / 1000
}

/// Restore `o.from` into `net`. Refused, before anything is written: a backup of another
/// chain (both named), a stored file whose hash differs from the manifest (named), a
/// service the backup does not hold, and a service that runs.
pub fn restore(net: &Network, o: &RestoreOptions) -> Result<Restored, String> {
    let m = Manifest::read(&o.from)?;
    let from = o.from.display();
    if let Some(g) = &net.genesis {
        let (ours, theirs) = (
            (
                g.chain_id,
                format!("{}", g.execution_genesis_hash),
                format!("{}", g.hash()),
            ),
            (
                m.chain_id,
                m.genesis_hash.clone(),
                m.consensus_genesis_hash.clone(),
            ),
        );
        if ours != theirs {
            return Err(format!(
                "{from} is a backup of chain {} (genesis {}, consensus genesis {}); this network is chain {} (genesis {}, consensus genesis {}): restore a backup of this network, or give the profile the backup was taken of",
                theirs.0, theirs.1, theirs.2, ours.0, ours.1, ours.2
            ));
        }
    }
    let targets: Vec<&Service> = net.select(&o.services)?;
    let targets: Vec<&Service> = if o.services.is_empty() {
        targets
            .into_iter()
            .filter(|s| m.service(&s.name).is_some())
            .collect()
    } else {
        targets
    };
    let mut entries: Vec<(&Service, &ServiceEntry)> = Vec::new();
    if let Some(src) = &o.source {
        let e = m
            .service(src)
            .ok_or_else(|| format!("{from} holds no backup of {src} (--source)"))?;
        let builtin =
            chainctl_core::clients::kind_name(chainctl_core::profile::ExecutionKind::Builtin);
        if e.role != builtin {
            return Err(format!(
                "--source {src}: a snapshot of a built-in engine is needed; {src} is a {}",
                e.role
            ));
        }
        if o.services.is_empty() {
            return Err(format!(
                "--source {src}: name the execution clients to restore from it"
            ));
        }
        for s in &targets {
            match &s.role {
                Role::Execution { kind: chainctl_core::profile::ExecutionKind::Builtin, .. } => entries.push((s, e)),
                _ => {
                    return Err(format!(
                        "--source {src}: {} is not a built-in engine; --source restores built-in execution clients only",
                        s.name
                    ))
                }
            }
        }
    }
    for s in targets.iter().filter(|_| o.source.is_none()) {
        let e = m.service(&s.name).ok_or_else(|| {
            let held: Vec<&str> = m
                .services
                .iter()
                .filter(|e| e.name != NETWORK)
                .map(|e| e.name.as_str())
                .collect();
            let why = m
                .skipped
                .iter()
                .find(|k| k.name == s.name)
                .map(|k| {
                    format!(
                        " (it was skipped: {}; restore it from another client with --source)",
                        k.reason
                    )
                })
                .unwrap_or_default();
            format!(
                "{from} holds no backup of {}{why}; it holds {}",
                s.name,
                held.join(", ")
            )
        })?;
        entries.push((s, e));
    }
    if entries.is_empty() {
        return Err(format!("{from} holds none of this network's services"));
    }
    let mut names: Vec<String> = entries.iter().map(|(_, e)| e.name.clone()).collect();
    names.push(NETWORK.into());
    let bad = verify(&o.from, &m, &names);
    if !bad.is_empty() {
        return Err(format!(
            "refusing to restore from {from}: {} file(s) differ from its manifest:\n  {}\nrestore from another backup (`chainctl backup list`)",
            bad.len(),
            bad.iter().map(|b| b.to_string()).collect::<Vec<_>>().join("\n  ")
        ));
    }
    // Nothing that runs is written over.
    let states = net.states()?;
    for (s, _) in &entries {
        let state = states
            .iter()
            .find(|(n, _)| *n == s.name)
            .map_or("stopped", |(_, st)| st.as_str());
        if !matches!(state, "stopped" | "given-up") {
            let stop: Vec<&str> = entries.iter().map(|(s, _)| s.name.as_str()).collect();
            let why = match s.role {
                Role::Validator => format!(
                    "restoring a validator's key and state while {} runs would make the key sign twice (double signing)",
                    s.name
                ),
                Role::Execution { .. } => format!(
                    "restoring over the data dir of {} while it runs would corrupt it",
                    s.name
                ),
            };
            let how = if net.supervised() {
                format!("`chainctl stop {}`", stop.join(" "))
            } else {
                format!(
                    "`systemctl stop {}` under systemd, else `chainctl down`",
                    stop.iter()
                        .map(|n| format!("chainctl-{}-{n}.service", net.profile))
                        .collect::<Vec<_>>()
                        .join(" ")
                )
            };
            return Err(format!(
                "{} is {state}: {why}; stop it first: {how}",
                s.name
            ));
        }
    }
    let mut out = Restored::default();
    if m.profile_digest != net.profile_digest {
        out.lines.push(format!(
            "note: the profile differs from the one the backup was taken with (profile `{}`); the chain and genesis are the same",
            m.profile
        ));
    }
    if o.services.is_empty() {
        for k in &m.skipped {
            out.lines.push(format!(
                "{}: not in the backup ({}): restore it from another client with `--source`, or let its validator resync it",
                k.name, k.reason
            ));
        }
    }
    // Every path the backup names stays inside where it belongs.
    for (_, e) in &entries {
        for f in &e.files {
            confined(&f.restore_to)?;
        }
    }
    // The secrets are opened (and their names checked) before anything is replaced: a
    // wrong passphrase must not leave the data half restored.
    let secrets = open_secrets(net, &m, o, &entries, &mut out)?;
    let stamp = now_unix();
    // A new host: the network's files first (genesis, port allocation).
    if net.genesis.is_none() {
        let e = m.service(NETWORK).ok_or_else(|| {
            format!("{from} has no network files, and this state dir has none: restore into the network's own state dir")
        })?;
        for f in &e.files {
            put(&o.from, f, &net.layout.root.join(confined(&f.restore_to)?))?;
        }
        out.lines.push(format!(
            "network files restored into {}",
            net.layout.root.display()
        ));
    }
    for (s, e) in &entries {
        // A floor written by an earlier restore is never lowered.
        let old_floor = SignFloor::read(&s.data_dir)
            .ok()
            .flatten()
            .map(|f| f.height);
        let kept = replace_dir(&s.data_dir, stamp)?;
        let kept_note = || {
            kept.as_ref()
                .map(|k| format!("; what was there is kept in {}", k.display()))
                .unwrap_or_default()
        };
        for f in &e.files {
            put(&o.from, f, &s.data_dir.join(&f.restore_to))
                .map_err(|err| format!("{err}{}", kept_note()))?;
        }
        if let Some(k) = &kept {
            copy_owner(k, &s.data_dir);
        }
        let mut line = format!(
            "{}: restored{} at height {} ({}) into {}{}",
            s.name,
            if e.name == s.name {
                String::new()
            } else {
                format!(" from {}'s snapshot", e.name)
            },
            e.height,
            e.block_hash,
            s.data_dir.display(),
            kept_note()
        );
        if s.role == Role::Validator {
            // This key signed every height the network reached since the backup: no
            // vote or proposal at those again.
            let peers = net.peer_heights(&s.name);
            let top = peers.iter().map(|(_, h)| *h).max();
            let floor = [Some(e.height), top, old_floor, o.sign_floor]
                .into_iter()
                .flatten()
                .max()
                .unwrap_or(e.height);
            let reason = format!(
                "restored from {from} (height {}) at unix {stamp}; {}{}{}",
                e.height,
                match top {
                    Some(h) => format!("the other validators were at height {h}"),
                    None => "no other validator answered".into(),
                },
                old_floor
                    .map(|f| format!("; an earlier floor was {f}"))
                    .unwrap_or_default(),
                o.sign_floor
                    .map(|f| format!("; --sign-floor {f}"))
                    .unwrap_or_default(),
            );
            let f = SignFloor {
                height: floor,
                reason,
            };
            let path = s.data_dir.join(SignFloor::FILE);
            chainctl_common::fs::write_atomic(
                &path,
                serde_json::to_string_pretty(&f)
                    .expect("serializes")
                    .as_bytes(),
            )
            .map_err(|e| format!("{}: {e}", path.display()))?;
            line.push_str(&format!("; it signs nothing at or below height {floor}"));
            if top.is_none() && o.sign_floor.is_none() {
                line.push_str(
                    " — no other validator answered, so the floor is the backup's height: right when the whole network is restored from backups; if the other validators run but cannot be reached from here, restore again with --sign-floor at the height they reached",
                );
            }
        }
        out.lines.push(line);
    }
    if let Some(files) = secrets {
        write_secrets(files, stamp, &mut out)?;
    }
    let names = entries
        .iter()
        .map(|(s, _)| s.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    if o.start && net.supervised() {
        // Execution clients first: a validator starts on its clients.
        let mut order: Vec<&Service> = entries.iter().map(|(s, _)| *s).collect();
        order.sort_by_key(|s| s.role == Role::Validator);
        for s in order {
            let r = net.ask(Request::Restart {
                service: s.name.clone(),
            })?;
            if !r.ok {
                return Err(format!(
                    "{}: restored, but the supervisor did not start it: {}",
                    s.name,
                    r.error.unwrap_or_default()
                ));
            }
        }
        out.lines.push(format!(
            "started {names}: each catches up with the network (`chainctl status`)"
        ));
    } else if net.supervised() {
        out.lines.push(format!(
            "left stopped: start them with `chainctl restart SERVICE` ({names})"
        ));
    } else {
        out.lines
            .push("start the network with `chainctl up`".into());
    }
    Ok(out)
}

/// `rel` as a path that stays inside the directory it is joined to: relative, and made
/// only of plain names (no `..`, no root), as the backup wrote it.
fn confined(rel: &str) -> Result<&Path, String> {
    let p = Path::new(rel);
    let plain = !rel.is_empty()
        && p.components()
            .all(|c| matches!(c, std::path::Component::Normal(_)));
    if plain {
        Ok(p)
    } else {
        Err(format!(
            "the manifest names `{rel}` as a place to restore to, which is not a plain relative path: refusing the backup (it was not written by chainctl, or was altered)"
        ))
    }
}

/// A secret to write: where, and its content.
type SecretFile = (PathBuf, Vec<u8>);

/// The secret files to write (destination, content), when the backup has them and they
/// can be opened; the reason otherwise, as a line. Only names this network has are
/// taken, each to this network's path for it.
fn open_secrets(
    net: &Network,
    m: &Manifest,
    o: &RestoreOptions,
    entries: &[(&Service, &ServiceEntry)],
    out: &mut Restored,
) -> Result<Option<Vec<SecretFile>>, String> {
    let Some(sec) = &m.secrets else {
        out.lines.push(
            "secrets not restored: the backup holds none (it was taken without --include-secrets)"
                .into(),
        );
        return Ok(None);
    };
    let Some(unlock) = &o.unlock else {
        out.lines.push(format!(
            "secrets not restored: the backup's secrets are encrypted ({}); give --passphrase-file or --identity to restore them — the data was restored",
            sec.encryption
        ));
        return Ok(None);
    };
    let wanted: Vec<&str> = if o.services.is_empty() {
        net.secret_files.iter().map(|(_, n)| n.as_str()).collect()
    } else {
        entries
            .iter()
            .flat_map(|(s, _)| &s.secrets)
            .filter_map(|p| net.secret_name(p))
            .collect()
    };
    let mut files = Vec::new();
    for (name, bytes) in vault::open(&o.from.join(&sec.stored), unlock)? {
        if !wanted.contains(&name.as_str()) {
            continue;
        }
        let Some((dest, _)) = net.secret_files.iter().find(|(_, n)| *n == name) else {
            continue;
        };
        files.push((dest.clone(), bytes));
    }
    Ok(Some(files))
}

fn write_secrets(files: Vec<SecretFile>, stamp: u64, out: &mut Restored) -> Result<(), String> {
    let n = files.len();
    for (dest, bytes) in files {
        if let Ok(old) = std::fs::read(&dest) {
            if old == bytes {
                continue;
            }
            let kept = PathBuf::from(format!("{}.replaced-{stamp}", dest.display()));
            std::fs::rename(&dest, &kept).map_err(|e| format!("{}: {e}", dest.display()))?;
            out.lines.push(format!(
                "{} differed from the backup's; the old one is kept in {}",
                dest.display(),
                kept.display()
            ));
        }
        if let Some(parent) = dest.parent() {
            if !parent.exists() {
                chainctl_common::fs::private_dir(parent)
                    .map_err(|e| format!("{}: {e}", parent.display()))?;
            }
        }
        chainctl_common::fs::write_atomic(&dest, &bytes)
            .map_err(|e| format!("{}: {e}", dest.display()))?;
        set_private(&dest)?;
    }
    out.lines
        .push(format!("{n} secret file(s) restored (mode 0600)"));
    Ok(())
}

fn set_private(p: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o600))
        .map_err(|e| format!("{}: {e}", p.display()))
}

/// Make `dir` a new empty private directory; what was in it is moved aside (never
/// deleted) and its new name returned.
fn replace_dir(dir: &Path, stamp: u64) -> Result<Option<PathBuf>, String> {
    let kept = match std::fs::read_dir(dir) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                let kept = PathBuf::from(format!("{}.replaced-{stamp}", dir.display()));
                std::fs::rename(dir, &kept).map_err(|e| {
                    format!(
                        "cannot move {} aside to {}: {e}",
                        dir.display(),
                        kept.display()
                    )
                })?;
                Some(kept)
            } else {
                None
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    chainctl_common::fs::private_dir(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    Ok(kept)
}

/// Give `dir` and what is in it the owner of `like` (a container's user owned the data
/// dir this one replaces). Only root can; others already own what they wrote.
fn copy_owner(like: &Path, dir: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(m) = std::fs::metadata(like) else {
        return;
    };
    let (uid, gid) = (m.uid(), m.gid());
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        let _ = std::os::unix::fs::chown(&p, Some(uid), Some(gid));
        if let Ok(rd) = std::fs::read_dir(&p) {
            stack.extend(rd.flatten().map(|e| e.path()));
        }
    }
}

/// Decompress one stored file to `dest`, checking its size and hash on the way.
fn put(from: &Path, f: &FileEntry, dest: &Path) -> Result<(), String> {
    let src = from.join(&f.stored);
    let e = |err: std::io::Error| format!("{} → {}: {err}", src.display(), dest.display());
    if let Some(parent) = dest.parent() {
        if !parent.exists() {
            chainctl_common::fs::private_dir(parent).map_err(e)?;
        }
    }
    let tmp = PathBuf::from(format!("{}.restoring", dest.display()));
    let input = std::fs::File::open(&src).map_err(e)?;
    let mut dec = HashingReader::new(zstd::stream::Decoder::new(input).map_err(e)?);
    let mut out = std::fs::File::create(&tmp).map_err(e)?;
    std::io::copy(&mut dec, &mut out).map_err(e)?;
    out.sync_all().map_err(e)?;
    let (size, sha) = dec.finish();
    if size != f.size || sha != f.sha256 {
        let _ = std::fs::remove_file(&tmp);
        return Err(format!(
            "{}: decompressed to {size} bytes with SHA-256 {sha}; the manifest says {} bytes with SHA-256 {}: the backup is damaged",
            src.display(),
            f.size,
            f.sha256
        ));
    }
    std::fs::rename(&tmp, dest).map_err(e)?;
    Ok(())
}
