//! Decrypting one DLMS general-global-ciphering APDU (tag 0xDB) with AES-128-GCM.
//!
//! ```text
//! DB | 08 | system title (8) | length (BER) | SC | frame counter (4) | ciphertext | tag (12, when SC has 0x10)
//! ```
//!
//! The nonce is the system title followed by the frame counter. With the
//! authentication bit (SC `0x30`, Luxembourg) the 12-byte tag covers the
//! additional data `SC ‖ authentication key`; without it (SC `0x20`/`0x21`, the
//! Austrian operators' "encryption only") there is no tag and the ciphertext is
//! GCM's counter mode alone, which starts at counter 2 (counter 1 encrypts the tag).

use aes::cipher::{KeyIvInit, StreamCipher};
use aes::Aes128;
use aes_gcm::aead::consts::U12;
use aes_gcm::aead::generic_array::GenericArray;
use aes_gcm::{AeadInPlace, AesGcm, KeyInit};

use super::{CipherError, Keys};

/// GCM as DLMS uses it: 96-bit nonce, 96-bit tag.
type DlmsGcm = AesGcm<Aes128, U12, U12>;

/// The tag length DLMS security suites 0–2 use.
pub const TAG_LEN: usize = 12;

/// Security control byte bits (IEC 62056-5-3, 9.2.7.2.3).
const SC_AUTHENTICATED: u8 = 0x10;
const SC_ENCRYPTED: u8 = 0x20;

/// Luxembourg's authentication key, published in the Smarty P1 specification
/// (v1.1.3, 3.2.5 "Channel security") and the same on every Smarty meter. Used
/// when no `authentication_key` is configured.
pub const SMARTY_AUTHENTICATION_KEY: [u8; 16] = [
    0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xAA, 0xBB, 0xCC, 0xDD, 0xEE, 0xFF,
];

/// The parts of a general-global-ciphering APDU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ciphered<'a> {
    pub system_title: [u8; 8],
    pub security_control: u8,
    pub frame_counter: u32,
    /// Ciphertext followed by the tag when there is one.
    pub body: &'a [u8],
}

/// Reads a BER length at the start of `bytes`: `(length, bytes used)`, `None` when
/// `bytes` is too short, `Err` for a form DLMS never sends (more than 3 bytes).
pub fn ber_length(bytes: &[u8]) -> Option<Result<(usize, usize), CipherError>> {
    let first = *bytes.first()?;
    if first < 0x80 {
        return Some(Ok((usize::from(first), 1)));
    }
    let n = usize::from(first & 0x7F);
    if n == 0 || n > 3 {
        return Some(Err(CipherError::Malformed("length field of more than 3 bytes")));
    }
    let digits = bytes.get(1..=n)?;
    let len = digits.iter().fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
    Some(Ok((len, 1 + n)))
}

/// Whether `sc` is a security control byte of an encrypted APDU this codec reads:
/// encryption bit set, security suite 0–2, no compression, no broadcast key.
pub fn plausible_security_control(sc: u8) -> bool {
    sc & SC_ENCRYPTED != 0 && sc & 0x0F <= 2 && sc & 0xC0 == 0
}

/// Splits a whole APDU (exactly one, from its 0xDB) into its parts.
pub fn parse(apdu: &[u8]) -> Result<Ciphered<'_>, CipherError> {
    let (&tag, rest) = apdu.split_first().ok_or(CipherError::Malformed("empty"))?;
    if tag != 0xDB {
        return Err(CipherError::Malformed("not a general-global-ciphering APDU (0xDB)"));
    }
    let (&title_len, rest) = rest.split_first().ok_or(CipherError::Malformed("cut short"))?;
    if title_len != 8 {
        return Err(CipherError::Malformed("system title is not 8 bytes"));
    }
    let title = rest.get(..8).ok_or(CipherError::Malformed("cut short"))?;
    let mut system_title = [0u8; 8];
    system_title.copy_from_slice(title);
    let rest = rest.get(8..).ok_or(CipherError::Malformed("cut short"))?;
    let (len, used) = ber_length(rest).ok_or(CipherError::Malformed("cut short"))??;
    let content = rest
        .get(used..used + len)
        .ok_or(CipherError::Malformed("shorter than its length field"))?;
    let (&security_control, rest) = content.split_first().ok_or(CipherError::Malformed("cut short"))?;
    if !plausible_security_control(security_control) {
        return Err(CipherError::Unsupported(security_control));
    }
    let counter = rest.get(..4).ok_or(CipherError::Malformed("cut short"))?;
    let frame_counter = counter.iter().fold(0u32, |acc, &b| (acc << 8) | u32::from(b));
    let body = rest.get(4..).ok_or(CipherError::Malformed("cut short"))?;
    if security_control & SC_AUTHENTICATED != 0 && body.len() < TAG_LEN {
        return Err(CipherError::Malformed("shorter than its tag"));
    }
    Ok(Ciphered {
        system_title,
        security_control,
        frame_counter,
        body,
    })
}

impl Ciphered<'_> {
    fn nonce(&self) -> [u8; 12] {
        let mut nonce = [0u8; 12];
        for (n, b) in nonce
            .iter_mut()
            .zip(self.system_title.iter().chain(&self.frame_counter.to_be_bytes()))
        {
            *n = *b;
        }
        nonce
    }

    /// The plaintext. An authenticated APDU whose tag does not verify (wrong key,
    /// wrong authentication key, corrupt bytes) is [`CipherError::TagMismatch`].
    /// Without a configured authentication key, Luxembourg's published one is tried,
    /// then none (the additional data is then the security control byte alone).
    pub fn decrypt(&self, keys: &Keys) -> Result<Vec<u8>, CipherError> {
        let nonce = self.nonce();
        if self.security_control & SC_AUTHENTICATED == 0 {
            let mut plain = self.body.to_vec();
            let mut iv = [0u8; 16];
            for (i, b) in iv.iter_mut().zip(nonce.iter().chain(&[0, 0, 0, 2])) {
                *i = *b;
            }
            let mut ctr = ctr::Ctr32BE::<Aes128>::new(&keys.encryption.into(), &iv.into());
            ctr.apply_keystream(&mut plain);
            return Ok(plain);
        }
        let split = self
            .body
            .len()
            .checked_sub(TAG_LEN)
            .ok_or(CipherError::Malformed("shorter than its tag"))?;
        let (ciphertext, tag) = self.body.split_at(split);
        let gcm = DlmsGcm::new(&keys.encryption.into());
        let candidates: &[Option<[u8; 16]>] = match keys.authentication {
            Some(ak) => &[Some(ak)],
            None => &[Some(SMARTY_AUTHENTICATION_KEY), None],
        };
        let mut plain = Vec::new();
        for ak in candidates {
            let mut aad = Vec::with_capacity(17);
            aad.push(self.security_control);
            aad.extend_from_slice(ak.as_ref().map_or(&[][..], |k| &k[..]));
            plain.clear();
            plain.extend_from_slice(ciphertext);
            let decrypted = gcm.decrypt_in_place_detached(
                GenericArray::from_slice(&nonce),
                &aad,
                &mut plain,
                GenericArray::from_slice(tag),
            );
            if decrypted.is_ok() {
                return Ok(plain);
            }
        }
        Err(CipherError::TagMismatch)
    }
}

/// Encrypts `plain` into a general-global-ciphering APDU, the way a meter does:
/// for tests and the benchmark (mesura itself only decrypts).
#[doc(hidden)]
pub fn encrypt(keys: &Keys, system_title: [u8; 8], security_control: u8, frame_counter: u32, plain: &[u8]) -> Vec<u8> {
    let mut nonce = [0u8; 12];
    for (n, b) in nonce
        .iter_mut()
        .zip(system_title.iter().chain(&frame_counter.to_be_bytes()))
    {
        *n = *b;
    }
    let mut body = plain.to_vec();
    if security_control & SC_AUTHENTICATED != 0 {
        let mut aad = vec![security_control];
        aad.extend_from_slice(&keys.authentication.unwrap_or(SMARTY_AUTHENTICATION_KEY));
        let gcm = DlmsGcm::new(&keys.encryption.into());
        if let Ok(tag) = gcm.encrypt_in_place_detached(GenericArray::from_slice(&nonce), &aad, body.as_mut_slice()) {
            body.extend_from_slice(&tag);
        }
    } else {
        let mut iv = [0u8; 16];
        for (i, b) in iv.iter_mut().zip(nonce.iter().chain(&[0, 0, 0, 2])) {
            *i = *b;
        }
        ctr::Ctr32BE::<Aes128>::new(&keys.encryption.into(), &iv.into()).apply_keystream(&mut body);
    }
    let len = 5 + body.len();
    let mut apdu = vec![0xDB, 8];
    apdu.extend_from_slice(&system_title);
    match len {
        0..=0x7F => apdu.push(len as u8),
        0x80..=0xFF => apdu.extend_from_slice(&[0x81, len as u8]),
        _ => apdu.extend_from_slice(&[0x82, (len >> 8) as u8, len as u8]),
    }
    apdu.push(security_control);
    apdu.extend_from_slice(&frame_counter.to_be_bytes());
    apdu.extend_from_slice(&body);
    apdu
}
