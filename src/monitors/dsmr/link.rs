//! The P1 link: opening the serial port or TCP connection, and the background task
//! that reads it.
//!
//! A meter pushes a telegram every second (DSMR 5) or ten (2.2/3.0) whether or not
//! anyone listens. If bytes were read only when the supervisor polls, a 10 s poll
//! would leave ten telegrams in a 4 KiB tty buffer that overflows and corrupts them.
//! So one task per open link reads continuously, frames, CRC-checks, and keeps the
//! newest good telegram(s) in an [`Inbox`] for the next `read()`. The task owns the
//! stream: when it ends (link gone) or is aborted (monitor dropped) the port closes.
//! Reopening is left to `read()`, so it is paced by the supervisor's backoff.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::host::clock::SharedClock;
use crate::monitors::MonitorError;
use crate::protocols::dlms::{EncryptedError, EncryptedFramer, Keys};
use crate::protocols::dsmr::{CrcStatus, Frame, FrameError, Framer};
use crate::reading::DeviceId;

use super::serve::Fanout;

/// Where the meter is.
#[derive(Debug, Clone, PartialEq)]
pub enum Target {
    Serial {
        path: String,
        baud_rate: u32,
        data_bits: tokio_serial::DataBits,
        parity: tokio_serial::Parity,
        stop_bits: tokio_serial::StopBits,
    },
    Tcp {
        host: String,
        port: u16,
    },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Serial { path, .. } => f.write_str(path),
            Target::Tcp { host, port } => write!(f, "tcp://{host}:{port}"),
        }
    }
}

pub(super) type Stream = Box<dyn AsyncRead + Send + Unpin>;

/// Opens the link. A missing port or a refused connection is a `Link` error (a USB
/// cable may be plugged back in, a dongle may reboot); a path that exists but is no
/// serial device is a `Config` error.
pub(super) async fn open(target: &Target, timeout: Duration) -> Result<Stream, MonitorError> {
    match target {
        Target::Serial {
            path,
            baud_rate,
            data_bits,
            parity,
            stop_bits,
        } => {
            use tokio_serial::SerialPortBuilderExt;
            let builder = tokio_serial::new(path, *baud_rate)
                .data_bits(*data_bits)
                .parity(*parity)
                .stop_bits(*stop_bits)
                .flow_control(tokio_serial::FlowControl::None);
            match builder.open_native_async() {
                Ok(port) => Ok(Box::new(port)),
                Err(e) if !std::path::Path::new(path).exists() => {
                    Err(MonitorError::link(format!("{path} is not there (unplugged?): {e}")).caused_by(e))
                }
                Err(e) if e.kind == tokio_serial::ErrorKind::InvalidInput => {
                    Err(MonitorError::config(format!("cannot use {path} as a serial port: {e}")).caused_by(e))
                }
                Err(e) => Err(MonitorError::link(format!("cannot open {path}: {e}")).caused_by(e)),
            }
        }
        Target::Tcp { host, port } => {
            let connect = tokio::net::TcpStream::connect((host.as_str(), *port));
            match tokio::time::timeout(timeout, connect).await {
                Ok(Ok(stream)) => {
                    // A dongle that reboots leaves a half-open socket behind; the
                    // silence timeout catches that, keepalive is not needed.
                    let _ = stream.set_nodelay(true);
                    Ok(Box::new(stream))
                }
                Ok(Err(e)) => Err(MonitorError::link(format!(
                    "cannot connect to {host}:{port}: {}",
                    crate::monitors::describe_link_io(&e)
                ))
                .caused_by(e)),
                Err(_) => Err(MonitorError::link(format!(
                    "no connection to {host}:{port} within {}",
                    humantime::format_duration(timeout)
                ))),
            }
        }
    }
}

/// A good telegram and when it arrived.
#[derive(Debug, Clone)]
pub(super) struct Received {
    pub frame: Frame,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Default)]
struct InboxState {
    frames: VecDeque<Received>,
    /// Why the reader stopped, once it has.
    ended: Option<Ended>,
    /// Telegrams pushed out because `read()` did not come in time (only counted when
    /// every telegram is kept).
    overflowed: u64,
}

/// Why a reader task stopped: the words for the log, and the I/O error that
/// ended it, if one did (handed out once, with the first report).
#[derive(Debug)]
struct Ended {
    reason: String,
    cause: Option<std::io::Error>,
}

/// Telegrams waiting for `read()`. `capacity` 1 keeps only the newest (a poll
/// interval stores one telegram per interval); more keeps every one.
#[derive(Debug)]
struct Inbox {
    state: Mutex<InboxState>,
    capacity: usize,
    notify: Notify,
}

impl Inbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, InboxState> {
        // A panic while holding this lock cannot leave the queue inconsistent.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn push(&self, received: Received) {
        {
            let mut state = self.lock();
            state.frames.push_back(received);
            while state.frames.len() > self.capacity {
                state.frames.pop_front();
                if self.capacity > 1 {
                    state.overflowed += 1;
                }
            }
        }
        self.notify.notify_one();
    }

    fn end(&self, ended: Ended) {
        self.lock().ended = Some(ended);
        self.notify.notify_one();
    }
}

/// Settings of a reader task.
#[derive(Debug, Clone)]
pub(super) struct ReaderSettings {
    pub device: DeviceId,
    pub target: String,
    pub clock: SharedClock,
    /// No good telegram for this long = the link is gone.
    pub timeout: Duration,
    pub max_telegram_size: usize,
    /// Telegrams kept for `read()`: 1 = the newest only.
    pub keep: usize,
    /// Bad telegrams dropped since the monitor started, across reconnects.
    pub totals: Arc<BadTotals>,
    /// The meter's keys when it encrypts (Luxembourg, Austria).
    pub keys: Option<Keys>,
    /// The clients the raw stream is re-served to (`serve:`), if any.
    pub serve: Option<Arc<Fanout>>,
}

/// Cumulative counts of dropped telegrams and skipped junk, for /metrics.
#[derive(Debug, Default)]
pub(super) struct BadTotals {
    pub crc: std::sync::atomic::AtomicU64,
    pub framing: std::sync::atomic::AtomicU64,
    /// Non-whitespace bytes between telegrams (see `FramerStats::junk_bytes`). A
    /// cable that sends them costs no telegram any more, but a count that climbs
    /// fast points at a bad cable, a wrong baud rate or a noisy dongle.
    pub junk_bytes: std::sync::atomic::AtomicU64,
    /// Encrypted frames dropped: not decrypted (wrong key, corrupt), or decrypted
    /// into nothing this reader can decode.
    pub decrypt: std::sync::atomic::AtomicU64,
    /// Whether the likely cause of `decrypt` failures was logged: once, not per frame.
    pub wrong_key_logged: std::sync::atomic::AtomicBool,
    pub undecodable_logged: std::sync::atomic::AtomicBool,
}

/// The framer of a link: plain telegrams, or DLMS-encrypted frames.
#[derive(Debug)]
enum P1Framer {
    Plain(Framer),
    Encrypted(Box<EncryptedFramer>),
}

/// One thing a framer reports.
enum Cut {
    Frame(Frame),
    Bad(FrameError),
    Undecrypted(EncryptedError),
}

impl P1Framer {
    fn new(s: &ReaderSettings) -> Self {
        match &s.keys {
            Some(keys) => P1Framer::Encrypted(Box::new(EncryptedFramer::new(keys.clone(), s.max_telegram_size))),
            None => P1Framer::Plain(Framer::new(s.max_telegram_size)),
        }
    }

    fn push(&mut self, data: &[u8]) {
        match self {
            P1Framer::Plain(f) => f.push(data),
            P1Framer::Encrypted(f) => f.push(data),
        }
    }

    fn junk_bytes(&self) -> u64 {
        match self {
            P1Framer::Plain(f) => f.stats().junk_bytes,
            P1Framer::Encrypted(f) => f.stats().junk_bytes,
        }
    }

    /// Feeds `chunk` and collects what it completes into `cuts`. With
    /// `find_boundary`, byte by byte up to the first frame it completes, and
    /// returns the offset in `chunk` right after that frame: where a client of the
    /// re-served stream may start. Any chunking frames the same, so this costs only
    /// time, and only while a client waits.
    fn feed(&mut self, chunk: &[u8], find_boundary: bool, cuts: &mut Vec<Cut>) -> Option<usize> {
        if !find_boundary {
            self.push(chunk);
            cuts.extend(std::iter::from_fn(|| self.next()));
            return None;
        }
        let mut boundary = None;
        for (i, byte) in chunk.iter().enumerate() {
            self.push(std::slice::from_ref(byte));
            while let Some(cut) = self.next() {
                if boundary.is_none() && matches!(cut, Cut::Frame(_)) {
                    // The plain framer completes a telegram at its LF, or at the
                    // first byte that cannot be in its CRC line: that byte is
                    // already the next line's.
                    let next_line_started = matches!(self, P1Framer::Plain(_)) && *byte != b'\n';
                    boundary = Some(if next_line_started { i } else { i + 1 });
                }
                cuts.push(cut);
            }
            if let Some(b) = boundary {
                self.push(chunk.get(i + 1..).unwrap_or_default());
                cuts.extend(std::iter::from_fn(|| self.next()));
                return Some(b);
            }
        }
        boundary
    }

    fn next(&mut self) -> Option<Cut> {
        Some(match self {
            P1Framer::Plain(f) => match f.next_frame()? {
                Ok(frame) => Cut::Frame(frame),
                Err(e) => Cut::Bad(e),
            },
            P1Framer::Encrypted(f) => match f.next_frame()? {
                Ok(frame) => Cut::Frame(frame),
                Err(EncryptedError::Telegram(e)) => Cut::Bad(e),
                Err(e) => Cut::Undecrypted(e),
            },
        })
    }
}

/// A running reader task; aborting it on drop closes the port.
#[derive(Debug)]
pub(super) struct Reader {
    inbox: Arc<Inbox>,
    task: JoinHandle<()>,
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Reader {
    pub(super) fn spawn(stream: Stream, settings: ReaderSettings) -> Reader {
        let inbox = Arc::new(Inbox {
            state: Mutex::new(InboxState::default()),
            capacity: settings.keep.max(1),
            notify: Notify::new(),
        });
        let task = tokio::spawn(run(stream, settings, inbox.clone()));
        Reader { inbox, task }
    }

    /// The telegrams received since the last call, oldest first, waiting for the
    /// next one if there are none; a link error once the link is gone.
    pub(super) async fn next(&self) -> Result<(Vec<Received>, u64), MonitorError> {
        loop {
            {
                let mut state = self.inbox.lock();
                if !state.frames.is_empty() {
                    let overflowed = std::mem::take(&mut state.overflowed);
                    return Ok((state.frames.drain(..).collect(), overflowed));
                }
                if let Some(ended) = &mut state.ended {
                    let error = MonitorError::link(ended.reason.clone());
                    return Err(match ended.cause.take() {
                        Some(cause) => error.caused_by(cause),
                        None => error,
                    });
                }
            }
            // notify_one stores a permit when nobody waits, so a push between the
            // check above and this await is not lost.
            self.inbox.notify.notified().await;
        }
    }
}

/// Bad telegrams since the last log line: logged at most once a minute, with counts,
/// so a noisy cable does not flood the log.
#[derive(Debug, Default)]
struct BadTelegrams {
    crc: u64,
    framing: u64,
    decrypt: u64,
    last_error: Option<String>,
    last_log: Option<Instant>,
}

const BAD_LOG_EVERY: Duration = Duration::from_secs(60);

impl BadTelegrams {
    fn count_crc(&mut self, given: u16, computed: u16) {
        self.crc += 1;
        self.last_error = Some(format!("CRC {given:04X} given, {computed:04X} computed"));
    }

    fn count_framing(&mut self, e: &FrameError) {
        self.framing += 1;
        self.last_error = Some(e.to_string());
    }

    fn count_decrypt(&mut self, e: &EncryptedError) {
        self.decrypt += 1;
        self.last_error = Some(e.to_string());
    }

    fn maybe_log(&mut self, device: &DeviceId) {
        if self.crc + self.framing + self.decrypt == 0 || self.last_log.is_some_and(|t| t.elapsed() < BAD_LOG_EVERY) {
            return;
        }
        tracing::warn!(
            device = %device,
            crc_failures = self.crc,
            framing_failures = self.framing,
            decrypt_failures = self.decrypt,
            last = self.last_error.as_deref().unwrap_or(""),
            "bad P1 telegrams dropped (not stored); next report in a minute at the earliest"
        );
        self.crc = 0;
        self.framing = 0;
        self.decrypt = 0;
        self.last_log = Some(Instant::now());
    }
}

async fn run(mut stream: Stream, s: ReaderSettings, inbox: Arc<Inbox>) {
    let mut framer = P1Framer::new(&s);
    let mut buf = vec![0u8; 4096];
    let mut bad = BadTelegrams::default();
    let mut deadline = Instant::now() + s.timeout;
    let mut bytes_since_good: u64 = 0;
    let mut good_frames: u64 = 0;
    let mut undecrypted_since_good: u64 = 0;
    let mut cuts = Vec::new();
    if let Some(serve) = &s.serve {
        serve.link_opened();
    }
    let ended = loop {
        let n = match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) => {
                break format!(
                    "{}: link closed (end of stream: unplugged, or the peer closed)",
                    s.target
                )
                .into()
            }
            Ok(Ok(n)) => n,
            Ok(Err(e)) => {
                break Ended {
                    reason: format!("{}: {}", s.target, crate::monitors::describe_link_io(&e)),
                    cause: Some(e),
                }
            }
            Err(_) if undecrypted_since_good > 0 => {
                break format!(
                    "{}: {undecrypted_since_good} encrypted frames but none decrypted in {} (wrong decryption_key?)",
                    s.target,
                    humantime::format_duration(s.timeout)
                )
                .into()
            }
            Err(_) if bytes_since_good == 0 => {
                break format!("{}: silent for {}", s.target, humantime::format_duration(s.timeout)).into()
            }
            Err(_) => {
                let hint = if s.keys.is_some() {
                    "no encrypted frame found: wrong baud rate, parity or data bits, or a meter that does not encrypt (remove decryption_key)?"
                } else {
                    "wrong baud rate, parity or data bits? or an encrypted meter (Luxembourg, Austria) that needs decryption_key"
                };
                break format!(
                    "{}: {bytes_since_good} bytes but no good telegram in {} ({hint})",
                    s.target,
                    humantime::format_duration(s.timeout)
                )
                .into();
            }
        };
        bytes_since_good += n as u64;
        let chunk = buf.get(..n).unwrap_or_default();
        let junk_before = framer.junk_bytes();
        let waiting = s.serve.as_ref().is_some_and(|serve| serve.waiting());
        let boundary = framer.feed(chunk, waiting, &mut cuts);
        if let Some(serve) = &s.serve {
            serve.forward(chunk, boundary);
        }
        let junk = framer.junk_bytes() - junk_before;
        if junk > 0 {
            s.totals
                .junk_bytes
                .fetch_add(junk, std::sync::atomic::Ordering::Relaxed);
        }
        for cut in cuts.drain(..) {
            match cut {
                Cut::Frame(frame) => match frame.crc {
                    CrcStatus::Invalid { given, computed } => {
                        s.totals.crc.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        bad.count_crc(given, computed)
                    }
                    CrcStatus::Valid | CrcStatus::Absent => {
                        good_frames += 1;
                        bytes_since_good = 0;
                        undecrypted_since_good = 0;
                        deadline = Instant::now() + s.timeout;
                        inbox.push(Received {
                            frame,
                            at: s.clock.now(),
                        });
                    }
                },
                // Bytes between telegrams (joining mid-telegram, a gateway's noise after
                // each telegram as with EasyMeter Q3D) drop no telegram: counted as
                // junk bytes above, not as a bad telegram.
                Cut::Bad(e @ FrameError::Garbage { .. }) => {
                    tracing::trace!(device = %s.device, error = %e, good_frames, "non-telegram bytes skipped");
                }
                Cut::Bad(e) => {
                    s.totals.framing.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    bad.count_framing(&e)
                }
                Cut::Undecrypted(e) => {
                    undecrypted_since_good += 1;
                    s.totals.decrypt.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    explain_once(&s, &e);
                    bad.count_decrypt(&e);
                }
            }
        }
        bad.maybe_log(&s.device);
    };
    // Report what was counted before the link went, rather than lose it.
    bad.last_log = None;
    bad.maybe_log(&s.device);
    inbox.end(ended);
}

/// The likely cause of dropped encrypted frames, logged once per device (every
/// frame fails the same way until the key or the meter changes).
fn explain_once(s: &ReaderSettings, e: &EncryptedError) {
    use std::sync::atomic::Ordering::Relaxed;
    if e.wrong_key_likely() {
        if !s.totals.wrong_key_logged.swap(true, Relaxed) {
            tracing::error!(
                device = %s.device, error = %e,
                "encrypted P1 frames do not decrypt: wrong decryption_key? (check it with the grid operator; \
                 Luxembourg: the P1 key from Creos, not the M-Bus key) frames are dropped, not stored"
            );
        }
    } else if matches!(e, EncryptedError::Undecodable(_)) && !s.totals.undecodable_logged.swap(true, Relaxed) {
        tracing::error!(
            device = %s.device, error = %e,
            "the meter's frames decrypt, but hold data this reader cannot decode; frames are dropped \
             (please report the meter and operator, see docs/devices/dsmr.md)"
        );
    }
}

impl From<String> for Ended {
    fn from(reason: String) -> Self {
        Ended { reason, cause: None }
    }
}

#[cfg(test)]
mod tests;
