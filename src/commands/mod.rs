//! The one-shot subcommands: `check`, `devices`, `read`, `decode`, `epochs`, `export`, `ha`. Each returns its
//! text and whether it succeeded; `main.rs` prints and sets the exit code.

mod epochs;
pub mod export;
pub mod ha;
mod sections;

pub use epochs::{epochs, EpochsAction};

use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use crate::config::{self, Config, ConfigError, DeviceKind};
use crate::host::clock;
use crate::monitors::{self};

#[derive(Debug)]
pub struct Outcome {
    pub text: String,
    pub ok: bool,
}

/// `mesura check`: loads everything, prints each device and backend, lists every
/// error found. Secrets print as `***`.
pub fn check(path: &Path, lookup: &dyn Fn(&str) -> Option<String>) -> Outcome {
    let mut text = String::new();
    let config = match Config::load(path, lookup) {
        Ok(c) => c,
        Err(e) => {
            return Outcome {
                text: format!("error: {e}\n{} found\n", count(1, "error")),
                ok: false,
            }
        }
    };
    let base = &config.base;
    let _ = writeln!(text, "config: {}", path.display());
    let _ = writeln!(text, "data_dir: {}", base.data_dir.display());
    let _ = writeln!(text, "devices_dir: {}", base.devices_dir.display());
    text.push_str(&sections::describe(base));
    let _ = writeln!(text, "backends:");
    match serde_yaml_ng::to_string(&base.backends) {
        Ok(yaml) => text.push_str(&indent(&yaml, "  ")),
        Err(e) => {
            let _ = writeln!(text, "  (cannot show: {e})");
        }
    }
    let _ = writeln!(text, "devices:");
    if config.devices.devices.is_empty() {
        let _ = writeln!(text, "  (none in {})", base.devices_dir.display());
    }
    for device in config.devices.devices.values() {
        let state = if device.common.enabled { "" } else { " (disabled)" };
        let _ = writeln!(
            text,
            "  {} — {}{state}, every {}, from {}",
            device.id,
            device.kind.type_name(),
            humantime::format_duration(device.poll_interval()),
            device.file.display()
        );
        if let Ok(yaml) = serde_yaml_ng::to_string(&device.kind) {
            for line in yaml.lines().filter(|l| !l.starts_with("type:")) {
                let _ = writeln!(text, "      {line}");
            }
        }
        for (key, message) in device.kind.warnings() {
            let _ = writeln!(text, "warning: {}: {key}: {message}", device.file.display());
        }
        if let Some(message) = prices_warning(device, &config.devices.devices) {
            let _ = writeln!(text, "warning: {}: tariff.prices: {message}", device.file.display());
        }
    }
    let alerts = base.load_alerts(lookup);
    describe_alerts(&mut text, &alerts, &config);
    let errors = &config.devices.errors;
    for e in errors.iter().chain(&alerts.errors) {
        let _ = writeln!(text, "error: {e}");
    }
    let store_error = sqlite_not_writable(base);
    if let Some(e) = &store_error {
        let _ = writeln!(text, "error: {e}");
    }
    let found = errors.len() + alerts.errors.len() + usize::from(store_error.is_some());
    let _ = match found {
        0 => writeln!(text, "ok: {}, no errors", count(config.devices.devices.len(), "device")),
        n => writeln!(text, "{} found", count(n, "error")),
    };
    Outcome { text, ok: found == 0 }
}

/// A `tariff.prices` that names no `prices` device: the tariff works, on its
/// `fixed_price` alone (or not at all without one), which is rarely what was meant.
fn prices_warning(
    device: &config::DeviceConfig,
    devices: &std::collections::BTreeMap<crate::reading::DeviceId, config::DeviceConfig>,
) -> Option<String> {
    let tariff = device.common.tariff.as_ref()?;
    let id = tariff.prices.as_deref()?;
    let then = if tariff.fixed_price.is_some() {
        "every slot gets `fixed_price`"
    } else {
        "no slot is costed"
    };
    match devices.get(id) {
        None => Some(format!("no device `{id}` in the devices dir: {then}")),
        Some(d) if d.kind.type_name() != "prices" => Some(format!(
            "`{id}` is a `{}` device, not a `prices` one: {then}",
            d.kind.type_name()
        )),
        Some(_) => None,
    }
}

/// The alert rules, where each comes from, and a warning for a rule on a device
/// that no device file defines (it would only ever see silence).
fn describe_alerts(text: &mut String, alerts: &crate::config::alerts::AlertSet, config: &Config) {
    if alerts.rules.is_empty() {
        return;
    }
    let _ = writeln!(text, "alerts:");
    for (name, loaded) in &alerts.rules {
        let from = loaded
            .file
            .as_ref()
            .map_or_else(|| "config.yaml".to_owned(), |f| f.display().to_string());
        let _ = writeln!(text, "  {name} — from {from}");
        let device = match &loaded.condition {
            crate::alerts::Condition::Above { device, .. }
            | crate::alerts::Condition::Below { device, .. }
            | crate::alerts::Condition::Silent { device, .. } => Some(device),
            crate::alerts::Condition::Failing { .. } => None,
        };
        if let Some(device) = device.filter(|d| !config.devices.devices.keys().any(|id| &**id == d.as_str())) {
            let _ = writeln!(
                text,
                "warning: alert `{name}`: no device `{device}` in {}",
                config.base.devices_dir.display()
            );
        }
    }
}

/// The daemon would fail to open its database (at start, or at a reload): say so
/// now, creating nothing.
fn sqlite_not_writable(base: &config::BaseConfig) -> Option<String> {
    let sqlite = base.backends.sqlite.as_ref()?;
    crate::backends::sqlite::writable::check(&base.data_dir.join(&sqlite.path))
        .err()
        .map(|e| format!("backends.sqlite.path: {e}"))
}

/// `1 error`, `2 errors`: every count the commands print reads as English.
fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn indent(text: &str, prefix: &str) -> String {
    text.lines().map(|l| format!("{prefix}{l}\n")).collect()
}

/// `mesura devices`: every device type with its config keys and metrics.
pub fn devices() -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "Common keys (every type): type, poll_interval, enabled, backends, failure_threshold, max_backoff, breaker_cooldown\n"
    );
    for type_name in DeviceKind::TYPES {
        let _ = writeln!(text, "{type_name}");
        let _ = writeln!(text, "  keys: {}", DeviceKind::keys(type_name).join(", "));
        let _ = writeln!(text, "  metrics:");
        for m in monitors::type_metrics(type_name) {
            let unit = if m.unit.symbol().is_empty() {
                String::new()
            } else {
                format!(" [{}]", m.unit)
            };
            let _ = writeln!(
                text,
                "    {:<28} {:<8}{unit} {}",
                m.name,
                m.kind.as_str(),
                m.description
            );
        }
        text.push('\n');
    }
    text
}

/// `mesura read DEVICE`: one read of one device, as a table; no backend touched.
pub async fn read(path: &Path, device: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Outcome {
    let fail = |text: String| Outcome { text, ok: false };
    let config = match Config::load(path, lookup) {
        Ok(c) => c,
        Err(e) => return fail(format!("error: {e}\n")),
    };
    let Some(device_config) = config.devices.devices.get(device) else {
        let mut text = format!(
            "error: no valid device `{device}` in {}\n",
            config.base.devices_dir.display()
        );
        for e in config.devices.errors.iter().filter(|e| is_file_of(e, device)) {
            let _ = writeln!(text, "error: {e}");
        }
        let known: Vec<&str> = config.devices.devices.keys().map(|k| &**k).collect();
        let _ = writeln!(text, "devices: {}", known.join(", "));
        return fail(text);
    };
    let mut monitor = match device_config.build_monitor(clock::system(), config.base.data_dir.clone()) {
        Ok(m) => m,
        Err(e) => return fail(format!("error: {e}\n")),
    };
    let limit = device_config.poll_interval().max(Duration::from_secs(30));
    let readings = match tokio::time::timeout(limit, monitor.read()).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return fail(format!("error: {device}: {e}\n")),
        Err(_) => {
            return fail(format!(
                "error: {device}: no reading within {}\n",
                humantime::format_duration(limit)
            ))
        }
    };
    let mut text = format!(
        "{:<30} {:>16} {:<6} {:<8} {}\n",
        "metric", "value", "unit", "kind", "timestamp (UTC)"
    );
    for r in &readings {
        let _ = writeln!(
            text,
            "{:<30} {:>16} {:<6} {:<8} {}",
            r.metric,
            r.value.to_string(),
            r.unit.symbol(),
            r.kind.as_str(),
            r.timestamp.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
    }
    Outcome { text, ok: true }
}

fn is_file_of(error: &ConfigError, device: &str) -> bool {
    error.file().and_then(|f| f.file_stem()).and_then(|s| s.to_str()) == Some(device)
}

/// Re-exported for main: the process environment as a lookup.
pub fn env_lookup(name: &str) -> Option<String> {
    config::process_env(name)
}

/// What `mesura decode dsmr` prints: the decoded telegrams for stdout, the reasons
/// and a summary for stderr, and whether every telegram was one the `dsmr` device
/// would store.
#[derive(Debug)]
pub struct Decoded {
    pub stdout: String,
    pub stderr: String,
    pub ok: bool,
}

/// `mesura decode dsmr FILE`: what the decoder makes of every telegram in a file, as
/// a JSON array (or, with `lines`, one JSON object per line). Fails (with the
/// reasons) when a telegram would be dropped by the `dsmr` device (CRC mismatch,
/// cut short, oversize) or the file holds no complete telegram; the good ones are
/// printed all the same.
pub fn decode_dsmr(path: &Path, lines: bool) -> Decoded {
    decode_dsmr_with_keys(path, lines, None)
}

/// [`decode_dsmr`] for an encrypted meter's capture (`--key`): the file holds the
/// raw frames as read from the port, or the same bytes written as hex (as forum
/// posts and operator documents print them).
pub fn decode_dsmr_with_keys(path: &Path, lines: bool, keys: Option<&crate::protocols::dlms::Keys>) -> Decoded {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) => {
            return Decoded {
                stdout: String::new(),
                stderr: format!("error: cannot read {}: {e}\n", path.display()),
                ok: false,
            }
        }
    };
    let report = match keys {
        Some(keys) => decode_encrypted_bytes(&unhex(bytes), keys),
        None => decode_dsmr_bytes(&bytes),
    };
    let mut stdout = String::new();
    if lines {
        for json in &report.telegrams {
            stdout.push_str(&json.to_string());
            stdout.push('\n');
        }
    } else if !report.telegrams.is_empty() {
        let array = serde_json::Value::Array(report.telegrams.clone());
        stdout = serde_json::to_string_pretty(&array).unwrap_or_default() + "\n";
    }
    let mut stderr = String::new();
    for error in &report.errors {
        let _ = writeln!(stderr, "error: {}: {error}", path.display());
    }
    if report.telegrams.is_empty() && report.errors.is_empty() {
        let _ = writeln!(
            stderr,
            "error: {}: no complete telegram: a telegram runs from a `/` line to a `!` line (with its CRC in DSMR 4 and 5)",
            path.display()
        );
    }
    if report.incomplete_tail > 0 {
        let _ = writeln!(
            stderr,
            "{}: the file ends inside a telegram; its {} bytes are not decoded",
            path.display(),
            report.incomplete_tail
        );
    }
    let _ = writeln!(
        stderr,
        "{}: {} decoded, {} dropped, {} skipped as junk",
        path.display(),
        count(report.telegrams.len(), "telegram"),
        report.errors.len(),
        count(usize::try_from(report.junk_bytes).unwrap_or(usize::MAX), "byte")
    );
    Decoded {
        stdout,
        stderr,
        ok: report.errors.is_empty() && !report.telegrams.is_empty(),
    }
}

/// Every telegram of a P1 capture, decoded.
#[derive(Debug, Default)]
pub struct DsmrReport {
    /// The telegrams the `dsmr` device would store, in file order, as JSON.
    pub telegrams: Vec<serde_json::Value>,
    /// Why each of the others would be dropped (`telegram N: reason`).
    pub errors: Vec<String>,
    /// Non-whitespace bytes between telegrams (line noise, a gateway's own output,
    /// the end of a telegram the capture began in the middle of).
    pub junk_bytes: u64,
    /// Bytes of a telegram the file ends in the middle of: a capture stopped
    /// mid-telegram, not a telegram the meter got wrong, so not an error.
    pub incomplete_tail: usize,
}

/// Frames and decodes every telegram in `bytes` the way the `dsmr` device does.
pub fn decode_dsmr_bytes(bytes: &[u8]) -> DsmrReport {
    use crate::protocols::dsmr::{FrameError, Framer};

    let mut framer = Framer::default();
    framer.push(bytes);
    let mut report = DsmrReport::default();
    let mut number = 0;
    while let Some(result) = framer.next_frame() {
        let frame = match result {
            Ok(frame) => frame,
            Err(FrameError::Garbage { .. }) => continue,
            Err(e) => {
                number += 1;
                report.errors.push(format!(
                    "telegram {number}: {e}; a meter's telegram like this is dropped"
                ));
                continue;
            }
        };
        number += 1;
        match telegram_json(frame) {
            Ok(mut json) => {
                if let Some(obj) = json.as_object_mut() {
                    obj.insert("telegram".into(), number.into());
                }
                report.telegrams.push(json);
            }
            Err(reason) => report.errors.push(format!("telegram {number}: {reason}")),
        }
    }
    report.junk_bytes = framer.stats().junk_bytes;
    report.incomplete_tail = framer.pending_len();
    report
}

/// A file of hex digits (whitespace between them allowed) as the bytes they write;
/// any other file as it is.
fn unhex(bytes: Vec<u8>) -> Vec<u8> {
    let digits: Vec<u8> = bytes.iter().copied().filter(|b| !b.is_ascii_whitespace()).collect();
    if digits.is_empty() || digits.len() % 2 != 0 || !digits.iter().all(u8::is_ascii_hexdigit) {
        return bytes;
    }
    let nibble = |b: u8| char::from(b).to_digit(16).unwrap_or(0) as u8;
    digits
        .chunks(2)
        .map(|p| (nibble(p.first().copied().unwrap_or(b'0')) << 4) | nibble(p.get(1).copied().unwrap_or(b'0')))
        .collect()
}

/// Decrypts and decodes every encrypted frame in `bytes` the way a `dsmr` device
/// with `decryption_key` does.
pub fn decode_encrypted_bytes(bytes: &[u8], keys: &crate::protocols::dlms::Keys) -> DsmrReport {
    use crate::protocols::dlms::EncryptedFramer;

    let mut framer = EncryptedFramer::new(keys.clone(), crate::protocols::dsmr::DEFAULT_MAX_TELEGRAM_SIZE);
    framer.push(bytes);
    let mut report = DsmrReport::default();
    let mut number = 0;
    while let Some(result) = framer.next_frame() {
        number += 1;
        let outcome = match result {
            Ok(frame) => telegram_json(frame),
            Err(e) => Err(format!("{e}; a meter's frame like this is dropped")),
        };
        match outcome {
            Ok(mut json) => {
                if let Some(obj) = json.as_object_mut() {
                    obj.insert("telegram".into(), number.into());
                }
                report.telegrams.push(json);
            }
            Err(reason) => report.errors.push(format!("frame {number}: {reason}")),
        }
    }
    report.junk_bytes = framer.stats().junk_bytes;
    report.incomplete_tail = framer.pending_len();
    report
}

/// One framed telegram as the JSON `mesura decode dsmr` prints, or why the `dsmr`
/// device would drop it.
fn telegram_json(mut frame: crate::protocols::dsmr::Frame) -> Result<serde_json::Value, String> {
    use crate::monitors::dsmr::map;
    use crate::protocols::dsmr::{CrcStatus, Framer};

    // Telegrams pasted from a forum or saved on Linux often lost their CRs, which the
    // CRC covers; if restoring CR LF makes the CRC match, that is the telegram.
    let mut note = None;
    if matches!(frame.crc, CrcStatus::Invalid { .. }) && !frame.bytes.contains(&b'\r') {
        let restored: Vec<u8> = frame
            .bytes
            .iter()
            .flat_map(|&b| if b == b'\n' { vec![b'\r', b'\n'] } else { vec![b] })
            .collect();
        let mut framer = Framer::default();
        framer.push(&restored);
        let first = std::iter::from_fn(|| framer.next_frame()).find_map(Result::ok);
        if let Some(f) = first.filter(|f| f.crc == CrcStatus::Valid) {
            frame = f;
            note = Some("line endings were LF; the CRC matches with CR LF");
        }
    }
    let crc = match frame.crc {
        CrcStatus::Valid => "valid",
        CrcStatus::Absent => "absent",
        CrcStatus::Invalid { given, computed } => {
            return Err(format!(
                "CRC mismatch: the telegram says {given:04X}, its bytes give {computed:04X}; a meter's telegram like this is dropped"
            ))
        }
    };
    let telegram = frame.decode().map_err(|e| e.to_string())?;
    let time =
        |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let readings: Vec<serde_json::Value> = telegram
        .values
        .iter()
        .map(|v| {
            let value = match &v.value {
                crate::protocols::dsmr::DsmrNumberOrText::Number(n) => serde_json::json!(n),
                crate::protocols::dsmr::DsmrNumberOrText::Text(t) => serde_json::json!(t),
            };
            serde_json::json!({
                "metric": v.metric,
                "value": value,
                "unit": map::unit_of(v.unit).symbol(),
                "timestamp": time(v.timestamp.or(telegram.meter_time)),
            })
        })
        .collect();
    let mut json = serde_json::json!({
        "crc": crc,
        "meter_time": time(telegram.meter_time),
        "equipment_id": telegram.equipment_id,
        "header": telegram.header,
        "readings": readings,
        "not_decoded": telegram.unknown.iter().map(|(id, _)| id).collect::<Vec<_>>(),
    });
    if let (Some(note), Some(obj)) = (note, json.as_object_mut()) {
        obj.insert("note".into(), note.into());
    }
    if let (Some(history), Some(obj)) = (&telegram.monthly_peaks, json.as_object_mut()) {
        obj.insert("monthly_peaks".into(), monthly_peaks_json(history, &telegram));
    }
    Ok(json)
}

/// The `0-0:98.1.0` history, and the capacity-tariff average it gives for the
/// running month (the one its newest entry's closing time falls in), the running
/// month's `1-0:1.6.0` peak included, at the Flemish 2.5 kW minimum.
fn monthly_peaks_json(
    history: &crate::protocols::dsmr::PeakHistory,
    telegram: &crate::protocols::dsmr::Telegram,
) -> serde_json::Value {
    use crate::protocols::dsmr::{rolling_average, DEFAULT_MINIMUM_PEAK_W};
    let time =
        |t: Option<chrono::DateTime<chrono::Utc>>| t.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true));
    let months: Vec<serde_json::Value> = history
        .entries
        .iter()
        .map(|e| {
            serde_json::json!({
                "month": e.month.map(|m| m.to_string()),
                "peak_w": e.peak_w,
                "peak_at": time(e.peak_at),
            })
        })
        .collect();
    let running = history.entries.iter().filter_map(|e| e.month).max().map(|m| m.next());
    let average = running.and_then(|month| {
        let current = telegram.number("peak_demand_month").map(|w| (month, w));
        rolling_average(history.monthly().chain(current), month, DEFAULT_MINIMUM_PEAK_W).map(|a| (month, a))
    });
    serde_json::json!({
        "months": months,
        "rolling_average_w": average.map(|(_, a)| a.average_w),
        "rolling_average_months": average.map(|(_, a)| a.months),
        "rolling_average_through": average.map(|(m, _)| m.to_string()),
    })
}
