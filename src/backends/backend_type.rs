//! What a backend type is: the config struct of its `backends.<name>` section,
//! which opens the backend. `backend_types!` registers them all from one list (in
//! `backends/mod.rs`).

use std::fmt::Debug;
use std::path::Path;

use async_trait::async_trait;
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::{Backend, BackendError};

/// A backend type, implemented by the config struct of its section.
#[async_trait]
pub trait BackendType: DeserializeOwned + Serialize + Clone + PartialEq + Debug + Send + Sync {
    /// The section when config.yaml has no `backends:` at all: `None` (off) unless
    /// the backend is on by default.
    fn by_default() -> Option<Self> {
        None
    }
    /// Makes relative paths in the section absolute once config.yaml is loaded:
    /// against its directory, or `$CREDENTIALS_DIRECTORY` for systemd credentials.
    fn resolve_paths(&mut self, _config_dir: &Path, _credentials_dir: Option<&Path>) {}
    /// Combinations of keys serde cannot refuse, checked at load (so `mesura check`
    /// reports them): `Err((key within the section, message))`.
    fn validate(&self) -> Result<(), (String, String)> {
        Ok(())
    }
    /// Whether a reload from `self` to `new` can leave the running backend alone.
    fn same_settings(&self, new: &Self) -> bool {
        self == new
    }
    /// Opens the backend, its files under `data_dir`.
    async fn open(&self, data_dir: &Path) -> Result<Box<dyn Backend>, BackendError>;
}

/// Registers the backend types, one line each: generates
/// [`BackendsConfig`](super::BackendsConfig) (the `backends:` section, one optional
/// field per backend, named as the backend) and everything that dispatches on a
/// backend's name, so no `match` on the name is written by hand anywhere else.
macro_rules! backend_types {
    ($( $(#[$doc:meta])* $name:ident: $config:ty, )+) => {
        /// The configured backends, by name. A device's `backends:` list picks from these.
        #[derive(Debug, Clone, PartialEq, ::serde::Deserialize, ::serde::Serialize)]
        // A missing field takes its value from `Default`: on or off as the type says.
        #[serde(default, deny_unknown_fields)]
        pub struct BackendsConfig {
            $( $(#[$doc])* pub $name: Option<$config>, )+
        }

        impl Default for BackendsConfig {
            fn default() -> Self {
                BackendsConfig {
                    $( $name: <$config as $crate::backends::BackendType>::by_default(), )+
                }
            }
        }

        impl BackendsConfig {
            /// Every backend mesura has, configured or not.
            pub const NAMES: &'static [&'static str] = &[$(stringify!($name)),+];

            /// The names of the enabled backends.
            pub fn names(&self) -> Vec<&'static str> {
                let mut names = Vec::new();
                $( if self.$name.is_some() { names.push(stringify!($name)); } )+
                names
            }

            /// See [`BackendType::resolve_paths`].
            pub(crate) fn resolve_paths(&mut self, config_dir: &::std::path::Path, credentials_dir: Option<&::std::path::Path>) {
                $( if let Some(section) = &mut self.$name {
                    $crate::backends::BackendType::resolve_paths(section, config_dir, credentials_dir);
                } )+
            }

            /// The first section that fails [`BackendType::validate`]:
            /// `(backends.<name>.<key>, message)`.
            pub fn validate(&self) -> Option<(String, String)> {
                $( if let Some(Err((key, message))) = self.$name.as_ref().map($crate::backends::BackendType::validate) {
                    return Some((format!("backends.{}.{key}", stringify!($name)), message));
                } )+
                None
            }

            /// Whether backend `name` is configured alike in `self` and `new` (both
            /// off counts as alike).
            pub fn same_section(&self, new: &Self, name: &str) -> bool {
                match name {
                    $( stringify!($name) => match (&self.$name, &new.$name) {
                        (Some(old), Some(new)) => $crate::backends::BackendType::same_settings(old, new),
                        (old, new) => old.is_none() && new.is_none(),
                    }, )+
                    _ => true,
                }
            }

            /// Opens backend `name`, if it is configured.
            pub async fn open(
                &self,
                name: &str,
                data_dir: &::std::path::Path,
            ) -> Result<Option<Box<dyn $crate::backends::Backend>>, $crate::backends::BackendError> {
                match name {
                    $( stringify!($name) => match &self.$name {
                        Some(section) => $crate::backends::BackendType::open(section, data_dir).await.map(Some),
                        None => Ok(None),
                    }, )+
                    _ => Ok(None),
                }
            }
        }
    };
}
pub(crate) use backend_types;

#[cfg(test)]
mod tests {
    use crate::backends::BackendsConfig;

    fn section(yaml: &str) -> BackendsConfig {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn sqlite_is_on_unless_the_section_turns_it_off() {
        assert_eq!(BackendsConfig::NAMES, ["sqlite", "csv", "mqtt", "uplink"]);
        assert_eq!(BackendsConfig::default().names(), ["sqlite"]);
        assert_eq!(section("{}").names(), ["sqlite"]);
        assert_eq!(section("csv: {}\n").names(), ["sqlite", "csv"]);
        assert_eq!(section("sqlite: ~\ncsv: {}\n").names(), ["csv"]);
        let unknown = serde_yaml_ng::from_str::<BackendsConfig>("influx: {}\n")
            .unwrap_err()
            .to_string();
        assert!(
            unknown.contains("unknown field `influx`, expected one of `sqlite`, `csv`, `mqtt`, `uplink`"),
            "{unknown}"
        );
    }

    #[test]
    fn a_backend_is_alike_when_its_own_section_is() {
        let old = section("csv: {}\n");
        let new = section("sqlite:\n  flush_interval: 1s\ncsv: {}\nmqtt:\n  host: broker\n");
        assert!(old.same_section(&new, "csv"));
        assert!(old.same_section(&new, "uplink"), "off in both");
        assert!(!old.same_section(&new, "sqlite"), "settings changed");
        assert!(!old.same_section(&new, "mqtt"), "turned on");
        assert!(!new.same_section(&old, "mqtt"), "turned off");
    }
}
