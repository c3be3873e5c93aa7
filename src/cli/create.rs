//! `hsm-csr create`: flags + config -> one CSR from the token.
//!
//! Order matters: everything that can be checked without the token (config,
//! request fields, output path) is checked first; the token is opened and
//! logged in once; the key pair is kept only after the response has been
//! written.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use hsm_csr::backend::pkcs11::inventory::report_unchecked;
use hsm_csr::{CsrRequest, Error, Result, prepare_csr};

use super::{CreateArgs, output, token};

/// Runs `create`; the error is reported by the caller.
pub fn run(args: &CreateArgs, request_id: &str) -> Result<()> {
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
    if let Some(t) = &args.key_type {
        key_config.key_type = t.clone();
    }
    if let Some(bits) = &args.key_size {
        key_config.bits = bits
            .parse()
            .map_err(|_| Error::Config(format!("--key-size {bits} is not a number")))?;
    }
    if let Some(h) = &args.hash {
        key_config.hash = Some(h.clone());
    }
    key_config.pss |= args.pss;
    if let Some(p) = &args.label_prefix {
        key_config.label_prefix = p.clone();
    }
    let key_options = key_config.options()?;
    key_options.signature()?;

    let target = token::target(&args.token, &config)?;
    let out_file = args.out.as_deref().map(OutFile::create).transpose()?;
    let token::Opened {
        mut backend,
        init,
        login,
        ..
    } = token::open(&target, &args.token, &config)?;

    let delivered = issue_and_deliver(
        &mut backend,
        &request,
        &key_options,
        request_id,
        out_file.as_ref(),
        args.format,
    );
    if delivered.is_err() {
        report_unchecked(&backend.settle(), "");
    }
    let timings = delivered?;
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

/// Makes the CSR and delivers it (`--out`, then stdout); keeps the key
/// pair only once both worked.
fn issue_and_deliver(
    backend: &mut hsm_csr::backend::pkcs11::Pkcs11Backend,
    request: &hsm_csr::ValidRequest,
    key_options: &hsm_csr::KeyOptions,
    request_id: &str,
    out_file: Option<&OutFile>,
    format: super::Format,
) -> Result<hsm_csr::Timings> {
    let pending = prepare_csr(backend, request, key_options, request_id.to_owned())?;

    // The file is put in place first: once stdout has the CSR, nothing
    // else can fail and make the caller's copy refer to a removed key.
    let delivered = (|| -> std::io::Result<()> {
        if let Some(f) = out_file {
            f.write(pending.response().csr.as_bytes())?;
            f.persist()?;
        }
        let printed = output::response(&mut std::io::stdout().lock(), format, pending.response());
        if printed.is_err() {
            if let Some(f) = out_file {
                f.remove_target();
            }
        }
        printed
    })();
    let timings = pending.timings();
    if let Err(e) = delivered {
        let key_uri = pending.response().key_uri.clone();
        return Err(match pending.rollback() {
            Ok(()) => Error::Output {
                detail: e.to_string(),
                rolled_back: true,
            },
            Err(rollback) => Error::RollbackFailed {
                original: Box::new(Error::Output {
                    detail: e.to_string(),
                    rolled_back: false,
                }),
                rollback: rollback.to_string(),
                key_uri,
            },
        });
    }
    let _ = pending.commit();
    Ok(timings)
}

/// `--out FILE`, written to a temporary file beside it and renamed into
/// place only once the whole response has been delivered, so a failed run
/// never truncates an existing file.
struct OutFile {
    tmp: PathBuf,
    target: PathBuf,
    file: File,
}

impl OutFile {
    fn create(target: &Path) -> Result<OutFile> {
        let name = target.file_name().ok_or_else(|| {
            Error::Config(format!("--out {} is not a file path", target.display()))
        })?;
        let mut tmp_name = std::ffi::OsString::from(".");
        tmp_name.push(name);
        tmp_name.push(format!(".{}.tmp", std::process::id()));
        let tmp = target.with_file_name(tmp_name);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| Error::Config(format!("cannot write --out {}: {e}", target.display())))?;
        Ok(OutFile {
            tmp,
            target: target.to_owned(),
            file,
        })
    }

    fn write(&self, data: &[u8]) -> std::io::Result<()> {
        (&self.file).write_all(data)?;
        self.file.sync_all()
    }

    fn persist(&self) -> std::io::Result<()> {
        std::fs::rename(&self.tmp, &self.target)
    }

    /// Takes back a file whose key is about to be removed.
    fn remove_target(&self) {
        let _ = std::fs::remove_file(&self.target);
    }
}

impl Drop for OutFile {
    fn drop(&mut self) {
        // After a successful rename there is nothing left to remove.
        let _ = std::fs::remove_file(&self.tmp);
    }
}
