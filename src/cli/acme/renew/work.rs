//! One renewal, as a worker of `acme renew` does it on its own session:
//! the new pair and order, the CA's rate limit waited out with the run's
//! other workers, the old pair marked as replaced, the deploy hook.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::acme::{self, AcmeOptions, Issued};
use crate::audit::{Actor, AuditLog, EventKind, Trail};
use crate::backend::pkcs11::{Pkcs11Backend, orphans};
use crate::config::Config;
use crate::{CsrRequest, Error, KeyOptions, Result};

use super::super::super::create::out_file::OutFile;
use super::super::args::AcmeRenewArgs;
use super::super::settle;

/// How long to wait on a 429 that names no Retry-After.
const DEFAULT_RATE_LIMIT_WAIT: Duration = Duration::from_secs(60);

/// The shortest wait on a 429: a `Retry-After: 0` (or a date already past)
/// would otherwise make and remove a key pair in a loop.
const MIN_RATE_LIMIT_WAIT: Duration = Duration::from_secs(1);

/// Orders refused for the rate limit before a name counts as failed.
const MAX_RATE_LIMITED_ATTEMPTS: u32 = 10;

/// What every worker of a run reads.
pub(super) struct Run<'a> {
    pub config: &'a Config,
    pub args: &'a AcmeRenewArgs,
    pub opts: &'a AcmeOptions,
    pub prefix: &'a str,
    pub request_id: &'a str,
    pub audit_log: Option<&'a AuditLog>,
    pub limit: RateLimit,
}

/// How one due certificate ended.
pub(super) enum Done {
    /// Renewed; `deploy` is the deploy hook's outcome.
    Renewed {
        issued: Issued,
        chain: Option<PathBuf>,
        deploy: Result<()>,
    },
    Failed(Error),
    /// Left for the next run, nothing made: the CA's rate limit outlasted
    /// `--rate-limit-wait`; the CA's refusal, if this name got one.
    Deferred(Option<Error>),
}

/// The CA's rate limit (RFC 8555 section 6.6) as a run's workers share
/// it: while the CA asked to wait, no worker orders; the waits add up to
/// at most the run's budget, after which nothing more is ordered.
pub(super) struct RateLimit {
    budget: Duration,
    state: Mutex<LimitState>,
}

#[derive(Default)]
struct LimitState {
    waited: Duration,
    until: Option<Instant>,
    spent: bool,
}

impl RateLimit {
    pub(super) fn new(budget: Duration) -> Self {
        RateLimit {
            budget,
            state: Mutex::default(),
        }
    }

    /// Seconds waited so far.
    pub(super) fn waited(&self) -> Duration {
        self.lock().waited
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, LimitState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits while the CA asked to; false once its limit outlasted the
    /// budget (order nothing more).
    fn wait_turn(&self) -> bool {
        loop {
            let pause = {
                let state = self.lock();
                if state.spent {
                    return false;
                }
                match state.until {
                    Some(until) if until > Instant::now() => until - Instant::now(),
                    _ => return true,
                }
            };
            std::thread::sleep(pause);
        }
    }

    /// The CA refused an order for `name`, asking to wait `wait`: true
    /// when that fits in the budget (then the next [`Self::wait_turn`]
    /// waits it out), false when the run must stop ordering.
    fn limited(&self, wait: Duration, name: &str) -> bool {
        let mut state = self.lock();
        if state.spent {
            return false;
        }
        let wait = wait.max(MIN_RATE_LIMIT_WAIT);
        let now = Instant::now();
        // A Retry-After of centuries is past any budget (and past what an
        // Instant can hold).
        let Some(until) = now.checked_add(wait.min(self.budget + Duration::from_secs(1))) else {
            state.spent = true;
            return false;
        };
        let from = state.until.map_or(now, |u| u.max(now));
        if until <= from {
            return true;
        }
        if state.waited + (until - from) > self.budget {
            state.spent = true;
            return false;
        }
        state.waited += until - from;
        state.until = Some(until);
        let _ = writeln!(
            std::io::stderr(),
            "{name}: the CA's rate limit: waiting {} s, as it asks, then ordering again",
            wait.as_secs()
        );
        true
    }
}

/// Renews `due` on `backend`: ordered with `replaces` and `profile`, the
/// CA's rate limit waited out within the run's budget.
pub(super) fn renew_due(
    backend: &mut Pkcs11Backend,
    run: &Run<'_>,
    (due, chain_dir): (&acme::Due, Option<&Path>),
    (replaces, profile): (Option<&str>, acme::Profile),
) -> Done {
    let mut opts = run.opts.clone();
    opts.profile = profile;
    let name = crate::text::one_line(&due.common_name);
    let mut attempts = 0;
    loop {
        if !run.limit.wait_turn() {
            return Done::Deferred(None);
        }
        match renew_one(backend, run, &opts, (replaces, chain_dir), due) {
            Ok((issued, chain)) => {
                // The old pair stays until the retention policy's grace
                // period ends (keys prune --replaced-after, [retention]).
                if let Err(e) = backend.mark_replaced(&due.old) {
                    let _ = writeln!(
                        std::io::stderr(),
                        "{name}: renewed, but {} could not be marked as replaced ({}: {e}); retire it with keys delete",
                        due.old.key_uri,
                        e.code()
                    );
                }
                // Which pair replaced which, for whoever reads the trail.
                if let Some(log) = run.audit_log {
                    let trail = Trail {
                        log,
                        actor: Actor::local_user(),
                    };
                    let event = trail
                        .event(EventKind::Replaced, run.request_id)
                        .key(
                            Some(&due.common_name),
                            due.old.pub_md5.as_deref().unwrap_or_default(),
                            &due.old.key_uri,
                        )
                        .replaced_by(&issued.response.key_uri);
                    if let Err(e) = trail.record(event) {
                        let _ = writeln!(
                            std::io::stderr(),
                            "{name}: renewed, but its replaced event was not written: {e}"
                        );
                    }
                }
                let deploy = super::super::deploy(
                    &run.args.acme,
                    &issued,
                    chain.as_deref(),
                    Some(&due.old.key_uri),
                );
                return Done::Renewed {
                    issued,
                    chain,
                    deploy,
                };
            }
            Err(e) => {
                orphans::report(&backend.destroy_orphans(), "");
                // A pair that could not be removed is a failure whatever
                // the CA said: it must be reported, and the next run sweep.
                attempts += 1;
                if e.code() != "Acme.RateLimited"
                    || e.key_left_behind()
                    || attempts >= MAX_RATE_LIMITED_ATTEMPTS
                {
                    let _ = writeln!(std::io::stderr(), "{name}: {}: {e}", e.code());
                    return Done::Failed(e);
                }
                let wait = acme::rate_limited_for().unwrap_or(DEFAULT_RATE_LIMIT_WAIT);
                if !run.limit.limited(wait, &name) {
                    return Done::Deferred(Some(e));
                }
            }
        }
    }
}

fn renew_one(
    backend: &mut Pkcs11Backend,
    run: &Run<'_>,
    opts: &AcmeOptions,
    (replaces, chain_dir): (Option<&str>, Option<&Path>),
    due: &acme::Due,
) -> Result<(Issued, Option<PathBuf>)> {
    let request = CsrRequest {
        common_name: Some(due.common_name.clone()),
        sans: (!due.sans.is_empty()).then(|| due.sans.join(",")),
        ..Default::default()
    }
    .validate(&run.config.subject.defaults)?;
    // --key-type moves a fleet; an RSA key keeps its size, or gets 2048.
    let key_type = run.args.key_type.map_or(due.key_type, |t| {
        let bits = match due.key_type {
            crate::KeyType::Rsa { bits } => bits,
            _ => 2048,
        };
        crate::config::KeyTypeName::from(t).with_bits(bits)
    });
    let key_options = KeyOptions {
        key_type,
        hash: None,
        pss: false,
        label_prefix: run.prefix.to_owned(),
    }
    .validate()?
    .owned_by(crate::owner::Owner::local());
    let chain = chain_dir.map(|dir| dir.join(chain_file_name(&due.common_name)));
    let mut chain_out = chain
        .as_deref()
        .map(|p| OutFile::open_as("--chain-dir", p))
        .transpose()?;
    let trail = run.audit_log.map(|log| Trail {
        log,
        actor: Actor::local_user(),
    });
    let pending = acme::order_certificate(
        backend,
        &request,
        &key_options,
        opts,
        run.request_id.to_owned(),
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
pub(super) fn chain_file_name(common_name: &str) -> String {
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
    use super::{RateLimit, chain_file_name};
    use std::time::Duration;

    #[test]
    fn the_rate_limit_is_waited_once_for_all_workers_within_the_budget() {
        let limit = RateLimit::new(Duration::from_secs(5));
        assert!(limit.wait_turn());
        assert!(limit.limited(Duration::from_secs(2), "a"));
        // Another worker refused within the same pause: no more waiting.
        assert!(limit.limited(Duration::from_secs(1), "b"));
        assert!(limit.waited() <= Duration::from_secs(2));
        assert!(limit.waited() > Duration::from_secs(1));
        // Past the budget: the run stops ordering, for every worker.
        assert!(!limit.limited(Duration::from_secs(60), "c"));
        assert!(!limit.wait_turn());
        assert!(!limit.limited(Duration::from_secs(1), "d"));
    }

    #[test]
    fn a_retry_after_of_centuries_ends_the_run_without_overflow() {
        let limit = RateLimit::new(Duration::from_secs(300));
        assert!(!limit.limited(Duration::from_secs(u64::MAX), "a"));
        assert!(!limit.wait_turn());
        assert_eq!(limit.waited(), Duration::ZERO);
    }

    #[test]
    fn a_retry_after_of_zero_still_waits_and_counts() {
        let limit = RateLimit::new(Duration::from_secs(3));
        for _ in 0..3 {
            assert!(limit.wait_turn());
            assert!(limit.limited(Duration::ZERO, "a"));
        }
        // Three refusals, a second each: the budget is spent.
        assert!(
            limit.waited() >= Duration::from_millis(2900),
            "{:?}",
            limit.waited()
        );
        assert!(limit.wait_turn());
        assert!(!limit.limited(Duration::ZERO, "a"));
    }

    #[test]
    fn a_pause_holds_every_worker_until_it_ends() {
        let limit = RateLimit::new(Duration::from_secs(5));
        assert!(limit.limited(Duration::from_millis(300), "a"));
        let t = std::time::Instant::now();
        assert!(limit.wait_turn());
        assert!(
            t.elapsed() >= Duration::from_millis(250),
            "{:?}",
            t.elapsed()
        );
    }

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
