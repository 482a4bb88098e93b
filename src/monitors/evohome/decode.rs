//! Pure decoders for the Resideo TCC v2 (EMEA) JSON answers, and the mapping of a
//! location's status to metrics. No I/O here: bytes in, values or an error out.
//!
//! The answers are read through `serde_json::Value`, field by field, on purpose:
//! the API adds fields, leaves optional ones out, quotes ids as strings or not,
//! and uses enum values (modes, fault types) no document lists. A field that is
//! missing or odd drops that one value, never the whole poll; unknown enum
//! values are kept as text.

use std::collections::HashSet;

use serde_json::Value as Json;

use crate::monitors::http_client::{json_answer, AnswerError};
use crate::reading::Unit;

/// One location of the account, from `/location/installationInfo`.
#[derive(Debug, Clone, PartialEq)]
pub struct LocationInfo {
    pub id: String,
    pub name: Option<String>,
    /// Zones the installation marks as `Unknown` (a placeholder left by the
    /// controller, with no sensor): reported by the status, but not real zones.
    pub ghost_zones: Vec<String>,
    pub zone_count: usize,
    pub has_dhw: bool,
}

/// One zone in a location's status.
#[derive(Debug, Clone, PartialEq)]
pub struct ZoneStatus {
    pub id: String,
    pub name: String,
    /// Absent when the API says `isAvailable: false` (sensor lost): never 0.
    pub temperature: Option<f64>,
    pub setpoint: Option<f64>,
    pub mode: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct DhwStatus {
    pub id: String,
    pub temperature: Option<f64>,
    pub state: Option<String>,
    pub mode: Option<String>,
}

/// An active fault, and where it was reported.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fault {
    pub source: String,
    pub fault_type: String,
    pub since: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct LocationStatus {
    pub system_mode: Option<String>,
    pub zones: Vec<ZoneStatus>,
    pub dhw: Vec<DhwStatus>,
    pub faults: Vec<Fault>,
    /// Whether the answer had any temperature control system at all.
    pub systems: usize,
}

/// A metric of a status: a number with its unit, or a text (modes, states).
#[derive(Debug, Clone, PartialEq)]
pub enum MetricValue {
    Number(f64, Unit),
    Text(String),
}

fn parse(body: &[u8]) -> Result<Json, AnswerError> {
    json_answer(body)
}

fn shape(what: &str) -> AnswerError {
    AnswerError::Shape(what.to_owned())
}

/// An id, whether the API sends it as a string or a number.
fn id(v: Option<&Json>) -> Option<String> {
    match v? {
        Json::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Json::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

fn text(v: Option<&Json>) -> Option<String> {
    match v? {
        Json::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Json::Number(n) => Some(n.to_string()),
        Json::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn number(v: Option<&Json>) -> Option<f64> {
    let n = match v? {
        Json::Number(n) => n.as_f64(),
        Json::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    n.filter(|n| n.is_finite())
}

fn array(v: Option<&Json>) -> &[Json] {
    v.and_then(Json::as_array).map(Vec::as_slice).unwrap_or(&[])
}

/// `/userAccount` → the user id.
pub fn decode_user_id(body: &[u8]) -> Result<String, AnswerError> {
    let json = parse(body)?;
    id(json.get("userId")).ok_or_else(|| shape("the user account answer has no `userId`"))
}

/// `/location/installationInfo` → the account's locations.
pub fn decode_installation(body: &[u8]) -> Result<Vec<LocationInfo>, AnswerError> {
    let json = parse(body)?;
    let list = json
        .as_array()
        .ok_or_else(|| shape("the installation answer is not a list of locations"))?;
    Ok(list
        .iter()
        .filter_map(|loc| {
            let info = loc.get("locationInfo");
            let location_id = id(info.and_then(|i| i.get("locationId")))?;
            let mut location = LocationInfo {
                id: location_id,
                name: text(info.and_then(|i| i.get("name"))),
                ghost_zones: Vec::new(),
                zone_count: 0,
                has_dhw: false,
            };
            for system in array(loc.get("gateways"))
                .iter()
                .flat_map(|g| array(g.get("temperatureControlSystems")))
            {
                location.has_dhw |= system.get("dhw").is_some_and(Json::is_object);
                for zone in array(system.get("zones")) {
                    location.zone_count += 1;
                    let unknown = ["modelType", "zoneType"]
                        .iter()
                        .any(|k| text(zone.get(*k)).is_some_and(|t| t.eq_ignore_ascii_case("unknown")));
                    if let (true, Some(zid)) = (unknown, id(zone.get("zoneId"))) {
                        location.ghost_zones.push(zid);
                    }
                }
            }
            Some(location)
        })
        .collect())
}

/// `/location/{id}/status` → zones, hot water, system mode and faults.
pub fn decode_status(body: &[u8]) -> Result<LocationStatus, AnswerError> {
    let json = parse(body)?;
    if !json.is_object() {
        return Err(shape("the location status answer is not an object"));
    }
    let mut status = LocationStatus::default();
    let faults = |v: Option<&Json>, source: &str, out: &mut Vec<Fault>| {
        for f in array(v) {
            if let Some(fault_type) = text(f.get("faultType")) {
                out.push(Fault {
                    source: source.to_owned(),
                    fault_type,
                    since: text(f.get("since")),
                });
            }
        }
    };
    for gateway in array(json.get("gateways")) {
        let gw = id(gateway.get("gatewayId")).unwrap_or_default();
        faults(
            gateway.get("activeFaults"),
            &format!("gateway {gw}"),
            &mut status.faults,
        );
        for system in array(gateway.get("temperatureControlSystems")) {
            status.systems += 1;
            faults(system.get("activeFaults"), "system", &mut status.faults);
            if status.system_mode.is_none() {
                status.system_mode = text(system.get("systemModeStatus").and_then(|m| m.get("mode")));
            }
            for zone in array(system.get("zones")) {
                let Some(zid) = id(zone.get("zoneId")) else { continue };
                let name = text(zone.get("name")).unwrap_or_default();
                let t = zone.get("temperatureStatus");
                // A missing isAvailable with a temperature present is taken as
                // available; an explicit false always wins.
                let available = t.and_then(|t| t.get("isAvailable")).and_then(Json::as_bool) != Some(false);
                let sp = zone.get("setpointStatus");
                faults(
                    zone.get("activeFaults"),
                    &format!("zone {}", if name.is_empty() { &zid } else { &name }),
                    &mut status.faults,
                );
                status.zones.push(ZoneStatus {
                    id: zid,
                    name,
                    temperature: available
                        .then(|| number(t.and_then(|t| t.get("temperature"))))
                        .flatten(),
                    setpoint: number(sp.and_then(|s| s.get("targetHeatTemperature"))),
                    mode: text(sp.and_then(|s| s.get("setpointMode"))),
                });
            }
            if let Some(dhw) = system.get("dhw").filter(|d| d.is_object()) {
                let did = id(dhw.get("dhwId")).unwrap_or_default();
                let t = dhw.get("temperatureStatus");
                let available = t.and_then(|t| t.get("isAvailable")).and_then(Json::as_bool) != Some(false);
                let state = dhw.get("stateStatus");
                faults(dhw.get("activeFaults"), "hot water", &mut status.faults);
                status.dhw.push(DhwStatus {
                    id: did,
                    temperature: available
                        .then(|| number(t.and_then(|t| t.get("temperature"))))
                        .flatten(),
                    state: text(state.and_then(|s| s.get("state"))),
                    mode: text(state.and_then(|s| s.get("mode"))),
                });
            }
        }
    }
    Ok(status)
}

/// Whether an error body is the API's rate-limit answer, e.g.
/// `[{"code":"TooManyRequests","message":"Request count limitation exceeded…"}]`,
/// or the token endpoint's `{"error":"attempt_limit_exceeded"}`.
pub fn is_rate_limit_body(body: &[u8]) -> bool {
    let Ok(json) = serde_json::from_slice::<Json>(body) else {
        return false;
    };
    let entries: Vec<&Json> = match &json {
        Json::Array(list) => list.iter().collect(),
        other => vec![other],
    };
    entries.iter().any(|e| {
        ["code", "error"].iter().any(|k| {
            text(e.get(*k)).is_some_and(|c| {
                c.eq_ignore_ascii_case("TooManyRequests") || c.eq_ignore_ascii_case("attempt_limit_exceeded")
            })
        })
    })
}

/// A zone name as a metric name prefix: lower case ASCII letters, digits and
/// single underscores. Accented Latin letters lose their accents ("Baño Princ."
/// → `bano_princ`); other characters separate words.
pub fn slug(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut gap = false;
    for c in name.chars().flat_map(fold) {
        if c.is_ascii_alphanumeric() {
            if gap && !out.is_empty() {
                out.push('_');
            }
            gap = false;
            out.push(c.to_ascii_lowercase());
        } else {
            gap = true;
        }
    }
    out
}

/// The ASCII letters a Latin letter is written with when accents are dropped.
fn fold(c: char) -> Vec<char> {
    let s: &str = match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ą' | 'ă' => "a",
        'À' | 'Á' | 'Â' | 'Ã' | 'Ä' | 'Å' | 'Ā' | 'Ą' | 'Ă' => "A",
        'æ' | 'Æ' => "ae",
        'ç' | 'ć' | 'č' | 'Ç' | 'Ć' | 'Č' => "c",
        'ď' | 'đ' | 'Ď' | 'Đ' | 'ð' | 'Ð' => "d",
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ę' | 'ě' | 'È' | 'É' | 'Ê' | 'Ë' | 'Ē' | 'Ę' | 'Ě' => "e",
        'ì' | 'í' | 'î' | 'ï' | 'ī' | 'Ì' | 'Í' | 'Î' | 'Ï' | 'Ī' | 'ı' => "i",
        'ł' | 'Ł' | 'ľ' | 'Ľ' => "l",
        'ñ' | 'ń' | 'ň' | 'Ñ' | 'Ń' | 'Ň' => "n",
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ő' | 'Ò' | 'Ó' | 'Ô' | 'Õ' | 'Ö' | 'Ø' | 'Ō' | 'Ő' => {
            "o"
        }
        'œ' | 'Œ' => "oe",
        'ř' | 'Ř' => "r",
        'ś' | 'š' | 'ş' | 'Ś' | 'Š' | 'Ş' => "s",
        'ß' => "ss",
        'ť' | 'ţ' | 'Ť' | 'Ţ' => "t",
        'þ' | 'Þ' => "th",
        'ù' | 'ú' | 'û' | 'ü' | 'ū' | 'ů' | 'ű' | 'Ù' | 'Ú' | 'Û' | 'Ü' | 'Ū' | 'Ů' | 'Ű' => "u",
        'ý' | 'ÿ' | 'Ý' | 'Ÿ' => "y",
        'ź' | 'ż' | 'ž' | 'Ź' | 'Ż' | 'Ž' => "z",
        _ => return vec![c],
    };
    s.chars().collect()
}

/// Metric names the device uses itself; a zone slugged to one of these gets its
/// id appended so the two never share a column.
const RESERVED: &[&str] = &["dhw", "system"];

/// A location status as metrics: per zone `<slug>_temperature` (only when
/// available), `<slug>_setpoint` and `<slug>_mode`; `dhw_temperature`,
/// `dhw_state`, `dhw_mode`; `system_mode`. Zones in `ghost_zones` are left out.
/// A zone with no usable name is `zone_<id>`; two zones with the same slug are
/// told apart by their ids.
pub fn metrics(status: &LocationStatus, ghost_zones: &[String]) -> Vec<(String, MetricValue)> {
    let mut out = Vec::new();
    let mut used: HashSet<String> = RESERVED.iter().map(|s| s.to_string()).collect();
    let mut prefix_for = |base: String, id: &str| {
        let base = if base.is_empty() {
            format!("zone_{}", slug(id))
        } else {
            base
        };
        let name = if used.contains(&base) {
            format!("{base}_{}", slug(id))
        } else {
            base
        };
        used.insert(name.clone());
        name
    };
    for zone in status.zones.iter().filter(|z| !ghost_zones.contains(&z.id)) {
        let prefix = prefix_for(slug(&zone.name), &zone.id);
        if let Some(t) = zone.temperature {
            out.push((format!("{prefix}_temperature"), MetricValue::Number(t, Unit::Celsius)));
        }
        if let Some(s) = zone.setpoint {
            out.push((format!("{prefix}_setpoint"), MetricValue::Number(s, Unit::Celsius)));
        }
        if let Some(m) = &zone.mode {
            out.push((format!("{prefix}_mode"), MetricValue::Text(m.clone())));
        }
    }
    for (i, dhw) in status.dhw.iter().enumerate() {
        // One hot water system is the rule; a second one is told apart by its id.
        let prefix = if i == 0 {
            "dhw".to_string()
        } else {
            format!("dhw_{}", slug(&dhw.id))
        };
        if let Some(t) = dhw.temperature {
            out.push((format!("{prefix}_temperature"), MetricValue::Number(t, Unit::Celsius)));
        }
        if let Some(s) = &dhw.state {
            out.push((format!("{prefix}_state"), MetricValue::Text(s.clone())));
        }
        if let Some(m) = &dhw.mode {
            out.push((format!("{prefix}_mode"), MetricValue::Text(m.clone())));
        }
    }
    if let Some(mode) = &status.system_mode {
        out.push(("system_mode".into(), MetricValue::Text(mode.clone())));
    }
    out
}

#[cfg(test)]
mod tests;
