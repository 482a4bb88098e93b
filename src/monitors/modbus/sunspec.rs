//! SunSpec discovery over a [`Transport`]: find the `SunS` marker, walk the
//! model chain, log who made the device, then read the inverter model each poll.
//! The interpretation is in `protocols::modbus::sunspec`.

use super::transport::{ReadError, Transport};
use crate::protocols::modbus::plan::Block;
use crate::protocols::modbus::point::RegisterKind;
use crate::protocols::modbus::sunspec::{self as spec, Common, Model, Step};
use crate::reading::{Kind, MetricSpec, Unit};

/// A chain longer than this is taken for garbage (real devices have a handful).
const MAX_MODELS: usize = 64;

/// What discovery found.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Discovery {
    pub base: u16,
    pub models: Vec<Model>,
    pub common: Option<Common>,
    /// The first inverter model (101, 102 or 103) in the chain.
    pub inverter: Option<Model>,
}

/// Why discovery failed.
#[derive(Debug)]
pub(super) enum DiscoveryError {
    /// The link failed, or the device refused a read inside the chain.
    Read(ReadError),
    /// The device answered but is not SunSpec where it was looked for.
    NotSunSpec(String),
}

impl From<ReadError> for DiscoveryError {
    fn from(e: ReadError) -> Self {
        DiscoveryError::Read(e)
    }
}

fn holding(address: u16, count: u16) -> Block {
    Block {
        register: RegisterKind::Holding,
        address,
        count,
    }
}

/// Looks for the marker at `base` (or the three standard places), then walks the chain.
pub(super) async fn discover(transport: &mut Transport, base: Option<u16>) -> Result<Discovery, DiscoveryError> {
    let candidates: Vec<u16> = match base {
        Some(b) => vec![b],
        None => spec::BASE_ADDRESSES.to_vec(),
    };
    let mut found = None;
    for candidate in &candidates {
        match transport.read(holding(*candidate, 2)).await {
            Ok(words) if words == spec::MARKER => {
                found = Some(*candidate);
                break;
            }
            // Not here: an exception (no such register) or other data.
            Ok(_) | Err(ReadError::Exception(_)) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    let Some(base) = found else {
        let places: Vec<String> = candidates.iter().map(u16::to_string).collect();
        return Err(DiscoveryError::NotSunSpec(format!(
            "no SunSpec marker `SunS` at holding register {}",
            places.join(", ")
        )));
    };
    let mut models = Vec::new();
    let mut address = base.checked_add(2);
    while let Some(at) = address {
        if models.len() >= MAX_MODELS {
            break;
        }
        let header = match transport.read(holding(at, 2)).await {
            Ok(words) => words,
            // Some devices end the chain without the end marker: what was found stands.
            Err(ReadError::Exception(_)) => break,
            Err(e) => return Err(e.into()),
        };
        let (Some(&id), Some(&length)) = (header.first(), header.get(1)) else {
            break;
        };
        match spec::header(at, id, length) {
            Some(Step::Model(model)) => {
                models.push(model);
                address = model.next();
            }
            Some(Step::End) | None => break,
        }
    }
    let common = match models.iter().find(|m| m.id == spec::COMMON) {
        // The fields up to the serial number: 64 registers, one request.
        Some(m) if m.length >= 64 => match transport.read(holding(m.body, 64)).await {
            Ok(body) => spec::common(&body),
            Err(ReadError::Exception(_)) => None,
            Err(e) => return Err(e.into()),
        },
        _ => None,
    };
    let inverter = models.iter().find(|m| spec::INVERTERS.contains(&m.id)).copied();
    Ok(Discovery {
        base,
        models,
        common,
        inverter,
    })
}

/// The request reading an inverter model's measurements.
pub(super) fn inverter_block(model: &Model) -> Block {
    holding(model.body, model.length.min(spec::INVERTER_BODY))
}

/// The unit a point is stored in, and the factor from its SunSpec units to it
/// (energy is kept in kWh like every other meter's; SunSpec counts Wh).
pub(super) fn stored_unit(point: &spec::SunPoint) -> (Unit, f64) {
    match point.units {
        "A" => (Unit::Ampere, 1.0),
        "V" => (Unit::Volt, 1.0),
        "W" => (Unit::Watt, 1.0),
        "Hz" => (Unit::Hertz, 1.0),
        "VA" => (Unit::VoltAmpere, 1.0),
        "var" => (Unit::Var, 1.0),
        "Pct" => (Unit::Percent, 1.0),
        "Wh" => (Unit::KiloWattHour, 0.001),
        "C" => (Unit::Celsius, 1.0),
        _ => (Unit::None, 1.0),
    }
}

/// An accumulator (SunSpec's `acc32`) only grows: a counter; the rest are gauges.
pub(super) fn stored_kind(point: &spec::SunPoint) -> Kind {
    match point.kind {
        spec::SunType::Acc32 => Kind::Counter,
        _ => Kind::Gauge,
    }
}

/// What a SunSpec inverter can report.
pub(super) fn metrics() -> Vec<MetricSpec> {
    spec::INVERTER_POINTS
        .iter()
        .map(|p| MetricSpec {
            name: p.metric,
            unit: stored_unit(p).0,
            kind: stored_kind(p),
            description: p.description,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_inverter_point_has_a_stored_unit() {
        for p in spec::INVERTER_POINTS {
            let (unit, _) = stored_unit(p);
            // Only the operating state (an enum) is unitless.
            assert_eq!(unit == Unit::None, p.kind == spec::SunType::Enum16, "{}", p.sunspec);
        }
        let energy = spec::INVERTER_POINTS.iter().find(|p| p.metric == "energy_ac");
        let energy = energy.map(|p| (stored_unit(p), stored_kind(p)));
        assert_eq!(energy, Some(((Unit::KiloWattHour, 0.001), Kind::Counter)));
    }
}
