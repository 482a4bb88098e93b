//! Simulated devices: an electricity meter, a gas meter and a room climate sensor
//! with realistic daily curves. The example config uses them so `cargo run` needs
//! no hardware. Counters are closed-form integrals of the power curve over wall
//! time, so they stay monotonic across restarts.

use std::f64::consts::TAU;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Timelike, Utc};
use serde::{Deserialize, Serialize};

use super::{DeviceType, Monitor, MonitorContext, MonitorError};
use crate::config::common::CommonConfig;
use crate::reading::{MetricSpec, Reading, Unit};

/// `type: simulated`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct SimulatedConfig {
    /// What to simulate: `electricity`, `gas` or `climate`.
    pub profile: Profile,
    /// Seed of the noise, so runs are reproducible (mixed with the device id, so
    /// two devices never draw the same noise).
    #[serde(default)]
    pub seed: u64,
    /// Fraction of reads that fail with a link error (0 to 1), to watch retries and
    /// the circuit breaker at work.
    #[serde(default)]
    pub failure_rate: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    Electricity,
    Gas,
    Climate,
}

impl DeviceType for SimulatedConfig {
    fn default_poll_interval() -> Duration {
        Duration::from_secs(10)
    }

    fn validate(&self, _common: &CommonConfig) -> Result<(), (String, String)> {
        if !(0.0..=1.0).contains(&self.failure_rate) {
            return Err((
                "failure_rate".into(),
                format!("must be between 0 and 1, not {}", self.failure_rate),
            ));
        }
        Ok(())
    }

    fn metrics() -> Vec<MetricSpec> {
        all_metrics()
    }

    fn build(&self, ctx: MonitorContext) -> Result<Box<dyn Monitor>, MonitorError> {
        Ok(Box::new(SimulatedMonitor::new(self, ctx)))
    }
}

const DAY: f64 = 86_400.0;
/// Counters start from 2020 so their values look like a meter a few years old.
const EPOCH_2020: f64 = 1_577_836_800.0;

const ELECTRICITY: &[MetricSpec] = &[
    MetricSpec::gauge("power_delivered", Unit::Watt, "power drawn from the grid"),
    MetricSpec::gauge("power_returned", Unit::Watt, "power fed into the grid"),
    MetricSpec::counter(
        "energy_delivered_tariff1",
        Unit::KiloWattHour,
        "energy drawn, low tariff",
    ),
    MetricSpec::counter(
        "energy_delivered_tariff2",
        Unit::KiloWattHour,
        "energy drawn, normal tariff",
    ),
    MetricSpec::counter(
        "energy_returned_tariff1",
        Unit::KiloWattHour,
        "energy returned, low tariff",
    ),
    MetricSpec::counter(
        "energy_returned_tariff2",
        Unit::KiloWattHour,
        "energy returned, normal tariff",
    ),
    MetricSpec::gauge("voltage_l1", Unit::Volt, "voltage of phase 1"),
    MetricSpec::gauge("tariff", Unit::None, "active tariff (1 low, 2 normal)"),
];
const GAS: &[MetricSpec] = &[MetricSpec::counter("gas_delivered", Unit::CubicMetre, "gas used")];
const CLIMATE: &[MetricSpec] = &[
    MetricSpec::gauge("temperature", Unit::Celsius, "room temperature"),
    MetricSpec::gauge("humidity", Unit::Percent, "relative humidity"),
];

pub fn all_metrics() -> Vec<MetricSpec> {
    [ELECTRICITY, GAS, CLIMATE].concat()
}

/// A daily sine `mean + amplitude·sin(2π(t − phase)/day)` and its integral, so a
/// power curve and its energy counter always agree.
#[derive(Debug, Clone, Copy)]
struct Curve {
    mean: f64,
    amplitude: f64,
    phase: f64,
}

impl Curve {
    fn at(self, t: f64) -> f64 {
        self.mean + self.amplitude * (TAU * (t - self.phase) / DAY).sin()
    }

    /// ∫ from 2020 to t; monotonic when mean ≥ |amplitude|.
    fn integral(self, t: f64) -> f64 {
        let x = t - EPOCH_2020;
        self.mean * x
            - self.amplitude * DAY / TAU
                * ((TAU * (t - self.phase) / DAY).cos() - (TAU * (EPOCH_2020 - self.phase) / DAY).cos())
    }
}

const HOUSE_LOAD: Curve = Curve {
    mean: 420.0,
    amplitude: 260.0,
    phase: 6.0 * 3600.0,
};
const SOLAR: Curve = Curve {
    mean: 300.0,
    amplitude: 300.0,
    phase: 6.0 * 3600.0,
};
/// m³ per second.
const GAS_USE: Curve = Curve {
    mean: 0.12 / 3600.0,
    amplitude: 0.08 / 3600.0,
    phase: 12.0 * 3600.0,
};
const ROOM_TEMP: Curve = Curve {
    mean: 20.5,
    amplitude: 1.5,
    phase: 9.0 * 3600.0,
};
const ROOM_HUMIDITY: Curve = Curve {
    mean: 52.0,
    amplitude: -6.0,
    phase: 9.0 * 3600.0,
};

#[derive(Debug)]
pub struct SimulatedMonitor {
    config: SimulatedConfig,
    ctx: MonitorContext,
    rng: fastrand::Rng,
}

impl SimulatedMonitor {
    pub fn new(config: &SimulatedConfig, ctx: MonitorContext) -> Self {
        // Two devices with the same seed must not draw the same noise: mix in the id.
        let id_hash = ctx.id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        SimulatedMonitor {
            config: config.clone(),
            ctx,
            rng: fastrand::Rng::with_seed(config.seed ^ id_hash),
        }
    }

    fn noise(&mut self, amplitude: f64) -> f64 {
        (self.rng.f64() * 2.0 - 1.0) * amplitude
    }

    fn sample(&mut self, now: DateTime<Utc>) -> Vec<Reading> {
        let t = now.timestamp() as f64 + f64::from(now.timestamp_subsec_millis()) / 1000.0;
        let id = self.ctx.id.clone();
        let round = |v: f64, digits: i32| (v * 10f64.powi(digits)).round() / 10f64.powi(digits);
        let values: Vec<(&MetricSpec, f64)> = match self.config.profile {
            Profile::Electricity => {
                let load = (HOUSE_LOAD.at(t) + self.noise(40.0)).max(0.0);
                let solar = SOLAR.at(t).max(0.0);
                let delivered_kwh = HOUSE_LOAD.integral(t) / 3.6e6;
                let returned_kwh = SOLAR.integral(t) / 3.6e6;
                // Dutch convention: tariff 1 is the low (night) tariff.
                let hour = now.hour();
                let tariff = if !(7..23).contains(&hour) { 1.0 } else { 2.0 };
                let voltage = 230.0 + 2.5 * (TAU * t / 3600.0).sin() + self.noise(0.8);
                vec![
                    (&ELECTRICITY[0], round((load - solar).max(0.0), 0)),
                    (&ELECTRICITY[1], round((solar - load).max(0.0), 0)),
                    (&ELECTRICITY[2], round(delivered_kwh * 0.42, 3)),
                    (&ELECTRICITY[3], round(delivered_kwh * 0.58, 3)),
                    (&ELECTRICITY[4], round(returned_kwh * 0.25, 3)),
                    (&ELECTRICITY[5], round(returned_kwh * 0.75, 3)),
                    (&ELECTRICITY[6], round(voltage, 1)),
                    (&ELECTRICITY[7], tariff),
                ]
            }
            Profile::Gas => vec![(&GAS[0], round(GAS_USE.integral(t) + 1200.0, 3))],
            Profile::Climate => {
                let temperature = ROOM_TEMP.at(t) + self.noise(0.1);
                let humidity = ROOM_HUMIDITY.at(t) + self.noise(0.5);
                vec![(&CLIMATE[0], round(temperature, 2)), (&CLIMATE[1], round(humidity, 1))]
            }
        };
        values.into_iter().map(|(spec, v)| spec.reading(&id, v, now)).collect()
    }
}

#[async_trait]
impl Monitor for SimulatedMonitor {
    async fn read(&mut self) -> Result<Vec<Reading>, MonitorError> {
        if self.config.failure_rate > 0.0 && self.rng.f64() < self.config.failure_rate {
            return Err(MonitorError::link("simulated link failure"));
        }
        let now = self.ctx.clock.now();
        Ok(self.sample(now))
    }

    /// Complete: its profile's list.
    fn metrics_complete(&self) -> bool {
        true
    }

    fn metrics(&self) -> &[MetricSpec] {
        match self.config.profile {
            Profile::Electricity => ELECTRICITY,
            Profile::Gas => GAS,
            Profile::Climate => CLIMATE,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::clock::MonotonicClock;
    use std::sync::Arc;

    fn monitor(profile: Profile) -> SimulatedMonitor {
        let config = SimulatedConfig {
            profile,
            seed: 7,
            failure_rate: 0.0,
        };
        let start = DateTime::parse_from_rfc3339("2026-11-24T06:00:00Z").unwrap().to_utc();
        let ctx = MonitorContext {
            id: Arc::from("sim"),
            clock: Arc::new(MonotonicClock::starting_at(start)),
            data_dir: std::env::temp_dir(),
            poll_interval: std::time::Duration::from_secs(1),
            file: std::path::PathBuf::new(),
        };
        SimulatedMonitor::new(&config, ctx)
    }

    fn value(readings: &[Reading], metric: &str) -> f64 {
        readings
            .iter()
            .find(|r| &*r.metric == metric)
            .and_then(|r| r.value.as_f64())
            .unwrap()
    }

    #[test]
    fn integral_is_the_antiderivative() {
        let t = 1_700_000_000.0;
        let numeric = (HOUSE_LOAD.integral(t + 1.0) - HOUSE_LOAD.integral(t - 1.0)) / 2.0;
        assert!(
            (numeric - HOUSE_LOAD.at(t)).abs() < 1e-3,
            "{numeric} vs {}",
            HOUSE_LOAD.at(t)
        );
    }

    #[test]
    fn counters_are_monotonic_over_two_days() {
        let mut m = monitor(Profile::Electricity);
        let mut gas = monitor(Profile::Gas);
        let start = DateTime::parse_from_rfc3339("2026-11-24T00:00:00Z").unwrap().to_utc();
        let mut last = [0.0f64; 5];
        for minute in 0..(2 * 24 * 60) {
            let now = start + chrono::TimeDelta::minutes(minute);
            let r = m.sample(now);
            let g = gas.sample(now);
            let current = [
                value(&r, "energy_delivered_tariff1"),
                value(&r, "energy_delivered_tariff2"),
                value(&r, "energy_returned_tariff1"),
                value(&r, "energy_returned_tariff2"),
                value(&g, "gas_delivered"),
            ];
            for (c, l) in current.iter().zip(last.iter()) {
                assert!(c >= l, "counter went back at minute {minute}: {l} -> {c}");
            }
            last = current;
            assert!(value(&r, "power_delivered") >= 0.0);
        }
        // A house of this size uses roughly 10 kWh a day.
        let day_one = value(
            &m.sample(start + chrono::TimeDelta::days(1)),
            "energy_delivered_tariff2",
        ) + value(
            &m.sample(start + chrono::TimeDelta::days(1)),
            "energy_delivered_tariff1",
        ) - value(&m.sample(start), "energy_delivered_tariff1")
            - value(&m.sample(start), "energy_delivered_tariff2");
        assert!((9.0..11.0).contains(&day_one), "{day_one} kWh a day");
    }

    #[tokio::test]
    async fn failure_rate_one_always_fails() {
        let mut m = monitor(Profile::Climate);
        m.config.failure_rate = 1.0;
        assert!(matches!(m.read().await, Err(MonitorError::Link { .. })));
        m.config.failure_rate = 0.0;
        let r = m.read().await.unwrap();
        assert_eq!(r.len(), 2);
        assert!((15.0..25.0).contains(&value(&r, "temperature")));
    }
}
