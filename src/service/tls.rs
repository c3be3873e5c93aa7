//! HTTPS for `hsm-csr serve`: the certificate chain and key from PEM files
//! (RFC 7468), TLS 1.2 and 1.3 through rustls with its ring provider, and
//! ALPN (RFC 7301) that offers `http/1.1` only, as the server speaks no
//! HTTP/2.

use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::error::{Error, Result};

/// What is wrong with a PEM file, without quoting any of it: the key file's
/// lines are secret.
fn explain(e: &pem::Error, wanted: &str) -> String {
    match e {
        pem::Error::Io(e) => format!("cannot read it: {e}"),
        pem::Error::NoItemsFound => format!("it holds no {wanted} PEM block"),
        _ => format!("it is not valid PEM (RFC 7468) where a {wanted} block was expected"),
    }
}

/// The acceptor for `[service] tls_cert` and `tls_key`.
///
/// # Errors
/// `Config.Invalid` naming the file that cannot be read, holds no
/// certificate or key, or when the key does not belong to the certificate.
pub(crate) fn acceptor(cert: &Path, key: &Path) -> Result<TlsAcceptor> {
    let bad_cert = |why: String| {
        Error::Config(format!(
            "[service] tls_cert {}: {why}. Give the server's certificate chain in PEM, leaf first.",
            cert.display()
        ))
    };
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<std::result::Result<Vec<_>, _>>)
        .map_err(|e| bad_cert(explain(&e, "CERTIFICATE")))?;
    if chain.is_empty() {
        return Err(bad_cert(explain(&pem::Error::NoItemsFound, "CERTIFICATE")));
    }
    let private = PrivateKeyDer::from_pem_file(key).map_err(|e| {
        Error::Config(format!(
            "[service] tls_key {}: {}. Give the certificate's private key in PEM \
             (PRIVATE KEY, RSA PRIVATE KEY or EC PRIVATE KEY).",
            key.display(),
            explain(&e, "private key")
        ))
    })?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| Error::Internal(format!("TLS setup: {e}")))?
        .with_no_client_auth()
        .with_single_cert(chain, private)
        .map_err(|e| {
            let why = match e {
                rustls::Error::InconsistentKeys(_) => {
                    "the key does not belong to the certificate".to_owned()
                }
                e => e.to_string(),
            };
            Error::Config(format!(
                "[service] tls_cert {} and tls_key {} cannot be used together: {why}.",
                cert.display(),
                key.display()
            ))
        })?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
