//! The backends against real peers (Mosquitto, InfluxDB, a recording HTTP server),
//! and the SQLite file as Grafana's dashboards read it.

mod grafana;
mod home_assistant;
mod mqtt;
mod uplink_influx;
mod uplink_json;
mod victoriametrics;
