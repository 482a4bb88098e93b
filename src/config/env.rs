//! `${VAR}` interpolation in config files and `MESURA_*` overrides of the base config.
//!
//! Interpolation is textual and happens before YAML parsing, line by line, so the
//! line numbers in later errors still match the file. `${VAR:-default}` gives a
//! default, `$${` writes a literal `${`. Text after a `#` comment marker is left alone.

use std::path::Path;

use super::error::{ConfigError, Location};

/// Replaces `${VAR}` from `lookup`. An unset variable without a default is an error
/// naming the file, line, column and the key on that line.
pub fn interpolate(file: &Path, src: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, ConfigError> {
    let mut out = String::with_capacity(src.len());
    for (index, line) in src.split_inclusive('\n').enumerate() {
        let comment_at = comment_start(line);
        let mut rest = line;
        let mut col = 0usize;
        while let Some(pos) = rest.find('$') {
            let absolute = col + pos;
            if comment_at.is_some_and(|c| absolute >= c) {
                break;
            }
            out.push_str(&rest[..pos]);
            let after = &rest[pos..];
            if let Some(tail) = after.strip_prefix("$${") {
                out.push_str("${");
                rest = tail;
                col = absolute + 3;
                continue;
            }
            let Some(body) = after.strip_prefix("${") else {
                out.push('$');
                rest = &after[1..];
                col = absolute + 1;
                continue;
            };
            let location = Location {
                line: index + 1,
                column: absolute + 1,
                key: key_of_line(line),
            };
            let Some(end) = body.find('}') else {
                return Err(ConfigError::invalid(file, location, "unterminated `${`"));
            };
            let expr = &body[..end];
            let (name, default) = match expr.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (expr, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(ConfigError::invalid(
                    file,
                    location,
                    format!("invalid variable name in `${{{expr}}}`"),
                ));
            }
            match lookup(name).or_else(|| default.map(str::to_owned)) {
                Some(value) => out.push_str(&value),
                None => {
                    return Err(ConfigError::invalid(
                        file,
                        location,
                        format!("environment variable {name} is not set (set it, put it in .env, or write `${{{name}:-default}}`)"),
                    ))
                }
            }
            rest = &body[end + 1..];
            col = absolute + 2 + end + 1;
        }
        out.push_str(rest);
    }
    Ok(out)
}

/// Byte offset of a YAML comment on this line (`#` at the start or after a blank),
/// ignoring quotes: good enough to keep `${` in comments from being expanded.
fn comment_start(line: &str) -> Option<usize> {
    let bytes = line.as_bytes();
    (0..bytes.len()).find(|&i| bytes[i] == b'#' && (i == 0 || bytes[i - 1].is_ascii_whitespace()))
}

/// The key of a `key: value` line, for error messages.
pub fn key_of_line(line: &str) -> Option<String> {
    let trimmed = line.trim_start().trim_start_matches("- ");
    let (key, _) = trimmed.split_once(':')?;
    let key = key.trim().trim_matches(|c| c == '"' || c == '\'');
    (!key.is_empty() && !key.contains(' ')).then(|| key.to_owned())
}

/// `MESURA_*` variables as override paths: `MESURA_DATA_DIR` → `data_dir`,
/// `MESURA_LOGGING__LEVEL` → `logging.level`, `MESURA_BACKENDS__SQLITE__FLUSH_INTERVAL`
/// → `backends.sqlite.flush_interval` (double underscore nests, names lower-cased).
pub fn overrides(vars: impl Iterator<Item = (String, String)>) -> Vec<(String, Vec<String>, String)> {
    let mut found: Vec<_> = vars
        .filter_map(|(name, value)| {
            let rest = name.strip_prefix("MESURA_")?;
            // MESURA_CONFIG names the config file (`--config`), it is no key in it.
            if rest.is_empty() || rest == "CONFIG" {
                return None;
            }
            let path = rest.split("__").map(|p| p.to_ascii_lowercase()).collect();
            Some((name, path, value))
        })
        .collect();
    found.sort();
    found
}

/// Applies one override to a parsed YAML tree, creating mappings on the way.
/// The value is parsed as a YAML scalar, so `true`, `5s` and `42` mean what they
/// would in the file.
pub fn apply_override(
    root: &mut serde_yaml_ng::Value,
    var: &str,
    path: &[String],
    raw: &str,
) -> Result<(), ConfigError> {
    use serde_yaml_ng::Value;
    let value: Value = serde_yaml_ng::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()));
    let mut node = root;
    for (i, key) in path.iter().enumerate() {
        if node.is_null() {
            *node = Value::Mapping(Default::default());
        }
        let Value::Mapping(map) = node else {
            return Err(ConfigError::Env {
                var: var.to_owned(),
                message: format!("`{}` is not a mapping", path[..i].join(".")),
            });
        };
        let slot = map.entry(Value::String(key.clone())).or_insert(Value::Null);
        node = slot;
    }
    *node = value;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "TOKEN" => Some("s3cret".into()),
            "PORT" => Some("1883".into()),
            _ => None,
        }
    }

    #[test]
    fn replaces_variables_and_defaults() {
        let src = "token: ${TOKEN}\nport: ${PORT}\nhost: ${HOST:-localhost}\nliteral: $${NOPE}\nprice: 5$\n";
        let out = interpolate(Path::new("a.yaml"), src, &env).unwrap();
        assert_eq!(
            out,
            "token: s3cret\nport: 1883\nhost: localhost\nliteral: ${NOPE}\nprice: 5$\n"
        );
    }

    #[test]
    fn leaves_comments_alone() {
        let src = "a: 1 # set ${MISSING} here\n# ${ALSO_MISSING}\n";
        assert_eq!(interpolate(Path::new("a.yaml"), src, &env).unwrap(), src);
    }

    #[test]
    fn unset_variable_names_file_line_and_key() {
        let src = "type: mqtt\n  password: ${MQTT_PASSWORD}\n";
        let err = interpolate(Path::new("conf/x.yaml"), src, &env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("conf/x.yaml:line 2 column 13: key `password`"), "{err}");
        assert!(err.contains("MQTT_PASSWORD is not set"), "{err}");
    }

    #[test]
    fn overrides_map_to_paths() {
        let vars = vec![
            ("MESURA_DATA_DIR".to_string(), "/var/lib/mesura".to_string()),
            ("MESURA_LOGGING__LEVEL".to_string(), "debug".to_string()),
            ("OTHER".to_string(), "x".to_string()),
            // The config file's own path (`--config`), not a key.
            ("MESURA_CONFIG".to_string(), "/etc/mesura/config.yaml".to_string()),
        ];
        let found = overrides(vars.into_iter());
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].1, vec!["data_dir"]);
        assert_eq!(found[1].1, vec!["logging", "level"]);
        let mut root: serde_yaml_ng::Value = serde_yaml_ng::from_str("logging:\n  format: json\n").unwrap();
        for (var, path, value) in &found {
            apply_override(&mut root, var, path, value).unwrap();
        }
        assert_eq!(root["logging"]["level"].as_str(), Some("debug"));
        assert_eq!(root["logging"]["format"].as_str(), Some("json"));
        assert_eq!(root["data_dir"].as_str(), Some("/var/lib/mesura"));
    }
}
