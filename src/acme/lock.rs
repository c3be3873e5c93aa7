//! One `acme` run at a time per account and per token: an exclusive
//! flock(2) on a lock file beside the account file (`<account>.lock`) and
//! one on a lock file for the token ([`token_path`]), each taken without
//! waiting, so a cron or timer run that overlaps a slow one stops at once
//! instead of ordering twice, whichever account it uses. The kernel drops
//! a lock when the process ends, however it ends.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

use crate::error::{Error, Result};

/// A held lock; released on drop.
#[derive(Debug)]
pub(crate) struct RunLock {
    _file: File,
}

/// The lock file for `account_file`.
pub(crate) fn path_for(account_file: &Path) -> PathBuf {
    let mut name = account_file.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// The lock file for the token `module` and `token` (its label and
/// serial), in this user's lock directory: `$XDG_RUNTIME_DIR/
/// hsm-csr`, else `/run/lock/hsm-csr-<uid>` (made 0700, and refused unless
/// it is this user's and nobody else's).
///
/// # Errors
/// `Config.Invalid` when the directory cannot be made or is not safe.
pub(crate) fn token_path(module: &Path, token: &str) -> Result<PathBuf> {
    let uid = rustix::process::geteuid().as_raw();
    let dir = match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(run) => PathBuf::from(run).join("hsm-csr"),
        None => PathBuf::from(format!("/run/lock/hsm-csr-{uid}")),
    };
    token_path_in(&dir, module, token)
}

/// [`token_path`] in the lock directory `dir`.
fn token_path_in(dir: &Path, module: &Path, token: &str) -> Result<PathBuf> {
    let uid = rustix::process::geteuid().as_raw();
    let refused = |why: String| {
        Error::Config(format!(
            "acme lock directory {}: {why}; remove it, or set XDG_RUNTIME_DIR",
            dir.display()
        ))
    };
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(refused(e.to_string())),
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|e| refused(e.to_string()))?;
    {
        use std::os::unix::fs::MetadataExt;
        if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
            return Err(refused(
                "not a directory of this user's alone (mode 0700)".into(),
            ));
        }
    }
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(module.as_os_str().as_encoded_bytes());
    ctx.update(&[0]);
    ctx.update(token.as_bytes());
    let digest = crate::fingerprint::hex_128(&ctx.finish());
    Ok(dir.join(format!("token-{digest}.lock")))
}

/// Takes the lock at `path`, or fails at once if another run holds it.
///
/// # Errors
/// `Config.Invalid` when the file cannot be opened or another run holds it.
pub(crate) fn acquire(path: &Path) -> Result<RunLock> {
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .mode(0o600)
        // A symlink planted at the lock's name must not make hsm-csr
        // create or open a file elsewhere.
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::NotFound {
                "; create its directory (mode 0700) or name another --account"
            } else {
                ""
            };
            Error::Config(format!(
                "cannot open lock file {}: {e}{hint}",
                path.display()
            ))
        })?;
    flock(&file, FlockOperation::NonBlockingLockExclusive).map_err(|e| {
        if e == rustix::io::Errno::WOULDBLOCK {
            Error::Config(format!(
                "another hsm-csr acme run holds {}; try again when it is done.",
                path.display()
            ))
        } else {
            Error::Config(format!("cannot lock {}: {e}", path.display()))
        }
    })?;
    Ok(RunLock { _file: file })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_run_is_refused_until_the_first_ends() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("account.json"));
        let first = acquire(&path).unwrap();
        let e = acquire(&path).unwrap_err();
        assert!(e.to_string().contains("another hsm-csr acme run"), "{e}");
        drop(first);
        acquire(&path).unwrap();
    }

    #[test]
    fn one_lock_per_token_in_a_directory_of_this_users_alone() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("locks");
        let module = Path::new("/usr/lib/softhsm/libsofthsm2.so");
        let a = token_path_in(&dir, module, "label \"prod\"").unwrap();
        assert_eq!(a, token_path_in(&dir, module, "label \"prod\"").unwrap());
        assert_ne!(a, token_path_in(&dir, module, "label \"test\"").unwrap());
        assert_ne!(
            a,
            token_path_in(&dir, Path::new("/other.so"), "label \"prod\"").unwrap()
        );
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o700);
        let held = acquire(&a).unwrap();
        assert!(acquire(&a).is_err());
        drop(held);
        // A directory others may write is not used.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = token_path_in(&dir, module, "x").unwrap_err();
        assert!(e.to_string().contains("this user's alone"), "{e}");
    }

    #[test]
    fn a_symlink_at_the_lock_name_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        let path = dir.path().join("account.json.lock");
        std::os::unix::fs::symlink(&target, &path).unwrap();
        let e = acquire(&path).unwrap_err();
        assert_eq!(e.code(), "Config.Invalid");
        assert!(!target.exists(), "nothing was created through the link");
    }
}
