//! EnergyZero's public price API (`/public/v1/prices`, no key): `base` (the
//! market price) and `base_with_vat`, each a list of slots with their own UTC
//! start and end and a price in EUR/kWh as a string. Other lists (`all_in`) add
//! the supplier's markup and energy tax, which are a tariff's business, not ours.
//! An error answer is `{"code", "message", "details"}`.

use chrono::{DateTime, Utc};
use serde_json::Value as Json;

use super::{without_overlaps, PriceError, Slot};

/// Decodes an answer; `with_vat` picks `base_with_vat` over `base`.
pub fn decode(body: &[u8], with_vat: bool) -> Result<Vec<Slot>, PriceError> {
    let json: Json = serde_json::from_slice(body).map_err(PriceError::NotJson)?;
    if let Some(message) = json.get("message").and_then(Json::as_str) {
        if json.get("base").is_none() {
            return Err(PriceError::Refused(message.to_string()));
        }
    }
    let list = if with_vat { "base_with_vat" } else { "base" };
    let entries = json
        .get(list)
        .and_then(Json::as_array)
        .ok_or_else(|| PriceError::Shape(format!("the answer has no `{list}` list")))?;
    let mut slots = Vec::with_capacity(entries.len());
    for entry in entries {
        let start = time(entry.get("start"))?;
        let end = time(entry.get("end"))?;
        let seconds = u32::try_from((end - start).num_seconds())
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| PriceError::Shape(format!("a slot that ends ({end}) before it starts ({start})")))?;
        let price = entry
            .get("price")
            .and_then(|p| p.get("value"))
            .and_then(|v| match v {
                Json::String(s) => s.trim().parse::<f64>().ok(),
                Json::Number(n) => n.as_f64(),
                _ => None,
            })
            .filter(|p| p.is_finite())
            .ok_or_else(|| PriceError::Shape(format!("the slot at {start} has no price value")))?;
        slots.push(Slot {
            start,
            seconds,
            eur_per_kwh: price,
        });
    }
    if slots.is_empty() {
        return Err(PriceError::NoData(format!("the `{list}` list is empty")));
    }
    Ok(without_overlaps(slots))
}

fn time(v: Option<&Json>) -> Result<DateTime<Utc>, PriceError> {
    let s = v
        .and_then(Json::as_str)
        .ok_or_else(|| PriceError::Shape("a slot without start or end".into()))?;
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.to_utc())
        .map_err(|e| PriceError::Shape(format!("`{s}` is not a time: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/prices/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.to_utc())
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    #[test]
    fn quarter_hours_with_and_without_vat() {
        let body = fixture("energyzero_electricity_quarter_response.json");
        let base = decode(&body, false).unwrap_or_else(|e| panic!("{e}"));
        let vat = decode(&body, true).unwrap_or_else(|e| panic!("{e}"));
        // Three days of 96 quarter-hours (the answer's `range`).
        assert_eq!(base.len(), 288);
        assert!(base.iter().all(|s| s.seconds == 900));
        assert_eq!(base.first().map(|s| s.start), Some(utc("2025-12-15T23:00:00Z")));
        assert_eq!(base.last().map(|s| s.end()), Some(utc("2025-12-18T23:00:00Z")));
        // The first two values as the file shows them.
        assert!((base[0].eur_per_kwh - 0.07994).abs() < 1e-12);
        assert!((base[1].eur_per_kwh - 0.08307).abs() < 1e-12);
        // 21 % VAT on every slot.
        for (b, v) in base.iter().zip(&vat) {
            assert_eq!(b.start, v.start);
            assert!((v.eur_per_kwh - b.eur_per_kwh * 1.21).abs() < 1e-5, "{b:?} {v:?}");
        }
    }

    #[test]
    fn hours() {
        let slots =
            decode(&fixture("energyzero_electricity_hour_response.json"), false).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(slots.len(), 72);
        assert!(slots.iter().all(|s| s.seconds == 3600));
        assert!((slots[0].eur_per_kwh - 0.077495).abs() < 1e-12);
    }

    #[test]
    fn the_error_answer_is_refused_with_its_message() {
        match decode(&fixture("energyzero_error_response.json"), false) {
            Err(PriceError::Refused(m)) => assert!(m.contains("DailyEnergyPricesRequest.Date"), "{m}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(decode(br#"{"base":[]}"#, false), Err(PriceError::NoData(_))));
        assert!(matches!(decode(b"<html>", false), Err(PriceError::NotJson(_))));
        assert!(matches!(
            decode(br#"{"base":[{"start":"x","end":"y","price":{"value":"1"}}]}"#, false),
            Err(PriceError::Shape(_))
        ));
    }
}
