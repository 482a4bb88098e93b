//! The status API over HTTP, and the web page in a real browser.

mod costs;
mod endpoints;
mod export;
mod export_parquet;
mod hardening;
mod health;
mod page;
