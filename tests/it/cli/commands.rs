//! The `mesura` binary as a user runs it.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::support::{sqlite_rows, wait_until, Setup};

const BIN: &str = env!("CARGO_BIN_EXE_mesura");

fn mesura(setup: &Setup, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .arg("--config")
        .arg(setup.config_path())
        .env_remove("RUST_LOG")
        .output()
        .expect("run mesura")
}

#[test]
fn sigterm_stops_cleanly_and_loses_nothing() {
    // A long flush interval: everything stored comes from the shutdown flush.
    let setup = Setup::new("backends:\n  sqlite:\n    flush_interval: 1h\n  csv:\n    flush_interval: 1h\n");
    setup
        .device("meter", "type: simulated\nprofile: electricity\npoll_interval: 1s\n")
        .device("room", "type: simulated\nprofile: climate\npoll_interval: 1s\n");
    let log = setup.dir.path().join("log.json");
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(setup.config_path())
        .args(["--log-format", "json"])
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn");
    wait_until(Duration::from_secs(20), "a few polls", || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .matches("device started")
            .count()
            == 2
    });
    std::thread::sleep(Duration::from_millis(1500)); // let it produce something to lose
                                                     // A device's first reading is committed at once; the rest waits for the flush window.
    assert_eq!(
        sqlite_rows(&setup.db_path(), "meter"),
        1,
        "only the first reading before the flush window"
    );
    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(status.success());
    let exit = child.wait().expect("wait");
    assert!(exit.success(), "exit status {exit:?}");

    let text = std::fs::read_to_string(&log).expect("log");
    let summary: serde_json::Value = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["fields"]["message"] == "shutdown complete")
        .expect("a shutdown summary line");
    let readings = summary["fields"]["readings"].as_u64().expect("readings");
    let polls = summary["fields"]["polls"].as_u64().expect("polls");
    assert!(polls >= 3, "{polls} polls");
    assert_eq!(
        summary["fields"]["written"],
        format!("csv={readings} sqlite={readings}")
    );
    assert_eq!(summary["fields"]["dropped"], 0);
    // Every poll is one row in SQLite and one row in CSV (sub-second polls of the
    // meter may share a second in SQLite, so count readings there).
    let conn = rusqlite::Connection::open(setup.db_path()).expect("db");
    let stored: i64 = conn
        .query_row(
            "SELECT (SELECT count(*) FROM room) * 2 + (SELECT count(*) FROM meter) * 8",
            [],
            |r| r.get(0),
        )
        .expect("count");
    let csv_polls = (setup.csv_rows("meter") + setup.csv_rows("room")) as u64;
    assert_eq!(csv_polls, polls, "csv rows = polls");
    assert!(stored as u64 <= readings && stored > 0);
    assert_eq!(
        conn.query_row("PRAGMA integrity_check", [], |r| r.get::<_, String>(0))
            .expect("check"),
        "ok"
    );
}

#[test]
fn check_lists_every_error_and_masks_nothing_it_should_not_show() {
    let setup = Setup::new("backends:\n  sqlite: {}\n");
    setup
        .device("good", "type: simulated\nprofile: gas\n")
        .device("typo", "type: simulated\nprofile: gas\npol_interval: 5s\n")
        .device("wrongtype", "type: simulatd\n");
    let out = mesura(&setup, &["check"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(text.contains("good — simulated"), "{text}");
    assert!(text.contains("typo.yaml:line 3 column 1: key `pol_interval`"), "{text}");
    assert!(text.contains("wrongtype.yaml:line 1 column 1: key `type`"), "{text}");
    assert!(text.contains("2 errors found"), "{text}");

    std::fs::remove_file(setup.dir.path().join("config.d/typo.yaml")).expect("rm");
    std::fs::remove_file(setup.dir.path().join("config.d/wrongtype.yaml")).expect("rm");
    let out = mesura(&setup, &["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok: 1 device, no errors"));
}

#[test]
fn broken_base_config_exits_before_opening_anything() {
    let setup = Setup::new("data_dir: data\nbackends:\n  sqlite:\n    batch_size: many\n");
    setup.device("good", "type: simulated\nprofile: gas\n");
    let out = mesura(&setup, &["run"]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("line 4") && text.contains("backends.sqlite.batch_size"),
        "{text}"
    );
    assert!(!setup.dir.path().join("data").exists(), "nothing may be opened");
}

#[test]
fn devices_lists_types_keys_and_metrics() {
    let out = Command::new(BIN).arg("devices").output().expect("run");
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("simulated"), "{text}");
    assert!(text.contains("keys: profile, seed, failure_rate"), "{text}");
    assert!(
        text.contains("energy_delivered_tariff1") && text.contains("counter"),
        "{text}"
    );
}

#[test]
fn read_prints_one_table_and_touches_no_backend() {
    let setup = Setup::new("backends:\n  sqlite: {}\n");
    setup.device("room", "type: simulated\nprofile: climate\n");
    let out = mesura(&setup, &["read", "room"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.lines().any(|l| l.starts_with("temperature") && l.contains("°C")),
        "{text}"
    );
    assert!(
        text.lines().any(|l| l.starts_with("humidity") && l.contains('%')),
        "{text}"
    );
    assert!(!setup.db_path().exists(), "read must not open the database");
    let out = mesura(&setup, &["read", "nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no valid device `nope`"));
}

#[test]
fn the_example_config_checks_clean() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(BIN)
        .args(["check", "--config", &format!("{root}/config.yaml.example")])
        .output()
        .expect("run");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}{}", text, String::from_utf8_lossy(&out.stderr));
    for device in [
        "electricity — simulated",
        "gas — simulated",
        "living_room — simulated",
        "system — system, every 1m",
    ] {
        assert!(text.contains(device), "{text}");
    }
}

#[test]
fn sighup_reloads_the_device_files() {
    let setup = Setup::new("watch:\n  enabled: false\n");
    setup.device("a", "type: simulated\nprofile: gas\npoll_interval: 1s\n");
    let log = setup.dir.path().join("log.txt");
    let mut child = Command::new(BIN)
        .arg("--config")
        .arg(setup.config_path())
        .env_remove("RUST_LOG")
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn");
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    wait_until(Duration::from_secs(20), "start", || {
        read_log().contains("device started")
    });
    setup.device("b", "type: simulated\nprofile: climate\npoll_interval: 1s\n");
    let hup = Command::new("kill")
        .args(["-HUP", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(hup.success());
    wait_until(Duration::from_secs(20), "the reload", || {
        read_log().contains("reload: +1 ~0 -0 =1")
    });
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill");
    assert!(child.wait().expect("wait").success());
}

/// Whether process `pid` catches SIGTERM (bit 14 of `SigCgt` in /proc/<pid>/status).
fn catches_sigterm(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("SigCgt:"))
                .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        })
        .is_some_and(|mask| mask & (1 << 14) != 0)
}

/// Found by the kill -9 suite: signals were only caught once every backend was open
/// and the devices started, so a SIGTERM during a slow start-up (here, a database
/// another process holds locked) killed the daemon by the default action.
#[test]
fn sigterm_during_a_slow_start_up_still_stops_cleanly() {
    let setup = Setup::new("watch:\n  enabled: false\napi:\n  enabled: false\n");
    setup.device("a", "type: simulated\nprofile: gas\npoll_interval: 1s\n");
    std::fs::create_dir_all(setup.dir.path().join("data")).expect("data dir");
    let lock = rusqlite::Connection::open(setup.db_path()).expect("db");
    lock.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE t (x); BEGIN EXCLUSIVE; INSERT INTO t VALUES (1);")
        .expect("hold the lock");
    let log = setup.dir.path().join("log.txt");
    let child = Command::new(BIN)
        .arg("--config")
        .arg(setup.config_path())
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn");
    // Killed if the test fails, so no daemon outlives it.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Reap(child);
    let child_id = child.0.id();
    // The backends are still opening (SQLite waits for the lock) when SIGTERM comes.
    wait_until(Duration::from_secs(5), "SIGTERM to be caught during start-up", || {
        catches_sigterm(child_id)
    });
    assert!(sqlite_rows(&setup.db_path(), "a") == 0);
    Command::new("kill")
        .args(["-TERM", &child_id.to_string()])
        .status()
        .expect("kill");
    lock.execute_batch("COMMIT").expect("release");
    let exit = child.0.wait().expect("wait");
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(exit.success(), "{exit:?}\n{text}");
    assert!(text.contains("shutdown complete"), "{text}");
}

/// Found by issue 20: `check` passed a config whose SQLite database could not be
/// opened for writing; the daemon then failed at start (or a reload failed).
/// Tests run as root, so the paths fail for root too: a directory, a path under a
/// regular file.
#[test]
fn check_refuses_an_sqlite_path_it_cannot_write() {
    let setup = Setup::new("backends:\n  sqlite:\n    path: store\n");
    setup.device("good", "type: simulated\nprofile: gas\n");
    std::fs::create_dir_all(setup.dir.path().join("data/store")).expect("a directory as the database");
    let out = mesura(&setup, &["check"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text}{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        text.contains("backends.sqlite.path") && text.contains("data/store") && text.contains("is a directory"),
        "{text}"
    );

    std::fs::write(
        setup.config_path(),
        "backends:\n  sqlite:\n    path: /etc/passwd/x.db\n",
    )
    .expect("config");
    let out = mesura(&setup, &["check"]);
    let text = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text}{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(
        text.contains("/etc/passwd/x.db") && text.contains("/etc/passwd is not a directory"),
        "{text}"
    );

    // A directory still to be created is fine (the daemon creates it), and check
    // itself creates nothing.
    std::fs::write(
        setup.config_path(),
        "data_dir: fresh\nbackends:\n  sqlite:\n    path: sub/x.db\n",
    )
    .expect("config");
    let out = mesura(&setup, &["check"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        !setup.dir.path().join("fresh").exists(),
        "check must not create the data directory"
    );
}

#[test]
fn epochs_are_listed_added_and_undone_from_the_command_line() {
    let setup = Setup::new("backends:\n  sqlite: {}\n");
    let text = |o: &std::process::Output| {
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        )
    };
    let list = mesura(&setup, &["epochs", "list"]);
    assert!(list.status.success(), "{}", text(&list));
    assert!(text(&list).contains("no epochs yet"), "{}", text(&list));

    let t1 = (chrono::Utc::now() - chrono::TimeDelta::days(2))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let t2 = (chrono::Utc::now() - chrono::TimeDelta::days(1))
        .format("%Y-%m-%dT%H:%M:%SZ")
        .to_string();
    let add = |start: &str, offset: &str| {
        mesura(
            &setup,
            &[
                "epochs",
                "add",
                "p1",
                "gas_delivered",
                "--start",
                start,
                "--offset",
                offset,
            ],
        )
    };
    let first = add(&t1, "10");
    assert!(first.status.success(), "{}", text(&first));
    // No database yet: nothing stored to recompute, and it says so.
    assert!(text(&first).contains("no stored rows"), "{}", text(&first));
    let second = add(&t2, "-2.5");
    assert!(second.status.success(), "{}", text(&second));
    let list = text(&mesura(&setup, &["epochs", "list", "--device", "p1"]));
    assert_eq!(list.matches("manual").count(), 2, "{list}");
    assert!(list.contains("-2.500") && list.contains(&t1), "{list}");

    let undo = mesura(&setup, &["epochs", "undo", "p1", "gas_delivered"]);
    assert!(undo.status.success(), "{}", text(&undo));
    let list = text(&mesura(&setup, &["epochs", "list"]));
    assert_eq!(list.matches("manual").count(), 1, "{list}");
    assert!(list.contains("(running)") && !list.contains("-2.500"), "{list}");

    let bad = add("yesterday", "1");
    assert!(!bad.status.success());
    assert!(text(&bad).contains("--start yesterday"), "{}", text(&bad));
}

/// `mesura ha backfill` as a user meets it before it can work: without the
/// statistics section it names the section (exit 1), with no database yet it says
/// so; `mesura check` shows the section with the token hidden.
#[test]
fn ha_backfill_says_what_is_missing_and_check_hides_the_token() {
    let setup = Setup::new("backends:\n  mqtt:\n    host: 127.0.0.1\n    homeassistant:\n      enabled: true\n");
    let out = mesura(&setup, &["ha", "backfill", "--dry-run"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("backends.mqtt.homeassistant.statistics is not configured"),
        "{stderr}"
    );

    let port = crate::support::broker::free_port();
    std::fs::write(
        setup.config_path(),
        format!(
            "backends:\n  mqtt:\n    host: 127.0.0.1\n    homeassistant:\n      enabled: true\n      statistics:\n        url: http://127.0.0.1:{port}\n        token: secret-ha-token\n"
        ),
    )
    .expect("config");
    let out = mesura(
        &setup,
        &[
            "ha",
            "backfill",
            "--from",
            "2020-01-01T00:00:00Z",
            "--to",
            "2020-01-02T00:00:00Z",
        ],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("cannot read mesura's database"), "{stderr}");
    assert!(!stderr.contains("secret-ha-token"), "{stderr}");

    let out = mesura(&setup, &["check"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains(&format!("url: http://127.0.0.1:{port}")), "{stdout}");
    assert!(
        !stdout.contains("secret-ha-token") && stdout.contains("token: '***'"),
        "{stdout}"
    );
}
