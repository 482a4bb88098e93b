//! A rule's state machine: ok → pending (past the threshold, waiting out `for`) →
//! firing (sent; again every `repeat`) → ok (resolved). Pure: time comes in as an
//! argument, so the tests drive it with `tokio::time::pause()`.

use std::time::Duration;

use tokio::time::Instant;

use super::config::Condition;

/// Where a rule stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    #[default]
    Ok,
    /// Past the threshold since `since`, not yet for `for`.
    Pending { since: Instant },
    /// Fired; last sent at `last_sent`.
    Firing { since: Instant, last_sent: Instant },
}

/// What a step asks to be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Fired,
    Repeated,
    Resolved,
}

/// One rule's state.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RuleState {
    pub phase: Phase,
    /// The newest value the rule saw (a metric's value, a silence's or an
    /// outage's length in seconds), for the message.
    pub value: Option<f64>,
}

impl RuleState {
    pub fn firing(&self) -> bool {
        matches!(self.phase, Phase::Firing { .. })
    }

    /// Advances the rule. `trigger`: the condition that starts an alert holds now;
    /// `holds`: the (hysteresis) condition that keeps a firing one holds now.
    pub fn step(
        &mut self,
        trigger: bool,
        holds: bool,
        now: Instant,
        for_: Duration,
        repeat: Option<Duration>,
    ) -> Option<Transition> {
        match self.phase {
            Phase::Ok if trigger && for_.is_zero() => {
                self.phase = Phase::Firing {
                    since: now,
                    last_sent: now,
                };
                Some(Transition::Fired)
            }
            Phase::Ok if trigger => {
                self.phase = Phase::Pending { since: now };
                None
            }
            Phase::Ok => None,
            Phase::Pending { .. } if !trigger => {
                self.phase = Phase::Ok;
                None
            }
            Phase::Pending { since } if now.duration_since(since) >= for_ => {
                self.phase = Phase::Firing {
                    since: now,
                    last_sent: now,
                };
                Some(Transition::Fired)
            }
            Phase::Pending { .. } => None,
            Phase::Firing { .. } if !holds => {
                self.phase = Phase::Ok;
                Some(Transition::Resolved)
            }
            Phase::Firing { since, last_sent } => match repeat {
                Some(every) if now.duration_since(last_sent) >= every => {
                    self.phase = Phase::Firing { since, last_sent: now };
                    Some(Transition::Repeated)
                }
                _ => None,
            },
        }
    }
}

/// `(trigger, holds)` of a metric rule for `value` (see [`RuleState::step`]).
/// Silence and failing rules compare a length with their `after` instead.
pub fn levels(condition: &Condition, value: f64) -> (bool, bool) {
    match condition {
        Condition::Above { limit, clear, .. } => (value > *limit, value > *clear),
        Condition::Below { limit, clear, .. } => (value < *limit, value < *clear),
        Condition::Silent { after, .. } | Condition::Failing { after, .. } => {
            let past = value >= after.as_secs_f64();
            (past, past)
        }
    }
}

/// A message with its placeholders filled in: `{rule}`, `{device}`, `{metric}`,
/// `{value}`, `{unit}`, `{threshold}`, `{backend}`.
pub fn render(template: &str, fields: &[(&str, String)]) -> String {
    let mut out = template.to_owned();
    for (name, value) in fields {
        out = out.replace(&format!("{{{name}}}"), value);
    }
    out
}

/// A number as people read it: `5000`, `21.5`, not `5000.0`.
pub fn number(value: f64) -> String {
    let rounded = (value * 1000.0).round() / 1000.0;
    format!("{rounded}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn above(limit: f64, clear: f64) -> Condition {
        Condition::Above {
            device: "d".into(),
            metric: "m".into(),
            limit,
            clear,
        }
    }

    /// Feeds `value` to the state like the evaluator does for one reading.
    fn feed(
        state: &mut RuleState,
        cond: &Condition,
        value: f64,
        for_: Duration,
        repeat: Option<Duration>,
    ) -> Option<Transition> {
        let (trigger, holds) = levels(cond, value);
        state.step(trigger, holds, Instant::now(), for_, repeat)
    }

    #[tokio::test(start_paused = true)]
    async fn fires_only_after_the_duration_and_resets_when_it_dips() {
        let cond = above(100.0, 100.0);
        let mut state = RuleState::default();
        let for_ = 10 * S;
        assert_eq!(feed(&mut state, &cond, 150.0, for_, None), None);
        tokio::time::advance(9 * S).await;
        assert_eq!(feed(&mut state, &cond, 150.0, for_, None), None, "9 s of 10");
        // A dip restarts the wait.
        assert_eq!(feed(&mut state, &cond, 90.0, for_, None), None);
        assert_eq!(state.phase, Phase::Ok);
        assert_eq!(feed(&mut state, &cond, 150.0, for_, None), None);
        tokio::time::advance(9 * S).await;
        assert_eq!(feed(&mut state, &cond, 150.0, for_, None), None);
        tokio::time::advance(S).await;
        assert_eq!(feed(&mut state, &cond, 150.0, for_, None), Some(Transition::Fired));
        assert!(state.firing());
        assert_eq!(feed(&mut state, &cond, 150.0, for_, None), None, "no repeat configured");
        tokio::time::advance(3600 * S).await;
        assert_eq!(feed(&mut state, &cond, 150.0, for_, None), None);
        assert_eq!(feed(&mut state, &cond, 100.0, for_, None), Some(Transition::Resolved));
    }

    #[tokio::test(start_paused = true)]
    async fn repeats_while_firing() {
        let cond = above(1.0, 1.0);
        let mut state = RuleState::default();
        let repeat = Some(60 * S);
        assert_eq!(
            feed(&mut state, &cond, 2.0, Duration::ZERO, repeat),
            Some(Transition::Fired)
        );
        tokio::time::advance(59 * S).await;
        assert_eq!(feed(&mut state, &cond, 2.0, Duration::ZERO, repeat), None);
        tokio::time::advance(S).await;
        assert_eq!(
            feed(&mut state, &cond, 2.0, Duration::ZERO, repeat),
            Some(Transition::Repeated)
        );
        tokio::time::advance(30 * S).await;
        assert_eq!(
            feed(&mut state, &cond, 2.0, Duration::ZERO, repeat),
            None,
            "counted from the repeat"
        );
        tokio::time::advance(30 * S).await;
        assert_eq!(
            feed(&mut state, &cond, 2.0, Duration::ZERO, repeat),
            Some(Transition::Repeated)
        );
    }

    #[tokio::test(start_paused = true)]
    async fn hysteresis_holds_until_the_clear_value() {
        let cond = above(5000.0, 4500.0);
        let mut state = RuleState::default();
        assert_eq!(
            feed(&mut state, &cond, 4800.0, Duration::ZERO, None),
            None,
            "between: not a trigger"
        );
        assert_eq!(
            feed(&mut state, &cond, 5100.0, Duration::ZERO, None),
            Some(Transition::Fired)
        );
        assert_eq!(
            feed(&mut state, &cond, 4800.0, Duration::ZERO, None),
            None,
            "between: still firing"
        );
        assert!(state.firing());
        assert_eq!(
            feed(&mut state, &cond, 4500.0, Duration::ZERO, None),
            Some(Transition::Resolved)
        );
        assert_eq!(
            feed(&mut state, &cond, 4800.0, Duration::ZERO, None),
            None,
            "no flapping"
        );

        let below = Condition::Below {
            device: "d".into(),
            metric: "m".into(),
            limit: 10.0,
            clear: 12.0,
        };
        let mut state = RuleState::default();
        assert_eq!(
            feed(&mut state, &below, 9.0, Duration::ZERO, None),
            Some(Transition::Fired)
        );
        assert_eq!(feed(&mut state, &below, 11.0, Duration::ZERO, None), None);
        assert_eq!(
            feed(&mut state, &below, 12.0, Duration::ZERO, None),
            Some(Transition::Resolved)
        );
    }

    #[test]
    fn silence_compares_seconds() {
        let cond = Condition::Silent {
            device: "d".into(),
            after: 300 * S,
        };
        assert_eq!(levels(&cond, 299.0), (false, false));
        assert_eq!(levels(&cond, 300.0), (true, true));
    }

    #[test]
    fn messages_fill_placeholders() {
        let text = render(
            "{device} {metric} is {value} {unit} (over {threshold})",
            &[
                ("device", "p1".into()),
                ("metric", "power".into()),
                ("value", number(5123.4567)),
                ("unit", "W".into()),
                ("threshold", number(5000.0)),
            ],
        );
        assert_eq!(text, "p1 power is 5123.457 W (over 5000)");
    }
}
