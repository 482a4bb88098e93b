//! The `mesura` binary's commands as a user runs them.

mod commands;
mod decode;
mod secrets;
