//! Day-ahead electricity prices: the answers of ENTSO-E's transparency platform
//! (XML), EnergyZero and aWATTar (JSON), decoded into price slots. Pure: bytes in,
//! slots or an error out. The `prices` device (monitors/prices.rs) fetches them.

pub mod awattar;
pub mod energyzero;
pub mod entsoe;

use chrono::{DateTime, Datelike, Duration as TimeDelta, NaiveDate, TimeZone, Utc, Weekday};

/// One price slot: a quarter-hour or an hour of the day-ahead market.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slot {
    /// The slot's start (UTC).
    pub start: DateTime<Utc>,
    /// The slot's length in seconds (900 or 3600).
    pub seconds: u32,
    /// EUR/kWh (the sources send EUR/MWh or EUR/kWh; converted here).
    pub eur_per_kwh: f64,
}

impl Slot {
    pub fn end(&self) -> DateTime<Utc> {
        self.start + TimeDelta::seconds(i64::from(self.seconds))
    }
}

/// Why an answer gave no prices.
#[derive(Debug, thiserror::Error)]
pub enum PriceError {
    /// The service says it has no prices for the period asked (ENTSO-E reason 999,
    /// "No matching data found"): tomorrow's prices are not published yet, or a
    /// day is missing. Not a fault of ours.
    #[error("no prices for that period: {0}")]
    NoData(String),
    /// The service refused the request and said why (a bad token, a bad zone).
    #[error("the service refused the request: {0}")]
    Refused(String),
    /// The body is not XML.
    #[error("the answer is not XML ({0})")]
    NotXml(#[source] quick_xml::Error),
    /// The body is not JSON.
    #[error("the answer is not JSON ({0})")]
    NotJson(#[source] serde_json::Error),
    /// Well-formed, but not a price answer: says what is wrong.
    #[error("{0}")]
    Shape(String),
}

/// EUR/MWh to EUR/kWh.
pub fn per_kwh(eur_per_mwh: f64) -> f64 {
    eur_per_mwh / 1000.0
}

/// The day-ahead market's day is the delivery day in Central European Time
/// (CET/CEST) for every zone of the single day-ahead coupling, whatever the zone's
/// own clock: 23 hours on the last Sunday of March, 25 on the last Sunday of
/// October. Its bounds in UTC.
pub fn market_day(day: NaiveDate) -> (DateTime<Utc>, DateTime<Utc>) {
    let next = day.succ_opt().unwrap_or(day);
    (cet_midnight(day), cet_midnight(next))
}

/// The market day `instant` falls in.
pub fn market_day_of(instant: DateTime<Utc>) -> NaiveDate {
    (instant + TimeDelta::hours(cet_offset_hours(instant))).date_naive()
}

/// The CET/CEST offset at `instant`: +2 from 01:00 UTC on the last Sunday of
/// March to 01:00 UTC on the last Sunday of October (the EU rule since 1996).
pub fn cet_offset_hours(instant: DateTime<Utc>) -> i64 {
    let year = instant.year();
    let (Some(spring), Some(autumn)) = (eu_switch(year, 3), eu_switch(year, 10)) else {
        return 1;
    };
    if instant >= spring && instant < autumn {
        2
    } else {
        1
    }
}

/// 01:00 UTC on the last Sunday of `month`.
fn eu_switch(year: i32, month: u32) -> Option<DateTime<Utc>> {
    let last = NaiveDate::from_ymd_opt(year, month, 31)?;
    let back = last.weekday().num_days_from_sunday();
    let sunday = last - TimeDelta::days(i64::from(back));
    debug_assert_eq!(sunday.weekday(), Weekday::Sun);
    Utc.from_local_datetime(&sunday.and_hms_opt(1, 0, 0)?).single()
}

/// Local midnight of `day` in CET/CEST, in UTC. The switches happen at 01:00 UTC,
/// never between 22:00 and 24:00 UTC, so the offset an hour before midnight UTC
/// is the offset at local midnight.
fn cet_midnight(day: NaiveDate) -> DateTime<Utc> {
    let midnight = day.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc();
    midnight - TimeDelta::hours(cet_offset_hours(midnight - TimeDelta::hours(1)))
}

/// Whether `slots` cover the whole market day `day` (23, 24 or 25 hours).
pub fn covers_day(slots: &[Slot], day: NaiveDate) -> bool {
    let (start, end) = market_day(day);
    let covered: i64 = slots
        .iter()
        .filter(|s| s.start >= start && s.start < end)
        .map(|s| i64::from(s.seconds))
        .sum();
    covered >= (end - start).num_seconds()
}

/// Slots sorted by start, without a second slot for a time already covered: when
/// two series overlap (a zone sending its hourly and its quarter-hour series), the
/// one listed first wins.
pub(crate) fn without_overlaps(slots: Vec<Slot>) -> Vec<Slot> {
    let mut kept: Vec<Slot> = Vec::with_capacity(slots.len());
    for slot in slots {
        let overlaps = kept.iter().any(|k| slot.start < k.end() && k.start < slot.end());
        if !overlaps {
            kept.push(slot);
        }
    }
    kept.sort_by_key(|s| s.start);
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| t.to_utc())
            .unwrap_or_else(|e| panic!("{s}: {e}"))
    }

    fn day(y: i32, m: u32, d: u32) -> NaiveDate {
        NaiveDate::from_ymd_opt(y, m, d).unwrap_or_else(|| panic!("date"))
    }

    #[test]
    fn market_days_are_23_24_or_25_hours_in_utc() {
        let hours = |d| {
            let (s, e) = market_day(d);
            (e - s).num_hours()
        };
        assert_eq!(market_day(day(2024, 10, 6)).0, utc("2024-10-05T22:00:00Z"));
        assert_eq!(market_day(day(2024, 1, 15)).0, utc("2024-01-14T23:00:00Z"));
        assert_eq!(hours(day(2024, 10, 6)), 24);
        // Spring forward: 2024-03-31, 2025-03-30; fall back: 2024-10-27, 2025-10-26.
        assert_eq!(hours(day(2024, 3, 31)), 23);
        assert_eq!(hours(day(2025, 3, 30)), 23);
        assert_eq!(hours(day(2024, 10, 27)), 25);
        assert_eq!(hours(day(2025, 10, 26)), 25);
        assert_eq!(
            market_day(day(2025, 10, 26)),
            (utc("2025-10-25T22:00:00Z"), utc("2025-10-26T23:00:00Z"))
        );
        assert_eq!(market_day_of(utc("2025-10-26T22:59:00Z")), day(2025, 10, 26));
        assert_eq!(market_day_of(utc("2025-10-26T23:00:00Z")), day(2025, 10, 27));
        assert_eq!(market_day_of(utc("2024-06-30T22:00:00Z")), day(2024, 7, 1));
    }

    #[test]
    fn a_day_is_covered_only_by_all_its_slots() {
        let d = day(2025, 3, 30);
        let (start, _) = market_day(d);
        let slots: Vec<Slot> = (0..23)
            .map(|h| Slot {
                start: start + TimeDelta::hours(h),
                seconds: 3600,
                eur_per_kwh: 0.1,
            })
            .collect();
        assert!(covers_day(&slots, d));
        assert!(!covers_day(&slots[1..], d));
        assert!(!covers_day(&slots, day(2025, 3, 31)));
    }

    #[test]
    fn overlapping_series_keep_the_first() {
        let t = utc("2024-10-05T22:00:00Z");
        let hour = Slot {
            start: t,
            seconds: 3600,
            eur_per_kwh: 1.0,
        };
        let quarter = Slot {
            start: t + TimeDelta::minutes(15),
            seconds: 900,
            eur_per_kwh: 2.0,
        };
        let later = Slot {
            start: t + TimeDelta::hours(1),
            seconds: 900,
            eur_per_kwh: 3.0,
        };
        assert_eq!(without_overlaps(vec![later, hour, quarter]), vec![hour, later]);
    }
}
