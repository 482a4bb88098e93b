//! `GET /api/costs?device=&from=&to=&group=day|month`: a meter's costs per local
//! day or month, summed from the `<device>_cost` table the cost job writes
//! (docs/costs.md).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::Utc;
use rusqlite::{Connection, OpenFlags};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::errors::{echo, ApiQuery};
use super::readings::parse_time;
use super::{bad_request, ApiState};
use crate::backends::sqlite::cost::cost_table;
use crate::backends::sqlite::schema::quote;

/// Without `from`: this many days back.
const DEFAULT_DAYS: i64 = 31;

#[derive(Deserialize)]
pub(super) struct CostsQuery {
    device: Option<String>,
    from: Option<String>,
    to: Option<String>,
    group: Option<String>,
}

pub(super) async fn costs(State(state): State<Arc<ApiState>>, ApiQuery(q): ApiQuery<CostsQuery>) -> Response {
    let Some(device) = q.device else {
        return bad_request(StatusCode::BAD_REQUEST, "`device` is required".into());
    };
    let now = Utc::now().timestamp();
    let from = match q.from.as_deref().map(parse_time).transpose() {
        Ok(t) => t.unwrap_or(now - DEFAULT_DAYS * 86_400),
        Err(e) => return bad_request(StatusCode::BAD_REQUEST, format!("from: {e}")),
    };
    let to = match q.to.as_deref().map(parse_time).transpose() {
        Ok(t) => t.unwrap_or(now + 1),
        Err(e) => return bad_request(StatusCode::BAD_REQUEST, format!("to: {e}")),
    };
    if to < from {
        return bad_request(StatusCode::BAD_REQUEST, "`to` is before `from`".into());
    }
    let group = match q.group.as_deref() {
        None | Some("day") => Group::Day,
        Some("month") => Group::Month,
        Some(other) => {
            return bad_request(
                StatusCode::BAD_REQUEST,
                format!("group: `{}` is neither `day` nor `month`", echo(other)),
            )
        }
    };
    let Some(db) = state.db.clone() else {
        return bad_request(StatusCode::NOT_FOUND, "the sqlite backend is not configured".into());
    };
    match tokio::task::spawn_blocking(move || query(&db, &device, from, to, group)).await {
        Ok(Ok(body)) => Json(body).into_response(),
        Ok(Err((code, message))) => bad_request(code, message),
        Err(e) => bad_request(StatusCode::INTERNAL_SERVER_ERROR, format!("query failed: {e}")),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    Day,
    Month,
}

/// Sums of one carrier in one period.
#[derive(Debug, Default)]
struct Sums {
    kwh: f64,
    m3: f64,
    cost: f64,
    returned_kwh: f64,
    credit: f64,
    slots: i64,
    estimated: i64,
    fallback: i64,
}

/// Money and energy to a precision that hides float noise, not cents.
fn round(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}

fn query(db: &Path, device: &str, from: i64, to: i64, group: Group) -> Result<Value, (StatusCode, String)> {
    let unavailable = |e: rusqlite::Error| (StatusCode::SERVICE_UNAVAILABLE, format!("database: {e}"));
    let not_found = || {
        (
            StatusCode::NOT_FOUND,
            format!(
                "no costs of device `{}` (does its file have a `tariff:`?)",
                echo(device)
            ),
        )
    };
    if !db.exists() {
        return Err(not_found());
    }
    let conn = Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(unavailable)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(unavailable)?;
    let table = cost_table(device);
    let exists: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
            [&table],
            |r| r.get(0),
        )
        .map_err(unavailable)?;
    if exists == 0 {
        return Err(not_found());
    }
    let period = match group {
        Group::Day => "day",
        Group::Month => "substr(day, 1, 7)",
    };
    let sql = format!(
        "SELECT {period}, carrier, sum(kwh), coalesce(sum(m3), 0), sum(cost), sum(returned_kwh), sum(credit), \
         count(*), sum(estimated), sum(fallback) FROM {} WHERE ts >= ?1 AND ts < ?2 GROUP BY 1, 2 ORDER BY 1, 2",
        quote(&table)
    );
    let mut periods: BTreeMap<String, BTreeMap<String, Sums>> = BTreeMap::new();
    let mut stmt = conn.prepare(&sql).map_err(unavailable)?;
    let rows = stmt
        .query_map([from, to], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                Sums {
                    kwh: r.get(2)?,
                    m3: r.get(3)?,
                    cost: r.get(4)?,
                    returned_kwh: r.get(5)?,
                    credit: r.get(6)?,
                    slots: r.get(7)?,
                    estimated: r.get(8)?,
                    fallback: r.get(9)?,
                },
            ))
        })
        .map_err(unavailable)?;
    for row in rows {
        let (period, carrier, sums) = row.map_err(unavailable)?;
        periods.entry(period).or_default().insert(carrier, sums);
    }
    let mut total = 0.0;
    let list: Vec<Value> = periods
        .into_iter()
        .map(|(period, carriers)| {
            let mut entry = Map::new();
            entry.insert("period".into(), json!(period));
            let mut net = 0.0;
            let mut estimated = 0;
            let mut fallback = 0;
            for (carrier, s) in &carriers {
                net += s.cost - s.credit;
                estimated += s.estimated;
                fallback += s.fallback;
                let value = match carrier.as_str() {
                    "electricity" => json!({
                        "kwh": round(s.kwh), "cost": round(s.cost),
                        "returned_kwh": round(s.returned_kwh), "credit": round(s.credit), "slots": s.slots,
                    }),
                    "gas" => json!({ "m3": round(s.m3), "kwh": round(s.kwh), "cost": round(s.cost), "slots": s.slots }),
                    _ => json!(round(s.cost)),
                };
                entry.insert(carrier.clone(), value);
            }
            entry.insert("total".into(), json!(round(net)));
            entry.insert("estimated_slots".into(), json!(estimated));
            entry.insert("fallback_slots".into(), json!(fallback));
            total += net;
            Value::Object(entry)
        })
        .collect();
    Ok(json!({
        "device": device,
        "group": if group == Group::Day { "day" } else { "month" },
        "from": from,
        "to": to,
        "currency": "EUR",
        "periods": list,
        "total": round(total),
    }))
}
