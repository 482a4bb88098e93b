//! Loading rules: config.yaml's `alerts:` and the files in `config.d/alerts/`.

use std::path::Path;

use crate::config::{load_base, ConfigError};

fn no_env(_: &str) -> Option<String> {
    None
}

fn write(path: &Path, text: &str) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).expect("mkdir");
    }
    std::fs::write(path, text).expect("write");
}

fn location(e: &ConfigError) -> (usize, Option<String>) {
    match e {
        ConfigError::Invalid { location, .. } => (location.line, location.key.clone()),
        other => panic!("{other}"),
    }
}

#[test]
fn rules_come_from_config_yaml_and_the_alerts_folder_not_as_devices() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.yaml");
    write(
        &config,
        "alerts:\n  rules:\n    hot:\n      device: room\n      metric: temperature\n      above: 26\n      clear: 25\n      for: 5m\n",
    );
    write(
        &dir.path().join("config.d/room.yaml"),
        "type: simulated\nprofile: climate\n",
    );
    write(
        &dir.path().join("config.d/alerts/room_silent.yaml"),
        "device: room\nsilent: 10m\n",
    );
    write(
        &dir.path().join("config.d/alerts/sqlite_failing.yaml"),
        "backend: sqlite\nfailing: 2m\nrepeat: 1h\n",
    );
    let base = load_base(&config, &no_env, &[]).expect("base");
    let devices = base.load_devices(&no_env);
    assert!(devices.errors.is_empty(), "{:?}", devices.errors);
    assert_eq!(devices.devices.len(), 1, "alert files are not devices");
    let set = base.load_alerts(&no_env);
    assert!(set.errors.is_empty(), "{:?}", set.errors);
    let names: Vec<&str> = set.rules.keys().map(String::as_str).collect();
    assert_eq!(names, ["hot", "room_silent", "sqlite_failing"]);
    assert!(matches!(
        set.rules["hot"].condition,
        super::Condition::Above { limit, clear, .. } if limit == 26.0 && clear == 25.0
    ));
    assert!(set.rules["hot"].file.is_none());
    assert!(set.rules["room_silent"].file.is_some());
}

#[test]
fn a_broken_rule_file_names_file_line_and_key_and_the_others_load() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.yaml");
    write(&config, "");
    let alerts = dir.path().join("config.d/alerts");
    write(
        &alerts.join("typo.yaml"),
        "device: room\nmetric: t\nabove: 3\nrepat: 1h\n",
    );
    write(
        &alerts.join("both.yaml"),
        "device: room\nmetric: t\nabove: 3\nclear: 4\n",
    );
    write(
        &alerts.join("nobackend.yaml"),
        "# watches uplink\nbackend: uplink\nfailing: 1m\n",
    );
    write(&alerts.join("good.yaml"), "device: room\nsilent: 1m\n");
    write(&alerts.join("off.yaml"), "device: room\nsilent: 1m\nenabled: false\n");
    let base = load_base(&config, &no_env, &[]).expect("base");
    let set = base.load_alerts(&no_env);
    assert_eq!(set.rules.keys().collect::<Vec<_>>(), ["good"]);
    let mut errors: Vec<(String, usize, Option<String>)> = set
        .errors
        .iter()
        .map(|e| {
            let file = e
                .file()
                .and_then(|f| f.file_name())
                .map(|f| f.to_string_lossy().into_owned());
            let (line, key) = location(e);
            (file.unwrap_or_default(), line, key)
        })
        .collect();
    errors.sort();
    assert_eq!(
        errors,
        [
            ("both.yaml".into(), 4, Some("clear".into())),
            ("nobackend.yaml".into(), 2, Some("backend".into())),
            ("typo.yaml".into(), 4, Some("repat".into())),
        ]
    );
    let typo = set.errors.iter().map(ToString::to_string).find(|e| e.contains("repat"));
    assert!(
        typo.is_some_and(|e| e.contains("did you mean `repeat`")),
        "{:?}",
        set.errors
    );
}

#[test]
fn config_yaml_rules_are_checked_with_line_and_key() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.yaml");
    write(
        &config,
        "alerts:\n  webhooks:\n    phone:\n      url: https://ntfy.sh/x\n      format: ntfy\n  rules:\n    a:\n      device: p1\n      metric: power\n      above: 5\n      webhooks: [pager]\n",
    );
    let e = load_base(&config, &no_env, &[]).expect_err("unknown webhook");
    assert_eq!(location(&e), (11, Some("alerts.rules.a.webhooks".into())));
    assert!(e.to_string().contains("pager"), "{e}");

    write(
        &config,
        "alerts:\n  webhooks:\n    gotify:\n      url: ftp://host/message?token=abc123\n",
    );
    let e = load_base(&config, &no_env, &[]).expect_err("not http");
    assert_eq!(location(&e), (4, Some("alerts.webhooks.gotify.url".into())));
    assert!(!e.to_string().contains("abc123"), "the token is never shown: {e}");

    write(
        &config,
        "alerts:\n  rules:\n    a:\n      device: p1\n      silent: 1m\n      for: 5m\n",
    );
    let e = load_base(&config, &no_env, &[]).expect_err("for without a threshold");
    assert_eq!(location(&e), (6, Some("alerts.rules.a.for".into())));
}

#[test]
fn a_webhook_token_never_shows() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.yaml");
    write(
        &config,
        "alerts:\n  webhooks:\n    gotify:\n      url: https://push.example/message?token=s3cr3t\n      format: gotify\n      headers:\n        X-Extra: hunter2\n",
    );
    let base = load_base(&config, &no_env, &[]).expect("base");
    let shown = format!("{:?} {}", base, serde_yaml_ng::to_string(&base).expect("yaml"));
    assert!(!shown.contains("s3cr3t") && !shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("token=***"), "{shown}");
}
