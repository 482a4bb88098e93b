//! `GET /api/export?device=&metric=a,b&from=&to=&resolution=raw|5m&time=utc|local&format=csv|parquet`:
//! a device's readings as CSV or Parquet, streamed from a blocking thread as SQLite
//! yields the rows, so a year of 1 s readings never sits in memory. Parquet needs no
//! temporary file: its writer never seeks (the footer comes last), so each row group
//! (at most 64k rows, buffered on the blocking thread) goes out as it is written.

use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use tokio::sync::mpsc;

use super::errors::{echo, ApiQuery};
use super::{bad_request, ApiState};
use crate::backends::sqlite::export::{
    check, parse_instant, write, ExportError, ExportSpec, Format, Resolution, TimeZone,
};

#[derive(Deserialize)]
pub(super) struct ExportQuery {
    device: Option<String>,
    /// Comma-separated metrics; default: all.
    metric: Option<String>,
    from: Option<String>,
    to: Option<String>,
    resolution: Option<String>,
    time: Option<String>,
    format: Option<String>,
}

/// Chunks written on the blocking thread, read by the response body.
const CHUNK: usize = 32 * 1024;

/// A `Write` that hands full chunks to the response; fails once the client is gone,
/// which ends the query.
struct ChunkWriter {
    tx: mpsc::Sender<Result<Bytes, std::io::Error>>,
    buf: Vec<u8>,
}

impl ChunkWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(Ok(chunk))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChunkWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// The receiving end as the body's stream.
struct Chunks(mpsc::Receiver<Result<Bytes, std::io::Error>>);

impl futures_core::Stream for Chunks {
    type Item = Result<Bytes, std::io::Error>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.0.poll_recv(cx)
    }
}

fn spec(q: &ExportQuery) -> Result<ExportSpec, String> {
    let device = q.device.clone().ok_or("`device` is required")?;
    let now = chrono::Utc::now().timestamp();
    let instant = |text: Option<&String>, default: i64, what: &str| {
        text.map(|t| {
            parse_instant(t).map_err(|_| format!("{what}: `{}` is not a date, RFC 3339 or unix seconds", echo(t)))
        })
        .unwrap_or(Ok(default))
    };
    let spec = ExportSpec {
        device,
        metrics: q
            .metric
            .as_deref()
            .map(|m| m.split(',').filter(|m| !m.is_empty()).map(str::to_owned).collect())
            .unwrap_or_default(),
        from: instant(q.from.as_ref(), now - 86_400, "from")?,
        to: instant(q.to.as_ref(), now + 1, "to")?,
        resolution: Resolution::parse(q.resolution.as_deref().unwrap_or("raw")).map_err(|e| echo(&e))?,
        time: TimeZone::parse(q.time.as_deref().unwrap_or("utc")).map_err(|e| echo(&e))?,
        // The user's text is cut before it goes into the message, not the message:
        // a build without Parquet says so in full.
        format: Format::parse(&echo(q.format.as_deref().unwrap_or("csv")))?,
    };
    if spec.to < spec.from {
        return Err("`to` is before `from`".into());
    }
    Ok(spec)
}

pub(super) async fn export(State(state): State<Arc<ApiState>>, ApiQuery(q): ApiQuery<ExportQuery>) -> Response {
    let spec = match spec(&q) {
        Ok(spec) => spec,
        Err(e) => return bad_request(StatusCode::BAD_REQUEST, e),
    };
    let Some(db) = state.db.clone() else {
        return bad_request(StatusCode::NOT_FOUND, "the sqlite backend is not configured".into());
    };
    // An unknown device or metric is a JSON 404, said before the first row is sent.
    let checked = {
        let (db, spec) = (db.clone(), spec.clone());
        tokio::task::spawn_blocking(move || check(&db, &spec)).await
    };
    match checked {
        Ok(Ok(())) => {}
        Ok(Err(e @ (ExportError::NoDevice(_) | ExportError::NoMetric { .. }))) => {
            return bad_request(StatusCode::NOT_FOUND, echo(&e.to_string()))
        }
        Ok(Err(e)) => return bad_request(StatusCode::SERVICE_UNAVAILABLE, e.to_string()),
        Err(e) => return bad_request(StatusCode::INTERNAL_SERVER_ERROR, format!("export failed: {e}")),
    }
    let (tx, rx) = mpsc::channel(4);
    let filename = format!(
        "{}.{}",
        spec.device
            .replace(|c: char| !c.is_ascii_alphanumeric() && c != '_' && c != '-', "_"),
        spec.format.extension()
    );
    let content_type = spec.format.content_type();
    tokio::task::spawn_blocking(move || {
        let mut writer = ChunkWriter {
            tx: tx.clone(),
            buf: Vec::with_capacity(CHUNK),
        };
        if let Err(e) = write(&db, &spec, &mut writer) {
            // Headers are sent: the client sees the body end early, with the reason.
            tracing::warn!(device = %spec.device, error = %e, "export stopped");
            let _ = tx.blocking_send(Err(std::io::Error::other(e.to_string())));
        }
    });
    (
        [
            (header::CONTENT_TYPE, content_type.to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        Body::from_stream(Chunks(rx)),
    )
        .into_response()
}
