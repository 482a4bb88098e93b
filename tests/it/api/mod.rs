//! The status API over HTTP, and the web page in a real browser.

mod endpoints;
mod health;
mod hardening;
mod page;
