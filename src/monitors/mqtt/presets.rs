//! What users run, as subscriptions: Tasmota plugs, Zigbee2MQTT sensors, Shelly
//! Gen2 switches and a generic battery BMS. Each value is optional in a message
//! (Zigbee2MQTT sends what changed; a plug without metering has no `ENERGY`).

use serde::{Deserialize, Serialize};

use super::{Subscription, ValueMap};
use crate::reading::{Kind, MetricSpec, Unit};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Preset {
    /// Tasmota's `tele/<name>/SENSOR` (energy monitoring plugs: `ENERGY.*`).
    Tasmota,
    /// Zigbee2MQTT's `zigbee2mqtt/<name>` (climate sensors, metering plugs).
    Zigbee2mqtt,
    /// Shelly Gen2/Gen3's `<name>/status/switch:0` (Plus 1PM, Plus Plug S…).
    ShellyGen2,
    /// A battery BMS publishing one JSON document on `<name>`.
    Bms,
}

/// `(path, metric, unit, kind, scale)` of one preset value.
type Row = (&'static str, &'static str, Unit, Kind, f64);

const TASMOTA: &[Row] = &[
    (
        "$.ENERGY.Total",
        "energy_delivered",
        Unit::KiloWattHour,
        Kind::Counter,
        1.0,
    ),
    ("$.ENERGY.Power", "power", Unit::Watt, Kind::Gauge, 1.0),
    ("$.ENERGY.Voltage", "voltage", Unit::Volt, Kind::Gauge, 1.0),
    ("$.ENERGY.Current", "current", Unit::Ampere, Kind::Gauge, 1.0),
    ("$.ENERGY.Factor", "power_factor", Unit::None, Kind::Gauge, 1.0),
];

const ZIGBEE2MQTT: &[Row] = &[
    ("$.temperature", "temperature", Unit::Celsius, Kind::Gauge, 1.0),
    ("$.humidity", "humidity", Unit::Percent, Kind::Gauge, 1.0),
    ("$.pressure", "pressure", Unit::HectoPascal, Kind::Gauge, 1.0),
    ("$.battery", "battery", Unit::Percent, Kind::Gauge, 1.0),
    ("$.power", "power", Unit::Watt, Kind::Gauge, 1.0),
    ("$.energy", "energy_delivered", Unit::KiloWattHour, Kind::Counter, 1.0),
    ("$.voltage", "voltage", Unit::Volt, Kind::Gauge, 1.0),
    ("$.current", "current", Unit::Ampere, Kind::Gauge, 1.0),
    ("$.linkquality", "link_quality", Unit::None, Kind::Gauge, 1.0),
];

const SHELLY_GEN2: &[Row] = &[
    ("$.apower", "power", Unit::Watt, Kind::Gauge, 1.0),
    ("$.voltage", "voltage", Unit::Volt, Kind::Gauge, 1.0),
    ("$.current", "current", Unit::Ampere, Kind::Gauge, 1.0),
    // Shelly counts watt-hours; stored in kWh like every other energy counter.
    (
        "$.aenergy.total",
        "energy_delivered",
        Unit::KiloWattHour,
        Kind::Counter,
        0.001,
    ),
    ("$.temperature.tC", "temperature", Unit::Celsius, Kind::Gauge, 1.0),
];

const BMS: &[Row] = &[
    ("$.voltage", "voltage", Unit::Volt, Kind::Gauge, 1.0),
    ("$.current", "current", Unit::Ampere, Kind::Gauge, 1.0),
    ("$.power", "power", Unit::Watt, Kind::Gauge, 1.0),
    ("$.soc", "state_of_charge", Unit::Percent, Kind::Gauge, 1.0),
    ("$.temperature", "temperature", Unit::Celsius, Kind::Gauge, 1.0),
];

impl Preset {
    fn rows(self) -> &'static [Row] {
        match self {
            Preset::Tasmota => TASMOTA,
            Preset::Zigbee2mqtt => ZIGBEE2MQTT,
            Preset::ShellyGen2 => SHELLY_GEN2,
            Preset::Bms => BMS,
        }
    }

    fn topic(self, name: &str) -> String {
        match self {
            Preset::Tasmota => format!("tele/{name}/SENSOR"),
            Preset::Zigbee2mqtt => format!("zigbee2mqtt/{name}"),
            Preset::ShellyGen2 => format!("{name}/status/switch:0"),
            Preset::Bms => name.to_owned(),
        }
    }

    /// The subscription this preset stands for, for the device `name` (Tasmota's
    /// topic, Zigbee2MQTT's friendly name, the Shelly's id, the BMS's topic).
    pub fn subscription(self, name: &str) -> Subscription {
        Subscription {
            topic: self.topic(name),
            values: self
                .rows()
                .iter()
                .map(|&(path, metric, unit, kind, scale)| ValueMap {
                    metric: metric.to_owned(),
                    path: Some(path.to_owned()),
                    unit: unit.symbol().to_owned(),
                    kind,
                    scale,
                })
                .collect(),
            // Tasmota's `Time` is the plug's local time; the others send none.
            timestamp: (self == Preset::Tasmota).then(|| "$.Time".to_owned()),
        }
    }
}

/// Every metric a preset can give, for `mesura devices`.
pub fn all_metrics() -> Vec<MetricSpec> {
    let mut specs: Vec<MetricSpec> = Vec::new();
    for preset in [Preset::Tasmota, Preset::Zigbee2mqtt, Preset::ShellyGen2, Preset::Bms] {
        for &(_, metric, unit, kind, _) in preset.rows() {
            if specs.iter().any(|s| s.name == metric) {
                continue;
            }
            specs.push(match kind {
                Kind::Counter => MetricSpec::counter(metric, unit, "from a preset's MQTT messages"),
                _ => MetricSpec::gauge(metric, unit, "from a preset's MQTT messages"),
            });
        }
    }
    specs
}
