//! The web page in a real headless Chromium (driven over the DevTools protocol,
//! support/cdp.rs) against a running daemon: device names and values appear and
//! update live (server-sent events), charts are drawn, no console errors, and
//! screenshots at phone and desktop sizes are written to target/ and checked;
//! 50 devices render (the time is printed, not asserted).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::support::cdp::{png_pixels, Browser, Page};
use crate::support::{broker::free_port, wait_until, Setup};

/// Loads `url` (again) and waits until the page has drawn its first full refresh.
fn load(page: &mut Page, url: &str) -> String {
    page.navigate(url);
    page.wait_for(
        Duration::from_secs(20),
        "document.readyState === 'complete' && document.getElementById('updated').textContent.startsWith('updated')",
    );
    page.html()
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
        poll_interval: std::time::Duration::from_secs(1),
        file: std::path::PathBuf::new(),
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
    let browser = Browser::launch(&setup.dir.path().join("chromium"));
    let mut page = browser.page();
    page.viewport(1280, 800);
    let first = load(&mut page, &url);
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
    let mut dom = first.clone();
    wait_until(Duration::from_secs(30), "today's cost on the page", || {
        let before = today_total();
        dom = load(&mut page, &url);
        let after = today_total();
        let shown = dom
            .find("data-cost=\"")
            .and_then(|i| dom[i + 11..].split('"').next())
            .and_then(|v| v.parse::<f64>().ok());
        shown.is_some_and(|v| v >= before - 1e-9 && v <= after + 1e-9 && v >= 0.5)
    });
    assert!(dom.contains(" so far: "), "{dom}");
    assert!(
        !first.contains("data-today=\"living_room\""),
        "a device without counters has no cost block"
    );
    let power = value_of(&first, "electricity", "power_delivered").expect("a power value");
    assert!(power.chars().any(|c| c.is_ascii_digit()), "{power}");
    // A chart with axes per device: uPlot's canvas, drawn from /api/readings.
    page.wait_for(
        Duration::from_secs(20),
        "document.querySelectorAll('[data-device] .uplot canvas').length >= 2",
    );

    // The values move without a reload: the simulated meter's power is noisy, its
    // counter rises, and the page hears of it through /api/events.
    page.wait_for(
        Duration::from_secs(10),
        "document.getElementById('live').textContent === 'live'",
    );
    let mut later = String::new();
    wait_until(Duration::from_secs(30), "a changed value", || {
        later = page.html();
        [
            "power_delivered",
            "voltage_l1",
            "energy_delivered_tariff1",
            "energy_delivered_tariff2",
        ]
        .iter()
        .any(|m| value_of(&first, "electricity", m) != value_of(&later, "electricity", m))
    });

    let errors = page.errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}

/// A reading reaches the DOM within 2 s of being stored, over the event stream;
/// no console errors; human units; screenshots at a phone's and a desktop's size.
#[test]
fn the_page_is_live_and_readable_on_a_phone_and_a_desktop() {
    let port = free_port();
    let setup = Setup::new(&format!(
        "backends:\n  sqlite:\n    flush_interval: 200ms\nwatch:\n  enabled: false\napi:\n  listen: 127.0.0.1:{port}\n"
    ));
    setup
        .device(
            "electricity",
            "type: simulated\nprofile: electricity\npoll_interval: 1s\n",
        )
        .device("gas", "type: simulated\nprofile: gas\npoll_interval: 1s\n")
        .device("living_room", "type: simulated\nprofile: climate\npoll_interval: 1s\n")
        .device("host", "type: system\npoll_interval: 2s\n")
        .device(
            "broken",
            "type: simulated\nprofile: climate\npoll_interval: 1s\nfailure_rate: 1.0\n",
        );
    stored_history(&setup.db_path(), "electricity", 3600);
    let _daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_mesura"))
            .arg("--config")
            .arg(setup.config_path())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    wait_until(Duration::from_secs(20), "rows of every device", || {
        ["electricity", "gas", "living_room", "host"]
            .iter()
            .all(|d| crate::support::sqlite_rows(&setup.db_path(), d) > 1)
    });
    let url = format!("http://127.0.0.1:{port}/");
    let browser = Browser::launch(&setup.dir.path().join("chromium"));
    let mut page = browser.page();
    page.viewport(1280, 800);
    load(&mut page, &url);
    page.wait_for(
        Duration::from_secs(10),
        "document.getElementById('live').textContent === 'live'",
    );
    page.wait_for(
        Duration::from_secs(20),
        "document.querySelectorAll('[data-device] .uplot canvas').length >= 4",
    );

    // Live: the newest row the SQLite backend stores shows on the card within 2 s
    // (the page polls only once a minute while the stream is up).
    let newest = |db: &Path| -> i64 {
        rusqlite::Connection::open(db)
            .and_then(|c| c.query_row("SELECT coalesce(max(ts), 0) FROM electricity", [], |r| r.get(0)))
            .unwrap_or(0)
    };
    let shown = |page: &mut Page| -> i64 {
        page.eval("Number(document.querySelector('[data-device=\"electricity\"]').getAttribute('data-last-ts') || 0)")
            .as_i64()
            .unwrap_or(0)
    };
    let before = newest(&setup.db_path()).max(shown(&mut page));
    let deadline = Instant::now() + Duration::from_secs(20);
    let (row, stored_at) = loop {
        let ts = newest(&setup.db_path());
        if ts > before {
            break (ts, Instant::now());
        }
        assert!(Instant::now() < deadline, "no new row after {before}");
        page.pump(Duration::from_millis(10));
    };
    let deadline = stored_at + Duration::from_secs(2);
    while shown(&mut page) < row {
        assert!(
            Instant::now() < deadline,
            "the row at {row} was not on the page within 2 s of being stored"
        );
        page.pump(Duration::from_millis(10));
    }
    let latency = stored_at.elapsed();
    let behind_row = chrono::Utc::now().timestamp_millis() - row * 1000;
    println!("reading on the page {latency:?} after the test saw its row stored, {behind_row} ms after the row's second began");
    assert!(behind_row < 3000, "{behind_row} ms after the row's ts");

    // People's units: the host's disk in GiB, its uptime in days or hours and minutes.
    let dom = page.html();
    let card = &dom[dom.find("data-device=\"host\"").expect("the host's card")..];
    let card = &card[..card.find("</section>").unwrap_or(card.len())];
    assert!(card.contains("GiB"), "{card}");
    assert!(!card.contains(">B<"), "raw bytes: {card}");
    assert!(card.contains("reads ok"), "{card}");
    assert!(dom.contains("last reading "), "{dom}");
    assert!(
        dom.contains("id=\"backends\"") && dom.contains("data-backend-row=\"sqlite\""),
        "{dom}"
    );
    assert!(dom.contains("data-energy=\"delivered\""), "energy today: {dom}");
    // A device whose every read fails: a red dot, its error, none of its reads ok.
    page.wait_for(
        Duration::from_secs(10),
        "document.querySelector('[data-device=\"broken\"] .dot.bad') && document.querySelector('[data-success=\"broken\"]')",
    );
    let broken = page.eval("document.querySelector('[data-device=\"broken\"]').textContent");
    let broken = broken.as_str().unwrap_or_default();
    assert!(
        broken.contains("failing: ") && broken.contains("0 % of reads ok"),
        "{broken}"
    );

    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("target");
    for (width, height) in [(390, 844), (1280, 800)] {
        page.viewport(width, height);
        page.wait_for(Duration::from_secs(10), &format!("window.innerWidth === {width}"));
        // Charts follow the new width.
        page.wait_for(
            Duration::from_secs(10),
            &format!("[...document.querySelectorAll('.uplot')].every(u => u.getBoundingClientRect().right <= {width})"),
        );
        let png = page.screenshot();
        let path = target.join(format!("page-{width}x{height}.png"));
        std::fs::write(&path, &png).expect("write the screenshot");
        let (w, h, pixels) = png_pixels(&png);
        assert_eq!((w, h), (width, height), "{}", path.display());
        let mut counts = std::collections::HashMap::new();
        for p in &pixels {
            *counts.entry(*p).or_insert(0usize) += 1;
        }
        let commonest = counts.values().copied().max().unwrap_or(0);
        println!(
            "{}: {} bytes, {} colours, the commonest on {:.0} % of pixels",
            path.display(),
            png.len(),
            counts.len(),
            100.0 * commonest as f64 / pixels.len() as f64
        );
        assert!(png.len() > 20_000, "{} is {} bytes", path.display(), png.len());
        assert!(counts.len() > 50, "{} has {} colours", path.display(), counts.len());
        assert!(
            (commonest as f64) < 0.9 * pixels.len() as f64,
            "{} is nearly one colour",
            path.display()
        );
    }
    // Dark mode follows the system: the phone page in dark is mostly dark.
    page.viewport(390, 844);
    page.call(
        "Emulation.setEmulatedMedia",
        serde_json::json!({"features": [{"name": "prefers-color-scheme", "value": "dark"}]}),
    );
    page.wait_for(
        Duration::from_secs(10),
        "getComputedStyle(document.body).backgroundColor === 'rgb(18, 21, 25)'",
    );
    let png = page.screenshot();
    std::fs::write(target.join("page-390x844-dark.png"), &png).expect("write the screenshot");
    let (_, _, pixels) = png_pixels(&png);
    let dark = pixels
        .iter()
        .filter(|p| u32::from(p[0]) + u32::from(p[1]) + u32::from(p[2]) < 3 * 60)
        .count();
    assert!(dark * 2 > pixels.len(), "{dark} of {} pixels dark", pixels.len());
    let errors = page.errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
}

/// 50 devices: every card and chart renders; the time it takes is printed
/// (docs/benchmarks.md), not asserted.
#[test]
fn the_page_renders_fifty_devices() {
    let port = free_port();
    let setup = Setup::new(&format!(
        "backends:\n  sqlite:\n    flush_interval: 500ms\nwatch:\n  enabled: false\napi:\n  listen: 127.0.0.1:{port}\n"
    ));
    let profiles = ["electricity", "gas", "climate"];
    for i in 0..50 {
        setup.device(
            &format!("device_{i:02}"),
            &format!("type: simulated\nprofile: {}\npoll_interval: 2s\n", profiles[i % 3]),
        );
    }
    let _daemon = Daemon(
        Command::new(env!("CARGO_BIN_EXE_mesura"))
            .arg("--config")
            .arg(setup.config_path())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn"),
    );
    wait_until(Duration::from_secs(60), "three rows of every device", || {
        (0..50).all(|i| crate::support::sqlite_rows(&setup.db_path(), &format!("device_{i:02}")) >= 3)
    });
    let browser = Browser::launch(&setup.dir.path().join("chromium"));
    let mut page = browser.page();
    page.viewport(1280, 800);
    let started = Instant::now();
    page.navigate(&format!("http://127.0.0.1:{port}/"));
    page.wait_for(
        Duration::from_secs(60),
        "document.querySelectorAll('[data-device] .uplot canvas').length === 50",
    );
    let rendered = started.elapsed();
    let timing = page.eval(
        "JSON.stringify({dom: performance.getEntriesByType('navigation')[0].domContentLoadedEventEnd, now: performance.now()})",
    );
    println!("50 devices: every card and chart drawn {rendered:?} after navigating ({timing})");
    // Live with 50 devices: readings keep arriving while the page is open.
    page.wait_for(
        Duration::from_secs(10),
        "document.getElementById('live').textContent === 'live'",
    );
    let errors = page.errors();
    assert!(errors.is_empty(), "console errors: {errors:#?}");
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

    let browser = Browser::launch(&setup.dir.path().join("chromium"));
    let mut page = browser.page();
    let dom = load(&mut page, &format!("http://127.0.0.1:{port}/"));
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
