//! `hsm-csr attach-cert`: find the key a certificate was issued for, by its
//! public key, and store the certificate beside it under the same CKA_ID.

use std::io::Write;

use serde::Serialize;

use hsm_csr::audit::{Actor, EventKind, Trail};
use hsm_csr::certificate::ParsedCertificate;
use hsm_csr::{Error, Result};

use super::{AttachCertArgs, ListFormat, token};

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Attached<'a> {
    request_id: &'a str,
    pub_md5: &'a str,
    key_uri: &'a str,
    /// False when the same certificate was already on the token.
    stored: bool,
}

/// Runs `attach-cert`.
pub fn run(args: &AttachCertArgs, request_id: &str) -> Result<()> {
    let bytes = std::fs::read(&args.cert)
        .map_err(|e| Error::Config(format!("cannot read --cert {}: {e}", args.cert.display())))?;
    let cert = ParsedCertificate::parse(&bytes)?;
    if let Some(domain) = &args.domain {
        cert.check_domain(domain)?;
    }
    let pub_md5 = cert.pub_md5()?;
    let spki = cert.spki_der()?;

    let config = token::load_config(&args.token)?;
    let target = token::target(&args.token, &config)?;
    let audit_log = config.audit.open()?;
    let mut opened = token::open(&target, &args.token, &config)?;
    let keys = opened.backend.list_keys()?;
    let key = keys
        .iter()
        // The whole public key must match, not only its MD5.
        .find(|k| k.has_private_key && k.spki_der() == Some(spki.as_slice()))
        .ok_or_else(|| Error::CertificateNoPrivateKey {
            token: opened.backend.token_label().to_owned(),
            pub_md5: pub_md5.clone(),
        })?;
    let stored = opened.backend.attach_certificate(key, &cert.der);
    if let Some(log) = &audit_log {
        let trail = Trail {
            log,
            actor: Actor::local_user(),
        };
        match &stored {
            Ok(true) => trail
                .certificate_attached(request_id, &pub_md5, &key.key_uri)
                .map_err(|e| match e {
                    Error::Audit { detail, .. } => Error::Audit {
                        detail: format!("{detail}; the certificate WAS stored"),
                        rolled_back: false,
                    },
                    e => e,
                })?,
            // Already there: nothing happened to the key.
            Ok(false) => {}
            Err(e) => {
                // Best effort: the failure itself is what the caller gets.
                let event = trail.event(EventKind::CertificateAttached, request_id);
                let _ = trail.record(event.key(None, &pub_md5, &key.key_uri).outcome(e.code()));
            }
        }
    }
    let stored = stored?;

    let report = Attached {
        request_id,
        pub_md5: &pub_md5,
        key_uri: &key.key_uri,
        stored,
    };
    let mut out = std::io::stdout().lock();
    let written = match args.format {
        ListFormat::Json => serde_json::to_writer_pretty(&mut out, &report)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out)),
        ListFormat::Table => writeln!(
            out,
            "{} certificate for {} (PubMd5 {pub_md5})",
            if stored { "stored" } else { "already stored:" },
            key.key_uri
        ),
    };
    match written {
        // `keys list | head`: the reader has all it wanted.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(|e| Error::Output {
            detail: e.to_string(),
            rolled_back: false,
        }),
    }
}
