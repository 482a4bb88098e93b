//! The running daemon: the main loop (`app`), what a reload changes (`reload`,
//! pure) and what it opens before it applies anything (`prepare`), one task per
//! device (`supervisor`), the fan-out to the backends (`router`), the live state
//! the status API and the shutdown summary read (`live`), the events the API streams
//! (`events`), the config watcher
//! (`watch`) and systemd's notify protocol (`systemd`).

pub mod alerts;
pub mod app;
pub mod events;
mod jobs;
pub mod live;
pub mod prepare;
pub mod reload;
pub mod retry;
pub mod router;
pub mod supervisor;
pub mod systemd;
pub mod watch;

pub use app::{Daemon, DaemonHandle, ReloadSummary, Summary};
