//! Reading what the cost job costs: a device's counter rows and a prices device's
//! price rows, raw and (older than `retention.raw`) from `<device>_5m`.

use std::collections::{BTreeMap, HashSet};

use rusqlite::{Connection, OptionalExtension};

use crate::backends::sqlite::downsample::WINDOW;
use crate::backends::sqlite::schema::{aggregate_table, quote};

pub(super) fn columns(conn: &Connection, table: &str) -> rusqlite::Result<HashSet<String>> {
    conn.prepare(&format!("PRAGMA table_info({})", quote(table)))?
        .query_map([], |r| r.get::<_, String>(1))?
        .collect()
}

/// The stored column for counter `name`: its lifetime series when there is one.
pub(super) fn column_for(existing: &HashSet<String>, name: &str) -> Option<String> {
    let lifetime = format!("{name}_lifetime");
    if existing.contains(&lifetime) {
        Some(lifetime)
    } else {
        existing.contains(name).then(|| name.to_owned())
    }
}

/// Where a device's rows are: its table, and `<device>_5m` once the downsampler
/// has replaced rows older than `retention.raw` (a counter keeps its name there,
/// with the last value of each 5-minute window; a gauge becomes `x_mean`). The two
/// never overlap: a raw row is deleted in the transaction that aggregates it.
fn sources(conn: &Connection, device: &str) -> rusqlite::Result<Vec<(String, HashSet<String>)>> {
    let mut out = vec![(device.to_owned(), columns(conn, device)?)];
    let agg = aggregate_table(device);
    if table_exists(conn, &agg)? {
        let cols = columns(conn, &agg)?;
        out.push((agg, cols));
    }
    Ok(out)
}

/// `(ts, sum of columns)` of the rows where every column has a value, from the last
/// such row before `from` to the first at or after `to`, raw and aggregated rows
/// merged. An aggregate's last value is placed at its window's last second: for a
/// meter read every few seconds, close to when it was read.
pub(super) fn samples(
    conn: &Connection,
    device: &str,
    cols: &[String],
    from: i64,
    to: i64,
) -> rusqlite::Result<Vec<(i64, f64)>> {
    if cols.is_empty() {
        return Ok(Vec::new());
    }
    let sum = cols.iter().map(|c| quote(c)).collect::<Vec<_>>().join(" + ");
    let present = cols
        .iter()
        .map(|c| format!("{} IS NOT NULL", quote(c)))
        .collect::<Vec<_>>()
        .join(" AND ");
    let tables: Vec<(String, i64)> = sources(conn, device)?
        .into_iter()
        .enumerate()
        .filter(|(_, (_, existing))| cols.iter().all(|c| existing.contains(c)))
        .map(|(i, (table, _))| (quote(&table), if i == 0 { 0 } else { WINDOW - 1 }))
        .collect();
    let mut before: Option<i64> = None;
    let mut after: Option<i64> = None;
    for (t, shift) in &tables {
        let prev: Option<i64> = conn.query_row(
            &format!("SELECT max(ts) FROM {t} WHERE {present} AND ts < ?1"),
            [from - shift],
            |r| r.get(0),
        )?;
        let next: Option<i64> = conn.query_row(
            &format!("SELECT min(ts) FROM {t} WHERE {present} AND ts >= ?1"),
            [to - shift],
            |r| r.get(0),
        )?;
        before = before.max(prev.map(|p| p + shift));
        after = match (after, next.map(|n| n + shift)) {
            (Some(a), Some(n)) => Some(a.min(n)),
            (a, n) => a.or(n),
        };
    }
    let (lo, hi) = (before.unwrap_or(from), after.unwrap_or(to));
    let mut out = Vec::new();
    for (t, shift) in &tables {
        let sql = format!("SELECT ts + ?3, {sum} FROM {t} WHERE {present} AND ts >= ?1 AND ts <= ?2 ORDER BY ts");
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map([lo - shift, hi - shift, *shift], |r| {
            Ok((r.get::<_, i64>(0)?, r.get::<_, f64>(1)?))
        })?;
        for row in rows {
            out.push(row?);
        }
    }
    out.sort_by_key(|(ts, _)| *ts);
    Ok(out)
}

/// Stored day-ahead prices `start → (EUR/kWh, slot length)` of `[from, to)`, from
/// the prices device's rows and, older than `retention.raw`, its aggregates (one
/// price row per window: its mean is the price).
pub(super) fn prices(
    conn: &Connection,
    device: &str,
    from: i64,
    to: i64,
) -> rusqlite::Result<BTreeMap<i64, (f64, i64)>> {
    let mut out = BTreeMap::new();
    for (i, (table, existing)) in sources(conn, device)?.into_iter().enumerate() {
        let suffix = if i == 0 { "" } else { "_mean" };
        let price = format!("price{suffix}");
        if !existing.contains(&price) {
            continue;
        }
        let resolution = format!("price_resolution{suffix}");
        let resolution = if existing.contains(&resolution) {
            format!("coalesce(CAST({} AS INTEGER), 3600)", quote(&resolution))
        } else {
            "3600".to_owned()
        };
        let price = quote(&price);
        let sql = format!(
            "SELECT ts, {price}, {resolution} FROM {} WHERE {price} IS NOT NULL AND ts >= ?1 AND ts < ?2",
            quote(&table)
        );
        let mut stmt = conn.prepare(&sql)?;
        let rows = stmt.query_map([from - 86_400, to], |r| {
            Ok((r.get::<_, i64>(0)?, (r.get::<_, f64>(1)?, r.get::<_, i64>(2)?)))
        })?;
        for row in rows {
            let (ts, value) = row?;
            out.insert(ts, value);
        }
    }
    Ok(out)
}

/// The device's first row, raw or aggregated.
pub(super) fn first_ts(conn: &Connection, device: &str) -> rusqlite::Result<Option<i64>> {
    let mut first: Option<i64> = None;
    for (table, _) in sources(conn, device)? {
        let ts: Option<i64> = conn.query_row(&format!("SELECT min(ts) FROM {}", quote(&table)), [], |r| r.get(0))?;
        first = match (first, ts) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
    }
    Ok(first)
}

pub(super) fn table_exists(conn: &Connection, name: &str) -> rusqlite::Result<bool> {
    conn.query_row(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1",
        [name],
        |_| Ok(()),
    )
    .optional()
    .map(|r| r.is_some())
}
