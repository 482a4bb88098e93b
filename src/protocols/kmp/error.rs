//! Error type of the KMP codec.

use super::frame::Direction;

/// Everything that can go wrong while decoding (or, for a few
/// caller-supplied arguments, encoding) KMP frames.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum KmpError {
    /// The input is empty or shorter than the smallest valid frame/structure.
    #[error("truncated KMP {what}: need at least {needed} bytes, got {got}")]
    Truncated {
        /// What was being decoded (e.g. "frame", "register header").
        what: &'static str,
        /// Minimum number of bytes required.
        needed: usize,
        /// Number of bytes available.
        got: usize,
    },

    /// The first byte is neither 0x80 (to meter) nor 0x40 (from meter).
    #[error("missing KMP start byte: frame begins with 0x{found:02X}, expected 0x80 (to meter) or 0x40 (from meter)")]
    MissingStartByte {
        /// The first byte of the input.
        found: u8,
    },

    /// The frame's start byte says it travels in the other direction.
    #[error("wrong KMP frame direction: expected a frame {expected}, got a frame {found}")]
    WrongDirection {
        /// Direction the caller expected.
        expected: Direction,
        /// Direction indicated by the start byte.
        found: Direction,
    },

    /// The last byte is not the stop byte 0x0D (frame cut short or garbage).
    #[error("missing KMP stop byte: frame ends with 0x{found:02X} instead of 0x0D")]
    MissingStopByte {
        /// The last byte of the input.
        found: u8,
    },

    /// A raw 0x0D appears before the end of the frame (two frames glued
    /// together, or trailing garbage after the stop byte).
    #[error("unexpected KMP stop byte 0x0D at offset {offset} before the end of the frame")]
    UnexpectedStopByte {
        /// Offset of the stray stop byte within the raw frame.
        offset: usize,
    },

    /// The escape byte 0x1B is the last byte before the stop byte.
    #[error("bad KMP byte stuffing: escape byte 0x1B at the end of the frame")]
    DanglingEscape,

    /// The escape byte is followed by a byte that does not un-escape to one of
    /// the reserved bytes 0x06, 0x0D, 0x1B, 0x40, 0x80.
    #[error(
        "bad KMP byte stuffing at offset {offset}: 0x1B 0x{escaped:02X} un-escapes to 0x{unescaped:02X}, which is not a reserved byte (06/0D/1B/40/80)"
    )]
    InvalidEscape {
        /// Offset of the escaped byte within the stuffed body.
        offset: usize,
        /// The byte following 0x1B.
        escaped: u8,
        /// `escaped ^ 0xFF`.
        unescaped: u8,
    },

    /// CRC-16/CCITT over the unstuffed body does not match.
    #[error("KMP CRC mismatch: frame carries 0x{received:04X}, computed 0x{computed:04X}")]
    BadCrc {
        /// CRC bytes found at the end of the body.
        received: u16,
        /// CRC computed over address, command and data.
        computed: u16,
    },

    /// A register carries a unit code outside the KMP unit table.
    #[error("unknown KMP unit code {code} (0x{code:02X}) in register {register} (0x{register:04X})")]
    UnknownUnit {
        /// Register id the unit belongs to.
        register: u16,
        /// The unknown unit code.
        code: u8,
    },

    /// A GetRegister request's count byte disagrees with its data length.
    #[error(
        "KMP GetRegister request announces {declared} register(s) ({expected} id bytes) but carries {actual} id bytes"
    )]
    RegisterCountMismatch {
        /// Count byte of the request.
        declared: u8,
        /// Number of id bytes implied by the count.
        expected: usize,
        /// Number of id bytes present.
        actual: usize,
    },

    /// A GetRegister answer carries a register that was not asked for: it answers
    /// another request (a late answer to an earlier one, or a confused meter), so
    /// none of its values may be taken for this request's.
    #[error(
        "KMP answer to another request: asked for register(s) {}, the answer carries {}",
        hex_ids(.requested),
        hex_ids(.returned)
    )]
    UnrequestedRegisters {
        /// Register ids of the request, in request order.
        requested: Vec<u16>,
        /// Register ids of the answer, in answer order.
        returned: Vec<u16>,
    },

    /// A register record in a GetRegister response is cut short.
    #[error("truncated KMP register record for register 0x{register:04X}: need {needed} bytes, {available} left")]
    RegisterTruncated {
        /// Register id (0 if even the id was cut off).
        register: u16,
        /// Bytes the record needs.
        needed: usize,
        /// Bytes left in the response data.
        available: usize,
    },

    /// A register record declares a zero-length mantissa.
    #[error("KMP register 0x{register:04X} declares a zero-length value")]
    ZeroLengthValue {
        /// Register id.
        register: u16,
    },

    /// A mantissa does not fit into 64 bits.
    #[error("KMP register 0x{register:04X}: {length}-byte mantissa does not fit into 64 bits")]
    MantissaTooLarge {
        /// Register id.
        register: u16,
        /// Declared mantissa length in bytes.
        length: u8,
    },

    /// Fixed-size command data has the wrong length.
    #[error("KMP {command} data has length {actual}, expected {expected}")]
    DataLength {
        /// Name of the command.
        command: &'static str,
        /// Expected data length.
        expected: usize,
        /// Actual data length.
        actual: usize,
    },

    /// Number of registers in a GetRegister request outside 1..=8.
    #[error("KMP GetRegister request must ask for 1..={max} registers, got {count}")]
    RegisterCountOutOfRange {
        /// Requested count.
        count: usize,
        /// Maximum allowed.
        max: usize,
    },

    /// A decimal exponent outside −63..=63 (6-bit magnitude).
    #[error("KMP decimal exponent {exponent} outside the encodable range -63..=63")]
    ExponentOutOfRange {
        /// The offending exponent.
        exponent: i32,
    },

    /// A mantissa byte length that is too short for the value (or > 255).
    #[error("KMP mantissa {mantissa} does not fit into {length} byte(s)")]
    LengthTooShort {
        /// The mantissa.
        mantissa: u64,
        /// The requested byte length.
        length: usize,
    },

    /// NaN or infinity cannot be encoded.
    #[error("cannot encode NaN or infinity as a KMP number")]
    NonFinite,
}

/// `[0x003C, 0x03EC]` as `0x003c, 0x03ec`; `(none)` for an empty answer.
pub(crate) fn hex_ids(ids: &[u16]) -> String {
    if ids.is_empty() {
        return "(none)".into();
    }
    ids.iter().map(|id| format!("{id:#06x}")).collect::<Vec<_>>().join(", ")
}
