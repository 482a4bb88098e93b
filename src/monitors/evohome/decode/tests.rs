//! The decoders on the recorded answers in tests/fixtures/evohome/; every
//! expected value was read off the JSON by hand.

use super::*;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/evohome/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn status(name: &str) -> LocationStatus {
    decode_status(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn install(name: &str) -> Vec<LocationInfo> {
    decode_installation(&fixture(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn num(v: f64) -> MetricValue {
    MetricValue::Number(v, Unit::Celsius)
}

fn txt(s: &str) -> MetricValue {
    MetricValue::Text(s.into())
}

/// The metrics of a status, as (name, value) for easy comparison.
fn metric_map(status: &LocationStatus, ghosts: &[String]) -> Vec<(String, MetricValue)> {
    metrics(status, ghosts)
}

fn get<'a>(m: &'a [(String, MetricValue)], name: &str) -> Option<&'a MetricValue> {
    m.iter().find(|(n, _)| n == name).map(|(_, v)| v)
}

#[test]
fn slugs() {
    assert_eq!(slug("Living Room"), "living_room");
    assert_eq!(slug("Baño Princ."), "bano_princ");
    assert_eq!(slug("Office & Library"), "office_library");
    assert_eq!(slug("Dorm. Atras"), "dorm_atras");
    assert_eq!(slug("  THERMOSTAT  "), "thermostat");
    assert_eq!(slug("Straße Ørsted"), "strasse_orsted");
    assert_eq!(slug("Zone 01"), "zone_01");
    assert_eq!(slug("Кухня"), "");
    assert_eq!(slug(""), "");
}

#[test]
fn user_accounts() {
    assert_eq!(
        decode_user_id(&fixture("user_account_nl_2276512.json")).ok(),
        Some("2276512".into())
    );
    assert_eq!(
        decode_user_id(&fixture("user_account_uk_4000011.json"))
            .map(|s| s.is_empty())
            .ok(),
        Some(false)
    );
    assert_eq!(
        decode_user_id(&fixture("user_account_empty_install.json")).ok(),
        Some("4000001".into())
    );
    assert_eq!(decode_user_id(br#"{"userId": 42}"#).ok(), Some("42".into()));
    assert!(decode_user_id(b"{}").is_err());
    assert!(decode_user_id(b"not json").is_err());
}

#[test]
fn installations() {
    assert_eq!(install("installation_info_empty.json"), vec![]);
    let nl = install("installation_info_nl_2727366.json");
    assert_eq!(nl.len(), 1);
    assert_eq!(nl[0].id, "2727366");
    assert_eq!(nl[0].name.as_deref(), Some("My Home"));
    assert_eq!((nl[0].zone_count, nl[0].has_dhw), (2, false));
    let uk = install("installation_info_uk_3184115_12zones_dhw.json");
    assert_eq!(
        (uk[0].id.as_str(), uk[0].zone_count, uk[0].has_dhw),
        ("3184115", 12, true)
    );
    // The nameless zone of type Unknown is a ghost.
    let be = install("installation_info_be_4655156.json");
    assert_eq!(be[0].ghost_zones, vec!["6248903".to_string()]);
    assert_eq!(be[0].zone_count, 6);
    let four = install("installation_info_schema_4_locations.json");
    let ids: Vec<&str> = four.iter().map(|l| l.id.as_str()).collect();
    assert_eq!(ids, vec!["4001001", "4001002", "4001003", "4001004"]);
    assert_eq!(four.iter().map(|l| l.zone_count).collect::<Vec<_>>(), vec![12, 1, 0, 0]);
    assert!(four[0].has_dhw && !four[1].has_dhw);
    assert_eq!(
        install("installation_info_au_1111111_focusprowifi.json")[0].id,
        "1111111"
    );
    assert_eq!(install("installation_info_ar_3886561.json")[0].zone_count, 8);
    assert_eq!(install("installation_info_uk_2738909_9zones.json")[0].zone_count, 9);
    assert_eq!(
        install("installation_info_uk_111111_visionprowifi.json")[0].id,
        "111111"
    );
    assert!(decode_installation(b"{}").is_err());
    assert_eq!(decode_installation(br#"[{"gateways": []}, 3]"#).ok(), Some(vec![]));
}

#[test]
fn nl_two_zones_one_fault() {
    let s = status("location_status_nl_2727366.json");
    let m = metric_map(&s, &[]);
    assert_eq!(
        m,
        vec![
            ("thermostat_temperature".into(), num(22.0)),
            ("thermostat_setpoint".into(), num(5.0)),
            ("thermostat_mode".into(), txt("FollowSchedule")),
            ("thermostat_2_temperature".into(), num(22.0)),
            ("thermostat_2_setpoint".into(), num(20.0)),
            ("thermostat_2_mode".into(), txt("FollowSchedule")),
            ("system_mode".into(), txt("Auto")),
        ]
    );
    assert_eq!(
        s.faults,
        vec![Fault {
            source: "zone Thermostat".into(),
            fault_type: "TempZoneSensorCommunicationLost".into(),
            since: Some("2025-02-06T11:20:29".into()),
        }]
    );
}

#[test]
fn uk_twelve_zones_and_hot_water() {
    let s = status("location_status_uk_3184115_12zones_dhw.json");
    let m = metric_map(&s, &[]);
    assert_eq!(m.len(), 12 * 3 + 3 + 1);
    assert_eq!(get(&m, "living_room_temperature"), Some(&num(22.5)));
    assert_eq!(get(&m, "living_room_setpoint"), Some(&num(21.0)));
    assert_eq!(get(&m, "living_room_mode"), Some(&txt("TemporaryOverride")));
    assert_eq!(get(&m, "office_library_temperature"), Some(&num(21.5)));
    assert_eq!(get(&m, "office_library_setpoint"), Some(&num(23.0)));
    assert_eq!(get(&m, "master_bedroom_setpoint"), Some(&num(12.0)));
    assert_eq!(get(&m, "garage_temperature"), Some(&num(18.5)));
    assert_eq!(get(&m, "master_bath_temperature"), Some(&num(22.5)));
    assert_eq!(get(&m, "dhw_temperature"), Some(&num(44.0)));
    assert_eq!(get(&m, "dhw_state"), Some(&txt("On")));
    assert_eq!(get(&m, "dhw_mode"), Some(&txt("FollowSchedule")));
    assert_eq!(get(&m, "system_mode"), Some(&txt("Auto")));
    let faults: Vec<(&str, &str)> = s
        .faults
        .iter()
        .map(|f| (f.source.as_str(), f.fault_type.as_str()))
        .collect();
    assert_eq!(
        faults,
        vec![
            ("zone Laundry room", "TempZoneActuatorCommunicationLost"),
            ("zone Sophies Room", "TempZoneActuatorLowBattery"),
        ]
    );
}

#[test]
fn uk_away_with_unavailable_zones() {
    let s = status("location_status_uk_2738909_away_faults.json");
    let m = metric_map(&s, &[]);
    // Three zones have no temperature: absent, not 0; their setpoints and modes stay.
    for dead in ["dead_zone", "kitchen", "bathroom_dn"] {
        assert_eq!(get(&m, &format!("{dead}_temperature")), None, "{dead}");
        assert_eq!(get(&m, &format!("{dead}_setpoint")), Some(&num(5.0)), "{dead}");
    }
    assert_eq!(get(&m, "dead_zone_mode"), Some(&txt("PermanentOverride")));
    assert_eq!(get(&m, "main_room_temperature"), Some(&num(21.5)));
    assert_eq!(get(&m, "front_room_temperature"), Some(&num(19.5)));
    assert_eq!(get(&m, "kids_room_temperature"), Some(&num(20.5)));
    assert_eq!(get(&m, "kids_room_mode"), Some(&txt("PermanentOverride")));
    assert_eq!(get(&m, "system_mode"), Some(&txt("Away")));
    assert_eq!(m.iter().filter(|(n, _)| n.ends_with("_temperature")).count(), 6);
    assert_eq!(m.len(), 6 + 9 + 9 + 1);
    assert_eq!(s.faults.len(), 5);
    assert!(s
        .faults
        .iter()
        .any(|f| f.source == "zone Kitchen" && f.fault_type == "TempZoneSensorLowBattery"));
}

#[test]
fn argentina_away_with_overrides_and_accents() {
    let s = status("location_status_ar_3886561_away.json");
    let m = metric_map(&s, &[]);
    assert_eq!(get(&m, "system_mode"), Some(&txt("Away")));
    assert_eq!(get(&m, "bano_princ_temperature"), Some(&num(25.0)));
    assert_eq!(get(&m, "bano_princ_setpoint"), Some(&num(15.0)));
    assert_eq!(get(&m, "living_setpoint"), Some(&num(29.0)));
    assert_eq!(get(&m, "living_mode"), Some(&txt("TemporaryOverride")));
    assert_eq!(get(&m, "comedor_mode"), Some(&txt("PermanentOverride")));
    assert_eq!(get(&m, "dorm_atras_setpoint"), Some(&num(21.5)));
    assert_eq!(get(&m, "dorm_princ_temperature"), Some(&num(25.5)));
    assert_eq!(get(&m, "hall_pa_temperature"), Some(&num(25.0)));
    assert_eq!(m.len(), 8 * 3 + 1);
    assert!(s.faults.is_empty());
}

#[test]
fn belgium_skips_the_ghost_zone() {
    let s = status("location_status_be_4655156.json");
    let ghosts = install("installation_info_be_4655156.json")[0].ghost_zones.clone();
    let m = metric_map(&s, &ghosts);
    assert_eq!(m.len(), 5 * 3 + 1);
    assert_eq!(get(&m, "badkamer_temperature"), Some(&num(20.5)));
    assert_eq!(get(&m, "slaapkamer_setpoint"), Some(&num(15.0)));
    assert_eq!(get(&m, "katharina_temperature"), Some(&num(19.0)));
    assert!(m.iter().all(|(n, _)| !n.starts_with("zone_")), "{m:?}");
    // Without the installation's word, a nameless zone is named by its id.
    let m = metric_map(&s, &[]);
    assert_eq!(get(&m, "zone_6248903_setpoint"), Some(&num(62.0)));
    assert_eq!(get(&m, "zone_6248903_temperature"), None);
}

#[test]
fn single_thermostats_off_and_heat() {
    let m = metric_map(&status("location_status_au_1111111_focusprowifi_off.json"), &[]);
    assert_eq!(
        m,
        vec![
            ("thermostat_temperature".into(), num(23.0)),
            ("thermostat_setpoint".into(), num(23.0)),
            ("thermostat_mode".into(), txt("PermanentOverride")),
            ("system_mode".into(), txt("Off")),
        ]
    );
    let m = metric_map(&status("location_status_uk_111111_visionprowifi.json"), &[]);
    assert_eq!(get(&m, "thermostat_temperature"), Some(&num(21.5)));
    assert_eq!(get(&m, "system_mode"), Some(&txt("Heat")));
}

#[test]
fn locations_without_a_system_have_no_metrics() {
    for name in [
        "location_status_schema_no_gateway.json",
        "location_status_schema_no_tcs.json",
    ] {
        let s = status(name);
        assert_eq!(s.systems, 0, "{name}");
        assert!(metric_map(&s, &[]).is_empty(), "{name}");
    }
}

#[test]
fn odd_answers_never_panic_and_keep_what_they_can() {
    assert!(decode_status(b"").is_err());
    assert!(decode_status(b"[]").is_err());
    assert_eq!(decode_status(b"{}").map(|s| s.systems).ok(), Some(0));
    let body = br#"{"gateways":[{"temperatureControlSystems":[{"zones":[
        {"zoneId": 1, "name": "Hall", "temperatureStatus": {"temperature": "19.5"}, "setpointStatus": {"setpointMode": "VacationHold", "targetHeatTemperature": null}},
        {"zoneId": "2", "name": "hall", "temperatureStatus": {"temperature": 20, "isAvailable": true}},
        {"name": "no id"},
        {"zoneId": "3", "name": "DHW", "temperatureStatus": {"isAvailable": false, "temperature": 1}}
      ], "systemModeStatus": {"mode": "NewModeNobodyKnows"}, "dhw": {"dhwId": 9, "stateStatus": {"state": "Off"}}}]}]}"#;
    let s = decode_status(body).unwrap_or_else(|e| panic!("{e}"));
    let m = metric_map(&s, &[]);
    assert_eq!(
        m,
        vec![
            ("hall_temperature".into(), num(19.5)),
            ("hall_mode".into(), txt("VacationHold")),
            ("hall_2_temperature".into(), num(20.0)),
            ("dhw_state".into(), txt("Off")),
            ("system_mode".into(), txt("NewModeNobodyKnows")),
        ]
    );
    let s = decode_status(br#"{"gateways":[{"temperatureControlSystems":[{"zones":[{"zoneId":"3","name":"DHW","setpointStatus":{"targetHeatTemperature":7}}]}]}]}"#)
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(metric_map(&s, &[]), vec![("dhw_3_setpoint".into(), num(7.0))]);
}

#[test]
fn rate_limit_bodies() {
    assert!(is_rate_limit_body(
        br#"[{"code":"TooManyRequests","message":"Request count limitation exceeded, please try again later."}]"#
    ));
    assert!(is_rate_limit_body(br#"{"error":"attempt_limit_exceeded"}"#));
    assert!(!is_rate_limit_body(br#"[{"code":"Unauthorized","message":"x"}]"#));
    assert!(!is_rate_limit_body(b"<html>"));
}
