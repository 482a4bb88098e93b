//! The API's accept loop, instead of `axum::serve` (which sets no header-read
//! timeout and takes every connection): hyper's HTTP/1 server with a timer, so a
//! client that dribbles its headers is closed after `api.header_read_timeout`,
//! and at most `api.max_connections` connections at once; more wait in the
//! listen backlog until one closes. 200 slowloris connections then cost 64 idle
//! tasks for a few seconds, not the API for minutes.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// How long open connections may take to finish their answer at shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// The address a request came from.
#[derive(Debug, Clone, Copy)]
pub(super) struct ClientAddr(pub std::net::SocketAddr);

/// The connection limits, from `api:`.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    pub header_read_timeout: Duration,
    pub max_connections: usize,
}

/// Serves `app` on `listener` until `stop`, then lets open answers finish.
pub(super) async fn run(listener: TcpListener, app: Router, limits: Limits, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let mut connections = JoinSet::new();
    loop {
        let slot = tokio::select! {
            _ = stop.cancelled() => break,
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
        };
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => (stream, peer),
                Err(e) => {
                    // Out of file descriptors, or a connection reset before it was
                    // accepted: wait a little rather than spin.
                    tracing::debug!(error = %e, "status API: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        while connections.try_join_next().is_some() {}
        // The client's address, for the audit log of device writes (docs/control.md).
        let service = TowerToHyperService::new(app.clone().layer(axum::Extension(ClientAddr(peer))));
        let stop = stop.clone();
        connections.spawn(async move {
            let _slot = slot;
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(limits.header_read_timeout);
            let connection = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(connection);
            tokio::select! {
                // Errors here are the client's (a timeout, a reset): nothing to log.
                _ = connection.as_mut() => {}
                _ = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(DRAIN, async { while connections.join_next().await.is_some() {} }).await;
}
