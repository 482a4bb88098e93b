//! `type: system`: the host mesura runs on — CPU temperature, load, memory, disk
//! space and uptime, from procfs, sysfs and statvfs. No hardware, no privileges.
//!
//! Each source is read on its own: a machine without a thermal zone (a VM, a
//! container) still reports load and memory; a source that fails is left out of
//! that poll and logged once, and only a poll where every source fails is an error.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::{DeviceType, Monitor, MonitorContext, MonitorError};
use crate::config::common::CommonConfig;
use crate::host::{disk_usage, DiskUsage};
use crate::reading::{intern, MetricSpec, Reading, Unit};

/// `type: system`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct SystemConfig {
    /// The thermal zone to report as `cpu_temperature`, by its `type` in
    /// `/sys/class/thermal/thermal_zone*/type` (`cpu-thermal` on a Raspberry Pi,
    /// `x86_pkg_temp` on Intel). Default: the first zone that has a temperature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub thermal_zone_type: Option<String>,
    /// Absolute paths whose filesystems are reported as `disk_used_percent_<slug>` and
    /// `disk_free_<slug>`. Default: `/` (slug `root`) and the data dir (slug `data`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub disk_paths: Option<Vec<PathBuf>>,
    /// Where sysfs is mounted (tests point this at a fake tree).
    #[serde(default = "default_sysfs_root")]
    pub sysfs_root: PathBuf,
    /// Where procfs is mounted.
    #[serde(default = "default_procfs_root")]
    pub procfs_root: PathBuf,
}

pub fn default_sysfs_root() -> PathBuf {
    PathBuf::from("/sys")
}
pub fn default_procfs_root() -> PathBuf {
    PathBuf::from("/proc")
}

impl DeviceType for SystemConfig {
    fn default_poll_interval() -> Duration {
        Duration::from_secs(60)
    }

    fn validate(&self, _common: &CommonConfig) -> Result<(), (String, String)> {
        let Some(paths) = &self.disk_paths else {
            return Ok(());
        };
        let mut seen: HashMap<String, &Path> = HashMap::new();
        for p in paths {
            if !p.is_absolute() {
                return Err((
                    "disk_paths".into(),
                    format!("`{}` must be an absolute path", p.display()),
                ));
            }
            if let Some(other) = seen.insert(disk_slug(p), p) {
                return Err((
                    "disk_paths".into(),
                    format!(
                        "`{}` and `{}` give the same metric name suffix `{}`",
                        other.display(),
                        p.display(),
                        disk_slug(p)
                    ),
                ));
            }
        }
        Ok(())
    }

    fn metrics() -> Vec<MetricSpec> {
        all_metrics()
    }

    fn build(&self, ctx: MonitorContext) -> Result<Box<dyn Monitor>, MonitorError> {
        Ok(Box::new(SystemMonitor::new(self, ctx)))
    }
}

/// The metric-name suffix of a path: `/` is `root`; otherwise the path lower-cased
/// with every run of other characters than `a-z0-9` made one `_`, e.g.
/// `/mnt/USB-disk` → `mnt_usb_disk`.
pub fn disk_slug(path: &Path) -> String {
    let text = path.to_string_lossy().to_lowercase();
    let mut slug = String::new();
    for c in text.chars() {
        if c.is_ascii_alphanumeric() {
            slug.push(c);
        } else if !slug.is_empty() && !slug.ends_with('_') {
            slug.push('_');
        }
    }
    let slug = slug.trim_end_matches('_').to_owned();
    if slug.is_empty() {
        "root".into()
    } else {
        slug
    }
}

const CPU_TEMPERATURE: MetricSpec = MetricSpec::gauge("cpu_temperature", Unit::Celsius, "CPU temperature");
const LOAD: [MetricSpec; 3] = [
    MetricSpec::gauge("load_1m", Unit::None, "load average over 1 minute"),
    MetricSpec::gauge("load_5m", Unit::None, "load average over 5 minutes"),
    MetricSpec::gauge("load_15m", Unit::None, "load average over 15 minutes"),
];
const MEMORY_USED: MetricSpec = MetricSpec::gauge("memory_used", Unit::Byte, "memory in use: MemTotal − MemAvailable");
const MEMORY_AVAILABLE: MetricSpec = MetricSpec::gauge(
    "memory_available",
    Unit::Byte,
    "memory available to start programs without swapping (MemAvailable)",
);
const UPTIME: MetricSpec = MetricSpec::gauge("uptime", Unit::Second, "time since boot");

pub fn all_metrics() -> Vec<MetricSpec> {
    let mut m = vec![CPU_TEMPERATURE];
    m.extend(LOAD);
    m.extend([MEMORY_USED, MEMORY_AVAILABLE, UPTIME]);
    m.push(MetricSpec::gauge(
        "disk_used_percent_<slug>",
        Unit::Percent,
        "used space of the filesystem holding a path, as df's Use%",
    ));
    m.push(MetricSpec::gauge(
        "disk_free_<slug>",
        Unit::Byte,
        "space available to mesura on that filesystem",
    ));
    m
}

/// statvfs of `path`, or of its nearest existing ancestor: the data dir may not
/// exist yet (`mesura read` opens no backend), and the filesystem it will be on is
/// the one that matters.
fn disk_usage_of_nearest(path: &Path) -> std::io::Result<DiskUsage> {
    let mut at = path;
    loop {
        match disk_usage(at) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => match at.parent() {
                Some(parent) if !parent.as_os_str().is_empty() => at = parent,
                _ => return Err(e),
            },
            other => return other,
        }
    }
}

/// The temperature (°C) of the thermal zone of type `zone_type`, or of the first
/// zone that has one; `Ok(None)` when the machine has no thermal zones.
pub fn cpu_temperature(sysfs: &Path, zone_type: Option<&str>) -> Result<Option<f64>, String> {
    let dir = sysfs.join("class/thermal");
    let entries = match std::fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", dir.display())),
    };
    // thermal_zone10 sorts after thermal_zone9.
    let mut zones: Vec<(u32, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let n = e.file_name().to_str()?.strip_prefix("thermal_zone")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    zones.sort();
    let read_temp = |zone: &Path| -> Result<f64, String> {
        let file = zone.join("temp");
        let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
        let milli: i64 = text
            .trim()
            .parse()
            .map_err(|_| format!("{}: `{}` is not a temperature", file.display(), text.trim()))?;
        Ok(milli as f64 / 1000.0)
    };
    let zone_kind = |zone: &Path| {
        std::fs::read_to_string(zone.join("type"))
            .map(|t| t.trim().to_owned())
            .unwrap_or_default()
    };
    match zone_type {
        Some(wanted) => {
            let mut seen = Vec::new();
            for (_, zone) in &zones {
                let kind = zone_kind(zone);
                if kind == wanted {
                    return read_temp(zone).map(Some);
                }
                seen.push(kind);
            }
            if zones.is_empty() {
                return Ok(None);
            }
            Err(format!(
                "no thermal zone of type `{wanted}` in {} (types found: {})",
                dir.display(),
                seen.join(", ")
            ))
        }
        // Some zones (ACPI on some laptops) have no readable temperature: skip them.
        None => Ok(zones.iter().find_map(|(_, zone)| read_temp(zone).ok())),
    }
}

/// The three load averages from `/proc/loadavg`.
pub fn load_average(procfs: &Path) -> Result<[f64; 3], String> {
    let file = procfs.join("loadavg");
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    let mut next = || match fields.next() {
        Some(Ok(v)) => Ok(v),
        _ => Err(format!("{}: unexpected content `{}`", file.display(), text.trim())),
    };
    Ok([next()?, next()?, next()?])
}

/// (MemTotal, MemAvailable) in bytes from `/proc/meminfo`.
pub fn memory(procfs: &Path) -> Result<(u64, u64), String> {
    let file = procfs.join("meminfo");
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    let field = |name: &str| -> Result<u64, String> {
        let line = text
            .lines()
            .find(|l| l.split(':').next() == Some(name))
            .ok_or_else(|| format!("{}: no {name} line", file.display()))?;
        let mut parts = line.split_whitespace().skip(1);
        let value: u64 = parts
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{}: unreadable line `{line}`", file.display()))?;
        // The kernel writes every size in kB (KiB in fact).
        let scale = match parts.next() {
            Some("kB") => 1024,
            None => 1,
            Some(unit) => return Err(format!("{}: unknown unit `{unit}` in `{line}`", file.display())),
        };
        Ok(value.saturating_mul(scale))
    };
    Ok((field("MemTotal")?, field("MemAvailable")?))
}

/// Seconds since boot from `/proc/uptime`.
pub fn uptime(procfs: &Path) -> Result<f64, String> {
    let file = procfs.join("uptime");
    let text = std::fs::read_to_string(&file).map_err(|e| format!("{}: {e}", file.display()))?;
    text.split_whitespace()
        .next()
        .and_then(|v| v.parse().ok())
        .ok_or_else(|| format!("{}: unexpected content `{}`", file.display(), text.trim()))
}

/// One disk path and its two metrics.
#[derive(Debug, Clone)]
struct Disk {
    path: PathBuf,
    used_percent: MetricSpec,
    free: MetricSpec,
}

#[derive(Debug)]
pub struct SystemMonitor {
    config: SystemConfig,
    ctx: MonitorContext,
    disks: Vec<Disk>,
    metrics: Vec<MetricSpec>,
    /// The last error of each failing source, so each is logged once, not every poll.
    failing: HashMap<&'static str, String>,
}

impl SystemMonitor {
    pub fn new(config: &SystemConfig, ctx: MonitorContext) -> Self {
        let paths: Vec<(String, PathBuf)> = match &config.disk_paths {
            Some(list) => list.iter().map(|p| (disk_slug(p), p.clone())).collect(),
            None => vec![
                ("root".into(), PathBuf::from("/")),
                ("data".into(), ctx.data_dir.clone()),
            ],
        };
        let disks: Vec<Disk> = paths
            .into_iter()
            .map(|(slug, path)| Disk {
                path,
                used_percent: MetricSpec::gauge(
                    intern(&format!("disk_used_percent_{slug}")),
                    Unit::Percent,
                    "used space of the filesystem, as df's Use%",
                ),
                free: MetricSpec::gauge(
                    intern(&format!("disk_free_{slug}")),
                    Unit::Byte,
                    "space available on the filesystem",
                ),
            })
            .collect();
        let mut metrics = vec![CPU_TEMPERATURE];
        metrics.extend(LOAD);
        metrics.extend([MEMORY_USED, MEMORY_AVAILABLE, UPTIME]);
        for d in &disks {
            metrics.extend([d.used_percent, d.free]);
        }
        SystemMonitor {
            config: config.clone(),
            ctx,
            disks,
            metrics,
            failing: HashMap::new(),
        }
    }
}

type Sample = (Vec<(MetricSpec, f64)>, Vec<(&'static str, String)>);

/// Reads every source; blocking (a statvfs of a hung network mount can take long).
fn sample(config: &SystemConfig, disks: &[Disk]) -> Sample {
    let mut values = Vec::new();
    let mut errors = Vec::new();
    let round = |v: f64, digits: i32| (v * 10f64.powi(digits)).round() / 10f64.powi(digits);
    match cpu_temperature(&config.sysfs_root, config.thermal_zone_type.as_deref()) {
        Ok(Some(t)) => values.push((CPU_TEMPERATURE, round(t, 2))),
        Ok(None) => {}
        Err(e) => errors.push(("cpu_temperature", e)),
    }
    match load_average(&config.procfs_root) {
        Ok(load) => values.extend(LOAD.iter().copied().zip(load)),
        Err(e) => errors.push(("load", e)),
    }
    match memory(&config.procfs_root) {
        // Not saturating: a negative value would show the kernel's numbers as they are.
        Ok((total, available)) => values.extend([
            (MEMORY_USED, total as f64 - available as f64),
            (MEMORY_AVAILABLE, available as f64),
        ]),
        Err(e) => errors.push(("memory", e)),
    }
    match uptime(&config.procfs_root) {
        Ok(s) => values.push((UPTIME, s.round())),
        Err(e) => errors.push(("uptime", e)),
    }
    for d in disks {
        match disk_usage_of_nearest(&d.path) {
            Ok(u) => {
                if let Some(p) = u.used_percent() {
                    values.push((d.used_percent, round(p, 2)));
                }
                values.push((d.free, u.available as f64));
            }
            Err(e) => errors.push((d.free.name, format!("statvfs {}: {e}", d.path.display()))),
        }
    }
    (values, errors)
}

#[async_trait]
impl Monitor for SystemMonitor {
    async fn read(&mut self) -> Result<Vec<Reading>, MonitorError> {
        let config = self.config.clone();
        let disks = self.disks.clone();
        let (values, errors) = tokio::task::spawn_blocking(move || sample(&config, &disks))
            .await
            .map_err(|e| MonitorError::link(format!("the system read task failed: {e}")).caused_by(e))?;
        let mut still_failing = HashMap::new();
        for (source, error) in errors {
            if self.failing.get(source) != Some(&error) {
                tracing::warn!(device = %self.ctx.id, source, %error, "cannot read this part of the system status; left out until it recovers");
            }
            still_failing.insert(source, error);
        }
        self.failing = still_failing;
        if values.is_empty() {
            let all: Vec<&str> = self.failing.values().map(String::as_str).collect();
            return Err(MonitorError::link(format!(
                "no system value could be read: {}",
                all.join("; ")
            )));
        }
        let now = self.ctx.clock.now();
        Ok(values
            .into_iter()
            .map(|(spec, v)| spec.reading(&self.ctx.id, v, now))
            .collect())
    }

    /// Complete: its disks are those of its config.
    fn metrics_complete(&self) -> bool {
        true
    }

    fn metrics(&self) -> &[MetricSpec] {
        &self.metrics
    }
}

#[cfg(test)]
mod tests;
