//! The ACME account: its credentials (account URL and software P-256 key,
//! as instant-acme 0.8 makes them) in a file only the owner can read.
//!
//! RFC 8555 section 7.3: an account is created once (`newAccount`, with
//! `termsOfServiceAgreed`) and then named by its URL (`kid`) in every
//! request. The file is written once, mode 0600, and refused when anyone
//! but its owner could read or write it.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use instant_acme::{Account, AccountBuilder, AccountCredentials, NewAccount};
use serde::{Deserialize, Serialize};

use super::{AcmeOptions, call};
use crate::error::{Error, Result};

/// What the file holds: the directory it belongs to, and instant-acme's
/// credentials (account URL and PKCS #8 key).
#[derive(Serialize, Deserialize)]
struct AccountFile {
    directory: String,
    credentials: AccountCredentials,
}

/// The account for `opts.directory`: read from `opts.account_file`, or
/// created at the CA and written there.
///
/// # Errors
/// `Config.Invalid` for an unreadable, malformed or too-open file, one for
/// another directory, or no `agree_tos` when an account must be created;
/// `Acme.*` when the CA refuses or does not answer.
pub(super) async fn open(opts: &AcmeOptions) -> Result<Account> {
    let path = &opts.account_file;
    match read(path)? {
        Some(file) => {
            if file.directory != opts.directory {
                return Err(Error::Config(format!(
                    "account file {} is for {}, not {}; name another --account file.",
                    path.display(),
                    file.directory,
                    opts.directory
                )));
            }
            call(
                "directory",
                opts.timeout,
                builder(opts)?.from_credentials(file.credentials),
            )
            .await
        }
        None => {
            if !opts.agree_tos {
                return Err(Error::Config(format!(
                    "no ACME account in {}: pass --agree-tos to create one at {} (you agree to the CA's terms of service).",
                    path.display(),
                    opts.directory
                )));
            }
            let contact: Vec<&str> = opts.contact.iter().map(String::as_str).collect();
            let new = NewAccount {
                contact: &contact,
                terms_of_service_agreed: true,
                only_return_existing: false,
            };
            let (account, credentials) = call(
                "new account",
                opts.timeout,
                builder(opts)?.create(&new, opts.directory.clone(), None),
            )
            .await?;
            write(
                path,
                &AccountFile {
                    directory: opts.directory.clone(),
                    credentials,
                },
            )?;
            Ok(account)
        }
    }
}

fn builder(opts: &AcmeOptions) -> Result<AccountBuilder> {
    super::http::Client::new(opts.ca_root.as_deref())
        .map(|client| Account::builder_with_http(Box::new(client)))
        .map_err(|e| {
            Error::Config(match &opts.ca_root {
                Some(root) => format!("cannot use --ca-root {}: {e}", root.display()),
                None => format!("cannot set up HTTPS to the CA: {e}"),
            })
        })
}

/// Reads the file, or None when there is none.
fn read(path: &Path) -> Result<Option<AccountFile>> {
    let shown = path.display();
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => {
            return Err(Error::Config(format!(
                "cannot read account file {shown}: {e}"
            )));
        }
    };
    if !meta.file_type().is_file() {
        return Err(Error::Config(format!(
            "account file {shown} is not a regular file."
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(Error::Config(format!(
            "account file {shown} has mode {:o}: it holds the ACME account key; chmod 600 it.",
            meta.mode() & 0o777
        )));
    }
    if meta.uid() != rustix::process::geteuid().as_raw() {
        return Err(Error::Config(format!(
            "account file {shown} belongs to another user; it holds the ACME account key."
        )));
    }
    let text = crate::files::read_regular(path, 64 * 1024, "account file")?;
    serde_json::from_slice(&text).map(Some).map_err(|e| {
        Error::Config(format!(
            "account file {shown} is not an hsm-csr ACME account ({e})."
        ))
    })
}

/// Writes a new file, mode 0600, never over an existing one.
fn write(path: &Path, file: &AccountFile) -> Result<()> {
    let shown = path.display();
    let cannot = |e: &dyn std::fmt::Display| {
        Error::Config(format!(
            "the ACME account was created but cannot be saved to {shown}: {e}"
        ))
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".hsm-csr-account")
        .permissions(fs::Permissions::from_mode(0o600))
        .tempfile_in(dir)
        .map_err(|e| cannot(&e))?;
    let json = serde_json::to_vec_pretty(file).map_err(|e| cannot(&e))?;
    tmp.write_all(&json).map_err(|e| cannot(&e))?;
    tmp.as_file().sync_all().map_err(|e| cannot(&e))?;
    tmp.persist_noclobber(path).map_err(|e| cannot(&e.error))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("account.json");
        fs::write(&path, "{}").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let e = read(&path).err().unwrap();
        assert_eq!(e.code(), "Config.Invalid");
        assert!(e.to_string().contains("mode 644"), "{e}");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).unwrap();
        let e = read(&path).err().unwrap();
        assert!(e.to_string().contains("not an hsm-csr ACME account"), "{e}");
    }

    #[test]
    fn no_file_is_no_account() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read(&dir.path().join("none.json")).unwrap().is_none());
    }
}
