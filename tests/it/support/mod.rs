//! Every helper the integration tests and the reliability suites share: one place,
//! one name each. Each binary uses a part of them, hence the `dead_code` allowance.
#![allow(dead_code)]

pub mod api;
pub mod broker;
pub mod cdp;
pub mod dsmr;
pub mod home_assistant;
pub mod homewizard;
pub mod http_server;
pub mod kmp;
pub mod logs;
pub mod modbus;
pub mod reliability;
pub mod uplink;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// A fixed instant for a test's fake clock, derived from now so that no test meets
/// a calendar date: yesterday at 12:00 UTC. Always in the past (code that compares
/// with the real wall clock, such as retention or outbox ages, sees a recent
/// time), and a few hours after it stay within one UTC day (CSV day files).
pub fn noon_yesterday() -> chrono::DateTime<chrono::Utc> {
    let yesterday = chrono::Utc::now().date_naive() - chrono::Days::new(1);
    yesterday
        .and_hms_opt(12, 0, 0)
        .map(|t| t.and_utc())
        .expect("12:00 exists on every day")
}

/// A config dir in a tempdir: `config.yaml` plus device files.
pub struct Setup {
    pub dir: tempfile::TempDir,
}

impl Setup {
    pub fn new(base: &str) -> Setup {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("config.d")).expect("config.d");
        std::fs::write(dir.path().join("config.yaml"), base).expect("config.yaml");
        Setup { dir }
    }

    pub fn device(&self, id: &str, body: &str) -> &Self {
        std::fs::write(self.dir.path().join("config.d").join(format!("{id}.yaml")), body).expect("device file");
        self
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("config.yaml")
    }

    /// Starts a daemon on this set-up's config.yaml, with the real clock and no
    /// environment.
    pub async fn start(&self) -> mesura::daemon::app::Daemon {
        let config = mesura::config::Config::load(&self.config_path(), &no_env).expect("config");
        mesura::daemon::app::Daemon::start(config, mesura::host::clock::system())
            .await
            .expect("start")
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("data/mesura.db")
    }

    pub fn csv_rows(&self, device: &str) -> usize {
        let dir = self.dir.path().join("data/csv").join(device);
        let Ok(entries) = std::fs::read_dir(&dir) else { return 0 };
        entries
            .filter_map(|e| e.ok())
            .map(|e| {
                std::fs::read_to_string(e.path())
                    .unwrap_or_default()
                    .lines()
                    .count()
                    .saturating_sub(1)
            })
            .sum()
    }
}

pub fn no_env(_: &str) -> Option<String> {
    None
}

/// Rows in a device's table (0 when the table does not exist yet).
pub fn sqlite_rows(db: &Path, device: &str) -> i64 {
    let Ok(conn) = rusqlite::Connection::open(db) else {
        return 0;
    };
    conn.query_row(&format!("SELECT count(*) FROM \"{device}\""), [], |r| r.get(0))
        .unwrap_or(0)
}

/// Polls `check` until it holds or `limit` passes: a bounded wait, never a fixed sleep.
pub fn wait_until(limit: Duration, what: &str, mut check: impl FnMut() -> bool) {
    let start = Instant::now();
    while !check() {
        assert!(start.elapsed() < limit, "timed out after {limit:?} waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `openssl` in `dir`; the test fails with openssl's own message if it fails.
pub fn openssl(dir: &Path, args: &[&str]) {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("openssl");
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Signs `csr` with the CA `<ca>-ca.pem`/`<ca>-ca.key` into `out`, valid two days,
/// with the extensions in `extfile` (none: an X.509 v1 certificate).
pub fn sign_certificate(dir: &Path, csr: &str, ca: &str, out: &str, extfile: Option<&str>) {
    let (ca_pem, ca_key) = (format!("{ca}-ca.pem"), format!("{ca}-ca.key"));
    let mut args = vec![
        "x509",
        "-req",
        "-in",
        csr,
        "-CA",
        &ca_pem,
        "-CAkey",
        &ca_key,
        "-CAcreateserial",
        "-days",
        "2",
        "-out",
        out,
    ];
    if let Some(ext) = extfile {
        args.extend(["-extfile", ext]);
    }
    openssl(dir, &args);
}

/// A new RSA key `key` and a certificate request `csr` for `subject` (`/CN=…`).
pub fn key_and_request(dir: &Path, subject: &str, key: &str, csr: &str) {
    openssl(
        dir,
        &[
            "req", "-newkey", "rsa:2048", "-nodes", "-subj", subject, "-keyout", key, "-out", csr,
        ],
    );
}
