//! The counter detector: pure, no I/O. For one counter it decides, reading by
//! reading, whether the value is on the old track, a glitch (held back, then
//! dropped), or the start of a new epoch (a swapped or reset meter), and gives every
//! released reading its lifetime value (raw + the current epoch's offset).
//!
//! A reading off the track is held back until `glitch_hold` readings decide it: one
//! back on the old track makes the held ones glitches; `glitch_hold` readings that
//! agree with each other start a new epoch at the first of them. So the lifetime
//! series never drops and never spikes, whatever the meter does.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// `counters:` in config.yaml: how counters are cleaned at ingest (docs/counters.md).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct CounterSettings {
    /// Clean energy, gas, water and heat counters and add their `<metric>_lifetime`
    /// series; off: readings pass as sent.
    #[serde(default = "default_counters_enabled")]
    pub enabled: bool,
    /// How many readings off the old track are held back before they are believed
    /// (a new epoch); fewer that are followed by one back on the track are glitches.
    #[serde(default = "default_glitch_hold")]
    pub glitch_hold: usize,
    /// The fastest a counter can rise, in its own unit per hour (kWh, m³, GJ); a
    /// faster rise is off the track. Measured over at least one minute.
    #[serde(default = "default_max_rise_per_hour")]
    pub max_rise_per_hour: f64,
    /// A counter that restarts at or below this value (its own unit) counts from
    /// zero in the new epoch: the new meter's first units are kept.
    #[serde(default = "default_restart_below")]
    pub restart_below: f64,
    /// A drop this small (rounding, a meter's last digit) stays on the track; the
    /// lifetime value holds its previous value instead of dropping.
    #[serde(default = "default_drop_tolerance")]
    pub drop_tolerance: f64,
}

pub fn default_counters_enabled() -> bool {
    true
}
pub fn default_glitch_hold() -> usize {
    3
}
pub fn default_max_rise_per_hour() -> f64 {
    // 100 kWh in an hour is 100 kW, beyond any home connection; 100 m³/h of gas
    // beyond any household meter (a G6 is 10 m³/h).
    100.0
}
pub fn default_restart_below() -> f64 {
    5.0
}
pub fn default_drop_tolerance() -> f64 {
    0.01
}

impl Default for CounterSettings {
    fn default() -> Self {
        CounterSettings {
            enabled: default_counters_enabled(),
            glitch_hold: default_glitch_hold(),
            max_rise_per_hour: default_max_rise_per_hour(),
            restart_below: default_restart_below(),
            drop_tolerance: default_drop_tolerance(),
        }
    }
}

impl CounterSettings {
    /// A value serde cannot check: `(key, message)`.
    pub(crate) fn out_of_range(&self) -> Option<(&'static str, String)> {
        if self.glitch_hold == 0 || self.glitch_hold > 100 {
            return Some(("counters.glitch_hold", "must be between 1 and 100 readings".into()));
        }
        for (key, v) in [
            ("counters.max_rise_per_hour", self.max_rise_per_hour),
            ("counters.restart_below", self.restart_below),
            ("counters.drop_tolerance", self.drop_tolerance),
        ] {
            if !v.is_finite() || v < 0.0 {
                return Some((key, "must be a number of 0 or more".into()));
            }
        }
        None
    }
}

/// Why an epoch started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The first reading ever seen of this counter.
    First,
    /// Another meter: its identity changed, it restarted near zero, or it jumped
    /// far up and stayed there.
    Swap,
    /// The counter dropped and stayed down.
    Reset,
    /// Added by a user (`mesura epochs add`).
    Manual,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::First => "first",
            Reason::Swap => "swap",
            Reason::Reset => "reset",
            Reason::Manual => "manual",
        }
    }

    pub fn parse(s: &str) -> Option<Reason> {
        [Reason::First, Reason::Swap, Reason::Reset, Reason::Manual]
            .into_iter()
            .find(|r| r.as_str() == s)
    }
}

/// The last reading a counter accepted.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Point {
    pub at: DateTime<Utc>,
    pub raw: f64,
    pub lifetime: f64,
}

/// One value of the counter, with what travels with it (a [`crate::reading::Reading`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Sample<T> {
    pub at: DateTime<Utc>,
    pub raw: f64,
    pub payload: T,
}

/// An epoch that starts with this step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct NewEpoch {
    pub start: DateTime<Utc>,
    pub offset: f64,
    pub reason: Reason,
}

/// What one reading decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Step<T> {
    /// Readings to publish now, oldest first, each with its lifetime value.
    pub released: Vec<(Sample<T>, f64)>,
    /// Readings judged glitches: never published.
    pub glitches: Vec<Sample<T>>,
    /// The epoch the released readings started, if any.
    pub epoch: Option<NewEpoch>,
}

impl<T> Default for Step<T> {
    fn default() -> Self {
        Step {
            released: Vec::new(),
            glitches: Vec::new(),
            epoch: None,
        }
    }
}

/// One counter's state.
#[derive(Debug, Clone)]
pub struct Track<T> {
    offset: f64,
    last: Option<Point>,
    held: Vec<Sample<T>>,
}

impl<T> Track<T> {
    /// A counter in an epoch of `offset`, whose last accepted reading was `last`
    /// (none: the next reading is taken as it comes).
    pub fn new(offset: f64, last: Option<Point>) -> Self {
        Track {
            offset,
            last,
            held: Vec::new(),
        }
    }

    pub fn offset(&self) -> f64 {
        self.offset
    }

    pub fn last(&self) -> Option<Point> {
        self.last
    }

    /// How many readings wait for a decision.
    pub fn held(&self) -> usize {
        self.held.len()
    }

    /// A user's epoch: the next readings take `offset`.
    pub fn set_offset(&mut self, offset: f64) {
        self.offset = offset;
        if let Some(last) = &mut self.last {
            last.lifetime = last.raw + offset;
        }
    }

    /// Takes one reading. `swapped`: the device reported another identity with it.
    pub fn observe(&mut self, sample: Sample<T>, swapped: bool, settings: &CounterSettings) -> Step<T> {
        let mut step = Step::default();
        let Some(last) = self.last else {
            let offset = self.offset;
            step.epoch = Some(NewEpoch {
                start: sample.at,
                offset,
                reason: Reason::First,
            });
            self.accept(sample, &mut step);
            return step;
        };
        if swapped {
            // The held readings came with the old identity, off its track.
            step.glitches.append(&mut self.held);
            self.start_epoch(last, sample.at, sample.raw, Reason::Swap, settings, &mut step);
            self.accept(sample, &mut step);
            return step;
        }
        if on_track(&last, sample.at, sample.raw, settings) {
            step.glitches.append(&mut self.held);
            self.accept(sample, &mut step);
            return step;
        }
        self.held.push(sample);
        if self.held.len() < settings.glitch_hold {
            return step;
        }
        let agree = self
            .held
            .windows(2)
            .all(|w| on_track_raw(w[0].at, w[0].raw, w[1].at, w[1].raw, settings));
        if !agree {
            // Scattered values: the oldest cannot start a track, the rest may yet.
            step.glitches.push(self.held.remove(0));
            return step;
        }
        let first = &self.held[0];
        let reason = if first.raw > last.raw || first.raw <= settings.restart_below {
            Reason::Swap
        } else {
            Reason::Reset
        };
        let (start, raw) = (first.at, first.raw);
        self.start_epoch(last, start, raw, reason, settings, &mut step);
        for sample in std::mem::take(&mut self.held) {
            self.accept(sample, &mut step);
        }
        step
    }

    fn start_epoch(
        &mut self,
        last: Point,
        start: DateTime<Utc>,
        raw: f64,
        reason: Reason,
        settings: &CounterSettings,
        step: &mut Step<T>,
    ) {
        // A meter that restarts near zero counts its first units; one found far from
        // zero continues the lifetime where the old one stopped (what was used in
        // between is unknown).
        self.offset = if raw <= settings.restart_below {
            last.lifetime
        } else {
            last.lifetime - raw
        };
        step.epoch = Some(NewEpoch {
            start,
            offset: self.offset,
            reason,
        });
    }

    fn accept(&mut self, sample: Sample<T>, step: &mut Step<T>) {
        let mut lifetime = sample.raw + self.offset;
        if let Some(last) = self.last {
            // A drop within the tolerance: the lifetime holds.
            lifetime = lifetime.max(last.lifetime);
        }
        self.last = Some(Point {
            at: sample.at,
            raw: sample.raw,
            lifetime,
        });
        step.released.push((sample, lifetime));
    }
}

/// Whether `raw` at `at` continues the track that `last` is on.
fn on_track(last: &Point, at: DateTime<Utc>, raw: f64, settings: &CounterSettings) -> bool {
    on_track_raw(last.at, last.raw, at, raw, settings)
}

fn on_track_raw(from_at: DateTime<Utc>, from: f64, at: DateTime<Utc>, raw: f64, settings: &CounterSettings) -> bool {
    let hours = ((at - from_at).num_milliseconds() as f64 / 3_600_000.0).max(1.0 / 60.0);
    raw >= from - settings.drop_tolerance && raw - from <= settings.max_rise_per_hour * hours
}
