//! The one type monitors and backends share: a [`Reading`] is one value of one metric
//! of one device at one instant (UTC).

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Serialize;

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
    #[serde(rename = "kvarh")]
    KiloVarHour,
    #[serde(rename = "VA")]
    VoltAmpere,
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
            Unit::KiloVarHour => "kvarh",
            Unit::VoltAmpere => "VA",
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
            Unit::None => "",
        }
    }
}

impl fmt::Display for Unit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.symbol())
    }
}

/// Whether a metric is a level or a running total. Counters are monotonic
/// (Home Assistant's `total_increasing`), which is what energy statistics need.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
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
    pub metric: MetricName,
    pub value: Value,
    pub unit: Unit,
    pub kind: Kind,
    pub timestamp: DateTime<Utc>,
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
            metric: Arc::from(self.name),
            value: Value::Number(value),
            unit: self.unit,
            kind: self.kind,
            timestamp,
        }
    }
}
