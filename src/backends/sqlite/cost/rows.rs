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
    let tables: Vec<(String, i64, Vec<String>)> = sources(conn, device)?
        .into_iter()
        .enumerate()
        .filter(|(_, (_, existing))| cols.iter().all(|c| existing.contains(c)))
        .map(|(i, (table, existing))| {
            let values = cols
                .iter()
                .map(|c| value_sql(conn, &table, &existing, c, from))
                .collect::<rusqlite::Result<Vec<_>>>()?;
            Ok((quote(&table), if i == 0 { 0 } else { WINDOW - 1 }, values))
        })
        .collect::<rusqlite::Result<_>>()?;
    let sum = |values: &[String]| values.join(" + ");
    let present = |values: &[String]| {
        values
            .iter()
            .map(|v| format!("{v} IS NOT NULL"))
            .collect::<Vec<_>>()
            .join(" AND ")
    };
    let mut before: Option<i64> = None;
    let mut after: Option<i64> = None;
    for (t, shift, values) in &tables {
        let present = present(values);
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
    for (t, shift, values) in &tables {
        let (sum, present) = (sum(values), present(values));
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

/// The SQL of counter column `column` in `table` for a window from `from`: a
/// `<metric>_lifetime` column reads as its raw counter in the rows stored before
/// its series began (a database from before the clean counters, or rows imported
/// without it), never after it began: there a row without a lifetime value is a
/// glitch, left out on purpose. Only the rows next to the window are looked at, so
/// a long history without the column costs nothing each run.
fn value_sql(
    conn: &Connection,
    table: &str,
    existing: &HashSet<String>,
    column: &str,
    from: i64,
) -> rusqlite::Result<String> {
    let Some(raw) = column.strip_suffix("_lifetime").filter(|raw| existing.contains(*raw)) else {
        return Ok(quote(column));
    };
    let (t, c) = (quote(table), quote(column));
    // The last row before the window: with a lifetime value, the series began before.
    let before: Option<Option<f64>> = conn
        .query_row(
            &format!("SELECT {c} FROM {t} WHERE ts < ?1 ORDER BY ts DESC LIMIT 1"),
            [from],
            |r| r.get(0),
        )
        .optional()?;
    if matches!(before, Some(Some(_))) {
        return Ok(c);
    }
    let began: Option<i64> = conn.query_row(
        &format!("SELECT min(ts) FROM {t} WHERE {c} IS NOT NULL AND ts >= ?1"),
        [from],
        |r| r.get(0),
    )?;
    Ok(match began {
        Some(began) => format!("(CASE WHEN ts < {began} THEN {} ELSE {c} END)", quote(raw)),
        None => quote(raw),
    })
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
