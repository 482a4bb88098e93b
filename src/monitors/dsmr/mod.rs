//! `type: dsmr`: a smart meter's P1 port, over a serial cable or TCP (ser2net, network
//! P1 dongles). The bytes go through the pure codec in `protocols::dsmr`; see
//! docs/devices/dsmr.md for the keys and docs/metrics.md for the metric table.

mod link;
pub mod map;
mod serve;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::device_time::DeviceClock;
use super::{DeviceType, Monitor, MonitorContext, MonitorError, ServiceMetric};
use crate::config::common::CommonConfig;
use crate::config::secret::{read_secret_file, Secret};
use crate::protocols::dlms::{parse_key, Keys};
use crate::protocols::dsmr::{Decoder, Telegram, DEFAULT_MAX_TELEGRAM_SIZE, DEFAULT_MINIMUM_PEAK_W};
use crate::reading::{MetricSpec, MonthlyPeaks, Reading};
use link::{Reader, ReaderSettings, Target};
use serve::{Fanout, Serve};

/// `type: dsmr`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct DsmrConfig {
    /// Serial: the device path (`/dev/ttyUSB0`, better a stable
    /// `/dev/serial/by-id/…` path). TCP: the port number, with `host`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<Port>,
    /// TCP: the host name or address of a ser2net server or network P1 dongle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Serial speed. Default 115200 (DSMR 4 and 5); 9600 for DSMR 2.2 and 3.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub baud_rate: Option<u32>,
    /// Serial data bits, 7 or 8. Default 8; 7 for DSMR 2.2 and 3.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data_bits: Option<u8>,
    /// Serial parity: `none`, `even` or `odd`. Default `none`; `even` for DSMR 2.2 and 3.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parity: Option<ParityConfig>,
    /// Serial stop bits, 1 or 2. Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_bits: Option<u8>,
    /// No good telegram for this long means the link is gone: it is closed and
    /// reopened with backoff. Also the TCP connect timeout.
    #[serde(default = "default_timeout", with = "crate::config::duration")]
    pub timeout: Duration,
    /// Telegrams longer than this (bytes) are dropped as corrupt. Belgian and
    /// Luxembourg telegrams with long event logs exceed 2 KiB.
    #[serde(default = "default_max_telegram_size")]
    pub max_telegram_size: usize,
    /// The meter's own times (its clock, M-Bus capture times, the monthly peak)
    /// further than this from the host clock are not used: such readings get the
    /// time they arrived, and the meter's clock is reported as wrong.
    #[serde(
        default = "crate::monitors::device_time::default_max_clock_skew",
        with = "crate::config::duration"
    )]
    pub max_clock_skew: Duration,
    /// Encrypted meters (Luxembourg's Smarty, Austrian grid operators): the
    /// decryption key from the grid operator, 32 hex digits (AES-128). With a key,
    /// the device reads DLMS-encrypted frames instead of plain telegrams. A secret:
    /// never printed; better `${P1_KEY}` or `decryption_key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decryption_key: Option<Secret>,
    /// A file holding the decryption key (or a systemd credential name), instead of
    /// `decryption_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decryption_key_file: Option<PathBuf>,
    /// The authentication key (32 hex digits), for operators that give one besides
    /// the decryption key. Not needed in Luxembourg (the Smarty key published in
    /// its specification is used) nor with meters that only encrypt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authentication_key: Option<Secret>,
    /// Share the P1 port: every byte the meter sends, exactly as received (plain
    /// or encrypted), is served to any number of TCP clients on this address, as
    /// ser2net does (`127.0.0.1:2001`; a host name is resolved as in `api.listen`).
    /// No authentication: an address other than loopback shows the household's
    /// consumption to the network, and `mesura check` warns about it.
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "crate::config::listen::deserialize_option"
    )]
    pub serve: Option<SocketAddr>,
    /// Belgian capacity tariff: the least a month's peak counts in the rolling
    /// 12-month average (`capacity_rolling_average`), as a power (`2.5 kW`, the
    /// Flemish minimum; `0 W` for none).
    #[serde(default = "default_capacity_minimum_peak", with = "crate::config::power")]
    pub capacity_minimum_peak: f64,
}

pub fn default_timeout() -> Duration {
    Duration::from_secs(30)
}
pub fn default_max_telegram_size() -> usize {
    DEFAULT_MAX_TELEGRAM_SIZE
}
pub fn default_capacity_minimum_peak() -> f64 {
    DEFAULT_MINIMUM_PEAK_W
}

/// `port:` is a path for serial and a number for TCP.
#[derive(Debug, Clone, PartialEq)]
pub enum Port {
    Path(String),
    Number(u16),
}

impl Serialize for Port {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Port::Path(p) => s.serialize_str(p),
            Port::Number(n) => s.serialize_u16(*n),
        }
    }
}

impl<'de> Deserialize<'de> for Port {
    fn deserialize<D: Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct PortVisitor;
        impl serde::de::Visitor<'_> for PortVisitor {
            type Value = Port;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a serial device path (/dev/ttyUSB0) or a TCP port number (1 to 65535)")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Port, E> {
                Ok(Port::Path(v.to_owned()))
            }
            fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<Port, E> {
                u16::try_from(v)
                    .ok()
                    .filter(|&n| n > 0)
                    .map(Port::Number)
                    .ok_or_else(|| E::custom(format!("TCP port {v} is not between 1 and 65535")))
            }
            fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<Port, E> {
                match u64::try_from(v) {
                    Ok(v) => self.visit_u64(v),
                    Err(_) => Err(E::custom(format!("TCP port {v} is not between 1 and 65535"))),
                }
            }
        }
        de.deserialize_any(PortVisitor)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ParityConfig {
    None,
    Even,
    Odd,
}

const SERIAL_KEYS: &[&str] = &["baud_rate", "data_bits", "parity", "stop_bits"];

impl DsmrConfig {
    /// The link this config describes, or `(key, message)` when it describes none.
    pub fn target(&self) -> Result<Target, (String, String)> {
        let err = |key: &str, msg: String| Err((key.to_owned(), msg));
        match (&self.host, &self.port) {
            (Some(host), port) => {
                if host.trim().is_empty() || host.contains('/') {
                    return err(
                        "host",
                        format!(
                            "`{host}` is not a host name or address (no scheme or path: write e.g. `192.168.1.20`)"
                        ),
                    );
                }
                let number = match port {
                    Some(Port::Number(n)) => *n,
                    Some(Port::Path(p)) => match p.trim().parse::<u16>() {
                        Ok(n) if n > 0 => n,
                        _ => return err("port", format!("with `host` (TCP), `port` is a port number, not `{p}`")),
                    },
                    None => return err("port", "with `host` (TCP), `port` is required: the TCP port of the P1 dongle or ser2net (often 23 or 2001)".into()),
                };
                if let Some(key) = self.serial_key_set() {
                    return err(key, format!("`{key}` is a serial setting; this device uses TCP (`host`), where the dongle sets the line"));
                }
                Ok(Target::Tcp {
                    host: host.trim().to_owned(),
                    port: number,
                })
            }
            (None, Some(Port::Path(path))) if !path.trim().is_empty() => {
                let data_bits = match self.data_bits.unwrap_or(8) {
                    7 => tokio_serial::DataBits::Seven,
                    8 => tokio_serial::DataBits::Eight,
                    n => {
                        return err(
                            "data_bits",
                            format!("must be 7 (DSMR 2.2/3.0) or 8 (DSMR 4/5), not {n}"),
                        )
                    }
                };
                let stop_bits = match self.stop_bits.unwrap_or(1) {
                    1 => tokio_serial::StopBits::One,
                    2 => tokio_serial::StopBits::Two,
                    n => return err("stop_bits", format!("must be 1 or 2, not {n}")),
                };
                let baud_rate = self.baud_rate.unwrap_or(115_200);
                if !(300..=4_000_000).contains(&baud_rate) {
                    return err(
                        "baud_rate",
                        format!(
                            "{baud_rate} is not a serial speed; P1 ports use 115200 (DSMR 4/5) or 9600 (DSMR 2.2/3.0)"
                        ),
                    );
                }
                Ok(Target::Serial {
                    path: path.trim().to_owned(),
                    baud_rate,
                    data_bits,
                    parity: match self.parity.unwrap_or(ParityConfig::None) {
                        ParityConfig::None => tokio_serial::Parity::None,
                        ParityConfig::Even => tokio_serial::Parity::Even,
                        ParityConfig::Odd => tokio_serial::Parity::Odd,
                    },
                    stop_bits,
                })
            }
            (None, Some(Port::Number(n))) => err(
                "port",
                format!(
                    "port {n} is a TCP port: add `host:` for TCP, or give the serial device path (e.g. /dev/ttyUSB0)"
                ),
            ),
            (None, _) => err(
                "port",
                "set `port:` to the serial device (e.g. /dev/ttyUSB0), or `host:` and `port:` for TCP".into(),
            ),
        }
    }

    /// The keys of an encrypted meter, `None` for a plain one, or `(key, message)`.
    /// The message never holds the key.
    pub fn keys(&self) -> Result<Option<Keys>, (String, String)> {
        let err = |key: &str, msg: String| Err((key.to_owned(), msg));
        let decryption = match (&self.decryption_key, &self.decryption_key_file) {
            (Some(_), Some(_)) => {
                return err(
                    "decryption_key",
                    "set decryption_key or decryption_key_file, not both".into(),
                )
            }
            (Some(key), None) => key.clone(),
            (None, Some(file)) => match read_secret_file(file) {
                Ok(key) => key,
                Err(e) => return err("decryption_key_file", format!("cannot read {}: {e}", file.display())),
            },
            (None, None) => {
                if self.authentication_key.is_some() {
                    return err(
                        "authentication_key",
                        "only used with decryption_key (an encrypted meter); add the decryption key".into(),
                    );
                }
                return Ok(None);
            }
        };
        let key_name = if self.decryption_key.is_some() {
            "decryption_key"
        } else {
            "decryption_key_file"
        };
        if let Err(e) = parse_key(decryption.expose()) {
            return err(
                key_name,
                format!("the key {e}: copy the key the grid operator sent (e.g. 32 characters 0-9, A-F)"),
            );
        }
        if let Some(ak) = &self.authentication_key {
            if let Err(e) = parse_key(ak.expose()) {
                return err("authentication_key", format!("the key {e}"));
            }
        }
        match Keys::from_hex(
            decryption.expose(),
            self.authentication_key.as_ref().map(Secret::expose),
        ) {
            Ok(keys) => Ok(Some(keys)),
            Err(e) => err(key_name, format!("the key {e}")),
        }
    }

    fn serial_key_set(&self) -> Option<&'static str> {
        let set = [
            self.baud_rate.is_some(),
            self.data_bits.is_some(),
            self.parity.is_some(),
            self.stop_bits.is_some(),
        ];
        SERIAL_KEYS.iter().zip(set).find(|(_, s)| *s).map(|(k, _)| *k)
    }
}

impl DeviceType for DsmrConfig {
    /// The meter sends a telegram every second (DSMR 5) or ten (DSMR 2.2–4).
    const PUSHES: bool = true;

    fn default_poll_interval() -> Duration {
        Duration::from_secs(10)
    }

    fn validate(&self, _common: &CommonConfig) -> Result<(), (String, String)> {
        self.target()?;
        if self.timeout.is_zero() {
            return Err(("timeout".into(), "must be longer than 0s (default 30s)".into()));
        }
        if !(256..=1024 * 1024).contains(&self.max_telegram_size) {
            return Err((
                "max_telegram_size".into(),
                format!("must be between 256 and 1048576 bytes, not {}", self.max_telegram_size),
            ));
        }
        crate::monitors::device_time::validate_max_clock_skew(self.max_clock_skew)?;
        if self.serve.is_some_and(|addr| addr.port() == 0) {
            return Err((
                "serve".into(),
                "needs a port number clients can connect to (e.g. 127.0.0.1:2001), not 0".into(),
            ));
        }
        if !(0.0..=100_000.0).contains(&self.capacity_minimum_peak) {
            return Err((
                "capacity_minimum_peak".into(),
                "must be between 0 W and 100 kW (Flanders: 2.5 kW)".into(),
            ));
        }
        match &self.decryption_key_file {
            // A relative name may be a systemd credential, only there when the
            // service runs: `check` by hand cannot see it; the device reports it.
            Some(file)
                if file.is_relative() && std::env::var_os("CREDENTIALS_DIRECTORY").is_none() && !file.exists() =>
            {
                Ok(())
            }
            _ => self.keys().map(|_| ()),
        }
    }

    fn warnings(&self) -> Vec<(String, String)> {
        match self.serve {
            Some(addr) if !addr.ip().is_loopback() => vec![(
                "serve".into(),
                format!(
                    "{addr} is reachable from the network: anyone who can connect reads the meter \
                     (the household's consumption), without authentication. Prefer 127.0.0.1, or \
                     limit who reaches the port with a firewall"
                ),
            )],
            _ => Vec::new(),
        }
    }

    fn metrics() -> Vec<MetricSpec> {
        all_metrics()
    }

    fn build(&self, ctx: MonitorContext) -> Result<Box<dyn Monitor>, MonitorError> {
        Ok(Box::new(DsmrMonitor::new(self, ctx.clone(), ctx.poll_interval)?))
    }
}

pub fn all_metrics() -> Vec<MetricSpec> {
    super::p1_metrics::METRICS.to_vec()
}

/// Telegrams kept between reads when every telegram is stored (`poll_interval: 0s`).
/// At one telegram a second this is minutes of slack for a stalled store.
const KEEP_ALL: usize = 256;

#[derive(Debug)]
pub struct DsmrMonitor {
    target: Target,
    settings: ReaderSettings,
    ctx: MonitorContext,
    reader: Option<Reader>,
    watch: map::Watch,
    clock: DeviceClock,
    /// The re-served stream (`serve:`); dropped with the monitor, which closes it.
    serve: Option<Serve>,
    peaks: map::PeakWatch,
    /// The newest peaks not yet taken by the supervisor.
    pending_peaks: Option<MonthlyPeaks>,
    /// Kept between reads: it decodes each telegram into the same buffers.
    decoder: Decoder,
}

impl DsmrMonitor {
    pub fn new(config: &DsmrConfig, ctx: MonitorContext, poll_interval: Duration) -> Result<Self, MonitorError> {
        let target = config
            .target()
            .map_err(|(key, msg)| MonitorError::config(format!("{key}: {msg}")))?;
        let keys = config
            .keys()
            .map_err(|(key, msg)| MonitorError::config(format!("{key}: {msg}")))?;
        let serve = config
            .serve
            .map(|addr| Serve::new(addr, Fanout::new(ctx.id.clone(), keys.is_none(), serve::CLIENT_BACKLOG)));
        let settings = ReaderSettings {
            device: ctx.id.clone(),
            target: target.to_string(),
            clock: ctx.clock.clone(),
            timeout: config.timeout,
            max_telegram_size: config.max_telegram_size,
            keep: if poll_interval.is_zero() { KEEP_ALL } else { 1 },
            totals: Default::default(),
            keys,
            serve: serve.as_ref().map(|s| s.fanout().clone()),
        };
        Ok(DsmrMonitor {
            target,
            settings,
            clock: DeviceClock::new(ctx.id.clone(), config.max_clock_skew),
            ctx,
            reader: None,
            watch: map::Watch::default(),
            serve,
            peaks: map::PeakWatch::new(config.capacity_minimum_peak),
            pending_peaks: None,
            decoder: Decoder::default(),
        })
    }
}

/// Logs what `watch` notices in `telegram` (a new meter, a counter going back).
fn warn_anomalies(watch: &mut map::Watch, device: &str, telegram: &Telegram) {
    for anomaly in watch.observe(telegram) {
        match anomaly {
            map::Anomaly::EquipmentChanged { old, new } => tracing::warn!(
                device = %device, old = %old, new = %new,
                "the meter's equipment id changed: a new meter? counters may restart"
            ),
            map::Anomaly::CounterBackwards { metric, old, new } => tracing::warn!(
                device = %device, metric = %metric, old, new,
                "a counter went backwards: meter swapped or reset? stored as sent"
            ),
        }
    }
}

#[async_trait]
impl Monitor for DsmrMonitor {
    async fn read(&mut self) -> Result<Vec<Reading>, MonitorError> {
        if let Some(serve) = &mut self.serve {
            // A port that cannot be bound fails this one read (so /health shows
            // why), before the link is touched: no telegram is lost.
            serve.listen().await?;
        }
        let reader = match &self.reader {
            Some(reader) => reader,
            None => {
                let stream = link::open(&self.target, self.settings.timeout).await?;
                tracing::info!(device = %self.ctx.id, link = %self.target, "P1 link open");
                self.reader.insert(Reader::spawn(stream, self.settings.clone()))
            }
        };
        let (received, overflowed) = match reader.next().await {
            Ok(r) => r,
            Err(e) => {
                // Dropping the reader closes the port; the next read reopens it
                // after the supervisor's backoff.
                self.reader = None;
                return Err(e);
            }
        };
        if overflowed > 0 {
            tracing::warn!(device = %self.ctx.id, dropped = overflowed, "telegrams dropped: readings were not taken in time");
        }
        let mut readings = Vec::new();
        for r in received {
            // A framed telegram always has a header line, so decode cannot fail here;
            // should it, the telegram is skipped, never stored half-read.
            let Ok(telegram) = self.decoder.decode_frame(&r.frame) else {
                continue;
            };
            warn_anomalies(&mut self.watch, &self.ctx.id, telegram);
            readings.extend(map::readings(&self.ctx.id, telegram, r.at, &mut self.clock));
            if let Some((peaks, average)) = self.peaks.observe(&self.ctx.id, telegram, r.at) {
                self.pending_peaks = Some(peaks);
                readings.extend(average);
            }
        }
        if readings.is_empty() {
            return Err(MonitorError::invalid_data("telegram without any known value"));
        }
        Ok(readings)
    }

    fn metrics(&self) -> &[MetricSpec] {
        super::p1_metrics::METRICS
    }

    fn protocol_errors(&self) -> Vec<(&'static str, u64)> {
        use std::sync::atomic::Ordering::Relaxed;
        let totals = &self.settings.totals;
        let mut errors = vec![
            ("crc", totals.crc.load(Relaxed)),
            ("framing", totals.framing.load(Relaxed)),
            ("junk_bytes", totals.junk_bytes.load(Relaxed)),
        ];
        if self.settings.keys.is_some() {
            errors.push(("decrypt", totals.decrypt.load(Relaxed)));
        }
        errors.extend(self.clock.counts());
        errors
    }

    fn service_metrics(&self) -> Vec<ServiceMetric> {
        self.serve.as_ref().map(Serve::metrics).unwrap_or_default()
    }

    fn take_monthly_peaks(&mut self) -> Option<MonthlyPeaks> {
        self.pending_peaks.take()
    }

    fn identity(&self) -> Option<String> {
        self.watch.equipment_id().map(str::to_owned)
    }
}

#[cfg(test)]
mod tests;
