//! What a device type is: the config struct of its `type:`, which checks itself,
//! builds its monitor and lists its metrics. `device_types!` registers them all
//! from one list (in `monitors/mod.rs`).

use std::fmt::Debug;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Monitor, MonitorContext, MonitorError};
use crate::config::common::CommonConfig;
use crate::reading::MetricSpec;

/// A device type, implemented by its config struct (what a `type: <name>` file
/// deserializes into beside the common keys).
pub trait DeviceType: DeserializeOwned + Serialize + Clone + PartialEq + Debug {
    /// Whether the device is a cloud service (rate limits, quotas), which an open
    /// breaker spares for `breaker_cooldown`; a local device is probed on its backoff.
    const CLOUD: bool = false;
    /// Whether the device sends on its own (a P1 port), so `poll_interval: 0s` can
    /// mean "every message it sends" instead of a busy loop.
    const PUSHES: bool = false;
    /// Poll interval when the file does not set one.
    fn default_poll_interval() -> Duration;
    /// Checks beyond types (ranges, combinations): `Err((key, message))`.
    fn validate(&self, _common: &CommonConfig) -> Result<(), (String, String)> {
        Ok(())
    }
    /// Settings that work but deserve a second look (`mesura check` prints them):
    /// `(key, message)`.
    fn warnings(&self) -> Vec<(String, String)> {
        Vec::new()
    }
    /// Every metric a device of this type can report, for `mesura devices` and the
    /// docs check; a device's own monitor may report fewer.
    fn metrics() -> Vec<MetricSpec>;
    /// Whether the device file allows writes (`allow_writes: true`, one of the two
    /// locks of docs/control.md). Types that cannot write keep `false`.
    fn allows_writes(&self) -> bool {
        false
    }
    /// Builds the monitor of `device`, the whole file whose type-specific part is
    /// `self`: the poll interval and the file's place are read from it.
    fn build(&self, ctx: MonitorContext) -> Result<Box<dyn Monitor>, MonitorError>;
}

/// Registers the device types, one line each: generates [`DeviceKind`](super::DeviceKind)
/// (the serde enum tagged by `type:`) and everything that dispatches on it, so no
/// `match` on the type is written by hand anywhere else.
macro_rules! device_types {
    ($( $(#[$doc:meta])* $variant:ident($name:literal) => $config:ty, )+) => {
        /// A device's type-specific configuration, tagged by `type:`.
        #[derive(Debug, Clone, PartialEq, ::serde::Serialize)]
        #[serde(tag = "type")]
        pub enum DeviceKind {
            $( $(#[$doc])* #[serde(rename = $name)] $variant($config), )+
        }

        impl DeviceKind {
            /// Every `type:` value.
            pub const TYPES: &'static [&'static str] = &[$($name),+];

            pub fn type_name(&self) -> &'static str {
                match self { $( DeviceKind::$variant(_) => $name, )+ }
            }

            pub fn default_poll_interval(&self) -> ::std::time::Duration {
                match self { $( DeviceKind::$variant(_) => <$config as $crate::monitors::DeviceType>::default_poll_interval(), )+ }
            }

            pub(crate) fn validate(&self, common: &$crate::config::CommonConfig) -> Result<(), (String, String)> {
                match self { $( DeviceKind::$variant(c) => $crate::monitors::DeviceType::validate(c, common), )+ }
            }

            /// Settings that work but deserve a second look: `(key, message)`.
            pub fn warnings(&self) -> Vec<(String, String)> {
                match self { $( DeviceKind::$variant(c) => $crate::monitors::DeviceType::warnings(c), )+ }
            }

            /// Whether the device is a cloud service (see [`DeviceType::CLOUD`]).
            pub fn is_cloud(&self) -> bool {
                match self { $( DeviceKind::$variant(_) => <$config as $crate::monitors::DeviceType>::CLOUD, )+ }
            }

            /// Whether the device pushes its readings (see [`DeviceType::PUSHES`]).
            pub fn pushes(&self) -> bool {
                match self { $( DeviceKind::$variant(_) => <$config as $crate::monitors::DeviceType>::PUSHES, )+ }
            }

            /// Whether the device file allows writes (see [`DeviceType::allows_writes`]).
            pub fn allows_writes(&self) -> bool {
                match self { $( DeviceKind::$variant(c) => $crate::monitors::DeviceType::allows_writes(c), )+ }
            }

            /// The type-specific keys of `type_name`.
            pub fn keys(type_name: &str) -> &'static [&'static str] {
                match type_name { $( $name => $crate::config::parse::fields_of::<$config>(), )+ _ => &[] }
            }

            /// Every metric the type `type_name` can report; none for an unknown type.
            pub fn metrics(type_name: &str) -> Vec<$crate::reading::MetricSpec> {
                match type_name { $( $name => <$config as $crate::monitors::DeviceType>::metrics(), )+ _ => Vec::new() }
            }

            /// Builds the monitor of the device whose kind this is.
            pub fn build(
                &self,
                ctx: $crate::monitors::MonitorContext,
            ) -> Result<Box<dyn $crate::monitors::Monitor>, $crate::monitors::MonitorError> {
                match self { $( DeviceKind::$variant(c) => $crate::monitors::DeviceType::build(c, ctx), )+ }
            }

            pub(crate) fn parse(
                type_name: &str,
                file: &::std::path::Path,
                src: &str,
            ) -> Option<Result<(Self, Vec<String>), $crate::config::ConfigError>> {
                match type_name {
                    $( $name => Some($crate::config::parse::parse_typed::<$config>(file, src).map(|(c, i)| (DeviceKind::$variant(c), i))), )+
                    _ => None,
                }
            }
        }
    };
}
pub(crate) use device_types;

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::parse_device;
    use crate::monitors::{type_metrics, DeviceKind};

    #[test]
    fn every_registered_type_has_its_own_name_keys_and_metrics() {
        for (i, name) in DeviceKind::TYPES.iter().enumerate() {
            assert!(!DeviceKind::TYPES[..i].contains(name), "{name} is registered twice");
            assert!(!DeviceKind::keys(name).is_empty(), "{name} has no keys");
            assert!(!type_metrics(name).is_empty(), "{name} lists no metrics");
        }
        assert!(type_metrics("gas_meter").is_empty());
        assert!(DeviceKind::keys("gas_meter").is_empty());
    }

    #[test]
    fn a_device_builds_its_monitor_through_its_type() {
        let device = parse_device(
            Path::new("/etc/mesura/config.d/attic.yaml"),
            "type: simulated\nprofile: climate\n",
            &["sqlite"],
        )
        .unwrap();
        assert_eq!(device.kind.type_name(), "simulated");
        let data = tempfile::tempdir().unwrap();
        let monitor = device
            .build_monitor(crate::host::clock::system(), data.path().to_path_buf())
            .unwrap();
        let all: Vec<&str> = type_metrics("simulated").iter().map(|m| m.name).collect();
        assert!(!monitor.metrics().is_empty());
        for metric in monitor.metrics() {
            assert!(all.contains(&metric.name), "{} is not listed for the type", metric.name);
        }
    }
}
