//! Synthetic telegrams for variants not covered by the real fixtures.

use crate::support::dsmr::{absent, num, num_at, utc};
use mesura::protocols::dsmr::{decode, CrcStatus, DecodeError, DsmrNumberOrText, Telegram};

fn t(body: &str) -> Telegram {
    decode(format!("/TST5 test\r\n\r\n{body}!\r\n").as_bytes()).unwrap()
}

#[test]
fn decode_errors() {
    assert_eq!(decode(b""), Err(DecodeError::MissingHeader));
    assert_eq!(decode(b"1-0:1.8.1(1*kWh)\r\n!\r\n"), Err(DecodeError::MissingHeader));
    assert_eq!(decode(b"/ISK5 no line end"), Err(DecodeError::UnterminatedHeader));
    // leading junk before the header is skipped
    let t = decode(b"junk\r\n/A\r\n\r\n1-0:1.8.1(1*kWh)\r\n!\r\n").unwrap();
    assert_eq!(t.header, "A");
    num(&t, "energy_delivered_tariff1", 1.0, "kWh");
}

#[test]
fn malformed_line_is_skipped_not_fatal() {
    let t = t("1-0:1.8.1(000100.000*kWh)\r\nGARBAGE LINE\r\n1-0:1.7.0(01.5*kW\r\n1-0:2.7.0(00.250*kW)\r\n1-0:32.7.0(abc*V)\r\n");
    num(&t, "energy_delivered_tariff1", 100.0, "kWh");
    num(&t, "power_returned", 250.0, "W");
    absent(&t, "power_delivered");
    absent(&t, "voltage_l1");
    assert_eq!(
        t.malformed,
        vec!["GARBAGE LINE", "1-0:1.7.0(01.5*kW", "1-0:32.7.0(abc*V)"]
    );
}

#[test]
fn legacy_gas_value_on_same_line_and_mwh_units() {
    let t = t(
        "1-0:1.8.0(0001.5*MWh)\r\n0-1:24.1.0(3)\r\n0-1:24.3.0(121030140000)(00)(60)(1)(0-1:24.2.1)(m3)(00890.051)\r\n",
    );
    num(&t, "energy_delivered_total", 1500.0, "kWh");
    // 30 Oct 2012 14:00 local is CET (UTC+1)
    num_at(&t, "gas_delivered", 890.051, "m3", utc(2012, 10, 30, 13, 0, 0));
}

#[test]
fn heat_by_unit_and_kwh_conversion() {
    let t = t("0-1:24.2.1(200101120000W)(00012.345*GJ)\r\n0-2:24.1.0(00C)\r\n0-2:24.2.1(200101120000W)(1000*kWh)\r\n");
    num_at(&t, "heat_delivered", 12.345, "GJ", utc(2020, 1, 1, 11, 0, 0));
    num(&t, "heat_delivered_2", 3.6, "GJ");
}

#[test]
fn water_with_invalid_time_but_real_value_is_kept() {
    let t = t("0-2:24.1.0(007)\r\n0-2:24.2.1(632525252525S)(00012.500*m3)\r\n");
    num(&t, "water_delivered", 12.5, "m3");
    assert_eq!(t.get("water_delivered").unwrap().timestamp, None);
}

#[test]
fn unsupported_device_type_goes_to_unknown() {
    let t = t("0-3:24.1.0(002)\r\n0-3:24.2.1(200101120000W)(00012.500*kWh)\r\n");
    assert!(t.values.is_empty());
    assert!(t.unknown.iter().any(|(id, _)| id == "0-3:24.2.1"));
    assert_eq!(t.mbus_devices[0].device_type, Some(2));
}

#[test]
fn iec_reduced_ids_q3da_and_billing_periods() {
    let t = t("1.8.1(001234.5*kWh)\r\n1.8.1*01(001000.0*kWh)\r\n1-0:1.7.255*255(000357.32*W)\r\n1-0:21.7.255*255(000176.16*W)\r\n");
    num(&t, "energy_delivered_tariff1", 1234.5, "kWh");
    num(&t, "power_delivered", 357.32, "W");
    num(&t, "power_delivered_l1", 176.16, "W");
    assert!(t
        .unknown
        .iter()
        .any(|(id, raw)| id == "1.8.1*01" && raw == "(001000.0*kWh)"));
}

#[test]
fn duplicates_and_wrong_units_go_to_unknown() {
    let t = t("1-0:1.8.1(1*kWh)\r\n1-1:1.8.1(2*kWh)\r\n1-0:1.7.0(5*kWh)\r\n1-2:1.8.2(3*kWh)\r\n");
    num(&t, "energy_delivered_tariff1", 1.0, "kWh");
    absent(&t, "power_delivered");
    absent(&t, "energy_delivered_tariff2");
    let ids: Vec<_> = t.unknown.iter().map(|(id, _)| id.as_str()).collect();
    assert_eq!(ids, vec!["1-1:1.8.1", "1-0:1.7.0", "1-2:1.8.2"]);
}

#[test]
fn text_tariff_and_extra_metrics() {
    let t = t("0-0:96.14.0(T1)\r\n1-0:14.7.0(50.01*Hz)\r\n1-0:13.7.0(0.987)\r\n1-0:1.8.3(000001.000*kWh)\r\n1-0:91.7.0(001.2*A)\r\n");
    assert_eq!(t.get("tariff").unwrap().value, DsmrNumberOrText::Text("T1".into()));
    num(&t, "frequency", 50.01, "Hz");
    num(&t, "power_factor", 0.987, "");
    num(&t, "energy_delivered_tariff3", 1.0, "kWh");
    num(&t, "current_neutral", 1.2, "A");
}

#[test]
fn negative_and_signed_values() {
    let t = t("1-0:1.7.0(-00.120*kW)\r\n1-0:31.7.0(+002*A)\r\n");
    num(&t, "power_delivered", -120.0, "W");
    num(&t, "current_l1", 2.0, "A");
}

#[test]
fn peak_month_with_invalid_time() {
    let t = t("1-0:1.6.0(632525252525W)(00.000*kW)\r\n");
    num(&t, "peak_demand_month", 0.0, "W");
    assert_eq!(t.get("peak_demand_month").unwrap().timestamp, None);
}

#[test]
fn equipment_id_priority_and_text_message() {
    let t = t("0-0:96.1.0(12345)\r\n0-0:96.1.1(4B414D)\r\n0-0:96.13.0(48656C6C6F21)\r\n");
    assert_eq!(t.equipment_id.as_deref(), Some("KAM"));
    assert_eq!(t.text_message.as_deref(), Some("Hello!"));
    assert_eq!(t.unknown, vec![("0-0:96.1.0".to_string(), "(12345)".to_string())]);
}

#[test]
fn unterminated_input_decodes_with_flag() {
    let t = decode(b"/A\r\n\r\n1-0:1.8.1(1*kWh)\r\n1-0:1.8.2(2*k").unwrap();
    assert!(!t.terminated);
    assert_eq!(t.crc, CrcStatus::Absent);
    num(&t, "energy_delivered_tariff1", 1.0, "kWh");
    assert_eq!(t.malformed, vec!["1-0:1.8.2(2*k"]);
}

#[test]
fn values_carry_obis_and_kind() {
    let t = t("1-0:2.8.2(000002.000*kWh)\r\n1-0:52.7.0(230.1*V)\r\n0-0:96.7.21(00005)\r\n");
    let v = t.get("energy_returned_tariff2").unwrap();
    assert_eq!((v.obis.to_string().as_str(), v.counter), ("1-0:2.8.2", true));
    let v = t.get("voltage_l2").unwrap();
    assert_eq!(
        (v.obis.to_string().as_str(), v.counter, v.timestamp),
        ("1-0:52.7.0", false, None)
    );
    assert!(t.get("power_failures").unwrap().counter);
}
