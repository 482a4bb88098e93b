//! The reliability suites (docs/reliability.md), in one binary: each starts the
//! `mesura` binary or loads every config it can mutate, and measures it. They take
//! minutes (more with `LONG_TESTS=1`) and were written to have the machine to
//! themselves, so each holds `support::reliability::alone()` while it runs.
//!
//! The helpers are the integration tests' own (`tests/it/support/`), one place for both.

#[path = "../it/support/mod.rs"]
mod support;

mod clock;
mod crash;
mod diskfull;
mod input;
mod outage;
mod soak;
