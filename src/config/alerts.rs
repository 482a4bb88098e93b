//! Loading alert rules: config.yaml's `alerts.rules` (checked with the rest of
//! config.yaml) and one rule per file in `<devices_dir>/alerts/`, the file stem its
//! name. The keys themselves are in `alerts/config.rs`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::error::{ConfigError, Location};
use super::parse::{line_of_key, parse_typed, position_of_path};
use crate::alerts::config::{name_error, AlertRule, AlertsConfig, Condition};

/// The line of a key path in config.yaml's text, for an error.
pub(crate) fn location_in(text: &str, key: &str) -> Location {
    Location {
        line: position_of_path(text, key).map_or(1, |p| p.0),
        column: 1,
        key: Some(key.into()),
    }
}

/// One enabled rule, ready to evaluate.
#[derive(Debug, Clone, PartialEq)]
pub struct LoadedRule {
    pub name: String,
    pub rule: AlertRule,
    pub condition: Condition,
    /// The file it came from (`None`: config.yaml).
    pub file: Option<PathBuf>,
}

/// Every rule of config.yaml and `config.d/alerts/`, and the files that failed.
#[derive(Debug, Default)]
pub struct AlertSet {
    pub rules: BTreeMap<String, LoadedRule>,
    pub errors: Vec<ConfigError>,
}

/// The folder of rule files: `alerts/` inside the devices directory. Its files
/// are not device files: device files are only those directly in `config.d/`.
pub fn alerts_dir(devices_dir: &Path) -> PathBuf {
    devices_dir.join("alerts")
}

/// Loads the rules of config.yaml (already validated) and every rule file in
/// `dir`. A broken file is an error naming file, line and key; the others load.
pub fn load_alerts(
    base: &AlertsConfig,
    dir: &Path,
    backends: &[&str],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> AlertSet {
    let mut set = AlertSet::default();
    let webhooks = base.webhook_names();
    for (name, rule) in &base.rules {
        if let Ok(condition) = rule.condition(backends, &webhooks) {
            set.rules.insert(
                name.clone(),
                LoadedRule {
                    name: name.clone(),
                    rule: rule.clone(),
                    condition,
                    file: None,
                },
            );
        }
    }
    let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
        Ok(entries) => entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| super::device::is_device_file(p))
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return set,
        Err(source) => {
            set.errors.push(ConfigError::Io {
                file: dir.to_path_buf(),
                source,
            });
            return set;
        }
    };
    files.sort();
    for file in files {
        match load_rule_file(&file, backends, &webhooks, lookup) {
            Ok(loaded) => {
                if let Some(other) = set.rules.get(&loaded.name) {
                    let whence = other
                        .file
                        .as_ref()
                        .map_or_else(|| "config.yaml".to_owned(), |f| f.display().to_string());
                    let at = Location {
                        line: 1,
                        column: 1,
                        key: None,
                    };
                    let message = format!("rule `{}` is already defined by {whence}", loaded.name);
                    set.errors.push(ConfigError::invalid(&file, at, message));
                } else {
                    set.rules.insert(loaded.name.clone(), loaded);
                }
            }
            Err(e) => set.errors.push(e),
        }
    }
    set.rules.retain(|_, r| r.rule.enabled);
    set
}

fn load_rule_file(
    file: &Path,
    backends: &[&str],
    webhooks: &[&str],
    lookup: &dyn Fn(&str) -> Option<String>,
) -> Result<LoadedRule, ConfigError> {
    let at_start = Location {
        line: 1,
        column: 1,
        key: None,
    };
    let name = file.file_stem().and_then(|s| s.to_str()).unwrap_or_default().to_owned();
    if let Some(message) = name_error(&name) {
        return Err(ConfigError::invalid(file, at_start, message));
    }
    let raw = super::parse::read_config_file(file)?;
    let src = super::env::interpolate(file, &raw, lookup)?;
    if src.trim().is_empty() {
        return Err(ConfigError::invalid(
            file,
            at_start,
            "the file is empty: a rule file holds one rule",
        ));
    }
    let (rule, _) = parse_typed::<AlertRule>(file, &src)?;
    let condition = rule.condition(backends, webhooks).map_err(|(key, message)| {
        let location = Location {
            line: line_of_key(&src, &key).unwrap_or(1),
            column: 1,
            key: Some(key),
        };
        ConfigError::invalid(file, location, message)
    })?;
    Ok(LoadedRule {
        name,
        rule,
        condition,
        file: Some(file.to_path_buf()),
    })
}
