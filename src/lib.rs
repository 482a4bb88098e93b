//! mesura: reads a home's energy and climate devices and keeps every reading.
//!
//! `config` loads the files, `daemon` runs one task per device and fans readings
//! out, `monitors/` read devices through the pure codecs in `protocols/`, and
//! `backends/` store or publish them. See docs/architecture.md.

// The lint wall (tokio-modbus's is the model). scripts/test.sh runs clippy with
// `-D warnings`, so every `warn` here fails CI; `deny` marks what must not even
// reach a local build.
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]
#![warn(future_incompatible)]
#![warn(rust_2018_idioms)]
#![warn(rust_2021_compatibility)]
#![warn(unused)]
// `pub` means part of the library's surface; what only the crate uses says `pub(crate)`.
#![warn(unreachable_pub)]
#![warn(missing_debug_implementations)]
// Outside input never panics the daemon: a value that may be missing is handled,
// not unwrapped. Tests may (clippy.toml: allow-unwrap-in-tests, allow-expect-in-tests).
#![warn(clippy::unwrap_used)]
#![warn(clippy::expect_used)]
#![warn(clippy::panic)]
#![warn(clippy::dbg_macro)]
#![warn(clippy::todo)]
#![warn(clippy::unimplemented)]
// The daemon speaks through tracing; the commands write to the writer they are given.
#![warn(clippy::print_stdout)]
#![warn(clippy::print_stderr)]

/// The typed causes behind a layer's error: the enum, `From` for each cause, and
/// the `&dyn Error` that `source()` returns, from one list of variants (the
/// monitors' and the backends' errors each have one).
macro_rules! error_causes {
    ($(#[$outer:meta])* $name:ident { $($(#[$doc:meta])* $variant:ident($ty:ty)),* $(,)? }) => {
        $(#[$outer])*
        #[derive(Debug)]
        pub enum $name {
            $($(#[$doc])* $variant($ty),)*
        }

        impl $name {
            fn as_error(&self) -> &(dyn std::error::Error + 'static) {
                match self {
                    $($name::$variant(e) => e,)*
                }
            }
        }

        $(impl From<$ty> for $name {
            fn from(e: $ty) -> Self {
                $name::$variant(e)
            }
        })*
    };
}

pub mod alerts;
pub mod api;
pub mod backends;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod energy;
pub mod host;
pub mod monitors;
pub mod protocols;
pub mod reading;
