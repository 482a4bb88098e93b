//! Stream framing per `streams/INDEX.tsv`, chunking invariance and resynchronisation.

use crate::support::dsmr::{load, load_stream, Rng};
use mesura::protocols::dsmr::{decode, CrcStatus, Frame, FrameError, Framer, FramerStats};

type Out = Vec<Result<Frame, FrameError>>;

fn frame_all(data: &[u8]) -> (Out, FramerStats, usize) {
    let mut f = Framer::default();
    f.push(data);
    let out = std::iter::from_fn(|| f.next_frame()).collect();
    (out, f.stats(), f.pending_len())
}

fn frame_chunked(data: &[u8], rng: &mut Rng, max_chunk: usize) -> (Out, FramerStats, usize) {
    let mut f = Framer::default();
    let mut out = Vec::new();
    let mut i = 0;
    while i < data.len() {
        let n = 1 + rng.below(max_chunk);
        let end = (i + n).min(data.len());
        f.push(&data[i..end]);
        // interleave polling with pushing
        if rng.below(2) == 0 {
            out.extend(std::iter::from_fn(|| f.next_frame()));
        }
        i = end;
    }
    out.extend(std::iter::from_fn(|| f.next_frame()));
    (out, f.stats(), f.pending_len())
}

fn crcs(out: &Out) -> Vec<CrcStatus> {
    out.iter().filter_map(|r| r.as_ref().ok()).map(|f| f.crc).collect()
}

const STREAMS: [&str; 4] = [
    "stream_dsmr42_kaifa_starts_midway.txt",
    "stream_dsmr50_iskra_am550t_3_consecutive.txt",
    "stream_dsmr50_iskra_am550t_capture_midstart.txt",
    "stream_dsmr50_iskra_overflow_noise.txt",
];

#[test]
fn kaifa_starts_midway() {
    let (out, stats, pending) = frame_all(&load_stream(STREAMS[0]));
    // the tail "... !74B0" before the first header is garbage
    assert!(matches!(out[0], Err(FrameError::Garbage { .. })));
    assert_eq!(crcs(&out), vec![CrcStatus::Valid]);
    assert_eq!(out.len(), 2);
    assert_eq!(pending, 0);
    assert_eq!(stats.frames, 1);
    assert_eq!(stats.crc_valid, 1);
    let frame = out[1].as_ref().unwrap();
    assert!(frame.bytes.ends_with(b"!4BC6\r\n"));
    // same telegram as the bad-CRC fixture apart from its CRC digits
    let fixed = load("dsmr42_kaifa_bad_crc_abcd.txt");
    assert_eq!(&frame.bytes[..frame.bytes.len() - 6], &fixed[..fixed.len() - 6]);
    let t = decode(&frame.bytes).unwrap();
    assert_eq!(t.number("energy_delivered_tariff1"), Some(1073.079));
}

#[test]
fn iskra_three_consecutive() {
    let (out, stats, pending) = frame_all(&load_stream(STREAMS[1]));
    assert_eq!(out.len(), 3);
    assert_eq!(crcs(&out), vec![CrcStatus::Valid; 3]);
    let tails: Vec<_> = out
        .iter()
        .map(|r| {
            r.as_ref()
                .unwrap()
                .bytes
                .rsplit(|&b| b == b'!')
                .next()
                .unwrap()
                .to_vec()
        })
        .collect();
    assert_eq!(
        tails,
        vec![b"C5CC\r\n".to_vec(), b"ECB7\r\n".to_vec(), b"762C\r\n".to_vec()]
    );
    assert_eq!(stats.discarded_bytes, 0);
    assert_eq!(pending, 0);
    // power_delivered per telegram: 00.518, 00.528, 00.522 kW
    let p: Vec<_> = out
        .iter()
        .map(|r| decode(&r.as_ref().unwrap().bytes).unwrap().number("power_delivered"))
        .collect();
    assert_eq!(p, vec![Some(518.0), Some(528.0), Some(522.0)]);
}

#[test]
fn iskra_capture_midstart() {
    let (out, stats, pending) = frame_all(&load_stream(STREAMS[2]));
    assert!(matches!(out[0], Err(FrameError::Garbage { .. })));
    assert_eq!(out.len(), 3);
    assert_eq!(crcs(&out), vec![CrcStatus::Valid; 2]);
    assert!(out[1].as_ref().unwrap().bytes.ends_with(b"!D4BA\r\n"));
    assert!(out[2].as_ref().unwrap().bytes.ends_with(b"!3B12\r\n"));
    // the third telegram is cut off: still pending, not emitted
    assert!(pending > 0);
    assert_eq!(stats.frames, 2);
}

#[test]
fn iskra_overflow_noise() {
    let (out, stats, pending) = frame_all(&load_stream(STREAMS[3]));
    // six telegram starts cut mid-line by the next "/ISK5" header, then one
    // complete telegram whose CRC fails ("***NO CARIER***" replaced its blank line)
    let truncated = out
        .iter()
        .filter(|r| matches!(r, Err(FrameError::Truncated { .. })))
        .count();
    assert_eq!(truncated, 6);
    assert_eq!(out.len(), 7);
    assert!(matches!(crcs(&out)[..], [CrcStatus::Invalid { given: 0x67B1, .. }]));
    assert_eq!(stats.truncated, 6);
    assert_eq!(stats.crc_invalid, 1);
    assert_eq!(stats.crc_valid, 0);
    assert_eq!(pending, 0);
    // the last frame still decodes; the junk line is recorded as malformed
    let t = decode(out[6].as_ref().unwrap().bytes.as_slice()).unwrap();
    assert_eq!(t.malformed, vec!["***NO CARIER***".to_string()]);
    assert_eq!(t.number("power_delivered"), Some(193.0));
}

#[test]
fn chunking_does_not_change_the_result() {
    let mut rng = Rng(0x5EED_1234_ABCD_0001);
    for name in STREAMS {
        let data = load_stream(name);
        let whole = frame_all(&data);
        let bytewise = {
            let mut f = Framer::default();
            let mut out = Vec::new();
            for b in &data {
                f.push(std::slice::from_ref(b));
                out.extend(std::iter::from_fn(|| f.next_frame()));
            }
            (out, f.stats(), f.pending_len())
        };
        assert_eq!(whole, bytewise, "{name} byte by byte");
        for max_chunk in [2, 7, 64, 1000] {
            for _ in 0..10 {
                assert_eq!(whole, frame_chunked(&data, &mut rng, max_chunk), "{name}");
            }
        }
    }
}

#[test]
fn all_fixtures_concatenated_with_noise() {
    let dir = crate::support::dsmr::fixture_dir();
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".txt") && !n.contains("no_terminator"))
        .collect();
    names.sort();
    let mut stream = b"\xff\x00partial line)\r\n".to_vec();
    for (i, n) in names.iter().enumerate() {
        stream.extend_from_slice(&load(n));
        if i % 3 == 0 {
            stream.extend_from_slice(b"junk \x80\xfe\r\n");
        }
    }
    let mut rng = Rng(42);
    let (out, stats, _) = frame_chunked(&stream, &mut rng, 97);
    let frames: Vec<_> = out.iter().filter_map(|r| r.as_ref().ok()).collect();
    assert_eq!(frames.len(), names.len());
    for (frame, name) in frames.iter().zip(&names) {
        let t = decode(&frame.bytes).unwrap();
        assert_eq!(t, decode(&load(name)).unwrap(), "{name}");
    }
    assert_eq!(stats.oversize, 0);
    assert_eq!(stats.truncated, 0);
    assert!(stats.garbage >= 1);
}

#[test]
fn size_guard() {
    // A Belgian-style telegram with a long 13-month history: > 2 KiB, < 8 KiB.
    let mut body = String::from("/FLU5\\253769484_A\r\n\r\n0-0:98.1.0(13)(1-0:1.6.0)(1-0:1.6.0)");
    for _ in 0..13 {
        body.push_str("(230101000000W)(221230114500W)(13.603*kW)");
    }
    body.push_str("\r\n");
    for _ in 0..40 {
        body.push_str("0-0:96.13.0(3031323334353637383930313233343536373839)\r\n");
    }
    body.push_str("1-0:1.8.1(004423.770*kWh)\r\n!");
    let crc = mesura::protocols::dsmr::crc16_arc(body.as_bytes());
    let telegram = format!("{body}{crc:04X}\r\n").into_bytes();
    assert!(telegram.len() > 2048 && telegram.len() < 8192);
    let (out, _, _) = frame_all(&telegram);
    assert_eq!(crcs(&out), vec![CrcStatus::Valid]);

    // The same with a 1 KiB limit: dropped, then the next telegram is found.
    let mut f = Framer::new(1024);
    f.push(&telegram);
    f.push(&load("dsmr42_kaifa_real.txt"));
    let out: Vec<_> = std::iter::from_fn(|| f.next_frame()).collect();
    assert!(matches!(out[0], Err(FrameError::Oversize { max_size: 1024, .. })));
    assert_eq!(crcs(&out), vec![CrcStatus::Valid]);
    assert_eq!(out.len(), 2);
    assert_eq!(f.stats().oversize, 1);
    assert_eq!(f.stats().discarded_bytes, telegram.len() as u64);
}

#[test]
fn new_header_line_before_terminator() {
    let full = load("dsmr50_iskra_am550_real.txt");
    let mut stream = full[..full.len() / 2].to_vec();
    // cut at a line boundary
    let cut = stream.iter().rposition(|&b| b == b'\n').unwrap() + 1;
    stream.truncate(cut);
    stream.extend_from_slice(&full);
    let (out, stats, _) = frame_all(&stream);
    assert!(matches!(out[0], Err(FrameError::Truncated { discarded }) if discarded == cut));
    assert_eq!(out[1].as_ref().unwrap().bytes, full);
    assert_eq!(stats.truncated, 1);
}

/// Every complete fixture, each a telegram alone in its file.
fn complete_fixtures() -> Vec<(String, Vec<u8>)> {
    let mut names: Vec<String> = std::fs::read_dir(crate::support::dsmr::fixture_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".txt") && !n.contains("no_terminator"))
        .collect();
    names.sort();
    names.into_iter().map(|n| (n.clone(), load(&n))).collect()
}

/// What P1 cables and dongles send between telegrams: a NUL or 0xFF when the
/// data-request line toggles, a stray byte after a line break, and random bytes
/// (half a byte after a baud change, a dongle's noise). Random junk holds no `/`:
/// a `/` at a line start opens a telegram by definition, so junk that has one is a
/// broken telegram, not junk.
fn junks(rng: &mut Rng) -> Vec<Vec<u8>> {
    let mut junks = vec![b"\x00".to_vec(), b"\xff".to_vec(), b"\r\n\x00".to_vec()];
    for _ in 0..6 {
        let len = 1 + rng.below(64);
        junks.push(
            (0..len)
                .map(|_| match rng.next() as u8 {
                    b'/' => b'.',
                    b => b,
                })
                .collect(),
        );
    }
    junks
}

fn non_whitespace(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|b| !b.is_ascii_whitespace()).count() as u64
}

#[test]
fn every_fixture_after_junk_is_framed_and_the_junk_counted() {
    let mut rng = Rng(0xD5_4D52_0018_0003);
    let fixtures = complete_fixtures();
    assert!(fixtures.len() > 35);
    for (name, file) in &fixtures {
        // The telegram runs to the end of its `!` line; the Q3D capture has its
        // gateway's own junk after that.
        let bang = file.iter().position(|&b| b == b'!').expect("terminated");
        let end = file[bang..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(file.len(), |lf| bang + lf + 1);
        let (telegram, trailing) = file.split_at(end);
        for junk in junks(&mut rng) {
            // Junk at the start of the stream and between two telegrams.
            let stream = [&junk[..], file, &junk, file].concat();
            let whole = frame_all(&stream);
            let frames: Vec<&[u8]> = whole
                .0
                .iter()
                .filter_map(|r| r.as_ref().ok())
                .map(|f| &f.bytes[..])
                .collect();
            assert_eq!(frames, [telegram, telegram], "{name} after junk {junk:02X?}");
            let junk_bytes = 2 * (non_whitespace(&junk) + non_whitespace(trailing));
            assert_eq!(whole.1.junk_bytes, junk_bytes, "{name} after junk {junk:02X?}");
            assert_eq!(whole.1.truncated + whole.1.oversize, 0, "{name} after junk {junk:02X?}");
            assert_eq!(whole.2, 0);
            for max_chunk in [3, 64, 700] {
                assert_eq!(whole, frame_chunked(&stream, &mut rng, max_chunk), "{name} in chunks");
            }
        }
    }
}

#[test]
fn a_slash_in_a_text_message_cuts_nothing() {
    // The DSMR 2.2 capture with `0-0:96.13.0(test-/-test)`, here with its `!`.
    let text = [
        &load("dsmr22_iskra_mt382_textmsg_slash_no_terminator.txt")[..],
        b"!\r\n",
    ]
    .concat();
    let text_with_header = String::from_utf8(text.clone())
        .unwrap()
        .replace("(test-/-test)", "(test /ISk5\\2MT382-1000 test)")
        .into_bytes();
    let after = load("dsmr42_kaifa_real.txt");
    for telegram in [&text, &text_with_header] {
        let stream = [b"\x00", &telegram[..], b"\xff", &after].concat();
        let (out, stats, pending) = frame_all(&stream);
        let frames: Vec<&[u8]> = out
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|f| &f.bytes[..])
            .collect();
        assert_eq!(frames, [&telegram[..], &after[..]]);
        assert_eq!((stats.truncated, stats.junk_bytes, pending), (0, 2, 0));
        let t = decode(frames[0]).unwrap();
        assert!(t.text_message.as_deref().is_some_and(|m| m.contains('/')), "{t:?}");
        assert_eq!(t.number("energy_delivered_tariff1"), Some(39837.604));

        // Joined in the middle of the text message line: the `/` there starts nothing.
        let slash = telegram[1..]
            .iter()
            .position(|&b| b == b'/')
            .expect("a `/` in the text")
            + 1;
        let joined = [&telegram[slash - 3..], &after[..]].concat();
        let (out, stats, _) = frame_all(&joined);
        let frames: Vec<&[u8]> = out
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|f| &f.bytes[..])
            .collect();
        assert_eq!(
            frames,
            [&after[..]],
            "joined at {:?}",
            String::from_utf8_lossy(&joined[..20])
        );
        assert_eq!(stats.junk_bytes, non_whitespace(&telegram[slash - 3..]));
    }
}
