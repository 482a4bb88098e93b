//! `GET /metrics`: the Prometheus text exposition format (version 0.0.4).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use chrono::Utc;

use super::ApiState;
use crate::backends::health::Snapshot;
use crate::daemon::live::{BackendStats, LATENCY_BUCKETS};
use crate::daemon::retry::BreakerState;

/// Label values escape backslash, double quote and newline.
fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

pub(super) struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    /// A whole family with one sample per item, labelled `label` = the item's name.
    fn each<'a, T: 'a>(
        &mut self,
        (name, kind, help): (&str, &str, &str),
        label: &str,
        items: impl IntoIterator<Item = (&'a str, &'a T)>,
        value: impl Fn(&T) -> f64,
    ) {
        self.header(name, kind, help);
        for (key, item) in items {
            self.sample(name, &[(label, key)], value(item));
        }
    }

    pub(super) fn header(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    pub(super) fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        let labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{}\"", label(v))).collect();
        let labels = if labels.is_empty() {
            String::new()
        } else {
            format!("{{{}}}", labels.join(","))
        };
        let _ = writeln!(self.out, "{name}{labels} {value}");
    }
}

/// Resident memory of this process, from /proc (Linux).
fn resident_bytes() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024.0)
}

pub(super) async fn metrics(State(state): State<Arc<ApiState>>) -> impl IntoResponse {
    let devices = state.status.devices();
    let backends = state.status.backends();
    let outbox = super::readings::outbox_depths(&state.outbox).await;
    let now = Utc::now();
    let mut out = String::with_capacity(4096);
    let mut f = Family { out: &mut out };

    f.header("mesura_readings_total", "counter", "Readings produced, by device.");
    for (id, d) in &devices {
        f.sample(
            "mesura_readings_total",
            &[("device", id), ("device_type", d.device_type)],
            d.readings as f64,
        );
    }
    f.header("mesura_polls_total", "counter", "Reads of a device, by result.");
    for (id, d) in &devices {
        f.sample(
            "mesura_polls_total",
            &[("device", id), ("result", "ok")],
            d.polls_ok as f64,
        );
        f.sample(
            "mesura_polls_total",
            &[("device", id), ("result", "error")],
            d.polls_failed as f64,
        );
    }
    f.header(
        "mesura_glitches_dropped_total",
        "counter",
        "Counter readings judged glitches, left out of the lifetime series (docs/counters.md), by device.",
    );
    for (id, d) in &devices {
        f.sample(
            "mesura_glitches_dropped_total",
            &[("device", id)],
            d.counter_glitches as f64,
        );
    }
    f.header(
        "mesura_meter_epochs_total",
        "counter",
        "Counter epochs started by a meter swap or reset since the start, by device.",
    );
    for (id, d) in &devices {
        f.sample("mesura_meter_epochs_total", &[("device", id)], d.counter_epochs as f64);
    }
    f.header(
        "mesura_poll_errors_total",
        "counter",
        "Failed reads, by device and kind (link, refused, invalid_data, config).",
    );
    for (id, d) in &devices {
        for kind in ["link", "refused", "invalid_data", "config"] {
            let n = d.errors_by_kind.get(kind).copied().unwrap_or(0);
            f.sample("mesura_poll_errors_total", &[("device", id), ("kind", kind)], n as f64);
        }
    }
    f.header(
        "mesura_protocol_errors_total",
        "counter",
        "Protocol events a device's monitor counted itself, by kind: frames dropped (DSMR CRC and framing, KMP crc, register_mismatch, invalid_frame), Modbus points refused and request limits lowered.",
    );
    for (id, d) in &devices {
        for (kind, n) in &d.protocol_errors {
            f.sample(
                "mesura_protocol_errors_total",
                &[("device", id), ("kind", kind)],
                *n as f64,
            );
        }
    }
    service_metrics(&mut f, &devices);
    f.header(
        "mesura_device_breaker_state",
        "gauge",
        "1 for the circuit breaker's current state of each device.",
    );
    for (id, d) in &devices {
        for state in [BreakerState::Closed, BreakerState::Open, BreakerState::HalfOpen] {
            f.sample(
                "mesura_device_breaker_state",
                &[("device", id), ("state", state.as_str())],
                f64::from(u8::from(d.breaker == state)),
            );
        }
    }
    config_error_metrics(&mut f, devices.keys().map(|id| &**id), &state.status.config_errors());
    f.each(
        ("mesura_device_consecutive_errors", "gauge", "Failed reads in a row."),
        "device",
        devices.iter().map(|(k, v)| (&**k, v)),
        |x| f64::from(x.consecutive_failures),
    );
    f.header(
        "mesura_device_last_reading_age_seconds",
        "gauge",
        "Seconds since the device's newest reading.",
    );
    for (id, d) in &devices {
        if let Some(t) = d.last_reading {
            f.sample(
                "mesura_device_last_reading_age_seconds",
                &[("device", id)],
                (now - t).num_milliseconds() as f64 / 1000.0,
            );
        }
    }

    f.each(
        (
            "mesura_backend_written_total",
            "counter",
            "Readings written, by backend.",
        ),
        "backend",
        backends.iter().map(|(k, v)| (&**k, v)),
        |x| BackendStats::get(&x.written) as f64,
    );
    f.header(
        "mesura_backend_dropped_total",
        "counter",
        "Readings dropped, by backend and reason.",
    );
    for (name, b) in &backends {
        f.sample(
            "mesura_backend_dropped_total",
            &[("backend", name), ("reason", "queue_full")],
            BackendStats::get(&b.dropped_queue_full) as f64,
        );
        f.sample(
            "mesura_backend_dropped_total",
            &[("backend", name), ("reason", "rejected")],
            BackendStats::get(&b.dropped_rejected) as f64,
        );
    }
    f.each(
        (
            "mesura_backend_write_errors_total",
            "counter",
            "Failed write attempts, by backend.",
        ),
        "backend",
        backends.iter().map(|(k, v)| (&**k, v)),
        |x| BackendStats::get(&x.write_errors) as f64,
    );
    f.each(
        (
            "mesura_backend_queue_depth",
            "gauge",
            "Polls waiting in the backend's queue.",
        ),
        "backend",
        backends.iter().map(|(k, v)| (&**k, v)),
        |x| BackendStats::get(&x.queued_batches) as f64,
    );
    backend_metrics(&mut f, &backends);
    if let Some(sqlite) = backends.get("sqlite") {
        f.header(
            "mesura_sqlite_merged_total",
            "counter",
            "Readings SQLite stored over a different value of the same metric and second (one row per \
             device per second: the earlier value is lost there), by device.",
        );
        let mut merged = sqlite.merged();
        for id in devices.keys() {
            merged.entry(id.to_string()).or_default();
        }
        for (device, n) in &merged {
            f.sample("mesura_sqlite_merged_total", &[("device", device)], *n as f64);
        }
    }
    f.header(
        "mesura_backend_write_duration_seconds",
        "histogram",
        "Time to write one batch, by backend.",
    );
    for (name, b) in &backends {
        for (bucket, bound) in b.latency_buckets.iter().zip(LATENCY_BUCKETS) {
            f.sample(
                "mesura_backend_write_duration_seconds_bucket",
                &[("backend", name), ("le", &bound.to_string())],
                bucket.load(Ordering::Relaxed) as f64,
            );
        }
        let count = b.latency_count.load(Ordering::Relaxed) as f64;
        f.sample(
            "mesura_backend_write_duration_seconds_bucket",
            &[("backend", name), ("le", "+Inf")],
            count,
        );
        f.sample(
            "mesura_backend_write_duration_seconds_sum",
            &[("backend", name)],
            b.latency_sum_micros.load(Ordering::Relaxed) as f64 / 1e6,
        );
        f.sample(
            "mesura_backend_write_duration_seconds_count",
            &[("backend", name)],
            count,
        );
    }
    f.header(
        "mesura_outbox_readings",
        "gauge",
        "Undelivered readings in the durable outbox, by backend.",
    );
    for (name, held) in &outbox {
        f.sample("mesura_outbox_readings", &[("backend", name)], held.depth as f64);
    }
    f.header(
        "mesura_outbox_oldest_age_seconds",
        "gauge",
        "How long the reading waiting longest has been in the outbox, by backend.",
    );
    for (name, held) in &outbox {
        let age = held
            .oldest_queued
            .map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1000.0);
        f.sample("mesura_outbox_oldest_age_seconds", &[("backend", name)], age);
    }
    f.header(
        "mesura_outbox_dropped_total",
        "counter",
        "Undelivered readings the outbox's bounds dropped, by backend and bound (max_age, max_rows).",
    );
    for (name, held) in &outbox {
        for (reason, n) in [("max_age", held.dropped_max_age), ("max_rows", held.dropped_max_rows)] {
            f.sample(
                "mesura_outbox_dropped_total",
                &[("backend", name), ("reason", reason)],
                n as f64,
            );
        }
    }

    f.header("mesura_config_reloads_total", "counter", "Config reloads, by result.");
    f.sample(
        "mesura_config_reloads_total",
        &[("result", "ok")],
        state.status.reloads_ok.load(Ordering::Relaxed) as f64,
    );
    f.sample(
        "mesura_config_reloads_total",
        &[("result", "failed")],
        state.status.reloads_failed.load(Ordering::Relaxed) as f64,
    );
    let guard = &state.status.disk_guard;
    if let Some(max) = guard.max_percent() {
        f.header(
            "mesura_disk_guard_max_used_ratio",
            "gauge",
            "Disk guard threshold: thinning starts above this share of the database's filesystem.",
        );
        f.sample("mesura_disk_guard_max_used_ratio", &[], max / 100.0);
        if let Some(used) = guard.used_percent() {
            f.header(
                "mesura_disk_used_ratio",
                "gauge",
                "Used share of the database's filesystem at the disk guard's last check.",
            );
            f.sample("mesura_disk_used_ratio", &[], used / 100.0);
        }
        for (name, help, counter) in [
            (
                "mesura_disk_guard_checks_total",
                "Disk guard checks run.",
                &guard.checks,
            ),
            (
                "mesura_disk_guard_errors_total",
                "Disk guard checks that failed (disk or database unreadable).",
                &guard.errors,
            ),
            (
                "mesura_disk_guard_thinned_rows_total",
                "SQLite rows deleted by the disk guard.",
                &guard.thinned_rows,
            ),
        ] {
            f.header(name, "counter", help);
            f.sample(name, &[], counter.load(Ordering::Relaxed) as f64);
        }
    }
    if let Some(rss) = resident_bytes() {
        f.header(
            "mesura_process_resident_memory_bytes",
            "gauge",
            "Resident memory of the mesura process.",
        );
        f.sample("mesura_process_resident_memory_bytes", &[], rss);
    }
    f.header(
        "mesura_process_uptime_seconds",
        "gauge",
        "Seconds since mesura started.",
    );
    f.sample(
        "mesura_process_uptime_seconds",
        &[],
        (now - state.status.started_at).num_milliseconds() as f64 / 1000.0,
    );
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        out,
    )
}

/// The families monitors report about services of their own (a re-served P1
/// port's clients): one header per name, one sample per device.
fn service_metrics(
    f: &mut Family<'_>,
    devices: &std::collections::BTreeMap<crate::reading::DeviceId, crate::daemon::live::DeviceStatus>,
) {
    let mut families: std::collections::BTreeMap<&str, Vec<(&str, &crate::monitors::ServiceMetric)>> =
        Default::default();
    for (id, d) in devices {
        for m in &d.service_metrics {
            families.entry(m.name).or_default().push((id, m));
        }
    }
    for (name, samples) in families {
        if let Some((_, first)) = samples.first() {
            f.header(name, first.kind, first.help);
        }
        for (id, m) in samples {
            f.sample(name, &[("device", id)], m.value);
        }
    }
}

/// `mesura_backend_up` and `mesura_backend_failing_seconds`.
fn backend_metrics(f: &mut Family<'_>, backends: &BTreeMap<&'static str, std::sync::Arc<BackendStats>>) {
    let health: Vec<(&str, Snapshot)> = backends.iter().map(|(name, b)| (*name, b.health())).collect();
    f.header(
        "mesura_backend_up",
        "gauge",
        "1 while the backend writes and delivers, 0 while it fails (see /health for why).",
    );
    for (name, h) in &health {
        f.sample(
            "mesura_backend_up",
            &[("backend", name)],
            f64::from(u8::from(h.healthy())),
        );
    }
    f.header(
        "mesura_backend_failing_seconds",
        "gauge",
        "How long the backend has been failing to write or deliver (0 while it works).",
    );
    for (name, h) in &health {
        let seconds = h.failing_for.map_or(0.0, |d| d.as_secs_f64());
        f.sample("mesura_backend_failing_seconds", &[("backend", name)], seconds);
    }
}

/// `mesura_device_config_error`: 1 for a device whose file is broken on disk (a
/// running device keeps its previous settings), 0 for the others.
fn config_error_metrics<'a>(
    f: &mut Family<'_>,
    running: impl Iterator<Item = &'a str>,
    errors: &BTreeMap<String, String>,
) {
    f.header(
        "mesura_device_config_error",
        "gauge",
        "1 when the device's file is broken on disk: a running device keeps its previous settings.",
    );
    let mut devices: BTreeMap<&str, bool> = running.map(|id| (id, false)).collect();
    devices.extend(errors.keys().map(|id| (id.as_str(), true)));
    for (id, broken) in devices {
        f.sample(
            "mesura_device_config_error",
            &[("device", id)],
            f64::from(u8::from(broken)),
        );
    }
}
