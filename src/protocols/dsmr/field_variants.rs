//! Telegram variants seen in the field in 2025–26, line by line: each test holds
//! the lines as a public capture has them (sources in tests/fixtures/dsmr/SOURCES.md,
//! "Telegram variants 2025–26"); whole telegrams are in the fixtures.

use chrono::{DateTime, TimeZone, Utc};

use super::*;

/// A telegram of `lines` (CR LF each) under an Iskra header, without CRC.
fn telegram(lines: &[&str]) -> Telegram {
    let mut text = String::from("/ISk5\\2MIE5T-200\r\n\r\n");
    for line in lines {
        text.push_str(line);
        text.push_str("\r\n");
    }
    text.push_str("!\r\n");
    decode(text.as_bytes()).expect("telegram")
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, s).single().expect("date")
}

fn unknown_ids(t: &Telegram) -> Vec<&str> {
    t.unknown.iter().map(|(id, _)| id.as_str()).collect()
}

#[test]
fn the_month_peak_reads_the_same_in_both_orders() {
    // ORES (Wallonia) Iskra IE5 firmware of 2026: value first, time without season.
    let new = telegram(&["1-0:1.6.0(08.796*kW)(260102010000)"]);
    let peak = new.get("peak_demand_month").expect("peak");
    assert_eq!(peak.value.as_f64(), Some(8796.0));
    // 2026-01-02 01:00 local, winter time.
    assert_eq!(peak.timestamp, Some(utc(2026, 1, 2, 0, 0, 0)));
    // With the season letter, as the issue quotes it, and in the e-MUCS order.
    for line in [
        "1-0:1.6.0(08.796*kW)(260102010000W)",
        "1-0:1.6.0(260102010000W)(08.796*kW)",
        "1-0:1.6.0(260102010000)(08.796*kW)",
    ] {
        let t = telegram(&[line]);
        let peak = t.get("peak_demand_month").expect(line);
        assert_eq!(peak.value.as_f64(), Some(8796.0), "{line}");
        assert_eq!(peak.timestamp, Some(utc(2026, 1, 2, 0, 0, 0)), "{line}");
        assert!(t.unknown.is_empty() && t.malformed.is_empty(), "{line}: {t:?}");
    }
    // A placeholder time in either place keeps the value, without a time.
    let t = telegram(&["1-0:1.6.0(03.003*kW)(35255255255255255S)"]);
    assert_eq!(t.number("peak_demand_month"), Some(3003.0));
    assert_eq!(t.get("peak_demand_month").and_then(|v| v.timestamp), None);
    assert_eq!(t.unreadable_times.len(), 1);
    // Two values, or two times, are not a peak.
    let t = telegram(&[
        "1-0:1.6.0(01.000*kW)(02.000*kW)",
        "1-0:1.4.0(260102010000)(260102011500)",
    ]);
    assert_eq!(unknown_ids(&t), ["1-0:1.6.0", "1-0:1.4.0"]);
}

#[test]
fn the_running_quarter_takes_a_time_but_keeps_the_telegram_time() {
    for line in [
        "1-0:1.4.0(03.336*kW)",
        "1-0:1.4.0(03.336*kW)(260104161500)",
        "1-0:1.4.0(260104161500W)(03.336*kW)",
    ] {
        let t = telegram(&[line]);
        let quarter = t.get("peak_demand_current_quarter").expect(line);
        assert_eq!(quarter.value.as_f64(), Some(3336.0), "{line}");
        assert_eq!(quarter.timestamp, None, "{line}");
    }
}

#[test]
fn tariffs_beyond_four_are_decoded_by_the_same_rule() {
    // ORES Iskra IE5, 2026: five tariffs each way.
    let t = telegram(&[
        "1-0:1.8.1(007105.942*kWh)",
        "1-0:1.8.4(000000.000*kWh)",
        "1-0:1.8.5(000000.123*kWh)",
        "1-0:2.8.5(000001.500*kWh)",
        // esphome-libs/dsmr_parser: an Israeli meter's tariffs 11 to 13.
        "1-0:1.8.12(000155.482*kWh)",
        // Iskra ME383: reactive energy per tariff.
        "1-0:3.8.4(000001.77*kvarh)",
    ]);
    assert_eq!(t.number("energy_delivered_tariff1"), Some(7105.942));
    assert_eq!(t.number("energy_delivered_tariff4"), Some(0.0));
    assert_eq!(t.number("energy_delivered_tariff5"), Some(0.123));
    assert_eq!(t.number("energy_returned_tariff5"), Some(1.5));
    assert_eq!(t.number("energy_delivered_tariff12"), Some(155.482));
    assert_eq!(t.number("reactive_energy_delivered_tariff4"), Some(1.77));
    let t5 = t.get("energy_returned_tariff5").expect("tariff 5");
    assert_eq!((t5.unit, t5.counter), ("kWh", true));
    assert_eq!(t5.obis.to_string(), "1-0:2.8.5");
    assert!(t.unknown.is_empty(), "{:?}", t.unknown);
    // A second object for a tariff, or one in a unit that is no energy: unknown.
    let t = telegram(&["1-0:1.8.5(1.000*kWh)", "1-0:1.8.5(2.000*kWh)", "1-0:2.8.6(1.000*kW)"]);
    assert_eq!(t.number("energy_delivered_tariff5"), Some(1.0));
    assert_eq!(unknown_ids(&t), ["1-0:1.8.5", "1-0:2.8.6"]);
    assert!(t.get("energy_returned_tariff6").is_none());
    // Tariff 0 is the total, 64 and up are no tariffs.
    let t = telegram(&["1-0:1.8.0(9.000*kWh)", "1-0:1.8.64(1.000*kWh)"]);
    assert_eq!(t.number("energy_delivered_total"), Some(9.0));
    assert_eq!(unknown_ids(&t), ["1-0:1.8.64"]);
}

#[test]
fn date_and_time_apart_are_the_meter_clock() {
    // Iskra ME383 (IEC 62056-21): 2015-04-27 14:02:17 local, summer time.
    let t = telegram(&["1-0:0.9.1(140217)", "1-0:0.9.2(150427)", "1-0:1.8.0(000688.01*kWh)"]);
    assert_eq!(t.meter_time, Some(utc(2015, 4, 27, 12, 2, 17)));
    assert!(t.unknown.is_empty());
    // In either order, with a season letter on the time.
    let t = telegram(&["1-0:0.9.2(260115)", "1-0:0.9.1(201009W)"]);
    assert_eq!(t.meter_time, Some(utc(2026, 1, 15, 19, 10, 9)));
    // `0-0:1.0.0` wins; the parts are then left undecoded.
    let t = telegram(&["0-0:1.0.0(260104162515W)", "1-0:0.9.1(140217)", "1-0:0.9.2(150427)"]);
    assert_eq!(t.meter_time, Some(utc(2026, 1, 4, 15, 25, 15)));
    assert_eq!(unknown_ids(&t), ["1-0:0.9.2", "1-0:0.9.1"]);
    // A date alone is no clock.
    let t = telegram(&["1-0:0.9.2(150427)"]);
    assert_eq!(t.meter_time, None);
    assert_eq!(unknown_ids(&t), ["1-0:0.9.2"]);
    // An unset clock is listed as the meter clock that is no date.
    let t = telegram(&["1-0:0.9.1(000000)", "1-0:0.9.2(000000)"]);
    assert_eq!(t.meter_time, None);
    let listed: Vec<(String, &str)> = t
        .unreadable_times
        .iter()
        .map(|(o, raw)| (o.to_string(), raw.as_str()))
        .collect();
    assert_eq!(
        listed,
        [("0-0:1.0.0".to_string(), "1-0:0.9.2(000000) 1-0:0.9.1(000000)")]
    );
}

#[test]
fn double_parentheses_and_text_values_are_kept_not_fatal() {
    // esphome-libs/dsmr_parser: a firmware code in double parentheses, and two
    // lines whose parentheses do not pair up.
    let t = telegram(&[
        "1-0:1.8.1(000671.578*kWh)",
        "1-0:0.2.0((ER11))",
        "1-1:0.2.0((ER12)",
        "1-1:0.2.8(ER13))",
        "0-0:96.14.0(TARIFF 1)",
        "0-0:96.3.10(ON)",
        "1-0:16.24.0(-03.618*kW)",
        "1-0:0.8.2(00900*s)",
        "1-0:99.1.0(1)(0-0:96.10.7)(1-0:1.29.0)(1-0:2.29.0)(260411233000S)(00)(000000.205*kWh)(000000.000*kWh)",
        "1-0:1.7.0(00.333*kW)",
    ]);
    assert_eq!(t.number("energy_delivered_tariff1"), Some(671.578));
    assert_eq!(t.number("power_delivered"), Some(333.0));
    assert!(t.unknown.contains(&("1-0:0.2.0".to_string(), "((ER11))".to_string())));
    assert_eq!(t.malformed, ["1-1:0.2.0((ER12)", "1-1:0.2.8(ER13))"]);
    assert_eq!(t.version, None);
    let tariff = t.get("tariff").expect("tariff");
    assert_eq!(tariff.value, DsmrNumberOrText::Text("TARIFF 1".into()));
    assert!(unknown_ids(&t).contains(&"0-0:96.3.10"));
    assert!(unknown_ids(&t).contains(&"1-0:99.1.0"));
}

#[test]
fn the_peak_history_is_decoded_or_kept() {
    let t = telegram(&[
        "1-0:1.6.0(251102181500W)(03.003*kW)",
        "0-0:98.1.0(2)(1-0:1.6.0)(1-0:1.6.0)(241001000000S)(35255255255255255S)(00.000*kW)(251101000000W)(251029004500W)(03.772*kW)",
    ]);
    let history = t.monthly_peaks.as_ref().expect("history");
    assert_eq!(history.entries.len(), 2);
    assert_eq!(history.entries[1].peak_w, 3772.0);
    assert!(t.unknown.is_empty());
    // E.ON Hungary's object under the same code stays undecoded, and so does a
    // second history.
    let t = telegram(&[
        "0-0:98.1.0(230701000000S)(000040.777*kWh)(000008.950*kWh)(03.564*kW)",
        "0-0:98.1.0(0)(1-0:1.6.0)(1-0:1.6.0)()",
        "0-0:98.1.0(0)(1-0:1.6.0)(1-0:1.6.0)()",
    ]);
    assert_eq!(t.monthly_peaks.as_ref().map(|h| h.entries.len()), Some(0));
    assert_eq!(unknown_ids(&t), ["0-0:98.1.0", "0-0:98.1.0"]);
}
