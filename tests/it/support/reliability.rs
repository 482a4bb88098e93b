//! Helpers of the process-level reliability suites: the `mesura` binary run as a
//! user runs it, and checks on what it left on disk.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

pub const BIN: &str = env!("CARGO_BIN_EXE_mesura");

/// Held by each suite that runs the daemon as a process and measures it (memory, CPU
/// time, fsyncs, what a kill or a full disk loses): they were written with the
/// machine to themselves, as when each was its own test binary, so in one binary they
/// take turns. An async lock, so a suite that failed does not poison the next one.
pub async fn alone() -> tokio::sync::MutexGuard<'static, ()> {
    static ALONE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());
    ALONE.lock().await
}

/// Whether the long variants run (`LONG_TESTS=1`; not `MESURA_*`, which the config
/// loader reads as overrides).
pub fn long() -> bool {
    std::env::var_os("LONG_TESTS").is_some()
}

/// The daemon as a child process (or as the child of `strace`, which is then
/// `child`), its log in `log`.
pub struct Mesura {
    pub child: Child,
    pub log: PathBuf,
    /// The daemon's own process id (not strace's).
    pid: u32,
}

fn daemon_command(program: &str, log: &Path) -> Command {
    let mut command = Command::new(program);
    command.env_remove("RUST_LOG").stdout(Stdio::null()).stderr(
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .expect("log file"),
    );
    command
}

impl Mesura {
    pub fn spawn(config: &Path, log: &Path) -> Mesura {
        let child = daemon_command(BIN, log)
            .arg("--config")
            .arg(config)
            .spawn()
            .expect("spawn mesura");
        Mesura {
            pid: child.id(),
            child,
            log: log.to_path_buf(),
        }
    }

    /// The daemon under `strace -f`, which writes each call of `syscalls` (e.g.
    /// `fsync,fdatasync`), with its time (`-ttt`) and the file behind the
    /// descriptor (`-y`), to `trace`. The filter runs in the kernel
    /// (`--seccomp-bpf`): only those calls stop the daemon, everything else runs
    /// at full speed, unlike `strace -p`, which stops it on every system call.
    /// Panics, with the log, if strace is missing or cannot trace.
    pub fn spawn_traced(config: &Path, log: &Path, syscalls: &str, trace: &Path) -> Mesura {
        let strace = ["/usr/bin/strace", "/bin/strace", "/usr/local/bin/strace"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("strace is not installed: scripts/test.sh installs it (apt-get install strace)");
        let child = daemon_command(strace, log)
            .args(["--seccomp-bpf", "-f", "-qq", "-ttt", "-y", "-e", "signal=none", "-e"])
            .arg(format!("trace={syscalls}"))
            .arg("-o")
            .arg(trace)
            .arg(BIN)
            .arg("--config")
            .arg(config)
            .spawn()
            .expect("spawn strace");
        let mut daemon = Mesura {
            pid: child.id(),
            child,
            log: log.to_path_buf(),
        };
        // The daemon is strace's child once strace has exec'd it.
        let start = std::time::Instant::now();
        let bin = std::fs::canonicalize(BIN).expect("the mesura binary");
        loop {
            let children =
                std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", daemon.child.id())).unwrap_or_default();
            let traced = children
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .find(|p| std::fs::read_link(format!("/proc/{p}/exe")).is_ok_and(|exe| exe == bin));
            if let Some(pid) = traced {
                daemon.pid = pid;
                break;
            }
            if !daemon.is_running() || start.elapsed() > Duration::from_secs(20) {
                panic!(
                    "strace did not start mesura under trace; the log ends:\n{}",
                    daemon.log_tail(30)
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let tracer = proc_status(daemon.pid, "TracerPid").unwrap_or(0);
        assert_eq!(
            tracer,
            u64::from(daemon.child.id()),
            "mesura (pid {}) is not traced by strace; the log ends:\n{}",
            daemon.pid,
            daemon.log_tail(30)
        );
        daemon
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The last `n` lines of the log.
    pub fn log_tail(&self, n: usize) -> String {
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(n).collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    fn signal(&self, signal: &str) -> bool {
        Command::new("kill")
            .args([signal, &self.pid.to_string()])
            .status()
            .expect("kill")
            .success()
    }

    /// SIGKILL: no shutdown, no flush.
    pub fn kill9(mut self) {
        if self.pid == self.child.id() {
            self.child.kill().expect("SIGKILL");
        } else {
            assert!(self.signal("-KILL"), "SIGKILL");
        }
        self.child.wait().expect("reap");
    }

    /// Whether the daemon catches SIGTERM yet (bit 14 of `SigCgt`): before that, a
    /// SIGTERM kills the process by the default action, as it would any program.
    pub fn catches_sigterm(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/status", self.pid))
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("SigCgt:"))
                    .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
            })
            .is_some_and(|mask| mask & (1 << 14) != 0)
    }

    /// SIGTERM (once the daemon catches it) and wait for a clean exit.
    pub fn stop(mut self) {
        let start = std::time::Instant::now();
        while !self.catches_sigterm() {
            assert!(start.elapsed() < Duration::from_secs(20), "mesura never caught SIGTERM");
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(self.signal("-TERM"), "kill -TERM");
        // Under strace, strace exits with the daemon's status once it has exited.
        let exit = self.child.wait().expect("wait");
        if !exit.success() {
            panic!("mesura exited with {exit:?}; the log ends:\n{}", self.log_tail(30));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Mesura {
    fn drop(&mut self) {
        if self.pid != self.child.id() && self.is_running() {
            let _ = self.signal("-KILL");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A number field of `/proc/<pid>/status` (`VmRSS`, `VmHWM` in KiB, `TracerPid`).
pub fn proc_status(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let value = status.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
    value.split_whitespace().next()?.parse().ok()
}

/// A field of `/proc/<pid>/io` (`syscw`, `write_bytes`, …).
pub fn proc_io(pid: u32, field: &str) -> Option<u64> {
    let io = std::fs::read_to_string(format!("/proc/{pid}/io")).ok()?;
    let value = io.lines().find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))?;
    value.trim().parse().ok()
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/<pid>/stat");
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = &stat[stat.rfind(')').expect("comm") + 2..];
    let fields: Vec<&str> = after.split(' ').collect();
    let ticks: u64 = fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    ticks as f64 / 100.0
}

/// The status API's `/metrics` text ("" while it does not answer).
pub fn metrics_text(port: u16) -> String {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut text = String::new();
    let _ = stream.read_to_string(&mut text);
    text
}

/// The samples of a family labelled only by `backend`, by backend.
pub fn by_backend(metrics: &str, name: &str) -> BTreeMap<String, f64> {
    let prefix = format!("{name}{{backend=\"");
    metrics
        .lines()
        .filter_map(|l| {
            let (backend, value) = l.strip_prefix(&prefix)?.split_once("\"} ")?;
            Some((backend.to_owned(), value.trim().parse().ok()?))
        })
        .collect()
}

/// A Prometheus sample of backend `backend` from the status API's /metrics (0
/// when absent).
pub fn metric(port: u16, name: &str, backend: &str) -> u64 {
    by_backend(&metrics_text(port), name)
        .get(backend)
        .map_or(0, |v| *v as u64)
}

/// One count of every "shutdown complete" line of the log (`polls`, `readings`,
/// `dropped`), in order.
pub fn shutdown_counts(log: &Path, key: &str) -> Vec<u64> {
    let key = format!("{key}=");
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains("shutdown complete"))
        .filter_map(|l| l.split(key.as_str()).nth(1)?.split(' ').next()?.parse().ok())
        .collect()
}

/// `PRAGMA integrity_check` of a database file (as a reader after a crash would
/// open it: the WAL is recovered first).
pub fn integrity(db: &Path) -> String {
    let conn = rusqlite::Connection::open(db).expect("open db");
    conn.busy_timeout(Duration::from_secs(10)).expect("busy timeout");
    let rows: Vec<String> = conn
        .prepare("PRAGMA integrity_check")
        .expect("prepare")
        .query_map([], |r| r.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    rows.join("; ")
}

/// The `ts` of every row of `device`.
pub fn timestamps(db: &Path, device: &str) -> BTreeSet<i64> {
    let Ok(conn) = rusqlite::Connection::open(db) else {
        return BTreeSet::new();
    };
    let _ = conn.busy_timeout(Duration::from_secs(10));
    let Ok(mut stmt) = conn.prepare(&format!("SELECT ts FROM \"{device}\"")) else {
        return BTreeSet::new();
    };
    let rows = stmt.query_map([], |r| r.get(0)).expect("query");
    rows.collect::<Result<_, _>>().unwrap_or_default()
}

/// Undelivered outbox rows per backend.
pub fn outbox_depth(db: &Path) -> BTreeMap<String, i64> {
    let Ok(conn) = rusqlite::Connection::open(db) else {
        return BTreeMap::new();
    };
    let _ = conn.busy_timeout(Duration::from_secs(10));
    let Ok(mut stmt) = conn.prepare("SELECT backend, count(*) FROM outbox GROUP BY backend") else {
        return BTreeMap::new();
    };
    let rows = stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?))).expect("query");
    rows.collect::<Result<_, _>>().unwrap_or_default()
}

/// Distinct reading times per device in JSON state messages (MQTT) and how many
/// messages arrived in all.
pub fn state_times(messages: &[super::broker::Message]) -> (BTreeMap<String, BTreeSet<String>>, usize) {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut n = 0;
    for m in messages.iter().filter(|m| m.topic.ends_with("/state")) {
        n += 1;
        let device = m.topic.split('/').nth(2).unwrap_or_default().to_owned();
        let json: serde_json::Value = serde_json::from_str(&m.payload).expect("state JSON");
        out.entry(device)
            .or_default()
            .insert(json["timestamp"].as_str().expect("timestamp").to_owned());
    }
    (out, n)
}

/// Distinct (device, metric, timestamp) in the uplink's accepted JSON batches, and
/// how many items arrived in all.
pub fn uplink_readings(requests: &[super::uplink::Request]) -> (BTreeSet<(String, String, String)>, usize) {
    let mut seen = BTreeSet::new();
    let mut n = 0;
    for r in requests.iter().filter(|r| (200..300).contains(&r.status)) {
        for item in r.json().as_array().expect("an array") {
            n += 1;
            seen.insert((
                item["device"].as_str().expect("device").to_owned(),
                item["metric"].as_str().expect("metric").to_owned(),
                item["timestamp"].as_str().expect("timestamp").to_owned(),
            ));
        }
    }
    (seen, n)
}

/// Every CSV file under `dir` parses, with as many cells on each line as in its header.
pub fn csv_well_formed(dir: &Path) -> usize {
    let mut rows = 0;
    let Ok(devices) = std::fs::read_dir(dir) else { return 0 };
    for device in devices.filter_map(|e| e.ok()) {
        for file in std::fs::read_dir(device.path())
            .expect("device dir")
            .filter_map(|e| e.ok())
        {
            let path = file.path();
            if path.extension().is_none_or(|x| x != "csv") {
                continue;
            }
            let mut reader = csv::ReaderBuilder::new().from_path(&path).expect("csv");
            for record in reader.records() {
                record.unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                rows += 1;
            }
        }
    }
    rows
}

/// The config.yaml of a daemon writing to every backend.
pub fn config_yaml(mqtt_port: u16, http_port: u16, flush: &str, api: &str) -> String {
    format!(
        "logging:\n  level: info\n\
         watch:\n  enabled: false\n\
         api:\n{api}\
         disk_guard:\n  enabled: false\n\
         backends:\n  sqlite:\n    flush_interval: {flush}\n  csv:\n    flush_interval: {flush}\n\
         \x20 mqtt:\n    host: 127.0.0.1\n    port: {mqtt_port}\n    client_id: mesura-reliability\n    flush_interval: 200ms\n    state_message: true\n\
         \x20 uplink:\n    url: http://127.0.0.1:{http_port}/ingest\n    format: json\n    batch_interval: 200ms\n    batch_size: 2000\n    max_backoff: 1s\n    timeout: 2s\n    token: t\n"
    )
}

/// `n` simulated devices polled every `poll`, profiles in turn.
pub fn simulated_devices(config_d: &Path, n: usize, poll: &str) -> Vec<String> {
    let profiles = ["electricity", "gas", "climate"];
    (0..n)
        .map(|i| {
            let id = format!("dev{i:03}");
            std::fs::write(
                config_d.join(format!("{id}.yaml")),
                format!(
                    "type: simulated\nprofile: {}\npoll_interval: {poll}\nseed: {i}\n",
                    profiles[i % 3]
                ),
            )
            .expect("device file");
            id
        })
        .collect()
}
