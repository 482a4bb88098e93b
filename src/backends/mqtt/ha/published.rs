//! The record of the discovery configs mesura has published, per device, in
//! `<data_dir>/mqtt-discovery.json`: what a later start must clear when the device
//! is gone from the configuration (a device removed while mesura was down would
//! otherwise stay in Home Assistant for good, its config retained on the broker).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub const FILE: &str = "mqtt-discovery.json";

#[derive(Debug)]
pub struct Published {
    path: PathBuf,
    /// Device id → its discovery config topics.
    devices: BTreeMap<String, BTreeSet<String>>,
    dirty: bool,
}

impl Published {
    /// The record under `data_dir`; an unreadable one is said and starts empty (its
    /// devices' configs are then cleared only when a reload removes them).
    pub fn load(data_dir: &Path) -> Published {
        let path = data_dir.join(FILE);
        let devices = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(backend = "mqtt", file = %path.display(), error = %e, "the record of published discovery configs is unreadable; starting a new one");
                BTreeMap::new()
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => {
                tracing::warn!(backend = "mqtt", file = %path.display(), error = %e, "cannot read the record of published discovery configs");
                BTreeMap::new()
            }
        };
        Published {
            path,
            devices,
            dirty: false,
        }
    }

    /// Notes that `topic` was published for `device`.
    pub fn record(&mut self, device: &str, topic: &str) {
        if self
            .devices
            .entry(device.to_owned())
            .or_default()
            .insert(topic.to_owned())
        {
            self.dirty = true;
        }
    }

    /// Forgets `device`; returns its topics (to clear).
    pub fn remove(&mut self, device: &str) -> BTreeSet<String> {
        let topics = self.devices.remove(device).unwrap_or_default();
        if !topics.is_empty() {
            self.dirty = true;
        }
        topics
    }

    /// Devices recorded that are not in `configured`, with their topics; forgotten.
    pub fn orphans(&mut self, configured: &BTreeSet<String>) -> Vec<(String, BTreeSet<String>)> {
        let gone: Vec<String> = self
            .devices
            .keys()
            .filter(|d| !configured.contains(*d))
            .cloned()
            .collect();
        gone.into_iter()
            .map(|d| {
                let topics = self.remove(&d);
                (d, topics)
            })
            .collect()
    }

    pub fn devices(&self) -> impl Iterator<Item = &str> {
        self.devices.keys().map(String::as_str)
    }

    /// Writes the record if it changed (a new file renamed over the old one).
    pub fn save(&mut self) {
        if !self.dirty {
            return;
        }
        let tmp = self.path.with_extension("json.tmp");
        let written = serde_json::to_vec_pretty(&self.devices)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &self.path));
        match written {
            Ok(()) => self.dirty = false,
            Err(e) => {
                tracing::warn!(backend = "mqtt", file = %self.path.display(), error = %e, "cannot write the record of published discovery configs; will retry")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_device_gone_while_mesura_was_down_is_found_at_the_next_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut record = Published::load(dir.path());
        record.record("meter", "ha/sensor/m/meter_energy/config");
        record.record("meter", "ha/sensor/m/meter_power/config");
        record.record("room", "ha/sensor/m/room_temperature/config");
        record.save();
        drop(record);

        let mut record = Published::load(dir.path());
        assert_eq!(record.devices().collect::<Vec<_>>(), vec!["meter", "room"]);
        let configured: BTreeSet<String> = ["meter".to_owned(), "new".to_owned()].into();
        let orphans = record.orphans(&configured);
        assert_eq!(orphans.len(), 1);
        assert_eq!(orphans[0].0, "room");
        assert_eq!(
            orphans[0].1.iter().collect::<Vec<_>>(),
            vec!["ha/sensor/m/room_temperature/config"]
        );
        record.save();
        assert!(
            Published::load(dir.path()).orphans(&configured).is_empty(),
            "forgotten once cleared"
        );
        assert_eq!(record.remove("meter").len(), 2);
    }

    #[test]
    fn an_unreadable_record_starts_empty() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join(FILE), b"{not json").expect("write");
        let mut record = Published::load(dir.path());
        assert_eq!(record.devices().count(), 0);
        record.record("a", "t");
        record.save();
        assert_eq!(Published::load(dir.path()).devices().collect::<Vec<_>>(), vec!["a"]);
    }
}
