//! Helpers of the KMP codec tests: fixture access, hex helpers and a seeded PRNG.

use std::path::PathBuf;

/// Fixture files are JSON; `serde_json` reads them and these accessors fail the test
/// with a clear message when a fixture does not have the expected shape.
pub type Json = serde_json::Value;

pub trait FixtureValue {
    fn text(&self) -> &str;
    fn num(&self) -> u64;
    fn flag(&self) -> bool;
    fn items(&self) -> &[Json];
}

impl FixtureValue for Json {
    fn text(&self) -> &str {
        self.as_str()
            .unwrap_or_else(|| panic!("expected a JSON string, got {self}"))
    }

    fn num(&self) -> u64 {
        self.as_u64()
            .unwrap_or_else(|| panic!("expected a JSON integer, got {self}"))
    }

    fn flag(&self) -> bool {
        self.as_bool()
            .unwrap_or_else(|| panic!("expected a JSON bool, got {self}"))
    }

    fn items(&self) -> &[Json] {
        self.as_array()
            .map(Vec::as_slice)
            .unwrap_or_else(|| panic!("expected a JSON array, got {self}"))
    }
}

pub fn fixture(name: &str) -> Json {
    let path: PathBuf = [env!("CARGO_MANIFEST_DIR"), "tests", "fixtures", "kamstrup", name]
        .iter()
        .collect();
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()))
}

pub fn hex(text: &str) -> Vec<u8> {
    let clean: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    assert!(clean.len() % 2 == 0, "odd hex length: {text}");
    (0..clean.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&clean[i..i + 2], 16).expect("bad hex"))
        .collect()
}

/// Parse "0x003C"-style or decimal text into an integer.
pub fn int(text: &str) -> u64 {
    match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(h) => u64::from_str_radix(h, 16).expect("bad hex int"),
        None => text.parse().expect("bad int"),
    }
}

/// xorshift64* — deterministic, dependency-free PRNG for fuzz-style tests.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn byte(&mut self) -> u8 {
        (self.next_u64() >> 56) as u8
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.byte()).collect()
    }

    pub fn bytes_upto(&mut self, max_len: u64) -> Vec<u8> {
        let len = self.below(max_len) as usize;
        self.bytes(len)
    }

    pub fn chance(&mut self, one_in: u64) -> bool {
        self.below(one_in) == 0
    }
}
