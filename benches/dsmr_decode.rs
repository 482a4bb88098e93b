//! Telegrams per second: the DSMR 5 fixture `dsmr50_iskra_am550_real.txt` framed,
//! CRC-checked and decoded by mesura, and the same bytes through the `dsmr5` crate
//! (the Rust peer), in the same run, alternating rounds so that the machine's load
//! hits both alike. Python dsmr-parser's `TelegramParser(V5).parse` is measured by
//! scripts/bench-dsmr-python.sh; see docs/benchmarks.md for both.
//!
//! `cargo bench --bench dsmr_decode` measures; run without `--bench` (as
//! `cargo test --all-targets` does) it only checks that both sides decode the
//! telegram. `--count mesura|dsmr5 N` runs one side N times and prints nothing
//! else, for counting instructions under `valgrind --tool=callgrind` (the
//! difference between two counts over the difference in N is the cost of one
//! telegram, start-up excluded).

use std::hint::black_box;
use std::time::{Duration, Instant};

use mesura::protocols::dsmr::{check_crc, crc16_arc, decode, CrcStatus, Decoder, Framer};

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/tests/fixtures/dsmr/dsmr50_iskra_am550_real.txt"
);

/// One telegram through the framer (which checks the CRC) and the decoder, as the
/// `dsmr` device does it: the framer and the decoder live as long as the stream,
/// and the decoder takes the CRC verdict from the framer.
fn frame_and_decode(framer: &mut Framer, decoder: &mut Decoder, bytes: &[u8]) -> usize {
    framer.push(bytes);
    let mut values = 0;
    while let Some(Ok(frame)) = framer.next_frame() {
        if !matches!(frame.crc, CrcStatus::Invalid { .. }) {
            if let Ok(t) = decoder.decode_frame(&frame) {
                values += t.values.len();
            }
        }
    }
    values
}

/// The same work with `dsmr5` 0.4: its `Reader` cuts the telegram from the byte
/// stream (`/` … `!` and four CRC digits), `to_telegram` checks the CRC and the
/// header, and every line is parsed into its typed value. Returns the lines that
/// parsed, each value read as a number where it is one, so that none of the work
/// can be skipped.
fn dsmr5_frame_and_parse(bytes: &[u8]) -> (usize, f64) {
    use dsmr5::OBIS;
    let mut parsed = 0;
    let mut sum = 0.0;
    for readout in dsmr5::Reader::new(bytes.iter().map(|&b| Ok::<u8, ()>(b))).flatten() {
        let Ok(telegram) = readout.to_telegram() else {
            continue;
        };
        for object in telegram.objects().flatten() {
            parsed += 1;
            sum += match &object {
                OBIS::MeterReadingTo(_, v)
                | OBIS::MeterReadingBy(_, v)
                | OBIS::PowerDelivered(v)
                | OBIS::PowerReceived(v)
                | OBIS::InstantaneousVoltage(_, v)
                | OBIS::InstantaneousActivePowerPlus(_, v)
                | OBIS::InstantaneousActivePowerNeg(_, v)
                | OBIS::SlaveMeterReading(_, _, Some(v)) => f64::from(v),
                OBIS::PowerFailures(v)
                | OBIS::LongPowerFailures(v)
                | OBIS::VoltageSags(_, v)
                | OBIS::VoltageSwells(_, v)
                | OBIS::InstantaneousCurrent(_, v) => v.0 as f64,
                _ => 0.0,
            };
            black_box(&object);
        }
    }
    (parsed, sum)
}

/// Calls per second of `f` over one round of `budget`.
fn rate(budget: Duration, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    let mut n: u64 = 0;
    while start.elapsed() < budget {
        for _ in 0..200 {
            f();
        }
        n += 200;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// Median of a few positive figures.
fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    match xs.len() {
        0 => 0.0,
        n if n % 2 == 1 => xs[n / 2],
        n => (xs[n / 2 - 1] + xs[n / 2]) / 2.0,
    }
}

fn main() {
    let bytes = std::fs::read(FIXTURE).unwrap_or_else(|e| panic!("{FIXTURE}: {e}"));
    let mut framer = Framer::default();
    let mut decoder = Decoder::default();
    let values = frame_and_decode(&mut framer, &mut decoder, &bytes);
    assert_eq!(values, 28, "the fixture should decode to 28 values");
    let (dsmr5_objects, dsmr5_sum) = dsmr5_frame_and_parse(&bytes);
    // 36 lines; dsmr5 0.4 gives up on the power-failure log line only.
    assert!(dsmr5_objects >= 35, "dsmr5 parsed only {dsmr5_objects} lines");
    assert!(dsmr5_sum > 3808.0, "dsmr5 read no values");

    let args: Vec<String> = std::env::args().collect();
    if let Some(at) = args.iter().position(|a| a == "--count") {
        let side = args.get(at + 1).map(String::as_str);
        let n: u64 = args.get(at + 2).and_then(|n| n.parse().ok()).unwrap_or(1000);
        for _ in 0..n {
            match side {
                Some("dsmr5") => {
                    black_box(dsmr5_frame_and_parse(black_box(&bytes)));
                }
                _ => {
                    black_box(frame_and_decode(&mut framer, &mut decoder, black_box(&bytes)));
                }
            }
        }
        return;
    }
    if !args.iter().any(|a| a == "--bench") {
        return;
    }

    // Alternating rounds, dsmr5 then mesura, each ~1 s: a busy spell on the shared
    // machine slows the pair in the same round, and the ratio is taken per round.
    const ROUNDS: usize = 9;
    let round = Duration::from_millis(1000);
    let (mut peer, mut ours, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
    for i in 1..=ROUNDS {
        let p = rate(round, || {
            black_box(dsmr5_frame_and_parse(black_box(&bytes)));
        });
        let o = rate(round, || {
            black_box(frame_and_decode(&mut framer, &mut decoder, black_box(&bytes)));
        });
        println!(
            "dsmr_decode: round {i}: dsmr5 {p:>10.0}/s   mesura {o:>10.0}/s   ratio {:.2}×",
            o / p
        );
        peer.push(p);
        ours.push(o);
        ratios.push(o / p);
    }
    let decode_only = rate(Duration::from_secs(2), || {
        black_box(decode(black_box(&bytes)).map(|t| t.values.len()).unwrap_or(0));
    });
    let crc_only = rate(Duration::from_secs(1), || {
        black_box(crc16_arc(black_box(&bytes)));
    });
    let check = rate(Duration::from_secs(1), || {
        black_box(check_crc(black_box(&bytes)));
    });
    println!("dsmr_decode: telegram {} bytes, {values} values", bytes.len());
    println!("dsmr_decode: (CRC only                {crc_only:>12.0} telegrams/s)");
    println!("dsmr_decode: (locate + CRC            {check:>12.0} telegrams/s)");
    println!("dsmr_decode: decode only            {decode_only:>12.0} telegrams/s");
    // Each figure ends in "N telegrams/s": scripts/bench-dsmr-python.sh reads them.
    println!(
        "dsmr_decode: dsmr5 frame + CRC + parse {:>10.0} telegrams/s",
        median(peer)
    );
    println!(
        "dsmr_decode: frame + CRC + decode    {:>12.0} telegrams/s",
        median(ours)
    );
    println!(
        "dsmr_decode: mesura / dsmr5 {:.2}× (median of {ROUNDS} alternating rounds; rounds {:.2}–{:.2}×)",
        median(ratios.clone()),
        ratios.iter().copied().fold(f64::INFINITY, f64::min),
        ratios.iter().copied().fold(0.0, f64::max),
    );
}
