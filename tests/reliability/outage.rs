//! Reliability suite 2, outages: the MQTT broker (a real Mosquitto) and the HTTP
//! uplink's server are both down for 60 s (10 minutes with `LONG_TESTS=1`) while
//! 20 simulated devices produce, and the daemon is restarted in the middle of the
//! outage. Afterwards not one reading is missing downstream: the MQTT subscriber (a
//! persistent session) has a state message for every poll, the HTTP server every
//! reading; duplicates (delivery is at-least-once) are counted.

use std::time::Duration;

use crate::support::broker::{Broker, Subscriber};
use crate::support::reliability::{
    config_yaml, long, outbox_depth, shutdown_counts, simulated_devices, state_times, uplink_readings, Mesura,
};
use crate::support::uplink::{until, Recorder};

const DEVICES: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_and_server_down_across_a_restart_lose_nothing() {
    let _alone = crate::support::reliability::alone().await;
    let outage = if long() {
        Duration::from_secs(600)
    } else {
        Duration::from_secs(60)
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path();
    let mut broker = Broker::start(root, "allow_anonymous true", "");
    let mut server = Recorder::start().await;
    let config = root.join("config.yaml");
    std::fs::write(
        &config,
        config_yaml(broker.port, server.port, "1s", "  enabled: false\n"),
    )
    .expect("config");
    std::fs::create_dir_all(root.join("config.d")).expect("config.d");
    let ids = simulated_devices(&root.join("config.d"), DEVICES, "1s");
    let sub = Subscriber::connect(broker.port, "outage-observer", None, "meters/+/+/state").await;
    let outbox = root.join("data/outbox.db");
    let log = root.join("mesura.log");

    let daemon = Mesura::spawn(&config, &log);
    until(Duration::from_secs(30), "deliveries under way", || {
        state_times(&sub.snapshot()).0.len() == DEVICES && !server.requests().is_empty()
    })
    .await;

    // Both far ends go away; half-way through the outage the daemon restarts.
    broker.stop();
    server.stop();
    let outage_started = std::time::Instant::now();
    tokio::time::sleep(outage / 2).await;
    let held_at_restart = outbox_depth(&outbox);
    daemon.stop();
    let daemon = Mesura::spawn(&config, &log);
    tokio::time::sleep(outage.saturating_sub(outage_started.elapsed())).await;
    let held = outbox_depth(&outbox);
    println!("outage: {outage:?}, outbox at the restart {held_at_restart:?}, at the end {held:?}");
    assert!(
        held.get("mqtt").copied().unwrap_or(0) > 0 && held.get("uplink").copied().unwrap_or(0) > 0,
        "the outage's readings wait in the outbox: {held:?}"
    );

    broker.restart();
    server.restart().await;
    let recovery = std::time::Instant::now();
    until(Duration::from_secs(180), "the backlog delivered", || {
        outbox_depth(&outbox).values().all(|n| *n < 200)
    })
    .await;
    let caught_up = recovery.elapsed();
    daemon.stop();
    // Delivery runs only while the daemon does: a last life with no devices
    // delivers what the clean stop put in the outbox.
    std::fs::rename(root.join("config.d"), root.join("config.d.away")).expect("move config.d");
    std::fs::create_dir(root.join("config.d")).expect("empty config.d");
    let drain = Mesura::spawn(&config, &log);
    until(Duration::from_secs(60), "the last of the backlog", || {
        outbox_depth(&outbox).values().all(|n| *n == 0)
    })
    .await;
    drain.stop();

    let polls: u64 = shutdown_counts(&log, "polls").iter().sum();
    let readings: u64 = shutdown_counts(&log, "readings").iter().sum();
    assert_eq!(shutdown_counts(&log, "polls").len(), 3, "three clean lives");
    // Every poll made a state message; every reading an uplink item.
    let mut delivered_states = 0;
    until(Duration::from_secs(30), "every state message at the subscriber", || {
        let (times, _) = state_times(&sub.snapshot());
        delivered_states = ids
            .iter()
            .map(|id| times.get(id).map_or(0, |t| t.len() as u64))
            .sum::<u64>();
        delivered_states >= polls
    })
    .await;
    let (times, messages) = state_times(&sub.snapshot());
    let distinct: usize = times.values().map(|t| t.len()).sum();
    let (items, all_items) = uplink_readings(&server.requests());
    println!(
        "outage: {polls} polls, {readings} readings in two lives; mqtt {distinct} distinct state messages \
         ({} duplicates), uplink {} distinct readings ({} duplicates); backlog caught up {caught_up:.1?} after the end",
        messages - distinct,
        items.len(),
        all_items - items.len()
    );
    assert_eq!(distinct as u64, polls, "every poll's state message, none missing");
    assert_eq!(
        items.len() as u64,
        readings,
        "every reading at the HTTP server, none missing"
    );
}
