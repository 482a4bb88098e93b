//! `<device>_monthly_peaks`: the Belgian capacity tariff's monthly peaks, one row
//! per month, as the meter's `0-0:98.1.0` history reports them.
//!
//! The history repeats the same up to 13 months in every telegram (each second on
//! DSMR 5), so rows are upserted by month: a telegram adds the month that just
//! closed and rewrites nothing else unless the meter changed its mind. Months the
//! meter has dropped from its 13 stay in the table: it keeps the longer record.
//!
//! ```sql
//! SELECT month, peak_w, peak_at FROM "p1_monthly_peaks" ORDER BY month;
//! ```
//!
//! The rows come from the [`MonthlyPeaks`] a `dsmr` monitor hands on beside its
//! readings when the meter's history changed (and again hourly): the closed months
//! only; the running month is not stored until the meter closes it.

use rusqlite::{params, Connection};

use super::schema::quote;
use crate::reading::MonthlyPeaks;

/// One month of a device's peak history.
#[derive(Debug, Clone, PartialEq)]
pub struct MonthlyPeakRow {
    /// `YYYY-MM`, the month in the meter's local calendar.
    pub month: String,
    /// The month's highest quarter-hour average demand, in W.
    pub peak_w: f64,
    /// When that quarter hour was, unix seconds UTC; `None` when the meter sent a
    /// placeholder time (no peak recorded that month).
    pub peak_at: Option<i64>,
}

/// The table's name for `device`.
pub fn table_name(device: &str) -> String {
    format!("{device}_monthly_peaks")
}

/// Creates the device's table if it is not there.
pub fn ensure_table(conn: &Connection, device: &str) -> rusqlite::Result<()> {
    conn.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS {} (
            month TEXT PRIMARY KEY NOT NULL,
            peak_w REAL NOT NULL,
            peak_at INTEGER
        ) WITHOUT ROWID;",
        quote(&table_name(device))
    ))
}

/// Writes `rows` (creating the table when needed), one transaction; returns how
/// many rows were added or changed — 0 for the same history seen again.
pub fn upsert(conn: &mut Connection, device: &str, rows: &[MonthlyPeakRow]) -> rusqlite::Result<usize> {
    let tx = conn.transaction()?;
    ensure_table(&tx, device)?;
    let mut changed = 0;
    {
        // `IS NOT` compares NULLs as values: an unchanged month is not rewritten.
        let mut stmt = tx.prepare_cached(&format!(
            "INSERT INTO {} (month, peak_w, peak_at) VALUES (?1, ?2, ?3)
             ON CONFLICT(month) DO UPDATE SET peak_w = excluded.peak_w, peak_at = excluded.peak_at
             WHERE peak_w IS NOT excluded.peak_w OR peak_at IS NOT excluded.peak_at",
            quote(&table_name(device))
        ))?;
        for row in rows {
            changed += stmt.execute(params![row.month, row.peak_w, row.peak_at])?;
        }
    }
    tx.commit()?;
    Ok(changed)
}

/// Stores the closed months of `peaks` for its device; unchanged months are not
/// rewritten (the same history again writes nothing).
pub fn write(conn: &mut Connection, peaks: &MonthlyPeaks) -> rusqlite::Result<usize> {
    let rows: Vec<MonthlyPeakRow> = peaks
        .months
        .iter()
        .map(|m| MonthlyPeakRow {
            month: m.month.clone(),
            peak_w: m.peak_w,
            peak_at: m.peak_at.map(|t| t.timestamp()),
        })
        .collect();
    let changed = upsert(conn, &peaks.device, &rows)?;
    if changed > 0 {
        tracing::debug!(device = %peaks.device, months = changed, "monthly peaks stored");
    }
    Ok(changed)
}

/// Every month stored for `device`, oldest first; empty when it has no table.
pub fn load(conn: &Connection, device: &str) -> rusqlite::Result<Vec<MonthlyPeakRow>> {
    let table = table_name(device);
    let exists: bool = conn.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1)",
        [&table],
        |r| r.get(0),
    )?;
    if !exists {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(&format!(
        "SELECT month, peak_w, peak_at FROM {} ORDER BY month",
        quote(&table)
    ))?;
    let rows = stmt.query_map([], |r| {
        Ok(MonthlyPeakRow {
            month: r.get(0)?,
            peak_w: r.get(1)?,
            peak_at: r.get(2)?,
        })
    })?;
    rows.collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(month: &str, peak_w: f64, peak_at: Option<i64>) -> MonthlyPeakRow {
        MonthlyPeakRow {
            month: month.into(),
            peak_w,
            peak_at,
        }
    }

    #[test]
    fn a_history_is_stored_once_and_updated_by_month() {
        let mut conn = Connection::open_in_memory().expect("db");
        assert_eq!(load(&conn, "p1").expect("load"), []);
        // Two months of a Landis+Gyr E360 history: the first without a peak time.
        let history = [row("2025-07", 0.0, None), row("2025-10", 4122.0, Some(1_761_746_400))];
        assert_eq!(upsert(&mut conn, "p1", &history).expect("upsert"), 2);
        // The same history in the next telegram changes nothing.
        assert_eq!(upsert(&mut conn, "p1", &history).expect("upsert"), 0);
        // A month closes; the oldest may drop out of the meter's 13 but stays here.
        let next = [
            row("2025-10", 4122.0, Some(1_761_746_400)),
            row("2025-11", 3933.0, Some(1_763_746_200)),
        ];
        assert_eq!(upsert(&mut conn, "p1", &next).expect("upsert"), 1);
        // A corrected month is rewritten.
        assert_eq!(
            upsert(&mut conn, "p1", &[row("2025-07", 0.0, Some(1))]).expect("upsert"),
            1
        );
        assert_eq!(
            load(&conn, "p1").expect("load"),
            [
                row("2025-07", 0.0, Some(1)),
                row("2025-10", 4122.0, Some(1_761_746_400)),
                row("2025-11", 3933.0, Some(1_763_746_200)),
            ]
        );
    }

    #[test]
    fn any_device_id_makes_its_own_table() {
        let mut conn = Connection::open_in_memory().expect("db");
        let odd = "meter \"east\"";
        upsert(&mut conn, odd, &[row("2026-01", 2500.0, None)]).expect("upsert");
        upsert(&mut conn, "p1", &[row("2026-01", 9000.0, None)]).expect("upsert");
        assert_eq!(load(&conn, odd).expect("load"), [row("2026-01", 2500.0, None)]);
        assert_eq!(table_name(odd), "meter \"east\"_monthly_peaks");
    }
}
