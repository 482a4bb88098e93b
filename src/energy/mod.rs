//! Energy truth: counters cleaned at ingest (swaps, resets, glitches → a lifetime
//! series per counter, in epochs). `counters` and `cleaner` are pure; `epochs` keeps
//! the epochs in the data directory so the offsets survive a restart.

pub mod cleaner;
pub mod counters;
pub mod epochs;
pub mod ingest;
pub mod recompute;

#[cfg(test)]
mod tests;
