//! Webhooks: the request for an event in each format (pure), and one sender task
//! per webhook that POSTs in order, retries with backoff and gives up after
//! `max_attempts` (logged). The evaluator only queues: a slow or dead webhook
//! never holds up readings or other alerts.

use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use super::config::{WebhookConfig, WebhookFormat};
use super::Event;
use crate::config::secret::mask_url;

/// A request's body and headers.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub content_type: &'static str,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The request `format` makes of `event`.
pub fn request(format: WebhookFormat, event: &Event) -> Request {
    match format {
        WebhookFormat::Json => Request {
            content_type: "application/json",
            headers: Vec::new(),
            body: serde_json::to_vec(event).unwrap_or_default(),
        },
        // ntfy's publish-as-PUT/POST form: the body is the message, the rest are
        // headers (https://docs.ntfy.sh/publish/).
        WebhookFormat::Ntfy => Request {
            content_type: "text/plain; charset=utf-8",
            headers: vec![
                ("Title".into(), ascii_header(&event.title)),
                ("Priority".into(), event.priority.to_string()),
                (
                    "Tags".into(),
                    if event.firing() {
                        "rotating_light"
                    } else {
                        "white_check_mark"
                    }
                    .into(),
                ),
            ],
            body: event.message.clone().into_bytes(),
        },
        // Gotify's POST /message (https://gotify.net/api-docs): priority 0–10.
        WebhookFormat::Gotify => Request {
            content_type: "application/json",
            headers: Vec::new(),
            body: serde_json::to_vec(&json!({
                "title": event.title,
                "message": event.message,
                "priority": u32::from(event.priority) * 2,
            }))
            .unwrap_or_default(),
        },
    }
}

/// A header value must be visible ASCII; anything else becomes `?`.
fn ascii_header(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_ascii() && !c.is_ascii_control() { c } else { '?' })
        .collect()
}

/// The wait before attempt `attempt + 1` (the first retry waits 1s), doubling up
/// to `max`, with up to 20 % jitter so several mesuras do not retry in step.
pub fn backoff(attempt: u32, max: Duration) -> Duration {
    let base = Duration::from_secs(1).saturating_mul(1u32 << attempt.saturating_sub(1).min(16));
    let capped = base.min(max);
    capped.mul_f64(1.0 - fastrand::f64() * 0.2)
}

/// Messages waiting for one webhook before new ones are dropped (and logged).
const QUEUE: usize = 64;

/// One webhook's sender task.
#[derive(Debug)]
pub struct Sender {
    name: String,
    tx: mpsc::Sender<Event>,
    task: JoinHandle<()>,
}

impl Sender {
    pub fn start(name: &str, config: WebhookConfig, stop: CancellationToken) -> Sender {
        let (tx, rx) = mpsc::channel(QUEUE);
        let task = tokio::spawn(run(name.to_owned(), config, rx, stop));
        Sender {
            name: name.to_owned(),
            tx,
            task,
        }
    }

    /// Queues `event`; never waits.
    pub fn send(&self, event: Event) {
        if self.tx.try_send(event).is_err() {
            tracing::warn!(
                webhook = %self.name,
                "webhook queue full (it keeps failing): an alert message is dropped"
            );
        }
    }

    /// Ends the task once what is queued has been tried (or `stop` fires).
    pub async fn close(self) {
        let _ = self.finish().await;
    }

    /// Takes no more messages; the task ends once what is queued has been tried
    /// (or `stop` fires).
    pub fn finish(self) -> JoinHandle<()> {
        drop(self.tx);
        self.task
    }
}

#[derive(Debug, thiserror::Error)]
enum PostError {
    #[error("{0}")]
    Transport(#[source] reqwest::Error),
    #[error("HTTP {status}: {body}")]
    Status { status: u16, body: String },
}

async fn run(name: String, config: WebhookConfig, mut rx: mpsc::Receiver<Event>, stop: CancellationToken) {
    let client = match reqwest::Client::builder().timeout(config.timeout).build() {
        Ok(client) => client,
        Err(e) => {
            tracing::error!(webhook = %name, error = %e.without_url(), "cannot build the webhook's HTTP client: its alerts are not sent");
            return;
        }
    };
    let shown = mask_url(&config.url);
    loop {
        let event = tokio::select! {
            biased;
            _ = stop.cancelled() => return,
            event = rx.recv() => match event {
                Some(event) => event,
                None => return,
            },
        };
        let prepared = request(config.format, &event);
        let mut attempt = 0;
        loop {
            attempt += 1;
            match post(&client, &config, &prepared).await {
                Ok(()) => {
                    if attempt > 1 {
                        tracing::info!(webhook = %name, rule = %event.rule, attempt, "webhook delivered after retrying");
                    }
                    break;
                }
                Err(e) if attempt >= config.max_attempts => {
                    tracing::error!(webhook = %name, url = %shown, rule = %event.rule, attempts = attempt, error = %e, "webhook failed: alert message given up");
                    break;
                }
                Err(e) => {
                    let wait = backoff(attempt, config.max_backoff);
                    tracing::warn!(webhook = %name, url = %shown, rule = %event.rule, attempt, error = %e, retry_in = ?wait, "webhook failed; retrying");
                    tokio::select! {
                        _ = stop.cancelled() => return,
                        _ = tokio::time::sleep(wait) => {}
                    }
                }
            }
        }
    }
}

async fn post(client: &reqwest::Client, config: &WebhookConfig, request: &Request) -> Result<(), PostError> {
    let mut builder = client
        .post(&config.url)
        .header(reqwest::header::CONTENT_TYPE, request.content_type)
        .body(request.body.clone());
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    for (name, value) in &config.headers {
        builder = builder.header(name.as_str(), value.expose());
    }
    // reqwest's errors name the URL, which may hold a token.
    let response = builder
        .send()
        .await
        .map_err(|e| PostError::Transport(e.without_url()))?;
    let status = response.status();
    if status.is_success() {
        return Ok(());
    }
    let body = response.bytes().await.unwrap_or_default();
    Err(PostError::Status {
        status: status.as_u16(),
        body: crate::monitors::http_client::snippet(&body),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(state: &'static str) -> Event {
        Event {
            rule: "grid_high".into(),
            state,
            repeat: false,
            title: "mesura: grid_high firing".into(),
            message: "p1 power is 5200 W, above 5000".into(),
            priority: 4,
            device: Some("p1".into()),
            metric: Some("power".into()),
            backend: None,
            value: Some(5200.0),
            unit: Some("W".into()),
            threshold: Some(5000.0),
            at: chrono::DateTime::UNIX_EPOCH,
        }
    }

    #[test]
    fn ntfy_gets_the_message_as_body_and_the_rest_as_headers() {
        let r = request(WebhookFormat::Ntfy, &event("firing"));
        assert_eq!(r.body, b"p1 power is 5200 W, above 5000");
        assert!(r.headers.contains(&("Priority".into(), "4".into())));
        assert!(r.headers.contains(&("Title".into(), "mesura: grid_high firing".into())));
        assert!(r.headers.contains(&("Tags".into(), "rotating_light".into())));
        let resolved = request(WebhookFormat::Ntfy, &event("resolved"));
        assert!(resolved.headers.contains(&("Tags".into(), "white_check_mark".into())));
    }

    #[test]
    fn gotify_gets_title_message_and_a_doubled_priority() {
        let r = request(WebhookFormat::Gotify, &event("firing"));
        let body: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(body["priority"], 8);
        assert_eq!(body["title"], "mesura: grid_high firing");
        assert_eq!(body["message"], "p1 power is 5200 W, above 5000");
    }

    #[test]
    fn json_carries_every_field() {
        let r = request(WebhookFormat::Json, &event("resolved"));
        let body: serde_json::Value = serde_json::from_slice(&r.body).expect("json");
        assert_eq!(body["state"], "resolved");
        assert_eq!(body["value"], 5200.0);
        assert_eq!(body["device"], "p1");
        assert!(body.get("backend").is_none());
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let max = Duration::from_secs(10);
        assert!(backoff(1, max) <= Duration::from_secs(1) && backoff(1, max) >= Duration::from_millis(800));
        assert!(backoff(3, max) <= Duration::from_secs(4) && backoff(3, max) >= Duration::from_millis(3200));
        assert!(backoff(30, max) <= max && backoff(30, max) >= Duration::from_secs(8));
    }

    #[test]
    fn headers_stay_ascii() {
        assert_eq!(ascii_header("22 °C"), "22 ?C");
    }
}
