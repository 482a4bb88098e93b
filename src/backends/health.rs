//! Whether a backend gets its readings where they go, and since when it has not:
//! what /health, /metrics and the log say about it.
//!
//! A backend has two places that can fail: its writes (the router hands it a batch:
//! SQLite, CSV, or the outbox of a durable backend) and, for MQTT and the uplink,
//! the delivery task that empties the outbox. Each keeps one [`Health`]; the status
//! API shows the two together ([`Snapshot::with`]).
//!
//! The log follows changes of state, not attempts: [`Health::failed`] says whether a
//! failure starts an outage and [`Health::delivered`] whether a success ends one, so
//! the caller logs the start (WARN, or ERROR where only the user can fix it) and the
//! end (INFO) once, whatever the number of retries in between.

use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::time::Instant;

/// One failing-or-delivering state.
#[derive(Debug, Default)]
pub struct Health {
    state: Mutex<Outage>,
}

#[derive(Debug, Default, Clone)]
struct Outage {
    /// When the current outage started (wall time, for people; monotonic, for ages).
    since: Option<(DateTime<Utc>, Instant)>,
    last_error: Option<String>,
}

/// What /health shows of a [`Health`].
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Snapshot {
    /// The newest error of the current outage; `None` while delivering.
    pub last_error: Option<String>,
    /// When the current outage started.
    pub failing_since: Option<DateTime<Utc>>,
    /// How long it has lasted.
    pub failing_for: Option<Duration>,
}

impl Snapshot {
    pub fn healthy(&self) -> bool {
        self.failing_since.is_none()
    }

    /// Both parts of one backend as one: failing if either is, since the earlier
    /// start, with the error of the part that fails (delivery's when both do).
    pub fn with(self, other: Snapshot) -> Snapshot {
        match (self.healthy(), other.healthy()) {
            (true, _) => other,
            (false, true) => self,
            (false, false) => Snapshot {
                last_error: other.last_error.or(self.last_error),
                failing_since: self.failing_since.min(other.failing_since),
                failing_for: self.failing_for.max(other.failing_for),
            },
        }
    }
}

impl Health {
    fn lock(&self) -> std::sync::MutexGuard<'_, Outage> {
        // A poisoned state is still a valid state: the panic was elsewhere.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records a failed attempt. True when it starts an outage: the one time the
    /// caller says so in the log.
    pub fn failed(&self, error: impl Into<String>) -> bool {
        let mut state = self.lock();
        state.last_error = Some(error.into());
        if state.since.is_some() {
            return false;
        }
        state.since = Some((Utc::now(), Instant::now()));
        true
    }

    /// Records a successful attempt. The outage's length when it ends one: the one
    /// time the caller says the backend delivers again.
    pub fn delivered(&self) -> Option<Duration> {
        let mut state = self.lock();
        state.last_error = None;
        state.since.take().map(|(_, started)| started.elapsed())
    }

    pub fn snapshot(&self) -> Snapshot {
        let state = self.lock().clone();
        Snapshot {
            last_error: state.last_error,
            failing_since: state.since.map(|(at, _)| at),
            failing_for: state.since.map(|(_, started)| started.elapsed()),
        }
    }
}

/// An outage's length for the log: `1m 5s`.
pub fn duration_words(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m {}s", s / 60, s % 60),
        _ => format!("{}h {}m", s / 3600, (s % 3600) / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn an_outage_starts_once_and_ends_once() {
        let health = Health::default();
        assert!(health.snapshot().healthy());
        assert!(health.failed("HTTP 500"), "the first failure starts it");
        tokio::time::advance(Duration::from_secs(3)).await;
        assert!(!health.failed("HTTP 502"), "a retry does not");
        let seen = health.snapshot();
        assert_eq!(seen.last_error.as_deref(), Some("HTTP 502"));
        assert_eq!(seen.failing_for, Some(Duration::from_secs(3)));
        assert!(!seen.healthy());
        assert_eq!(health.delivered(), Some(Duration::from_secs(3)));
        assert_eq!(health.delivered(), None, "already delivering");
        assert_eq!(health.snapshot(), Snapshot::default());
    }

    #[tokio::test(start_paused = true)]
    async fn writes_and_delivery_combine() {
        let (writes, delivery) = (Health::default(), Health::default());
        delivery.failed("refused");
        tokio::time::advance(Duration::from_secs(5)).await;
        let both = writes.snapshot().with(delivery.snapshot());
        assert_eq!(both.last_error.as_deref(), Some("refused"));
        writes.failed("disk full");
        let both = writes.snapshot().with(delivery.snapshot());
        assert_eq!(
            both.failing_for,
            Some(Duration::from_secs(5)),
            "since the earlier start"
        );
        assert_eq!(both.last_error.as_deref(), Some("refused"));
        delivery.delivered();
        let both = writes.snapshot().with(delivery.snapshot());
        assert_eq!(both.last_error.as_deref(), Some("disk full"));
    }

    #[test]
    fn durations_in_words() {
        assert_eq!(duration_words(Duration::from_secs(7)), "7s");
        assert_eq!(duration_words(Duration::from_secs(65)), "1m 5s");
        assert_eq!(duration_words(Duration::from_secs(7300)), "2h 1m");
    }
}
