//! Every fixture telegram decoded; expected numbers are copied by hand from the
//! telegram text (then unit-converted by hand where noted), never from the decoder.

use crate::support::dsmr::{absent, num, num_at, telegram, utc};
use mesura::protocols::dsmr::CrcStatus;

const KWH: &str = "kWh";
const W: &str = "W";
const V: &str = "V";
const A: &str = "A";
const M3: &str = "m3";

// ---------------------------------------------------------------- DSMR 2.2 / 3.0

#[test]
fn dsmr22_iskra_mt382_gas_nocrc() {
    let t = telegram("dsmr22_iskra_mt382_gas_nocrc.txt");
    assert_eq!(t.header, "ISk5\\2MT382-1004");
    assert_eq!(t.crc, CrcStatus::Absent);
    assert!(t.terminated);
    assert_eq!(t.version, None);
    assert_eq!(t.meter_time, None);
    num(&t, "energy_delivered_tariff1", 1.001, KWH);
    num(&t, "energy_returned_tariff2", 1.001, KWH);
    num(&t, "power_delivered", 1010.0, W); // 0001.01*kW
    num(&t, "power_returned", 0.0, W);
    num(&t, "tariff", 1.0, "");
    // continuation line: 0-1:24.3.0(161107190000)...(m3) / (00001.001); no suffix,
    // 7 Nov 2016 is CET (UTC+1)
    num_at(&t, "gas_delivered", 1.001, M3, utc(2016, 11, 7, 18, 0, 0));
    assert!(t.get("gas_delivered").unwrap().counter);
}

#[test]
fn dsmr22_iskra_mt382_textmsg_slash_no_terminator() {
    let t = telegram("dsmr22_iskra_mt382_textmsg_slash_no_terminator.txt");
    assert!(!t.terminated);
    assert_eq!(t.crc, CrcStatus::Absent);
    assert_eq!(t.text_message.as_deref(), Some("test-/-test"));
    num(&t, "energy_delivered_tariff1", 39837.604, KWH);
    num(&t, "energy_returned_tariff2", 11772.946, KWH);
    num(&t, "power_returned", 140.0, W); // 0000.14*kW
    num(&t, "tariff", 2.0, "");
    // 23 Apr 2025 09:00 local, CEST (UTC+2)
    num_at(&t, "gas_delivered", 13032.850, M3, utc(2025, 4, 23, 7, 0, 0));
}

#[test]
fn dsmr22_iskra_mt382_truncated_no_terminator() {
    let t = telegram("dsmr22_iskra_mt382_truncated_no_terminator.txt");
    assert!(!t.terminated);
    assert_eq!(t.text_message, None);
    num(&t, "energy_delivered_tariff2", 30477.225, KWH);
    num(&t, "energy_returned_tariff1", 5174.479, KWH);
    num(&t, "power_delivered", 0.0, W);
    num(&t, "gas_delivered", 13032.850, M3);
}

#[test]
fn dsmr22_landisgyr_xmx5_unknown() {
    let t = telegram("dsmr22_landisgyr_xmx5_unknown.txt");
    assert_eq!(t.header, "XMX5XMXABCE000012345");
    assert_eq!(t.crc, CrcStatus::Absent);
    // 0x01 0x23 … is not printable ASCII: kept raw
    assert_eq!(t.equipment_id.as_deref(), Some("0123456789ABCDEF"));
    num(&t, "energy_delivered_tariff1", 11667.440, KWH);
    num(&t, "energy_delivered_tariff2", 11781.558, KWH);
    num(&t, "power_delivered", 550.0, W); // 0000.55*kW
    absent(&t, "gas_delivered");
    assert!(t.mbus_devices.is_empty());
}

#[test]
fn dsmr22or30_iskra_mt382_1003_nocrc() {
    let t = telegram("dsmr22or30_iskra_mt382_1003_nocrc.txt");
    assert_eq!(t.crc, CrcStatus::Absent);
    num(&t, "energy_delivered_tariff1", 1234.784, KWH);
    num(&t, "energy_returned_tariff2", 0.002, KWH);
    num(&t, "power_delivered", 360.0, W); // 0000.36*kW
                                          // 10 Apr 2016 13:00 local, CEST
    num_at(&t, "gas_delivered", 7890.693, M3, utc(2016, 4, 10, 11, 0, 0));
}

#[test]
fn dsmr30_iskra_mt382_gas_textmsg_nocrc() {
    let t = telegram("dsmr30_iskra_mt382_gas_textmsg_nocrc.txt");
    assert_eq!(t.crc, CrcStatus::Absent);
    // 4B 38 45 47 30 30 34 30 34 36 33 39 35 35 30 37
    assert_eq!(t.equipment_id.as_deref(), Some("K8EG004046395507"));
    assert!(t
        .text_message
        .as_deref()
        .unwrap()
        .starts_with("0123456789:;<=>?0123456789"));
    num(&t, "energy_returned_tariff1", 12345.678, KWH);
    num(&t, "power_delivered", 1190.0, W); // 001.19*kW
    num(&t, "tariff", 2.0, "");
    num_at(&t, "gas_delivered", 1.001, M3, utc(2009, 2, 12, 15, 0, 0));
    assert_eq!(t.mbus_devices[0].device_type, Some(3));
    assert_eq!(t.mbus_devices[0].equipment_id.as_deref(), Some("2222ABCD123456789"));
}

// ---------------------------------------------------------------------- DSMR 4.x

#[test]
fn dsmr40_iskra_mt382_spec_like() {
    let t = telegram("dsmr40_iskra_mt382_spec_like.txt");
    assert_eq!(t.header, "ISk5\\2MT382-1 000");
    assert!(matches!(t.crc, CrcStatus::Invalid { given: 0x522B, .. }));
    assert_eq!(t.version.as_deref(), Some("40"));
    assert_eq!(t.meter_time, Some(utc(2010, 12, 9, 10, 30, 20)));
    num(&t, "energy_delivered_tariff1", 123456.789, KWH);
    num(&t, "power_delivered", 1193.0, W); // 01.193*kW
    num(&t, "power_failures", 4.0, "");
    num(&t, "long_power_failures", 2.0, "");
    // `1-0:72:32.0` (colon typo) still maps
    num(&t, "voltage_sags_l3", 0.0, "");
    num(&t, "voltage_swells_l2", 3.0, "");
    num_at(&t, "gas_delivered", 12785.123, M3, utc(2010, 12, 9, 10, 0, 0));
}

#[test]
fn dsmr40_landisgyr_e350_gas() {
    let t = telegram("dsmr40_landisgyr_e350_gas.txt");
    assert_eq!(t.crc, CrcStatus::Valid);
    assert_eq!(t.meter_time, Some(utc(2015, 11, 10, 18, 29, 59)));
    num(&t, "energy_delivered_tariff1", 510.747, KWH);
    num(&t, "energy_returned_tariff1", 0.123, KWH);
    num(&t, "energy_returned_tariff2", 123.456, KWH);
    num(&t, "power_delivered", 999.0, W);
    num(&t, "power_returned", 1332.0, W);
    num(&t, "current_l3", 1.0, A);
    num(&t, "power_delivered_l1", 111.0, W);
    num(&t, "power_returned_l3", 666.0, W);
    num_at(&t, "gas_delivered", 845.206, M3, utc(2015, 11, 10, 18, 0, 0));
    assert!(t.get("power_delivered").is_some_and(|v| !v.counter));
    assert!(t.get("energy_delivered_tariff1").is_some_and(|v| v.counter));
}

#[test]
fn dsmr40_landisgyr_e350_no_mbus_type_line() {
    let t = telegram("dsmr40_landisgyr_e350_no_mbus_type_line.txt");
    assert_eq!(t.crc, CrcStatus::Valid);
    num(&t, "power_delivered", 192.0, W);
    num(&t, "power_returned", 123.0, W);
    num(&t, "power_failures", 3.0, "");
    // no 0-1:24.1.0: gas inferred from the m3 unit
    num_at(&t, "gas_delivered", 845.206, M3, utc(2015, 11, 10, 18, 0, 0));
    assert_eq!(t.mbus_devices[0].device_type, None);
}

#[test]
fn dsmr40_landisgyr_xmx5_real() {
    let t = telegram("dsmr40_landisgyr_xmx5_real.txt");
    assert_eq!(t.crc, CrcStatus::Valid);
    assert_eq!(t.header, "XMX5LGBBFFB231216240");
    assert_eq!(t.meter_time, Some(utc(2000, 1, 1, 0, 0, 0))); // 000101010000W
    assert_eq!(t.equipment_id.as_deref(), Some("E0004001591092214"));
    num(&t, "energy_delivered_tariff1", 1990.002, KWH);
    num(&t, "energy_delivered_tariff2", 0.0, KWH);
    num(&t, "power_failures", 23.0, "");
    num(&t, "voltage_sags_l1", 0.0, "");
}

#[test]
fn dsmr40_spec_example_np() {
    let t = telegram("dsmr40_spec_example_np.txt");
    assert!(matches!(t.crc, CrcStatus::Invalid { given: 0x522B, .. }));
    num(&t, "energy_returned_tariff2", 123456.789, KWH);
    num(&t, "power_delivered", 1193.0, W);
    num(&t, "voltage_sags_l1", 2.0, "");
    num_at(&t, "gas_delivered", 12785.123, M3, utc(2010, 12, 9, 10, 0, 0));
}

#[test]
fn dsmr422_spec_example_np() {
    let t = telegram("dsmr422_spec_example_np.txt");
    assert!(matches!(t.crc, CrcStatus::Invalid { given: 0xCE7C, .. }));
    assert_eq!(t.version.as_deref(), Some("42"));
    // `.255` F group: 1-0:31.7.0.255(001*A), 1-0:61.7.0.255(03.333*kW)
    num(&t, "current_l1", 1.0, A);
    num(&t, "current_l3", 3.0, A);
    num(&t, "power_delivered_l3", 3333.0, W);
    num(&t, "power_returned_l1", 4444.0, W);
    num(&t, "power_returned_l3", 6666.0, W);
    num_at(&t, "gas_delivered", 12785.123, M3, utc(2010, 12, 9, 10, 0, 0));
}

#[test]
fn dsmr42_kaifa_bad_crc_abcd() {
    let t = telegram("dsmr42_kaifa_bad_crc_abcd.txt");
    assert_eq!(
        t.crc,
        CrcStatus::Invalid {
            given: 0xABCD,
            computed: 0x4BC6
        }
    );
    // values still decoded; the caller decides
    num(&t, "energy_delivered_tariff1", 1073.079, KWH);
    num(&t, "power_delivered", 143.0, W);
}

#[test]
fn dsmr42_kaifa_gas_failurelog3() {
    let t = telegram("dsmr42_kaifa_gas_failurelog3.txt");
    assert_eq!(t.crc, CrcStatus::Valid);
    assert_eq!(t.header, "KFM5KAIFA-METER");
    assert_eq!(t.meter_time, Some(utc(2016, 11, 13, 19, 57, 57)));
    num(&t, "energy_delivered_tariff1", 1581.123, KWH);
    num(&t, "energy_delivered_tariff2", 1435.706, KWH);
    num(&t, "power_delivered", 2027.0, W);
    num(&t, "current_l2", 6.0, A);
    num(&t, "power_delivered_l2", 1247.0, W);
    num(&t, "power_failures", 15.0, "");
    num(&t, "long_power_failures", 7.0, "");
    num_at(&t, "gas_delivered", 981.443, M3, utc(2016, 11, 29, 19, 0, 0));
    assert!(t.unknown.iter().any(|(id, _)| id == "1-0:99.97.0"));
}

#[test]
fn dsmr42_kaifa_no_gas() {
    let t = telegram("dsmr42_kaifa_no_gas.txt");
    assert_eq!(t.crc, CrcStatus::Valid);
    num(&t, "energy_delivered_tariff2", 1263.199, KWH);
    num(&t, "power_returned_l1", 321.0, W);
    num(&t, "current_l1", 0.0, A);
    absent(&t, "gas_delivered");
    assert!(t.mbus_devices.is_empty());
}

#[test]
fn dsmr42_kaifa_real() {
    let t = telegram("dsmr42_kaifa_real.txt");
    assert_eq!(t.crc, CrcStatus::Valid);
    assert_eq!(t.equipment_id.as_deref(), Some("E0003000002124813"));
    num(&t, "energy_delivered_tariff1", 4726.494, KWH);
    num(&t, "energy_returned_tariff2", 7764.691, KWH);
    num(&t, "power_returned", 1869.0, W);
    num(&t, "current_l1", 3.0, A);
    num(&t, "power_returned_l2", 778.0, W);
    num_at(&t, "gas_delivered", 5359.919, M3, utc(2018, 3, 6, 11, 0, 0));
}

#[test]
fn dsmr42_landisgyr_e350_gas() {
    let t = telegram("dsmr42_landisgyr_e350_gas.txt");
    assert_eq!(t.crc, CrcStatus::Valid);
    assert_eq!(t.meter_time, Some(utc(2016, 2, 10, 19, 30, 34)));
    num(&t, "energy_delivered_tariff1", 756.849, KWH);
    num(&t, "energy_delivered_tariff2", 714.405, KWH);
    num(&t, "current_l2", 222.0, A);
    num(&t, "power_delivered_l3", 789.0, W);
    num_at(&t, "gas_delivered", 1197.484, M3, utc(2016, 2, 10, 19, 0, 0));
}

// ---------------------------------------------------------------------- DSMR 5.0

#[test]
fn dsmr50_at_sagemcom_t210dr_wh_varh() {
    let t = telegram("dsmr50_at_sagemcom_t210dr_wh_varh.txt");
    assert_eq!(t.crc, CrcStatus::Valid);
    assert_eq!(t.meter_time, Some(utc(2022, 10, 6, 13, 50, 14))); // ...S = UTC+2
    num(&t, "energy_delivered_total", 6545.766, KWH); // 006545766*Wh
    num(&t, "energy_delivered_tariff1", 5017.120, KWH); // 005017120*Wh
    num(&t, "energy_returned_total", 0.058, KWH); // 000000058*Wh
    num(&t, "power_delivered", 286.0, W); // 000000286*W
    num(&t, "reactive_energy_returned_total", 3897.726, "kvarh"); // 003897726*varh
    num(&t, "reactive_energy_delivered_tariff2", 0.747, "kvarh");
    num(&t, "reactive_power_returned", 166.0, "var"); // 000000166*var
}

#[test]
fn dsmr50_est_wh_units() {
    let t = telegram("dsmr50_est_wh_units.txt");
    assert!(matches!(t.crc, CrcStatus::Invalid { given: 0xFFFF, .. }));
    assert_eq!(t.meter_time, Some(utc(2025, 3, 19, 9, 28, 12)));
    num(&t, "energy_delivered_total", 201.282, KWH);
    num(&t, "energy_returned_total", 320.908, KWH);
    num(&t, "energy_returned_tariff2", 3.777, KWH);
    num(&t, "power_returned", 3996.0, W);
    num(&t, "reactive_energy_delivered_tariff2", 4.143, "kvarh");
    num(&t, "reactive_power_returned", 221.0, "var");
}

#[test]
fn dsmr50_iskra_am550_real() {
    let t = telegram("dsmr50_iskra_am550_real.txt");
    assert_eq!(t.crc, CrcStatus::Valid);
    assert_eq!(t.version.as_deref(), Some("50"));
    num(&t, "voltage_l1", 236.0, V);
    num(&t, "voltage_l2", 232.6, V);
    num(&t, "voltage_l3", 235.1, V);
    num(&t, "power_returned", 498.0, W);
    num(&t, "power_returned_l1", 676.0, W);
    num(&t, "voltage_sags_l1", 3.0, "");
    num_at(&t, "gas_delivered", 1569.646, M3, utc(2018, 11, 6, 13, 0, 10));
}

#[test]
fn dsmr50_iskra_am550_two_mbus_gas_ch2() {
    let t = telegram("dsmr50_iskra_am550_two_mbus_gas_ch2.txt");
    assert_eq!(t.crc, CrcStatus::Valid);
    assert_eq!(t.meter_time, Some(utc(2020, 4, 26, 20, 33, 25)));
    num(&t, "voltage_l3", 222.9, V);
    num(&t, "voltage_sags_l3", 192.0, "");
    // channel 1 is (700101010000W)(00000000): inactive, no reading
    num_at(&t, "gas_delivered", 246.138, M3, utc(2020, 4, 26, 20, 30, 1));
    absent(&t, "gas_delivered_2");
    let ch1 = t.mbus_devices.iter().find(|d| d.channel == 1).unwrap();
    assert_eq!(ch1.metric, None);
    let ch2 = t.mbus_devices.iter().find(|d| d.channel == 2).unwrap();
    assert_eq!(ch2.metric.as_deref(), Some("gas_delivered"));
}

#[test]
fn dsmr50_iskra_am550e_failurelog6() {
    let t = telegram("dsmr50_iskra_am550e_failurelog6.txt");
    assert_eq!(t.crc, CrcStatus::Valid);
    num(&t, "voltage_l1", 236.1, V);
    num(&t, "current_l1", 1.0, A);
    num(&t, "power_delivered", 193.0, W);
    num(&t, "power_failures", 9.0, "");
    num(&t, "long_power_failures", 8.0, "");
    num_at(&t, "gas_delivered", 304.089, M3, utc(2019, 3, 20, 17, 10, 3));
}

#[test]
fn dsmr50_iskra_mt382_gas_spec() {
    let t = telegram("dsmr50_iskra_mt382_gas_spec.txt");
    assert_eq!(t.crc, CrcStatus::Valid);
    num(&t, "current_l1", 0.48, A);
    num(&t, "current_l3", 0.86, A);
    num(&t, "voltage_l3", 229.0, V);
    num(&t, "power_delivered_l3", 142.0, W);
    num_at(&t, "gas_delivered", 0.107, M3, utc(2017, 1, 2, 15, 10, 5));
    absent(&t, "gas_delivered_2"); // channel 2 has only a type line
    assert_eq!(t.mbus_devices.len(), 2);
}

#[test]
fn dsmr50_mcs_zeroed_empty_mbus() {
    let t = telegram("dsmr50_mcs_zeroed_empty_mbus.txt");
    assert_eq!(t.crc, CrcStatus::Valid);
    assert_eq!(t.meter_time, None); // 000000000000W
    num(&t, "energy_delivered_tariff1", 1.0, KWH);
    num(&t, "energy_returned_tariff2", 4.0, KWH);
    num(&t, "power_delivered", 96.0, W);
    num(&t, "voltage_l2", 231.4, V);
    // 0-1:24.2.1(000101000000W)(00000000.0000): zero without unit → no reading
    absent(&t, "gas_delivered");
}

#[test]
fn dsmr50_nwa_warmtelink_thermal_gj_crc3digits() {
    let t = telegram("dsmr50_nwa_warmtelink_thermal_gj_crc3digits.txt");
    assert_eq!(t.crc, CrcStatus::Valid); // "!B9F" = 0x0B9F
    assert_eq!(t.equipment_id.as_deref(), Some("ADC3100000158491"));
    num_at(&t, "heat_delivered", 240.860, "GJ", utc(2026, 2, 15, 19, 5, 23));
    assert!(t.get("heat_delivered").unwrap().counter);
    assert_eq!(t.mbus_devices[0].device_type, Some(4));
}

#[test]
fn dsmr50_sagemcom_t210d_ene_1() {
    let t = telegram("dsmr50_sagemcom_t210d_ene_1.txt");
    assert!(matches!(t.crc, CrcStatus::Invalid { given: 0xD59D, .. }));
    assert_eq!(t.header, "Ene5\\T210-D ESMR5.0");
    assert_eq!(t.meter_time, Some(utc(2021, 3, 30, 17, 23, 5)));
    assert_eq!(t.equipment_id.as_deref(), Some("serienummer"));
    num(&t, "energy_returned_tariff2", 5072.177, KWH);
    num(&t, "power_returned", 566.0, W);
    num(&t, "power_returned_l3", 257.0, W);
    num(&t, "power_failures", 220.0, "");
    num(&t, "voltage_sags_l2", 24.0, "");
}

#[test]
fn dsmr50_sagemcom_t211_ene_3() {
    let t = telegram("dsmr50_sagemcom_t211_ene_3.txt");
    assert!(matches!(t.crc, CrcStatus::Invalid { given: 0xB788, .. }));
    num(&t, "energy_delivered_tariff2", 694.269, KWH);
    num(&t, "power_delivered", 723.0, W);
    num(&t, "voltage_l2", 225.0, V);
    num(&t, "power_delivered_l2", 69.0, W);
    num_at(&t, "gas_delivered", 6362.120, M3, utc(2024, 2, 20, 16, 10, 0));
    assert!(t.unknown.iter().any(|(id, _)| id == "1-0:42.1.0"));
}

#[test]
fn dsmr50_spec_example_lowercase_units() {
    let t = telegram("dsmr50_spec_example_lowercase_units.txt");
    assert!(matches!(t.crc, CrcStatus::Invalid { given: 0xEF2F, .. }));
    num(&t, "energy_delivered_tariff1", 123456.789, KWH); // *kwh
    num(&t, "power_delivered", 1193.0, W); // 01.193*kw
    num(&t, "voltage_l1", 220.1, V); // *v
    num(&t, "current_l3", 3.0, A); // *a
    num(&t, "power_returned_l3", 6666.0, W);
    num_at(&t, "gas_delivered", 12785.123, M3, utc(2010, 12, 9, 10, 25, 0));
}

#[test]
fn dsmr50_spec_example_np() {
    let t = telegram("dsmr50_spec_example_np.txt");
    assert!(matches!(t.crc, CrcStatus::Invalid { given: 0xEF2F, .. }));
    assert!(t.text_message.as_deref().unwrap().starts_with("0123456789"));
    num(&t, "voltage_l2", 220.2, V);
    num(&t, "current_l2", 2.0, A);
    num(&t, "power_delivered_l1", 1111.0, W);
    num_at(&t, "gas_delivered", 12785.123, M3, utc(2010, 12, 9, 10, 25, 0));
}

// ---------------------------------------------------------- Belgium (e-MUCS)

#[test]
fn dsmr5b_emucs211_spec_example_1() {
    let t = telegram("dsmr5b_emucs211_spec_example_1.txt");
    assert!(matches!(t.crc, CrcStatus::Invalid { given: 0x1234, .. }));
    // 31 53 41 47 33 31 30 31 30 32 31 36 30 35
    assert_eq!(t.equipment_id.as_deref(), Some("1SAG3101021605"));
    assert_eq!(t.meter_time, Some(utc(2020, 5, 12, 11, 54, 9)));
    num(&t, "energy_delivered_tariff2", 15.758, KWH);
    num(&t, "peak_demand_current_quarter", 2351.0, W); // 02.351*kW
    num_at(&t, "peak_demand_month", 2589.0, W, utc(2020, 5, 9, 11, 45, 58));
    num(&t, "voltage_l1", 234.7, V);
    num_at(&t, "gas_delivered", 112.384, M3, utc(2020, 5, 12, 11, 45, 58));
    num_at(&t, "water_delivered", 872.234, M3, utc(2020, 5, 12, 11, 45, 58));
    // 0-0:98.1.0(3)…: April, March and February 2020, newest first as sent.
    let history = t.monthly_peaks.as_ref().expect("0-0:98.1.0 decoded");
    let peaks: Vec<f64> = history.entries.iter().map(|e| e.peak_w).collect();
    assert_eq!(peaks, [3695.0, 5980.0, 4318.0]);
    assert_eq!(history.entries[0].peak_at, Some(utc(2020, 4, 23, 17, 25, 38)));
    assert!(!t.unknown.iter().any(|(id, _)| id == "0-0:98.1.0"));
}

#[test]
fn dsmr5b_fluvius_emucs171_gas_water() {
    let t = telegram("dsmr5b_fluvius_emucs171_gas_water.txt");
    assert_eq!(t.crc, CrcStatus::Valid);
    num(&t, "energy_delivered_tariff1", 0.034, KWH);
    num(&t, "energy_returned_tariff2", 0.011, KWH);
    num(&t, "peak_demand_current_quarter", 2351.0, W);
    num_at(&t, "peak_demand_month", 2589.0, W, utc(2020, 5, 9, 11, 45, 58));
    num(&t, "current_l1", 0.0, A);
    num_at(&t, "gas_delivered", 112.384, M3, utc(2020, 5, 12, 11, 45, 58));
    // water on 0-2:24.2.1 with device type 007
    num_at(&t, "water_delivered", 872.234, M3, utc(2020, 5, 12, 11, 45, 58));
    assert!(t.get("water_delivered").unwrap().counter);
}

#[test]
fn dsmr5b_fluvius_no_gas() {
    let t = telegram("dsmr5b_fluvius_no_gas.txt");
    assert!(matches!(t.crc, CrcStatus::Invalid { given: 0x99B6, .. }));
    num(&t, "energy_delivered_tariff1", 172.987, KWH);
    num(&t, "power_delivered", 638.0, W);
    num(&t, "voltage_l3", 229.3, V);
    num(&t, "current_l3", 1.0, A);
    // 0-1:24.2.3(632525252525W)(00000.000): inactive channel → no reading
    absent(&t, "gas_delivered");
}

#[test]
fn dsmr5b_fluvius_peak_data_2022() {
    let t = telegram("dsmr5b_fluvius_peak_data_2022.txt");
    assert!(matches!(t.crc, CrcStatus::Invalid { given: 0x59A5, .. }));
    assert_eq!(t.meter_time, Some(utc(2023, 2, 1, 14, 50, 56)));
    num(&t, "peak_demand_current_quarter", 78.0, W); // 00.078*kW
    num_at(&t, "peak_demand_month", 1566.0, W, utc(2023, 2, 1, 1, 0, 0));
    num(&t, "voltage_l2", 0.0, V);
    num(&t, "current_l1", 1.60, A);
    num(&t, "power_returned_l3", 48.0, W);
}

#[test]
fn dsmr5b_fluvius_polyphase_two_gas_one_inactive() {
    let t = telegram("dsmr5b_fluvius_polyphase_two_gas_one_inactive.txt");
    assert!(matches!(t.crc, CrcStatus::Invalid { given: 0xB315, .. }));
    num(&t, "energy_delivered_tariff1", 4423.770, KWH);
    num_at(&t, "peak_demand_month", 11173.0, W, utc(2023, 1, 16, 8, 0, 0));
    num(&t, "current_l1", 2.18, A);
    num_at(&t, "gas_delivered", 734.607, M3, utc(2023, 1, 19, 11, 46, 16));
    // second gas meter: valid capture time and unit, value 0 → still a reading
    num_at(&t, "gas_delivered_2", 0.0, M3, utc(2023, 1, 19, 11, 40, 5));
}

#[test]
fn dsmr5b_fluvius_single_phase_gas() {
    let t = telegram("dsmr5b_fluvius_single_phase_gas.txt");
    assert!(matches!(t.crc, CrcStatus::Invalid { given: 0x81A9, .. }));
    assert_eq!(t.meter_time, Some(utc(2020, 8, 7, 6, 27, 11)));
    num(&t, "energy_delivered_tariff2", 2549.919, KWH);
    num(&t, "power_returned", 611.0, W);
    num(&t, "voltage_l1", 235.6, V);
    num_at(&t, "gas_delivered", 1414.287, M3, utc(2020, 8, 7, 6, 25, 2));
}

// ------------------------------------------------- Luxembourg, Nordic, others

#[test]
fn dsmr5l_luxembourg_spec_example() {
    let t = telegram("dsmr5l_luxembourg_spec_example.txt");
    assert!(matches!(t.crc, CrcStatus::Invalid { given: 0x8B52, .. }));
    assert_eq!(t.version.as_deref(), Some("42"));
    // 0-0:42.0.0: 53 41 47 31 30 33 30 37 39 30 30 30 32 35 37 34
    assert_eq!(t.equipment_id.as_deref(), Some("SAG1030790002574"));
    num(&t, "energy_delivered_total", 25.653, KWH);
    num(&t, "energy_returned_total", 0.040, KWH);
    num(&t, "reactive_energy_returned_total", 63.781, "kvarh");
    num(&t, "apparent_power_delivered", 21.0, "VA"); // 00.021*kVA
    num(&t, "power_delivered", 5.0, W);
    num(&t, "voltage_l1", 233.0, V);
    num_at(&t, "gas_delivered", 0.006, M3, utc(2020, 7, 6, 8, 31, 40));
    num_at(&t, "gas_delivered_2", 28.103, M3, utc(2020, 7, 6, 8, 29, 0));
    // water channels 2/3: (632525252525S)(00000.000) → inactive
    absent(&t, "water_delivered");
}

#[test]
fn dsmr5s_kamstrup_omnia_three_phase() {
    let t = telegram("dsmr5s_kamstrup_omnia_three_phase.txt");
    assert!(matches!(t.crc, CrcStatus::Invalid { given: 0x3AF8, .. }));
    assert_eq!(t.header, "KAM5");
    assert_eq!(t.meter_time, None); // 250000000000W
    num(&t, "energy_delivered_total", 123.321, KWH);
    num(&t, "reactive_energy_delivered_total", 1234.432, "kvarh"); // *kVArh
    num(&t, "power_delivered", 2424.0, W);
    num(&t, "reactive_power_delivered", 1229.0, "var"); // 0001.229*kVAr
    num(&t, "reactive_power_delivered_l2", 490.0, "var");
    num(&t, "voltage_l2", 229.4, V);
    num(&t, "current_l3", 4.6, A);
}

#[test]
fn dsmr5s_sweden_kamstrup() {
    let t = telegram("dsmr5s_sweden_kamstrup.txt");
    assert_eq!(t.crc, CrcStatus::Valid);
    assert_eq!(t.meter_time, Some(utc(2021, 11, 15, 9, 9, 40)));
    num(&t, "energy_delivered_total", 3.997, KWH);
    num(&t, "energy_returned_total", 0.0, KWH);
    num(&t, "voltage_l3", 240.7, V);
    num(&t, "current_l1", 0.0, A);
}

#[test]
fn dsmr_lt_sagemcom_xt211() {
    let t = telegram("dsmr_lt_sagemcom_xt211.txt");
    assert!(matches!(t.crc, CrcStatus::Invalid { given: 0x3BA5, .. }));
    assert_eq!(t.header, "GRE5\\\\12341234_A");
    assert_eq!(t.meter_time, None); // 123412341234W
    assert_eq!(t.equipment_id.as_deref(), Some("123412341234"));
    // B = 1 electricity channel
    num(&t, "energy_delivered_tariff1", 1595.070, KWH);
    num(&t, "energy_returned_tariff1", 4478.038, KWH);
    num(&t, "power_delivered", 1622.0, W);
    num(&t, "current_l2", 17.19, A);
    num(&t, "power_delivered_l2", 3946.0, W);
    num_at(&t, "peak_demand_month", 15206.0, W, utc(2025, 3, 15, 0, 45, 0));
    num(&t, "peak_demand_current_quarter", 288.0, W);
}

#[test]
fn iskra_ie5_mie5t200() {
    let t = telegram("iskra_ie5_mie5t200.txt");
    assert!(matches!(t.crc, CrcStatus::Invalid { given: 0xAD3B, .. }));
    assert_eq!(t.version, None);
    assert_eq!(t.meter_time, Some(utc(2023, 2, 2, 11, 27, 47)));
    num(&t, "energy_returned_tariff2", 10.282, KWH);
    num(&t, "power_returned", 270.0, W);
    num(&t, "power_returned_l3", 627.0, W);
    num(&t, "voltage_l3", 243.3, V);
}

#[test]
fn q3d_easymeter_esy5q3db1024_com1() {
    let t = telegram("q3d_easymeter_esy5q3db1024_com1.txt");
    assert_eq!(t.crc, CrcStatus::Absent);
    assert_eq!(t.header, "ESY5Q3DB1024 V3.04");
    assert_eq!(t.equipment_id.as_deref(), Some("1ESY1313002565"));
    num(&t, "energy_delivered_total", 52185.7825309, KWH);
    num(&t, "energy_returned_total", 19949.3221493, KWH);
    num(&t, "power_delivered", 2124.86, W); // already W
    num(&t, "power_delivered_l1", 747.85, W);
    num(&t, "power_delivered_l3", 639.73, W);
    assert!(t
        .unknown
        .iter()
        .any(|(id, raw)| id == "1-0:96.5.5*255" && raw == "(80)"));
}

// ------------------------------------------------------- 2025–26 variants

#[test]
fn dsmr5b_iskra_ie5t200_2026_value_first_peak_tariff5() {
    let t = telegram("dsmr5b_iskra_ie5t200_2026_value_first_peak_tariff5.txt");
    assert_eq!(t.crc, CrcStatus::Absent);
    // 0-0:1.0.0(260104162515W)
    assert_eq!(t.meter_time, Some(utc(2026, 1, 4, 15, 25, 15)));
    num(&t, "energy_delivered_tariff1", 7105.942, KWH);
    num(&t, "energy_delivered_tariff2", 14830.476, KWH);
    num(&t, "energy_delivered_tariff5", 0.0, KWH);
    num(&t, "energy_returned_tariff2", 2914.252, KWH);
    num(&t, "energy_returned_tariff5", 0.0, KWH);
    num(&t, "peak_demand_current_quarter", 3336.0, W);
    // 1-0:1.6.0(08.796*kW)(260102010000): value first, local time without season
    // letter, 2 Jan 2026 01:00 CET.
    num_at(&t, "peak_demand_month", 8796.0, W, utc(2026, 1, 2, 0, 0, 0));
    num(&t, "voltage_l1", 133.8, V);
    num(&t, "current_l3", 18.65, A);
    assert!(t.malformed.is_empty(), "{:?}", t.malformed);
    assert!(t.unreadable_times.is_empty());
}

#[test]
fn dsmr5b_landisgyr_e360_2026_history_placeholder() {
    let t = telegram("dsmr5b_landisgyr_e360_2026_history_placeholder.txt");
    assert_eq!(t.meter_time, Some(utc(2026, 6, 24, 14, 12, 49)));
    num_at(&t, "peak_demand_month", 3440.0, W, utc(2026, 6, 6, 8, 15, 0));
    num_at(&t, "gas_delivered", 1284.807, M3, utc(2026, 6, 24, 14, 11, 23));
    let history = t.monthly_peaks.as_ref().expect("history");
    assert_eq!(history.entries.len(), 9);
    // (250801000000S)(35255255255255255S)(00.000*kW): July 2025, no peak time.
    assert_eq!(history.entries[0].peak_at, None);
    assert_eq!(history.entries[0].peak_w, 0.0);
    assert_eq!(history.entries[8].peak_w, 2438.0);
    assert_eq!(
        history.entries[8].month.map(|m| m.to_string()).as_deref(),
        Some("2026-05")
    );
}

#[test]
fn iec_iskra_me383_date_time_apart() {
    let t = telegram("iec_iskra_me383_date_time_apart.txt");
    // 1-0:0.9.2(150427) 1-0:0.9.1(140217): 27 Apr 2015 14:02:17 CEST.
    assert_eq!(t.meter_time, Some(utc(2015, 4, 27, 12, 2, 17)));
    assert_eq!(t.equipment_id.as_deref(), Some("52127969"));
    num(&t, "energy_delivered_total", 688.01, KWH);
    num(&t, "energy_delivered_tariff4", 1.82, KWH);
    num(&t, "reactive_energy_delivered_tariff3", 0.45, "kvarh");
    num(&t, "reactive_energy_delivered_tariff4", 1.77, "kvarh");
    // 1-0:1.6.0(000.000*kW) without a time: a peak of 0 W at the telegram's time.
    num(&t, "peak_demand_month", 0.0, W);
    assert!(t.get("peak_demand_month").unwrap().timestamp.is_none());
    assert!(t.unknown.iter().any(|(id, _)| id == "1-0:1.6.1"));
}
