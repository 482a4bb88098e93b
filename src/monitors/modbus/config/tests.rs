use super::*;
use crate::protocols::modbus::plan::Span;

#[test]
fn every_preset_parses_and_validates() {
    for (name, text) in PRESETS {
        let points = parse_points(text, name).unwrap_or_else(|e| panic!("{e}"));
        assert!(points.len() >= 10, "{name}: {} points", points.len());
        validate_points(&points).unwrap_or_else(|e| panic!("{name}: {e}"));
    }
}

#[test]
fn presets_carry_their_request_limits_and_the_device_file_wins() {
    let mut config: ModbusConfig =
        serde_yaml_ng::from_str("host: meter\npreset: sdm630\n").unwrap_or_else(|e| panic!("{e}"));
    let map = load_map(&config, Path::new(".")).unwrap_or_else(|e| panic!("{e}"));
    let limits = map.limits(&config);
    assert_eq!((limits.max_registers, limits.max_gap), (80, 0));
    config.max_registers = Some(40);
    config.max_gap = Some(4);
    let limits = map.limits(&config);
    assert_eq!((limits.max_registers, limits.max_gap), (40, 4));
    config.preset = None;
    config.points = parse_points("points: [{name: a, address: 0}]", "inline").unwrap_or_default();
    let (none, unset) = (
        PointMap::default(),
        ModbusConfig {
            max_registers: None,
            max_gap: None,
            ..config
        },
    );
    let limits = none.limits(&unset);
    assert_eq!(
        (limits.max_registers, limits.max_gap),
        (default_max_registers(), default_max_gap())
    );
    let e = parse_map("max_registers: 126\npoints: []\n", "maps/x.yaml").expect_err("126 registers");
    assert!(
        e.to_string().contains("maps/x.yaml") && e.to_string().contains("max_registers"),
        "{e}"
    );
}

#[test]
fn every_preset_sets_a_limit_and_reads_only_its_points_registers() {
    for (name, text) in PRESETS {
        let map = parse_map(text, name).unwrap_or_else(|e| panic!("{e}"));
        let max = map.max_registers.unwrap_or_else(|| panic!("{name}: no max_registers"));
        let limits = Limits {
            max_registers: max,
            max_gap: map.max_gap.unwrap_or_else(default_max_gap),
            ..Limits::default()
        };
        let spans: Vec<Span> = map
            .points
            .iter()
            .map(|p| Span {
                register: p.register,
                address: p.address,
                count: p.data_type.span(p.length.unwrap_or(1)),
            })
            .collect();
        for block in crate::protocols::modbus::plan::plan(&spans, limits) {
            assert!(block.count <= max, "{name}: {block:?}");
            for a in u32::from(block.address)..block.end() {
                assert!(
                    spans
                        .iter()
                        .any(|s| s.register == block.register && u32::from(s.address) <= a && a < s.end()),
                    "{name}: {block:?} reads register {a:#06X}, which is no point of the preset"
                );
            }
        }
    }
}

#[test]
fn points_are_checked() {
    let point = |yaml: &str| -> Vec<PointConfig> {
        serde_yaml_ng::from_str::<PointsFile>(yaml)
            .map(|f| f.points)
            .unwrap_or_default()
    };
    let bad = [
        ("points: [{name: Bad, address: 0}]", "lowercase"),
        ("points: [{name: a, address: 0}, {name: a, address: 1}]", "twice"),
        ("points: [{name: a, address: 0, register: coil, type: u16}]", "bool"),
        ("points: [{name: a, address: 0, type: string}]", "length"),
        ("points: [{name: a, address: 0, length: 2}]", "only for strings"),
        (
            "points: [{name: a, address: 0, type: string, length: 2, kind: counter}]",
            "cannot be a counter",
        ),
        ("points: [{name: a, address: 65535, type: u32}]", "past"),
        ("points: [{name: a, address: 0, scale: 0}]", "non-zero"),
        ("points: [{name: a, address: 0, scale_factor: b}]", "not a point"),
        (
            "points: [{name: a, address: 0, scale_factor: b}, {name: b, address: 1}]",
            "i16",
        ),
    ];
    for (yaml, message) in bad {
        let points = point(yaml);
        assert!(!points.is_empty(), "{yaml} did not parse");
        let e = validate_points(&points).expect_err(yaml);
        assert!(e.contains(message), "{yaml}: {e}");
    }
    assert!(serde_yaml_ng::from_str::<PointsFile>("points: [{name: a, address: 0, unit: furlong}]").is_err());
    assert!(serde_yaml_ng::from_str::<PointsFile>("points: [{name: a, adress: 0}]").is_err());
    assert_eq!(
        validate_points(&point("points: [{name: s, address: 0, type: string, length: 8}]")),
        Ok(())
    );
    let ok = point("points: [{name: a, address: 0x10, unit: degC, kind: counter, invalid: [0xFFFF]}]");
    assert_eq!(ok[0].address, 16);
    assert_eq!(ok[0].unit, Unit::Celsius);
    assert_eq!(ok[0].invalid, [0xFFFF]);
}

fn point(yaml: &str) -> PointConfig {
    serde_yaml_ng::from_str(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"))
}

#[test]
fn a_writable_point_is_a_holding_register_with_a_range() {
    assert!(point("{name: a, address: 0, writable: true, min: 5, max: 30}")
        .check_writable()
        .is_ok());
    assert!(point("{name: a, address: 0}").check_writable().is_ok());
    for (yaml, says) in [
        ("{name: a, address: 0, writable: true}", "needs `min` and `max`"),
        ("{name: a, address: 0, writable: true, min: 30, max: 5}", "no greater"),
        (
            "{name: a, address: 0, register: input, writable: true, min: 0, max: 1}",
            "only holding",
        ),
        (
            "{name: a, address: 0, type: string, length: 2, writable: true, min: 0, max: 1}",
            "string",
        ),
        (
            "{name: a, address: 0, scale_factor: b, writable: true, min: 0, max: 1}",
            "scale_factor",
        ),
        ("{name: a, address: 0, min: 0, max: 1}", "for `writable: true`"),
    ] {
        let e = point(yaml).check_writable().expect_err(yaml);
        assert!(e.contains(says), "{yaml}: {e}");
    }
}
