//! mesura and a real Home Assistant (core 2024.3.3, scripts/ha-venv.sh) on the
//! suite's Mosquitto, checked through Home Assistant's own APIs: the entities it
//! makes from discovery, its hourly statistics after readings that reached it late
//! (stamped hours in the past by a fake clock) equal to the sums of mesura's SQLite
//! rows hour by hour, a backfill run twice changing nothing, no entity `unknown`
//! after Home Assistant restarts, and a device removed while mesura was down gone;
//! the daemon's own backfill after a broker outage (a Mosquitto of the test's, stopped
//! and started), and the entities of metrics a device no longer has cleared.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use crate::support::broker::Broker;
use crate::support::home_assistant::{python, HomeAssistant};
use crate::support::{no_env, Setup};
use mesura::backends::mqtt::ha::backfill::{floor_hour, HOUR};
use mesura::commands::ha::{backfill, BackfillRequest};
use mesura::config::Config;
use mesura::daemon::app::{Daemon, Summary};
use mesura::host::clock::{Clock, JumpingClock, SharedClock};
use mesura::protocols::ha_statistics::{self, HourStat};
use serde_json::Value as Json;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(60);

struct Running {
    shutdown: CancellationToken,
    task: JoinHandle<Summary>,
}

async fn run(setup: &Setup, clock: SharedClock) -> Running {
    let config = Config::load(&setup.config_path(), &no_env).expect("config");
    assert!(config.devices.errors.is_empty(), "{:?}", config.devices.errors);
    let daemon = Daemon::start(config, clock).await.expect("start");
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(daemon.run(shutdown.clone()));
    Running { shutdown, task }
}

impl Running {
    async fn stop(self) -> Summary {
        self.shutdown.cancel();
        self.task.await.expect("daemon")
    }
}

/// Polls `check` until it gives a value, for up to a minute.
async fn until<T, F: std::future::Future<Output = Option<T>>>(what: &str, mut check: impl FnMut() -> F) -> T {
    let start = tokio::time::Instant::now();
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(start.elapsed() < LIMIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// The hours Home Assistant should hold, from mesura's SQLite rows: per hour the
/// last value, and the increase since `zero`, where Home Assistant's own statistics
/// of the entity start (its first numeric state: it had none of these entities
/// before), so that the hours it compiles itself after the import continue them.
fn expected_hours(db: &std::path::Path, table: &str, column: &str, zero: f64, before: i64) -> Vec<HourStat> {
    let conn = rusqlite::Connection::open(db).expect("mesura.db");
    let rows: Vec<(i64, f64)> = conn
        .prepare(&format!(
            "SELECT ts, \"{column}\" FROM \"{table}\" WHERE \"{column}\" IS NOT NULL ORDER BY ts"
        ))
        .expect("query")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("rows");
    let mut last_of_hour: BTreeMap<i64, f64> = BTreeMap::new();
    for (ts, value) in rows {
        last_of_hour.insert(floor_hour(ts), value);
    }
    last_of_hour
        .into_iter()
        .filter(|(hour, _)| *hour < before)
        .map(|(start, state)| HourStat {
            start,
            state,
            sum: state - zero,
        })
        .collect()
}

/// The entity's first numeric state in Home Assistant's history (REST API).
async fn first_state(ha: &HomeAssistant, id: &str, since: i64) -> f64 {
    let start = chrono::DateTime::from_timestamp(since, 0).expect("time").to_rfc3339();
    let history: Json = reqwest::Client::new()
        .get(format!("{}/api/history/period/{start}", ha.url()))
        .query(&[
            ("filter_entity_id", id),
            ("minimal_response", ""),
            ("no_attributes", ""),
        ])
        .bearer_auth(&ha.token)
        .send()
        .await
        .expect("history")
        .json()
        .await
        .expect("history JSON");
    history[0]
        .as_array()
        .and_then(|states| {
            states
                .iter()
                .find_map(|s| s["state"].as_str().and_then(|v| v.parse::<f64>().ok()))
        })
        .unwrap_or_else(|| panic!("no numeric state of {id}: {history}"))
}

async fn ha_hours(ha: &HomeAssistant, id: &str, from: i64, to: i64) -> Vec<HourStat> {
    let mut socket = ha.socket().await;
    let call = socket.id();
    let text = ha_statistics::statistics_during_period(call, from, to, &[id.to_owned()]);
    let result = socket
        .command(call, "statistics_during_period", &text)
        .await
        .expect("statistics");
    ha_statistics::statistics_of(&result).remove(id).unwrap_or_default()
}

/// mesura's log lines of its MQTT backend, for a failure's message.
fn mqtt_lines(logs: &crate::support::logs::Buffer) -> String {
    crate::support::logs::text(logs)
        .lines()
        .filter(|l| l.contains("mqtt"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Home Assistant logged no MQTT error (a discovery config or state it refused).
fn assert_nothing_refused(ha: &HomeAssistant) {
    let log = ha.log();
    let refused: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("ERROR") && l.contains("mqtt"))
        .collect();
    assert!(refused.is_empty(), "Home Assistant refused something: {refused:#?}");
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * a.abs().max(1.0)
}

fn attribute<'a>(state: &'a Json, name: &str) -> Option<&'a str> {
    state["attributes"][name].as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn home_assistant_gets_its_entities_the_true_hourly_statistics_and_no_orphans() {
    let python = python("backends::home_assistant");
    let logs = crate::support::logs::info();
    let setup = Setup::new("");
    let broker = Broker::start(setup.dir.path(), "allow_anonymous true", "");
    let mut ha = HomeAssistant::start(&python, &setup.dir.path().join("ha"), broker.port).await;
    // First without the statistics section: Home Assistant gets late readings as
    // it always did, stamped on arrival.
    let plain = format!(
        "backends:\n  sqlite:\n    flush_interval: 200ms\n  mqtt:\n    host: 127.0.0.1\n    port: {}\n    flush_interval: 200ms\n    homeassistant:\n      enabled: true\n",
        broker.port
    );
    let with_statistics = format!(
        "{plain}      statistics:\n        url: {}\n        token: {}\n        lookback: 12h\nwatch:\n  enabled: false\n",
        ha.url(),
        ha.token
    );
    std::fs::write(setup.config_path(), format!("{plain}watch:\n  enabled: false\n")).expect("config");
    setup
        .device("meter", "type: simulated\nprofile: electricity\npoll_interval: 1s\n")
        .device("gas", "type: simulated\nprofile: gas\npoll_interval: 1s\n")
        // Slow: one reading, then an hour of nothing.
        .device("room", "type: simulated\nprofile: climate\npoll_interval: 1h\n");

    // Readings stamped from four hours ago up to now, arriving within seconds: as
    // after an outage, Home Assistant gets them all now.
    let real_start = chrono::Utc::now();
    let clock = Arc::new(JumpingClock::starting_at(real_start - chrono::TimeDelta::hours(4)));
    let daemon = run(&setup, clock.clone()).await;
    while clock.now() + chrono::TimeDelta::minutes(11) < chrono::Utc::now() {
        tokio::time::sleep(Duration::from_millis(500)).await;
        clock.jump(chrono::TimeDelta::minutes(10));
    }

    // The entities, with the classes the Energy dashboard needs (Home Assistant
    // makes no entity from a config its schema refuses).
    let energy = "sensor.meter_energy_delivered_tariff1_lifetime";
    let gas = "sensor.gas_gas_delivered_lifetime";
    let state = until("the lifetime energy entity", || ha.state(energy)).await;
    assert_eq!(
        (
            attribute(&state, "device_class"),
            attribute(&state, "state_class"),
            attribute(&state, "unit_of_measurement")
        ),
        (Some("energy"), Some("total_increasing"), Some("kWh")),
        "{state}"
    );
    let state = until("the lifetime gas entity", || ha.state(gas)).await;
    assert_eq!(
        (
            attribute(&state, "device_class"),
            attribute(&state, "state_class"),
            attribute(&state, "unit_of_measurement")
        ),
        (Some("gas"), Some("total_increasing"), Some("m³")),
        "{state}"
    );
    let raw = until("the raw energy entity", || {
        ha.state("sensor.meter_energy_delivered_tariff1")
    })
    .await;
    assert_eq!(attribute(&raw, "device_class"), Some("energy"));
    assert!(raw["attributes"].get("state_class").is_none(), "{raw}");
    let room = until("the room's temperature", || ha.state("sensor.room_temperature")).await;
    assert_eq!(
        (attribute(&room, "device_class"), attribute(&room, "state_class")),
        (Some("temperature"), Some("measurement"))
    );
    assert!(
        room["state"].as_str().and_then(|s| s.parse::<f64>().ok()).is_some(),
        "{room}"
    );

    // A dry run says what it would import, and imports nothing.
    std::fs::write(setup.config_path(), &with_statistics).expect("config");
    let request = BackfillRequest {
        dry_run: true,
        ..BackfillRequest::default()
    };
    let dry = backfill(&setup.config_path(), &no_env, &request).await;
    assert!(dry.ok, "{}", dry.text);
    assert!(dry.text.contains(&format!("{energy} (kWh): ")), "{}", dry.text);
    let would: usize = dry
        .text
        .lines()
        .next()
        .and_then(|l| l.split(' ').nth(2))
        .and_then(|n| n.parse().ok())
        .expect("count");
    assert!(would >= 20, "four hours of five counters: {}", dry.text);
    let window = (
        floor_hour(real_start.timestamp()) - 6 * HOUR,
        floor_hour(chrono::Utc::now().timestamp()) + HOUR,
    );
    let past = floor_hour(real_start.timestamp());
    assert!(
        ha_hours(&ha, energy, window.0, past).await.is_empty(),
        "a dry run imports nothing"
    );

    // mesura restarts with the section: once its outbox is drained, its first pass
    // imports what Home Assistant missed.
    daemon.stop().await;
    let daemon = run(&setup, mesura::host::clock::system()).await;

    // Home Assistant restarts: its birth message brings discovery, the latest
    // states (the room polls hourly: it would sit at `unknown`), and a backfill
    // pass over what it missed.
    ha.restart().await;
    let room = until("the room's state after the restart", || async {
        ha.state("sensor.room_temperature")
            .await
            .filter(|s| s["state"].as_str().is_some_and(|v| v.parse::<f64>().is_ok()))
    })
    .await;
    assert_eq!(attribute(&room, "unit_of_measurement"), Some("°C"));

    let db = setup.db_path();
    let mut energy_hours = Vec::new();
    for (id, table, column) in [
        (energy, "meter", "energy_delivered_tariff1_lifetime"),
        (gas, "gas", "gas_delivered_lifetime"),
    ] {
        let start = tokio::time::Instant::now();
        let got = loop {
            let before = floor_hour(chrono::Utc::now().timestamp());
            let zero = first_state(&ha, id, window.0).await;
            let want = expected_hours(&db, table, column, zero, before);
            let got = ha_hours(&ha, id, window.0, window.1).await;
            let got: Vec<HourStat> = got.into_iter().filter(|h| h.start < before).collect();
            if got.len() == want.len()
                && got
                    .iter()
                    .zip(&want)
                    .all(|(g, w)| g.start == w.start && close(g.state, w.state) && close(g.sum, w.sum))
            {
                break got;
            }
            assert!(
                start.elapsed() < LIMIT,
                "{id}: Home Assistant's hours\n{got:#?}\nare not mesura's\n{want:#?}\nmesura's log:\n{}",
                mqtt_lines(&logs)
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        assert!(got.len() >= 4, "{id}: {got:?}");
        if id == energy {
            energy_hours = got.clone();
        }
        assert!(
            got.windows(2).all(|w| w[1].sum > w[0].sum),
            "{id}: the energy spread over its hours: {got:?}"
        );
    }

    assert!(
        crate::support::logs::text(&logs)
            .contains("Home Assistant's statistics brought up to date from mesura's readings"),
        "the daemon's pass is said"
    );

    // Run by hand: whatever the daemon left, a second run finds every hour right.
    let once = backfill(&setup.config_path(), &no_env, &BackfillRequest::default()).await;
    assert!(once.ok && once.text.starts_with("imported "), "{}", once.text);
    // (Home Assistant's recorder writes an import a moment after it answers.)
    let mut again = String::new();
    let start = tokio::time::Instant::now();
    while !again.starts_with("would import 0 hours of 5 statistics") {
        assert!(start.elapsed() < LIMIT, "the import never landed: {again}");
        tokio::time::sleep(Duration::from_millis(100)).await;
        again = backfill(&setup.config_path(), &no_env, &request).await.text;
    }
    // From the second hour on, the sums continue from Home Assistant's first hour
    // (the base): the same hours again.
    let from_second = BackfillRequest {
        from: Some(energy_hours[1].start.to_string()),
        dry_run: true,
        ..BackfillRequest::default()
    };
    let based = backfill(&setup.config_path(), &no_env, &from_second).await;
    assert!(based.text.starts_with("would import 0 hours"), "{}", based.text);
    assert!(
        based.text.contains(&format!(
            "{energy} (kWh): 0 hours to import, {} already right",
            energy_hours.len() - 1
        )),
        "{}",
        based.text
    );
    let real = BackfillRequest::default();
    let twice = backfill(&setup.config_path(), &no_env, &real).await;
    assert!(
        twice.text.starts_with("imported 0 hours of 5 statistics"),
        "{}",
        twice.text
    );

    // The room is removed while mesura is down: at the next start its entities go.
    daemon.stop().await;
    std::fs::remove_file(setup.dir.path().join("config.d/room.yaml")).expect("rm room");
    let daemon = run(&setup, mesura::host::clock::system()).await;
    until("the removed device's entity gone", || async {
        ha.state("sensor.room_temperature").await.is_none().then_some(())
    })
    .await;
    assert!(ha.state("sensor.room_humidity").await.is_none());
    assert!(ha.state(energy).await.is_some(), "the meter stays");
    daemon.stop().await;

    assert_nothing_refused(&ha);
    ha.stop();
}

/// Home Assistant's hours of `id` in `[from, before)`, when they equal the ones
/// mesura's rows of `table.column` give.
async fn hours_equal(
    ha: &HomeAssistant,
    db: &std::path::Path,
    (id, table, column): (&str, &str, &str),
    from: i64,
    before: i64,
) -> Option<Vec<HourStat>> {
    let zero = first_state(ha, id, from).await;
    let want: Vec<HourStat> = expected_hours(db, table, column, zero, before)
        .into_iter()
        .filter(|h| h.start >= from)
        .collect();
    let got: Vec<HourStat> = ha_hours(ha, id, from, before)
        .await
        .into_iter()
        .filter(|h| h.start < before)
        .collect();
    let equal = got.len() == want.len()
        && got
            .iter()
            .zip(&want)
            .all(|(g, w)| g.start == w.start && close(g.state, w.state) && close(g.sum, w.sum));
    equal.then_some(got)
}

/// A `type: mqtt` channel's message, stamped `at` by its publisher; retained, so
/// the device gets it whenever it subscribes.
async fn channel(client: &rumqttc::AsyncClient, n: u32, at: i64, watts: f64) {
    client
        .publish(
            format!("plugs/{n}/state"),
            rumqttc::QoS::AtLeastOnce,
            true,
            format!("{{\"t\": {at}, \"w\": {watts}}}"),
        )
        .await
        .expect("publish");
}

/// The broker goes down while readings stamped across four hours (a fake clock)
/// pile up in the outbox, and comes back: the daemon alone brings Home Assistant's
/// hourly statistics of those hours to the sums of mesura's SQLite rows. Then,
/// across a restart, a `system` device loses a disk (its entities leave Home
/// Assistant) and an MQTT device's channel silent for longer than
/// `discovery_expire_after` while the others report is cleared, a slow one kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_broker_outage_the_daemon_backfills_and_dropped_metrics_leave_home_assistant() {
    let python = python("backends::home_assistant");
    let logs = crate::support::logs::info();
    let setup = Setup::new("");
    let mut broker = Broker::start(setup.dir.path(), "allow_anonymous true", "");
    let ha = HomeAssistant::start(&python, &setup.dir.path().join("ha"), broker.port).await;
    std::fs::write(
        setup.config_path(),
        format!(
            "backends:\n  sqlite:\n    flush_interval: 200ms\n  mqtt:\n    host: 127.0.0.1\n    port: {}\n    flush_interval: 200ms\n    homeassistant:\n      enabled: true\n      discovery_expire_after: 2h\n      statistics:\n        url: {}\n        token: {}\n        lookback: 12h\nwatch:\n  enabled: false\n",
            broker.port,
            ha.url(),
            ha.token
        ),
    )
    .expect("config");
    let spare = setup.dir.path().join("spare");
    std::fs::create_dir_all(&spare).expect("spare dir");
    let spare_free = format!("sensor.host_disk_free_{}", mesura::monitors::system::disk_slug(&spare));
    let host = |disks: &str| format!("type: system\npoll_interval: 1s\ndisk_paths: [{disks}]\n");
    setup
        .device("feeder", "type: simulated\nprofile: electricity\npoll_interval: 1s\n")
        .device("host", &host(&format!("\"/\", \"{}\"", spare.display())))
        // Slow: one reading, then an hour of nothing.
        .device("attic", "type: simulated\nprofile: climate\npoll_interval: 1h\n")
        // Its channels are whatever publishes: `ch_1_power`, `ch_2_power`…
        .device(
            "plugs",
            "type: mqtt\nsubscriptions:\n  - topic: plugs/+/state\n    timestamp: $.t\n    values:\n      - { metric: \"ch_{1}_power\", path: $.w, unit: W }\n",
        );
    let mut options = rumqttc::MqttOptions::new("plugs-publisher", "127.0.0.1", broker.port);
    options.set_keep_alive(Duration::from_secs(30));
    let (publisher, mut events) = rumqttc::AsyncClient::new(options, 16);
    // Polled through the broker's restart: the client reconnects on the next poll.
    let publishing = tokio::spawn(async move {
        loop {
            if events.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    });

    let real_start = chrono::Utc::now();
    let t0 = real_start - chrono::TimeDelta::hours(5);
    for n in 1..=3 {
        channel(&publisher, n, t0.timestamp(), f64::from(n)).await;
    }
    let clock = Arc::new(JumpingClock::starting_at(t0));
    let daemon = run(&setup, clock.clone()).await;
    let energy = "sensor.feeder_energy_delivered_tariff1_lifetime";
    until("the feeder's numeric state", || async {
        ha.state(energy)
            .await
            .filter(|s| s["state"].as_str().is_some_and(|v| v.parse::<f64>().is_ok()))
    })
    .await;
    for id in [
        "sensor.plugs_ch_1_power",
        "sensor.plugs_ch_2_power",
        "sensor.plugs_ch_3_power",
        spare_free.as_str(),
        "sensor.host_disk_free_root",
        "sensor.attic_temperature",
    ] {
        until(id, || ha.state(id)).await;
    }
    // The pass after the start (over the lookback) comes first: what follows is the
    // outage's own.
    until("the first statistics pass", || async {
        crate::support::logs::text(&logs)
            .lines()
            .any(|l| {
                l.contains("feeder_energy_delivered_tariff1_lifetime")
                    && (l.contains("brought up to date") || l.contains("no statistics or numeric state"))
            })
            .then_some(())
    })
    .await;

    // Four hours of readings while the broker is down.
    broker.stop();
    let db = setup.db_path();
    let newest = |db: &std::path::Path| -> i64 {
        rusqlite::Connection::open(db)
            .and_then(|c| c.query_row("SELECT COALESCE(MAX(ts), 0) FROM feeder", [], |r| r.get(0)))
            .unwrap_or(0)
    };
    for _ in 0..8 {
        clock.jump(chrono::TimeDelta::minutes(30));
        let at = clock.now().timestamp();
        until("a reading after the jump", || async {
            (newest(&db) >= at).then_some(())
        })
        .await;
    }
    // Back to the real time, whose hour is not over: the hours compared are the
    // outage's, whose readings are all in.
    clock.jump(chrono::Utc::now() - clock.now());
    let from = floor_hour(t0.timestamp());
    // Hours before the one the test started in: the later ones may still change.
    let before = floor_hour(real_start.timestamp());
    let counter = (energy, "feeder", "energy_delivered_tariff1_lifetime");
    assert!(
        hours_equal(&ha, &db, counter, from, before).await.is_none(),
        "Home Assistant has the outage's hours right before the broker is back"
    );

    broker.restart();
    let start = tokio::time::Instant::now();
    let got = loop {
        if let Some(got) = hours_equal(&ha, &db, counter, from, before).await {
            break got;
        }
        assert!(
            start.elapsed() < 2 * LIMIT,
            "Home Assistant's hours are not mesura's after the outage; mesura's log:\n{}",
            mqtt_lines(&logs)
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let outage: Vec<&HourStat> = got.iter().filter(|h| h.start > from).collect();
    assert!(outage.len() >= 3, "three hours of the outage at least: {got:?}");
    assert!(got.windows(2).all(|w| w[1].sum > w[0].sum), "{got:?}");

    // While mesura is down, a disk leaves the `system` device, channel 1 reports
    // on, channel 3 last reported 90 minutes ago and channel 2 five hours ago.
    daemon.stop().await;
    setup.device("host", &host("\"/\""));
    let now = chrono::Utc::now().timestamp();
    channel(&publisher, 1, now - 60, 11.0).await;
    channel(&publisher, 3, now - 90 * 60, 13.0).await;
    let daemon = run(&setup, mesura::host::clock::system()).await;
    until("the dropped disk's entity gone", || async {
        ha.state(&spare_free).await.is_none().then_some(())
    })
    .await;
    until("the silent channel's entity gone", || async {
        ha.state("sensor.plugs_ch_2_power").await.is_none().then_some(())
    })
    .await;
    for kept in [
        "sensor.plugs_ch_1_power",
        "sensor.plugs_ch_3_power",
        "sensor.host_disk_free_root",
        "sensor.attic_temperature",
        energy,
    ] {
        assert!(ha.state(kept).await.is_some(), "{kept} stays");
    }
    let spare_used = spare_free.replace("disk_free", "disk_used_percent");
    assert!(ha.state(&spare_used).await.is_none(), "{spare_used} goes too");
    daemon.stop().await;
    publishing.abort();

    assert_nothing_refused(&ha);
}
