//! Unit tests of the decoder; the fixture-based ones are in tests/it/devices/ and `super::super::tests`.
use super::*;

#[test]
fn hex_text() {
    // One pool of strings for all of them, each result handed back to it, as a
    // `Decoder` does: later texts are written over earlier ones.
    let mut texts = Texts::default();
    let mut hex = |raw: &str| {
        let out = decode_hex_text(raw, &mut texts);
        if let Some(s) = &out {
            texts.keep(s.clone());
        }
        out
    };
    assert_eq!(
        hex("4B384547303034303436333935353037").as_deref(),
        Some("K8EG004046395507")
    );
    assert_eq!(hex("00000000000000").as_deref(), Some("00000000000000"));
    assert_eq!(hex("xxxx").as_deref(), Some("xxxx"));
    assert_eq!(hex("ABC").as_deref(), Some("ABC"));
    assert_eq!(hex(""), None);
    // One good digit in a pair is not hex text, whichever side it is on.
    assert_eq!(hex("4B4Z").as_deref(), Some("4B4Z"));
    assert_eq!(hex("4BZ4").as_deref(), Some("4BZ4"));
    assert_eq!(hex("4b4f").as_deref(), Some("KO"));
}

/// The internal vectors keep their allocation from one telegram to the next (the
/// reason for `emptied`): a second telegram grows nothing.
#[test]
fn scratch_vectors_are_kept() {
    let telegram = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/dsmr/dsmr50_iskra_am550_real.txt"
    ))
    .unwrap();
    let mut t = Telegram::empty();
    let mut scratch = Scratch::default();
    decode_into(&mut t, &mut scratch, &telegram, None, None).unwrap();
    let sized = (scratch.groups.capacity(), scratch.spans.capacity());
    assert!(sized.0 >= 36 && sized.1 >= 36, "{sized:?}");
    let at = (scratch.groups.as_ptr(), scratch.spans.as_ptr());
    decode_into(&mut t, &mut scratch, &telegram, None, None).unwrap();
    assert_eq!((scratch.groups.as_ptr(), scratch.spans.as_ptr()), at);
    assert_eq!(t, decode(&telegram).unwrap());
}

#[test]
fn times_that_are_no_date_are_listed_where_they_were() {
    let t = decode(
        b"/ISk5\\2MT382-1000\r\n\r\n0-0:1.0.0(000000000000W)\r\n1-0:1.8.1(000123.456*kWh)\r\n\
          0-1:24.1.0(003)\r\n0-1:24.2.1(991399999999W)(00012.345*m3)\r\n\
          0-2:24.2.1(632525252525W)(00000.000)\r\n!\r\n",
    )
    .expect("telegram");
    assert_eq!(t.meter_time, None);
    let gas = t.get("gas_delivered").expect("gas kept, its time unknown");
    assert_eq!(gas.timestamp, None);
    let listed: Vec<(String, &str)> = t
        .unreadable_times
        .iter()
        .map(|(o, raw)| (o.to_string(), raw.as_str()))
        .collect();
    // The idle channel 2 (zero, placeholder time) is dropped, not listed.
    assert_eq!(
        listed,
        [
            ("0-0:1.0.0".to_string(), "000000000000W"),
            ("0-1:24.2.1".to_string(), "991399999999W")
        ]
    );
    // A meter with a good clock lists nothing.
    let fine = decode(b"/ISk5\\2MT382-1000\r\n\r\n0-0:1.0.0(181106140429W)\r\n1-0:1.8.1(000123.456*kWh)\r\n!\r\n")
        .expect("telegram");
    assert!(fine.unreadable_times.is_empty());
}
