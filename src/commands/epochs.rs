//! `mesura epochs list|add|undo`: inspect and correct the counters' epochs
//! (docs/counters.md). A change applies to a running daemon's next readings (it
//! watches the epochs file) and, once, to the stored SQLite rows.

use std::fmt::Write as _;
use std::path::Path;

use chrono::{DateTime, SecondsFormat, Utc};

use super::Outcome;
use crate::config::{BaseConfig, Config};
use crate::energy::epochs::{EpochRow, EpochStore, FILE_NAME};
use crate::energy::recompute::recompute;

/// What `mesura epochs` was asked to do.
#[derive(Debug, Clone, PartialEq)]
pub enum EpochsAction {
    List {
        device: Option<String>,
    },
    Add {
        device: String,
        metric: String,
        /// RFC 3339; none: now.
        start: Option<String>,
        offset: f64,
    },
    Undo {
        device: String,
        metric: String,
    },
}

fn fail(text: String) -> Outcome {
    Outcome { text, ok: false }
}

fn when(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn table(rows: &[EpochRow]) -> String {
    let mut text = format!(
        "{:<16} {:<34} {:<20} {:<20} {:>14} {:<7} {}\n",
        "device", "metric", "start (UTC)", "end (UTC)", "offset", "reason", "identity"
    );
    for r in rows {
        let _ = writeln!(
            text,
            "{:<16} {:<34} {:<20} {:<20} {:>14} {:<7} {}",
            r.device,
            r.metric,
            when(r.start),
            r.end.map(when).unwrap_or_else(|| "(running)".into()),
            format!("{:.3}", r.offset),
            r.reason,
            r.identity.as_deref().unwrap_or("")
        );
    }
    text
}

/// Runs `action` against the data directory of the config at `path`; `now` is the
/// default start of an added epoch.
pub fn epochs(
    path: &Path,
    action: &EpochsAction,
    lookup: &dyn Fn(&str) -> Option<String>,
    now: DateTime<Utc>,
) -> Outcome {
    let base = match Config::load(path, lookup) {
        Ok(c) => c.base,
        Err(e) => return fail(format!("error: {e}\n")),
    };
    let file = base.data_dir.join(FILE_NAME);
    if matches!(action, EpochsAction::List { .. }) && !file.exists() {
        return Outcome {
            text: format!("no epochs yet ({} does not exist)\n", file.display()),
            ok: true,
        };
    }
    let mut store = match EpochStore::open(&file) {
        Ok(s) => s,
        Err(e) => return fail(format!("error: {e}\n")),
    };
    match action {
        EpochsAction::List { device } => match store.list(device.as_deref()) {
            Ok(rows) => Outcome {
                text: table(&rows),
                ok: true,
            },
            Err(e) => fail(format!("error: {e}\n")),
        },
        EpochsAction::Add {
            device,
            metric,
            start,
            offset,
        } => {
            let start = match start {
                None => now,
                Some(s) => match DateTime::parse_from_rfc3339(s) {
                    Ok(t) => t.with_timezone(&Utc),
                    Err(e) => return fail(format!("error: --start {s}: {e} (write e.g. 2026-03-01T10:00:00Z)\n")),
                },
            };
            if !offset.is_finite() {
                return fail("error: --offset must be a number\n".into());
            }
            match store.add(device, metric, start, *offset) {
                Ok(row) => {
                    let mut text = format!("added:\n{}", table(&[row]));
                    text.push_str(&recomputed(&base, &store, device, metric, start));
                    Outcome { text, ok: true }
                }
                Err(e) => fail(format!("error: {e}\n")),
            }
        }
        EpochsAction::Undo { device, metric } => match store.undo(device, metric) {
            Ok((removed, runs_on)) => {
                let from = removed.start;
                let mut text = format!("removed:\n{}runs on:\n{}", table(&[removed]), table(&[runs_on]));
                text.push_str(&recomputed(&base, &store, device, metric, from));
                Outcome { text, ok: true }
            }
            Err(e) => fail(format!("error: {e}\n")),
        },
    }
}

/// Recomputes the stored lifetime rows of the counter, and has the cost job
/// recompute the device's costs from `from` on (its own look-back covers only the
/// last hours); says what it did.
fn recomputed(base: &BaseConfig, store: &EpochStore, device: &str, metric: &str, from: DateTime<Utc>) -> String {
    let Some(sqlite) = &base.backends.sqlite else {
        return "no SQLite backend: no stored rows to recompute\n".into();
    };
    let db = base.data_dir.join(&sqlite.path);
    if !db.exists() {
        return format!("{} does not exist yet: no stored rows to recompute\n", db.display());
    }
    let rows = match store.list(Some(device)) {
        Ok(rows) => rows,
        Err(e) => return format!("warning: stored rows not recomputed: {e}\n"),
    };
    let mut text = match recompute(&db, device, metric, &rows) {
        Ok(n) => format!("recomputed {metric}_lifetime in {n} stored rows of {device}\n"),
        Err(e) => format!("warning: stored rows not recomputed ({}): {e}\n", db.display()),
    };
    match crate::backends::sqlite::cost::forget_from(&db, device, from.timestamp()) {
        Ok(0) => {}
        Ok(n) => text.push_str(&format!(
            "{n} cost rows from {from} on are computed again by the running daemon\n"
        )),
        Err(e) => text.push_str(&format!("warning: cost rows not reset: {e}\n")),
    }
    text
}
