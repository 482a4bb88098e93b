//! REHAU Nea Smart 2.0 heating: the base station is the Modbus master on its
//! SYSBUS and writes zone and system values into a gateway at slave id 240 (and
//! 241). mesura plays that gateway: it serves a register bank and, every
//! `poll_interval`, turns the bank's latest values into readings. A value the
//! base has not written yet is absent. See docs/devices/neasmart.md.

pub mod server;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::task::JoinHandle;

use self::server::{lock, Gateway, SharedBank};
use super::control::{check_range, WriteError, Written};
use super::{DeviceType, Monitor, MonitorContext, MonitorError};
use crate::config::common::CommonConfig;
use crate::protocols::modbus::neasmart::{self as map, ZoneField};
use crate::reading::{intern, Kind, MetricSpec, Reading, Unit, Value};

/// `type: neasmart`. Either `serial_port` (RTU on the SYSBUS) or `listen` (TCP).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct NeasmartConfig {
    /// RTU: the serial device of the RS485 adapter on the base's SYSBUS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial_port: Option<String>,
    /// RTU line speed; the base talks 38400 baud, 8N1.
    #[serde(default = "default_baud_rate")]
    pub baud_rate: u32,
    /// TCP: the address to listen on for an RS485-to-TCP bridge, e.g. `0.0.0.0:502`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// The slave ids to answer as; the base writes to 240 (and 241).
    #[serde(default = "default_slave_ids")]
    pub slave_ids: Vec<u8>,
    /// Names for zones in metric names: `"1": living` makes `zone_living_temperature`
    /// for zone 1 of base 1; `"2.3": office` names zone 3 of base 2.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub zone_names: BTreeMap<String, String>,
    /// Lets `POST /api/devices/<id>/write` set zone setpoints and states and the
    /// operating mode and state, which the base reads back; the API needs a token
    /// too (docs/control.md).
    #[serde(default)]
    pub allow_writes: bool,
}

pub fn default_baud_rate() -> u32 {
    38_400
}
pub fn default_slave_ids() -> Vec<u8> {
    vec![240, 241]
}

impl DeviceType for NeasmartConfig {
    /// The base writes a value when it changes; a minute is fine-grained enough
    /// for room temperatures.
    fn default_poll_interval() -> Duration {
        Duration::from_secs(60)
    }

    fn validate(&self, _common: &CommonConfig) -> Result<(), (String, String)> {
        let err = |key: &str, m: &str| Err((key.to_owned(), m.to_owned()));
        match (&self.serial_port, &self.listen) {
            (Some(_), Some(_)) => return err("listen", "set either `serial_port` (RTU) or `listen` (TCP), not both"),
            (None, None) => {
                return err(
                    "serial_port",
                    "set `serial_port` (RTU) or `listen` (TCP, e.g. 0.0.0.0:502)",
                )
            }
            (_, Some(l)) if l.parse::<std::net::SocketAddr>().is_err() => {
                return err("listen", "must be an address and port, e.g. 0.0.0.0:502")
            }
            _ => {}
        }
        if self.slave_ids.is_empty() || self.slave_ids.iter().any(|id| !(1..=247).contains(id)) {
            return err(
                "slave_ids",
                "list slave ids between 1 and 247 (the base uses 240 and 241)",
            );
        }
        for (key, name) in &self.zone_names {
            if parse_zone_key(key).is_none() {
                return Err((
                    "zone_names".into(),
                    format!("`{key}` is not a zone: write `ZONE` (1-12, base 1) or `BASE.ZONE` (base 1-5)"),
                ));
            }
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
            {
                return Err((
                    "zone_names".into(),
                    format!("zone name `{name}`: lowercase letters, digits and `_` only"),
                ));
            }
        }
        Ok(())
    }

    fn metrics() -> Vec<MetricSpec> {
        all_metrics()
    }

    fn allows_writes(&self) -> bool {
        self.allow_writes
    }

    fn build(&self, ctx: MonitorContext) -> Result<Box<dyn Monitor>, MonitorError> {
        Ok(Box::new(NeasmartMonitor::new(self, ctx)?))
    }
}

/// `"3"` → base 1 zone 3; `"2.3"` → base 2 zone 3.
fn parse_zone_key(key: &str) -> Option<(u8, u8)> {
    let (base, zone) = match key.split_once('.') {
        Some((b, z)) => (b.trim().parse().ok()?, z.trim().parse().ok()?),
        None => (1, key.trim().parse().ok()?),
    };
    map::zone_address(base, zone, ZoneField::State).map(|_| (base, zone))
}

/// One value the monitor looks for in the bank.
#[derive(Debug, Clone)]
struct Slot {
    slave: u8,
    address: u16,
    encoding: map::Encoding,
    metric: Arc<str>,
    unit: Unit,
    /// What a write may set it to, for the registers the base reads back as commands.
    command: Option<std::ops::RangeInclusive<f64>>,
}

/// The unit a global register is stored in: the map gives temperatures and plain
/// integers (states, flags, valve openings without a documented scale).
fn encoding_unit(encoding: map::Encoding) -> Unit {
    match encoding {
        map::Encoding::Temperature => Unit::Celsius,
        map::Encoding::Integer => Unit::None,
    }
}

/// The unit of a zone value: as its encoding, except humidity (an integer percentage).
fn zone_unit(field: ZoneField) -> Unit {
    match field {
        ZoneField::Humidity => Unit::Percent,
        _ => encoding_unit(field.encoding()),
    }
}

/// What a Nea Smart can report (zone metrics shown for zone 1 of base 1).
pub fn all_metrics() -> Vec<MetricSpec> {
    let mut specs: Vec<MetricSpec> = map::GLOBALS
        .iter()
        .map(|g| MetricSpec::gauge(g.metric, encoding_unit(g.encoding), "system value written by the base"))
        .collect();
    specs.extend([
        MetricSpec::gauge(
            "zone_1_temperature",
            Unit::Celsius,
            "room temperature of a zone (zone_<name>_…)",
        ),
        MetricSpec::gauge("zone_1_setpoint", Unit::Celsius, "setpoint of a zone"),
        MetricSpec::gauge(
            "zone_1_humidity",
            Unit::Percent,
            "relative humidity of a zone, where measured",
        ),
        MetricSpec::gauge(
            "zone_1_state",
            Unit::None,
            "state of a zone (1 normal, 2 reduced, 3 standby, …)",
        ),
    ]);
    specs
}

#[derive(Debug)]
pub struct NeasmartMonitor {
    config: NeasmartConfig,
    ctx: MonitorContext,
    bank: SharedBank,
    slots: Vec<Slot>,
    metrics: Vec<MetricSpec>,
    server: Option<JoinHandle<std::io::Result<()>>>,
}

impl NeasmartMonitor {
    pub fn new(config: &NeasmartConfig, ctx: MonitorContext) -> Result<Self, MonitorError> {
        let mut slots = Vec::new();
        for (n, slave) in config.slave_ids.iter().enumerate() {
            // The first id's values keep plain names; another id's are prefixed.
            let prefix = if n == 0 {
                String::new()
            } else {
                format!("slave{slave}_")
            };
            for g in map::GLOBALS {
                slots.push(Slot {
                    slave: *slave,
                    address: g.address,
                    encoding: g.encoding,
                    metric: Arc::from(format!("{prefix}{}", g.metric)),
                    unit: encoding_unit(g.encoding),
                    command: map::global_command_range(g.address),
                });
            }
            for base in 1..=map::BASES {
                for zone in 1..=map::ZONES {
                    let zone_name = zone_name(config, base, zone);
                    for field in ZoneField::ALL {
                        let Some(address) = map::zone_address(base, zone, field) else {
                            continue;
                        };
                        slots.push(Slot {
                            slave: *slave,
                            address,
                            encoding: field.encoding(),
                            metric: Arc::from(format!("{prefix}zone_{zone_name}_{}", field.suffix())),
                            unit: zone_unit(field),
                            command: field.command_range(),
                        });
                    }
                }
            }
        }
        let metrics = slots
            .iter()
            .map(|s| MetricSpec::gauge(intern(&s.metric), s.unit, "written by the Nea Smart base station"))
            .collect();
        Ok(NeasmartMonitor {
            config: config.clone(),
            ctx,
            bank: SharedBank::default(),
            slots,
            metrics,
            server: None,
        })
    }

    /// Starts the slave: binds the TCP port or opens the serial port.
    async fn start(&mut self) -> Result<(), MonitorError> {
        let gateway = Gateway {
            bank: self.bank.clone(),
            ids: self.config.slave_ids.clone(),
            silent_for_others: self.config.serial_port.is_some(),
        };
        let task = if let Some(listen) = &self.config.listen {
            let listener = tokio::net::TcpListener::bind(listen.as_str())
                .await
                .map_err(|e| MonitorError::link(format!("cannot listen on {listen}: {e}")).caused_by(e))?;
            tracing::info!(device = %self.ctx.id, %listen, "Nea Smart gateway listening (Modbus TCP)");
            let server = tokio_modbus::server::tcp::Server::new(listener);
            tokio::spawn(async move {
                let on_connected = |stream, address| {
                    let gateway = gateway.clone();
                    async move {
                        tokio_modbus::server::tcp::accept_tcp_connection(stream, address, |_| Ok(Some(gateway.clone())))
                    }
                };
                let on_error = |e: std::io::Error| tracing::debug!(error = %e, "Nea Smart connection ended");
                server.serve(&on_connected, on_error).await
            })
        } else {
            let path = self.config.serial_port.clone().unwrap_or_default();
            let port = tokio_serial::SerialStream::open(
                &tokio_serial::new(path.as_str(), self.config.baud_rate)
                    .data_bits(tokio_serial::DataBits::Eight)
                    .parity(tokio_serial::Parity::None)
                    .stop_bits(tokio_serial::StopBits::One),
            )
            .map_err(|e| MonitorError::link(format!("cannot open {path}: {e}")).caused_by(e))?;
            tracing::info!(device = %self.ctx.id, port = %path, "Nea Smart gateway on the SYSBUS (Modbus RTU)");
            let server = tokio_modbus::server::rtu::Server::new(port);
            tokio::spawn(async move { server.serve_forever(gateway).await })
        };
        self.server = Some(task);
        Ok(())
    }
}

fn zone_name(config: &NeasmartConfig, base: u8, zone: u8) -> String {
    let named = config
        .zone_names
        .iter()
        .find(|(key, _)| parse_zone_key(key) == Some((base, zone)))
        .map(|(_, name)| name.clone());
    named.unwrap_or_else(|| {
        if base == 1 {
            zone.to_string()
        } else {
            format!("{base}_{zone}")
        }
    })
}

impl Drop for NeasmartMonitor {
    fn drop(&mut self) {
        // The server task owns the port or socket: ending it releases them.
        if let Some(task) = self.server.take() {
            task.abort();
        }
    }
}

#[async_trait]
impl Monitor for NeasmartMonitor {
    async fn read(&mut self) -> Result<Vec<Reading>, MonitorError> {
        if let Some(task) = &self.server {
            if task.is_finished() {
                let outcome = match self.server.take() {
                    Some(task) => task.await,
                    None => Ok(Ok(())),
                };
                let stopped = |why: &dyn std::fmt::Display| {
                    MonitorError::link(format!("the Modbus slave stopped: {why}; restarting"))
                };
                return Err(match outcome {
                    Ok(Ok(())) => stopped(&"the port closed"),
                    Ok(Err(e)) => stopped(&e).caused_by(e),
                    Err(e) => stopped(&e).caused_by(e),
                });
            }
        }
        if self.server.is_none() {
            self.start().await?;
        }
        let now = self.ctx.clock.now();
        let bank = lock(&self.bank);
        let readings = self
            .slots
            .iter()
            .filter_map(|s| {
                let value = map::decode(s.encoding, bank.get(s.slave, s.address)?)?;
                Some(Reading {
                    device: self.ctx.id.clone(),
                    device_type: "",
                    metric: s.metric.clone(),
                    value: Value::Number(value),
                    unit: s.unit,
                    kind: Kind::Gauge,
                    timestamp: now,
                })
            })
            .collect();
        Ok(readings)
    }

    /// Complete: the zones of its config.
    fn metrics_complete(&self) -> bool {
        true
    }

    fn metrics(&self) -> &[MetricSpec] {
        &self.metrics
    }

    /// Sets a command register in the bank: the base station reads it back with
    /// function 3 and applies it. Its own later write of that register (a change
    /// on a room unit) replaces mesura's, as with the community gateway.
    async fn write(&mut self, point: &str, value: f64) -> Result<Written, WriteError> {
        let Some((slot, range)) = self
            .slots
            .iter()
            .find_map(|s| s.command.clone().filter(|_| &*s.metric == point).map(|r| (s, r)))
        else {
            return Err(WriteError::UnknownPoint {
                point: point.to_owned(),
                writable: "operating_mode, operating_state, and each zone's `zone_<z>_setpoint` and `zone_<z>_state`"
                    .into(),
            });
        };
        check_range(point, value, *range.start(), *range.end())?;
        let invalid = |reason: &str| WriteError::Invalid {
            point: point.to_owned(),
            reason: reason.to_owned(),
        };
        let raw = map::encode(slot.encoding, value).ok_or_else(|| invalid("an enum takes whole numbers"))?;
        let mut bank = lock(&self.bank);
        let old = bank
            .get(slot.slave, slot.address)
            .and_then(|r| map::decode(slot.encoding, r));
        bank.set(slot.slave, slot.address, raw);
        let new = bank
            .get(slot.slave, slot.address)
            .and_then(|r| map::decode(slot.encoding, r))
            .ok_or_else(|| invalid("the register does not read back"))?;
        Ok(Written {
            point: point.to_owned(),
            old,
            new,
            unit: slot.unit.symbol(),
        })
    }
}

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn temperatures_are_celsius_and_humidity_percent() {
        assert_eq!(zone_unit(ZoneField::Temperature), Unit::Celsius);
        assert_eq!(zone_unit(ZoneField::Setpoint), Unit::Celsius);
        assert_eq!(zone_unit(ZoneField::Humidity), Unit::Percent);
        assert_eq!(zone_unit(ZoneField::State), Unit::None);
        let outside = map::GLOBALS.iter().find(|g| g.metric == "outside_temperature");
        assert_eq!(outside.map(|g| encoding_unit(g.encoding)), Some(Unit::Celsius));
    }
}
