//! Every example device file in config.d/examples/ parses as it is (with the
//! environment variables the examples reference), and the examples say what their
//! comments promise.

use std::path::{Path, PathBuf};
use std::time::Duration;

use mesura::config::{is_device_file, load_device_file, DeviceKind};

fn env(name: &str) -> Option<String> {
    match name {
        "OWM_API_KEY" => Some("0123456789abcdef0123456789abcdef".into()),
        "EVOHOME_USERNAME" => Some("someone@example.com".into()),
        "EVOHOME_PASSWORD" => Some("secret".into()),
        // Any other secret an example takes from the environment.
        _ => Some("example".into()),
    }
}

fn examples() -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.d/examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("directory entry").path())
        .filter(|p| is_device_file(p))
        .collect();
    files.sort();
    files
}

#[test]
fn every_example_device_file_parses_with_its_environment() {
    let files = examples();
    for name in [
        "openweathermap.yaml",
        "evohome.yaml",
        "multical.yaml",
        "bme280.yaml",
        "p1_serial.yaml",
        "p1_tcp.yaml",
        "homewizard.yaml",
        "modbus_sdm630.yaml",
        "neasmart.yaml",
    ] {
        assert!(
            files.iter().any(|f| f.ends_with(name)),
            "config.d/examples/{name} is missing"
        );
    }
    for file in files {
        let device = load_device_file(&file, &["sqlite", "csv"], &env).unwrap_or_else(|e| panic!("{e}"));
        // A P1 example must name exactly one way to reach the meter.
        if let DeviceKind::Dsmr(dsmr) = &device.kind {
            dsmr.target()
                .unwrap_or_else(|(key, msg)| panic!("{}: {key}: {msg}", file.display()));
        }
    }
}

#[test]
fn the_cloud_examples_are_the_documented_defaults() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.d/examples");
    let owm = load_device_file(&dir.join("openweathermap.yaml"), &[], &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(owm.poll_interval(), Duration::from_secs(600));
    let DeviceKind::Openweathermap(c) = &owm.kind else {
        panic!("{}", owm.kind.type_name())
    };
    assert_eq!(c.appid.expose(), "0123456789abcdef0123456789abcdef");
    assert_eq!(c.base_url, "https://api.openweathermap.org");

    let evo = load_device_file(&dir.join("evohome.yaml"), &[], &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(evo.poll_interval(), Duration::from_secs(300));
    let DeviceKind::Evohome(c) = &evo.kind else {
        panic!("{}", evo.kind.type_name())
    };
    assert_eq!(c.username.expose(), "someone@example.com");
    assert_eq!(c.base_url, "https://tccna.resideo.com/WebAPI/emea/api/v1");
    assert_eq!(c.auth_url, "https://tccna.resideo.com/Auth/OAuth/Token");
    assert!(c.location.is_none());
    // The secrets never show when the device is printed.
    assert!(!format!("{evo:?}").contains("secret"));

    // Without the variables, the files say which one is missing.
    let e = load_device_file(&dir.join("evohome.yaml"), &[], &|_| None)
        .err()
        .map(|e| e.to_string());
    assert!(e.is_some_and(|e| e.contains("EVOHOME_USERNAME")));
}

#[test]
fn the_multical_example_is_the_documented_default() {
    use mesura::monitors::multical::{default_registers, Register};
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.d/examples/multical.yaml");
    let device = load_device_file(&file, &["sqlite"], &env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(device.poll_interval(), Duration::from_secs(15 * 60));
    let DeviceKind::Multical(config) = &device.kind else {
        panic!("expected type multical, got {}", device.kind.type_name());
    };
    assert_eq!(config.registers, default_registers());
    assert_eq!(config.baud_rate, 1200);
    assert!(config.registers.contains(&Register::Energy));
}

#[test]
fn the_bme280_example_is_the_common_breakout() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.d/examples/bme280.yaml");
    let device = load_device_file(&file, &["sqlite"], &env).unwrap_or_else(|e| panic!("{e}"));
    let DeviceKind::Bme280(c) = &device.kind else {
        panic!("expected type bme280, got {}", device.kind.type_name());
    };
    assert_eq!(c.address.0, 0x76);
    assert!(c.dew_point);
}
