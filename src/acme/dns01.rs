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
//! The hook's output is copied to stderr, line by line, through pipes of
//! its own (stdout carries hsm-csr's answer; a hook is never handed
//! hsm-csr's stderr, which a background child could hold open after
//! hsm-csr is done). A hook runs in a process group of its own, ended with
//! everything it started when the hook returns, or at its deadline.

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
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .map_err(|e| fail(format!("cannot run {cmd:?}: {e}")))?;
        let copies: Vec<_> = [
            child
                .stdout
                .take()
                .map(|o| Box::new(o) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|e| Box::new(e) as Box<dyn std::io::Read + Send>),
        ]
        .into_iter()
        .flatten()
        .map(copy_to_stderr)
        .collect();
        let group = i32::try_from(child.id())
            .ok()
            .and_then(rustix::process::Pid::from_raw);
        // Whatever the hook left running in its group ends with it.
        let end_group = || {
            if let Some(group) = group {
                let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            }
        };
        let deadline = Instant::now() + timeout;
        let outcome = loop {
            match child.try_wait() {
                Ok(Some(status)) if status.success() => break Ok(()),
                Ok(Some(status)) => {
                    break Err(fail(format!(
                        "{cmd:?} failed ({status}) for {}",
                        record.domain
                    )));
                }
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(None) => {
                    end_group();
                    let _ = child.kill();
                    let _ = child.wait();
                    break Err(fail(format!(
                        "{cmd:?} still ran after {}s for {}; killed",
                        timeout.as_secs(),
                        record.domain
                    )));
                }
                Err(e) => break Err(fail(format!("waiting for {cmd:?}: {e}"))),
            }
        };
        end_group();
        // The copies end once the group's last writer is gone; one that a
        // child kept open by leaving the group is not waited for.
        let until = Instant::now() + Duration::from_secs(1);
        for copy in copies {
            while !copy.is_finished() && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        outcome
    })
    .await
    .map_err(|e| Error::Internal(format!("dns-01 hook task: {e}")))?
}

/// Copies what a hook writes to hsm-csr's stderr, line by line, on a
/// thread of its own, until the hook's end of the pipe closes.
fn copy_to_stderr(from: Box<dyn std::io::Read + Send>) -> std::thread::JoinHandle<()> {
    std::thread::spawn(move || {
        use std::io::{BufRead, Write};
        let mut lines = std::io::BufReader::new(from);
        let mut line = Vec::new();
        while matches!(lines.read_until(b'\n', &mut line), Ok(n) if n > 0) {
            let _ = std::io::stderr().lock().write_all(&line);
            line.clear();
        }
    })
}
