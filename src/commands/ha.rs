//! `mesura ha backfill`: brings Home Assistant's hourly statistics of the energy,
//! gas and water counters up to date from mesura's SQLite file, as the daemon does
//! after an outage (docs/backends/mqtt.md, Home Assistant); `--dry-run` prints what
//! it would import.

use std::fmt::Write as _;
use std::path::Path;

use chrono::{TimeZone, Utc};

use super::Outcome;
use crate::backends::mqtt::ha::{self, Settings};
use crate::backends::sqlite::export::parse_instant;
use crate::config::Config;

#[derive(Debug, Clone, Default)]
pub struct BackfillRequest {
    /// From this instant [default: `lookback` ago].
    pub from: Option<String>,
    /// Up to this instant, excluded [default: now]; only whole hours are kept.
    pub to: Option<String>,
    pub dry_run: bool,
}

fn failed(text: String) -> Outcome {
    Outcome {
        text: format!("error: {text}\n"),
        ok: false,
    }
}

pub async fn backfill(config: &Path, lookup: &dyn Fn(&str) -> Option<String>, request: &BackfillRequest) -> Outcome {
    let config = match Config::load(config, lookup) {
        Ok(c) => c,
        Err(e) => return failed(e.to_string()),
    };
    let Some(mqtt) = &config.base.backends.mqtt else {
        return failed("backends.mqtt is not configured".into());
    };
    let Some(section) = &mqtt.homeassistant.statistics else {
        return failed("backends.mqtt.homeassistant.statistics is not configured (url, token)".into());
    };
    let mut settings: Settings = match Settings::resolve(section, &mqtt.homeassistant.node_id, &config.base.data_dir) {
        Ok(s) => s,
        Err(e) => return failed(ha::chain(&e)),
    };
    // The database the sqlite backend writes, unless the section names another.
    if let (Some(sqlite), true) = (&config.base.backends.sqlite, section.database == ha::default_database()) {
        settings.database = config.base.data_dir.join(&sqlite.path);
    }
    let now = Utc::now().timestamp();
    let instant = |text: &Option<String>, default: i64, what: &str| match text {
        Some(text) => parse_instant(text).map_err(|e| format!("{what}: {e}")),
        None => Ok(default),
    };
    let from = match instant(&request.from, now - settings.lookback.as_secs() as i64, "--from") {
        Ok(t) => t,
        Err(e) => return failed(e),
    };
    let to = match instant(&request.to, now, "--to") {
        Ok(t) => t.min(now),
        Err(e) => return failed(e),
    };
    let report = match ha::pass(&settings, from, to, request.dry_run).await {
        Ok(r) => r,
        Err(e) => return failed(ha::chain(&e)),
    };
    let hour = |t: i64| {
        Utc.timestamp_opt(t, 0)
            .single()
            .map(|t| t.format("%Y-%m-%dT%H:%MZ").to_string())
            .unwrap_or_default()
    };
    let mut text = String::new();
    let total: usize = report.iter().map(|r| r.hours.len()).sum();
    let _ = writeln!(
        text,
        "{} {total} hours of {} statistics, {} to {}",
        if request.dry_run { "would import" } else { "imported" },
        report.len(),
        hour(ha::backfill::floor_hour(from)),
        hour(ha::backfill::floor_hour(to)),
    );
    for r in report.iter().filter(|r| r.waiting) {
        let _ = writeln!(
            text,
            "{} ({}): waiting: Home Assistant has no statistics or numeric state of it yet (its first 5-minute statistics come within 5 minutes)",
            r.statistic_id, r.unit
        );
    }
    for r in report.iter().filter(|r| !r.waiting) {
        let _ = writeln!(
            text,
            "{} ({}): {} hours to import, {} already right",
            r.statistic_id,
            r.unit,
            r.hours.len(),
            r.right
        );
        for h in &r.hours {
            let _ = writeln!(text, "  {}  state {}  sum {}", hour(h.start), h.state, h.sum);
        }
    }
    Outcome { text, ok: true }
}
