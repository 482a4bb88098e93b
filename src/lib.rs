//! mesura: reads a home's energy and climate devices and keeps every reading.
//!
//! `config` loads the files, `supervisor` runs one task per device, `monitors/`
//! read devices through the pure codecs in `protocols/`, `router` fans readings
//! out to the `backends/`. See docs/architecture.md.

pub mod api;
pub mod backends;
pub mod clock;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod host;
pub mod monitors;
pub mod protocols;
pub mod reading;
