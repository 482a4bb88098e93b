//! Exponential backoff with jitter, and a per-device circuit breaker. Both are pure
//! state machines over `tokio::time::Instant`, so tests drive them with a paused clock.

use std::time::Duration;

use tokio::time::Instant;

/// Exponential backoff with "equal jitter": the n-th delay is uniformly drawn from
/// [d/2, d] where d = min(max, base·2ⁿ). Jitter keeps many devices that failed
/// together (a router reboot) from retrying in lockstep.
#[derive(Debug, Clone)]
pub struct Backoff {
    base: Duration,
    max: Duration,
    attempt: u32,
    rng: fastrand::Rng,
}

impl Backoff {
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max: max.max(base),
            attempt: 0,
            rng: fastrand::Rng::new(),
        }
    }

    pub fn with_seed(mut self, seed: u64) -> Self {
        self.rng = fastrand::Rng::with_seed(seed);
        self
    }

    /// The ceiling of the next delay, before jitter.
    pub fn ceiling(&self) -> Duration {
        let factor = 2u32.saturating_pow(self.attempt.min(31));
        self.base.saturating_mul(factor).min(self.max)
    }

    pub fn next_delay(&mut self) -> Duration {
        let ceiling = self.ceiling();
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        half + half.mul_f64(self.rng.f64())
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Reads go through.
    Closed,
    /// Too many consecutive failures: reads pause for the cool-down.
    Open,
    /// The cool-down passed: one probe read decides.
    HalfOpen,
}

impl BreakerState {
    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::Open => "open",
            BreakerState::HalfOpen => "half_open",
        }
    }
}

/// A state change, returned so the caller logs each one exactly once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: BreakerState,
    pub to: BreakerState,
}

#[derive(Debug, Clone)]
pub struct CircuitBreaker {
    threshold: u32,
    cooldown: Duration,
    consecutive_failures: u32,
    state: BreakerState,
    opened_at: Option<Instant>,
}

impl CircuitBreaker {
    pub fn new(threshold: u32, cooldown: Duration) -> Self {
        CircuitBreaker {
            threshold: threshold.max(1),
            cooldown,
            consecutive_failures: 0,
            state: BreakerState::Closed,
            opened_at: None,
        }
    }

    pub fn state(&self) -> BreakerState {
        self.state
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures
    }

    /// When an open breaker may probe again.
    pub fn probe_at(&self) -> Option<Instant> {
        self.opened_at.map(|t| t + self.cooldown)
    }

    /// Whether a read may go ahead now; moves Open → HalfOpen once the cool-down
    /// has passed.
    pub fn allow(&mut self, now: Instant) -> (bool, Option<Transition>) {
        match self.state {
            BreakerState::Closed | BreakerState::HalfOpen => (true, None),
            BreakerState::Open => match self.probe_at() {
                Some(at) if now >= at => (true, self.set(BreakerState::HalfOpen)),
                _ => (false, None),
            },
        }
    }

    pub fn on_success(&mut self) -> Option<Transition> {
        self.consecutive_failures = 0;
        self.opened_at = None;
        self.set(BreakerState::Closed)
    }

    pub fn on_failure(&mut self, now: Instant) -> Option<Transition> {
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        let open = self.state == BreakerState::HalfOpen || self.consecutive_failures >= self.threshold;
        if open {
            self.opened_at = Some(now);
            self.set(BreakerState::Open)
        } else {
            None
        }
    }

    fn set(&mut self, to: BreakerState) -> Option<Transition> {
        let from = std::mem::replace(&mut self.state, to);
        (from != to).then_some(Transition { from, to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_with_jitter_in_range() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(60)).with_seed(1);
        let ceilings: Vec<u64> = (0..9)
            .map(|_| {
                let ceiling = b.ceiling();
                let d = b.next_delay();
                assert!(
                    d >= ceiling / 2 && d <= ceiling,
                    "{d:?} outside [{:?}, {ceiling:?}]",
                    ceiling / 2
                );
                ceiling.as_secs()
            })
            .collect();
        assert_eq!(ceilings, vec![1, 2, 4, 8, 16, 32, 60, 60, 60]);
        b.reset();
        assert_eq!(b.ceiling(), Duration::from_secs(1));
    }

    #[test]
    fn jitter_spreads_retries() {
        let mut a = Backoff::new(Duration::from_secs(8), Duration::from_secs(60)).with_seed(1);
        let mut b = Backoff::new(Duration::from_secs(8), Duration::from_secs(60)).with_seed(2);
        assert_ne!(a.next_delay(), b.next_delay());
    }

    #[tokio::test(start_paused = true)]
    async fn breaker_opens_probes_and_closes() {
        let mut br = CircuitBreaker::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        assert_eq!(br.on_failure(t0), None);
        assert_eq!(br.on_failure(t0), None);
        let opened = br.on_failure(t0);
        assert_eq!(
            opened,
            Some(Transition {
                from: BreakerState::Closed,
                to: BreakerState::Open
            })
        );
        // Further failures while open change nothing (and so log nothing).
        assert_eq!(br.allow(t0), (false, None));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(!br.allow(Instant::now()).0);
        tokio::time::advance(Duration::from_secs(1)).await;
        let (ok, t) = br.allow(Instant::now());
        assert!(ok);
        assert_eq!(
            t,
            Some(Transition {
                from: BreakerState::Open,
                to: BreakerState::HalfOpen
            })
        );
        // A failed probe re-opens at once, without waiting for the threshold.
        assert_eq!(br.on_failure(Instant::now()).map(|t| t.to), Some(BreakerState::Open));
        assert!(!br.allow(Instant::now()).0);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(br.allow(Instant::now()).0);
        assert_eq!(br.on_success().map(|t| t.to), Some(BreakerState::Closed));
        assert_eq!(br.on_success(), None);
        assert_eq!(br.consecutive_failures(), 0);
    }
}
