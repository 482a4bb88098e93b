//! Every example device file parses as it is shipped.

use std::path::Path;

use mesura::config::{load_device_file, DeviceKind};

#[test]
fn every_example_device_file_parses() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.d/examples");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .expect("config.d/examples")
        .map(|e| e.expect("entry").path())
        .filter(|p| mesura::config::is_device_file(p))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no example files in {}", dir.display());
    let mut types = Vec::new();
    for file in &files {
        let device =
            load_device_file(file, &["sqlite", "csv"], &|_| None).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
        types.push(device.kind.type_name());
        if let DeviceKind::Bme280(c) = &device.kind {
            assert_eq!(c.address.0, 0x76, "{}", file.display());
            assert!(c.dew_point);
        }
    }
    assert!(types.contains(&"bme280"), "{types:?}");
}
