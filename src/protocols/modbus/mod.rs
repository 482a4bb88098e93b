//! Modbus codecs: point decoding (registers → typed values), the read planner
//! that coalesces points into blocks, SunSpec model parsing, and the DPT 9.001
//! temperatures of the REHAU Nea Smart 2.0. No sockets here: the monitors in
//! `monitors/modbus` and `monitors/neasmart` do the I/O.

pub mod dpt9;
pub mod neasmart;
pub mod plan;
pub mod point;
pub mod sunspec;
