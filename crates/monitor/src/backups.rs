//! Scheduled backups (`backup:` in the profile): the monitor runs `chainctl backup --to
//! DIR --keep N` as a child process at each interval (the CLI takes the backup, so this
//! crate never links the engine or the consensus node) and exports what the newest
//! backup of the network holds: its age, size and height per service.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing::{info, warn};

use super::metrics::Scrape;

/// What the profile asks (`backup:`), with the state dir the child is run on.
#[derive(Debug, Clone)]
pub struct Scheduled {
    pub every: Duration,
    pub keep: u32,
    pub to: PathBuf,
    pub recipients: Vec<String>,
    pub state_dir: PathBuf,
    pub profile: String,
}

/// The newest backup of this network in `to`.
#[derive(Debug, Clone, Default)]
struct Newest {
    created_unix: u64,
    /// Per service: stored bytes and height.
    services: Vec<(String, u64, u64)>,
}

#[derive(Default)]
struct Inner {
    ok: u64,
    failed: u64,
    last_duration_s: Option<f64>,
    newest: Option<Newest>,
}

/// Runs and their outcome, for `/metrics`.
#[derive(Default)]
pub struct Stats {
    inner: Mutex<Inner>,
}

/// After `up`, how long the first backup waits when none is fresh: the validators have
/// decided their first blocks by then.
const FIRST_AFTER: Duration = Duration::from_secs(10);

/// Unix seconds now.
fn now_unix() -> u64 {
    chainctl_common::time::now_ms() / 1000
}

impl Stats {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Read the newest backup of `s.profile` in `s.to` again.
    fn refresh(&self, s: &Scheduled) {
        let newest = chainctl_core::backup::list(&s.to)
            .unwrap_or_default()
            .into_iter()
            .filter_map(|(_, m)| m.ok())
            .rfind(|m| m.profile == s.profile)
            .map(|m| Newest {
                created_unix: m.created_unix,
                services: m
                    .services
                    .iter()
                    .filter(|e| e.name != chainctl_core::backup::NETWORK)
                    .map(|e| {
                        (
                            e.name.clone(),
                            e.files.iter().map(|f| f.stored_size).sum(),
                            e.height,
                        )
                    })
                    .collect(),
            });
        self.lock().newest = newest;
    }

    /// The families of scheduled backups.
    pub fn register(&self, sc: &Scrape) {
        let i = self.lock();
        let runs = sc.counters(
            "chainctl_backup_runs_total",
            "Scheduled backups run, by result (ok, failed).",
            &["result"],
        );
        super::metrics::set_total(&runs, &["ok"], i.ok as f64);
        super::metrics::set_total(&runs, &["failed"], i.failed as f64);
        if let Some(d) = i.last_duration_s {
            sc.gauge(
                "chainctl_backup_last_duration_seconds",
                "How long the last scheduled backup took.",
                d,
            );
        }
        let age = sc.gauges(
            "chainctl_backup_age_seconds",
            "Age of the newest backup of each service in backup.to.",
            &["service"],
        );
        let bytes = sc.gauges(
            "chainctl_backup_bytes",
            "Stored (compressed) size of each service in the newest backup.",
            &["service"],
        );
        let height = sc.gauges(
            "chainctl_backup_height",
            "The height each service was captured at in the newest backup.",
            &["service"],
        );
        if let Some(n) = &i.newest {
            let a = now_unix().saturating_sub(n.created_unix) as f64;
            for (name, b, h) in &n.services {
                age.with_label_values(&[name]).set(a);
                bytes.with_label_values(&[name]).set(*b as f64);
                height.with_label_values(&[name]).set(*h as f64);
            }
        }
    }
}

/// Run the schedule for as long as the monitor runs.
pub async fn run(stats: Arc<Stats>, s: Scheduled) {
    let st = stats.clone();
    let sc = s.clone();
    let _ = tokio::task::spawn_blocking(move || st.refresh(&sc)).await;
    let fresh_until = stats
        .lock()
        .newest
        .as_ref()
        .map(|n| n.created_unix + s.every.as_secs());
    let mut wait = match fresh_until {
        Some(t) if t > now_unix() => Duration::from_secs(t - now_unix()),
        _ => FIRST_AFTER,
    };
    info!(to = %s.to.display(), every = %humantime::format_duration(s.every), first_in = %humantime::format_duration(wait), "scheduled backups");
    loop {
        tokio::time::sleep(wait).await;
        let started = std::time::Instant::now();
        let outcome = take(&s).await;
        let took = started.elapsed();
        {
            let mut i = stats.lock();
            i.last_duration_s = Some(took.as_secs_f64());
            match &outcome {
                Ok(_) => i.ok += 1,
                Err(_) => i.failed += 1,
            }
        }
        match outcome {
            Ok(line) => info!(took_s = took.as_secs_f64(), "scheduled backup: {line}"),
            Err(e) => warn!("scheduled backup failed: {e}"),
        }
        let st = stats.clone();
        let sc = s.clone();
        let _ = tokio::task::spawn_blocking(move || st.refresh(&sc)).await;
        wait = s.every;
    }
}

/// One `chainctl backup` child; its last line, or why it failed.
async fn take(s: &Scheduled) -> Result<String, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find chainctl itself: {e}"))?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.arg("--state-dir")
        .arg(&s.state_dir)
        .arg("backup")
        .arg("--to")
        .arg(&s.to)
        .arg("--keep")
        .arg(s.keep.to_string());
    if !s.recipients.is_empty() {
        cmd.arg("--include-secrets");
        for r in &s.recipients {
            cmd.arg("--recipient").arg(r);
        }
    }
    cmd.env("CHAINCTL_LOG", "warn")
        .env_remove("CHAINCTL_PROFILE")
        .env_remove("CHAINCTL_BACKUP_PASSPHRASE")
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let o = cmd
        .output()
        .await
        .map_err(|e| format!("cannot run chainctl backup: {e}"))?;
    let last = |b: &[u8]| {
        String::from_utf8_lossy(b)
            .lines()
            .last()
            .unwrap_or_default()
            .to_string()
    };
    if o.status.success() {
        Ok(last(&o.stdout))
    } else {
        Err(format!("{}: {}", o.status, last(&o.stderr)))
    }
}
