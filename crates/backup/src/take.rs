//! `chainctl backup`: each service captured consistently while the network runs.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use chainctl_common::secrets::{engine_token, JwtSecret};
use chainctl_core::profile::ExecutionKind;
use serde_json::json;

use crate::network::{network_files, relative, Network, Role, Service};
use crate::vault::{self, Recipients};
use crate::NETWORK;
use chainctl_core::backup::{
    hash_file, FileEntry, Manifest, SecretsEntry, ServiceEntry, Skipped, FORMAT,
};

/// What `chainctl backup` was asked.
pub struct BackupOptions {
    /// The services (a validator stands for itself and its execution clients); all when
    /// empty.
    pub services: Vec<String>,
    /// The directory the backup's own directory is made in.
    pub to: PathBuf,
    /// Encrypt the secrets to these and keep them in the backup; `None`: no secrets.
    pub secrets: Option<Recipients>,
    /// Draw progress bars (on a terminal).
    pub progress: bool,
    /// Keep only this many backups of this network in `to` (the oldest go, once the new
    /// one is whole).
    pub keep: Option<u32>,
}

/// A backup taken.
pub struct Taken {
    pub dir: PathBuf,
    pub manifest: Manifest,
    /// Older backups removed for `keep`.
    pub removed: Vec<PathBuf>,
}

/// zstd level: fast, and most of a store is hashes, which no level compresses.
const LEVEL: i32 = 3;

/// Unix seconds now.
fn now_unix() -> u64 {
    chainctl_common::time::now_ms() / 1000
}

/// Take a backup of `net` into a new directory under `o.to`. A backup that fails leaves
/// only `<dir>.partial-<pid>`, never a directory that looks whole.
pub fn backup(net: &Network, o: &BackupOptions) -> Result<Taken, String> {
    let (chain_id, genesis, consensus) = net.chain()?;
    let services = net.select(&o.services)?;
    // The directory named is made if missing, never re-moded (it may be shared); the
    // backup's own directory is 0700.
    std::fs::create_dir_all(&o.to).map_err(|e| format!("--to {}: {e}", o.to.display()))?;
    let created = now_unix();
    let name = format!("{}-{}", net.profile, stamp(created));
    let dir = o.to.join(&name);
    if dir.exists() {
        return Err(format!(
            "{} exists already: a backup never overwrites another; wait a second or give another --to",
            dir.display()
        ));
    }
    let partial = o.to.join(format!("{name}.partial-{}", std::process::id()));
    std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
        .create(&partial)
        .map_err(|e| format!("{}: {e}", partial.display()))?;
    let bars = Bars::new(o.progress);
    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    for s in &services {
        let started = Instant::now();
        let sub = partial.join(&s.name);
        chainctl_common::fs::private_dir(&sub).map_err(|e| format!("{}: {e}", sub.display()))?;
        let captured = match &s.role {
            Role::Validator => capture_validator(s, &sub, &bars),
            Role::Execution {
                kind: ExecutionKind::Builtin,
                ..
            } => capture_engine(s, &sub, genesis, &bars),
            Role::Execution { kind, .. } => Err(format!(
                "{}: a {} client's database is not consistent on disk while it runs: copy its data dir with it stopped (docs/backup.md, \"External clients\")",
                s.name,
                chainctl_core::clients::kind_name(*kind),
            )),
        };
        // An execution client not named itself is left out (and named in the manifest)
        // when it cannot be captured: a backup must not fail because one backup client
        // is down, which is when a backup is needed. Each validator must keep one
        // built-in client captured (checked below).
        let may_skip = matches!(s.role, Role::Execution { .. }) && !o.services.contains(&s.name);
        let (height, hash, files) = match captured {
            Ok(c) => c,
            Err(e) if may_skip => {
                let _ = std::fs::remove_dir_all(&sub);
                skipped.push(Skipped {
                    name: s.name.clone(),
                    reason: e,
                });
                continue;
            }
            Err(e) => return Err(e),
        };
        entries.push(ServiceEntry {
            name: s.name.clone(),
            role: s.role.label(),
            validator: match &s.role {
                Role::Execution { validator, .. } => Some(validator.clone()),
                Role::Validator => None,
            },
            height,
            block_hash: hash,
            took_ms: started.elapsed().as_millis() as u64,
            files: files
                .into_iter()
                .map(|mut f| {
                    f.stored = format!("{}/{}", s.name, f.stored);
                    f
                })
                .collect(),
        });
    }
    // Each validator keeps at least one built-in client captured.
    for v in services.iter().filter(|s| s.role == Role::Validator) {
        let mine = |name: &str| {
            services.iter().any(|s| {
                s.name == name
                    && matches!(&s.role, Role::Execution { validator, kind: ExecutionKind::Builtin } if *validator == v.name)
            })
        };
        let wanted = services.iter().any(|s| mine(&s.name));
        if wanted && !entries.iter().any(|e| mine(&e.name)) {
            let why: Vec<String> = skipped
                .iter()
                .filter(|k| mine(&k.name))
                .map(|k| k.reason.clone())
                .collect();
            return Err(format!(
                "{}: none of its execution clients could be captured: {}",
                v.name,
                why.join("; ")
            ));
        }
    }
    // The network's files, so a new host can be given the same network.
    let sub = partial.join(NETWORK);
    chainctl_common::fs::private_dir(&sub).map_err(|e| format!("{}: {e}", sub.display()))?;
    let mut files = Vec::new();
    for f in network_files(&net.layout) {
        let rel = relative(&net.layout, &f);
        let stored = format!("{}.zst", rel.replace('/', "--"));
        let mut e = compress(&f, &sub.join(&stored), &bars)?;
        e.stored = format!("{NETWORK}/{stored}");
        e.restore_to = rel;
        files.push(e);
    }
    entries.push(ServiceEntry {
        name: NETWORK.into(),
        role: NETWORK.into(),
        validator: None,
        height: 0,
        block_hash: format!("{genesis}"),
        took_ms: 0,
        files,
    });
    let secrets = match &o.secrets {
        None => None,
        Some(to) => {
            let files: Vec<(PathBuf, String)> = net
                .secret_files
                .iter()
                .filter(|(p, _)| p.exists())
                .cloned()
                .collect();
            let out = partial.join(crate::SECRETS);
            vault::seal(&files, to, &out)?;
            let (stored_size, stored_sha256) =
                hash_file(&out).map_err(|e| format!("{}: {e}", out.display()))?;
            Some(SecretsEntry {
                stored: crate::SECRETS.into(),
                stored_size,
                stored_sha256,
                encryption: to.label().into(),
                files: files.into_iter().map(|(_, n)| n).collect(),
            })
        }
    };
    let m = Manifest {
        format: FORMAT,
        chainctl: env!("CARGO_PKG_VERSION").into(),
        created_unix: created,
        profile: net.profile.clone(),
        profile_digest: net.profile_digest.clone(),
        chain_id,
        genesis_hash: format!("{genesis}"),
        consensus_genesis_hash: format!("{consensus}"),
        services: entries,
        secrets,
        skipped,
    };
    m.write(&partial)?;
    sync_dir(&partial);
    std::fs::rename(&partial, &dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    sync_dir(&o.to);
    let removed = match o.keep {
        Some(keep) => prune(&o.to, &dir, &m, keep as usize)?,
        None => Vec::new(),
    };
    Ok(Taken {
        dir,
        manifest: m,
        removed,
    })
}

/// Remove the oldest backups of `m`'s network in `dir` beyond the newest `keep`, the
/// one just taken (`taken`) counted first and never removed; what was removed. Only
/// backups holding at least the services `m` holds count (a backup of one client does
/// not push out backups of the whole network); other networks' backups and directories
/// that are not backups stay.
fn prune(dir: &Path, taken: &Path, m: &Manifest, keep: usize) -> Result<Vec<PathBuf>, String> {
    let covers = |b: &Manifest| {
        m.services
            .iter()
            .all(|s| b.services.iter().any(|x| x.name == s.name))
    };
    let mut ours: Vec<PathBuf> = chainctl_core::backup::list(dir)?
        .into_iter()
        .filter(|(p, b)| {
            p != taken
                && b.as_ref().is_ok_and(|b| {
                    b.profile == m.profile
                        && b.chain_id == m.chain_id
                        && b.genesis_hash == m.genesis_hash
                        && covers(b)
                })
        })
        .map(|(p, _)| p)
        .collect();
    // Oldest first: keep the newest `keep - 1` besides the one just taken.
    let excess = ours.len().saturating_sub(keep.max(1) - 1);
    ours.truncate(excess);
    let mut removed = Vec::new();
    for p in ours {
        std::fs::remove_dir_all(&p).map_err(|e| format!("removing {}: {e}", p.display()))?;
        removed.push(p);
    }
    Ok(removed)
}

/// `YYYYmmddTHHMMSSZ` of a unix time (UTC), without a date library.
fn stamp(t: u64) -> String {
    let days = (t / 86_400) as i64;
    let secs = t % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

fn sync_dir(d: &Path) {
    if let Ok(f) = std::fs::File::open(d) {
        let _ = f.sync_all();
    }
}

/// A validator: its decided-block log as it is now (a prefix of an append-only file of
/// checksummed records, its torn tail cut as the node cuts it at start) and its config.
fn capture_validator(
    s: &Service,
    out: &Path,
    bars: &Bars,
) -> Result<(u64, String, Vec<FileEntry>), String> {
    let log = s.data_dir.join("decided.log");
    let stage = out.join("decided.log");
    let len = std::fs::metadata(&log)
        .map_err(|e| {
            format!(
                "{}: {}: {e} (has the validator ever run?)",
                s.name,
                log.display()
            )
        })?
        .len();
    {
        let src = std::fs::File::open(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let mut dst =
            std::fs::File::create(&stage).map_err(|e| format!("{}: {e}", stage.display()))?;
        std::io::copy(&mut src.take(len), &mut dst)
            .map_err(|e| format!("{}: {e}", log.display()))?;
    }
    let (height, hash) = {
        let mut store = chainctl_consensus::store::Store::open(&stage)?;
        let last = store.last_height().ok_or_else(|| {
            format!(
                "{}: {} holds no decided height yet: back it up once the chain has blocks",
                s.name,
                log.display()
            )
        })?;
        let d = store
            .get(last)?
            .ok_or_else(|| format!("{}: height {} is not in the log", s.name, last.0))?;
        (last.0, format!("{}", d.value.id.0))
    };
    let mut files = vec![compress(&stage, &out.join("decided.log.zst"), bars)?];
    files[0].restore_to = "decided.log".into();
    let _ = std::fs::remove_file(&stage);
    let config = s.data_dir.join("config.json");
    if config.exists() {
        let mut f = compress(&config, &out.join("config.json.zst"), bars)?;
        f.restore_to = "config.json".into();
        files.push(f);
    }
    Ok((height, hash, files))
}

/// The built-in engine: it exports its store through a read transaction into its data
/// dir; the export is compressed into the backup and removed.
fn capture_engine(
    s: &Service,
    out: &Path,
    genesis: alloy_primitives::B256,
    bars: &Bars,
) -> Result<(u64, String, Vec<FileEntry>), String> {
    let addr = s.engine.ok_or_else(|| {
        format!(
            "{}: no Engine API address in the state file: is the network up (`chainctl status`)?",
            s.name
        )
    })?;
    let jwt = s.secrets.first().ok_or_else(|| {
        format!(
            "{}: no Engine API secret is planned for it: run `chainctl jwt generate`",
            s.name
        )
    })?;
    let secret = JwtSecret::read(jwt).map_err(|e| format!("{}: {e}", s.name))?;
    let token = engine_token(&secret, now_unix());
    let body =
        json!({"jsonrpc": "2.0", "id": 1, "method": "chainctl_exportSnapshotV1", "params": []});
    let (code, text) = chainctl_common::http::text(
        addr,
        None,
        "POST",
        "/",
        Some(&token),
        Some(&body.to_string()),
        Duration::from_secs(600),
    )
    .map_err(|e| {
        format!(
            "{}: the engine's snapshot: {e} (is it running? `chainctl status`)",
            s.name
        )
    })?;
    let v: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: HTTP {code}: {e}: {text}", s.name))?;
    if let Some(e) = v.get("error") {
        return Err(format!("{}: the engine refused the snapshot: {e}", s.name));
    }
    let r = &v["result"];
    let snap_genesis = r["genesis"].as_str().unwrap_or_default();
    if snap_genesis != format!("{genesis}") {
        return Err(format!(
            "{}: the engine holds the chain with genesis {snap_genesis}, the network's genesis is {genesis}: its data dir is not of this network",
            s.name
        ));
    }
    let rel = r["file"]
        .as_str()
        .ok_or_else(|| format!("{}: the snapshot answer names no file: {r}", s.name))?;
    let file = s.data_dir.join(rel);
    let mut f = compress(&file, &out.join("engine.redb.zst"), bars)?;
    let _ = std::fs::remove_file(&file);
    f.restore_to = "engine.redb".into();
    Ok((
        r["finalizedNumber"].as_u64().unwrap_or_default(),
        r["finalized"].as_str().unwrap_or_default().to_string(),
        vec![f],
    ))
}

/// zstd `src` into `dst`; the entry (its `stored` is `dst`'s file name).
fn compress(src: &Path, dst: &Path, bars: &Bars) -> Result<FileEntry, String> {
    let e = |err: std::io::Error| format!("{} → {}: {err}", src.display(), dst.display());
    let input = std::fs::File::open(src).map_err(e)?;
    let len = input.metadata().map_err(e)?.len();
    let bar = bars.file(len, &src.display().to_string());
    let mut hasher = HashingReader::new(bar.wrap_read(input));
    let out = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(dst)
        .map_err(e)?;
    let mut enc = zstd::stream::Encoder::new(out, LEVEL).map_err(e)?;
    std::io::copy(&mut hasher, &mut enc).map_err(e)?;
    let out = enc.finish().map_err(e)?;
    out.sync_all().map_err(e)?;
    bar.finish_and_clear();
    let (size, sha256) = hasher.finish();
    let (stored_size, stored_sha256) = hash_file(dst).map_err(e)?;
    Ok(FileEntry {
        stored: dst
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        restore_to: String::new(),
        stored_size,
        stored_sha256,
        size,
        sha256,
    })
}

/// Hashes what is read through it.
pub(crate) struct HashingReader<R> {
    inner: R,
    hash: sha2::Sha256,
    n: u64,
}

impl<R: Read> HashingReader<R> {
    pub(crate) fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hash: sha2::Digest::new(),
            n: 0,
        }
    }
    /// Bytes read and their hex SHA-256.
    pub(crate) fn finish(self) -> (u64, String) {
        (self.n, hex::encode(sha2::Digest::finalize(self.hash)))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let k = self.inner.read(buf)?;
        sha2::Digest::update(&mut self.hash, &buf[..k]);
        self.n += k as u64;
        Ok(k)
    }
}

/// Progress bars on a terminal, nothing elsewhere.
pub(crate) struct Bars {
    on: bool,
}

impl Bars {
    pub(crate) fn new(on: bool) -> Self {
        Bars { on }
    }
    pub(crate) fn file(&self, len: u64, what: &str) -> indicatif::ProgressBar {
        if !self.on {
            return indicatif::ProgressBar::hidden();
        }
        let b = indicatif::ProgressBar::new(len);
        b.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:40!} {bar:30} {bytes}/{total_bytes} {bytes_per_sec}",
            )
            .expect("a valid template"),
        );
        b.set_message(what.to_string());
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_utc_calendar_times() {
        assert_eq!(stamp(0), "19700101T000000Z");
        assert_eq!(stamp(951_782_400), "20000229T000000Z");
        assert_eq!(stamp(1_796_643_296), "20261207T113456Z");
    }
}
