//! The system device on a fake sysfs/procfs tree, and on this machine.

use std::sync::Arc;

use chrono::DateTime;

use super::*;
use crate::host::clock::MonotonicClock;

fn write(root: &Path, rel: &str, text: &str) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// Zones 0 (acpitz, no readable temperature), 2 (x86_pkg_temp) and 10 (cpu-thermal):
/// numeric order, not text order, decides which is first.
fn fake_sysfs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "class/thermal/thermal_zone0/type", "acpitz\n");
    write(root, "class/thermal/thermal_zone0/temp", "");
    write(root, "class/thermal/thermal_zone2/type", "x86_pkg_temp\n");
    write(root, "class/thermal/thermal_zone2/temp", "47000\n");
    write(root, "class/thermal/thermal_zone10/type", "cpu-thermal\n");
    write(root, "class/thermal/thermal_zone10/temp", "51540\n");
    // Not a zone: a cooling device sits in the same directory.
    write(root, "class/thermal/cooling_device0/type", "Processor\n");
    dir
}

#[test]
fn thermal_zone_by_type_or_first_readable() {
    let sys = fake_sysfs();
    assert_eq!(cpu_temperature(sys.path(), Some("cpu-thermal")), Ok(Some(51.54)));
    assert_eq!(cpu_temperature(sys.path(), Some("x86_pkg_temp")), Ok(Some(47.0)));
    // No type: zone 0 has no readable temperature, zone 2 is next (before zone 10).
    assert_eq!(cpu_temperature(sys.path(), None), Ok(Some(47.0)));
    let err = cpu_temperature(sys.path(), Some("soc-thermal")).unwrap_err();
    assert!(
        err.contains("soc-thermal") && err.contains("acpitz, x86_pkg_temp, cpu-thermal"),
        "{err}"
    );
}

#[test]
fn no_thermal_zones_means_no_cpu_temperature() {
    let empty = tempfile::tempdir().unwrap();
    assert_eq!(cpu_temperature(empty.path(), None), Ok(None));
    std::fs::create_dir_all(empty.path().join("class/thermal")).unwrap();
    assert_eq!(cpu_temperature(empty.path(), None), Ok(None));
    assert_eq!(cpu_temperature(empty.path(), Some("cpu-thermal")), Ok(None));
}

fn fake_procfs() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    write(root, "loadavg", "0.52 1.25 2.00 1/467 12345\n");
    write(
        root,
        "meminfo",
        "MemTotal:        3884376 kB\nMemFree:          120000 kB\nMemAvailable:    2884376 kB\nBuffers:           10000 kB\n",
    );
    write(root, "uptime", "12345.67 23456.78\n");
    dir
}

fn ctx(data_dir: &Path) -> MonitorContext {
    let start = DateTime::parse_from_rfc3339("2026-11-24T06:00:00Z").unwrap().to_utc();
    MonitorContext {
        id: Arc::from("host"),
        clock: Arc::new(MonotonicClock::starting_at(start)),
        data_dir: data_dir.to_path_buf(),
        poll_interval: std::time::Duration::from_secs(1),
        file: std::path::PathBuf::new(),
    }
}

fn value(readings: &[Reading], metric: &str) -> Option<f64> {
    readings
        .iter()
        .find(|r| &*r.metric == metric)
        .and_then(|r| r.value.as_f64())
}

#[tokio::test]
async fn a_fake_host_reads_exactly() {
    let sys = fake_sysfs();
    let proc_ = fake_procfs();
    let data = tempfile::tempdir().unwrap();
    let config = SystemConfig {
        thermal_zone_type: Some("cpu-thermal".into()),
        disk_paths: None,
        sysfs_root: sys.path().to_path_buf(),
        procfs_root: proc_.path().to_path_buf(),
    };
    // The data dir need not exist yet: its filesystem is the nearest ancestor's.
    let mut m = SystemMonitor::new(&config, ctx(&data.path().join("not/yet")));
    let r = m.read().await.unwrap();
    assert_eq!(value(&r, "cpu_temperature"), Some(51.54));
    assert_eq!(value(&r, "load_1m"), Some(0.52));
    assert_eq!(value(&r, "load_15m"), Some(2.0));
    assert_eq!(value(&r, "memory_used"), Some(1_000_000.0 * 1024.0));
    assert_eq!(value(&r, "memory_available"), Some(2_884_376.0 * 1024.0));
    assert_eq!(value(&r, "uptime"), Some(12346.0));
    for name in [
        "disk_used_percent_root",
        "disk_free_root",
        "disk_used_percent_data",
        "disk_free_data",
    ] {
        assert!(value(&r, name).is_some(), "{name} missing");
        assert!(m.metrics().iter().any(|s| s.name == name), "{name} not in metrics()");
    }
    let memory = r.iter().find(|r| &*r.metric == "memory_used").unwrap();
    assert_eq!(memory.unit, Unit::Byte);

    // A broken source is left out; the rest still arrive.
    write(proc_.path(), "loadavg", "garbage\n");
    let r = m.read().await.unwrap();
    assert_eq!(value(&r, "load_1m"), None);
    assert_eq!(value(&r, "uptime"), Some(12346.0));
    assert!(m.failing.contains_key("load"));
}

#[tokio::test]
async fn nothing_readable_is_an_error() {
    let nowhere = tempfile::tempdir().unwrap();
    let config = SystemConfig {
        thermal_zone_type: None,
        disk_paths: Some(vec![]),
        sysfs_root: nowhere.path().join("sys"),
        procfs_root: nowhere.path().join("proc"),
    };
    let mut m = SystemMonitor::new(&config, ctx(nowhere.path()));
    let e = m.read().await.unwrap_err();
    assert!(e.to_string().contains("loadavg"), "{e}");
}

/// This machine, with the real /proc and /sys: values must be plausible.
#[tokio::test]
async fn this_machine_reads_plausibly() {
    let data = tempfile::tempdir().unwrap();
    let config = SystemConfig {
        thermal_zone_type: None,
        disk_paths: None,
        sysfs_root: default_sysfs_root(),
        procfs_root: default_procfs_root(),
    };
    let mut m = SystemMonitor::new(&config, ctx(data.path()));
    let r = m.read().await.unwrap();
    for load in ["load_1m", "load_5m", "load_15m"] {
        let v = value(&r, load).unwrap();
        assert!(v >= 0.0, "{load} = {v}");
    }
    for disk in ["disk_used_percent_root", "disk_used_percent_data"] {
        let v = value(&r, disk).unwrap();
        assert!((0.0..=100.0).contains(&v), "{disk} = {v}");
    }
    assert!(value(&r, "disk_free_data").unwrap() > 0.0);
    // used = MemTotal − MemAvailable > 0 holds exactly when available ≤ total.
    let used = value(&r, "memory_used").unwrap();
    let available = value(&r, "memory_available").unwrap();
    assert!(used > 0.0 && available > 0.0, "used {used}, available {available}");
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let total_kib: f64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert_eq!(used + available, total_kib * 1024.0);
    assert!(value(&r, "uptime").unwrap() > 0.0);
    if let Some(t) = value(&r, "cpu_temperature") {
        assert!((-40.0..=125.0).contains(&t), "cpu_temperature = {t}");
    }
}

#[test]
fn disk_slugs() {
    assert_eq!(disk_slug(Path::new("/")), "root");
    assert_eq!(disk_slug(Path::new("/var/lib/mesura")), "var_lib_mesura");
    assert_eq!(disk_slug(Path::new("/mnt/USB-disk/")), "mnt_usb_disk");
    let usage = DiskUsage {
        total: 1000,
        used: 450,
        available: 450,
    };
    assert_eq!(usage.used_percent(), Some(50.0));
}

#[test]
fn disk_paths_must_be_absolute_and_distinct() {
    let parse = |yaml: &str| {
        crate::config::parse_device(Path::new("host.yaml"), &format!("type: system\n{yaml}"), &["sqlite"])
            .map_err(|e| e.to_string())
    };
    assert!(parse("disk_paths: [/, /mnt/usb]\n").is_ok());
    let e = parse("disk_paths: [data]\n").unwrap_err();
    assert!(e.contains("key `disk_paths`") && e.contains("absolute"), "{e}");
    let e = parse("disk_paths: [/mnt/a-b, /mnt/a_b]\n").unwrap_err();
    assert!(e.contains("mnt_a_b"), "{e}");
}
