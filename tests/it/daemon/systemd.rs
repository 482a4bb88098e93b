//! The systemd unit: `systemd-analyze verify` accepts it and `systemd-analyze
//! security --offline=yes` rates its sandbox at most 2.5 ("OK"; the goal is ≤ 2.0).
//! scripts/test.sh installs systemd-analyze when it is missing; without it these
//! tests fail, they never pass silently.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The exposure score above which the unit counts as not hardened enough.
const MAX_EXPOSURE: f64 = 2.5;

fn unit_source() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("systemd/mesura.service");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A copy of the unit whose commands point at the binary just built: `verify` checks
/// that every Exec*= command exists, and /usr/bin/mesura does not outside a Pi.
fn unit_for_test(dir: &Path) -> PathBuf {
    let text = unit_source().replace("/usr/bin/mesura", env!("CARGO_BIN_EXE_mesura"));
    let path = dir.join("mesura.service");
    std::fs::write(&path, text).expect("write the unit copy");
    path
}

fn systemd_analyze(args: &[&str], unit: &Path) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .args(args)
        .arg(unit)
        .current_dir(unit.parent().expect("the unit has a directory"))
        .output()
        .unwrap_or_else(|e| {
            panic!("systemd-analyze cannot run ({e}): scripts/test.sh installs it (package `systemd`)")
        });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn unit_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = unit_for_test(dir.path());
    let (ok, text) = systemd_analyze(&["verify", "--man=no"], &unit);
    assert!(ok, "systemd-analyze verify failed:\n{text}");
    // verify reports some problems as warnings with exit status 0.
    let warnings: Vec<&str> = text.lines().filter(|l| l.contains("mesura.service")).collect();
    assert!(warnings.is_empty(), "systemd-analyze verify warns:\n{text}");
}

#[test]
fn sandbox_exposure_is_low() {
    let dir = tempfile::tempdir().expect("tempdir");
    let unit = unit_for_test(dir.path());
    let (_, text) = systemd_analyze(&["security", "--offline=yes", "--no-pager"], &unit);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split_once("Overall exposure level for mesura.service:"))
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in the output:\n{text}"));
    eprintln!("exposure score: {score}");
    assert!(
        score <= MAX_EXPOSURE,
        "exposure {score} > {MAX_EXPOSURE}: the sandbox lost a setting\n{text}"
    );
}

/// The settings the issue asks for and the daemon relies on are all there.
#[test]
fn unit_has_the_settings_the_daemon_relies_on() {
    let text = unit_source();
    let settings: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .collect();
    for wanted in [
        "Type=notify",
        "WatchdogSec=60",
        "ExecStartPre=/usr/bin/mesura check --config /etc/mesura/config.yaml",
        "ExecStart=/usr/bin/mesura run --config /etc/mesura/config.yaml",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
        "User=mesura",
        "SupplementaryGroups=dialout i2c",
        "StateDirectory=mesura",
        "ConfigurationDirectory=mesura",
        "Environment=MESURA_DATA_DIR=/var/lib/mesura",
        "ProtectSystem=strict",
        "DevicePolicy=closed",
        "DeviceAllow=char-ttyUSB rw",
        "DeviceAllow=char-i2c rw",
        "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6",
        "SystemCallFilter=@system-service",
        "CapabilityBoundingSet=",
        "MemoryDenyWriteExecute=yes",
        "UMask=0077",
    ] {
        assert!(settings.contains(&wanted), "the unit lacks `{wanted}`");
    }
    // The system device reads /proc/loadavg, /proc/meminfo and /proc/uptime.
    assert!(
        !settings.iter().any(|l| l.starts_with("ProcSubset=pid")),
        "ProcSubset=pid hides what the system device reads"
    );
    // LoadCredential= examples are there for the secrets.
    assert!(text.contains("#LoadCredential=mqtt_password:"));
}

/// The production config the .deb installs passes `mesura check`, as the unit's
/// ExecStartPre runs it (with the unit's MESURA_DATA_DIR).
#[test]
fn the_packaged_config_passes_check() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let data = tempfile::tempdir().expect("tempdir");
    let out = Command::new(env!("CARGO_BIN_EXE_mesura"))
        .args(["check", "--config"])
        .arg(root.join("packaging/config.yaml"))
        .env("MESURA_DATA_DIR", data.path())
        .output()
        .expect("run mesura check");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains(&format!("data_dir: {}", data.path().display())), "{text}");
    assert!(text.contains("devices_dir: /etc/mesura/config.d"), "{text}");
}

/// Every file the .deb's `assets` name (in Cargo.toml) exists, so `cargo deb` does
/// not fail on a renamed file; the unit is where `systemd-units` looks for it.
#[test]
fn the_deb_assets_exist() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let cargo = std::fs::read_to_string(root.join("Cargo.toml")).expect("Cargo.toml");
    let section = cargo
        .split("[package.metadata.deb]")
        .nth(1)
        .expect("a [package.metadata.deb] section");
    let mut sources = 0;
    for line in section.lines().map(str::trim).filter(|l| l.starts_with("[\"")) {
        let source = line.trim_start_matches("[\"").split('"').next().unwrap_or_default();
        sources += 1;
        if source.starts_with("target/") {
            continue;
        }
        match source.rsplit_once("/*") {
            Some((dir, ext)) => {
                let found = std::fs::read_dir(root.join(dir))
                    .unwrap_or_else(|e| panic!("{dir}: {e}"))
                    .filter_map(Result::ok)
                    .any(|e| e.file_name().to_string_lossy().ends_with(ext));
                assert!(found, "no file matches the asset {source}");
            }
            None => assert!(root.join(source).is_file(), "the asset {source} does not exist"),
        }
    }
    assert!(sources >= 5, "{sources} assets found: the parser lost them");
    assert!(section.contains("unit-scripts = \"systemd/\""));
    assert!(root.join("systemd/mesura.service").is_file());
    for script in ["debian/postinst", "debian/postrm"] {
        let text = std::fs::read_to_string(root.join(script)).expect(script);
        assert!(text.contains("#DEBHELPER#"), "{script} lacks the #DEBHELPER# marker");
    }
}

/// cargo-deb replaces EVERY `#DEBHELPER#` in a maintainer script with its systemd
/// snippet (`str::replace`), comments included; a marker in a comment left the
/// snippet's later lines as code and `dpkg -i` failed with a syntax error. Each
/// script is expanded the same way here and parsed by dash, the /bin/sh of Debian.
/// (scripts/test-deb.sh checks the scripts of the real package.)
#[test]
fn maintainer_scripts_parse_after_the_debhelper_expansion() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Shaped like cargo-deb's autoscripts: a comment line, then a multi-line block.
    let snippet = "# Automatically added by cargo-deb\nif [ \"$1\" = configure ]; then\n\t:\nfi\n# End automatically added section\n";
    for script in ["debian/postinst", "debian/postrm"] {
        let text = std::fs::read_to_string(root.join(script)).expect(script);
        let markers: Vec<&str> = text.lines().filter(|l| l.contains("#DEBHELPER#")).collect();
        assert_eq!(
            markers,
            ["#DEBHELPER#"],
            "{script}: the marker must stand alone on one line, once"
        );
        let expanded = text.replace("#DEBHELPER#", snippet);
        let mut dash = Command::new("dash")
            .arg("-n")
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run dash (Debian's /bin/sh)");
        // Taken out of `dash` so that it is closed (EOF) before the wait.
        let mut stdin = dash.stdin.take().expect("dash stdin");
        stdin.write_all(expanded.as_bytes()).expect("feed dash");
        drop(stdin);
        let out = dash.wait_with_output().expect("wait for dash");
        assert!(
            out.status.success(),
            "{script} after cargo-deb's expansion: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
