//! The rustls client config for a TLS broker connection (ring provider).

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, SingleCertAndKey};
use rustls::{ClientConfig, InconsistentKeys, RootCertStore};

use super::MqttTlsConfig;
use crate::backends::{BackendError, Cause};

fn fail(what: &str, path: &Path, e: impl std::fmt::Display) -> BackendError {
    BackendError::permanent(format!("mqtt tls: {what} {}: {e}", path.display()))
}

fn fail_with(what: &str, path: &Path, e: impl std::fmt::Display + Into<Cause>) -> BackendError {
    fail(what, path, &e).caused_by(e)
}

fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, BackendError> {
    let pem = std::fs::read(path).map_err(|e| fail_with("cannot read", path, e))?;
    let certs: Vec<_> = rustls_pemfile::certs(&mut pem.as_slice())
        .collect::<Result<_, _>>()
        .map_err(|e| fail_with("bad PEM in", path, e))?;
    if certs.is_empty() {
        return Err(fail("no certificate in", path, "empty"));
    }
    Ok(certs)
}

pub(crate) fn client_config(tls: &MqttTlsConfig) -> Result<rumqttc::TlsConfiguration, BackendError> {
    let mut roots = RootCertStore::empty();
    match &tls.ca_file {
        Some(path) => {
            for cert in certificates(path)? {
                roots.add(cert).map_err(|e| fail_with("unusable CA in", path, e))?;
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                let _ = roots.add(cert);
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| BackendError::permanent(format!("mqtt tls: {e}")).caused_by(e))?
        .with_root_certificates(roots);
    let config = match (&tls.client_cert, &tls.client_key) {
        (Some(cert), Some(key)) => {
            let pem = std::fs::read(key).map_err(|e| fail_with("cannot read", key, e))?;
            let key_der: PrivateKeyDer<'static> = rustls_pemfile::private_key(&mut pem.as_slice())
                .map_err(|e| fail_with("bad PEM in", key, e))?
                .ok_or_else(|| fail("no private key in", key, "empty"))?;
            let signing_key = provider
                .key_provider
                .load_private_key(key_der)
                .map_err(|e| fail_with("unusable private key in", key, e))?;
            let certified = CertifiedKey::new(certificates(cert)?, signing_key);
            // rustls's own `with_client_auth_cert` refuses X.509 v1 certificates since
            // 0.23.23 (rustls issue #2364), and v1 is what `openssl x509 -req` makes
            // without extensions, as in mosquitto's instructions for client certificates. The certificate is read here only
            // to check that the key belongs to it; whether it is acceptable is the
            // broker's call. So a mismatch is an error, a certificate rustls cannot
            // read is a warning.
            match certified.keys_match() {
                Err(rustls::Error::InconsistentKeys(InconsistentKeys::KeyMismatch)) => {
                    return Err(fail("the private key does not belong to", cert, key.display()));
                }
                Err(e @ rustls::Error::InvalidCertificate(_)) => tracing::warn!(
                    certificate = %cert.display(),
                    error = %e,
                    "mqtt tls: cannot check that the client key matches this certificate (X.509 v1?); using it"
                ),
                Ok(()) | Err(rustls::Error::InconsistentKeys(_)) => {}
                Err(e) => return Err(fail_with("unusable client certificate", cert, e)),
            }
            builder.with_client_cert_resolver(Arc::new(SingleCertAndKey::from(certified)))
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(rumqttc::TlsConfiguration::Rustls(Arc::new(config)))
}
