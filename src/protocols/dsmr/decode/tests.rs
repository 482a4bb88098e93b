//! Unit tests of the decoder; the fixture-based ones are in tests/it/devices/ and `super::super::tests`.
use super::*;

#[test]
fn hex_text() {
    // One pool of strings for all of them, each result handed back to it, as a
    // `Decoder` does: later texts are written over earlier ones. Once without
    // remembering texts, then twice remembering them (the second time, every
    // text is one remembered or one of those past the room for them).
    hex_texts(&mut Texts::default(), 0);
    let mut remembering = Texts {
        remember_hex: true,
        ..Texts::default()
    };
    hex_texts(&mut remembering, 1);
    hex_texts(&mut remembering, 2);
}

fn hex_texts(texts: &mut Texts, round: usize) {
    let mut hex = |raw: &str| {
        let out = decode_hex_text(raw, texts);
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
    if texts.remember_hex {
        // Again, from what was remembered (as many as there is room for).
        assert_eq!(texts.hex.len(), MAX_HEX_TEXTS, "round {round}");
        for (raw, decoded) in texts.hex.clone() {
            assert_eq!(decode_hex_text(&raw, texts), Some(decoded), "round {round}");
        }
        assert_eq!(texts.hex.len(), MAX_HEX_TEXTS);
    }
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

/// Every fixture's telegrams: tests/fixtures/dsmr, and the directory named by
/// `DSMR_MORE_FIXTURES` when set (captures kept outside the repository).
fn fixture_telegrams() -> Vec<Vec<u8>> {
    let mut dirs = vec![concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/dsmr").to_string()];
    dirs.extend(std::env::var("DSMR_MORE_FIXTURES"));
    let mut files: Vec<_> = dirs
        .iter()
        .filter_map(|dir| std::fs::read_dir(dir).ok())
        .flatten()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    let mut telegrams = Vec::new();
    for path in files {
        // The file as it is (`decode` takes its first telegram, framed or not),
        // then each telegram the framer cuts from it.
        let bytes = std::fs::read(&path).unwrap();
        telegrams.push(bytes.clone());
        let mut framer = crate::protocols::dsmr::Framer::default();
        framer.push(&bytes);
        while let Some(frame) = framer.next_frame() {
            if let Ok(frame) = frame {
                telegrams.push(frame.bytes);
            }
        }
    }
    assert!(telegrams.len() > 80, "fixtures not found: {}", telegrams.len());
    telegrams
}

/// A stream's decoder remembers each line's identifier from the telegram before
/// (`KnownIds`), and each object's table route (`Routes`): after any telegram,
/// any other decodes as it does alone. Every
/// fixture after others, and each after itself with one byte of its first
/// lines' identifiers changed to every byte that means something on a P1 line.
#[test]
fn remembered_identifiers_change_nothing() {
    let telegrams = fixture_telegrams();
    // (A telegram `decode` refuses, the decoder refuses too, whatever came before.)
    let alone: Vec<_> = telegrams.iter().map(|t| decode(t)).collect();
    let mut t = Telegram::empty();
    let mut scratch = Scratch::for_a_stream();
    // Each after itself, after its neighbours in the list (another meter, as
    // often as not) and after a few far ones.
    for (i, before) in telegrams.iter().enumerate() {
        let near = i.saturating_sub(2)..(i + 3).min(telegrams.len());
        let far = [0, telegrams.len() / 3, telegrams.len() / 2, telegrams.len() - 1];
        for j in near.chain(far) {
            let after = &telegrams[j];
            let _ = decode_into(&mut t, &mut scratch, before, None, None);
            let result = decode_into(&mut t, &mut scratch, after, None, None).map(|()| &t);
            assert_eq!(
                result,
                alone[j].as_ref().map_err(Clone::clone),
                "telegram {j} after {i}"
            );
        }
    }
    let mut changed = 0;
    // One telegram per meter (per header line): a capture's telegrams share their
    // lines, and the debug build pays for each of these decodes.
    let mut meters = std::collections::HashSet::new();
    for (i, telegram) in telegrams.iter().enumerate() {
        let Ok(alone) = &alone[i] else { continue };
        // The first bytes of its first lines after the header: every part of an
        // identifier, its `(`, and the first bytes of the value.
        let Some(header_end) = telegram.iter().position(|&b| b == b'\n') else {
            continue;
        };
        if !meters.insert(&telegram[..header_end]) {
            continue;
        }
        let line_starts: Vec<usize> = (header_end + 1..telegram.len())
            .filter(|&at| telegram[at - 1] == b'\n')
            .take(3)
            .collect();
        for start in line_starts {
            for at in start..(start + 13).min(telegram.len()) {
                for b in b"0-:.( \nA" {
                    let mut mutated = telegram.clone();
                    mutated[at] = *b;
                    let Ok(expected) = decode(&mutated) else { continue };
                    decode_into(&mut t, &mut scratch, telegram, None, None).unwrap();
                    decode_into(&mut t, &mut scratch, &mutated, None, None).unwrap();
                    assert_eq!(t, expected, "telegram {i}, byte {at} as {b:#04x}");
                    decode_into(&mut t, &mut scratch, telegram, None, None).unwrap();
                    assert_eq!(&t, alone, "telegram {i} after its byte {at} as {b:#04x}");
                    changed += 1;
                }
            }
        }
    }
    assert!(changed > 5_000, "only {changed} changed telegrams");
}
