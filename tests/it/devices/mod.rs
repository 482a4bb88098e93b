//! One module per device type (and per transport where a type has several).

mod control;
mod derived;
mod dsmr_capacity;
mod dsmr_counters;
mod dsmr_edge_cases;
mod dsmr_encrypted;
mod dsmr_fixtures_decode;
mod dsmr_index_crc;
mod dsmr_robustness;
mod dsmr_serial;
mod dsmr_serve;
mod dsmr_streams;
mod dsmr_tcp;
mod evohome;
mod homewizard;
mod homewizard_v2;
mod kmp_codec;
mod kmp_fixtures;
mod modbus;
mod modbus_presets;
mod mqtt_in;
mod multical;
mod neasmart;
mod openweathermap;
mod polling;
mod prices;
