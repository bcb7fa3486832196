//! The systemd notification protocol (sd_notify), for chainctl's own node roles run as
//! `Type=notify` units: `READY=1` once the node serves, and `WATCHDOG=1` at half the
//! unit's `WatchdogSec=` from the node's async runtime, so a wedged runtime is restarted
//! by systemd. Without `NOTIFY_SOCKET` (not under systemd) everything here does nothing.

use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

fn socket_addr(path: &str) -> std::io::Result<SocketAddr> {
    match path.strip_prefix('@') {
        // An abstract socket (systemd's default in containers and user managers).
        Some(name) => {
            use std::os::linux::net::SocketAddrExt;
            SocketAddr::from_abstract_name(name.as_bytes())
        }
        None => SocketAddr::from_pathname(path),
    }
}

/// Sends `state` (e.g. `READY=1`) to the service manager; false when there is none.
pub fn notify(state: &str) -> bool {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return false;
    };
    let Some(path) = path.to_str() else {
        return false;
    };
    let sent = socket_addr(path)
        .and_then(|addr| UnixDatagram::unbound()?.send_to_addr(state.as_bytes(), &addr));
    if let Err(e) = &sent {
        tracing::warn!("cannot notify the service manager at {path}: {e}");
    }
    sent.is_ok()
}

/// The watchdog period the service manager asks for (`WATCHDOG_USEC`, for this pid).
pub fn watchdog_period() -> Option<Duration> {
    if let Ok(pid) = std::env::var("WATCHDOG_PID") {
        if pid.parse::<u32>().ok() != Some(std::process::id()) {
            return None;
        }
    }
    let usec: u64 = std::env::var("WATCHDOG_USEC").ok()?.parse().ok()?;
    (usec > 0).then(|| Duration::from_micros(usec))
}

/// Says the node is ready and, when systemd asks for a watchdog, pings it at half the
/// period from a task of the current tokio runtime. Call from inside that runtime.
pub fn ready() {
    if !notify("READY=1") {
        return;
    }
    if let Some(period) = watchdog_period() {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period / 2);
            loop {
                tick.tick().await;
                notify("WATCHDOG=1");
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn notifications_reach_a_path_socket() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify");
        let server = UnixDatagram::bind(&path).unwrap();
        let addr = socket_addr(path.to_str().unwrap()).unwrap();
        UnixDatagram::unbound()
            .unwrap()
            .send_to_addr(b"READY=1", &addr)
            .unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        assert!(socket_addr("@chainctl-test").is_ok());
    }
}
