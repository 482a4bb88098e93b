//! Readings/s through the router into SQLite, against a raw batched rusqlite insert
//! of the same rows, in the same run. `cargo bench --bench throughput`

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use mesura::backends::sqlite::{SqliteBackend, SqliteConfig};
use mesura::backends::Backend;
use mesura::daemon::live::Status;
use mesura::daemon::router::Router;
use mesura::reading::{Kind, Reading, Unit, Value};

const DEVICES: usize = 50;
const METRICS: usize = 8;
const POLLS: usize = 500; // per device
const BATCH: usize = 5000;

fn polls() -> Vec<Vec<Reading>> {
    let start = DateTime::<Utc>::from_timestamp(1_790_000_000, 0).unwrap_or_default();
    let names: Vec<Arc<str>> = (0..METRICS).map(|m| Arc::from(format!("metric_{m}"))).collect();
    let mut polls = Vec::with_capacity(DEVICES * POLLS);
    for p in 0..POLLS {
        for d in 0..DEVICES {
            let device: Arc<str> = Arc::from(format!("device_{d:02}"));
            let ts = start + chrono::TimeDelta::seconds(p as i64);
            polls.push(
                names
                    .iter()
                    .enumerate()
                    .map(|(m, name)| Reading {
                        device: device.clone(),
                        device_type: "simulated",
                        metric: name.clone(),
                        value: Value::Number((p * m) as f64 * 0.5),
                        unit: Unit::Watt,
                        kind: Kind::Gauge,
                        timestamp: ts,
                    })
                    .collect(),
            );
        }
    }
    polls
}

fn raw_insert(path: &std::path::Path, polls: &[Vec<Reading>]) -> rusqlite::Result<()> {
    let mut conn = rusqlite::Connection::open(path)?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    conn.pragma_update(None, "synchronous", "NORMAL")?;
    let cols: Vec<String> = (0..METRICS).map(|m| format!("metric_{m} REAL")).collect();
    for d in 0..DEVICES {
        conn.execute_batch(&format!(
            "CREATE TABLE device_{d:02} (ts INTEGER PRIMARY KEY, {})",
            cols.join(", ")
        ))?;
    }
    let names: Vec<String> = (0..METRICS).map(|m| format!("metric_{m}")).collect();
    let marks = ["?"; METRICS].join(", ");
    for chunk in polls.chunks(BATCH / METRICS) {
        let tx = conn.transaction()?;
        for poll in chunk {
            let sql = format!(
                "INSERT INTO \"{}\" (ts, {}) VALUES (?, {marks})",
                poll[0].device,
                names.join(", ")
            );
            let mut stmt = tx.prepare_cached(&sql)?;
            let mut values: Vec<f64> = vec![poll[0].timestamp.timestamp() as f64];
            values.extend(poll.iter().filter_map(|r| r.value.as_f64()));
            stmt.execute(rusqlite::params_from_iter(values))?;
        }
        tx.commit()?;
    }
    Ok(())
}

fn main() {
    let polls = polls();
    let readings = DEVICES * POLLS * METRICS;
    let dir = tempfile::tempdir().expect("tempdir");

    let t = Instant::now();
    raw_insert(&dir.path().join("raw.db"), &polls).expect("raw insert");
    let raw = t.elapsed();

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let routed = runtime.block_on(async {
        let config = SqliteConfig {
            path: "routed.db".into(),
            flush_interval: std::time::Duration::from_secs(5),
            batch_size: BATCH,
            queue_capacity: DEVICES * POLLS,
        };
        let backend = SqliteBackend::open(&config, dir.path()).await.expect("open");
        let status = Arc::new(Status::default());
        let router = Router::default();
        let t = Instant::now();
        let task = router.add(Box::new(backend) as Box<dyn Backend>, &status, None);
        for poll in polls {
            router.dispatch(poll, |_| true);
        }
        router.close_all();
        task.await.expect("backend");
        let written = mesura::daemon::live::BackendStats::get(&status.backend("sqlite").written);
        assert_eq!(written as usize, readings, "every reading must be written");
        t.elapsed()
    });
    let rate = |d: std::time::Duration| readings as f64 / d.as_secs_f64();
    println!("readings: {readings} ({DEVICES} devices x {POLLS} polls x {METRICS} metrics), batches of {BATCH}");
    println!("| path | time | readings/s |");
    println!("|---|---|---|");
    println!(
        "| raw rusqlite, prepared INSERT, batched transactions | {:.3} s | {:.0} |",
        raw.as_secs_f64(),
        rate(raw)
    );
    println!(
        "| mesura router → SqliteBackend (schema evolution, upsert, metrics catalogue) | {:.3} s | {:.0} |",
        routed.as_secs_f64(),
        rate(routed)
    );
    println!("| ratio (mesura / raw) | | {:.2} |", rate(routed) / rate(raw));
}
