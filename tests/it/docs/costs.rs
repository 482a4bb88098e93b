//! docs/costs.md says what is true: its worked example, computed by the cost job
//! from its own YAML, gives the numbers the page prints; every `tariff:` key is on
//! the page.

use std::path::{Path, PathBuf};

use chrono::{Datelike, NaiveDate, TimeZone, Utc};
use mesura::backends::sqlite::cost::{run_once, CostJob};
use mesura::config::tariff::TariffConfig;
use rusqlite::{params, Connection};
use tokio_util::sync::CancellationToken;

fn page() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/costs.md");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The example's device file: the ```yaml block that starts with `# p1.yaml`.
fn example_tariff(page: &str) -> TariffConfig {
    let start = page.find("```yaml\n# p1.yaml\n").expect("the example's yaml block") + "```yaml\n".len();
    let len = page[start..].find("```").expect("its end");
    let device = mesura::config::parse_device(Path::new("p1.yaml"), &page[start..start + len], &["sqlite"])
        .expect("the example is a valid device file");
    device.common.tariff.expect("with a tariff")
}

/// A number as the page writes it: `places` decimals, trailing zeros dropped.
fn num(x: f64, places: usize) -> String {
    let text = format!("{x:.places$}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// A Wednesday in January a year back (CET, no summer time): 00:00 local in UTC.
fn wednesday() -> i64 {
    let year = Utc::now().year() - 1;
    let mut date = NaiveDate::from_ymd_opt(year, 1, 8).expect("date");
    while date.weekday() != chrono::Weekday::Wed {
        date = date.succ_opt().expect("date");
    }
    Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0).expect("midnight"))
        .timestamp()
        - 3600
}

/// The example's meter: 1.5 kW drawn, 0.4 kW returned, 0.3 m³/h of gas, read every
/// 10 s over `[from, to)`; and a day of quarter-hour prices of 0.1234 EUR/kWh.
fn database(dir: &Path, day: i64, spans: &[(i64, i64)]) -> PathBuf {
    let path = dir.join("mesura.db");
    let conn = Connection::open(&path).expect("open");
    conn.execute_batch(
        "CREATE TABLE p1 (ts INTEGER PRIMARY KEY, energy_delivered_tariff1 REAL, energy_delivered_tariff2 REAL,
                          energy_returned_tariff1 REAL, energy_returned_tariff2 REAL, gas_delivered REAL);
         CREATE TABLE day_ahead (ts INTEGER PRIMARY KEY, price REAL, price_resolution INTEGER);",
    )
    .expect("schema");
    let tx = conn.unchecked_transaction().expect("tx");
    for &(from, to) in spans {
        for t in (from..to).step_by(10) {
            let h = (t - day) as f64 / 3600.0;
            tx.execute(
                "INSERT INTO p1 VALUES (?1, ?2, 2000.0, ?3, 300.0, ?4)",
                params![t, 1000.0 + 1.5 * h, 100.0 + 0.4 * h, 500.0 + 0.3 * h],
            )
            .expect("row");
        }
    }
    for t in (day..day + 86_400).step_by(900) {
        tx.execute("INSERT INTO day_ahead VALUES (?1, 0.1234, 900)", [t])
            .expect("price");
    }
    tx.commit().expect("commit");
    path
}

type Slot = (f64, f64, f64, f64, bool);

fn slot(conn: &Connection, ts: i64, carrier: &str) -> Slot {
    conn.query_row(
        "SELECT kwh, price, cost, credit, fallback FROM p1_cost WHERE ts = ?1 AND carrier = ?2",
        params![ts, carrier],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?)),
    )
    .unwrap_or_else(|e| panic!("slot {ts} {carrier}: {e}"))
}

#[test]
fn the_worked_example_gives_the_numbers_the_page_prints() {
    let page = page();
    let tariff = example_tariff(&page);
    let day = wednesday();
    let h = |hour: i64| day + hour * 3600;
    let dir = tempfile::tempdir().expect("tempdir");
    let db = database(dir.path(), day, &[(h(13), h(15) + 600), (h(22) + 3000, h(23) + 1200)]);
    let job = CostJob {
        device: "p1".into(),
        device_type: "dsmr".into(),
        tariff,
    };
    let now = Utc.timestamp_opt(h(24), 0).single().expect("now");
    run_once(&db, std::slice::from_ref(&job), now, &CancellationToken::new()).expect("run");
    let conn = Connection::open(&db).expect("open");

    let (kwh, price, cost, credit, fallback) = slot(&conn, h(14), "electricity");
    assert!(!fallback);
    let mut missing = Vec::new();
    let mut expect = |text: String| {
        if !page.contains(&text) {
            missing.push(text);
        }
    };
    expect(format!("= {} EUR/kWh", num(price, 6)));
    expect(format!(
        "= {} kWh; cost = {} × {} = {} EUR",
        num(kwh, 3),
        num(kwh, 3),
        num(price, 6),
        num(cost, 6)
    ));
    expect(format!("= {} kWh; credit", num(credit / (0.1234 - 0.01), 3)));
    expect(format!("(0.1234 − 0.01) = {} EUR", num(credit, 6)));
    expect(format!(
        "{} − {} = {} EUR",
        num(cost, 6),
        num(credit, 6),
        num(cost - credit, 6)
    ));
    let late = slot(&conn, h(23), "electricity");
    expect(format!("× 1.21 = {} EUR/kWh", num(late.1, 6)));
    let (gas_kwh, gas_price, gas_cost, ..) = slot(&conn, h(14), "gas");
    expect(format!("= 0.3 × 9.769 = {} kWh", num(gas_kwh, 6)));
    expect(format!(
        "× 1.21 = {} EUR/m³; cost = {} EUR",
        num(gas_price, 6),
        num(gas_cost, 6)
    ));
    let fixed: f64 = conn
        .query_row(
            "SELECT cost FROM p1_cost WHERE carrier = 'fixed' AND ts = ?1",
            [day],
            |r| r.get(0),
        )
        .expect("the day's fixed row");
    expect(format!("× 1.21 = {} EUR", num(fixed, 6)));

    // The same quarter hour without its day-ahead price.
    conn.execute_batch("DROP TABLE p1_cost").expect("drop");
    conn.execute("DELETE FROM day_ahead WHERE ts = ?1", [h(14)])
        .expect("delete");
    run_once(&db, &[job], now, &CancellationToken::new()).expect("rerun");
    let (_, price, _, _, fallback) = slot(&conn, h(14), "electricity");
    assert!(fallback);
    expect(format!("× 1.21 = {} EUR/kWh, with `fallback` 1", num(price, 6)));
    assert!(
        missing.is_empty(),
        "docs/costs.md does not print:\n{}",
        missing.join("\n")
    );
}

/// Every key of `tariff:` (with every optional one set) in the keys table.
#[test]
fn every_tariff_key_is_documented() {
    let full: TariffConfig = serde_yaml_ng::from_str(
        "prices: p\nfixed_price: 0.2\nreturned: {fixed_price: 0.1}\n\
         counters: {delivered: [a], returned: [b], gas: c}\ngas: {price_per_m3: 1.0}\n\
         grid_fees: [{per_kwh: 0.01}]\n",
    )
    .expect("parses");
    let value = serde_json::to_value(&full).expect("serializes");
    let page = page();
    let mut missing = Vec::new();
    let serde_json::Value::Object(map) = value else {
        panic!("an object")
    };
    for (key, inner) in &map {
        let nested: Vec<String> = match (key.as_str(), inner) {
            // The windows' keys are described in the `grid_fees` row.
            ("grid_fees", serde_json::Value::Array(list)) => list
                .iter()
                .filter_map(|w| w.as_object())
                .flat_map(|w| w.keys().cloned())
                .collect(),
            (_, serde_json::Value::Object(inner)) => inner.keys().map(|k| format!("{key}.{k}")).collect(),
            _ => Vec::new(),
        };
        if (nested.is_empty() || key == "grid_fees") && !page.contains(&format!("| `{key}` |")) {
            missing.push(key.clone());
        }
        for k in nested {
            let documented = if key == "grid_fees" {
                page.contains(&format!("`{k}`"))
            } else {
                page.contains(&format!("| `{k}` |"))
            };
            if !documented {
                missing.push(k);
            }
        }
    }
    assert!(missing.is_empty(), "keys not in docs/costs.md: {missing:?}");
}
