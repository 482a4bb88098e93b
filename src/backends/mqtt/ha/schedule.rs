//! When to backfill Home Assistant's statistics: pure, driven by what delivery sees.
//!
//! States may miss Home Assistant while the broker connection is down, while Home
//! Assistant itself is down (its birth topic says `offline`, then `online`), and
//! while mesura is down or its outbox holds a backlog (readings delivered late are
//! stamped by Home Assistant on arrival). So: from the moment one of those starts,
//! once delivery runs again *and the outbox is drained*, one pass over the hours
//! since (from the newest reading that had reached the broker: readings carry
//! their own time, and a backlog may be older than the failure); and one more after the hour the backlog landed in has been compiled by
//! Home Assistant (5 minutes past the next hour), since that hour holds the jump.

use super::backfill::{floor_hour, HOUR};

/// How long after an hour's end Home Assistant has compiled it (it does so at
/// 12 s past; the margin covers a busy recorder).
pub const COMPILED_AFTER: i64 = 5 * 60;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    /// How far back a pass looks when nothing says since when (seconds).
    pub lookback: i64,
    /// Since when states may not have reached Home Assistant.
    since: Option<i64>,
    /// Delivery runs again: a pass once the outbox is drained.
    resumed: bool,
    /// The second pass: (when, from).
    again: Option<(i64, i64)>,
}

impl Schedule {
    /// At mesura's start: what its outbox delivers late, and the hours while it
    /// was down, may be missing; look back `lookback` seconds.
    pub fn new(now: i64, lookback: i64) -> Schedule {
        Schedule {
            lookback,
            since: Some(now - lookback),
            resumed: false,
            again: None,
        }
    }

    /// States stop reaching Home Assistant (the broker connection failed, or Home
    /// Assistant said `offline`); `since` is the time of the newest reading handed
    /// to the broker before (delivery's, never later than now): the readings after
    /// it may miss Home Assistant, a backlog sent late included.
    pub fn lost(&mut self, since: i64) {
        self.since.get_or_insert(since);
        self.resumed = false;
    }

    /// Home Assistant said `online`: it (re)started, and what it missed while down
    /// is unknown when it said no `offline` before (a crash, or a stop whose last
    /// word the broker did not pass on), so the pass looks back `lookback` seconds;
    /// hours it has right cost a comparison, never a rewrite.
    pub fn came_online(&mut self, now: i64, lookback: i64) {
        let back = now - lookback;
        self.since = Some(self.since.map_or(back, |since| since.min(back)));
        self.resumed = true;
    }

    /// Delivery runs again (connected, or Home Assistant said `online`).
    pub fn resumed(&mut self) {
        if self.since.is_some() {
            self.resumed = true;
        }
    }

    /// Whether a pass waits for the outbox to drain.
    pub fn waiting(&self) -> bool {
        self.resumed
    }

    /// The outbox is drained at `now`: the hours `[from, to)` to pass over, if a
    /// pass is due.
    pub fn drained(&mut self, now: i64) -> Option<(i64, i64)> {
        if !self.resumed {
            return None;
        }
        let since = self.since.take()?;
        self.resumed = false;
        let from = floor_hour(since);
        let this_hour = floor_hour(now);
        self.again = Some((this_hour + HOUR + COMPILED_AFTER, from));
        (from < this_hour).then_some((from, this_hour))
    }

    /// The second pass, once its time has come.
    pub fn due(&mut self, now: i64) -> Option<(i64, i64)> {
        let (at, from) = self.again?;
        if now < at {
            return None;
        }
        self.again = None;
        Some((from, floor_hour(now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H0: i64 = 500_000 * HOUR;

    #[test]
    fn a_start_passes_over_the_lookback_once_the_outbox_is_drained() {
        let now = H0 + 1234;
        let mut s = Schedule::new(now, 24 * HOUR);
        assert_eq!(s.drained(now), None, "not before delivery runs");
        s.resumed();
        assert!(s.waiting());
        assert_eq!(s.drained(now + 5), Some((H0 - 24 * HOUR, H0)));
        assert_eq!(s.drained(now + 10), None, "once");
        assert_eq!(s.due(H0 + HOUR + COMPILED_AFTER - 1), None);
        assert_eq!(s.due(H0 + HOUR + COMPILED_AFTER), Some((H0 - 24 * HOUR, H0 + HOUR)));
        assert_eq!(s.due(H0 + 10 * HOUR), None);
    }

    #[test]
    fn an_outage_is_passed_over_from_its_start_to_the_hour_delivery_caught_up() {
        let mut s = Schedule::new(H0, 0);
        s.resumed();
        let _ = s.drained(H0);
        let _ = s.due(H0 + 2 * HOUR);
        // Broker down at 10:20, Home Assistant offline at 11:00 too: the outage starts at the first.
        s.lost(H0 + 10 * HOUR + 1200);
        s.lost(H0 + 11 * HOUR);
        s.resumed();
        assert!(s.waiting());
        // The backlog drains at 15:30.
        assert_eq!(s.drained(H0 + 15 * HOUR + 1800), Some((H0 + 10 * HOUR, H0 + 15 * HOUR)));
        assert_eq!(s.due(H0 + 16 * HOUR + 300), Some((H0 + 10 * HOUR, H0 + 16 * HOUR)));
    }

    #[test]
    fn home_assistant_coming_online_passes_over_the_lookback() {
        let mut s = Schedule::new(H0, 0);
        s.resumed();
        let _ = s.drained(H0);
        assert!(!s.waiting());
        s.came_online(H0 + 5 * HOUR + 10, 3 * HOUR);
        assert_eq!(s.drained(H0 + 5 * HOUR + 20), Some((H0 + 2 * HOUR, H0 + 5 * HOUR)));
        // An `offline` before: the earlier of the two.
        s.lost(H0 + 6 * HOUR);
        s.came_online(H0 + 12 * HOUR, HOUR);
        assert_eq!(s.drained(H0 + 12 * HOUR), Some((H0 + 6 * HOUR, H0 + 12 * HOUR)));
    }

    #[test]
    fn a_short_outage_within_the_hour_waits_for_the_second_pass() {
        let mut s = Schedule::new(H0, 0);
        s.resumed();
        let _ = s.drained(H0);
        s.lost(H0 + 60);
        s.resumed();
        assert_eq!(s.drained(H0 + 120), None, "the hour is not over");
        assert_eq!(s.due(H0 + HOUR + COMPILED_AFTER), Some((H0, H0 + HOUR)));
        s.lost(H0 + 2 * HOUR);
        assert!(!s.waiting(), "lost again before draining");
    }
}
