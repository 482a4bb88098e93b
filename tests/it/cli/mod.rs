//! The `mesura` binary's commands as a user runs them.

mod check_output;
mod commands;
mod decode;
mod options;
mod secrets;
mod shutdown;
