//! Protocol codecs: pure functions over bytes, no I/O, no device, no store.
pub mod bme280;
pub mod ha_statistics;
pub mod kmp;
pub mod modbus;
pub mod mqtt_payload;
pub mod prices;
pub mod websocket;

pub mod dlms;
pub mod dsmr;
