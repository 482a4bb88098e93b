//! Headless Chromium driven over the DevTools protocol (CDP): a small blocking
//! WebSocket client (RFC 6455, text frames only) on std's `TcpStream`, enough to
//! load a page, evaluate scripts, watch the console and take screenshots. No
//! WebSocket crate is in the tree, and the protocol's client side is a page of code.
//!
//! Chromium is started with `--remote-debugging-port=0` and a fresh profile; the
//! port it picked is read from `DevToolsActivePort` in that profile.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// Where scripts/test.sh installs Chromium (Debian's package), or another build.
pub fn chromium() -> PathBuf {
    [
        "/usr/bin/chromium",
        "/usr/bin/chromium-browser",
        "/usr/bin/google-chrome",
    ]
    .into_iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
    .expect("chromium is installed by scripts/test.sh (Debian package chromium)")
}

/// The flags every headless run in the suite uses.
pub const FLAGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// A running Chromium; killed when dropped.
pub struct Browser {
    child: Child,
    port: u16,
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Browser {
    /// Starts Chromium on `about:blank` with the profile `profile` (a fresh directory).
    pub fn launch(profile: &Path) -> Browser {
        std::fs::create_dir_all(profile).expect("profile dir");
        let child = Command::new(chromium())
            .args(FLAGS)
            .arg("--remote-debugging-port=0")
            .arg("--remote-allow-origins=*")
            .arg(format!("--user-data-dir={}", profile.display()))
            .arg("--window-size=1280,800")
            .arg("about:blank")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromium");
        let mut browser = Browser { child, port: 0 };
        let file = profile.join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(port) = std::fs::read_to_string(&file)
                .ok()
                .and_then(|t| t.lines().next().and_then(|l| l.trim().parse::<u16>().ok()))
            {
                browser.port = port;
                break;
            }
            if let Ok(Some(status)) = browser.child.try_wait() {
                panic!("chromium exited at start: {status}");
            }
            assert!(Instant::now() < deadline, "no {} within 30 s", file.display());
            std::thread::sleep(Duration::from_millis(20));
        }
        browser
    }

    /// The first page (tab), attached.
    pub fn page(&self) -> Page {
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = loop {
            let list = http_get(self.port, "/json/list");
            let found = serde_json::from_str::<Value>(&list).ok().and_then(|v| {
                v.as_array()?
                    .iter()
                    .find(|t| t["type"] == "page")
                    .and_then(|t| t["webSocketDebuggerUrl"].as_str().map(str::to_owned))
            });
            if let Some(url) = found {
                break url;
            }
            assert!(Instant::now() < deadline, "no page target: {list}");
            std::thread::sleep(Duration::from_millis(20));
        };
        let path = url
            .split_once("://")
            .and_then(|(_, rest)| rest.split_once('/'))
            .map(|(_, path)| format!("/{path}"))
            .expect("a ws:// URL");
        let mut page = Page {
            ws: WebSocket::connect(self.port, &path),
            next_id: 1,
            events: Vec::new(),
        };
        for domain in ["Page.enable", "Runtime.enable", "Log.enable"] {
            page.call(domain, json!({}));
        }
        page
    }
}

/// A GET to DevTools' HTTP side, which may keep the connection open: the body is
/// read by its `Content-Length`.
fn http_get(port: u16, path: &str) -> String {
    let Ok(mut stream) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(10)));
    let request = format!("GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return String::new();
    }
    let mut reader = BufReader::new(stream);
    let mut length = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return String::new();
        }
        if line == "\r\n" {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                length = value.trim().parse::<usize>().ok();
            }
        }
    }
    let mut body = vec![0u8; length.unwrap_or(0)];
    if reader.read_exact(&mut body).is_err() {
        return String::new();
    }
    String::from_utf8_lossy(&body).into_owned()
}

/// One page over CDP. Events that arrive while waiting for answers are kept.
pub struct Page {
    ws: WebSocket,
    next_id: u64,
    /// Every event seen so far (`{"method", "params"}`).
    pub events: Vec<Value>,
}

impl Page {
    /// Calls `method` and returns its `result`; a protocol error fails the test.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        self.ws
            .send(&json!({"id": id, "method": method, "params": params}).to_string());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no answer to {method} within 60 s");
            let Some(text) = self.ws.receive(left) else { continue };
            let message: Value = serde_json::from_str(&text).expect("CDP sends JSON");
            if message["id"] == id {
                assert!(message.get("error").is_none(), "{method}: {message}");
                return message["result"].clone();
            }
            if message.get("method").is_some() {
                self.events.push(message);
            }
        }
    }

    /// Reads events for up to `wait`.
    pub fn pump(&mut self, wait: Duration) {
        let deadline = Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            if let Some(text) = self.ws.receive(left) {
                if let Ok(message) = serde_json::from_str::<Value>(&text) {
                    if message.get("method").is_some() {
                        self.events.push(message);
                    }
                }
            }
        }
    }

    /// The value of a JavaScript expression (promises awaited).
    pub fn eval(&mut self, expression: &str) -> Value {
        let result = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(
            result.get("exceptionDetails").is_none(),
            "{expression}: {}",
            result["exceptionDetails"]
        );
        result["result"]["value"].clone()
    }

    /// Polls `expression` until it is truthy (then returns its value), reading
    /// events in between; fails after `limit`.
    pub fn wait_for(&mut self, limit: Duration, expression: &str) -> Value {
        let deadline = Instant::now() + limit;
        loop {
            let value = self.eval(expression);
            let truthy = match &value {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return value;
            }
            assert!(Instant::now() < deadline, "timed out waiting for `{expression}`");
            self.pump(Duration::from_millis(20));
        }
    }

    pub fn navigate(&mut self, url: &str) {
        self.call("Page.navigate", json!({"url": url}));
    }

    /// The page's DOM as HTML.
    pub fn html(&mut self) -> String {
        self.eval("document.documentElement.outerHTML")
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }

    /// Sets the viewport (CSS pixels; narrower than 500 as a phone).
    pub fn viewport(&mut self, width: u32, height: u32) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 500}),
        );
    }

    /// A PNG of the viewport.
    pub fn screenshot(&mut self) -> Vec<u8> {
        let shot = self.call("Page.captureScreenshot", json!({"format": "png"}));
        base64_decode(shot["data"].as_str().expect("PNG data"))
    }

    /// Console errors, uncaught exceptions and error log entries seen so far
    /// (network failures included: a 404 is an error too).
    pub fn errors(&self) -> Vec<String> {
        self.events
            .iter()
            .filter_map(|e| {
                let p = &e["params"];
                match e["method"].as_str()? {
                    "Runtime.consoleAPICalled" if p["type"] == "error" || p["type"] == "assert" => {
                        Some(format!("console.{}: {}", p["type"], p["args"]))
                    }
                    "Runtime.exceptionThrown" => Some(format!("exception: {}", p["exceptionDetails"])),
                    "Log.entryAdded" if p["entry"]["level"] == "error" => Some(format!(
                        "log ({}): {} {}",
                        p["entry"]["source"], p["entry"]["text"], p["entry"]["url"]
                    )),
                    _ => None,
                }
            })
            .collect()
    }
}

/// The client side of a WebSocket: masked text frames out, frames in.
struct WebSocket {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl WebSocket {
    fn connect(port: u16, path: &str) -> WebSocket {
        let mut writer = TcpStream::connect(("127.0.0.1", port)).expect("connect to DevTools");
        writer.set_nodelay(true).expect("nodelay");
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Key: bWVzdXJhLWNkcC10ZXN0IQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        writer.write_all(request.as_bytes()).expect("handshake");
        let mut reader = BufReader::new(writer.try_clone().expect("clone"));
        let mut status = String::new();
        reader.read_line(&mut status).expect("handshake answer");
        assert!(status.contains(" 101 "), "no WebSocket upgrade: {status}");
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).expect("handshake headers");
            if line == "\r\n" || line.is_empty() {
                break;
            }
        }
        WebSocket { reader, writer }
    }

    fn send(&mut self, text: &str) {
        let payload = text.as_bytes();
        let mut frame = vec![0x81];
        match payload.len() {
            n if n < 126 => frame.push(0x80 | n as u8),
            n if n <= 0xFFFF => {
                frame.push(0x80 | 126);
                frame.extend_from_slice(&(n as u16).to_be_bytes());
            }
            n => {
                frame.push(0x80 | 127);
                frame.extend_from_slice(&(n as u64).to_be_bytes());
            }
        }
        let mask = fastrand::u32(..).to_be_bytes();
        frame.extend_from_slice(&mask);
        frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        self.writer.write_all(&frame).expect("send to DevTools");
    }

    /// The next text message, or `None` when none began within `wait`.
    fn receive(&mut self, wait: Duration) -> Option<String> {
        let mut message = Vec::new();
        loop {
            let stream = self.reader.get_ref();
            stream
                .set_read_timeout(Some(wait.max(Duration::from_millis(1))))
                .expect("timeout");
            let mut head = [0u8; 2];
            if self.reader.buffer().is_empty() {
                // Only a frame's first byte may time out: after it, wait for the rest.
                match self.reader.read(&mut head[..1]) {
                    Ok(1) => {}
                    Ok(_) => panic!("DevTools closed the connection"),
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock || e.kind() == std::io::ErrorKind::TimedOut =>
                    {
                        return None
                    }
                    Err(e) => panic!("DevTools: {e}"),
                }
            } else {
                self.reader.read_exact(&mut head[..1]).expect("frame");
            }
            self.reader
                .get_ref()
                .set_read_timeout(Some(Duration::from_secs(30)))
                .expect("timeout");
            self.reader.read_exact(&mut head[1..]).expect("frame");
            let (fin, opcode) = (head[0] & 0x80 != 0, head[0] & 0x0F);
            let len = match head[1] & 0x7F {
                126 => {
                    let mut b = [0u8; 2];
                    self.reader.read_exact(&mut b).expect("length");
                    u16::from_be_bytes(b) as usize
                }
                127 => {
                    let mut b = [0u8; 8];
                    self.reader.read_exact(&mut b).expect("length");
                    u64::from_be_bytes(b) as usize
                }
                n => n as usize,
            };
            let mut payload = vec![0u8; len];
            self.reader.read_exact(&mut payload).expect("payload");
            match opcode {
                0x0..=0x2 => message.extend_from_slice(&payload),
                0x8 => panic!("DevTools closed the WebSocket"),
                0x9 => {
                    // Ping: answer with the same payload (a masked pong).
                    let mask = [1u8, 2, 3, 4];
                    let mut frame = vec![0x8A, 0x80 | payload.len() as u8];
                    frame.extend_from_slice(&mask);
                    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
                    self.writer.write_all(&frame).expect("pong");
                    continue;
                }
                _ => continue,
            }
            if fin {
                return Some(String::from_utf8(message).expect("CDP sends UTF-8"));
            }
        }
    }
}

fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let clean: Vec<u8> = text
        .bytes()
        .filter(|&c| c != b'=' && !c.is_ascii_whitespace())
        .collect();
    let mut out = Vec::with_capacity(clean.len() * 3 / 4);
    for chunk in clean.chunks(4) {
        let mut n = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            n |= value(c) << (18 - 6 * i);
        }
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

/// A PNG's pixels as RGBA (8-bit RGB or RGBA, non-interlaced: what Chromium writes).
pub fn png_pixels(png: &[u8]) -> (u32, u32, Vec<[u8; 4]>) {
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "not a PNG");
    let (mut width, mut height, mut channels) = (0u32, 0u32, 0usize);
    let mut idat = Vec::new();
    let mut at = 8;
    while at + 8 <= png.len() {
        let len = u32::from_be_bytes(png[at..at + 4].try_into().expect("4 bytes")) as usize;
        let kind = &png[at + 4..at + 8];
        let data = &png[at + 8..at + 8 + len];
        match kind {
            b"IHDR" => {
                width = u32::from_be_bytes(data[0..4].try_into().expect("4 bytes"));
                height = u32::from_be_bytes(data[4..8].try_into().expect("4 bytes"));
                assert_eq!(data[8], 8, "8-bit PNG expected");
                assert_eq!(data[12], 0, "non-interlaced PNG expected");
                channels = match data[9] {
                    2 => 3,
                    6 => 4,
                    other => panic!("PNG colour type {other}"),
                };
            }
            b"IDAT" => idat.extend_from_slice(data),
            _ => {}
        }
        at += 12 + len;
    }
    let mut raw = Vec::new();
    flate2::read::ZlibDecoder::new(&idat[..])
        .read_to_end(&mut raw)
        .expect("inflate");
    let stride = width as usize * channels;
    let mut previous = vec![0u8; stride];
    let mut pixels = Vec::with_capacity(width as usize * height as usize);
    for row in raw.chunks(stride + 1).take(height as usize) {
        let (filter, line) = (row[0], &row[1..]);
        let mut out = vec![0u8; stride];
        for i in 0..stride {
            let a = if i >= channels { out[i - channels] } else { 0 };
            let b = previous[i];
            let c = if i >= channels { previous[i - channels] } else { 0 };
            let predicted = match filter {
                0 => 0,
                1 => a,
                2 => b,
                3 => ((u16::from(a) + u16::from(b)) / 2) as u8,
                4 => {
                    let p = i16::from(a) + i16::from(b) - i16::from(c);
                    let (pa, pb, pc) = (
                        (p - i16::from(a)).abs(),
                        (p - i16::from(b)).abs(),
                        (p - i16::from(c)).abs(),
                    );
                    if pa <= pb && pa <= pc {
                        a
                    } else if pb <= pc {
                        b
                    } else {
                        c
                    }
                }
                other => panic!("PNG filter {other}"),
            };
            out[i] = line[i].wrapping_add(predicted);
        }
        for px in out.chunks(channels) {
            pixels.push([px[0], px[1], px[2], if channels == 4 { px[3] } else { 255 }]);
        }
        previous = out;
    }
    (width, height, pixels)
}
