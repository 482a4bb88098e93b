//! rumqttc's event loop in a task of its own, and what is said about connecting.
//!
//! `EventLoop::poll` is not safe to cancel: dropped while it waits for CONNACK, it
//! drops the half-made connection (the broker then publishes our Last Will) and the
//! next call opens a new one; dropped while it writes, a packet can be half sent. So
//! nothing may race it in a `select!`: this task is the only caller, it always lets
//! a call finish, and hands every outcome to the delivery task over a channel.
//!
//! After a failure the task waits for the delivery task's go-ahead before it
//! connects again. That is where the backoff lives, and it lets the delivery task
//! forget the session before anything it issued during the failed one is dropped.

use std::time::Duration;

use rumqttc::{ConnectReturnCode, ConnectionError, Event, EventLoop};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// What the event loop did, in the order it did it.
#[derive(Debug)]
pub enum Update {
    /// A connection attempt starts.
    Connecting,
    Event(Event),
    /// The attempt failed or the connection was lost; the next attempt waits for
    /// [`Driver::reconnect`].
    Failed(ConnectionError),
}

/// Room for updates the delivery task has not taken yet; when full, the event loop
/// waits for it (never drops an update).
const UPDATES: usize = 128;

pub struct Driver {
    updates: mpsc::Receiver<Update>,
    reconnect: mpsc::Sender<()>,
    task: JoinHandle<()>,
}

impl Driver {
    pub fn spawn(eventloop: EventLoop) -> Driver {
        let (updates_tx, updates) = mpsc::channel(UPDATES);
        let (reconnect, reconnect_rx) = mpsc::channel(1);
        let task = tokio::spawn(drive(eventloop, updates_tx, reconnect_rx));
        Driver {
            updates,
            reconnect,
            task,
        }
    }

    /// The next update; `None` once the event loop task has ended. Safe to cancel.
    pub async fn next(&mut self) -> Option<Update> {
        self.updates.recv().await
    }

    /// Lets the event loop connect again after [`Update::Failed`]. Requests the
    /// client issued before this are dropped: the outbox has them.
    pub fn reconnect(&self) {
        let _ = self.reconnect.try_send(());
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // Only when delivery is over: a connection still open goes with the task.
        self.task.abort();
    }
}

async fn drive(mut eventloop: EventLoop, updates: mpsc::Sender<Update>, mut reconnect: mpsc::Receiver<()>) {
    loop {
        if eventloop.network.is_none() && updates.send(Update::Connecting).await.is_err() {
            return;
        }
        match eventloop.poll().await {
            Ok(event) => {
                if updates.send(Update::Event(event)).await.is_err() {
                    return;
                }
            }
            Err(e) => {
                if updates.send(Update::Failed(e)).await.is_err() || reconnect.recv().await.is_none() {
                    return;
                }
                // rumqttc would resend these itself after connecting; the delivery
                // task resends from the outbox instead, so each publish goes once
                // and every `Outgoing::Publish` matches one it issued.
                eventloop.clean();
                eventloop.pending.clear();
            }
        }
    }
}

/// Says what happens with the connection, at INFO, without flooding the journal while
/// a broker is away for hours: the first failure of an outage at once, then at most
/// one line per [`FAILURE_LOG_INTERVAL`] with the number of attempts so far.
pub struct ConnectLog {
    broker: String,
    attempts: u64,
    last_logged: Option<Instant>,
}

pub const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

impl ConnectLog {
    pub fn new(host: &str, port: u16) -> ConnectLog {
        ConnectLog {
            broker: format!("{host}:{port}"),
            attempts: 0,
            last_logged: None,
        }
    }

    pub fn attempt(&mut self) {
        self.attempts += 1;
        if self.attempts == 1 {
            tracing::info!(backend = "mqtt", broker = %self.broker, "connecting to the broker");
        } else {
            tracing::debug!(backend = "mqtt", broker = %self.broker, attempt = self.attempts, "connecting to the broker");
        }
    }

    pub fn connected(&mut self) {
        if self.attempts > 1 {
            tracing::info!(
                backend = "mqtt",
                broker = %self.broker,
                attempts = self.attempts,
                "connected to the broker"
            );
        } else {
            tracing::info!(backend = "mqtt", broker = %self.broker, "connected to the broker");
        }
        self.attempts = 0;
        self.last_logged = None;
    }

    pub fn lost(&mut self, e: &ConnectionError) {
        tracing::warn!(
            backend = "mqtt",
            broker = %self.broker,
            reason = %reason(e),
            "broker connection lost; readings wait in the outbox"
        );
    }

    /// An attempt failed; the next one comes after `retry_in`.
    pub fn failed(&mut self, e: &ConnectionError, retry_in: Duration) {
        let now = Instant::now();
        if self
            .last_logged
            .is_some_and(|at| now.duration_since(at) < FAILURE_LOG_INTERVAL)
        {
            tracing::debug!(backend = "mqtt", broker = %self.broker, reason = %reason(e), "cannot connect to the broker");
            return;
        }
        self.last_logged = Some(now);
        tracing::info!(
            backend = "mqtt",
            broker = %self.broker,
            reason = %reason(e),
            attempts = self.attempts,
            retry_in = %format!("{:.1}s", retry_in.as_secs_f64()),
            "cannot connect to the broker; readings wait in the outbox"
        );
    }
}

/// The failure in words a user can act on.
pub fn reason(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(
            ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized,
        ) => "the broker refused the user name or password".into(),
        ConnectionError::ConnectionRefused(ConnectReturnCode::ServiceUnavailable) => {
            "the broker is not accepting connections (service unavailable)".into()
        }
        ConnectionError::ConnectionRefused(code) => format!("the broker refused the connection ({code:?})"),
        ConnectionError::NetworkTimeout => "no answer from the broker in time (connect timeout)".into(),
        ConnectionError::FlushTimeout => "the broker stopped reading (write timeout)".into(),
        ConnectionError::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            "connection refused (is the broker running on that port?)".into()
        }
        ConnectionError::Io(io) => io.to_string(),
        ConnectionError::MqttState(state) => format!("connection lost: {state}"),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use super::*;

    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("log buffer").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn lines(&self, with: &str) -> Vec<String> {
            let text = String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned();
            text.lines().filter(|l| l.contains(with)).map(str::to_owned).collect()
        }
    }

    /// A broker away for a while: said at INFO at once, with the reason, then once a
    /// minute with the attempts so far, and the recovery too; never a line per attempt.
    #[tokio::test(start_paused = true)]
    async fn connection_failures_are_said_at_info_at_most_once_a_minute() {
        let captured = Captured::default();
        let writer = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::INFO)
            .with_ansi(false)
            .without_time()
            .with_writer(move || writer.clone())
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let mut log = ConnectLog::new("broker.lan", 1883);
        let refused = ConnectionError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        // 25 attempts 5 s apart: 120 s of outage.
        for _ in 0..25 {
            log.attempt();
            log.failed(&refused, Duration::from_secs(5));
            tokio::time::advance(Duration::from_secs(5)).await;
        }
        log.attempt();
        log.connected();

        assert_eq!(captured.lines("connecting to the broker").len(), 1);
        let failures = captured.lines("cannot connect to the broker");
        assert_eq!(failures.len(), 3, "at 0 s, 60 s and 120 s: {failures:#?}");
        assert!(
            failures
                .iter()
                .all(|l| l.contains(" INFO ") && l.contains("broker.lan:1883") && l.contains("is the broker running")),
            "{failures:#?}"
        );
        assert!(failures[1].contains("attempts=13"), "{}", failures[1]);
        let connected = captured.lines("connected to the broker");
        assert_eq!(connected.len(), 1);
        assert!(connected[0].contains("attempts=26"), "{}", connected[0]);
    }

    #[test]
    fn reasons_name_what_to_fix() {
        let refused = ConnectionError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(
            reason(&refused).contains("is the broker running"),
            "{}",
            reason(&refused)
        );
        let auth = ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized);
        assert!(reason(&auth).contains("user name or password"), "{}", reason(&auth));
        assert!(reason(&ConnectionError::NetworkTimeout).contains("no answer"));
    }
}
