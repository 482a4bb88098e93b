//! What `mesura check` tells a user about config.yaml: YAML syntax errors with the
//! line and the problem (no made-up key), counts in plain English, "did you mean"
//! for unknown keys, host names in `api.listen`, and a line per section it checked.

use std::process::Command;

use crate::support::Setup;

const BIN: &str = env!("CARGO_BIN_EXE_mesura");

/// `mesura check --config <setup>`: exit code and stdout + stderr.
fn check(setup: &Setup) -> (Option<i32>, String) {
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(setup.config_path())
        .env_remove("RUST_LOG")
        .env_remove("MESURA_CONFIG")
        .output()
        .expect("run mesura");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[test]
fn a_yaml_syntax_error_names_line_column_and_problem_without_a_key() {
    // A key indented by 3 instead of 4 spaces: the old message blamed `key backends.?`.
    let setup = Setup::new("backends:\n  sqlite:\n    path: x.db\n   flush_interval: 2s\n");
    let (code, text) = check(&setup);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("config.yaml:line 4 column 4: YAML syntax error: did not find expected key"),
        "{text}"
    );
    assert!(!text.contains("key `"), "a syntax error has no key: {text}");
    assert!(!text.contains('?'), "{text}");

    // An unclosed bracket: the old message called it a type error of `api`.
    std::fs::write(setup.config_path(), "api: [\n").expect("write");
    let (_, text) = check(&setup);
    assert!(
        text.contains("config.yaml:line 2 column 1: YAML syntax error"),
        "{text}"
    );
    assert!(!text.contains("key `"), "{text}");

    // A tab says so.
    std::fs::write(setup.config_path(), "backends:\n\tsqlite: {}\n").expect("write");
    let (_, text) = check(&setup);
    assert!(
        text.contains("config.yaml:line 2 column 1: YAML syntax error") && text.contains("a tab"),
        "{text}"
    );
}

#[test]
fn a_syntax_error_in_a_device_file_is_named_the_same_way() {
    let setup = Setup::new("");
    setup.device("meter", "type: simulated\nprofile: gas\n  seed: 1\n");
    let (code, text) = check(&setup);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("meter.yaml:line 3 column"), "{text}");
    assert!(text.contains("YAML syntax error"), "{text}");
    assert!(!text.contains("key `"), "{text}");
}

#[test]
fn error_counts_read_as_english() {
    let setup = Setup::new("");
    setup.device("a", "type: simulatd\n");
    let (_, text) = check(&setup);
    assert!(text.contains("\n1 error found\n"), "{text}");
    setup.device("b", "type: simulatd\n");
    let (_, text) = check(&setup);
    assert!(text.contains("\n2 errors found\n"), "{text}");
    std::fs::write(setup.config_path(), "retension: {}\n").expect("write");
    let (_, text) = check(&setup);
    assert!(text.contains("\n1 error found\n"), "{text}");
    assert!(!text.contains("(s)"), "{text}");
    for id in ["a", "b"] {
        std::fs::remove_file(setup.dir.path().join(format!("config.d/{id}.yaml"))).expect("rm");
    }
    std::fs::write(setup.config_path(), "").expect("write");
    setup.device("gas", "type: simulated\nprofile: gas\n");
    let (code, text) = check(&setup);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("ok: 1 device, no errors"), "{text}");
    assert!(!text.contains("(s)"), "{text}");
}

#[test]
fn unknown_keys_of_config_yaml_get_a_suggestion() {
    let setup = Setup::new("data_dir: data\nretension:\n  raw: 7d\n");
    let (code, text) = check(&setup);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains(
            "config.yaml:line 2 column 1: key `retension`: unknown key `retension` (did you mean `retention`?)"
        ),
        "{text}"
    );
    std::fs::write(setup.config_path(), "backends:\n  sqlite:\n    flush_intervall: 5s\n").expect("write");
    let (_, text) = check(&setup);
    assert!(
        text.contains("line 3 column 5: key `backends.sqlite.flush_intervall`: unknown key `flush_intervall` (did you mean `flush_interval`?)"),
        "{text}"
    );
    std::fs::write(setup.config_path(), "disk_guard:\n  max_disk_used_percnt: 80\n").expect("write");
    let (_, text) = check(&setup);
    assert!(text.contains("(did you mean `max_disk_used_percent`?)"), "{text}");
}

#[test]
fn api_listen_takes_a_host_name_and_check_reports_one_that_does_not_resolve() {
    let setup = Setup::new("api:\n  listen: localhost:9361\n");
    let (code, text) = check(&setup);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("api: http://127.0.0.1:9361/"), "{text}");
    // `.invalid` never resolves (RFC 6761).
    std::fs::write(setup.config_path(), "api:\n  listen: nowhere.invalid:9361\n").expect("write");
    let (code, text) = check(&setup);
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("config.yaml:line 2 column 3: key `api.listen`: cannot resolve host `nowhere.invalid`"),
        "{text}"
    );
    std::fs::write(setup.config_path(), "api:\n  listen: 127.0.0.1:9361\n").expect("write");
    assert_eq!(check(&setup).0, Some(0));
}

#[test]
fn check_prints_a_line_for_every_section_it_validated() {
    let setup = Setup::new(
        "watch:\n  debounce: 2s\napi:\n  listen: 127.0.0.1:9361\n  token: s3cret-token\nretention:\n  raw: 7d\n  aggregates: 365d\ndisk_guard:\n  max_disk_used_percent: 80\n",
    );
    setup.device("gas", "type: simulated\nprofile: gas\n");
    let (code, text) = check(&setup);
    assert_eq!(code, Some(0), "{text}");
    let line = |prefix: &str| {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no `{prefix}` line in:\n{text}"))
            .to_owned()
    };
    assert!(line("logging: ").contains("info"), "{text}");
    assert!(line("watch: ").contains("2s"), "{text}");
    let api = line("api: ");
    assert!(api.contains("127.0.0.1:9361") && api.contains("token"), "{text}");
    assert!(!text.contains("s3cret-token"), "the token is never printed: {text}");
    let retention = line("retention: ");
    assert!(
        retention.contains("kept 7d") && retention.contains("kept 365d"),
        "{text}"
    );
    let guard = line("disk guard: ");
    assert!(guard.contains("80%") && guard.contains("7 days"), "{text}");
    line("backends:");
    line("devices:");

    std::fs::write(
        setup.config_path(),
        "watch:\n  enabled: false\napi:\n  enabled: false\nretention:\n  enabled: false\ndisk_guard:\n  enabled: false\n",
    )
    .expect("write");
    let (_, text) = check(&setup);
    for off in ["watch: off", "api: off", "retention: off", "disk guard: off"] {
        assert!(text.contains(off), "{off}: {text}");
    }
}

#[test]
fn a_tariff_naming_no_prices_device_is_a_warning_not_an_error() {
    let setup = Setup::new("backends:\n  sqlite: {}\n");
    setup.device("room", "type: simulated\nprofile: climate\n");
    setup.device(
        "meter",
        "type: simulated\nprofile: electricity\ntariff:\n  prices: day_ahaed\n  fixed_price: 0.25\n",
    );
    setup.device("gas", "type: simulated\nprofile: gas\ntariff:\n  prices: room\n");
    let (code, text) = check(&setup);
    assert_eq!(code, Some(0), "{text}");
    assert!(
        text.contains(
            "meter.yaml: tariff.prices: no device `day_ahaed` in the devices dir: every slot gets `fixed_price`"
        ),
        "{text}"
    );
    assert!(
        text.contains("gas.yaml: tariff.prices: `room` is a `simulated` device, not a `prices` one: no slot is costed"),
        "{text}"
    );
    // A tariff key that does not exist is an error with its line.
    setup.device(
        "meter",
        "type: simulated\nprofile: electricity\ntariff:\n  fixed_price: 0.25\n  markupp: 0.01\n",
    );
    let (code, text) = check(&setup);
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("markupp"), "{text}");
}
