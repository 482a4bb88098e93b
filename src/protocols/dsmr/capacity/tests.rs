//! `0-0:98.1.0` lines as real meters send them (sources in
//! tests/fixtures/dsmr/SOURCES.md, "Capacity tariff lines"), and the rolling average.

use chrono::{DateTime, TimeZone, Utc};

use super::*;

/// The groups of one P1 line, `A-B:C.D.E(g1)(g2)…` → `["g1", "g2", …]`.
fn groups(line: &str) -> Vec<&str> {
    let open = line.find('(').expect("groups");
    let inner = line[open + 1..].trim_end().strip_suffix(')').expect("closed");
    inner.split(")(").collect()
}

fn history(line: &str) -> Result<PeakHistory, HistoryError> {
    parse_peak_history(&groups(line))
}

fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, mi, 0).single().expect("date")
}

fn ym(year: i32, month: u32) -> YearMonth {
    YearMonth::new(year, month).expect("month")
}

const IMPORT_PEAK: Obis = Obis {
    a: 1,
    b: 0,
    c: 1,
    d: 6,
    e: 0,
};

/// Fluvius (FLU5, Sagemcom S211), a full 13-month buffer: mhendriks/dsmr3Lib `T_BE`.
const FLUVIUS_S211_13: &str = "0-0:98.1.0(13)(1-0:1.6.0)(1-0:1.6.0)(240701000000S)(240604230000S)(02.624*kW)(240801000000S)(240705210000S)(02.676*kW)(240901000000S)(240821224500S)(02.915*kW)(241001000000S)(240913233000S)(02.961*kW)(241101000000W)(241003184500S)(04.160*kW)(241201000000W)(241123181500W)(04.770*kW)(250101000000W)(241210164500W)(05.044*kW)(250201000000W)(250120171500W)(05.294*kW)(250301000000W)(250202194500W)(04.516*kW)(250401000000S)(250325181500W)(04.784*kW)(250501000000S)(250422194500S)(02.668*kW)(250601000000S)(250507211500S)(02.831*kW)(250701000000S)(250611220000S)(02.744*kW)";

/// Landis+Gyr E360 (LGF5E360): the first month has a placeholder time of all-255
/// date bytes: mhendriks/dsmr3Lib `DHEIJL`.
const LG_E360_9: &str = "0-0:98.1.0(9)(1-0:1.6.0)(1-0:1.6.0)(250801000000S)(35255255255255255S)(00.000*kW)(251101000000W)(251029150000W)(04.122*kW)(251201000000W)(251121183000W)(03.933*kW)(260101000000W)(251223140000W)(04.699*kW)(260201000000W)(260128151500W)(04.556*kW)(260301000000W)(260220133000W)(03.884*kW)(260401000000S)(260303184500W)(03.597*kW)(260501000000S)(260410131500S)(03.298*kW)(260601000000S)(260511141500S)(02.438*kW)";

/// Siconia S211 (ORES), a meter without history yet.
const SICONIA_EMPTY: &str = "0-0:98.1.0(0)(1-0:1.6.0)(1-0:1.6.0)()";

/// Fluvius, a month with the `632525252525W` placeholder and no peak:
/// ndokter/dsmr_parser `TELEGRAM_FLUVIUS_V171_ALT`.
const FLUVIUS_PLACEHOLDER: &str = "0-0:98.1.0(4)(1-0:1.6.0)(1-0:1.6.0)(230801000000S)(632525252525W)(00.000*kW)(230901000000S)(230831181500S)(01.862*kW)(231001000000S)(230910183000S)(04.229*kW)(231101000000W)(231016130000S)(04.927*kW)";

/// A peak in W instead of kW: esphome-libs/dsmr_parser tests/parser_test.cpp.
const ESPHOME_WATTS: &str = "0-0:98.1.0(2)(1-0:1.6.0)(1-0:1.6.0)(230201000000W)(230117224500W)(04.329*kW)(230202000000W)(230214224500W)(04529*W)";

/// Landis+Gyr E660 (Fluvius): billing counter, import and export peaks per entry:
/// mhendriks/dsmr3Lib `T_A1_BE`.
const LG_E660: &str = "0-0:98.1.0(1)(0-0:0.1.0)(1-0:1.6.0)(1-0:1.6.0)(1-0:2.6.0)(1-0:2.6.0)(250701000000S)(15)(250604084500S)(01.452*kW)(250629150000S)(01.633*kW)";

#[test]
fn a_full_fluvius_buffer_gives_thirteen_months_with_their_peaks() {
    let h = history(FLUVIUS_S211_13).expect("history");
    assert_eq!(h.object, IMPORT_PEAK);
    assert_eq!(h.entries.len(), 13);
    let first = &h.entries[0];
    // Closed on 2024-07-01 00:00 CEST: the June 2024 peak, 2024-06-04 23:00 CEST.
    assert_eq!(first.month, Some(ym(2024, 6)));
    assert_eq!(first.period_end, Some(utc(2024, 6, 30, 22, 0)));
    assert_eq!(first.peak_at, Some(utc(2024, 6, 4, 21, 0)));
    assert_eq!(first.peak_w, 2624.0);
    let months: Vec<String> = h
        .entries
        .iter()
        .filter_map(|e| e.month)
        .map(|m| m.to_string())
        .collect();
    assert_eq!(months.first().map(String::as_str), Some("2024-06"));
    assert_eq!(months.last().map(String::as_str), Some("2025-06"));
    // A winter-time close of a summer-time peak: November closes October.
    assert_eq!(h.entries[4].month, Some(ym(2024, 10)));
    assert_eq!(h.entries[4].peak_at, Some(utc(2024, 10, 3, 16, 45)));
    assert_eq!(h.entries[4].peak_w, 4160.0);
}

#[test]
fn placeholder_times_keep_the_month_and_drop_the_time() {
    let h = history(LG_E360_9).expect("history");
    assert_eq!(h.entries.len(), 9);
    let unset = &h.entries[0];
    assert_eq!(unset.month, Some(ym(2025, 7)));
    assert_eq!(unset.peak_at, None);
    assert_eq!(unset.peak_w, 0.0);
    // The buffer skips from July to October 2025: the months are what the meter
    // says, not counted from the first one.
    assert_eq!(h.entries[1].month, Some(ym(2025, 10)));
    assert_eq!(h.entries[8].month, Some(ym(2026, 5)));
    assert_eq!(h.entries[8].peak_w, 2438.0);

    let h = history(FLUVIUS_PLACEHOLDER).expect("history");
    assert_eq!(h.entries[0].month, Some(ym(2023, 7)));
    assert_eq!(h.entries[0].peak_at, None);
    assert_eq!(h.entries[3].peak_w, 4927.0);
}

#[test]
fn an_empty_buffer_is_an_empty_history() {
    let h = history(SICONIA_EMPTY).expect("history");
    assert!(h.entries.is_empty());
    assert_eq!(h.object, IMPORT_PEAK);
}

#[test]
fn units_and_orders_vary() {
    let h = history(ESPHOME_WATTS).expect("history");
    assert_eq!(h.entries[0].peak_w, 4329.0);
    assert_eq!(h.entries[1].peak_w, 4529.0);
    // The 2025/26 firmware writes the peak value first; the history may follow.
    let flipped = "0-0:98.1.0(1)(1-0:1.6.0)(1-0:1.6.0)(260101000000W)(08.796*kW)(251212181500W)";
    let h = history(flipped).expect("history");
    assert_eq!(h.entries[0].peak_w, 8796.0);
    assert_eq!(h.entries[0].peak_at, Some(utc(2025, 12, 12, 17, 15)));
    assert_eq!(h.entries[0].month, Some(ym(2025, 12)));
}

#[test]
fn the_e660_import_peak_is_found_among_other_columns() {
    let h = history(LG_E660).expect("history");
    assert_eq!(h.object, IMPORT_PEAK);
    let only = &h.entries[0];
    assert_eq!(only.month, Some(ym(2025, 6)));
    assert_eq!(only.peak_w, 1452.0);
    assert_eq!(only.peak_at, Some(utc(2025, 6, 4, 6, 45)));
}

#[test]
fn other_objects_and_damaged_lines_are_refused() {
    // E.ON Hungary: a billing snapshot under the same code.
    let eon = "0-0:98.1.0(230701000000S)(000040.777*kWh)(000008.950*kWh)(03.564*kW)(02.156*kW)";
    assert_eq!(history(eon), Err(HistoryError::NotAHistory));
    // esphome-libs/dsmr_parser: an empty count followed by junk.
    assert_eq!(
        history("0-0:98.1.0(0)(garbage that will be skipped)"),
        Err(HistoryError::NotAHistory)
    );
    let cut = &FLUVIUS_PLACEHOLDER[..FLUVIUS_PLACEHOLDER.len() - "(04.927*kW)".len()];
    assert_eq!(history(cut), Err(HistoryError::CutEntry { groups: 11 }));
    let miscounted = FLUVIUS_PLACEHOLDER.replacen("(4)", "(5)", 1);
    assert_eq!(
        history(&miscounted),
        Err(HistoryError::CountMismatch { declared: 5, found: 4 })
    );
    let no_number = FLUVIUS_PLACEHOLDER.replacen("(01.862*kW)", "(01.8x2*kW)", 1);
    assert!(matches!(
        history(&no_number),
        Err(HistoryError::BadEntry { index: 1, .. })
    ));
    let wrong_unit = FLUVIUS_PLACEHOLDER.replacen("(01.862*kW)", "(01.862*kWh)", 1);
    assert!(matches!(
        history(&wrong_unit),
        Err(HistoryError::BadEntry { index: 1, .. })
    ));
    assert_eq!(parse_peak_history(&[]), Err(HistoryError::NotAHistory));
}

#[test]
fn the_rolling_average_takes_twelve_months_at_least_at_the_minimum() {
    // The VREG worked example (Wikibooks "Energietransitie/Capaciteitstarief"):
    // May … April, three months under 2.5 kW counted at 2.5 kW.
    let peaks = [
        0.632, 4.600, 0.000, 1.028, 3.444, 4.164, 4.564, 6.000, 9.200, 5.000, 4.120, 4.880,
    ];
    let mut month = ym(2022, 5);
    let mut series = Vec::new();
    for kw in peaks {
        series.push((month, kw * 1000.0));
        month = month.next();
    }
    let avg = rolling_average(series.iter().copied(), ym(2023, 4), DEFAULT_MINIMUM_PEAK_W).expect("average");
    assert_eq!(avg.months, 12);
    assert!((avg.average_w - 53_472.0 / 12.0).abs() < 1e-9, "{avg:?}");
    // A month later May 2022 leaves the window; June 2023 is not known yet.
    let later = rolling_average(series.iter().copied(), ym(2023, 5), DEFAULT_MINIMUM_PEAK_W).expect("average");
    assert_eq!(later.months, 11);
    assert!((later.average_w - 50_972.0 / 11.0).abs() < 1e-9, "{later:?}");
    // The minimum is a parameter.
    let none = rolling_average(series.iter().copied(), ym(2023, 4), 0.0).expect("average");
    assert!((none.average_w - 47_632.0 / 12.0).abs() < 1e-9, "{none:?}");
    // Nothing in the window.
    assert_eq!(rolling_average(series.iter().copied(), ym(2030, 1), 2500.0), None);
}

#[test]
fn the_rolling_average_of_real_histories() {
    // Fluvius S211: the 12 months July 2024 … June 2025 (June 2024 falls out).
    let h = history(FLUVIUS_S211_13).expect("history");
    let avg = rolling_average(h.monthly(), ym(2025, 6), DEFAULT_MINIMUM_PEAK_W).expect("average");
    assert_eq!(avg.months, 12);
    let expected = [
        2676.0, 2915.0, 2961.0, 4160.0, 4770.0, 5044.0, 5294.0, 4516.0, 4784.0, 2668.0, 2831.0, 2744.0,
    ];
    assert!(
        (avg.average_w - expected.iter().sum::<f64>() / 12.0).abs() < 1e-9,
        "{avg:?}"
    );
    // With the running month's peak (1-0:1.6.0 of July 2025, 2.590 kW) as 13th
    // value, July 2024 leaves the window.
    let with_running = h.monthly().chain([(ym(2025, 7), 2590.0)]);
    let avg = rolling_average(with_running, ym(2025, 7), DEFAULT_MINIMUM_PEAK_W).expect("average");
    assert_eq!(avg.months, 12);
    let expected = expected.iter().skip(1).sum::<f64>() + 2590.0;
    assert!((avg.average_w - expected / 12.0).abs() < 1e-9, "{avg:?}");
    // E360 with a zero month: it counts, at the minimum, and the gap months of
    // August and September 2025 do not.
    let h = history(LG_E360_9).expect("history");
    let avg = rolling_average(h.monthly(), ym(2026, 5), DEFAULT_MINIMUM_PEAK_W).expect("average");
    assert_eq!(avg.months, 9);
    let sum = 2500.0 + 4122.0 + 3933.0 + 4699.0 + 4556.0 + 3884.0 + 3597.0 + 3298.0 + 2500.0;
    assert!((avg.average_w - sum / 9.0).abs() < 1e-9, "{avg:?}");
    // An empty history has nothing to average.
    let h = history(SICONIA_EMPTY).expect("history");
    assert_eq!(rolling_average(h.monthly(), ym(2023, 3), DEFAULT_MINIMUM_PEAK_W), None);
}

#[test]
fn months_step_over_the_year() {
    assert_eq!(ym(2025, 12).next(), ym(2026, 1));
    assert_eq!(ym(2026, 1).previous(), ym(2025, 12));
    assert_eq!(ym(2026, 6).next().previous(), ym(2026, 6));
    assert_eq!(YearMonth::new(2026, 13), None);
    assert_eq!(ym(2026, 3).to_string(), "2026-03");
}

#[test]
fn two_peaks_for_one_month_count_once_the_higher() {
    let avg = rolling_average([(ym(2026, 1), 3000.0), (ym(2026, 1), 5000.0)], ym(2026, 1), 2500.0);
    assert_eq!(
        avg,
        Some(RollingAverage {
            average_w: 5000.0,
            months: 1
        })
    );
}
