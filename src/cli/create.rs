//! `hsm-csr create`: flags + config -> one CSR from the token.
//!
//! Order matters: everything that can be checked without the token (config,
//! request fields, output path) is checked first; the token is opened and
//! logged in once; the key pair is kept only after the response has been
//! written.

pub(super) mod out_file;

use std::io::Write;
use std::time::Instant;

use crate::audit::{Actor, Trail};
use crate::backend::pkcs11::orphans;
use crate::{CsrRequest, Error, Result, prepare_csr};

use super::{CreateArgs, output, token};
use out_file::OutFile;

/// Runs `create`; the error is reported by the caller.
pub(crate) fn run(args: &CreateArgs, request_id: &str) -> Result<()> {
    let started = Instant::now();
    let config = token::load_config(&args.token)?;

    let request = CsrRequest {
        common_name: args.common_name.clone(),
        sans: args.sans.clone(),
        organization: args.organization.clone(),
        organization_unit: args.organization_unit.clone(),
        country: args.country.clone(),
        state: args.state.clone(),
        city: args.city.clone(),
        email: args.email.clone(),
    }
    .validate(&config.subject.defaults)?;

    let mut key_config = config.key.clone();
    if let Some(t) = args.key_type {
        key_config.key_type = t.into();
    }
    if let Some(bits) = &args.key_size {
        key_config.bits = bits
            .parse()
            .map_err(|_| Error::Config(format!("--key-size {bits} is not a number")))?;
    }
    if let Some(h) = args.hash {
        key_config.hash = Some(h.into());
    }
    key_config.pss |= args.pss;
    if let Some(p) = &args.label_prefix {
        key_config.label_prefix = p.clone();
    }
    let key_options = key_config
        .options()
        .validate()?
        .owned_by(owner(args.owner.as_deref())?);

    let target = token::target(&args.token, &config)?;
    let mut out_file = args.out.as_deref().map(OutFile::open).transpose()?;
    let audit_log = config.audit.open()?;
    let trail = audit_log.as_ref().map(|log| Trail {
        log,
        actor: Actor::local_user(),
    });
    let token::Opened {
        mut backend,
        init,
        login,
        ..
    } = token::open(&target, &args.token)?;
    let note = super::in_flight::sweep_if_needed(&mut backend, key_options.label_prefix());

    let delivered = issue_and_deliver(
        &mut backend,
        &request,
        &key_options,
        request_id,
        out_file.as_mut(),
        args.format,
        trail,
    );
    if delivered.is_err() {
        orphans::report(&backend.destroy_orphans(), "");
    }
    let timings = delivered?;
    note.done();
    drop(backend);

    if args.timings {
        let ms = |d: std::time::Duration| d.as_secs_f64() * 1000.0;
        let _ = writeln!(
            std::io::stderr(),
            "timings: init_ms={:.3} login_ms={:.3} keygen_ms={:.3} sign_ms={:.3} encode_ms={:.3} total_ms={:.3}",
            ms(init),
            ms(login),
            ms(timings.keygen),
            ms(timings.sign),
            ms(timings.encode),
            ms(started.elapsed())
        );
    }
    Ok(())
}

/// Makes the CSR, records its delivery in the audit trail, and delivers
/// it (`--out`, then stdout); keeps the key pair only once all worked.
fn issue_and_deliver(
    backend: &mut crate::backend::pkcs11::Pkcs11Backend,
    request: &crate::ValidRequest,
    key_options: &crate::ValidKeyOptions,
    request_id: &str,
    out_file: Option<&mut OutFile>,
    format: super::Format,
    trail: Option<Trail<'_>>,
) -> Result<crate::Timings> {
    let pending = prepare_csr(backend, request, key_options, request_id.to_owned(), trail)?
        .record_delivery()?;

    let delivered = deliver(out_file, format, pending.response());
    let timings = pending.timings();
    if let Err(detail) = delivered {
        let key_uri = pending.response().key_uri.clone();
        return Err(output::undelivered(detail, pending.rollback(), key_uri));
    }
    pending.commit()?;
    Ok(timings)
}

/// Writes `--out`, then stdout. The file is put in place first: once stdout
/// has the CSR, nothing else can fail and make the caller's copy refer to a
/// removed key. If stdout fails, the file that was there before is put back.
fn deliver(
    out_file: Option<&mut OutFile>,
    format: super::Format,
    response: &crate::CsrResponse,
) -> std::result::Result<(), String> {
    let print = || output::response(&mut std::io::stdout().lock(), format, response);
    let Some(file) = out_file else {
        return print().map_err(|e| e.to_string());
    };
    file.write(response.csr.as_bytes())
        .map_err(|e| e.to_string())?;
    match print() {
        Ok(()) => {
            file.finish();
            Ok(())
        }
        Err(e) => Err(match file.take_back() {
            Some(note) => format!("{e}; {note}"),
            None => e.to_string(),
        }),
    }
}

/// The owner `--owner` names, or the local operator.
///
/// # Errors
/// `Config.Invalid` for a name that cannot be an owner.
pub(super) fn owner(named: Option<&str>) -> Result<crate::owner::Owner> {
    named.map_or_else(
        || Ok(crate::owner::Owner::local()),
        crate::owner::Owner::new,
    )
}
