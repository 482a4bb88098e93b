use std::path::Path;
use std::sync::Arc;

use super::*;
use crate::config::{parse_device, DeviceKind};
use crate::host::clock::SystemClock;
use crate::protocols::kmp::{registers, KmpNumber, Unit as KmpUnit};

fn value(register: u16, unit: KmpUnit, v: f64, decimals: u8) -> RegisterValue {
    RegisterValue::from_f64(register, unit, v, decimals).unwrap()
}

fn parse(yaml: &str) -> Result<MulticalConfig, String> {
    let device = parse_device(Path::new("heat.yaml"), yaml, &["sqlite"]).map_err(|e| e.to_string())?;
    match device.kind {
        DeviceKind::Multical(c) => Ok(c),
        other => Err(format!("not a multical: {other:?}")),
    }
}

fn monitor(registers: Vec<Register>) -> MulticalMonitor {
    let config = MulticalConfig {
        registers,
        ..parse("type: multical\nport: /dev/null\n").unwrap()
    };
    let ctx = MonitorContext {
        id: Arc::from("heat"),
        clock: Arc::new(SystemClock),
        data_dir: std::env::temp_dir(),
        poll_interval: std::time::Duration::from_secs(1),
        file: std::path::PathBuf::new(),
    };
    MulticalMonitor::new(&config, Duration::from_secs(900), ctx).unwrap()
}

#[test]
fn energy_is_normalised_to_kwh_from_whatever_the_meter_sends() {
    let e = Register::Energy;
    assert_eq!(
        e.convert(&value(registers::ENERGY, KmpUnit::MWh, 55.006, 3)),
        Ok(55_006.0)
    );
    assert_eq!(
        e.convert(&value(registers::ENERGY, KmpUnit::KWh, 1234.0, 0)),
        Ok(1234.0)
    );
    let gj = e.convert(&value(registers::ENERGY, KmpUnit::GJ, 36.0, 2)).unwrap();
    assert!((gj - 10_000.0).abs() < 1e-9, "36 GJ = 10 000 kWh, got {gj}");
    let gcal = e.convert(&value(registers::ENERGY, KmpUnit::GCal, 2.0, 3)).unwrap();
    assert!((gcal - 2326.0).abs() < 1e-9, "{gcal}");
    // Power in an energy register is refused, never stored as kWh.
    let err = e.convert(&value(registers::ENERGY, KmpUnit::KW, 1.0, 0)).unwrap_err();
    assert!(err.contains("`energy`") && err.contains("kW"), "{err}");
    // GJ×10 has no documented scaling: refused.
    assert!(e.convert(&value(registers::ENERGY, KmpUnit::GJX10, 1.0, 0)).is_err());
}

#[test]
fn other_registers_convert_to_their_metric_units() {
    assert_eq!(
        Register::Power.convert(&value(registers::POWER, KmpUnit::KW, 12.3, 1)),
        Ok(12_300.0)
    );
    assert_eq!(
        Register::Flow.convert(&value(registers::FLOW, KmpUnit::CubicMetrePerHour, 0.245, 3)),
        Ok(245.0)
    );
    assert_eq!(
        Register::Volume.convert(&value(registers::VOLUME, KmpUnit::CubicMetre, 1875.56, 2)),
        Ok(1875.56)
    );
    assert_eq!(
        Register::Volume.convert(&value(registers::VOLUME, KmpUnit::Litre, 1500.0, 0)),
        Ok(1.5)
    );
    assert_eq!(
        Register::TempDiff.convert(&value(registers::TEMP_DIFF, KmpUnit::Kelvin, 7.86, 2)),
        Ok(7.86)
    );
    assert_eq!(
        Register::TempFlow.convert(&value(registers::TEMP_FLOW, KmpUnit::Celsius, 53.65, 2)),
        Ok(53.65)
    );
    // An absolute temperature in K would be ~300: not taken for °C.
    assert!(Register::TempFlow
        .convert(&value(registers::TEMP_FLOW, KmpUnit::Kelvin, 326.8, 1))
        .is_err());
    assert_eq!(
        Register::HourCounter.convert(&value(registers::HOUR_COUNTER, KmpUnit::Hour, 12_345.0, 0)),
        Ok(12_345.0)
    );
    assert_eq!(
        Register::InfoCode.convert(&value(registers::INFO_CODE, KmpUnit::NoUnit, 2048.0, 0)),
        Ok(2048.0)
    );
    assert!(Register::InfoCode
        .convert(&value(registers::INFO_CODE, KmpUnit::Celsius, 1.0, 0))
        .is_err());
}

#[test]
fn a_negative_counter_is_refused() {
    let negative = RegisterValue::new(registers::ENERGY, KmpUnit::KWh, KmpNumber::new(5, true, 0).unwrap());
    assert!(Register::Energy.convert(&negative).unwrap_err().contains("counter"));
    // A gauge may be negative (a cooling meter's power).
    let power = RegisterValue::new(registers::POWER, KmpUnit::KW, KmpNumber::new(5, true, 0).unwrap());
    assert_eq!(Register::Power.convert(&power), Ok(-5000.0));
}

#[test]
fn metric_table_matches_the_registers() {
    for (register, name, kind) in [
        (Register::Energy, "heat_energy", "counter"),
        (Register::Volume, "volume", "counter"),
        (Register::HourCounter, "hour_counter", "counter"),
        (Register::Power, "power", "gauge"),
        (Register::TempDiff, "temp_diff", "gauge"),
        (Register::InfoCode, "info_code", "gauge"),
    ] {
        assert_eq!(register.metric().name, name);
        assert_eq!(register.metric().kind.as_str(), kind, "{name}");
    }
    assert_eq!(Register::Energy.id(), 0x3C);
    assert_eq!(Register::HourCounter.id(), 0x03EC);
    assert_eq!(Register::InfoCode.id(), 0x63);
}

#[test]
fn config_defaults_and_validation() {
    let c = parse("type: multical\nport: /dev/ttyUSB0\n").unwrap();
    assert_eq!(c.baud_rate, 1200);
    assert_eq!(c.timeout, Duration::from_secs(2));
    assert!(!c.close_between_polls);
    assert_eq!(
        c.registers.len(),
        kmp::MAX_REGISTERS_PER_REQUEST,
        "defaults fit one frame"
    );

    let c = parse("type: multical\nport: /dev/ttyUSB0\nbaud_rate: 2400\nregisters: [energy, temp_diff]\n").unwrap();
    assert_eq!((c.baud_rate, c.registers.len()), (2400, 2));

    let err = parse("type: multical\nport: /dev/ttyUSB0\nregisters: [energy, energy]\n").unwrap_err();
    assert!(err.contains("registers") && err.contains("twice"), "{err}");
    let err = parse("type: multical\nport: /dev/ttyUSB0\nregisters: [enrgy]\n").unwrap_err();
    assert!(err.contains("enrgy") && err.contains("line 3"), "{err}");
    let err = parse("type: multical\nport: /dev/ttyUSB0\nbaud_rate: 7\n").unwrap_err();
    assert!(err.contains("baud_rate"), "{err}");
    let err = parse("type: multical\nport: /dev/ttyUSB0\ntimeout: 0s\n").unwrap_err();
    assert!(err.contains("timeout"), "{err}");
    let err = parse("type: multical\nport: /dev/ttyUSB0\nregisters: []\n").unwrap_err();
    assert!(err.contains("at least one"), "{err}");
    let err = parse("type: multical\nbaud_rate: 2400\n").unwrap_err();
    assert!(err.contains("port"), "{err}");
    let err = parse("type: multical\nport: /dev/ttyUSB0\nbaudrate: 2400\n").unwrap_err();
    assert!(err.contains("did you mean `baud_rate`"), "{err}");
}

#[test]
fn default_poll_is_battery_friendly_and_short_polls_warn() {
    let device = parse_device(
        Path::new("heat.yaml"),
        "type: multical\nport: /dev/ttyUSB0\n",
        &["sqlite"],
    )
    .unwrap();
    assert_eq!(device.poll_interval(), Duration::from_secs(900));
    assert_eq!(poll_interval_warning(device.poll_interval()), None);
    assert_eq!(poll_interval_warning(Duration::from_secs(300)), None);
    let warning = poll_interval_warning(Duration::from_secs(60)).unwrap();
    assert!(warning.contains("1m") && warning.contains("battery"), "{warning}");
}

#[test]
fn registers_are_asked_for_in_as_few_frames_as_possible() {
    let all = vec![
        Register::Energy,
        Register::Volume,
        Register::Power,
        Register::Flow,
        Register::TempFlow,
        Register::TempReturn,
        Register::TempDiff,
        Register::HourCounter,
        Register::InfoCode,
    ];
    let m = monitor(all.clone());
    assert_eq!(m.requests.len(), 2);
    assert_eq!(m.requests[0].registers.len(), 8);
    assert_eq!(m.requests[1].registers, [Register::InfoCode]);
    let ids: Vec<u16> = all[..8].iter().map(|r| r.id()).collect();
    assert_eq!(
        kmp::decode_request(&m.requests[0].frame),
        Ok(kmp::Request::GetRegister {
            address: kmp::ADDRESS_HEAT_METER,
            registers: ids
        })
    );
    assert_eq!(m.metrics().len(), 9);
    assert_eq!(monitor(default_registers()).requests.len(), 1);
}

#[tokio::test]
async fn a_missing_port_is_a_link_error_not_a_panic() {
    let mut m = monitor(default_registers());
    m.config.port = "/nonexistent/ttyKMP".into();
    let err = m.read().await.unwrap_err();
    assert!(
        matches!(&err, MonitorError::Link { message: msg, .. } if msg.contains("/nonexistent/ttyKMP")),
        "{err}"
    );
}
