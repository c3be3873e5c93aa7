//! `hsm-csr acme issue|renew`: flags to [`crate::acme`] calls, the chain
//! file, and the JSON report. The work is in the library.

pub(crate) mod args;
mod renew;
mod status;

use std::io::Write;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use crate::acme::{self, AcmeOptions, Issued, PendingCertificate, Responder, lock};
use crate::audit::{Actor, Trail};
use crate::backend::pkcs11::orphans;
use crate::config::Config;
use crate::{CsrRequest, Error, Result};

use super::create::out_file::OutFile;
use super::{AcmeArgs, AcmeCommand, AcmeIssueArgs, output, token};

/// How a successful run ended, for the exit code (`src/main.rs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Something was issued or renewed.
    Done,
    /// `renew` found nothing due.
    NothingToDo,
}

/// Runs an `acme` subcommand.
pub(crate) fn run(command: &AcmeCommand, request_id: &str) -> Result<Outcome> {
    match command {
        AcmeCommand::Issue(args) => issue(args, request_id).map(|()| Outcome::Done),
        AcmeCommand::Renew(args) => renew::renew(args, request_id),
        AcmeCommand::Status(args) => status::run(args).map(|()| Outcome::Done),
    }
}

/// One certificate, as `issue` prints it and `renew` lists it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct CertificateReport {
    common_name: String,
    pub_md5: String,
    key_uri: String,
    /// RFC 3339.
    not_after: String,
    chain_path: Option<String>,
}

impl CertificateReport {
    pub(super) fn of(issued: &Issued, chain: Option<&Path>) -> Self {
        CertificateReport {
            common_name: issued.response.common_name.clone(),
            pub_md5: issued.response.pub_md5.clone(),
            key_uri: issued.response.key_uri.clone(),
            not_after: rfc3339(issued.not_after),
            chain_path: chain.map(|p| p.display().to_string()),
        }
    }
}

/// `--now`, or the clock: seconds since the Unix epoch.
pub(super) fn now_or(arg: Option<u64>) -> u64 {
    arg.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    })
}

pub(super) fn rfc3339(unix: u64) -> String {
    i64::try_from(unix)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| unix.to_string())
}

pub(super) fn options(args: &AcmeArgs) -> Result<AcmeOptions> {
    if !args.directory.starts_with("https://") {
        return Err(Error::Config(format!(
            "--directory {:?} is not an https:// URL (RFC 8555 section 6.1 requires HTTPS).",
            args.directory
        )));
    }
    let timeout = Duration::from_secs(args.timeout);
    let responder = match (&args.http_01, &args.dns_01_hook) {
        (Some(addr), _) => Responder::Http01(*addr),
        (None, Some(hook)) => Responder::Dns01 {
            hook: hook.clone(),
            cleanup: args.dns_01_cleanup.clone(),
            hook_timeout: timeout,
        },
        (None, None) => {
            return Err(Error::Config(
                "pass --http-01 ADDR or --dns-01-hook CMD.".into(),
            ));
        }
    };
    Ok(AcmeOptions {
        directory: args.directory.clone(),
        account_file: args.account.clone(),
        ca_root: args.ca_root.clone(),
        contact: args
            .contact
            .iter()
            .map(|c| {
                if c.starts_with("mailto:") {
                    c.clone()
                } else {
                    format!("mailto:{c}")
                }
            })
            .collect(),
        agree_tos: args.agree_tos,
        responder,
        timeout,
        validation_timeout: Duration::from_secs(args.validation_timeout),
        profile: acme::Profile::Default,
    })
}

fn key_options(config: &Config, args: &AcmeIssueArgs) -> Result<crate::ValidKeyOptions> {
    let mut key = config.key.clone();
    if let Some(t) = args.key_type {
        key.key_type = t.into();
    }
    if let Some(bits) = &args.key_size {
        key.bits = bits
            .parse()
            .map_err(|_| Error::Config(format!("--key-size {bits} is not a number")))?;
    }
    if let Some(h) = args.hash {
        key.hash = Some(h.into());
    }
    if let Some(p) = &args.label_prefix {
        key.label_prefix = p.clone();
    }
    Ok(key
        .options()
        .validate()?
        .owned_by(crate::owner::Owner::local()))
}

fn issue(args: &AcmeIssueArgs, request_id: &str) -> Result<()> {
    let config = token::load_config(&args.token)?;
    let request = CsrRequest {
        common_name: args.common_name.clone(),
        sans: args.sans.clone(),
        ..Default::default()
    }
    .validate(&config.subject.defaults)?;
    let key_options = key_options(&config, args)?;
    let mut opts = options(&args.acme)?;
    if let Some(p) = &args.profile {
        opts.profile = acme::Profile::Asked(p.clone());
    }
    let target = token::target(&args.token, &config)?;
    let mut chain_out = args
        .chain_out
        .as_deref()
        .map(|p| OutFile::open_as("--chain-out", p))
        .transpose()?;
    // Checked before the token is opened: a log that cannot be written
    // stops the run before any key is made.
    let audit_log = config.audit.open()?;
    let trail = audit_log.as_ref().map(|log| Trail {
        log,
        actor: Actor::local_user(),
    });
    let _lock = lock::acquire(&lock::path_for(&opts.account_file))?;
    let mut opened = token::open(&target, &args.token)?;
    // Another account's run on the same token must not order at once
    // either: the token is known by its module, label and serial.
    let _token_lock = token_lock(&target, &opened.backend)?;
    let note = super::in_flight::sweep_if_needed(&mut opened.backend, key_options.label_prefix());

    let ordered = acme::order_certificate(
        &mut opened.backend,
        &request,
        &key_options,
        &opts,
        request_id.to_owned(),
        trail.clone(),
        None,
    );
    let issued = ordered.and_then(|pending| settle(pending, chain_out.as_mut()));
    if issued.is_err() {
        orphans::report(&opened.backend.destroy_orphans(), "");
    }
    let issued = issued?;
    note.done();
    // The profile is kept for renew; a name issued without one forgets
    // any it had.
    let mut names = acme::state::Names::load(&opts.account_file);
    let (token, serial) = (
        opened.backend.token_label().to_owned(),
        opened.backend.token_serial().to_owned(),
    );
    names.issued(
        &acme::state::key(&token, &serial, &key_options.label_for(&request)),
        args.profile.as_deref(),
    );
    // Only this token's names are pruned: others' may be on other tokens.
    let ours = acme::state::key(&token, &serial, "");
    let labels: Vec<String> = match opened.backend.list_keys() {
        Ok(keys) => names
            .labels()
            .into_iter()
            .filter(|l| !l.starts_with(&ours))
            .chain(
                keys.iter()
                    .map(|k| acme::state::key(&token, &serial, &k.label)),
            )
            .collect(),
        Err(_) => names.labels(),
    };
    names.save(&labels.iter().map(String::as_str).collect::<Vec<_>>());
    if let Some(f) = chain_out.as_mut() {
        f.finish();
    }
    let mut report =
        serde_json::to_value(CertificateReport::of(&issued, args.chain_out.as_deref()))
            .map_err(|e| Error::Internal(e.to_string()))?;
    let fields = report
        .as_object_mut()
        .ok_or_else(|| Error::Internal("a certificate report that is not an object".into()))?;
    fields.insert("RequestId".into(), request_id.into());
    let deployed = deploy(&args.acme, &issued, args.chain_out.as_deref(), None);
    if let Err(e) = &deployed {
        fields.insert("DeployHookError".into(), e.to_string().into());
    }
    print(&report)?;
    deployed
}

/// Runs `--deploy-hook`, if given, for a certificate just stored; its
/// failure is said on stderr, and returned.
pub(super) fn deploy(
    args: &AcmeArgs,
    issued: &Issued,
    chain: Option<&Path>,
    replaces: Option<&str>,
) -> Result<()> {
    let Some(cmd) = &args.deploy_hook else {
        return Ok(());
    };
    let deployed = acme::hook::Deployed {
        issued,
        chain_path: chain,
        replaces,
    };
    acme::hook::deploy(
        cmd,
        &deployed,
        Duration::from_secs(args.deploy_hook_timeout),
    )
    .inspect_err(|e| {
        let _ = writeln!(
            std::io::stderr(),
            "{}: stored on the token, but {}: {e}",
            crate::text::one_line(&issued.response.common_name),
            e.code()
        );
    })
}

/// Writes the chain file, then stores the certificate and keeps the key;
/// if storing fails, the chain file is taken back.
pub(super) fn settle(
    pending: PendingCertificate<'_>,
    chain_out: Option<&mut OutFile>,
) -> Result<Issued> {
    let Some(file) = chain_out else {
        return pending.commit();
    };
    if let Err(e) = file.write(pending.issued().chain_pem.as_bytes()) {
        let key_uri = pending.issued().response.key_uri.clone();
        return Err(output::undelivered(
            e.to_string(),
            pending.rollback(),
            key_uri,
        ));
    }
    pending.commit().inspect_err(|_| {
        if let Some(note) = file.take_back() {
            log::warn!("{note}");
        }
    })
}

pub(super) fn print(report: &impl Serialize) -> Result<()> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, report)
        .map_err(std::io::Error::from)
        .and_then(|()| writeln!(out))
        .and_then(|()| out.flush())
        .map_err(|e| Error::Output {
            detail: format!("{e}; the certificate is stored on the token"),
            rolled_back: false,
        })
}

/// The lock of the token `backend` is open on (see [`lock::token_path`]).
pub(super) fn token_lock(
    target: &token::Target,
    backend: &crate::backend::pkcs11::Pkcs11Backend,
) -> Result<lock::RunLock> {
    let name = format!("{}\0{}", backend.token_label(), backend.token_serial());
    lock::acquire(&lock::token_path(&target.module, &name)?)
}
