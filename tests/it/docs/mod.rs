//! The docs and the example files say what is true.

mod costs;
mod examples;
mod examples_modbus;
mod markdown;
mod tables;
