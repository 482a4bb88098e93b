//! What a reload changes, computed apart from the code that applies it
//! (`app.rs`): which devices start, stop or restart, which backends are rebuilt,
//! whether the disk guard, the downsampler or the status API must restart, and
//! what a base-config reload must open before it applies anything (`Targets`).
//! Pure functions of the old and the new config, so every rule is unit-tested here.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::PathBuf;

use crate::config::{BaseConfig, DeviceConfig};
use crate::reading::DeviceId;

/// The devices of a reload.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct DeviceDiff {
    /// New device files.
    pub start: Vec<DeviceId>,
    /// Files whose config changed: the old task stops before the new one starts.
    pub restart: Vec<DeviceId>,
    /// Files that are gone.
    pub stop: Vec<DeviceId>,
    /// Files unchanged: their tasks are not touched.
    pub unchanged: Vec<DeviceId>,
}

impl DeviceDiff {
    /// `old`: the last good config of every device; `new`: the devices that loaded
    /// now; `failing`: ids whose file failed to load now. A failing file is neither
    /// gone nor changed: its device keeps running with its last good config.
    pub fn new(
        old: &BTreeMap<DeviceId, DeviceConfig>,
        new: &BTreeMap<DeviceId, DeviceConfig>,
        failing: &BTreeSet<String>,
    ) -> DeviceDiff {
        let mut diff = DeviceDiff {
            stop: old
                .keys()
                .filter(|id| !new.contains_key(*id) && !failing.contains(&***id))
                .cloned()
                .collect(),
            ..DeviceDiff::default()
        };
        for (id, config) in new {
            match old.get(id) {
                Some(previous) if same_monitor(previous, config) => diff.unchanged.push(id.clone()),
                Some(_) => diff.restart.push(id.clone()),
                None => diff.start.push(id.clone()),
            }
        }
        diff
    }
}

/// Whether `a` and `b` run the same monitor: all but the `tariff:` alike. The
/// tariff is the cost job's (restarted by `app.rs` when any tariff changes), so a
/// new price does not reopen a meter's serial port.
fn same_monitor(a: &DeviceConfig, b: &DeviceConfig) -> bool {
    a.id == b.id
        && a.file == b.file
        && a.kind == b.kind
        && a.file_contents == b.file_contents
        && crate::config::CommonConfig {
            tariff: None,
            ..a.common.clone()
        } == crate::config::CommonConfig {
            tariff: None,
            ..b.common.clone()
        }
}

/// The base config (config.yaml) of a reload.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct BaseDiff {
    /// Backends to open anew (settings changed, or added), or to remove (no longer
    /// configured): `app.rs` tells which by opening them.
    pub backends: Vec<&'static str>,
    /// The disk guard watches another database or has other settings.
    pub disk_guard: bool,
    /// The downsampler works on another database or has other settings.
    pub downsampler: bool,
    /// The status API's section changed, or the files it reads moved.
    pub api: bool,
    /// Logging changed: that applies only after a restart.
    pub needs_restart: bool,
}

/// What a base-config reload opens before it applies anything: if any of them
/// cannot be opened, nothing of the new config.yaml is applied.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Targets {
    /// Backends to open anew (a backend no longer configured opens as nothing).
    pub backends: Vec<&'static str>,
    /// The database the restarted disk guard or downsampler will work on; it must
    /// be writable.
    pub store: Option<PathBuf>,
    /// What becomes of the status API.
    pub api: ApiChange,
}

/// What a reload does to the status API.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub enum ApiChange {
    /// Unchanged: it keeps serving.
    #[default]
    Keep,
    /// Disabled: it stops.
    Stop,
    /// A new address: bound before anything is applied, while the old one serves.
    Listen(SocketAddr),
    /// The same address with other settings (the token): the server restarts on it.
    Restart,
}

impl BaseDiff {
    pub fn new(old: &BaseConfig, new: &BaseConfig) -> BaseDiff {
        let names: BTreeSet<&'static str> = old.backends.names().into_iter().chain(new.backends.names()).collect();
        let db_changed = new.data_dir != old.data_dir
            || new.backends.sqlite.as_ref().map(|c| &c.path) != old.backends.sqlite.as_ref().map(|c| &c.path);
        BaseDiff {
            backends: names
                .into_iter()
                .filter(|name| !crate::backends::same_settings(name, old, new))
                .collect(),
            disk_guard: db_changed || new.disk_guard != old.disk_guard,
            downsampler: db_changed || new.retention != old.retention,
            // The API reads the database and the outbox: it follows them.
            api: db_changed || new.api != old.api,
            // Every device task holds the counter settings it started with.
            needs_restart: new.logging != old.logging || new.counters != old.counters,
        }
    }

    /// What must open before this diff from `old` to `new` is applied.
    pub fn targets(&self, old: &BaseConfig, new: &BaseConfig) -> Targets {
        let store_keeper = self.disk_guard && new.disk_guard.enabled || self.downsampler && new.retention.enabled;
        let api = match (self.api, old.api.enabled, new.api.enabled) {
            (false, _, _) | (true, false, false) => ApiChange::Keep,
            (true, true, false) => ApiChange::Stop,
            (true, true, true) if old.api.listen == new.api.listen => ApiChange::Restart,
            (true, _, true) => ApiChange::Listen(new.api.listen),
        };
        Targets {
            backends: self.backends.clone(),
            store: store_keeper
                .then_some(new.backends.sqlite.as_ref())
                .flatten()
                .map(|sqlite| new.data_dir.join(&sqlite.path)),
            api,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn device(yaml: &str) -> DeviceConfig {
        crate::config::parse_device(std::path::Path::new("dev.yaml"), yaml, &["sqlite"]).expect("device config")
    }

    /// Base configs loaded from one place, so relative paths (`data_dir`) resolve
    /// alike unless a test changes them.
    fn base(dir: &tempfile::TempDir, yaml: &str) -> BaseConfig {
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, yaml).expect("write");
        crate::config::load_base(&path, &|_: &str| None, &[]).expect("base config")
    }

    fn ids(list: &[DeviceId]) -> Vec<&str> {
        list.iter().map(|id| &**id).collect()
    }

    /// Alert rules and webhooks change live in the evaluator (`daemon/alerts.rs`):
    /// a change of `alerts:` alone reopens nothing.
    #[test]
    fn an_alerts_change_reopens_nothing() {
        let dir = tempfile::tempdir().expect("dir");
        let old = base(&dir, "backends:\n  sqlite: {}\n");
        let new = base(
            &dir,
            "backends:\n  sqlite: {}\nalerts:\n  webhooks:\n    w:\n      url: http://127.0.0.1:9/x\n  rules:\n    quiet:\n      device: p1\n      silent: 5m\n",
        );
        assert_ne!(old, new);
        let diff = BaseDiff::new(&old, &new);
        assert_eq!(diff, BaseDiff::default());
        assert_eq!(diff.targets(&old, &new), Targets::default());
    }

    #[test]
    fn a_key_replaced_in_its_file_restarts_the_device() {
        let dir = tempfile::tempdir().expect("dir");
        let key = dir.path().join("p1.key");
        std::fs::write(&key, "00112233445566778899AABBCCDDEEFF\n").expect("key");
        let yaml = format!(
            "type: dsmr\nhost: 127.0.0.1\nport: 2001\ndecryption_key_file: {}\n",
            key.display()
        );
        let before = device(&yaml);
        let old: BTreeMap<DeviceId, DeviceConfig> = [(Arc::from("p1"), before)].into();
        let same: BTreeMap<DeviceId, DeviceConfig> = [(Arc::from("p1"), device(&yaml))].into();
        let diff = DeviceDiff::new(&old, &same, &BTreeSet::new());
        assert_eq!(ids(&diff.unchanged), ["p1"]);
        // The grid operator's new key, the device file untouched.
        std::fs::write(&key, "FFEEDDCCBBAA99887766554433221100\n").expect("key");
        let rotated: BTreeMap<DeviceId, DeviceConfig> = [(Arc::from("p1"), device(&yaml))].into();
        let diff = DeviceDiff::new(&old, &rotated, &BTreeSet::new());
        assert_eq!(ids(&diff.restart), ["p1"]);
        // Nothing of the key is kept but a digest.
        let shown = format!("{:?}", rotated.get("p1").expect("p1"));
        assert!(!shown.contains("FFEEDD"), "{shown}");
    }

    #[test]
    fn devices_start_restart_stop_or_stay() {
        let fast = device("type: simulated\nprofile: gas\npoll_interval: 1s\n");
        let slow = device("type: simulated\nprofile: gas\npoll_interval: 5s\n");
        let old: BTreeMap<DeviceId, DeviceConfig> = [
            (Arc::from("same"), fast.clone()),
            (Arc::from("edited"), fast.clone()),
            (Arc::from("deleted"), fast.clone()),
            (Arc::from("broken"), fast.clone()),
        ]
        .into();
        let new: BTreeMap<DeviceId, DeviceConfig> = [
            (Arc::from("same"), fast.clone()),
            (Arc::from("edited"), slow),
            (Arc::from("added"), fast),
        ]
        .into();
        // `broken.yaml` fails to load now: its device keeps its last good config.
        let failing: BTreeSet<String> = ["broken".to_owned()].into();
        let diff = DeviceDiff::new(&old, &new, &failing);
        assert_eq!(ids(&diff.start), ["added"]);
        assert_eq!(ids(&diff.restart), ["edited"]);
        assert_eq!(ids(&diff.stop), ["deleted"]);
        assert_eq!(ids(&diff.unchanged), ["same"]);

        // Once the file is removed for good, the device stops.
        let diff = DeviceDiff::new(&old, &new, &BTreeSet::new());
        assert_eq!(ids(&diff.stop), ["broken", "deleted"]);
    }

    #[test]
    fn a_tariff_change_leaves_the_monitor_running() {
        let priced = |price: &str| {
            device(&format!(
                "type: simulated\nprofile: gas\ntariff:\n  fixed_price: {price}\n"
            ))
        };
        let old: BTreeMap<DeviceId, DeviceConfig> = [(Arc::from("meter"), priced("0.25"))].into();
        let new: BTreeMap<DeviceId, DeviceConfig> = [(Arc::from("meter"), priced("0.30"))].into();
        let diff = DeviceDiff::new(&old, &new, &BTreeSet::new());
        assert_eq!((ids(&diff.unchanged), diff.restart.len()), (vec!["meter"], 0));
        let polled = device("type: simulated\nprofile: gas\npoll_interval: 5s\ntariff:\n  fixed_price: 0.30\n");
        let new: BTreeMap<DeviceId, DeviceConfig> = [(Arc::from("meter"), polled)].into();
        assert_eq!(ids(&DeviceDiff::new(&old, &new, &BTreeSet::new()).restart), ["meter"]);
    }

    #[test]
    fn nothing_changed_is_an_empty_diff() {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = device("type: system\npoll_interval: 10s\n");
        let devices: BTreeMap<DeviceId, DeviceConfig> = [(Arc::from("host"), config)].into();
        let diff = DeviceDiff::new(&devices, &devices, &BTreeSet::new());
        assert!(diff.start.is_empty() && diff.restart.is_empty() && diff.stop.is_empty());
        assert_eq!(ids(&diff.unchanged), ["host"]);

        let a = base(&dir, "backends:\n  sqlite: {}\n  csv: {}\n");
        assert_eq!(BaseDiff::new(&a, &a), BaseDiff::default());
    }

    #[test]
    fn only_the_backends_whose_section_changed_are_rebuilt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = base(&dir, "backends:\n  sqlite: {}\n  csv: {}\n");
        let new = base(&dir, "backends:\n  sqlite:\n    flush_interval: 1s\n  csv: {}\n");
        let diff = BaseDiff::new(&old, &new);
        assert_eq!(diff.backends, ["sqlite"]);
        assert!(!diff.needs_restart);

        // A removed backend and an added one are both in the list.
        let new = base(&dir, "backends:\n  sqlite: {}\n  mqtt:\n    host: 127.0.0.1\n");
        assert_eq!(BaseDiff::new(&old, &new).backends, ["csv", "mqtt"]);
    }

    #[test]
    fn another_data_dir_rebuilds_every_backend_and_restarts_the_store_keepers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = base(&dir, "backends:\n  sqlite: {}\n  csv: {}\n");
        let new = base(&dir, "data_dir: elsewhere\nbackends:\n  sqlite: {}\n  csv: {}\n");
        let diff = BaseDiff::new(&old, &new);
        assert_eq!(diff.backends, ["csv", "sqlite"]);
        assert!(diff.disk_guard && diff.downsampler);
    }

    #[test]
    fn guard_retention_and_api_changes_are_told_apart() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = base(&dir, "backends:\n  sqlite: {}\n");
        let guard = base(
            &dir,
            "backends:\n  sqlite: {}\ndisk_guard:\n  max_disk_used_percent: 80\n",
        );
        let diff = BaseDiff::new(&old, &guard);
        assert!(diff.disk_guard && !diff.downsampler && diff.backends.is_empty());

        let retention = base(&dir, "backends:\n  sqlite: {}\nretention:\n  raw: 3d\n");
        let diff = BaseDiff::new(&old, &retention);
        assert!(!diff.disk_guard && diff.downsampler && diff.backends.is_empty());

        let api = base(&dir, "backends:\n  sqlite: {}\napi:\n  enabled: false\n");
        let diff = BaseDiff::new(&old, &api);
        assert!(diff.api && !diff.needs_restart && !diff.disk_guard && !diff.downsampler);

        let logging = base(&dir, "backends:\n  sqlite: {}\nlogging:\n  level: debug\n");
        let diff = BaseDiff::new(&old, &logging);
        assert!(diff.needs_restart && !diff.api);

        // Every device task holds the counter settings it started with.
        let counters = base(&dir, "backends:\n  sqlite: {}\ncounters:\n  glitch_hold: 5\n");
        let diff = BaseDiff::new(&old, &counters);
        assert!(diff.needs_restart && diff.backends.is_empty() && !diff.api);
    }

    #[test]
    fn a_new_database_is_opened_first_by_the_backend_and_checked_for_the_store_keepers() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = base(&dir, "backends:\n  sqlite: {}\n");
        let moved = base(&dir, "backends:\n  sqlite:\n    path: other.db\n");
        let targets = BaseDiff::new(&old, &moved).targets(&old, &moved);
        assert_eq!(targets.backends, ["sqlite"]);
        assert_eq!(targets.store, Some(moved.data_dir.join("other.db")));
        assert_eq!(targets.api, ApiChange::Restart, "the API reads the new database");

        // Guard and downsampler both off: nothing of theirs to check.
        let off = base(
            &dir,
            "backends:\n  sqlite:\n    path: other.db\ndisk_guard:\n  enabled: false\nretention:\n  enabled: false\n",
        );
        assert_eq!(BaseDiff::new(&old, &off).targets(&old, &off).store, None);

        // Only the guard's settings: the same database, still checked.
        let guard = base(
            &dir,
            "backends:\n  sqlite: {}\ndisk_guard:\n  max_disk_used_percent: 80\n",
        );
        let targets = BaseDiff::new(&old, &guard).targets(&old, &guard);
        assert!(targets.backends.is_empty());
        assert_eq!(targets.store, Some(old.data_dir.join("mesura.db")));

        let same = BaseDiff::new(&old, &old).targets(&old, &old);
        assert_eq!(same, Targets::default());
    }

    #[test]
    fn a_new_api_address_is_bound_first_the_same_one_restarts_in_place() {
        let dir = tempfile::tempdir().expect("tempdir");
        let old = base(&dir, "api:\n  listen: 127.0.0.1:9400\n");
        let api = |new: &BaseConfig| BaseDiff::new(&old, new).targets(&old, new).api;
        let moved = base(&dir, "api:\n  listen: 127.0.0.1:9401\n");
        assert_eq!(api(&moved), ApiChange::Listen("127.0.0.1:9401".parse().expect("addr")));
        let token = base(&dir, "api:\n  listen: 127.0.0.1:9400\n  token: abc\n");
        assert_eq!(api(&token), ApiChange::Restart);
        let off = base(&dir, "api:\n  enabled: false\n");
        assert_eq!(api(&off), ApiChange::Stop);
        assert_eq!(api(&old), ApiChange::Keep);

        let was_off = base(&dir, "api:\n  enabled: false\n  listen: 127.0.0.1:9400\n");
        let on = BaseDiff::new(&was_off, &old).targets(&was_off, &old).api;
        assert_eq!(on, ApiChange::Listen("127.0.0.1:9400".parse().expect("addr")));
        let still_off = base(&dir, "api:\n  enabled: false\n  listen: 127.0.0.1:9401\n");
        assert_eq!(
            BaseDiff::new(&was_off, &still_off).targets(&was_off, &still_off).api,
            ApiChange::Keep
        );
    }
}
