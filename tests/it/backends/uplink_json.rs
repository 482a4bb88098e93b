//! The HTTP uplink in JSON against a local recording server: the schema, an
//! outage with a daemon restart in the middle (nothing lost), a refused batch
//! (dead-lettered, delivery goes on) and a 429 with Retry-After (obeyed).

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use crate::support::uplink::{until, Recorder, Request};
use crate::support::{no_env, Setup};
use mesura::config::Config;
use mesura::daemon::app::{Daemon, Summary};

const LIMIT: Duration = Duration::from_secs(30);

fn base(port: u16) -> String {
    format!(
        "backends:\n  sqlite: null\n  uplink:\n    url: http://127.0.0.1:{port}/ingest\n    format: json\n    \
         batch_interval: 200ms\n    batch_size: 100\n    max_backoff: 500ms\n    timeout: 2s\n    token: test-token\n\
         watch:\n  enabled: false\n"
    )
}

fn sim(profile: &str) -> String {
    format!("type: simulated\nprofile: {profile}\npoll_interval: 1s\n")
}

async fn start(setup: &Setup) -> Daemon {
    let config = Config::load(&setup.config_path(), &no_env).expect("config");
    assert!(config.devices.errors.is_empty(), "{:?}", config.devices.errors);
    Daemon::start(config, mesura::host::clock::system())
        .await
        .expect("start")
}

fn produced(daemon: &Daemon) -> u64 {
    daemon.status().devices().values().map(|d| d.readings).sum()
}

fn total(summary: &Summary) -> u64 {
    summary.readings.values().sum()
}

/// (device, metric, timestamp) of every reading in the accepted requests, with how
/// often each arrived.
fn delivered(requests: &[Request]) -> BTreeMap<(String, String, String), u32> {
    let mut seen = BTreeMap::new();
    for r in requests.iter().filter(|r| (200..300).contains(&r.status)) {
        for item in r.json().as_array().expect("an array") {
            let key = (
                item["device"].as_str().expect("device").to_owned(),
                item["metric"].as_str().expect("metric").to_owned(),
                item["timestamp"].as_str().expect("timestamp").to_owned(),
            );
            *seen.entry(key).or_insert(0) += 1;
        }
    }
    seen
}

fn outbox_count(setup: &Setup, table: &str) -> i64 {
    let conn = rusqlite::Connection::open(setup.dir.path().join("data/outbox.db")).expect("outbox.db");
    conn.query_row(
        &format!("SELECT count(*) FROM {table} WHERE backend = 'uplink'"),
        [],
        |r| r.get(0),
    )
    .expect("count")
}

#[tokio::test]
async fn json_schema_and_an_outage_across_a_restart_lose_nothing() {
    let mut server = Recorder::start().await;
    let setup = Setup::new(&base(server.port));
    setup
        .device("meter east, 2", &sim("electricity"))
        .device("gas", &sim("gas"));

    let daemon = start(&setup).await;
    until(LIMIT, "a first batch", || !server.requests().is_empty()).await;
    let first = &server.requests()[0];
    assert_eq!(first.path, "/ingest");
    assert_eq!(first.header("authorization"), Some("Bearer test-token"));
    assert_eq!(first.header("content-type"), Some("application/json"));
    for item in first.json().as_array().expect("an array") {
        let keys: HashSet<&str> = item
            .as_object()
            .expect("an object")
            .keys()
            .map(|k| k.as_str())
            .collect();
        assert_eq!(
            keys,
            HashSet::from(["device", "device_type", "metric", "value", "unit", "timestamp"])
        );
        assert_eq!(item["device_type"], "simulated");
        assert!(item["value"].is_number(), "{item}");
        let ts = item["timestamp"].as_str().expect("timestamp");
        assert!(
            ts.ends_with('Z') && chrono::DateTime::parse_from_rfc3339(ts).is_ok(),
            "{ts}"
        );
        if item["device"] == "gas" {
            // The counter as sent and its lifetime series (docs/counters.md).
            assert!(
                matches!(
                    item["metric"].as_str(),
                    Some("gas_delivered" | "gas_delivered_lifetime")
                ),
                "{item}"
            );
            assert_eq!(item["unit"], "m³");
        }
    }

    // The server goes away; readings go on being produced, then the daemon restarts.
    server.stop();
    let at_stop = produced(&daemon);
    until(LIMIT, "readings during the outage", || {
        produced(&daemon) >= at_stop + 100
    })
    .await;
    let first_run = total(&daemon.shutdown().await);

    let daemon = start(&setup).await;
    until(LIMIT, "readings after the restart", || produced(&daemon) >= 100).await;
    assert!(outbox_count(&setup, "outbox") > 0, "the backlog waits in the outbox");
    server.restart().await;
    // A fixed target: readings produced from now on arrive a moment later.
    let target = first_run + produced(&daemon);
    until(LIMIT, "the backlog to arrive", || {
        delivered(&server.requests()).len() as u64 >= target
    })
    .await;
    let second_run = total(&daemon.shutdown().await);

    let seen = delivered(&server.requests());
    let duplicates: u32 = seen.values().map(|n| n - 1).sum();
    eprintln!(
        "produced {} readings in two runs, {} arrived, {duplicates} of them more than once",
        first_run + second_run,
        seen.len()
    );
    assert_eq!(seen.len() as u64, first_run + second_run, "every reading arrives");
    assert_eq!(outbox_count(&setup, "outbox"), 0, "the outbox is empty once delivered");
}

#[tokio::test]
async fn a_refused_batch_is_dead_lettered_and_delivery_goes_on() {
    let server = Recorder::start().await;
    server.script(vec![(400, Vec::new(), "unknown field \"device_type\"".into())]);
    let setup = Setup::new(&base(server.port));
    setup.device("gas", &sim("gas"));
    let daemon = start(&setup).await;
    until(LIMIT, "batches after the refused one", || {
        server.requests().iter().filter(|r| r.status == 204).count() >= 2
    })
    .await;
    let produced = total(&daemon.shutdown().await);

    let requests = server.requests();
    assert_eq!(requests[0].status, 400);
    let refused = requests[0].json().as_array().expect("array").len() as i64;
    assert_eq!(outbox_count(&setup, "outbox_dead_letter"), refused);
    let conn = rusqlite::Connection::open(setup.dir.path().join("data/outbox.db")).expect("outbox.db");
    let reason: String = conn
        .query_row("SELECT reason FROM outbox_dead_letter LIMIT 1", [], |r| r.get(0))
        .expect("reason");
    assert_eq!(reason, "HTTP 400: unknown field \"device_type\"");
    let delivered = delivered(&requests).len() as i64;
    assert_eq!(delivered + refused, produced as i64, "the rest is delivered");
    assert_eq!(outbox_count(&setup, "outbox"), 0);
}

#[tokio::test]
async fn a_429_with_retry_after_is_waited_out() {
    let server = Recorder::start().await;
    server.script(vec![(429, vec![("retry-after", "2".into())], "slow down".into())]);
    let setup = Setup::new(&base(server.port));
    setup.device("gas", &sim("gas"));
    let daemon = start(&setup).await;
    until(LIMIT, "the retry", || server.requests().len() >= 2).await;
    daemon.shutdown().await;

    let requests = server.requests();
    let waited = requests[1].at - requests[0].at;
    assert!(waited >= Duration::from_secs(2), "retried after {waited:?}");
    // The refused batch is the one sent again (oldest first).
    let again = delivered(&requests[1..2]);
    for item in requests[0].json().as_array().expect("array") {
        let key = (
            item["device"].as_str().unwrap_or_default().to_owned(),
            item["metric"].as_str().unwrap_or_default().to_owned(),
            item["timestamp"].as_str().unwrap_or_default().to_owned(),
        );
        assert!(again.contains_key(&key), "{key:?} was not sent again");
    }
    assert_eq!(outbox_count(&setup, "outbox_dead_letter"), 0);
}
