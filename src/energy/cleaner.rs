//! One device's counters, cleaned as its readings arrive (pure): every reading is
//! published as sent at once (mesura keeps every stamped reading); every counter of
//! energy, gas, water or heat also goes through its [`Track`], and what the track
//! releases becomes a `<metric>_lifetime` reading. A glitch gets no lifetime value.

use std::collections::HashMap;
use std::sync::Arc;

use crate::energy::counters::{CounterSettings, NewEpoch, Point, Sample, Track};
use crate::reading::{Kind, MetricName, Reading, Unit, Value};

/// The suffix of a counter's lifetime series (`energy_delivered_tariff1_lifetime`).
pub const LIFETIME_SUFFIX: &str = "_lifetime";

/// Whether `reading` is a counter the cleaner keeps a lifetime series of: energy,
/// gas, water, heat (counts like power failures or uptime are left as they are).
pub fn is_cleaned(reading: &Reading) -> bool {
    reading.kind == Kind::Counter
        && matches!(
            reading.unit,
            Unit::KiloWattHour | Unit::KiloVarHour | Unit::KiloVoltAmpereHour | Unit::CubicMetre | Unit::GigaJoule
        )
        && !reading.metric.ends_with(LIFETIME_SUFFIX)
}

/// What one poll's readings became.
#[derive(Debug, Default)]
pub struct Cleaned {
    /// To publish: every reading as sent, plus the lifetime readings released.
    pub readings: Vec<Reading>,
    /// Counter readings judged glitches: published raw, never in the lifetime series.
    pub glitches: Vec<Reading>,
    /// Epochs started, by metric, with the meter identity at their start.
    pub epochs: Vec<(MetricName, NewEpoch)>,
}

#[derive(Debug)]
struct Counter {
    lifetime_name: MetricName,
    track: Track<Reading>,
}

/// The counters of one device.
#[derive(Debug, Default)]
pub struct DeviceCounters {
    identity: Option<String>,
    counters: HashMap<MetricName, Counter>,
}

impl DeviceCounters {
    /// The state persisted at the last run: the device's identity and, per metric,
    /// its epoch's offset and last accepted reading.
    pub fn restore(
        identity: Option<String>,
        counters: impl IntoIterator<Item = (MetricName, f64, Option<Point>)>,
    ) -> Self {
        DeviceCounters {
            identity,
            counters: counters
                .into_iter()
                .map(|(metric, offset, last)| {
                    let counter = Counter {
                        lifetime_name: lifetime_name(&metric),
                        track: Track::new(offset, last),
                    };
                    (metric, counter)
                })
                .collect(),
        }
    }

    pub fn identity(&self) -> Option<&str> {
        self.identity.as_deref()
    }

    /// The last accepted reading and offset of every counter seen.
    pub fn state(&self) -> impl Iterator<Item = (&MetricName, f64, Option<Point>)> {
        self.counters.iter().map(|(m, c)| (m, c.track.offset(), c.track.last()))
    }

    /// How many readings wait for a decision, over all counters.
    pub fn held(&self) -> usize {
        self.counters.values().map(|c| c.track.held()).sum()
    }

    /// A user's epoch for `metric`: the next readings take `offset`.
    pub fn set_offset(&mut self, metric: &str, offset: f64) {
        if let Some(c) = self.counters.get_mut(metric) {
            c.track.set_offset(offset);
        }
    }

    /// Cleans one poll's readings. `identity`: the meter's identity as the device
    /// reported it with them (DSMR equipment id, Multical serial), if it does.
    pub fn clean(&mut self, readings: Vec<Reading>, identity: Option<&str>, settings: &CounterSettings) -> Cleaned {
        let swapped = match (identity, &self.identity) {
            (Some(new), Some(old)) => new != old,
            _ => false,
        };
        if let Some(new) = identity {
            if self.identity.as_deref() != Some(new) {
                self.identity = Some(new.to_owned());
            }
        }
        let mut out = Cleaned::default();
        for reading in readings {
            let raw = match (&reading.value, is_cleaned(&reading)) {
                (Value::Number(v), true) if v.is_finite() => *v,
                _ => {
                    out.readings.push(reading);
                    continue;
                }
            };
            out.readings.push(reading.clone());
            let metric = reading.metric.clone();
            let counter = self.counters.entry(metric.clone()).or_insert_with(|| Counter {
                lifetime_name: lifetime_name(&metric),
                track: Track::new(0.0, None),
            });
            let step = counter.track.observe(
                Sample {
                    at: reading.timestamp,
                    raw,
                    payload: reading,
                },
                swapped,
                settings,
            );
            if let Some(epoch) = step.epoch {
                out.epochs.push((metric, epoch));
            }
            out.glitches.extend(step.glitches.into_iter().map(|s| s.payload));
            for (sample, lifetime) in step.released {
                out.readings.push(Reading {
                    metric: counter.lifetime_name.clone(),
                    value: Value::Number(lifetime),
                    ..sample.payload
                });
            }
        }
        out
    }
}

/// Metric names that carry a meter's identity where a device reports it as a reading
/// (a Modbus point map's `serial` string register).
pub const IDENTITY_METRICS: &[&str] = &["serial", "serial_number", "equipment_id"];

/// The meter identity a poll's readings carry, if one of them is an identity metric.
pub fn identity_in(readings: &[Reading]) -> Option<String> {
    readings
        .iter()
        .find(|r| IDENTITY_METRICS.contains(&&*r.metric))
        .map(|r| r.value.to_string())
        .filter(|id| !id.trim().is_empty())
}

pub fn lifetime_name(metric: &str) -> MetricName {
    Arc::from(format!("{metric}{LIFETIME_SUFFIX}"))
}
