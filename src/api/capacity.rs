//! `GET /api/capacity?device=`: a meter's monthly peaks (the Belgian capacity
//! tariff) — the closed months stored in `<device>_monthly_peaks` (a longer record
//! than the meter's 13) merged with the ones it sent last, the running month, the
//! rolling average the monitor computed and the minimum it applied.

use std::collections::BTreeMap;
use std::path::Path;
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
use super::{bad_request, ApiState};
use crate::backends::sqlite::monthly_peaks::{self, MonthlyPeakRow};

#[derive(Deserialize)]
pub(super) struct CapacityQuery {
    device: Option<String>,
}

pub(super) async fn capacity(State(state): State<Arc<ApiState>>, ApiQuery(q): ApiQuery<CapacityQuery>) -> Response {
    let Some(device) = q.device else {
        return bad_request(StatusCode::BAD_REQUEST, "`device` is required".into());
    };
    let live = state
        .status
        .devices()
        .get(device.as_str())
        .and_then(|d| d.monthly_peaks.clone());
    let stored = match state.db.clone() {
        Some(db) => {
            let id = device.clone();
            match tokio::task::spawn_blocking(move || stored_months(&db, &id)).await {
                Ok(result) => result,
                Err(e) => Err(format!("query failed: {e}")),
            }
        }
        None => Ok(Vec::new()),
    };
    // The live months answer on their own while the database cannot.
    let stored = match (stored, &live) {
        (Ok(rows), _) => rows,
        (Err(_), Some(_)) => Vec::new(),
        (Err(e), None) => return bad_request(StatusCode::SERVICE_UNAVAILABLE, e),
    };
    if live.is_none() && stored.is_empty() {
        return bad_request(
            StatusCode::NOT_FOUND,
            format!("no monthly peaks of device `{}`", echo(&device)),
        );
    }
    let time = |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let mut months: BTreeMap<String, (f64, Option<String>)> = stored
        .into_iter()
        .map(|r| {
            let at = r.peak_at.and_then(|s| DateTime::<Utc>::from_timestamp(s, 0));
            (r.month, (r.peak_w, time(at)))
        })
        .collect();
    for m in live.iter().flat_map(|l| &l.months) {
        months.insert(m.month.clone(), (m.peak_w, time(m.peak_at)));
    }
    let months: Vec<serde_json::Value> = months
        .into_iter()
        .map(|(month, (peak_w, peak_at))| json!({ "month": month, "peak_w": peak_w, "peak_at": peak_at }))
        .collect();
    let running = live
        .as_ref()
        .and_then(|l| l.running.as_ref())
        .map(|r| json!({ "month": r.month, "peak_w": r.peak_w, "peak_at": time(r.peak_at) }));
    Json(json!({
        "device": device,
        "months": months,
        "running_month": running,
        "rolling_average_w": live.as_ref().and_then(|l| l.rolling_average_w),
        "rolling_average_months": live.as_ref().map(|l| l.rolling_average_months),
        "minimum_w": live.as_ref().map(|l| l.minimum_w),
    }))
    .into_response()
}

/// The months stored for `device`; none when the database or its table is not there yet.
fn stored_months(db: &Path, device: &str) -> Result<Vec<MonthlyPeakRow>, String> {
    if !db.exists() {
        return Ok(Vec::new());
    }
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(|e| format!("database: {e}"))?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(|e| format!("database: {e}"))?;
    monthly_peaks::load(&conn, device).map_err(|e| format!("database: {e}"))
}
