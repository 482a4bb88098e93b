//! Config parsing: valid files and each kind of invalid one. Every error must name
//! the file, the line and the key.

use std::path::Path;

use super::*;

fn no_env(_: &str) -> Option<String> {
    None
}

fn device(src: &str) -> Result<DeviceConfig, ConfigError> {
    parse_device(Path::new("config.d/meter.yaml"), src, &["sqlite", "csv"])
}

/// The error's line and key, and its text.
fn located(err: ConfigError) -> (usize, Option<String>, String) {
    let text = err.to_string();
    match err {
        ConfigError::Invalid { location, file, .. } => {
            assert!(text.starts_with(&file.display().to_string()), "{text}");
            (location.line, location.key, text)
        }
        other => panic!("expected a located error, got {other}"),
    }
}

#[test]
fn valid_device_file_with_defaults() {
    let d = device("type: simulated\nprofile: gas\n").unwrap();
    assert_eq!(&*d.id, "meter");
    assert_eq!(d.kind.type_name(), "simulated");
    assert_eq!(d.poll_interval(), std::time::Duration::from_secs(10));
    assert!(d.common.enabled);
    assert!(d.sends_to("sqlite") && d.sends_to("csv"));
}

#[test]
fn common_keys_and_backend_subset() {
    let d =
        device("type: simulated\nprofile: climate\npoll_interval: 1m 30s\nenabled: false\nbackends: [csv]\n").unwrap();
    assert_eq!(d.poll_interval(), std::time::Duration::from_secs(90));
    assert!(!d.common.enabled);
    assert!(d.sends_to("csv") && !d.sends_to("sqlite"));
}

/// A misspelled common key in a file that mixes common and type-specific keys (the
/// place `#[serde(flatten)]` would go): rejected with its line and a suggestion.
#[test]
fn misspelled_key_is_rejected_where_flatten_would_accept_it() {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Flattened {
        #[serde(flatten)]
        common: CommonConfig,
        #[serde(flatten)]
        kind: crate::monitors::simulated::SimulatedConfig,
    }
    let src = "type: simulated\nprofile: gas\npoll_intervall: 5s\n";
    // The serde way rejects the key too, but its message says neither where nor
    // what was meant.
    let flattened = serde_yaml_ng::from_str::<Flattened>(src)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(flattened.contains("unknown field `poll_intervall`"), "{flattened}");
    assert!(!flattened.contains("line"), "{flattened}");
    let (line, key, text) = located(device(src).unwrap_err());
    assert_eq!(line, 3);
    assert_eq!(key.as_deref(), Some("poll_intervall"));
    assert!(text.contains("did you mean `poll_interval`"), "{text}");
}

#[test]
fn unknown_type_specific_key_is_rejected() {
    let (line, key, text) = located(device("type: simulated\nprofile: gas\nseeed: 4\n").unwrap_err());
    assert_eq!((line, key.as_deref()), (3, Some("seeed")));
    assert!(text.contains("did you mean `seed`"), "{text}");
}

#[test]
fn wrong_type_names_line_and_key() {
    let (line, key, text) = located(device("type: simulated\nprofile: gas\nseed: lots\n").unwrap_err());
    assert_eq!((line, key.as_deref()), (3, Some("seed")));
    assert!(text.contains("invalid"), "{text}");
}

#[test]
fn bad_duration_names_line_and_key() {
    let (line, key, text) = located(device("type: simulated\nprofile: gas\npoll_interval: often\n").unwrap_err());
    assert_eq!((line, key.as_deref()), (3, Some("poll_interval")));
    assert!(text.contains("invalid duration"), "{text}");
}

#[test]
fn bad_enum_value_names_line_and_key() {
    let (line, key, text) = located(device("type: simulated\nprofile: nuclear\n").unwrap_err());
    assert_eq!((line, key.as_deref()), (2, Some("profile")));
    assert!(text.contains("electricity"), "lists the valid values: {text}");
}

#[test]
fn missing_required_key_is_named() {
    let (_, _, text) = located(device("type: simulated\n").unwrap_err());
    assert!(text.contains("missing field `profile`"), "{text}");
}

#[test]
fn missing_type_is_named() {
    let (_, _, text) = located(device("profile: gas\n").unwrap_err());
    assert!(text.contains("missing field `type`"), "{text}");
}

#[test]
fn unknown_type_suggests() {
    let (line, key, text) = located(device("profile: gas\ntype: simulatd\n").unwrap_err());
    assert_eq!((line, key.as_deref()), (2, Some("type")));
    assert!(text.contains("did you mean `simulated`"), "{text}");
}

#[test]
fn out_of_range_value_is_named() {
    let (line, key, text) = located(device("type: simulated\nprofile: gas\nfailure_rate: 1.5\n").unwrap_err());
    assert_eq!((line, key.as_deref()), (3, Some("failure_rate")));
    assert!(text.contains("between 0 and 1"), "{text}");
}

#[test]
fn unconfigured_backend_is_named() {
    let (line, key, text) = located(device("type: simulated\nprofile: gas\nbackends: [mqtt]\n").unwrap_err());
    assert_eq!((line, key.as_deref()), (3, Some("backends")));
    assert!(text.contains("`mqtt` is not configured"), "{text}");
}

#[test]
fn syntax_error_has_a_line() {
    let (line, _, text) = located(device("type: simulated\nprofile: [gas\nseed: 1\n").unwrap_err());
    assert!(line >= 2, "{text}");
}

#[test]
fn empty_file_is_an_error() {
    let (_, _, text) = located(device("  \n").unwrap_err());
    assert!(text.contains("empty"), "{text}");
}

#[test]
fn reserved_and_odd_ids_are_rejected() {
    for name in [
        "metrics.yaml",
        "_x.yaml",
        "sqlite_master.yaml",
        "outbox.yaml",
        "p1_5m.yaml",
    ] {
        let err = parse_device(
            &Path::new("config.d").join(name),
            "type: simulated\nprofile: gas\n",
            &[],
        )
        .unwrap_err();
        assert!(err.to_string().contains("cannot be a device id"), "{name}: {err}");
    }
    // Spaces and commas are fine: backends quote and escape.
    assert!(parse_device(
        Path::new("config.d/living room, east.yaml"),
        "type: simulated\nprofile: gas\n",
        &[]
    )
    .is_ok());
}

#[test]
fn device_files_are_told_from_editor_litter() {
    for yes in ["p1.yaml", "p1.yml", "living room.yaml"] {
        assert!(is_device_file(Path::new(yes)), "{yes}");
    }
    for no in [
        ".p1.yaml",
        ".p1.yaml.swp",
        "p1.yaml~",
        "#p1.yaml#",
        "p1.json",
        "p1.yaml.bak",
        "README",
    ] {
        assert!(!is_device_file(Path::new(no)), "{no}");
    }
}

#[test]
fn directory_scan_keeps_good_devices_and_lists_every_error() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, body: &[u8]| std::fs::write(dir.path().join(name), body).unwrap();
    write("a.yaml", b"type: simulated\nprofile: gas\n");
    write("b.yaml", b"type: simulated\nprofile: gas\nbogus: 1\n");
    write("c.yml", b"type: simulated\nprofile: climate\n");
    write("c.yaml", b"type: simulated\nprofile: climate\n");
    write("d.yaml", b"type: simulated\nprofile: \xff\xfe\n");
    write("e.yaml", b"type: simulated\nprofile: ${MESURA_TEST_UNSET_VAR}\n");
    write(".hidden.yaml", b"garbage: [");
    write("notes.txt", b"garbage: [");
    std::fs::write(dir.path().join("huge.yaml"), vec![b'#'; 2 * 1024 * 1024]).unwrap();
    let set = load_devices(dir.path(), &["sqlite"], &no_env);
    let ids: Vec<&str> = set.devices.keys().map(|k| &**k).collect();
    assert_eq!(ids, vec!["a", "c"]);
    let errors: Vec<String> = set.errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 5, "{errors:#?}");
    let find = |needle: &str| errors.iter().any(|e| e.contains(needle));
    assert!(find("b.yaml:line 3 column 1: key `bogus`"), "{errors:#?}");
    assert!(find("already defined by"), "{errors:#?}");
    assert!(find("d.yaml:line 2") && find("not valid UTF-8"), "{errors:#?}");
    assert!(
        find("e.yaml:line 2") && find("MESURA_TEST_UNSET_VAR is not set"),
        "{errors:#?}"
    );
    assert!(find("huge.yaml") && find("limited to 1 MiB"), "{errors:#?}");
}

#[test]
fn env_variables_fill_values() {
    let env = |name: &str| (name == "PROFILE").then(|| "climate".to_string());
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("room.yaml");
    std::fs::write(&file, "type: simulated\nprofile: ${PROFILE}\nseed: ${SEED:-3}\n").unwrap();
    let d = load_device_file(&file, &[], &env).unwrap();
    let DeviceKind::Simulated(sim) = &d.kind else {
        panic!("expected a simulated device, got {:?}", d.kind)
    };
    assert_eq!(sim.seed, 3);
    assert_eq!(sim.profile, crate::monitors::simulated::Profile::Climate);
}

#[test]
fn base_config_defaults_and_relative_paths() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, "").unwrap();
    let base = load_base(&file, &no_env, &[]).unwrap();
    assert_eq!(base.data_dir, dir.path().join("data"));
    assert_eq!(base.devices_dir, dir.path().join("config.d"));
    assert_eq!(base.backends.names(), vec!["sqlite"]);
    assert_eq!(base.logging.format, LogFormat::Text);
}

#[test]
fn base_config_errors_name_line_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(
        &file,
        "data_dir: /tmp/x\nbackends:\n  sqlite:\n    flush_intervall: 5s\n",
    )
    .unwrap();
    let (line, key, text) = located(load_base(&file, &no_env, &[]).unwrap_err());
    assert_eq!(line, 4, "{text}");
    assert_eq!(key.as_deref(), Some("backends.sqlite.flush_intervall"), "{text}");
    std::fs::write(&file, "logging:\n  format: xml\n").unwrap();
    let (line, key, _) = located(load_base(&file, &no_env, &[]).unwrap_err());
    assert_eq!((line, key.as_deref()), (2, Some("logging.format")));
    std::fs::write(&file, "backends:\n  sqlite:\n    flush_interval: 5 parsecs\n").unwrap();
    let (line, key, _) = located(load_base(&file, &no_env, &[]).unwrap_err());
    assert_eq!((line, key.as_deref()), (3, Some("backends.sqlite.flush_interval")));
}

#[test]
fn disk_guard_values_out_of_range_name_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    for (yaml, key) in [
        (
            "disk_guard:\n  max_disk_used_percent: 0\n",
            "disk_guard.max_disk_used_percent",
        ),
        (
            "disk_guard:\n  max_disk_used_percent: -5\n",
            "disk_guard.max_disk_used_percent",
        ),
        (
            "disk_guard:\n  max_disk_used_percent: 100.5\n",
            "disk_guard.max_disk_used_percent",
        ),
        (
            "disk_guard:\n  max_disk_used_percent: .nan\n",
            "disk_guard.max_disk_used_percent",
        ),
        ("disk_guard:\n  check_interval: 0s\n", "disk_guard.check_interval"),
    ] {
        std::fs::write(&file, yaml).unwrap();
        let (line, found, text) = located(load_base(&file, &no_env, &[]).unwrap_err());
        assert_eq!((line, found.as_deref()), (2, Some(key)), "{yaml}: {text}");
    }
    std::fs::write(&file, "disk_guard:\n  max_disk_used_percent: 100\n").unwrap();
    assert_eq!(
        load_base(&file, &no_env, &[]).unwrap().disk_guard.max_disk_used_percent,
        100.0
    );
}

#[test]
fn mesura_env_overrides_base_keys() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("config.yaml");
    std::fs::write(&file, "logging:\n  level: info\nbackends:\n  sqlite: {}\n").unwrap();
    let overrides = env::overrides(
        [
            ("MESURA_DATA_DIR".to_string(), "/var/lib/mesura".to_string()),
            ("MESURA_LOGGING__FORMAT".to_string(), "json".to_string()),
            ("MESURA_BACKENDS__SQLITE__FLUSH_INTERVAL".to_string(), "30s".to_string()),
        ]
        .into_iter(),
    );
    let base = load_base(&file, &no_env, &overrides).unwrap();
    assert_eq!(base.data_dir, Path::new("/var/lib/mesura"));
    assert_eq!(base.logging.format, LogFormat::Json);
    assert_eq!(
        base.backends.sqlite.map(|s| s.flush_interval),
        Some(std::time::Duration::from_secs(30))
    );

    let bad = env::overrides([("MESURA_LOGGING__FORMAT".to_string(), "xml".to_string())].into_iter());
    let err = load_base(&file, &no_env, &bad).unwrap_err().to_string();
    assert!(err.contains("MESURA_LOGGING__FORMAT"), "{err}");
}

/// SQLite keys rows by whole seconds: a polled device faster than 1s merges polls
/// there, so `check` and the daemon refuse it, naming file, line and key.
#[test]
fn sub_second_poll_interval_of_a_polled_device_is_refused() {
    for value in ["0s", "1ms", "500ms", "999ms"] {
        let src = format!("type: simulated\nprofile: gas\npoll_interval: {value}\n");
        let (line, key, text) = located(device(&src).unwrap_err());
        assert_eq!((line, key.as_deref()), (3, Some("poll_interval")), "{value}: {text}");
        assert!(text.starts_with("config.d/meter.yaml:line 3"), "{text}");
        assert!(
            text.contains("below 1s") && text.contains("use 1s or more"),
            "{value}: {text}"
        );
        assert!(!text.contains("0s` to keep"), "no push alternative offered: {text}");
    }
    assert!(device("type: simulated\nprofile: gas\npoll_interval: 1s\n").is_ok());
}

/// A bare number is refused with the same message whether humantime would take it
/// (`0`) or not (`5`).
#[test]
fn bare_number_durations_are_refused_alike() {
    let messages: Vec<String> = ["0", "5"]
        .iter()
        .map(|value| {
            let src = format!("type: simulated\nprofile: gas\npoll_interval: {value}\n");
            let (line, key, text) = located(device(&src).unwrap_err());
            assert_eq!((line, key.as_deref()), (3, Some("poll_interval")), "{value}: {text}");
            assert!(
                text.contains(&format!("`{value}` has no unit")) && text.contains(&format!("`{value}s`")),
                "{text}"
            );
            text.replace(value, "N")
        })
        .collect();
    assert_eq!(messages[0], messages[1]);
    let src = "type: dsmr\nport: /dev/ttyUSB0\npoll_interval: 0\n";
    let (line, key, text) = located(device(src).unwrap_err());
    assert_eq!((line, key.as_deref()), (3, Some("poll_interval")), "{text}");
    assert!(text.contains("`0` has no unit"), "{text}");
}

/// A P1 meter pushes telegrams: `0s` keeps each one; sub-second but not zero is
/// still refused, with `0s` offered.
#[test]
fn a_push_device_may_have_zero_but_not_a_sub_second_poll() {
    let d = device("type: dsmr\nport: /dev/ttyUSB0\npoll_interval: 0s\n").unwrap();
    assert!(d.poll_interval().is_zero());
    let (line, key, text) = located(device("type: dsmr\nport: /dev/ttyUSB0\npoll_interval: 200ms\n").unwrap_err());
    assert_eq!((line, key.as_deref()), (3, Some("poll_interval")), "{text}");
    assert!(text.contains("or `0s` to keep every message"), "{text}");
    // The local types that only look push-like: a HomeWizard is read over HTTP, and
    // a Nea Smart gateway's register bank is read on mesura's own schedule.
    for src in [
        "type: homewizard\nhost: 192.0.2.1\npoll_interval: 0s\n",
        "type: neasmart\nlisten: 127.0.0.1:502\npoll_interval: 0s\n",
    ] {
        let (line, key, text) = located(device(src).unwrap_err());
        assert_eq!((line, key.as_deref()), (3, Some("poll_interval")), "{text}");
        assert!(text.contains("below 1s"), "{text}");
    }
}

#[test]
fn tariff_errors_name_the_nested_key_and_its_line() {
    let src = "type: simulated\nprofile: electricity\ntariff:\n  fixed_price: 0.25\n  grid_fees:\n    - {from: '09:00', to: '08:00', per_kwh: 0.05}\n  gas:\n    price_per_m3: 1.0\n    calorific_value: 0\n";
    let (line, key, text) = located(device(src).expect_err("from after to"));
    assert_eq!((line, key.as_deref()), (5, Some("tariff.grid_fees")), "{text}");
    let src = src.replace("'09:00'", "'07:00'");
    let (line, key, text) = located(device(&src).expect_err("no calorific value"));
    assert_eq!(
        (line, key.as_deref()),
        (9, Some("tariff.gas.calorific_value")),
        "{text}"
    );
    assert!(text.contains("must be above 0"), "{text}");
    let d = device(&src.replace("calorific_value: 0", "calorific_value: 11.0")).expect("valid");
    let tariff = d.common.tariff.expect("tariff");
    assert_eq!(tariff.gas.map(|g| g.calorific_value), Some(11.0));
    assert_eq!(tariff.max_gap, crate::config::tariff::default_max_gap());
}
