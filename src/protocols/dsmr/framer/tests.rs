//! Unit tests of the framer; the fixture-based ones are in tests/it/devices/dsmr_streams.rs.
use super::*;

fn telegram(body: &str) -> Vec<u8> {
    let mut t = format!("/TST5 test\r\n\r\n{body}!").into_bytes();
    let crc = crc::crc16_arc(&t);
    t.extend_from_slice(format!("{crc:04X}\r\n").as_bytes());
    t
}

fn drain(f: &mut Framer) -> Vec<Result<Frame, FrameError>> {
    std::iter::from_fn(|| f.next_frame()).collect()
}

#[test]
fn single_valid() {
    let t = telegram("1-0:1.8.1(000001.000*kWh)\r\n");
    let mut f = Framer::default();
    f.push(&t);
    let out = drain(&mut f);
    assert_eq!(out.len(), 1);
    let frame = out[0].as_ref().unwrap();
    assert_eq!(frame.bytes, t);
    assert_eq!(frame.crc, CrcStatus::Valid);
    assert_eq!(f.stats().frames, 1);
    assert_eq!(f.stats().discarded_bytes, 0);
}

#[test]
fn slash_inside_parentheses_is_data() {
    let t = telegram("0-0:96.13.0(test-/-test)\r\n");
    let mut f = Framer::default();
    f.push(&t);
    let out = drain(&mut f);
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].as_ref().unwrap().crc, CrcStatus::Valid);
}

#[test]
fn header_mid_line_truncates() {
    let mut s = b"/TST5 a\r\n\r\n1-0:1.8.1(1*kWh)".to_vec();
    let t = telegram("1-0:1.8.1(2*kWh)\r\n");
    s.extend_from_slice(&t);
    let mut f = Framer::default();
    f.push(&s);
    let out = drain(&mut f);
    assert_eq!(out.len(), 2);
    assert!(matches!(out[0], Err(FrameError::Truncated { discarded: 27 })));
    assert_eq!(out[1].as_ref().unwrap().bytes, t);
}

#[test]
fn junk_before_and_after() {
    let t = telegram("1-0:1.8.1(1*kWh)\r\n");
    let mut s = b"noise\r\n".to_vec();
    s.extend_from_slice(&t);
    s.extend_from_slice(b"  123\r\n\xff\xff\r\n");
    s.extend_from_slice(&t);
    let mut f = Framer::default();
    f.push(&s);
    let out = drain(&mut f);
    assert_eq!(out.len(), 4);
    assert!(matches!(out[0], Err(FrameError::Garbage { discarded: 7 })));
    assert!(out[1].is_ok());
    assert!(matches!(out[2], Err(FrameError::Garbage { discarded: 11 })));
    assert!(out[3].is_ok());
    assert_eq!(f.stats().discarded_bytes, 18);
}

#[test]
fn slash_in_a_value_while_hunting_is_not_a_start() {
    let t = telegram("1-0:1.8.1(1*kWh)\r\n");
    // Joined in the middle of a telegram: its text message and a value hold a `/`
    // followed by letters, one even by a whole header.
    let mut s = b"x(see /ISk5\\2MT382-1000 now)\r\n0-0:96.13.0(a /KFM5 b)\r\n1-0:1.8.1(9*kWh/h)\r\n!0000\r\n".to_vec();
    s.extend_from_slice(&t);
    let mut f = Framer::default();
    f.push(&s);
    let out = drain(&mut f);
    assert_eq!(out.len(), 2, "{out:?}");
    assert!(matches!(out[0], Err(FrameError::Garbage { .. })));
    assert_eq!(out[1].as_ref().unwrap().bytes, t);
    let junk = s.len() - t.len();
    let whitespace = s[..junk].iter().filter(|b| b.is_ascii_whitespace()).count();
    assert_eq!(f.stats().junk_bytes, (junk - whitespace) as u64);
}

#[test]
fn header_after_junk_on_its_line_starts_a_telegram() {
    let t = telegram("1-0:1.8.1(1*kWh)\r\n");
    for junk in [
        &b"\x00"[..],
        b"\xff",
        b"\r\n\x00",
        b"\xff\xfe\x80",
        b"noise",
        b"x/",
        b"//",
        b"\r\n/x\x00",
    ] {
        let mut s = junk.to_vec();
        s.extend_from_slice(&t);
        s.extend_from_slice(junk);
        s.extend_from_slice(&t);
        let mut f = Framer::default();
        f.push(&s);
        let frames: Vec<_> = drain(&mut f).into_iter().filter_map(Result::ok).collect();
        assert_eq!(frames.len(), 2, "junk {junk:?}");
        assert!(frames.iter().all(|fr| fr.bytes == t), "junk {junk:?}");
        let counted = junk.iter().filter(|b| !b.is_ascii_whitespace()).count() as u64;
        assert_eq!(f.stats().junk_bytes, 2 * counted, "junk {junk:?}");
        assert_eq!(f.stats().truncated + f.stats().oversize, 0, "junk {junk:?}");
    }
}

#[test]
fn what_an_identification_line_is() {
    let id = |line: &[u8]| {
        let mut f = Framer::default();
        f.push(b"\x00");
        f.push(line);
        f.push(b"\r\n1-0:1.8.1(1*kWh)\r\n!\r\n");
        drain(&mut f).into_iter().any(|r| r.is_ok())
    };
    for real in [
        &b"/ISk5\\2MT382-1000"[..],
        b"/KFM5KAIFA-METER",
        b"/XMX5LGBBFFB231237741",
        b"/Ene5\\T210-D ESMR5.0",
        b"/FLU5\\253769484_A",
        b"/EST5\\253710000_A",
        b"/Lux5\\253694471_M",
        b"/KAM5",
        b"/ADN9 6534",
        b"/ISk9\\2MIE7T-200",
        b"/ESY5Q3DB1024 V3.04",
        b"/NWA-WARMTELINK",
    ] {
        assert!(id(real), "{}", String::from_utf8_lossy(real));
    }
    for not in [
        &b"/"[..],
        b"/ABC",
        b"/AB5x",
        b"/12345",
        b"/ABC5(1)",
        b"/ABC5 x)",
        b"/ABC5!",
        b"/ABC5 a/b",
        b"/ABC5\x00",
        b"/ABC5\r\r",
        &[&b"/ABC5"[..], &[b'x'; 60]].concat(),
    ] {
        assert!(!id(not), "{}", String::from_utf8_lossy(not));
    }
}

#[test]
fn oversize_then_recovers() {
    let big = telegram(&"1-0:1.8.1(000001.000*kWh)\r\n".repeat(20));
    let small = telegram("1-0:1.8.1(1*kWh)\r\n");
    let mut f = Framer::new(200);
    f.push(&big);
    f.push(&small);
    let out = drain(&mut f);
    assert_eq!(out.len(), 2);
    assert!(matches!(
        out[0],
        Err(FrameError::Oversize {
            discarded: 201,
            max_size: 200
        })
    ));
    assert_eq!(out[1].as_ref().unwrap().bytes, small);
    assert_eq!(f.stats().oversize, 1);
    assert_eq!(f.stats().garbage, 0);
    assert_eq!(f.stats().discarded_bytes, big.len() as u64);
}

#[test]
fn crc_forms() {
    let mut f = Framer::default();
    f.push(b"/A\r\n\r\n1-0:1.8.1(1*kWh)\r\n!\r\n");
    f.push(b"/A\r\n\r\n1-0:1.8.1(1*kWh)\r\n!B9F\r\n");
    f.push(b"/A\r\n\r\n1-0:1.8.1(1*kWh)\r\n!1234/A\r\n\r\n!\n");
    let out = drain(&mut f);
    assert_eq!(out.len(), 4);
    assert_eq!(out[0].as_ref().unwrap().crc, CrcStatus::Absent);
    assert!(matches!(
        out[1].as_ref().unwrap().crc,
        CrcStatus::Invalid { given: 0x0B9F, .. }
    ));
    assert!(matches!(
        out[2].as_ref().unwrap().crc,
        CrcStatus::Invalid { given: 0x1234, .. }
    ));
    assert_eq!(out[3].as_ref().unwrap().bytes, b"/A\r\n\r\n!\n");
}

#[test]
fn bulk_copy_equals_stepping_on_every_fixture() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/dsmr");
    let mut inputs: Vec<Vec<u8>> = Vec::new();
    for sub in [dir.clone(), dir.join("streams")] {
        for entry in std::fs::read_dir(sub).unwrap().flatten() {
            if entry.path().extension().is_some_and(|e| e == "txt") {
                inputs.push(std::fs::read(entry.path()).unwrap());
            }
        }
    }
    assert!(inputs.len() > 40);
    inputs.push(inputs.concat());
    for data in &inputs {
        for max in [64, 300, 700, 1000, 2048, DEFAULT_MAX_TELEGRAM_SIZE] {
            let (mut bulk, mut step) = (Framer::new(max), Framer::new(max));
            bulk.push(data);
            step.push_stepwise(data);
            assert_eq!(drain(&mut bulk), drain(&mut step), "max {max}");
            assert_eq!(bulk.stats(), step.stats());
            assert_eq!(bulk.pending_len(), step.pending_len());
        }
    }
}

#[test]
fn reset_counts_partial() {
    let mut f = Framer::default();
    f.push(b"/A\r\n\r\n1-0:1.8.1(1*k");
    assert_eq!(f.pending_len(), 19);
    f.reset();
    assert!(matches!(
        f.next_frame(),
        Some(Err(FrameError::Truncated { discarded: 19 }))
    ));
    assert_eq!(f.stats().truncated, 1);
}

#[test]
fn bulk_copy_equals_stepping_on_random_input_in_random_chunks() {
    // Every byte that means something to the framer, often; parentheses spanning
    // lines, `/` and `!` inside and outside them, telegrams at every size limit.
    let alphabet = b"/!()\r\n\n1A:*.  00ISK5\\";
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for _ in 0..3000 {
        let len = (next() % 400) as usize;
        let mut data: Vec<u8> = (0..len)
            .map(|_| alphabet[(next() % alphabet.len() as u64) as usize])
            .collect();
        // Now and then a real header, so that bodies are reached often.
        if next() % 2 == 0 {
            let at = (next() % (len as u64 + 1)) as usize;
            data.splice(at..at, b"\n/ISK5\\2M550T-1011\r\n\r\n".iter().copied());
        }
        for max in [16, 64, 300, DEFAULT_MAX_TELEGRAM_SIZE] {
            let (mut bulk, mut step) = (Framer::new(max), Framer::new(max));
            let mut rest = &data[..];
            while !rest.is_empty() {
                let n = 1 + (next() % 64) as usize;
                let (chunk, after) = rest.split_at(n.min(rest.len()));
                bulk.push(chunk);
                rest = after;
            }
            step.push_stepwise(&data);
            assert_eq!(
                drain(&mut bulk),
                drain(&mut step),
                "max {max}, {:?}",
                String::from_utf8_lossy(&data)
            );
            assert_eq!(bulk.stats(), step.stats());
            assert_eq!(bulk.pending_len(), step.pending_len());
        }
    }
}
