//! The delivery task: takes batches from the outbox, oldest first, POSTs them and
//! acknowledges them only on a 2xx.
//!
//! - 2xx: the rows are deleted (the delivered-cursor advances).
//! - 5xx, 408, timeouts, connection errors: retried, with exponential backoff and
//!   jitter; 429 and 503 (and any retried answer) honour `Retry-After`.
//! - 401, 403, 404, 407: the batch is fine, the setup is not (a wrong token, a
//!   missing database or bucket): retried like a 5xx, logged as an error, so
//!   fixing the server loses nothing.
//! - any other 4xx: the batch will never be accepted; its rows are moved to
//!   `outbox_dead_letter` with the server's answer, and delivery goes on.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use reqwest::header::{HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER};
use tokio::sync::Notify;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use super::{aggregate, encode, Format, UplinkConfig};
use crate::backends::health::{duration_words, Health};
use crate::backends::outbox::{Outbox, OutboxRow};
use crate::backends::{blocking, BackendError};
use crate::config::secret::Secret;
use crate::daemon::retry::Backoff;

/// The most of a server's answer kept for the log and the dead-letter table.
const ANSWER_LIMIT: usize = 512;
/// The longest `Retry-After` obeyed: a server asking for a day is more likely
/// misconfigured than serious, and readings keep piling up meanwhile.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(3600);
/// Raw rows read per round when aggregating (whole windows are cut from them).
const AGGREGATE_PAGE: usize = 20_000;

pub(super) fn client(config: &UplinkConfig) -> Result<reqwest::Client, BackendError> {
    let mut builder = reqwest::Client::builder()
        .timeout(config.timeout)
        .connect_timeout(config.timeout)
        .user_agent(concat!("mesura/", env!("CARGO_PKG_VERSION")));
    if let Some(file) = &config.tls.ca_file {
        let pem = std::fs::read(file).map_err(|e| {
            BackendError::permanent(format!("uplink: tls.ca_file {}: {e}", file.display())).caused_by(e)
        })?;
        let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
            BackendError::permanent(format!("uplink: tls.ca_file {}: {e}", file.display())).caused_by(e)
        })?;
        if certs.is_empty() {
            return Err(BackendError::permanent(format!(
                "uplink: tls.ca_file {}: no PEM certificate in it",
                file.display()
            )));
        }
        for cert in certs {
            builder = builder.add_root_certificate(cert);
        }
    }
    if config.tls.insecure_skip_verify {
        builder = builder.danger_accept_invalid_certs(true);
    }
    builder
        .build()
        .map_err(|e| BackendError::permanent(format!("uplink: cannot build the HTTP client: {e}")).caused_by(e))
}

/// The URL without user info and credential parameters, for logs.
pub(super) fn redacted(url: &reqwest::Url) -> String {
    crate::config::secret::mask_url(url.as_str())
}

/// What the server's answer means for the batch.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Outcome {
    Delivered,
    /// Try again later: after `after` if the server said so, else after a backoff.
    Retry {
        after: Option<Duration>,
        why: String,
        /// 401, 403, 404, 407: the setup is wrong (token, URL, proxy), not the
        /// server busy; logged as an error, since waiting will not fix it.
        misconfigured: bool,
    },
    /// The batch will never be accepted.
    Rejected {
        why: String,
    },
}

/// Classifies an HTTP answer.
pub(super) fn classify(status: u16, retry_after: Option<&str>, answer: &str, now: DateTime<Utc>) -> Outcome {
    let why = if answer.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {answer}")
    };
    match status {
        200..=299 => Outcome::Delivered,
        400..=499 if !matches!(status, 401 | 403 | 404 | 407 | 408 | 429) => Outcome::Rejected { why },
        _ => Outcome::Retry {
            after: retry_after.and_then(|v| parse_retry_after(v, now)),
            why,
            misconfigured: matches!(status, 401 | 403 | 404 | 407),
        },
    }
}

/// `Retry-After`: seconds, or an HTTP date. Capped at an hour.
pub(super) fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    let wait = match value.parse::<u64>() {
        Ok(seconds) => Duration::from_secs(seconds),
        Err(_) => {
            let at = DateTime::parse_from_rfc2822(value).ok()?.with_timezone(&Utc);
            (at - now).to_std().unwrap_or(Duration::ZERO)
        }
    };
    Some(wait.min(MAX_RETRY_AFTER))
}

/// An error with its causes: reqwest's own words ("error sending request") do not
/// say whether the server refused the connection, timed out or failed TLS.
fn with_causes(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        let said = c.to_string();
        if !text.ends_with(&said) {
            text = format!("{text}: {said}");
        }
        cause = c.source();
    }
    text
}

/// Cuts `text` to at most `limit` bytes on a character boundary.
fn truncate(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.trim().to_owned();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", text[..end].trim())
}

pub(super) struct Delivery {
    pub client: reqwest::Client,
    pub endpoint: reqwest::Url,
    pub format: Format,
    pub tags: std::collections::BTreeMap<String, String>,
    pub token: Option<Secret>,
    pub token_scheme: &'static str,
    pub gzip: bool,
    pub batch_size: usize,
    pub interval: Duration,
    pub final_budget: Duration,
    pub aggregate: Option<Duration>,
    pub max_backoff: Duration,
    pub outbox: Arc<Mutex<Outbox>>,
    pub unsent: Arc<AtomicUsize>,
    /// What /health shows of delivery.
    pub health: Arc<Health>,
}

/// How a delivery round ended.
enum Round {
    /// Nothing more to send for now.
    Drained,
    /// The last attempt failed and retrying was not allowed (the final round).
    Failed,
    /// Stopped while waiting to retry.
    Stopped,
}

struct Batch {
    rows: Vec<OutboxRow>,
    ids: Vec<i64>,
}

impl Delivery {
    pub(super) async fn run(mut self, wake: Arc<Notify>, stop: CancellationToken) {
        let mut backoff = Backoff::new(Duration::from_secs(1), self.max_backoff);
        let mut ticker = tokio::time::interval(self.interval);
        ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The first tick is at once: a backlog left by the last run goes out now.
        loop {
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                _ = ticker.tick() => {}
                _ = wake.notified() => {}
            }
            if let Round::Stopped = self.round(&mut backoff, Some(&stop)).await {
                break;
            }
        }
        // One last round without retries, bounded: a dead server must not hold up
        // the shutdown. What is left stays in the outbox for the next start.
        let left = tokio::time::timeout(self.final_budget, self.round(&mut backoff, None)).await;
        if !matches!(left, Ok(Round::Drained)) {
            let depth = blocking(&self.outbox, |o| o.depth()).await.map(|d| d.0).unwrap_or(0);
            if depth > 0 {
                tracing::warn!(
                    undelivered = depth,
                    "uplink: stopping with readings not yet delivered; they are kept in the outbox and sent after the next start"
                );
            }
        }
    }

    /// Sends batches until none is left. With `stop` it retries failures (until
    /// stopped); without, it gives up at the first failure.
    async fn round(&mut self, backoff: &mut Backoff, stop: Option<&CancellationToken>) -> Round {
        self.unsent.store(0, Ordering::Relaxed);
        loop {
            let outcome = match self.next_batch().await {
                Ok(None) => return Round::Drained,
                Ok(Some(batch)) => {
                    let outcome = self.send(&batch).await;
                    self.settle(&batch, outcome).await
                }
                Err(e) => Outcome::Retry {
                    after: None,
                    why: e.to_string(),
                    misconfigured: false,
                },
            };
            match outcome {
                Outcome::Delivered | Outcome::Rejected { .. } => {
                    if let Some(outage) = self.health.delivered() {
                        tracing::info!(url = %redacted(&self.endpoint), after = %duration_words(outage), "uplink: delivering again");
                    }
                    backoff.reset();
                }
                Outcome::Retry {
                    after,
                    why,
                    misconfigured,
                } => {
                    let delay = after.unwrap_or_else(|| backoff.next_delay());
                    if self.health.failed(why.as_str()) {
                        if misconfigured {
                            tracing::error!(url = %redacted(&self.endpoint), error = %why, retry_in = ?delay, "uplink: the server refuses our setup (check backends.uplink.url and token); the readings wait in the outbox");
                        } else {
                            tracing::warn!(url = %redacted(&self.endpoint), error = %why, retry_in = ?delay, "uplink: delivery failed; the readings wait in the outbox");
                        }
                    } else {
                        tracing::debug!(error = %why, retry_in = ?delay, "uplink: delivery still failing");
                    }
                    let Some(stop) = stop else { return Round::Failed };
                    tokio::select! {
                        _ = stop.cancelled() => return Round::Stopped,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
    }

    /// The next batch: the oldest rows, or (aggregating) the points of the oldest
    /// ended windows.
    async fn next_batch(&self) -> Result<Option<Batch>, BackendError> {
        let batch_size = self.batch_size;
        let Some(window) = self.aggregate else {
            let rows = blocking(&self.outbox, move |o| o.pending(0, batch_size)).await?;
            let ids = rows.iter().map(|r| r.id).collect();
            return Ok((!rows.is_empty()).then_some(Batch { rows, ids }));
        };
        let cutoff = aggregate::cutoff(Utc::now(), window);
        let page = AGGREGATE_PAGE.max(batch_size);
        let rows = blocking(&self.outbox, move |o| o.pending_before(cutoff, page)).await?;
        let whole = aggregate::whole_windows(&rows, rows.len() == page, window);
        let (rows, ids) = aggregate::take_batch(aggregate::aggregate(whole, window), batch_size);
        Ok((!ids.is_empty()).then_some(Batch { rows, ids }))
    }

    /// POSTs one batch and classifies the answer.
    async fn send(&self, batch: &Batch) -> Outcome {
        let (body, content_type) = match self.format {
            Format::Json => match encode::json(&batch.rows, &self.tags) {
                Ok(body) => (body, "application/json"),
                Err(e) => {
                    return Outcome::Rejected {
                        why: format!("cannot encode: {e}"),
                    }
                }
            },
            Format::Influx => (
                encode::line_protocol(&batch.rows, &self.tags).into_bytes(),
                "text/plain; charset=utf-8",
            ),
        };
        if body.is_empty() || body == b"[]" {
            // Only unwritable values (NaN in line protocol): nothing to send.
            return Outcome::Delivered;
        }
        let mut request = self
            .client
            .post(self.endpoint.clone())
            .header(CONTENT_TYPE, content_type);
        let body = if self.gzip {
            match encode::gzip(&body) {
                Ok(packed) => {
                    request = request.header(CONTENT_ENCODING, "gzip");
                    packed
                }
                Err(e) => {
                    return Outcome::Retry {
                        after: None,
                        why: format!("gzip: {e}"),
                        misconfigured: false,
                    }
                }
            }
        } else {
            body
        };
        if let Some(token) = &self.token {
            match HeaderValue::from_str(&format!("{} {}", self.token_scheme, token.expose())) {
                Ok(mut value) => {
                    // Keeps the header out of reqwest's and hyper's debug output.
                    value.set_sensitive(true);
                    request = request.header(AUTHORIZATION, value);
                }
                Err(_) => {
                    return Outcome::Retry {
                        after: None,
                        why: "the token has characters an HTTP header cannot carry".into(),
                        misconfigured: false,
                    }
                }
            }
        }
        let mut response = match request.body(body).send().await {
            Ok(response) => response,
            Err(e) => {
                return Outcome::Retry {
                    after: None,
                    why: with_causes(&e.without_url()),
                    misconfigured: false,
                }
            }
        };
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // Read only the start of the answer: it is for the log.
        let mut answer = Vec::new();
        while answer.len() < ANSWER_LIMIT {
            match response.chunk().await {
                Ok(Some(chunk)) => answer.extend_from_slice(&chunk),
                _ => break,
            }
        }
        let answer = truncate(&String::from_utf8_lossy(&answer), ANSWER_LIMIT);
        classify(status, retry_after.as_deref(), &answer, Utc::now())
    }

    /// Acknowledges or dead-letters the batch's rows as the outcome says. An
    /// outbox error turns into a retry (the rows are still there).
    async fn settle(&self, batch: &Batch, outcome: Outcome) -> Outcome {
        let ids = batch.ids.clone();
        let result = match &outcome {
            Outcome::Delivered => blocking(&self.outbox, move |o| o.ack(&ids)).await,
            Outcome::Rejected { why } => {
                tracing::error!(
                    url = %redacted(&self.endpoint),
                    readings = batch.ids.len(),
                    answer = %why,
                    "uplink: the server refused a batch for good; it is moved to outbox_dead_letter and delivery goes on"
                );
                let reason = why.clone();
                blocking(&self.outbox, move |o| o.dead_letter(&ids, &reason)).await
            }
            Outcome::Retry { .. } => Ok(()),
        };
        match result {
            Ok(()) => outcome,
            Err(e) => Outcome::Retry {
                after: None,
                why: e.to_string(),
                misconfigured: false,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2015-10-21T07:28:00Z").unwrap().to_utc()
    }

    #[test]
    fn answers_are_classified() {
        assert_eq!(classify(204, None, "", now()), Outcome::Delivered);
        assert!(matches!(classify(400, None, "bad", now()), Outcome::Rejected { why } if why == "HTTP 400: bad"));
        assert!(matches!(classify(422, None, "", now()), Outcome::Rejected { .. }));
        for status in [401, 403, 404, 408, 500, 502, 504] {
            assert!(
                matches!(classify(status, None, "", now()), Outcome::Retry { after: None, .. }),
                "{status}"
            );
        }
        // A wrong token or URL is retried too, but marked so it is logged as an error.
        for (status, misconfigured) in [
            (401, true),
            (403, true),
            (404, true),
            (407, true),
            (408, false),
            (500, false),
        ] {
            assert!(
                matches!(classify(status, None, "", now()), Outcome::Retry { misconfigured: m, .. } if m == misconfigured),
                "{status}"
            );
        }
        assert!(matches!(
            classify(429, Some("2"), "", now()),
            Outcome::Retry { after: Some(d), .. } if d == Duration::from_secs(2)
        ));
        assert!(matches!(
            classify(503, Some("Wed, 21 Oct 2015 07:28:30 GMT"), "", now()),
            Outcome::Retry { after: Some(d), .. } if d == Duration::from_secs(30)
        ));
    }

    #[test]
    fn retry_after_forms() {
        assert_eq!(parse_retry_after(" 120 ", now()), Some(Duration::from_secs(120)));
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:27:00 GMT", now()),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("999999", now()), Some(MAX_RETRY_AFTER));
        assert_eq!(parse_retry_after("soon", now()), None);
    }

    #[test]
    fn answers_are_truncated_on_a_character_boundary() {
        assert_eq!(truncate("ééé", 3), "é…");
        assert_eq!(truncate(" ok \n", 10), "ok");
    }
}
