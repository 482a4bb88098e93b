//! What `mesura check` says about each section of config.yaml it validated besides
//! the backends and devices: one line each, with the settings that decide what the
//! daemon will do. Secrets are never printed, only whether one is set.

use std::fmt::Write as _;

use crate::config::BaseConfig;

/// One line per section: logging, watch, api, retention, disk guard.
pub(super) fn describe(base: &BaseConfig) -> String {
    let mut text = String::new();
    let _ = writeln!(
        text,
        "logging: {}, {}",
        base.logging.level,
        match base.logging.format {
            crate::config::LogFormat::Text => "text",
            crate::config::LogFormat::Json => "json",
        }
    );
    let _ = writeln!(text, "{}", watch(base));
    let _ = writeln!(text, "{}", api(base));
    let _ = writeln!(text, "{}", retention(base));
    let _ = writeln!(text, "{}", disk_guard(base));
    text
}

/// `7d` and `365d` as written in config files, rather than humantime's
/// `11months 30days 3h 50m 24s` for a year.
fn duration(d: std::time::Duration) -> String {
    const DAY: u64 = 86_400;
    match d.as_secs() {
        s if s >= DAY && s % DAY == 0 && d.subsec_nanos() == 0 => format!("{}d", s / DAY),
        _ => humantime::format_duration(d).to_string(),
    }
}

fn watch(base: &BaseConfig) -> String {
    if !base.watch.enabled {
        return "watch: off (SIGHUP reloads the files)".into();
    }
    format!(
        "watch: on, config.yaml and {} reloaded {} after the last change",
        base.devices_dir.display(),
        duration(base.watch.debounce)
    )
}

fn api(base: &BaseConfig) -> String {
    let api = &base.api;
    if !api.enabled {
        return "api: off".into();
    }
    let token = match (&api.token, &api.token_file) {
        (Some(_), _) => "a bearer token (api.token) on every request".to_owned(),
        (None, Some(file)) => format!("a bearer token (from {}) on every request", file.display()),
        (None, None) => "no token (loopback only)".to_owned(),
    };
    format!("api: http://{}/, {token}", api.listen)
}

fn retention(base: &BaseConfig) -> String {
    let r = &base.retention;
    if !r.enabled {
        return "retention: off (every raw row is kept)".into();
    }
    let aggregates = r.aggregates.map_or_else(|| "forever".to_owned(), duration);
    format!(
        "retention: raw rows kept {}, then 5-minute aggregates kept {aggregates}; checked every {}{}",
        duration(r.raw),
        duration(r.check_interval),
        without_sqlite(base)
    )
}

fn disk_guard(base: &BaseConfig) -> String {
    let g = &base.disk_guard;
    if !g.enabled {
        return "disk guard: off (never deletes a row)".into();
    }
    format!(
        "disk guard: thins rows older than {} days when the disk is over {}% full; checked every {}{}",
        g.keep_raw_days,
        g.max_disk_used_percent,
        duration(g.check_interval),
        without_sqlite(base)
    )
}

/// Retention and the disk guard work on the SQLite database only.
fn without_sqlite(base: &BaseConfig) -> &'static str {
    if base.backends.sqlite.is_some() {
        ""
    } else {
        " (idle: no sqlite backend)"
    }
}
