//! Home Assistant beyond discovery: long-term statistics kept true after an outage
//! (`homeassistant.statistics`), and the record of published discovery configs.
//!
//! Home Assistant stamps an MQTT state when it arrives, so the readings of a
//! five-hour outage would land in one hour of its Energy dashboard. A pass computes
//! each energy, gas and water counter's true hourly `state`/`sum` from mesura's
//! SQLite rows (the `<metric>_lifetime` series where there is one) and imports the
//! hours Home Assistant lacks or has wrong with `recorder/import_statistics`.
//! `schedule.rs` says when, `backfill.rs` computes, `ws.rs` talks to Home Assistant.

pub mod backfill;
pub mod published;
pub mod schedule;
pub mod ws;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use serde::{Deserialize, Serialize};
use serde_json::json;
use thiserror::Error;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::backfill::{Base, Sample};
use self::ws::{HaError, HaSocket};
use super::discovery::{device_class, slug};
use crate::config::secret::{read_secret_file, Secret};
use crate::energy::cleaner::LIFETIME_SUFFIX;
use crate::protocols::ha_statistics::{self, HourStat};

/// `backends.mqtt.homeassistant.statistics`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct StatisticsConfig {
    /// Home Assistant's address, e.g. `http://homeassistant.local:8123` (https for
    /// TLS); its websocket API is `<url>/api/websocket`.
    pub url: String,
    /// A long-lived access token (Home Assistant: your profile, Security); write
    /// `${HA_TOKEN}` to take it from the environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// A file holding the token (or a systemd credential name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// mesura's SQLite file the hours are computed from; relative to `data_dir`.
    /// Set it when `backends.sqlite.path` is not the default.
    #[serde(default = "default_database")]
    pub database: PathBuf,
    /// How far back a pass looks at most, and the first pass after a start.
    #[serde(default = "default_lookback", with = "crate::config::duration")]
    pub lookback: Duration,
}

pub fn default_database() -> PathBuf {
    crate::backends::sqlite::default_path()
}
pub fn default_lookback() -> Duration {
    Duration::from_secs(24 * 3600)
}

impl StatisticsConfig {
    pub fn validate(&self) -> Result<(), String> {
        match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => Err("statistics: set token or token_file, not both".into()),
            (None, None) => Err("statistics: a token or token_file is required".into()),
            _ => ws::endpoint(&self.url)
                .map(|_| ())
                .map_err(|e| format!("statistics: {e}")),
        }
    }
}

#[derive(Debug, Error)]
pub enum BackfillError {
    #[error("cannot read the token file {path}")]
    Token {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read mesura's database {path}")]
    Store {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(transparent)]
    Ha(#[from] HaError),
    #[error("the database task failed")]
    Join(#[source] tokio::task::JoinError),
}

/// What a pass needs, resolved.
#[derive(Debug, Clone)]
pub struct Settings {
    pub url: String,
    pub token: Secret,
    pub database: PathBuf,
    pub node_id: String,
    pub lookback: Duration,
}

impl Settings {
    pub fn resolve(config: &StatisticsConfig, node_id: &str, data_dir: &Path) -> Result<Settings, BackfillError> {
        let token = match (&config.token, &config.token_file) {
            (Some(token), _) => token.clone(),
            (None, Some(path)) => read_secret_file(path).map_err(|source| BackfillError::Token {
                path: path.clone(),
                source,
            })?,
            (None, None) => Secret::new(String::new()),
        };
        Ok(Settings {
            url: config.url.clone(),
            token,
            database: data_dir.join(&config.database),
            node_id: node_id.to_owned(),
            lookback: config.lookback,
        })
    }
}

/// A counter whose hourly statistics a pass keeps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Counter {
    pub device: String,
    pub metric: String,
    pub unit: String,
}

/// What a pass found and did, per statistic.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    pub statistic_id: String,
    pub unit: String,
    /// The hours imported (or that a dry run would import).
    pub hours: Vec<HourStat>,
    /// Hours of the period Home Assistant already had right.
    pub right: usize,
    /// Home Assistant has nothing yet the sums could join (no statistics, no numeric
    /// state): nothing is imported for it until it has (the next pass).
    pub waiting: bool,
}

/// The energy, gas and water counters in the database with a state class in Home
/// Assistant: a raw counter beside its `<metric>_lifetime` series leaves the
/// statistics to that one (discovery.rs).
pub fn counters(conn: &Connection) -> rusqlite::Result<Vec<Counter>> {
    let rows: Vec<(String, String, String)> = conn
        .prepare("SELECT device, metric, unit FROM metrics WHERE kind = 'counter' ORDER BY device, metric")?
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<Result<_, _>>()?;
    let all: BTreeSet<(String, String)> = rows.iter().map(|(d, m, _)| (d.clone(), m.clone())).collect();
    Ok(rows
        .into_iter()
        .filter(|(_, metric, unit)| matches!(device_class(metric, unit), Some("energy" | "gas" | "water")))
        .filter(|(device, metric, _)| !all.contains(&(device.clone(), format!("{metric}{LIFETIME_SUFFIX}"))))
        .map(|(device, metric, unit)| Counter { device, metric, unit })
        .collect())
}

/// The counter's stored readings in `[from, to)`, after the last one before `from`.
pub fn samples(conn: &Connection, counter: &Counter, from: i64, to: i64) -> rusqlite::Result<Vec<Sample>> {
    let table = crate::backends::sqlite::schema::quote(&counter.device);
    let column = crate::backends::sqlite::schema::quote(&counter.metric);
    let row = |r: &rusqlite::Row<'_>| -> rusqlite::Result<Sample> {
        Ok(Sample {
            ts: r.get(0)?,
            value: r.get(1)?,
        })
    };
    let mut out: Vec<Sample> = conn
        .prepare(&format!(
            "SELECT ts, {column} FROM {table} WHERE ts < ?1 AND {column} IS NOT NULL ORDER BY ts DESC LIMIT 1"
        ))?
        .query_map([from], row)?
        .collect::<Result<_, _>>()?;
    let rest: Vec<Sample> = conn
        .prepare(&format!(
            "SELECT ts, {column} FROM {table} WHERE ts >= ?1 AND ts < ?2 AND {column} IS NOT NULL ORDER BY ts"
        ))?
        .query_map([from, to], row)?
        .collect::<Result<_, _>>()?;
    out.extend(rest);
    Ok(out)
}

fn open(path: &Path) -> Result<Connection, BackfillError> {
    let store = |source| BackfillError::Store {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open_with_flags(path, OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX)
        .map_err(store)?;
    conn.busy_timeout(Duration::from_secs(10)).map_err(store)?;
    Ok(conn)
}

/// How far before the period Home Assistant's last hour is looked for (the base
/// the sums continue from).
const BASE_LOOKBACK: i64 = 7 * 24 * backfill::HOUR;

/// Where each statistic's sums continue from, so that they join the sums Home
/// Assistant compiles itself after the pass (a counter's sum is linear in its
/// value: `sum = base.sum + value − base.state` at any time): its latest short-term
/// statistic, which its next hours continue; else its last hour before the period;
/// else, for an entity it has compiled nothing of yet, its first numeric state in
/// its history, where its own first compile will put the zero. A statistic with
/// none of these (Home Assistant without its `history` integration, right after it
/// created the entity) has no base: the pass leaves it for the next one.
async fn bases(
    socket: &mut HaSocket,
    ids: &[String],
    hourly: &BTreeMap<String, Vec<HourStat>>,
    from: i64,
    to: i64,
) -> Result<BTreeMap<String, Base>, HaError> {
    let finite = |h: &&HourStat| h.state.is_finite() && h.sum.is_finite();
    let as_base = |h: &HourStat| Base {
        state: h.state,
        sum: h.sum,
    };
    let now = chrono::Utc::now().timestamp();
    let id = socket.id();
    let short = socket
        .command(
            id,
            "recorder/statistics_during_period",
            &ha_statistics::statistics_of_period(id, now - 24 * backfill::HOUR, now + backfill::HOUR, ids, "5minute"),
        )
        .await?;
    let short = ha_statistics::statistics_of(&short);
    let mut out = BTreeMap::new();
    let mut unanchored = Vec::new();
    for statistic_id in ids {
        let latest_short = short
            .get(statistic_id)
            .and_then(|rows| rows.iter().filter(finite).max_by_key(|h| h.start));
        let hour_before = hourly.get(statistic_id).and_then(|rows| {
            rows.iter()
                .filter(|h| h.start < from)
                .filter(finite)
                .max_by_key(|h| h.start)
        });
        match latest_short.or(hour_before) {
            Some(h) => {
                out.insert(statistic_id.clone(), as_base(h));
            }
            None => unanchored.push(statistic_id.clone()),
        }
    }
    if !unanchored.is_empty() {
        let id = socket.id();
        let history = socket
            .command(
                id,
                "history/history_during_period",
                &ha_statistics::history_during_period(id, from.min(to) - BASE_LOOKBACK, &unanchored),
            )
            .await;
        match history {
            Ok(history) => {
                for (entity, first) in ha_statistics::first_numeric_states(&history) {
                    out.insert(entity, Base { state: first, sum: 0.0 });
                }
            }
            // Without the `history` integration (it comes with `default_config:`).
            Err(HaError::Command { message, .. }) => {
                tracing::debug!(backend = "mqtt", reason = %message, "Home Assistant's history is not available: new statistics start at mesura's first reading");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// One pass over the hours `[from, to)`: per counter Home Assistant has an entity
/// for, the hours it lacks or has wrong, imported unless `dry_run`.
pub async fn pass(settings: &Settings, from: i64, to: i64, dry_run: bool) -> Result<Vec<Imported>, BackfillError> {
    let from = backfill::floor_hour(from);
    let to = backfill::floor_hour(to);
    let path = settings.database.clone();
    let found = tokio::task::spawn_blocking(move || {
        let conn = open(&path)?;
        counters(&conn).map_err(|source| BackfillError::Store { path, source })
    })
    .await
    .map_err(BackfillError::Join)??;
    if found.is_empty() || from >= to {
        return Ok(Vec::new());
    }
    let mut socket = HaSocket::connect(&settings.url, settings.token.expose()).await?;
    let registry = socket.call(json!({"type": "config/entity_registry/list"})).await?;
    let entity_ids = ha_statistics::entity_ids(&registry, "mqtt");
    let node = slug(&settings.node_id);
    let known: Vec<(Counter, String)> = found
        .into_iter()
        .filter_map(|c| {
            let unique_id = format!("{node}_{}_{}", slug(&c.device), slug(&c.metric));
            entity_ids.get(&unique_id).map(|id| (c, id.clone()))
        })
        .collect();
    if known.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = known.iter().map(|(_, id)| id.clone()).collect();
    let id = socket.id();
    let theirs = socket
        .command(
            id,
            "recorder/statistics_during_period",
            &ha_statistics::statistics_during_period(id, from - BASE_LOOKBACK, to, &ids),
        )
        .await?;
    let theirs = ha_statistics::statistics_of(&theirs);
    let bases = bases(&mut socket, &ids, &theirs, from, to).await?;
    let path = settings.database.clone();
    let counters: Vec<Counter> = known.iter().map(|(c, _)| c.clone()).collect();
    let stored: Vec<Vec<Sample>> = tokio::task::spawn_blocking(move || {
        let conn = open(&path)?;
        counters
            .iter()
            .map(|c| samples(&conn, c, from, to))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|source| BackfillError::Store { path, source })
    })
    .await
    .map_err(BackfillError::Join)??;
    let mut report = Vec::new();
    for ((counter, statistic_id), samples) in known.iter().zip(stored) {
        let hours: &[HourStat] = theirs.get(statistic_id).map(Vec::as_slice).unwrap_or_default();
        tracing::debug!(backend = "mqtt", statistic = %statistic_id, base = ?bases.get(statistic_id), readings = samples.len(), "statistics pass");
        let Some(base) = bases.get(statistic_id).copied() else {
            // Sums from a zero of mesura's choosing would not join the ones Home
            // Assistant compiles once it has seen the entity: wait for it.
            report.push(Imported {
                statistic_id: statistic_id.clone(),
                unit: counter.unit.clone(),
                hours: Vec::new(),
                right: 0,
                waiting: true,
            });
            continue;
        };
        let ours = backfill::hourly(&samples, from, to, Some(base));
        let import = backfill::to_import(&ours, hours);
        if !import.is_empty() && !dry_run {
            let id = socket.id();
            socket
                .command(
                    id,
                    "recorder/import_statistics",
                    &ha_statistics::import_statistics(id, statistic_id, &counter.unit, &import),
                )
                .await?;
        }
        report.push(Imported {
            statistic_id: statistic_id.clone(),
            unit: counter.unit.clone(),
            right: ours.len() - import.len(),
            hours: import,
            waiting: false,
        });
    }
    Ok(report)
}

/// The daemon's backfill task: passes over the periods delivery hands it, one at a
/// time; a failed pass is retried a minute later (periods merge meanwhile).
pub fn spawn(settings: Settings, stop: CancellationToken) -> (mpsc::UnboundedSender<(i64, i64)>, JoinHandle<()>) {
    let (tx, rx) = mpsc::unbounded_channel();
    (tx, tokio::spawn(run(settings, rx, stop)))
}

const RETRY: Duration = Duration::from_secs(60);
/// How long a pass waits after it is asked for: Home Assistant creates an entity
/// (and its entity id, which names the statistic) from the discovery config sent
/// at its birth or with a device's first reading, within a second or two.
const SETTLE: Duration = Duration::from_secs(10);

async fn run(settings: Settings, mut rx: mpsc::UnboundedReceiver<(i64, i64)>, stop: CancellationToken) {
    let mut pending: Option<(i64, i64)> = None;
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            period = rx.recv() => match period {
                Some((from, to)) => {
                    pending = Some(pending.map_or((from, to), |(f, t)| (f.min(from), t.max(to))));
                    retry_at = Some(tokio::time::Instant::now() + SETTLE);
                }
                None => return,
            },
            _ = tokio::time::sleep_until(retry_at.unwrap_or_else(tokio::time::Instant::now)), if retry_at.is_some() => {
                retry_at = None;
                let Some((from, to)) = pending else { continue };
                let earliest = chrono::Utc::now().timestamp() - settings.lookback.as_secs() as i64;
                let from = from.max(backfill::floor_hour(earliest));
                let outcome = tokio::select! {
                    _ = stop.cancelled() => return,
                    outcome = pass(&settings, from, to, false) => outcome,
                };
                match outcome {
                    Ok(report) => {
                        pending = None;
                        log_report(&report, from, to);
                    }
                    Err(e) => {
                        tracing::warn!(backend = "mqtt", error = %chain(&e), retry_in = ?RETRY, "cannot bring Home Assistant's statistics up to date");
                        retry_at = Some(tokio::time::Instant::now() + RETRY);
                    }
                }
            }
        }
    }
}

fn log_report(report: &[Imported], from: i64, to: i64) {
    let imported: usize = report.iter().map(|r| r.hours.len()).sum();
    let by_id: BTreeMap<&str, usize> = report
        .iter()
        .filter(|r| !r.hours.is_empty())
        .map(|r| (r.statistic_id.as_str(), r.hours.len()))
        .collect();
    let hours = (to - from) / backfill::HOUR;
    let waiting: Vec<&str> = report
        .iter()
        .filter(|r| r.waiting)
        .map(|r| r.statistic_id.as_str())
        .collect();
    if !waiting.is_empty() {
        tracing::info!(
            backend = "mqtt",
            ?waiting,
            "Home Assistant has no statistics or numeric state of these yet: the next pass brings them up to date"
        );
    }
    if imported > 0 {
        tracing::info!(backend = "mqtt", statistics = report.len(), hours, imported, of = ?by_id, "Home Assistant's statistics brought up to date from mesura's readings");
    } else {
        tracing::debug!(
            backend = "mqtt",
            statistics = report.len(),
            hours,
            "Home Assistant's statistics were already right"
        );
    }
}

/// The error and its causes, for the log ("cannot connect …: Connection refused").
pub fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(yaml: &str) -> StatisticsConfig {
        serde_yaml_ng::from_str(yaml).expect("section")
    }

    #[test]
    fn the_section_needs_one_token_and_a_usable_url() {
        let ok = section("url: http://ha.lan:8123\ntoken: abc\n");
        assert_eq!(ok.validate(), Ok(()));
        assert_eq!(
            (ok.database.clone(), ok.lookback),
            (default_database(), default_lookback())
        );
        assert!(section("url: http://ha.lan:8123\n")
            .validate()
            .unwrap_err()
            .contains("token"));
        assert!(section("url: http://h\ntoken: a\ntoken_file: f\n")
            .validate()
            .unwrap_err()
            .contains("not both"));
        assert!(section("url: ftp://h\ntoken: a\n")
            .validate()
            .unwrap_err()
            .contains("scheme"));
    }

    #[test]
    fn the_counters_are_the_energy_gas_and_water_ones_with_the_statistics() {
        let conn = Connection::open_in_memory().expect("sqlite");
        conn.execute_batch(
            "CREATE TABLE metrics (device TEXT, metric TEXT, unit TEXT, kind TEXT);
             INSERT INTO metrics VALUES
               ('p1', 'energy_delivered_tariff1', 'kWh', 'counter'),
               ('p1', 'energy_delivered_tariff1_lifetime', 'kWh', 'counter'),
               ('p1', 'power_delivered', 'W', 'gauge'),
               ('p1', 'gas_delivered', 'm³', 'counter'),
               ('tap', 'water_total', 'm³', 'counter'),
               ('host', 'uptime', 's', 'counter');
             CREATE TABLE p1 (ts INTEGER PRIMARY KEY, gas_delivered REAL);
             INSERT INTO p1 VALUES (100, 1.0), (3700, NULL), (3800, 2.5), (7300, 3.0);",
        )
        .expect("schema");
        let found: Vec<(String, String)> = counters(&conn)
            .expect("counters")
            .into_iter()
            .map(|c| (c.device, c.metric))
            .collect();
        assert_eq!(
            found,
            vec![
                ("p1".to_owned(), "energy_delivered_tariff1_lifetime".to_owned()),
                ("p1".to_owned(), "gas_delivered".to_owned()),
                ("tap".to_owned(), "water_total".to_owned()),
            ]
        );
        let gas = Counter {
            device: "p1".into(),
            metric: "gas_delivered".into(),
            unit: "m³".into(),
        };
        let got = samples(&conn, &gas, 3600, 7200).expect("samples");
        assert_eq!(
            got,
            vec![Sample { ts: 100, value: 1.0 }, Sample { ts: 3800, value: 2.5 }],
            "the last reading before the period, then the period's, without gaps"
        );
    }
}
