//! The record of the discovery configs mesura has published, in
//! `<data_dir>/mqtt-discovery.json`: per device, each entity's config topic, its
//! metric, its state topic and when a reading of it was last published. A later
//! start clears what is no longer there, or Home Assistant would keep it for good
//! (the config is retained on the broker):
//! - a device gone from the configuration (removed while mesura was down);
//! - a metric its device no longer has, where the device type names every metric
//!   its config gives (a Modbus point removed from the map, a disk dropped from a
//!   `system` device): [`Published::undeclared`];
//! - a metric a device decides itself whether to send (a P1 meter's registers),
//!   once the device has sent readings for `discovery_expire_after` without it:
//!   [`Published::expired`]. Time here is the readings' own, so a device that is
//!   down expires nothing, and a slow metric (gas hourly) is never "missing".
//!
//! The first version of the file held only device → config topics; it is read as
//! such, each topic's metric taken from the topic and its last reading set to the
//! time of the migration.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const FILE: &str = "mqtt-discovery.json";

/// The file's version, written in it.
const VERSION: u32 = 2;

/// A reading's time is written to the file only when it moved on by this much:
/// the expiry counts in days, and the SD card is spared a write every poll.
const SEEN_STEP: i64 = 15 * 60;

/// One published entity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    pub metric: String,
    /// Its state topic, cleared with the config when retained values are on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<String>,
    /// The newest reading of it published (UTC seconds, the reading's own time).
    #[serde(default)]
    pub seen: i64,
    /// `seen` as last written to the file.
    #[serde(skip)]
    saved: i64,
}

/// An entity to clear: its config topic and what the record knew of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gone {
    pub device: String,
    pub config: String,
    pub entry: Entry,
}

#[derive(Debug, Serialize, Deserialize)]
struct FileV2 {
    version: u32,
    /// Device → config topic → entry.
    devices: BTreeMap<String, BTreeMap<String, Entry>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum AnyFile {
    V2(FileV2),
    /// Device → config topics.
    V1(BTreeMap<String, BTreeSet<String>>),
}

#[derive(Debug)]
pub struct Published {
    path: PathBuf,
    devices: BTreeMap<String, BTreeMap<String, Entry>>,
    dirty: bool,
}

impl Published {
    /// The record under `data_dir`; an unreadable one is said and starts empty (its
    /// devices' configs are then cleared only when a reload removes them). `now`
    /// stamps the entries of a first-version file.
    pub fn load(data_dir: &Path, now: i64) -> Published {
        let path = data_dir.join(FILE);
        let unreadable = |e: &dyn std::fmt::Display| {
            tracing::warn!(backend = "mqtt", file = %path.display(), error = %e, "the record of published discovery configs is unreadable; starting a new one");
        };
        let (devices, dirty) = match std::fs::read(&path) {
            Ok(bytes) => match serde_json::from_slice::<AnyFile>(&bytes) {
                Ok(AnyFile::V2(file)) if file.version == VERSION => (file.devices, false),
                Ok(AnyFile::V2(file)) => {
                    unreadable(&format!("version {} (this mesura writes {VERSION})", file.version));
                    (BTreeMap::new(), false)
                }
                Ok(AnyFile::V1(old)) => (migrate(old, now), true),
                Err(e) => {
                    unreadable(&e);
                    (BTreeMap::new(), false)
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => (BTreeMap::new(), false),
            Err(e) => {
                tracing::warn!(backend = "mqtt", file = %path.display(), error = %e, "cannot read the record of published discovery configs");
                (BTreeMap::new(), false)
            }
        };
        let mut devices = devices;
        for entry in devices.values_mut().flat_map(|d| d.values_mut()) {
            entry.saved = entry.seen;
        }
        Published { path, devices, dirty }
    }

    /// Notes that the config `topic` of `device`'s `metric` was published, its
    /// states on `state`.
    pub fn record(&mut self, device: &str, metric: &str, topic: &str, state: &str) {
        let entries = self.devices.entry(device.to_owned()).or_default();
        match entries.get_mut(topic) {
            Some(e) if e.metric == metric && e.state.as_deref() == Some(state) => {}
            Some(e) => {
                e.metric = metric.to_owned();
                e.state = Some(state.to_owned());
                self.dirty = true;
            }
            None => {
                entries.insert(
                    topic.to_owned(),
                    Entry {
                        metric: metric.to_owned(),
                        state: Some(state.to_owned()),
                        seen: 0,
                        saved: 0,
                    },
                );
                self.dirty = true;
            }
        }
    }

    /// Notes a reading of `device`'s `metric` stamped `at` (UTC seconds).
    pub fn saw(&mut self, device: &str, metric: &str, at: i64) {
        let Some(entries) = self.devices.get_mut(device) else {
            return;
        };
        for entry in entries.values_mut().filter(|e| e.metric == metric) {
            if at > entry.seen {
                entry.seen = at;
                if at >= entry.saved + SEEN_STEP {
                    self.dirty = true;
                }
            }
        }
    }

    /// Forgets `device`; returns its entities (to clear).
    pub fn remove(&mut self, device: &str) -> Vec<Gone> {
        let entries = self.devices.remove(device).unwrap_or_default();
        if !entries.is_empty() {
            self.dirty = true;
        }
        entries
            .into_iter()
            .map(|(config, entry)| Gone {
                device: device.to_owned(),
                config,
                entry,
            })
            .collect()
    }

    /// Devices recorded that are not in `configured`, with their entities; forgotten.
    pub fn orphans(&mut self, configured: &BTreeSet<String>) -> Vec<(String, Vec<Gone>)> {
        let gone: Vec<String> = self
            .devices
            .keys()
            .filter(|d| !configured.contains(*d))
            .cloned()
            .collect();
        gone.into_iter()
            .map(|d| {
                let entities = self.remove(&d);
                (d, entities)
            })
            .collect()
    }

    /// The entities of `device` whose config topic is none of `declared` (the
    /// topics of every metric its config gives); forgotten.
    pub fn undeclared(&mut self, device: &str, declared: &BTreeSet<String>) -> Vec<Gone> {
        self.take(device, |topic, _| !declared.contains(topic))
    }

    /// Per device `dynamic` accepts, the entities without a reading for more than
    /// `expire_after` seconds before the device's newest; forgotten.
    pub fn expired(&mut self, dynamic: impl Fn(&str) -> bool, expire_after: i64) -> Vec<Gone> {
        let devices: Vec<String> = self.devices.keys().filter(|d| dynamic(d)).cloned().collect();
        let mut out = Vec::new();
        for device in devices {
            let newest = self.devices[&device].values().map(|e| e.seen).max().unwrap_or(0);
            out.extend(self.take(&device, |_, e| e.seen + expire_after < newest));
        }
        out
    }

    fn take(&mut self, device: &str, gone: impl Fn(&str, &Entry) -> bool) -> Vec<Gone> {
        let Some(entries) = self.devices.get_mut(device) else {
            return Vec::new();
        };
        let topics: Vec<String> = entries
            .iter()
            .filter(|(topic, entry)| gone(topic, entry))
            .map(|(topic, _)| topic.clone())
            .collect();
        let mut out = Vec::new();
        for config in topics {
            if let Some(entry) = entries.remove(&config) {
                out.push(Gone {
                    device: device.to_owned(),
                    config,
                    entry,
                });
            }
        }
        if entries.is_empty() {
            self.devices.remove(device);
        }
        if !out.is_empty() {
            self.dirty = true;
        }
        out
    }

    pub fn devices(&self) -> impl Iterator<Item = &str> {
        self.devices.keys().map(String::as_str)
    }

    /// The entities recorded for `device`, by config topic.
    pub fn entities(&self, device: &str) -> Option<&BTreeMap<String, Entry>> {
        self.devices.get(device)
    }

    /// Writes the record if it changed (a new file renamed over the old one).
    pub fn save(&mut self) {
        if !self.dirty {
            return;
        }
        let tmp = self.path.with_extension("json.tmp");
        let file = FileV2 {
            version: VERSION,
            devices: std::mem::take(&mut self.devices),
        };
        let written = serde_json::to_vec_pretty(&file)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        self.devices = file.devices;
        match written {
            Ok(()) => {
                self.dirty = false;
                for entry in self.devices.values_mut().flat_map(|d| d.values_mut()) {
                    entry.saved = entry.seen;
                }
            }
            Err(e) => {
                tracing::warn!(backend = "mqtt", file = %self.path.display(), error = %e, "cannot write the record of published discovery configs; will retry")
            }
        }
    }
}

/// A first-version record: each topic's metric from its object id
/// (`<device slug>_<metric slug>`), its last reading `now`.
fn migrate(old: BTreeMap<String, BTreeSet<String>>, now: i64) -> BTreeMap<String, BTreeMap<String, Entry>> {
    old.into_iter()
        .map(|(device, topics)| {
            let prefix = format!("{}_", super::super::discovery::slug(&device));
            let entries = topics
                .into_iter()
                .map(|topic| {
                    let object_id = topic.rsplit('/').nth(1).unwrap_or_default();
                    let metric = object_id.strip_prefix(&prefix).unwrap_or(object_id).to_owned();
                    let entry = Entry {
                        metric,
                        state: None,
                        seen: now,
                        saved: now,
                    };
                    (topic, entry)
                })
                .collect();
            (device, entries)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_800_000_000;

    fn topics(gone: &[Gone]) -> Vec<&str> {
        gone.iter().map(|g| g.config.as_str()).collect()
    }

    #[test]
    fn a_device_gone_while_mesura_was_down_is_found_at_the_next_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut record = Published::load(dir.path(), T);
        record.record("meter", "energy", "ha/sensor/m/meter_energy/config", "m/x/meter/energy");
        record.record("meter", "power", "ha/sensor/m/meter_power/config", "m/x/meter/power");
        record.record(
            "room",
            "temperature",
            "ha/sensor/m/room_temperature/config",
            "m/x/room/temperature",
        );
        record.save();
        drop(record);

        let mut record = Published::load(dir.path(), T);
        assert_eq!(record.devices().collect::<Vec<_>>(), vec!["meter", "room"]);
        let configured: BTreeSet<String> = ["meter".to_owned(), "new".to_owned()].into();
        let orphans = record.orphans(&configured);
        assert_eq!(orphans.len(), 1);
        assert_eq!(orphans[0].0, "room");
        assert_eq!(topics(&orphans[0].1), vec!["ha/sensor/m/room_temperature/config"]);
        assert_eq!(orphans[0].1[0].entry.state.as_deref(), Some("m/x/room/temperature"));
        record.save();
        assert!(
            Published::load(dir.path(), T).orphans(&configured).is_empty(),
            "forgotten once cleared"
        );
        assert_eq!(record.remove("meter").len(), 2);
    }

    #[test]
    fn a_metric_its_device_no_longer_declares_is_cleared_once() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut record = Published::load(dir.path(), T);
        for metric in ["voltage", "current", "energy", "energy_lifetime"] {
            record.record(
                "inverter",
                metric,
                &format!("ha/sensor/m/inverter_{metric}/config"),
                &format!("m/modbus/inverter/{metric}"),
            );
        }
        record.save();
        let mut record = Published::load(dir.path(), T);
        // The point `current` was removed from the map while mesura was down.
        let declared: BTreeSet<String> = ["voltage", "energy", "energy_lifetime"]
            .iter()
            .map(|m| format!("ha/sensor/m/inverter_{m}/config"))
            .collect();
        let gone = record.undeclared("inverter", &declared);
        assert_eq!(topics(&gone), vec!["ha/sensor/m/inverter_current/config"]);
        assert_eq!(gone[0].entry.metric, "current");
        record.save();
        let mut record = Published::load(dir.path(), T);
        assert!(
            record.undeclared("inverter", &declared).is_empty(),
            "recorded: not repeated"
        );
        assert_eq!(record.entities("inverter").map(BTreeMap::len), Some(3));
        assert!(record.undeclared("elsewhere", &declared).is_empty());
    }

    #[test]
    fn a_register_is_cleared_only_after_its_device_sent_others_for_expire_after_without_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut record = Published::load(dir.path(), T);
        let day = 86_400;
        for metric in ["power", "energy_tariff3", "gas"] {
            record.record("p1", metric, &format!("ha/sensor/m/p1_{metric}/config"), "s");
        }
        record.record("down", "power", "ha/sensor/m/down_power/config", "s");
        record.saw("down", "power", T - 30 * day);
        record.saw("p1", "energy_tariff3", T);
        record.saw("p1", "gas", T);
        for hour in 0..24 * 7 {
            let now = T + hour * 3600;
            record.saw("p1", "power", now);
            // Gas comes once a day only: slow, not gone.
            if hour % 24 == 0 {
                record.saw("p1", "gas", now);
            }
            assert!(record.expired(|_| true, 7 * day).is_empty(), "hour {hour}");
        }
        record.saw("p1", "power", T + 7 * day + 1);
        let gone = record.expired(|d| d == "p1", 7 * day);
        assert_eq!(topics(&gone), vec!["ha/sensor/m/p1_energy_tariff3/config"]);
        assert!(record.expired(|_| true, 7 * day).is_empty(), "once");
        assert!(
            record.entities("down").is_some(),
            "a device that sends nothing expires nothing"
        );
        // A reading's time is written to the file, a step at a time.
        record.save();
        let reloaded = Published::load(dir.path(), T);
        let gas = &reloaded.entities("p1").expect("p1")["ha/sensor/m/p1_gas/config"];
        assert_eq!(gas.seen, T + 6 * day);
    }

    #[test]
    fn a_first_version_record_is_migrated() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(
            dir.path().join(FILE),
            br#"{"Meter 1": ["homeassistant/sensor/mesura/meter_1_energy_delivered/config", "homeassistant/sensor/mesura/meter_1_tariff/config"]}"#,
        )
        .expect("write");
        let mut record = Published::load(dir.path(), T);
        let entities = record.entities("Meter 1").expect("migrated");
        let metrics: Vec<(&str, i64)> = entities.values().map(|e| (e.metric.as_str(), e.seen)).collect();
        assert_eq!(metrics, vec![("energy_delivered", T), ("tariff", T)]);
        // Readings are matched to migrated entries by their metric.
        record.saw("Meter 1", "energy_delivered", T + 3 * 86_400);
        let gone = record.expired(|_| true, 86_400);
        assert_eq!(topics(&gone), vec!["homeassistant/sensor/mesura/meter_1_tariff/config"]);
        record.save();
        let text = std::fs::read_to_string(dir.path().join(FILE)).expect("read");
        assert!(text.contains("\"version\": 2"), "{text}");
    }

    #[test]
    fn an_unreadable_record_starts_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(FILE), b"{not json").expect("write");
        let mut record = Published::load(dir.path(), T);
        assert_eq!(record.devices().count(), 0);
        record.record("a", "m", "t", "s");
        record.save();
        assert_eq!(Published::load(dir.path(), T).devices().collect::<Vec<_>>(), vec!["a"]);
    }
}
