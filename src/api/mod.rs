//! The status API (axum, 127.0.0.1:9360 by default): /health, /metrics
//! (Prometheus), /api/devices, /api/readings/latest, /api/readings, /api/capacity,
//! /api/events (server-sent events), and the web page with its chart library
//! (/assets/), embedded in the binary. It reads the live status and the SQLite files
//! (on a blocking thread); its one write, `POST /api/devices/<id>/write`, is
//! behind two locks (control.rs, docs/control.md).

mod assets;
mod capacity;
mod control;
mod costs;
mod devices;
mod errors;
mod events;
mod export;
mod health;
mod host;
mod metrics;
mod readings;
mod server;
mod windows;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::secret::{read_secret_file, Secret};
use crate::config::BaseConfig;
use crate::daemon::live::SharedStatus;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("api.token_file {path}: {source}")]
    Token { path: PathBuf, source: std::io::Error },
}

#[derive(Debug, Clone)]
pub struct ApiState {
    pub status: SharedStatus,
    /// The SQLite database, when that backend is configured.
    pub db: Option<PathBuf>,
    pub outbox: PathBuf,
    token: Option<Secret>,
    /// `api.unhealthy_after`: how long a backend may fail before /health is 503.
    unhealthy_after: std::time::Duration,
    /// `api.allowed_hosts`, `api.header_read_timeout`, `api.max_connections`.
    allowed_hosts: Vec<String>,
    limits: server::Limits,
    /// `api.max_event_streams`: a permit per open `GET /api/events`.
    event_streams: Arc<tokio::sync::Semaphore>,
    max_event_streams: usize,
    /// Cancelled when the API stops: open event streams end with it.
    stop: CancellationToken,
}

impl ApiState {
    pub fn new(base: &BaseConfig, status: SharedStatus) -> Result<ApiState, ApiError> {
        let token = match (&base.api.token, &base.api.token_file) {
            (Some(t), _) => Some(t.clone()),
            (None, Some(path)) => Some(read_secret_file(path).map_err(|source| ApiError::Token {
                path: path.clone(),
                source,
            })?),
            (None, None) => None,
        };
        Ok(ApiState {
            status,
            db: base.backends.sqlite.as_ref().map(|s| base.data_dir.join(&s.path)),
            outbox: crate::backends::outbox::path(&base.data_dir),
            token,
            unhealthy_after: base.api.unhealthy_after,
            allowed_hosts: base.api.allowed_hosts.clone(),
            limits: server::Limits {
                header_read_timeout: base.api.header_read_timeout,
                max_connections: base.api.max_connections,
            },
            event_streams: Arc::new(tokio::sync::Semaphore::new(base.api.max_event_streams)),
            max_event_streams: base.api.max_event_streams,
            stop: CancellationToken::new(),
        })
    }
}

/// Binds (so a taken port is reported at once) and serves until `stop`.
pub async fn serve(
    listen: SocketAddr,
    state: ApiState,
    stop: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>), ApiError> {
    serve_on(bind(listen).await?, state, stop)
}

/// Binds the API's address; a reload binds a new one before it applies anything.
pub async fn bind(listen: SocketAddr) -> Result<tokio::net::TcpListener, ApiError> {
    tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| ApiError::Bind { addr: listen, source })
}

/// Serves on a bound listener until `stop`.
pub fn serve_on(
    listener: tokio::net::TcpListener,
    state: ApiState,
    stop: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>), ApiError> {
    let addr = listener.local_addr().map_err(|source| ApiError::Bind {
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
        source,
    })?;
    let limits = state.limits;
    let hosts = Arc::new(host::HostPolicy::new(addr.ip(), &state.allowed_hosts));
    let mut state = state;
    state.stop = stop.child_token();
    let state = Arc::new(state);
    tokio::spawn(events::watch_backends(state.status.clone(), stop.clone()));
    let app = Router::new()
        .route("/", get(page))
        .route("/assets/{name}", get(assets::asset))
        .route("/api/events", get(events::events))
        .route("/health", get(health))
        .route("/metrics", get(metrics::metrics))
        .route("/api/devices", get(devices::devices))
        .route("/api/devices/{id}/write", post(control::write))
        .route("/api/readings/latest", get(latest))
        .route("/api/readings", get(readings::readings))
        .route("/api/capacity", get(capacity::capacity))
        .route("/api/export", get(export::export))
        .route("/api/costs", get(costs::costs))
        .fallback(errors::not_found)
        .method_not_allowed_fallback(errors::method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), authorize))
        .layer(middleware::from_fn_with_state(hosts, host::check_host))
        .with_state(state);
    let task = tokio::spawn(server::run(listener, app, limits, stop));
    tracing::info!(%addr, "status API listening");
    Ok((addr, task))
}

/// Compares in constant time, so the token cannot be guessed byte by byte from
/// response times.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn authorize(State(state): State<Arc<ApiState>>, request: Request, next: Next) -> Response {
    let Some(token) = &state.token else {
        return next.run(request).await;
    };
    let given = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    // The page and its script are public (they hold no data); the page asks for
    // the token. An EventSource cannot send headers: the event stream takes it in
    // the query (`?token=`) as well.
    let path = request.uri().path();
    let in_query = (path == "/api/events")
        .then(|| {
            request
                .uri()
                .query()
                .and_then(|q| q.split('&').find_map(|kv| kv.strip_prefix("token=")))
        })
        .flatten()
        .unwrap_or_default();
    if path == "/"
        || path.starts_with("/assets/")
        || same(given.as_bytes(), token.expose().as_bytes())
        || same(in_query.as_bytes(), token.expose().as_bytes())
    {
        return next.run(request).await;
    }
    let mut headers = HeaderMap::new();
    headers.insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
    (
        StatusCode::UNAUTHORIZED,
        headers,
        Json(json!({"error": "a valid bearer token is required"})),
    )
        .into_response()
}

async fn page() -> Html<&'static str> {
    Html(include_str!("page.html"))
}

/// A device is healthy when it produced a reading within three poll intervals (at
/// least a minute), or is still within that time of starting.
pub(super) fn device_healthy(d: &crate::daemon::live::DeviceStatus, now: DateTime<Utc>) -> bool {
    let allowance = chrono::TimeDelta::from_std(d.poll_interval * 3)
        .unwrap_or(chrono::TimeDelta::MAX)
        .max(chrono::TimeDelta::seconds(60));
    let since = d.last_reading.unwrap_or(d.started_at).max(d.started_at);
    d.breaker == crate::daemon::retry::BreakerState::Closed && now.signed_duration_since(since) <= allowance
        || d.last_reading
            .is_some_and(|t| now.signed_duration_since(t) <= allowance)
}

async fn health(State(state): State<Arc<ApiState>>) -> Response {
    let now = Utc::now();
    let outbox = readings::outbox_depths(&state.outbox).await;
    let mut ok = true;
    let config_errors = state.status.config_errors();
    // Something a user should see that is not (yet) a reason for 503: a backend
    // failing within `api.unhealthy_after`, a broken device file.
    let mut degraded = !config_errors.is_empty();
    let mut devices = serde_json::Map::new();
    for (id, d) in state.status.devices() {
        let healthy = device_healthy(&d, now);
        ok &= healthy;
        devices.insert(
            id.to_string(),
            json!({
                "healthy": healthy,
                "type": d.device_type,
                "last_reading": d.last_reading,
                "consecutive_errors": d.consecutive_failures,
                "breaker": d.breaker,
                "last_error": d.last_error,
                "config_error": config_errors.get(&*id),
            }),
        );
    }
    let mut backends = serde_json::Map::new();
    for (name, b) in state.status.backends() {
        let held = outbox.get(name).copied().unwrap_or_default();
        let (entry, verdict) = health::backend(&b, held, now, state.unhealthy_after);
        ok &= verdict != health::Verdict::Down;
        degraded |= verdict != health::Verdict::Delivering;
        backends.insert(name.to_owned(), entry);
    }
    let guard = &state.status.disk_guard;
    // Reported, not judged: a full disk is the guard's job, and SQLite's write
    // errors already mark its backend unhealthy.
    let disk_guard = guard.max_percent().map(|max| {
        json!({
            "max_used_percent": max,
            "used_percent": guard.used_percent(),
            "checks": guard.checks.load(Ordering::Relaxed),
            "errors": guard.errors.load(Ordering::Relaxed),
            "thinned_rows": guard.thinned_rows.load(Ordering::Relaxed),
        })
    });
    let (reload, reload_ok) = reload_health(&state.status);
    ok &= reload_ok;
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        code,
        Json(json!({
            "status": if ok && !degraded { "ok" } else { "degraded" },
            "devices": devices,
            "backends": backends,
            "disk_guard": disk_guard,
            "config_errors": config_errors,
            "reload": reload,
        })),
    )
        .into_response()
}

/// The last reload of config.yaml (`null` before the first), and whether it
/// leaves the daemon healthy. A failed one answers 503 until a reload succeeds:
/// the daemon runs on, but on a config that is no longer the file on disk, and
/// that file would not start after a restart.
fn reload_health(status: &crate::daemon::live::Status) -> (serde_json::Value, bool) {
    let last = status.last_base_reload();
    let ok = last.as_ref().is_none_or(|r| r.ok);
    (json!(last), ok)
}

#[derive(Deserialize)]
struct LatestQuery {
    device: Option<String>,
}

async fn latest(State(state): State<Arc<ApiState>>, errors::ApiQuery(q): errors::ApiQuery<LatestQuery>) -> Response {
    let devices = state.status.devices();
    if let Some(device) = &q.device {
        if !devices.contains_key(device.as_str()) {
            return bad_request(
                StatusCode::NOT_FOUND,
                format!("no running device `{}`", errors::echo(device)),
            );
        }
    }
    let out: serde_json::Map<String, serde_json::Value> = devices
        .into_iter()
        .filter(|(id, _)| q.device.as_deref().is_none_or(|d| d == &**id))
        .map(|(id, d)| (id.to_string(), json!(d.latest)))
        .collect();
    Json(json!({ "readings": out })).into_response()
}

pub(crate) fn bad_request(code: StatusCode, message: String) -> Response {
    (code, Json(json!({ "error": message }))).into_response()
}
