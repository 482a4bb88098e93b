//! Time from a new device file being written to its first reading stored in
//! SQLite, with the default 1 s debounce. `cargo bench --bench reload_latency`

use std::time::{Duration, Instant};

use mesura::config::Config;
use mesura::daemon::app::Daemon;
use tokio_util::sync::CancellationToken;

fn rows(db: &std::path::Path, table: &str) -> i64 {
    let Ok(conn) = rusqlite::Connection::open(db) else {
        return 0;
    };
    conn.query_row(&format!("SELECT count(*) FROM \"{table}\""), [], |r| r.get(0))
        .unwrap_or(0)
}

async fn measure(flush: &str, runs: usize) -> Vec<Duration> {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("config.d")).expect("config.d");
    let base = format!("backends:\n  sqlite:\n    flush_interval: {flush}\n");
    std::fs::write(dir.path().join("config.yaml"), base).expect("config");
    let config = Config::load(&dir.path().join("config.yaml"), &|_| None).expect("load");
    let daemon = Daemon::start(config, mesura::host::clock::system())
        .await
        .expect("start");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(daemon.run(shutdown.clone()));
    let db = dir.path().join("data/mesura.db");
    let mut times = Vec::new();
    for i in 0..runs {
        let id = format!("new{i}");
        let t = Instant::now();
        std::fs::write(
            dir.path().join("config.d").join(format!("{id}.yaml")),
            "type: simulated\nprofile: gas\n",
        )
        .expect("write");
        while rows(&db, &id) == 0 {
            assert!(t.elapsed() < Duration::from_secs(30), "no reading stored");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        times.push(t.elapsed());
    }
    shutdown.cancel();
    let _ = task.await;
    times
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("| sqlite flush_interval | runs | min | median | max |");
    println!("|---|---|---|---|---|");
    for flush in ["5s", "250ms"] {
        let mut times = runtime.block_on(measure(flush, 10));
        times.sort();
        let ms = |d: Duration| format!("{:.0} ms", d.as_secs_f64() * 1000.0);
        println!(
            "| {flush} | {} | {} | {} | {} |",
            times.len(),
            ms(times[0]),
            ms(times[times.len() / 2]),
            ms(times[times.len() - 1])
        );
    }
}
