//! `/api/readings?resolution=`: raw rows for short ranges, 5-minute windows for
//! long ones (a chart of a week needs 2,016 points, not 600,000). A window's value
//! is a gauge's mean and a counter's last value, as in the downsampler's
//! `<device>_5m` tables; windows come from those tables where the raw rows are
//! gone (older than `retention.raw`) and are computed from the raw rows elsewhere.

use rusqlite::Connection;
use serde_json::{json, Map, Value};

use crate::backends::sqlite::downsample::WINDOW;
use crate::backends::sqlite::schema::{aggregate_table, quote};

/// Ranges longer than this get 5-minute windows with `resolution=auto`.
pub(super) const AUTO_RAW_UP_TO: i64 = 6 * 3600;

/// Rows as stored, or 5-minute windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Resolution {
    Raw,
    FiveMinutes,
}

impl Resolution {
    /// `raw` (the default), `5m`, or `auto`: raw up to [`AUTO_RAW_UP_TO`].
    pub(super) fn choose(text: Option<&str>, from: i64, to: i64) -> Result<Resolution, String> {
        match text {
            None | Some("raw") => Ok(Resolution::Raw),
            Some("5m") => Ok(Resolution::FiveMinutes),
            Some("auto") if to - from > AUTO_RAW_UP_TO => Ok(Resolution::FiveMinutes),
            Some("auto") => Ok(Resolution::Raw),
            Some(other) => Err(format!(
                "resolution: `{}` is none of `raw`, `5m`, `auto`",
                super::errors::echo(other)
            )),
        }
    }

    pub(super) fn name(self) -> &'static str {
        match self {
            Resolution::Raw => "raw",
            Resolution::FiveMinutes => "5m",
        }
    }
}

/// The SQL that folds `metric` (of `kind`) into a window: a counter's last value
/// (its largest: lifetime series never drop), a gauge's mean. Text: none.
fn fold(metric: &str, kind: &str) -> Option<String> {
    match kind {
        "counter" => Some(format!("max({})", quote(metric))),
        "gauge" => Some(format!("avg({})", quote(metric))),
        _ => None,
    }
}

/// The column of `<device>_5m` holding what [`fold`] computes.
fn stored(metric: &str, kind: &str) -> String {
    match kind {
        "counter" => quote(metric),
        _ => quote(&format!("{metric}_mean")),
    }
}

/// 5-minute windows of `catalogue`'s numeric metrics in `[from, to)`, oldest first
/// (or newest first with `desc`), at most `limit`: rows shaped as raw rows are.
pub(super) fn windows(
    conn: &Connection,
    device: &str,
    catalogue: &[(String, String, String)],
    (from, to): (i64, i64),
    limit: usize,
    desc: bool,
) -> rusqlite::Result<Vec<Value>> {
    let numeric: Vec<&(String, String, String)> = catalogue.iter().filter(|(m, _, k)| fold(m, k).is_some()).collect();
    if numeric.is_empty() {
        return Ok(Vec::new());
    }
    let folds: Vec<String> = numeric.iter().filter_map(|(m, _, k)| fold(m, k)).collect();
    let raw_sql = format!(
        "SELECT (ts / {WINDOW}) * {WINDOW} AS w, {} FROM {} WHERE ts >= ?1 AND ts < ?2 GROUP BY w",
        folds.join(", "),
        quote(device)
    );
    let mut rows: Vec<(i64, Map<String, Value>)> = Vec::new();
    collect(conn, &raw_sql, (from, to), &numeric, &mut rows)?;
    // Before the oldest raw row: the downsampler's windows, where it kept them.
    let table = aggregate_table(device);
    let first_raw: Option<i64> = conn
        .query_row(&format!("SELECT min(ts) FROM {}", quote(device)), [], |r| r.get(0))
        .unwrap_or(None);
    let aggregated: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [&table],
        |r| r.get(0),
    )?;
    if aggregated > 0 {
        let columns: Vec<String> = numeric.iter().map(|(m, _, k)| stored(m, k)).collect();
        let end = first_raw.map_or(to, |t| t.min(to)).div_euclid(WINDOW) * WINDOW;
        let sql = format!(
            "SELECT ts, {} FROM {} WHERE ts >= ?1 AND ts < ?2",
            columns.join(", "),
            quote(&table)
        );
        // A column the aggregates do not have yet (a metric added later): skip them.
        let _ = collect(conn, &sql, (from, end), &numeric, &mut rows);
    }
    rows.sort_by_key(|(ts, _)| *ts);
    rows.dedup_by_key(|(ts, _)| *ts);
    if desc {
        rows.reverse();
    }
    rows.truncate(limit);
    Ok(rows
        .into_iter()
        .map(|(ts, values)| json!({"ts": ts, "time": chrono::DateTime::<chrono::Utc>::from_timestamp(ts, 0), "values": values}))
        .collect())
}

fn collect(
    conn: &Connection,
    sql: &str,
    (from, to): (i64, i64),
    numeric: &[&(String, String, String)],
    rows: &mut Vec<(i64, Map<String, Value>)>,
) -> rusqlite::Result<()> {
    let mut stmt = conn.prepare(sql)?;
    let found = stmt.query_map([from, to], |row| {
        let ts: i64 = row.get(0)?;
        let mut values = Map::new();
        for (i, (metric, _, _)) in numeric.iter().enumerate() {
            if let Some(v) = row.get::<_, Option<f64>>(i + 1)? {
                values.insert(metric.clone(), json!((v * 1e6).round() / 1e6));
            }
        }
        Ok((ts, values))
    })?;
    for row in found {
        let (ts, values) = row?;
        if !values.is_empty() {
            rows.push((ts, values));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalogue() -> Vec<(String, String, String)> {
        vec![
            ("power".into(), "W".into(), "gauge".into()),
            ("energy".into(), "kWh".into(), "counter".into()),
            ("tariff".into(), "".into(), "text".into()),
        ]
    }

    #[test]
    fn long_ranges_get_windows_unless_asked_for_raw() {
        assert_eq!(Resolution::choose(Some("auto"), 0, 3600), Ok(Resolution::Raw));
        assert_eq!(Resolution::choose(Some("auto"), 0, 86_400), Ok(Resolution::FiveMinutes));
        assert_eq!(Resolution::choose(None, 0, 86_400), Ok(Resolution::Raw));
        assert_eq!(Resolution::choose(Some("raw"), 0, 86_400), Ok(Resolution::Raw));
        assert_eq!(Resolution::choose(Some("5m"), 0, 60), Ok(Resolution::FiveMinutes));
        assert!(Resolution::choose(Some("1h"), 0, 60).is_err());
    }

    #[test]
    fn windows_fold_raw_rows_and_fill_in_from_the_aggregates() {
        let conn = Connection::open_in_memory().expect("db");
        conn.execute_batch(
            "CREATE TABLE m (ts INTEGER PRIMARY KEY, power REAL, energy REAL, tariff TEXT);
             CREATE TABLE m_5m (ts INTEGER PRIMARY KEY, samples INTEGER, power_mean REAL, power_min REAL, power_max REAL, energy REAL, tariff TEXT);
             INSERT INTO m_5m VALUES (0, 3, 50, 40, 60, 1.0, 'a'), (300, 3, 70, 60, 80, 2.0, 'a'), (600, 1, 999, 999, 999, 9.0, 'a');
             INSERT INTO m VALUES (600, 100, 3.0, 'b'), (700, 200, 3.5, 'b'), (900, 10, 4.0, 'b');",
        )
        .expect("rows");
        let rows = windows(&conn, "m", &catalogue(), (0, 1200), 100, false).expect("windows");
        let got: Vec<(i64, f64, f64)> = rows
            .iter()
            .map(|r| {
                (
                    r["ts"].as_i64().unwrap_or(-1),
                    r["values"]["power"].as_f64().unwrap_or(-1.0),
                    r["values"]["energy"].as_f64().unwrap_or(-1.0),
                )
            })
            .collect();
        // 0 and 300 from the aggregates; 600 computed from raw rows (the stored
        // window at 600 overlaps raw rows and is not used); 900 from raw.
        assert_eq!(
            got,
            vec![(0, 50.0, 1.0), (300, 70.0, 2.0), (600, 150.0, 3.5), (900, 10.0, 4.0)]
        );
        let newest = windows(&conn, "m", &catalogue(), (0, 1200), 2, true).expect("windows");
        assert_eq!(newest.len(), 2);
        assert_eq!(newest[0]["ts"], 900);
    }
}
