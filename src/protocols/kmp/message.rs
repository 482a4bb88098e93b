//! Application layer: requests and responses for GetType, GetSerialNo and
//! GetRegister, plus a generic fallback for other commands.

use super::frame::{decode_frame_from, encode_frame, Direction};
use super::number::KmpNumber;
use super::unit::Unit;
use super::value::RegisterValue;
use super::{
    KmpError, ACK, ADDRESS_HEAT_METER, CMD_GET_REGISTER, CMD_GET_SERIAL_NO, CMD_GET_TYPE, MAX_REGISTERS_PER_REQUEST,
};

/// A decoded request (frame sent to the meter).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// GetType (0x01), no data.
    GetType {
        /// Destination address.
        address: u8,
    },
    /// GetSerialNo (0x02), no data.
    GetSerialNo {
        /// Destination address.
        address: u8,
    },
    /// GetRegister (0x10) for the listed register ids.
    GetRegister {
        /// Destination address.
        address: u8,
        /// Requested register ids, in request order.
        registers: Vec<u16>,
    },
    /// Any other command, undecoded.
    Other {
        /// Destination address.
        address: u8,
        /// Command id.
        command: u8,
        /// Raw (unstuffed) command data.
        data: Vec<u8>,
    },
}

impl Request {
    /// Destination address of the request.
    pub fn address(&self) -> u8 {
        match self {
            Request::GetType { address }
            | Request::GetSerialNo { address }
            | Request::GetRegister { address, .. }
            | Request::Other { address, .. } => *address,
        }
    }
}

/// Payload of a GetType response: 2-byte meter type and 2-byte software
/// revision (letter 1..=26 = 'A'..='Z', then a number; `00 00` = unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MeterType {
    /// Meter type code (big-endian on the wire).
    pub meter_type: u16,
    /// Raw software revision bytes `[letter, number]`.
    pub software_revision: [u8; 2],
}

impl MeterType {
    /// Software revision as text, e.g. `[6, 1]` → `"F1"`; `None` if
    /// unavailable (`00 00`) or the letter is out of range.
    pub fn software_revision_string(&self) -> Option<String> {
        let [letter, number] = self.software_revision;
        if !(1..=26).contains(&letter) {
            return None;
        }
        let letter = char::from(b'A' + (letter - 1));
        Some(format!("{letter}{number}"))
    }
}

/// A decoded response (frame sent by the meter, or a bare ACK).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Response {
    /// A bare acknowledge byte 0x06 (no framing).
    Ack,
    /// GetType (0x01) response.
    Type {
        /// Source address echoed by the meter.
        address: u8,
        /// Meter type and software revision.
        meter_type: MeterType,
    },
    /// GetSerialNo (0x02) response.
    SerialNo {
        /// Source address echoed by the meter.
        address: u8,
        /// 32-bit serial number.
        serial: u32,
    },
    /// GetRegister (0x10) response; unknown registers are simply absent.
    Registers {
        /// Source address echoed by the meter.
        address: u8,
        /// Register records, in response order.
        registers: Vec<RegisterValue>,
    },
    /// Any other command, undecoded.
    Other {
        /// Source address echoed by the meter.
        address: u8,
        /// Command id.
        command: u8,
        /// Raw (unstuffed) command data.
        data: Vec<u8>,
    },
}

impl Response {
    /// Address in the frame (`None` for a bare ACK).
    pub fn address(&self) -> Option<u8> {
        match self {
            Response::Ack => None,
            Response::Type { address, .. }
            | Response::SerialNo { address, .. }
            | Response::Registers { address, .. }
            | Response::Other { address, .. } => Some(*address),
        }
    }

    /// Register records (empty unless this is a GetRegister response).
    pub fn registers(&self) -> &[RegisterValue] {
        match self {
            Response::Registers { registers, .. } => registers,
            _ => &[],
        }
    }

    /// First record for register `id`, if present.
    pub fn register(&self, id: u16) -> Option<&RegisterValue> {
        self.registers().iter().find(|r| r.register() == id)
    }
}

/// Checks a GetRegister answer against the ids it was asked for and returns the
/// requested ids it left out, in request order.
///
/// A meter leaves out a register it does not have (an answer to a single unknown
/// register carries no record at all), so a missing id is the meter's way of
/// saying "not here", not an error. A register that was *not* asked for is: the
/// frame answers some other request, typically a late answer to an earlier one,
/// and is refused whole. Real meters answer in request order (the MULTICAL 403
/// captures do), but only the set is checked: an order is not a second question.
/// A register repeated in the answer is tolerated; the caller keeps the first.
pub fn unanswered_registers(requested: &[u16], answered: &[RegisterValue]) -> Result<Vec<u16>, KmpError> {
    if answered.iter().any(|value| !requested.contains(&value.register())) {
        return Err(KmpError::UnrequestedRegisters {
            requested: requested.to_vec(),
            returned: answered.iter().map(RegisterValue::register).collect(),
        });
    }
    Ok(requested
        .iter()
        .copied()
        .filter(|id| !answered.iter().any(|value| value.register() == *id))
        .collect())
}

/// Encode a GetRegister request for 1..=8 registers.
pub fn encode_get_register_request(dest: u8, registers: &[u16]) -> Result<Vec<u8>, KmpError> {
    if registers.is_empty() || registers.len() > MAX_REGISTERS_PER_REQUEST {
        return Err(KmpError::RegisterCountOutOfRange {
            count: registers.len(),
            max: MAX_REGISTERS_PER_REQUEST,
        });
    }
    let count = u8::try_from(registers.len()).map_err(|_| KmpError::RegisterCountOutOfRange {
        count: registers.len(),
        max: MAX_REGISTERS_PER_REQUEST,
    })?;
    let mut data = Vec::with_capacity(1 + 2 * registers.len());
    data.push(count);
    for id in registers {
        data.extend_from_slice(&id.to_be_bytes());
    }
    Ok(encode_frame(Direction::ToMeter, dest, CMD_GET_REGISTER, &data))
}

/// Encode a GetType request.
pub fn encode_get_type_request(dest: u8) -> Vec<u8> {
    encode_frame(Direction::ToMeter, dest, CMD_GET_TYPE, &[])
}

/// Encode a GetSerialNo request.
pub fn encode_get_serial_no_request(dest: u8) -> Vec<u8> {
    encode_frame(Direction::ToMeter, dest, CMD_GET_SERIAL_NO, &[])
}

/// Encode any [`Request`].
pub fn encode_request(request: &Request) -> Result<Vec<u8>, KmpError> {
    match request {
        Request::GetType { address } => Ok(encode_get_type_request(*address)),
        Request::GetSerialNo { address } => Ok(encode_get_serial_no_request(*address)),
        Request::GetRegister { address, registers } => encode_get_register_request(*address, registers),
        Request::Other { address, command, data } => Ok(encode_frame(Direction::ToMeter, *address, *command, data)),
    }
}

/// Decode a request frame (start byte 0x80), e.g. in a simulated meter.
///
/// GetRegister requests must have a count byte consistent with the number
/// of id bytes; counts outside 1..=8 are accepted if consistent (a meter
/// decides what to answer).
pub fn decode_request(raw: &[u8]) -> Result<Request, KmpError> {
    let frame = decode_frame_from(raw, Direction::ToMeter)?;
    let address = frame.address;
    match frame.command {
        CMD_GET_TYPE => {
            expect_len("GetType request", &frame.data, 0)?;
            Ok(Request::GetType { address })
        }
        CMD_GET_SERIAL_NO => {
            expect_len("GetSerialNo request", &frame.data, 0)?;
            Ok(Request::GetSerialNo { address })
        }
        CMD_GET_REGISTER => {
            let (&declared, ids) = frame.data.split_first().ok_or(KmpError::Truncated {
                what: "GetRegister request data (count byte)",
                needed: 1,
                got: 0,
            })?;
            let expected = 2 * usize::from(declared);
            if ids.len() != expected {
                return Err(KmpError::RegisterCountMismatch {
                    declared,
                    expected,
                    actual: ids.len(),
                });
            }
            let registers = ids
                .chunks_exact(2)
                .map(|pair| match pair {
                    [hi, lo] => u16::from_be_bytes([*hi, *lo]),
                    _ => 0,
                })
                .collect();
            Ok(Request::GetRegister { address, registers })
        }
        command => Ok(Request::Other {
            address,
            command,
            data: frame.data,
        }),
    }
}

fn expect_len(command: &'static str, data: &[u8], expected: usize) -> Result<(), KmpError> {
    if data.len() == expected {
        Ok(())
    } else {
        Err(KmpError::DataLength {
            command,
            expected,
            actual: data.len(),
        })
    }
}

/// Encode register records as GetRegister response data (unframed).
pub fn encode_register_data(values: &[RegisterValue]) -> Vec<u8> {
    let mut data = Vec::with_capacity(values.len() * 9);
    for value in values {
        data.extend_from_slice(&value.register().to_be_bytes());
        data.push(value.unit().code());
        data.push(value.length());
        data.push(value.si_ex());
        let mantissa = value.mantissa();
        for index in (0..u32::from(value.length())).rev() {
            let byte = if index < 8 {
                // Truncation to the low byte is intended.
                (mantissa >> (8 * index)) as u8
            } else {
                0
            };
            data.push(byte);
        }
    }
    data
}

/// Size of a register record header: id (2), unit, length, SI/EX.
const REGISTER_HEADER_LEN: usize = 5;

/// Decode GetRegister response data (unframed) into register records.
pub fn decode_register_data(data: &[u8]) -> Result<Vec<RegisterValue>, KmpError> {
    let mut values = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let (id_hi, id_lo, unit_code, length, si_ex, tail) = match rest {
            [id_hi, id_lo, unit, length, si_ex, tail @ ..] => (*id_hi, *id_lo, *unit, *length, *si_ex, tail),
            _ => {
                let register = match rest {
                    [hi, lo, ..] => u16::from_be_bytes([*hi, *lo]),
                    _ => 0,
                };
                return Err(KmpError::RegisterTruncated {
                    register,
                    needed: REGISTER_HEADER_LEN,
                    available: rest.len(),
                });
            }
        };
        let register = u16::from_be_bytes([id_hi, id_lo]);
        let unit = Unit::from_code(unit_code).ok_or(KmpError::UnknownUnit {
            register,
            code: unit_code,
        })?;
        if length == 0 {
            return Err(KmpError::ZeroLengthValue { register });
        }
        let len = usize::from(length);
        if tail.len() < len {
            return Err(KmpError::RegisterTruncated {
                register,
                needed: REGISTER_HEADER_LEN + len,
                available: rest.len(),
            });
        }
        let (mantissa_bytes, next) = tail.split_at(len);
        let mantissa = mantissa_bytes.iter().try_fold(0u64, |acc, &byte| {
            acc.checked_mul(256)
                .map(|shifted| shifted | u64::from(byte))
                .ok_or(KmpError::MantissaTooLarge { register, length })
        })?;
        let number = KmpNumber::from_si_ex(si_ex, mantissa);
        values.push(RegisterValue::from_parts(register, unit, number, length));
        rest = next;
    }
    Ok(values)
}

/// Encode a GetRegister response from the heat meter (address 0x3F):
/// stuffed, CRC'd and framed with 0x40 … 0x0D.
pub fn encode_register_response(values: &[RegisterValue]) -> Vec<u8> {
    encode_register_response_from(ADDRESS_HEAT_METER, values)
}

/// Encode a GetRegister response carrying `address`.
pub fn encode_register_response_from(address: u8, values: &[RegisterValue]) -> Vec<u8> {
    encode_frame(
        Direction::FromMeter,
        address,
        CMD_GET_REGISTER,
        &encode_register_data(values),
    )
}

/// Encode any [`Response`] (a bare ACK is the single byte 0x06).
pub fn encode_response(response: &Response) -> Vec<u8> {
    match response {
        Response::Ack => vec![ACK],
        Response::Type { address, meter_type } => {
            let mut data = meter_type.meter_type.to_be_bytes().to_vec();
            data.extend_from_slice(&meter_type.software_revision);
            encode_frame(Direction::FromMeter, *address, CMD_GET_TYPE, &data)
        }
        Response::SerialNo { address, serial } => {
            encode_frame(Direction::FromMeter, *address, CMD_GET_SERIAL_NO, &serial.to_be_bytes())
        }
        Response::Registers { address, registers } => encode_register_response_from(*address, registers),
        Response::Other { address, command, data } => encode_frame(Direction::FromMeter, *address, *command, data),
    }
}

/// Decode a response frame (start byte 0x40) or a bare ACK byte.
pub fn decode_response(raw: &[u8]) -> Result<Response, KmpError> {
    if raw == [ACK] {
        return Ok(Response::Ack);
    }
    let frame = decode_frame_from(raw, Direction::FromMeter)?;
    let address = frame.address;
    match frame.command {
        CMD_GET_TYPE => match frame.data.as_slice() {
            [t_hi, t_lo, letter, number] => Ok(Response::Type {
                address,
                meter_type: MeterType {
                    meter_type: u16::from_be_bytes([*t_hi, *t_lo]),
                    software_revision: [*letter, *number],
                },
            }),
            other => Err(KmpError::DataLength {
                command: "GetType response",
                expected: 4,
                actual: other.len(),
            }),
        },
        CMD_GET_SERIAL_NO => match frame.data.as_slice() {
            [a, b, c, d] => Ok(Response::SerialNo {
                address,
                serial: u32::from_be_bytes([*a, *b, *c, *d]),
            }),
            other => Err(KmpError::DataLength {
                command: "GetSerialNo response",
                expected: 4,
                actual: other.len(),
            }),
        },
        CMD_GET_REGISTER => Ok(Response::Registers {
            address,
            registers: decode_register_data(&frame.data)?,
        }),
        command => Ok(Response::Other {
            address,
            command,
            data: frame.data,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::kmp::registers::{ENERGY, HOUR_COUNTER, INFO_CODE, TEMP_FLOW, VOLUME};

    fn value(id: u16) -> RegisterValue {
        RegisterValue::from_f64(id, Unit::KWh, 1.0, 0).unwrap()
    }

    fn answer(ids: &[u16]) -> Vec<RegisterValue> {
        ids.iter().copied().map(value).collect()
    }

    #[test]
    fn an_answer_with_the_requested_registers_passes_in_any_order() {
        let asked = [ENERGY, VOLUME, HOUR_COUNTER];
        assert_eq!(unanswered_registers(&asked, &answer(&asked)), Ok(vec![]));
        assert_eq!(
            unanswered_registers(&asked, &answer(&[HOUR_COUNTER, ENERGY, VOLUME])),
            Ok(vec![])
        );
        // A repeated register is not another question.
        assert_eq!(
            unanswered_registers(&asked, &answer(&[ENERGY, ENERGY, VOLUME, HOUR_COUNTER])),
            Ok(vec![])
        );
    }

    #[test]
    fn registers_the_meter_leaves_out_are_named_in_request_order() {
        let asked = [ENERGY, VOLUME, HOUR_COUNTER, INFO_CODE];
        assert_eq!(
            unanswered_registers(&asked, &answer(&[VOLUME, INFO_CODE])),
            Ok(vec![ENERGY, HOUR_COUNTER])
        );
        // What a meter answers to a single register it does not have.
        assert_eq!(unanswered_registers(&[ENERGY], &[]), Ok(vec![ENERGY]));
    }

    #[test]
    fn a_register_not_asked_for_makes_it_an_answer_to_another_request() {
        // One id swapped for another: the hole this check exists for.
        let err = unanswered_registers(&[ENERGY, HOUR_COUNTER], &answer(&[ENERGY, VOLUME])).unwrap_err();
        assert_eq!(
            err,
            KmpError::UnrequestedRegisters {
                requested: vec![ENERGY, HOUR_COUNTER],
                returned: vec![ENERGY, VOLUME],
            }
        );
        let text = err.to_string();
        assert!(
            text.contains("0x003c, 0x03ec") && text.contains("carries 0x003c, 0x0044"),
            "{text}"
        );
        // A late answer to the previous request: nothing in common with this one.
        let err = unanswered_registers(&[INFO_CODE], &answer(&[ENERGY, TEMP_FLOW])).unwrap_err();
        assert!(matches!(err, KmpError::UnrequestedRegisters { .. }), "{err}");
        // Everything asked for, plus one more, is still not this request's answer.
        assert!(unanswered_registers(&[ENERGY], &answer(&[ENERGY, VOLUME])).is_err());
    }
}
