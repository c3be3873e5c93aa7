//! One `acme` run at a time per account: an exclusive flock(2) on a lock
//! file beside the account file (`<account>.lock`), taken without waiting,
//! so a cron or timer run that overlaps a slow one stops at once instead
//! of ordering twice. The kernel drops the lock when the process ends,
//! however it ends.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, flock};

use crate::error::{Error, Result};

/// A held lock; released on drop.
#[derive(Debug)]
pub struct RunLock {
    _file: File,
    /// Where it is.
    pub path: PathBuf,
}

/// The lock file for `account_file`.
pub fn path_for(account_file: &Path) -> PathBuf {
    let mut name = account_file.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Takes the lock at `path`, or fails at once if another run holds it.
///
/// # Errors
/// `Config.Invalid` when the file cannot be opened or another run holds it.
pub fn acquire(path: &Path) -> Result<RunLock> {
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
    Ok(RunLock {
        _file: file,
        path: path.to_owned(),
    })
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
