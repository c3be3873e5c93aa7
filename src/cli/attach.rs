//! `hsm-csr attach-cert`: [`hsm_csr::attach::attach_certificate`] on the
//! token the flags name, with its answer on stdout.

use std::io::Write;

use hsm_csr::attach::{Attached, attach_certificate};
use hsm_csr::certificate::ParsedCertificate;
use hsm_csr::{Error, Result};

use super::{AttachCertArgs, ListFormat, token};

/// Runs `attach-cert`.
pub fn run(args: &AttachCertArgs, request_id: &str) -> Result<()> {
    let bytes = std::fs::read(&args.cert)
        .map_err(|e| Error::Config(format!("cannot read --cert {}: {e}", args.cert.display())))?;
    let cert = ParsedCertificate::parse(&bytes)?;
    let config = token::load_config(&args.token)?;
    let target = token::target(&args.token, &config)?;
    let mut opened = token::open(&target, &args.token)?;
    let mut written = Ok(());
    attach_certificate(
        &mut opened.backend,
        &cert,
        args.domain.as_deref(),
        request_id,
        &mut |attached| {
            written = print(attached, args.format);
            // `attach-cert | head`: the reader has all it wanted.
            !matches!(&written, Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe)
        },
    )?;
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
