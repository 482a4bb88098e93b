//! The HTTP uplink in line protocol against a real InfluxDB 1.x (Debian package
//! `influxdb`, installed by scripts/test.sh): values written by mesura are read
//! back through InfluxDB's query API and compared one by one, escaping included.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use crate::support::uplink::{free_port, until};
use crate::support::{no_env, Setup};
use chrono::{DateTime, Utc};
use mesura::config::Config;
use mesura::daemon::app::Daemon;
use mesura::reading::{Kind, Reading, Unit, Value};

const LIMIT: Duration = Duration::from_secs(30);

/// influxd on loopback ports, with its files in a tempdir; killed on drop.
struct Influx {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Influx {
    async fn start() -> Influx {
        let influxd = std::env::var_os("PATH")
            .and_then(|path| {
                std::env::split_paths(&path)
                    .map(|d| d.join("influxd"))
                    .find(|p| p.is_file())
            })
            .expect("influxd not found: scripts/test.sh installs the Debian package `influxdb`");
        let dir = tempfile::tempdir().expect("tempdir");
        let (port, rpc) = (free_port(), free_port());
        let d = dir.path().display();
        let config = format!(
            "reporting-disabled = true\nbind-address = \"127.0.0.1:{rpc}\"\n\
             [meta]\n  dir = \"{d}/meta\"\n\
             [data]\n  dir = \"{d}/data\"\n  wal-dir = \"{d}/wal\"\n  query-log-enabled = false\n\
             [monitor]\n  store-enabled = false\n\
             [http]\n  enabled = true\n  bind-address = \"127.0.0.1:{port}\"\n  auth-enabled = false\n  log-enabled = false\n\
             [continuous_queries]\n  enabled = false\n"
        );
        std::fs::write(dir.path().join("influxdb.conf"), config).expect("config");
        let log = std::fs::File::create(dir.path().join("influxd.log")).expect("log");
        let child = Command::new(influxd)
            .arg("-config")
            .arg(dir.path().join("influxdb.conf"))
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("influxd starts");
        let mut influx = Influx {
            child,
            port,
            dir,
            http: reqwest::Client::new(),
        };
        let start = tokio::time::Instant::now();
        loop {
            let ping = influx.http.get(influx.url("/ping")).send().await;
            if ping.map(|r| r.status().as_u16() == 204).unwrap_or(false) {
                break;
            }
            let exited = influx.child.try_wait().ok().flatten();
            if exited.is_some() || start.elapsed() > LIMIT {
                let log = std::fs::read_to_string(influx.dir.path().join("influxd.log")).unwrap_or_default();
                panic!("influxd did not start ({exited:?}):\n{log}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        influx
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn query(&self, db: &str, q: &str) -> serde_json::Value {
        let response = self
            .http
            .post(self.url("/query"))
            .query(&[("db", db), ("q", q), ("epoch", "ns")])
            .send()
            .await
            .expect("query");
        let json: serde_json::Value = serde_json::from_slice(&response.bytes().await.expect("body")).expect("json");
        assert!(json["results"][0]["error"].is_null(), "{q}: {json}");
        json
    }

    /// `[time, value]` of one field of one device, oldest first.
    async fn values(&self, db: &str, measurement: &str, field: &str, device: &str) -> Vec<(i64, serde_json::Value)> {
        let q = format!("SELECT \"{field}\" FROM \"{measurement}\" WHERE \"device\" = '{device}'");
        let json = self.query(db, &q).await;
        json["results"][0]["series"][0]["values"]
            .as_array()
            .map(|rows| {
                rows.iter()
                    .map(|row| (row[0].as_i64().expect("time"), row[1].clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Influx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn base(influx: &Influx, db: &str, extra: &str) -> String {
    format!(
        "backends:\n  sqlite: null\n  csv: {{}}\n  uplink:\n    url: {}\n    format: influx\n    influx: {{version: 1, db: {db}}}\n    \
         batch_interval: 200ms\n    batch_size: 200\n    max_backoff: 500ms\n    timeout: 5s\n{extra}watch:\n  enabled: false\n",
        influx.url("/")
    )
}

fn reading(device_type: &'static str, metric: &str, value: Value, unit: Unit, ms: i64) -> Reading {
    Reading {
        device: Arc::from("meter east, 2"),
        device_type,
        metric: Arc::from(metric),
        value,
        unit,
        kind: Kind::Gauge,
        timestamp: DateTime::<Utc>::from_timestamp_millis(ms).expect("time"),
    }
}

#[tokio::test]
async fn influxdb_1x_stores_what_mesura_sends() {
    let influx = Influx::start().await;
    for db in ["escaping", "daemon"] {
        influx.query(db, &format!("CREATE DATABASE {db}")).await;
    }

    // 1. Escaping: names and values with spaces, commas, equals signs, quotes and
    // backslashes, through the backend itself, gzipped.
    let setup = Setup::new(&base(&influx, "escaping", "    gzip: true\n"));
    let config = Config::load(&setup.config_path(), &no_env).expect("config");
    let mut backend = mesura::backends::open("uplink", &config.base)
        .await
        .expect("open")
        .expect("uplink configured");
    // Stamped ten years before now (a meter with a wrong clock, history replayed):
    // the outbox's max_age counts from queueing, so these are delivered all the same.
    let t0 = (Utc::now() - chrono::TimeDelta::days(3653)).timestamp_millis();
    let text = "say \"hi\", \\ back=1";
    backend
        .write(&[
            reading("my meter,v2", "power delivered", Value::Number(1234.5), Unit::Watt, t0),
            reading(
                "my meter,v2",
                "energy=a,b",
                Value::Number(-0.001),
                Unit::KiloWattHour,
                t0,
            ),
            reading("my meter,v2", "note", Value::Text(text.into()), Unit::None, t0),
            reading(
                "my meter,v2",
                "power delivered",
                Value::Number(99.25),
                Unit::Watt,
                t0 + 1000,
            ),
        ])
        .await
        .expect("write");
    backend.flush().await.expect("flush");
    let nanos = t0 * 1_000_000;
    let m = "my meter,v2";
    assert_eq!(
        influx.values("escaping", m, "power delivered", "meter east, 2").await,
        vec![(nanos, 1234.5.into()), (nanos + 1_000_000_000, 99.25.into())]
    );
    assert_eq!(
        influx.values("escaping", m, "energy=a,b", "meter east, 2").await,
        vec![(nanos, (-0.001).into())]
    );
    assert_eq!(
        influx.values("escaping", m, "note", "meter east, 2").await,
        vec![(nanos, text.into())]
    );
    assert_eq!(
        influx.values("escaping", m, "unit", "meter east, 2").await.len(),
        0,
        "unit is a tag, not a field"
    );
    let units = influx
        .query("escaping", "SHOW TAG VALUES FROM \"my meter,v2\" WITH KEY = \"unit\"")
        .await;
    let units: Vec<&str> = units["results"][0]["series"][0]["values"]
        .as_array()
        .expect("units")
        .iter()
        .filter_map(|v| v[1].as_str())
        .collect();
    assert_eq!(units, vec!["W", "kWh"]);

    // 2. The daemon: a simulated meter in a file called `meter east, 2.yaml`; every
    // value in its CSV file must be in InfluxDB at the same nanosecond.
    let setup = Setup::new(&base(&influx, "daemon", ""));
    setup.device(
        "meter east, 2",
        "type: simulated\nprofile: electricity\npoll_interval: 1s\n",
    );
    let config = Config::load(&setup.config_path(), &no_env).expect("config");
    assert!(config.devices.errors.is_empty(), "{:?}", config.devices.errors);
    let daemon = Daemon::start(config, mesura::host::clock::system())
        .await
        .expect("start");
    until(LIMIT, "20 polls", || {
        daemon.status().devices().values().map(|d| d.polls_ok).sum::<u64>() >= 20
    })
    .await;
    let summary = daemon.shutdown().await;
    assert_eq!(summary.dropped.values().sum::<u64>(), 0);
    let csv = csv_values(&setup.dir.path().join("data/csv/meter east, 2"));
    assert_eq!(csv.len() as u64, summary.polls["meter east, 2"]);
    let metrics: std::collections::BTreeSet<&str> =
        csv.iter().flat_map(|(_, row)| row.keys().map(String::as_str)).collect();
    // 8 metrics and the lifetime series of the 4 energy counters (docs/counters.md).
    assert_eq!(metrics.len(), 12, "{metrics:?}");
    let mut compared = 0;
    for metric in metrics {
        let stored: Vec<(i64, f64)> = influx
            .values("daemon", "simulated", metric, "meter east, 2")
            .await
            .into_iter()
            .map(|(ts, v)| (ts, v.as_f64().expect("a number")))
            .collect();
        let expected: Vec<(i64, f64)> = csv
            .iter()
            .filter_map(|(ts, row)| row.get(metric).map(|v| (*ts, *v)))
            .collect();
        assert!(!expected.is_empty(), "{metric} not in the CSV");
        assert_eq!(stored, expected, "{metric}");
        compared += stored.len();
    }
    eprintln!(
        "{compared} values compared between the CSV file and InfluxDB over {} polls",
        csv.len()
    );
}

/// Every CSV row of a device: (unix ns, metric → value).
fn csv_values(dir: &Path) -> Vec<(i64, std::collections::HashMap<String, f64>)> {
    let mut rows = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .expect("csv dir")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    files.sort();
    for file in files {
        let mut reader = csv::Reader::from_path(&file).expect("csv");
        let header: Vec<String> = reader.headers().expect("header").iter().map(str::to_owned).collect();
        for record in reader.records() {
            let record = record.expect("record");
            let ts = DateTime::parse_from_rfc3339(&record[0]).expect("ts").timestamp_millis() * 1_000_000;
            let values = header
                .iter()
                .zip(record.iter())
                .skip(1)
                .filter_map(|(k, v)| v.parse::<f64>().ok().map(|v| (k.clone(), v)))
                .collect();
            rows.push((ts, values));
        }
    }
    rows
}
