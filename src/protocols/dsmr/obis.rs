//! OBIS reduced-ID parsing and the OBIS → canonical metric table.
//!
//! The human-readable version of the table lives in the module documentation
//! (`super`) and in `METRICS.md`; keep the three in sync.

use std::fmt;

/// An OBIS code `A-B:C.D.E` (the F group, when present, has been validated and dropped).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Obis {
    pub a: u8,
    pub b: u8,
    pub c: u8,
    pub d: u8,
    pub e: u8,
}

impl Obis {
    /// `true` when `(C, D, E)` equals the given triple.
    pub fn cde(&self, c: u8, d: u8, e: u8) -> bool {
        self.c == c && self.d == d && self.e == e
    }
}

impl fmt::Display for Obis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}:{}.{}.{}", self.a, self.b, self.c, self.d, self.e)
    }
}

/// Parses an OBIS identifier as written in a P1 line.
///
/// Accepted forms (all seen in the field):
/// * `A-B:C.D.E` (DSMR), with `:` tolerated instead of `.` between C, D and E
///   (the DSMR 4.0 spec example writes `1-0:72:32.0` and `1-0:99:97.0`);
/// * an F group as `.F` (`1-0:31.7.0.255`, DSMR 4.2.2 example) or `*F`
///   (`1-0:1.8.0*255`, EasyMeter Q3D / IEC 62056-21);
/// * the IEC 62056-21 reduced form `C.D.E[*F]` without `A-B:` (A is taken as 1 for
///   electrical quantities C = 1..=89, else 0; B = 0).
///
/// An F group other than 255 (e.g. `1.8.1*01`, the value of a previous billing
/// period in IEC 62056-21) is *not* a current value: such codes return `None` and
/// end up in `unknown`.
pub(super) fn parse_obis(id: &str) -> Option<Obis> {
    // Fixed arrays, not Vecs: this runs for every line of every telegram.
    let mut nums = [0u8; 6];
    let mut seps = [0u8; 5];
    let (mut n_nums, mut n_seps) = (0usize, 0usize);
    let mut cur: Option<u32> = None;
    for &b in id.trim_ascii().as_bytes() {
        if b.is_ascii_digit() {
            let v = cur.unwrap_or(0) * 10 + u32::from(b - b'0');
            if v > 255 {
                return None;
            }
            cur = Some(v);
        } else {
            *nums.get_mut(n_nums)? = u8::try_from(cur.take()?).ok()?;
            n_nums += 1;
            *seps.get_mut(n_seps)? = b;
            n_seps += 1;
        }
    }
    *nums.get_mut(n_nums)? = u8::try_from(cur?).ok()?;
    n_nums += 1;
    let (nums, seps) = (nums.get(..n_nums)?, seps.get(..n_seps)?);
    let cd_sep = |s: u8| s == b'.' || s == b':';
    let f_sep = |s: u8| s == b'.' || s == b'*';
    let f_ok = |f: Option<&u8>| f.is_none_or(|&f| f == 255);
    match (seps, nums) {
        ([b'-', b':', s1, s2, rest @ ..], [a, b, c, d, e, f @ ..])
            if cd_sep(*s1) && cd_sep(*s2) && rest.len() <= 1 && rest.iter().all(|&s| f_sep(s)) =>
        {
            f_ok(f.first()).then_some(Obis {
                a: *a,
                b: *b,
                c: *c,
                d: *d,
                e: *e,
            })
        }
        ([b'.', b'.', rest @ ..], [c, d, e, f @ ..]) if rest.len() <= 1 && rest.iter().all(|&s| s == b'*') => {
            let a = if (1..=89).contains(c) { 1 } else { 0 };
            f_ok(f.first()).then_some(Obis {
                a,
                b: 0,
                c: *c,
                d: *d,
                e: *e,
            })
        }
        _ => None,
    }
}

/// Physical quantity of a metric; decides the canonical unit and accepted units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Quantity {
    /// kWh
    ActiveEnergy,
    /// kvarh
    ReactiveEnergy,
    /// W
    ActivePower,
    /// var
    ReactivePower,
    /// VA
    ApparentPower,
    /// V
    Voltage,
    /// A
    Current,
    /// Hz
    Frequency,
    /// no unit (tariff, counts, power factor)
    Dimensionless,
    /// m3 (gas, water)
    Volume,
    /// GJ (heat, cooling)
    HeatEnergy,
}

/// One row of the electricity / meter-level table.
#[derive(Debug, Clone, Copy)]
pub(super) struct MetricDef {
    pub name: &'static str,
    pub quantity: Quantity,
    pub counter: bool,
    /// What a time group beside the value means.
    pub time: TimeGroup,
}

/// A time group sent beside a value, before or after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum TimeGroup {
    /// None is expected: an object with two groups is not this metric's.
    No,
    /// When the value happened (`1-0:1.6.0`, the month's peak): the value's time.
    Own,
    /// Accepted and not used: the value is the telegram's (`1-0:1.4.0`, the running
    /// quarter hour, should a meter add the quarter's start).
    Ignored,
}

const fn m(name: &'static str, quantity: Quantity, counter: bool) -> MetricDef {
    MetricDef {
        name,
        quantity,
        counter,
        time: TimeGroup::No,
    }
}

use Quantity::*;

/// Electricity objects, A = 1 and B ∈ {0, 1}, keyed by (C, D, E).
const ELECTRICITY: &[((u8, u8, u8), MetricDef)] = &[
    ((1, 8, 0), m("energy_delivered_total", ActiveEnergy, true)),
    ((2, 8, 0), m("energy_returned_total", ActiveEnergy, true)),
    ((3, 8, 0), m("reactive_energy_delivered_total", ReactiveEnergy, true)),
    ((4, 8, 0), m("reactive_energy_returned_total", ReactiveEnergy, true)),
    ((1, 7, 0), m("power_delivered", ActivePower, false)),
    ((2, 7, 0), m("power_returned", ActivePower, false)),
    ((21, 7, 0), m("power_delivered_l1", ActivePower, false)),
    ((41, 7, 0), m("power_delivered_l2", ActivePower, false)),
    ((61, 7, 0), m("power_delivered_l3", ActivePower, false)),
    ((22, 7, 0), m("power_returned_l1", ActivePower, false)),
    ((42, 7, 0), m("power_returned_l2", ActivePower, false)),
    ((62, 7, 0), m("power_returned_l3", ActivePower, false)),
    ((3, 7, 0), m("reactive_power_delivered", ReactivePower, false)),
    ((4, 7, 0), m("reactive_power_returned", ReactivePower, false)),
    ((23, 7, 0), m("reactive_power_delivered_l1", ReactivePower, false)),
    ((43, 7, 0), m("reactive_power_delivered_l2", ReactivePower, false)),
    ((63, 7, 0), m("reactive_power_delivered_l3", ReactivePower, false)),
    ((24, 7, 0), m("reactive_power_returned_l1", ReactivePower, false)),
    ((44, 7, 0), m("reactive_power_returned_l2", ReactivePower, false)),
    ((64, 7, 0), m("reactive_power_returned_l3", ReactivePower, false)),
    ((9, 7, 0), m("apparent_power_delivered", ApparentPower, false)),
    ((10, 7, 0), m("apparent_power_returned", ApparentPower, false)),
    ((32, 7, 0), m("voltage_l1", Voltage, false)),
    ((52, 7, 0), m("voltage_l2", Voltage, false)),
    ((72, 7, 0), m("voltage_l3", Voltage, false)),
    ((31, 7, 0), m("current_l1", Current, false)),
    ((51, 7, 0), m("current_l2", Current, false)),
    ((71, 7, 0), m("current_l3", Current, false)),
    ((91, 7, 0), m("current_neutral", Current, false)),
    ((13, 7, 0), m("power_factor", Dimensionless, false)),
    ((33, 7, 0), m("power_factor_l1", Dimensionless, false)),
    ((53, 7, 0), m("power_factor_l2", Dimensionless, false)),
    ((73, 7, 0), m("power_factor_l3", Dimensionless, false)),
    ((14, 7, 0), m("frequency", Frequency, false)),
    ((32, 32, 0), m("voltage_sags_l1", Dimensionless, true)),
    ((52, 32, 0), m("voltage_sags_l2", Dimensionless, true)),
    ((72, 32, 0), m("voltage_sags_l3", Dimensionless, true)),
    ((32, 36, 0), m("voltage_swells_l1", Dimensionless, true)),
    ((52, 36, 0), m("voltage_swells_l2", Dimensionless, true)),
    ((72, 36, 0), m("voltage_swells_l3", Dimensionless, true)),
    (
        (1, 4, 0),
        MetricDef {
            name: "peak_demand_current_quarter",
            quantity: ActivePower,
            counter: false,
            time: TimeGroup::Ignored,
        },
    ),
    (
        (1, 6, 0),
        MetricDef {
            name: "peak_demand_month",
            quantity: ActivePower,
            counter: false,
            time: TimeGroup::Own,
        },
    ),
];

/// Meter-level abstract objects, A = 0 and B = 0, keyed by (C, D, E).
const ABSTRACT: &[((u8, u8, u8), MetricDef)] = &[
    ((96, 14, 0), m("tariff", Dimensionless, false)),
    ((96, 7, 21), m("power_failures", Dimensionless, true)),
    ((96, 7, 9), m("long_power_failures", Dimensionless, true)),
];

/// Looks up the canonical metric for a meter-level (non M-Bus) OBIS code.
///
/// E = 255 ("not used") is read as E = 0: EasyMeter Q3D/Q3A firmware writes the
/// instantaneous values as `1-0:1.7.255*255`, `1-0:21.7.255*255` ….
#[cfg(test)]
pub(crate) fn lookup(o: &Obis) -> Option<&'static MetricDef> {
    lookup_index(o).map(|(_, def)| def)
}

/// [`lookup`] with a number unique to the metric (below [`METRIC_COUNT`]), so the
/// decoder can remember which metrics it has seen in a bit set.
pub(super) fn lookup_index(o: &Obis) -> Option<(usize, &'static MetricDef)> {
    let (table, index, offset) = match (o.a, o.b) {
        (1, 0 | 1) => (ELECTRICITY, &ELECTRICITY_BY_CD, 0),
        (0, 0) => (ABSTRACT, &ABSTRACT_BY_CD, ELECTRICITY.len()),
        _ => return None,
    };
    let e = if o.e == 255 { 0 } else { o.e };
    // The first row with this C and D, then the (at most five) rows after it that
    // share them: a table lookup per line of every telegram instead of a scan.
    let first = usize::from(*index.get(usize::from(o.c))?.get(slot_of_d(o.d)?)?);
    let rows = table.get(first.checked_sub(1)?..)?;
    let i = rows
        .iter()
        .take_while(|((c, d, _), _)| (*c, *d) == (o.c, o.d))
        .position(|((_, _, row_e), _)| *row_e == e)?;
    Some((offset + first - 1 + i, &rows.get(i)?.1))
}

/// The D groups metrics use, each with a slot in the index (checked by a test).
const fn d_slot(d: u8) -> Option<usize> {
    match d {
        4 => Some(0),
        6 => Some(1),
        7 => Some(2),
        8 => Some(3),
        14 => Some(4),
        32 => Some(5),
        36 => Some(6),
        _ => None,
    }
}

/// [`d_slot`] as a table, for the lookup: the `match` compiled to a jump table,
/// an indirect branch on every line.
const D_SLOTS: [u8; 64] = {
    let mut slots = [u8::MAX; 64];
    let mut d = 0;
    while d < 64 {
        if let Some(slot) = d_slot(d as u8) {
            slots[d] = slot as u8;
        }
        d += 1;
    }
    slots
};

fn slot_of_d(d: u8) -> Option<usize> {
    D_SLOTS
        .get(usize::from(d))
        .filter(|&&slot| slot != u8::MAX)
        .map(|&slot| usize::from(slot))
}

type CdIndex = [[u8; 7]; 128];

/// For each (C, D slot): 1 + the table row where that C and D first appear, 0 if
/// none. Built at compile time; rows sharing C and D are adjacent in the tables
/// (checked by a test).
const fn index_by_cd(table: &[((u8, u8, u8), MetricDef)]) -> CdIndex {
    let mut index = [[0u8; 7]; 128];
    let mut row = table.len();
    // Backwards, so the first row of a run wins.
    while row > 0 {
        row -= 1;
        let (c, d, _) = table[row].0;
        if let Some(slot) = d_slot(d) {
            if (c as usize) < 128 {
                index[c as usize][slot] = (row + 1) as u8;
            }
        }
    }
    index
}

const ELECTRICITY_BY_CD: CdIndex = index_by_cd(ELECTRICITY);
const ABSTRACT_BY_CD: CdIndex = index_by_cd(ABSTRACT);

/// Number of meter-level metrics (electricity and abstract tables together).
pub(super) const METRIC_COUNT: usize = ELECTRICITY.len() + ABSTRACT.len();

/// A tariff register `1-0:C.8.E`: energy per tariff E (1 to 63, IEC 62056-61) of
/// import (C = 1), export (2), reactive import (3) or reactive export (4). One
/// rule for every tariff, not a table row each: Belgian meters send tariffs 1–5
/// since 2026, Israeli ones 11–13, and a metric is named after its tariff number
/// (`energy_delivered_tariff5`) whatever it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct TariffRegister {
    /// 1 import, 2 export, 3 reactive import, 4 reactive export.
    pub direction: u8,
    pub tariff: u8,
}

/// The highest tariff number OBIS gives (E = 1…63).
pub(super) const MAX_TARIFF: u8 = 63;

impl TariffRegister {
    /// The register `o` is, if a tariff register (A = 1, B 0 or 1).
    pub(super) fn of(o: &Obis) -> Option<Self> {
        let tariff = if o.e == 255 { 0 } else { o.e };
        let is = matches!((o.a, o.b, o.c, o.d), (1, 0 | 1, 1..=4, 8)) && (1..=MAX_TARIFF).contains(&tariff);
        is.then_some(TariffRegister { direction: o.c, tariff })
    }

    pub(super) fn quantity(self) -> Quantity {
        match self.direction {
            1 | 2 => ActiveEnergy,
            _ => ReactiveEnergy,
        }
    }

    /// The metric name without its number (`energy_delivered_tariff`).
    pub(super) fn base_name(self) -> &'static str {
        match self.direction {
            1 => "energy_delivered_tariff",
            2 => "energy_returned_tariff",
            3 => "reactive_energy_delivered_tariff",
            _ => "reactive_energy_returned_tariff",
        }
    }

    /// `energy_delivered_tariff5`: borrowed for tariffs 1–9, the ones meters send
    /// in every telegram, so they cost no allocation.
    pub(super) fn metric_name(self) -> std::borrow::Cow<'static, str> {
        macro_rules! numbered {
            ($base:literal) => {
                [
                    concat!($base, "1"),
                    concat!($base, "2"),
                    concat!($base, "3"),
                    concat!($base, "4"),
                    concat!($base, "5"),
                    concat!($base, "6"),
                    concat!($base, "7"),
                    concat!($base, "8"),
                    concat!($base, "9"),
                ]
            };
        }
        const NAMES: [[&str; 9]; 4] = [
            numbered!("energy_delivered_tariff"),
            numbered!("energy_returned_tariff"),
            numbered!("reactive_energy_delivered_tariff"),
            numbered!("reactive_energy_returned_tariff"),
        ];
        let row = usize::from(self.direction.saturating_sub(1));
        let col = usize::from(self.tariff).wrapping_sub(1);
        match NAMES.get(row).and_then(|names| names.get(col)) {
            Some(name) => std::borrow::Cow::Borrowed(name),
            None => std::borrow::Cow::Owned(format!("{}{}", self.base_name(), self.tariff)),
        }
    }

    /// A bit for this register among all of them, to notice a second object for it.
    pub(super) fn bit(self) -> (usize, u64) {
        (
            usize::from(self.direction.saturating_sub(1)),
            1u64 << (self.tariff & 63),
        )
    }
}

/// What an M-Bus device measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MbusKind {
    Gas,
    Water,
    Heat,
    Cooling,
}

impl MbusKind {
    /// Base metric name; the 2nd, 3rd … active device of a kind gets `_2`, `_3` ….
    pub(super) fn base_name(self) -> &'static str {
        match self {
            MbusKind::Gas => "gas_delivered",
            MbusKind::Water => "water_delivered",
            MbusKind::Heat => "heat_delivered",
            MbusKind::Cooling => "cooling_delivered",
        }
    }

    pub(super) fn quantity(self) -> Quantity {
        match self {
            MbusKind::Gas | MbusKind::Water => Volume,
            MbusKind::Heat | MbusKind::Cooling => HeatEnergy,
        }
    }

    /// From the M-Bus device type (EN 13757-3) given on `0-n:24.1.0`.
    /// `None` = a type we deliberately do not map (e.g. 002 electricity).
    pub(super) fn from_device_type(t: u16) -> Option<Self> {
        match t {
            0x03 => Some(MbusKind::Gas),
            0x06 | 0x07 | 0x15 | 0x16 => Some(MbusKind::Water),
            0x04 | 0x05 | 0x0C | 0x0D => Some(MbusKind::Heat),
            0x0A | 0x0B => Some(MbusKind::Cooling),
            _ => None,
        }
    }

    /// Inference from the unit when there is no device-type line.
    pub(super) fn from_unit(unit_lower: &str) -> Option<Self> {
        match unit_lower {
            "m3" | "m³" => Some(MbusKind::Gas),
            "gj" | "mj" | "kwh" | "mwh" => Some(MbusKind::Heat),
            _ => None,
        }
    }
}

/// Parses an M-Bus device type: decimal digits (`003`, `007`, `012`) or, failing
/// that, hex (`00C`). Empty → `None`.
pub(super) fn parse_device_type(raw: &str) -> Option<u16> {
    let raw = super::text::trim_text(raw);
    if raw.is_empty() {
        return None;
    }
    raw.parse::<u16>().ok().or_else(|| u16::from_str_radix(raw, 16).ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn o(a: u8, b: u8, c: u8, d: u8, e: u8) -> Obis {
        Obis { a, b, c, d, e }
    }

    #[test]
    fn parse_forms() {
        assert_eq!(parse_obis("1-0:1.8.1"), Some(o(1, 0, 1, 8, 1)));
        assert_eq!(parse_obis(" 0-1:24.2.1 "), Some(o(0, 1, 24, 2, 1)));
        assert_eq!(parse_obis("1-0:72:32.0"), Some(o(1, 0, 72, 32, 0)));
        assert_eq!(parse_obis("1-0:99:97.0"), Some(o(1, 0, 99, 97, 0)));
        assert_eq!(parse_obis("1-0:31.7.0.255"), Some(o(1, 0, 31, 7, 0)));
        assert_eq!(parse_obis("1-0:1.8.0*255"), Some(o(1, 0, 1, 8, 0)));
        assert_eq!(parse_obis("0-0:96.1.255*255"), Some(o(0, 0, 96, 1, 255)));
        assert_eq!(parse_obis("1.8.1"), Some(o(1, 0, 1, 8, 1)));
        assert_eq!(parse_obis("96.1.0"), Some(o(0, 0, 96, 1, 0)));
        assert_eq!(parse_obis("1-1:1.8.1"), Some(o(1, 1, 1, 8, 1)));
    }

    #[test]
    fn reject() {
        for id in [
            "",
            "1-0",
            "1-0:1.8",
            "1-0:1.8.1*01",
            "1.8.1*01",
            "1-0:1.8.1.2.3",
            "abc",
            "C.1.0",
            "F.F",
            "1-0:256.8.1",
            "1--0:1.8.1",
            "1-0:1..8",
        ] {
            assert_eq!(parse_obis(id), None, "{id}");
        }
    }

    #[test]
    fn table() {
        assert_eq!(
            lookup(&o(1, 0, 1, 8, 0)).map(|d| d.name),
            Some("energy_delivered_total")
        );
        // Tariff registers are not table rows: one rule names them all.
        assert!(lookup(&o(1, 0, 1, 8, 1)).is_none());
        assert_eq!(lookup(&o(1, 1, 2, 7, 0)).map(|d| d.name), Some("power_returned"));
        assert!(lookup(&o(1, 2, 1, 8, 1)).is_none());
        assert_eq!(lookup(&o(1, 0, 21, 7, 255)).map(|d| d.name), Some("power_delivered_l1"));
        assert_eq!(lookup(&o(0, 0, 96, 7, 21)).map(|d| d.name), Some("power_failures"));
        assert!(lookup(&o(0, 1, 96, 7, 21)).is_none());
        let names: Vec<_> = ELECTRICITY.iter().chain(ABSTRACT).map(|(_, d)| d.name).collect();
        let mut dedup = names.clone();
        dedup.sort_unstable();
        dedup.dedup();
        assert_eq!(names.len(), dedup.len(), "duplicate metric names");
    }

    #[test]
    fn d_prefilter_covers_every_metric() {
        for table in [ELECTRICITY, ABSTRACT] {
            for (i, ((c, d, _), def)) in table.iter().enumerate() {
                assert!(*c < 128, "{} has C {c}", def.name);
                // Rows sharing C and D are adjacent: none after a gap.
                let mut after = table
                    .iter()
                    .skip(i + 1)
                    .skip_while(|((c2, d2, _), _)| (c2, d2) == (c, d));
                assert!(
                    after.all(|((c2, d2, _), _)| (c2, d2) != (c, d)),
                    "{} not adjacent",
                    def.name
                );
            }
        }
        for ((c, d, e), def) in ELECTRICITY.iter().chain(ABSTRACT) {
            assert!(d_slot(*d).is_some(), "{} has D {d}", def.name);
            let a = if ABSTRACT.iter().any(|(k, _)| *k == (*c, *d, *e)) {
                0
            } else {
                1
            };
            let found = lookup_index(&o(a, 0, *c, *d, *e)).map(|(_, f)| f.name);
            assert_eq!(found, Some(def.name));
        }
    }

    #[test]
    fn tariff_registers_are_named_after_their_number() {
        let name = |c, e| TariffRegister::of(&o(1, 0, c, 8, e)).map(|t| t.metric_name().into_owned());
        assert_eq!(name(1, 1).as_deref(), Some("energy_delivered_tariff1"));
        assert_eq!(name(2, 5).as_deref(), Some("energy_returned_tariff5"));
        assert_eq!(name(1, 9).as_deref(), Some("energy_delivered_tariff9"));
        assert_eq!(name(1, 13).as_deref(), Some("energy_delivered_tariff13"));
        assert_eq!(name(3, 2).as_deref(), Some("reactive_energy_delivered_tariff2"));
        assert_eq!(name(4, 63).as_deref(), Some("reactive_energy_returned_tariff63"));
        // Totals, tariff 64 and up, other C and A are no tariff registers.
        assert_eq!(name(1, 0), None);
        assert_eq!(name(1, 64), None);
        assert_eq!(name(5, 1), None);
        assert!(TariffRegister::of(&o(0, 0, 1, 8, 1)).is_none());
        assert!(TariffRegister::of(&o(1, 2, 1, 8, 1)).is_none());
        assert_eq!(
            TariffRegister::of(&o(1, 1, 2, 8, 3)).map(|t| t.quantity()),
            Some(ActiveEnergy)
        );
        assert_eq!(
            TariffRegister::of(&o(1, 0, 4, 8, 3)).map(|t| t.quantity()),
            Some(ReactiveEnergy)
        );
        // Borrowed below 10, so the common case costs no allocation.
        let t1 = TariffRegister::of(&o(1, 0, 1, 8, 1)).map(TariffRegister::metric_name);
        assert!(matches!(t1, Some(std::borrow::Cow::Borrowed(_))));
        // Distinct bits for distinct registers.
        let bits: std::collections::HashSet<_> = (1..=4)
            .flat_map(|c| (1..=63).filter_map(move |e| TariffRegister::of(&o(1, 0, c, 8, e))))
            .map(TariffRegister::bit)
            .collect();
        assert_eq!(bits.len(), 4 * 63);
    }

    #[test]
    fn device_types() {
        assert_eq!(parse_device_type("003"), Some(3));
        assert_eq!(parse_device_type("00C"), Some(12));
        assert_eq!(parse_device_type("012"), Some(12));
        assert_eq!(parse_device_type(""), None);
        assert_eq!(MbusKind::from_device_type(3), Some(MbusKind::Gas));
        assert_eq!(MbusKind::from_device_type(7), Some(MbusKind::Water));
        assert_eq!(MbusKind::from_device_type(4), Some(MbusKind::Heat));
        assert_eq!(MbusKind::from_device_type(0x0C), Some(MbusKind::Heat));
        assert!(MbusKind::from_device_type(2).is_none());
    }
}
