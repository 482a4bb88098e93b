//! The status API over HTTP, and the web page in a real browser.

mod charts;
mod costs;
mod endpoints;
mod events;
mod export;
mod export_parquet;
mod hardening;
mod health;
mod page;
