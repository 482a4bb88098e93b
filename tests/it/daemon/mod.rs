//! The daemon as a whole: devices to stores, reload, the router, the systemd unit.

mod alerts;
mod e2e;
mod reload;
mod router;
mod systemd;
