//! A minimal RFC 6455 WebSocket client codec: the opening handshake (request and
//! the check of the server's `Sec-WebSocket-Accept`) and frames, as pure functions
//! over bytes. Enough for Home Assistant's websocket API (text messages, ping/pong,
//! close); no extensions, no subprotocols.

use thiserror::Error;

/// The GUID every server appends to the key before hashing (RFC 6455, 1.3).
const GUID: &str = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
/// The largest message accepted from a server (Home Assistant's statistics answers
/// for a year of hours are a few MiB).
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

#[derive(Debug, Error, PartialEq, Eq)]
pub enum WsError {
    #[error("the server did not switch protocols: {0}")]
    NotUpgraded(String),
    #[error("the server's Sec-WebSocket-Accept is wrong or missing")]
    BadAccept,
    #[error("the handshake answer is longer than 16 KiB")]
    HandshakeTooLong,
    #[error("a frame from the server is masked, or uses reserved bits")]
    BadFrame,
    #[error("a message of {0} bytes is larger than the {MAX_MESSAGE} accepted")]
    TooLarge(u64),
    #[error("unknown opcode {0:#x}")]
    Opcode(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opcode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl Opcode {
    fn code(self) -> u8 {
        match self {
            Opcode::Continuation => 0x0,
            Opcode::Text => 0x1,
            Opcode::Binary => 0x2,
            Opcode::Close => 0x8,
            Opcode::Ping => 0x9,
            Opcode::Pong => 0xA,
        }
    }

    fn of(code: u8) -> Result<Opcode, WsError> {
        Ok(match code {
            0x0 => Opcode::Continuation,
            0x1 => Opcode::Text,
            0x2 => Opcode::Binary,
            0x8 => Opcode::Close,
            0x9 => Opcode::Ping,
            0xA => Opcode::Pong,
            other => return Err(WsError::Opcode(other)),
        })
    }
}

/// One frame as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub fin: bool,
    pub opcode: Opcode,
    pub payload: Vec<u8>,
}

/// The client's opening request for `path` on `host` (with its port when not the
/// scheme's default), with the base64 of 16 random bytes as `key`.
pub fn handshake_request(host: &str, path: &str, key: &str) -> String {
    format!(
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\nUser-Agent: mesura\r\n\r\n"
    )
}

/// The `Sec-WebSocket-Key` for 16 random bytes.
pub fn handshake_key(nonce: [u8; 16]) -> String {
    base64(&nonce)
}

/// What the server must answer for `key`: base64(SHA-1(key + GUID)).
pub fn accept_for(key: &str) -> String {
    base64(&sha1(format!("{key}{GUID}").as_bytes()))
}

/// Checks the server's answer to the handshake: `Ok(None)` while its head is not
/// complete, `Ok(Some(n))` with the length of the head once it is complete and right
/// (bytes after it are frames already).
pub fn handshake_response(buf: &[u8], key: &str) -> Result<Option<usize>, WsError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return if buf.len() > 16 * 1024 {
            Err(WsError::HandshakeTooLong)
        } else {
            Ok(None)
        };
    };
    let head = String::from_utf8_lossy(&buf[..end]);
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    if status.split_whitespace().nth(1) != Some("101") {
        return Err(WsError::NotUpgraded(status.to_owned()));
    }
    let want = accept_for(key);
    let accepted = lines.any(|line| {
        line.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("sec-websocket-accept") && value.trim() == want
        })
    });
    if !accepted {
        return Err(WsError::BadAccept);
    }
    Ok(Some(end + 4))
}

/// A client frame (always masked, RFC 6455 5.3), final.
pub fn encode_frame(opcode: Opcode, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 14);
    out.push(0x80 | opcode.code());
    let len = payload.len();
    if len < 126 {
        out.push(0x80 | len as u8);
    } else if len <= usize::from(u16::MAX) {
        out.push(0x80 | 126);
        out.extend_from_slice(&(len as u16).to_be_bytes());
    } else {
        out.push(0x80 | 127);
        out.extend_from_slice(&(len as u64).to_be_bytes());
    }
    out.extend_from_slice(&mask);
    out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// The first frame in `buf` from a server: `Ok(None)` while incomplete, else the
/// frame and the bytes it took.
pub fn decode_frame(buf: &[u8]) -> Result<Option<(Frame, usize)>, WsError> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x70 != 0 || b1 & 0x80 != 0 {
        return Err(WsError::BadFrame);
    }
    let opcode = Opcode::of(b0 & 0x0F)?;
    let (len, head) = match b1 & 0x7F {
        126 => {
            let Some(bytes) = buf.get(2..4) else { return Ok(None) };
            (u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 4)
        }
        127 => {
            let Some(bytes) = buf.get(2..10) else { return Ok(None) };
            let mut be = [0u8; 8];
            be.copy_from_slice(bytes);
            (u64::from_be_bytes(be), 10)
        }
        n => (u64::from(n), 2),
    };
    if len > MAX_MESSAGE as u64 {
        return Err(WsError::TooLarge(len));
    }
    let total = head + len as usize;
    if buf.len() < total {
        return Ok(None);
    }
    Ok(Some((
        Frame {
            fin: b0 & 0x80 != 0,
            opcode,
            payload: buf[head..total].to_vec(),
        },
        total,
    )))
}

fn base64(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(ABC[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// SHA-1 (FIPS 180-4), only for the handshake's accept check.
fn sha1(data: &[u8]) -> [u8; 20] {
    let mut h: [u32; 5] = [0x6745_2301, 0xEFCD_AB89, 0x98BA_DCFE, 0x1032_5476, 0xC3D2_E1F0];
    let mut msg = data.to_vec();
    let bits = (data.len() as u64).wrapping_mul(8);
    msg.push(0x80);
    while msg.len() % 64 != 56 {
        msg.push(0);
    }
    msg.extend_from_slice(&bits.to_be_bytes());
    for block in msg.chunks(64) {
        let mut w = [0u32; 80];
        for (i, word) in block.chunks(4).enumerate() {
            w[i] = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
        }
        for i in 16..80 {
            w[i] = (w[i - 3] ^ w[i - 8] ^ w[i - 14] ^ w[i - 16]).rotate_left(1);
        }
        let [mut a, mut b, mut c, mut d, mut e] = h;
        for (i, wi) in w.iter().enumerate() {
            let (f, k) = match i {
                0..=19 => ((b & c) | (!b & d), 0x5A82_7999),
                20..=39 => (b ^ c ^ d, 0x6ED9_EBA1),
                40..=59 => ((b & c) | (b & d) | (c & d), 0x8F1B_BCDC),
                _ => (b ^ c ^ d, 0xCA62_C1D6),
            };
            let t = a
                .rotate_left(5)
                .wrapping_add(f)
                .wrapping_add(e)
                .wrapping_add(k)
                .wrapping_add(*wi);
            e = d;
            d = c;
            c = b.rotate_left(30);
            b = a;
            a = t;
        }
        for (x, y) in h.iter_mut().zip([a, b, c, d, e]) {
            *x = x.wrapping_add(y);
        }
    }
    let mut out = [0u8; 20];
    for (i, x) in h.iter().enumerate() {
        out[4 * i..4 * i + 4].copy_from_slice(&x.to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rfc_example_key_gets_the_rfc_accept() {
        // RFC 6455, section 1.3.
        assert_eq!(accept_for("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
        assert_eq!(handshake_key(*b"the sample nonce"), "dGhlIHNhbXBsZSBub25jZQ==");
    }

    #[test]
    fn sha1_and_base64_match_known_vectors() {
        let hex: String = sha1(b"abc").iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "a9993e364706816aba3e25717850c26c9cd0d89d");
        let long: String = sha1(&[b'a'; 1000]).iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(long, "291e9a6c66994949b57ba5e650361e98fc36b1ba");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
    }

    #[test]
    fn the_handshake_answer_is_checked() {
        let key = "dGhlIHNhbXBsZSBub25jZQ==";
        let good = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nsec-websocket-accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n\x81\x02hi";
        assert_eq!(handshake_response(&good[..40], key), Ok(None));
        let head = handshake_response(good, key).expect("ok").expect("complete");
        assert_eq!(&good[head..], b"\x81\x02hi");
        let wrong = b"HTTP/1.1 101 Switching Protocols\r\nSec-WebSocket-Accept: xxx\r\n\r\n";
        assert_eq!(handshake_response(wrong, key), Err(WsError::BadAccept));
        let refused = b"HTTP/1.1 404 Not Found\r\n\r\n";
        assert!(matches!(handshake_response(refused, key), Err(WsError::NotUpgraded(s)) if s.contains("404")));
        let request = handshake_request("127.0.0.1:8123", "/api/websocket", key);
        assert!(request.starts_with("GET /api/websocket HTTP/1.1\r\nHost: 127.0.0.1:8123\r\n"));
        assert!(request.ends_with("\r\n\r\n"));
    }

    #[test]
    fn client_frames_are_masked_and_decode_back() {
        for len in [0usize, 5, 125, 126, 65_535, 65_536] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let frame = encode_frame(Opcode::Text, &payload, [1, 2, 3, 4]);
            assert_eq!(frame[0], 0x81);
            assert_ne!(frame[1] & 0x80, 0, "masked");
            // Unmask into a server-style frame and decode that.
            let mask_at = frame.len() - len - 4;
            let mut server = frame[..mask_at].to_vec();
            server[1] &= 0x7F;
            server.extend(
                frame[mask_at + 4..]
                    .iter()
                    .enumerate()
                    .map(|(i, b)| b ^ [1, 2, 3, 4][i % 4]),
            );
            let (decoded, used) = decode_frame(&server).expect("ok").expect("complete");
            assert_eq!(used, server.len());
            assert_eq!((decoded.fin, decoded.opcode), (true, Opcode::Text));
            assert_eq!(decoded.payload, payload, "length {len}");
            assert_eq!(decode_frame(&server[..server.len() - 1]), Ok(None));
        }
    }

    #[test]
    fn bad_frames_are_refused() {
        assert_eq!(decode_frame(&[0x81, 0x81, 0, 0, 0, 0, 0]), Err(WsError::BadFrame));
        assert_eq!(decode_frame(&[0xC1, 0x00]), Err(WsError::BadFrame));
        assert_eq!(decode_frame(&[0x83, 0x00]), Err(WsError::Opcode(3)));
        let mut huge = vec![0x82, 127];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert!(matches!(decode_frame(&huge), Err(WsError::TooLarge(_))));
        let (ping, _) = decode_frame(&[0x89, 0x01, 7]).expect("ok").expect("complete");
        assert_eq!((ping.opcode, ping.payload), (Opcode::Ping, vec![7]));
    }
}
