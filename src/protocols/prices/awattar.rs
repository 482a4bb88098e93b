//! aWATTar's market data (`/v1/marketdata` on api.awattar.de and api.awattar.at,
//! no key): `{"object": "list", "data": [{start_timestamp, end_timestamp,
//! marketprice, unit}]}`, times in milliseconds since the epoch, prices in Eur/MWh.

use chrono::{DateTime, Utc};
use serde_json::Value as Json;

use super::{per_kwh, without_overlaps, PriceError, Slot};

pub fn decode(body: &[u8]) -> Result<Vec<Slot>, PriceError> {
    let json: Json = serde_json::from_slice(body).map_err(PriceError::NotJson)?;
    let entries = json
        .get("data")
        .and_then(Json::as_array)
        .ok_or_else(|| PriceError::Shape("the answer has no `data` list".into()))?;
    let mut slots = Vec::with_capacity(entries.len());
    for entry in entries {
        let start = millis(entry.get("start_timestamp"))?;
        let end = millis(entry.get("end_timestamp"))?;
        let seconds = u32::try_from((end - start).num_seconds())
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| PriceError::Shape(format!("a slot that ends ({end}) before it starts ({start})")))?;
        let unit = entry.get("unit").and_then(Json::as_str).unwrap_or("Eur/MWh");
        if !unit.eq_ignore_ascii_case("Eur/MWh") {
            return Err(PriceError::Shape(format!("prices in {unit}, not Eur/MWh")));
        }
        let price = entry
            .get("marketprice")
            .and_then(Json::as_f64)
            .filter(|p| p.is_finite())
            .ok_or_else(|| PriceError::Shape(format!("the slot at {start} has no marketprice")))?;
        slots.push(Slot {
            start,
            seconds,
            eur_per_kwh: per_kwh(price),
        });
    }
    if slots.is_empty() {
        return Err(PriceError::NoData("the `data` list is empty".into()));
    }
    Ok(without_overlaps(slots))
}

fn millis(v: Option<&Json>) -> Result<DateTime<Utc>, PriceError> {
    v.and_then(Json::as_i64)
        .and_then(DateTime::from_timestamp_millis)
        .ok_or_else(|| PriceError::Shape(format!("`{}` is not a time in milliseconds", v.unwrap_or(&Json::Null))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_decodes() {
        let path = format!(
            "{}/tests/fixtures/prices/awattar_marketdata_docs_example.json",
            env!("CARGO_MANIFEST_DIR")
        );
        let body = std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        let slots = decode(&body).unwrap_or_else(|e| panic!("{e}"));
        assert!(!slots.is_empty());
        assert_eq!(slots[0].start.timestamp_millis(), 1_428_591_600_000);
        assert_eq!(slots[0].seconds, 3600);
        assert!((slots[0].eur_per_kwh - 0.04209).abs() < 1e-12);
        assert!(slots.windows(2).all(|w| w[0].end() == w[1].start));
    }

    #[test]
    fn odd_answers_are_errors() {
        assert!(matches!(
            decode(br#"{"object":"list","data":[]}"#),
            Err(PriceError::NoData(_))
        ));
        assert!(matches!(decode(b"nope"), Err(PriceError::NotJson(_))));
        assert!(matches!(
            decode(br#"{"data":[{"start_timestamp":0,"end_timestamp":3600000,"marketprice":1,"unit":"ct/kWh"}]}"#),
            Err(PriceError::Shape(_))
        ));
    }
}
