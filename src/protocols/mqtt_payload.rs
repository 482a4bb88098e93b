//! What other systems publish on MQTT, read without I/O: topic filters with `+`/`#`
//! wildcards (and the levels a `+` matched), a small JSON path (`$.ENERGY.Total`,
//! `temperature`, `$.cells[0].voltage`), and the value or time at such a path.

use chrono::{DateTime, Local, NaiveDateTime, TimeZone, Utc};
use serde_json::Value as Json;

/// One step of a JSON path: an object key or an array index.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// A parsed JSON path. `$` alone (or an empty path) is the whole payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JsonPath(Vec<Step>);

impl JsonPath {
    /// Parses `$.a.b[0].c`, `a.b`, `$['key with.dot']`, `[1]`. Keys are taken as
    /// written (case matters: Tasmota sends `ENERGY`, Zigbee2MQTT `energy`).
    pub fn parse(path: &str) -> Result<JsonPath, String> {
        let rest = path.trim();
        let rest = rest.strip_prefix('$').unwrap_or(rest);
        let mut steps = Vec::new();
        let mut chars = rest.char_indices().peekable();
        let bytes = rest;
        let mut key_start: Option<usize> = None;
        let flush = |steps: &mut Vec<Step>, start: Option<usize>, end: usize| -> Result<(), String> {
            if let Some(start) = start {
                let key = &bytes[start..end];
                if key.is_empty() {
                    return Err(format!("empty key in `{path}`"));
                }
                steps.push(Step::Key(key.to_owned()));
            }
            Ok(())
        };
        while let Some((i, c)) = chars.next() {
            match c {
                '.' => {
                    flush(&mut steps, key_start.take(), i)?;
                    if chars.peek().is_none_or(|(_, c)| *c == '.') {
                        return Err(format!("a `.` must be followed by a key in `{path}`"));
                    }
                }
                '[' => {
                    flush(&mut steps, key_start.take(), i)?;
                    let close = rest[i..]
                        .find(']')
                        .ok_or_else(|| format!("`[` without `]` in `{path}`"))?
                        + i;
                    let inner = rest[i + 1..close].trim();
                    let step = if let Some(quoted) = inner
                        .strip_prefix('\'')
                        .and_then(|s| s.strip_suffix('\''))
                        .or_else(|| inner.strip_prefix('"').and_then(|s| s.strip_suffix('"')))
                    {
                        Step::Key(quoted.to_owned())
                    } else {
                        Step::Index(
                            inner
                                .parse()
                                .map_err(|_| format!("`[{inner}]` is neither an index nor a quoted key in `{path}`"))?,
                        )
                    };
                    steps.push(step);
                    while chars.peek().is_some_and(|(j, _)| *j <= close) {
                        chars.next();
                    }
                }
                ']' => return Err(format!("`]` without `[` in `{path}`")),
                _ => {
                    key_start.get_or_insert(i);
                }
            }
        }
        flush(&mut steps, key_start, rest.len())?;
        Ok(JsonPath(steps))
    }

    /// The value at this path, `None` when the payload does not have it.
    pub fn find<'a>(&self, json: &'a Json) -> Option<&'a Json> {
        self.0.iter().try_fold(json, |node, step| match step {
            Step::Key(k) => node.get(k),
            Step::Index(i) => node.get(*i),
        })
    }
}

/// Why a value could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("not JSON: {0}")]
    NotJson(String),
    #[error("`{0}` is not a number")]
    NotNumber(String),
}

/// A number from what was sent: a JSON number, a numeric string, `true`/`false`,
/// `ON`/`OFF` (Tasmota's and Shelly's switch states) as 1/0.
pub fn number(value: &Json) -> Result<f64, PayloadError> {
    match value {
        Json::Number(n) => n.as_f64().ok_or_else(|| PayloadError::NotNumber(n.to_string())),
        Json::Bool(b) => Ok(if *b { 1.0 } else { 0.0 }),
        Json::String(s) => text_number(s),
        other => Err(PayloadError::NotNumber(shorten(&other.to_string()))),
    }
}

/// A plain-text payload (`21.5`, `ON`) as a number.
pub fn text_number(text: &str) -> Result<f64, PayloadError> {
    let t = text.trim();
    match t.to_ascii_uppercase().as_str() {
        "ON" | "TRUE" | "OPEN" => return Ok(1.0),
        "OFF" | "FALSE" | "CLOSED" => return Ok(0.0),
        _ => {}
    }
    t.parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
        .ok_or_else(|| PayloadError::NotNumber(shorten(t)))
}

/// Parses a payload as JSON.
pub fn json(payload: &[u8]) -> Result<Json, PayloadError> {
    serde_json::from_slice(payload).map_err(|e| PayloadError::NotJson(e.to_string()))
}

fn shorten(s: &str) -> String {
    match s.char_indices().nth(40) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// A time as publishers send it: seconds or milliseconds since the epoch, RFC 3339,
/// or a local time without an offset (Tasmota's `Time`, `2026-01-02T13:04:05`).
/// `Err` with the text as sent when it is none of these.
pub fn time(value: &Json) -> Result<DateTime<Utc>, String> {
    match value {
        Json::Number(n) => {
            let v = n.as_f64().ok_or_else(|| n.to_string())?;
            // Milliseconds from 2001 on are above 1e12; seconds stay below until 33658.
            let ms = if v.abs() >= 1e12 { v } else { v * 1000.0 };
            DateTime::from_timestamp_millis(ms as i64).ok_or_else(|| n.to_string())
        }
        Json::String(s) => {
            if let Ok(t) = DateTime::parse_from_rfc3339(s) {
                return Ok(t.to_utc());
            }
            let naive = NaiveDateTime::parse_from_str(s, "%Y-%m-%dT%H:%M:%S")
                .or_else(|_| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S"))
                .map_err(|_| s.clone())?;
            Local
                .from_local_datetime(&naive)
                .earliest()
                .map(|t| t.to_utc())
                .ok_or_else(|| s.clone())
        }
        other => Err(other.to_string()),
    }
}

/// The levels a topic filter's `+` wildcards matched in `topic`, in order; `None`
/// when the filter does not match. `#` matches the rest (and is not captured).
pub fn matches(filter: &str, topic: &str) -> Option<Vec<String>> {
    let mut captured = Vec::new();
    let mut levels = topic.split('/');
    for f in filter.split('/') {
        if f == "#" {
            return Some(captured);
        }
        let level = levels.next()?;
        match f {
            "+" => captured.push(level.to_owned()),
            _ if f == level => {}
            _ => return None,
        }
    }
    levels.next().is_none().then_some(captured)
}

/// Whether `filter` could receive a message published under `prefix/…` (mesura's
/// own topics): subscribing there would read back what mesura publishes.
pub fn reaches_prefix(filter: &str, prefix: &str) -> bool {
    let mut filter_levels = filter.split('/');
    for p in prefix.split('/') {
        match filter_levels.next() {
            Some("#") => return true,
            Some("+") => {}
            Some(f) if f == p => {}
            _ => return false,
        }
    }
    // The prefix itself matched: anything further (a level, `+`, `#`) reaches below it.
    filter_levels.next().is_some()
}

/// A metric name with `{1}`, `{2}`… replaced by the levels a topic's `+` wildcards
/// matched, made `snake_case` so it is a column name like every other metric.
pub fn metric_name(template: &str, captured: &[String]) -> String {
    let mut name = template.to_owned();
    for (i, level) in captured.iter().enumerate() {
        name = name.replace(&format!("{{{}}}", i + 1), level);
    }
    let mut out = String::with_capacity(name.len());
    for c in name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_alphanumeric() {
            out.push(c);
        } else if !out.ends_with('_') {
            out.push('_');
        }
    }
    out.trim_matches('_').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn paths_find_values_in_what_devices_send() {
        // Tasmota's tele/<topic>/SENSOR of a Sonoff POW (its documented shape).
        let tasmota = json!({"Time":"2026-01-02T13:04:05","ENERGY":{"TotalStartTime":"2025-05-01T10:00:00","Total":12.345,"Yesterday":1.1,"Today":0.4,"Power":230,"ApparentPower":240,"ReactivePower":60,"Factor":0.96,"Voltage":231,"Current":1.04}});
        let p = JsonPath::parse("$.ENERGY.Total").unwrap();
        assert_eq!(p.find(&tasmota), Some(&json!(12.345)));
        assert_eq!(
            JsonPath::parse("ENERGY.Power").unwrap().find(&tasmota),
            Some(&json!(230))
        );
        let bms = json!({"cells":[{"voltage":3.31},{"voltage":3.29}],"soc":"87"});
        assert_eq!(
            JsonPath::parse("$.cells[1].voltage").unwrap().find(&bms),
            Some(&json!(3.29))
        );
        assert_eq!(JsonPath::parse("$['soc']").unwrap().find(&bms), Some(&json!("87")));
        assert_eq!(JsonPath::parse("$.cells[5].voltage").unwrap().find(&bms), None);
        assert_eq!(JsonPath::parse("$").unwrap().find(&json!(3)), Some(&json!(3)));
        for bad in ["$.a..b", "$.a[", "$.a[x]", "a]", "$."] {
            assert!(JsonPath::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn numbers_come_as_numbers_text_or_switch_states() {
        assert_eq!(number(&json!(1.5)), Ok(1.5));
        assert_eq!(number(&json!("87")), Ok(87.0));
        assert_eq!(number(&json!("ON")), Ok(1.0));
        assert_eq!(number(&json!(false)), Ok(0.0));
        assert!(number(&json!({"a": 1})).is_err());
        assert!(text_number("NaN").is_err());
        assert_eq!(text_number(" 21.5\n"), Ok(21.5));
        assert!(json(b"{not json").is_err());
    }

    #[test]
    fn times_in_the_shapes_publishers_use() {
        let at = DateTime::parse_from_rfc3339("2026-01-02T12:04:05Z").unwrap().to_utc();
        assert_eq!(time(&json!("2026-01-02T12:04:05Z")), Ok(at));
        assert_eq!(time(&json!(at.timestamp())), Ok(at));
        assert_eq!(time(&json!(at.timestamp_millis())), Ok(at));
        // Tasmota's local time without an offset is read in the host's zone.
        let local = Local.from_local_datetime(&at.naive_utc()).earliest().unwrap().to_utc();
        assert_eq!(time(&json!("2026-01-02T12:04:05")), Ok(local));
        assert!(time(&json!("yesterday")).is_err());
    }

    #[test]
    fn filters_match_and_capture_their_wildcards() {
        assert_eq!(
            matches("tele/+/SENSOR", "tele/plug1/SENSOR"),
            Some(vec!["plug1".to_owned()])
        );
        assert_eq!(matches("tele/+/SENSOR", "tele/plug1/STATE"), None);
        assert_eq!(matches("bms/#", "bms/a/b"), Some(vec![]));
        assert_eq!(matches("a/b", "a/b/c"), None);
        assert_eq!(matches("a/b/c", "a/b"), None);
        assert!(reaches_prefix("meters/#", "meters"));
        assert!(reaches_prefix("#", "meters"));
        assert!(reaches_prefix("+/p1/power", "meters"));
        assert!(!reaches_prefix("meters", "meters"));
        assert!(!reaches_prefix("tele/+/SENSOR", "meters"));
        assert!(reaches_prefix("home/meters/+", "home/meters"));
        assert_eq!(
            metric_name("cell_{1}_voltage", &["Cell 3".to_owned()]),
            "cell_cell_3_voltage"
        );
        assert_eq!(metric_name("{1}", &["Temperature".to_owned()]), "temperature");
    }
}
