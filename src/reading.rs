//! The one type monitors and backends share: a [`Reading`] is one value of one metric
//! of one device at one instant (UTC).

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// A device id: the stem of its file in `config.d/`. Cheap to clone.
pub type DeviceId = Arc<str>;

/// A canonical metric name (`power_delivered`, `gas_delivered`, …). Monitors use
/// `&'static str` names where the set is fixed and build `Arc<str>` for dynamic
/// ones (zones, point maps); both are cheap to clone.
pub type MetricName = Arc<str>;

/// A measured value. Numbers are what nearly every metric carries; text is kept
/// for the few identifiers worth storing (a tariff code, a mode).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Value {
    Number(f64),
    Text(Arc<str>),
}

impl Value {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Number(v) => Some(*v),
            Value::Text(_) => None,
        }
    }
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Number(v) => write!(f, "{v}"),
            Value::Text(t) => f.write_str(t),
        }
    }
}

impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::Number(v)
    }
}

/// The unit a value is stored in. Monitors convert to these canonical units
/// (Wh → kWh, kW → W) so that one metric name always means one unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
pub enum Unit {
    #[serde(rename = "W")]
    Watt,
    #[serde(rename = "kWh")]
    KiloWattHour,
    #[serde(rename = "var")]
    Var,
    #[serde(rename = "VA")]
    VoltAmpere,
    #[serde(rename = "kVAh")]
    KiloVoltAmpereHour,
    #[serde(rename = "kvarh")]
    KiloVarHour,
    #[serde(rename = "V")]
    Volt,
    #[serde(rename = "A")]
    Ampere,
    #[serde(rename = "Hz")]
    Hertz,
    #[serde(rename = "m³")]
    CubicMetre,
    #[serde(rename = "GJ")]
    GigaJoule,
    #[serde(rename = "°C")]
    Celsius,
    #[serde(rename = "%")]
    Percent,
    #[serde(rename = "hPa")]
    HectoPascal,
    #[serde(rename = "m/s")]
    MetrePerSecond,
    #[serde(rename = "°")]
    Degree,
    #[serde(rename = "m")]
    Metre,
    #[serde(rename = "mm")]
    Millimetre,
    #[serde(rename = "l/h")]
    LitrePerHour,
    #[serde(rename = "B")]
    Byte,
    #[serde(rename = "s")]
    Second,
    #[serde(rename = "h")]
    Hour,
    /// A price per unit of energy (day-ahead prices; the `prices` device type).
    #[serde(rename = "EUR/kWh")]
    EuroPerKiloWattHour,
    /// A money amount (energy costs).
    #[serde(rename = "EUR")]
    Euro,
    #[serde(rename = "")]
    None,
}

impl Unit {
    /// The symbol as stored in the `metrics` catalogue and shown to users.
    pub fn symbol(self) -> &'static str {
        match self {
            Unit::Watt => "W",
            Unit::KiloWattHour => "kWh",
            Unit::Var => "var",
            Unit::VoltAmpere => "VA",
            Unit::KiloVoltAmpereHour => "kVAh",
            Unit::KiloVarHour => "kvarh",
            Unit::Volt => "V",
            Unit::Ampere => "A",
            Unit::Hertz => "Hz",
            Unit::CubicMetre => "m³",
            Unit::GigaJoule => "GJ",
            Unit::Celsius => "°C",
            Unit::Percent => "%",
            Unit::HectoPascal => "hPa",
            Unit::MetrePerSecond => "m/s",
            Unit::Degree => "°",
            Unit::Metre => "m",
            Unit::Millimetre => "mm",
            Unit::LitrePerHour => "l/h",
            Unit::Byte => "B",
            Unit::Second => "s",
            Unit::Hour => "h",
            Unit::EuroPerKiloWattHour => "EUR/kWh",
            Unit::Euro => "EUR",
            Unit::None => "",
        }
    }

    /// The unit with this symbol (as stored in the outbox and the catalogue).
    pub fn from_symbol(symbol: &str) -> Option<Unit> {
        Unit::ALL.iter().copied().find(|u| u.symbol() == symbol)
    }

    pub const ALL: &'static [Unit] = &[
        Unit::Watt,
        Unit::KiloWattHour,
        Unit::Var,
        Unit::KiloVarHour,
        Unit::VoltAmpere,
        Unit::KiloVoltAmpereHour,
        Unit::Volt,
        Unit::Ampere,
        Unit::Hertz,
        Unit::CubicMetre,
        Unit::GigaJoule,
        Unit::Celsius,
        Unit::Percent,
        Unit::HectoPascal,
        Unit::MetrePerSecond,
        Unit::Degree,
        Unit::Metre,
        Unit::Millimetre,
        Unit::LitrePerHour,
        Unit::Byte,
        Unit::Second,
        Unit::Hour,
        Unit::EuroPerKiloWattHour,
        Unit::Euro,
        Unit::None,
    ];
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

/// Whether a metric is a level or a running total. Counters are monotonic
/// (Home Assistant's `total_increasing`), which is what energy statistics need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Gauge,
    Counter,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Gauge => "gauge",
            Kind::Counter => "counter",
        }
    }
}

/// One value of one metric of one device.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Reading {
    pub device: DeviceId,
    /// The device's type (`dsmr`, `simulated`…), stamped by the supervisor; used in
    /// MQTT topics and uplink payloads. Monitors may leave it empty.
    pub device_type: &'static str,
    pub metric: MetricName,
    pub value: Value,
    pub unit: Unit,
    pub kind: Kind,
    pub timestamp: DateTime<Utc>,
}

/// One month of a meter's peak-demand record (the Belgian capacity tariff).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MonthPeak {
    /// `YYYY-MM`, in the meter's local calendar.
    pub month: String,
    /// The month's highest quarter-hour average demand, in W.
    pub peak_w: f64,
    /// When that quarter hour was; `None` when the meter sent no time (no peak).
    pub peak_at: Option<DateTime<Utc>>,
}

/// A meter's monthly peaks as one message beside its readings: the closed months
/// it reports (DSMR `0-0:98.1.0`), the running month so far and the rolling average
/// the capacity tariff bills. Not a [`Reading`]: it is a record per month that a
/// newer message supersedes, not a time series (see docs/architecture.md).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MonthlyPeaks {
    pub device: DeviceId,
    /// The closed months the meter reports, oldest first.
    pub months: Vec<MonthPeak>,
    /// The running month and its peak so far, when the meter sends one.
    pub running: Option<MonthPeak>,
    /// The least a month counts in the average, in W (the regulator's minimum).
    pub minimum_w: f64,
    /// The rolling 12-month average of the monthly peaks through the running month, in W.
    pub rolling_average_w: Option<f64>,
    /// How many months that average is taken over (12 after a year of history).
    pub rolling_average_months: usize,
}

/// What a monitor can report: used for `mesura devices`, discovery and docs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetricSpec {
    pub name: &'static str,
    pub unit: Unit,
    pub kind: Kind,
    pub description: &'static str,
}

impl MetricSpec {
    pub const fn gauge(name: &'static str, unit: Unit, description: &'static str) -> Self {
        MetricSpec {
            name,
            unit,
            kind: Kind::Gauge,
            description,
        }
    }

    pub const fn counter(name: &'static str, unit: Unit, description: &'static str) -> Self {
        MetricSpec {
            name,
            unit,
            kind: Kind::Counter,
            description,
        }
    }

    /// A reading of this metric.
    pub fn reading(&self, device: &DeviceId, value: f64, timestamp: DateTime<Utc>) -> Reading {
        Reading {
            device: device.clone(),
            device_type: "",
            metric: Arc::from(self.name),
            value: Value::Number(value),
            unit: self.unit,
            kind: self.kind,
            timestamp,
        }
    }
}

/// A name made at run time (a point map's metrics, a zone, a disk path's slug) as
/// the `&'static str` a [`MetricSpec`] holds. Each distinct name is leaked once and
/// reused, so rebuilding monitors on every config reload does not grow memory.
pub fn intern(name: &str) -> &'static str {
    static NAMES: OnceLock<Mutex<HashSet<&'static str>>> = OnceLock::new();
    // A poisoned lock only means another thread panicked while inserting; the
    // set is still consistent.
    let mut names = NAMES
        .get_or_init(|| Mutex::new(HashSet::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    if let Some(known) = names.get(name) {
        return known;
    }
    let leaked: &'static str = Box::leak(name.to_owned().into_boxed_str());
    names.insert(leaked);
    leaked
}

#[cfg(test)]
mod intern_tests {
    use super::intern;

    #[test]
    fn the_same_name_is_leaked_once_and_reused() {
        let first = intern("disk_free_test_intern");
        let again = intern(&String::from("disk_free_test_intern"));
        assert!(std::ptr::eq(first, again));
        assert_ne!(intern("disk_free_other_intern"), first);
    }
}
