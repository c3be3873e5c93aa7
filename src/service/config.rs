//! The access keys with their secrets, read once at start from what
//! `[[service.access_keys]]` names ([`crate::config::AccessKeyConfig`]).

use std::collections::{HashMap, HashSet};

use secrecy::SecretString;
use zeroize::Zeroizing;

use crate::config::AccessKeyConfig;
use crate::error::{Error, Result};

pub(super) struct AccessKey {
    pub(super) secret: SecretString,
    pub(super) actions: HashSet<String>,
}

/// The callers, with their secrets read from the environment or files.
pub struct AccessKeys(pub(super) HashMap<String, AccessKey>);

impl AccessKeys {
    /// Reads every configured secret, before anything else starts, so that
    /// a missing variable or file stops `serve` before the token is opened.
    ///
    /// # Errors
    /// `Config.Invalid` when a secret cannot be read or is empty, or no
    /// access key is configured.
    pub fn load(configured: &[AccessKeyConfig]) -> Result<AccessKeys> {
        if configured.is_empty() {
            return Err(Error::Config(
                "no [[service.access_keys]] configured: nobody could call the service.".into(),
            ));
        }
        let mut keys = HashMap::new();
        for k in configured {
            let secret = match (&k.secret_env, &k.secret_file) {
                (Some(var), None) => Zeroizing::new(std::env::var(var).map_err(|_| {
                    Error::Config(format!(
                        "access key {}: environment variable {var} is not set.",
                        k.id
                    ))
                })?),
                (None, Some(path)) => {
                    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|e| {
                        Error::Config(format!(
                            "access key {}: cannot read {}: {e}",
                            k.id,
                            path.display()
                        ))
                    })?);
                    Zeroizing::new(text.trim_end_matches(['\r', '\n']).to_owned())
                }
                _ => {
                    return Err(Error::Config(format!(
                        "access key {}: give exactly one of secret_env and secret_file.",
                        k.id
                    )));
                }
            };
            if secret.is_empty() {
                return Err(Error::Config(format!(
                    "access key {}: the secret is empty.",
                    k.id
                )));
            }
            keys.insert(
                k.id.clone(),
                AccessKey {
                    secret: SecretString::from(secret.as_str()),
                    actions: k.actions.iter().cloned().collect(),
                },
            );
        }
        Ok(AccessKeys(keys))
    }
}
