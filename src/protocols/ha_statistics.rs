//! Home Assistant's websocket messages for long-term statistics, as pure functions:
//! the authentication, `recorder/statistics_during_period` (what HA has),
//! `recorder/import_statistics` (hours with their true times) and
//! `config/entity_registry/list` (which entity id HA gave a unique id).

use std::collections::BTreeMap;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::{json, Value as Json};

/// One hour of a counter's statistics: `start` is the hour's first second (unix
/// seconds), `state` the counter at the end of the hour, `sum` the total increase
/// since the statistic's zero point.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HourStat {
    pub start: i64,
    pub state: f64,
    pub sum: f64,
}

/// What the server says in one message.
#[derive(Debug, Clone, PartialEq)]
pub enum Incoming {
    AuthRequired,
    AuthOk,
    AuthInvalid(String),
    /// The answer to command `id`: its result, or the error's message.
    Result {
        id: u64,
        outcome: Result<Json, String>,
    },
    /// Events and anything else this client does not ask for.
    Other,
}

pub fn auth(token: &str) -> String {
    json!({"type": "auth", "access_token": token}).to_string()
}

pub fn parse(text: &str) -> Result<Incoming, serde_json::Error> {
    let message: Json = serde_json::from_str(text)?;
    Ok(match message["type"].as_str() {
        Some("auth_required") => Incoming::AuthRequired,
        Some("auth_ok") => Incoming::AuthOk,
        Some("auth_invalid") => Incoming::AuthInvalid(message["message"].as_str().unwrap_or_default().to_owned()),
        Some("result") => {
            let id = message["id"].as_u64().unwrap_or(0);
            let outcome = if message["success"].as_bool() == Some(true) {
                Ok(message["result"].clone())
            } else {
                let error = &message["error"];
                Err(format!(
                    "{}: {}",
                    error["code"].as_str().unwrap_or("error"),
                    error["message"].as_str().unwrap_or_default()
                ))
            };
            Incoming::Result { id, outcome }
        }
        _ => Incoming::Other,
    })
}

fn iso(unix: i64) -> String {
    Utc.timestamp_opt(unix, 0)
        .single()
        .unwrap_or(DateTime::<Utc>::UNIX_EPOCH)
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, false)
}

/// Hourly `state` and `sum` of `ids` for the hours starting in `[start, end)`.
pub fn statistics_during_period(id: u64, start: i64, end: i64, ids: &[String]) -> String {
    statistics_of_period(id, start, end, ids, "hour")
}

/// `state` and `sum` of `ids` per `period` (`5minute`: the short-term statistics
/// Home Assistant compiles its hours from and continues its sums with).
pub fn statistics_of_period(id: u64, start: i64, end: i64, ids: &[String], period: &str) -> String {
    json!({
        "id": id,
        "type": "recorder/statistics_during_period",
        "start_time": iso(start),
        "end_time": iso(end),
        "statistic_ids": ids,
        "period": period,
        "types": ["state", "sum"],
    })
    .to_string()
}

/// The recorded states of `entity_ids` since `start`, without attributes.
pub fn history_during_period(id: u64, start: i64, entity_ids: &[String]) -> String {
    json!({
        "id": id,
        "type": "history/history_during_period",
        "start_time": iso(start),
        "entity_ids": entity_ids,
        "minimal_response": true,
        "no_attributes": true,
        "significant_changes_only": false,
    })
    .to_string()
}

/// Per entity, its first numeric state in a `history_during_period` result (the
/// websocket's compressed form, `{"s": "12.5", "lu": …}`, or the REST form
/// `{"state": …}`): where Home Assistant's own statistics of a new entity start
/// their sum at zero.
pub fn first_numeric_states(result: &Json) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let Some(map) = result.as_object() else {
        return out;
    };
    for (entity, states) in map {
        let first = states.as_array().and_then(|states| {
            states.iter().find_map(|s| {
                s.get("s")
                    .or_else(|| s.get("state"))
                    .and_then(Json::as_str)
                    .and_then(|v| v.parse::<f64>().ok())
                    .filter(|v| v.is_finite())
            })
        });
        if let Some(first) = first {
            out.insert(entity.clone(), first);
        }
    }
    out
}

/// Imports `stats` for the entity's statistic (the recorder's own, `sensor.…`).
pub fn import_statistics(id: u64, statistic_id: &str, unit: &str, stats: &[HourStat]) -> String {
    let rows: Vec<Json> = stats
        .iter()
        .map(|s| json!({"start": iso(s.start), "state": s.state, "sum": s.sum}))
        .collect();
    json!({
        "id": id,
        "type": "recorder/import_statistics",
        "metadata": {
            "has_mean": false,
            "has_sum": true,
            "name": null,
            "source": "recorder",
            "statistic_id": statistic_id,
            "unit_of_measurement": unit,
        },
        "stats": rows,
    })
    .to_string()
}

pub fn entity_registry_list(id: u64) -> String {
    json!({"id": id, "type": "config/entity_registry/list"}).to_string()
}

/// A `statistics_during_period` result: per statistic id, its hours. `start` comes
/// as milliseconds since the epoch (Home Assistant 2022.12 and later) or as an ISO
/// time (before).
pub fn statistics_of(result: &Json) -> BTreeMap<String, Vec<HourStat>> {
    let mut out = BTreeMap::new();
    let Some(map) = result.as_object() else {
        return out;
    };
    for (id, rows) in map {
        let hours = rows
            .as_array()
            .map(|rows| {
                rows.iter()
                    .filter_map(|row| {
                        let start = match &row["start"] {
                            Json::Number(n) => n.as_f64().map(|ms| (ms / 1000.0).round() as i64),
                            Json::String(s) => DateTime::parse_from_rfc3339(s).ok().map(|t| t.timestamp()),
                            _ => None,
                        }?;
                        Some(HourStat {
                            start,
                            state: row["state"].as_f64().unwrap_or(f64::NAN),
                            sum: row["sum"].as_f64().unwrap_or(f64::NAN),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        out.insert(id.clone(), hours);
    }
    out
}

/// An entity registry list: unique id → entity id, for one integration (`mqtt`).
pub fn entity_ids(result: &Json, platform: &str) -> BTreeMap<String, String> {
    result
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|e| e["platform"].as_str() == Some(platform))
                .filter_map(|e| Some((e["unique_id"].as_str()?.to_owned(), e["entity_id"].as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_have_the_shape_home_assistant_validates() {
        let import: Json = serde_json::from_str(&import_statistics(
            7,
            "sensor.meter_energy_lifetime",
            "kWh",
            &[HourStat {
                start: 1_700_000_000 - 1_700_000_000 % 3600,
                state: 12.5,
                sum: 2.25,
            }],
        ))
        .expect("json");
        assert_eq!(import["type"], "recorder/import_statistics");
        assert_eq!(import["metadata"]["source"], "recorder");
        assert_eq!(import["metadata"]["unit_of_measurement"], "kWh");
        assert!(import["metadata"]["name"].is_null());
        assert_eq!(import["stats"][0]["start"], "2023-11-14T22:00:00+00:00");
        assert_eq!(
            (import["stats"][0]["state"].as_f64(), import["stats"][0]["sum"].as_f64()),
            (Some(12.5), Some(2.25))
        );
        let query: Json =
            serde_json::from_str(&statistics_during_period(8, 0, 7200, &["sensor.a".into()])).expect("json");
        assert_eq!(query["end_time"], "1970-01-01T02:00:00+00:00");
        assert_eq!(query["period"], "hour");
        assert_eq!(auth("t0k"), r#"{"access_token":"t0k","type":"auth"}"#);
    }

    #[test]
    fn answers_are_read() {
        assert_eq!(
            parse(r#"{"type":"auth_required","ha_version":"2024.3.3"}"#).ok(),
            Some(Incoming::AuthRequired)
        );
        assert_eq!(
            parse(r#"{"type":"auth_invalid","message":"Invalid access token or password"}"#).ok(),
            Some(Incoming::AuthInvalid("Invalid access token or password".into()))
        );
        let failed =
            parse(r#"{"id":3,"type":"result","success":false,"error":{"code":"invalid_format","message":"bad"}}"#);
        assert_eq!(
            failed.ok(),
            Some(Incoming::Result {
                id: 3,
                outcome: Err("invalid_format: bad".into())
            })
        );
        let result: Json = serde_json::from_str(
            r#"{"sensor.a":[{"start":3600000.0,"end":7200000.0,"state":5.0,"sum":1.5},{"start":"1970-01-01T02:00:00+00:00","state":6,"sum":2.5}]}"#,
        )
        .expect("json");
        let stats = statistics_of(&result);
        assert_eq!(
            stats["sensor.a"],
            vec![
                HourStat {
                    start: 3600,
                    state: 5.0,
                    sum: 1.5
                },
                HourStat {
                    start: 7200,
                    state: 6.0,
                    sum: 2.5
                }
            ]
        );
        let history: Json = serde_json::from_str(
            r#"{"sensor.a":[{"s":"unknown","lu":1.0},{"s":"10707.4","lu":2.0},{"s":"10708","lu":3.0}],"sensor.b":[{"s":"unavailable"}]}"#,
        )
        .expect("json");
        let first = first_numeric_states(&history);
        assert_eq!(first.get("sensor.a"), Some(&10707.4));
        assert!(!first.contains_key("sensor.b"));
        let registry: Json = serde_json::from_str(
            r#"[{"entity_id":"sensor.x_2","unique_id":"mesura_x","platform":"mqtt"},{"entity_id":"sun.sun","unique_id":"s","platform":"sun"}]"#,
        )
        .expect("json");
        let ids = entity_ids(&registry, "mqtt");
        assert_eq!(ids.len(), 1);
        assert_eq!(ids["mesura_x"], "sensor.x_2");
    }
}
