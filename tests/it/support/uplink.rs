//! A small HTTP/1.1 server for the uplink tests: records every request, answers
//! from a script (then 204), and can be stopped and started again on its port.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

/// One request as received, and the status it was answered with.
#[derive(Debug, Clone)]
pub struct Request {
    pub at: Instant,
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub status: u16,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

/// An answer: status, extra headers, body.
pub type Answer = (u16, Vec<(&'static str, String)>, String);

#[derive(Default)]
struct State {
    requests: Vec<Request>,
    script: VecDeque<Answer>,
}

pub struct Recorder {
    pub port: u16,
    state: Arc<Mutex<State>>,
    task: Option<JoinHandle<()>>,
}

impl Recorder {
    pub async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let mut recorder = Recorder {
            port,
            state: Arc::default(),
            task: None,
        };
        recorder.serve(listener);
        recorder
    }

    /// Answers the next requests with these, in order, before going back to 204.
    pub fn script(&self, answers: Vec<Answer>) {
        self.state.lock().expect("state").script.extend(answers);
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().expect("state").requests.clone()
    }

    /// Closes the port and every open connection: clients get "connection refused".
    pub fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    /// Listens on the same port again.
    pub async fn restart(&mut self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.expect("rebind");
        self.serve(listener);
    }

    fn serve(&mut self, listener: TcpListener) {
        let state = self.state.clone();
        self.task = Some(tokio::spawn(async move {
            // Dropped with this task on stop(): every connection closes with it.
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    Ok((stream, _)) = listener.accept() => { connections.spawn(connection(stream, state.clone())); }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
        }));
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn connection(mut stream: TcpStream, state: Arc<Mutex<State>>) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let mut lines = head.split("\r\n");
        let path = lines
            .next()
            .and_then(|l| l.split(' ').nth(1))
            .unwrap_or_default()
            .to_owned();
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
            .collect();
        let length: usize = headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        while buf.len() < head_end + length {
            let mut chunk = [0u8; 8192];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        let body = buf[head_end..head_end + length].to_vec();
        buf.drain(..head_end + length);
        let (status, extra, answer) = {
            let mut state = state.lock().expect("state");
            let answer = state.script.pop_front().unwrap_or((204, Vec::new(), String::new()));
            state.requests.push(Request {
                at: Instant::now(),
                path,
                headers,
                body,
                status: answer.0,
            });
            answer
        };
        let mut response = format!("HTTP/1.1 {status} X\r\ncontent-length: {}\r\n", answer.len());
        for (k, v) in extra {
            response.push_str(&format!("{k}: {v}\r\n"));
        }
        response.push_str("\r\n");
        response.push_str(&answer);
        if stream.write_all(response.as_bytes()).await.is_err() {
            return;
        }
    }
}

/// Polls `check` until it holds or `limit` passes: a bounded wait, never a fixed sleep.
pub async fn until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}
