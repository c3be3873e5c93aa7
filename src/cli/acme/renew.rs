//! `hsm-csr acme renew`: what is due on every configured token, each
//! renewal with a new key pair (`--jobs` at once on each token, each on a
//! session of its own), and one report.

mod report;
mod work;

use std::collections::VecDeque;
use std::io::Write;
use std::sync::Mutex;
use std::time::Duration;

use crate::acme::{self, lock};
use crate::backend::pkcs11::Pkcs11Backend;
use crate::{Error, Result};

use super::super::token;
use super::args::AcmeRenewArgs;
use super::{Outcome, now_or, options, print, rfc3339, token_lock};
use report::{Recorded, RenewReport, record};
use work::{Done, RateLimit, renew_due};

/// A token of the run: open, locked, swept, listed.
struct TokenRun {
    /// As the config names it (label, or `serial:...`).
    name: String,
    opened: token::Opened,
    note: super::super::in_flight::Note,
    keys: Vec<crate::backend::pkcs11::inventory::KeyEntry>,
    _lock: lock::RunLock,
}

pub(super) fn renew(args: &AcmeRenewArgs, request_id: &str) -> Result<Outcome> {
    let config = token::load_config(&args.token)?;
    let opts = options(&args.acme)?;
    let prefix = checked_prefix(args, &config)?;
    // Every configured token ([[tokens]]), or the one named.
    let targets = token::targets(&args.token, &config)?;
    let audit_log = config.audit.open()?;
    let _lock = lock::acquire(&lock::path_for(&opts.account_file))?;
    let (mut tokens, mut token_error) = open_tokens(args, &targets, &prefix)?;
    let now = now_or(args.now);
    let when = args.days.map_or(acme::When::Scheduled, |days| {
        acme::When::EndsWithin(u64::from(days) * 86_400)
    });
    let groups: Vec<(usize, acme::Due)> = tokens
        .iter()
        .enumerate()
        .flat_map(|(t, run)| {
            acme::renewable(&run.keys, &prefix)
                .into_iter()
                .map(move |d| (t, d))
        })
        .collect();
    let windows = refresh_windows(&opts, &groups, now);
    let (due, not_due): (Vec<_>, Vec<_>) = groups
        .into_iter()
        .partition(|(_, d)| acme::due_at(d, when, &windows) <= now);
    let mut report = RenewReport {
        request_id: request_id.to_owned(),
        renewed: Vec::new(),
        failed: Vec::new(),
        not_due: not_due.len(),
        next_renewal: not_due
            .iter()
            .map(|(_, d)| acme::due_at(d, when, &windows))
            .min()
            .map(rfc3339),
        deferred: 0,
        rate_limit_waited_s: 0,
    };
    let mut names = acme::state::Names::load(&opts.account_file);
    let token_ids: Vec<(String, String)> = tokens
        .iter()
        .map(|run| {
            let b = &run.opened.backend;
            (b.token_label().to_owned(), b.token_serial().to_owned())
        })
        .collect();
    let asks = asks(args, &due, &windows, &names, &token_ids);
    let run = work::Run {
        config: &config,
        args,
        opts: &opts,
        prefix: &prefix,
        request_id,
        audit_log: audit_log.as_ref(),
        limit: RateLimit::new(Duration::from_secs(args.rate_limit_wait)),
    };
    let (done, worker_error) = renew_tokens(&mut tokens, &run, &due, &asks, &mut token_error);
    report.rate_limit_waited_s = run.limit.waited().as_secs();

    let Recorded {
        first_error,
        not_tried,
        hook_error,
        mut rate_limited,
    } = record(
        &due,
        done,
        &asks,
        &token_ids,
        now,
        (&mut names, &mut report),
        worker_error.or(token_error),
    );
    if let Some(e) = left_for_next_run(not_tried, report.deferred, args.rate_limit_wait) {
        rate_limited.get_or_insert(e);
    }
    if !due.is_empty() {
        save_names(&names, &token_ids, &tokens);
    }
    print(&report)?;
    if first_error.is_none() {
        for token in tokens {
            token.note.done();
        }
    }
    match first_error.or(rate_limited).or(hook_error) {
        Some(e) => Err(e),
        None if report.renewed.is_empty() => Ok(Outcome::NothingToDo),
        None => Ok(Outcome::Done),
    }
}

/// The key under which what is remembered of a key's renewals is kept:
/// its token (the `t`th of this run) and label.
fn name_key(token_ids: &[(String, String)], t: usize, label: &str) -> String {
    // `t` is one of this run's tokens, which `token_ids` lists.
    let (token, serial) = token_ids.get(t).map_or(("", ""), |(token, serial)| {
        (token.as_str(), serial.as_str())
    });
    acme::state::key(token, serial, label)
}

/// What each renewal asks for: `replaces` only for a certificate the
/// CA gave a window for (it knows it), and the profile it was issued
/// with unless --profile says otherwise.
fn asks<'d>(
    args: &AcmeRenewArgs,
    due: &'d [(usize, acme::Due)],
    windows: &acme::ari::Windows,
    names: &acme::state::Names,
    token_ids: &[(String, String)],
) -> Vec<(Option<&'d str>, acme::Profile)> {
    due.iter()
        .map(|(t, d)| {
            let replaces = d
                .cert_id
                .as_deref()
                .filter(|id| windows.offered && windows.get(id).is_some());
            let profile = match (
                &args.profile,
                names.profile(&name_key(token_ids, *t, &d.old.label)),
            ) {
                (Some(p), _) => acme::Profile::Asked(p.clone()),
                (None, Some(p)) => acme::Profile::Kept(p.to_owned()),
                (None, None) => acme::Profile::Default,
            };
            (replaces, profile)
        })
        .collect()
}

/// Renews what is due on each token in turn; a token whose chain
/// directory cannot be made is skipped (its error goes to `token_error`).
/// Each renewal's outcome (None: not tried), and an error if a worker
/// panicked.
fn renew_tokens(
    tokens: &mut [TokenRun],
    run: &work::Run<'_>,
    due: &[(usize, acme::Due)],
    asks: &[(Option<&str>, acme::Profile)],
    token_error: &mut Option<Error>,
) -> (Vec<Option<Done>>, Option<Error>) {
    let tokens_in_run = tokens.len();
    let mut done: Vec<Option<Done>> = due.iter().map(|_| None).collect();
    let mut worker_error = None;
    for (t, token) in tokens.iter_mut().enumerate() {
        let mine: VecDeque<usize> = due
            .iter()
            .enumerate()
            .filter(|(_, (on, _))| *on == t)
            .map(|(i, _)| i)
            .collect();
        if mine.is_empty() {
            continue;
        }
        let chain_dir = match token_chain_dir(run.args, tokens_in_run, &token.name) {
            Ok(dir) => dir,
            Err(e) => {
                let _ = writeln!(std::io::stderr(), "{e}");
                token_error.get_or_insert(e);
                continue;
            }
        };
        let (outcomes, panicked) = renew_on(
            &mut token.opened.backend,
            chain_dir.as_deref(),
            run,
            mine,
            due,
            asks,
        );
        for (i, outcome) in outcomes {
            if let Some(slot) = done.get_mut(i) {
                *slot = Some(outcome);
            }
        }
        if let Some(e) = panicked {
            let _ = writeln!(std::io::stderr(), "{e}");
            worker_error.get_or_insert(e);
        }
    }
    (done, worker_error)
}

/// The label prefix of the keys to renew (never empty: renew only keys
/// hsm-csr made), once `--chain-dir`, if given, is known to be a directory.
fn checked_prefix(args: &AcmeRenewArgs, config: &crate::config::Config) -> Result<String> {
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
    Ok(prefix)
}

/// Each target opened, locked, swept and listed. With several, one that
/// fails is reported and left out (its error comes back with the others);
/// with one, its error ends the run.
fn open_tokens(
    args: &AcmeRenewArgs,
    targets: &[token::Target],
    prefix: &str,
) -> Result<(Vec<TokenRun>, Option<Error>)> {
    let mut tokens = Vec::new();
    // A token that cannot be opened, locked or listed is reported, and the
    // others are renewed all the same.
    let mut token_error = None;
    for target in targets {
        let opened = token::open(target, &args.token).and_then(|mut opened| {
            let token_lock = token_lock(target, &opened.backend)?;
            let note = super::super::in_flight::sweep_if_needed(&mut opened.backend, prefix);
            let keys = opened.backend.list_keys()?;
            Ok(TokenRun {
                name: target.display_name(),
                opened,
                note,
                keys,
                _lock: token_lock,
            })
        });
        match opened {
            Ok(run) => tokens.push(run),
            Err(e) if targets.len() > 1 => {
                let _ = writeln!(
                    std::io::stderr(),
                    "token {}: {}: {e}; its certificates are left for the next run",
                    crate::text::one_line(&target.display_name()),
                    e.code()
                );
                token_error.get_or_insert(e);
            }
            Err(e) => return Err(e),
        }
    }
    Ok((tokens, token_error))
}

/// The CA's renewal windows for the certificates of `groups`, asked for
/// again where they are stale; the ones on file when the CA cannot be asked.
fn refresh_windows(
    opts: &acme::AcmeOptions,
    groups: &[(usize, acme::Due)],
    now: u64,
) -> acme::ari::Windows {
    // RFC 9773: the CA's windows, asked for again once their Retry-After
    // has passed.
    // Section 4.3: never for an expired certificate.
    let ids: Vec<&str> = groups
        .iter()
        .filter(|(_, d)| d.not_after > now)
        .filter_map(|(_, d)| d.cert_id.as_deref())
        .collect();
    let mut windows = acme::ari::Windows::load(&opts.account_file);
    if !ids.is_empty() {
        match windows.refresh(opts, &ids, now) {
            Ok(()) => windows.save(&ids),
            // What is due by its lifetime is still renewed (and fails
            // there, saying why, if the CA cannot be reached).
            Err(e) => log::warn!(
                "renewal windows not asked for ({}: {e}); certificates are judged by their lifetime",
                e.code()
            ),
        }
    }
    windows
}

/// Where the chains of token `name` go: `--chain-dir` itself for a run on
/// one token; with several, a directory of its own for each (the same name
/// may be on two tokens), made here.
fn token_chain_dir(
    args: &AcmeRenewArgs,
    tokens_in_run: usize,
    name: &str,
) -> Result<Option<std::path::PathBuf>> {
    // With several tokens, each one's chains go to a directory of its
    // own: the same name may be on two tokens.
    match (&args.chain_dir, tokens_in_run) {
        (Some(dir), 1) => Ok(Some(dir.clone())),
        (Some(dir), _) => {
            let sub = dir.join(work::chain_file_name(name).trim_end_matches(".pem"));
            if let Err(e) = std::fs::create_dir_all(&sub) {
                return Err(Error::Config(format!("--chain-dir {}: {e}", sub.display())));
            }
            Ok(Some(sub))
        }
        (None, _) => Ok(None),
    }
}

/// Saves what is remembered of each key's renewals: the keys of this
/// run's tokens that are still there, and every key of the tokens outside
/// this run.
fn save_names(names: &acme::state::Names, token_ids: &[(String, String)], tokens: &[TokenRun]) {
    // What is remembered of tokens outside this run stays.
    let ours: Vec<String> = token_ids
        .iter()
        .map(|(token, serial)| acme::state::key(token, serial, ""))
        .collect();
    let keys: Vec<String> = names
        .labels()
        .into_iter()
        .filter(|k| !ours.iter().any(|o| k.starts_with(o.as_str())))
        .chain(
            tokens
                .iter()
                .enumerate()
                .flat_map(|(t, run)| run.keys.iter().map(move |k| (t, k)))
                .map(|(t, k)| name_key(token_ids, t, &k.label)),
        )
        .collect();
    names.save(&keys.iter().map(String::as_str).collect::<Vec<_>>());
}

/// Says on stderr what is left for the next run: certificates not tried
/// (their worker stopped on a bug) and those `deferred` for the CA's rate
/// limit, which also make the run's error.
fn left_for_next_run(not_tried: usize, deferred: usize, rate_limit_wait: u64) -> Option<Error> {
    if not_tried > 0 {
        let _ = writeln!(
            std::io::stderr(),
            "{not_tried} certificate(s) not tried: the next run renews them"
        );
    }
    if deferred > 0 {
        let _ = writeln!(
            std::io::stderr(),
            "the CA's rate limit outlasts --rate-limit-wait ({} s): {} certificate(s) left for the next run",
            rate_limit_wait,
            deferred
        );
        return Some(Error::Acme {
            kind: crate::error::AcmeFailure::RateLimited,
            step: "new order",
            detail: "the CA's rate limit outlasted --rate-limit-wait".into(),
        });
    }
    None
}

/// Renews `queue` (indices into `due`) on one token: `--jobs` workers,
/// the first on `backend`, each other on a session of its own; and an
/// error if a worker panicked.
fn renew_on(
    backend: &mut Pkcs11Backend,
    chain_dir: Option<&std::path::Path>,
    run: &work::Run<'_>,
    queue: VecDeque<usize>,
    due: &[(usize, acme::Due)],
    asks: &[(Option<&str>, acme::Profile)],
) -> (Vec<(usize, Done)>, Option<Error>) {
    let wanted = usize::from(run.args.jobs).min(queue.len());
    let mut others = Vec::new();
    for _ in 1..wanted {
        match backend.another_session() {
            Ok(session) => others.push(session),
            Err(e) => {
                log::warn!(
                    "{} renewal(s) at once instead of {wanted}: {e}",
                    others.len() + 1
                );
                break;
            }
        }
    }
    let queue = Mutex::new(queue);
    // Each outcome is kept as it comes: a worker that panics loses none
    // of the renewals it finished.
    let done = Mutex::new(Vec::new());
    let work = |backend: &mut Pkcs11Backend| loop {
        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).pop_front();
        let Some(i) = next else {
            return;
        };
        // `i` indexes `due`, and `asks` has one entry for each.
        let (Some((replaces, profile)), Some((_, this))) = (asks.get(i), due.get(i)) else {
            continue;
        };
        let outcome = renew_due(
            backend,
            run,
            (this, chain_dir),
            (*replaces, profile.clone()),
        );
        done.lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((i, outcome));
    };
    let panicked = std::thread::scope(|scope| {
        let handles: Vec<_> = others
            .iter_mut()
            .map(|session| scope.spawn(|| work(session)))
            .collect();
        work(backend);
        handles
            .into_iter()
            .map(|h| h.join())
            .filter(Result::is_err)
            .count()
    });
    let done = done.into_inner().unwrap_or_else(|p| p.into_inner());
    let panicked = (panicked > 0).then(|| {
        Error::Internal(format!(
            "{panicked} renewal worker(s) stopped on a bug; the next run sweeps what they left"
        ))
    });
    (done, panicked)
}
