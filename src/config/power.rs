//! Powers in config files are written with their unit (`2.5 kW`, `2500 W`), stored
//! in W.

use serde::{Deserialize, Deserializer, Serializer};

pub fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<f64, D::Error> {
    let text = String::deserialize(de)?;
    parse(&text).map_err(serde::de::Error::custom)
}

/// Parses `2.5 kW`, `2.5kW` or `2500 W` into W. A bare number is refused: a reader
/// cannot tell whether `2.5` meant kW or W.
pub fn parse(text: &str) -> Result<f64, String> {
    let trimmed = text.trim();
    let split = trimmed
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(trimmed.len());
    let (number, unit) = trimmed.split_at(split);
    let scale = match unit.trim() {
        "W" => 1.0,
        "kW" => 1000.0,
        "" => {
            return Err(format!(
                "`{trimmed}` has no unit: write e.g. `{trimmed} kW` or `{trimmed} W`"
            ))
        }
        other => {
            return Err(format!(
                "`{other}` is not a unit of power: write W or kW (e.g. `2.5 kW`)"
            ))
        }
    };
    match number.parse::<f64>() {
        Ok(n) if n.is_finite() => Ok(n * scale),
        _ => Err(format!("`{trimmed}` is not a power: write e.g. `2.5 kW` or `2500 W`")),
    }
}

pub fn serialize<S: Serializer>(watts: &f64, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&format!("{watts} W"))
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn powers_are_written_with_their_unit() {
        assert_eq!(parse("2.5 kW"), Ok(2500.0));
        assert_eq!(parse("2.5kW"), Ok(2500.0));
        assert_eq!(parse(" 2500 W "), Ok(2500.0));
        assert_eq!(parse("0 W"), Ok(0.0));
        assert!(parse("2.5").unwrap_err().contains("no unit"));
        assert!(parse("2.5 MW").unwrap_err().contains("not a unit of power"));
        assert!(parse("-1 kW").is_err());
        assert!(parse("1.2.3 kW").is_err());
    }
}
