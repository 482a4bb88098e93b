//! Encrypted P1 (Luxembourg): frames per second through `EncryptedFramer` (find the
//! APDU, AES-128-GCM decrypt and verify the tag, frame, CRC) and the decoder,
//! beside the same telegram in plain text through `Framer` and the decoder, in the
//! same run, alternating. Plus the Austrian shape (M-Bus segments, encryption
//! only, a COSEM notification rewritten as a telegram).
//!
//! `cargo bench --bench dlms_decrypt` measures; run without `--bench` (as
//! `cargo test --all-targets` does) it only checks that the frames decode.

use std::hint::black_box;
use std::time::{Duration, Instant};

use mesura::protocols::dlms::{cipher, EncryptedFramer, Keys};
use mesura::protocols::dsmr::{decode, Framer};

const DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/dsmr/encrypted");

fn hex(name: &str) -> Vec<u8> {
    let text = std::fs::read_to_string(format!("{DIR}/{name}")).unwrap_or_else(|e| panic!("{name}: {e}"));
    let digits: String = text.split_whitespace().collect();
    (0..digits.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&digits[i..i + 2], 16).unwrap_or(0))
        .collect()
}

fn encrypted(framer: &mut EncryptedFramer, bytes: &[u8]) -> usize {
    framer.push(bytes);
    let mut values = 0;
    while let Some(Ok(frame)) = framer.next_frame() {
        if let Ok(t) = decode(&frame.bytes) {
            values += t.values.len();
        }
    }
    values
}

fn plain(framer: &mut Framer, bytes: &[u8]) -> usize {
    framer.push(bytes);
    let mut values = 0;
    while let Some(Ok(frame)) = framer.next_frame() {
        if let Ok(t) = decode(&frame.bytes) {
            values += t.values.len();
        }
    }
    values
}

/// Calls per second of `f` over `budget`.
fn rate(budget: Duration, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n: u64 = 0;
    while start.elapsed() < budget {
        for _ in 0..1000 {
            f();
        }
        n += 1000;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let telegram = std::fs::read(format!("{DIR}/lu_sagemcom_t210dr_plaintext.txt")).unwrap_or_default();
    let keys = Keys::from_hex(&"A".repeat(32), None).unwrap_or_else(|e| panic!("{e}"));
    let lu = cipher::encrypt(&keys, *b"SYSTEMID", 0x30, 0x1000_0001, &telegram);
    let at = hex("tinetz_kaifa_mbus_two_segments.hex");
    let at_keys = Keys::from_hex("101112131415161718191A1B1C1D1E1F", None).unwrap_or_else(|e| panic!("{e}"));

    let mut lu_framer = EncryptedFramer::new(keys, 8192);
    let mut at_framer = EncryptedFramer::new(at_keys, 8192);
    let mut plain_framer = Framer::default();
    assert_eq!(encrypted(&mut lu_framer, &lu), 16);
    assert_eq!(encrypted(&mut at_framer, &at), 8);
    assert_eq!(plain(&mut plain_framer, &telegram), 16);
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let budget = Duration::from_millis(600);
    let (mut lu_best, mut at_best, mut plain_best) = (0f64, 0f64, 0f64);
    for _ in 0..5 {
        plain_best = plain_best.max(rate(budget, || {
            black_box(plain(&mut plain_framer, black_box(&telegram)));
        }));
        lu_best = lu_best.max(rate(budget, || {
            black_box(encrypted(&mut lu_framer, black_box(&lu)));
        }));
        at_best = at_best.max(rate(budget, || {
            black_box(encrypted(&mut at_framer, black_box(&at)));
        }));
    }
    println!(
        "plain Sagemcom T210-D-r telegram ({} bytes), frame + CRC + decode: {:.0} k/s",
        telegram.len(),
        plain_best / 1e3
    );
    println!(
        "the same encrypted (Luxembourg, {} bytes), find + AES-GCM + tag + frame + CRC + decode: {:.0} k/s",
        lu.len(),
        lu_best / 1e3
    );
    println!(
        "Tiroler Netze example ({} bytes, M-Bus, encryption only, COSEM), decrypt + rewrite + decode: {:.0} k/s",
        at.len(),
        at_best / 1e3
    );
}
