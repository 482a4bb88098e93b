//! When a device's own clock may stamp its readings.
//!
//! Meters keep their own time, and some get it wrong: a DSMR meter whose clock was
//! never set sends `000101010000W`, a gas meter on a dead M-Bus keeps its last
//! capture time for ever, a cached weather answer carries yesterday's `dt`. Stored
//! at that time, the values land in SQLite rows no dashboard ever shows. So a device
//! time is used only when it is a real date after [`EARLIEST`] and within
//! `max_clock_skew` of the host clock; otherwise the reading gets the time it
//! arrived, the first such time is logged with both times (then at most once an
//! hour), and every one is counted for `/metrics`.
//!
//! The host clock is the reference: it is kept by NTP, and the service is ordered
//! after `time-sync.target` (systemd/mesura.service), while a meter's clock is set
//! by whoever installed it, if anyone, and drifts from then on.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};

use crate::reading::DeviceId;

/// `max_clock_skew` when a device file does not set it.
pub fn default_max_clock_skew() -> Duration {
    Duration::from_secs(24 * 3600)
}

/// The check of a device's `max_clock_skew`: `Err((key, message))` as
/// `DeviceType::validate` reports it.
pub fn validate_max_clock_skew(skew: Duration) -> Result<(), (String, String)> {
    if skew < Duration::from_secs(1) {
        return Err((
            "max_clock_skew".into(),
            "must be at least 1s (default 1d): with less, the device's time would never be used".into(),
        ));
    }
    Ok(())
}

/// No device mesura reads was sold with a clock that should read earlier than this;
/// a time before it is a clock that was never set (2000-01-01, the Unix epoch).
pub const EARLIEST: DateTime<Utc> = match DateTime::from_timestamp(1_420_070_400, 0) {
    // 2015-01-01T00:00:00Z
    Some(t) => t,
    None => DateTime::<Utc>::UNIX_EPOCH,
};

/// How often a device with a wrong clock is logged again after its first warning.
pub const WARN_EVERY: Duration = Duration::from_secs(3600);

/// The `kind` labels of `mesura_protocol_errors_total`.
pub const KIND_INVALID: &str = "device_time_invalid";
pub const KIND_SKEWED: &str = "device_time_skewed";

/// What a device said about when a value was measured.
#[derive(Debug, Clone, PartialEq)]
pub enum DeviceTime {
    /// The device sent no time for it: the arrival time is the only one there is.
    Absent,
    /// The device sent a time that is no date (`000000000000W`, month 13, text), as sent.
    Unreadable(String),
    At(DateTime<Utc>),
}

impl DeviceTime {
    /// The instant, when the device sent a readable one.
    pub fn instant(&self) -> Option<DateTime<Utc>> {
        match self {
            DeviceTime::At(t) => Some(*t),
            _ => None,
        }
    }
}

/// What the time stamps, which decides how old it may legitimately be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stamps {
    /// The device's clock at the moment it answered (DSMR `0-0:1.0.0`, an
    /// observation time): as old as the skew allows, no older.
    Now,
    /// A capture time of a sub-meter read periodically (M-Bus gas, water, heat:
    /// hourly on DSMR 4, every 5 minutes on DSMR 5): up to an hour older.
    Capture,
    /// When this month's peak happened (`1-0:1.6.0`): up to a month older.
    MonthlyPeak,
}

impl Stamps {
    fn extra_age(self) -> TimeDelta {
        match self {
            Stamps::Now => TimeDelta::zero(),
            Stamps::Capture => TimeDelta::hours(1),
            Stamps::MonthlyPeak => TimeDelta::days(31),
        }
    }
}

/// Why a device time was not used.
#[derive(Debug, Clone, PartialEq)]
pub enum Rejected {
    /// No date, or one before [`EARLIEST`]: a clock that was never set.
    Invalid(String),
    /// A real date, but further from the host clock than `max_clock_skew` allows.
    Skewed(DateTime<Utc>),
}

impl Rejected {
    fn kind(&self) -> &'static str {
        match self {
            Rejected::Invalid(_) => KIND_INVALID,
            Rejected::Skewed(_) => KIND_SKEWED,
        }
    }

    fn device_time(&self) -> String {
        match self {
            Rejected::Invalid(raw) => raw.clone(),
            Rejected::Skewed(t) => rfc3339(*t),
        }
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// The rule itself, pure: the device time to use, `Ok(None)` when the device sent
/// none, or why it is not used. `now` is the host clock when the value arrived.
pub fn judge(
    time: &DeviceTime,
    stamps: Stamps,
    now: DateTime<Utc>,
    max_skew: TimeDelta,
) -> Result<Option<DateTime<Utc>>, Rejected> {
    let at = match time {
        DeviceTime::Absent => return Ok(None),
        DeviceTime::Unreadable(raw) => return Err(Rejected::Invalid(raw.clone())),
        DeviceTime::At(at) => *at,
    };
    if at < EARLIEST {
        return Err(Rejected::Invalid(rfc3339(at)));
    }
    let ahead = at.signed_duration_since(now);
    let behind_limit = max_skew.checked_add(&stamps.extra_age()).unwrap_or(TimeDelta::MAX);
    if ahead > max_skew || -ahead > behind_limit {
        return Err(Rejected::Skewed(at));
    }
    Ok(Some(at))
}

/// One device's use of the rule: its limit, its counters and its log pacing.
#[derive(Debug)]
pub struct DeviceClock {
    device: DeviceId,
    max_skew: TimeDelta,
    invalid: u64,
    skewed: u64,
    /// When the last warning was logged (tokio's monotonic clock, so a step of the
    /// wall clock neither floods nor silences the log).
    warned_at: Option<tokio::time::Instant>,
    /// Times rejected since the last warning, so the next one says how many.
    unlogged: u64,
}

impl DeviceClock {
    pub fn new(device: DeviceId, max_skew: Duration) -> Self {
        DeviceClock {
            device,
            max_skew: TimeDelta::from_std(max_skew).unwrap_or(TimeDelta::MAX),
            invalid: 0,
            skewed: 0,
            warned_at: None,
            unlogged: 0,
        }
    }

    /// The timestamp for a value the device stamped `time` (`what` names the
    /// field, for the log) that arrived at `arrival`, by the host clock.
    pub fn stamp(&mut self, time: &DeviceTime, stamps: Stamps, what: &str, arrival: DateTime<Utc>) -> DateTime<Utc> {
        match judge(time, stamps, arrival, self.max_skew) {
            Ok(at) => at.unwrap_or(arrival),
            Err(rejected) => {
                self.reject(&rejected, what, arrival);
                arrival
            }
        }
    }

    fn reject(&mut self, rejected: &Rejected, what: &str, arrival: DateTime<Utc>) {
        match rejected {
            Rejected::Invalid(_) => self.invalid += 1,
            Rejected::Skewed(_) => self.skewed += 1,
        }
        self.unlogged += 1;
        let now = tokio::time::Instant::now();
        if self.warned_at.is_some_and(|at| now.duration_since(at) < WARN_EVERY) {
            return;
        }
        self.warned_at = Some(now);
        let suppressed = self.unlogged - 1;
        self.unlogged = 0;
        tracing::warn!(
            device = %self.device,
            field = what,
            device_time = %rejected.device_time(),
            host_time = %rfc3339(arrival),
            max_clock_skew = %humantime::format_duration(self.max_skew.to_std().unwrap_or_default()),
            kind = rejected.kind(),
            suppressed,
            "the device's clock is wrong: its time is not used, readings get the time they arrived"
        );
    }

    /// Totals for `Monitor::protocol_errors`.
    pub fn counts(&self) -> [(&'static str, u64); 2] {
        [(KIND_INVALID, self.invalid), (KIND_SKEWED, self.skewed)]
    }

    /// Whether the next rejection would be logged (tests of the pacing).
    pub fn would_warn(&self) -> bool {
        self.warned_at
            .is_none_or(|at| tokio::time::Instant::now().duration_since(at) >= WARN_EVERY)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::dsmr::parse_timestamp;

    fn day() -> TimeDelta {
        TimeDelta::from_std(default_max_clock_skew()).expect("1 day")
    }

    /// "Now" for the rule: the real clock, so no test is tied to a date.
    fn now() -> DateTime<Utc> {
        Utc::now()
    }

    fn at(t: DateTime<Utc>) -> DeviceTime {
        DeviceTime::At(t)
    }

    #[test]
    fn an_unset_dsmr_clock_is_invalid() {
        // What real meters send before their clock is set: 2000-01-01 00:00 CET.
        let unset = parse_timestamp("000101010000W").expect("a date, just a wrong one");
        assert!(matches!(
            judge(&at(unset), Stamps::Now, now(), day()),
            Err(Rejected::Invalid(_))
        ));
        // All zeros is no date at all: the codec gives nothing, the monitor says so.
        assert_eq!(parse_timestamp("000000000000W"), None);
        assert_eq!(
            judge(
                &DeviceTime::Unreadable("000000000000W".into()),
                Stamps::Capture,
                now(),
                day()
            ),
            Err(Rejected::Invalid("000000000000W".into()))
        );
    }

    #[test]
    fn before_2015_is_invalid_whatever_the_skew() {
        let t = DateTime::from_timestamp(EARLIEST.timestamp() - 1, 0).expect("instant");
        let century = TimeDelta::days(36_500);
        assert!(matches!(
            judge(&at(t), Stamps::Now, now(), century),
            Err(Rejected::Invalid(_))
        ));
        assert_eq!(judge(&at(EARLIEST), Stamps::Now, now(), century), Ok(Some(EARLIEST)));
    }

    #[test]
    fn too_far_ahead_or_behind_is_skewed() {
        let n = now();
        for off in [
            day() + TimeDelta::seconds(1),
            -(day() + TimeDelta::seconds(1)),
            TimeDelta::days(400),
        ] {
            assert_eq!(
                judge(&at(n + off), Stamps::Now, n, day()),
                Err(Rejected::Skewed(n + off)),
                "{off}"
            );
        }
    }

    #[test]
    fn within_the_skew_the_device_time_is_kept() {
        let n = now();
        for off in [
            TimeDelta::zero(),
            day(),
            -day(),
            TimeDelta::minutes(-3),
            TimeDelta::hours(23),
        ] {
            assert_eq!(judge(&at(n + off), Stamps::Now, n, day()), Ok(Some(n + off)), "{off}");
        }
        assert_eq!(judge(&DeviceTime::Absent, Stamps::Now, n, day()), Ok(None));
    }

    #[test]
    fn an_mbus_capture_an_hour_old_is_kept_even_with_a_small_skew() {
        let n = now();
        let hour_old = n - TimeDelta::hours(1);
        assert_eq!(judge(&at(hour_old), Stamps::Capture, n, day()), Ok(Some(hour_old)));
        let tight = TimeDelta::minutes(5);
        assert_eq!(judge(&at(hour_old), Stamps::Capture, n, tight), Ok(Some(hour_old)));
        // The same age on the meter's own clock is a clock 55 minutes late.
        assert!(judge(&at(hour_old), Stamps::Now, n, tight).is_err());
        let older = n - TimeDelta::hours(1) - TimeDelta::minutes(6);
        assert!(judge(&at(older), Stamps::Capture, n, tight).is_err());
    }

    #[test]
    fn a_monthly_peak_may_be_a_month_old_but_not_two() {
        let n = now();
        let peak = n - TimeDelta::days(30);
        assert_eq!(judge(&at(peak), Stamps::MonthlyPeak, n, day()), Ok(Some(peak)));
        assert!(judge(&at(n - TimeDelta::days(40)), Stamps::MonthlyPeak, n, day()).is_err());
        assert!(judge(&at(n + TimeDelta::days(2)), Stamps::MonthlyPeak, n, day()).is_err());
    }

    #[test]
    fn a_huge_skew_does_not_overflow() {
        let clock = DeviceClock::new(Arc::from("p1"), Duration::from_secs(u64::MAX));
        let n = now();
        assert_eq!(judge(&at(n), Stamps::MonthlyPeak, n, clock.max_skew), Ok(Some(n)));
    }

    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn rejected_times_get_the_arrival_time_and_are_counted_and_paced() {
        let mut clock = DeviceClock::new(Arc::from("p1"), default_max_clock_skew());
        let arrival = now();
        let good = arrival - TimeDelta::minutes(2);
        assert_eq!(clock.stamp(&at(good), Stamps::Now, "0-0:1.0.0", arrival), good);
        assert_eq!(clock.stamp(&DeviceTime::Absent, Stamps::Now, "dt", arrival), arrival);
        assert_eq!(clock.counts(), [(KIND_INVALID, 0), (KIND_SKEWED, 0)]);
        assert!(clock.would_warn());

        let unset = parse_timestamp("000101010000W").expect("date");
        assert_eq!(clock.stamp(&at(unset), Stamps::Now, "0-0:1.0.0", arrival), arrival);
        assert!(!clock.would_warn(), "the first one is logged, the next is held back");
        let stale = arrival - TimeDelta::days(3);
        assert_eq!(clock.stamp(&at(stale), Stamps::Capture, "0-1:24.2.1", arrival), arrival);
        let junk = DeviceTime::Unreadable("x".into());
        assert_eq!(clock.stamp(&junk, Stamps::Now, "dt", arrival), arrival);
        assert_eq!(clock.counts(), [(KIND_INVALID, 2), (KIND_SKEWED, 1)]);

        tokio::time::advance(WARN_EVERY - Duration::from_secs(1)).await;
        assert!(!clock.would_warn());
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(clock.would_warn(), "an hour later it is logged again");
        clock.stamp(&at(stale), Stamps::Now, "dt", arrival);
        assert!(!clock.would_warn());
        assert_eq!(clock.counts(), [(KIND_INVALID, 2), (KIND_SKEWED, 2)]);
    }
}
