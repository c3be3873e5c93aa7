//! Every value of the configuration checked once, when it is loaded, before
//! any token is opened: numbers against documented ranges (so that no
//! arithmetic on them can overflow), names and actions against what the
//! service knows, the subject defaults as a request would be checked.

use std::collections::HashSet;
use std::net::SocketAddr;

use super::Config;
use super::ServiceConfig;
use crate::request::CsrRequest;

/// One numeric setting: its name as written in the file, its value, and the
/// inclusive range it must lie in.
struct Bound {
    name: &'static str,
    value: u128,
    min: u128,
    max: u128,
    unit: &'static str,
}

/// The documented range of every numeric `[service]` and `[pool]` setting
/// (config/hsm-csr.example.toml says the same).
fn bounds(c: &Config) -> [Bound; 12] {
    let s: &ServiceConfig = &c.service;
    let b = |name, value: u128, min, max, unit| Bound {
        name,
        value,
        min,
        max,
        unit,
    };
    [
        b(
            "[service] rate_limit",
            s.rate_limit.into(),
            1,
            100_000,
            "calls per second",
        ),
        b(
            "[service] max_body_bytes",
            s.max_body_bytes as u128,
            1024,
            16 << 20,
            "bytes",
        ),
        b(
            "[service] max_header_bytes",
            s.max_header_bytes as u128,
            1024,
            1 << 20,
            "bytes",
        ),
        b(
            "[service] request_timeout_ms",
            s.request_timeout_ms.into(),
            1,
            3_600_000,
            "ms",
        ),
        b(
            "[service] timestamp_window_s",
            s.timestamp_window_s.into(),
            1,
            86_400,
            "s",
        ),
        b(
            "[service] shutdown_timeout_ms",
            s.shutdown_timeout_ms.into(),
            0,
            3_600_000,
            "ms",
        ),
        b("[service] workers", s.workers as u128, 0, 1024, "sessions"),
        b(
            "[service] header_timeout_ms",
            s.header_timeout_ms.into(),
            100,
            300_000,
            "ms",
        ),
        b(
            "[service] body_timeout_ms",
            s.body_timeout_ms.into(),
            100,
            300_000,
            "ms",
        ),
        b(
            "[service] idle_timeout_ms",
            s.idle_timeout_ms.into(),
            100,
            3_600_000,
            "ms",
        ),
        b(
            "[service] max_connections",
            s.max_connections as u128,
            1,
            1_000_000,
            "connections",
        ),
        b("[pool] size", c.pool.size as u128, 0, 100_000, "key pairs"),
    ]
}

/// The RAM-style action names an access key may be granted.
const GRANTS: [&str; 6] = [
    "*",
    "hsm-csr:AllKeys",
    "cdn:CreateCdnCertificateSigningRequest",
    "dcdn:CreateDcdnCertificateSigningRequest",
    "cdn:SetCdnDomainCSRCertificate",
    "dcdn:SetDcdnDomainCSRCertificate",
];

/// Fewest objects a token with `max_objects` may be said to hold: a few
/// key pairs and their certificates.
const MIN_OBJECTS: usize = 8;
/// Most objects, which is more than any token holds.
const MAX_OBJECTS: usize = 10_000_000;
/// Largest `max_keys`: more than any token holds.
const MAX_KEYS_LIMIT: usize = 1_000_000;

/// Checks `config`; the message names the setting and what it must be,
/// never echoing a value that might be a misplaced secret.
pub(super) fn check(config: &Config) -> Result<(), String> {
    for b in bounds(config) {
        if b.value < b.min || b.value > b.max {
            return Err(format!(
                "{} must be between {} and {} ({}).",
                b.name, b.min, b.max, b.unit
            ));
        }
    }
    let key_options = config
        .key
        .options()
        .validate()
        .map_err(|e| format!("[key]: {e}"))?;
    if key_options.label_prefix().chars().any(char::is_control) {
        return Err("[key] label_prefix must not contain control characters.".into());
    }
    if config.pool.size > 0 {
        if let Some(t) = config.pool.key_type {
            let pool_type = t.with_bits(config.key.bits);
            if pool_type != key_options.key_type() {
                return Err(format!(
                    "[pool] key_type {pool_type} differs from [key] type {}: its keys would never be used.",
                    key_options.key_type()
                ));
            }
        }
    }
    // The defaults must pass exactly the checks a request's own values
    // pass, or every request would later be refused for them.
    CsrRequest {
        common_name: Some("example.com".into()),
        ..CsrRequest::default()
    }
    .validate(&config.subject.defaults)
    .map_err(|e| format!("[subject.defaults]: {e}"))?;
    super::tokens::check(config)?;
    for t in std::iter::once(&config.token).chain(&config.tokens) {
        if t.name.as_deref().is_some_and(|n| {
            !(1..=32).contains(&n.len())
                || !n
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
        }) {
            return Err("a token's name must be 1 to 32 characters from A-Z a-z 0-9 . _ -".into());
        }
        if t.max_objects
            .is_some_and(|m| !(MIN_OBJECTS..=MAX_OBJECTS).contains(&m))
        {
            return Err(format!(
                "max_objects of token {:?} must be {MIN_OBJECTS} to {MAX_OBJECTS}; leave it out for no limit.",
                t.display_name()
            ));
        }
    }
    if config
        .audit
        .path
        .as_ref()
        .is_some_and(|p| p.as_os_str().is_empty())
    {
        return Err("[audit] path must name a file; leave it out for no audit trail.".into());
    }
    if !(60..=604_800).contains(&config.retention.every_s) {
        return Err("[retention] every_s must be between 60 and 604800 (s).".into());
    }
    check_service(&config.service)
}

fn check_service(s: &ServiceConfig) -> Result<(), String> {
    s.listen.parse::<SocketAddr>().map_err(|_| {
        "[service] listen must be an IP address and port, such as 127.0.0.1:8080 or [::1]:8080."
            .to_owned()
    })?;
    if let Some(admin) = &s.admin_listen {
        let admin = admin.parse::<SocketAddr>().map_err(|_| {
            "[service] admin_listen must be an IP address and port, such as 127.0.0.1:9090."
                .to_owned()
        })?;
        if s.listen
            .parse::<SocketAddr>()
            .is_ok_and(|l| l == admin && l.port() != 0)
        {
            return Err("[service] admin_listen must differ from listen.".into());
        }
    }
    if s.host_id.is_empty() || s.host_id.len() > 255 || !s.host_id.bytes().all(visible) {
        return Err("[service] host_id must be 1 to 255 visible ASCII characters.".into());
    }
    if s.tls_cert.is_some() != s.tls_key.is_some() {
        return Err("[service] tls_cert and tls_key go together.".into());
    }
    check_redis(s)?;
    if !(1..=crate::backend::pkcs11::MOST_CERTIFICATES).contains(&s.max_certificates_per_key) {
        return Err(format!(
            "[service] max_certificates_per_key must be 1 to {}.",
            crate::backend::pkcs11::MOST_CERTIFICATES
        ));
    }
    let mut seen = HashSet::new();
    for (i, k) in s.access_keys.iter().enumerate() {
        let n = i + 1;
        // The id names the owner of the keys it makes, on the token.
        if crate::owner::Owner::new(&k.id).is_err() {
            return Err(format!(
                "[[service.access_keys]] number {n}: id must be 1 to {} characters from A-Z a-z 0-9 . _ - @ :",
                crate::owner::MAX_OWNER_LEN
            ));
        }
        if k.id == crate::owner::LOCAL {
            return Err(format!(
                "[[service.access_keys]] number {n}: id {:?} is reserved for keys made on the command line.",
                crate::owner::LOCAL
            ));
        }
        if k.max_keys
            .is_some_and(|m| !(1..=MAX_KEYS_LIMIT).contains(&m))
        {
            return Err(format!(
                "access key {}: max_keys must be 1 to {MAX_KEYS_LIMIT}; leave it out for no limit.",
                k.id
            ));
        }
        if k.weight.is_some_and(|w| !(1..=100).contains(&w)) {
            return Err(format!("access key {}: weight must be 1 to 100.", k.id));
        }
        if !seen.insert(k.id.as_str()) {
            return Err(format!(
                "[[service.access_keys]] id {:?} is given twice.",
                k.id
            ));
        }
        if k.secret_env.is_some() == k.secret_file.is_some() {
            return Err(format!(
                "access key {}: give exactly one of secret_env and secret_file.",
                k.id
            ));
        }
        if let Some(a) = k.actions.iter().find(|a| !GRANTS.contains(&a.as_str())) {
            return Err(format!(
                "access key {}: unknown action {a:?}; use {}.",
                k.id,
                GRANTS.join(", ")
            ));
        }
    }
    Ok(())
}

/// `redis_url` and its companions. The URL is never echoed: it might carry
/// the password this check refuses.
fn check_redis(s: &ServiceConfig) -> Result<(), String> {
    let prefix = &s.redis_key_prefix;
    if prefix.is_empty()
        || prefix.len() > 64
        || !prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_:.".contains(&b))
    {
        return Err(
            "[service] redis_key_prefix must be 1 to 64 characters from A-Z a-z 0-9 - _ : .".into(),
        );
    }
    let Some(url) = &s.redis_url else {
        if s.redis_password_env.is_some() || s.redis_password_file.is_some() {
            return Err(
                "[service] redis_password_env and redis_password_file need redis_url.".into(),
            );
        }
        return Ok(());
    };
    let Some(rest) = url
        .strip_prefix("redis://")
        .or_else(|| url.strip_prefix("rediss://"))
    else {
        return Err("[service] redis_url must start with redis:// or rediss://.".into());
    };
    let authority = rest.split('/').next().unwrap_or_default();
    if authority
        .rsplit_once('@')
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
    {
        return Err(
            "[service] redis_url must not carry a password: put it in the variable named by redis_password_env or the file named by redis_password_file."
                .into(),
        );
    }
    if authority.rsplit('@').next().is_none_or(str::is_empty) || !url.bytes().all(visible) {
        return Err(
            "[service] redis_url must name a host, such as redis://127.0.0.1:6379/0.".into(),
        );
    }
    if s.redis_password_env.is_some() && s.redis_password_file.is_some() {
        return Err(
            "[service] give at most one of redis_password_env and redis_password_file.".into(),
        );
    }
    Ok(())
}

/// Printable ASCII other than space: safe in a header, a log line and a
/// label, and readable.
fn visible(b: u8) -> bool {
    b.is_ascii_graphic()
}

#[cfg(test)]
mod tests;
