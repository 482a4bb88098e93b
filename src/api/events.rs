//! `GET /api/events`: the daemon's events as server-sent events (`text/event-stream`),
//! for the page's live updates (docs/api.md). Event names:
//!
//! - `reading`: one poll's readings of one device, once handed to the backends;
//! - `device`: a device's entry as `/api/devices` has it (without `today`), when it
//!   starts, stops (`{"id", "removed": true}`), begins or stops failing;
//! - `backend`: a backend's health, when it begins or stops failing;
//! - `resync`: the stream fell behind and lost events: refetch everything.
//!
//! The stream opens with a `retry:` line (how long a browser waits before it
//! reconnects) and a `hello` event, and sends a comment every 15 s so proxies and
//! the page can tell a quiet stream from a dead one. At most
//! `api.max_event_streams` streams at once: more get 503.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use serde_json::json;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use super::{bad_request, ApiState};
use crate::daemon::events::Event;
use crate::daemon::live::SharedStatus;

/// The `retry:` the stream asks for: how long a browser waits before reconnecting.
pub(super) const RETRY: Duration = Duration::from_secs(3);
/// A comment this often keeps a quiet stream visibly alive.
pub(super) const HEARTBEAT: Duration = Duration::from_secs(15);
/// Events rendered ahead of a slow client before it lags behind the channel.
const RENDERED_AHEAD: usize = 16;
/// How often backends' health is compared for `backend` events.
const BACKEND_CHECK: Duration = Duration::from_secs(1);

pub(super) async fn events(State(state): State<Arc<ApiState>>) -> Response {
    let Ok(permit) = state.event_streams.clone().try_acquire_owned() else {
        return bad_request(
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "{} event streams are open already (api.max_event_streams); poll /api/devices meanwhile",
                state.max_event_streams
            ),
        );
    };
    let mut events = state.status.events.subscribe();
    let (tx, rx) = mpsc::channel(RENDERED_AHEAD);
    let stop = state.stop.clone();
    tokio::spawn(async move {
        let _permit = permit;
        let hello = SseEvent::default()
            .retry(RETRY)
            .event("hello")
            .data(json!({"time": Utc::now()}).to_string());
        if tx.send(hello).await.is_err() {
            return;
        }
        loop {
            let next = tokio::select! {
                _ = stop.cancelled() => break,
                _ = tx.closed() => break,
                next = events.recv() => next,
            };
            let rendered = match next {
                Ok(event) => render(&state, event),
                Err(broadcast::error::RecvError::Lagged(missed)) => Some(
                    SseEvent::default()
                        .event("resync")
                        .data(json!({"missed": missed}).to_string()),
                ),
                Err(broadcast::error::RecvError::Closed) => break,
            };
            if let Some(rendered) = rendered {
                if tx.send(rendered).await.is_err() {
                    break;
                }
            }
        }
    });
    Sse::new(Rendered(rx))
        .keep_alive(KeepAlive::new().interval(HEARTBEAT).text("heartbeat"))
        .into_response()
}

/// The SSE body: what the stream's task rendered, until it ends.
struct Rendered(mpsc::Receiver<SseEvent>);

impl futures_core::Stream for Rendered {
    type Item = Result<SseEvent, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx).map(|event| event.map(Ok))
    }
}

fn render(state: &ApiState, event: Event) -> Option<SseEvent> {
    let (name, data) = match event {
        Event::Readings(batch) => {
            let device = batch.first()?.device.clone();
            let readings: Vec<_> = batch
                .iter()
                .map(|r| {
                    json!({
                        "metric": &*r.metric,
                        "value": r.value,
                        "unit": r.unit.symbol(),
                        "kind": r.kind.as_str(),
                        "ts": r.timestamp.timestamp(),
                        "time": r.timestamp,
                    })
                })
                .collect();
            ("reading", json!({"device": &*device, "readings": readings}))
        }
        Event::Device(id) => {
            let now = Utc::now();
            let entry = match state.status.devices().get(&id) {
                Some(d) => super::devices::entry(&id, d, now, &state.status.config_errors()),
                None => json!({"id": &*id, "removed": true}),
            };
            ("device", entry)
        }
        Event::Backend(name) => {
            let health = state.status.backend(name).health();
            (
                "backend",
                json!({
                    "name": name,
                    "healthy": health.healthy(),
                    "last_error": health.last_error,
                    "failing_since": health.failing_since,
                }),
            )
        }
    };
    Some(SseEvent::default().event(name).data(data.to_string()))
}

/// Sends a `backend` event when a backend begins or stops failing, or fails
/// otherwise, while anybody listens. Runs with the API, checking every second.
pub(super) async fn watch_backends(status: SharedStatus, stop: CancellationToken) {
    let mut known: BTreeMap<&'static str, (bool, Option<String>)> = BTreeMap::new();
    let mut ticker = tokio::time::interval(BACKEND_CHECK);
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = ticker.tick() => {}
        }
        // Tracked while nobody listens too, so a listener hears of changes, not
        // of the state backends were in when it came.
        for (name, stats) in status.backends() {
            let health = stats.health();
            let now = (health.healthy(), health.last_error);
            let first = !known.contains_key(name);
            if known.insert(name, now.clone()) != Some(now) && !first {
                status.events.send_with(|| Event::Backend(name));
            }
        }
    }
}
