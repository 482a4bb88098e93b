//! Home Assistant MQTT discovery: topics and payloads, as pure functions.
//!
//! One `sensor` entity per device metric, under
//! `<discovery_prefix>/sensor/<node_id>/<device>_<metric>/config`, with the
//! device_class / state_class / unit combination the Energy dashboard accepts:
//! counters are `total_increasing`, levels `measurement`, and the `energy` class
//! never gets `measurement` (Home Assistant rejects that pairing).

use serde_json::{json, Value as Json};

use crate::reading::Kind;

/// What an entity is announced from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entity {
    pub device: String,
    pub device_type: String,
    pub metric: String,
    pub unit: String,
    pub kind: Kind,
    /// Whether the metric carries text rather than numbers (no unit, no class).
    pub text: bool,
    /// A counter whose `<metric>_lifetime` series is published beside it
    /// (docs/counters.md): the lifetime one is the `total_increasing` entity, this
    /// raw one gets no state class, so Home Assistant's statistics never see the
    /// raw counter's drop at a meter swap.
    pub lifetime_beside: bool,
}

/// Topic-safe and entity-id-safe: lower-case ASCII letters, digits, `_`.
pub fn slug(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            out.push(c.to_ascii_lowercase());
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_owned()
}

/// MQTT topic levels may hold anything but the wildcards and the separator.
pub fn topic_level(text: &str) -> String {
    text.replace(['/', '+', '#'], "_")
}

pub fn state_topic(prefix: &str, device_type: &str, device: &str, metric: &str) -> String {
    format!(
        "{prefix}/{}/{}/{}",
        topic_level(device_type),
        topic_level(device),
        topic_level(metric)
    )
}

pub fn config_topic(discovery_prefix: &str, node_id: &str, device: &str, metric: &str) -> String {
    format!(
        "{discovery_prefix}/sensor/{}/{}_{}/config",
        slug(node_id),
        slug(device),
        slug(metric)
    )
}

/// Home Assistant's device class for a metric, from its unit (and name where the
/// unit is ambiguous: m³ is gas or water).
pub fn device_class(metric: &str, unit: &str) -> Option<&'static str> {
    Some(match unit {
        "W" => "power",
        "kWh" | "GJ" => "energy",
        "m³" if metric.starts_with("water") => "water",
        "m³" => "gas",
        "V" => "voltage",
        "A" => "current",
        "Hz" => "frequency",
        "var" => "reactive_power",
        "VA" => "apparent_power",
        "°C" => "temperature",
        "%" if metric.contains("humidity") => "humidity",
        "%" if metric.contains("battery") => "battery",
        "hPa" => "atmospheric_pressure",
        "m/s" => "wind_speed",
        "mm" => "precipitation",
        "B" => "data_size",
        "s" | "h" => "duration",
        "m" => "distance",
        "l/h" => "volume_flow_rate",
        _ => return None,
    })
}

pub fn state_class(kind: Kind, device_class: Option<&str>) -> Option<&'static str> {
    match (kind, device_class) {
        (Kind::Counter, _) => Some("total_increasing"),
        (Kind::Gauge, Some("energy")) => None,
        (Kind::Gauge, _) => Some("measurement"),
    }
}

/// Where an alert rule's state is published: `<prefix>/alerts/<rule>`.
pub fn alert_state_topic(prefix: &str, rule: &str) -> String {
    format!("{prefix}/alerts/{}", topic_level(rule))
}

/// The discovery topic of an alert rule's `binary_sensor`.
pub fn alert_config_topic(discovery_prefix: &str, node_id: &str, rule: &str) -> String {
    format!(
        "{discovery_prefix}/binary_sensor/{}/alert_{}/config",
        slug(node_id),
        slug(rule)
    )
}

/// The retained config message announcing an alert rule as a `problem`
/// `binary_sensor`: on while the rule fires, its message as an attribute.
pub fn alert_config_payload(rule: &str, prefix: &str, node_id: &str, sw_version: &str) -> Json {
    let object_id = format!("alert_{}", slug(rule));
    json!({
        "name": format!("alert {}", rule.replace('_', " ")),
        "unique_id": format!("{}_{object_id}", slug(node_id)),
        "object_id": object_id,
        "device_class": "problem",
        "state_topic": alert_state_topic(prefix, rule),
        "value_template": "{{ value_json.state }}",
        "payload_on": "firing",
        "payload_off": "ok",
        "json_attributes_topic": alert_state_topic(prefix, rule),
        "device": {
            "identifiers": [format!("{}_alerts", slug(node_id))],
            "name": "mesura alerts",
            "manufacturer": "mesura",
            "sw_version": sw_version,
        },
    })
}

/// The retained config message announcing `entity`.
pub fn config_payload(
    entity: &Entity,
    prefix: &str,
    node_id: &str,
    availability_topic: &str,
    sw_version: &str,
) -> Json {
    let object_id = format!("{}_{}", slug(&entity.device), slug(&entity.metric));
    let mut payload = json!({
        "name": entity.metric.replace('_', " "),
        "unique_id": format!("{}_{object_id}", slug(node_id)),
        "object_id": object_id,
        "state_topic": state_topic(prefix, &entity.device_type, &entity.device, &entity.metric),
        "availability_topic": availability_topic,
        "device": {
            "identifiers": [format!("{}_{}", slug(node_id), slug(&entity.device))],
            "name": entity.device,
            "model": entity.device_type,
            "manufacturer": "mesura",
            "sw_version": sw_version,
        },
    });
    if !entity.text {
        let class = device_class(&entity.metric, &entity.unit);
        if let Some(map) = payload.as_object_mut() {
            if !entity.unit.is_empty() {
                map.insert("unit_of_measurement".into(), json!(entity.unit));
            }
            if let Some(class) = class {
                map.insert("device_class".into(), json!(class));
            }
            if let Some(state) = state_class(entity.kind, class).filter(|_| !entity.lifetime_beside) {
                map.insert("state_class".into(), json!(state));
            }
        }
    }
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entity(metric: &str, unit: &str, kind: Kind) -> Entity {
        Entity {
            device: "Meter East, 2".into(),
            device_type: "dsmr".into(),
            metric: metric.into(),
            unit: unit.into(),
            kind,
            text: false,
            lifetime_beside: false,
        }
    }

    #[test]
    fn beside_its_lifetime_series_a_raw_counter_leaves_the_statistics_to_it() {
        let mut raw = entity("energy_delivered_tariff1", "kWh", Kind::Counter);
        raw.lifetime_beside = true;
        let raw = config_payload(&raw, "m", "n", "m/status", "1");
        assert_eq!(raw["device_class"], "energy");
        assert!(raw.get("state_class").is_none(), "{raw}");
        let lifetime = config_payload(
            &entity("energy_delivered_tariff1_lifetime", "kWh", Kind::Counter),
            "m",
            "n",
            "m/status",
            "1",
        );
        assert_eq!(
            (lifetime["device_class"].as_str(), lifetime["state_class"].as_str()),
            (Some("energy"), Some("total_increasing"))
        );
        assert_eq!(lifetime["name"], "energy delivered tariff1 lifetime");
    }

    #[test]
    fn energy_counter_is_ready_for_the_energy_dashboard() {
        let p = config_payload(
            &entity("energy_delivered_tariff1", "kWh", Kind::Counter),
            "meters",
            "mesura",
            "meters/status",
            "0.1.0",
        );
        assert_eq!(p["device_class"], "energy");
        assert_eq!(p["state_class"], "total_increasing");
        assert_eq!(p["unit_of_measurement"], "kWh");
        assert_eq!(p["unique_id"], "mesura_meter_east_2_energy_delivered_tariff1");
        assert_eq!(p["state_topic"], "meters/dsmr/Meter East, 2/energy_delivered_tariff1");
        assert_eq!(p["availability_topic"], "meters/status");
        assert_eq!(p["device"]["identifiers"][0], "mesura_meter_east_2");
        assert_eq!(p["device"]["model"], "dsmr");
    }

    #[test]
    fn classes_follow_units_and_kinds() {
        assert_eq!(
            state_class(Kind::Gauge, Some("energy")),
            None,
            "no measurement on energy"
        );
        let gas = config_payload(&entity("gas_delivered", "m³", Kind::Counter), "m", "n", "m/status", "1");
        assert_eq!(
            (gas["device_class"].as_str(), gas["state_class"].as_str()),
            (Some("gas"), Some("total_increasing"))
        );
        let water = config_payload(
            &entity("water_delivered", "m³", Kind::Counter),
            "m",
            "n",
            "m/status",
            "1",
        );
        assert_eq!(water["device_class"], "water");
        let power = config_payload(&entity("power_delivered", "W", Kind::Gauge), "m", "n", "m/status", "1");
        assert_eq!(
            (power["device_class"].as_str(), power["state_class"].as_str()),
            (Some("power"), Some("measurement"))
        );
        let tariff = config_payload(&entity("tariff", "", Kind::Gauge), "m", "n", "m/status", "1");
        assert!(tariff.get("unit_of_measurement").is_none() && tariff.get("device_class").is_none());
        let mut mode = entity("living_room_mode", "", Kind::Gauge);
        mode.text = true;
        assert!(config_payload(&mode, "m", "n", "m/status", "1")
            .get("state_class")
            .is_none());
    }

    #[test]
    fn an_alert_is_a_problem_binary_sensor_on_its_state_topic() {
        let payload = alert_config_payload("grid_high", "meters", "Home Pi", "1.0");
        assert_eq!(payload["state_topic"], "meters/alerts/grid_high");
        assert_eq!(payload["device_class"], "problem");
        assert_eq!(payload["unique_id"], "home_pi_alert_grid_high");
        assert_eq!(
            alert_config_topic("homeassistant", "Home Pi", "grid-high"),
            "homeassistant/binary_sensor/home_pi/alert_grid_high/config"
        );
    }

    #[test]
    fn topics_are_safe() {
        assert_eq!(
            config_topic("homeassistant", "mesura", "Bano Princ.", "temp"),
            "homeassistant/sensor/mesura/bano_princ_temp/config"
        );
        assert_eq!(state_topic("meters", "dsmr", "a+b#c", "m"), "meters/dsmr/a_b_c/m");
    }
}
