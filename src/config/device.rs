//! Device files: `config.d/<id>.yaml`, one device each, `type:` selecting the monitor.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::common::CommonConfig;
use super::error::{ConfigError, Location};
use super::parse::{did_you_mean, line_of_key, parse_typed, read_config_file};
use crate::monitors::DeviceKind;
use crate::reading::DeviceId;

/// A meter on a serial line, TCP, I2C, Modbus or the host: nothing to spare, so a
/// device that comes back is read again soon.
pub(super) fn default_max_backoff_local() -> Duration {
    Duration::from_secs(30)
}
/// A cloud API rate-limits and may bill: a failing one is asked again slowly.
pub(super) fn default_max_backoff_cloud() -> Duration {
    default_breaker_cooldown_cloud()
}
pub(super) fn default_breaker_cooldown_cloud() -> Duration {
    Duration::from_secs(300)
}

const COMMON_KEYS: &[&str] = &[
    "type",
    "poll_interval",
    "enabled",
    "backends",
    "failure_threshold",
    "max_backoff",
    "breaker_cooldown",
    "tariff",
];

/// One device: its id (the file stem), where it came from, and its settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeviceConfig {
    pub id: DeviceId,
    #[serde(skip)]
    pub file: PathBuf,
    #[serde(flatten)]
    pub common: CommonConfig,
    #[serde(flatten)]
    pub kind: DeviceKind,
    /// What the files the settings name (`decryption_key_file`, `token_file`…) held
    /// when the config was loaded, as a digest: a key replaced in its file, with the
    /// device file untouched, still makes a reload restart the device.
    #[serde(skip)]
    pub file_contents: Vec<(PathBuf, Option<u64>)>,
}

/// The `*_file` settings of a device and a digest of each file's content (`None`
/// when it cannot be read; the device's own check says why). Only compared, never
/// shown: a digest, not the secret.
fn file_contents(kind: &DeviceKind) -> Vec<(PathBuf, Option<u64>)> {
    use std::hash::{Hash, Hasher};
    let Ok(serde_json::Value::Object(map)) = serde_json::to_value(kind) else {
        return Vec::new();
    };
    map.iter()
        .filter(|(key, _)| key.ends_with("_file"))
        .filter_map(|(_, value)| value.as_str().map(PathBuf::from))
        .map(|path| {
            let digest = crate::config::secret::read_secret_file(&path).ok().map(|secret| {
                let mut hasher = std::collections::hash_map::DefaultHasher::new();
                secret.expose().hash(&mut hasher);
                hasher.finish()
            });
            (path, digest)
        })
        .collect()
}

impl DeviceConfig {
    /// Builds this device's monitor: its type's part of the file, with the id, the
    /// poll interval and the file's place from the rest of it.
    pub fn build_monitor(
        &self,
        clock: crate::host::clock::SharedClock,
        data_dir: PathBuf,
    ) -> Result<Box<dyn crate::monitors::Monitor>, crate::monitors::MonitorError> {
        self.kind.build(crate::monitors::MonitorContext {
            id: self.id.clone(),
            clock,
            data_dir,
            poll_interval: self.poll_interval(),
            file: self.file.clone(),
        })
    }

    pub fn poll_interval(&self) -> Duration {
        self.common
            .poll_interval
            .unwrap_or_else(|| self.kind.default_poll_interval())
    }

    /// The cap of the retry backoff: the file's `max_backoff`, else the type's.
    pub fn max_backoff(&self) -> Duration {
        self.common.max_backoff.unwrap_or_else(|| {
            if self.kind.is_cloud() {
                default_max_backoff_cloud()
            } else {
                default_max_backoff_local()
            }
        })
    }

    /// How long an open breaker waits before a probe; `None`: probe on the backoff.
    pub fn breaker_cooldown(&self) -> Option<Duration> {
        self.common
            .breaker_cooldown
            .or_else(|| self.kind.is_cloud().then(default_breaker_cooldown_cloud))
    }

    /// Whether this device's readings go to the backend called `backend`.
    pub fn sends_to(&self, backend: &str) -> bool {
        self.common
            .backends
            .as_ref()
            .is_none_or(|list| list.iter().any(|b| b == backend))
    }
}

/// Names that would collide with mesura's own tables in the SQLite file.
/// `*_5m` are the 5-minute aggregate tables of the downsampler.
fn reserved_id(id: &str) -> bool {
    id == "metrics"
        || id.starts_with("outbox")
        || id.starts_with("sqlite_")
        || id.starts_with('_')
        || id.ends_with(crate::backends::sqlite::downsample::SUFFIX)
        || id.ends_with(crate::backends::sqlite::schema::COST_SUFFIX)
}

/// Parses one device file's text (already interpolated). `backends` are the names
/// configured in the base config, to check a device's `backends:` subset.
pub fn parse_device(file: &Path, src: &str, backends: &[&str]) -> Result<DeviceConfig, ConfigError> {
    let id = device_id(file)?;
    if src.trim().is_empty() {
        return Err(ConfigError::invalid(
            file,
            Location {
                line: 1,
                column: 1,
                key: None,
            },
            "the file is empty: a device file needs at least `type:`",
        ));
    }
    let (common, ignored_common) = parse_typed::<CommonConfig>(file, src)?;
    let type_line = line_of_key(src, "type").unwrap_or(1);
    let (kind, ignored_kind) = DeviceKind::parse(&common.device_type, file, src).unwrap_or_else(|| {
        let hint = did_you_mean(&common.device_type, DeviceKind::TYPES.iter().copied())
            .map(|t| format!(" (did you mean `{t}`?)"))
            .unwrap_or_default();
        Err(ConfigError::invalid(
            file,
            Location {
                line: type_line,
                column: 1,
                key: Some("type".into()),
            },
            format!(
                "unknown device type `{}`{hint}; known types: {}",
                common.device_type,
                DeviceKind::TYPES.join(", ")
            ),
        ))
    })?;

    // A key is unknown when neither the common keys nor the type's keys took it.
    let unknown_top: HashSet<&str> = ignored_common.iter().map(String::as_str).collect();
    let unknown: Vec<&String> = ignored_kind
        .iter()
        .filter(|path| unknown_top.contains(path.split('.').next().unwrap_or(path)))
        .collect();
    if let Some(first) = unknown.first() {
        let candidates: Vec<&str> = COMMON_KEYS
            .iter()
            .chain(DeviceKind::keys(kind.type_name()))
            .copied()
            .collect();
        let described: Vec<String> = unknown
            .iter()
            .map(|k| match did_you_mean(k, candidates.iter().copied()) {
                Some(s) => format!("`{k}` (did you mean `{s}`?)"),
                None => format!("`{k}`"),
            })
            .collect();
        return Err(ConfigError::invalid(
            file,
            Location {
                line: line_of_key(src, first).unwrap_or(1),
                column: 1,
                key: Some((*first).clone()),
            },
            format!(
                "unknown key {}; valid keys for type `{}`: {}",
                described.join(", "),
                kind.type_name(),
                candidates.join(", ")
            ),
        ));
    }

    let fail = |key: &str, message: String| {
        ConfigError::invalid(
            file,
            Location {
                line: line_of_key(src, key).or_else(|| line_of_path(src, key)).unwrap_or(1),
                column: 1,
                key: Some(key.to_owned()),
            },
            message,
        )
    };
    if let Some(list) = &common.backends {
        for name in list {
            if !backends.contains(&name.as_str()) {
                return Err(fail(
                    "backends",
                    format!(
                        "backend `{name}` is not configured in the base config (configured: {})",
                        backends.join(", ")
                    ),
                ));
            }
        }
    }
    if common.failure_threshold == 0 {
        return Err(fail("failure_threshold", "must be at least 1".into()));
    }
    if let Some(message) = common.poll_interval.and_then(|p| poll_interval_error(p, kind.pushes())) {
        return Err(fail("poll_interval", message));
    }
    if let Some(tariff) = &common.tariff {
        tariff.validate().map_err(|(key, message)| fail(&key, message))?;
    }
    kind.validate(&common).map_err(|(key, message)| fail(&key, message))?;
    Ok(DeviceConfig {
        id,
        file: file.to_path_buf(),
        common,
        file_contents: file_contents(&kind),
        kind,
    })
}

/// The line of a nested key such as `tariff.gas.calorific_value`: each part's
/// first line after its parent's (list items, `- key:`, included).
fn line_of_path(src: &str, path: &str) -> Option<usize> {
    let mut parts = path.split('.');
    let mut line = line_of_key(src, parts.next()?)?;
    for part in parts {
        let prefix = format!("{part}:");
        line = src
            .lines()
            .enumerate()
            .skip(line)
            .find(|(_, l)| l.trim_start().trim_start_matches("- ").starts_with(&prefix))
            .map(|(i, _)| i + 1)?;
    }
    Some(line)
}

/// SQLite keeps one row per device per second (`ts` in whole seconds), so two
/// polls inside one second overwrite each other there.
pub(super) const MIN_POLL_INTERVAL: Duration = Duration::from_secs(1);

/// Why `poll` cannot be a device's poll interval, if it cannot. A device that
/// pushes may also have `0s`: each message it sends, as it arrives.
fn poll_interval_error(poll: Duration, pushes: bool) -> Option<String> {
    if poll >= MIN_POLL_INTERVAL || (pushes && poll.is_zero()) {
        return None;
    }
    let alternative = if pushes {
        ", or `0s` to keep every message the device sends"
    } else {
        ""
    };
    Some(format!(
        "{} is below 1s: SQLite stores one row per second, so faster polls would overwrite each other; \
         use 1s or more{alternative}",
        humantime::format_duration(poll)
    ))
}

fn device_id(file: &Path) -> Result<DeviceId, ConfigError> {
    let at_start = Location {
        line: 1,
        column: 1,
        key: None,
    };
    let stem = file.file_stem().and_then(|s| s.to_str()).ok_or_else(|| {
        ConfigError::invalid(
            file,
            at_start.clone(),
            "the file name is not valid UTF-8: it becomes the device id",
        )
    })?;
    if stem.is_empty() || stem.chars().any(|c| c.is_control() || c == '/' || c == '"') || reserved_id(stem) {
        return Err(ConfigError::invalid(
            file,
            at_start,
            format!("`{stem}` cannot be a device id (the file stem): no control characters or quotes, and not `metrics`, `outbox*`, `sqlite_*`, `_*`, `*_5m` or `*_cost`"),
        ));
    }
    Ok(Arc::from(stem))
}

/// Whether a file in `config.d/` is a device file: `*.yaml`/`*.yml`, not hidden,
/// not an editor's backup or swap file.
pub fn is_device_file(path: &Path) -> bool {
    let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
        return false;
    };
    let ext_ok = name.ends_with(".yaml") || name.ends_with(".yml");
    ext_ok && !name.starts_with('.') && !name.starts_with('#') && !name.ends_with('~')
}

/// Every device file in `dir`, parsed: the good ones by id, and every error.
#[derive(Debug, Default)]
pub struct DeviceSet {
    pub devices: BTreeMap<DeviceId, DeviceConfig>,
    pub errors: Vec<ConfigError>,
}

pub fn load_devices(dir: &Path, backends: &[&str], lookup: &dyn Fn(&str) -> Option<String>) -> DeviceSet {
    let mut set = DeviceSet::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return set,
        Err(source) => {
            set.errors.push(ConfigError::Io {
                file: dir.to_path_buf(),
                source,
            });
            return set;
        }
    };
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| is_device_file(p))
        .collect();
    files.sort();
    for file in files {
        match load_device_file(&file, backends, lookup) {
            Ok(device) => {
                if let Some(other) = set.devices.get(&device.id) {
                    set.errors.push(ConfigError::invalid(
                        &file,
                        Location {
                            line: 1,
                            column: 1,
                            key: None,
                        },
                        format!(
                            "device id `{}` is already defined by {}",
                            device.id,
                            other.file.display()
                        ),
                    ));
                } else {
                    set.devices.insert(device.id.clone(), device);
                }
            }
            Err(e) => set.errors.push(e),
        }
    }
    set
}

/// What device files take from config.yaml once both are loaded: a `type: mqtt`
/// device the `mqtt` backend's broker and topic prefix. A device that cannot use
/// them fails like a broken file (its error names the file and key); the others load.
pub(crate) fn inherit_base(set: &mut DeviceSet, base: &super::BaseConfig) {
    let mut failed = Vec::new();
    for (id, device) in set.devices.iter_mut() {
        if let DeviceKind::Mqtt(mqtt) = &mut device.kind {
            if let Err((key, message)) = mqtt.inherit(base.backends.mqtt.as_ref()) {
                let src = std::fs::read_to_string(&device.file).unwrap_or_default();
                let location = Location {
                    line: line_of_key(&src, &key).unwrap_or(1),
                    column: 1,
                    key: Some(key),
                };
                failed.push((id.clone(), ConfigError::invalid(&device.file, location, message)));
            }
        }
    }
    for (id, error) in failed {
        set.devices.remove(&id);
        set.errors.push(error);
    }
}

/// Reads, interpolates and parses one device file.
pub fn load_device_file(
    file: &Path,
    backends: &[&str],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<DeviceConfig, ConfigError> {
    let raw = read_config_file(file)?;
    let src = super::env::interpolate(file, &raw, lookup)?;
    parse_device(file, &src, backends)
}
