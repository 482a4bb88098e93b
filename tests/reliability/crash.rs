//! Reliability suite 1, kill -9: the `mesura` binary with 20 simulated devices at
//! 1 s, writing SQLite + CSV + MQTT (a real Mosquitto) + the HTTP uplink (a local
//! recording server), is killed with SIGKILL at random moments and restarted, 20
//! times in CI and 200 with `LONG_TESTS=1`. After each kill both databases pass
//! `PRAGMA integrity_check` and every CSV line parses; each backend loses at most
//! the readings of its last flush window; at the end the outbox drains completely.
//!
//! How losses are counted: the devices poll every second on the monotonic clock,
//! so within one life a device's readings are stamped F, F+1 s, F+2 s, … where F is
//! its first poll. F is taken, to the millisecond, from the earliest reading of the
//! life found in any backend; the polls a backend should hold are then
//! ⌊K − F⌋ + 1, K being the moment of the kill.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use crate::support::broker::{Broker, Subscriber};
use crate::support::reliability::{
    config_yaml, csv_well_formed, integrity, long, outbox_depth, simulated_devices, Mesura,
};
use crate::support::uplink::{until, Recorder};
use chrono::{DateTime, Utc};

const DEVICES: usize = 20;
const FLUSH: Duration = Duration::from_millis(500);
const POLL: Duration = Duration::from_secs(1);

fn secs(t: DateTime<Utc>) -> f64 {
    t.timestamp_millis() as f64 / 1000.0
}

fn parse(ts: &str) -> f64 {
    secs(DateTime::parse_from_rfc3339(ts).expect("an RFC 3339 time").to_utc())
}

/// Reading times (seconds, ms precision) per device in the CSV files.
fn csv_times(dir: &Path) -> BTreeMap<String, Vec<f64>> {
    let mut out: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let Ok(devices) = std::fs::read_dir(dir) else {
        return out;
    };
    for device in devices.filter_map(|e| e.ok()) {
        let id = device.file_name().to_string_lossy().into_owned();
        for file in std::fs::read_dir(device.path()).expect("dir").filter_map(|e| e.ok()) {
            if file.path().extension().is_none_or(|x| x != "csv") {
                continue;
            }
            let mut reader = csv::ReaderBuilder::new().from_path(file.path()).expect("csv");
            for record in reader.records() {
                let record = record.expect("a well-formed line");
                out.entry(id.clone()).or_default().push(parse(&record[0]));
            }
        }
    }
    out
}

#[derive(Default, Debug)]
struct Losses {
    /// Per backend: polls lost over all kills, the most lost by one device in one
    /// kill, and the oldest lost reading's age at the kill (s).
    total: BTreeMap<&'static str, u64>,
    worst: BTreeMap<&'static str, u64>,
    oldest_lost: BTreeMap<&'static str, f64>,
    /// Polls lost elsewhere than at the tail: in SQLite, two polls stamped with
    /// the same second (across a restart) merged into one row.
    merged: BTreeMap<&'static str, u64>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_at_random_moments_corrupts_nothing_and_loses_at_most_a_flush_window() {
    let _alone = crate::support::reliability::alone().await;
    let kills = if long() { 200 } else { 20 };
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let broker = Broker::start(root, "allow_anonymous true", "");
    let mut server = Recorder::start().await;
    let config = root.join("config.yaml");
    std::fs::write(
        &config,
        config_yaml(broker.port, server.port, "500ms", "  enabled: false\n"),
    )
    .expect("config");
    std::fs::create_dir_all(root.join("config.d")).expect("config.d");
    let ids = simulated_devices(&root.join("config.d"), DEVICES, "1s");
    let sub = Subscriber::connect(broker.port, "reliability-observer", None, "meters/+/+/state").await;
    let db = root.join("data/mesura.db");
    let outbox = root.join("data/outbox.db");
    let log = root.join("mesura.log");

    let mut rng = fastrand::Rng::with_seed(13);
    let mut lives: Vec<(f64, f64)> = Vec::new();
    let mut last_committed: Vec<Vec<i64>> = Vec::new();
    let started = std::time::Instant::now();
    for kill in 0..kills {
        let start = secs(Utc::now());
        let daemon = Mesura::spawn(&config, &log);
        // A random moment, 1.2 to 3 s into the life: sometimes mid-commit, sometimes
        // between flushes, sometimes with an outbox delivery in flight.
        tokio::time::sleep(Duration::from_millis(rng.u64(1200..3000))).await;
        let end = secs(Utc::now());
        daemon.kill9();
        lives.push((start, end));
        assert_eq!(integrity(&db), "ok", "mesura.db after kill {kill}");
        // SQLite keeps whole seconds, and the next life's first poll may land in the
        // second this one was killed in: note what this life committed now.
        last_committed.push(
            ids.iter()
                .map(|id| {
                    crate::support::reliability::timestamps(&db, id)
                        .last()
                        .copied()
                        .unwrap_or(i64::MIN)
                })
                .collect::<Vec<i64>>(),
        );
        assert_eq!(integrity(&outbox), "ok", "outbox.db after kill {kill}");
        csv_well_formed(&root.join("data/csv"));
    }
    let killing = started.elapsed();

    // A clean life, then one with no devices that only delivers the backlog: the
    // outbox resumes where each kill left it and drains to nothing.
    let daemon = Mesura::spawn(&config, &log);
    tokio::time::sleep(Duration::from_secs(2)).await;
    daemon.stop();
    let devices_away = root.join("config.d.away");
    std::fs::rename(root.join("config.d"), &devices_away).expect("move config.d");
    std::fs::create_dir(root.join("config.d")).expect("empty config.d");
    let drain = Mesura::spawn(&config, &log);
    until(Duration::from_secs(120), "the outbox to drain", || {
        outbox_depth(&outbox).values().all(|n| *n == 0)
    })
    .await;
    drain.stop();
    assert_eq!(integrity(&db), "ok");
    assert_eq!(integrity(&outbox), "ok");
    // Delivery to the subscriber trails the broker's acknowledgement a little.
    tokio::time::sleep(Duration::from_millis(500)).await;
    server.stop();

    // What each backend holds, by device.
    let csv = csv_times(&root.join("data/csv"));
    let (mqtt, mqtt_messages) = {
        let messages = sub.snapshot();
        let (times, n) = crate::support::reliability::state_times(&messages);
        let times: BTreeMap<String, Vec<f64>> = times
            .into_iter()
            .map(|(d, t)| (d, t.iter().map(|s| parse(s)).collect()))
            .collect();
        (times, n)
    };
    let (uplink, uplink_items) = {
        let (seen, n) = crate::support::reliability::uplink_readings(&server.requests());
        let mut by_device: BTreeMap<String, std::collections::BTreeSet<String>> = BTreeMap::new();
        for (device, _, ts) in seen.iter() {
            by_device.entry(device.clone()).or_default().insert(ts.clone());
        }
        let distinct_items = seen.len();
        let times: BTreeMap<String, Vec<f64>> = by_device
            .into_iter()
            .map(|(d, t)| (d, t.iter().map(|s| parse(s)).collect()))
            .collect();
        (times, (distinct_items, n))
    };

    let mut losses = Losses::default();
    let mut polls_expected = 0u64;
    let empty = Vec::new();
    for (device, id) in ids.iter().enumerate() {
        let sqlite: Vec<f64> = crate::support::reliability::timestamps(&db, id)
            .into_iter()
            .map(|t| t as f64)
            .collect();
        let mut previous_end = f64::NEG_INFINITY;
        for (life, &(start, end)) in lives.iter().enumerate() {
            let committed = last_committed[life][device] as f64;
            let within = |times: &[f64]| -> Vec<f64> {
                times
                    .iter()
                    .copied()
                    .filter(|t| *t >= start - 0.001 && *t <= end)
                    .collect()
            };
            let in_csv = within(csv.get(id).unwrap_or(&empty));
            let in_mqtt = within(mqtt.get(id).unwrap_or(&empty));
            let in_uplink = within(uplink.get(id).unwrap_or(&empty));
            let first = in_csv
                .iter()
                .chain(&in_mqtt)
                .chain(&in_uplink)
                .copied()
                .fold(f64::INFINITY, f64::min);
            assert!(
                first.is_finite(),
                "{id}: no backend holds any reading of the life {start}..{end}"
            );
            let polls = ((end - first) / POLL.as_secs_f64()).floor() as u64 + 1;
            polls_expected += polls;
            // SQLite stores whole seconds: its rows of this life are those after
            // the previous life's last second; a first poll in that same second
            // merged into the previous life's row (`ts` is the primary key) and
            // counts as lost here.
            let lower = first.floor().max(previous_end.floor() + 1.0);
            let in_sqlite: Vec<f64> = sqlite
                .iter()
                .copied()
                .filter(|t| *t >= lower && *t <= committed)
                .collect();
            let sqlite_polls = (0..polls)
                .filter(|k| first + *k as f64 * POLL.as_secs_f64() >= lower)
                .count() as u64;
            previous_end = end;
            for (backend, expected, held) in [
                ("sqlite", sqlite_polls + (polls - sqlite_polls), &in_sqlite),
                ("csv", polls, &in_csv),
                ("mqtt", polls, &in_mqtt),
                ("uplink", polls, &in_uplink),
            ] {
                let lost = expected.saturating_sub(held.len() as u64);
                *losses.total.entry(backend).or_default() += lost;
                // The tail: polls after the last one this backend holds, i.e. those
                // of the flush window the kill cut short.
                let last_held = held.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                // Half a poll of slack: a poll runs a few ms after its tick.
                let next_second = if backend == "sqlite" {
                    last_held + 1.0
                } else {
                    last_held + 0.5
                };
                let tail: Vec<f64> = (0..polls)
                    .map(|k| first + k as f64 * POLL.as_secs_f64())
                    .filter(|p| *p >= next_second)
                    .collect();
                let worst = losses.worst.entry(backend).or_default();
                *worst = (*worst).max(tail.len() as u64);
                *losses.merged.entry(backend).or_default() += lost.saturating_sub(tail.len() as u64);
                if let Some(oldest) = tail.first() {
                    let age = losses.oldest_lost.entry(backend).or_default();
                    *age = age.max(end - oldest);
                }
            }
        }
    }
    println!("kill -9: {kills} kills in {killing:.1?}, {DEVICES} devices, {polls_expected} polls in the killed lives");
    println!("kill -9: polls lost per backend (total, of them merged into a row of the same second / worst tail of one device in one kill / oldest lost reading's age at the kill): ");
    for (backend, total) in &losses.total {
        println!(
            "  {backend}: {total}, {} merged / {} / {:.2}s",
            losses.merged.get(backend).copied().unwrap_or(0),
            losses.worst[backend],
            losses.oldest_lost.get(backend).copied().unwrap_or(0.0)
        );
    }
    println!(
        "kill -9: uplink {} distinct readings in {} items ({} duplicates); mqtt {} distinct reading times in {mqtt_messages} state messages ({} duplicates)",
        uplink_items.0,
        uplink_items.1,
        uplink_items.1 - uplink_items.0,
        mqtt.values().map(Vec::len).sum::<usize>(),
        mqtt_messages - mqtt.values().map(Vec::len).sum::<usize>()
    );
    // At most the readings of one flush window (500 ms here, so one poll at 1 s)
    // per device per kill; one more poll of slack for a commit the loaded machine
    // had not finished when the kill came.
    let bound = (FLUSH.as_secs_f64() / POLL.as_secs_f64()).ceil() as u64 + 1;
    for (backend, worst) in &losses.worst {
        assert!(
            *worst <= bound,
            "{backend} lost {worst} polls of one device in one kill (bound {bound}): {losses:?}"
        );
    }
    for (backend, age) in &losses.oldest_lost {
        assert!(
            *age <= FLUSH.as_secs_f64() + 0.5,
            "{backend} lost a reading {age:.2}s old at the kill: more than a flush window"
        );
    }
    let outbox_left = outbox_depth(&outbox);
    assert!(outbox_left.values().all(|n| *n == 0), "{outbox_left:?}");
    drop(devices_away);
}
