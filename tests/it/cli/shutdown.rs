//! Once "shutdown complete" is logged everything is written; the process must then
//! exit at once, not wait for work nobody needs any more.

use std::io::Write as _;
use std::os::fd::AsRawFd as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::{sqlite_rows, wait_until, Setup};

const BIN: &str = env!("CARGO_BIN_EXE_mesura");

/// Holds SQLite's WAL locks (bytes 120 to 127 of the `-shm` file: the writer,
/// checkpointer, recovery and the five read marks) with a POSIX lock from this
/// process, the way a stuck reader or a backup tool would: every new read
/// transaction of the daemon then waits in its busy handler. The lock lasts as long
/// as the file is open.
struct WalLocked {
    _shm: std::fs::File,
}

impl WalLocked {
    fn take(db: &std::path::Path) -> WalLocked {
        let shm = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("{}-shm", db.display()))
            .expect("the -shm file of a WAL database");
        let lock = libc::flock {
            l_type: libc::F_WRLCK as libc::c_short,
            l_whence: libc::SEEK_SET as libc::c_short,
            l_start: 120,
            l_len: 8,
            l_pid: 0,
        };
        // SAFETY: fcntl on a descriptor this File owns, with a valid flock.
        let rc = unsafe { libc::fcntl(shm.as_raw_fd(), libc::F_SETLK, &lock) };
        assert_eq!(rc, 0, "lock: {}", std::io::Error::last_os_error());
        WalLocked { _shm: shm }
    }
}

/// Found by a user: the process exited 1.5 s after "shutdown complete". Dropping
/// the runtime waited for every blocking task still running — an API query
/// waiting on a busy database, a DNS lookup of a device or broker — although
/// nothing of theirs is needed once the summary is logged.
#[test]
fn the_process_exits_at_once_after_shutdown_complete() {
    let setup = Setup::new(
        "watch:\n  enabled: false\nretention:\n  enabled: false\ndisk_guard:\n  enabled: false\napi:\n  listen: 127.0.0.1:0\n\
         backends:\n  sqlite:\n    flush_interval: 1h\n",
    );
    // One reading (a device's first is committed at once), then nothing to write.
    setup.device("gas", "type: simulated\nprofile: gas\npoll_interval: 1h\n");
    let log = setup.dir.path().join("log.json");
    let child = Command::new(BIN)
        .arg("--config")
        .arg(setup.config_path())
        .args(["--log-format", "json"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn");
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Reap(child);
    let pid = child.0.id();
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    let mut addr = String::new();
    wait_until(Duration::from_secs(20), "the API and the first reading", || {
        addr = read_log()
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .find(|v| v["fields"]["message"] == "status API listening")
            .and_then(|v| v["fields"]["addr"].as_str().map(str::to_owned))
            .unwrap_or_default();
        !addr.is_empty() && sqlite_rows(&setup.db_path(), "gas") == 1
    });
    let _locked = WalLocked::take(&setup.db_path());
    let db_files = || {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|fds| {
                fds.flatten()
                    .filter(|fd| std::fs::read_link(fd.path()).is_ok_and(|p| p.ends_with("mesura.db")))
                    .count()
            })
            .unwrap_or(0)
    };
    let backend_only = db_files();
    // A history query now waits in the blocking pool for the database.
    let mut request = std::net::TcpStream::connect(&addr).expect("connect");
    write!(
        request,
        "GET /api/readings?device=gas HTTP/1.1\r\nHost: localhost\r\n\r\n"
    )
    .expect("send");
    wait_until(Duration::from_secs(10), "the API query to open the database", || {
        db_files() > backend_only
    });

    Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("kill");
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("wait") {
            break status;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no exit:\n{}", read_log());
        std::thread::sleep(Duration::from_millis(5));
    };
    let exited = chrono::Utc::now();
    let text = read_log();
    assert!(status.success(), "{status:?}\n{text}");
    let complete: chrono::DateTime<chrono::Utc> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == "shutdown complete")
        .and_then(|v| v["timestamp"].as_str().and_then(|t| t.parse().ok()))
        .unwrap_or_else(|| panic!("no shutdown summary:\n{text}"));
    let after = (exited - complete).to_std().unwrap_or_default();
    assert!(
        after < Duration::from_secs(1),
        "the process exited {after:?} after \"shutdown complete\"\n{text}"
    );
}
