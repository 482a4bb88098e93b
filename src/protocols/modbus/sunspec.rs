//! SunSpec: a self-describing register layout used by most solar inverters. A
//! device has the marker `SunS` at one of three base addresses (holding
//! registers), followed by a chain of models, each `ID, L, body[L]`, ended by
//! ID 0xFFFF. Model 1 (common) names the device; models 101/102/103 (single,
//! split and three phase inverters, one layout) carry the measurements, each
//! with a scale-factor register: value = raw · 10^sf.
//!
//! Offsets and types are from the SunSpec model definitions (model_1.json,
//! model_101.json, model_103.json of the SunSpec models repository, copied under
//! tests/fixtures/modbus/). Pure: the monitor reads, this module interprets.

use super::point::decode_string;

/// "SunS" as two registers.
pub const MARKER: [u16; 2] = [0x5375, 0x6E53];
/// Where the marker may be, in the order the specification says to try them.
pub const BASE_ADDRESSES: [u16; 3] = [40000, 0, 50000];
/// The model ID that ends the chain.
pub const END: u16 = 0xFFFF;
/// The common model.
pub const COMMON: u16 = 1;
/// Inverter models with the layout of [`INVERTER_POINTS`].
pub const INVERTERS: [u16; 3] = [101, 102, 103];
/// Registers of an inverter model's body that mesura reads (the event
/// bitfields after the state are left out).
pub const INVERTER_BODY: u16 = 38;

/// One model in the chain: its ID, its body's first register and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Model {
    pub id: u16,
    /// Address of the first register after `ID` and `L`.
    pub body: u16,
    pub length: u16,
}

/// What a model header says comes next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Model(Model),
    End,
}

/// Interprets the two header registers at `address`. `None` when the chain runs
/// past the address space (a corrupt length).
pub fn header(address: u16, id: u16, length: u16) -> Option<Step> {
    if id == END {
        return Some(Step::End);
    }
    let body = address.checked_add(2)?;
    // The next header must still be addressable.
    body.checked_add(length)?;
    Some(Step::Model(Model { id, body, length }))
}

impl Model {
    /// The address of the next model's header.
    pub fn next(&self) -> Option<u16> {
        self.body.checked_add(self.length)
    }
}

/// Model 1: who made the device.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Common {
    pub manufacturer: String,
    pub model: String,
    pub options: String,
    pub version: String,
    pub serial: String,
}

/// Decodes model 1's body (at least the 64 registers up to the serial number).
pub fn common(body: &[u16]) -> Option<Common> {
    let text = |from: usize, len: usize| body.get(from..from + len).map(decode_string);
    Some(Common {
        manufacturer: text(0, 16)?,
        model: text(16, 16)?,
        options: text(32, 8)?,
        version: text(40, 8)?,
        serial: text(48, 16)?,
    })
}

/// A SunSpec point type, as far as the inverter models need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SunType {
    Uint16,
    Int16,
    Acc32,
    Enum16,
}

/// One point of an inverter model.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SunPoint {
    /// The SunSpec point name.
    pub sunspec: &'static str,
    /// The metric it is stored as.
    pub metric: &'static str,
    /// Register offset in the model body (after ID and L).
    pub offset: u16,
    pub kind: SunType,
    /// Offset of its scale-factor register, if it has one.
    pub sf: Option<u16>,
    /// The point's units as the SunSpec model names them ("A", "V", "W", "Hz",
    /// "VA", "var", "Pct", "Wh", "C"; empty for an enum). The monitor maps them to
    /// the stored unit.
    pub units: &'static str,
    pub description: &'static str,
}

const fn p(
    sunspec: &'static str,
    metric: &'static str,
    offset: u16,
    kind: SunType,
    sf: u16,
    units: &'static str,
    description: &'static str,
) -> SunPoint {
    SunPoint {
        sunspec,
        metric,
        offset,
        kind,
        sf: Some(sf),
        units,
        description,
    }
}

use SunType::{Int16, Uint16};
/// Models 101, 102 and 103 share this layout (offsets in the body).
pub const INVERTER_POINTS: &[SunPoint] = &[
    p("A", "current_ac", 0, Uint16, 4, "A", "AC current, all phases"),
    p("AphA", "current_ac_l1", 1, Uint16, 4, "A", "AC current, phase A"),
    p("AphB", "current_ac_l2", 2, Uint16, 4, "A", "AC current, phase B"),
    p("AphC", "current_ac_l3", 3, Uint16, 4, "A", "AC current, phase C"),
    p(
        "PPVphAB",
        "voltage_l1_l2",
        5,
        Uint16,
        11,
        "V",
        "voltage between phases A and B",
    ),
    p(
        "PPVphBC",
        "voltage_l2_l3",
        6,
        Uint16,
        11,
        "V",
        "voltage between phases B and C",
    ),
    p(
        "PPVphCA",
        "voltage_l3_l1",
        7,
        Uint16,
        11,
        "V",
        "voltage between phases C and A",
    ),
    p(
        "PhVphA",
        "voltage_l1",
        8,
        Uint16,
        11,
        "V",
        "voltage of phase A to neutral",
    ),
    p(
        "PhVphB",
        "voltage_l2",
        9,
        Uint16,
        11,
        "V",
        "voltage of phase B to neutral",
    ),
    p(
        "PhVphC",
        "voltage_l3",
        10,
        Uint16,
        11,
        "V",
        "voltage of phase C to neutral",
    ),
    p("W", "power_ac", 12, Int16, 13, "W", "AC power"),
    p("Hz", "frequency", 14, Uint16, 15, "Hz", "line frequency"),
    p("VA", "apparent_power", 16, Int16, 17, "VA", "AC apparent power"),
    p("VAr", "reactive_power", 18, Int16, 19, "var", "AC reactive power"),
    p("PF", "power_factor", 20, Int16, 21, "Pct", "power factor"),
    SunPoint {
        sunspec: "WH",
        metric: "energy_ac",
        offset: 22,
        kind: SunType::Acc32,
        sf: Some(24),
        units: "Wh",
        description: "AC energy produced",
    },
    p("DCA", "current_dc", 25, Uint16, 26, "A", "DC current"),
    p("DCV", "voltage_dc", 27, Uint16, 28, "V", "DC voltage"),
    p("DCW", "power_dc", 29, Int16, 30, "W", "DC power"),
    p(
        "TmpCab",
        "temperature_cabinet",
        31,
        Int16,
        35,
        "C",
        "cabinet temperature",
    ),
    p(
        "TmpSnk",
        "temperature_heatsink",
        32,
        Int16,
        35,
        "C",
        "heat sink temperature",
    ),
    p(
        "TmpTrns",
        "temperature_transformer",
        33,
        Int16,
        35,
        "C",
        "transformer temperature",
    ),
    p("TmpOt", "temperature_other", 34, Int16, 35, "C", "other temperature"),
    SunPoint {
        sunspec: "St",
        metric: "operating_state",
        offset: 36,
        kind: SunType::Enum16,
        sf: None,
        units: "",
        description:
            "operating state (1 off, 2 sleeping, 3 starting, 4 MPPT, 5 throttled, 6 shutting down, 7 fault, 8 standby)",
    },
];

/// A raw value, or `None` when it is the type's "not implemented" value.
fn raw(kind: SunType, words: &[u16]) -> Option<f64> {
    match (kind, words) {
        (SunType::Uint16 | SunType::Enum16, [w, ..]) => (*w != 0xFFFF).then_some(f64::from(*w)),
        (SunType::Int16, [w, ..]) => (*w != 0x8000).then_some(f64::from(*w as i16)),
        // An accumulator that is not implemented reads 0.
        (SunType::Acc32, [hi, lo, ..]) => {
            let v = (u32::from(*hi) << 16) | u32::from(*lo);
            (v != 0).then_some(f64::from(v))
        }
        _ => None,
    }
}

/// A scale factor register: a power of ten between −10 and 10, or `None` when
/// it is not implemented (0x8000) or out of range.
pub fn scale_factor(word: u16) -> Option<i32> {
    let sf = i32::from(word as i16);
    (-10..=10).contains(&sf).then_some(sf)
}

/// `raw · 10^sf`. A negative factor divides, so 2301 · 10^−1 is exactly the
/// nearest double to 230.1 (multiplying by 0.1 would be off by one ulp).
pub fn apply_scale_factor(raw: f64, sf: i32) -> f64 {
    if sf < 0 {
        raw / 10f64.powi(-sf)
    } else {
        raw * 10f64.powi(sf)
    }
}

/// One inverter value, scaled, in the point's SunSpec units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Value {
    pub point: &'static SunPoint,
    pub value: f64,
}

/// Decodes an inverter model's body. Points that are not implemented, or whose
/// scale factor is not, are left out: a single-phase inverter has no phase B.
pub fn inverter(body: &[u16]) -> Vec<Value> {
    INVERTER_POINTS
        .iter()
        .filter_map(|point| {
            let start = usize::from(point.offset);
            let words = body.get(start..)?;
            let raw = raw(point.kind, words)?;
            let scaled = match point.sf {
                Some(sf) => apply_scale_factor(raw, scale_factor(*body.get(usize::from(sf))?)?),
                None => raw,
            };
            Some(Value { point, value: scaled })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_and_the_end_marker() {
        assert_eq!(
            header(40002, 1, 66),
            Some(Step::Model(Model {
                id: 1,
                body: 40004,
                length: 66
            }))
        );
        assert_eq!(header(40136, END, 0), Some(Step::End));
        assert_eq!(header(65530, 103, 50), None);
        let m = Model {
            id: 1,
            body: 40004,
            length: 66,
        };
        assert_eq!(m.next(), Some(40070));
    }

    #[test]
    fn scale_factors() {
        assert_eq!(scale_factor(0xFFFE), Some(-2));
        assert_eq!(scale_factor(3), Some(3));
        assert_eq!(scale_factor(0x8000), None);
        assert_eq!(scale_factor(11), None);
    }

    #[test]
    fn inverter_values_are_scaled_and_sentinels_skipped() {
        let mut body = vec![0u16; 50];
        body[0] = 1234; // A, sf -2 → 12.34 A
        body[1] = 0xFFFF; // AphA not implemented
        body[4] = (-2i16) as u16;
        body[8] = 2301; // PhVphA, sf -1
        body[11] = (-1i16) as u16;
        body[12] = (-500i16) as u16; // W, sf 0
        body[13] = 0;
        body[14] = 5000; // Hz, sf not implemented → skipped
        body[15] = 0x8000;
        body[16] = 0x8000; // VA not implemented
        body[22] = 0x0001; // WH = 65536 + 2 Wh, sf 1 → 655 380 Wh
        body[23] = 0x0002;
        body[24] = 1;
        body[31] = 0x8000; // TmpCab not implemented
        body[32] = 455; // TmpSnk, sf -1
        body[35] = (-1i16) as u16;
        body[36] = 4; // MPPT
        let values = inverter(&body);
        let get = |m: &str| values.iter().find(|v| v.point.metric == m).map(|v| v.value);
        assert_eq!(get("current_ac"), Some(12.34));
        assert_eq!(get("current_ac_l1"), None);
        assert_eq!(get("voltage_l1"), Some(230.1));
        assert_eq!(get("power_ac"), Some(-500.0));
        assert_eq!(get("frequency"), None);
        assert_eq!(get("apparent_power"), None);
        assert_eq!(get("energy_ac"), Some(655_380.0));
        assert_eq!(get("temperature_cabinet"), None);
        assert_eq!(get("temperature_heatsink"), Some(45.5));
        assert_eq!(get("operating_state"), Some(4.0));
        // Zero accumulators mean "not accumulated".
        body[22] = 0;
        body[23] = 0;
        assert_eq!(inverter(&body).iter().find(|v| v.point.metric == "energy_ac"), None);
        // A short body yields what it has, never panics.
        assert_eq!(inverter(&body[..3]).len(), 0);
    }

    #[test]
    fn every_point_is_inside_the_read_body() {
        for p in INVERTER_POINTS {
            let width = if p.kind == SunType::Acc32 { 2 } else { 1 };
            assert!(p.offset + width <= INVERTER_BODY, "{}", p.sunspec);
            assert!(p.sf.is_none_or(|sf| sf < INVERTER_BODY), "{}", p.sunspec);
        }
    }
}
