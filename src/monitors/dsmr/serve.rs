//! `serve:` — the P1 port shared with other readers (Home Assistant's DSMR
//! integration, dsmr-reader, evcc), as ser2net shares a cable: every byte the meter
//! sends, exactly as received (plain or encrypted), goes to every TCP client.
//!
//! The link's reader task hands each chunk it reads to the [`Fanout`], which never
//! waits on a client: each client has its own queue, bounded in bytes and written
//! out by its own task, and a client whose queue would overflow is disconnected.
//! So a stuck client costs neither the meter's reading nor the other clients
//! anything. A client that joins is served from the next frame the link's framer
//! completes (plain telegrams: from the next `/` after it), so it never starts with
//! half a telegram; the same after the meter's link is reopened.
//!
//! The listener belongs to the monitor ([`Serve`]): it is opened by the first read
//! and closed, with every client, when the monitor is dropped (the device removed
//! or its file changed).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle};
use tokio::time::Instant;

use crate::monitors::{MonitorError, ServiceMetric};
use crate::reading::DeviceId;

/// Bytes a client may fall behind, beyond what the kernel buffers for its socket,
/// before it is disconnected: over a minute of DSMR 5 telegrams.
pub(super) const CLIENT_BACKLOG: usize = 64 * 1024;
/// Clients served at once; more are refused (each holds a socket and a task).
const MAX_CLIENTS: usize = 64;
/// A port that could not be bound is tried again this often (quietly, after the
/// first error).
const BIND_RETRY: Duration = Duration::from_secs(30);
/// The kernel's send buffer of each client's socket (Linux doubles it). Left to
/// itself it grows to megabytes on a client that does not read, hiding it from
/// the backlog check for an hour of telegrams; a P1 stream needs no throughput.
const SEND_BUFFER: u32 = 16 * 1024;
/// How long the first bind waits for a port in use: after a reload, the previous
/// listener of this same device may still be closing.
const BIND_GRACE: Duration = Duration::from_secs(2);

/// A chunk as read from the meter, shared by the clients it goes to, and where
/// in it a client's bytes start.
type Chunk = (Arc<[u8]>, usize);

/// Where a client is in the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Start {
    /// Waiting for the end of a frame (it joined, or the meter's link reopened).
    Boundary,
    /// A frame ended; waiting for the `/` that starts the next plain telegram.
    Slash,
    /// Gets every byte.
    Live,
}

#[derive(Debug)]
struct Client {
    addr: SocketAddr,
    queue: mpsc::UnboundedSender<Chunk>,
    /// Bytes queued for the client and not yet written to its socket.
    queued: Arc<AtomicUsize>,
    start: Start,
    writer: AbortHandle,
}

impl Drop for Client {
    fn drop(&mut self) {
        // Closes the socket, even when the writer is blocked on a client that
        // does not read.
        self.writer.abort();
    }
}

/// The clients of one device's re-served stream.
#[derive(Debug)]
pub(super) struct Fanout {
    device: DeviceId,
    /// Plain telegrams are served from their `/`; encrypted frames from the end of
    /// the frame before.
    plain: bool,
    backlog: usize,
    clients: Mutex<Vec<Client>>,
    dropped: AtomicU64,
}

impl Fanout {
    pub(super) fn new(device: DeviceId, plain: bool, backlog: usize) -> Arc<Fanout> {
        Arc::new(Fanout {
            device,
            plain,
            backlog,
            clients: Mutex::new(Vec::new()),
            dropped: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Client>> {
        // A panic while holding this lock leaves at worst a client list to prune.
        self.clients.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Whether a client waits for a frame boundary: the reader then finds where
    /// the next frame ends in the chunk it reads.
    pub(super) fn waiting(&self) -> bool {
        self.lock().iter().any(|c| c.start == Start::Boundary)
    }

    /// A (re)opened link starts anywhere in a telegram: every client waits for
    /// the next boundary again.
    pub(super) fn link_opened(&self) {
        for client in self.lock().iter_mut() {
            client.start = Start::Boundary;
        }
    }

    /// Queues `chunk`, as read from the meter, for every client, from where each
    /// one starts. `boundary`: the offset in `chunk` after the first frame the
    /// framer completed in it, if it completed one (only looked for while a client
    /// waits for one).
    pub(super) fn forward(&self, chunk: &[u8], boundary: Option<usize>) {
        let mut clients = self.lock();
        if clients.is_empty() {
            return;
        }
        let shared: Arc<[u8]> = Arc::from(chunk);
        clients.retain_mut(|client| {
            if client.queue.is_closed() {
                return false;
            }
            let from = match client.start {
                Start::Live => Some(0),
                Start::Boundary if !self.plain => boundary,
                Start::Boundary => boundary.and_then(|b| {
                    client.start = Start::Slash;
                    slash_at_or_after(chunk, b)
                }),
                Start::Slash => slash_at_or_after(chunk, 0),
            };
            let Some(from) = from.filter(|&f| f <= chunk.len()) else {
                return true;
            };
            client.start = Start::Live;
            let len = chunk.len() - from;
            if len == 0 {
                return true;
            }
            if client.queued.load(Ordering::Relaxed) + len > self.backlog {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    device = %self.device, client = %client.addr, backlog_bytes = self.backlog,
                    "P1 serve client too slow (fell behind by more than the backlog): disconnected"
                );
                return false;
            }
            client.queued.fetch_add(len, Ordering::Relaxed);
            client.queue.send((shared.clone(), from)).is_ok()
        });
    }

    /// Serves a newly accepted client.
    fn add(&self, socket: TcpStream, addr: SocketAddr) {
        let mut clients = self.lock();
        clients.retain(|c| !c.queue.is_closed());
        if clients.len() >= MAX_CLIENTS {
            tracing::warn!(device = %self.device, client = %addr, max = MAX_CLIENTS, "P1 serve: too many clients, connection refused");
            return;
        }
        // The stream is pushed as it comes, in small pieces: no Nagle delay.
        let _ = socket.set_nodelay(true);
        let (queue, receiver) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let writer = tokio::spawn(write_out(self.device.clone(), addr, socket, receiver, queued.clone()));
        tracing::info!(device = %self.device, client = %addr, "P1 serve client connected");
        clients.push(Client {
            addr,
            queue,
            queued,
            start: Start::Boundary,
            writer: writer.abort_handle(),
        });
    }

    /// Clients connected now.
    pub(super) fn clients(&self) -> usize {
        let mut clients = self.lock();
        clients.retain(|c| !c.queue.is_closed());
        clients.len()
    }

    /// Clients disconnected for falling behind, since the device started.
    pub(super) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// Disconnects every client.
    fn close(&self) {
        self.lock().clear();
    }
}

/// The first `/` in `chunk` from `from` on.
fn slash_at_or_after(chunk: &[u8], from: usize) -> Option<usize> {
    let rest = chunk.get(from..)?;
    memchr::memchr(b'/', rest).map(|i| from + i)
}

/// Writes a client's queue to its socket until either side closes.
async fn write_out(
    device: DeviceId,
    addr: SocketAddr,
    mut socket: TcpStream,
    mut queue: mpsc::UnboundedReceiver<Chunk>,
    queued: Arc<AtomicUsize>,
) {
    let (mut incoming, mut outgoing) = socket.split();
    let mut ignored = [0u8; 512];
    let reason = loop {
        tokio::select! {
            chunk = queue.recv() => {
                let Some((chunk, from)) = chunk else { break "closed by mesura".to_owned() };
                let bytes = chunk.get(from..).unwrap_or_default();
                if let Err(e) = outgoing.write_all(bytes).await {
                    break format!("write failed: {e}");
                }
                queued.fetch_sub(bytes.len(), Ordering::Relaxed);
            }
            // The P1 port is one-way: what a client sends is read and ignored,
            // which is also how its leaving is seen while the meter is quiet.
            read = incoming.read(&mut ignored) => match read {
                Ok(0) => break "closed by the client".to_owned(),
                Err(e) => break format!("read failed: {e}"),
                Ok(_) => {}
            },
        }
    };
    tracing::info!(device = %device, client = %addr, reason = %reason, "P1 serve client disconnected");
}

/// A listener whose accepted sockets get [`SEND_BUFFER`] (Linux hands a
/// listener's buffer sizes down to the sockets it accepts).
fn open_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = match addr {
        SocketAddr::V4(_) => tokio::net::TcpSocket::new_v4()?,
        SocketAddr::V6(_) => tokio::net::TcpSocket::new_v6()?,
    };
    // As std's and tokio's own `bind`: a restart need not wait out TIME_WAIT.
    socket.set_reuseaddr(true)?;
    socket.set_send_buffer_size(SEND_BUFFER)?;
    socket.bind(addr)?;
    socket.listen(128)
}

async fn accept(listener: TcpListener, fanout: Arc<Fanout>) {
    loop {
        match listener.accept().await {
            Ok((socket, addr)) => fanout.add(socket, addr),
            Err(e) => {
                // Out of file descriptors and the like: wait rather than spin.
                tracing::warn!(device = %fanout.device, error = %e, "P1 serve: accept failed");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    }
}

/// A device's `serve:` listener and its clients. Dropping it closes the port and
/// disconnects the clients.
#[derive(Debug)]
pub(super) struct Serve {
    addr: SocketAddr,
    fanout: Arc<Fanout>,
    listener: Option<JoinHandle<()>>,
    /// Set once binding failed: when to try again.
    retry_at: Option<Instant>,
}

impl Serve {
    pub(super) fn new(addr: SocketAddr, fanout: Arc<Fanout>) -> Serve {
        Serve {
            addr,
            fanout,
            listener: None,
            retry_at: None,
        }
    }

    pub(super) fn fanout(&self) -> &Arc<Fanout> {
        &self.fanout
    }

    /// Opens the port if it is not open yet. A port that cannot be bound is an
    /// error once (the device's error in /health; the meter is read on all the
    /// same) and is then retried quietly every [`BIND_RETRY`].
    pub(super) async fn listen(&mut self) -> Result<(), MonitorError> {
        if self.listener.is_some() || self.retry_at.is_some_and(|t| Instant::now() < t) {
            return Ok(());
        }
        let first = self.retry_at.is_none();
        let grace = if first { BIND_GRACE } else { Duration::ZERO };
        match bind(self.addr, grace).await {
            Ok(listener) => {
                tracing::info!(device = %self.fanout.device, listen = %self.addr, "serving the raw P1 stream");
                self.listener = Some(tokio::spawn(accept(listener, self.fanout.clone())));
                Ok(())
            }
            Err(e) => {
                self.retry_at = Some(Instant::now() + BIND_RETRY);
                if !first {
                    tracing::debug!(device = %self.fanout.device, listen = %self.addr, error = %e, "serve: still cannot listen");
                    return Ok(());
                }
                let hint = match e.kind() {
                    std::io::ErrorKind::AddrInUse => " (another program has this port: ser2net?)",
                    std::io::ErrorKind::AddrNotAvailable => " (no such address on this machine)",
                    std::io::ErrorKind::PermissionDenied => " (ports below 1024 need privileges)",
                    _ => "",
                };
                Err(MonitorError::config(format!(
                    "serve: cannot listen on {}: {e}{hint}; the meter is still read, the port is tried again every {}",
                    self.addr,
                    humantime::format_duration(BIND_RETRY)
                ))
                .caused_by(e))
            }
        }
    }

    pub(super) fn metrics(&self) -> Vec<ServiceMetric> {
        vec![
            ServiceMetric {
                name: "mesura_p1_serve_clients",
                kind: "gauge",
                help: "Clients reading the P1 stream a dsmr device re-serves (`serve:`).",
                value: self.fanout.clients() as f64,
            },
            ServiceMetric {
                name: "mesura_p1_serve_dropped_clients_total",
                kind: "counter",
                help: "Clients of a re-served P1 stream disconnected for not keeping up.",
                value: self.fanout.dropped() as f64,
            },
        ]
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        if let Some(listener) = &self.listener {
            listener.abort();
        }
        self.fanout.close();
    }
}

/// Binds `addr`; a port in use is tried again for up to `grace`.
async fn bind(addr: SocketAddr, grace: Duration) -> std::io::Result<TcpListener> {
    let deadline = Instant::now() + grace;
    loop {
        match open_listener(addr) {
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            result => return result,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitors::dsmr::link::{Reader, ReaderSettings};
    use crate::protocols::dlms::Keys;
    use tokio::io::AsyncWriteExt;

    /// A client of `fanout`: the test's end of the connection.
    async fn client(fanout: &Fanout, receive_buffer: Option<u32>) -> TcpStream {
        let listener = open_listener("127.0.0.1:0".parse().unwrap()).unwrap();
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        if let Some(size) = receive_buffer {
            socket.set_recv_buffer_size(size).unwrap();
        }
        let ours = socket.connect(listener.local_addr().unwrap()).await.unwrap();
        let (theirs, addr) = listener.accept().await.unwrap();
        fanout.add(theirs, addr);
        ours
    }

    fn settings(fanout: &Arc<Fanout>, keys: Option<Keys>) -> ReaderSettings {
        ReaderSettings {
            device: Arc::from("p1"),
            target: "test".into(),
            clock: crate::host::clock::system(),
            timeout: Duration::from_secs(5),
            max_telegram_size: 8192,
            keep: 64,
            totals: Default::default(),
            keys,
            serve: Some(fanout.clone()),
        }
    }

    fn telegram(kwh: u32) -> Vec<u8> {
        let mut t =
            format!("/ISK5\\2M550T-1011\r\n\r\n1-0:1.8.1({kwh:06}.000*kWh)\r\n0-0:96.13.0(a/b)\r\n!").into_bytes();
        let crc = crate::protocols::dsmr::crc16_arc(&t);
        t.extend_from_slice(format!("{crc:04X}\r\n").as_bytes());
        t
    }

    async fn read_exactly(client: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut got = vec![0u8; n];
        tokio::time::timeout(Duration::from_secs(10), client.read_exact(&mut got))
            .await
            .expect("the bytes within 10 s")
            .unwrap();
        got
    }

    #[tokio::test]
    async fn a_client_joining_mid_telegram_gets_whole_telegrams_from_the_next_slash() {
        let fanout = Fanout::new(Arc::from("p1"), true, CLIENT_BACKLOG);
        let mut early = client(&fanout, None).await;
        let (mut meter, port) = tokio::io::duplex(1 << 16);
        let reader = Reader::spawn(Box::new(port), settings(&fanout, None));
        let first = telegram(1);
        // The link opens in the middle of a telegram, junk follows the first whole one.
        meter.write_all(&first[20..]).await.unwrap();
        meter.write_all(&telegram(2)).await.unwrap();
        meter.write_all(b"  25803103\r\n\xff").await.unwrap();
        let rest = [telegram(3), telegram(4)].concat();
        meter.write_all(&rest).await.unwrap();
        assert_eq!(read_exactly(&mut early, rest.len()).await, rest);
        // Live now: every byte as the meter sends it, junk included.
        let live = [b"\0".as_slice(), &telegram(5)].concat();
        meter.write_all(&live).await.unwrap();
        assert_eq!(read_exactly(&mut early, live.len()).await, live);
        // Telegrams still reach the monitor.
        let mut read = 0;
        while read < 4 {
            read += reader.next().await.unwrap().0.len();
        }

        // A link that reopens starts anywhere: the client waits for a boundary again.
        drop(reader);
        let (mut meter, port) = tokio::io::duplex(1 << 16);
        let _reader = Reader::spawn(Box::new(port), settings(&fanout, None));
        let sixth = telegram(6);
        meter.write_all(&sixth[30..]).await.unwrap();
        meter.write_all(&[telegram(7), telegram(8)].concat()).await.unwrap();
        // Telegram 7 completes the first frame after the reopening.
        let eighth = telegram(8);
        assert_eq!(read_exactly(&mut early, eighth.len()).await, eighth);
        assert_eq!(fanout.clients(), 1);
    }

    #[tokio::test]
    async fn an_encrypted_stream_is_served_from_the_frame_after_the_first_complete_one() {
        let keys = Keys::from_hex(&"5A".repeat(16), None).unwrap();
        let frame = |counter: u32| {
            let plain = telegram(counter);
            crate::protocols::dlms::cipher::encrypt(&keys, *b"SAG00001", 0x30, counter, &plain)
        };
        let fanout = Fanout::new(Arc::from("p1"), false, CLIENT_BACKLOG);
        let mut c = client(&fanout, None).await;
        let (mut meter, port) = tokio::io::duplex(1 << 16);
        let reader = Reader::spawn(Box::new(port), settings(&fanout, Some(keys.clone())));
        let first = frame(1);
        meter.write_all(&first[7..]).await.unwrap();
        meter.write_all(&frame(2)).await.unwrap();
        let rest = [frame(3), frame(4)].concat();
        meter.write_all(&rest).await.unwrap();
        assert_eq!(read_exactly(&mut c, rest.len()).await, rest);
        let (received, _) = reader.next().await.unwrap();
        assert!(!received.is_empty(), "the monitor decrypts them all the same");
    }

    /// A client that does not read is disconnected once it falls `backlog` bytes
    /// behind; the one that reads gets every byte, and the fan-out never waits.
    #[tokio::test]
    async fn a_stuck_client_is_dropped_and_the_reading_one_gets_everything() {
        let fanout = Fanout::new(Arc::from("p1"), true, 8 * 1024);
        let mut reading = client(&fanout, None).await;
        let _stuck = client(&fanout, Some(1024)).await;
        let chunk = telegram(1);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while let Ok(n) = reading.read(&mut buf).await {
                if n == 0 {
                    break;
                }
                got.extend_from_slice(&buf[..n]);
            }
            got
        });
        let mut sent = 0;
        let deadline = Instant::now() + Duration::from_secs(20);
        while fanout.dropped() == 0 {
            assert!(Instant::now() < deadline, "the stuck client was never dropped");
            fanout.forward(&chunk, Some(0));
            sent += 1;
            // Pace like a meter: wait until the reading client's queue is written out.
            while fanout
                .lock()
                .first()
                .is_some_and(|c| c.queued.load(Ordering::Relaxed) > 0)
            {
                tokio::task::yield_now().await;
            }
        }
        assert_eq!(fanout.clients(), 1);
        for _ in 0..3 {
            fanout.forward(&chunk, None);
            sent += 1;
        }
        while fanout
            .lock()
            .first()
            .is_some_and(|c| c.queued.load(Ordering::Relaxed) > 0)
        {
            tokio::task::yield_now().await;
        }
        fanout.close();
        let got = reader.await.unwrap();
        assert_eq!(got.len(), sent * chunk.len());
        assert!(
            sent < 400,
            "dropped within kernel buffers and backlog, not megabytes: {sent} telegrams"
        );
        assert!(got.chunks(chunk.len()).all(|c| c == chunk));
    }

    #[test]
    fn serve_is_an_address_and_check_warns_off_loopback() {
        use crate::monitors::dsmr::DsmrConfig;
        use crate::monitors::DeviceType;
        let parse = |yaml: &str| serde_yaml_ng::from_str::<DsmrConfig>(&format!("port: /dev/ttyUSB0\n{yaml}"));
        let local = parse("serve: 127.0.0.1:2001\n").unwrap();
        assert_eq!(local.serve, Some(SocketAddr::from(([127, 0, 0, 1], 2001))));
        assert!(local.warnings().is_empty());
        assert_eq!(local.serve, parse("serve: localhost:2001\n").unwrap().serve);
        let open = parse("serve: 0.0.0.0:2001\n").unwrap();
        let warnings = open.warnings();
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].0, "serve");
        assert!(warnings[0].1.contains("reachable from the network"), "{warnings:?}");
        assert!(parse("serve: 2001\n").is_err(), "an address, not a port alone");
        let e = crate::config::parse_device(
            std::path::Path::new("config.d/p1.yaml"),
            "type: dsmr\nport: /dev/ttyUSB0\nserve: 127.0.0.1:0\n",
            &[],
        )
        .expect_err("port 0")
        .to_string();
        assert!(e.contains("serve") && e.contains("not 0"), "{e}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_port_in_use_is_one_error_and_retried_and_dropping_serve_frees_it() {
        let blocker = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = blocker.local_addr().unwrap();
        let mut serve = Serve::new(addr, Fanout::new(Arc::from("p1"), true, CLIENT_BACKLOG));
        let e = serve.listen().await.unwrap_err();
        assert!(
            e.to_string().contains(&format!("serve: cannot listen on {addr}")),
            "{e}"
        );
        assert!(e.to_string().contains("the meter is still read"), "{e}");
        assert!(serve.listen().await.is_ok(), "reported once, then retried quietly");
        assert!(serve.listener.is_none());
        drop(blocker);
        tokio::time::advance(BIND_RETRY).await;
        serve.listen().await.unwrap();
        assert!(serve.listener.is_some());
        drop(serve);
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::net::TcpListener::bind(addr).is_err() {
            assert!(Instant::now() < deadline, "the port stays bound after the device went");
            tokio::task::yield_now().await;
        }
    }
}
