//! The one-off recompute after a user corrected the epochs (`mesura epochs add|undo`):
//! the stored rows' `<metric>_lifetime` becomes raw + the offset of the epoch each
//! row falls in. The raw column is never touched.

use std::path::Path;

use rusqlite::params;

use crate::backends::sqlite::schema::{open_existing, quote};
use crate::energy::cleaner::lifetime_name;
use crate::energy::epochs::EpochRow;

/// Rewrites the lifetime column of `device`'s rows covered by `epochs` (the
/// counter's epochs, any order) in the SQLite file `db`, in one transaction. Rows
/// without a lifetime value (glitches) stay without one.
/// Returns the rows rewritten; none when the table or the column does not exist
/// (yet): the daemon creates them with the first lifetime reading.
pub fn recompute(db: &Path, device: &str, metric: &str, epochs: &[EpochRow]) -> rusqlite::Result<usize> {
    let mut conn = open_existing(db)?;
    let lifetime = lifetime_name(metric);
    let columns: Vec<String> = {
        let mut stmt = conn.prepare("SELECT name FROM pragma_table_info(?1)")?;
        let names = stmt.query_map([device], |r| r.get(0))?.collect::<Result<_, _>>()?;
        names
    };
    if !columns.iter().any(|c| c == metric) || !columns.iter().any(|c| *c == *lifetime) {
        return Ok(0);
    }
    let sql = format!(
        "UPDATE {table} SET {life} = {raw} + ?1 WHERE ts >= ?2 AND (?3 IS NULL OR ts < ?3) AND {raw} IS NOT NULL AND {life} IS NOT NULL",
        table = quote(device),
        life = quote(&lifetime),
        raw = quote(metric),
    );
    let tx = conn.transaction()?;
    let mut rows = 0;
    for epoch in epochs.iter().filter(|e| e.device == device && e.metric == metric) {
        rows += tx.execute(
            &sql,
            params![epoch.offset, epoch.start.timestamp(), epoch.end.map(|e| e.timestamp())],
        )?;
    }
    tx.commit()?;
    Ok(rows)
}
