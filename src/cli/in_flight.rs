//! Whether a command-line run must sweep the token first.
//!
//! `create`, `batch` and `acme` remove what earlier runs that stopped
//! mid-call left undelivered ([`super::token::sweep`]): a site that uses
//! only the command line keeps no interrupted key either. The sweep is a
//! search on the token (C_FindObjectsInit, C_FindObjects,
//! C_FindObjectsFinal), three round trips on a network HSM, in a run that
//! otherwise needs about fifteen. So each run leaves a note while it may
//! hold an undelivered key, and removes it once it ends well; a run sweeps
//! only when it finds the note of a run that stopped (or cannot read the
//! notes):
//!
//! ```text
//! $XDG_STATE_HOME/hsm-csr/in-flight/<token>.<owner>
//! ```
//!
//! (`~/.local/state/...` without `XDG_STATE_HOME`; mode 0700, this user's
//! alone), where `<token>` hashes the token's label and serial and the
//! label prefix, and `<owner>` is the process as its keys' marks name it
//! ([`mark`]), so the same liveness test judges both. The state directory
//! survives a reboot, as the keys do.
//!
//! The note is a hint, never the guarantee: it is written before the first
//! key exists, so a run killed at any point leaves it; a note that could
//! not be written, or read, makes the next run sweep. Another user's
//! interrupted run is swept by that user's next run, by `serve`, or by
//! `hsm-csr keys prune`.

use std::fs::OpenOptions;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crate::backend::pkcs11::Pkcs11Backend;
use crate::backend::pkcs11::id::{self, KIND_PROCESS, Owner};
use crate::backend::pkcs11::mark::{self, InProcess, Liveness};
use crate::fingerprint::hex;

/// This run's note; removed by [`Note::done`].
#[derive(Debug)]
pub(crate) struct Note {
    path: Option<PathBuf>,
}

impl Note {
    /// The run ended with every key it made delivered or removed.
    pub(crate) fn done(self) {
        if let Some(path) = &self.path {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// Sweeps `backend` for keys labelled `<prefix>undelivered` if an earlier
/// run on this token stopped before it was done (or that cannot be told),
/// then leaves this run's note.
pub(crate) fn sweep_if_needed(backend: &mut Pkcs11Backend, prefix: &str) -> Note {
    let token = token_digest(backend, prefix);
    let Some(dir) = notes_dir() else {
        super::token::sweep(backend, prefix);
        return Note { path: None };
    };
    match stopped_runs(&dir, &token) {
        Some(stopped) if stopped.is_empty() => {}
        Some(stopped) => {
            if super::token::sweep(backend, prefix) {
                for note in stopped {
                    let _ = std::fs::remove_file(note);
                }
            }
        }
        None => {
            super::token::sweep(backend, prefix);
        }
    }
    let owner = Owner::this_process(KIND_PROCESS);
    let path = dir.join(format!("{token}.{}", hex(&id::mark(&owner, &[]))));
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(&path);
    match written {
        Ok(_) => Note { path: Some(path) },
        Err(e) => {
            log::debug!("no in-flight note at {}: {e}", path.display());
            Note { path: None }
        }
    }
}

/// `$XDG_STATE_HOME/hsm-csr/in-flight` (or under `~/.local/state`), made
/// if missing; None unless it is a directory of this user's alone. A
/// relative path in either variable is ignored, as the XDG Base Directory
/// specification says.
fn notes_dir() -> Option<PathBuf> {
    let absolute = |var: &str| {
        std::env::var_os(var)
            .map(PathBuf::from)
            .filter(|p| p.is_absolute())
    };
    let state =
        absolute("XDG_STATE_HOME").or_else(|| absolute("HOME").map(|h| h.join(".local/state")))?;
    let dir = state.join("hsm-csr").join("in-flight");
    if let Err(e) = std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
    {
        log::debug!("in-flight notes: cannot make {}: {e}", dir.display());
        return None;
    }
    let meta = std::fs::symlink_metadata(&dir).ok()?;
    let uid = rustix::process::geteuid().as_raw();
    (meta.is_dir() && meta.uid() == uid && meta.mode() & 0o077 == 0).then_some(dir)
}

/// The notes in `dir` for `token` whose run has stopped; None when the
/// directory cannot be read.
fn stopped_runs(dir: &Path, token: &str) -> Option<Vec<PathBuf>> {
    let mut stopped = Vec::new();
    for entry in std::fs::read_dir(dir).ok()? {
        let entry = entry.ok()?;
        let name = entry.file_name();
        let Some(owner) = name
            .to_str()
            .and_then(|n| n.strip_prefix(token))
            .and_then(|n| n.strip_prefix('.'))
            .and_then(owner_of)
        else {
            continue;
        };
        if mark::liveness(&owner, &InProcess) == Liveness::Dead {
            stopped.push(entry.path());
        }
    }
    Some(stopped)
}

/// The owner a note's name gives after its token part.
fn owner_of(hex_mark: &str) -> Option<Owner> {
    if hex_mark.len() % 2 != 0 || !hex_mark.is_ascii() {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..hex_mark.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex_mark[i..i + 2], 16).ok())
        .collect();
    let mut id = bytes?;
    // The note names the owner with an empty random part.
    id.extend([0u8; 16]);
    id::decode(&id).map(|(owner, _)| owner)
}

/// What tells this token and label prefix apart in a note's name: not the
/// module, since one token can be reached through several (a vendor's
/// library, p11-kit's proxy or client, a spy).
fn token_digest(backend: &Pkcs11Backend, prefix: &str) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    for part in [
        backend.token_label().as_bytes(),
        backend.token_serial().as_bytes(),
        prefix.as_bytes(),
    ] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    crate::fingerprint::hex_128(&ctx.finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_note_name_gives_back_its_owner() {
        let owner = Owner::this_process(KIND_PROCESS);
        let name = hex(&id::mark(&owner, &[]));
        assert_eq!(owner_of(&name), Some(owner));
        assert_eq!(owner_of(&name[1..]), None);
        assert_eq!(owner_of("zz"), None);
        assert_eq!(owner_of(""), None);
        assert_eq!(owner_of(&format!("{name}00")), None);
    }
}
