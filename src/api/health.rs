//! What the status API says about failures a user must see: a backend that cannot
//! deliver (its error, since when, what waits in the outbox) and a device file that
//! is broken on disk while its device runs on. /health, /api/devices and /metrics
//! all take it from here.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::readings::OutboxState;
use crate::backends::health::Snapshot;
use crate::daemon::live::BackendStats;

/// How a backend counts in the answer's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
    Delivering,
    /// Failing, within `api.unhealthy_after`: shown, still 200.
    Failing,
    /// Failing for longer: /health answers 503.
    Down,
}

impl Verdict {
    pub(super) fn of(health: &Snapshot, grace: Duration) -> Verdict {
        match health.failing_for {
            None => Verdict::Delivering,
            Some(failing) if failing > grace => Verdict::Down,
            Some(_) => Verdict::Failing,
        }
    }
}

/// One backend's entry in /health.
pub(super) fn backend(
    stats: &BackendStats,
    held: OutboxState,
    now: DateTime<Utc>,
    grace: Duration,
) -> (Value, Verdict) {
    let health = stats.health();
    let verdict = Verdict::of(&health, grace);
    let entry = json!({
        "healthy": health.healthy(),
        "last_error": health.last_error,
        "failing_since": health.failing_since,
        "failing_seconds": health.failing_for.map(|d| d.as_secs()),
        "queue_depth": BackendStats::get(&stats.queued_batches),
        "written": BackendStats::get(&stats.written),
        "outbox_depth": held.depth,
        "outbox_oldest_age_seconds": held.oldest_queued.map(|t| (now - t).num_seconds().max(0)),
        "outbox_dropped": held.dropped_max_age + held.dropped_max_rows,
    });
    (entry, verdict)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_backend_is_down_only_past_the_grace() {
        let grace = Duration::from_secs(300);
        let failing = |secs| Snapshot {
            last_error: Some("HTTP 500".into()),
            failing_since: Some(Utc::now()),
            failing_for: Some(Duration::from_secs(secs)),
        };
        assert_eq!(Verdict::of(&Snapshot::default(), grace), Verdict::Delivering);
        assert_eq!(Verdict::of(&failing(299), grace), Verdict::Failing);
        assert_eq!(Verdict::of(&failing(301), grace), Verdict::Down);
    }
}
