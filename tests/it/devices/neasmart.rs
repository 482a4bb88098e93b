//! The `neasmart` device (mesura the Modbus slave) driven by pymodbus playing the
//! REHAU base station: it writes zone and system registers into slave ids 240
//! and 241 over TCP; the daemon turns the bank into readings in SQLite.

use std::time::{Duration, Instant};

use crate::support::broker::free_port;
use crate::support::modbus::base_station_writes;
use crate::support::{no_env, Setup};
use mesura::config::Config;
use mesura::daemon::app::Daemon;

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_base_stations_writes_become_readings() {
    let setup = Setup::new("backends:\n  sqlite:\n    flush_interval: 1s\n");
    let port = free_port();
    setup.device(
        "heating",
        &format!("type: neasmart\nlisten: 127.0.0.1:{port}\npoll_interval: 1s\nzone_names:\n  \"1\": living\n"),
    );
    let config = Config::load(&setup.config_path(), &no_env).expect("config");
    assert!(config.devices.errors.is_empty(), "{:?}", config.devices.errors);
    let daemon = Daemon::start(config, mesura::host::clock::system())
        .await
        .expect("start");
    let writes: Vec<String> = [
        "240:102:0x0C33",      // zone 1 temperature 21.5 °C (function 6)
        "240:101:0x07D0",      // zone 1 setpoint 20.0 °C
        "240:110:45",          // zone 1 humidity 45 %
        "240:100:1",           // zone 1 state normal
        "240:202:0x7FFF",      // zone 2 temperature: not initialised → absent
        "240:7:0x860C,0x830A", // outside −5.0 and filtered −12.7 (function 16)
        "240:12:0x146A",       // mixed group 1 flow 45.2 °C
        "241:1302:0x0C5B",     // slave 241: base 2 zone 1 temperature 22.3 °C
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let writer = tokio::task::spawn_blocking(move || base_station_writes(port, &writes));
    writer.await.expect("base station");
    let start = Instant::now();
    let db = setup.db_path();
    let get = |m: &str| -> Option<f64> {
        let conn = rusqlite::Connection::open(&db).ok()?;
        conn.query_row(
            &format!("SELECT {m} FROM heating WHERE {m} IS NOT NULL ORDER BY ts DESC LIMIT 1"),
            [],
            |r| r.get(0),
        )
        .ok()
    };
    while get("slave241_zone_2_1_temperature").is_none() {
        assert!(
            start.elapsed() < LIMIT,
            "no reading of the written values within {LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    daemon.shutdown().await;
    assert_eq!(get("zone_living_temperature"), Some(21.5));
    assert_eq!(get("zone_living_setpoint"), Some(20.0));
    assert_eq!(get("zone_living_humidity"), Some(45.0));
    assert_eq!(get("zone_living_state"), Some(1.0));
    assert_eq!(get("outside_temperature"), Some(-5.0));
    assert_eq!(get("outside_temperature_filtered"), Some(-12.7));
    assert_eq!(get("mixed_group_1_flow_temperature"), Some(45.2));
    assert_eq!(get("slave241_zone_2_1_temperature"), Some(22.3));
    // Never written, or written as "not initialised": no value, no column.
    assert_eq!(get("zone_2_temperature"), None);
    assert_eq!(get("zone_3_temperature"), None);
    assert_eq!(get("operating_mode"), None);
}
