//! `type: mqtt` against a real Mosquitto: a Tasmota plug's retained and live
//! SENSOR messages, a BMS's per-cell topics through a wildcard, a malformed
//! payload (counted, never stored) and a broker restart. The devices take the
//! `mqtt` backend's broker; a subscription under its prefix is refused.

use std::time::Duration;

use chrono::{TimeDelta, Utc};
use rumqttc::QoS;

use crate::support::broker::{Broker, Subscriber};
use crate::support::modbus::{status, wait_for};
use crate::support::{no_env, Setup};
use mesura::config::Config;
use mesura::daemon::app::Daemon;

fn tasmota(total: f64, seconds_ago: i64) -> String {
    let time = (Utc::now() - TimeDelta::seconds(seconds_ago)).with_timezone(&chrono::Local);
    format!(
        r#"{{"Time":"{}","ENERGY":{{"TotalStartTime":"2025-05-01T10:00:00","Total":{total},"Yesterday":1.100,"Today":0.400,"Period":0,"Power":230,"ApparentPower":240,"ReactivePower":60,"Factor":0.96,"Voltage":231,"Current":1.040}}}}"#,
        time.format("%Y-%m-%dT%H:%M:%S")
    )
}

fn column(db: &std::path::Path, table: &str, column: &str) -> Vec<f64> {
    let Ok(conn) = rusqlite::Connection::open(db) else {
        return Vec::new();
    };
    let sql = format!("SELECT \"{column}\" FROM \"{table}\" WHERE \"{column}\" IS NOT NULL ORDER BY ts");
    let Ok(mut stmt) = conn.prepare(&sql) else {
        return Vec::new();
    };
    stmt.query_map([], |r| r.get(0))
        .map(|rows| rows.filter_map(Result::ok).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasmota_and_a_bms_in_through_a_real_broker() {
    let setup = Setup::new("");
    let mut broker = Broker::start(setup.dir.path(), "allow_anonymous true", "");
    std::fs::write(
        setup.config_path(),
        format!(
            "backends:\n  sqlite:\n    flush_interval: 100ms\n  mqtt:\n    host: 127.0.0.1\n    port: {}\n    topic_prefix: meters\nwatch:\n  enabled: false\n",
            broker.port
        ),
    )
    .expect("config");
    let publisher = Subscriber::connect(broker.port, "publisher", None, "nothing/here").await;
    let publish = |topic: &str, payload: String, retain: bool| {
        let client = publisher.client.clone();
        let topic = topic.to_owned();
        async move {
            client
                .publish(topic, QoS::AtLeastOnce, retain, payload)
                .await
                .expect("publish")
        }
    };
    // Retained before mesura starts: it arrives at the subscription.
    publish("tele/plug1/SENSOR", tasmota(12.345, 40), true).await;

    // A subscription under mesura's own prefix would loop: that file is refused.
    setup.device(
        "echo",
        "type: mqtt\nsubscriptions:\n  - topic: meters/#\n    values: [{metric: x}]\n",
    );
    let config = Config::load(&setup.config_path(), &no_env).expect("config");
    let refused = format!("{:?}", config.devices.errors);
    assert!(refused.contains("echo.yaml") && refused.contains("loop"), "{refused}");
    std::fs::remove_file(setup.dir.path().join("config.d/echo.yaml")).expect("rm");

    setup.device("plug", "type: mqtt\npreset: tasmota\nname: plug1\n");
    setup.device(
        "bms",
        "type: mqtt\nsubscriptions:\n  - topic: bms/+/voltage\n    values: [{metric: \"cell_{1}_voltage\", unit: V}]\n",
    );
    let config = Config::load(&setup.config_path(), &no_env).expect("config");
    assert!(config.devices.errors.is_empty(), "{:?}", config.devices.errors);
    let daemon = Daemon::start(config, mesura::host::clock::system())
        .await
        .expect("start");
    let db = setup.db_path();
    wait_for("the retained reading", || {
        column(&db, "plug", "energy_delivered") == [12.345]
    })
    .await;

    // Live messages, one malformed among them.
    publish("tele/plug1/SENSOR", "{\"Time\":\"2026-".into(), false).await;
    publish("tele/plug1/SENSOR", tasmota(12.4, 30), false).await;
    publish("bms/7/voltage", "3.312".into(), false).await;
    wait_for("the live reading", || {
        column(&db, "plug", "energy_delivered") == [12.345, 12.4]
    })
    .await;
    wait_for("the cell voltage", || column(&db, "bms", "cell_7_voltage") == [3.312]).await;
    wait_for("the malformed message counted", || {
        status(&daemon, "plug").protocol_errors.get("payload") == Some(&1)
    })
    .await;
    assert_eq!(
        column(&db, "plug", "power"),
        [230.0, 230.0],
        "nothing stored from the malformed one"
    );

    // The broker goes away: the device says so; it comes back: readings flow again.
    broker.stop();
    wait_for("the outage seen", || {
        status(&daemon, "plug").last_error.is_some_and(|e| e.contains("broker"))
    })
    .await;
    broker.restart();
    // The publisher's own session reconnects too; QoS 1 holds the message until then.
    publish("tele/plug1/SENSOR", tasmota(12.5, 20), false).await;
    wait_for("a reading after the restart", || {
        column(&db, "plug", "energy_delivered").last() == Some(&12.5)
    })
    .await;
    let summary = daemon.shutdown().await;
    assert_eq!(summary.dropped.values().sum::<u64>(), 0);
    tokio::time::sleep(Duration::ZERO).await;
}
