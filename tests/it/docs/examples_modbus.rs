//! The Modbus and Nea Smart examples say what their comments promise, and the
//! shipped presets load. (That every example parses is tests/it/docs/examples.rs.)

use std::path::Path;

use crate::support::no_env;
use mesura::config::{load_device_file, DeviceKind};
use mesura::monitors::modbus::config::{load_points, preset_names};

fn example(name: &str) -> DeviceKind {
    let file = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config.d/examples")
        .join(name);
    load_device_file(&file, &["sqlite"], &no_env)
        .unwrap_or_else(|e| panic!("{e}"))
        .kind
}

#[test]
fn the_sdm630_example_uses_the_preset_over_rtu() {
    let DeviceKind::Modbus(config) = example("modbus_sdm630.yaml") else {
        panic!("not a modbus device");
    };
    assert_eq!(config.preset.as_deref(), Some("sdm630"));
    assert!(config.serial_port.is_some() && config.host.is_none());
    let points = load_points(&config, Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
    assert!(points.iter().any(|p| p.name == "energy_import"));
}

#[test]
fn the_sunspec_and_neasmart_examples() {
    let DeviceKind::Modbus(config) = example("modbus_sunspec.yaml") else {
        panic!("not a modbus device");
    };
    assert!(config.sunspec && config.host.is_some());
    let DeviceKind::Neasmart(config) = example("neasmart.yaml") else {
        panic!("not a neasmart device");
    };
    assert_eq!(config.slave_ids, [240, 241]);
    assert_eq!(config.baud_rate, 38_400);
}

#[test]
fn every_preset_is_shipped_and_loads() {
    assert!(preset_names().contains(&"sdm630") && preset_names().contains(&"sunspec_inverter"));
    for name in preset_names() {
        let yaml = format!("type: modbus\nhost: localhost\npreset: {name}\n");
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("dev.yaml");
        std::fs::write(&file, yaml).expect("write");
        let device = load_device_file(&file, &["sqlite"], &no_env).unwrap_or_else(|e| panic!("{e}"));
        let DeviceKind::Modbus(config) = device.kind else {
            panic!("not modbus");
        };
        let points = load_points(&config, dir.path()).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert!(points.len() >= 20, "{name}");
    }
}
