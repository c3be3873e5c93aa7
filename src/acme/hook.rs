//! Running an operator's command: the dns-01 hooks and the deploy hook,
//! each `sh -c CMD` with what it needs in its environment (never on the
//! command line).
//!
//! The hook's output is copied to stderr, line by line, through pipes of
//! its own (stdout carries hsm-csr's answer; a hook is never handed
//! hsm-csr's stderr, which a background child could hold open after
//! hsm-csr is done). `HSM_CSR_PIN` is not passed on. A hook runs in a process group of its own, ended with
//! everything it started when the hook returns, or at its deadline.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::error::{AcmeFailure, Error, Result};

/// Runs `cmd` with `env`, waiting at most `timeout`; `which` names it and
/// `what` the name it ran for in errors, whose kind is `kind`.
///
/// # Errors
/// [`Error::Acme`] of `kind` when it cannot start, fails, or runs too long.
pub(super) fn run(
    which: &'static str,
    cmd: &str,
    env: &[(&str, &str)],
    timeout: Duration,
    (kind, what): (AcmeFailure, &str),
) -> Result<()> {
    let fail = |detail: String| Error::Acme {
        kind,
        step: which,
        detail,
    };
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(cmd)
        // The PIN stays with hsm-csr: a hook is the operator's, but what
        // it runs and logs is not the token's business.
        .env_remove(crate::pin::PIN_ENV)
        .envs(env.iter().copied())
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
                break Err(fail(format!("{cmd:?} failed ({status}) for {what}")));
            }
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(None) => {
                end_group();
                let _ = child.kill();
                let _ = child.wait();
                break Err(fail(format!(
                    "{cmd:?} still ran after {}s for {what}; killed",
                    timeout.as_secs()
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

/// What a deploy hook is told of a certificate just stored.
#[derive(Clone, Debug)]
pub(crate) struct Deployed<'a> {
    /// What was issued.
    pub issued: &'a super::Issued,
    /// Where its chain was written, if it was.
    pub chain_path: Option<&'a std::path::Path>,
    /// The key URI of the pair it replaces (renewals).
    pub replaces: Option<&'a str>,
}

/// Runs the deploy hook `cmd` (`sh -c`) for `deployed`, waiting at most
/// `timeout`, with in its environment:
///
/// - `HSM_CSR_COMMON_NAME`, and `HSM_CSR_NAMES`: the certificate's DNS
///   names and IP addresses, space-separated;
/// - `HSM_CSR_KEY_URI` (RFC 7512) and `HSM_CSR_PUB_MD5` of the new key;
/// - `HSM_CSR_CHAIN_PATH`: the chain file, or empty;
/// - `HSM_CSR_NOT_AFTER`: the certificate's notAfter, seconds since the
///   epoch;
/// - `HSM_CSR_REPLACED_KEY_URI`: the pair it replaces, or empty.
///
/// The certificate is on the token already: a failed hook is reported,
/// and changes nothing there.
///
/// # Errors
/// `Acme.DeployHookFailed` when it cannot start, fails, or runs too long.
pub(crate) fn deploy(cmd: &str, deployed: &Deployed<'_>, timeout: Duration) -> Result<()> {
    let issued = deployed.issued;
    // The CA's names, space-separated: only those written with what DNS
    // names (A-labels, `*.`) and IP addresses use, so that none can split
    // into two or carry a shell's metacharacters.
    let names = crate::certificate::ParsedCertificate::parse(&issued.leaf_der)
        .map(|cert| {
            let (_, names) = super::issue::names_of(&cert);
            names
                .into_iter()
                .filter(|n| {
                    !n.is_empty()
                        && n.bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b".-*:_".contains(&b))
                })
                .collect::<Vec<_>>()
                .join(" ")
        })
        .unwrap_or_default();
    let chain = deployed
        .chain_path
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let not_after = issued.not_after.to_string();
    let common_name = &issued.response.common_name;
    run(
        "deploy hook",
        cmd,
        &[
            ("HSM_CSR_COMMON_NAME", common_name),
            ("HSM_CSR_NAMES", &names),
            ("HSM_CSR_KEY_URI", &issued.response.key_uri),
            ("HSM_CSR_PUB_MD5", &issued.response.pub_md5),
            ("HSM_CSR_CHAIN_PATH", &chain),
            ("HSM_CSR_NOT_AFTER", &not_after),
            (
                "HSM_CSR_REPLACED_KEY_URI",
                deployed.replaces.unwrap_or_default(),
            ),
        ],
        timeout,
        (AcmeFailure::DeployHook, common_name),
    )
}
