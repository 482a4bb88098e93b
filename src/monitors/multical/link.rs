//! One KMP request/response exchange on a byte stream (the optical head's serial
//! port in the daemon, an in-memory pipe in the tests): send the request, then
//! read until a frame from the meter decodes or the timeout passes.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::protocols::kmp::{self, RegisterValue, Response};

/// Why one attempt did not end with an answer.
#[derive(Debug)]
pub enum AttemptError {
    /// Not one byte came back before the timeout.
    Silent,
    /// The port failed (unplugged USB head, closed pty): it must be reopened.
    Io(std::io::Error),
    /// Bytes came back but no valid answer among them.
    Invalid(String),
}

/// A meter's answer to 8 registers is under 100 bytes; this much without a valid
/// frame is a babbling line, not a slow meter.
const MAX_ANSWER: usize = 2048;

/// Sends `request` and waits up to `timeout` (from the start of the write) for the
/// meter's GetRegister answer. A frame that fails to decode does not end the
/// attempt at once: the rest of an earlier, late answer may come first, so it
/// listens on until the timeout and only then reports the last bad frame.
pub async fn exchange<S>(io: &mut S, request: &[u8], timeout: Duration) -> Result<Vec<RegisterValue>, AttemptError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let deadline = Instant::now() + timeout;
    let write = async {
        io.write_all(request).await?;
        io.flush().await
    };
    match tokio::time::timeout_at(deadline, write).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(AttemptError::Io(e)),
        // A write that cannot finish is a port that is stuck, not a silent meter.
        Err(_) => {
            return Err(AttemptError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the request could not be written within the timeout",
            )))
        }
    }

    let mut pending: Vec<u8> = Vec::new();
    let mut last_invalid: Option<String> = None;
    let mut chunk = [0u8; 256];
    loop {
        let n = match tokio::time::timeout_at(deadline, io.read(&mut chunk)).await {
            Ok(Ok(0)) => {
                return Err(AttemptError::Io(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the port was closed",
                )))
            }
            Ok(Ok(n)) => n,
            Ok(Err(e)) => return Err(AttemptError::Io(e)),
            Err(_) => {
                return Err(match last_invalid {
                    Some(message) => AttemptError::Invalid(message),
                    None if !pending.is_empty() => AttemptError::Invalid(format!(
                        "incomplete answer: {} byte(s) without a stop byte ({})",
                        pending.len(),
                        hex_preview(&pending)
                    )),
                    None => AttemptError::Silent,
                })
            }
        };
        pending.extend_from_slice(&chunk[..n]);
        while let Some(frame) = next_frame(&mut pending) {
            match interpret(&frame, request) {
                None => {}
                Some(Ok(values)) => return Ok(values),
                Some(Err(message)) => last_invalid = Some(message),
            }
        }
        if pending.len() > MAX_ANSWER {
            return Err(AttemptError::Invalid(format!(
                "{} bytes without a stop byte: not a KMP meter",
                pending.len()
            )));
        }
    }
}

/// Splits off the bytes up to and including the first stop byte, if there is one.
/// A stop byte never occurs inside a frame (it is stuffed), so this is one frame
/// plus whatever noise preceded it.
pub fn next_frame(pending: &mut Vec<u8>) -> Option<Vec<u8>> {
    let end = pending.iter().position(|&b| b == kmp::STOP)?;
    Some(pending.drain(..=end).collect())
}

/// What one stop-terminated chunk means: `None` for our own request echoed back
/// (some optical heads hear their own transmitter), else the registers or why not.
pub fn interpret(chunk: &[u8], request: &[u8]) -> Option<Result<Vec<RegisterValue>, String>> {
    if chunk.ends_with(request) {
        return None;
    }
    // Bytes before the start byte are noise (a head powering up sends a stray
    // byte or two); the CRC still guards everything from the start byte on.
    let Some(start) = chunk.iter().position(|&b| b == kmp::START_FROM_METER) else {
        return Some(Err(format!("garbage instead of a KMP frame ({})", hex_preview(chunk))));
    };
    Some(match kmp::decode_response(&chunk[start..]) {
        Ok(Response::Registers {
            address: kmp::ADDRESS_HEAT_METER,
            registers,
        }) => Ok(registers),
        Ok(Response::Registers { address, .. }) => Err(format!(
            "answer from address {address:#04x}, not the heat meter ({:#04x})",
            kmp::ADDRESS_HEAT_METER
        )),
        Ok(other) => Err(format!("unexpected answer to GetRegister: {other:?}")),
        Err(e) => Err(format!("{e} ({})", hex_preview(&chunk[start..]))),
    })
}

/// The first bytes in hex, for error messages and logs.
fn hex_preview(bytes: &[u8]) -> String {
    const SHOWN: usize = 48;
    let mut text: String = bytes.iter().take(SHOWN).map(|b| format!("{b:02x}")).collect();
    if bytes.len() > SHOWN {
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocols::kmp::{encode_get_register_request, encode_register_response, registers, Unit};

    fn request() -> Vec<u8> {
        encode_get_register_request(kmp::ADDRESS_HEAT_METER, &[registers::ENERGY]).unwrap()
    }

    fn answer() -> Vec<u8> {
        let energy = RegisterValue::from_f64(registers::ENERGY, Unit::MWh, 55.006, 3).unwrap();
        encode_register_response(&[energy])
    }

    /// Runs one exchange against a peer that answers `reply` to the request.
    async fn run(reply: Vec<u8>, timeout: Duration) -> Result<Vec<RegisterValue>, AttemptError> {
        let (mut ours, mut meter) = tokio::io::duplex(4096);
        let request = request();
        let expected = request.clone();
        let peer = tokio::spawn(async move {
            let mut got = vec![0u8; expected.len()];
            meter.read_exact(&mut got).await.unwrap();
            assert_eq!(got, expected);
            meter.write_all(&reply).await.unwrap();
            // Keep the pipe open so silence is silence, not EOF.
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        let result = exchange(&mut ours, &request, timeout).await;
        peer.abort();
        result
    }

    #[tokio::test(start_paused = true)]
    async fn reads_an_answer_after_an_echo_and_noise() {
        let mut reply = request();
        reply.extend_from_slice(&[0x00, 0xFF]);
        reply.extend(answer());
        let values = run(reply, Duration::from_secs(2)).await.unwrap();
        assert_eq!(values.len(), 1);
        assert_eq!(values[0].value(), 55.006);
    }

    #[tokio::test(start_paused = true)]
    async fn a_bad_frame_then_a_good_one_is_a_good_answer() {
        let mut reply = b"tail of something\r".to_vec();
        reply.extend(answer());
        assert!(run(reply, Duration::from_secs(2)).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn silence_garbage_and_bad_crc_are_told_apart() {
        assert!(matches!(
            run(Vec::new(), Duration::from_secs(2)).await,
            Err(AttemptError::Silent)
        ));
        let err = run(b"garbage\r".to_vec(), Duration::from_secs(2)).await.unwrap_err();
        assert!(
            matches!(&err, AttemptError::Invalid(m) if m.contains("garbage")),
            "{err:?}"
        );
        let err = run(b"no stop byte".to_vec(), Duration::from_secs(2)).await.unwrap_err();
        assert!(
            matches!(&err, AttemptError::Invalid(m) if m.contains("incomplete")),
            "{err:?}"
        );
        let mut bad = answer();
        let crc_lo = bad.len() - 2;
        bad[crc_lo] ^= 0x01;
        let err = run(bad, Duration::from_secs(2)).await.unwrap_err();
        assert!(matches!(&err, AttemptError::Invalid(m) if m.contains("CRC")), "{err:?}");
    }

    #[tokio::test]
    async fn a_closed_port_is_an_io_error() {
        let (mut ours, meter) = tokio::io::duplex(64);
        drop(meter);
        let result = exchange(&mut ours, &request(), Duration::from_secs(1)).await;
        assert!(matches!(result, Err(AttemptError::Io(_))), "{result:?}");
    }

    #[test]
    fn frames_split_at_stop_bytes_and_echoes_are_skipped() {
        let mut pending = request();
        pending.extend(answer());
        pending.extend_from_slice(&[0x40, 0x3F]);
        let first = next_frame(&mut pending).unwrap();
        assert!(interpret(&first, &request()).is_none(), "the echo is skipped");
        let second = next_frame(&mut pending).unwrap();
        assert!(matches!(interpret(&second, &request()), Some(Ok(v)) if v.len() == 1));
        assert_eq!(next_frame(&mut pending), None);
        assert_eq!(pending, [0x40, 0x3F], "a partial frame waits for more bytes");
    }

    #[test]
    fn arbitrary_line_noise_never_panics_and_never_passes() {
        let mut rng = fastrand::Rng::with_seed(9);
        let request = request();
        let good = answer();
        for _ in 0..20_000 {
            let mut pending: Vec<u8> = (0..rng.usize(0..64)).map(|_| rng.u8(..)).collect();
            if rng.bool() {
                // Mostly frame-shaped noise reaches the decoder.
                pending.insert(0, kmp::START_FROM_METER);
                pending.push(kmp::STOP);
            }
            while let Some(frame) = next_frame(&mut pending) {
                if let Some(Ok(values)) = interpret(&frame, &request) {
                    // Noise passes only as a well-formed answer with a valid CRC.
                    let again = kmp::encode_register_response(&values);
                    assert_eq!(kmp::decode_response(&again).unwrap().registers(), values);
                }
            }
            assert!(!pending.contains(&kmp::STOP));
        }
        // And the good answer still passes after any amount of noise.
        let mut pending: Vec<u8> = vec![0xFF; 100];
        pending.extend(&good);
        assert!(matches!(
            interpret(&next_frame(&mut pending).unwrap(), &request),
            Some(Ok(_))
        ));
    }

    #[test]
    fn answers_from_another_address_or_command_are_refused() {
        let other = kmp::encode_register_response_from(0x7F, &[]);
        assert!(matches!(interpret(&other, &request()), Some(Err(m)) if m.contains("address")));
        let serial = kmp::encode_response(&Response::SerialNo {
            address: kmp::ADDRESS_HEAT_METER,
            serial: 7,
        });
        assert!(matches!(interpret(&serial, &request()), Some(Err(m)) if m.contains("unexpected")));
    }
}
