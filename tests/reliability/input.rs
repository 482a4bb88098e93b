//! Reliability suite 4, bad input: every config key mutated (wrong type, out of
//! range, removed), huge files, invalid UTF-8 and symlink loops give a clear error
//! naming the file and line, never a panic; and every codec gets a fuzz target
//! (proptest over arbitrary input). CI runs a bounded number of cases per target;
//! `LONG_TESTS=1` runs twenty times as many (see docs/reliability.md).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use mesura::config::{self, ConfigError};
use proptest::prelude::*;
use serde_yaml_ng::{Mapping, Value as Yaml};

/// Cases per fuzz target: bounded in CI, more with `LONG_TESTS=1` (not `MESURA_*`:
/// the config loader reads those as overrides).
fn cases(ci: u32) -> u32 {
    if std::env::var_os("LONG_TESTS").is_some() {
        ci * 20
    } else {
        ci
    }
}

fn lookup(name: &str) -> Option<String> {
    // The examples take secrets from the environment; give every variable a value.
    Some(format!("value-of-{name}"))
}

/// The values each key is tried with: the wrong type, out of range, empty, huge.
fn bad_values() -> Vec<Yaml> {
    let seq = Yaml::Sequence(vec![Yaml::from(1), Yaml::from("x")]);
    let mut map = Mapping::new();
    map.insert(Yaml::from("nested"), Yaml::from(1));
    vec![
        Yaml::Null,
        Yaml::from(true),
        Yaml::from(-1),
        Yaml::from(0),
        Yaml::from(i64::MAX),
        Yaml::from(u64::MAX),
        Yaml::from(1e308),
        Yaml::from(f64::NAN),
        Yaml::from(-0.5),
        Yaml::from(""),
        Yaml::from("not a value"),
        Yaml::from("-5s"),
        Yaml::from("0s"),
        Yaml::from("99999999999999999999h"),
        Yaml::from("x".repeat(5000)),
        seq,
        Yaml::Mapping(map),
    ]
}

/// Every key path in a YAML tree (maps and lists), up to `depth` levels.
fn paths(value: &Yaml, prefix: &mut Vec<Yaml>, out: &mut Vec<Vec<Yaml>>, depth: usize) {
    if depth == 0 {
        return;
    }
    match value {
        Yaml::Mapping(m) => {
            for (k, v) in m {
                prefix.push(k.clone());
                out.push(prefix.clone());
                paths(v, prefix, out, depth - 1);
                prefix.pop();
            }
        }
        Yaml::Sequence(s) => {
            for (i, v) in s.iter().enumerate().take(3) {
                prefix.push(Yaml::from(i as u64));
                out.push(prefix.clone());
                paths(v, prefix, out, depth - 1);
                prefix.pop();
            }
        }
        _ => {}
    }
}

/// Sets (`Some`) or removes (`None`) the value at `path`.
fn mutate(tree: &Yaml, path: &[Yaml], new: Option<&Yaml>) -> Yaml {
    let mut tree = tree.clone();
    let mut node = &mut tree;
    for (i, key) in path.iter().enumerate() {
        let last = i + 1 == path.len();
        match (node, key) {
            (Yaml::Mapping(m), k) => {
                if last {
                    match new {
                        Some(v) => {
                            m.insert(k.clone(), v.clone());
                        }
                        None => {
                            m.remove(k);
                        }
                    }
                    break;
                }
                node = m.get_mut(k).expect("the path exists");
            }
            (Yaml::Sequence(s), Yaml::Number(n)) => {
                let i = n.as_u64().expect("an index") as usize;
                if last {
                    match new {
                        Some(v) => s[i] = v.clone(),
                        None => {
                            s.remove(i);
                        }
                    }
                    break;
                }
                node = &mut s[i];
            }
            _ => unreachable!("paths() only yields existing paths"),
        }
    }
    tree
}

/// Loads `text` as device file `file`; asserts no panic and that an error names
/// the file and a line. Returns whether it loaded.
fn load_device(file: &Path, text: &[u8], what: &str) -> bool {
    std::fs::write(file, text).expect("write the device file");
    let backends = ["sqlite", "csv", "mqtt", "uplink"];
    let result =
        catch_unwind(AssertUnwindSafe(|| config::load_device_file(file, &backends, &lookup))).unwrap_or_else(|_| {
            panic!(
                "load_device_file panicked on {what}:\n{}",
                String::from_utf8_lossy(text)
            )
        });
    match result {
        Ok(_) => true,
        Err(e) => {
            assert_clear(&e, file, what);
            false
        }
    }
}

fn assert_clear(e: &ConfigError, file: &Path, what: &str) {
    let text = e.to_string();
    assert!(
        text.contains(&file.display().to_string()),
        "{what}: the error does not name the file: {text}"
    );
    if matches!(e, ConfigError::Invalid { .. }) {
        assert!(text.contains("line "), "{what}: the error does not name a line: {text}");
    }
    assert!(
        text.len() < 20_000,
        "{what}: an unreadable error of {} bytes",
        text.len()
    );
}

fn example_files() -> Vec<PathBuf> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<PathBuf> = ["config.d/examples", "config.d"]
        .iter()
        .flat_map(|d| {
            std::fs::read_dir(root.join(d))
                .expect("the examples")
                .filter_map(|e| e.ok())
        })
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_key_of_every_device_example_mutated_gives_a_clear_error_or_loads() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut tried, mut refused) = (0u32, 0u32);
    for example in example_files() {
        let text = std::fs::read_to_string(&example).expect("read example");
        let tree: Yaml = serde_yaml_ng::from_str(&text).expect("the example is YAML");
        let file = dir.path().join(example.file_name().expect("a name"));
        assert!(
            load_device(&file, text.as_bytes(), &format!("{} as shipped", example.display())),
            "the shipped example {} must load",
            example.display()
        );
        let mut all = Vec::new();
        paths(&tree, &mut Vec::new(), &mut all, 4);
        for path in &all {
            let name = format!("{}: {:?}", example.display(), path);
            let mut variants: Vec<(String, Yaml)> = vec![(format!("{name} removed"), mutate(&tree, path, None))];
            for bad in bad_values() {
                variants.push((format!("{name} = {bad:?}"), mutate(&tree, path, Some(&bad))));
            }
            for (what, variant) in variants {
                let yaml = serde_yaml_ng::to_string(&variant).expect("serialise");
                tried += 1;
                if !load_device(&file, yaml.as_bytes(), &what) {
                    refused += 1;
                }
            }
        }
        // Removing the type is always an error, and names the missing key.
        let mut untyped = tree.clone();
        if let Yaml::Mapping(m) = &mut untyped {
            m.remove("type");
        }
        let yaml = serde_yaml_ng::to_string(&untyped).expect("serialise");
        assert!(!load_device(&file, yaml.as_bytes(), "no type"));
        std::fs::remove_file(&file).expect("remove");
    }
    println!("config mutations: {tried} tried, {refused} refused with a clear error, none panicked");
    assert!(tried > 1000, "only {tried} mutations");
}

#[test]
fn every_key_of_the_base_config_mutated_gives_a_clear_error_or_loads() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(root.join("config.yaml.example")).expect("config.yaml.example");
    // The example leaves the network backends commented out: add them so their keys are tried too.
    let mut tree: Yaml = serde_yaml_ng::from_str(&text).expect("YAML");
    let extra: Yaml = serde_yaml_ng::from_str(
        "mqtt: {host: 127.0.0.1, port: 1883, qos: 1, flush_interval: 1s, state_message: true, \
         outbox: {max_age: 1d, max_rows: 10}, homeassistant: {enabled: true, \
         statistics: {url: 'http://127.0.0.1:1', token: t, lookback: 12h}}}\n\
         uplink: {url: 'http://127.0.0.1:1/x', format: json, batch_interval: 1s, batch_size: 10, token: t}\n",
    )
    .expect("YAML");
    if let (Some(Yaml::Mapping(b)), Yaml::Mapping(e)) = (tree.get_mut("backends"), extra) {
        b.extend(e);
    }
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("config.yaml");
    let load = |yaml: &str, what: &str| {
        std::fs::write(&file, yaml).expect("write");
        let result = catch_unwind(AssertUnwindSafe(|| config::load_base(&file, &lookup, &[])))
            .unwrap_or_else(|_| panic!("load_base panicked on {what}:\n{yaml}"));
        if let Err(e) = &result {
            assert_clear(e, &file, what);
        }
        result.is_ok()
    };
    assert!(load(&serde_yaml_ng::to_string(&tree).expect("yaml"), "as shipped"));
    let mut all = Vec::new();
    paths(&tree, &mut Vec::new(), &mut all, 4);
    let mut tried = 0;
    for path in &all {
        let what = format!("{path:?}");
        load(
            &serde_yaml_ng::to_string(&mutate(&tree, path, None)).expect("yaml"),
            &format!("{what} removed"),
        );
        for bad in bad_values() {
            let yaml = serde_yaml_ng::to_string(&mutate(&tree, path, Some(&bad))).expect("yaml");
            load(&yaml, &format!("{what} = {bad:?}"));
            tried += 1;
        }
    }
    println!("base config mutations: {tried} tried, none panicked");
}

#[test]
fn huge_files_invalid_utf8_and_symlink_loops_are_clear_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("meter.yaml");

    let mut huge = b"type: simulated\nprofile: gas\n".to_vec();
    huge.resize(3 * 1024 * 1024, b'#');
    assert!(!load_device(&file, &huge, "a 3 MiB file"));
    let e = config::load_device_file(&file, &[], &lookup).expect_err("huge");
    assert!(e.to_string().contains("1 MiB"), "{e}");

    let bad = b"type: simulated\nprofile: gas\nnote: \xff\xfe\n".to_vec();
    assert!(!load_device(&file, &bad, "invalid UTF-8"));
    let e = config::load_device_file(&file, &[], &lookup).expect_err("utf8");
    assert!(e.to_string().contains("line 3"), "{e}");

    // Deeply nested YAML (a recursion bomb) and an alias bomb.
    let nested = format!(
        "type: simulated\nprofile: gas\nx: {}{}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    load_device(&file, nested.as_bytes(), "10,000 nested lists");
    let mut bomb = String::from("a: &a [x, x, x, x, x, x, x, x, x]\n");
    for i in 0..12 {
        let prev = if i == 0 { "a".to_owned() } else { format!("b{}", i - 1) };
        bomb.push_str(&format!(
            "b{i}: &b{i} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
        ));
    }
    bomb.push_str("type: simulated\nprofile: gas\n");
    load_device(&file, bomb.as_bytes(), "a billion-laughs alias bomb");
    std::fs::remove_file(&file).expect("remove");

    // A symlink loop inside config.d, and config.d itself a loop: the other files load.
    let devices = dir.path().join("config.d");
    std::fs::create_dir(&devices).expect("config.d");
    std::os::unix::fs::symlink(devices.join("b.yaml"), devices.join("a.yaml")).expect("symlink");
    std::os::unix::fs::symlink(devices.join("a.yaml"), devices.join("b.yaml")).expect("symlink");
    std::os::unix::fs::symlink(devices.join("self.yaml"), devices.join("self.yaml")).expect("symlink");
    std::fs::write(devices.join("good.yaml"), "type: simulated\nprofile: gas\n").expect("good");
    let set = catch_unwind(|| config::load_devices(&devices, &[], &lookup)).expect("no panic");
    assert_eq!(set.devices.len(), 1, "the good file loads");
    assert_eq!(set.errors.len(), 3, "{:?}", set.errors);
    for e in &set.errors {
        let text = e.to_string();
        assert!(text.contains("config.d/"), "{text}");
        println!("symlink loop: {text}");
    }
    let looped = dir.path().join("loop.d");
    std::os::unix::fs::symlink(&looped, &looped).expect("symlink");
    let set = config::load_devices(&looped, &[], &lookup);
    assert!(set.devices.is_empty());
    assert_eq!(set.errors.len(), 1, "{:?}", set.errors);
    assert!(set.errors[0].to_string().contains("loop.d"), "{}", set.errors[0]);
}

// ------------------------------------------------------------- fuzz targets --

/// Bytes biased towards what a codec looks for, so the fuzzer gets past the first check.
fn bytes_from(alphabet: &'static [u8], max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..max),
        prop::collection::vec(prop::sample::select(alphabet), 0..max),
    ]
}

/// Arbitrary JSON, nested a few levels, with the keys the HTTP monitors read.
fn json(keys: &'static [&'static str]) -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::from),
        any::<i64>().prop_map(serde_json::Value::from),
        any::<u64>().prop_map(serde_json::Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, Into::into)),
        "[a-z0-9 .:T-]{0,20}".prop_map(serde_json::Value::from),
    ];
    leaf.prop_recursive(4, 64, 8, move |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
            prop::collection::vec((prop::sample::select(keys), inner), 0..10)
                .prop_map(|kv| serde_json::Value::Object(kv.into_iter().map(|(k, v)| (k.to_owned(), v)).collect())),
        ]
    })
}

const DSMR_ALPHABET: &[u8] = b"/!\r\n()*:.-0123456789ABCDEFKWhm3VSX";
const KMP_ALPHABET: &[u8] = &[
    0x80, 0x40, 0x3f, 0x10, 0x0d, 0x06, 0x1b, 0x7f, 0xbf, 0xd9, 0xf2, 0xf9, 0x00, 0xff, 0x01, 0x3c,
];
const HOMEWIZARD_KEYS: &[&str] = &[
    "active_power_w",
    "power_w",
    "energy_import_t1_kwh",
    "monthly_power_peak_w",
    "monthly_power_peak_timestamp",
    "total_power_import_t1_kwh",
    "total_power_import_t2_kwh",
    "total_power_export_t1_kwh",
    "total_gas_m3",
    "gas_timestamp",
    "external",
    "type",
    "value",
    "unit",
    "timestamp",
    "active_voltage_l1_v",
    "wifi_strength",
];
const OWM_KEYS: &[&str] = &[
    "main",
    "temp",
    "humidity",
    "pressure",
    "wind",
    "speed",
    "deg",
    "clouds",
    "all",
    "dt",
    "weather",
    "rain",
    "1h",
    "visibility",
];
const EVOHOME_KEYS: &[&str] = &[
    "userId",
    "locationInfo",
    "locationId",
    "name",
    "gateways",
    "temperatureControlSystems",
    "zones",
    "zoneId",
    "temperatureStatus",
    "temperature",
    "isAvailable",
    "setpointStatus",
    "targetHeatTemperature",
    "setpointMode",
    "dhw",
    "stateStatus",
    "state",
    "mode",
    "systemModeStatus",
    "gatewayId",
    "systemId",
    "activeFaults",
];

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(4000), failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn fuzz_dsmr_framer_and_decoder(data in bytes_from(DSMR_ALPHABET, 2048), chunk in 1usize..300) {
        use mesura::protocols::dsmr::{check_crc, decode, Framer};
        let mut framer = Framer::new(1024);
        for part in data.chunks(chunk) {
            framer.push(part);
            while let Some(frame) = framer.next_frame() {
                if let Ok(frame) = frame {
                    let _ = decode(&frame.bytes);
                }
            }
        }
        let _ = decode(&data);
        let _ = check_crc(&data);
        if let Ok(t) = decode(&data) {
            for v in &t.values {
                let _ = t.number(&v.metric);
            }
        }
    }

    #[test]
    fn fuzz_kmp_frames_and_messages(data in bytes_from(KMP_ALPHABET, 256)) {
        use mesura::protocols::kmp;
        let _ = kmp::decode_frame(&data);
        let _ = kmp::decode_frame_from(&data, kmp::Direction::FromMeter);
        let _ = kmp::unstuff(&data);
        let _ = kmp::decode_register_data(&data);
        let _ = kmp::decode_request(&data);
        if let Ok(response) = kmp::decode_response(&data) {
            for r in response.registers() {
                let _ = r.value();
            }
        }
    }

    #[test]
    fn fuzz_modbus_point_decoding(words in prop::collection::vec(any::<u16>(), 0..80), word in any::<u16>(),
                                  scale in any::<f64>(), offset in any::<f64>()) {
        use mesura::protocols::modbus::{dpt9, neasmart, point, sunspec};
        for data_type in [point::DataType::U16, point::DataType::I16, point::DataType::U32, point::DataType::I32,
                          point::DataType::U64, point::DataType::I64, point::DataType::F32, point::DataType::F64,
                          point::DataType::Bool, point::DataType::String] {
            for order in [point::WordOrder::Big, point::WordOrder::Little] {
                let _ = point::decode_words(data_type, order, &words);
                let _ = point::decode_words(data_type, order, &words[..words.len().min(usize::from(data_type.span(2)))]);
            }
        }
        let _ = point::decode_string(&words);
        let _ = point::scale(f64::from(word), scale, offset);
        let _ = dpt9::decode(word);
        let _ = neasmart::decode(neasmart::Encoding::Temperature, word);
        let _ = neasmart::decode(neasmart::Encoding::Integer, word);
        let _ = sunspec::common(&words);
        let _ = sunspec::inverter(&words);
        let _ = sunspec::header(word, words.first().copied().unwrap_or(0), words.get(1).copied().unwrap_or(0));
        if let Some(sf) = sunspec::scale_factor(word) {
            let _ = sunspec::apply_scale_factor(scale, sf);
        }
    }

    #[test]
    fn fuzz_modbus_request_planning(spans in prop::collection::vec((0u8..4, any::<u16>(), 0u16..200), 0..30),
                                    gap in any::<u16>(), regs in any::<u16>(), bits in any::<u16>()) {
        use mesura::protocols::modbus::{plan, point::RegisterKind};
        let kinds = [RegisterKind::Holding, RegisterKind::Input, RegisterKind::Coil, RegisterKind::Discrete];
        let spans: Vec<plan::Span> = spans
            .into_iter()
            .map(|(k, address, count)| plan::Span { register: kinds[usize::from(k)], address, count })
            .collect();
        let limits = plan::Limits { max_gap: gap, max_registers: regs, max_bits: bits };
        let _ = plan::plan(&spans, limits);
    }

    #[test]
    fn fuzz_bme280_compensation(calib00 in prop::array::uniform26(any::<u8>()), calib26 in prop::array::uniform7(any::<u8>()),
                                data in prop::array::uniform8(any::<u8>())) {
        use mesura::protocols::bme280;
        if let Ok(c) = bme280::Calibration::parse(&calib00, &calib26) {
            let _ = bme280::compensate(&c, bme280::Raw::parse(&data));
        }
    }

    #[test]
    fn fuzz_homewizard_json(value in json(HOMEWIZARD_KEYS), bytes in bytes_from(b"{}[]\":,0123456789.e-", 200)) {
        use mesura::monitors::homewizard::{readings, V1, V2};
        let device: mesura::reading::DeviceId = Arc::from("p1");
        let now = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).single().expect("a time");
        let mut clock = mesura::monitors::device_time::DeviceClock::new(device.clone(), std::time::Duration::from_secs(86_400));
        for fields in [&V1, &V2] {
            let _ = readings(fields, &device, &value, now, &mut clock);
            if let Ok(parsed) = serde_json::from_slice::<serde_json::Value>(&bytes) {
                let _ = readings(fields, &device, &parsed, now, &mut clock);
            }
        }
    }

    #[test]
    fn fuzz_openweathermap_json(value in json(OWM_KEYS), bytes in bytes_from(b"{}[]\":,0123456789.e-", 200)) {
        use mesura::monitors::openweathermap::decode_weather;
        let _ = decode_weather(value.to_string().as_bytes());
        let _ = decode_weather(&bytes);
    }

    #[test]
    fn fuzz_evohome_json(value in json(EVOHOME_KEYS), bytes in bytes_from(b"{}[]\":,0123456789.e-", 200)) {
        use mesura::monitors::evohome::decode;
        let text = value.to_string();
        for body in [text.as_bytes(), &bytes[..]] {
            let _ = decode::decode_user_id(body);
            let _ = decode::decode_installation(body);
            let _ = decode::is_rate_limit_body(body);
            if let Ok(status) = decode::decode_status(body) {
                let _ = decode::metrics(&status, &["1".to_owned()]);
            }
        }
        // The installation and status documents are nested: wrap the value where they look.
        let wrapped = format!("[{{\"locationInfo\":{text},\"gateways\":[{{\"temperatureControlSystems\":[{text}]}}]}}]");
        let _ = decode::decode_installation(wrapped.as_bytes());
        let status = format!("{{\"gateways\":[{{\"temperatureControlSystems\":[{{\"zones\":[{text}],\"dhw\":{text}}}]}}]}}");
        if let Ok(status) = decode::decode_status(status.as_bytes()) {
            let _ = decode::metrics(&status, &[]);
        }
    }
}
