//! The integration tests, in one binary so the crate is linked once: `support/`
//! holds every shared helper; the other modules follow the crate's rooms.
//! Tests here run side by side on the test harness's threads, so none may rely on
//! having the process to itself (see `support::logs` for the one global subscriber).
//!
//! Run one room or one file with a filter: `cargo test --test it -- devices::modbus::`.

mod api;
mod backends;
mod cli;
mod daemon;
mod devices;
mod docs;
mod support;
