//! Kamstrup Meter Protocol (KMP) codec.
//!
//! Pure, allocation-light encode/decode functions for the KMP protocol spoken
//! by Kamstrup MULTICAL® heat/cooling meters (30x/40x/60x, and the same framing
//! on flowIQ/OMNIPOWER meters) over the optical eye or a data module.  No I/O,
//! no logging, no panics on input data.
//!
//! # Wire format
//!
//! ```text
//! frame    = start , stuffed( address , command , data , crc_hi , crc_lo ) , 0x0D
//! start    = 0x80 (to the meter) | 0x40 (from the meter)
//! ```
//!
//! * **Byte stuffing**: between start and stop byte every `0x06`, `0x0D`,
//!   `0x1B`, `0x40` and `0x80` is sent as `0x1B, byte ^ 0xFF`
//!   (e.g. `0x80` → `1B 7F`, `0x0D` → `1B F2`, `0x06` → `1B F9`).
//! * **CRC**: CRC-16/CCITT as in XMODEM (poly `0x1021`, init `0x0000`, no
//!   reflection, no final XOR) over the *unstuffed* body (address, command,
//!   data), appended big-endian.  Running the CRC over body + CRC yields 0.
//! * **ACK**: some commands are answered with a bare `0x06` (no framing).
//!
//! # GetRegister (command `0x10`)
//!
//! Request data: `count, id_hi, id_lo, …` (1..=8 big-endian register ids).
//! Response data: per register `id_hi, id_lo, unit, length, si_ex, mantissa…`
//! where `si_ex` bit 7 is the sign of the mantissa, bit 6 the sign of the
//! exponent and bits 0–5 the decimal exponent magnitude, and the mantissa is
//! `length` bytes big-endian unsigned:
//! `value = (-1)^SI × mantissa × 10^((-1)^SE × exp)`.  Registers the meter does
//! not know are silently left out of the response (an empty response is valid);
//! a register that was not asked for makes the response an answer to another
//! request ([`unanswered_registers`]).
//!
//! # Module layout
//!
//! * [`frame`]: CRC, byte stuffing and physical/data-link framing.
//! * [`value`]: the KMP decimal number format, f64 conversion.
//! * [`unit`](mod@self::unit): the KMP unit table and normalisation to canonical units.
//! * [`message`]: request/response encoders and decoders.
//! * [`registers`]: name ↔ id catalogue of well-known heat-meter registers.

mod error;
pub mod frame;
pub mod message;
pub mod number;
pub mod registers;
pub mod unit;
pub mod value;

pub use self::error::KmpError;
pub use self::frame::{crc16, decode_frame, decode_frame_from, encode_frame, stuff, unstuff, Direction, Frame};
pub use self::message::{
    decode_register_data, decode_request, decode_response, encode_get_register_request, encode_get_serial_no_request,
    encode_get_type_request, encode_register_data, encode_register_response, encode_register_response_from,
    encode_request, encode_response, unanswered_registers, MeterType, Request, Response,
};
pub use self::number::{encode_f64, KmpNumber};
pub use self::registers::{register_by_id, register_by_name, RegisterInfo};
pub use self::unit::{normalize, CanonicalUnit, Measurement, Quantity, Unit};
pub use self::value::RegisterValue;

/// Start byte of a frame sent to the meter.
pub const START_TO_METER: u8 = 0x80;
/// Start byte of a frame sent by the meter.
pub const START_FROM_METER: u8 = 0x40;
/// Stop byte terminating every frame.
pub const STOP: u8 = 0x0D;
/// Acknowledge byte (sent unframed).
pub const ACK: u8 = 0x06;
/// Byte-stuffing escape byte.
pub const ESCAPE: u8 = 0x1B;
/// Bytes that must be escaped between start and stop byte.
pub const STUFFED_BYTES: [u8; 5] = [ACK, STOP, ESCAPE, START_FROM_METER, START_TO_METER];

/// Destination address of the heat meter itself.
pub const ADDRESS_HEAT_METER: u8 = 0x3F;
/// Destination address of the logger (top module).
pub const ADDRESS_LOGGER_TOP: u8 = 0x7F;
/// Destination address of the logger (base module).
pub const ADDRESS_LOGGER_BASE: u8 = 0xBF;

/// Command id: GetType (meter type and software revision).
pub const CMD_GET_TYPE: u8 = 0x01;
/// Command id: GetSerialNo (32-bit serial number).
pub const CMD_GET_SERIAL_NO: u8 = 0x02;
/// Command id: SetClock.
pub const CMD_SET_CLOCK: u8 = 0x09;
/// Command id: GetRegister.
pub const CMD_GET_REGISTER: u8 = 0x10;
/// Command id: PutRegister.
pub const CMD_PUT_REGISTER: u8 = 0x11;

/// Maximum number of registers in one GetRegister request.
pub const MAX_REGISTERS_PER_REQUEST: usize = 8;
