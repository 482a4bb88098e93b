//! Decode every fixture frame and compare against the values recorded in the
//! fixture files (not against values produced by this decoder).

use crate::support::kmp::{fixture, hex, int, FixtureValue, Json};
use mesura::protocols::kmp::{
    self, crc16, decode_request, decode_response, encode_get_register_request, encode_get_serial_no_request,
    encode_get_type_request, encode_register_response_from, register_by_id, unstuff, Request, Response,
};

/// Canonical decimal form: (negative, significant digits, exponent).
fn canon_decimal(text: &str) -> (bool, String, i64) {
    let text = text.trim();
    let (neg, text) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text),
    };
    let (mantissa, exp) = match text.find(['e', 'E']) {
        Some(pos) => (&text[..pos], text[pos + 1..].parse::<i64>().expect("exponent")),
        None => (text, 0),
    };
    let (int_part, frac_part) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    let mut digits = format!("{int_part}{frac_part}");
    let mut exp = exp - frac_part.len() as i64;
    let trimmed = digits.trim_start_matches('0').to_owned();
    digits = trimmed;
    while digits.ends_with('0') {
        digits.pop();
        exp += 1;
    }
    if digits.is_empty() {
        return (false, "0".to_owned(), 0);
    }
    (neg, digits, exp)
}

fn fixture_unit_symbol(unit: &str) -> &str {
    match unit {
        // PyKMP writes "°K"; the codec uses the SI symbol.
        "°K" => "K",
        other => other,
    }
}

/// Checks shared by every frame: stuffing and CRC as recorded.
fn check_physical(frame: &[u8], entry: &Json) {
    let inner = &frame[1..frame.len() - 1];
    let payload = unstuff(inner).expect("fixture frame unstuffs");
    assert_eq!(payload, hex(entry["unstuffed_payload_hex"].text()));
    if entry["crc_valid"].flag() {
        assert_eq!(crc16(&payload), 0, "CRC over payload+crc must be 0");
    }
}

fn check_request(entry: &Json) -> usize {
    let frame = hex(entry["frame_hex"].text());
    check_physical(&frame, entry);
    let address = int(entry["destination_address"].text()) as u8;
    let command = int(entry["command_id"].text()) as u8;
    let decoded = decode_request(&frame).expect("fixture request decodes");
    assert_eq!(decoded.address(), address);
    match command {
        kmp::CMD_GET_REGISTER => {
            let registers: Vec<u16> = entry["requested_registers"]
                .items()
                .iter()
                .map(|r| int(r.text()) as u16)
                .collect();
            assert_eq!(
                encode_get_register_request(address, &registers).expect("encodes"),
                frame,
                "request must encode byte-exact"
            );
            assert_eq!(decoded, Request::GetRegister { address, registers });
        }
        kmp::CMD_GET_TYPE => {
            assert_eq!(encode_get_type_request(address), frame);
            assert_eq!(decoded, Request::GetType { address });
        }
        kmp::CMD_GET_SERIAL_NO => {
            assert_eq!(encode_get_serial_no_request(address), frame);
            assert_eq!(decoded, Request::GetSerialNo { address });
        }
        other => panic!("unexpected fixture command {other:#04x}"),
    }
    1
}

fn check_register_response(entry: &Json) -> usize {
    let frame = hex(entry["frame_hex"].text());
    check_physical(&frame, entry);
    let address = int(entry["destination_address"].text()) as u8;
    assert_eq!(int(entry["command_id"].text()) as u8, kmp::CMD_GET_REGISTER);
    let response = decode_response(&frame).expect("fixture response decodes");
    let Response::Registers {
        address: got_address,
        registers,
    } = &response
    else {
        panic!("expected a register response, got {response:?}");
    };
    assert_eq!(*got_address, address);
    let expected = entry["registers"].items();
    assert_eq!(registers.len(), expected.len());
    for (got, want) in registers.iter().zip(expected) {
        let id = want["register_id"].num() as u16;
        assert_eq!(got.register(), id);
        assert_eq!(got.register(), int(want["register_id_hex"].text()) as u16);
        assert_eq!(u64::from(got.unit().code()), want["unit_code"].num());
        assert_eq!(
            got.unit().symbol(),
            fixture_unit_symbol(want["unit"].text()),
            "unit symbol of register {id:#06x}"
        );
        assert_eq!(u64::from(got.length()), want["length"].num());
        assert_eq!(u64::from(got.si_ex()), int(want["si_ex"].text()));
        assert_eq!(got.mantissa(), want["mantissa"].num());
        let value_text = want["value"].text();
        let want_value: f64 = value_text.parse().expect("fixture value parses");
        assert_eq!(got.value(), want_value, "value of register {id:#06x}");
        assert_eq!(
            canon_decimal(&got.decimal_string()),
            canon_decimal(value_text),
            "exact decimal of register {id:#06x}"
        );
        if want["register_name"].as_str().is_some() {
            assert!(
                register_by_id(id).is_some(),
                "register {id:#06x} named in fixture missing from catalogue"
            );
        }
    }
    // The simulator encoder reproduces the real meter's bytes exactly
    // (including stuffing of 0x06/0x0D/0x80 in the data).
    assert_eq!(encode_register_response_from(address, registers), frame);
    1
}

#[test]
fn multical403_frames() {
    let doc = fixture("kmp_frames_multical403.json");
    let mut requests = 0;
    let mut responses = 0;
    for group in ["single_register", "multi_register"] {
        for exchange in doc[group].items() {
            let request = &exchange["request"];
            if !request.is_null() {
                requests += check_request(request);
                // A real meter answers exactly the registers asked for.
                let asked: Vec<u16> = request["requested_registers"]
                    .items()
                    .iter()
                    .map(|r| int(r.text()) as u16)
                    .collect();
                let answer = decode_response(&hex(exchange["response"]["frame_hex"].text())).expect("decodes");
                assert_eq!(kmp::unanswered_registers(&asked, answer.registers()), Ok(vec![]));
            }
            responses += check_register_response(&exchange["response"]);
        }
    }
    assert_eq!(requests, 12);
    assert_eq!(responses, 13);
}

#[test]
fn protocol_example_frames() {
    let doc = fixture("kmp_frames_protocol_examples.json");
    let mut checked = 0;
    for entry in doc["frames"].items() {
        let frame = hex(entry["frame_hex"].text());
        match entry["direction"].text() {
            "to_meter" => checked += check_request(entry),
            "from_meter" => {
                let command = int(entry["command_id"].text()) as u8;
                if command == kmp::CMD_GET_REGISTER {
                    checked += check_register_response(entry);
                    continue;
                }
                check_physical(&frame, entry);
                assert_eq!(command, kmp::CMD_GET_SERIAL_NO);
                let address = int(entry["destination_address"].text()) as u8;
                let payload = hex(entry["unstuffed_payload_hex"].text());
                let expected_serial = u32::from_be_bytes([payload[2], payload[3], payload[4], payload[5]]);
                assert_eq!(
                    decode_response(&frame),
                    Ok(Response::SerialNo {
                        address,
                        serial: expected_serial
                    })
                );
                assert_eq!(
                    kmp::encode_response(&Response::SerialNo {
                        address,
                        serial: expected_serial
                    }),
                    frame
                );
                checked += 1;
            }
            other => panic!("unknown direction {other}"),
        }
    }
    assert_eq!(checked, 10);
}

#[test]
fn protocol_example_serial_matches_description() {
    // "GetSerialNo response (Kamstrup doc 6.2.2), serial 0x01234567 = 19088743"
    let response = decode_response(&hex("403f0201234567e9560d")).expect("decodes");
    assert_eq!(
        response,
        Response::SerialNo {
            address: 0x3F,
            serial: 19_088_743
        }
    );
}

#[test]
fn register_map_fixture_agrees_with_codec_tables() {
    let doc = fixture("kmp_register_map.json");
    for unit in doc["units"].items() {
        let code = unit["code"].num() as u8;
        let parsed =
            kmp::Unit::from_code(code).unwrap_or_else(|| panic!("unit code {code} from the fixture table is unknown"));
        assert_eq!(parsed.code(), code);
    }
    assert_eq!(doc["units"].items().len(), kmp::Unit::ALL.len());
    for register in doc["registers"].items() {
        let id = register["id"].num() as u16;
        assert_eq!(id as u64, int(register["id_hex"].text()));
        assert!(
            register_by_id(id).is_some(),
            "register {id:#06x} ({}) missing from catalogue",
            register["name"].text()
        );
    }
    let bytes = &doc["byte_codes"];
    assert_eq!(int(bytes["start_to_meter"].text()) as u8, kmp::START_TO_METER);
    assert_eq!(int(bytes["start_from_meter"].text()) as u8, kmp::START_FROM_METER);
    assert_eq!(int(bytes["stop"].text()) as u8, kmp::STOP);
    assert_eq!(int(bytes["ack"].text()) as u8, kmp::ACK);
    assert_eq!(int(bytes["stuffing_escape"].text()) as u8, kmp::ESCAPE);
    let mut stuffed: Vec<u8> = bytes["stuffed_bytes"]
        .items()
        .iter()
        .map(|b| int(b.text()) as u8)
        .collect();
    stuffed.sort_unstable();
    let mut ours = kmp::STUFFED_BYTES.to_vec();
    ours.sort_unstable();
    assert_eq!(stuffed, ours);
    let commands = &doc["command_ids"];
    assert_eq!(int(commands["GetType"].text()) as u8, kmp::CMD_GET_TYPE);
    assert_eq!(int(commands["GetSerialNo"].text()) as u8, kmp::CMD_GET_SERIAL_NO);
    assert_eq!(int(commands["GetRegister"].text()) as u8, kmp::CMD_GET_REGISTER);
    assert_eq!(
        int(doc["destination_addresses"]["heat_meter"].text()) as u8,
        kmp::ADDRESS_HEAT_METER
    );
}

#[test]
fn clock_register_fixture() {
    // Real MULTICAL 403 clock register 1002 = 200243 (hh:mm:ss).
    let response = decode_response(&hex("403f1003ea2f040000030e33b2320d")).expect("decodes");
    let clock = response.register(kmp::registers::CLOCK).expect("clock present");
    assert_eq!(clock.clock(), Some((20, 2, 43)));
}
