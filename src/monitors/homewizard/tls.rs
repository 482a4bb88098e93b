//! TLS for the local API v2. A meter's certificate is signed by HomeWizard's own CA
//! and is issued to `appliance/<type>/<serial>` (e.g. `appliance/p1dongle/5c2fafaabbcc`),
//! not to the address it is reached at. So the chain is verified as usual against
//! that CA only (not the system's roots, which never sign a meter), the address is
//! not required to match, and when the user gives the serial the subject's common
//! name must end in it. This is what python-homewizard-energy does: it pins the same
//! CA and checks the common name only when it knows the device's identifier.

use std::path::Path;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, Error, RootCertStore, SignatureScheme};

/// HomeWizard's "Appliance Access CA" (C=NL, ST=ZH, O=HomeWizard; valid 2021-12-18 to
/// 2031-12-16; SHA-256 4E:C2:77:E6:…:AC:68:00:03). The documentation links it from
/// https://api-documentation.homewizard.com/docs/v2/authorization ("SSL Certificate
/// Validation"); this copy is byte for byte the `CACERT` of
/// github.com/homewizard/python-homewizard-energy, homewizard_energy/v2/cacert.py
/// (commit 9b5495339d739e919ee26f16ab8ab18242892a4b). HomeWizard recommend copying
/// it rather than fetching it (api-documentation issue #268).
pub(super) const HOMEWIZARD_CA: &[u8] = include_bytes!("homewizard-ca-cert.pem");

/// How the meter's certificate is checked.
pub(super) enum Trust<'a> {
    /// Against the CA(s) in this PEM text (`source` names it in errors).
    Ca {
        pem: &'a [u8],
        source: &'a str,
        serial: Option<&'a str>,
    },
    /// Not at all (`tls_verify: false`).
    Nothing,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

pub(super) fn client_config(trust: Trust<'_>) -> Result<ClientConfig, String> {
    let provider = provider();
    let verifier: Arc<dyn ServerCertVerifier> = match trust {
        Trust::Ca { pem, source, serial } => {
            let mut roots = RootCertStore::empty();
            let mut found = 0;
            for cert in rustls_pemfile::certs(&mut &pem[..]) {
                let cert = cert.map_err(|e| format!("{source}: bad PEM: {e}"))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("{source}: unusable CA certificate: {e}"))?;
                found += 1;
            }
            if found == 0 {
                return Err(format!("{source}: no PEM certificate in it"));
            }
            let inner = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider.clone())
                .build()
                .map_err(|e| format!("{source}: {e}"))?;
            Arc::new(ApplianceVerifier {
                inner,
                serial: serial.map(|s| s.trim().to_ascii_lowercase()),
            })
        }
        Trust::Nothing => Arc::new(AnyCertificate(provider.clone())),
    };
    Ok(ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
}

/// Reads `ca_file`.
pub(super) fn read_ca_file(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("ca_file {}: {e}", path.display()))
}

#[derive(Debug)]
struct ApplianceVerifier {
    inner: Arc<WebPkiServerVerifier>,
    serial: Option<String>,
}

impl ServerCertVerifier for ApplianceVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        // webpki checks the chain (signatures, validity, usage) before the name, so a
        // name error means the chain itself is good; the name is checked below.
        match self
            .inner
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Ok(_)
            | Err(Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => {}
            Err(e) => return Err(e),
        }
        if let Some(serial) = &self.serial {
            let name = subject_common_name(end_entity.as_ref()).unwrap_or_default();
            if !is_appliance_name(&name, serial) {
                return Err(Error::General(format!(
                    "the certificate is issued to `{name}`, not to the meter with serial {serial} \
                     (expected appliance/…/{serial})"
                )));
            }
        }
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// `tls_verify: false`: any certificate, but the handshake signatures are still
/// checked (they prove the peer holds the key of the certificate it showed).
#[derive(Debug)]
struct AnyCertificate(Arc<CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// `appliance/<type>/<serial>`; the type is not checked because HomeWizard's own
/// names for it (`p1dongle` for the HWE-P1) differ from the product types.
fn is_appliance_name(name: &str, serial: &str) -> bool {
    let mut parts = name.split('/');
    matches!(
        (parts.next(), parts.next(), parts.next(), parts.next()),
        (Some("appliance"), Some(kind), Some(s), None) if !kind.is_empty() && s.eq_ignore_ascii_case(serial)
    )
}

/// One DER element with tag `tag` at the start of `input`: (contents, rest).
fn der(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (&t, rest) = input.split_first()?;
    if t != tag {
        return None;
    }
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let (bytes, rest) = rest.split_at(n);
        (bytes.iter().fold(0usize, |a, &b| (a << 8) | usize::from(b)), rest)
    };
    (rest.len() >= len).then(|| rest.split_at(len))
}

/// Any one DER element: (tag, contents, rest).
fn der_any(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let tag = *input.first()?;
    der(input, tag).map(|(content, rest)| (tag, content, rest))
}

/// The subject's common name of a certificate already verified by webpki (so well
/// formed). rustls does not expose it and webpki ignores common names.
fn subject_common_name(cert: &[u8]) -> Option<String> {
    const CN: &[u8] = &[0x55, 0x04, 0x03];
    let (cert, _) = der(cert, 0x30)?;
    let (tbs, _) = der(cert, 0x30)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = der(rest, 0xa0)?.1; // version
    }
    rest = der(rest, 0x02)?.1; // serial number
    rest = der(rest, 0x30)?.1; // signature algorithm
    rest = der(rest, 0x30)?.1; // issuer
    rest = der(rest, 0x30)?.1; // validity
    let (mut subject, _) = der(rest, 0x30)?;
    while !subject.is_empty() {
        let (mut set, after) = der(subject, 0x31)?;
        subject = after;
        while !set.is_empty() {
            let (attribute, after) = der(set, 0x30)?;
            set = after;
            let (oid, value) = der(attribute, 0x06)?;
            if oid == CN {
                let (_, text, _) = der_any(value)?;
                return std::str::from_utf8(text).ok().map(str::to_owned);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_built_in_ca_loads() {
        // It is an X.509 v1 certificate: webpki takes v1 trust anchors.
        assert!(client_config(Trust::Ca {
            pem: HOMEWIZARD_CA,
            source: "built-in",
            serial: None
        })
        .is_ok());
        let der = rustls_pemfile::certs(&mut &HOMEWIZARD_CA[..])
            .next()
            .and_then(Result::ok);
        let name = der.and_then(|d| subject_common_name(d.as_ref()));
        assert_eq!(name.as_deref(), Some("Appliance Access CA"));
    }

    #[test]
    fn empty_ca_text_is_an_error() {
        let e = client_config(Trust::Ca {
            pem: b"not a certificate",
            source: "ca_file x.pem",
            serial: None,
        })
        .err();
        assert_eq!(e.as_deref(), Some("ca_file x.pem: no PEM certificate in it"));
    }

    #[test]
    fn appliance_names() {
        assert!(is_appliance_name("appliance/p1dongle/5c2fafaabbcc", "5c2fafaabbcc"));
        assert!(is_appliance_name("appliance/p1dongle/5C2FAFAABBCC", "5c2fafaabbcc"));
        assert!(!is_appliance_name("appliance/p1dongle/5c2fafaabbcd", "5c2fafaabbcc"));
        assert!(!is_appliance_name("appliance//5c2fafaabbcc", "5c2fafaabbcc"));
        assert!(!is_appliance_name("x/p1dongle/5c2fafaabbcc", "5c2fafaabbcc"));
        assert!(!is_appliance_name("appliance/p1dongle/5c2fafaabbcc/x", "5c2fafaabbcc"));
        assert!(!is_appliance_name("", "5c2fafaabbcc"));
    }

    #[test]
    fn truncated_der_is_no_name() {
        let der = rustls_pemfile::certs(&mut &HOMEWIZARD_CA[..])
            .next()
            .and_then(Result::ok);
        let Some(der) = der else {
            panic!("the built-in CA has a certificate");
        };
        for cut in 0..der.len() {
            assert_eq!(subject_common_name(&der[..cut]), None, "cut at {cut}");
        }
    }
}
