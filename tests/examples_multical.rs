//! Every example device file in config.d/examples/ parses as it is, and the
//! multical example says what its comments promise.

mod common;

use std::path::{Path, PathBuf};

use common::no_env;
use mesura::config::{is_device_file, load_device_file, DeviceKind};
use mesura::monitors::multical::{default_registers, Register};

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
fn every_example_device_file_parses() {
    let files = examples();
    assert!(!files.is_empty(), "no example device files found");
    for file in files {
        // Examples take secrets from the environment (`${OWM_API_KEY}`): any value will do.
        if let Err(e) = load_device_file(&file, &["sqlite", "csv"], &|_: &str| Some("example".to_string())) {
            panic!("{e}");
        }
    }
}

#[test]
fn the_multical_example_is_the_documented_default() {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("config.d/examples/multical.yaml");
    let device = load_device_file(&file, &["sqlite"], &no_env).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(&*device.id, "multical");
    assert_eq!(device.poll_interval(), std::time::Duration::from_secs(15 * 60));
    let DeviceKind::Multical(config) = &device.kind else {
        panic!("expected type multical, got {}", device.kind.type_name());
    };
    assert_eq!(config.registers, default_registers());
    assert_eq!(config.baud_rate, 1200);
    assert!(config.registers.contains(&Register::Energy));
}
