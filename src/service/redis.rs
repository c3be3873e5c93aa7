//! The connection to Redis, when `[service] redis_url` is set: what
//! replicas share (rate-limit windows, nonces, key-pool claims) lives there.
//! The password comes from `redis_password_env` or `redis_password_file`,
//! never from the URL, and never reaches a log line or an error.

use redis::IntoConnectionInfo;

use super::config::read_secret;
use crate::config::ServiceConfig;
use crate::error::{Error, Result};

/// The client for `config.redis_url`, or None when it is not set. Nothing
/// is connected yet.
///
/// # Errors
/// `Config.Invalid` when the URL cannot be used or the password cannot be
/// read.
pub(crate) fn client(config: &ServiceConfig) -> Result<Option<redis::Client>> {
    let Some(url) = &config.redis_url else {
        return Ok(None);
    };
    let mut info = url
        .as_str()
        .into_connection_info()
        .map_err(|e| Error::Config(format!("[service] redis_url cannot be used: {e}")))?;
    if config.redis_password_env.is_some() || config.redis_password_file.is_some() {
        let password = read_secret(
            config.redis_password_env.as_deref(),
            config.redis_password_file.as_deref(),
            "[service] redis password",
        )?;
        let settings = info
            .redis_settings()
            .clone()
            .set_password(password.as_str());
        info = info.set_redis_settings(settings);
    }
    redis::Client::open(info)
        .map(Some)
        .map_err(|e| Error::Config(format!("[service] redis_url cannot be used: {e}")))
}

/// The Redis key for `parts` under the configured prefix, each part
/// hex-encoded where it comes from a caller, so that no caller value can
/// reach another key's name.
pub(crate) fn key(prefix: &str, kind: &str, parts: &[&[u8]]) -> String {
    let mut key = format!("{prefix}:{kind}");
    for part in parts {
        key.push(':');
        key.push_str(&crate::fingerprint::hex(part));
    }
    key
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caller_bytes_cannot_shape_a_key() {
        assert_eq!(key("p", "rate", &[b"a:b"]), "p:rate:613a62");
        assert_ne!(key("p", "n", &[b"a", b"b"]), key("p", "n", &[b"a:b"]));
    }

    #[test]
    fn no_url_no_client_and_the_password_stays_out_of_errors() {
        assert!(client(&ServiceConfig::default()).unwrap().is_none());
        let config = ServiceConfig {
            redis_url: Some("redis://127.0.0.1:1/0".into()),
            redis_password_env: Some("HSM_CSR_TEST_UNSET_REDIS_PASSWORD".into()),
            ..ServiceConfig::default()
        };
        let e = client(&config).unwrap_err().to_string();
        assert!(
            e.contains("HSM_CSR_TEST_UNSET_REDIS_PASSWORD is not set"),
            "{e}"
        );
    }
}
