//! The Belgian capacity tariff: the 13-month history of monthly peaks (`0-0:98.1.0`)
//! and the rolling 12-month average the grid operator bills.
//!
//! # The history object
//!
//! e-MUCS P1 (Fluvius, ORES, Sibelga meters: Sagemcom S211, Landis+Gyr E360,
//! Siconia T211) writes it as a profile buffer:
//!
//! ```text
//! 0-0:98.1.0(2)(1-0:1.6.0)(1-0:1.6.0)(230201000000W)(230117224500W)(04.329*kW)(230301000000W)(230214224500W)(04529*W)
//!            │  └ the two captured objects ┘  └ entry: end of the month, time of its peak, the peak ┘ …
//!            └ number of entries (0 to 13)
//! ```
//!
//! Each entry closes a month: its first time is the start of the next month
//! (`230201000000W` closes January 2023), the second when that month's highest
//! quarter-hour average happened, then that average. A month without a peak sends
//! a placeholder time (`632525252525W`, `000000000000W`) and `00.000*kW`; a meter
//! with no history yet sends `(0)(1-0:1.6.0)(1-0:1.6.0)()`.
//!
//! Meters are not consistent about it, so the reader is tolerant where it can be
//! without guessing: within an entry the value may come before or after the two
//! times (the 2025/26 firmware writes `1-0:1.6.0` value first), the unit may be
//! `kW` or `W` (or absent: kW), and a trailing empty group is padding. Anything
//! else — an entry cut short, a count that does not match, a value that is no
//! number — is an error, and the caller keeps the line undecoded. The E.ON Hungary
//! object of the same code (`0-0:98.1.0(230701000000S)(…*kWh)…`, a billing-period
//! snapshot) has no count and no captured objects, so it is refused, not misread.
//!
//! # The rolling average
//!
//! See [`rolling_average`].

use chrono::{DateTime, Datelike, NaiveDate, Utc};

use super::obis::{parse_obis, Quantity};
use super::timestamp::{is_time_group, parse_timestamp};
use super::units::{conversion, parse_scaled, split_unit};
use super::Obis;

/// A calendar month of the meter's local (Belgian) calendar.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct YearMonth {
    pub year: i32,
    /// 1–12.
    pub month: u32,
}

impl YearMonth {
    /// `None` for a month outside 1–12.
    pub fn new(year: i32, month: u32) -> Option<Self> {
        (1..=12).contains(&month).then_some(YearMonth { year, month })
    }

    /// Months since year 0, for distances between months.
    fn index(self) -> i64 {
        i64::from(self.year) * 12 + i64::from(self.month) - 1
    }

    /// The month after this one.
    pub fn next(self) -> Self {
        match self.month {
            12 => YearMonth {
                year: self.year + 1,
                month: 1,
            },
            m => YearMonth {
                year: self.year,
                month: m + 1,
            },
        }
    }

    /// The month before this one.
    pub fn previous(self) -> Self {
        match self.month {
            1 => YearMonth {
                year: self.year - 1,
                month: 12,
            },
            m => YearMonth {
                year: self.year,
                month: m - 1,
            },
        }
    }
}

impl std::fmt::Display for YearMonth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

/// One month of the history.
#[derive(Debug, Clone, PartialEq)]
pub struct MonthlyPeak {
    /// The month the peak belongs to, from the entry's closing time (the month
    /// before it), else from the peak's own time; `None` when both are placeholders.
    pub month: Option<YearMonth>,
    /// The entry's closing time as sent (start of the next month), in UTC.
    pub period_end: Option<DateTime<Utc>>,
    /// When the peak quarter hour happened, in UTC; `None` for a placeholder time.
    pub peak_at: Option<DateTime<Utc>>,
    /// The highest quarter-hour average demand of the month, in W.
    pub peak_w: f64,
}

/// A decoded `0-0:98.1.0`.
#[derive(Debug, Clone, PartialEq)]
pub struct PeakHistory {
    /// The object whose maxima are recorded (`1-0:1.6.0`, import).
    pub object: Obis,
    /// Oldest first, as the meter sends them.
    pub entries: Vec<MonthlyPeak>,
}

/// Why a `0-0:98.1.0` line is not a peak history.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HistoryError {
    /// No entry count and captured objects in front: another object under this code.
    #[error("not a monthly peak history: no entry count and captured objects")]
    NotAHistory,
    /// The groups after the header are not whole entries of three.
    #[error("{groups} groups after the header are not whole entries of three")]
    CutEntry { groups: usize },
    /// The count in front does not match the entries that follow.
    #[error("the history announces {declared} entries but holds {found}")]
    CountMismatch { declared: usize, found: usize },
    /// An entry without two times and one value, or with a value that is no power.
    #[error("entry {index} is not (time)(time)(value): {raw}")]
    BadEntry { index: usize, raw: String },
}

/// Reads the groups of a `0-0:98.1.0` object (`["2", "1-0:1.6.0", "1-0:1.6.0", …]`).
///
/// The header is the entry count, then the captured objects: `(1-0:1.6.0)(1-0:1.6.0)`
/// on e-MUCS meters (the peak's time, then its value), and on the Landis+Gyr E660
/// `(0-0:0.1.0)(1-0:1.6.0)(1-0:1.6.0)(1-0:2.6.0)(1-0:2.6.0)` (billing period
/// counter, import peak, export peak). Each entry is the closing time followed by
/// one group per captured object; the import peak is read from the pair of
/// `1-0:1.6.0` columns wherever it is.
pub fn parse_peak_history(groups: &[&str]) -> Result<PeakHistory, HistoryError> {
    let (count, after_count) = groups.split_first().ok_or(HistoryError::NotAHistory)?;
    let declared: usize = count.trim().parse().map_err(|_| HistoryError::NotAHistory)?;
    let captured: Vec<Obis> = after_count.iter().map_while(|g| parse_obis(g)).collect();
    let rest = after_count.get(captured.len()..).unwrap_or_default();
    // The import peak: two adjacent columns of the same maximum-demand object
    // (D = 6), import (C = 1) preferred.
    let pairs = || {
        captured
            .windows(2)
            .enumerate()
            .filter(|(_, w)| matches!(w, [a, b] if a == b && a.d == 6))
    };
    let (column, object) = pairs()
        .find(|(_, w)| w.first().is_some_and(|o| o.c == 1))
        .or_else(|| pairs().next())
        .and_then(|(i, w)| Some((i, *w.first()?)))
        .ok_or(HistoryError::NotAHistory)?;
    let width = 1 + captured.len();
    // `(0)(1-0:1.6.0)(1-0:1.6.0)()`: an empty group closes an empty buffer.
    let rest = match rest {
        [head @ .., last] if last.trim().is_empty() && head.len() % width == 0 => head,
        _ => rest,
    };
    if rest.len() % width != 0 {
        return Err(HistoryError::CutEntry { groups: rest.len() });
    }
    let entries = rest
        .chunks_exact(width)
        .enumerate()
        .map(|(index, entry)| {
            let end = entry.first().copied().unwrap_or_default();
            let pair = entry.get(1 + column..3 + column).unwrap_or_default();
            parse_entry(end, pair).ok_or_else(|| bad_entry(index, entry))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if entries.len() != declared {
        return Err(HistoryError::CountMismatch {
            declared,
            found: entries.len(),
        });
    }
    Ok(PeakHistory { object, entries })
}

fn bad_entry(index: usize, entry: &[&str]) -> HistoryError {
    HistoryError::BadEntry {
        index,
        raw: entry.iter().map(|g| format!("({g})")).collect(),
    }
}

/// One entry: its closing time `end` and the peak's `(time)(value)`, in either
/// order; `None` unless `end` and one of the pair are times and the other a power.
fn parse_entry(end: &str, pair: &[&str]) -> Option<MonthlyPeak> {
    let (at, value) = match pair {
        [a, b] if is_time_group(a) && !is_time_group(b) => (*a, *b),
        [a, b] if is_time_group(b) && !is_time_group(a) => (*b, *a),
        _ => return None,
    };
    if !is_time_group(end) {
        return None;
    }
    let (number, unit) = split_unit(value);
    let peak_w = parse_scaled(number, conversion(Quantity::ActivePower, unit)?)?;
    let period_end = parse_timestamp(end);
    let peak_at = parse_timestamp(at);
    // The month an entry closes is the one before its closing time (local
    // calendar: the digits as sent); failing that, the month of the peak itself.
    let month = local_date(end)
        .map(|d| month_of(d).previous())
        .or_else(|| local_date(at).map(month_of));
    Some(MonthlyPeak {
        month,
        period_end,
        peak_at,
        peak_w,
    })
}

/// The local calendar date of a DSMR time, when it is a real one.
fn local_date(raw: &str) -> Option<NaiveDate> {
    parse_timestamp(raw)?;
    let digits = raw.trim().as_bytes();
    let two = |i: usize| -> Option<u32> {
        let s = std::str::from_utf8(digits.get(i..i + 2)?).ok()?;
        s.parse().ok()
    };
    let yy = two(0)?;
    let year = if yy >= 69 { 1900 + yy } else { 2000 + yy };
    NaiveDate::from_ymd_opt(i32::try_from(year).ok()?, two(2)?, two(4)?)
}

fn month_of(d: NaiveDate) -> YearMonth {
    YearMonth {
        year: d.year(),
        month: d.month(),
    }
}

/// The monthly peak the capacity tariff counts at least, in W (Flanders, VREG).
pub const DEFAULT_MINIMUM_PEAK_W: f64 = 2500.0;

/// The average the capacity tariff bills for month `through`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RollingAverage {
    /// Average of the counted months' peaks, each raised to the minimum, in W.
    pub average_w: f64,
    /// How many months it is taken over (12 once the meter has a year of history).
    pub months: usize,
}

/// The rolling 12-month average of monthly peaks that the Flemish capacity
/// tariff bills for month `through` (VREG tariff methodology, applied by Fluvius):
///
/// ```text
/// average = Σ max(peak(m), minimum) / n   over the months m in (through − 11 … through)
///                                         that have a peak, n of them (n ≤ 12)
/// ```
///
/// Every monthly peak counts at least `minimum_w` (2.5 kW in Flanders,
/// [`DEFAULT_MINIMUM_PEAK_W`]), also a month with a zero peak. A meter with less
/// than a year of history is averaged over the months it has. Peaks without a
/// month are ignored; of two peaks for one month the higher counts. To include
/// the running month, pass its `1-0:1.6.0` peak among `peaks`. `None` when no
/// month of the window has a peak.
pub fn rolling_average(
    peaks: impl IntoIterator<Item = (YearMonth, f64)>,
    through: YearMonth,
    minimum_w: f64,
) -> Option<RollingAverage> {
    let mut window: [Option<f64>; 12] = [None; 12];
    for (month, peak) in peaks {
        let back = through.index() - month.index();
        let Some(slot) = usize::try_from(back).ok().and_then(|b| window.get_mut(b)) else {
            continue;
        };
        if peak.is_finite() {
            *slot = Some(slot.map_or(peak, |old| old.max(peak)));
        }
    }
    let counted: Vec<f64> = window.iter().flatten().map(|&p| p.max(minimum_w)).collect();
    if counted.is_empty() {
        return None;
    }
    Some(RollingAverage {
        average_w: counted.iter().sum::<f64>() / counted.len() as f64,
        months: counted.len(),
    })
}

impl PeakHistory {
    /// `(month, peak W)` of the entries that have a month, for [`rolling_average`].
    pub fn monthly(&self) -> impl Iterator<Item = (YearMonth, f64)> + '_ {
        self.entries.iter().filter_map(|e| Some((e.month?, e.peak_w)))
    }
}

#[cfg(test)]
mod tests;
