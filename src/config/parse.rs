//! Typed YAML parsing that keeps line, column and key in every error.
//!
//! We do not use `#[serde(flatten)]` or internally tagged enums on the top level of a
//! file: serde buffers such content, and errors found in the buffer carry neither a
//! line nor the key (a wrong type says only "invalid type: string, expected u16").
//! Instead a device file is deserialised twice straight from the text — once as the
//! common keys, once as the type's own keys — and a key neither knows is an error
//! (see `device.rs`).

use std::path::Path;

use serde::de::{self, DeserializeOwned, Visitor};

use super::error::{ConfigError, Location};

/// Deserialises `src` into `T`, returning the value and every key `T` ignored.
pub fn parse_typed<T: DeserializeOwned>(file: &Path, src: &str) -> Result<(T, Vec<String>), ConfigError> {
    check_syntax(file, src)?;
    let mut ignored = Vec::new();
    let result = {
        let yaml = serde_yaml_ng::Deserializer::from_str(src);
        let mut record = |path: serde_ignored::Path<'_>| ignored.push(path.to_string());
        let tracked = serde_ignored::Deserializer::new(yaml, &mut record);
        serde_path_to_error::deserialize::<_, T>(tracked)
    };
    match result {
        Ok(value) => Ok((value, ignored)),
        Err(err) => Err(yaml_error(file, src, err.path().to_string(), err.inner())),
    }
}

/// Reports malformed YAML (a bad indent, an unclosed quote or bracket, a tab) on
/// its own, before any key is looked at: the typed parse stops at the first key it
/// cannot finish and would blame that key (`key backends.?`) for a syntax error
/// that has none.
pub fn check_syntax(file: &Path, src: &str) -> Result<(), ConfigError> {
    let Err(err) = serde_yaml_ng::from_str::<de::IgnoredAny>(src) else {
        return Ok(());
    };
    let (line, column) = err.location().map_or((1, 1), |l| (l.line(), l.column()));
    // The location is printed in front; the text keeps only the other position
    // libyaml names (where the enclosing mapping or quote began).
    let mut problem = err
        .to_string()
        .replacen(&format!(" at line {line} column {column}"), "", 1);
    let tab = src
        .lines()
        .nth(line.saturating_sub(1))
        .and_then(|l| l.chars().nth(column.saturating_sub(1)))
        == Some('\t');
    if tab {
        problem.push_str(" (a tab: YAML indents with spaces only)");
    }
    let location = Location {
        line,
        column,
        key: None,
    };
    Err(ConfigError::invalid(
        file,
        location,
        format!("YAML syntax error: {problem}"),
    ))
}

/// Turns a serde_yaml_ng error into one with a location and a key.
pub fn yaml_error(file: &Path, src: &str, path: String, err: &serde_yaml_ng::Error) -> ConfigError {
    let full = err.to_string();
    let mut message = match full.rfind(" at line ") {
        Some(i) => full[..i].to_owned(),
        None => full.clone(),
    };
    // serde_path_to_error writes `?` for a segment it could not name: the key ends
    // before it, rather than naming a key no file has.
    let known: Vec<&str> = path
        .split('.')
        .take_while(|segment| *segment != "?" && !segment.is_empty())
        .collect();
    let mut key = (!known.is_empty()).then(|| known.join("."));
    // serde_yaml_ng starts its message with the path the key already names.
    if let Some((prefix, rest)) = message.split_once(": ") {
        let named = key
            .as_deref()
            .is_some_and(|k| k == prefix || k.starts_with(&format!("{prefix}.")));
        if named {
            message = rest.to_owned();
        }
    }
    if let Some(unknown) = backticked_after(&message, "unknown field `") {
        key = Some(match key {
            Some(parent) if parent == unknown || parent.ends_with(&format!(".{unknown}")) => parent,
            Some(parent) => format!("{parent}.{unknown}"),
            None => unknown.clone(),
        });
        message = unknown_key_message(&unknown, &message);
    }
    // The key's own line is the most useful place to point at; serde_yaml_ng's
    // location is used where the key cannot be found (a sequence item, a syntax error).
    let (line, column) = match (key.as_deref().and_then(|k| position_of_path(src, k)), err.location()) {
        (Some(at), _) => at,
        (None, Some(loc)) => (loc.line(), loc.column()),
        (None, None) => (1, 1),
    };
    ConfigError::invalid(file, Location { line, column, key }, message)
}

/// serde's "unknown field `x`, expected one of `a`, `b`" in the words device files
/// use: the nearest valid key first, then every valid key.
fn unknown_key_message(unknown: &str, serde_message: &str) -> String {
    let valid: Vec<&str> = serde_message
        .split_once("expected ")
        .map(|(_, list)| list.split('`').skip(1).step_by(2).collect())
        .unwrap_or_default();
    let hint = did_you_mean(unknown, valid.iter().copied())
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default();
    if valid.is_empty() {
        return format!("unknown key `{unknown}`{hint}; this section has no keys");
    }
    format!("unknown key `{unknown}`{hint}; valid keys here: {}", valid.join(", "))
}

fn backticked_after(message: &str, prefix: &str) -> Option<String> {
    let start = message.find(prefix)? + prefix.len();
    let end = message[start..].find('`')?;
    Some(message[start..start + end].to_owned())
}

/// The 1-based line and column of a dotted key path (`backends.sqlite.path`) in a
/// block-style YAML text: each segment is looked for below the previous one, at a
/// deeper indent. Sequence indices and flow-style mappings are not followed.
pub fn position_of_path(src: &str, path: &str) -> Option<(usize, usize)> {
    let lines: Vec<&str> = src.lines().collect();
    let (mut from, mut min_indent, mut found) = (0usize, 0usize, None);
    for segment in path.split('.') {
        if segment.parse::<usize>().is_ok() {
            return found;
        }
        let hit = lines.iter().enumerate().skip(from).find(|(_, line)| {
            let indent = line.len() - line.trim_start().len();
            indent >= min_indent && super::env::key_of_line(line).as_deref() == Some(segment)
        })?;
        let indent = hit.1.len() - hit.1.trim_start().len();
        found = Some((hit.0 + 1, indent + 1));
        from = hit.0 + 1;
        min_indent = indent + 1;
    }
    found
}

/// The 1-based line on which `key:` first appears.
pub fn line_of_key(src: &str, key: &str) -> Option<usize> {
    src.lines()
        .position(|line| super::env::key_of_line(line).as_deref() == Some(key))
        .map(|i| i + 1)
}

/// The field names of a plain (non-flattened) struct, read off its `Deserialize`
/// impl, so "unknown key" errors can suggest the nearest valid one.
pub fn fields_of<T: DeserializeOwned>() -> &'static [&'static str] {
    struct Probe(Option<&'static [&'static str]>);
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("probe")
        }
    }
    impl std::error::Error for Stop {}
    impl de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> de::Deserializer<'de> for &mut Probe {
        type Error = Stop;
        fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0 = Some(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf
            option unit unit_struct newtype_struct seq tuple tuple_struct map enum identifier ignored_any
        }
    }
    let mut probe = Probe(None);
    let _ = T::deserialize(&mut probe);
    probe.0.unwrap_or(&[])
}

/// The candidate closest to `word` within a small edit distance.
pub fn did_you_mean<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (edit_distance(word, c), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// Config files are small; anything over this is a mistake (a log file dropped
/// into config.d), not something to parse.
const MAX_CONFIG_FILE: u64 = 1024 * 1024;

pub fn read_config_file(file: &Path) -> Result<String, ConfigError> {
    let at_start = Location {
        line: 1,
        column: 1,
        key: None,
    };
    let meta = std::fs::metadata(file).map_err(|source| ConfigError::Io {
        file: file.to_path_buf(),
        source,
    })?;
    if meta.len() > MAX_CONFIG_FILE {
        return Err(ConfigError::invalid(
            file,
            at_start,
            format!("the file is {} bytes; config files are limited to 1 MiB", meta.len()),
        ));
    }
    let bytes = std::fs::read(file).map_err(|source| ConfigError::Io {
        file: file.to_path_buf(),
        source,
    })?;
    String::from_utf8(bytes).map_err(|e| {
        let before = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = before.iter().filter(|&&b| b == b'\n').count() + 1;
        ConfigError::invalid(
            file,
            Location {
                line,
                column: 1,
                key: None,
            },
            "the file is not valid UTF-8",
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        flush_interval: u32,
    }

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        inner: Inner,
    }

    #[test]
    fn type_error_has_line_column_and_key_path() {
        let src = "name: x\ninner:\n  flush_interval: soon\n";
        let err = parse_typed::<Outer>(Path::new("c.yaml"), src).unwrap_err();
        let ConfigError::Invalid { location, message, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(
            (location.line, location.key.as_deref()),
            (3, Some("inner.flush_interval"))
        );
        assert!(message.contains("invalid type"), "{message}");
    }

    #[test]
    fn unknown_nested_key_is_named() {
        let src = "name: x\ninner:\n  flush_interval: 3\n  flush_intervall: 4\n";
        let err = parse_typed::<Outer>(Path::new("c.yaml"), src).unwrap_err();
        let ConfigError::Invalid { location, .. } = &err else {
            panic!("{err}")
        };
        assert_eq!(location.line, 4);
        assert_eq!(location.key.as_deref(), Some("inner.flush_intervall"));
    }

    #[test]
    fn ignored_keys_are_reported() {
        let src = "name: x\nextra: 1\ninner:\n  flush_interval: 3\n";
        let (_, ignored) = parse_typed::<Outer>(Path::new("c.yaml"), src).unwrap();
        assert_eq!(ignored, vec!["extra".to_string()]);
    }

    #[test]
    fn probes_field_names_and_suggests() {
        assert_eq!(fields_of::<Outer>(), &["name", "inner"]);
        assert_eq!(
            did_you_mean("pol_interval", ["poll_interval", "enabled"]),
            Some("poll_interval")
        );
        assert_eq!(did_you_mean("zzz", ["poll_interval", "enabled"]), None);
    }
}
