//! `hsm-csr attach-cert`: [`crate::attach::attach_certificate`] on the
//! token the flags name, with its answer on stdout and, when `[audit] path`
//! is set, a `certificate_attached` event written before it.

use std::io::Write;

use crate::attach::{AttachPolicy, Attached, attach_certificate};
use crate::audit::{Actor, Trail};
use crate::certificate::ParsedCertificate;
use crate::owner::{Owner, Principal};
use crate::{Error, Result};

use super::{AttachCertArgs, ListFormat, token};

/// Runs `attach-cert`.
pub(crate) fn run(args: &AttachCertArgs, request_id: &str) -> Result<()> {
    let bytes = crate::files::read_regular(
        &args.cert,
        crate::certificate::MAX_TEXT_BYTES as u64,
        "--cert",
    )?;
    let cert = ParsedCertificate::parse(&bytes)?;
    let config = token::load_config(&args.token)?;
    let target = token::target(&args.token, &config)?;
    let audit_log = config.audit.open()?;
    let trail = audit_log.as_ref().map(|log| Trail {
        log,
        actor: Actor::local_user(),
    });
    let mut opened = token::open(&target, &args.token)?;
    let mut written = Ok(());
    let mut recorded = Ok(());
    // The command line holds the PIN: it may attach to every owner's keys.
    attach_certificate(
        &mut opened.backend,
        &cert,
        args.domain.as_deref(),
        &Principal::operator(Owner::local()),
        AttachPolicy::now(config.service.max_certificates_per_key),
        request_id,
        &mut |attached| {
            // On disk before the answer; a certificate that cannot be
            // recorded is taken off the token again (by returning false).
            if let (Some(trail), true) = (&trail, attached.stored) {
                recorded = trail.certificate_attached(
                    &attached.request_id,
                    &attached.pub_md5,
                    &attached.key_uri,
                );
                if recorded.is_err() {
                    return false;
                }
            }
            written = print(attached, args.format);
            // `attach-cert | head`: the reader has all it wanted.
            !matches!(&written, Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe)
        },
    )?;
    recorded?;
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::Output {
            detail: e.to_string(),
            rolled_back: false,
        }),
        _ => Ok(()),
    }
}

fn print(a: &Attached, format: ListFormat) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    match format {
        ListFormat::Json => serde_json::to_writer_pretty(&mut out, a)
            .map_err(std::io::Error::from)
            .and_then(|()| writeln!(out)),
        ListFormat::Table => writeln!(
            out,
            "{} certificate for {} (PubMd5 {})",
            if a.stored {
                "stored"
            } else {
                "already stored:"
            },
            a.key_uri,
            a.pub_md5
        ),
    }
}
