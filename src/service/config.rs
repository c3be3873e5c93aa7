//! The access keys with their secrets, read once at start from what
//! `[[service.access_keys]]` names ([`crate::config::AccessKeyConfig`]).

use std::collections::{HashMap, HashSet};
use std::path::Path;

use secrecy::SecretString;
use zeroize::Zeroizing;

use std::sync::Arc;

use crate::config::AccessKeyConfig;
use crate::error::{Error, Result};
use crate::owner::{Owner, Principal};
use crate::quota::{Caller, KeyQuota};

pub(super) struct AccessKey {
    pub(super) secret: SecretString,
    pub(super) actions: HashSet<String>,
    /// Who its keys belong to, what it may use, its quota.
    pub(super) caller: Caller,
    /// Its share of the sessions when several access keys wait.
    pub(super) weight: u32,
}

/// The grant that lets an access key use every owner's keys.
pub(super) const ALL_KEYS: &str = "hsm-csr:AllKeys";

/// The callers, with their secrets read from the environment or files.
pub(crate) struct AccessKeys(pub(super) HashMap<String, AccessKey>);

impl AccessKeys {
    /// Reads every configured secret, before anything else starts, so that
    /// a missing variable or file stops `serve` before the token is opened.
    ///
    /// # Errors
    /// `Config.Invalid` when a secret cannot be read or is empty, or no
    /// access key is configured.
    pub(crate) fn load(
        configured: &[AccessKeyConfig],
        max_certificates_per_key: usize,
    ) -> Result<AccessKeys> {
        if configured.is_empty() {
            return Err(Error::Config(
                "no [[service.access_keys]] configured: nobody could call the service.".into(),
            ));
        }
        let mut keys = HashMap::new();
        for k in configured {
            let secret = read_secret(
                k.secret_env.as_deref(),
                k.secret_file.as_deref(),
                &format!("access key {}", k.id),
            )?;
            let caller = Caller {
                principal: Principal {
                    owner: Owner::new(&k.id)?,
                    all_keys: k.actions.iter().any(|a| a == ALL_KEYS),
                },
                quota: k.max_keys.map(|m| Arc::new(KeyQuota::new(m))),
                max_certificates_per_key,
                elsewhere: 0,
            };
            keys.insert(
                k.id.clone(),
                AccessKey {
                    secret: SecretString::from(secret.as_str()),
                    actions: k.actions.iter().cloned().collect(),
                    caller,
                    weight: k.weight.unwrap_or(1),
                },
            );
        }
        Ok(AccessKeys(keys))
    }
}

/// A secret from exactly one of an environment variable and a file (its
/// first line); `what` names the setting in errors, which never carry the
/// secret.
///
/// # Errors
/// `Config.Invalid` when neither or both are given, the source cannot be
/// read, or the secret is empty.
pub(crate) fn read_secret(
    env: Option<&str>,
    file: Option<&Path>,
    what: &str,
) -> Result<Zeroizing<String>> {
    let secret = match (env, file) {
        (Some(var), None) => Zeroizing::new(std::env::var(var).map_err(|_| {
            Error::Config(format!("{what}: environment variable {var} is not set."))
        })?),
        (None, Some(path)) => {
            let bytes = Zeroizing::new(crate::files::read_regular(
                path,
                crate::files::MAX_SECRET_BYTES,
                &format!("{what}: file"),
            )?);
            let text = Zeroizing::new(String::from_utf8(bytes.to_vec()).map_err(|_| {
                Error::Config(format!("{what}: {} is not valid UTF-8.", path.display()))
            })?);
            Zeroizing::new(text.trim_end_matches(['\r', '\n']).to_owned())
        }
        _ => {
            return Err(Error::Config(format!(
                "{what}: give exactly one of an environment variable and a file."
            )));
        }
    };
    if secret.is_empty() {
        return Err(Error::Config(format!("{what}: the secret is empty.")));
    }
    Ok(secret)
}
