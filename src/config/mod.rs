//! Configuration: `config.yaml` (the base: data dir, backends, logging) and one file
//! per device in `config.d/`. See docs/configuration.md for every key.

pub mod alerts;
pub mod common;
mod device;
pub mod duration;
pub mod env;
mod error;
pub mod listen;
pub mod parse;
pub mod power;
pub mod secret;
pub mod tariff;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use common::CommonConfig;
pub use device::{is_device_file, load_device_file, load_devices, parse_device, DeviceConfig, DeviceSet};
pub use error::{ConfigError, Location};
pub use parse::read_config_file;
pub use secret::{read_secret_file, Secret};

pub use crate::monitors::DeviceKind;

pub use crate::backends::BackendsConfig;

/// `config.yaml`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct BaseConfig {
    /// Where the SQLite database, CSV files and other state live; relative paths are
    /// relative to the directory of config.yaml.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// The directory of device files; default `config.d` beside config.yaml.
    #[serde(default = "default_devices_dir")]
    pub devices_dir: PathBuf,
    /// Log level and format.
    #[serde(default)]
    pub logging: LoggingConfig,
    /// Where readings go. Without this section: SQLite only.
    #[serde(default)]
    pub backends: BackendsConfig,
    /// Live reload of config.yaml and the device files.
    #[serde(default)]
    pub watch: WatchConfig,
    /// The status API, metrics and web page.
    #[serde(default)]
    pub api: ApiConfig,
    /// Thins old SQLite rows when the disk fills up (see docs/configuration.md).
    #[serde(default)]
    pub disk_guard: crate::backends::sqlite::guard::DiskGuardConfig,
    /// Replaces raw SQLite rows older than `retention.raw` by 5-minute aggregates
    /// (see docs/configuration.md).
    #[serde(default)]
    pub retention: crate::backends::sqlite::downsample::RetentionConfig,
    /// How energy, gas, water and heat counters are cleaned at ingest: swaps,
    /// resets and glitches, and the `<metric>_lifetime` series (docs/counters.md).
    #[serde(default)]
    pub counters: crate::energy::counters::CounterSettings,
    /// Alert rules and where alerts go (see docs/alerts.md); more rules in
    /// `config.d/alerts/*.yaml`.
    #[serde(default)]
    pub alerts: crate::alerts::AlertsConfig,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Serve /health, /metrics, /api/* and the web page.
    #[serde(default = "default_api_enabled")]
    pub enabled: bool,
    /// Address and port (`127.0.0.1:9360`), or a host name and port
    /// (`localhost:9360`) resolved when the config is loaded. Anything but loopback
    /// requires `token`.
    #[serde(default = "default_api_listen", deserialize_with = "listen::deserialize")]
    pub listen: std::net::SocketAddr,
    /// Bearer token required on every request (write `${MESURA_API_TOKEN}`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Secret>,
    /// A file holding the token (or a systemd credential name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// How long a backend may fail to deliver before /health answers 503 (it shows
    /// the backend unhealthy at once).
    #[serde(default = "default_api_unhealthy_after", with = "crate::config::duration")]
    pub unhealthy_after: std::time::Duration,
    /// Host names the API answers to besides `localhost` and loopback addresses
    /// (`Host` header, port ignored). Any other gets 421, so a web page cannot read
    /// the API through DNS rebinding. On an address other than loopback, `Host` is
    /// checked only when this list is given (IP addresses always pass there).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
    /// How long a client may take to send a request's headers: slower connections
    /// are closed, so a few slow clients cannot hold every connection.
    #[serde(default = "default_api_header_read_timeout", with = "duration")]
    pub header_read_timeout: std::time::Duration,
    /// Connections served at once; more wait until one closes.
    #[serde(default = "default_api_max_connections")]
    pub max_connections: usize,
    /// Live event streams (`GET /api/events`, the page's live updates) served at
    /// once; each holds one of `max_connections` for as long as its page is open.
    /// More are answered 503 (the page then polls).
    #[serde(default = "default_api_max_event_streams")]
    pub max_event_streams: usize,
}

pub fn default_api_enabled() -> bool {
    true
}
pub fn default_api_listen() -> std::net::SocketAddr {
    std::net::SocketAddr::from(([127, 0, 0, 1], 9360))
}
pub fn default_api_unhealthy_after() -> std::time::Duration {
    std::time::Duration::from_secs(300)
}
pub fn default_api_header_read_timeout() -> std::time::Duration {
    std::time::Duration::from_secs(10)
}
pub fn default_api_max_connections() -> usize {
    64
}
pub fn default_api_max_event_streams() -> usize {
    8
}

impl ApiConfig {
    /// A limit that would make the API unusable: `(key, message)`.
    pub fn out_of_range(&self) -> Option<(&'static str, String)> {
        if self.header_read_timeout.is_zero() {
            return Some(("api.header_read_timeout", "must be longer than 0s".into()));
        }
        if self.max_connections == 0 {
            return Some(("api.max_connections", "must be at least 1".into()));
        }
        None
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            enabled: default_api_enabled(),
            listen: default_api_listen(),
            token: None,
            token_file: None,
            unhealthy_after: default_api_unhealthy_after(),
            allowed_hosts: Vec::new(),
            header_read_timeout: default_api_header_read_timeout(),
            max_connections: default_api_max_connections(),
            max_event_streams: default_api_max_event_streams(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WatchConfig {
    /// Watch config.yaml and `devices_dir` and apply changes without a restart
    /// (SIGHUP reloads either way).
    #[serde(default = "default_watch_enabled")]
    pub enabled: bool,
    /// Quiet time after the last file event before reloading: an editor's save is
    /// several events (temp file, rename, chmod) that must count as one.
    #[serde(default = "default_watch_debounce", with = "duration")]
    pub debounce: std::time::Duration,
}

pub fn default_watch_enabled() -> bool {
    true
}
pub fn default_watch_debounce() -> std::time::Duration {
    std::time::Duration::from_secs(1)
}

impl Default for WatchConfig {
    fn default() -> Self {
        WatchConfig {
            enabled: default_watch_enabled(),
            debounce: default_watch_debounce(),
        }
    }
}

pub fn default_data_dir() -> PathBuf {
    PathBuf::from("data")
}
pub fn default_devices_dir() -> PathBuf {
    PathBuf::from("config.d")
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct LoggingConfig {
    /// `error`, `warn`, `info`, `debug`, `trace`, or a tracing filter
    /// (`info,mesura::backends=debug`). `RUST_LOG` wins when set.
    #[serde(default = "default_log_level")]
    pub level: String,
    /// `text` for people, `json` for log shippers.
    #[serde(default)]
    pub format: LogFormat,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            level: default_log_level(),
            format: LogFormat::default(),
        }
    }
}

pub fn default_log_level() -> String {
    "info".into()
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

/// Everything loaded: the base config with its paths resolved, and the devices.
#[derive(Debug)]
pub struct Config {
    pub path: PathBuf,
    pub base: BaseConfig,
    pub devices: DeviceSet,
}

impl Config {
    /// Loads config.yaml and every device file. A broken base config is an error; a
    /// broken device file is recorded in `devices.errors` and the others load.
    pub fn load(path: &Path, lookup: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigError> {
        let overrides = env::overrides(std::env::vars());
        let base = load_base(path, lookup, &overrides)?;
        let devices = base.load_devices(lookup);
        Ok(Config {
            path: path.to_path_buf(),
            base,
            devices,
        })
    }
}

impl BaseConfig {
    /// The alert rules of config.yaml and of `<devices_dir>/alerts/*.yaml`.
    pub fn load_alerts(&self, lookup: &dyn Fn(&str) -> Option<String>) -> alerts::AlertSet {
        let dir = alerts::alerts_dir(&self.devices_dir);
        alerts::load_alerts(&self.alerts, &dir, &self.backends.names(), lookup)
    }

    pub fn load_devices(&self, lookup: &dyn Fn(&str) -> Option<String>) -> DeviceSet {
        let mut set = load_devices(&self.devices_dir, &self.backends.names(), lookup);
        device::inherit_base(&mut set, self);
        set
    }
}

/// The environment as a lookup function.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Loads and validates config.yaml, applies `MESURA_*` overrides and resolves
/// relative paths against the config file's directory.
pub fn load_base(
    path: &Path,
    lookup: &dyn Fn(&str) -> Option<String>,
    overrides: &[(String, Vec<String>, String)],
) -> Result<BaseConfig, ConfigError> {
    let raw = read_config_file(path)?;
    let src = env::interpolate(path, &raw, lookup)?;
    // An empty file is a valid config: every default.
    let text = if src.trim().is_empty() { "{}" } else { src.as_str() };
    let (mut base, _) = parse::parse_typed::<BaseConfig>(path, text)?;
    if !overrides.is_empty() {
        let mut tree: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(text).map_err(|e| parse::yaml_error(path, text, String::new(), &e))?;
        for (var, key_path, value) in overrides {
            env::apply_override(&mut tree, var, key_path, value)?;
        }
        base = serde_yaml_ng::from_value(tree).map_err(|e| ConfigError::Env {
            var: overrides
                .iter()
                .map(|(v, _, _)| v.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            message: e.to_string(),
        })?;
    }
    let api = &base.api;
    if api.enabled && !api.listen.ip().is_loopback() && api.token.is_none() && api.token_file.is_none() {
        let location = Location {
            line: parse::position_of_path(text, "api.listen").map_or(1, |p| p.0),
            column: 1,
            key: Some("api.listen".into()),
        };
        let message = format!(
            "the API would listen on {} without a token: set api.token (or api.token_file), or listen on 127.0.0.1",
            api.listen
        );
        return Err(ConfigError::invalid(path, location, message));
    }
    if let Some((key, message)) = base.backends.validate() {
        let location = Location {
            line: parse::position_of_path(text, &key).map_or(1, |p| p.0),
            column: 1,
            key: Some(key),
        };
        return Err(ConfigError::invalid(path, location, message));
    }
    if let Some((key, message)) = base.api.out_of_range() {
        let location = Location {
            line: parse::position_of_path(text, key).map_or(1, |p| p.0),
            column: 1,
            key: Some(key.into()),
        };
        return Err(ConfigError::invalid(path, location, message));
    }
    if let Some((key, message)) = base.counters.out_of_range() {
        let location = Location {
            line: parse::position_of_path(text, key).map_or(1, |p| p.0),
            column: 1,
            key: Some(key.into()),
        };
        return Err(ConfigError::invalid(path, location, message));
    }
    if let Some((key, message)) = base.alerts.validate(&base.backends.names()) {
        let location = alerts::location_in(text, &key);
        return Err(ConfigError::invalid(path, location, message));
    }
    if let Some((key, message)) = base.disk_guard.out_of_range() {
        let location = Location {
            line: parse::position_of_path(text, key).map_or(1, |p| p.0),
            column: 1,
            key: Some(key.into()),
        };
        return Err(ConfigError::invalid(path, location, message));
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    base.data_dir = dir.join(&base.data_dir);
    base.devices_dir = dir.join(&base.devices_dir);
    let credentials = std::env::var_os("CREDENTIALS_DIRECTORY").map(PathBuf::from);
    base.backends.resolve_paths(dir, credentials.as_deref());
    Ok(base)
}

#[cfg(test)]
mod tests;
