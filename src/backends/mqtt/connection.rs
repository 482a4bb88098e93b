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
pub(super) enum Update {
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

pub(super) struct Driver {
    updates: mpsc::Receiver<Update>,
    reconnect: mpsc::Sender<()>,
    task: JoinHandle<()>,
}

impl Driver {
    pub(super) fn spawn(eventloop: EventLoop) -> Driver {
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
    pub(super) async fn next(&mut self) -> Option<Update> {
        self.updates.recv().await
    }

    /// Lets the event loop connect again after [`Update::Failed`]. Requests the
    /// client issued before this are dropped: the outbox has them.
    pub(super) fn reconnect(&self) {
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

/// Says what happens with the connection without flooding the journal while a
/// broker is away for hours: the start of an outage once, at WARN (at ERROR when the
/// broker refused the login: only the user can fix that), then at most one INFO line
/// per [`FAILURE_LOG_INTERVAL`] with the number of attempts so far, and the end.
pub(super) struct ConnectLog {
    broker: String,
    attempts: u64,
    last_logged: Option<Instant>,
    /// The refused login was said in this outage.
    said_refused: bool,
}

pub(super) const FAILURE_LOG_INTERVAL: Duration = Duration::from_secs(60);

impl ConnectLog {
    pub(super) fn new(host: &str, port: u16) -> ConnectLog {
        ConnectLog {
            broker: format!("{host}:{port}"),
            attempts: 0,
            last_logged: None,
            said_refused: false,
        }
    }

    pub(super) fn attempt(&mut self) {
        self.attempts += 1;
        if self.attempts == 1 {
            tracing::info!(backend = "mqtt", broker = %self.broker, "connecting to the broker");
        } else {
            tracing::debug!(backend = "mqtt", broker = %self.broker, attempt = self.attempts, "connecting to the broker");
        }
    }

    /// Connected; `outage`: how long delivery had failed, if it had.
    pub(super) fn connected(&mut self, outage: Option<Duration>) {
        match outage {
            Some(outage) => tracing::info!(
                backend = "mqtt",
                broker = %self.broker,
                attempts = self.attempts,
                after = %crate::backends::health::duration_words(outage),
                "connected to the broker: delivering again"
            ),
            None => tracing::info!(backend = "mqtt", broker = %self.broker, "connected to the broker"),
        }
        self.attempts = 0;
        self.last_logged = None;
        self.said_refused = false;
    }

    pub(super) fn lost(&mut self, e: &ConnectionError) {
        self.last_logged = Some(Instant::now());
        tracing::warn!(
            backend = "mqtt",
            broker = %self.broker,
            reason = %reason(e),
            "broker connection lost; readings wait in the outbox"
        );
    }

    /// An attempt failed; the next one comes after `retry_in`. `starts_outage`: the
    /// backend was delivering until now.
    pub(super) fn failed(&mut self, e: &ConnectionError, retry_in: Duration, starts_outage: bool) {
        let now = Instant::now();
        let retry_in = format!("{:.1}s", retry_in.as_secs_f64());
        if login_refused(e) && !self.said_refused {
            self.said_refused = true;
            self.last_logged = Some(now);
            tracing::error!(
                backend = "mqtt",
                broker = %self.broker,
                reason = %reason(e),
                retry_in = %retry_in,
                "cannot connect to the broker: login refused; readings wait in the outbox"
            );
            return;
        }
        if starts_outage {
            self.last_logged = Some(now);
            tracing::warn!(
                backend = "mqtt",
                broker = %self.broker,
                reason = %reason(e),
                retry_in = %retry_in,
                "cannot connect to the broker; readings wait in the outbox"
            );
            return;
        }
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
            retry_in = %retry_in,
            "still cannot connect to the broker; readings wait in the outbox"
        );
    }
}

/// The broker refused our user name or password (or this client).
pub(super) fn login_refused(e: &ConnectionError) -> bool {
    matches!(
        e,
        ConnectionError::ConnectionRefused(ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized)
    )
}

/// The failure in words a user can act on.
pub(super) fn reason(e: &ConnectionError) -> String {
    match e {
        e if login_refused(e) => {
            "the broker refused the login: username or password refused (backends.mqtt.username, password)".into()
        }
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
        /// Captures this thread's INFO and above, without colour or time, until the
        /// guard is dropped.
        fn install() -> (Captured, tracing::subscriber::DefaultGuard) {
            let captured = Captured::default();
            let writer = captured.clone();
            let subscriber = tracing_subscriber::fmt()
                .with_max_level(tracing::Level::INFO)
                .with_ansi(false)
                .without_time()
                .with_writer(move || writer.clone())
                .finish();
            (captured, tracing::subscriber::set_default(subscriber))
        }

        fn lines(&self, with: &str) -> Vec<String> {
            let text = String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned();
            text.lines().filter(|l| l.contains(with)).map(str::to_owned).collect()
        }
    }

    /// A broker away for a while: said at WARN at once, with the reason, then at INFO
    /// once a minute with the attempts so far, and the recovery; never a line per attempt.
    #[tokio::test(start_paused = true)]
    async fn connection_failures_are_said_at_info_at_most_once_a_minute() {
        let (captured, _guard) = Captured::install();
        let mut log = ConnectLog::new("broker.lan", 1883);
        let refused = ConnectionError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        // 25 attempts 5 s apart: 120 s of outage.
        for attempt in 0..25 {
            log.attempt();
            log.failed(&refused, Duration::from_secs(5), attempt == 0);
            tokio::time::advance(Duration::from_secs(5)).await;
        }
        log.attempt();
        log.connected(Some(Duration::from_secs(125)));

        assert_eq!(captured.lines("connecting to the broker").len(), 1);
        let failures = captured.lines("cannot connect to the broker");
        assert_eq!(failures.len(), 3, "at 0 s, 60 s and 120 s: {failures:#?}");
        assert!(
            failures
                .iter()
                .all(|l| l.contains("broker.lan:1883") && l.contains("is the broker running")),
            "{failures:#?}"
        );
        assert!(failures[0].contains(" WARN "), "{}", failures[0]);
        assert!(failures[1..].iter().all(|l| l.contains(" INFO ")), "{failures:#?}");
        assert!(failures[1].contains("attempts=13"), "{}", failures[1]);
        let connected = captured.lines("connected to the broker");
        assert_eq!(connected.len(), 1);
        assert!(connected[0].contains("attempts=26"), "{}", connected[0]);
        assert!(connected[0].contains("after=2m 5s"), "{}", connected[0]);
    }

    /// A refused login is said at ERROR once per outage, also when the outage began
    /// with another reason (the broker was restarted with a password file).
    #[tokio::test(start_paused = true)]
    async fn a_refused_login_is_said_at_error_once() {
        let (captured, _guard) = Captured::install();
        let mut log = ConnectLog::new("broker.lan", 1883);
        let down = ConnectionError::Io(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        let auth = ConnectionError::ConnectionRefused(ConnectReturnCode::NotAuthorized);
        log.attempt();
        log.failed(&down, Duration::from_secs(1), true);
        for _ in 0..10 {
            tokio::time::advance(Duration::from_secs(2)).await;
            log.attempt();
            log.failed(&auth, Duration::from_secs(2), false);
        }
        let errors = captured.lines("ERROR mesura");
        assert_eq!(errors.len(), 1, "{errors:#?}");
        assert!(errors[0].contains("username or password refused"), "{}", errors[0]);
        assert_eq!(captured.lines(" WARN ").len(), 1);
        log.connected(Some(Duration::from_secs(21)));
        log.attempt();
        log.failed(&auth, Duration::from_secs(1), true);
        assert_eq!(captured.lines("ERROR mesura").len(), 2, "a new outage is said again");
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
        assert!(
            reason(&auth).contains("username or password refused"),
            "{}",
            reason(&auth)
        );
        assert!(reason(&ConnectionError::NetworkTimeout).contains("no answer"));
    }
}
