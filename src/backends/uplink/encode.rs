//! Request bodies: JSON and InfluxDB line protocol. Pure functions, no I/O.

use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::io::Write as _;

use chrono::SecondsFormat;
use serde::Serialize;

use crate::backends::outbox::OutboxRow;
use crate::reading::Value;

/// One element of the JSON array (docs/backends/uplink.md shows the schema).
#[derive(Serialize)]
struct JsonReading<'a> {
    device: &'a str,
    device_type: &'a str,
    metric: &'a str,
    /// A number, a string for text values, or `null` for NaN / infinity (which
    /// JSON cannot carry).
    value: &'a Value,
    unit: &'a str,
    timestamp: String,
    /// The uplink's `tags` (`site`…), when it has any.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    tags: &'a BTreeMap<String, String>,
}

/// A JSON array of readings, oldest first as given.
pub(super) fn json(rows: &[OutboxRow], tags: &BTreeMap<String, String>) -> Result<Vec<u8>, serde_json::Error> {
    let items: Vec<JsonReading<'_>> = rows
        .iter()
        .map(|r| JsonReading {
            device: &r.device,
            device_type: &r.device_type,
            metric: &r.metric,
            value: &r.value,
            unit: &r.unit,
            timestamp: r.timestamp.to_rfc3339_opts(SecondsFormat::Millis, true),
            tags,
        })
        .collect();
    serde_json::to_vec(&items)
}

/// InfluxDB line protocol: measurement = device type, tags `device` and `unit`
/// (omitted when empty) and the uplink's own `tags`, one field per metric,
/// nanosecond timestamps. Readings of
/// one device, unit and instant share a line. NaN and infinity cannot be written
/// and are left out (a line left with no field is left out too).
pub(super) fn line_protocol(rows: &[OutboxRow], tags: &BTreeMap<String, String>) -> String {
    let extra: String = tags
        .iter()
        .map(|(k, v)| format!(",{}={}", escape(k, &[',', '=', ' ']), escape(v, &[',', '=', ' '])))
        .collect();
    type Key<'a> = (&'a str, &'a str, &'a str, i64);
    let mut lines: Vec<(Key<'_>, Vec<(&str, &Value)>)> = Vec::new();
    let mut index: HashMap<Key<'_>, usize> = HashMap::new();
    for r in rows {
        if matches!(r.value, Value::Number(n) if !n.is_finite()) {
            continue;
        }
        let measurement = if r.device_type.is_empty() {
            "mesura"
        } else {
            &r.device_type
        };
        let nanos = r
            .timestamp
            .timestamp_nanos_opt()
            .unwrap_or_else(|| r.timestamp.timestamp_millis().saturating_mul(1_000_000));
        let key = (measurement, r.device.as_str(), r.unit.as_str(), nanos);
        let i = *index.entry(key).or_insert_with(|| {
            lines.push((key, Vec::new()));
            lines.len() - 1
        });
        let fields = &mut lines[i].1;
        // The same metric twice at one instant: the later reading wins, as it
        // would in the database.
        match fields.iter_mut().find(|(m, _)| *m == r.metric) {
            Some(field) => field.1 = &r.value,
            None => fields.push((&r.metric, &r.value)),
        }
    }
    let mut out = String::new();
    for ((measurement, device, unit, nanos), fields) in lines {
        out.push_str(&escape(measurement, &[',', ' ']));
        out.push_str(",device=");
        out.push_str(&escape(device, &[',', '=', ' ']));
        if !unit.is_empty() {
            out.push_str(",unit=");
            out.push_str(&escape(unit, &[',', '=', ' ']));
        }
        out.push_str(&extra);
        for (i, (metric, value)) in fields.iter().enumerate() {
            out.push(if i == 0 { ' ' } else { ',' });
            out.push_str(&escape(metric, &[',', '=', ' ']));
            out.push('=');
            match value {
                Value::Number(n) => {
                    let _ = write!(out, "{n}");
                }
                Value::Text(t) => {
                    out.push('"');
                    out.push_str(&escape(t, &['"', '\\']));
                    out.push('"');
                }
            }
        }
        let _ = writeln!(out, " {nanos}");
    }
    out
}

/// Backslash-escapes `special`. Line protocol has no escape for a line break, so
/// one becomes a space.
fn escape(text: &str, special: &[char]) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' | '\r' => out.push(' '),
            c if special.contains(&c) => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

pub(super) fn gzip(body: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::with_capacity(body.len() / 4), flate2::Compression::default());
    encoder.write_all(body)?;
    encoder.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reading::Kind;
    use chrono::{DateTime, Utc};
    use std::io::Read;

    fn row(device: &str, metric: &str, value: Value, unit: &str, ts: &str) -> OutboxRow {
        OutboxRow {
            id: 1,
            device: device.into(),
            device_type: "dsmr".into(),
            metric: metric.into(),
            value,
            unit: unit.into(),
            kind: Kind::Gauge,
            timestamp: DateTime::parse_from_rfc3339(ts).unwrap().with_timezone(&Utc),
        }
    }

    #[test]
    fn the_uplinks_tags_go_on_every_point_and_reading() {
        let rows = [row(
            "p1",
            "power_delivered",
            Value::Number(230.0),
            "W",
            "2026-11-24T12:00:00Z",
        )];
        let tags: BTreeMap<String, String> = [
            ("site".to_owned(), "north farm".to_owned()),
            ("owner".to_owned(), "a=b".to_owned()),
        ]
        .into();
        assert_eq!(
            line_protocol(&rows, &tags),
            "dsmr,device=p1,unit=W,owner=a\\=b,site=north\\ farm power_delivered=230 1795521600000000000\n"
        );
        let tagged: serde_json::Value = serde_json::from_slice(&json(&rows, &tags).unwrap()).unwrap();
        assert_eq!(tagged[0]["tags"]["site"], "north farm");
        let untagged: serde_json::Value = serde_json::from_slice(&json(&rows, &BTreeMap::new()).unwrap()).unwrap();
        assert!(untagged[0].get("tags").is_none());
    }

    #[test]
    fn json_has_the_documented_schema() {
        let rows = [
            row(
                "meter east, 2",
                "power_delivered",
                Value::Number(1234.5),
                "W",
                "2026-11-24T12:00:00Z",
            ),
            row(
                "p1",
                "tariff",
                Value::Text("normal".into()),
                "",
                "2026-11-24T12:00:01.250Z",
            ),
            row("p1", "broken", Value::Number(f64::NAN), "", "2026-11-24T12:00:01.250Z"),
        ];
        let json: serde_json::Value = serde_json::from_slice(&json(&rows, &BTreeMap::new()).unwrap()).unwrap();
        assert_eq!(
            json,
            serde_json::json!([
                {"device": "meter east, 2", "device_type": "dsmr", "metric": "power_delivered",
                 "value": 1234.5, "unit": "W", "timestamp": "2026-11-24T12:00:00.000Z"},
                {"device": "p1", "device_type": "dsmr", "metric": "tariff",
                 "value": "normal", "unit": "", "timestamp": "2026-11-24T12:00:01.250Z"},
                {"device": "p1", "device_type": "dsmr", "metric": "broken",
                 "value": null, "unit": "", "timestamp": "2026-11-24T12:00:01.250Z"}
            ])
        );
    }

    #[test]
    fn line_protocol_groups_metrics_and_escapes_everything() {
        let ts = "2026-11-24T12:00:00.001Z";
        let mut typed = row("a", "x", Value::Number(1.0), "W", ts);
        typed.device_type = "my type,1".into();
        let rows = [
            row("meter east, 2", "power_delivered", Value::Number(1234.5), "W", ts),
            row("meter east, 2", "power_returned", Value::Number(0.0), "W", ts),
            row("meter east, 2", "energy=a b", Value::Number(-2.25), "kWh", ts),
            row(
                "meter east, 2",
                "note",
                Value::Text("say \"hi\" \\ bye\nnow".into()),
                "",
                ts,
            ),
            row(
                "meter east, 2",
                "nan",
                Value::Number(f64::NAN),
                "",
                "2026-11-24T12:00:01Z",
            ),
            row("m", "power_delivered", Value::Number(1.0), "W", ts),
            row("m", "power_delivered", Value::Number(2.0), "W", ts),
            typed,
        ];
        let nanos = 1_795_521_600_001_000_000i64;
        assert_eq!(
            line_protocol(&rows, &BTreeMap::new()),
            format!(
                "dsmr,device=meter\\ east\\,\\ 2,unit=W power_delivered=1234.5,power_returned=0 {nanos}\n\
                 dsmr,device=meter\\ east\\,\\ 2,unit=kWh energy\\=a\\ b=-2.25 {nanos}\n\
                 dsmr,device=meter\\ east\\,\\ 2 note=\"say \\\"hi\\\" \\\\ bye now\" {nanos}\n\
                 dsmr,device=m,unit=W power_delivered=2 {nanos}\n\
                 my\\ type\\,1,device=a,unit=W x=1 {nanos}\n"
            )
        );
    }

    #[test]
    fn gzip_round_trips() {
        let body = b"dsmr,device=p1 power=1 1\n".repeat(100);
        let packed = gzip(&body).unwrap();
        assert!(packed.len() < body.len() / 4);
        let mut unpacked = Vec::new();
        flate2::read::GzDecoder::new(&packed[..])
            .read_to_end(&mut unpacked)
            .unwrap();
        assert_eq!(unpacked, body);
    }
}
