//! The API and the gateway served over TLS: hyper serves each TLS connection (axum's own
//! `serve` takes plain TCP only), with WebSocket upgrades (WSS) and the peer's address
//! (`ConnectInfo`, which the gateway's per-address limits read). Certificates are loaded,
//! and reloaded when their files change, by `chainctl_common::tls`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;

/// A TLS handshake that takes longer than this is dropped (a client that connects and
/// says nothing must not hold a task forever).
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves `app` over TLS on `listener` until the process ends: one task per
/// connection, the handshake bounded by [`HANDSHAKE_TIMEOUT`]. `what` names the listener
/// in logs.
pub async fn serve(
    what: &'static str,
    listener: tokio::net::TcpListener,
    config: Arc<rustls::ServerConfig>,
    app: axum::Router,
) {
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!("{what} accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Answers go out as soon as they are written (no Nagle wait).
        let _ = tcp.set_nodelay(true);
        let acceptor = acceptor.clone();
        let app = app
            .clone()
            .layer(axum::Extension(ConnectInfo::<SocketAddr>(peer)));
        tokio::spawn(async move {
            let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    tracing::debug!(%peer, "{what} TLS handshake: {e}");
                    return;
                }
                Err(_) => return,
            };
            let service = hyper_util::service::TowerToHyperService::new(app);
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(hyper_util::rt::TokioIo::new(tls), service)
                .with_upgrades()
                .await;
        });
    }
}
