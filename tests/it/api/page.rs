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
            "type: simulated\nprofile: electricity\npoll_interval: 1s\n",
        )
        .device("living_room", "type: simulated\nprofile: climate\npoll_interval: 1s\n");
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
