//! Telegrams per second: the DSMR 5 fixture `dsmr50_iskra_am550_real.txt` framed,
//! CRC-checked and decoded, the same work as Python dsmr-parser's
//! `TelegramParser(V5).parse` (see scripts/bench-dsmr-python.sh and
//! docs/benchmarks.md).
//!
//! `cargo bench --bench dsmr_decode` measures; run without `--bench` (as
//! `cargo test --all-targets` does) it only checks that the telegram decodes.

use std::hint::black_box;
use std::time::{Duration, Instant};

use mesura::protocols::dsmr::{check_crc, crc16_arc, decode, CrcStatus, Framer};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/dsmr/dsmr50_iskra_am550_real.txt"
);

/// One telegram through the framer (which checks the CRC) and the decoder. The
/// framer lives as long as the stream, as in the `dsmr` device.
fn frame_and_decode(framer: &mut Framer, bytes: &[u8]) -> usize {
    framer.push(bytes);
    let mut values = 0;
    while let Some(Ok(frame)) = framer.next_frame() {
        if !matches!(frame.crc, CrcStatus::Invalid { .. }) {
            if let Ok(t) = decode(&frame.bytes) {
                values += t.values.len();
            }
        }
    }
    values
}

/// Runs `f` in batches until `budget` has passed; returns calls per second (the
/// best of several rounds, the usual way to discount scheduler noise).
fn rate(budget: Duration, mut f: impl FnMut()) -> f64 {
    let mut best: f64 = 0.0;
    let round = budget / 5;
    for _ in 0..5 {
        let start = Instant::now();
        let mut n: u64 = 0;
        while start.elapsed() < round {
            for _ in 0..1000 {
                f();
            }
            n += 1000;
        }
        best = best.max(n as f64 / start.elapsed().as_secs_f64());
    }
    best
}

fn main() {
    let bytes = std::fs::read(FIXTURE).unwrap_or_else(|e| panic!("{FIXTURE}: {e}"));
    let mut framer = Framer::default();
    let values = frame_and_decode(&mut framer, &bytes);
    assert_eq!(values, 28, "the fixture should decode to 28 values");
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let decode_only = rate(Duration::from_secs(5), || {
        black_box(decode(black_box(&bytes)).map(|t| t.values.len()).unwrap_or(0));
    });
    let full = rate(Duration::from_secs(5), || {
        black_box(frame_and_decode(&mut framer, black_box(&bytes)));
    });
    let crc_only = rate(Duration::from_secs(2), || {
        black_box(crc16_arc(black_box(&bytes)));
    });
    let check = rate(Duration::from_secs(2), || {
        black_box(check_crc(black_box(&bytes)));
    });
    println!("dsmr_decode: telegram {} bytes, {values} values", bytes.len());
    println!("dsmr_decode: (CRC only                {crc_only:>12.0} telegrams/s)");
    println!("dsmr_decode: (locate + CRC            {check:>12.0} telegrams/s)");
    println!("dsmr_decode: decode only            {decode_only:>12.0} telegrams/s");
    println!("dsmr_decode: frame + CRC + decode   {full:>12.0} telegrams/s");
}
