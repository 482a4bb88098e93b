//! The true hourly statistics of a counter, from mesura's own stored readings: pure.
//!
//! Home Assistant keeps, per hour, the counter's `state` at the end of the hour and
//! its `sum`, the increase since the statistic's zero point. From the lifetime
//! series (monotonic, docs/counters.md) the truth is `sum(h) = base.sum +
//! (value at the end of h − base.state)`, where the base is the last hour Home
//! Assistant already had right before the period; a statistic Home Assistant has
//! never seen starts at zero at the first stored reading, as its own compiler does.

use crate::protocols::ha_statistics::HourStat;

pub const HOUR: i64 = 3600;

/// A stored reading: unix seconds and value, in time order.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub ts: i64,
    pub value: f64,
}

/// Where the sums continue from: Home Assistant's last hour before the period.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Base {
    pub state: f64,
    pub sum: f64,
}

pub fn floor_hour(ts: i64) -> i64 {
    ts.div_euclid(HOUR) * HOUR
}

/// Every hour in `[from, to)` (hour starts) that ends with a known value: the last
/// sample before the hour's end (a quiet hour carries the value before it, as Home
/// Assistant does). `samples` may start before `from`: the latest of those is the
/// value a quiet first hour carries.
pub fn hourly(samples: &[Sample], from: i64, to: i64, base: Option<Base>) -> Vec<HourStat> {
    let from = floor_hour(from);
    let mut out = Vec::new();
    let Some(first) = samples.iter().find(|s| s.value.is_finite()) else {
        return out;
    };
    let base = base.unwrap_or(Base {
        state: first.value,
        sum: 0.0,
    });
    let mut next = 0;
    let mut last: Option<f64> = None;
    let mut hour = from;
    while hour < to {
        let end = hour + HOUR;
        while let Some(s) = samples.get(next).filter(|s| s.ts < end) {
            if s.value.is_finite() {
                last = Some(s.value);
            }
            next += 1;
        }
        if let Some(value) = last {
            out.push(HourStat {
                start: hour,
                state: value,
                sum: base.sum + (value - base.state),
            });
        }
        hour = end;
    }
    out
}

/// Whether Home Assistant's hour equals ours (to a millionth of the value: the
/// database stores doubles, the JSON prints them).
pub fn same(a: &HourStat, b: &HourStat) -> bool {
    let close = |x: f64, y: f64| (x - y).abs() <= 1e-6 * x.abs().max(y.abs()).max(1.0);
    a.start == b.start && close(a.state, b.state) && close(a.sum, b.sum)
}

/// The hours of `ours` that Home Assistant lacks or has wrong: what to import.
/// Hours it already has right are never rewritten.
pub fn to_import(ours: &[HourStat], theirs: &[HourStat]) -> Vec<HourStat> {
    ours.iter()
        .filter(|o| !theirs.iter().any(|t| same(o, t)))
        .copied()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T0: i64 = 1_000 * HOUR;

    fn s(ts: i64, value: f64) -> Sample {
        Sample { ts, value }
    }

    #[test]
    fn each_hour_holds_its_last_value_and_the_sum_since_the_base() {
        let samples = [
            s(T0 - 60, 99.0),
            s(T0 + 10, 100.0),
            s(T0 + 1800, 101.5),
            s(T0 + HOUR + 5, 102.0),
            // a quiet hour (T0 + 2h) carries 102.0
            s(T0 + 3 * HOUR + 3599, 110.25),
        ];
        let base = Base { state: 99.0, sum: 40.0 };
        let hours = hourly(&samples, T0, T0 + 4 * HOUR, Some(base));
        let got: Vec<(i64, f64, f64)> = hours.iter().map(|h| ((h.start - T0) / HOUR, h.state, h.sum)).collect();
        assert_eq!(
            got,
            vec![(0, 101.5, 42.5), (1, 102.0, 43.0), (2, 102.0, 43.0), (3, 110.25, 51.25)]
        );
    }

    #[test]
    fn without_a_base_the_sum_starts_at_the_first_reading() {
        let samples = [s(T0 + 100, 5.0), s(T0 + HOUR + 100, 7.5), s(T0 + 2 * HOUR + 100, 8.0)];
        let hours = hourly(&samples, T0 - 2 * HOUR, T0 + 3 * HOUR, None);
        assert_eq!(hours.len(), 3, "no hour before the first reading: {hours:?}");
        assert_eq!((hours[0].start, hours[0].sum), (T0, 0.0));
        assert_eq!((hours[2].state, hours[2].sum), (8.0, 3.0));
        assert!(hourly(&[], T0, T0 + HOUR, None).is_empty());
    }

    #[test]
    fn a_reading_on_the_hour_belongs_to_the_hour_it_starts() {
        let hours = hourly(&[s(T0, 1.0), s(T0 + HOUR, 2.0)], T0 + 17, T0 + 2 * HOUR, None);
        assert_eq!(hours.iter().map(|h| h.state).collect::<Vec<_>>(), vec![1.0, 2.0]);
    }

    #[test]
    fn only_missing_or_wrong_hours_are_imported_and_a_second_run_imports_nothing() {
        let ours = hourly(
            &[s(T0 + 1, 1.0), s(T0 + HOUR + 1, 2.0), s(T0 + 2 * HOUR + 1, 4.0)],
            T0,
            T0 + 3 * HOUR,
            None,
        );
        // Home Assistant: hour 0 right, hour 1 flat (the outage), hour 2 missing.
        let theirs = vec![
            HourStat {
                start: T0,
                state: 1.0,
                sum: 0.0,
            },
            HourStat {
                start: T0 + HOUR,
                state: 1.0,
                sum: 0.0,
            },
        ];
        let import = to_import(&ours, &theirs);
        assert_eq!(
            import.iter().map(|h| (h.start - T0) / HOUR).collect::<Vec<_>>(),
            vec![1, 2]
        );
        // After the import Home Assistant has ours: nothing left to do.
        assert!(to_import(&ours, &ours).is_empty());
        // Rounding in the JSON round trip is not a difference.
        let printed: Vec<HourStat> = ours
            .iter()
            .map(|h| HourStat {
                sum: h.sum + 1e-12,
                ..*h
            })
            .collect();
        assert!(to_import(&ours, &printed).is_empty());
    }
}
