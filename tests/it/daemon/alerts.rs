//! Alerts end to end: a `type: mqtt` device whose values the test publishes on the
//! real Mosquitto, the daemon evaluating rules, and the alerts arriving at a
//! local webhook server (json, ntfy and Gotify bodies) and on the broker (state
//! topic and Home Assistant discovery). Times are measured from the test's own
//! actions; waits poll with a deadline.

use std::time::{Duration, Instant};

use rumqttc::QoS;
use serde_json::Value;

use crate::support::broker::{Broker, Subscriber};
use crate::support::http_server::{Canned, Request, Server};
use crate::support::modbus::{start, wait_for};
use crate::support::Setup;

fn bodies(server: &Server, path: &str) -> Vec<Value> {
    server
        .requests()
        .iter()
        .filter(|r| r.path() == path)
        .map(|r| serde_json::from_str(&r.body).unwrap_or(Value::Null))
        .collect()
}

fn states(subscriber: &Subscriber, topic: &str) -> Vec<String> {
    subscriber
        .snapshot()
        .iter()
        .filter(|m| m.topic == topic && !m.payload.is_empty())
        .filter_map(|m| serde_json::from_str::<Value>(&m.payload).ok())
        .filter_map(|v| v["state"].as_str().map(str::to_owned))
        .collect()
}

/// Retained: the device may subscribe after the test publishes.
async fn publish(client: &rumqttc::AsyncClient, topic: &str, value: &str) {
    client
        .publish(topic, QoS::AtLeastOnce, true, value.to_owned())
        .await
        .expect("publish");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_metric_alert_fires_after_its_duration_repeats_and_resolves_past_its_clear_value() {
    let setup = Setup::new("");
    let broker = Broker::start(setup.dir.path(), "allow_anonymous true", "");
    let hooks = Server::start(|_: &Request| Canned::json("{}")).await;
    std::fs::write(
        setup.config_path(),
        format!(
            "backends:\n  sqlite:\n    flush_interval: 100ms\n  mqtt:\n    host: 127.0.0.1\n    port: {port}\n    topic_prefix: meters\n    homeassistant:\n      enabled: true\n      node_id: testpi\n\
             watch:\n  enabled: false\n\
             alerts:\n  check_interval: 100ms\n  webhooks:\n    plain:\n      url: {url}/hook\n    phone:\n      url: {url}/mesura-alerts\n      format: ntfy\n    gotify:\n      url: {url}/message?token=apptoken\n      format: gotify\n\
             \x20 rules:\n    battery_hot:\n      device: bms\n      metric: temp\n      above: 50\n      clear: 45\n      for: 1s\n      repeat: 2s\n      priority: 4\n      message: \"{{device}} is at {{value}}\"\n",
            port = broker.port,
            url = hooks.url
        ),
    )
    .expect("config");
    setup.device(
        "bms",
        "type: mqtt\nsubscriptions:\n  - topic: bms/temp\n    values: [{metric: temp}]\n",
    );
    let watcher = Subscriber::connect(broker.port, "alert-watcher", None, "#").await;
    let publisher = Subscriber::connect(broker.port, "bms-sim", None, "nothing/here").await;
    let daemon = start(&setup).await;
    let handle = daemon.handle();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(daemon.run(shutdown.clone()));
    let latest = |value: f64| {
        let handle = handle.clone();
        move || {
            handle
                .status
                .devices()
                .get("bms")
                .and_then(|d| d.latest.get("temp").map(|l| l.value.as_f64()))
                == Some(Some(value))
        }
    };

    // The rule is announced to Home Assistant and starts `ok`.
    let state_topic = "meters/alerts/battery_hot";
    wait_for("the rule's first state", || {
        states(&watcher, state_topic).first().map(String::as_str) == Some("ok")
    })
    .await;
    let discovery = watcher
        .snapshot()
        .into_iter()
        .find(|m| m.topic == "homeassistant/binary_sensor/testpi/alert_battery_hot/config")
        .expect("discovery config");
    let discovery: Value = serde_json::from_str(&discovery.payload).expect("json");
    assert_eq!(discovery["state_topic"], state_topic);
    assert_eq!(discovery["device_class"], "problem");

    // A value below the threshold, then above it: fires only after `for`.
    publish(&publisher.client, "bms/temp", "40").await;
    wait_for("40 read", latest(40.0)).await;
    let breached = Instant::now();
    publish(&publisher.client, "bms/temp", "60").await;
    wait_for("the alert", || !bodies(&hooks, "/hook").is_empty()).await;
    let waited = breached.elapsed();
    assert!(
        waited >= Duration::from_secs(1),
        "fired after {waited:?}, before `for: 1s`"
    );
    let fired = &bodies(&hooks, "/hook")[0];
    assert_eq!(fired["state"], "firing");
    assert_eq!(fired["repeat"], false);
    assert_eq!(fired["value"], 60.0);
    assert_eq!(fired["message"], "bms is at 60");
    assert_eq!(fired["threshold"], 50.0);

    // ntfy: the message as the body, title and priority as headers, topic in the path.
    wait_for("ntfy", || hooks.count("/mesura-alerts") >= 1).await;
    let ntfy = hooks
        .requests()
        .into_iter()
        .find(|r| r.path() == "/mesura-alerts")
        .expect("ntfy");
    assert_eq!(ntfy.method, "POST");
    assert_eq!(ntfy.body, "bms is at 60");
    assert_eq!(ntfy.header("Priority"), Some("4"));
    assert_eq!(ntfy.header("Title"), Some("mesura: battery_hot firing"));
    // Gotify: its JSON, the token in the query as its API takes it.
    wait_for("gotify", || hooks.count("/message") >= 1).await;
    let gotify = hooks
        .requests()
        .into_iter()
        .find(|r| r.path() == "/message")
        .expect("gotify");
    assert!(gotify.target.ends_with("?token=apptoken"), "{}", gotify.target);
    let body: Value = serde_json::from_str(&gotify.body).expect("gotify json");
    assert_eq!(
        (body["title"].as_str(), body["priority"].as_u64()),
        (Some("mesura: battery_hot firing"), Some(8))
    );
    wait_for("firing on MQTT", || {
        states(&watcher, state_topic).last().map(String::as_str) == Some("firing")
    })
    .await;

    // Still above: repeated every 2 s.
    wait_for("a repeat", || {
        bodies(&hooks, "/hook").iter().any(|b| b["repeat"] == true)
    })
    .await;
    let repeat_gap = breached.elapsed();
    assert!(repeat_gap >= Duration::from_secs(3), "repeated after {repeat_gap:?}");

    // Hysteresis: 47 is below `above` but not below `clear`: still firing.
    publish(&publisher.client, "bms/temp", "47").await;
    wait_for("47 read", latest(47.0)).await;
    publish(&publisher.client, "bms/temp", "44").await;
    wait_for("the resolve", || {
        bodies(&hooks, "/hook").iter().any(|b| b["state"] == "resolved")
    })
    .await;
    let resolved = bodies(&hooks, "/hook")
        .into_iter()
        .find(|b| b["state"] == "resolved")
        .expect("resolved");
    assert_eq!(
        resolved["value"], 44.0,
        "resolved at the clear value, not at 47: {resolved}"
    );
    assert!(
        resolved["message"].as_str().is_some_and(|m| m.contains("back at 44")),
        "{resolved}"
    );
    wait_for("ok on MQTT", || {
        states(&watcher, state_topic).last().map(String::as_str) == Some("ok")
    })
    .await;
    let firings = bodies(&hooks, "/hook")
        .iter()
        .filter(|b| b["state"] == "firing" && b["repeat"] == false)
        .count();
    assert_eq!(firings, 1, "one firing, no flapping");

    shutdown.cancel();
    run.await.expect("run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_device_and_a_failing_backend_alert_and_a_rule_file_applies_live() {
    let errors = crate::support::logs::warnings();
    let setup = Setup::new("");
    let broker = Broker::start(setup.dir.path(), "allow_anonymous true", "");
    let hooks = Server::start(|_: &Request| Canned::json("{}")).await;
    // Nothing listens there: the uplink fails from its first delivery.
    let dead = format!("http://127.0.0.1:{}/ingest", crate::support::broker::free_port());
    std::fs::write(
        setup.config_path(),
        format!(
            "backends:\n  sqlite:\n    flush_interval: 100ms\n  mqtt:\n    host: 127.0.0.1\n    port: {port}\n  uplink:\n    url: {dead}\n    batch_interval: 100ms\n\
             watch:\n  debounce: 100ms\n\
             alerts:\n  check_interval: 100ms\n  webhooks:\n    plain:\n      url: {url}/hook\n\
             \x20 rules:\n    uplink_down:\n      backend: uplink\n      failing: 1s\n",
            port = broker.port,
            url = hooks.url
        ),
    )
    .expect("config");
    setup.device(
        "meter",
        "type: mqtt\nsubscriptions:\n  - topic: meter/power\n    values: [{metric: power}]\n",
    );
    let publisher = Subscriber::connect(broker.port, "meter-sim", None, "nothing/here").await;
    let daemon = start(&setup).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(daemon.run(shutdown.clone()));
    let by_rule = |rule: &str, state: &str| {
        bodies(&hooks, "/hook")
            .into_iter()
            .filter(|b| b["rule"] == rule && b["state"] == state)
            .count()
    };

    // A reading for the uplink to fail on.
    publish(&publisher.client, "meter/power", "230").await;
    wait_for("the failing uplink", || by_rule("uplink_down", "firing") == 1).await;
    let failing = bodies(&hooks, "/hook")
        .into_iter()
        .find(|b| b["rule"] == "uplink_down")
        .expect("event");
    assert_eq!(failing["backend"], "uplink");
    assert!(failing["value"].as_f64().is_some_and(|s| s >= 1.0), "{failing}");

    // A rule file dropped into config.d/alerts/ applies without a restart; a
    // broken one beside it does not stop it.
    let alerts = setup.dir.path().join("config.d/alerts");
    std::fs::create_dir_all(&alerts).expect("alerts dir");
    std::fs::write(alerts.join("broken.yaml"), "device: meter\nsilnt: 1s\n").expect("broken rule");
    let added = Instant::now();
    std::fs::write(alerts.join("meter_silent.yaml"), "device: meter\nsilent: 1s\n").expect("rule file");
    wait_for("the silent device", || by_rule("meter_silent", "firing") == 1).await;
    assert!(added.elapsed() >= Duration::from_secs(1));
    let silent = bodies(&hooks, "/hook")
        .into_iter()
        .find(|b| b["rule"] == "meter_silent")
        .expect("event");
    assert!(
        silent["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("meter has sent no reading for")),
        "{silent}"
    );
    wait_for("the broken rule file logged", || {
        crate::support::logs::text(&errors)
            .lines()
            .any(|l| l.contains("broken.yaml:line 2") && l.contains("`silnt`") && l.contains("not evaluated"))
    })
    .await;
    // It sends again: resolved.
    publish(&publisher.client, "meter/power", "231").await;
    wait_for("the device back", || by_rule("meter_silent", "resolved") == 1).await;

    shutdown.cancel();
    run.await.expect("run");
}

/// A webhook that hangs and then fails is retried with backoff and logged, with
/// its token masked; meanwhile the device's readings are stored as ever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_webhook_is_retried_without_holding_up_readings() {
    let warnings = crate::support::logs::warnings();
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = answered.clone();
    let hooks = Server::start(move |_: &Request| {
        match count.fetch_add(1, std::sync::atomic::Ordering::SeqCst) {
            // The first answer takes its time, then fails; so does the second.
            0 => Canned::status(500, "busy").delayed(Duration::from_secs(3)),
            1 => Canned::status(503, "still busy"),
            _ => Canned::json("{}"),
        }
    })
    .await;
    let setup = Setup::new(&format!(
        "backends:\n  sqlite:\n    flush_interval: 100ms\nwatch:\n  enabled: false\n\
         alerts:\n  check_interval: 100ms\n  webhooks:\n    flaky_gotify_hook:\n      url: {}/message?token=s3cret-app-token\n      format: gotify\n      max_backoff: 1s\n\
         \x20 rules:\n    meter_drawing:\n      device: meter\n      metric: power_delivered\n      above: -1\n",
        hooks.url
    ));
    setup.device("meter", "type: simulated\nprofile: electricity\npoll_interval: 1s\n");
    let daemon = start(&setup).await;
    let handle = daemon.handle();
    let shutdown = tokio_util::sync::CancellationToken::new();
    let run = tokio::spawn(daemon.run(shutdown.clone()));
    let readings = || handle.status.devices().get("meter").map_or(0, |d| d.polls_ok);

    wait_for("the first POST", || hooks.requests().len() == 1).await;
    let at_first = readings();
    // While the webhook keeps its answer, the device is read and stored.
    wait_for("readings while the webhook hangs", || readings() >= at_first + 2).await;
    assert_eq!(hooks.requests().len(), 1, "still the first attempt");
    wait_for("the third attempt", || hooks.requests().len() == 3).await;
    let requests = hooks.requests();
    assert!(
        requests.iter().all(|r| r.body == requests[0].body),
        "the same message each time"
    );
    let body: Value = serde_json::from_str(&requests[0].body).expect("json");
    assert_eq!(body["title"], "mesura: meter_drawing firing");
    wait_for("the retries logged", || {
        crate::support::logs::text(&warnings)
            .lines()
            .filter(|l| l.contains("flaky_gotify_hook") && l.contains("retrying"))
            .count()
            == 2
    })
    .await;
    let logged = crate::support::logs::text(&warnings);
    assert!(!logged.contains("s3cret-app-token"), "the token is never logged");
    assert!(
        logged
            .lines()
            .any(|l| l.contains("flaky_gotify_hook") && l.contains("HTTP 503") && l.contains("token=***")),
        "{logged}"
    );
    assert_eq!(hooks.requests().len(), 3, "delivered: no fourth attempt");

    shutdown.cancel();
    run.await.expect("run");
}
