//! `GET /api/events` read with a raw HTTP client: the `retry:` line and `hello`,
//! a reading that the SQLite backend stores arrives as a `reading` event, device
//! state changes as `device` events, and `api.max_event_streams` answers 503.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::support::Setup;

const BASE: &str =
    "backends:\n  sqlite:\n    flush_interval: 100ms\nwatch:\n  enabled: false\napi:\n  listen: 127.0.0.1:0\n";

/// An open event stream: the status, the headers, and the events as they come.
struct EventStream {
    reader: BufReader<TcpStream>,
    /// Decoded body text not yet split into events.
    text: String,
    chunked: bool,
}

/// Opens `/api/events`; for a refusal, returns the status and the body.
async fn open(addr: SocketAddr) -> Result<EventStream, (u16, String)> {
    open_path(addr, "/api/events").await
}

async fn open_path(addr: SocketAddr, path: &str) -> Result<EventStream, (u16, String)> {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let mut reader = BufReader::new(stream);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(10), reader.read_line(&mut line))
            .await
            .expect("headers within 10 s")
            .expect("read");
        assert!(n > 0, "connection closed in the headers: {head}");
        if line == "\r\n" {
            break;
        }
        head.push_str(&line);
    }
    let code: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let lower = head.to_ascii_lowercase();
    if code != 200 {
        let length = lower
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse::<usize>().ok())
            .unwrap_or(0);
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await.expect("body");
        return Err((code, String::from_utf8_lossy(&body).into_owned()));
    }
    assert!(lower.contains("content-type: text/event-stream"), "{head}");
    Ok(EventStream {
        reader,
        text: String::new(),
        chunked: lower.contains("transfer-encoding: chunked"),
    })
}

impl EventStream {
    /// More body text (one chunk).
    async fn more(&mut self) {
        if self.chunked {
            let mut size = String::new();
            self.reader.read_line(&mut size).await.expect("chunk size");
            let size = usize::from_str_radix(size.trim(), 16).expect("a chunk size");
            assert!(size > 0, "the stream ended");
            let mut chunk = vec![0; size + 2];
            self.reader.read_exact(&mut chunk).await.expect("chunk");
            self.text.push_str(&String::from_utf8_lossy(&chunk[..size]));
        } else {
            let mut line = String::new();
            let n = self.reader.read_line(&mut line).await.expect("read");
            assert!(n > 0, "the stream ended");
            self.text.push_str(&line);
        }
    }

    /// The next block (an event, or a comment), as its raw lines.
    async fn next_block(&mut self, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(end) = self.text.find("\n\n") {
                let block = self.text[..end].to_owned();
                self.text.drain(..end + 2);
                return block;
            }
            tokio::time::timeout_at(deadline, self.more())
                .await
                .expect("an event within the limit");
        }
    }

    /// The next event named `name` (others skipped): its data as JSON.
    async fn next(&mut self, name: &str, limit: Duration) -> serde_json::Value {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no `{name}` event within {limit:?}");
            let block = self.next_block(left).await;
            let event = block.lines().find_map(|l| l.strip_prefix("event: "));
            let data: String = block.lines().filter_map(|l| l.strip_prefix("data: ")).collect();
            if event == Some(name) {
                return serde_json::from_str(&data).unwrap_or_else(|e| panic!("{e}: {block}"));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_reading_arrives_as_an_event() {
    let setup = Setup::new(BASE);
    setup.device("meter", "type: simulated\nprofile: electricity\npoll_interval: 1s\n");
    let daemon = setup.start().await;
    let addr = daemon.api_addr().expect("the API runs");
    let mut events = open(addr).await.expect("a stream");
    // The stream opens with the browser's reconnect delay and a hello.
    let first = events.next_block(Duration::from_secs(5)).await;
    assert!(first.contains("retry: 3000"), "{first}");
    assert!(first.contains("event: hello"), "{first}");

    let reading = events.next("reading", Duration::from_secs(10)).await;
    assert_eq!(reading["device"], "meter", "{reading}");
    let power = reading["readings"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["metric"] == "power_delivered"))
        .unwrap_or_else(|| panic!("no power_delivered: {reading}"))
        .clone();
    assert_eq!(power["unit"], "W");
    assert!(power["value"].is_number(), "{power}");
    let ts = power["ts"].as_i64().expect("ts");
    // The same reading is stored: its row appears in SQLite with that value.
    let db = setup.db_path();
    let start = Instant::now();
    loop {
        let stored: Option<f64> = rusqlite::Connection::open(&db).ok().and_then(|c| {
            c.query_row("SELECT power_delivered FROM meter WHERE ts = ?1", [ts], |r| r.get(0))
                .ok()
        });
        if let Some(v) = stored {
            assert_eq!(Some(v), power["value"].as_f64());
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the row at {ts} is not stored"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn event_streams_beyond_the_cap_get_503_until_one_closes() {
    let setup = Setup::new(&format!("{BASE}  max_event_streams: 2\n"));
    setup.device("meter", "type: simulated\nprofile: climate\npoll_interval: 1s\n");
    let daemon = setup.start().await;
    let addr = daemon.api_addr().expect("the API runs");
    let mut one = open(addr).await.expect("the first stream");
    let mut two = open(addr).await.expect("the second stream");
    one.next("hello", Duration::from_secs(5)).await;
    two.next("hello", Duration::from_secs(5)).await;
    let Err((code, body)) = open(addr).await else {
        panic!("a third stream was served")
    };
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("api.max_event_streams"), "{body}");
    // Other endpoints still answer.
    let (code, _) = crate::support::api::get(addr, "/api/devices", None).await;
    assert_eq!(code, 200);
    // A page that leaves frees its slot.
    drop(one);
    let start = Instant::now();
    let mut three = loop {
        match open(addr).await {
            Ok(stream) => break stream,
            Err((503, _)) if start.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err((code, body)) => panic!("{code}: {body}"),
        }
    };
    three.next("hello", Duration::from_secs(5)).await;
    // The open ones keep delivering.
    two.next("reading", Duration::from_secs(10)).await;
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_device_that_starts_or_stops_failing_is_a_device_event() {
    let setup = Setup::new(BASE);
    setup.device(
        "flaky",
        "type: simulated\nprofile: climate\npoll_interval: 1s\nfailure_rate: 0.5\nfailure_threshold: 100\n",
    );
    let daemon = setup.start().await;
    let addr = daemon.api_addr().expect("the API runs");
    let mut events = open(addr).await.expect("a stream");
    let (mut failing, mut answering) = (None, None);
    let start = Instant::now();
    while failing.is_none() || answering.is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no device event for both states: failing {failing:?}, answering {answering:?}"
        );
        let device = events.next("device", Duration::from_secs(60)).await;
        assert_eq!(device["id"], "flaky", "{device}");
        if device["consecutive_failures"].as_u64() > Some(0) {
            assert!(device["last_error"].is_string(), "{device}");
            failing = Some(device);
        } else {
            answering = Some(device);
        }
    }
    // The success rate counts both.
    let last = answering.expect("answering");
    let rate = last["success_rate"].as_f64().expect("a success rate");
    assert!(rate > 0.0 && rate < 1.0, "{last}");
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backend_that_starts_failing_is_a_backend_event() {
    // Nothing listens there: every delivery fails.
    let nobody = crate::support::broker::free_port();
    let setup = Setup::new(&format!(
        "backends:\n  sqlite:\n    flush_interval: 100ms\n  uplink:\n    url: http://127.0.0.1:{nobody}/ingest\n    \
         batch_interval: 200ms\n    max_backoff: 1s\n    timeout: 1s\nwatch:\n  enabled: false\napi:\n  listen: 127.0.0.1:0\n"
    ));
    setup.device("meter", "type: simulated\nprofile: electricity\npoll_interval: 1s\n");
    let daemon = setup.start().await;
    let addr = daemon.api_addr().expect("the API runs");
    let mut events = open(addr).await.expect("a stream");
    let backend = events.next("backend", Duration::from_secs(30)).await;
    assert_eq!(backend["name"], "uplink", "{backend}");
    assert_eq!(backend["healthy"], false, "{backend}");
    assert!(backend["last_error"].is_string(), "{backend}");
    daemon.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_token_the_stream_takes_it_in_the_query() {
    let setup = Setup::new(&format!("{BASE}  token: s3cret-token\n"));
    setup.device("meter", "type: simulated\nprofile: climate\npoll_interval: 1s\n");
    let daemon = setup.start().await;
    let addr = daemon.api_addr().expect("the API runs");
    let Err((code, _)) = open(addr).await else {
        panic!("a stream without the token")
    };
    assert_eq!(code, 401);
    let Err((code, _)) = open_path(addr, "/api/events?token=wrong").await else {
        panic!("a stream with a wrong token")
    };
    assert_eq!(code, 401);
    let mut stream = open_path(addr, "/api/events?token=s3cret-token")
        .await
        .expect("a stream with the token");
    stream.next("reading", Duration::from_secs(10)).await;
    // The page and its script stay public.
    let (code, _) = crate::support::api::get(addr, "/assets/uPlot.iife.min.js", None).await;
    assert_eq!(code, 200);
    let (code, _) = crate::support::api::get(addr, "/api/devices?token=s3cret-token", None).await;
    assert_eq!(code, 401, "only the event stream takes the token in the query");
    daemon.shutdown().await;
}
