//! HTTP uplink: sends readings to a central server in batches, as JSON or as
//! InfluxDB line protocol (InfluxDB 1.x and 2.x, VictoriaMetrics, QuestDB and the
//! other engines that speak it). See docs/backends/uplink.md.
//!
//! `write` only appends to the durable outbox (`data_dir/outbox.db`) and wakes the
//! delivery task; the task sends oldest first and deletes rows only on a 2xx, so
//! an outage or a restart loses nothing (delivery is at-least-once).

mod aggregate;
mod delivery;
mod encode;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::health::Health;
use super::outbox::{Durable, Opening, OutboxConfig};
use super::{Backend, BackendError, BackendType, BatchPolicy};
use crate::config::secret::{mask_url, Secret};
use crate::reading::Reading;

/// `backends.uplink`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UplinkConfig {
    /// Where batches are POSTed. For `format: influx` with an `influx:` section, the
    /// server's base URL (the write path is added); otherwise the full endpoint.
    /// Printed (by `check`, in logs) with its user info and credential parameters
    /// masked.
    #[serde(serialize_with = "crate::config::secret::serialize_masked_url")]
    pub url: String,
    /// `json` (an array of readings) or `influx` (line protocol).
    #[serde(default)]
    pub format: Format,
    /// Readings (after aggregation: points) per request.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// How often waiting readings are sent; sooner when `batch_size` wait.
    #[serde(default = "default_batch_interval", with = "crate::config::duration")]
    pub batch_interval: Duration,
    /// Limit for one request, connecting included.
    #[serde(default = "default_timeout", with = "crate::config::duration")]
    pub timeout: Duration,
    /// Longest wait between retries of a failing delivery (exponential backoff from
    /// 1 s, jittered).
    #[serde(default = "default_max_backoff", with = "crate::config::duration")]
    pub max_backoff: Duration,
    /// Sent as `Authorization: Bearer …` (`Token …` with an `influx:` section).
    /// Usually `${UPLINK_TOKEN}`. Never logged.
    #[serde(default)]
    pub token: Option<Secret>,
    /// A file holding the token instead (surrounding whitespace ignored). A relative
    /// name is looked up in `$CREDENTIALS_DIRECTORY` (systemd `LoadCredential=`)
    /// first, then beside config.yaml.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// Certificate checks for `https://`.
    #[serde(default)]
    pub tls: TlsConfig,
    /// Compress request bodies (`Content-Encoding: gzip`).
    #[serde(default)]
    pub gzip: bool,
    /// InfluxDB write API: builds the write path from `url` and sends `Token` auth.
    #[serde(default)]
    pub influx: Option<InfluxConfig>,
    /// Extra tags on every point (line protocol) or reading (JSON `tags`), e.g.
    /// `site: home`, so readings of many mesura instances stay apart in one
    /// database.
    #[serde(default, skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub tags: std::collections::BTreeMap<String, String>,
    /// Send one point per window, device and metric instead of every reading
    /// (`5m`): mean/min/max/last of gauges, last of counters.
    #[serde(default, with = "crate::config::duration::option")]
    pub aggregate: Option<Duration>,
    /// Bounds of the undelivered backlog.
    #[serde(default)]
    pub outbox: OutboxConfig,
    /// Polls queued for this backend before new ones are dropped (and counted).
    #[serde(default = "super::sqlite::default_queue_capacity")]
    pub queue_capacity: usize,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    #[default]
    Json,
    Influx,
}

#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM file of extra CA certificates to trust (a private CA); relative to
    /// config.yaml. The usual public roots stay trusted.
    #[serde(default)]
    pub ca_file: Option<PathBuf>,
    /// Accept any certificate. Only for a lab: anyone on the path can then read and
    /// alter the uplink, token included. Warned about at every start.
    #[serde(default)]
    pub insecure_skip_verify: bool,
}

#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct InfluxConfig {
    /// `1`: `POST <url>/write?db=…`; `2`: `POST <url>/api/v2/write?org=…&bucket=…`.
    pub version: u8,
    /// Database (1.x).
    #[serde(default)]
    pub db: Option<String>,
    /// Retention policy (1.x); the database's default when absent.
    #[serde(default)]
    pub rp: Option<String>,
    /// Organisation (2.x).
    #[serde(default)]
    pub org: Option<String>,
    /// Bucket (2.x).
    #[serde(default)]
    pub bucket: Option<String>,
}

pub fn default_batch_size() -> usize {
    500
}
pub fn default_batch_interval() -> Duration {
    Duration::from_secs(60)
}
pub fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
pub fn default_max_backoff() -> Duration {
    Duration::from_secs(300)
}

impl UplinkConfig {
    /// The token from `token` or `token_file`.
    fn read_token(&self) -> Result<Option<Secret>, BackendError> {
        match (&self.token, &self.token_file) {
            (Some(_), Some(_)) => Err(invalid("give `token` or `token_file`, not both")),
            (Some(token), None) => Ok(Some(token.clone())),
            (None, Some(file)) => {
                let text = std::fs::read_to_string(file)
                    .map_err(|e| invalid(&format!("token_file {}: {e}", file.display())))?;
                Ok(Some(Secret::new(text.trim())))
            }
            (None, None) => Ok(None),
        }
        .map(|t| t.filter(|t| !t.expose().is_empty()))
    }

    /// The URL requests go to.
    fn endpoint(&self) -> Result<reqwest::Url, BackendError> {
        let mut url =
            reqwest::Url::parse(&self.url).map_err(|e| invalid(&format!("url `{}`: {e}", mask_url(&self.url))))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("url must start with http:// or https://"));
        }
        let Some(influx) = &self.influx else { return Ok(url) };
        if self.format != Format::Influx {
            return Err(invalid("an `influx:` section needs `format: influx`"));
        }
        let base = url.path().trim_end_matches('/').to_owned();
        let required = |v: &Option<String>, key: &str| {
            v.clone()
                .filter(|s| !s.is_empty())
                .ok_or_else(|| invalid(&format!("influx version {} needs `{key}`", influx.version)))
        };
        match influx.version {
            1 => {
                let db = required(&influx.db, "db")?;
                url.set_path(&format!("{base}/write"));
                let mut query = url.query_pairs_mut();
                query.append_pair("db", &db);
                if let Some(rp) = &influx.rp {
                    query.append_pair("rp", rp);
                }
                query.append_pair("precision", "ns");
            }
            2 => {
                let (org, bucket) = (required(&influx.org, "org")?, required(&influx.bucket, "bucket")?);
                url.set_path(&format!("{base}/api/v2/write"));
                url.query_pairs_mut()
                    .append_pair("org", &org)
                    .append_pair("bucket", &bucket)
                    .append_pair("precision", "ns");
            }
            v => return Err(invalid(&format!("influx version {v}: use 1 or 2"))),
        }
        Ok(url)
    }
}

fn invalid(message: &str) -> BackendError {
    BackendError::permanent(format!("uplink: {message}"))
}

#[async_trait]
impl BackendType for UplinkConfig {
    /// `token_file` from `$CREDENTIALS_DIRECTORY` when it is there, else (like
    /// `tls.ca_file`) beside config.yaml. Done at load so a reload sees a moved
    /// credential as a changed setting.
    fn resolve_paths(&mut self, config_dir: &Path, credentials_dir: Option<&Path>) {
        if let Some(file) = &self.token_file {
            if file.is_relative() {
                let credential = credentials_dir.map(|d| d.join(file)).filter(|p| p.is_file());
                self.token_file = Some(credential.unwrap_or_else(|| config_dir.join(file)));
            }
        }
        if let Some(file) = &self.tls.ca_file {
            if file.is_relative() {
                self.tls.ca_file = Some(config_dir.join(file));
            }
        }
    }

    /// A URL with `user:password@` makes reqwest send Basic auth, and a request
    /// carries one `Authorization` header: the token would silently not be sent.
    fn validate(&self) -> Result<(), (String, String)> {
        let has_user_info =
            reqwest::Url::parse(&self.url).is_ok_and(|url| !url.username().is_empty() || url.password().is_some());
        if !has_user_info {
            return Ok(());
        }
        let key = match (&self.token, &self.token_file) {
            (Some(_), _) => "token",
            (None, Some(_)) => "token_file",
            (None, None) => return Ok(()),
        };
        Err((
            key.into(),
            format!(
                "backends.uplink.url has user info (user:password@) and backends.uplink.{key} is set too: \
                 a request carries one Authorization header, so the token would not be sent; keep one of them"
            ),
        ))
    }

    async fn open(&self, data_dir: &Path) -> Result<Box<dyn Backend>, BackendError> {
        Ok(Box::new(UplinkBackend::open(self, data_dir).await?))
    }
}

#[derive(Debug)]
pub struct UplinkBackend {
    durable: Durable,
    policy: BatchPolicy,
    /// Readings appended since the delivery task last looked: past `batch_size` it
    /// is woken early instead of waiting for `batch_interval`.
    unsent: Arc<AtomicUsize>,
    aggregating: bool,
    health: Arc<Health>,
}

impl UplinkBackend {
    pub async fn open(config: &UplinkConfig, data_dir: &Path) -> Result<Self, BackendError> {
        let endpoint = config.endpoint()?;
        let token = config.read_token()?;
        if config.tls.insecure_skip_verify {
            tracing::warn!(
                url = %delivery::redacted(&endpoint),
                "uplink: TLS CERTIFICATE VERIFICATION IS OFF (tls.insecure_skip_verify): anyone on the network path can read and alter the uplink, token included"
            );
        }
        if config.aggregate.is_some_and(|w| w.is_zero()) {
            return Err(invalid("aggregate must be longer than 0s"));
        }
        let client = delivery::client(config)?;
        let opening = Opening::open("uplink", data_dir, config.outbox.clone()).await?;
        let unsent = Arc::new(AtomicUsize::new(0));
        let health = Arc::new(Health::default());
        let batch_size = config.batch_size.max(1);
        let delivery = delivery::Delivery {
            client,
            endpoint,
            format: config.format,
            tags: config.tags.clone(),
            token,
            token_scheme: if config.influx.is_some() { "Token" } else { "Bearer" },
            gzip: config.gzip,
            batch_size,
            interval: config.batch_interval.max(Duration::from_millis(10)),
            final_budget: config.timeout,
            aggregate: config.aggregate,
            max_backoff: config.max_backoff,
            outbox: opening.outbox(),
            unsent: unsent.clone(),
            health: health.clone(),
        }
        .run(opening.wake(), opening.stop());
        Ok(UplinkBackend {
            durable: opening.start(delivery),
            policy: BatchPolicy {
                // Readings reach the durable outbox within 5 s (or a batch interval,
                // if shorter) however long the delivery cadence is.
                flush_interval: config.batch_interval.min(Duration::from_secs(5)),
                batch_size,
                queue_capacity: config.queue_capacity,
            },
            unsent,
            aggregating: config.aggregate.is_some(),
            health,
        })
    }
}

#[async_trait]
impl Backend for UplinkBackend {
    fn name(&self) -> &'static str {
        "uplink"
    }

    fn policy(&self) -> BatchPolicy {
        self.policy
    }

    async fn write(&mut self, batch: &[Reading]) -> Result<(), BackendError> {
        self.durable.append(batch).await?;
        let unsent = self.unsent.fetch_add(batch.len(), Ordering::Relaxed) + batch.len();
        // Aggregated windows are complete by the clock, not by count: no early wake.
        if !self.aggregating && unsent >= self.policy.batch_size {
            self.durable.wake();
        }
        Ok(())
    }

    /// Stops the delivery task after one last, bounded (`timeout`) attempt to send
    /// what is waiting; what is left stays in the outbox for the next start.
    async fn flush(&mut self) -> Result<(), BackendError> {
        self.durable.stop().await
    }

    fn delivery_health(&self) -> Option<Arc<Health>> {
        Some(self.health.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> UplinkConfig {
        serde_yaml_ng::from_str(yaml).unwrap()
    }

    #[test]
    fn defaults_and_endpoints() {
        let c = parse("url: https://ingest.example/api/readings\n");
        assert_eq!(
            (c.format, c.batch_size, c.batch_interval),
            (Format::Json, 500, Duration::from_secs(60))
        );
        assert_eq!(c.endpoint().unwrap().as_str(), "https://ingest.example/api/readings");

        let v1 = parse("url: http://127.0.0.1:8086/\nformat: influx\ninflux: {version: 1, db: \"home energy\"}\n");
        assert_eq!(
            v1.endpoint().unwrap().as_str(),
            "http://127.0.0.1:8086/write?db=home+energy&precision=ns"
        );
        let v2 = parse("url: https://eu.influx.example/x\nformat: influx\ninflux: {version: 2, org: o&1, bucket: b}\n");
        assert_eq!(
            v2.endpoint().unwrap().as_str(),
            "https://eu.influx.example/x/api/v2/write?org=o%261&bucket=b&precision=ns"
        );
        let missing = parse("url: http://h/\nformat: influx\ninflux: {version: 2, org: o}\n");
        assert!(missing.endpoint().unwrap_err().to_string().contains("`bucket`"));
        assert!(parse("url: ftp://h/\n").endpoint().is_err());
        assert!(serde_yaml_ng::from_str::<UplinkConfig>("url: http://h/\nbatchsize: 1\n").is_err());
    }

    #[test]
    fn token_file_comes_from_the_credentials_directory_first() {
        let config_dir = tempfile::tempdir().unwrap();
        let credentials = tempfile::tempdir().unwrap();
        std::fs::write(config_dir.path().join("uplink-token"), "from-config-dir\n").unwrap();
        let mut c = parse("url: http://h/\ntoken_file: uplink-token\n");
        let mut beside = c.clone();
        beside.resolve_paths(config_dir.path(), Some(credentials.path()));
        assert_eq!(beside.read_token().unwrap().unwrap().expose(), "from-config-dir");

        std::fs::write(credentials.path().join("uplink-token"), " from-systemd ").unwrap();
        c.resolve_paths(config_dir.path(), Some(credentials.path()));
        let token = c.read_token().unwrap().unwrap();
        assert_eq!(token.expose(), "from-systemd");
        assert_eq!(format!("{token:?}"), "***");

        let both = parse("url: http://h/\ntoken: t\ntoken_file: /x\n");
        assert!(both.read_token().is_err());
        let shown = format!("{:?}", parse("url: http://h/\ntoken: hunter2\n"));
        assert!(!shown.contains("hunter2"), "{shown}");
    }
}
