//! Live configuration on the real filesystem: files added, edited, saved
//! atomically, touched, deleted, renamed, broken and fixed, dropped in bulk, and a
//! base-config change. Waits are bounded polls, never fixed sleeps.

use std::path::PathBuf;
use std::time::Duration;

use crate::support::{no_env, sqlite_rows, Setup};
use mesura::config::Config;
use mesura::daemon::app::{Daemon, DaemonHandle, ReloadSummary, Summary};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const BASE: &str = "backends:\n  sqlite:\n    flush_interval: 200ms\nwatch:\n  debounce: 300ms\n";
const LIMIT: Duration = Duration::from_secs(15);

struct Live {
    setup: Setup,
    handle: DaemonHandle,
    /// Where the status API listened at start, if it runs.
    api: Option<std::net::SocketAddr>,
    reloads: broadcast::Receiver<ReloadSummary>,
    shutdown: CancellationToken,
    task: JoinHandle<Summary>,
}

fn sim(profile: &str) -> String {
    format!("type: simulated\nprofile: {profile}\npoll_interval: 1s\n")
}

impl Live {
    async fn start(base: &str, devices: &[(&str, String)]) -> Live {
        let setup = Setup::new(base);
        for (id, body) in devices {
            setup.device(id, body);
        }
        let config = Config::load(&setup.config_path(), &no_env).expect("config");
        let daemon = Daemon::start(config, mesura::host::clock::system())
            .await
            .expect("start");
        let handle = daemon.handle();
        let api = daemon.api_addr();
        let reloads = handle.subscribe();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(daemon.run(shutdown.clone()));
        Live {
            setup,
            handle,
            api,
            reloads,
            shutdown,
            task,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.setup.dir.path().join("config.d").join(name)
    }

    /// Saves the way editors do: a hidden temp file renamed over the target, so a
    /// reload never reads a half-written file (`write_in_place` tests that case).
    fn write(&self, name: &str, body: &str) {
        let tmp = self.path(&format!(".{name}.tmp"));
        std::fs::write(&tmp, body).expect("write");
        std::fs::rename(&tmp, self.path(name)).expect("rename");
    }

    /// Truncates and writes the file itself, as `echo > file` does.
    fn write_in_place(&self, name: &str, body: &str) {
        std::fs::write(self.path(name), body).expect("write");
    }

    async fn next_reload(&mut self) -> ReloadSummary {
        match tokio::time::timeout(LIMIT, self.reloads.recv()).await {
            Ok(Ok(summary)) => summary,
            other => panic!("no reload within {LIMIT:?}: {other:?}"),
        }
    }

    /// The next reload that applies something new. A save can reach the watcher as
    /// two bursts of events (on a loaded machine the second can come after the
    /// debounce): the second burst reloads the same files again and reports what
    /// the last one did, changing nothing. Only such repeats of `last` are skipped.
    async fn next_reload_after(&mut self, last: &ReloadSummary) -> ReloadSummary {
        loop {
            let r = self.next_reload().await;
            let repeat = r.added.is_empty()
                && r.changed.is_empty()
                && r.removed.is_empty()
                && r.backends.is_empty()
                && r.failed == last.failed
                && r.base_error == last.base_error;
            if !repeat {
                return r;
            }
        }
    }

    fn generation(&self, id: &str) -> Option<u64> {
        self.handle.status.devices().get(id).map(|d| d.generation)
    }

    fn polls(&self, id: &str) -> u64 {
        self.handle.status.devices().get(id).map_or(0, |d| d.polls_ok)
    }

    fn running(&self) -> Vec<String> {
        self.handle.status.devices().keys().map(|k| k.to_string()).collect()
    }

    async fn wait(&self, what: &str, check: impl Fn(&Live) -> bool) {
        let start = tokio::time::Instant::now();
        while !check(self) {
            assert!(
                start.elapsed() < LIMIT,
                "timed out waiting for {what}; running: {:?}",
                self.running()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn stop(self) -> (Setup, Summary) {
        self.shutdown.cancel();
        let summary = self.task.await.expect("daemon task");
        (self.setup, summary)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_edit_delete_touch_only_what_changed() {
    let mut live = Live::start(BASE, &[("steady", sim("climate"))]).await;
    live.wait("steady polling", |l| l.polls("steady") >= 2).await;
    let steady = live.generation("steady");

    live.write("meter.yaml", &sim("electricity"));
    let r = live.next_reload().await;
    assert_eq!(
        (r.added.clone(), r.changed.len(), r.removed.len(), r.unchanged),
        (vec!["meter".to_string()], 0, 0, 1)
    );
    live.wait("meter rows in sqlite", |l| sqlite_rows(&l.setup.db_path(), "meter") > 0)
        .await;

    let meter = live.generation("meter");
    live.write("meter.yaml", &format!("{}seed: 9\n", sim("electricity")));
    let r = live.next_reload().await;
    assert_eq!(r.changed, vec!["meter".to_string()]);
    assert_eq!(r.unchanged, 1);
    assert_ne!(live.generation("meter"), meter, "a changed device is restarted");
    assert_eq!(live.generation("steady"), steady, "an unchanged device is not");

    // Saved unchanged, reformatted, or only touched: nothing restarts.
    let before = live.polls("steady");
    let meter = live.generation("meter");
    live.write(
        "meter.yaml",
        &format!("# a comment\n{}seed:    9\n", sim("electricity")),
    );
    let r = live.next_reload().await;
    assert!(
        r.added.is_empty() && r.changed.is_empty() && r.removed.is_empty(),
        "{r:?}"
    );
    let file = std::fs::File::options()
        .append(true)
        .open(live.path("meter.yaml"))
        .expect("open");
    file.set_modified(std::time::SystemTime::now()).expect("touch");
    let r = live.next_reload().await;
    assert_eq!(r.unchanged, 2, "{r:?}");
    assert_eq!(live.generation("meter"), meter);
    live.wait("steady still polling", |l| l.polls("steady") > before + 2)
        .await;
    assert_eq!(live.generation("steady"), steady);

    std::fs::remove_file(live.path("meter.yaml")).expect("rm");
    let r = live.next_reload().await;
    assert_eq!(r.removed, vec!["meter".to_string()]);
    assert_eq!(live.running(), vec!["steady".to_string()]);
    let (_setup, summary) = live.stop().await;
    assert_eq!(summary.dropped.values().sum::<u64>(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn atomic_save_rename_and_editor_litter() {
    let mut live = Live::start(BASE, &[("a", sim("gas"))]).await;
    live.wait("a polling", |l| l.polls("a") >= 1).await;
    let a = live.generation("a");

    // Editor litter is ignored: give it time to (wrongly) trigger, then make a
    // real change; the next reload must be that change alone.
    live.write(".a.yaml.swp", "garbage: [");
    live.write("a.yaml~", "garbage: [");
    live.write("#a.yaml#", "garbage: [");
    live.write("notes.txt", "garbage: [");
    tokio::time::sleep(Duration::from_millis(1200)).await; // proving a negative needs time
                                                           // An atomic save: write a temp file, rename it over the original (vim, most editors).
    let tmp = live.path(".a.yaml.tmp123");
    std::fs::write(&tmp, format!("{}seed: 4\n", sim("gas"))).expect("tmp");
    std::fs::rename(&tmp, live.path("a.yaml")).expect("rename");
    let r = live.next_reload().await;
    assert_eq!((r.changed.clone(), r.failed.len()), (vec!["a".to_string()], 0), "{r:?}");
    assert_ne!(live.generation("a"), a);

    std::fs::rename(live.path("a.yaml"), live.path("b.yaml")).expect("mv");
    let r = live.next_reload().await;
    assert_eq!(
        (r.removed.clone(), r.added.clone()),
        (vec!["a".to_string()], vec!["b".to_string()])
    );
    assert_eq!(live.running(), vec!["b".to_string()]);
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_file_keeps_the_last_good_config_until_fixed() {
    let mut live = Live::start(BASE, &[("a", sim("climate")), ("other", sim("gas"))]).await;
    live.wait("a polling", |l| l.polls("a") >= 1).await;
    let a = live.generation("a");
    live.write("a.yaml", "type: simulated\nprofile: climate\npoll_interval: [\n");
    let r = live.next_reload().await;
    assert_eq!(r.failed, vec!["a".to_string()]);
    assert!(r.changed.is_empty() && r.removed.is_empty(), "{r:?}");
    let before = live.polls("a");
    live.wait("a still polling on its old config", |l| l.polls("a") > before + 2)
        .await;
    assert_eq!(live.generation("a"), a);

    live.write("a.yaml", &format!("{}seed: 2\n", sim("climate")));
    let r = live.next_reload_after(&r).await;
    assert_eq!((r.changed.clone(), r.failed.len()), (vec!["a".to_string()], 0), "{r:?}");
    assert_ne!(live.generation("a"), a);
    live.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_files_at_once() {
    let mut live = Live::start(BASE, &[]).await;
    for i in 0..50 {
        live.write_in_place(&format!("room{i:02}.yaml"), &sim("climate"));
    }
    // A reload may catch a file between its truncation and its write: that file
    // fails once and is picked up on its next event. What must hold is the end state.
    live.wait("all 50 running", |l| l.running().len() == 50).await;
    live.handle.request_reload();
    let r = loop {
        let r = live.next_reload().await;
        if r.unchanged == 50 {
            break r;
        }
    };
    assert!(
        r.failed.is_empty() && r.added.is_empty() && r.changed.is_empty(),
        "{r:?}"
    );
    live.wait("all 50 stored", |l| {
        (0..50).all(|i| sqlite_rows(&l.setup.db_path(), &format!("room{i:02}")) > 0)
    })
    .await;
    let (_setup, summary) = live.stop().await;
    assert_eq!(summary.polls.len(), 50);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_config_change_rebuilds_the_backend_and_loses_nothing() {
    let mut live = Live::start(BASE, &[("meter", sim("electricity"))]).await;
    live.wait("rows", |l| sqlite_rows(&l.setup.db_path(), "meter") > 2)
        .await;
    std::fs::write(live.setup.config_path(), BASE.replace("200ms", "300ms")).expect("write base");
    let r = live.next_reload().await;
    assert_eq!(r.backends, vec!["sqlite".to_string()]);
    assert_eq!(r.unchanged, 1);

    // An invalid base config leaves the old one in force.
    std::fs::write(
        live.setup.config_path(),
        "backends:\n  sqlite:\n    flush_interval: soon\n",
    )
    .expect("write base");
    let r = live.next_reload().await;
    assert!(
        r.base_error.as_deref().is_some_and(|e| e.contains("flush_interval")),
        "{r:?}"
    );
    let before = live.polls("meter");
    live.wait("meter still polling", |l| l.polls("meter") > before + 2)
        .await;

    let (setup, summary) = live.stop().await;
    let produced = summary.readings["meter"];
    assert_eq!(
        summary.written["sqlite"], produced,
        "every reading produced across the rebuild is written"
    );
    assert_eq!(summary.dropped["sqlite"], 0);
    // One row per second in SQLite: rows can be fewer than polls at 100 ms, never more.
    assert!(sqlite_rows(&setup.db_path(), "meter") > 0);
}

/// The daemon binary as it runs in production, its JSON log in a file.
struct Process {
    child: std::process::Child,
    log: PathBuf,
}

impl Process {
    fn spawn(setup: &Setup) -> Process {
        let log = setup.dir.path().join("log.json");
        let child = std::process::Command::new(env!("CARGO_BIN_EXE_mesura"))
            .arg("--config")
            .arg(setup.config_path())
            .args(["--log-format", "json"])
            .env_remove("RUST_LOG")
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("spawn");
        Process { child, log }
    }

    fn lines(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Where the status API listens now (the last address it logged).
    fn api_addr(&self) -> std::net::SocketAddr {
        let mut addr = None;
        crate::support::wait_until(LIMIT, "the status API", || {
            addr = self
                .lines()
                .iter()
                .rfind(|l| l["fields"]["message"] == "status API listening")
                .and_then(|l| l["fields"]["addr"].as_str()?.parse().ok());
            addr.is_some()
        });
        addr.expect("waited for")
    }

    /// Polls `check` until it holds; on a timeout the daemon's log is in the message.
    fn wait(&self, what: &str, mut check: impl FnMut() -> bool) {
        let start = std::time::Instant::now();
        while !check() {
            if start.elapsed() > LIMIT {
                let log = std::fs::read_to_string(&self.log).unwrap_or_default();
                panic!("timed out after {LIMIT:?} waiting for {what}; the daemon's log:\n{log}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Stops it with SIGTERM and checks it exits cleanly.
    fn stop(mut self) {
        std::process::Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("kill");
        let exit = self.child.wait().expect("wait");
        assert!(exit.success(), "{exit:?}");
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A plain blocking HTTP GET: the status code and the body.
fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).expect("connect");
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )
    .expect("write");
    let mut text = String::new();
    stream.read_to_string(&mut text).expect("read");
    let code = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .expect("status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

fn health(addr: std::net::SocketAddr) -> (u16, serde_json::Value) {
    let (code, body) = http_get(addr, "/health");
    let start = body.find('{').unwrap_or(0);
    let end = body.rfind('}').map_or(body.len(), |i| i + 1);
    (
        code,
        serde_json::from_str(&body[start..end]).unwrap_or_else(|e| panic!("{e}: {body}")),
    )
}

/// Saves as editors do (a temp file renamed over the target): a reload never
/// reads a half-written config.yaml.
fn save(path: &std::path::Path, body: &str) {
    let tmp = path.with_extension("yaml.tmp");
    std::fs::write(&tmp, body).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// Found by issue 20: a config.yaml whose SQLite path is a directory half-applied —
/// the old backend kept writing, but the disk guard and the downsampler moved to
/// the broken path, the reload logged `failed=0` and /health said all was well.
#[test]
fn an_unusable_sqlite_path_fails_the_whole_reload_until_it_is_fixed() {
    let base = |path: &str| {
        format!(
            "backends:\n  sqlite:\n    path: {path}\n    flush_interval: 200ms\nwatch:\n  debounce: 300ms\n\
             api:\n  listen: 127.0.0.1:0\ndisk_guard:\n  check_interval: 1s\nretention:\n  check_interval: 1s\n"
        )
    };
    let setup = Setup::new(&base("mesura.db"));
    setup.device("meter", &sim("electricity"));
    let daemon = Process::spawn(&setup);
    let addr = daemon.api_addr();
    let old_db = setup.db_path();
    daemon.wait("rows in the first database", || sqlite_rows(&old_db, "meter") > 0);

    let broken = setup.dir.path().join("data/broken.db");
    std::fs::create_dir_all(&broken).expect("a directory where the database should be");
    save(&setup.config_path(), &base("broken.db"));
    let mut failed = None;
    daemon.wait("the reload to be logged as failed", || {
        failed = daemon
            .lines()
            .into_iter()
            .find(|l| l["level"] == "ERROR" && l.to_string().contains("reload failed"));
        failed.is_some()
    });
    let failed = failed.expect("waited for").to_string();
    assert!(failed.contains("broken.db") && failed.contains("sqlite"), "{failed}");

    let (code, body) = health(addr);
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["reload"]["ok"], false, "{body}");
    let error = body["reload"]["error"].as_str().unwrap_or_default();
    assert!(error.contains("broken.db"), "{body}");
    assert!(body["reload"]["at"].is_string(), "{body}");
    let (_, metrics) = http_get(addr, "/metrics");
    let failed_reloads = metrics
        .lines()
        .find_map(|l| l.strip_prefix("mesura_config_reloads_total{result=\"failed\"} "))
        .and_then(|n| n.trim().parse::<f64>().ok());
    assert!(failed_reloads >= Some(1.0), "{metrics}");

    // Everything keeps running on the old config: the backend writes the old
    // file, and the disk guard checks it without an error.
    let rows = sqlite_rows(&old_db, "meter");
    let checks = body["disk_guard"]["checks"].as_u64().expect("guard checks");
    daemon.wait("the old database to grow and the guard to check it", || {
        let (_, body) = health(addr);
        sqlite_rows(&old_db, "meter") > rows + 2 && body["disk_guard"]["checks"].as_u64() > Some(checks + 1)
    });
    let (_, body) = health(addr);
    assert_eq!(body["disk_guard"]["errors"], 0, "{body}");
    assert_eq!(
        std::fs::read_dir(&broken).expect("dir").count(),
        0,
        "nothing written at the new path"
    );
    let text = std::fs::read_to_string(&daemon.log).unwrap_or_default();
    assert!(
        !text.contains("disk guard check failed") && !text.contains("retention run failed"),
        "the guard and the downsampler stay on the old database:\n{text}"
    );

    // A fixed config applies as a whole.
    save(&setup.config_path(), &base("fixed.db"));
    daemon.wait("the fixed config to apply", || {
        daemon.lines().iter().any(|l| l["fields"]["config_yaml"] == "ok")
    });
    let fixed = setup.dir.path().join("data/fixed.db");
    daemon.wait("rows in the fixed database", || sqlite_rows(&fixed, "meter") > 0);
    // The API follows the database it reads: restarted, here on a new port (`:0`).
    let addr = daemon.api_addr();
    let (code, body) = health(addr);
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["reload"]["ok"], true, "{body}");
    daemon.stop();
}

/// A new API address is bound before anything of the reload applies: taken, the
/// whole reload fails and the API keeps serving where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_api_address_fails_the_whole_reload_and_the_api_stays() {
    let base = |listen: &str, flush: &str| {
        format!(
            "backends:\n  sqlite:\n    flush_interval: {flush}\nwatch:\n  enabled: false\napi:\n  listen: {listen}\n"
        )
    };
    let mut live = Live::start(&base("127.0.0.1:0", "200ms"), &[("meter", sim("gas"))]).await;
    let old = live.api.expect("the API runs");
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let taken_addr = taken.local_addr().expect("addr");
    save(&live.setup.config_path(), &base(&taken_addr.to_string(), "300ms"));
    live.handle.request_reload();
    let r = live.next_reload().await;
    let error = r.base_error.clone().unwrap_or_default();
    assert!(error.contains(&taken_addr.to_string()), "{r:?}");
    assert!(r.backends.is_empty(), "nothing applied, not even the backend: {r:?}");
    let reload = live.handle.status.last_base_reload().expect("recorded");
    assert!(
        !reload.ok && reload.error.as_deref() == Some(error.as_str()),
        "{reload:?}"
    );
    let (code, body) = tokio::task::spawn_blocking(move || health(old)).await.expect("health");
    assert_eq!(code, 503, "{body}");
    assert_eq!(body["reload"]["ok"], false, "{body}");

    drop(taken);
    // The port is free now, but a parallel test's outgoing connection may take it
    // as its local port for a moment (it is in the ephemeral range): a reload that
    // still finds it in use is tried again, as a user would.
    let mut r = None;
    for _ in 0..20 {
        live.handle.request_reload();
        let attempt = live.next_reload().await;
        let in_use = attempt
            .base_error
            .as_deref()
            .is_some_and(|e| e.contains("Address already in use"));
        r = Some(attempt);
        if !in_use {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let r = r.expect("a reload ran");
    assert_eq!(
        (r.base_error.clone(), r.backends.clone()),
        (None, vec!["sqlite".to_string()]),
        "{r:?}"
    );
    let (code, body) = tokio::task::spawn_blocking(move || health(taken_addr))
        .await
        .expect("health");
    assert_eq!(code, 200, "the API moved to its new address: {body}");
    assert!(std::net::TcpStream::connect(old).is_err(), "the old address is let go");
    live.stop().await;
}
