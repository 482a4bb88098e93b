//! Every YAML example in README.md and docs/ is checked as `mesura check` would, so
//! the docs cannot rot:
//!
//! - a ```yaml block with a top-level `type:` is a device file: interpolated, then
//!   parsed with `parse_device` (the file name is taken from a first-line comment
//!   like `# config.d/electricity.yaml …`, else `example.yaml`);
//! - a ```yaml block with a top-level key of config.yaml (`data_dir:`, `backends:`,
//!   `retention:`, …) is a base config: written to a temp config.yaml and loaded with
//!   `load_base`;
//! - a block opened with ```yaml no-check is a fragment (a part of a file, shown for
//!   its shape) and is skipped — explicitly: any other ```yaml block that is neither
//!   a device file nor a base config fails the test, so nothing is skipped by accident.

use std::path::{Path, PathBuf};

use mesura::config::{env::interpolate, load_base, parse_device};

/// Every backend name, so an example's `backends: [csv]` is checked against a base
/// config that has them all.
const BACKENDS: &[&str] = mesura::config::BackendsConfig::NAMES;

/// The top-level keys of config.yaml that mark a block as a base config.
const BASE_KEYS: &[&str] = &[
    "data_dir",
    "devices_dir",
    "logging",
    "backends",
    "watch",
    "api",
    "disk_guard",
    "retention",
    "counters",
    "alerts",
];

/// Top-level keys that mark a block as an alert rule file (`config.d/alerts/*.yaml`).
const RULE_KEYS: &[&str] = &["above", "below", "silent", "failing"];

/// Gives every `${VAR}` a value that parses wherever it is used (a string field
/// takes a number as well).
fn lookup(name: &str) -> Option<String> {
    Some(
        match name {
            n if n.contains("URL") => "https://example.com/ingest",
            n if n.contains("LAT") || n.contains("LON") => "52.1",
            // A P1 decryption key is checked for its 32 hex digits.
            n if n.starts_with("P1_KEY") => "0123456789abcdef0123456789abcdef",
            _ => "0123456789abcdef",
        }
        .to_owned(),
    )
}

#[derive(Clone)]
struct Block {
    file: PathBuf,
    line: usize,
    info: String,
    text: String,
}

fn markdown_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("README.md")];
    let mut dirs = vec![root.join("docs")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "md") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// The fenced ```yaml blocks of a markdown file, with the line they start on.
fn yaml_blocks(file: &Path) -> Vec<Block> {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut blocks = Vec::new();
    // Inside a fence: `Some(Some(block))` for yaml, `Some(None)` for another language.
    let mut fence: Option<Option<Block>> = None;
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        let marker = trimmed.strip_prefix("```");
        match (&mut fence, marker) {
            (Some(open), Some(_)) => {
                blocks.extend(open.take());
                fence = None;
            }
            (Some(Some(block)), None) => {
                block.text.push_str(line);
                block.text.push('\n');
            }
            (Some(None), None) | (None, None) => {}
            (None, Some(info)) => {
                let info = info.trim().to_owned();
                fence = Some((info.split_whitespace().next() == Some("yaml")).then(|| Block {
                    file: file.to_path_buf(),
                    line: i + 1,
                    info,
                    text: String::new(),
                }));
            }
        }
    }
    assert!(fence.is_none(), "{}: an unclosed ``` block", file.display());
    blocks
}

fn top_level_keys(text: &str) -> Vec<&str> {
    text.lines()
        .filter(|l| !l.starts_with(' ') && !l.starts_with('#') && !l.starts_with('-'))
        .filter_map(|l| l.split_once(':').map(|(k, _)| k.trim()))
        .collect()
}

fn check(block: &Block) -> Result<&'static str, String> {
    let at = format!("{}:{}", block.file.display(), block.line);
    if block.info.split_whitespace().any(|w| w == "no-check") {
        return Ok("skipped (no-check)");
    }
    let keys = top_level_keys(&block.text);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    if keys.contains(&"type") {
        let name = block
            .text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix('#'))
            .and_then(|l| l.split_whitespace().next())
            .filter(|l| l.ends_with(".yaml"))
            .and_then(|l| Path::new(l).file_name())
            .map_or_else(|| PathBuf::from("example.yaml"), PathBuf::from);
        let path = dir.path().join(name);
        let text = interpolate(&path, &block.text, &lookup).map_err(|e| format!("{at}: {e}"))?;
        parse_device(&path, &text, BACKENDS).map_err(|e| format!("{at}: device file: {e}"))?;
        Ok("device file")
    } else if keys.iter().any(|k| RULE_KEYS.contains(k)) {
        let name = block
            .text
            .lines()
            .next()
            .and_then(|l| l.strip_prefix('#'))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|l| Path::new(l).file_name())
            .map_or_else(|| PathBuf::from("example.yaml"), PathBuf::from);
        let alerts = dir.path().join("alerts");
        std::fs::create_dir_all(&alerts).map_err(|e| e.to_string())?;
        std::fs::write(alerts.join(name), &block.text).map_err(|e| e.to_string())?;
        let set = mesura::config::alerts::load_alerts(&Default::default(), &alerts, BACKENDS, &lookup);
        match set.errors.first() {
            Some(e) => Err(format!("{at}: alert rule file: {e}")),
            None if set.rules.len() == 1 => Ok("alert rule file"),
            None => Err(format!("{at}: alert rule file: no rule loaded")),
        }
    } else if keys.iter().any(|k| BASE_KEYS.contains(k)) {
        let path = dir.path().join("config.yaml");
        std::fs::write(&path, &block.text).map_err(|e| e.to_string())?;
        load_base(&path, &lookup, &[]).map_err(|e| format!("{at}: config.yaml: {e}"))?;
        Ok("base config")
    } else {
        Err(format!(
            "{at}: a ```yaml block that is neither a device file (top-level `type:`), an alert rule file ({}) nor a base config ({}): make it one, or mark it ```yaml no-check",
            RULE_KEYS.join(", "),
            BASE_KEYS.join(", ")
        ))
    }
}

#[test]
fn every_yaml_example_in_the_docs_is_valid() {
    let mut errors = Vec::new();
    let mut counts = std::collections::BTreeMap::<&str, usize>::new();
    for file in markdown_files() {
        for block in yaml_blocks(&file) {
            match check(&block) {
                Ok(kind) => *counts.entry(kind).or_default() += 1,
                Err(e) => errors.push(e),
            }
        }
    }
    eprintln!("doc examples: {counts:?}");
    assert!(
        errors.is_empty(),
        "{} doc example(s) fail:\n{}",
        errors.len(),
        errors.join("\n")
    );
    // The docs have examples of both kinds: a parser that finds none would pass.
    assert!(counts.get("device file").copied().unwrap_or(0) >= 8, "{counts:?}");
    assert!(counts.get("base config").copied().unwrap_or(0) >= 4, "{counts:?}");
    assert!(counts.get("alert rule file").copied().unwrap_or(0) >= 2, "{counts:?}");
}

#[test]
fn a_broken_example_is_caught() {
    let block = Block {
        file: PathBuf::from("test.md"),
        line: 1,
        info: "yaml".into(),
        text: "type: simulated\nprofil: gas\n".into(),
    };
    let e = check(&block).expect_err("a misspelt key must fail");
    assert!(e.contains("profil"), "{e}");
    let base = Block {
        text: "backends:\n  sqlite:\n    flush_intervall: 5s\n".into(),
        ..block
    };
    assert!(check(&base).is_err());
    let rule = Block {
        text: "device: p1\nsilent: 5m\nrepaet: 1h\n".into(),
        ..base.clone()
    };
    assert!(
        check(&rule).is_err_and(|e| e.contains("repaet")),
        "a misspelt rule key must fail"
    );
    let fragment = Block {
        text: "sqlite:\n  path: x.db\n".into(),
        ..base
    };
    assert!(check(&fragment).is_err(), "an unmarked fragment must fail");
    let marked = Block {
        info: "yaml no-check".into(),
        ..fragment
    };
    assert_eq!(check(&marked), Ok("skipped (no-check)"));
}

/// One page per device type with every key, and every metric in docs/metrics.md.
#[test]
fn every_device_type_key_and_metric_is_documented() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    let metrics_page = read(&root.join("metrics.md"));
    let index = read(&root.join("README.md"));
    let mut missing = Vec::new();
    for type_name in mesura::config::DeviceKind::TYPES {
        let page_path = root.join("devices").join(format!("{type_name}.md"));
        if !page_path.exists() {
            missing.push(format!("docs/devices/{type_name}.md does not exist"));
            continue;
        }
        if !index.contains(&format!("(devices/{type_name}.md)")) {
            missing.push(format!("docs/README.md does not link devices/{type_name}.md"));
        }
        let page = read(&page_path);
        for key in mesura::config::DeviceKind::keys(type_name) {
            if !page.contains(&format!("`{key}`")) {
                missing.push(format!("docs/devices/{type_name}.md: key `{key}`"));
            }
        }
        for metric in mesura::monitors::type_metrics(type_name) {
            if !metrics_page.contains(&format!("`{}`", metric.name)) {
                missing.push(format!("docs/metrics.md: metric `{}` of `{type_name}`", metric.name));
            }
        }
    }
    for backend in BACKENDS {
        if !index.contains(&format!("(backends/{backend}.md)")) {
            missing.push(format!("docs/README.md does not link backends/{backend}.md"));
        }
    }
    assert!(missing.is_empty(), "undocumented:\n{}", missing.join("\n"));
}

/// docs/alerts.md names every key of a rule, a webhook and the `alerts:` section.
#[test]
fn every_alert_key_is_documented() {
    use mesura::alerts::{AlertRule, AlertsConfig, WebhookConfig};
    use mesura::config::parse::fields_of;
    let page = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/alerts.md");
    let page = std::fs::read_to_string(&page).expect("docs/alerts.md");
    let index = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/README.md")).expect("index");
    let keys: Vec<&str> = [
        fields_of::<AlertRule>(),
        fields_of::<WebhookConfig>(),
        fields_of::<AlertsConfig>(),
    ]
    .concat();
    assert!(keys.len() > 20 && keys.contains(&"for"), "{keys:?}");
    let missing: Vec<&&str> = keys.iter().filter(|k| !page.contains(&format!("| `{k}` |"))).collect();
    assert!(missing.is_empty(), "docs/alerts.md has no table row for: {missing:?}");
    assert!(index.contains("(alerts.md)"), "docs/README.md does not link alerts.md");
}
