//! A fleet into a real VictoriaMetrics (Debian package `victoria-metrics`, installed
//! by scripts/test.sh): three mesura "sites", each with its own `site` tag, send
//! line protocol through the uplink while VictoriaMetrics goes down and comes back
//! and one site restarts in the outage. Read back through VictoriaMetrics' export
//! API, every site's series holds exactly the readings its own SQLite file holds:
//! none missing, none twice.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::uplink::{free_port, until};
use crate::support::{no_env, sqlite_rows, Setup};
use mesura::config::Config;
use mesura::daemon::app::Daemon;

const LIMIT: Duration = Duration::from_secs(60);

/// victoria-metrics on a loopback port, its data in a tempdir; killed on drop.
struct Victoria {
    child: Option<Child>,
    port: u16,
    dir: PathBuf,
}

impl Victoria {
    async fn start(dir: &Path) -> Victoria {
        let mut vm = Victoria {
            child: None,
            port: free_port(),
            dir: dir.to_path_buf(),
        };
        vm.restart().await;
        vm
    }

    async fn restart(&mut self) {
        let binary = ["/usr/bin/victoria-metrics", "/usr/local/bin/victoria-metrics"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("victoria-metrics not found: scripts/test.sh installs the Debian package `victoria-metrics`");
        let log = std::fs::File::create(self.dir.join("victoria.log")).expect("log");
        // Samples of one series at the same millisecond are one sample: the
        // uplink delivers at least once, and VictoriaMetrics documents this flag
        // for senders that may repeat a batch.
        let child = Command::new(binary)
            .arg(format!("-httpListenAddr=127.0.0.1:{}", self.port))
            .arg(format!("-storageDataPath={}", self.dir.join("data").display()))
            .args([
                "-retentionPeriod=100y",
                "-dedup.minScrapeInterval=1ms",
                "-loggerLevel=ERROR",
            ])
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("victoria-metrics starts");
        self.child = Some(child);
        let client = reqwest::Client::new();
        let url = format!("http://127.0.0.1:{}/health", self.port);
        let start = std::time::Instant::now();
        loop {
            if let Ok(r) = client.get(&url).send().await {
                if r.status().is_success() {
                    break;
                }
            }
            assert!(
                start.elapsed() < LIMIT,
                "victoria-metrics did not start: {}",
                self.log()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill").args(["-TERM", &child.id().to_string()]).status();
            let _ = child.wait();
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("victoria.log")).unwrap_or_default()
    }

    /// The millisecond timestamps of `metric` for `site`, every sample as stored.
    async fn timestamps(&self, metric: &str, site: &str) -> Vec<i64> {
        let client = reqwest::Client::new();
        let base = format!("http://127.0.0.1:{}", self.port);
        client
            .get(format!("{base}/internal/force_flush"))
            .send()
            .await
            .expect("flush");
        let body = client
            .get(format!("{base}/api/v1/export"))
            .query(&[
                ("match[]", format!("{metric}{{site=\"{site}\"}}").as_str()),
                ("start", "0"),
            ])
            .send()
            .await
            .expect("export")
            .text()
            .await
            .expect("body");
        let mut stamps = Vec::new();
        for line in body.lines().filter(|l| !l.trim().is_empty()) {
            let series: serde_json::Value = serde_json::from_str(line).expect("export line");
            assert_eq!(series["metric"]["device"], "meter", "{line}");
            for t in series["timestamps"].as_array().expect("timestamps") {
                stamps.push(t.as_i64().expect("ms"));
            }
        }
        stamps
    }
}

impl Drop for Victoria {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn site(vm: &Victoria, name: &str) -> Setup {
    let setup = Setup::new(&format!(
        "backends:\n  sqlite:\n    flush_interval: 200ms\n  uplink:\n    url: http://127.0.0.1:{}/write\n    format: influx\n    batch_interval: 200ms\n    max_backoff: 1s\n    timeout: 2s\n    tags:\n      site: {name}\nwatch:\n  enabled: false\n",
        vm.port
    ));
    setup.device("meter", "type: simulated\nprofile: electricity\npoll_interval: 1s\n");
    setup
}

async fn start(setup: &Setup) -> Daemon {
    let config = Config::load(&setup.config_path(), &no_env).expect("config");
    assert!(config.devices.errors.is_empty(), "{:?}", config.devices.errors);
    Daemon::start(config, mesura::host::clock::system())
        .await
        .expect("start")
}

/// The whole seconds of the stored power readings of `meter`.
fn stored_seconds(db: &Path) -> BTreeSet<i64> {
    let conn = rusqlite::Connection::open(db).expect("db");
    let mut stmt = conn
        .prepare("SELECT ts FROM meter WHERE power_delivered IS NOT NULL")
        .expect("select");
    stmt.query_map([], |r| r.get(0))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("ts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_sites_through_outages_and_restarts_land_complete_and_once() {
    let dir = tempfile::tempdir().expect("dir");
    let mut vm = Victoria::start(dir.path()).await;
    let sites: Vec<(String, Setup)> = ["north", "south", "east"]
        .iter()
        .map(|name| (name.to_string(), site(&vm, name)))
        .collect();
    let mut daemons = Vec::new();
    for (_, setup) in &sites {
        daemons.push(Some(start(setup).await));
    }
    until(LIMIT, "every site's first readings in VictoriaMetrics", || {
        sites.iter().all(|(_, s)| sqlite_rows(&s.db_path(), "meter") >= 2)
    })
    .await;
    for (name, _) in &sites {
        let deadline = std::time::Instant::now() + LIMIT;
        while vm.timestamps("simulated_power_delivered", name).await.is_empty() {
            assert!(
                std::time::Instant::now() < deadline,
                "nothing from {name}: {}",
                vm.log()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    // The database goes away; readings go on into each site's outbox.
    let mut marks = vec![("stop", chrono::Utc::now().timestamp_millis())];
    vm.stop();
    let during: Vec<i64> = sites.iter().map(|(_, s)| sqlite_rows(&s.db_path(), "meter")).collect();
    until(LIMIT, "three more readings at every site during the outage", || {
        sites
            .iter()
            .zip(&during)
            .all(|((_, s), n)| sqlite_rows(&s.db_path(), "meter") >= n + 3)
    })
    .await;
    // One site restarts while the database is away: its outbox is on disk.
    if let Some(d) = daemons[1].take() {
        d.shutdown().await;
    }
    daemons[1] = Some(start(&sites[1].1).await);
    let restarted = sqlite_rows(&sites[1].1.db_path(), "meter");
    until(LIMIT, "the restarted site reading again", || {
        sqlite_rows(&sites[1].1.db_path(), "meter") >= restarted + 2
    })
    .await;
    marks.push(("restart", chrono::Utc::now().timestamp_millis()));
    vm.restart().await;
    until(LIMIT, "two more readings everywhere after the database is back", || {
        sites
            .iter()
            .zip(&during)
            .all(|((_, s), n)| sqlite_rows(&s.db_path(), "meter") >= n + 6)
    })
    .await;
    marks.push(("shutdown", chrono::Utc::now().timestamp_millis()));
    // Every daemon stops: each delivers what it still holds before it exits.
    for d in daemons.iter_mut() {
        if let Some(d) = d.take() {
            let summary = d.shutdown().await;
            assert_eq!(summary.dropped.values().sum::<u64>(), 0);
        }
    }
    for (name, setup) in &sites {
        let outbox: i64 = rusqlite::Connection::open(setup.dir.path().join("data/outbox.db"))
            .and_then(|c| c.query_row("SELECT count(*) FROM outbox WHERE backend = 'uplink'", [], |r| r.get(0)))
            .unwrap_or(-1);
        let dead: i64 = rusqlite::Connection::open(setup.dir.path().join("data/outbox.db"))
            .and_then(|c| c.query_row("SELECT count(*) FROM outbox_dead_letter", [], |r| r.get(0)))
            .unwrap_or(-1);
        assert_eq!(
            (outbox, dead),
            (0, 0),
            "{name}: readings left undelivered in the outbox, or refused"
        );
        let stored = stored_seconds(&setup.db_path());
        let mut stamps = vm.timestamps("simulated_power_delivered", name).await;
        // What VictoriaMetrics took in is searchable a moment later (its in-memory
        // buffers), even after a forced flush: asked again until the count is there.
        let t = std::time::Instant::now();
        while stamps.len() < stored.len() && t.elapsed() < LIMIT {
            tokio::time::sleep(Duration::from_millis(100)).await;
            stamps = vm.timestamps("simulated_power_delivered", name).await;
        }
        // SQLite keeps one row per second: the restarted site's first reading may
        // share a second with its last one before.
        let seconds: BTreeSet<i64> = stamps.iter().map(|ms| ms.div_euclid(1000)).collect();
        let unique_ms: BTreeSet<i64> = stamps.iter().copied().collect();
        assert_eq!(
            stamps.len(),
            unique_ms.len(),
            "{name}: a reading twice in VictoriaMetrics"
        );
        let missing: Vec<_> = stored.difference(&seconds).collect();
        let extra: Vec<_> = seconds.difference(&stored).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "{name}: {} stored, {} in VictoriaMetrics; missing {missing:?}, not stored {extra:?}; outage and shutdown at {marks:?}",
            stored.len(),
            seconds.len()
        );
        assert!(stored.len() >= 8, "{name}: only {} readings", stored.len());
    }
}
