//! `chainctl backup`, `chainctl restore` and `chainctl stop`.

use super::*;
use chainctl_backup::{manifest, Network, Recipients, Unlock};

/// Environment variable a backup's passphrase may come from (never from an argument,
/// which other users can read in the process list).
pub const PASSPHRASE_ENV: &str = "CHAINCTL_BACKUP_PASSPHRASE";

/// `chainctl backup`.
#[derive(Debug, clap::Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct BackupArgs {
    /// Check or list backups instead of taking one.
    #[command(subcommand)]
    pub action: Option<BackupAction>,
    /// The services to back up (a validator stands for itself and its execution
    /// clients); every one when none is named.
    pub services: Vec<String>,
    /// The directory the backup is made in (as `<profile>-<UTC time>/`).
    #[arg(long, value_name = "DIR")]
    pub to: Option<PathBuf>,
    /// Also keep the secrets (validator keys, JWT secrets, tokens, TLS keys), encrypted
    /// with age to a passphrase (--passphrase-file or $CHAINCTL_BACKUP_PASSPHRASE) or to
    /// --recipient keys; never in clear.
    #[arg(long)]
    pub include_secrets: bool,
    /// A file holding the passphrase the secrets are encrypted with.
    #[arg(long, value_name = "FILE", conflicts_with = "recipient")]
    pub passphrase_file: Option<PathBuf>,
    /// An age X25519 recipient (`age1…`) the secrets are encrypted to (repeatable).
    #[arg(long, value_name = "AGE_PUBLIC_KEY")]
    pub recipient: Vec<String>,
    /// Keep only the newest N backups of this network in --to (older ones are removed
    /// once the new one is whole).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..))]
    pub keep: Option<u32>,
}

/// `chainctl backup verify|list`.
#[derive(Debug, Subcommand)]
pub enum BackupAction {
    /// Re-hash every file of a backup against its manifest (exit 1 naming each file
    /// that differs).
    Verify {
        /// The backup's directory.
        backup: PathBuf,
    },
    /// The backups in a directory, oldest first: when, chain, heights, size, whole.
    List {
        /// The directory backups were made in (`--to`).
        dir: PathBuf,
    },
}

/// `chainctl restore`.
#[derive(Debug, clap::Args)]
pub struct RestoreArgs {
    /// The backup's directory.
    pub from: PathBuf,
    /// The services to restore (a validator stands for itself and its execution
    /// clients); every one the backup holds when none is named. Each must be stopped
    /// (`chainctl stop`).
    pub services: Vec<String>,
    /// A file holding the passphrase of the backup's secrets (or
    /// $CHAINCTL_BACKUP_PASSPHRASE); without it or --identity, data only.
    #[arg(long, value_name = "FILE", conflicts_with = "identity")]
    pub passphrase_file: Option<PathBuf>,
    /// An age identity file that opens the backup's secrets.
    #[arg(long, value_name = "FILE")]
    pub identity: Option<PathBuf>,
    /// Restore the execution clients named from this other one's snapshot in the backup
    /// (built-in engines of the same chain): a new or broken client starts near the
    /// head instead of replaying every block since genesis.
    #[arg(long, value_name = "SERVICE")]
    pub source: Option<String>,
    /// Leave the restored services stopped.
    #[arg(long)]
    pub no_start: bool,
    /// The lowest signing floor for a restored validator: the last height its key may
    /// have signed. Needed when no other validator answers (the whole network restored)
    /// and the network ran on after the backup.
    #[arg(long, value_name = "HEIGHT")]
    pub sign_floor: Option<u64>,
}

fn passphrase(file: Option<&Path>) -> Result<Option<String>> {
    if let Some(f) = file {
        let text = std::fs::read_to_string(f)
            .with_context(|| format!("--passphrase-file {}", f.display()))?;
        let p = text.trim_end_matches(['\n', '\r']).to_string();
        if p.is_empty() {
            bail!("--passphrase-file {}: the file is empty", f.display());
        }
        return Ok(Some(p));
    }
    Ok(std::env::var(PASSPHRASE_ENV).ok().filter(|p| !p.is_empty()))
}

/// The network of the profile given (else the one the state dir's supervisor runs,
/// else the embedded default) in its state dir.
fn network(profile: Option<&Path>, state_dir: Option<&Path>) -> Result<Network> {
    let recorded = state_dir.and_then(|d| {
        state::read_json::<StateFile>(&Layout::new(d).state_file())
            .ok()
            .flatten()?
            .profile_path
    });
    let path = profile.map(Path::to_path_buf).or(recorded);
    let loaded = chainctl_core::loader::load(setup::source(path.as_deref())?)?;
    let layout = setup::layout(&loaded, state_dir);
    Network::open(&loaded, layout).map_err(|e| anyhow::anyhow!(e))
}

pub(super) fn backup_cmd(
    profile: Option<&Path>,
    state_dir: Option<&Path>,
    a: BackupArgs,
) -> Result<ExitCode> {
    match a.action {
        Some(BackupAction::Verify { backup }) => {
            let m = manifest::Manifest::read(&backup).map_err(|e| anyhow::anyhow!(e))?;
            let bad = manifest::verify(&backup, &m, &[]);
            if bad.is_empty() {
                let files: usize = m.services.iter().map(|s| s.files.len()).sum::<usize>()
                    + usize::from(m.secrets.is_some());
                println!(
                    "{}: whole — {files} files, {} bytes, each matches its SHA-256 in the manifest",
                    backup.display(),
                    m.stored_bytes()
                );
                return Ok(ExitCode::SUCCESS);
            }
            for b in &bad {
                println!("DAMAGED {b}");
            }
            println!(
                "{}: {} file(s) differ from the manifest: do not restore from it",
                backup.display(),
                bad.len()
            );
            Ok(ExitCode::FAILURE)
        }
        Some(BackupAction::List { dir }) => {
            let all = manifest::list(&dir).map_err(|e| anyhow::anyhow!(e))?;
            if all.is_empty() {
                println!("no backups in {}", dir.display());
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{:<40} {:>8} {:>10} {:>12}  {:<6} SERVICES (HEIGHT)",
                "BACKUP", "CHAIN", "AGE", "BYTES", "WHOLE"
            );
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_secs());
            for (path, m) in all {
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_default();
                match m {
                    Err(e) => println!("{name:<40} unreadable: {e}"),
                    Ok(m) => {
                        let whole = manifest::verify(&path, &m, &[]).is_empty();
                        let services: Vec<String> = m
                            .services
                            .iter()
                            .filter(|s| s.name != "network")
                            .map(|s| format!("{} ({})", s.name, s.height))
                            .collect();
                        println!(
                            "{name:<40} {:>8} {:>10} {:>12}  {:<6} {}{}",
                            m.chain_id,
                            humantime::format_duration(Duration::from_secs(
                                now.saturating_sub(m.created_unix)
                            ))
                            .to_string()
                            .split(' ')
                            .next()
                            .unwrap_or_default(),
                            m.stored_bytes(),
                            if whole { "yes" } else { "NO" },
                            services.join(", "),
                            if m.secrets.is_some() {
                                ", secrets (encrypted)"
                            } else {
                                ""
                            }
                        );
                    }
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        None => {
            let to = a.to.ok_or_else(|| {
                anyhow::anyhow!("--to DIR is required: the directory the backup is made in")
            })?;
            let secrets = if a.include_secrets {
                Some(if !a.recipient.is_empty() {
                    Recipients::Keys(a.recipient)
                } else {
                    Recipients::Passphrase(passphrase(a.passphrase_file.as_deref())?.ok_or_else(|| {
                        anyhow::anyhow!(
                            "--include-secrets needs what to encrypt them to: --passphrase-file FILE, ${PASSPHRASE_ENV}, or --recipient age1…"
                        )
                    })?)
                })
            } else {
                if a.passphrase_file.is_some() || !a.recipient.is_empty() {
                    bail!("--passphrase-file and --recipient encrypt secrets: add --include-secrets to keep them in the backup");
                }
                None
            };
            let net = network(profile, state_dir)?;
            let t0 = std::time::Instant::now();
            let taken = chainctl_backup::backup(
                &net,
                &chainctl_backup::BackupOptions {
                    services: a.services,
                    to,
                    secrets,
                    progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
                    keep: a.keep,
                },
            )
            .map_err(|e| anyhow::anyhow!(e))?;
            let (dir, m) = (&taken.dir, &taken.manifest);
            for s in m.services.iter().filter(|s| s.name != "network") {
                let bytes: u64 = s.files.iter().map(|f| f.stored_size).sum();
                println!(
                    "{:<14} height {:>6}  {}  {} bytes  {} ms",
                    s.name, s.height, s.block_hash, bytes, s.took_ms
                );
            }
            for k in &m.skipped {
                println!("{:<14} SKIPPED: {}", k.name, k.reason);
            }
            match &m.secrets {
                Some(s) => println!(
                    "secrets: {} files, encrypted ({})",
                    s.files.len(),
                    s.encryption
                ),
                None => println!("secrets: not included (--include-secrets keeps them, encrypted)"),
            }
            for r in &taken.removed {
                println!("removed {} (--keep)", r.display());
            }
            println!(
                "backup {} — {} bytes in {:.1} s",
                dir.display(),
                m.stored_bytes(),
                t0.elapsed().as_secs_f64()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub(super) fn restore_cmd(
    profile: Option<&Path>,
    state_dir: Option<&Path>,
    a: RestoreArgs,
) -> Result<ExitCode> {
    let unlock = match (&a.identity, passphrase(a.passphrase_file.as_deref())?) {
        (Some(id), _) => Some(Unlock::Identity(id.clone())),
        (None, Some(p)) => Some(Unlock::Passphrase(p)),
        (None, None) => None,
    };
    let net = network(profile, state_dir)?;
    let t0 = std::time::Instant::now();
    let r = chainctl_backup::restore(
        &net,
        &chainctl_backup::RestoreOptions {
            from: a.from,
            services: a.services,
            unlock,
            source: a.source,
            start: !a.no_start,
            sign_floor: a.sign_floor,
        },
    )
    .map_err(|e| anyhow::anyhow!(e))?;
    for l in &r.lines {
        println!("{l}");
    }
    println!("restored in {:.1} s", t0.elapsed().as_secs_f64());
    Ok(ExitCode::SUCCESS)
}

pub(super) fn stop_cmd(
    profile: Option<&Path>,
    state_dir: Option<&Path>,
    services: &[String],
) -> Result<ExitCode> {
    let layout = layout_of(profile, state_dir)?;
    for s in services {
        let r = call_supervisor(
            &layout,
            &Request::Stop {
                service: s.to_string(),
            },
        )?;
        println!("{}", r.message.unwrap_or_default());
    }
    // Back only once each has stopped: a restore may follow at once.
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let st = call_supervisor(&layout, &Request::Status)?;
        let pending: Vec<String> = st
            .status
            .map(|s| s.services)
            .unwrap_or_default()
            .into_iter()
            .filter(|x| services.contains(&x.name) && x.state != "stopped")
            .map(|x| format!("{} ({})", x.name, x.state))
            .collect();
        if pending.is_empty() {
            return Ok(ExitCode::SUCCESS);
        }
        if std::time::Instant::now() > deadline {
            bail!("not stopped after 120 s: {}", pending.join(", "));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}
