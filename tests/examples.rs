//! The example device files in config.d/examples/ are what users copy: each must
//! pass the checks `mesura check` applies, so they cannot rot as the code changes.

mod common;

use std::path::PathBuf;

use common::no_env;
use mesura::config::{load_device_file, DeviceKind};

#[test]
fn every_example_device_file_checks_clean() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("config.d/examples");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("config.d/examples")
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| mesura::config::is_device_file(p))
        .collect();
    files.sort();
    let mut types = Vec::new();
    for file in &files {
        let device = load_device_file(file, &["sqlite", "csv"], &no_env)
            .unwrap_or_else(|e| panic!("{} does not check clean: {e}", file.display()));
        types.push(device.kind.type_name());
        if let DeviceKind::Dsmr(dsmr) = &device.kind {
            dsmr.target()
                .unwrap_or_else(|(key, msg)| panic!("{}: {key}: {msg}", file.display()));
        }
    }
    // One example per way of connecting a P1 meter, at least.
    for wanted in ["dsmr", "homewizard"] {
        assert!(
            types.contains(&wanted),
            "no example of type {wanted} in {}",
            dir.display()
        );
    }
    assert!(files.len() >= 4, "{files:?}");
}
