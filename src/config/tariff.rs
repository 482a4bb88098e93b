//! The `tariff:` section of a consumption meter's device file: how the energy it
//! counts is priced (docs/costs.md). The cost job (`backends::sqlite::cost`) reads
//! it; nothing here does I/O.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `tariff:` on a meter's device file.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TariffConfig {
    /// The id of a `prices` device whose stored day-ahead prices (EUR/kWh, one row
    /// per slot) are the energy price of each slot. Without it, `fixed_price` is the
    /// price of every slot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prices: Option<String>,
    /// EUR/kWh used for a slot that has no day-ahead price (or for every slot without
    /// `prices`). Without it, a slot with no price is not costed until its price arrives.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_price: Option<f64>,
    /// The supplier's markup, EUR/kWh, added to the energy price.
    #[serde(default = "default_zero")]
    pub markup: f64,
    /// Energy tax, EUR/kWh, added to the energy price.
    #[serde(default = "default_zero")]
    pub energy_tax: f64,
    /// VAT in percent, applied to the sum of price, markup, tax and grid fee, and to
    /// `daily_fixed`.
    #[serde(default = "default_zero")]
    pub vat_percent: f64,
    /// Grid fees per kWh by time-of-use window (local time); the first window that
    /// matches a slot's start applies, none: no fee.
    #[serde(default)]
    pub grid_fees: Vec<GridFee>,
    /// Fixed costs per local day, EUR before VAT (standing charge, grid connection;
    /// negative for a tax rebate).
    #[serde(default = "default_zero")]
    pub daily_fixed: f64,
    /// Local standard time as an offset from UTC (`+01:00` for CET): the day of
    /// `daily_fixed`, the windows of `grid_fees` and `group=day` are local days.
    #[serde(default = "default_utc_offset")]
    pub utc_offset: String,
    /// `eu`: summer time from the last Sunday of March to the last Sunday of October,
    /// 01:00 UTC (every EU country); `none`: the offset all year.
    #[serde(default = "default_summer_time")]
    pub summer_time: SummerTime,
    /// How returned energy is credited.
    #[serde(default)]
    pub returned: ReturnedRule,
    /// Which counters are consumption and return (default: by device type).
    #[serde(default)]
    pub counters: CounterNames,
    /// The slot length where no day-ahead price gives one (humantime, 15m or 1h).
    #[serde(default = "default_slot", with = "super::duration")]
    pub slot: Duration,
    /// Two readings further apart than this are a gap: the energy counted across it
    /// is spread over its slots in proportion to their length and marked estimated.
    #[serde(default = "default_max_gap", with = "super::duration")]
    pub max_gap: Duration,
    /// Gas, priced per m³, with its calorific value for kWh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gas: Option<GasTariff>,
}

/// A time-of-use window of `grid_fees`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GridFee {
    /// Weekdays the window applies on (`mon` … `sun`); default every day.
    #[serde(default = "default_days")]
    pub days: Vec<Weekday>,
    /// Local start time, `HH:MM` (inclusive).
    #[serde(default = "default_from")]
    pub from: String,
    /// Local end time, `HH:MM` (exclusive; `24:00` is midnight at the end of the day).
    #[serde(default = "default_to")]
    pub to: String,
    /// The fee, EUR/kWh before VAT.
    pub per_kwh: f64,
}

/// A weekday of a grid-fee window.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
#[allow(missing_docs)]
pub enum Weekday {
    Mon,
    Tue,
    Wed,
    Thu,
    Fri,
    Sat,
    Sun,
}

impl Weekday {
    /// Days from Monday, as `chrono::Weekday::num_days_from_monday`.
    pub fn index(self) -> u32 {
        self as u32
    }
}

/// `summer_time:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SummerTime {
    /// The EU rule: +1 h from the last Sunday of March to the last Sunday of
    /// October, both at 01:00 UTC.
    Eu,
    /// No summer time.
    None,
}

/// `returned:` how returned (exported) energy is credited.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ReturnedRule {
    /// `same`: at the slot's all-in price (net metering); `spot`: the day-ahead
    /// price plus `markup` (or `fixed_price` where none is known); `fixed`: `fixed_price`.
    #[serde(default = "default_return_price")]
    pub price: ReturnPrice,
    /// EUR/kWh added to the day-ahead price for `spot` (negative: the supplier's fee).
    #[serde(default = "default_zero")]
    pub markup: f64,
    /// EUR/kWh for `fixed`, and for `spot` in a slot with no day-ahead price.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_price: Option<f64>,
    /// Whether VAT (`vat_percent`) is added to the credit of `spot` and `fixed`.
    #[serde(default)]
    pub vat: bool,
}

impl Default for ReturnedRule {
    fn default() -> Self {
        ReturnedRule {
            price: default_return_price(),
            markup: 0.0,
            fixed_price: None,
            vat: false,
        }
    }
}

/// `returned.price`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ReturnPrice {
    /// The slot's all-in consumption price.
    Same,
    /// The day-ahead price plus `returned.markup`.
    Spot,
    /// `returned.fixed_price`.
    Fixed,
}

/// `counters:` the meter's counter metrics that are costed.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CounterNames {
    /// kWh counters of consumption, summed (DSMR: `energy_delivered_tariff1` and `2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delivered: Option<Vec<String>>,
    /// kWh counters of returned energy, summed (DSMR: `energy_returned_tariff1` and `2`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub returned: Option<Vec<String>>,
    /// The m³ gas counter (DSMR: `gas_delivered`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gas: Option<String>,
}

/// `gas:` gas priced per m³.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GasTariff {
    /// The supplier's price, EUR/m³ before VAT.
    pub price_per_m3: f64,
    /// Energy tax, EUR/m³.
    #[serde(default = "default_zero")]
    pub energy_tax_per_m3: f64,
    /// Fixed gas costs per local day, EUR before VAT.
    #[serde(default = "default_zero")]
    pub daily_fixed: f64,
    /// kWh per m³ (9.769 for Dutch Groningen-quality gas, 35.17 MJ/m³); the cost
    /// table's `kwh` of gas is m³ × this.
    #[serde(default = "default_calorific_value")]
    pub calorific_value: f64,
    /// Calorific values that change by period, as the grid operator publishes them
    /// (German bills use a monthly Brennwert): each applies from its local date on;
    /// before the first, `calorific_value` applies.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub calorific_values: Vec<CalorificValue>,
}

/// A calorific value from a date on.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CalorificValue {
    /// The first local day it applies to (`2026-01-01`).
    pub from: chrono::NaiveDate,
    /// kWh per m³.
    pub value: f64,
}

impl GasTariff {
    /// The kWh per m³ of gas used on local day `day`.
    pub fn calorific_value_on(&self, day: chrono::NaiveDate) -> f64 {
        self.calorific_values
            .iter()
            .filter(|c| c.from <= day)
            .max_by_key(|c| c.from)
            .map_or(self.calorific_value, |c| c.value)
    }
}

pub(crate) fn default_zero() -> f64 {
    0.0
}
pub(crate) fn default_utc_offset() -> String {
    "+01:00".into()
}
pub(crate) fn default_summer_time() -> SummerTime {
    SummerTime::Eu
}
pub(crate) fn default_slot() -> Duration {
    Duration::from_secs(3600)
}
pub(crate) fn default_max_gap() -> Duration {
    Duration::from_secs(900)
}
pub(crate) fn default_days() -> Vec<Weekday> {
    use Weekday::*;
    vec![Mon, Tue, Wed, Thu, Fri, Sat, Sun]
}
pub(crate) fn default_from() -> String {
    "00:00".into()
}
pub(crate) fn default_to() -> String {
    "24:00".into()
}
pub(crate) fn default_return_price() -> ReturnPrice {
    ReturnPrice::Same
}
pub(crate) fn default_calorific_value() -> f64 {
    9.769
}

/// The counters a device type reports consumption and return in, when `counters:`
/// does not say: (delivered, returned, gas).
pub fn default_counters(device_type: &str) -> (Vec<String>, Vec<String>, Option<String>) {
    let names = |list: &[&str]| list.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    match device_type {
        // The P1 meters (and the simulated one, shaped like them): tariff 1 and 2.
        "dsmr" | "homewizard" | "simulated" => (
            names(&["energy_delivered_tariff1", "energy_delivered_tariff2"]),
            names(&["energy_returned_tariff1", "energy_returned_tariff2"]),
            Some("gas_delivered".into()),
        ),
        // The modbus presets (SDM630, SDM120) name them so.
        _ => (names(&["energy_import"]), names(&["energy_export"]), None),
    }
}

/// `HH:MM` (00:00 … 24:00) as minutes since midnight.
pub fn parse_hhmm(text: &str) -> Option<u32> {
    let (h, m) = text.trim().split_once(':')?;
    let (h, m): (u32, u32) = (h.parse().ok()?, m.parse().ok()?);
    let minutes = h * 60 + m;
    (m < 60 && minutes <= 24 * 60).then_some(minutes)
}

/// `+HH:MM` / `-HH:MM` as seconds east of UTC.
pub fn parse_offset(text: &str) -> Option<i32> {
    let text = text.trim();
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let minutes = parse_hhmm(rest)?;
    (minutes <= 14 * 60).then(|| sign * i32::try_from(minutes * 60).unwrap_or(0))
}

impl TariffConfig {
    /// Ranges and combinations serde cannot check: `Err((key, message))`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        let err = |key: &str, message: &str| Err((format!("tariff.{key}"), message.to_owned()));
        if self.prices.is_none() && self.fixed_price.is_none() {
            return err("prices", "give a prices device (`prices:`), a `fixed_price`, or both");
        }
        if !(0.0..=100.0).contains(&self.vat_percent) {
            return err("vat_percent", "must be between 0 and 100");
        }
        if parse_offset(&self.utc_offset).is_none() {
            return err("utc_offset", "must be `+HH:MM` or `-HH:MM`, e.g. `+01:00`");
        }
        if self.slot.as_secs() < 60 || 86_400 % self.slot.as_secs() != 0 {
            return err("slot", "must divide a day into whole minutes (15m, 30m, 1h)");
        }
        if self.max_gap.as_secs() == 0 {
            return err("max_gap", "must be more than 0s");
        }
        for fee in &self.grid_fees {
            match (parse_hhmm(&fee.from), parse_hhmm(&fee.to)) {
                (Some(a), Some(b)) if a < b => {}
                _ => return err("grid_fees", "`from` and `to` are HH:MM with from before to"),
            }
        }
        if self.returned.price == ReturnPrice::Fixed && self.returned.fixed_price.is_none() {
            return err("returned.price", "`fixed` needs `returned.fixed_price`");
        }
        if let Some(gas) = &self.gas {
            if gas.calorific_value <= 0.0 || !gas.calorific_value.is_finite() {
                return err("gas.calorific_value", "must be above 0 (kWh/m³)");
            }
            if gas
                .calorific_values
                .iter()
                .any(|c| c.value <= 0.0 || !c.value.is_finite())
            {
                return err("gas.calorific_values", "every `value` must be above 0 (kWh/m³)");
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_calorific_value_of_a_day_is_the_latest_that_began() {
        let gas: GasTariff = serde_yaml_ng::from_str(
            "price_per_m3: 1.2\ncalorific_value: 9.769\ncalorific_values:\n  - {from: 2026-02-01, value: 11.3}\n  - {from: 2026-01-01, value: 11.1}\n",
        )
        .expect("gas");
        let day = |s: &str| chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").expect("date");
        assert_eq!(gas.calorific_value_on(day("2025-12-31")), 9.769);
        assert_eq!(gas.calorific_value_on(day("2026-01-01")), 11.1);
        assert_eq!(gas.calorific_value_on(day("2026-01-31")), 11.1);
        assert_eq!(gas.calorific_value_on(day("2026-03-15")), 11.3);
    }

    #[test]
    fn times_and_offsets_parse() {
        assert_eq!(parse_hhmm("07:30"), Some(450));
        assert_eq!(parse_hhmm("24:00"), Some(1440));
        assert_eq!(parse_hhmm("24:01"), None);
        assert_eq!(parse_hhmm("7:60"), None);
        assert_eq!(parse_offset("+01:00"), Some(3600));
        assert_eq!(parse_offset("-05:30"), Some(-19_800));
        assert_eq!(parse_offset("01:00"), None);
    }

    #[test]
    fn a_tariff_needs_a_price() {
        let t: TariffConfig = serde_yaml_ng::from_str("markup: 0.02\n").expect("parses");
        assert_eq!(
            t.validate()
                .map_err(|(key, message)| (key, message.contains("fixed_price"))),
            Err(("tariff.prices".to_owned(), true))
        );
        let t: TariffConfig = serde_yaml_ng::from_str("fixed_price: 0.1\n").expect("parses");
        assert_eq!(t.validate(), Ok(()));
        assert_eq!(t.slot, default_slot());
        assert_eq!(t.summer_time, SummerTime::Eu);
    }
}
