//! DSMR timestamps (`YYMMDDhhmmssX`) → UTC.
//!
//! * `X = S` (summer, CEST) means local time is UTC+2, `X = W` (winter, CET) UTC+1
//!   (lower case accepted).
//! * DSMR 2.2/3.0 timestamps (e.g. the gas capture time in `0-1:24.3.0`) carry no
//!   suffix: they are Dutch/Belgian local time and are converted with the EU
//!   summer-time rule (CEST from the last Sunday of March 01:00 UTC until the last
//!   Sunday of October 01:00 UTC, CET otherwise). In the repeated autumn hour the
//!   summer interpretation wins.
//! * Two-digit years follow the POSIX `%y` pivot: `69`–`99` → 19xx, `00`–`68` → 20xx
//!   (so the "not set" sentinel `700101010000W` is the Unix epoch).
//! * Anything that is not a real calendar date/time (`000000000000W`,
//!   `632525252525W`, month 25, hour 24, wrong length, non-digits) → `None`.

use chrono::{DateTime, Datelike, Duration, FixedOffset, NaiveDate, NaiveDateTime, Utc, Weekday};

/// Parses a DSMR timestamp; `None` when it is not a valid date/time.
pub fn parse_timestamp(raw: &str) -> Option<DateTime<Utc>> {
    let raw = raw.trim_ascii();
    let bytes = raw.as_bytes();
    let (digits, offset_hours) = match bytes.len() {
        13 => {
            let offset = match bytes.get(12)? {
                b'S' | b's' => 2,
                b'W' | b'w' => 1,
                _ => return None,
            };
            (bytes.get(..12)?, Some(offset))
        }
        12 => (bytes, None),
        _ => return None,
    };
    let local = naive_local(digits)?;
    let offset_hours = match offset_hours {
        Some(h) => h,
        None => eu_offset_hours(local),
    };
    // Through a `FixedOffset`: the same instant as subtracting a `Duration` of
    // hours, without the general duration arithmetic (a quarter of this function's
    // time, run for nearly every telegram).
    let offset = FixedOffset::east_opt(i32::try_from(offset_hours).ok()? * 3600)?;
    let utc = local.checked_sub_offset(offset)?;
    Some(utc.and_utc())
}

/// A date `yymmdd` and a time `hhmmss` sent apart (`1-0:0.9.2`, `1-0:0.9.1`) as
/// one DSMR time, `yymmddhhmmss` plus the season letter either carries;
/// separators (`:`, `-`, `.`) are dropped. Whether it is a date is for
/// [`parse_timestamp`] to say.
pub(super) fn date_and_time(date: &str, time: &str) -> String {
    let season = [time, date].iter().find_map(|part| {
        part.trim()
            .chars()
            .last()
            .filter(|c| matches!(c, 'S' | 's' | 'W' | 'w'))
    });
    let mut out: String = date.chars().chain(time.chars()).filter(char::is_ascii_digit).collect();
    out.extend(season);
    out
}

/// `true` when `raw` is meant as a time, readable or not: 12 or more digits and an
/// optional S/W: every real time, and also the placeholders some
/// meters send where no time is known (`35255255255255255S`, Landis+Gyr E360:
/// every date byte 255), and narrow enough that no value is taken for one (a
/// value has a point or a unit, or far fewer digits).
pub(super) fn is_time_group(raw: &str) -> bool {
    let b = raw.trim_ascii().as_bytes();
    let digits = match b.last() {
        Some(b'S' | b's' | b'W' | b'w') => b.get(..b.len() - 1).unwrap_or_default(),
        _ => b,
    };
    digits.len() >= 12 && digits.iter().all(u8::is_ascii_digit)
}

fn two(d: &[u8], i: usize) -> Option<u32> {
    let hi = d.get(i)?;
    let lo = d.get(i + 1)?;
    if !hi.is_ascii_digit() || !lo.is_ascii_digit() {
        return None;
    }
    Some(u32::from(hi - b'0') * 10 + u32::from(lo - b'0'))
}

fn naive_local(d: &[u8]) -> Option<NaiveDateTime> {
    let yy = two(d, 0)?;
    let year = if yy >= 69 { 1900 + yy } else { 2000 + yy };
    let date = NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, two(d, 2)?, two(d, 4)?)?;
    date.and_hms_opt(two(d, 6)?, two(d, 8)?, two(d, 10)?)
}

/// Last Sunday of `month` in `year` at 01:00 UTC (EU summer-time switch instant).
fn eu_switch(year: i32, month: u32) -> Option<NaiveDateTime> {
    let mut day = NaiveDate::from_ymd_opt(year, month, 31)?;
    while day.weekday() != Weekday::Sun {
        day = day.pred_opt()?;
    }
    day.and_hms_opt(1, 0, 0)
}

/// UTC offset (hours) of Central European local time `local` under EU rules.
fn eu_offset_hours(local: NaiveDateTime) -> i64 {
    let year = local.year();
    let (Some(start), Some(end)) = (eu_switch(year, 3), eu_switch(year, 10)) else {
        return 1;
    };
    let as_summer = local - Duration::hours(2);
    if as_summer >= start && as_summer < end {
        2
    } else {
        1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn utc(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(y, mo, d, h, mi, s).single().unwrap()
    }

    #[test]
    fn winter_and_summer_suffix() {
        assert_eq!(parse_timestamp("101209113020W"), Some(utc(2010, 12, 9, 10, 30, 20)));
        assert_eq!(parse_timestamp("200426223325S"), Some(utc(2020, 4, 26, 20, 33, 25)));
        assert_eq!(parse_timestamp("200426223325s"), Some(utc(2020, 4, 26, 20, 33, 25)));
    }

    #[test]
    fn invalid_is_none() {
        for raw in [
            "000000000000W",
            "632525252525W",
            "632525252525S",
            "250000000000W",
            "123412341234W",
            "102509113020W",
            "101209243020W",
            "10120911302W",
            "101209113020X",
            "1012091130a0W",
            "",
        ] {
            assert_eq!(parse_timestamp(raw), None, "{raw}");
        }
    }

    /// The offset taken back across midnight, month, leap day and year ends, as
    /// subtracting a `Duration` of hours gives it.
    #[test]
    fn offset_crosses_day_month_and_year() {
        assert_eq!(parse_timestamp("000101003000W"), Some(utc(1999, 12, 31, 23, 30, 0)));
        assert_eq!(parse_timestamp("240301013000S"), Some(utc(2024, 2, 29, 23, 30, 0)));
        for (day, hh, suffix, hours) in [("240101", 0, "W", 1), ("240229", 1, "S", 2), ("690101", 0, "W", 1)] {
            for mm in [0, 59] {
                let raw = format!("{day}{hh:02}{mm:02}00{suffix}");
                let local = naive_local(raw.as_bytes()).unwrap();
                let expected = local.checked_sub_signed(Duration::hours(hours)).map(|t| t.and_utc());
                assert_eq!(parse_timestamp(&raw), expected, "{raw}");
            }
        }
    }

    #[test]
    fn pivot_year() {
        assert_eq!(parse_timestamp("700101010000W"), Some(utc(1970, 1, 1, 0, 0, 0)));
        assert_eq!(parse_timestamp("000101010000W"), Some(utc(2000, 1, 1, 0, 0, 0)));
    }

    #[test]
    fn no_suffix_uses_eu_rule() {
        // 2016-11-07 19:00 CET
        assert_eq!(parse_timestamp("161107190000"), Some(utc(2016, 11, 7, 18, 0, 0)));
        // 2025-04-23 09:00 CEST
        assert_eq!(parse_timestamp("250423090000"), Some(utc(2025, 4, 23, 7, 0, 0)));
        // 2024-03-31 is the switch day: 01:59 CET, 03:00 CEST
        assert_eq!(parse_timestamp("240331015900"), Some(utc(2024, 3, 31, 0, 59, 0)));
        assert_eq!(parse_timestamp("240331030000"), Some(utc(2024, 3, 31, 1, 0, 0)));
        // 2024-10-27 04:00 local is CET again
        assert_eq!(parse_timestamp("241027040000"), Some(utc(2024, 10, 27, 3, 0, 0)));
    }

    #[test]
    fn date_and_time_apart() {
        // Iskra IE5: local time without season letter, the EU rule applies.
        assert_eq!(date_and_time("240501", "211309"), "240501211309");
        assert_eq!(
            parse_timestamp(&date_and_time("240501", "211309")),
            Some(utc(2024, 5, 1, 19, 13, 9))
        );
        assert_eq!(date_and_time("26-01-15", "20:10:09W"), "260115201009W");
        assert_eq!(date_and_time("260115S", "201009"), "260115201009S");
        assert_eq!(parse_timestamp(&date_and_time("000000", "000000")), None);
        assert_eq!(parse_timestamp(&date_and_time("", "211309")), None);
    }

    #[test]
    fn shape() {
        assert!(is_time_group("632525252525W"));
        assert!(is_time_group("161107190000"));
        assert!(!is_time_group("02.589*kW"));
        assert!(!is_time_group("1-0:1.6.0"));
        for time in ["260102010000", "260102010000W", "35255255255255255S", "632525252525W"] {
            assert!(is_time_group(time), "{time}");
        }
        for value in ["08.796*kW", "04529*W", "15", "000000000000.5", "", "W", "1-0:1.6.0"] {
            assert!(!is_time_group(value), "{value}");
        }
    }
}
