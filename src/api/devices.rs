//! `GET /api/devices`: every running device as the page shows it: health, read
//! success rate, last error, when it last read, its metrics, and what its energy
//! counters counted today (since the host's local midnight, from the cleaned
//! `<metric>_lifetime` series, so a meter swap or a reset does not count as use;
//! docs/counters.md).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use chrono::{DateTime, Local, Utc};
use rusqlite::{Connection, OpenFlags, OptionalExtension};
use serde_json::{json, Value};

use super::ApiState;
use crate::backends::sqlite::cost::cost_table;
use crate::backends::sqlite::schema::quote;
use crate::daemon::live::DeviceStatus;

/// The suffix of the cleaned counter series.
const LIFETIME: &str = "_lifetime";

/// A device's lifetime counters: metric, newest value, unit.
type Lifetimes = Vec<(String, f64, &'static str)>;

/// One device's entry, without `today` (what a `device` event carries too).
pub(super) fn entry(id: &str, d: &DeviceStatus, now: DateTime<Utc>, config_errors: &BTreeMap<String, String>) -> Value {
    let polls = d.polls_ok + d.polls_failed;
    json!({
        "id": id,
        "type": d.device_type,
        "healthy": super::device_healthy(d, now),
        "poll_interval_seconds": d.poll_interval.as_secs_f64(),
        "polls_ok": d.polls_ok,
        "polls_failed": d.polls_failed,
        "success_rate": (polls > 0).then(|| d.polls_ok as f64 / polls as f64),
        "consecutive_failures": d.consecutive_failures,
        "readings": d.readings,
        "breaker": d.breaker,
        "last_reading": d.last_reading,
        "last_reading_age_seconds": d.last_reading.map(|t| (now - t).num_milliseconds().max(0) as f64 / 1000.0),
        "last_error": d.last_error,
        "config_error": config_errors.get(id),
        "metrics": d.latest.iter().map(|(m, l)| json!({"name": m, "unit": l.unit, "kind": l.kind})).collect::<Vec<_>>(),
    })
}

pub(super) async fn devices(State(state): State<Arc<ApiState>>) -> Json<Value> {
    let now = Utc::now();
    let config_errors = state.status.config_errors();
    let devices = state.status.devices();
    let midnight = local_midnight(now);
    // The lifetime counters' newest values, from the live state; their values at
    // midnight come from the database.
    let counters: Vec<(String, Lifetimes)> = devices
        .iter()
        .map(|(id, d)| {
            let lifetimes = d
                .latest
                .iter()
                .filter(|(m, l)| m.ends_with(LIFETIME) && l.kind == "counter")
                .filter_map(|(m, l)| Some((m.clone(), l.value.as_f64()?, l.unit)))
                .collect();
            (id.to_string(), lifetimes)
        })
        .collect();
    let (today, costed) = match state.db.clone() {
        Some(db) if !devices.is_empty() => tokio::task::spawn_blocking(move || {
            let Some(conn) = open(&db) else {
                return (BTreeMap::new(), BTreeSet::new());
            };
            (today(&conn, &counters, midnight.timestamp()), costed(&conn))
        })
        .await
        .unwrap_or_default(),
        _ => (BTreeMap::new(), BTreeSet::new()),
    };
    let list: Vec<Value> = devices
        .iter()
        .map(|(id, d)| {
            let mut e = entry(id, d, now, &config_errors);
            if let Some(energy) = today.get(&**id) {
                e["today"] = json!({"since": midnight, "energy": energy});
            }
            // Whether /api/costs has its costs (its file has a `tariff:`).
            e["costs"] = json!(costed.contains(&cost_table(id)));
            e
        })
        .collect();
    Json(json!({ "devices": list, "config_errors": config_errors }))
}

/// The host's last local midnight (the start of "today" on the page).
pub(super) fn local_midnight(now: DateTime<Utc>) -> DateTime<Utc> {
    let local = now.with_timezone(&Local);
    local
        .date_naive()
        .and_hms_opt(0, 0, 0)
        .and_then(|t| t.and_local_timezone(Local).earliest())
        .map(|t| t.with_timezone(&Utc))
        // A midnight that does not exist locally (a DST gap at 00:00): 24 h back.
        .unwrap_or(now - chrono::TimeDelta::hours(24))
}

/// The database, read-only; `None` when it cannot be read (no "today" then).
fn open(db: &Path) -> Option<Connection> {
    if !db.exists() {
        return None;
    }
    let conn =
        Connection::open_with_flags(db, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX).ok()?;
    conn.busy_timeout(std::time::Duration::from_secs(2)).ok()?;
    Some(conn)
}

/// The cost tables the cost job keeps (one per meter with a `tariff:`).
fn costed(conn: &Connection) -> BTreeSet<String> {
    conn.prepare("SELECT name FROM sqlite_master WHERE type = 'table'")
        .and_then(|mut s| s.query_map([], |r| r.get::<_, String>(0))?.collect())
        .unwrap_or_default()
}

/// Per device, per counter (its raw name): how much it counted since `midnight`:
/// the newest lifetime value less the last one before midnight (or, for a counter
/// first seen today, the first one after it). Counters without rows are left out;
/// a database that cannot be read gives nothing (the page shows no "today").
fn today(
    conn: &Connection,
    counters: &[(String, Lifetimes)],
    midnight: i64,
) -> BTreeMap<String, BTreeMap<String, Value>> {
    let mut out = BTreeMap::new();
    for (device, lifetimes) in counters {
        let mut energy = BTreeMap::new();
        for (metric, newest, unit) in lifetimes {
            let column = quote(metric);
            let table = quote(device);
            let before =
                format!("SELECT {column} FROM {table} WHERE ts < ?1 AND {column} IS NOT NULL ORDER BY ts DESC LIMIT 1");
            let after =
                format!("SELECT {column} FROM {table} WHERE ts >= ?1 AND {column} IS NOT NULL ORDER BY ts LIMIT 1");
            let start = conn
                .query_row(&before, [midnight], |r| r.get::<_, f64>(0))
                .optional()
                .ok()
                .flatten()
                .or_else(|| {
                    conn.query_row(&after, [midnight], |r| r.get::<_, f64>(0))
                        .optional()
                        .ok()
                        .flatten()
                });
            if let Some(start) = start {
                let counted = ((newest - start).max(0.0) * 1e6).round() / 1e6;
                let name = metric.strip_suffix(LIFETIME).unwrap_or(metric);
                energy.insert(name.to_owned(), json!({"value": counted, "unit": unit}));
            }
        }
        if !energy.is_empty() {
            out.insert(device.clone(), energy);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn today_counts_from_the_last_value_before_midnight() {
        let dir = tempfile::tempdir().expect("dir");
        let db = dir.path().join("m.db");
        let conn = Connection::open(&db).expect("db");
        conn.execute_batch(
            "CREATE TABLE meter_cost (ts INTEGER PRIMARY KEY);
             CREATE TABLE meter (ts INTEGER PRIMARY KEY, e_lifetime REAL, gas_lifetime REAL);
             INSERT INTO meter VALUES (900, 10.0, NULL), (990, 12.5, NULL), (1010, 13.0, 4.0), (1100, 14.0, 4.5);",
        )
        .expect("rows");
        let counters = vec![(
            "meter".to_owned(),
            vec![
                ("e_lifetime".to_owned(), 15.25, "kWh"),
                ("gas_lifetime".to_owned(), 5.0, "m³"),
                ("water_lifetime".to_owned(), 1.0, "m³"),
            ],
        )];
        let today = today(&open(&db).expect("open"), &counters, 1000);
        let meter = &today["meter"];
        // 15.25 now, 12.5 the last before midnight.
        assert_eq!(meter["e"], json!({"value": 2.75, "unit": "kWh"}));
        // First seen after midnight: counted from its first value.
        assert_eq!(meter["gas"], json!({"value": 1.0, "unit": "m³"}));
        // No such column: left out.
        assert!(!meter.contains_key("water"));
        let costed = costed(&open(&db).expect("open"));
        assert!(costed.contains(&cost_table("meter")) && !costed.contains(&cost_table("other")));
    }

    #[test]
    fn midnight_is_at_most_a_day_back() {
        let now = Utc::now();
        let midnight = local_midnight(now);
        assert!(midnight <= now && now - midnight <= chrono::TimeDelta::hours(25));
    }
}
