//! Where "now" comes from. Scheduling always uses tokio's monotonic clock; this
//! clock only stamps readings. It is injectable so tests with a paused tokio clock
//! get timestamps that advance with virtual time.

use std::sync::Arc;

use chrono::{DateTime, Utc};

pub trait Clock: Send + Sync + std::fmt::Debug {
    fn now(&self) -> DateTime<Utc>;
}

pub type SharedClock = Arc<dyn Clock>;

/// The system's wall clock (UTC). What the daemon uses: a Pi without an RTC boots
/// with a wrong time until NTP syncs, and readings must follow the corrected clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Wall time anchored once, then advanced by tokio's (possibly paused) monotonic clock.
#[derive(Debug, Clone)]
pub struct MonotonicClock {
    anchor_wall: DateTime<Utc>,
    anchor: tokio::time::Instant,
}

impl MonotonicClock {
    pub fn starting_at(anchor_wall: DateTime<Utc>) -> Self {
        MonotonicClock {
            anchor_wall,
            anchor: tokio::time::Instant::now(),
        }
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> DateTime<Utc> {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.anchor);
        chrono::TimeDelta::from_std(elapsed)
            .ok()
            .and_then(|d| self.anchor_wall.checked_add_signed(d))
            .unwrap_or(DateTime::<Utc>::MAX_UTC)
    }
}

/// A wall clock that can jump, for tests of what a clock step does (NTP correcting
/// a Pi that booted without an RTC, a user setting the time): a `MonotonicClock`
/// plus an offset that `jump` changes at once. Scheduling never sees the jump, as
/// in the daemon, where it runs on tokio's monotonic clock.
#[derive(Debug)]
pub struct JumpingClock {
    base: MonotonicClock,
    /// Milliseconds added to the base clock: an atomic, so a test can jump while
    /// the device tasks read the clock.
    offset_ms: std::sync::atomic::AtomicI64,
}

impl JumpingClock {
    pub fn starting_at(anchor_wall: DateTime<Utc>) -> Self {
        JumpingClock {
            base: MonotonicClock::starting_at(anchor_wall),
            offset_ms: std::sync::atomic::AtomicI64::new(0),
        }
    }

    /// Steps the wall clock by `by` (negative: backwards).
    pub fn jump(&self, by: chrono::TimeDelta) {
        self.offset_ms
            .fetch_add(by.num_milliseconds(), std::sync::atomic::Ordering::SeqCst);
    }
}

impl Clock for JumpingClock {
    fn now(&self) -> DateTime<Utc> {
        let offset = chrono::TimeDelta::milliseconds(self.offset_ms.load(std::sync::atomic::Ordering::SeqCst));
        let base = self.base.now();
        base.checked_add_signed(offset).unwrap_or(base)
    }
}

pub fn system() -> SharedClock {
    Arc::new(SystemClock)
}
