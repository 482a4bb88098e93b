//! `GET /api/readings?device=&metric=&from=&to=&limit=&order=&resolution=`: history
//! from SQLite (raw rows or 5-minute windows, `windows.rs`), on a blocking thread,
//! bounded and paged; and outbox depths for /health
//! and /metrics.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use rusqlite::{Connection, OpenFlags};
use serde::Deserialize;
use serde_json::json;

use super::errors::{echo, ApiQuery};
use super::windows::Resolution;
use super::{bad_request, ApiState};
use crate::backends::sqlite::schema::quote;

const DEFAULT_LIMIT: usize = 1000;
const MAX_LIMIT: usize = 10_000;

#[derive(Deserialize)]
pub(super) struct ReadingsQuery {
    device: Option<String>,
    metric: Option<String>,
    from: Option<String>,
    to: Option<String>,
    limit: Option<String>,
    order: Option<String>,
    resolution: Option<String>,
}

/// Which rows of the window come first, and so which a `limit` keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// Oldest first (the default); `next_from` pages forward.
    Asc,
    /// Newest first; `next_to` pages backward.
    Desc,
}

impl Order {
    fn parse(text: Option<&str>) -> Result<Order, String> {
        match text {
            None | Some("asc") => Ok(Order::Asc),
            Some("desc") => Ok(Order::Desc),
            Some(other) => Err(format!("order: `{}` is neither `asc` nor `desc`", echo(other))),
        }
    }
}

/// RFC 3339 or unix seconds.
pub(super) fn parse_time(text: &str) -> Result<i64, String> {
    if let Ok(secs) = text.parse::<i64>() {
        return Ok(secs);
    }
    DateTime::parse_from_rfc3339(text).map(|t| t.timestamp()).map_err(|_| {
        format!(
            "`{}` is neither RFC 3339 (2026-11-24T12:00:00Z) nor unix seconds",
            echo(text)
        )
    })
}

pub(super) async fn readings(State(state): State<Arc<ApiState>>, ApiQuery(q): ApiQuery<ReadingsQuery>) -> Response {
    let Some(device) = q.device.clone() else {
        return bad_request(StatusCode::BAD_REQUEST, "`device` is required".into());
    };
    let now = Utc::now().timestamp();
    let from = match q.from.as_deref().map(parse_time).transpose() {
        Ok(t) => t.unwrap_or(now - 3600),
        Err(e) => return bad_request(StatusCode::BAD_REQUEST, format!("from: {e}")),
    };
    let to = match q.to.as_deref().map(parse_time).transpose() {
        Ok(t) => t.unwrap_or(now + 1),
        Err(e) => return bad_request(StatusCode::BAD_REQUEST, format!("to: {e}")),
    };
    if to < from {
        return bad_request(StatusCode::BAD_REQUEST, "`to` is before `from`".into());
    }
    let limit = match q.limit.as_deref().map(str::parse::<usize>).transpose() {
        Ok(l) => l.unwrap_or(DEFAULT_LIMIT),
        Err(_) => return bad_request(StatusCode::BAD_REQUEST, "limit: not a whole number".into()),
    };
    if limit == 0 || limit > MAX_LIMIT {
        return bad_request(StatusCode::BAD_REQUEST, format!("limit must be 1 to {MAX_LIMIT}"));
    }
    let order = match Order::parse(q.order.as_deref()) {
        Ok(order) => order,
        Err(e) => return bad_request(StatusCode::BAD_REQUEST, e),
    };
    let resolution = match Resolution::choose(q.resolution.as_deref(), from, to) {
        Ok(r) => r,
        Err(e) => return bad_request(StatusCode::BAD_REQUEST, e),
    };
    let Some(db) = state.db.clone() else {
        return bad_request(StatusCode::NOT_FOUND, "the sqlite backend is not configured".into());
    };
    let metric = q.metric.clone();
    let result = tokio::task::spawn_blocking(move || {
        query(&db, &device, metric.as_deref(), (from, to), (limit, order, resolution))
    })
    .await;
    match result {
        Ok(Ok(body)) => Json(body).into_response(),
        Ok(Err((code, message))) => bad_request(code, message),
        Err(e) => bad_request(StatusCode::INTERNAL_SERVER_ERROR, format!("query failed: {e}")),
    }
}

type QueryError = (StatusCode, String);

fn query(
    db: &Path,
    device: &str,
    metric: Option<&str>,
    (from, to): (i64, i64),
    (limit, order, resolution): (usize, Order, Resolution),
) -> Result<serde_json::Value, QueryError> {
    let unavailable = |e: rusqlite::Error| (StatusCode::SERVICE_UNAVAILABLE, format!("database: {e}"));
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(unavailable)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(unavailable)?;
    let mut catalogue: Vec<(String, String, String)> = conn
        .prepare("SELECT metric, unit, kind FROM metrics WHERE device = ?1 ORDER BY metric")
        .and_then(|mut s| {
            s.query_map([device], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
                .collect()
        })
        .map_err(unavailable)?;
    if catalogue.is_empty() {
        return Err((
            StatusCode::NOT_FOUND,
            format!("no readings of device `{}`", echo(device)),
        ));
    }
    if let Some(metric) = metric {
        catalogue.retain(|(m, _, _)| m == metric);
        if catalogue.is_empty() {
            return Err((
                StatusCode::NOT_FOUND,
                format!("device `{}` has no metric `{}`", echo(device), echo(metric)),
            ));
        }
    }
    let rows = match resolution {
        Resolution::Raw => raw_rows(&conn, device, &catalogue, (from, to), limit, order).map_err(unavailable)?,
        Resolution::FiveMinutes => {
            super::windows::windows(&conn, device, &catalogue, (from, to), limit, order == Order::Desc)
                .map_err(unavailable)?
        }
    };
    // The next page starts after the last row of this one (ascending), or ends
    // before it (descending; `to` is exclusive).
    let step = if resolution == Resolution::Raw {
        1
    } else {
        crate::backends::sqlite::downsample::WINDOW
    };
    let last = (rows.len() == limit)
        .then(|| rows.last().and_then(|r| r["ts"].as_i64()))
        .flatten();
    let (next_from, next_to) = match order {
        Order::Asc => (last.map(|t| t + step), None),
        Order::Desc => (None, last),
    };
    let units: serde_json::Map<String, serde_json::Value> = catalogue
        .iter()
        .map(|(m, u, k)| (m.clone(), json!({"unit": u, "kind": k})))
        .collect();
    Ok(json!({
        "device": device,
        "from": from,
        "to": to,
        "order": if order == Order::Desc { "desc" } else { "asc" },
        "resolution": resolution.name(),
        "metrics": units,
        "rows": rows,
        "next_from": next_from,
        "next_to": next_to,
    }))
}

/// The stored rows of `[from, to)`.
fn raw_rows(
    conn: &Connection,
    device: &str,
    catalogue: &[(String, String, String)],
    (from, to): (i64, i64),
    limit: usize,
    order: Order,
) -> rusqlite::Result<Vec<serde_json::Value>> {
    let columns: Vec<String> = catalogue.iter().map(|(m, _, _)| quote(m)).collect();
    let sql = format!(
        "SELECT ts, {} FROM {} WHERE ts >= ?1 AND ts < ?2 ORDER BY ts {} LIMIT ?3",
        columns.join(", "),
        quote(device),
        if order == Order::Desc { "DESC" } else { "ASC" }
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt
        .query_map(rusqlite::params![from, to, limit as i64], |row| {
            let ts: i64 = row.get(0)?;
            let mut values = serde_json::Map::new();
            for (i, (metric, _, _)) in catalogue.iter().enumerate() {
                let v = match row.get_ref(i + 1)? {
                    rusqlite::types::ValueRef::Real(f) => json!(f),
                    rusqlite::types::ValueRef::Integer(n) => json!(n),
                    rusqlite::types::ValueRef::Text(t) => json!(String::from_utf8_lossy(t)),
                    _ => continue,
                };
                values.insert(metric.clone(), v);
            }
            Ok(json!({ "ts": ts, "time": DateTime::<Utc>::from_timestamp(ts, 0), "values": values }))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

/// What the durable outbox holds for one backend.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct OutboxState {
    /// Undelivered readings.
    pub depth: u64,
    /// When the reading waiting longest entered the outbox.
    pub oldest_queued: Option<DateTime<Utc>>,
    /// Readings its bounds dropped so far: waited past `max_age`, past `max_rows`.
    pub dropped_max_age: u64,
    pub dropped_max_rows: u64,
}

/// The outbox's state, per durable backend.
pub(super) type OutboxDepths = BTreeMap<String, OutboxState>;

pub(super) async fn outbox_depths(path: &Path) -> OutboxDepths {
    let path: PathBuf = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> rusqlite::Result<OutboxDepths> {
        if !path.exists() {
            return Ok(BTreeMap::new());
        }
        let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
        conn.busy_timeout(std::time::Duration::from_secs(2))?;
        let mut out = OutboxDepths::new();
        let mut stmt = conn.prepare("SELECT backend, count(*), min(queued_ms) FROM outbox GROUP BY backend")?;
        let rows = stmt.query_map([], |r| {
            let n: i64 = r.get(1)?;
            let oldest: Option<i64> = r.get(2)?;
            Ok((r.get::<_, String>(0)?, n, oldest))
        })?;
        for row in rows {
            let (backend, n, oldest) = row?;
            let state = out.entry(backend).or_default();
            state.depth = n as u64;
            state.oldest_queued = oldest.and_then(DateTime::<Utc>::from_timestamp_millis);
        }
        let mut stmt = conn.prepare("SELECT backend, reason, count FROM outbox_dropped")?;
        let rows = stmt.query_map([], |r| {
            Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?, r.get::<_, i64>(2)?))
        })?;
        for row in rows {
            let (backend, reason, n) = row?;
            let state = out.entry(backend).or_default();
            match reason.as_str() {
                "max_age" => state.dropped_max_age = n as u64,
                "max_rows" => state.dropped_max_rows = n as u64,
                _ => {}
            }
        }
        Ok(out)
    })
    .await
    .ok()
    .and_then(Result::ok)
    .unwrap_or_default()
}
