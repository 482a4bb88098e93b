//! One KMP request/response exchange on a byte stream (the optical head's serial
//! port in the daemon, an in-memory pipe in the tests): send the request, then
//! read until a frame from the meter answers it or the timeout passes.

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

use crate::protocols::kmp::{self, KmpError, RegisterValue, Response};

/// Why one attempt did not end with an answer.
#[derive(Debug)]
pub(super) enum AttemptError {
    /// Not one byte came back before the timeout.
    Silent,
    /// The port failed (unplugged USB head, closed pty): it must be reopened.
    Io(std::io::Error),
    /// Bytes came back but no valid answer among them.
    Invalid(String),
}

/// A frame that came back during an attempt but is not its answer. Each one is
/// counted in /metrics by [`Rejected::kind`], even when the attempt ends well.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum Rejected {
    /// The CRC does not match: a bit lost on the optical path.
    BadCrc(String),
    /// A well-formed answer with registers that were not asked for: it answers
    /// another request, most often a late answer to an earlier one.
    OtherRequest { requested: Vec<u16>, returned: Vec<u16> },
    /// Anything else: garbage, bad stuffing, a truncated frame, another address
    /// or command.
    Invalid(String),
}

impl Rejected {
    /// The `kind` label of `mesura_protocol_errors_total`.
    pub(super) fn kind(&self) -> &'static str {
        match self {
            Rejected::BadCrc(_) => "crc",
            Rejected::OtherRequest { .. } => "register_mismatch",
            Rejected::Invalid(_) => "invalid_frame",
        }
    }

    fn message(&self) -> String {
        match self {
            Rejected::BadCrc(m) | Rejected::Invalid(m) => m.clone(),
            Rejected::OtherRequest { requested, returned } => KmpError::UnrequestedRegisters {
                requested: requested.clone(),
                returned: returned.clone(),
            }
            .to_string(),
        }
    }
}

/// A meter's answer to 8 registers is under 100 bytes; this much without a valid
/// frame is a babbling line, not a slow meter.
const MAX_ANSWER: usize = 2048;

/// Sends `request` (the frame asking for the registers `asked`) and waits up to
/// `timeout` (from the start of the write) for the meter's answer to it. A frame
/// that is not that answer does not end the attempt at once: a late answer to an
/// earlier request may come first and the right one right after, so it listens
/// on until the timeout and only then reports the last bad frame. Every frame
/// turned down is pushed to `rejected`.
pub(super) async fn exchange<S>(
    io: &mut S,
    request: &[u8],
    asked: &[u16],
    timeout: Duration,
    rejected: &mut Vec<Rejected>,
) -> Result<Vec<RegisterValue>, AttemptError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    exchange_with(io, request, timeout, rejected, |chunk| interpret(chunk, request, asked)).await
}

/// Asks the meter for its serial number (GetSerialNo), as [`exchange`] asks for
/// registers.
pub(super) async fn serial_number<S>(
    io: &mut S,
    timeout: Duration,
    rejected: &mut Vec<Rejected>,
) -> Result<u32, AttemptError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let request = kmp::encode_get_serial_no_request(kmp::ADDRESS_HEAT_METER);
    exchange_with(io, &request, timeout, rejected, |chunk| {
        interpret_serial(chunk, &request)
    })
    .await
}

/// [`exchange`] for any request: `interpret` says what each frame that came back is.
async fn exchange_with<S, T>(
    io: &mut S,
    request: &[u8],
    timeout: Duration,
    rejected: &mut Vec<Rejected>,
    interpret: impl Fn(&[u8]) -> Option<Result<T, Rejected>>,
) -> Result<T, AttemptError>
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
            match interpret(&frame) {
                None => {}
                Some(Ok(values)) => return Ok(values),
                Some(Err(why)) => {
                    last_invalid = Some(why.message());
                    rejected.push(why);
                }
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

/// Reads and throws away whatever the line holds until it has been quiet for
/// `quiet`, or for at most `cap` (a line that never falls quiet is left to the
/// exchange's own checks). Returns how many bytes were thrown away.
///
/// Run before every request: the answer to an attempt that timed out may still
/// be on its way, and read as the next request's answer it would put one
/// request's values in another's place.
pub(super) async fn drain<S>(io: &mut S, quiet: Duration, cap: Duration) -> std::io::Result<usize>
where
    S: AsyncRead + Unpin,
{
    let end = Instant::now() + cap;
    let mut discarded = 0;
    let mut chunk = [0u8; 256];
    loop {
        let until = (Instant::now() + quiet).min(end);
        match tokio::time::timeout_at(until, io.read(&mut chunk)).await {
            Err(_) => return Ok(discarded),
            Ok(Ok(0)) => {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the port was closed",
                ))
            }
            Ok(Ok(n)) => discarded += n,
            Ok(Err(e)) => return Err(e),
        }
        if Instant::now() >= end {
            return Ok(discarded);
        }
    }
}

/// Splits off the bytes up to and including the first stop byte, if there is one.
/// A stop byte never occurs inside a frame (it is stuffed), so this is one frame
/// plus whatever noise preceded it.
pub(super) fn next_frame(pending: &mut Vec<u8>) -> Option<Vec<u8>> {
    let end = pending.iter().position(|&b| b == kmp::STOP)?;
    Some(pending.drain(..=end).collect())
}

/// The meter's answer in one stop-terminated chunk: `None` for our own request
/// echoed back (some optical heads hear their own transmitter), else the decoded
/// response, or why the chunk is none.
fn meter_response(chunk: &[u8], request: &[u8]) -> Option<Result<Response, Rejected>> {
    if chunk.ends_with(request) {
        return None;
    }
    // Bytes before the start byte are noise (a head powering up sends a stray
    // byte or two); the CRC still guards everything from the start byte on.
    let Some(start) = chunk.iter().position(|&b| b == kmp::START_FROM_METER) else {
        return Some(Err(Rejected::Invalid(format!(
            "garbage instead of a KMP frame ({})",
            hex_preview(chunk)
        ))));
    };
    Some(kmp::decode_response(&chunk[start..]).map_err(|e| match e {
        KmpError::BadCrc { .. } => Rejected::BadCrc(format!("{e} ({})", hex_preview(&chunk[start..]))),
        e => Rejected::Invalid(format!("{e} ({})", hex_preview(&chunk[start..]))),
    }))
}

/// What one stop-terminated chunk means for a GetRegister request: `None` for
/// our request echoed back, else the registers of the answer to `asked`, or why
/// the chunk is not that answer.
pub(super) fn interpret(chunk: &[u8], request: &[u8], asked: &[u16]) -> Option<Result<Vec<RegisterValue>, Rejected>> {
    Some(match meter_response(chunk, request)? {
        Ok(Response::Registers {
            address: kmp::ADDRESS_HEAT_METER,
            registers,
        }) => match kmp::unanswered_registers(asked, &registers) {
            Ok(_) => Ok(registers),
            Err(_) => Err(Rejected::OtherRequest {
                requested: asked.to_vec(),
                returned: registers.iter().map(RegisterValue::register).collect(),
            }),
        },
        Ok(Response::Registers { address, .. }) => Err(Rejected::Invalid(format!(
            "answer from address {address:#04x}, not the heat meter ({:#04x})",
            kmp::ADDRESS_HEAT_METER
        ))),
        Ok(other) => Err(Rejected::Invalid(format!(
            "unexpected answer to GetRegister: {other:?}"
        ))),
        Err(rejected) => Err(rejected),
    })
}

/// What one chunk means for a GetSerialNo request: the serial, our request echoed
/// (`None`), or why it is not the answer.
pub(super) fn interpret_serial(chunk: &[u8], request: &[u8]) -> Option<Result<u32, Rejected>> {
    Some(match meter_response(chunk, request)? {
        Ok(Response::SerialNo {
            address: kmp::ADDRESS_HEAT_METER,
            serial,
        }) => Ok(serial),
        Ok(other) => Err(Rejected::Invalid(format!(
            "unexpected answer to GetSerialNo: {other:?}"
        ))),
        Err(rejected) => Err(rejected),
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

    const ASKED: [u16; 1] = [registers::ENERGY];

    fn request() -> Vec<u8> {
        encode_get_register_request(kmp::ADDRESS_HEAT_METER, &ASKED).unwrap()
    }

    fn answer() -> Vec<u8> {
        let energy = RegisterValue::from_f64(registers::ENERGY, Unit::MWh, 55.006, 3).unwrap();
        encode_register_response(&[energy])
    }

    /// Runs one exchange against a peer that answers `reply` to the request.
    async fn run(reply: Vec<u8>, timeout: Duration) -> Result<Vec<RegisterValue>, AttemptError> {
        run_noting(reply, timeout).await.0
    }

    /// [`run`], with the frames the exchange turned down.
    async fn run_noting(
        reply: Vec<u8>,
        timeout: Duration,
    ) -> (Result<Vec<RegisterValue>, AttemptError>, Vec<Rejected>) {
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
        let mut rejected = Vec::new();
        let result = exchange(&mut ours, &request, &ASKED, timeout, &mut rejected).await;
        peer.abort();
        (result, rejected)
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
        let result = exchange(&mut ours, &request(), &ASKED, Duration::from_secs(1), &mut Vec::new()).await;
        assert!(matches!(result, Err(AttemptError::Io(_))), "{result:?}");
    }

    #[test]
    fn frames_split_at_stop_bytes_and_echoes_are_skipped() {
        let mut pending = request();
        pending.extend(answer());
        pending.extend_from_slice(&[0x40, 0x3F]);
        let first = next_frame(&mut pending).unwrap();
        assert!(interpret(&first, &request(), &ASKED).is_none(), "the echo is skipped");
        let second = next_frame(&mut pending).unwrap();
        assert!(matches!(interpret(&second, &request(), &ASKED), Some(Ok(v)) if v.len() == 1));
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
                if let Some(Ok(values)) = interpret(&frame, &request, &ASKED) {
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
            interpret(&next_frame(&mut pending).unwrap(), &request, &ASKED),
            Some(Ok(_))
        ));
    }

    #[test]
    fn answers_from_another_address_or_command_are_refused() {
        let other = kmp::encode_register_response_from(0x7F, &[]);
        assert!(
            matches!(interpret(&other, &request(), &ASKED), Some(Err(Rejected::Invalid(m))) if m.contains("address"))
        );
        let serial = kmp::encode_response(&Response::SerialNo {
            address: kmp::ADDRESS_HEAT_METER,
            serial: 7,
        });
        assert!(
            matches!(interpret(&serial, &request(), &ASKED), Some(Err(Rejected::Invalid(m))) if m.contains("unexpected"))
        );
    }

    fn volume_answer() -> Vec<u8> {
        let volume = RegisterValue::from_f64(registers::VOLUME, Unit::CubicMetre, 1875.56, 2).unwrap();
        encode_register_response(&[volume])
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_to_another_request_is_turned_down_and_the_right_one_taken() {
        let mut reply = volume_answer();
        reply.extend(answer());
        let (result, rejected) = run_noting(reply, Duration::from_secs(2)).await;
        let values = result.unwrap();
        assert_eq!(values[0].register(), registers::ENERGY);
        assert_eq!(
            rejected,
            [Rejected::OtherRequest {
                requested: vec![registers::ENERGY],
                returned: vec![registers::VOLUME]
            }]
        );
        assert_eq!(rejected[0].kind(), "register_mismatch");
    }

    #[tokio::test(start_paused = true)]
    async fn only_an_answer_to_another_request_fails_the_attempt() {
        let (result, rejected) = run_noting(volume_answer(), Duration::from_secs(2)).await;
        let err = result.unwrap_err();
        assert!(
            matches!(&err, AttemptError::Invalid(m) if m.contains("another request") && m.contains("0x0044")),
            "{err:?}"
        );
        assert_eq!(rejected.len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_bad_crc_is_noted_even_when_a_good_answer_follows() {
        let mut bad = answer();
        let crc_lo = bad.len() - 2;
        bad[crc_lo] ^= 0x01;
        let mut reply = bad;
        reply.extend(answer());
        let (result, rejected) = run_noting(reply, Duration::from_secs(2)).await;
        assert!(result.is_ok());
        assert!(
            matches!(rejected.as_slice(), [r @ Rejected::BadCrc(_)] if r.kind() == "crc"),
            "{rejected:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn drain_discards_what_is_pending_and_stops_when_the_line_is_quiet() {
        let (mut ours, mut meter) = tokio::io::duplex(4096);
        meter.write_all(&answer()).await.unwrap();
        let late = tokio::spawn(async move {
            // The rest of a late answer, still trickling in.
            tokio::time::sleep(Duration::from_millis(20)).await;
            meter.write_all(&volume_answer()).await.unwrap();
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        let quiet = Duration::from_millis(50);
        let started = Instant::now();
        let discarded = drain(&mut ours, quiet, Duration::from_secs(1)).await.unwrap();
        assert_eq!(discarded, answer().len() + volume_answer().len());
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "{:?}",
            started.elapsed()
        );
        // A quiet line costs one quiet period.
        let started = Instant::now();
        assert_eq!(drain(&mut ours, quiet, Duration::from_secs(1)).await.unwrap(), 0);
        assert_eq!(started.elapsed(), quiet);
        late.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn drain_gives_up_on_a_babbling_line_and_reports_a_closed_one() {
        let (mut ours, mut meter) = tokio::io::duplex(1 << 16);
        let babble = tokio::spawn(async move {
            loop {
                if meter.write_all(&[0x55]).await.is_err() {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
        let started = Instant::now();
        let discarded = drain(&mut ours, Duration::from_millis(50), Duration::from_millis(300))
            .await
            .unwrap();
        assert!(discarded > 0);
        assert!(
            started.elapsed() <= Duration::from_millis(310),
            "{:?}",
            started.elapsed()
        );
        babble.abort();
        let _ = babble.await;
        let err = drain(&mut ours, Duration::from_millis(50), Duration::from_secs(1))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), std::io::ErrorKind::UnexpectedEof);
    }
}
