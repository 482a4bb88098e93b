//! Protocol codecs: pure functions over bytes, no I/O, no device, no store.

pub mod dsmr;
