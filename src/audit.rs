//! The audit trail: one JSON line per thing that happened to a key (made,
//! delivered, rolled back, deleted, certificate attached), appended to the
//! file `[audit] path` names.
//!
//! - **On disk before the answer.** Each event is one `write(2)` of a whole
//!   line to a file opened with `O_APPEND`, then `fdatasync(2)`, before the
//!   answer it belongs to is released. When that fails, the request fails
//!   and its new key pair is removed ([`crate::prepare_csr`]): a key is never
//!   delivered without its event, never the other way round.
//! - **One line per event, whoever writes.** POSIX write(2): "If the
//!   O_APPEND flag of the file status flags is set, the file offset shall be
//!   set to the end of the file prior to each write and no intervening file
//!   modification operation shall occur between changing the file offset and
//!   the write operation"; Linux holds the inode lock for the whole write to
//!   a regular file, so the threads of `serve` and a `create` beside it
//!   never interleave their lines. A short write is reported as a failure,
//!   never completed by a second write that another line could precede.
//! - **Lines that cannot be split or forged.** Every event is serialised by
//!   serde_json with everything outside printable ASCII escaped (a line
//!   feed becomes `\n`, U+2028 `\u2028`), so no common name or access key
//!   id can end a line or start one; each field is cut at 512 characters
//!   (`MAX_FIELD`), marked `...[truncated]`.
//! - **Append only.** The file is created with mode 0640 and never truncated;
//!   a symbolic link, a directory, a FIFO or a device is refused, as is a
//!   path swapped between the look and the open. It is opened anew for each
//!   event, so that a log rotated by renaming is followed at once.
//! - **Nothing secret.** Events carry names, fingerprints and URIs: never a
//!   PIN, an access key secret, a signature or a CSR.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};

use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde::Serialize;

mod line;
pub(crate) use line::rfc3339_now;

use crate::backend::pkcs11::inventory::KeyEntry;
use crate::error::{Error, Result};

/// Longest string field, in characters, before it is cut.
pub(crate) const MAX_FIELD: usize = 512;

/// What happened to a key.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// A key pair was made for a request (or taken from the key pool).
    Created,
    /// The response naming the key was released to the caller.
    Delivered,
    /// The key pair was removed because its request failed or its response
    /// was not taken; `outcome` says why.
    RolledBack,
    /// `keys delete` removed the key pair.
    Deleted,
    /// A certificate was stored beside the key.
    CertificateAttached,
    /// A renewal (`acme renew`) replaced the key pair; `replaced_by` names
    /// the new one.
    Replaced,
}

/// Who asked.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum Actor {
    /// A caller of `serve`, by its access key id.
    AccessKey {
        /// The access key id the request was signed with.
        access_key: String,
    },
    /// A local user running the CLI.
    User {
        /// Login name, from /etc/passwd; absent when the uid has none.
        #[serde(skip_serializing_if = "Option::is_none")]
        user: Option<String>,
        /// Real user id.
        uid: u32,
    },
}

impl Actor {
    /// The caller of `serve` that signed with `id`.
    pub fn access_key(id: &str) -> Actor {
        Actor::AccessKey {
            access_key: id.to_owned(),
        }
    }

    /// The user running this process: the real uid of /proc/self/status
    /// and its name in /etc/passwd.
    pub fn local_user() -> Actor {
        let uid = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find_map(|l| l.strip_prefix("Uid:"))
                    .and_then(|ids| ids.split_whitespace().next()?.parse().ok())
            })
            .or_else(|| std::fs::metadata("/proc/self").ok().map(|m| m.uid()))
            .unwrap_or(u32::MAX);
        let user = std::fs::read_to_string("/etc/passwd").ok().and_then(|p| {
            p.lines().find_map(|l| {
                let mut f = l.split(':');
                let name = f.next()?;
                (f.nth(1)?.parse::<u32>().ok()? == uid).then(|| name.to_owned())
            })
        });
        Actor::User { user, uid }
    }
}

/// One event, as a line of the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Event {
    /// RFC 3339 UTC, milliseconds: `2026-11-30T23:59:01.123Z`.
    pub time: String,
    /// What happened.
    pub event: EventKind,
    /// The RequestId of the request it happened for.
    pub request_id: String,
    /// Who asked.
    pub actor: Actor,
    /// The key's common name, when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub common_name: Option<String>,
    /// PubMd5 of the key (see [`crate::fingerprint`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pub_md5: Option<String>,
    /// RFC 7512 URI of the private key.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_uri: Option<String>,
    /// `ok`, or the API error code of what failed.
    pub outcome: String,
    /// For `rolled_back`: why (an API error code, or `NotDelivered` when
    /// nobody took the response).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
    /// For `replaced`: the URI of the key pair that replaced it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replaced_by: Option<String>,
    /// The process that wrote the event.
    pub pid: u32,
}

impl Event {
    /// An event of `kind` for `request_id`, by `actor`, at the current time,
    /// with outcome `ok` and no key named yet.
    pub fn new(kind: EventKind, request_id: &str, actor: &Actor) -> Event {
        Event {
            time: rfc3339_now(),
            event: kind,
            request_id: request_id.to_owned(),
            actor: actor.clone(),
            common_name: None,
            pub_md5: None,
            key_uri: None,
            outcome: "ok".into(),
            cause: None,
            replaced_by: None,
            pid: std::process::id(),
        }
    }

    /// The same event naming a key.
    #[must_use]
    pub fn key(mut self, common_name: Option<&str>, pub_md5: &str, key_uri: &str) -> Event {
        self.common_name = common_name.map(str::to_owned);
        self.pub_md5 = Some(pub_md5.to_owned());
        self.key_uri = Some(key_uri.to_owned());
        self
    }

    /// The same event with `outcome` (an API error code) instead of `ok`.
    #[must_use]
    pub fn outcome(mut self, outcome: &str) -> Event {
        self.outcome = outcome.to_owned();
        self
    }

    /// The same event with `cause`.
    #[must_use]
    pub fn cause(mut self, cause: &str) -> Event {
        self.cause = Some(cause.to_owned());
        self
    }

    /// The same event naming the key pair that replaced this one.
    #[must_use]
    pub fn replaced_by(mut self, key_uri: &str) -> Event {
        self.replaced_by = Some(key_uri.to_owned());
        self
    }
}

/// How long an event may take to reach the disk before the call that
/// needs it fails.
pub(crate) const WRITE_DEADLINE: Duration = Duration::from_secs(5);
/// Most audit writes left stuck on a disk that does not answer.
pub(crate) const MAX_STUCK_WRITES: usize = 8;
static STUCK_WRITES: AtomicUsize = AtomicUsize::new(0);

/// The audit log file.
#[derive(Clone, Debug)]
pub struct AuditLog {
    path: PathBuf,
}

impl AuditLog {
    /// Checks that `path` can be appended to (creating it, mode 0640, when
    /// it does not exist), before any key is made.
    ///
    /// # Errors
    /// `Internal.Error` ([`Error::Audit`]) naming the path and what is wrong.
    pub fn open(path: &Path) -> Result<AuditLog> {
        let log = AuditLog {
            path: path.to_owned(),
        };
        log.open_file().map_err(|e| log.error(&e, false))?;
        Ok(log)
    }

    /// Where the events go.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends `event` and waits until it is on disk.
    ///
    /// # Errors
    /// [`Error::Audit`] (with `rolled_back` false: callers that remove a
    /// key say so themselves).
    pub fn record(&self, event: &Event) -> Result<()> {
        self.append_within(event.line(), WRITE_DEADLINE)
            .map_err(|e| self.error(&e, false))
    }

    /// [`Self::append`] on a thread of its own, waited for at most
    /// `deadline`: a log on a disk that stopped answering fails the call
    /// (and frees its token session) instead of holding it forever. A
    /// write still stuck keeps its thread; at most [`MAX_STUCK_WRITES`] are
    /// kept, past that events fail at once.
    fn append_within(&self, line: Vec<u8>, deadline: Duration) -> io::Result<()> {
        let log = self.clone();
        within(deadline, move || log.append(&line))
    }

    /// The error for a failure to write this log.
    pub fn error(&self, e: &io::Error, rolled_back: bool) -> Error {
        Error::Audit {
            detail: format!("{}: {e}", self.path.display()),
            rolled_back,
        }
    }

    fn append(&self, line: &[u8]) -> io::Result<()> {
        let mut file = self.open_file()?;
        let written = file.write(line)?;
        if written != line.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "only {written} of {} bytes of the event were written",
                    line.len()
                ),
            ));
        }
        file.sync_data()
    }

    /// Opens the file for appending: an existing regular file that is not
    /// a symbolic link, or a new one (O_EXCL never follows a link).
    fn open_file(&self) -> io::Result<File> {
        let refused = |what: &str| io::Error::other(format!("{what}; name a regular file"));
        match std::fs::symlink_metadata(&self.path) {
            Ok(meta) => {
                if meta.file_type().is_symlink() {
                    return Err(refused("is a symbolic link"));
                }
                if !meta.is_file() {
                    return Err(refused("is not a regular file"));
                }
                let file = open_checked(&self.path)?;
                let opened = file.metadata()?;
                if (opened.dev(), opened.ino()) != (meta.dev(), meta.ino()) || !opened.is_file() {
                    return Err(io::Error::other("was replaced while it was opened"));
                }
                Ok(file)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let file = match OpenOptions::new()
                    .append(true)
                    .create_new(true)
                    .mode(0o640)
                    .open(&self.path)
                {
                    // Made by another writer in between: open that one.
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                        return self.open_file();
                    }
                    other => other?,
                };
                // The new name must survive a crash as the events do.
                let dir = match self.path.parent() {
                    Some(d) if !d.as_os_str().is_empty() => d,
                    _ => Path::new("."),
                };
                File::open(dir)?.sync_all()?;
                Ok(file)
            }
            Err(e) => Err(e),
        }
    }
}

/// Opens `path` for appending without blocking (a FIFO swapped in after
/// a check would hold a plain open forever: with O_NONBLOCK, opening one
/// with no reader fails at once) and without following a link swapped in
/// (O_NOFOLLOW); what was opened must be a regular file.
fn open_checked(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .append(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(io::Error::other(
            "is not a regular file; name a regular file",
        ));
    }
    Ok(file)
}

/// Runs `write` on a thread of its own and waits for it at most
/// `deadline` (see [`AuditLog::record`]).
fn within(
    deadline: Duration,
    write: impl FnOnce() -> io::Result<()> + Send + 'static,
) -> io::Result<()> {
    if STUCK_WRITES.load(Ordering::Relaxed) >= MAX_STUCK_WRITES {
        return Err(io::Error::other(format!(
            "{MAX_STUCK_WRITES} earlier writes are still stuck; the disk does not answer"
        )));
    }
    let (tx, rx) = std::sync::mpsc::channel();
    // Set by the waiter when it gives up: the writer, when it is done
    // at last, is no longer stuck.
    let abandoned = std::sync::Arc::new(std::sync::Mutex::new(false));
    let gave_up = std::sync::Arc::clone(&abandoned);
    std::thread::Builder::new()
        .name("audit-write".into())
        .spawn(move || {
            let done = write();
            let stuck = gave_up.lock().unwrap_or_else(|p| p.into_inner());
            if *stuck {
                STUCK_WRITES.fetch_sub(1, Ordering::Relaxed);
            }
            let _ = tx.send(done);
        })?;
    match rx.recv_timeout(deadline) {
        Ok(done) => done,
        Err(_) => {
            let mut stuck = abandoned.lock().unwrap_or_else(|p| p.into_inner());
            // It may have finished between the timeout and the lock.
            if let Ok(done) = rx.try_recv() {
                return done;
            }
            *stuck = true;
            STUCK_WRITES.fetch_add(1, Ordering::Relaxed);
            Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "the event was not on disk within {:.1} s; the log's disk or file does not answer",
                    deadline.as_secs_f64()
                ),
            ))
        }
    }
}

/// An audit log and who is acting: what an operation needs to record its
/// events. The CLI's commands act as [`Actor::local_user`], `serve` as each
/// request's access key.
#[derive(Clone, Debug)]
pub struct Trail<'a> {
    /// Where the events go.
    pub log: &'a AuditLog,
    /// Who asked.
    pub actor: Actor,
}

impl Trail<'_> {
    /// Records an event of `kind` for `request_id` by this trail's actor.
    ///
    /// # Errors
    /// [`Error::Audit`].
    pub fn record(&self, event: Event) -> Result<()> {
        self.log.record(&event)
    }

    /// A new event by this trail's actor.
    pub fn event(&self, kind: EventKind, request_id: &str) -> Event {
        Event::new(kind, request_id, &self.actor)
    }

    /// Records `kind` (`deleted`, `certificate_attached`) for `key`, an
    /// entry of the token's inventory, with `outcome` (`ok` or an error
    /// code). The common name is the key's label less `label_prefix`, when
    /// it has that prefix.
    ///
    /// # Errors
    /// [`Error::Audit`].
    pub fn record_key(
        &self,
        kind: EventKind,
        request_id: &str,
        key: &KeyEntry,
        label_prefix: &str,
        outcome: &str,
    ) -> Result<()> {
        let mut event = self.event(kind, request_id).outcome(outcome);
        event.common_name = key.label.strip_prefix(label_prefix).map(str::to_owned);
        event.pub_md5.clone_from(&key.pub_md5);
        event.key_uri = Some(key.key_uri.clone());
        self.record(event)
    }

    /// Records `certificate_attached` (outcome `ok`) for the key `key_uri`
    /// with PubMd5 `pub_md5`: for `attach-cert` and the service's
    /// SetCdnDomainCSRCertificate, once a new certificate is stored and
    /// before the answer is released.
    ///
    /// # Errors
    /// [`Error::Audit`]: the request must fail, and the certificate it
    /// stored be removed.
    pub fn certificate_attached(
        &self,
        request_id: &str,
        pub_md5: &str,
        key_uri: &str,
    ) -> Result<()> {
        let event = self.event(EventKind::CertificateAttached, request_id);
        self.record(event.key(None, pub_md5, key_uri))
    }
}

#[cfg(test)]
mod tests;
