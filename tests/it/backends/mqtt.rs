//! The MQTT backend against a real Mosquitto broker: topics and payloads, Home
//! Assistant discovery, authentication, TLS, a broker outage and a daemon restart
//! while the broker is down. Nothing produced may be missing downstream.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::support::broker::{Broker, Message, SlowConnAckProxy, Subscriber};
use crate::support::{key_and_request, no_env, openssl, sign_certificate, sqlite_rows, Setup};
use mesura::config::Config;
use mesura::daemon::app::{Daemon, DaemonHandle, Summary};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const LIMIT: Duration = Duration::from_secs(30);

fn base(port: u16, extra: &str) -> String {
    format!(
        "backends:\n  sqlite:\n    flush_interval: 200ms\n  mqtt:\n    host: 127.0.0.1\n    port: {port}\n    flush_interval: 200ms\n    state_message: true\n    homeassistant:\n      enabled: true\n{extra}watch:\n  enabled: false\n"
    )
}

fn sim(profile: &str, poll: &str) -> String {
    format!("type: simulated\nprofile: {profile}\npoll_interval: {poll}\n")
}

struct Running {
    handle: DaemonHandle,
    shutdown: CancellationToken,
    task: JoinHandle<Summary>,
}

async fn run(setup: &Setup) -> Running {
    let config = Config::load(&setup.config_path(), &no_env).expect("config");
    assert!(config.devices.errors.is_empty(), "{:?}", config.devices.errors);
    let daemon = Daemon::start(config, mesura::host::clock::system())
        .await
        .expect("start");
    let handle = daemon.handle();
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(daemon.run(shutdown.clone()));
    Running { handle, shutdown, task }
}

impl Running {
    fn polls(&self, id: &str) -> u64 {
        self.handle.status.devices().get(id).map_or(0, |d| d.polls_ok)
    }

    async fn stop(self) -> Summary {
        self.shutdown.cancel();
        self.task.await.expect("daemon")
    }
}

async fn wait(what: &str, mut check: impl FnMut() -> bool) {
    let start = tokio::time::Instant::now();
    while !check() {
        assert!(start.elapsed() < LIMIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Distinct reading times per device, from the JSON state messages.
fn state_times(messages: &[Message]) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in messages.iter().filter(|m| m.topic.ends_with("/state")) {
        let device = m.topic.split('/').nth(2).unwrap_or_default().to_owned();
        let json: serde_json::Value = serde_json::from_str(&m.payload).expect("state JSON");
        out.entry(device)
            .or_default()
            .insert(json["timestamp"].as_str().expect("timestamp").to_owned());
    }
    out
}

fn outbox_rows(dir: &Path) -> i64 {
    let Ok(conn) = rusqlite::Connection::open(dir.join("data/outbox.db")) else {
        return 0;
    };
    conn.query_row("SELECT count(*) FROM outbox WHERE backend = 'mqtt'", [], |r| r.get(0))
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_payloads_and_home_assistant_discovery() {
    let setup = Setup::new("");
    let broker = Broker::start(setup.dir.path(), "allow_anonymous true", "");
    std::fs::write(setup.config_path(), base(broker.port, "")).expect("config");
    setup
        .device("electricity", &sim("electricity", "1s"))
        .device("room", &sim("climate", "1s"));
    let sub = Subscriber::connect(broker.port, "observer", None, "#").await;
    let daemon = run(&setup).await;

    let has = |sub: &Subscriber, topic: &str| sub.snapshot().iter().any(|m| m.topic == topic);
    wait("values of both devices", || {
        has(&sub, "meters/simulated/electricity/power_delivered") && has(&sub, "meters/simulated/room/temperature")
    })
    .await;
    let messages = sub.snapshot();
    let value = |topic: &str| {
        messages
            .iter()
            .find(|m| m.topic == topic)
            .map(|m| m.payload.clone())
            .expect(topic)
    };
    let kwh: f64 = value("meters/simulated/electricity/energy_delivered_tariff1")
        .parse()
        .expect("a plain number");
    assert!(kwh > 1000.0, "{kwh}");
    let temperature: f64 = value("meters/simulated/room/temperature")
        .parse()
        .expect("a plain number");
    assert!((15.0..25.0).contains(&temperature));
    assert!(messages
        .iter()
        .any(|m| m.topic == "meters/status" && m.payload == "online"));
    // Retained: a subscriber arriving later gets the status and the discovery configs at once.
    let late = Subscriber::connect(broker.port, "late", None, "#").await;
    wait("retained status", || {
        late.snapshot()
            .iter()
            .any(|m| m.topic == "meters/status" && m.payload == "online" && m.retain)
    })
    .await;
    let state: serde_json::Value = serde_json::from_str(&value("meters/simulated/room/state")).expect("json");
    assert!(
        state["timestamp"].as_str().is_some_and(|t| t.ends_with('Z')) && state["humidity"].is_number(),
        "{state}"
    );

    // Discovery, field by field.
    let config_topic = "homeassistant/sensor/mesura/electricity_energy_delivered_tariff1/config";
    let discovery: serde_json::Value = serde_json::from_str(&value(config_topic)).expect("discovery JSON");
    wait("retained discovery", || {
        late.snapshot().iter().any(|m| m.topic == config_topic && m.retain)
    })
    .await;
    assert_eq!(discovery["unique_id"], "mesura_electricity_energy_delivered_tariff1");
    assert_eq!(
        discovery["state_topic"],
        "meters/simulated/electricity/energy_delivered_tariff1"
    );
    assert_eq!(discovery["availability_topic"], "meters/status");
    assert_eq!(discovery["unit_of_measurement"], "kWh");
    assert_eq!(discovery["device_class"], "energy");
    // The raw counter leaves the statistics to its lifetime series (docs/counters.md).
    assert!(discovery.get("state_class").is_none(), "{discovery}");
    let lifetime: serde_json::Value = serde_json::from_str(&value(
        "homeassistant/sensor/mesura/electricity_energy_delivered_tariff1_lifetime/config",
    ))
    .expect("discovery JSON");
    assert_eq!(
        (lifetime["device_class"].as_str(), lifetime["state_class"].as_str()),
        (Some("energy"), Some("total_increasing"))
    );
    assert_eq!(
        lifetime["state_topic"],
        "meters/simulated/electricity/energy_delivered_tariff1_lifetime"
    );
    let lifetime_kwh: f64 = value("meters/simulated/electricity/energy_delivered_tariff1_lifetime")
        .parse()
        .expect("a plain number");
    assert_eq!(lifetime_kwh, kwh, "the first epoch has no offset");
    assert_eq!(discovery["device"]["identifiers"][0], "mesura_electricity");
    assert_eq!(discovery["device"]["model"], "simulated");
    assert_eq!(discovery["device"]["manufacturer"], "mesura");
    assert_eq!(discovery["device"]["sw_version"], env!("CARGO_PKG_VERSION"));
    let temp: serde_json::Value =
        serde_json::from_str(&value("homeassistant/sensor/mesura/room_temperature/config")).expect("json");
    assert_eq!(
        (temp["device_class"].as_str(), temp["state_class"].as_str()),
        (Some("temperature"), Some("measurement"))
    );
    assert_eq!(temp["unit_of_measurement"], "°C");

    // Home Assistant's birth message brings discovery again.
    let count = |sub: &Subscriber| sub.snapshot().iter().filter(|m| m.topic == config_topic).count();
    let before = count(&sub);
    sub.client
        .publish("homeassistant/status", rumqttc::QoS::AtLeastOnce, false, "online")
        .await
        .expect("birth");
    wait("discovery re-sent", || count(&sub) > before).await;

    // A removed device's entities are retracted with empty retained configs.
    std::fs::remove_file(setup.dir.path().join("config.d/room.yaml")).expect("rm");
    daemon.handle.request_reload();
    wait("room's discovery retracted", || {
        sub.snapshot()
            .iter()
            .any(|m| m.topic == "homeassistant/sensor/mesura/room_temperature/config" && m.payload.is_empty())
    })
    .await;

    let summary = daemon.stop().await;
    wait("offline on a clean stop", || {
        sub.snapshot()
            .iter()
            .any(|m| m.topic == "meters/status" && m.payload == "offline")
    })
    .await;
    let times = state_times(&sub.snapshot());
    assert_eq!(
        times["electricity"].len() as u64,
        summary.polls["electricity"],
        "every poll reached the broker"
    );
    assert_eq!(outbox_rows(setup.dir.path()), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_password_keeps_readings_in_the_outbox_until_fixed() {
    let setup = Setup::new("");
    let passwords = setup.dir.path().join("passwd");
    let status = Command::new("mosquitto_passwd")
        .arg("-c")
        .arg("-b")
        .arg(&passwords)
        .args(["mesura", "right"])
        .status();
    assert!(status.expect("mosquitto_passwd").success());
    let broker = Broker::start(
        setup.dir.path(),
        &format!("allow_anonymous false\npassword_file {}", passwords.display()),
        "",
    );
    let wrong = setup.dir.path().join("wrong.txt");
    let right = setup.dir.path().join("right.txt");
    std::fs::write(&wrong, "nope\n").expect("pw");
    std::fs::write(&right, "right\n").expect("pw");
    let with_password = |file: &Path| {
        base(
            broker.port,
            &format!("    username: mesura\n    password_file: {}\n", file.display()),
        )
    };
    std::fs::write(setup.config_path(), with_password(&wrong)).expect("config");
    setup.device("meter", &sim("electricity", "1s"));
    let sub = Subscriber::connect(broker.port, "observer", Some(("mesura", "right")), "meters/#").await;
    let daemon = run(&setup).await;
    wait("readings piling up in the outbox", || {
        outbox_rows(setup.dir.path()) >= 40
    })
    .await;
    assert!(
        sub.snapshot().iter().all(|m| !m.topic.ends_with("/power_delivered")),
        "nothing may get through"
    );

    std::fs::write(setup.config_path(), with_password(&right)).expect("config");
    daemon.handle.request_reload();
    wait("the backlog flowing", || outbox_rows(setup.dir.path()) < 10).await;
    let summary = daemon.stop().await;
    wait("the backlog delivered", || {
        state_times(&sub.snapshot()).get("meter").map_or(0, |t| t.len() as u64) == summary.polls["meter"]
    })
    .await;
    assert_eq!(outbox_rows(setup.dir.path()), 0);
}

/// A CA and a server certificate for 127.0.0.1, made fresh for the test.
fn make_certificates(dir: &Path, name: &str) {
    openssl(
        dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            &format!("/CN={name} CA"),
            "-keyout",
            &format!("{name}-ca.key"),
            "-out",
            &format!("{name}-ca.pem"),
        ],
    );
    key_and_request(
        dir,
        "/CN=127.0.0.1",
        &format!("{name}-server.key"),
        &format!("{name}-server.csr"),
    );
    std::fs::write(dir.join("san.ext"), "subjectAltName=IP:127.0.0.1,DNS:localhost\n").expect("ext");
    sign_certificate(
        dir,
        &format!("{name}-server.csr"),
        name,
        &format!("{name}-server.pem"),
        Some("san.ext"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verifies_the_broker() {
    let setup = Setup::new("");
    let dir = setup.dir.path();
    make_certificates(dir, "good");
    make_certificates(dir, "other");
    let listener = format!(
        "allow_anonymous true\ncafile {0}/good-ca.pem\ncertfile {0}/good-server.pem\nkeyfile {0}/good-server.key",
        dir.display()
    );
    let broker = Broker::start(dir, &listener, "");
    // A CA that did not sign the broker's certificate: nothing may be sent.
    std::fs::write(
        setup.config_path(),
        base(
            broker.port,
            &format!("    tls:\n      ca_file: {}/other-ca.pem\n", dir.display()),
        ),
    )
    .expect("config");
    setup.device("meter", &sim("gas", "1s"));
    let daemon = run(&setup).await;
    wait("readings waiting, unverified broker refused", || outbox_rows(dir) >= 10).await;
    // The right CA: delivered.
    std::fs::write(
        setup.config_path(),
        base(
            broker.port,
            &format!("    tls:\n      ca_file: {}/good-ca.pem\n", dir.display()),
        ),
    )
    .expect("config");
    daemon.handle.request_reload();
    wait("the backlog delivered over TLS", || outbox_rows(dir) == 0).await;
    let summary = daemon.stop().await;
    assert_eq!(summary.dropped["mqtt"], 0);
}

/// A client certificate for `cn`, signed by the CA `ca` of [`make_certificates`]:
/// X.509 v1 as mosquitto's instructions make them (`openssl x509 -req` without
/// extensions), or v3 with the client-auth usage.
fn make_client_certificate(dir: &Path, ca: &str, cn: &str, v3: bool) {
    let key = format!("{cn}-client.key");
    let csr = format!("{cn}-client.csr");
    key_and_request(dir, &format!("/CN={cn}"), &key, &csr);
    sign_certificate(dir, &csr, ca, &format!("{cn}-client.pem"), v3.then_some("client.ext"));
}

/// A broker that requires a client certificate (mutual TLS) refuses mesura without
/// one, and with one signed by a CA it does not trust; with the right one the
/// backlog is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_client_certificate_is_presented() {
    let setup = Setup::new("");
    let dir = setup.dir.path();
    make_certificates(dir, "good");
    make_certificates(dir, "other");
    make_client_certificate(dir, "good", "mesura", false);
    make_client_certificate(dir, "other", "stranger", false);
    let listener = format!(
        "allow_anonymous true\nrequire_certificate true\ncafile {0}/good-ca.pem\ncertfile {0}/good-server.pem\nkeyfile {0}/good-server.key",
        dir.display()
    );
    let broker = Broker::start(dir, &listener, "");
    let tls = |client: Option<&str>| {
        let mut t = format!("    tls:\n      ca_file: {}/good-ca.pem\n", dir.display());
        if let Some(cn) = client {
            t += &format!(
                "      client_cert: {0}/{cn}-client.pem\n      client_key: {0}/{cn}-client.key\n",
                dir.display()
            );
        }
        base(broker.port, &t)
    };
    std::fs::write(setup.config_path(), tls(None)).expect("config");
    setup.device("meter", &sim("gas", "1s"));
    let daemon = run(&setup).await;
    wait("readings waiting: no client certificate", || outbox_rows(dir) >= 10).await;
    std::fs::write(setup.config_path(), tls(Some("stranger"))).expect("config");
    daemon.handle.request_reload();
    let rows = outbox_rows(dir);
    wait("readings waiting: a certificate from another CA", || {
        outbox_rows(dir) >= rows + 10
    })
    .await;
    std::fs::write(setup.config_path(), tls(Some("mesura"))).expect("config");
    daemon.handle.request_reload();
    wait("the backlog delivered over mutual TLS", || outbox_rows(dir) == 0).await;
    let summary = daemon.stop().await;
    assert_eq!(summary.dropped["mqtt"], 0);
}

/// A client key that is not the certificate's: refused at start, naming both files.
/// (Checked where rustls can read the certificate, i.e. X.509 v3.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_key_of_another_certificate_is_refused() {
    let setup = Setup::new("");
    let dir = setup.dir.path();
    make_certificates(dir, "good");
    std::fs::write(dir.join("client.ext"), "extendedKeyUsage=clientAuth\n").expect("ext");
    make_client_certificate(dir, "good", "mesura", true);
    make_client_certificate(dir, "good", "other", true);
    let tls = format!(
        "    tls:\n      ca_file: {0}/good-ca.pem\n      client_cert: {0}/mesura-client.pem\n      client_key: {0}/other-client.key\n",
        dir.display()
    );
    std::fs::write(setup.config_path(), base(1883, &tls)).expect("config");
    let config = Config::load(&setup.config_path(), &no_env).expect("config");
    let Err(e) = Daemon::start(config, mesura::host::clock::system()).await else {
        panic!("a mismatched key must be refused");
    };
    let e = format!("{e:#}");
    assert!(
        e.contains("does not belong") && e.contains("mesura-client.pem") && e.contains("other-client.key"),
        "{e}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_outage_loses_nothing_and_sqlite_is_unaffected() {
    let setup = Setup::new("");
    let mut broker = Broker::start(setup.dir.path(), "allow_anonymous true", "");
    std::fs::write(setup.config_path(), base(broker.port, "")).expect("config");
    let profiles = ["electricity", "gas", "climate"];
    for i in 0..10 {
        setup.device(&format!("dev{i}"), &sim(profiles[i % 3], "1s"));
    }
    let sub = Subscriber::connect(broker.port, "counter", None, "meters/+/+/state").await;
    let daemon = run(&setup).await;
    wait("deliveries under way", || state_times(&sub.snapshot()).len() == 10).await;
    broker.stop();
    let rows_at_stop = outbox_rows(setup.dir.path());
    wait("readings held while the broker is down", || {
        outbox_rows(setup.dir.path()) >= rows_at_stop + 150
    })
    .await;
    let sqlite_during = sqlite_rows(&setup.db_path(), "dev0");
    wait("sqlite keeps writing during the outage", || {
        sqlite_rows(&setup.db_path(), "dev0") > sqlite_during
    })
    .await;
    broker.restart();
    wait("the backlog flowing again", || outbox_rows(setup.dir.path()) < 20).await;
    let summary = daemon.stop().await;
    wait("every reading of every device", || {
        let times = state_times(&sub.snapshot());
        (0..10)
            .all(|i| times.get(&format!("dev{i}")).map_or(0, |t| t.len() as u64) == summary.polls[&format!("dev{i}")])
    })
    .await;
    for i in 0..10 {
        let id = format!("dev{i}");
        assert_eq!(
            sqlite_rows(&setup.db_path(), &id) as u64,
            summary.polls[&id],
            "sqlite rows of {id}"
        );
    }
    let duplicates = sub.snapshot().iter().filter(|m| m.topic.ends_with("/state")).count()
        - state_times(&sub.snapshot()).values().map(BTreeSet::len).sum::<usize>();
    println!("at-least-once: {duplicates} duplicate state messages across the outage");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_restart_while_the_broker_is_down_loses_nothing() {
    let setup = Setup::new("");
    let mut broker = Broker::start(setup.dir.path(), "allow_anonymous true", "");
    std::fs::write(setup.config_path(), base(broker.port, "")).expect("config");
    setup
        .device("meter", &sim("electricity", "1s"))
        .device("room", &sim("climate", "1s"));
    // The subscriber's persistent session exists before the outage.
    let sub = Subscriber::connect(broker.port, "counter", None, "meters/+/+/state").await;
    broker.stop();

    let first = run(&setup).await;
    wait("a few polls", || first.polls("meter") >= 5 && first.polls("room") >= 5).await;
    let first = first.stop().await;
    assert!(
        outbox_rows(setup.dir.path()) > 0,
        "the first run's readings wait in the outbox"
    );

    let second = run(&setup).await;
    wait("a few more polls", || second.polls("meter") >= 3).await;
    broker.restart();
    wait("the backlog flowing", || outbox_rows(setup.dir.path()) < 10).await;
    let second = second.stop().await;
    wait("both runs' readings", || {
        let times = state_times(&sub.snapshot());
        ["meter", "room"]
            .iter()
            .all(|d| times.get(*d).map_or(0, |t| t.len() as u64) == first.polls[*d] + second.polls[*d])
    })
    .await;
    assert_eq!(outbox_rows(setup.dir.path()), 0);
}

/// The `<prefix>/status` payloads the subscriber got, in order.
fn statuses(sub: &Subscriber) -> Vec<String> {
    sub.snapshot()
        .into_iter()
        .filter(|m| m.topic == "meters/status")
        .map(|m| m.payload)
        .collect()
}

/// A broker whose CONNACK comes late (a remote or TLS broker): the connection that is
/// being made is waited for, not dropped and made again, so readings flow over one
/// connection and the broker never has a reason to publish the Last Will.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_answers_late_gets_every_reading_over_one_connection() {
    for delay in [Duration::from_millis(700), Duration::from_secs(2)] {
        let setup = Setup::new("");
        let broker = Broker::start(setup.dir.path(), "allow_anonymous true", "");
        let proxy = SlowConnAckProxy::start(broker.port, delay).await;
        std::fs::write(setup.config_path(), base(proxy.port, "")).expect("config");
        setup.device("meter", &sim("electricity", "1s"));
        let sub = Subscriber::connect(broker.port, "observer", None, "meters/#").await;
        let daemon = run(&setup).await;
        wait("readings through the slow broker", || {
            state_times(&sub.snapshot()).get("meter").map_or(0, BTreeSet::len) >= 3
        })
        .await;
        assert_eq!(statuses(&sub), ["online"], "CONNACK after {delay:?}: no Last Will");
        let summary = daemon.stop().await;
        wait("every reading", || {
            state_times(&sub.snapshot()).get("meter").map_or(0, |t| t.len() as u64) == summary.polls["meter"]
        })
        .await;
        wait("offline on the clean stop", || statuses(&sub).len() >= 2).await;
        assert_eq!(statuses(&sub), ["online", "offline"], "CONNACK after {delay:?}");
        assert_eq!(proxy.connections(), 1, "CONNACK after {delay:?}: connections made");
        assert_eq!(outbox_rows(setup.dir.path()), 0);
    }
}

/// Starts and stops in a row, as a restart loop or config edits do: each life
/// connects once, says `online` once and `offline` once on its clean stop; the Last
/// Will of a dropped half-made connection would put an `offline` in between.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_starts_never_flap_the_status() {
    const LIVES: usize = 20;
    let setup = Setup::new("");
    let broker = Broker::start(setup.dir.path(), "allow_anonymous true", "");
    std::fs::write(setup.config_path(), base(broker.port, "")).expect("config");
    setup.device("meter", &sim("electricity", "1s"));
    let sub = Subscriber::connect(broker.port, "observer", None, "meters/status").await;
    let count = |payload: &str| statuses(&sub).iter().filter(|s| *s == payload).count();
    for life in 1..=LIVES {
        let daemon = run(&setup).await;
        wait("online", || count("online") >= life).await;
        daemon.stop().await;
        wait("offline on the clean stop", || count("offline") >= life).await;
    }
    let expected: Vec<&str> = ["online", "offline"].repeat(LIVES);
    assert_eq!(statuses(&sub), expected);
}
