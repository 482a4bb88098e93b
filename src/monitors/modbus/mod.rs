//! Modbus meters and inverters, mesura being the master: a point map (inline,
//! from a file or a shipped preset) read over Modbus TCP or RTU in as few
//! requests as the map allows, and optionally a SunSpec inverter discovered
//! from its model chain. See docs/devices/modbus.md.

pub mod config;
mod poll;
mod sunspec;
pub mod transport;
mod unit_symbol;
mod write;

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;

pub use self::config::ModbusConfig;
use self::config::PointConfig;
use self::poll::PollState;
use self::sunspec::{Discovery, DiscoveryError};
use self::transport::{ReadError, Transport};
use super::{Monitor, MonitorContext, MonitorError};
use crate::protocols::modbus::plan::{Block, Image, Span};
use crate::protocols::modbus::point::{self as codec, Decoded, WordOrder};
use crate::protocols::modbus::sunspec as spec;
use crate::reading::{intern, MetricName, MetricSpec, Reading, Value};

/// A point of the map, ready to be read.
#[derive(Debug)]
struct Point {
    config: PointConfig,
    span: Span,
    metric: MetricName,
    /// Index (in the map) of the point holding its scale factor.
    scale_factor: Option<usize>,
}

#[derive(Debug)]
pub struct ModbusMonitor {
    ctx: MonitorContext,
    transport: Transport,
    points: Vec<Point>,
    poll: PollState,
    metrics: Vec<MetricSpec>,
    sunspec: bool,
    sunspec_address: Option<u16>,
    discovery: Option<Discovery>,
}

/// Every metric a `modbus` device can report without its map: the SunSpec ones.
pub fn all_metrics() -> Vec<MetricSpec> {
    sunspec::metrics()
}

impl ModbusMonitor {
    /// Builds the monitor; `device_dir` is where a relative `points_file` is found.
    pub fn new(config: &ModbusConfig, device_dir: &std::path::Path, ctx: MonitorContext) -> Result<Self, MonitorError> {
        let map = config::load_map(config, device_dir).map_err(|e| MonitorError::config(e.to_string()))?;
        let limits = map.limits(config);
        let map = map.points;
        let points: Vec<Point> = map
            .iter()
            .map(|p| Point {
                span: Span {
                    register: p.register,
                    address: p.address,
                    count: p.data_type.span(p.length.unwrap_or(1)),
                },
                metric: Arc::from(p.name.as_str()),
                scale_factor: p
                    .scale_factor
                    .as_ref()
                    .and_then(|name| map.iter().position(|q| &q.name == name)),
                config: p.clone(),
            })
            .collect();
        let mut metrics: Vec<MetricSpec> = points
            .iter()
            .filter(|p| p.config.store)
            .map(|p| MetricSpec {
                name: intern(&p.config.name),
                unit: p.config.unit,
                kind: p.config.kind,
                description: intern(p.config.description.as_deref().unwrap_or("from the point map")),
            })
            .collect();
        if config.sunspec {
            let taken: HashSet<&str> = metrics.iter().map(|m| m.name).collect();
            if let Some(clash) = spec::INVERTER_POINTS.iter().find(|p| taken.contains(p.metric)) {
                return Err(MonitorError::config(format!(
                    "point `{}` has the name of a SunSpec inverter metric; rename it",
                    clash.metric
                )));
            }
            metrics.extend(sunspec::metrics());
        }
        let transport = Transport::new(config);
        tracing::debug!(device = %ctx.id, link = %transport.describe(), points = points.len(), max_registers = limits.max_registers, max_gap = limits.max_gap, "Modbus point map loaded");
        Ok(ModbusMonitor {
            ctx,
            transport,
            points,
            poll: PollState::new(limits, config.refused_point_retry),
            metrics,
            sunspec: config.sunspec,
            sunspec_address: config.sunspec_address,
            discovery: None,
        })
    }

    fn sunspec_error(&self, e: ReadError, block: &Block) -> MonitorError {
        let what = format!(
            "{} SunSpec inverter model (holding 0x{:04X}-0x{:04X})",
            self.transport.describe(),
            block.address,
            block.end().saturating_sub(1)
        );
        e.for_request(&what)
    }

    /// Reads every block of the point map and decodes the points.
    async fn read_points(&mut self, readings: &mut Vec<Reading>) -> Result<(), MonitorError> {
        if self.points.is_empty() {
            return Ok(());
        }
        let image = self.read_image().await?;
        let raw: Vec<Option<Decoded>> = self
            .points
            .iter()
            .map(|p| decode_point(p, &image))
            .collect::<Result<_, _>>()?;
        let now = self.ctx.clock.now();
        for (point, value) in self.points.iter().zip(&raw) {
            if !point.config.store {
                continue;
            }
            let value = match value {
                None => continue,
                Some(Decoded::Text(t)) => Value::Text(Arc::from(t.as_str())),
                Some(Decoded::Number(n)) => {
                    let exponent = match point.scale_factor {
                        None => 0,
                        Some(i) => match raw.get(i) {
                            Some(Some(Decoded::Number(sf))) if (-10.0..=10.0).contains(sf) => *sf as i32,
                            // The scale factor is not implemented or out of range: no value.
                            _ => continue,
                        },
                    };
                    let scaled = codec::scale(
                        spec::apply_scale_factor(*n, exponent),
                        point.config.scale,
                        point.config.offset,
                    );
                    Value::Number(scaled)
                }
            };
            readings.push(Reading {
                device: self.ctx.id.clone(),
                device_type: "",
                metric: point.metric.clone(),
                value,
                unit: point.config.unit,
                kind: point.config.kind,
                timestamp: now,
            });
        }
        Ok(())
    }

    /// Reads the SunSpec inverter model, discovering the chain first if needed.
    async fn read_sunspec(&mut self, readings: &mut Vec<Reading>) -> Result<(), MonitorError> {
        if self.discovery.is_none() {
            let found = sunspec::discover(&mut self.transport, self.sunspec_address)
                .await
                .map_err(|e| match e {
                    DiscoveryError::NotSunSpec(m) => {
                        MonitorError::config(format!("{}: {m}; is this a SunSpec device?", self.transport.describe()))
                    }
                    DiscoveryError::Read(e) => {
                        e.for_request(&format!("{}: SunSpec discovery", self.transport.describe()))
                    }
                })?;
            let ids: Vec<String> = found.models.iter().map(|m| m.id.to_string()).collect();
            match &found.common {
                Some(c) => tracing::info!(
                    device = %self.ctx.id, manufacturer = %c.manufacturer, model = %c.model,
                    serial = %c.serial, version = %c.version, base = found.base, models = %ids.join(","),
                    "SunSpec device found"
                ),
                None => {
                    tracing::info!(device = %self.ctx.id, base = found.base, models = %ids.join(","), "SunSpec device found (no common model)")
                }
            }
            if found.inverter.is_none() {
                return Err(MonitorError::config(format!(
                    "the SunSpec chain ({}) has no inverter model 101, 102 or 103",
                    ids.join(", ")
                )));
            }
            self.discovery = Some(found);
        }
        let Some(model) = self.discovery.as_ref().and_then(|d| d.inverter) else {
            return Ok(());
        };
        let block = sunspec::inverter_block(&model);
        let body = match self.transport.read(block).await {
            Ok(body) => body,
            Err(e) => {
                // The chain may have changed (a firmware update): look again next time.
                if matches!(e, ReadError::Exception(_)) {
                    self.discovery = None;
                }
                return Err(self.sunspec_error(e, &block));
            }
        };
        let now = self.ctx.clock.now();
        for v in spec::inverter(&body) {
            let (unit, factor) = sunspec::stored_unit(v.point);
            readings.push(Reading {
                device: self.ctx.id.clone(),
                device_type: "",
                metric: Arc::from(v.point.metric),
                value: Value::Number(v.value * factor),
                unit,
                kind: sunspec::stored_kind(v.point),
                timestamp: now,
            });
        }
        Ok(())
    }
}

/// A point's value before scaling: `None` when it holds one of its `invalid` values.
fn decode_point(point: &Point, image: &Image) -> Result<Option<Decoded>, MonitorError> {
    let Some(words) = image.get(&point.span) else {
        return Ok(None);
    };
    let c = &point.config;
    if !c.invalid.is_empty() {
        let ordered: Box<dyn Iterator<Item = &u16>> = match c.word_order {
            WordOrder::Big => Box::new(words.iter()),
            WordOrder::Little => Box::new(words.iter().rev()),
        };
        let raw = ordered.fold(0u64, |acc, w| (acc << 16) | u64::from(*w));
        if c.invalid.contains(&raw) {
            return Ok(None);
        }
    }
    if c.register.is_bits() {
        return Ok(words.first().map(|b| codec::decode_bit(*b != 0)));
    }
    codec::decode_words(c.data_type, c.word_order, &words)
        .map(Some)
        .map_err(|e| MonitorError::invalid_data(format!("point `{}`: {e}", c.name)).caused_by(e))
}

#[async_trait]
impl Monitor for ModbusMonitor {
    async fn read(&mut self) -> Result<Vec<Reading>, MonitorError> {
        let mut readings = Vec::with_capacity(self.metrics.len());
        self.read_points(&mut readings).await?;
        if self.sunspec {
            self.read_sunspec(&mut readings).await?;
        }
        Ok(readings)
    }

    /// Complete: its point map, and every SunSpec metric with `sunspec`.
    fn metrics_complete(&self) -> bool {
        true
    }

    fn metrics(&self) -> &[MetricSpec] {
        &self.metrics
    }

    fn protocol_errors(&self) -> Vec<(&'static str, u64)> {
        self.poll.counters()
    }

    async fn write(
        &mut self,
        point: &str,
        value: f64,
    ) -> Result<crate::monitors::Written, crate::monitors::WriteError> {
        self.write_point(point, value).await
    }
}
