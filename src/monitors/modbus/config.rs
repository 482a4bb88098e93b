//! `type: modbus` settings and the point map: inline `points:`, a `points_file:`
//! or a shipped `preset:` (see docs/devices/modbus.md).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::config::common::CommonConfig;
use crate::monitors::{DeviceType, Monitor, MonitorContext, MonitorError};
use crate::protocols::modbus::plan::Limits;
use crate::protocols::modbus::point::{DataType, RegisterKind, WordOrder};
use crate::reading::{Kind, MetricSpec, Unit};

/// `type: modbus`. Either `host` (Modbus TCP) or `serial_port` (Modbus RTU).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct ModbusConfig {
    /// Modbus TCP: the device's or gateway's host name or IP address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Modbus TCP port.
    #[serde(default = "default_port")]
    pub port: u16,
    /// Modbus RTU: the serial device of the RS485 adapter, e.g. `/dev/ttyUSB0`.
    /// Several devices on one port share the bus and take turns.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_port: Option<String>,
    /// RTU line speed.
    #[serde(default = "default_baud_rate")]
    pub baud_rate: u32,
    /// RTU parity: `none`, `even` or `odd`.
    #[serde(default)]
    pub parity: Parity,
    /// RTU stop bits: 1 or 2.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// The device's unit (slave) id. Modbus TCP devices usually ignore it;
    /// gateways use it to pick the device behind them.
    #[serde(default = "default_unit_id")]
    pub unit_id: u8,
    /// How long to wait for the answer to one request before the link counts as
    /// failed (it is then reconnected).
    #[serde(default = "default_timeout", with = "crate::config::duration")]
    pub timeout: Duration,
    /// Unused registers one request may read through to join two points (0 for
    /// devices that refuse reads touching undefined addresses). Unset: the
    /// preset's or points file's value, else [`default_max_gap`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_gap: Option<u16>,
    /// Most registers per request (the protocol's limit is 125; some devices
    /// accept fewer, Eastron meters 80). Unset: the preset's or points file's
    /// value, else [`default_max_registers`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_registers: Option<u16>,
    /// How long a point the device refuses (an exception to a request for that
    /// point alone) is left out of the poll before it is asked for again.
    #[serde(default = "default_refused_point_retry", with = "crate::config::duration")]
    pub refused_point_retry: Duration,
    /// A shipped point map: `sdm630` or `sunspec_inverter`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preset: Option<String>,
    /// A YAML point map file (a `points:` list), relative to this device file's
    /// directory or absolute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points_file: Option<PathBuf>,
    /// Points listed in the device file itself.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub points: Vec<PointConfig>,
    /// Discover the SunSpec model chain and read the inverter model (101/102/103).
    #[serde(default)]
    pub sunspec: bool,
    /// Where the `SunS` marker is; by default 40000, 0 and 50000 are tried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sunspec_address: Option<u16>,
    /// Lets `POST /api/devices/<id>/write` set the map's `writable` points; the
    /// API needs a token too (docs/control.md).
    #[serde(default)]
    pub allow_writes: bool,
}

pub fn default_port() -> u16 {
    502
}
pub fn default_baud_rate() -> u32 {
    9600
}
pub fn default_stop_bits() -> u8 {
    1
}
pub fn default_unit_id() -> u8 {
    1
}
pub fn default_timeout() -> Duration {
    Duration::from_secs(2)
}
pub fn default_max_gap() -> u16 {
    10
}
pub fn default_max_registers() -> u16 {
    125
}
pub fn default_refused_point_retry() -> Duration {
    Duration::from_secs(600)
}

/// RTU parity.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Parity {
    #[default]
    None,
    Even,
    Odd,
}

/// One value in the point map.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PointConfig {
    /// The metric name it is stored as (lowercase letters, digits, `_`).
    pub name: String,
    /// `holding` (default), `input`, `coil` or `discrete`.
    #[serde(default = "default_register")]
    pub register: RegisterKind,
    /// The 0-based address on the wire (a manual's "register 30001" is input
    /// register address 0; "40001" is holding register address 0).
    pub address: u16,
    /// u16 (default), i16, u32, i32, u64, i64, f32, f64, bool or string.
    #[serde(rename = "type", default = "default_type")]
    pub data_type: DataType,
    /// Length of a string, in registers (two characters each).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u16>,
    /// `big` (high word first, default) or `little`, for 32- and 64-bit values.
    #[serde(default)]
    pub word_order: WordOrder,
    /// The stored value is `raw · scale + offset`.
    #[serde(default = "default_scale")]
    pub scale: f64,
    /// Added after scaling.
    #[serde(default)]
    pub offset: f64,
    /// Another point (by name) holding a power-of-ten exponent the raw value is
    /// multiplied by first: SunSpec's `*_SF` registers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_factor: Option<String>,
    /// Raw register values that mean "no value" (e.g. 0x8000 and 0xFFFF in
    /// SunSpec): the point is then left out of the poll.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub invalid: Vec<u64>,
    /// The unit symbol: W, kWh, var, kvarh, VA, kVAh, V, A, Hz, °C, %, … (none by default).
    #[serde(default = "default_unit", with = "super::unit_symbol")]
    pub unit: Unit,
    /// `gauge` (default) or `counter` (a monotonic total, such as energy).
    #[serde(default = "default_kind")]
    pub kind: Kind,
    /// `false` reads the point (as a scale factor for others) without storing it.
    #[serde(default = "default_store")]
    pub store: bool,
    /// What the point is, for people reading the map.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// A holding register the API may set (docs/control.md); needs `min` and `max`.
    #[serde(default)]
    pub writable: bool,
    /// The lowest value a write may set, in the point's unit (after scaling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min: Option<f64>,
    /// The highest value a write may set, in the point's unit (after scaling).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<f64>,
}

fn default_register() -> RegisterKind {
    RegisterKind::Holding
}
fn default_type() -> DataType {
    DataType::U16
}
fn default_scale() -> f64 {
    1.0
}
fn default_unit() -> Unit {
    Unit::None
}
fn default_kind() -> Kind {
    Kind::Gauge
}
fn default_store() -> bool {
    true
}

/// A point map file (a preset or a `points_file`): `points:`, and the request
/// limits of the device it describes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PointsFile {
    /// Most registers the device answers in one request, from its manual; the
    /// device file's `max_registers` wins over it.
    #[serde(default)]
    pub max_registers: Option<u16>,
    /// Unused registers the device lets one request read through; the device
    /// file's `max_gap` wins over it.
    #[serde(default)]
    pub max_gap: Option<u16>,
    pub points: Vec<PointConfig>,
}

/// The full point map of a device and the request limits its map files set.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PointMap {
    pub points: Vec<PointConfig>,
    /// The tightest `max_registers` of the preset and the points file, if any set one.
    pub max_registers: Option<u16>,
    /// The tightest `max_gap` of the preset and the points file, if any set one.
    pub max_gap: Option<u16>,
}

impl PointMap {
    fn add(&mut self, file: PointsFile) {
        let tightest = |a: Option<u16>, b: Option<u16>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        self.max_registers = tightest(self.max_registers, file.max_registers);
        self.max_gap = tightest(self.max_gap, file.max_gap);
        self.points.extend(file.points);
    }

    /// The planner's limits: the device file's keys, else the map's, else the defaults.
    pub fn limits(&self, config: &ModbusConfig) -> Limits {
        Limits {
            max_gap: config.max_gap.or(self.max_gap).unwrap_or_else(default_max_gap),
            max_registers: config
                .max_registers
                .or(self.max_registers)
                .unwrap_or_else(default_max_registers),
            ..Limits::default()
        }
    }
}

/// The shipped presets, embedded so they work whatever the working directory.
pub const PRESETS: &[(&str, &str)] = &[
    ("sdm630", include_str!("../../../presets/modbus/sdm630.yaml")),
    (
        "sunspec_inverter",
        include_str!("../../../presets/modbus/sunspec_inverter.yaml"),
    ),
];

impl DeviceType for ModbusConfig {
    fn default_poll_interval() -> Duration {
        Duration::from_secs(10)
    }

    fn allows_writes(&self) -> bool {
        self.allow_writes
    }

    fn validate(&self, _common: &CommonConfig) -> Result<(), (String, String)> {
        let err = |key: &str, message: String| Err((key.to_owned(), message));
        match (&self.host, &self.serial_port) {
            (Some(_), Some(_)) => {
                return err(
                    "serial_port",
                    "set either `host` (Modbus TCP) or `serial_port` (Modbus RTU), not both".into(),
                )
            }
            (None, None) => return err("host", "set `host` (Modbus TCP) or `serial_port` (Modbus RTU)".into()),
            (Some(h), None) if h.trim().is_empty() => return err("host", "must not be empty".into()),
            (None, Some(p)) if p.trim().is_empty() => return err("serial_port", "must not be empty".into()),
            _ => {}
        }
        if !(300..=921_600).contains(&self.baud_rate) {
            return err("baud_rate", format!("{} is not a serial line speed", self.baud_rate));
        }
        if !matches!(self.stop_bits, 1 | 2) {
            return err("stop_bits", "must be 1 or 2".into());
        }
        if self.unit_id > 247 {
            return err("unit_id", "must be 0 to 247".into());
        }
        if self.timeout < Duration::from_millis(10) || self.timeout > Duration::from_secs(60) {
            return err("timeout", "must be between 10ms and 60s".into());
        }
        if self.max_registers.is_some_and(|n| !(1..=125).contains(&n)) {
            return err("max_registers", "must be 1 to 125".into());
        }
        if self.refused_point_retry < Duration::from_secs(1)
            || self.refused_point_retry > Duration::from_secs(7 * 86_400)
        {
            return err("refused_point_retry", "must be between 1s and 7d".into());
        }
        if let Some(preset) = &self.preset {
            if preset_text(preset).is_none() {
                return err(
                    "preset",
                    format!(
                        "unknown preset `{preset}`; shipped presets: {}",
                        preset_names().join(", ")
                    ),
                );
            }
        }
        if self.points.is_empty() && self.points_file.is_none() && self.preset.is_none() && !self.sunspec {
            return err(
                "points",
                "nothing to read: list `points:`, or set `points_file:`, `preset:` or `sunspec: true`".into(),
            );
        }
        validate_points(&self.points).map_err(|m| ("points".to_owned(), m))
    }

    fn metrics() -> Vec<MetricSpec> {
        super::all_metrics()
    }

    /// A relative `points_file` is found beside the device file.
    fn build(&self, ctx: MonitorContext) -> Result<Box<dyn Monitor>, MonitorError> {
        let dir = ctx.file.parent().unwrap_or_else(|| Path::new(".")).to_path_buf();
        Ok(Box::new(super::ModbusMonitor::new(self, &dir, ctx)?))
    }
}

pub fn preset_names() -> Vec<&'static str> {
    PRESETS.iter().map(|(n, _)| *n).collect()
}

pub fn preset_text(name: &str) -> Option<&'static str> {
    PRESETS.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Checks one map: names, lengths, types against tables, scale factors.
pub fn validate_points(points: &[PointConfig]) -> Result<(), String> {
    let mut names = HashSet::new();
    for p in points {
        let at = format!("point `{}`", p.name);
        let valid_name = !p.name.is_empty()
            && p.name.len() <= 64
            && p.name
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            && !p.name.starts_with(|c: char| c.is_ascii_digit());
        if !valid_name {
            return Err(format!(
                "{at}: a name is 1 to 64 lowercase letters, digits and `_`, not starting with a digit"
            ));
        }
        if !names.insert(p.name.as_str()) {
            return Err(format!("{at} is listed twice"));
        }
        if p.register.is_bits() && p.data_type != DataType::Bool {
            return Err(format!(
                "{at}: a {} holds single bits, so its type is `bool`",
                p.register.as_str()
            ));
        }
        match (p.data_type, p.length) {
            (DataType::String, None) => return Err(format!("{at}: a string needs `length` (in registers)")),
            (DataType::String, Some(n)) if n == 0 || n > 125 => {
                return Err(format!("{at}: `length` must be 1 to 125 registers"))
            }
            (DataType::String, Some(_)) if p.kind == Kind::Counter || p.scale_factor.is_some() => {
                return Err(format!("{at}: a string cannot be a counter or scaled"))
            }
            (DataType::String, Some(_)) => {}
            (_, Some(_)) => return Err(format!("{at}: `length` is only for strings")),
            _ => {}
        }
        if u32::from(p.address) + u32::from(p.data_type.span(p.length.unwrap_or(1))) > 65536 {
            return Err(format!("{at}: runs past address 65535"));
        }
        if !p.scale.is_finite() || p.scale == 0.0 || !p.offset.is_finite() {
            return Err(format!("{at}: `scale` must be a non-zero number and `offset` a number"));
        }
        p.check_writable().map_err(|m| format!("{at}: {m}"))?;
    }
    for p in points {
        if let Some(sf) = &p.scale_factor {
            match points.iter().find(|q| &q.name == sf) {
                Some(q) if q.data_type == DataType::I16 => {}
                Some(_) => return Err(format!("point `{}`: scale factor `{sf}` must be an i16 point", p.name)),
                None => {
                    return Err(format!(
                        "point `{}`: scale factor `{sf}` is not a point of this map",
                        p.name
                    ))
                }
            }
        }
    }
    Ok(())
}

/// Where the whole point map comes from.
#[derive(Debug, thiserror::Error)]
pub enum MapError {
    #[error("cannot read points_file {}: {source}", path.display())]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{origin}: {message}")]
    Invalid { origin: String, message: String },
}

/// The full point map: preset, then `points_file`, then inline points. `dir` is
/// the device file's directory, for a relative `points_file`.
pub fn load_points(config: &ModbusConfig, dir: &Path) -> Result<Vec<PointConfig>, MapError> {
    load_map(config, dir).map(|m| m.points)
}

/// The full point map with the request limits its files set.
pub fn load_map(config: &ModbusConfig, dir: &Path) -> Result<PointMap, MapError> {
    let mut map = PointMap::default();
    if let Some(name) = &config.preset {
        let text = preset_text(name).ok_or_else(|| MapError::Invalid {
            origin: format!("preset `{name}`"),
            message: "no such preset".into(),
        })?;
        map.add(parse_map(text, &format!("preset `{name}`"))?);
    }
    if let Some(file) = &config.points_file {
        let path = if file.is_absolute() {
            file.clone()
        } else {
            dir.join(file)
        };
        let text = crate::config::parse::read_config_file(&path).map_err(|e| MapError::Invalid {
            origin: path.display().to_string(),
            message: e.to_string(),
        })?;
        map.add(parse_map(&text, &path.display().to_string())?);
    }
    map.points.extend(config.points.iter().cloned());
    validate_points(&map.points).map_err(|message| MapError::Invalid {
        origin: "point map".into(),
        message,
    })?;
    Ok(map)
}

/// Parses a point map file's text.
pub fn parse_points(text: &str, origin: &str) -> Result<Vec<PointConfig>, MapError> {
    parse_map(text, origin).map(|f| f.points)
}

/// Parses a point map file's text, limits included.
pub fn parse_map(text: &str, origin: &str) -> Result<PointsFile, MapError> {
    let file: PointsFile = serde_yaml_ng::from_str(text).map_err(|e| MapError::Invalid {
        origin: origin.to_owned(),
        message: e.to_string(),
    })?;
    if file.max_registers.is_some_and(|n| !(1..=125).contains(&n)) {
        return Err(MapError::Invalid {
            origin: origin.to_owned(),
            message: "`max_registers` must be 1 to 125".into(),
        });
    }
    Ok(file)
}

impl PointConfig {
    /// Checks a point's write keys (part of `validate_points`).
    pub(super) fn check_writable(&self) -> Result<(), String> {
        let p = self;
        if !p.writable {
            return match (p.min, p.max) {
                (None, None) => Ok(()),
                _ => Err("`min` and `max` are for `writable: true` points".into()),
            };
        }
        if p.register != RegisterKind::Holding {
            return Err(format!(
                "only holding registers can be written, not a {}",
                p.register.as_str()
            ));
        }
        if p.data_type == DataType::String {
            return Err("a string point cannot be writable".into());
        }
        if p.scale_factor.is_some() {
            // The exponent lives in another register the device may change: a write
            // could not know which raw value it is setting.
            return Err("a point with `scale_factor` cannot be writable".into());
        }
        match (p.min, p.max) {
            (Some(min), Some(max)) if min.is_finite() && max.is_finite() && min <= max => Ok(()),
            (Some(_), Some(_)) => Err("`min` must be a number no greater than `max`".into()),
            _ => Err("a writable point needs `min` and `max` (the range a write may set)".into()),
        }
    }
}

#[cfg(test)]
mod tests;
