//! The dns-01 hooks (RFC 8555 section 8.4), run the way certbot runs its
//! manual auth and cleanup hooks: `sh -c CMD`, with what to publish in the
//! environment (never on the command line):
//!
//! - `HSM_CSR_ACME_DOMAIN`: the name being validated, without `*.`; the
//!   record goes at `_acme-challenge.<domain>`;
//! - `HSM_CSR_ACME_VALIDATION`: the TXT value, base64url(SHA-256(key
//!   authorization));
//! - `HSM_CSR_ACME_TOKEN`: the challenge token.
//!
//! The hook's output goes to stderr (stdout carries hsm-csr's answer). A
//! hook runs in a process group of its own, and one still running at its
//! deadline is killed with everything it started (a `sleep` it forked must
//! not outlive it holding hsm-csr's stderr).

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{AcmeFailure, Error, Result};

/// What one hook run publishes or removes.
#[derive(Clone, Debug)]
pub(super) struct Record {
    pub domain: String,
    pub validation: String,
    pub token: String,
}

/// Runs `cmd` for `record`, waiting at most `timeout`.
///
/// # Errors
/// `Acme.ResponderFailed` when it cannot start, fails, or runs too long.
pub(super) async fn run(
    which: &'static str,
    cmd: &str,
    record: &Record,
    timeout: Duration,
) -> Result<()> {
    let cmd = cmd.to_owned();
    let record = record.clone();
    let fail = move |detail: String| Error::Acme {
        kind: AcmeFailure::Responder,
        step: which,
        detail,
    };
    tokio::task::spawn_blocking(move || {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(&cmd)
            .env("HSM_CSR_ACME_DOMAIN", &record.domain)
            .env("HSM_CSR_ACME_VALIDATION", &record.validation)
            .env("HSM_CSR_ACME_TOKEN", &record.token)
            .stdin(Stdio::null())
            .stdout(Stdio::from(std::io::stderr()))
            .process_group(0)
            .spawn()
            .map_err(|e| fail(format!("cannot run {cmd:?}: {e}")))?;
        let deadline = Instant::now() + timeout;
        loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => return Ok(()),
                Ok(Some(status)) => {
                    return Err(fail(format!(
                        "{cmd:?} failed ({status}) for {}",
                        record.domain
                    )));
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(None) => {
                    let group = i32::try_from(child.id())
                        .ok()
                        .and_then(rustix::process::Pid::from_raw);
                    if let Some(group) = group {
                        let _ = rustix::process::kill_process_group(
                            group,
                            rustix::process::Signal::KILL,
                        );
                    }
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(fail(format!(
                        "{cmd:?} still ran after {}s for {}; killed",
                        timeout.as_secs(),
                        record.domain
                    )));
                }
                Err(e) => return Err(fail(format!("waiting for {cmd:?}: {e}"))),
            }
        }
    })
    .await
    .map_err(|e| Error::Internal(format!("dns-01 hook task: {e}")))?
}
