//! Every SQL statement of the Grafana dashboards (panels and template variables) runs
//! against a database filled by the simulated devices — a daemon on tokio's paused
//! clock for four virtual hours — plus synthetic tables for the device types that
//! are not simulated (evohome, openweathermap, multical) spanning 40 days, so the
//! 5-minute aggregate tables are read too. Each panel query must return rows with an
//! integer `time` column, for a short and a long range; the daily and hourly sums
//! from counters must add up, across a counter reset.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::support::reliability::Mesura;
use crate::support::{no_env, Setup};
use chrono::{DateTime, Datelike, Utc};
use mesura::backends::sqlite::Store;
use mesura::config::Config;
use mesura::daemon::app::Daemon;
use mesura::host::clock::MonotonicClock;
use mesura::reading::{Kind, Reading, Unit, Value};
use rusqlite::Connection;

const HOURS: i64 = 4;
const DAY: i64 = 86_400;
/// Synthetic devices: one row every 10 minutes for 40 days up to the end.
const SYNTH_STEP: i64 = 600;
const SYNTH_DAYS: i64 = 40;

/// The simulated devices' first poll: one instant for the whole run, derived from
/// now (see `crate::support::noon_yesterday`).
fn start() -> i64 {
    static START: std::sync::OnceLock<i64> = std::sync::OnceLock::new();
    *START.get_or_init(|| crate::support::noon_yesterday().timestamp())
}

fn end() -> i64 {
    start() + HOURS * 3600
}

/// The simulated devices, through the real daemon.
async fn simulate(setup: &Setup) {
    setup
        .device(
            "electricity",
            "type: simulated\nprofile: electricity\npoll_interval: 10s\n",
        )
        .device("gas", "type: simulated\nprofile: gas\npoll_interval: 1m\n")
        .device("living_room", "type: simulated\nprofile: climate\npoll_interval: 1m\n");
    let config = Config::load(&setup.config_path(), &no_env).expect("config");
    assert!(config.devices.errors.is_empty(), "{:?}", config.devices.errors);
    let clock = Arc::new(MonotonicClock::starting_at(
        DateTime::<Utc>::from_timestamp(start(), 0).expect("start"),
    ));
    let daemon = Daemon::start(config, clock).await.expect("start");
    tokio::time::sleep(Duration::from_secs(HOURS as u64 * 3600) + Duration::from_millis(500)).await;
    let summary = daemon.shutdown().await;
    assert_eq!(summary.polls["electricity"], (HOURS * 360 + 1) as u64);
}

fn reading(device: &str, metric: &str, value: Value, kind: Kind, unit: Unit, ts: i64) -> Reading {
    Reading {
        device: Arc::from(device),
        device_type: "synthetic",
        metric: Arc::from(metric),
        value,
        unit,
        kind,
        timestamp: DateTime::<Utc>::from_timestamp(ts, 0).expect("timestamp"),
    }
}

/// The index of the synthetic heat meter's sample where its counter resets to 0.
const RESET_AT: i64 = 35 * DAY / SYNTH_STEP;

/// Synthetic evohome, openweathermap and multical tables, and per-phase power in
/// the simulated electricity meter's rows (a three-phase DSMR meter has them).
fn synthesize(db: &Path) {
    let mut store = Store::open(db).expect("store");
    let g = |d: &str, m: &str, v: f64, u: Unit, ts: i64| reading(d, m, Value::Number(v), Kind::Gauge, u, ts);
    let mut batch = Vec::new();
    let first = end() - SYNTH_DAYS * DAY;
    for i in 0..SYNTH_DAYS * DAY / SYNTH_STEP {
        let ts = first + i * SYNTH_STEP;
        let x = i as f64;
        batch.push(g(
            "heating",
            "living_temperature",
            20.0 + (x / 20.0).sin(),
            Unit::Celsius,
            ts,
        ));
        batch.push(g(
            "heating",
            "bedroom_temperature",
            17.0 + (x / 30.0).cos(),
            Unit::Celsius,
            ts,
        ));
        batch.push(g("heating", "living_setpoint", 20.5, Unit::Celsius, ts));
        batch.push(g("heating", "dhw_temperature", 55.0, Unit::Celsius, ts));
        batch.push(reading(
            "heating",
            "system_mode",
            Value::Text("Auto".into()),
            Kind::Gauge,
            Unit::None,
            ts,
        ));
        batch.push(g(
            "weather",
            "temperature",
            5.0 + 4.0 * (x / 72.0).sin(),
            Unit::Celsius,
            ts,
        ));
        batch.push(g(
            "weather",
            "feels_like",
            2.0 + 4.0 * (x / 72.0).sin(),
            Unit::Celsius,
            ts,
        ));
        batch.push(g("weather", "humidity", 80.0, Unit::Percent, ts));
        // 1 kWh per sample; the meter is replaced at RESET_AT and starts from 0.
        let heat = if i < RESET_AT {
            5000.0 + x
        } else {
            (i - RESET_AT) as f64
        };
        batch.push(reading(
            "heat",
            "heat_energy",
            Value::Number(heat),
            Kind::Counter,
            Unit::KiloWattHour,
            ts,
        ));
        batch.push(g("heat", "power", 6000.0, Unit::Watt, ts));
        batch.push(g("heat", "temp_flow", 45.0, Unit::Celsius, ts));
        batch.push(g("heat", "temp_return", 35.0, Unit::Celsius, ts));
    }
    let conn = Connection::open(db).expect("db");
    let times: Vec<i64> = conn
        .prepare("SELECT ts FROM electricity")
        .expect("query")
        .query_map([], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("ts");
    for ts in times {
        for (i, phase) in ["l1", "l2", "l3"].iter().enumerate() {
            batch.push(g(
                "electricity",
                &format!("power_delivered_{phase}"),
                100.0 * (i + 1) as f64,
                Unit::Watt,
                ts,
            ));
            batch.push(g(
                "electricity",
                &format!("power_returned_{phase}"),
                0.0,
                Unit::Watt,
                ts,
            ));
        }
    }
    // A capacity-tariff meter: its rolling average once a day, and a year of
    // monthly peaks before the last month, as the dsmr monitor hands them on.
    for day in 0..SYNTH_DAYS {
        batch.push(g(
            "electricity",
            "capacity_rolling_average",
            3000.0 + day as f64,
            Unit::Watt,
            end() - day * DAY,
        ));
    }
    store.write(&batch).expect("write");
    drop(store);
    let last = DateTime::<Utc>::from_timestamp(end(), 0).expect("end").date_naive();
    let months: Vec<mesura::backends::sqlite::monthly_peaks::MonthlyPeakRow> = (1..=12)
        .map(|back| {
            let first = last.with_day(1).expect("day one") - chrono::Months::new(back);
            mesura::backends::sqlite::monthly_peaks::MonthlyPeakRow {
                month: first.format("%Y-%m").to_string(),
                peak_w: 2000.0 + 100.0 * f64::from(back),
                peak_at: Some(end() - i64::from(back) * 30 * DAY),
            }
        })
        .collect();
    let mut conn = Connection::open(db).expect("db");
    mesura::backends::sqlite::monthly_peaks::upsert(&mut conn, "electricity", &months).expect("peaks");
    // Rows older than 30 days become 5-minute aggregates, as in production.
    let report = mesura::backends::sqlite::downsample::run_once(
        db,
        &mesura::backends::sqlite::downsample::RetentionConfig::default(),
        DateTime::<Utc>::from_timestamp(end(), 0).expect("now"),
        &tokio_util::sync::CancellationToken::new(),
    )
    .expect("downsample")
    .expect("a database");
    assert!(report.raw_rows.get("heat").copied().unwrap_or(0) > 0, "{report:?}");
}

struct Query {
    dashboard: String,
    title: String,
    sql: String,
    repeat: Option<String>,
    /// The panel's own range (`timeFrom`, e.g. `400d`), in seconds before `to`.
    time_from: Option<i64>,
}

struct Variable {
    name: String,
    sql: String,
}

fn dashboards() -> Vec<(PathBuf, serde_json::Value)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("grafana/dashboards");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|f| {
            let text = std::fs::read_to_string(&f).expect("dashboard");
            let json = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            (f, json)
        })
        .collect()
}

fn extract(name: &str, json: &serde_json::Value) -> (Vec<Variable>, Vec<Query>) {
    let mut vars = Vec::new();
    for v in json["templating"]["list"].as_array().into_iter().flatten() {
        let sql = v["query"].as_str().or_else(|| v["query"]["query"].as_str());
        vars.push(Variable {
            name: v["name"].as_str().expect("variable name").to_owned(),
            sql: sql.expect("variable query").to_owned(),
        });
    }
    let mut queries = Vec::new();
    for p in json["panels"].as_array().into_iter().flatten() {
        for t in p["targets"].as_array().into_iter().flatten() {
            let sql = t["queryText"].as_str().expect("queryText");
            assert_eq!(
                t["rawQueryText"].as_str(),
                Some(sql),
                "{name}: queryText and rawQueryText differ"
            );
            assert_eq!(
                p["datasource"]["uid"], "mesura-sqlite",
                "{name}: a panel on another data source"
            );
            queries.push(Query {
                dashboard: name.to_owned(),
                title: p["title"].as_str().unwrap_or_default().to_owned(),
                sql: sql.to_owned(),
                repeat: p["repeat"].as_str().map(str::to_owned),
                time_from: p["timeFrom"].as_str().map(|t| {
                    let days = t.strip_suffix('d').and_then(|d| d.parse::<i64>().ok());
                    days.unwrap_or_else(|| panic!("{name}: timeFrom {t}: write it in days")) * DAY
                }),
            });
        }
    }
    (vars, queries)
}

/// Substitutes the plugin's macros, Grafana's `$__interval_ms` and the variables.
fn substitute(sql: &str, from: i64, to: i64, vars: &BTreeMap<String, String>) -> String {
    // About 1000 points per panel, as Grafana would ask for.
    let interval_ms = ((to - from) * 1000 / 1000).max(1000);
    let mut out = sql
        .replace("$__unixEpochFrom()", &from.to_string())
        .replace("$__unixEpochTo()", &to.to_string())
        .replace("$__interval_ms", &interval_ms.to_string());
    for (name, value) in vars {
        out = out
            .replace(&format!("${{{name}}}"), value)
            .replace(&format!("${name}"), value);
    }
    assert!(!out.contains('$'), "an unsubstituted macro or variable in:\n{out}");
    out
}

fn run(conn: &Connection, sql: &str) -> Result<(Vec<String>, Vec<Vec<rusqlite::types::Value>>), String> {
    let mut stmt = conn.prepare(sql).map_err(|e| format!("{e}\n{sql}"))?;
    let names: Vec<String> = stmt.column_names().iter().map(|s| s.to_string()).collect();
    let n = names.len();
    let rows = stmt
        .query_map([], |r| (0..n).map(|i| r.get::<_, rusqlite::types::Value>(i)).collect())
        .map_err(|e| format!("{e}\n{sql}"))?
        .collect::<Result<Vec<Vec<_>>, _>>()
        .map_err(|e| format!("{e}\n{sql}"))?;
    Ok((names, rows))
}

#[tokio::test(start_paused = true)]
async fn every_dashboard_query_returns_time_series() {
    let setup =
        Setup::new("backends:\n  sqlite:\n    flush_interval: 5s\napi:\n  enabled: false\nwatch:\n  enabled: false\n");
    simulate(&setup).await;
    let db = setup.db_path();
    synthesize(&db);
    cost(&db);
    let conn = Connection::open(&db).expect("db");

    // `to` just after the last poll (at `end()`): the queries take `ts < to`.
    let to = end() + 60;
    let ranges = [
        ("3 hours", to - 3 * 3600, to),
        ("40 days", end() - SYNTH_DAYS * DAY, to),
    ];
    let mut checked = 0;
    let mut sums: BTreeMap<String, f64> = BTreeMap::new();
    let all = dashboards();
    assert!(all.len() >= 3, "energy, climate and heat dashboards");
    for (file, json) in &all {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let (variables, queries) = extract(&name, json);
        // Each variable's query runs with the earlier ones substituted; a panel runs
        // once per value of its repeat variable, with the first value of the others.
        let mut values: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for v in &variables {
            let firsts: BTreeMap<String, String> = values.iter().map(|(k, v)| (k.clone(), v[0].clone())).collect();
            let (_, rows) = run(&conn, &substitute(&v.sql, 0, 0, &firsts))
                .unwrap_or_else(|e| panic!("{name}: variable {}: {e}", v.name));
            let list: Vec<String> = rows
                .iter()
                .filter_map(|r| match &r[0] {
                    rusqlite::types::Value::Text(t) => Some(t.clone()),
                    _ => None,
                })
                .collect();
            assert!(!list.is_empty(), "{name}: variable {} has no values", v.name);
            values.insert(v.name.clone(), list);
        }
        for q in &queries {
            let repeat_values = q
                .repeat
                .as_ref()
                .map_or_else(|| vec![None], |r| values[r].iter().map(Some).collect());
            for value in repeat_values {
                let mut chosen: BTreeMap<String, String> =
                    values.iter().map(|(k, v)| (k.clone(), v[0].clone())).collect();
                if let (Some(r), Some(v)) = (&q.repeat, value) {
                    chosen.insert(r.clone(), v.clone());
                }
                let own = q.time_from.map(|s| [("the panel's own range", to - s, to)]);
                for (range, from, to) in own.map_or(ranges.to_vec(), |r| r.to_vec()) {
                    let sql = substitute(&q.sql, from, to, &chosen);
                    let what = format!("{}: {:?} ({range}, {chosen:?})", q.dashboard, q.title);
                    let (names, rows) = run(&conn, &sql).unwrap_or_else(|e| panic!("{what}: {e}"));
                    assert!(!rows.is_empty(), "{what}: no rows\n{sql}");
                    let time = names
                        .iter()
                        .position(|n| n == "time")
                        .unwrap_or_else(|| panic!("{what}: no time column: {names:?}"));
                    for row in &rows {
                        let rusqlite::types::Value::Integer(t) = row[time] else {
                            panic!("{what}: time is not an integer: {:?}", row[time]);
                        };
                        assert!((from - DAY..to).contains(&t), "{what}: time {t} outside the range");
                        assert!(
                            row.iter()
                                .enumerate()
                                .any(|(i, v)| i != time && !matches!(v, rusqlite::types::Value::Null)),
                            "{what}: a row with no value"
                        );
                    }
                    if range == "40 days" {
                        for (i, n) in names.iter().enumerate() {
                            if i == time {
                                continue;
                            }
                            let s: f64 = rows
                                .iter()
                                .filter_map(|r| match r[i] {
                                    rusqlite::types::Value::Real(x) => Some(x),
                                    rusqlite::types::Value::Integer(x) => Some(x as f64),
                                    _ => None,
                                })
                                .sum();
                            sums.insert(format!("{}/{n}", q.title), s);
                        }
                    }
                    checked += 1;
                }
            }
        }
    }
    eprintln!("{checked} dashboard queries checked");
    assert!(checked >= 2 * 11, "{checked}");

    // Daily sums from counters add up to the counters' rise (monotonic: last − first).
    let rise = |table: &str, col: &str| -> f64 {
        conn.query_row(&format!("SELECT max({col}) - min({col}) FROM {table}"), [], |r| {
            r.get(0)
        })
        .expect("rise")
    };
    let close = |a: f64, b: f64| (a - b).abs() < 1e-6 * b.abs().max(1.0);
    let t2 = sums["Electricity per day and tariff/delivered tariff 2"];
    assert!(
        close(t2, rise("electricity", "energy_delivered_tariff2")),
        "{t2} vs {}",
        rise("electricity", "energy_delivered_tariff2")
    );
    let gas_day = sums["Gas per day/gas"];
    let gas_hour = sums["Gas per hour/gas"];
    assert!(
        close(gas_day, rise("gas", "gas_delivered")) && close(gas_hour, gas_day),
        "{gas_day} {gas_hour}"
    );
    // The heat meter: 1 kWh per sample, except the step of the reset, which is left
    // out rather than counted as −5000 kWh.
    let samples = SYNTH_DAYS * DAY / SYNTH_STEP;
    let heat = sums["Heat per day/heat"];
    assert_eq!(heat, (samples - 2) as f64, "sum of positive steps across the reset");
    // The cost dashboard: the simulated meter at a fixed all-in 0.25 × 1.21 EUR/kWh.
    let drawn = sums["Energy per day/electricity drawn"];
    let cost = sums["Cost per day/electricity"];
    assert!(
        drawn > 0.0 && close(cost, drawn * 0.25 * 1.21),
        "{cost} for {drawn} kWh"
    );
    let net = sums["Cost per day/net"];
    let credit = sums["Cost per day/returned (credit)"];
    let fixed = sums["Cost per day/fixed"];
    assert!(close(net, cost + credit + fixed), "{net} = {cost} + {credit} + {fixed}");
}

/// The cost table of the simulated electricity meter, as the daemon's cost job
/// writes it for a meter with this tariff.
fn cost(db: &Path) {
    let tariff =
        serde_yaml_ng::from_str("fixed_price: 0.25\nvat_percent: 21\ndaily_fixed: 0.5\nslot: 15m\n").expect("tariff");
    let job = mesura::backends::sqlite::cost::CostJob {
        device: "electricity".into(),
        device_type: "simulated".into(),
        tariff,
    };
    let now = DateTime::<Utc>::from_timestamp(end() + 60, 0).expect("now");
    let report = mesura::backends::sqlite::cost::run_once(db, &[job], now, &tokio_util::sync::CancellationToken::new())
        .expect("cost run")
        .expect("the database exists");
    assert!(report["electricity"] >= 4 * HOURS as u64 - 1, "{report:?}");
}

/// Every combination of the variables' values, each variable's query run with the
/// earlier ones substituted; a variable with no values is Grafana's "None", an
/// empty string.
fn combinations(conn: &Connection, variables: &[Variable]) -> Result<Vec<BTreeMap<String, String>>, String> {
    let mut combos = vec![BTreeMap::new()];
    for v in variables {
        let mut next = Vec::new();
        for chosen in &combos {
            let (_, rows) =
                run(conn, &substitute(&v.sql, 0, 0, chosen)).map_err(|e| format!("variable {}: {e}", v.name))?;
            let mut values: Vec<String> = rows
                .iter()
                .filter_map(|r| match &r[0] {
                    rusqlite::types::Value::Text(t) => Some(t.clone()),
                    _ => None,
                })
                .collect();
            if values.is_empty() {
                values.push(String::new());
            }
            for value in values {
                let mut chosen = chosen.clone();
                chosen.insert(v.name.clone(), value);
                next.push(chosen);
            }
        }
        combos = next;
    }
    Ok(combos)
}

/// Runs every variable and panel query of every dashboard for every combination of
/// variable values; the first error, or the combinations seen.
fn every_query_runs(db: &Path, to: i64) -> Result<Vec<BTreeMap<String, String>>, String> {
    let conn = Connection::open(db).map_err(|e| e.to_string())?;
    let mut seen = Vec::new();
    for (file, json) in dashboards() {
        let name = file.file_name().and_then(|n| n.to_str()).unwrap_or_default().to_owned();
        let (variables, queries) = extract(&name, &json);
        for chosen in combinations(&conn, &variables).map_err(|e| format!("{name}: {e}"))? {
            for q in &queries {
                for (range, from) in [("3 hours", to - 3 * 3600), ("400 days", to - 400 * DAY)] {
                    let from = q.time_from.map_or(from, |s| to - s);
                    run(&conn, &substitute(&q.sql, from, to, &chosen))
                        .map_err(|e| format!("{name}: {:?} ({range}, {chosen:?}): {e}", q.title))?;
                }
            }
            seen.push(chosen);
        }
    }
    Ok(seen)
}

#[test]
fn every_dashboard_query_runs_from_minute_one_on_a_fresh_data_dir() {
    let setup =
        Setup::new("backends:\n  sqlite:\n    flush_interval: 1s\napi:\n  enabled: false\nwatch:\n  debounce: 200ms\n");
    // The example devices as shipped; the simulated electricity meter is a
    // single-phase one (no power_delivered_l1 … l3).
    let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.d");
    for entry in std::fs::read_dir(&examples).expect("config.d") {
        let path = entry.expect("entry").path();
        if path.extension().is_some_and(|e| e == "yaml") {
            std::fs::copy(
                &path,
                setup.dir.path().join("config.d").join(path.file_name().expect("name")),
            )
            .expect("copy an example device");
        }
    }
    let db = setup.db_path();
    assert!(!db.exists());
    let started = std::time::Instant::now();
    let daemon = Mesura::spawn(&setup.config_path(), &setup.dir.path().join("mesura.log"));
    crate::support::wait_until(Duration::from_secs(10), "the first readings", || {
        crate::support::sqlite_rows(&db, "electricity") > 0
    });
    setup.device("garage", "type: simulated\nprofile: electricity\npoll_interval: 1s\n");

    let deadline = started + Duration::from_secs(10);
    let wanted = [
        ("device", "electricity"),
        ("device", "garage"),
        ("gas", "gas"),
        ("room", "living_room"),
    ];
    let last = loop {
        let to = Utc::now().timestamp() + 60;
        let outcome = every_query_runs(&db, to).and_then(|seen| {
            match wanted
                .iter()
                .find(|(var, value)| !seen.iter().any(|c| c.get(*var).is_some_and(|v| v == value)))
            {
                Some(missing) => Err(format!("no dashboard shows {missing:?} yet")),
                None => Ok(()),
            }
        });
        match outcome {
            Ok(()) => break None,
            Err(e) if std::time::Instant::now() > deadline => break Some(e),
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    let log = daemon.log_tail(40);
    daemon.stop();
    if let Some(error) = last {
        panic!("10 s after the start, a dashboard query still fails: {error}\nthe log ends:\n{log}");
    }

    // The single-phase meters' per-phase panel: no data, not an error.
    let (_, energy) = dashboards()
        .into_iter()
        .find(|(f, _)| f.ends_with("energy.json"))
        .expect("energy.json");
    let (_, queries) = extract("energy.json", &energy);
    let per_phase = queries
        .iter()
        .find(|q| q.title == "Power per phase")
        .expect("the per-phase panel");
    let conn = Connection::open(&db).expect("db");
    let to = Utc::now().timestamp() + 60;
    for device in ["electricity", "garage"] {
        let vars = BTreeMap::from([("device".to_owned(), device.to_owned())]);
        let (_, rows) = run(&conn, &substitute(&per_phase.sql, to - 3600, to, &vars)).expect("per-phase query");
        assert!(rows.is_empty(), "{device}: {rows:?}");
    }
}
