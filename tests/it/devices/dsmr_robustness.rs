//! Never panics on arbitrary or mutated input; framer invariants hold.

use crate::support::dsmr::{fixture_dir, load, Rng};
use mesura::protocols::dsmr::{check_crc, decode, Framer};
use proptest::prelude::*;

/// Runs bytes through the framer (in the given chunk sizes) and the decoder,
/// checking invariants. Returns the emitted results for comparisons.
fn exercise(data: &[u8], chunks: &[usize], max_size: usize) -> Vec<String> {
    let mut f = Framer::new(max_size);
    let mut i = 0;
    let mut k = 0;
    while i < data.len() {
        let n = chunks.get(k).copied().unwrap_or(data.len()).max(1);
        let end = (i + n).min(data.len());
        f.push(&data[i..end]);
        i = end;
        k += 1;
    }
    let mut framed = 0usize;
    let mut out = Vec::new();
    while let Some(r) = f.next_frame() {
        match r {
            Ok(frame) => {
                assert_eq!(frame.bytes.first(), Some(&b'/'));
                assert!(frame.bytes.len() <= max_size);
                assert_eq!(check_crc(&frame.bytes), frame.crc);
                let t = decode(&frame.bytes).expect("a frame always has a header line");
                assert_eq!(t.crc, frame.crc);
                assert!(t.terminated);
                framed += frame.bytes.len();
                out.push(format!("{:?}", frame));
            }
            Err(e) => out.push(format!("{e:?}")),
        }
    }
    let s = f.stats();
    assert_eq!(
        data.len() as u64,
        framed as u64 + s.discarded_bytes + f.pending_len() as u64,
        "every byte is framed, discarded or pending"
    );
    assert_eq!(s.frames, s.crc_valid + s.crc_invalid + s.crc_absent);
    // the whole input through the one-shot API must not panic either
    let _ = decode(data);
    let _ = check_crc(data);
    out
}

fn fixtures() -> Vec<Vec<u8>> {
    let mut names: Vec<_> = std::fs::read_dir(fixture_dir())
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".txt"))
        .collect();
    names.sort();
    names.iter().map(|n| load(n)).collect()
}

const SPECIAL: &[u8] = b"/!()*\r\n:.-0123456789ABCDEFSW \xff\x00";

fn mutate(data: &mut Vec<u8>, rng: &mut Rng) {
    for _ in 0..1 + rng.below(8) {
        let pos = rng.below(data.len() + 1);
        let special = SPECIAL[rng.below(SPECIAL.len())];
        match rng.below(6) {
            0 if pos < data.len() => data[pos] = special,
            1 if pos < data.len() => data[pos] = rng.next() as u8,
            2 => data.insert(pos, special),
            3 if pos < data.len() => {
                data.remove(pos);
            }
            4 => data.truncate(pos),
            _ => {
                // duplicate a slice (overlapping telegrams)
                let a = rng.below(data.len() + 1);
                let b = (a + rng.below(200)).min(data.len());
                let slice = data[a..b].to_vec();
                let at = pos.min(data.len());
                data.splice(at..at, slice);
            }
        }
    }
}

#[test]
fn mutated_fixtures_never_panic() {
    let mut rng = Rng(0xD5_3D_5E_ED);
    let corpus = fixtures();
    for round in 0..3000 {
        let mut data = corpus[round % corpus.len()].clone();
        if rng.below(3) == 0 {
            data.extend_from_slice(&corpus[rng.below(corpus.len())]);
        }
        mutate(&mut data, &mut rng);
        let max = [64, 512, 8192][rng.below(3)];
        let whole = exercise(&data, &[], max);
        let chunks: Vec<usize> = (0..64).map(|_| 1 + rng.below(50)).collect();
        assert_eq!(whole, exercise(&data, &chunks, max));
    }
}

fn telegram_like() -> impl Strategy<Value = Vec<u8>> {
    // bytes biased towards the P1 alphabet so the state machine is exercised
    prop::collection::vec(
        prop_oneof![
            3 => prop::sample::select(SPECIAL.to_vec()),
            1 => any::<u8>(),
        ],
        0..2048,
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(data in prop::collection::vec(any::<u8>(), 0..4096),
                                   chunks in prop::collection::vec(1usize..300, 0..32)) {
        let whole = exercise(&data, &[], 8192);
        prop_assert_eq!(whole, exercise(&data, &chunks, 8192));
    }

    #[test]
    fn p1_alphabet_never_panics(data in telegram_like(),
                                chunks in prop::collection::vec(1usize..40, 0..64),
                                max in 1usize..600) {
        let whole = exercise(&data, &[], max);
        prop_assert_eq!(whole, exercise(&data, &chunks, max));
    }

    #[test]
    fn decode_never_panics_on_lines(lines in prop::collection::vec("[-0-9:.*()A-Za-z/!SW ]{0,40}", 0..40)) {
        let text = format!("/XXX5 test\r\n\r\n{}\r\n!\r\n", lines.join("\r\n"));
        let t = decode(text.as_bytes()).unwrap();
        prop_assert!(t.values.iter().all(|v| v.value.as_f64().is_none_or(f64::is_finite)));
    }
}
