use chrono::{Datelike, NaiveDate, TimeZone};
use rusqlite::Connection;

use super::slots::{grid, spread, LocalTime, Slot};
use super::*;
use crate::config::tariff::SummerTime;

const STEP: i64 = 10;

fn tariff(yaml: &str) -> TariffConfig {
    let t: TariffConfig = serde_yaml_ng::from_str(yaml).expect("tariff parses");
    assert_eq!(t.validate(), Ok(()));
    t
}

fn job(yaml: &str) -> CostJob {
    CostJob {
        device: "p1".into(),
        device_type: "dsmr".into(),
        tariff: tariff(yaml),
    }
}

/// A database with a DSMR-shaped `p1` table and a `prices` device's table.
fn db() -> (tempfile::TempDir, PathBuf, Connection) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("mesura.db");
    let conn = Connection::open(&path).expect("open");
    conn.execute_batch(
        "CREATE TABLE p1 (ts INTEGER PRIMARY KEY, energy_delivered_tariff1 REAL, energy_delivered_tariff2 REAL,
                          energy_returned_tariff1 REAL, energy_returned_tariff2 REAL, gas_delivered REAL);
         CREATE TABLE prices (ts INTEGER PRIMARY KEY, price REAL, price_resolution INTEGER);",
    )
    .expect("schema");
    (dir, path, conn)
}

/// Rows every `STEP` s over `[from, to)`: drawing `kw` (split over both tariffs)
/// and returning `ret_kw`, from counters at `start`.
fn fill(conn: &Connection, from: i64, to: i64, kw: f64, ret_kw: f64, start: (f64, f64)) {
    let tx = conn.unchecked_transaction().expect("tx");
    let mut t = from;
    while t < to {
        let hours = (t - from) as f64 / 3600.0;
        let d = start.0 + kw * hours;
        let r = start.1 + ret_kw * hours;
        tx.execute(
            "INSERT OR REPLACE INTO p1 (ts, energy_delivered_tariff1, energy_delivered_tariff2, energy_returned_tariff1, energy_returned_tariff2) VALUES (?1, ?2, 1000.0, ?3, 50.0)",
            params![t, d, r],
        )
        .expect("row");
        t += STEP;
    }
    tx.commit().expect("commit");
}

/// Quarter-hour prices over `[from, to)`: 0.10, 0.11, 0.12, 0.13, 0.10 …
fn quarter_prices(conn: &Connection, from: i64, to: i64) {
    let mut t = from;
    let mut i = 0;
    while t < to {
        conn.execute(
            "INSERT INTO prices (ts, price, price_resolution) VALUES (?1, ?2, 900)",
            params![t, 0.10 + 0.01 * f64::from(i % 4)],
        )
        .expect("price");
        t += 900;
        i += 1;
    }
}

/// A local (CET) midnight some days before now: never today's date.
fn past_midnight(days_ago: i64) -> i64 {
    let local = LocalTime {
        standard: 3600,
        summer: SummerTime::Eu,
    };
    let now = Utc::now().timestamp();
    local.day(now - days_ago * 86_400).1
}

fn at(ts: i64) -> DateTime<Utc> {
    DateTime::<Utc>::from_timestamp(ts, 0).expect("time")
}

type CostRow = (i64, i64, f64, f64, f64, f64, f64, bool, bool);

fn rows(conn: &Connection, carrier: &str) -> Vec<CostRow> {
    conn.prepare(
        "SELECT ts, duration, kwh, price, cost, returned_kwh, credit, fallback, estimated FROM p1_cost WHERE carrier = ?1 ORDER BY ts",
    )
    .expect("prepare")
    .query_map([carrier], |r| {
        Ok((
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
            r.get(6)?,
            r.get(7)?,
            r.get(8)?,
        ))
    })
    .expect("query")
    .collect::<Result<_, _>>()
    .expect("rows")
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9 * b.abs().max(1.0)
}

#[test]
fn a_normal_day_at_quarter_hour_prices() {
    let (_dir, path, conn) = db();
    let day = past_midnight(5);
    let end = day + 86_400 + 60;
    fill(&conn, day - 60, end, 1.0, 0.0, (100.0, 0.0));
    quarter_prices(&conn, day - 3600, day + 86_400 + 3600);
    let j = job("prices: prices\nmarkup: 0.02\nenergy_tax: 0.1\nvat_percent: 21\ndaily_fixed: 1.0\ngrid_fees:\n  - {from: '07:00', to: '23:00', per_kwh: 0.05}\n");
    let report = run_once(&path, std::slice::from_ref(&j), at(end), &CancellationToken::new())
        .expect("run")
        .expect("db exists");
    let slots: Vec<CostRow> = rows(&conn, "electricity")
        .into_iter()
        .filter(|r| (day..day + 86_400).contains(&r.0))
        .collect();
    assert_eq!(slots.len(), 96, "one row per quarter hour");
    assert!(report["p1"] >= 96);
    let local = LocalTime::of(&j.tariff);
    for (i, (ts, len, kwh, price, cost, ..)) in slots.iter().enumerate() {
        assert_eq!((*len, *ts), (900, day + 900 * i as i64));
        assert!(close(*kwh, 0.25), "1 kW for 15 min: {kwh}");
        let spot = 0.10 + 0.01 * (i % 4) as f64;
        let hour = i / 4;
        let fee = if (7..23).contains(&hour) { 0.05 } else { 0.0 };
        assert!(close(*price, (spot + 0.02 + 0.1 + fee) * 1.21), "slot {i}: {price}");
        assert!(close(*cost, kwh * price));
        assert_eq!(local.day(*ts).1, day);
    }
    let fixed: f64 = conn
        .query_row(
            "SELECT cost FROM p1_cost WHERE carrier = 'fixed' AND ts = ?1",
            [day],
            |r| r.get(0),
        )
        .expect("fixed row of the day");
    assert!(close(fixed, 1.21));
}

#[test]
fn a_gap_is_spread_over_its_slots_and_marked_estimated() {
    let (_dir, path, conn) = db();
    let day = past_midnight(4);
    // 1 kW until 10:00 local, nothing stored until 12:30, then 1 kW again; across
    // the gap the counter rose by 5 kWh.
    let gap_from = day + 10 * 3600;
    let gap_to = gap_from + 2 * 3600 + 1800;
    fill(&conn, day, gap_from + STEP, 1.0, 0.0, (100.0, 0.0));
    // The last row before the gap is at 10:00 sharp: 10 h at 1 kW.
    let at_gap = 110.0;
    fill(&conn, gap_to, day + 86_400 + 60, 1.0, 0.0, (at_gap + 5.0, 0.0));
    let j = job("fixed_price: 0.3\n");
    run_once(
        &path,
        std::slice::from_ref(&j),
        at(day + 86_400 + 60),
        &CancellationToken::new(),
    )
    .expect("run");
    let slots = rows(&conn, "electricity");
    let estimated: Vec<&CostRow> = slots.iter().filter(|r| r.8).collect();
    // Hourly slots 10:00, 11:00, 12:00 touch the gap.
    assert_eq!(
        estimated.iter().map(|r| r.0).collect::<Vec<_>>(),
        vec![gap_from, gap_from + 3600, gap_from + 7200]
    );
    let rate = 5.0 / (gap_to - gap_from) as f64;
    assert!(
        close(estimated[1].2, rate * 3600.0),
        "a whole hour of the gap: {}",
        estimated[1].2
    );
    // 12:00–13:00: 30 min of gap and 30 min measured at 1 kW.
    assert!(close(estimated[2].2, rate * 1800.0 + 0.5), "{}", estimated[2].2);
    let total: f64 = slots
        .iter()
        .filter(|r| (day..day + 86_400).contains(&r.0))
        .map(|r| r.2)
        .sum();
    assert!(
        close(total, 24.0 - 2.5 + 5.0),
        "nothing lost or doubled across the gap: {total}"
    );
    assert_eq!(slots.iter().filter(|r| !r.8).count(), slots.len() - 3);
}

#[test]
fn returned_energy_is_credited_at_its_own_rule() {
    let (_dir, path, conn) = db();
    let day = past_midnight(3);
    fill(&conn, day, day + 6 * 3600 + 60, 0.5, 2.0, (100.0, 10.0));
    quarter_prices(&conn, day, day + 86_400);
    let j = job("prices: prices\nmarkup: 0.02\nvat_percent: 21\nreturned:\n  price: spot\n  markup: -0.01\n");
    run_once(
        &path,
        std::slice::from_ref(&j),
        at(day + 6 * 3600 + 60),
        &CancellationToken::new(),
    )
    .expect("run");
    let slots = rows(&conn, "electricity");
    assert_eq!(slots.len(), 24);
    for (i, (_, _, kwh, price, cost, ret, credit, ..)) in slots.iter().enumerate() {
        let spot = 0.10 + 0.01 * (i % 4) as f64;
        assert!(close(*kwh, 0.125) && close(*ret, 0.5), "{kwh} {ret}");
        assert!(close(*price, (spot + 0.02) * 1.21));
        assert!(close(*credit, 0.5 * (spot - 0.01)), "spot + markup, no VAT: {credit}");
        assert!(*credit > *cost, "more returned than drawn");
    }
}

#[test]
fn a_missing_price_slot_falls_back_to_the_fixed_price() {
    let (_dir, path, conn) = db();
    let day = past_midnight(2);
    fill(&conn, day, day + 4 * 3600 + 60, 1.0, 0.0, (100.0, 0.0));
    quarter_prices(&conn, day, day + 86_400);
    conn.execute(
        "DELETE FROM prices WHERE ts >= ?1 AND ts < ?2",
        [day + 3600, day + 7200],
    )
    .expect("delete an hour of prices");
    let run = |yaml: &str| {
        conn.execute("DROP TABLE IF EXISTS p1_cost", []).expect("drop");
        run_once(&path, &[job(yaml)], at(day + 4 * 3600 + 60), &CancellationToken::new()).expect("run");
        rows(&conn, "electricity")
    };
    let with = run("prices: prices\nfixed_price: 0.25\n");
    let hole: Vec<&CostRow> = with.iter().filter(|r| r.7).collect();
    assert_eq!(hole.len(), 1, "the missing hour is one fallback slot");
    assert_eq!((hole[0].0, hole[0].1), (day + 3600, 3600));
    assert!(close(hole[0].3, 0.25) && close(hole[0].2, 1.0));
    assert_eq!(with.len(), 3 * 4 + 1);
    // Without a fallback the hour waits for its price; the others are costed.
    let without = run("prices: prices\n");
    assert_eq!(without.len(), 12);
    assert!(without.iter().all(|r| r.0 < day + 3600 || r.0 >= day + 7200));
}

/// The last Sunday of `month` a year or two back, as a local CET date.
fn switch_day(month: u32) -> NaiveDate {
    let year = Utc::now().year() - 1;
    let last = NaiveDate::from_ymd_opt(year, month + 1, 1)
        .and_then(|d| d.pred_opt())
        .expect("date");
    last - chrono::Duration::days(i64::from(last.weekday().num_days_from_sunday()))
}

#[test]
fn dst_days_have_23_and_25_hourly_slots() {
    for (month, hours) in [(3, 23), (10, 25)] {
        let (_dir, path, conn) = db();
        let date = switch_day(month);
        let j = job("fixed_price: 0.2\ndaily_fixed: 0.5\n");
        let local = LocalTime::of(&j.tariff);
        let (_, start, end) = local.day(local.midnight(date) + 3600);
        assert_eq!(end - start, hours * 3600, "{date}");
        fill(&conn, start - 60, end + 60, 1.0, 0.0, (100.0, 0.0));
        run_once(&path, &[j], at(end + 60), &CancellationToken::new()).expect("run");
        let (n, kwh, dur): (i64, f64, i64) = conn
            .query_row(
                "SELECT count(*), sum(kwh), (SELECT duration FROM p1_cost WHERE carrier = 'fixed' AND day = ?1) FROM p1_cost WHERE carrier = 'electricity' AND day = ?1",
                [date.to_string()],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .expect("day");
        assert_eq!((n, dur), (hours, hours * 3600), "{date}");
        assert!(close(kwh, hours as f64));
    }
}

#[test]
fn lifetime_columns_and_gas_and_reruns() {
    let (_dir, path, conn) = db();
    conn.execute_batch(
        "ALTER TABLE p1 ADD COLUMN energy_delivered_tariff1_lifetime REAL; ALTER TABLE p1 ADD COLUMN energy_delivered_tariff2_lifetime REAL;",
    )
    .expect("lifetime columns");
    let day = past_midnight(6);
    fill(&conn, day, day + 3 * 3600 + 60, 1.0, 0.0, (100.0, 0.0));
    // The raw counter was swapped (it drops to 0 at 01:00); the lifetime series goes on.
    conn.execute(
        "UPDATE p1 SET energy_delivered_tariff1_lifetime = energy_delivered_tariff1, energy_delivered_tariff2_lifetime = 1000.0, \
         energy_delivered_tariff1 = CASE WHEN ts >= ?1 THEN energy_delivered_tariff1 - 101.0 ELSE energy_delivered_tariff1 END, \
         gas_delivered = 500.0 + 0.2 * (ts - ?2) / 3600.0",
        [day + 3600, day],
    )
    .expect("update");
    // A calorific value for the day before: the day's own (the last that began) applies.
    let yesterday = chrono::DateTime::from_timestamp(day - 86_400, 0)
        .expect("day")
        .date_naive();
    let j = job(&format!(
        "fixed_price: 0.3\ngas:\n  price_per_m3: 1.0\n  energy_tax_per_m3: 0.5\n  calorific_value: 10.5\n  calorific_values: [{{from: {yesterday}, value: 9.769}}]\n"
    ));
    let cancel = CancellationToken::new();
    run_once(&path, std::slice::from_ref(&j), at(day + 3 * 3600 + 60), &cancel).expect("run");
    let first = rows(&conn, "electricity");
    assert_eq!(first.len(), 3);
    assert!(first.iter().all(|r| close(r.2, 1.0)), "{first:?}");
    let gas = rows(&conn, "gas");
    assert_eq!(gas.len(), 3);
    assert!(
        gas.iter().all(|r| close(r.2, 0.2 * 9.769) && close(r.4, 0.2 * 1.5)),
        "{gas:?}"
    );
    // A second run (a restart) recomputes its look-back and writes the same rows.
    conn.execute(
        "DELETE FROM p1_cost WHERE ts = ?1 AND carrier = 'electricity'",
        [day + 3600],
    )
    .expect("delete");
    let report = run_once(&path, std::slice::from_ref(&j), at(day + 3 * 3600 + 60), &cancel).expect("rerun");
    assert_eq!(rows(&conn, "electricity"), first);
    assert_eq!(
        report.map(|r| r.get("p1").copied()),
        Some(Some(1)),
        "only the deleted row is written"
    );
    let report = run_once(&path, &[j], at(day + 3 * 3600 + 60), &cancel).expect("third run");
    assert_eq!(report, Some(Report::new()), "unchanged rows are not rewritten");
}

#[test]
fn the_grid_follows_the_price_rows_and_fills_holes() {
    let mut prices = BTreeMap::new();
    prices.insert(3600, (0.1, 900));
    prices.insert(4500, (0.2, 900));
    let g = grid(0, 7200, &prices, 3600);
    let starts: Vec<(i64, i64, bool)> = g.iter().map(|s| (s.start, s.len, s.spot.is_some())).collect();
    assert_eq!(
        starts,
        vec![
            (0, 3600, false),
            (3600, 900, true),
            (4500, 900, true),
            (5400, 1800, false)
        ]
    );
    let slot = |start, len| Slot { start, len, spot: None };
    let used = spread(
        &[(0, 0.0), (100, 1.0), (3700, 2.0)],
        &[slot(0, 100), slot(100, 3600)],
        900,
    );
    assert_eq!(used[0].map(|u| (u.amount, u.estimated)), Some((1.0, false)));
    assert_eq!(used[1].map(|u| (u.amount, u.estimated)), Some((1.0, true)));
    assert_eq!(
        spread(&[(0, 0.0), (50, 1.0)], &[slot(0, 100)], 900),
        vec![None],
        "not closed"
    );
}

#[test]
fn eu_summer_time_switches_at_0100_utc() {
    let local = LocalTime {
        standard: 3600,
        summer: SummerTime::Eu,
    };
    let date = switch_day(3);
    let switch = Utc
        .from_utc_datetime(&date.and_hms_opt(1, 0, 0).expect("time"))
        .timestamp();
    assert_eq!((local.offset_at(switch - 1), local.offset_at(switch)), (3600, 7200));
}

#[test]
fn history_older_than_retention_is_read_from_the_aggregates() {
    let (_dir, path, conn) = db();
    let day = past_midnight(8);
    // Day one was downsampled: 5-minute windows holding each window's last value
    // (1 kW, read every 10 s: the value at the window's last sample), and the
    // prices' means. Day two is raw.
    conn.execute_batch(
        "CREATE TABLE p1_5m (ts INTEGER PRIMARY KEY, samples INTEGER, energy_delivered_tariff1 REAL, energy_delivered_tariff2 REAL);
         CREATE TABLE prices_5m (ts INTEGER PRIMARY KEY, samples INTEGER, price_mean REAL, price_resolution_mean REAL);",
    )
    .expect("aggregate tables");
    for w in (day..day + 86_400).step_by(300) {
        let last = w + 300 - STEP;
        conn.execute(
            "INSERT INTO p1_5m VALUES (?1, 30, ?2, 1000.0)",
            params![w, 100.0 + (last - day) as f64 / 3600.0],
        )
        .expect("window");
        if (w - day) % 3600 == 0 {
            conn.execute("INSERT INTO prices_5m VALUES (?1, 1, 0.2, 3600.0)", [w])
                .expect("price window");
        }
    }
    fill(&conn, day + 86_400, day + 2 * 86_400 + 60, 1.0, 0.0, (124.0, 0.0));
    run_once(
        &path,
        &[job("prices: prices\nfixed_price: 0.5\n")],
        at(day + 2 * 86_400 + 60),
        &CancellationToken::new(),
    )
    .expect("run");
    let slots = rows(&conn, "electricity");
    let first_day: Vec<&CostRow> = slots.iter().filter(|r| r.0 < day + 86_400).collect();
    // The first hour starts before the first aggregate's placed time: not costed.
    assert_eq!(first_day.len(), 23);
    for r in &slots {
        // The placed times are off by the 10 s of the last sample: a few Wh.
        assert!((r.2 - 1.0).abs() < 0.01, "slot {}: {} kWh", r.0, r.2);
    }
    assert!(
        first_day.iter().all(|r| close(r.3, 0.2) && !r.7),
        "day one priced from the aggregates"
    );
    assert_eq!(slots.len(), 23 + 24);
    let total: f64 = slots.iter().map(|r| r.2).sum();
    assert!((total - 47.0).abs() < 0.01, "{total}");
}

#[test]
fn a_corrected_history_is_recomputed_after_forget_from() {
    let (_dir, path, conn) = db();
    let day = past_midnight(9);
    fill(&conn, day, day + 86_400 + 60, 1.0, 0.0, (100.0, 0.0));
    let j = job("fixed_price: 0.3\n");
    let cancel = CancellationToken::new();
    run_once(&path, std::slice::from_ref(&j), at(day + 86_400 + 60), &cancel).expect("run");
    // The morning's counter was 1 kWh/h too low (a wrong epoch, corrected later):
    // from 06:00 on every value is 1 kWh higher, so 05:00–06:00 used 2 kWh.
    conn.execute(
        "UPDATE p1 SET energy_delivered_tariff1 = energy_delivered_tariff1 + 1.0 WHERE ts >= ?1",
        [day + 6 * 3600],
    )
    .expect("correct");
    run_once(&path, std::slice::from_ref(&j), at(day + 86_400 + 60), &cancel).expect("rerun");
    let slot = |conn: &Connection| -> f64 {
        conn.query_row(
            "SELECT kwh FROM p1_cost WHERE carrier = 'electricity' AND ts = ?1",
            [day + 5 * 3600],
            |r| r.get(0),
        )
        .expect("slot")
    };
    assert!(
        close(slot(&conn), 1.0),
        "outside the look-back: unchanged until forgotten"
    );
    assert_eq!(forget_from(&path, "p1", day + 4 * 3600).expect("forget"), 20);
    run_once(&path, &[j], at(day + 86_400 + 60), &cancel).expect("recompute");
    assert!(
        close(slot(&conn), 2.0),
        "the step lands in 05:00–06:00: {}",
        slot(&conn)
    );
    assert_eq!(rows(&conn, "electricity").len(), 24);
}

#[test]
fn a_day_with_the_meter_down_still_has_its_fixed_costs() {
    let (_dir, path, conn) = db();
    let first = past_midnight(12);
    let local = LocalTime {
        standard: 3600,
        summer: SummerTime::Eu,
    };
    let third = local.day(local.day(first).2).2;
    // Day one until noon, nothing on day two, day three from noon.
    fill(&conn, first, first + 12 * 3600, 1.0, 0.0, (100.0, 0.0));
    fill(&conn, third + 12 * 3600, third + 14 * 3600, 1.0, 0.0, (200.0, 0.0));
    run_once(
        &path,
        &[job("fixed_price: 0.3\ndaily_fixed: 1.0\n")],
        at(third + 14 * 3600),
        &CancellationToken::new(),
    )
    .expect("run");
    let days: Vec<(i64, f64)> = conn
        .prepare("SELECT ts, cost FROM p1_cost WHERE carrier = 'fixed' ORDER BY ts")
        .expect("prepare")
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(
        days.iter().map(|d| d.0).collect::<Vec<_>>(),
        vec![first, local.day(first).2, third]
    );
    assert!(days.iter().all(|d| close(d.1, 1.0)));
    // The slots the gap touches are estimated: they hold the rise across it (from
    // the last row at 11:59:50) and the 11:00 slot's measured part before it.
    let last_before = 100.0 + 12.0 - STEP as f64 / 3600.0;
    let estimated: Vec<CostRow> = rows(&conn, "electricity").into_iter().filter(|r| r.8).collect();
    assert_eq!(
        estimated.len(),
        13 + 24 + 12,
        "day one from 11:00, day two, day three to noon"
    );
    let spread: f64 = estimated.iter().map(|r| r.2).sum();
    assert!(close(spread, (200.0 - last_before) + (last_before - 111.0)), "{spread}");
}

#[test]
fn rows_from_before_the_lifetime_series_are_read_raw_and_glitches_after_it_not() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("mesura.db");
    let conn = Connection::open(&path).expect("db");
    // An hour of raw readings (a database from before the clean counters), then the
    // lifetime column appears and carries the counter (offset 0), with one glitch
    // row (raw 0, no lifetime value) in it.
    conn.execute_batch(
        "CREATE TABLE m (ts INTEGER PRIMARY KEY, e REAL);
         ALTER TABLE m ADD COLUMN e_lifetime REAL;",
    )
    .expect("table");
    for i in 0..120 {
        let ts = 1_000_000 + i * 60;
        let raw = 100.0 + i as f64 * 0.1;
        let lifetime = (i >= 60).then_some(raw);
        let (raw, lifetime) = if i == 90 { (0.0, None) } else { (raw, lifetime) };
        conn.execute(
            "INSERT INTO m VALUES (?1, ?2, ?3)",
            rusqlite::params![ts, raw, lifetime],
        )
        .expect("row");
    }
    let got =
        super::rows::samples(&conn, "m", &["e_lifetime".to_owned()], 1_000_000, 1_000_000 + 120 * 60).expect("samples");
    assert_eq!(got.len(), 119, "every row but the glitch");
    assert!(got.windows(2).all(|w| w[1].1 >= w[0].1), "no drop: {got:?}");
    assert!(
        (got[0].1 - 100.0).abs() < 1e-9 && (got[118].1 - 111.9).abs() < 1e-9,
        "{got:?}"
    );
}
