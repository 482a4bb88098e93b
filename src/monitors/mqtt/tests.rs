use std::sync::Arc;

use chrono::{DateTime, TimeDelta, Utc};

use super::*;
use crate::backends::mqtt::MqttConfig;

fn config(yaml: &str) -> MqttDeviceConfig {
    serde_yaml_ng::from_str(yaml).unwrap()
}

fn decoder(yaml: &str) -> Decoder {
    Decoder::new(&config(yaml), Arc::from("dev")).unwrap().0
}

fn values(readings: &[Reading]) -> Vec<(String, f64, &'static str)> {
    readings
        .iter()
        .map(|r| (r.metric.to_string(), r.value.as_f64().unwrap(), r.unit.symbol()))
        .collect()
}

#[test]
fn a_tasmota_plug_gives_its_energy_in_kwh_at_its_own_time() {
    let mut d = decoder("preset: tasmota\nname: plug1\n");
    let arrival = Utc::now();
    // Tasmota sends its local time without an offset.
    let sent = (arrival - TimeDelta::seconds(20)).with_timezone(&chrono::Local);
    let payload = format!(
        r#"{{"Time":"{}","ENERGY":{{"TotalStartTime":"2025-05-01T10:00:00","Total":12.345,"Yesterday":1.1,"Today":0.4,"Period":0,"Power":230,"ApparentPower":240,"ReactivePower":60,"Factor":0.96,"Voltage":231,"Current":1.04}}}}"#,
        sent.format("%Y-%m-%dT%H:%M:%S")
    );
    let r = d.decode("tele/plug1/SENSOR", payload.as_bytes(), arrival).unwrap();
    assert_eq!(
        values(&r),
        [
            ("energy_delivered".into(), 12.345, "kWh"),
            ("power".into(), 230.0, "W"),
            ("voltage".into(), 231.0, "V"),
            ("current".into(), 1.04, "A"),
            ("power_factor".into(), 0.96, ""),
        ]
    );
    assert_eq!(r[0].kind, Kind::Counter);
    assert_eq!(r[0].timestamp.timestamp(), sent.timestamp());
    // Another plug's topic is not this device's.
    assert!(d
        .decode("tele/plug2/SENSOR", payload.as_bytes(), arrival)
        .unwrap()
        .is_empty());
}

#[test]
fn a_shelly_counts_watt_hours_and_zigbee2mqtt_sends_what_changed() {
    let mut shelly = decoder("preset: shelly_gen2\nname: shellyplus1pm-abc\n");
    let payload = br#"{"id":0,"source":"HTTP","output":true,"apower":41.2,"voltage":229.8,"current":0.203,"aenergy":{"total":5321.456,"by_minute":[0,0,0],"minute_ts":1767351840},"temperature":{"tC":45.1,"tF":113.2}}"#;
    let r = shelly
        .decode("shellyplus1pm-abc/status/switch:0", payload, Utc::now())
        .unwrap();
    let energy = r.iter().find(|r| &*r.metric == "energy_delivered").unwrap();
    assert!((energy.value.as_f64().unwrap() - 5.321_456).abs() < 1e-9);
    assert_eq!(r.len(), 5);
    let mut z2m = decoder("preset: zigbee2mqtt\nname: bedroom\n");
    let r = z2m
        .decode(
            "zigbee2mqtt/bedroom",
            br#"{"humidity":55.2,"linkquality":120}"#,
            Utc::now(),
        )
        .unwrap();
    assert_eq!(
        values(&r),
        [("humidity".into(), 55.2, "%"), ("link_quality".into(), 120.0, "")]
    );
}

#[test]
fn wildcards_name_metrics_and_plain_payloads_are_numbers() {
    let mut d = decoder(
        "subscriptions:\n  - topic: bms/+/voltage\n    values: [{metric: \"cell_{1}_voltage\", unit: V}]\n  - topic: boiler/state\n    values: [{metric: burner, unit: \"\"}]\n",
    );
    let r = d.decode("bms/3/voltage", b"3.312", Utc::now()).unwrap();
    assert_eq!(values(&r), [("cell_3_voltage".into(), 3.312, "V")]);
    let r = d.decode("boiler/state", b"ON", Utc::now()).unwrap();
    assert_eq!(values(&r), [("burner".into(), 1.0, "")]);
}

#[test]
fn a_malformed_payload_is_an_error_never_a_reading() {
    let mut d = decoder("preset: bms\nname: bms/main\n");
    let e = d.decode("bms/main", b"{\"voltage\": 52.", Utc::now()).unwrap_err();
    assert!(e.contains("not JSON"), "{e}");
    let e = d
        .decode("bms/main", br#"{"voltage": {"v": 52.1}}"#, Utc::now())
        .unwrap_err();
    assert!(e.contains("not a number"), "{e}");
    let mut plain = decoder("subscriptions:\n  - topic: t\n    values: [{metric: x}]\n");
    assert!(plain.decode("t", b"n/a", Utc::now()).is_err());
}

#[test]
fn a_time_far_from_the_host_clock_gives_the_arrival_time_and_is_counted() {
    let mut d = decoder("subscriptions:\n  - topic: t\n    timestamp: $.ts\n    values: [{metric: x, path: $.x}]\n");
    let arrival = Utc::now();
    let old = arrival - TimeDelta::days(400);
    let payload = format!(r#"{{"ts": {}, "x": 1}}"#, old.timestamp());
    let r = d.decode("t", payload.as_bytes(), arrival).unwrap();
    assert_eq!(r[0].timestamp, arrival);
    assert_eq!(d.clock.counts()[1].1, 1, "{:?}", d.clock.counts());
    let recent: DateTime<Utc> = arrival - TimeDelta::seconds(5);
    let payload = format!(r#"{{"ts": "{}", "x": 1}}"#, recent.to_rfc3339());
    let r = d.decode("t", payload.as_bytes(), arrival).unwrap();
    assert_eq!(r[0].timestamp.timestamp(), recent.timestamp());
}

#[test]
fn the_config_is_checked_before_anything_connects() {
    let common: CommonConfig = serde_yaml_ng::from_str("type: mqtt\n").unwrap();
    let err = |yaml: &str| config(yaml).validate(&common).unwrap_err();
    assert_eq!(err("preset: tasmota\n").0, "preset");
    assert_eq!(err("{}").0, "subscriptions");
    assert_eq!(
        err("subscriptions: [{topic: \"a/b#\", values: [{metric: x}]}]").0,
        "subscriptions"
    );
    assert_eq!(
        err("subscriptions: [{topic: \"#/a\", values: [{metric: x}]}]").0,
        "subscriptions"
    );
    assert_eq!(
        err("subscriptions: [{topic: a, values: [{metric: x, unit: furlongs}]}]").0,
        "unit"
    );
    assert_eq!(
        err("subscriptions: [{topic: a, values: [{metric: x, path: \"$.a[\"}]}]").0,
        "path"
    );
    assert!(config("preset: zigbee2mqtt\nname: x\n").validate(&common).is_ok());
}

#[test]
fn a_subscription_that_would_read_mesuras_own_topics_is_refused() {
    let backend: MqttConfig = serde_yaml_ng::from_str("host: localhost\ntopic_prefix: meters\n").unwrap();
    let mut looped = config("subscriptions: [{topic: \"meters/+/power\", values: [{metric: x}]}]");
    let (key, message) = looped.inherit(Some(&backend)).unwrap_err();
    assert_eq!(key, "subscriptions");
    assert!(message.contains("loop"), "{message}");
    let mut everything = config("subscriptions: [{topic: \"#\", values: [{metric: x}]}]");
    assert!(everything.inherit(Some(&backend)).is_err());
    let mut fine = config("preset: tasmota\nname: plug\n");
    assert!(fine.inherit(Some(&backend)).is_ok());
    assert_eq!(fine.backend.as_deref().map(|b| b.host.as_str()), Some("localhost"));
    // No backend and no host of its own: nowhere to connect.
    let (key, _) = config("preset: tasmota\nname: plug\n").inherit(None).unwrap_err();
    assert_eq!(key, "host");
}
