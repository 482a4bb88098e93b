//! A point's `unit:` as people type it: the canonical symbols and a few common
//! spellings (`C`, `m3`, `VAr`), with the list of known units when it is neither.

use serde::{Deserialize, Deserializer, Serializer};

use crate::reading::Unit;

/// Units written the way people type them, besides the canonical symbols.
const UNIT_ALIASES: &[(&str, Unit)] = &[
    ("C", Unit::Celsius),
    ("degC", Unit::Celsius),
    ("m3", Unit::CubicMetre),
    ("VAr", Unit::Var),
    ("kVArh", Unit::KiloVarHour),
    ("none", Unit::None),
];

pub(super) fn deserialize<'de, D: Deserializer<'de>>(de: D) -> Result<Unit, D::Error> {
    let text = String::deserialize(de)?;
    Unit::from_symbol(&text)
        .or_else(|| UNIT_ALIASES.iter().find(|(a, _)| *a == text).map(|(_, u)| *u))
        .ok_or_else(|| {
            let known: Vec<&str> = Unit::ALL.iter().map(|u| u.symbol()).filter(|s| !s.is_empty()).collect();
            serde::de::Error::custom(format!(
                "unknown unit `{text}`; known units: {} (stored values use these units: scale \
                 Wh to kWh with `scale: 0.001`)",
                known.join(", ")
            ))
        })
}

pub(super) fn serialize<S: Serializer>(unit: &Unit, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(unit.symbol())
}
