//! The web page in a real headless Chromium against a running daemon: device names
//! and values appear, and they update. Saves a phone-sized screenshot to
//! target/page-screenshot.png.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::support::{broker::free_port, wait_until, Setup};

fn chromium() -> PathBuf {
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

/// Loads the page, lets its scripts run for a few (virtual) seconds, returns the DOM.
fn render(url: &str, profile: &Path, extra: &[&str]) -> String {
    let out = Command::new(chromium())
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(extra)
        .arg(url)
        .output()
        .expect("run chromium");
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of the value cell of `metric` in the card of `device`.
fn value_of(dom: &str, device: &str, metric: &str) -> Option<String> {
    let card = &dom[dom.find(&format!("data-device=\"{device}\""))?..];
    let row = &card[card.find(&format!("data-metric=\"{metric}\""))?..];
    let cell = &row[row.find("class=\"v\">")? + 10..];
    Some(cell[..cell.find('<')?].to_owned())
}

/// Writes the simulated electricity meter `device`'s readings of the last `secs`
/// seconds, one a minute, into the database as the SQLite backend lays them out
/// (the simulation's counters are a function of the wall clock, so the running
/// daemon's readings continue them), with the lifetime columns equal to the raw ones.
fn stored_history(db: &Path, device: &str, secs: i64) {
    use mesura::host::clock::JumpingClock;
    use mesura::monitors::Monitor;
    std::fs::create_dir_all(db.parent().expect("dir")).expect("dir");
    let config: mesura::monitors::simulated::SimulatedConfig =
        serde_yaml_ng::from_str("profile: electricity").expect("config");
    let clock = std::sync::Arc::new(JumpingClock::starting_at(
        chrono::Utc::now() - chrono::TimeDelta::seconds(secs),
    ));
    let ctx = mesura::monitors::MonitorContext {
        id: device.into(),
        clock: clock.clone(),
        data_dir: db.parent().expect("dir").to_path_buf(),
    };
    let mut monitor = mesura::monitors::simulated::SimulatedMonitor::new(&config, ctx);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut conn = rusqlite::Connection::open(db).expect("db");
    let tx = conn.transaction().expect("tx");
    tx.execute_batch(&format!(
        "CREATE TABLE IF NOT EXISTS metrics (device TEXT NOT NULL, metric TEXT NOT NULL, unit TEXT NOT NULL, kind TEXT NOT NULL, PRIMARY KEY (device, metric)) WITHOUT ROWID;
         CREATE TABLE \"{device}\" (ts INTEGER PRIMARY KEY NOT NULL);"
    ))
    .expect("tables");
    let mut columns = std::collections::BTreeSet::new();
    for _ in 0..secs / 60 {
        let readings = runtime.block_on(monitor.read()).expect("read");
        for r in &readings {
            let Some(value) = r.value.as_f64() else { continue };
            let mut names = vec![(r.metric.to_string(), r.kind.as_str())];
            if r.kind.as_str() == "counter" {
                names.push((format!("{}_lifetime", r.metric), "counter"));
            }
            for (name, kind) in names {
                if columns.insert(name.clone()) {
                    tx.execute(&format!("ALTER TABLE \"{device}\" ADD COLUMN \"{name}\" REAL"), [])
                        .expect("column");
                    tx.execute(
                        "INSERT OR REPLACE INTO metrics VALUES (?1, ?2, ?3, ?4)",
                        (device, &name, r.unit.symbol(), kind),
                    )
                    .expect("catalogue");
                }
                tx.execute(
                    &format!("INSERT INTO \"{device}\" (ts, \"{name}\") VALUES (?1, ?2) ON CONFLICT(ts) DO UPDATE SET \"{name}\" = excluded.\"{name}\""),
                    (r.timestamp.timestamp(), value),
                )
                .expect("row");
            }
        }
        clock.jump(chrono::TimeDelta::seconds(60));
    }
    tx.commit().expect("commit");
}

struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_page_shows_devices_and_values_and_updates_them() {
    let port = free_port();
    let setup = Setup::new(&format!(
        "backends:\n  sqlite:\n    flush_interval: 200ms\nwatch:\n  enabled: false\napi:\n  listen: 127.0.0.1:{port}\n"
    ));
    setup
        .device(
            "electricity",
            "type: simulated\nprofile: electricity\npoll_interval: 1s\ntariff:\n  fixed_price: 0.30\n  daily_fixed: 0.50\n",
        )
        .device("living_room", "type: simulated\nprofile: climate\npoll_interval: 1s\n");
    // The meter's last two hours, as the daemon would have stored them: the cost
    // job has closed slots to cost at once.
    stored_history(&setup.db_path(), "electricity", 2 * 3600);
    let _daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_mesura"))
            .arg("--config")
            .arg(setup.config_path())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    wait_until(Duration::from_secs(20), "the API", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    wait_until(Duration::from_secs(20), "some rows", || {
        crate::support::sqlite_rows(&setup.db_path(), "electricity") > 2
    });
    let url = format!("http://127.0.0.1:{port}/");
    let profile = setup.dir.path().join("chromium");

    let first = render(&url, &profile, &["--dump-dom"]);
    for needle in [
        "data-device=\"electricity\"",
        "data-device=\"living_room\"",
        "power delivered",
        "temperature",
        "°C",
    ] {
        assert!(first.contains(needle), "{needle} not on the page:\n{first}");
    }
    // Today so far: the meter with a tariff shows what the cost job summed for the
    // running day, as /api/costs says (asked before and after: costs only grow as
    // slots close), daily fixed costs included.
    let today_total = || -> f64 {
        let midnight = chrono::Local::now()
            .date_naive()
            .and_hms_opt(0, 0, 0)
            .and_then(|t| t.and_local_timezone(chrono::Local).earliest())
            .expect("midnight")
            .timestamp()
            - 86_400;
        let answer = http_get(
            port,
            &format!("/api/costs?device=electricity&group=day&from={midnight}"),
        );
        let Some((_, body)) = answer.split_once("\r\n\r\n") else {
            return 0.0;
        };
        let json = crate::support::api::json(body);
        json["periods"]
            .as_array()
            .and_then(|p| p.last())
            .and_then(|p| p["total"].as_f64())
            .unwrap_or(0.0)
    };
    let mut page = first.clone();
    wait_until(Duration::from_secs(30), "today's cost on the page", || {
        let before = today_total();
        page = render(&url, &profile, &["--dump-dom"]);
        let after = today_total();
        let shown = page
            .find("data-cost=\"")
            .and_then(|i| page[i + 11..].split('"').next())
            .and_then(|v| v.parse::<f64>().ok());
        shown.is_some_and(|v| v >= before - 1e-9 && v <= after + 1e-9 && v >= 0.5)
    });
    assert!(page.contains(" so far: "), "{page}");
    assert!(
        !first.contains("data-today=\"living_room\""),
        "a device without counters has no cost block"
    );
    let power = value_of(&first, "electricity", "power_delivered").expect("a power value");
    assert!(power.chars().any(|c| c.is_ascii_digit()), "{power}");
    assert!(first.contains("<polyline"), "a sparkline is drawn");

    // The values move: the simulated meter's power is noisy, its counter rises.
    let mut later = String::new();
    wait_until(Duration::from_secs(30), "a changed value", || {
        later = render(&url, &profile, &["--dump-dom"]);
        [
            "power_delivered",
            "voltage_l1",
            "energy_delivered_tariff1",
            "energy_delivered_tariff2",
        ]
        .iter()
        .any(|m| value_of(&first, "electricity", m) != value_of(&later, "electricity", m))
    });

    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/page-screenshot.png");
    render(
        &url,
        &profile,
        &[
            &format!("--screenshot={}", shot.display()),
            "--window-size=412,915",
            "--hide-scrollbars",
        ],
    );
    assert!(
        std::fs::metadata(&shot).map(|m| m.len() > 10_000).unwrap_or(false),
        "no screenshot at {}",
        shot.display()
    );
}

/// A plain GET to the daemon's API: the whole answer, status line included.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    let mut answer = String::new();
    if stream.write_all(request.as_bytes()).is_ok() {
        let _ = stream.read_to_string(&mut answer);
    }
    answer
}

/// What is broken shows on the page: a device file broken while its device runs
/// (on the device's card) and a backend that cannot deliver (above the cards).
#[test]
fn the_page_shows_a_broken_device_file_and_a_failing_backend() {
    let port = free_port();
    // Nothing listens there: every delivery fails.
    let nobody = free_port();
    let setup = Setup::new(&format!(
        "backends:\n  sqlite:\n    flush_interval: 200ms\n  uplink:\n    url: http://127.0.0.1:{nobody}/ingest\n    \
         batch_interval: 200ms\n    max_backoff: 1s\n    timeout: 1s\nwatch:\n  enabled: false\napi:\n  listen: 127.0.0.1:{port}\n"
    ));
    setup.device(
        "electricity",
        "type: simulated\nprofile: electricity\npoll_interval: 1s\n",
    );
    let daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_mesura"))
            .arg("--config")
            .arg(setup.config_path())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    wait_until(Duration::from_secs(20), "the uplink failing", || {
        http_get(port, "/health").contains("\"healthy\":false")
    });
    setup.device(
        "electricity",
        "type: simulated\nprofile: electricity\npoll_intervall: 1s\n",
    );
    let hup = Command::new("kill")
        .args(["-HUP", &daemon.0.id().to_string()])
        .status()
        .expect("kill");
    assert!(hup.success());
    wait_until(Duration::from_secs(20), "the broken file in /health", || {
        http_get(port, "/health").contains("running the previous settings")
    });
    // For docs/troubleshooting.md (`--nocapture`).
    println!("--- unreachable uplink\n{}", http_get(port, "/health"));

    let dom = render(
        &format!("http://127.0.0.1:{port}/"),
        &setup.dir.path().join("chromium"),
        &["--dump-dom"],
    );
    let card = &dom[dom.find("data-device=\"electricity\"").expect("the card")..];
    let card = &card[..card.find("</section>").unwrap_or(card.len())];
    assert!(
        card.contains("poll_intervall") && card.contains("running the previous settings"),
        "{card}"
    );
    let problems = &dom[dom.find("id=\"problems\"").expect("the problems")..];
    assert!(problems.contains("data-backend=\"uplink\""), "{problems}");
    assert!(problems.contains("backend uplink failing"), "{problems}");
}
