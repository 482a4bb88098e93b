//! mesura: reads a home's energy and climate devices and keeps every reading.
//!
//! `config` loads the files, `supervisor` runs one task per device, `monitors/`
//! read devices through the pure codecs in `protocols/`, `router` fans readings
//! out to the `backends/`. See docs/architecture.md.

pub mod api;
pub mod app;
pub mod backends;
pub mod clock;
pub mod commands;
pub mod config;
pub mod downsample;
pub mod monitors;
pub mod notify;
pub mod protocols;
pub mod reading;
pub mod retention;
pub mod retry;
pub mod router;
pub mod status;
pub mod supervisor;
pub mod watch;
