//! Decoded DSMR telegrams → [`Reading`]s, and the checks a meter's values must pass
//! over time (a swapped meter, a counter that went backwards).

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Datelike, Utc};

use crate::monitors::device_time::{DeviceClock, DeviceTime, Stamps};
use crate::protocols::dsmr::{rolling_average, DsmrNumberOrText, DsmrValue, Obis, Telegram, YearMonth};
use crate::reading::{DeviceId, Kind, MonthPeak, MonthlyPeaks, Reading, Unit, Value};

/// The codec's canonical unit strings → mesura's units. The codec already converted
/// (Wh → kWh, kW → W, MJ → GJ …), so this is a renaming, not a conversion.
pub fn unit_of(codec_unit: &str) -> Unit {
    match codec_unit {
        "kWh" => Unit::KiloWattHour,
        "kvarh" => Unit::KiloVarHour,
        "W" => Unit::Watt,
        "var" => Unit::Var,
        "VA" => Unit::VoltAmpere,
        "V" => Unit::Volt,
        "A" => Unit::Ampere,
        "Hz" => Unit::Hertz,
        "m3" => Unit::CubicMetre,
        "GJ" => Unit::GigaJoule,
        _ => Unit::None,
    }
}

/// Which rule of [`Stamps`] a value's own time follows: M-Bus capture times may be
/// an hour old, the monthly peak's time a month.
fn stamps_of(value: &DsmrValue) -> Stamps {
    if value.obis.a == 0 && value.obis.b > 0 {
        Stamps::Capture
    } else {
        Stamps::MonthlyPeak
    }
}

/// What the telegram said about `obis`'s time: `sent` when it was a date, else
/// whether it sent one at all.
fn device_time(telegram: &Telegram, obis: Obis, sent: Option<DateTime<Utc>>) -> DeviceTime {
    match sent {
        Some(at) => DeviceTime::At(at),
        None => match telegram.unreadable_times.iter().find(|(o, _)| *o == obis) {
            Some((_, raw)) => DeviceTime::Unreadable(raw.clone()),
            None => DeviceTime::Absent,
        },
    }
}

/// The meter clock's object, `0-0:1.0.0`.
const METER_CLOCK: Obis = Obis {
    a: 0,
    b: 0,
    c: 1,
    d: 0,
    e: 0,
};

/// The readings of one telegram, received at `received` by the host clock. A value
/// is stamped with its own capture time (M-Bus, monthly peak), else the meter's
/// clock (`0-0:1.0.0`), else the arrival time (DSMR 2.2/3.0 meters send no clock);
/// a device time that `clock` refuses is replaced by the arrival time.
pub fn readings(
    device: &DeviceId,
    telegram: &Telegram,
    received: DateTime<Utc>,
    clock: &mut DeviceClock,
) -> Vec<Reading> {
    let meter_time = device_time(telegram, METER_CLOCK, telegram.meter_time);
    let telegram_time = clock.stamp(&meter_time, Stamps::Now, "0-0:1.0.0", received);
    telegram
        .values
        .iter()
        .map(|v| {
            let timestamp = match device_time(telegram, v.obis, v.timestamp) {
                DeviceTime::Absent => telegram_time,
                own => clock.stamp(&own, stamps_of(v), &v.obis.to_string(), received),
            };
            Reading {
                device: device.clone(),
                device_type: "",
                metric: Arc::from(&*v.metric),
                value: match &v.value {
                    DsmrNumberOrText::Number(n) => Value::Number(*n),
                    DsmrNumberOrText::Text(t) => Value::Text(Arc::from(t.as_str())),
                },
                unit: unit_of(v.unit),
                kind: if v.counter { Kind::Counter } else { Kind::Gauge },
                timestamp,
            }
        })
        .collect()
}

/// What a meter reported last, to notice a meter swap or a reset. Both are the most
/// common cause of broken energy statistics, so they are logged with old and new
/// values rather than silently stored.
#[derive(Debug, Default)]
pub struct Watch {
    equipment_id: Option<String>,
    counters: HashMap<String, f64>,
}

/// Something worth a warning.
#[derive(Debug, Clone, PartialEq)]
pub enum Anomaly {
    EquipmentChanged { old: String, new: String },
    CounterBackwards { metric: String, old: f64, new: f64 },
}

impl Watch {
    /// The equipment id of the last telegram that carried one.
    pub fn equipment_id(&self) -> Option<&str> {
        self.equipment_id.as_deref()
    }

    /// Compares `telegram` with what came before and remembers it.
    pub fn observe(&mut self, telegram: &Telegram) -> Vec<Anomaly> {
        let mut found = Vec::new();
        if let Some(new) = &telegram.equipment_id {
            match self.equipment_id.replace(new.clone()) {
                Some(old) if old != *new => found.push(Anomaly::EquipmentChanged { old, new: new.clone() }),
                _ => {}
            }
        }
        for v in telegram.values.iter().filter(|v| v.counter) {
            let Some(new) = v.value.as_f64() else { continue };
            if let Some(old) = self.counters.insert(v.metric.to_string(), new) {
                if new < old {
                    found.push(Anomaly::CounterBackwards {
                        metric: v.metric.to_string(),
                        old,
                        new,
                    });
                }
            }
        }
        found
    }
}

/// How often an unchanged peak history is handed on again: the backends upsert it
/// (nothing rewritten), so one that lost it (a full queue, a refused write) has it
/// again within this time.
pub const PEAKS_RESEND_EVERY: chrono::TimeDelta = chrono::TimeDelta::hours(1);

/// Turns a meter's `0-0:98.1.0` history and `1-0:1.6.0` peak into [`MonthlyPeaks`]
/// and the `capacity_rolling_average` reading, only when they changed: the meter
/// repeats the same history every second.
#[derive(Debug)]
pub struct PeakWatch {
    minimum_w: f64,
    /// What was handed on last, and when.
    last: Option<(Vec<MonthPeak>, Option<MonthPeak>, DateTime<Utc>)>,
}

impl PeakWatch {
    pub fn new(minimum_w: f64) -> Self {
        PeakWatch { minimum_w, last: None }
    }

    /// The peaks of `telegram` when they changed since the last call (or
    /// [`PEAKS_RESEND_EVERY`] passed), with the reading of the rolling average when
    /// they changed; `None` for a telegram without a history or the same again.
    pub fn observe(
        &mut self,
        device: &DeviceId,
        telegram: &Telegram,
        received: DateTime<Utc>,
    ) -> Option<(MonthlyPeaks, Option<Reading>)> {
        let history = telegram.monthly_peaks.as_ref()?;
        let months: Vec<MonthPeak> = history
            .entries
            .iter()
            .filter_map(|e| {
                Some(MonthPeak {
                    month: e.month?.to_string(),
                    peak_w: e.peak_w,
                    peak_at: e.peak_at,
                })
            })
            .collect();
        let current = telegram.values.iter().find(|v| v.metric == "peak_demand_month");
        // The running month follows the newest closed one; a meter without history
        // yet: the month of its running peak.
        let running_month = history
            .entries
            .iter()
            .filter_map(|e| e.month)
            .max()
            .map(YearMonth::next)
            .or_else(|| {
                let at = current?.timestamp?;
                YearMonth::new(at.year(), at.month())
            });
        let running = running_month
            .zip(current.and_then(|v| v.value.as_f64()))
            .map(|(month, peak_w)| MonthPeak {
                month: month.to_string(),
                peak_w,
                peak_at: current.and_then(|v| v.timestamp),
            });
        let changed = !matches!(&self.last, Some((m, r, _)) if *m == months && *r == running);
        let due = self
            .last
            .as_ref()
            .is_none_or(|(_, _, at)| received - *at >= PEAKS_RESEND_EVERY);
        if !changed && !due {
            return None;
        }
        let average = running_month.and_then(|through| {
            let current = running_month.zip(running.as_ref().map(|r| r.peak_w));
            rolling_average(history.monthly().chain(current), through, self.minimum_w)
        });
        let peaks = MonthlyPeaks {
            device: device.clone(),
            months: months.clone(),
            running: running.clone(),
            minimum_w: self.minimum_w,
            rolling_average_w: average.map(|a| a.average_w),
            rolling_average_months: average.map_or(0, |a| a.months),
        };
        self.last = Some((months, running, received));
        let reading = average.filter(|_| changed).map(|a| Reading {
            device: device.clone(),
            device_type: "",
            metric: Arc::from(ROLLING_AVERAGE),
            value: Value::Number(a.average_w),
            unit: Unit::Watt,
            kind: Kind::Gauge,
            timestamp: received,
        });
        Some((peaks, reading))
    }
}

/// The metric of the capacity tariff's rolling average.
pub const ROLLING_AVERAGE: &str = "capacity_rolling_average";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::dsmr::decode;

    const T: &[u8] = b"/ISK5\\2M550T-1012\r\n\r\n0-0:1.0.0(200426223325S)\r\n0-0:96.1.1(4530303434303037313331363530363138)\r\n1-0:1.8.1(001581.123*kWh)\r\n1-0:1.7.0(00.193*kW)\r\n0-0:96.14.0(0002)\r\n0-1:24.1.0(003)\r\n0-1:24.2.1(200426223001S)(02566.655*m3)\r\n!\r\n";

    fn utc(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().to_utc()
    }

    fn clock() -> DeviceClock {
        DeviceClock::new(Arc::from("p1"), crate::monitors::device_time::default_max_clock_skew())
    }

    #[test]
    fn units_timestamps_and_kinds() {
        let t = decode(T).unwrap();
        let meter = utc("2020-04-26T20:33:25Z");
        // Arrival a few seconds after the meter's own time: its clock is trusted.
        let received = meter + chrono::TimeDelta::seconds(4);
        let mut clock = clock();
        let r = readings(&Arc::from("p1"), &t, received, &mut clock);
        let get = |m: &str| r.iter().find(|x| &*x.metric == m).unwrap();
        assert_eq!(get("energy_delivered_tariff1").unit, Unit::KiloWattHour);
        assert_eq!(get("energy_delivered_tariff1").kind, Kind::Counter);
        assert_eq!(get("energy_delivered_tariff1").timestamp, meter);
        assert_eq!(get("power_delivered").value, Value::Number(193.0));
        assert_eq!(get("power_delivered").kind, Kind::Gauge);
        let gas = get("gas_delivered");
        assert_eq!(gas.unit, Unit::CubicMetre);
        assert_eq!(gas.timestamp, utc("2020-04-26T20:30:01Z"));
        assert_eq!(clock.counts().map(|(_, n)| n), [0, 0]);
        // Without a meter time, the arrival time.
        let mut no_time = t.clone();
        no_time.meter_time = None;
        let r = readings(&Arc::from("p1"), &no_time, received, &mut clock);
        assert!(r.iter().any(|x| &*x.metric == "tariff" && x.timestamp == received));
        assert_eq!(clock.counts().map(|(_, n)| n), [0, 0], "no clock is no wrong clock");
    }

    #[test]
    fn a_wrong_meter_clock_gives_the_arrival_time_and_is_counted() {
        let t = decode(T).unwrap();
        // The same telegram arriving years after the meter's time: its clock is wrong.
        let received = utc("2020-04-26T20:33:25Z") + chrono::TimeDelta::days(400);
        let mut clock = clock();
        let r = readings(&Arc::from("p1"), &t, received, &mut clock);
        assert!(r.iter().all(|x| x.timestamp == received), "{r:?}");
        // The meter clock and the gas capture time: two device times refused.
        assert_eq!(clock.counts().map(|(_, n)| n), [0, 2]);

        let unset = String::from_utf8_lossy(T)
            .replace("(200426223325S)", "(000101010000W)")
            .replace("(200426223001S)", "(000000000000W)");
        let t = decode(unset.as_bytes()).unwrap();
        let r = readings(&Arc::from("p1"), &t, received, &mut clock);
        assert!(r.iter().all(|x| x.timestamp == received), "{r:?}");
        assert!(r.iter().any(|x| &*x.metric == "gas_delivered"));
        assert_eq!(clock.counts().map(|(_, n)| n), [2, 2]);
    }

    #[test]
    fn every_codec_metric_is_listed() {
        for unit in ["kWh", "kvarh", "W", "var", "VA", "V", "A", "Hz", "m3", "GJ"] {
            assert_ne!(unit_of(unit), Unit::None, "{unit}");
        }
        // Tariffs beyond the listed four and numbered M-Bus devices too.
        let more = String::from_utf8_lossy(T).replace(
            "1-0:1.7.0(00.193*kW)",
            "1-0:1.8.5(000001.000*kWh)\r\n1-0:2.8.12(000002.000*kWh)\r\n1-0:1.7.0(00.193*kW)",
        );
        let t = decode(more.as_bytes()).unwrap();
        assert!(t.get("energy_delivered_tariff5").is_some() && t.get("energy_returned_tariff12").is_some());
        for v in &t.values {
            let spec = crate::monitors::p1_metrics::spec(&v.metric).unwrap();
            assert_eq!(spec.unit, unit_of(v.unit));
            assert_eq!(spec.kind == Kind::Counter, v.counter, "{}", v.metric);
        }
    }

    #[test]
    fn the_peak_history_is_handed_on_when_it_changes_and_hourly() {
        let line = "0-0:98.1.0(2)(1-0:1.6.0)(1-0:1.6.0)(230201000000W)(230117224500W)(04.329*kW)(230301000000W)(230214224500W)(01.000*kW)";
        let text = String::from_utf8_lossy(T).replace(
            "0-0:96.14.0(0002)",
            &format!("{line}\r\n1-0:1.6.0(230305120000W)(03.000*kW)"),
        );
        let t = decode(text.as_bytes()).unwrap();
        let device: DeviceId = Arc::from("p1");
        let mut watch = PeakWatch::new(2500.0);
        let at = utc("2023-03-10T00:00:00Z");
        let (peaks, reading) = watch.observe(&device, &t, at).expect("the first history");
        assert_eq!(peaks.months.len(), 2);
        assert_eq!(peaks.running.as_ref().map(|r| r.month.as_str()), Some("2023-03"));
        // January 4329, February 1000 → 2500, March so far 3000.
        let expected = (4329.0 + 2500.0 + 3000.0) / 3.0;
        assert_eq!(peaks.rolling_average_w, Some(expected));
        assert_eq!(reading.map(|r| r.value), Some(Value::Number(expected)));
        assert!(watch.observe(&device, &t, at + chrono::TimeDelta::seconds(1)).is_none());
        // Unchanged an hour later: handed on again, without a new reading.
        let (_, reading) = watch.observe(&device, &t, at + PEAKS_RESEND_EVERY).expect("again");
        assert!(reading.is_none());
        let higher = decode(text.replace("(03.000*kW)", "(03.500*kW)").as_bytes()).unwrap();
        let (_, reading) = watch
            .observe(&device, &higher, at + PEAKS_RESEND_EVERY)
            .expect("changed");
        assert!(reading.is_some());
        assert!(watch.observe(&device, &decode(T).unwrap(), at).is_none(), "no history");
    }

    #[test]
    fn watch_reports_swaps_and_resets() {
        let mut w = Watch::default();
        let t = decode(T).unwrap();
        assert!(w.observe(&t).is_empty());
        assert!(w.observe(&t).is_empty(), "same values are no anomaly");
        let mut swapped = t.clone();
        swapped.equipment_id = Some("other".into());
        if let Some(v) = swapped
            .values
            .iter_mut()
            .find(|v| v.metric == "energy_delivered_tariff1")
        {
            v.value = DsmrNumberOrText::Number(3.0);
        }
        let found = w.observe(&swapped);
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(found.contains(&Anomaly::CounterBackwards {
            metric: "energy_delivered_tariff1".into(),
            old: 1581.123,
            new: 3.0
        }));
        assert!(matches!(&found[0], Anomaly::EquipmentChanged { new, .. } if new == "other"));
    }
}
