//! pymodbus peers for the Modbus tests: a server serving a register image and
//! a client playing the Nea Smart base station (tests/peers/*.py).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mesura::config::Config;
use mesura::daemon::live::DeviceStatus;
use mesura::daemon::Daemon;

use super::{no_env, Setup};

/// How long the Modbus tests wait for a condition.
pub const LIMIT: Duration = Duration::from_secs(60);

/// Waits for `check` (every 50 ms), failing after `LIMIT`.
pub async fn wait_for(what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < LIMIT, "timed out after {LIMIT:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn status(daemon: &Daemon, id: &str) -> DeviceStatus {
    daemon.status().devices()[id].clone()
}

/// The daemon on `setup`'s config, which must load without errors.
pub async fn start(setup: &Setup) -> Daemon {
    let config = Config::load(&setup.config_path(), &no_env).expect("config");
    assert!(config.devices.errors.is_empty(), "{:?}", config.devices.errors);
    Daemon::start(config, mesura::host::clock::system())
        .await
        .expect("start")
}

/// The registers of pysunspec2's mock SunSpec device (SunS, model 1, model 126,
/// the end marker), from 40000 (tests/fixtures/modbus).
pub fn pysunspec2_mock_words() -> Vec<u16> {
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/fixtures/modbus/sunspec_register_image_pysunspec2_mock.json"),
        )
        .expect("fixture"),
    )
    .expect("json");
    fixture["registers_hex"]
        .as_str()
        .expect("hex")
        .split_whitespace()
        .map(|h| u16::from_str_radix(h, 16).expect("hex word"))
        .collect()
}

/// A config with SQLite flushed every second.
pub fn setup() -> Setup {
    Setup::new("backends:\n  sqlite:\n    flush_interval: 1s\n")
}

/// The Python with pymodbus: scripts/test.sh makes the venv and exports it.
pub fn python() -> PathBuf {
    let path = std::env::var_os("PYMODBUS_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pyvenv/bin/python"));
    assert!(
        path.exists(),
        "no Python with pymodbus at {}: run scripts/test.sh, which installs it",
        path.display()
    );
    path
}

pub fn peer(script: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers").join(script)
}

/// A register image: table → address → value.
#[derive(Debug, Default, Clone)]
pub struct RegisterImage {
    pub tables: BTreeMap<&'static str, BTreeMap<u16, u16>>,
}

impl RegisterImage {
    pub fn set(&mut self, table: &'static str, address: u16, words: &[u16]) -> &mut Self {
        let t = self.tables.entry(table).or_default();
        for (i, w) in words.iter().enumerate() {
            t.insert(address + i as u16, *w);
        }
        self
    }

    pub fn write(&self, path: &Path) {
        let json: serde_json::Map<String, serde_json::Value> = self
            .tables
            .iter()
            .map(|(t, values)| {
                let m: serde_json::Map<String, serde_json::Value> =
                    values.iter().map(|(a, v)| (a.to_string(), (*v).into())).collect();
                ((*t).to_string(), m.into())
            })
            .collect();
        std::fs::write(path, serde_json::Value::Object(json).to_string()).expect("image file");
    }
}

/// One read request the server saw.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct SeenRequest {
    pub fc: u8,
    pub unit: u8,
    pub address: u16,
    pub count: u16,
}

/// One write the server took: function, address and the words written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenWrite {
    pub fc: u8,
    pub address: u16,
    pub values: Vec<u16>,
}

/// Two socat-linked ptys; killed on drop.
pub struct PtyPair {
    socat: std::process::Child,
    pub daemon_end: std::path::PathBuf,
    pub device_end: std::path::PathBuf,
}

impl PtyPair {
    pub fn new(dir: &std::path::Path) -> PtyPair {
        let (daemon_end, device_end) = (dir.join("bus"), dir.join("meters"));
        let socat = std::process::Command::new("socat")
            .arg(format!("pty,raw,echo=0,link={}", daemon_end.display()))
            .arg(format!("pty,raw,echo=0,link={}", device_end.display()))
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("socat is installed (scripts/test.sh installs it)");
        let start = Instant::now();
        while !(daemon_end.exists() && device_end.exists()) {
            assert!(start.elapsed() < LIMIT, "socat made no pty pair");
            std::thread::sleep(Duration::from_millis(20));
        }
        PtyPair {
            socat,
            daemon_end,
            device_end,
        }
    }
}

impl Drop for PtyPair {
    fn drop(&mut self) {
        let _ = self.socat.kill();
        let _ = self.socat.wait();
    }
}

/// A pymodbus server child process; killed on drop.
pub struct PyServer {
    child: Child,
    pub requests: Arc<Mutex<Vec<SeenRequest>>>,
    pub writes: Arc<Mutex<Vec<SeenWrite>>>,
    pub connects: Arc<Mutex<u32>>,
}

impl PyServer {
    /// `target`: `["--port", "5020"]` or `["--serial", "/dev/pts/3"]`.
    pub fn start(image: &Path, target: &[&str], extra: &[&str]) -> PyServer {
        let mut child = Command::new(python())
            .arg(peer("modbus_server.py"))
            .arg("--image")
            .arg(image)
            .args(target)
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the pymodbus server");
        let stdout = child.stdout.take().expect("stdout");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let connects = Arc::new(Mutex::new(0));
        let writes = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let (seen, conns, written) = (requests.clone(), connects.clone(), writes.clone());
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line == "ready" {
                    let _ = ready_tx.send(());
                    continue;
                }
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if v.get("write").is_some() {
                    let n = |k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
                    let values = v["values"].as_array().map_or_else(Vec::new, |a| {
                        a.iter().filter_map(|x| x.as_u64()).map(|x| x as u16).collect()
                    });
                    written.lock().expect("lock").push(SeenWrite {
                        fc: n("fc") as u8,
                        address: n("address") as u16,
                        values,
                    });
                } else if v.get("connected").and_then(|c| c.as_bool()) == Some(true) {
                    *conns.lock().expect("lock") += 1;
                } else if let Some(fc) = v.get("fc").and_then(|f| f.as_u64()) {
                    let n = |k: &str| v.get(k).and_then(|x| x.as_u64()).unwrap_or(0);
                    seen.lock().expect("lock").push(SeenRequest {
                        fc: fc as u8,
                        unit: n("unit") as u8,
                        address: n("address") as u16,
                        count: n("count") as u16,
                    });
                }
            }
        });
        let mut server = PyServer {
            child,
            requests,
            writes,
            connects,
        };
        if ready_rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let status = server.child.try_wait();
            panic!("the pymodbus server did not start within 60 s ({status:?})");
        }
        server
    }

    pub fn requests(&self) -> Vec<SeenRequest> {
        self.requests.lock().expect("lock").clone()
    }

    pub fn writes(&self) -> Vec<SeenWrite> {
        self.writes.lock().expect("lock").clone()
    }

    pub fn connects(&self) -> u32 {
        *self.connects.lock().expect("lock")
    }
}

impl Drop for PyServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs the base station script: `writes` as `UNIT:ADDRESS:VALUE[,VALUE…]`.
pub fn base_station_writes(port: u16, writes: &[String]) {
    let start = Instant::now();
    // The gateway may still be binding its port: retry until it takes the writes.
    loop {
        let output = Command::new(python())
            .arg(peer("neasmart_base.py"))
            .arg("--port")
            .arg(port.to_string())
            .args(writes)
            .output()
            .expect("run the base station script");
        if output.status.success() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the base station could not write: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The base station reading command registers back (function 3), as
/// `UNIT:ADDRESS`; each answer as the script prints it, `UNIT:ADDRESS=VALUE`.
pub fn base_station_reads(port: u16, reads: &[&str]) -> Vec<String> {
    let output = Command::new(python())
        .arg(peer("neasmart_base.py"))
        .arg("--port")
        .arg(port.to_string())
        .arg("--read")
        .args(reads)
        .output()
        .expect("run the base station script");
    assert!(
        output.status.success(),
        "the base station could not read: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(str::to_owned)
        .collect()
}
