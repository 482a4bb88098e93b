//! `aggregate: 5m`: one point per window, device and metric instead of every
//! reading. Pure functions over outbox rows.
//!
//! Aggregation happens at delivery, from the raw rows in the outbox, and only for
//! windows that have ended: a restart in the middle of a window loses nothing and
//! does not split the window in two points. A reading that arrives after its
//! window was sent (a meter's late capture time) makes a second point for that
//! window, with only that reading.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::backends::outbox::OutboxRow;
use crate::reading::{Kind, Value};

/// The start of the window holding `t`: windows are aligned on the Unix epoch, so
/// `5m` windows start at :00, :05, …
pub(super) fn window_start(t: DateTime<Utc>, window: Duration) -> DateTime<Utc> {
    let w = (window.as_millis() as i64).max(1);
    let ms = t.timestamp_millis();
    DateTime::<Utc>::from_timestamp_millis(ms - ms.rem_euclid(w)).unwrap_or(t)
}

/// From a page of rows ordered by timestamp (all before the current window), the
/// ones that can be aggregated now. A full page may end in the middle of a
/// window, whose rest is on the next page: that window waits for the next round,
/// unless it alone fills the page (then it has to be split).
pub(super) fn whole_windows(rows: &[OutboxRow], page_full: bool, window: Duration) -> &[OutboxRow] {
    let Some(last) = rows.last() else { return rows };
    if !page_full {
        return rows;
    }
    let cut = window_start(last.timestamp, window);
    let keep = rows.partition_point(|r| window_start(r.timestamp, window) < cut);
    if keep == 0 {
        rows
    } else {
        &rows[..keep]
    }
}

/// The points of one window of one device's metric, and the outbox rows they stand for.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Group {
    pub points: Vec<OutboxRow>,
    pub ids: Vec<i64>,
}

/// Groups rows by device, metric and window. Gauges give `<metric>_mean`, `_min`,
/// `_max` and `_last`; counters and text values give `<metric>` = the last value.
/// Points are stamped with the window's start.
pub(super) fn aggregate(rows: &[OutboxRow], window: Duration) -> Vec<Group> {
    struct Acc<'a> {
        first: &'a OutboxRow,
        last: &'a OutboxRow,
        sum: f64,
        count: u64,
        min: f64,
        max: f64,
        ids: Vec<i64>,
    }
    let mut order: Vec<(&str, &str, DateTime<Utc>)> = Vec::new();
    let mut accs: HashMap<(&str, &str, DateTime<Utc>), Acc<'_>> = HashMap::new();
    for r in rows {
        let key = (r.device.as_str(), r.metric.as_str(), window_start(r.timestamp, window));
        let acc = accs.entry(key).or_insert_with(|| {
            order.push(key);
            Acc {
                first: r,
                last: r,
                sum: 0.0,
                count: 0,
                min: f64::INFINITY,
                max: f64::NEG_INFINITY,
                ids: Vec::new(),
            }
        });
        if (r.timestamp, r.id) >= (acc.last.timestamp, acc.last.id) {
            acc.last = r;
        }
        if let Value::Number(n) = r.value {
            if n.is_finite() {
                acc.sum += n;
                acc.count += 1;
                acc.min = acc.min.min(n);
                acc.max = acc.max.max(n);
            }
        }
        acc.ids.push(r.id);
    }
    order
        .into_iter()
        .filter_map(|key| accs.remove(&key).map(|acc| (key.2, acc)))
        .map(|(start, acc)| {
            let point = |suffix: &str, value: Value| OutboxRow {
                id: 0,
                metric: format!("{}{suffix}", acc.first.metric),
                value,
                timestamp: start,
                ..acc.first.clone()
            };
            let gauge = acc.first.kind == Kind::Gauge && matches!(acc.last.value, Value::Number(_));
            let points = if gauge && acc.count > 0 {
                vec![
                    point("_mean", Value::Number(acc.sum / acc.count as f64)),
                    point("_min", Value::Number(acc.min)),
                    point("_max", Value::Number(acc.max)),
                    point("_last", acc.last.value.clone()),
                ]
            } else if gauge {
                vec![point("_last", acc.last.value.clone())]
            } else {
                vec![point("", acc.last.value.clone())]
            };
            Group { points, ids: acc.ids }
        })
        .collect()
}

/// Splits groups into requests of at most `batch_size` points (a group is never
/// split; one bigger than `batch_size` goes alone).
pub(super) fn take_batch(groups: Vec<Group>, batch_size: usize) -> (Vec<OutboxRow>, Vec<i64>) {
    let mut points = Vec::new();
    let mut ids = Vec::new();
    for group in groups {
        if !points.is_empty() && points.len() + group.points.len() > batch_size {
            break;
        }
        points.extend(group.points);
        ids.extend(group.ids);
    }
    (points, ids)
}

/// Rows stamped before this are in windows that have ended (it is the start of
/// the window `now` is in).
pub(super) fn cutoff(now: DateTime<Utc>, window: Duration) -> DateTime<Utc> {
    window_start(now, window)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(id: i64, metric: &str, kind: Kind, value: f64, ts: &str) -> OutboxRow {
        OutboxRow {
            id,
            device: "p1".into(),
            device_type: "dsmr".into(),
            metric: metric.into(),
            value: Value::Number(value),
            unit: "W".into(),
            kind,
            timestamp: DateTime::parse_from_rfc3339(ts).unwrap().with_timezone(&Utc),
        }
    }

    const FIVE_MIN: Duration = Duration::from_secs(300);

    #[test]
    fn gauges_get_mean_min_max_last_and_counters_last() {
        let rows = [
            row(1, "power", Kind::Gauge, 100.0, "2026-11-24T12:00:10Z"),
            row(2, "energy", Kind::Counter, 5.0, "2026-11-24T12:00:10Z"),
            row(3, "power", Kind::Gauge, 300.0, "2026-11-24T12:04:59Z"),
            row(4, "power", Kind::Gauge, 200.0, "2026-11-24T12:02:00Z"),
            row(5, "energy", Kind::Counter, 6.0, "2026-11-24T12:04:59Z"),
            row(6, "power", Kind::Gauge, 50.0, "2026-11-24T12:05:00Z"),
        ];
        let groups = aggregate(&rows, FIVE_MIN);
        let got: Vec<(String, String, f64)> = groups
            .iter()
            .flat_map(|g| g.points.iter())
            .map(|p| (p.metric.clone(), p.timestamp.to_rfc3339(), p.value.as_f64().unwrap()))
            .collect();
        let t0 = "2026-11-24T12:00:00+00:00".to_string();
        let t1 = "2026-11-24T12:05:00+00:00".to_string();
        assert_eq!(
            got,
            vec![
                ("power_mean".into(), t0.clone(), 200.0),
                ("power_min".into(), t0.clone(), 100.0),
                ("power_max".into(), t0.clone(), 300.0),
                ("power_last".into(), t0.clone(), 300.0),
                ("energy".into(), t0.clone(), 6.0),
                ("power_mean".into(), t1.clone(), 50.0),
                ("power_min".into(), t1.clone(), 50.0),
                ("power_max".into(), t1.clone(), 50.0),
                ("power_last".into(), t1, 50.0),
            ]
        );
        assert_eq!(groups[0].ids, vec![1, 3, 4]);
        let (points, ids) = take_batch(groups, 6);
        assert_eq!(points.len(), 5, "the second power group would pass 6");
        assert_eq!(ids, vec![1, 3, 4, 2, 5]);
    }

    #[test]
    fn a_full_page_keeps_only_whole_windows() {
        let rows = [
            row(1, "power", Kind::Gauge, 1.0, "2026-11-24T12:00:10Z"),
            row(2, "power", Kind::Gauge, 1.0, "2026-11-24T12:05:10Z"),
            row(3, "power", Kind::Gauge, 1.0, "2026-11-24T12:06:10Z"),
        ];
        assert_eq!(whole_windows(&rows, true, FIVE_MIN).len(), 1);
        assert_eq!(whole_windows(&rows, false, FIVE_MIN).len(), 3);
        assert_eq!(
            whole_windows(&rows[1..], true, FIVE_MIN).len(),
            2,
            "one window alone is split"
        );
        let now = DateTime::parse_from_rfc3339("2026-11-24T12:07:00Z").unwrap().to_utc();
        assert_eq!(cutoff(now, FIVE_MIN).to_rfc3339(), "2026-11-24T12:05:00+00:00");
    }
}
