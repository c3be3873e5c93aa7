//! `hsm-csr acme renew`: what is due, each renewal with a new key pair,
//! and one report.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use hsm_csr::acme::{self, AcmeOptions, Issued, lock};
use hsm_csr::audit::{Actor, AuditLog, Trail};
use hsm_csr::backend::pkcs11::orphans;
use hsm_csr::config::Config;
use hsm_csr::{CsrRequest, Error, KeyOptions, Result};

use super::super::create::out_file::OutFile;
use super::super::token;
use super::args::AcmeRenewArgs;
use super::{CertificateReport, Outcome, now_or, options, print, rfc3339, settle, token_lock};

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct RenewReport {
    request_id: String,
    /// The new certificates, each with the one it replaces.
    renewed: Vec<Renewed>,
    failed: Vec<Failed>,
    /// Certificates that are not due yet.
    not_due: usize,
    /// When the first of them is due (RFC 3339), if any.
    next_renewal: Option<String>,
    /// Due, but left for the next run: the CA's rate limit outlasted
    /// `--rate-limit-wait`.
    deferred: usize,
    /// Seconds waited for the CA's rate limit.
    rate_limit_waited_s: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Renewed {
    #[serde(flatten)]
    new: CertificateReport,
    /// The old pair and certificate, kept and marked as replaced until
    /// `keys prune --replaced-after` retires them.
    replaces: Old,
    /// Why `--deploy-hook` failed for it, if it did.
    #[serde(skip_serializing_if = "Option::is_none")]
    deploy_hook_error: Option<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Old {
    key_uri: String,
    pub_md5: Option<String>,
    not_after: String,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct Failed {
    common_name: String,
    replaces: Old,
    code: &'static str,
    message: String,
}

/// How long to wait on a 429 that names no Retry-After.
const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

pub(super) fn renew(args: &AcmeRenewArgs, request_id: &str) -> Result<Outcome> {
    let config = token::load_config(&args.token)?;
    let opts = options(&args.acme)?;
    let prefix = args
        .label_prefix
        .clone()
        .unwrap_or_else(|| config.key.label_prefix.clone());
    if prefix.is_empty() {
        return Err(Error::Config(
            "--label-prefix must not be empty: renew only keys hsm-csr made.".into(),
        ));
    }
    if let Some(dir) = &args.chain_dir {
        if !dir.is_dir() {
            return Err(Error::Config(format!(
                "--chain-dir {} is not a directory.",
                dir.display()
            )));
        }
    }
    let target = token::target(&args.token, &config)?;
    let audit_log = config.audit.open()?;
    let _lock = lock::acquire(&lock::path_for(&opts.account_file))?;
    let mut opened = token::open(&target, &args.token)?;
    let _token_lock = token_lock(&target, &opened.backend)?;
    let note = super::super::in_flight::sweep_if_needed(&mut opened.backend, &prefix);
    let keys = opened.backend.list_keys()?;
    let now = now_or(args.now);
    let when = args.days.map_or(acme::When::Scheduled, |days| {
        acme::When::EndsWithin(u64::from(days) * 86_400)
    });
    let groups = acme::renewable(&keys, &prefix);
    // RFC 9773: the CA's windows, asked for again once their Retry-After
    // has passed.
    // Section 4.3: never for an expired certificate.
    let ids: Vec<&str> = groups
        .iter()
        .filter(|d| d.not_after > now)
        .filter_map(|d| d.cert_id.as_deref())
        .collect();
    let mut windows = acme::ari::Windows::load(&opts.account_file);
    if !ids.is_empty() {
        match windows.refresh(&opts, &ids, now) {
            Ok(()) => windows.save(&ids),
            // What is due by its lifetime is still renewed (and fails
            // there, saying why, if the CA cannot be reached).
            Err(e) => log::warn!(
                "renewal windows not asked for ({}: {e}); certificates are judged by their lifetime",
                e.code()
            ),
        }
    }
    let (due, not_due): (Vec<_>, Vec<_>) = groups
        .into_iter()
        .partition(|d| acme::due_at(d, when, &windows) <= now);
    let mut report = RenewReport {
        request_id: request_id.to_owned(),
        renewed: Vec::new(),
        failed: Vec::new(),
        not_due: not_due.len(),
        next_renewal: not_due
            .iter()
            .map(|d| acme::due_at(d, when, &windows))
            .min()
            .map(rfc3339),
        deferred: 0,
        rate_limit_waited_s: 0,
    };
    let mut names = acme::state::Names::load(&opts.account_file);
    let mut first_error = None;
    // A failed deploy hook leaves nothing on the token to sweep.
    let mut hook_error = None;
    let mut waited = Duration::ZERO;
    let mut rate_limited = None;
    for (i, d) in due.iter().enumerate() {
        let old = Old {
            key_uri: d.old.key_uri.clone(),
            pub_md5: d.old.pub_md5.clone(),
            not_after: rfc3339(d.not_after),
        };
        // Only a certificate the CA gave a window for: it knows it.
        let replaces = d
            .cert_id
            .as_deref()
            .filter(|id| windows.offered && windows.get(id).is_some());
        let mut opts = opts.clone();
        opts.profile = match (&args.profile, names.profile(&d.old.label)) {
            (Some(p), _) => acme::Profile::Asked(p.clone()),
            (None, Some(p)) => acme::Profile::Kept(p.to_owned()),
            (None, None) => acme::Profile::Default,
        };
        let renewed = loop {
            let renewed = renew_one(
                &mut opened.backend,
                &config,
                (&opts, replaces),
                &prefix,
                d,
                args,
                (request_id, audit_log.as_ref()),
            );
            match &renewed {
                Err(e) if e.code() == "Acme.RateLimited" => {}
                _ => break renewed,
            }
            // RFC 8555 section 6.6: the CA's Retry-After is waited for,
            // within --rate-limit-wait for the whole run; past it, this
            // name and the rest wait for the next run, without an order.
            let wait = acme::rate_limited_for().unwrap_or(DEFAULT_RATE_LIMIT_WAIT);
            let budget = Duration::from_secs(args.rate_limit_wait);
            if waited + wait > budget {
                break renewed;
            }
            let _ = writeln!(
                std::io::stderr(),
                "{}: the CA's rate limit: waiting {} s, as it asks, then ordering again",
                d.common_name,
                wait.as_secs()
            );
            std::thread::sleep(wait);
            waited += wait;
        };
        report.rate_limit_waited_s = waited.as_secs();
        let renewed = match renewed {
            Err(e) if e.code() == "Acme.RateLimited" => {
                orphans::report(&opened.backend.destroy_orphans(), "");
                report.deferred = due.len() - i;
                let _ = writeln!(
                    std::io::stderr(),
                    "{}: {e}; the CA's rate limit outlasts --rate-limit-wait ({} s): {} certificate(s) left for the next run",
                    d.common_name,
                    args.rate_limit_wait,
                    report.deferred
                );
                rate_limited.get_or_insert(e);
                break;
            }
            other => other,
        };
        match renewed {
            Ok((issued, chain)) => {
                names.issued(&d.old.label, opts.profile.name());
                // The old pair stays until the retention policy's grace
                // period ends (keys prune --replaced-after, [retention]).
                if let Err(e) = opened.backend.mark_replaced(&d.old) {
                    let _ = writeln!(
                        std::io::stderr(),
                        "{}: renewed, but {} could not be marked as replaced ({}: {e}); retire it with keys delete",
                        d.common_name,
                        d.old.key_uri,
                        e.code()
                    );
                }
                let deployed =
                    super::deploy(&args.acme, &issued, chain.as_deref(), Some(&d.old.key_uri));
                report.renewed.push(Renewed {
                    new: CertificateReport::of(&issued, chain.as_deref()),
                    replaces: old,
                    deploy_hook_error: deployed.as_ref().err().map(ToString::to_string),
                });
                if let Err(e) = deployed {
                    hook_error.get_or_insert(e);
                }
            }
            Err(e) => {
                orphans::report(&opened.backend.destroy_orphans(), "");
                let _ = writeln!(std::io::stderr(), "{}: {}: {e}", d.common_name, e.code());
                names.failed(&d.old.label, now, e.code(), &e.to_string());
                report.failed.push(Failed {
                    common_name: d.common_name.clone(),
                    replaces: old,
                    code: e.code(),
                    message: e.to_string(),
                });
                first_error.get_or_insert(e);
            }
        }
    }
    if !due.is_empty() {
        let labels: Vec<&str> = keys.iter().map(|k| k.label.as_str()).collect();
        names.save(&labels);
    }
    print(&report)?;
    if first_error.is_none() {
        note.done();
    }
    match first_error.or(rate_limited).or(hook_error) {
        Some(e) => Err(e),
        None if report.renewed.is_empty() => Ok(Outcome::NothingToDo),
        None => Ok(Outcome::Done),
    }
}

fn renew_one(
    backend: &mut hsm_csr::backend::pkcs11::Pkcs11Backend,
    config: &Config,
    (opts, replaces): (&AcmeOptions, Option<&str>),
    prefix: &str,
    due: &acme::Due,
    args: &AcmeRenewArgs,
    (request_id, audit_log): (&str, Option<&AuditLog>),
) -> Result<(Issued, Option<PathBuf>)> {
    let request = CsrRequest {
        common_name: Some(due.common_name.clone()),
        sans: (!due.sans.is_empty()).then(|| due.sans.join(",")),
        ..Default::default()
    }
    .validate(&config.subject.defaults)?;
    // --key-type moves a fleet; an RSA key keeps its size, or gets 2048.
    let key_type = args.key_type.map_or(due.key_type, |t| {
        let bits = match due.key_type {
            hsm_csr::KeyType::Rsa { bits } => bits,
            _ => 2048,
        };
        hsm_csr::config::KeyTypeName::from(t).with_bits(bits)
    });
    let key_options = KeyOptions {
        key_type,
        hash: None,
        pss: false,
        label_prefix: prefix.to_owned(),
    }
    .validate()?
    .owned_by(hsm_csr::owner::Owner::local());
    let chain = args
        .chain_dir
        .as_deref()
        .map(|dir| dir.join(chain_file_name(&due.common_name)));
    let mut chain_out = chain
        .as_deref()
        .map(|p| OutFile::open_as("--chain-dir", p))
        .transpose()?;
    let trail = audit_log.map(|log| Trail {
        log,
        actor: Actor::local_user(),
    });
    let pending = acme::order_certificate(
        backend,
        &request,
        &key_options,
        opts,
        request_id.to_owned(),
        trail,
        replaces,
    )?;
    let issued = settle(pending, chain_out.as_mut())?;
    if let Some(f) = chain_out.as_mut() {
        f.finish();
    }
    Ok((issued, chain))
}

/// `<common name>.pem`, with `*` spelled `_wildcard` and anything but
/// letters, digits, `.`, `-` and `_` as `_`, so that a name read from the
/// token cannot leave the directory or hide as a dot file.
fn chain_file_name(common_name: &str) -> String {
    let mut name: String = common_name
        .replace('*', "_wildcard")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if name.starts_with('.') || name.is_empty() {
        name.insert(0, '_');
    }
    name.push_str(".pem");
    name
}

#[cfg(test)]
mod tests {
    use super::chain_file_name;

    #[test]
    fn chain_file_names_stay_in_their_directory() {
        assert_eq!(chain_file_name("www.example.com"), "www.example.com.pem");
        assert_eq!(
            chain_file_name("*.example.com"),
            "_wildcard.example.com.pem"
        );
        assert_eq!(chain_file_name("../../etc/passwd"), "_.._.._etc_passwd.pem");
        assert_eq!(chain_file_name(".."), "_...pem");
        assert_eq!(chain_file_name(""), "_.pem");
    }
}
