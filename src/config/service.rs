//! `[service]`: the settings of `hsm-csr serve`, as data. The service
//! consumes them; the core only reads and checks them ([`super::check`]),
//! and knows nothing of HTTP.

use std::path::PathBuf;

use serde::Deserialize;

/// `[service]` in the config file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServiceConfig {
    /// Address to listen on. Default `127.0.0.1:8080`.
    pub listen: String,
    /// Where `/healthz` and `/metrics` are served instead (plain HTTP),
    /// so that callers of the API port never see the tokens' names, fill
    /// levels or the tenants' figures. None (the default): on `listen`.
    pub admin_listen: Option<String>,
    /// `HostId` in error bodies. Default `hsm-csr`.
    pub host_id: String,
    /// Calls per second per access key (the API's 100).
    pub rate_limit: u32,
    /// Largest accepted request body, in bytes.
    pub max_body_bytes: usize,
    /// How long a request may take, keygen included, before it is answered
    /// with an error and its key removed.
    pub request_timeout_ms: u64,
    /// Accepted clock difference for Timestamp / x-acs-date, in seconds,
    /// and how long a SignatureNonce stays used.
    pub timestamp_window_s: u64,
    /// Largest accepted total size of the request headers, in bytes.
    pub max_header_bytes: usize,
    /// After SIGTERM/SIGINT, how long requests in flight may take to
    /// finish. Those still running then are cut off and their key pairs
    /// removed.
    pub shutdown_timeout_ms: u64,
    /// PEM certificate chain for HTTPS; with `tls_key`. Default: plain HTTP.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for HTTPS (a software key: the TLS key is not the
    /// token's business).
    pub tls_key: Option<PathBuf>,
    /// Key pairs made in parallel: one logged-in session each, on its own
    /// blocking thread. 0 (the default) means one per CPU core, capped by
    /// the token's ulMaxRwSessionCount.
    pub workers: usize,
    /// How long a client may take to send a request's headers, in
    /// milliseconds, counted from when the connection is accepted (TLS
    /// handshake included) or, on a kept-alive connection, from the
    /// request's first byte. Slower connections are closed.
    pub header_timeout_ms: u64,
    /// How long a client may take to send a request's body once its headers
    /// are in, in milliseconds; a body shorter than its Content-Length is
    /// refused (408 `RequestTimeout`) when this runs out.
    pub body_timeout_ms: u64,
    /// How long a kept-alive connection may sit idle between requests, in
    /// milliseconds, before it is closed; also how long a response may wait
    /// for a client that reads none of it.
    pub idle_timeout_ms: u64,
    /// Most connections held open at once. At the limit a new client takes
    /// the place of the connection that has waited longest for a request;
    /// while every one is busy with a request, new clients wait in the
    /// listen backlog. Capped below the process's file-descriptor limit.
    pub max_connections: usize,
    /// Whether success responses carry `KeyUri` (the token's label and
    /// serial and the key's CKA_ID). Off: the cloud's response has four fields.
    pub key_uri: bool,
    /// Whether `GET /explorer` serves the API explorer: a page that signs
    /// calls in the browser (the secret never leaves it) and shows the SDK
    /// code for each. Off (the default): `/explorer` answers 404.
    pub explorer: bool,
    /// Redis (`redis://host:port/db` or `rediss://…`) holding what
    /// replicas share: rate-limit windows, nonces, key-pool claims. None
    /// (the default): each process keeps them in memory. The URL carries
    /// no password; see `redis_password_env` and `redis_password_file`.
    pub redis_url: Option<String>,
    /// Environment variable holding the Redis password (AUTH).
    pub redis_password_env: Option<String>,
    /// File holding the Redis password (one line).
    pub redis_password_file: Option<PathBuf>,
    /// Prefix of every Redis key the service writes, so that several
    /// deployments can share one Redis. Default `hsm-csr`.
    pub redis_key_prefix: String,
    /// Most certificates one key keeps (SetCdnDomainCSRCertificate); a
    /// newer one displaces the oldest. 1 to 64, default 4.
    pub max_certificates_per_key: usize,
    /// Who may call.
    pub access_keys: Vec<AccessKeyConfig>,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            listen: "127.0.0.1:8080".into(),
            admin_listen: None,
            host_id: "hsm-csr".into(),
            rate_limit: 100,
            max_body_bytes: 64 * 1024,
            request_timeout_ms: 120_000,
            timestamp_window_s: 900,
            max_header_bytes: 16 * 1024,
            shutdown_timeout_ms: 30_000,
            tls_cert: None,
            tls_key: None,
            workers: 0,
            header_timeout_ms: 10_000,
            body_timeout_ms: 10_000,
            idle_timeout_ms: 30_000,
            max_connections: 256,
            key_uri: false,
            explorer: false,
            redis_url: None,
            redis_password_env: None,
            redis_password_file: None,
            redis_key_prefix: "hsm-csr".into(),
            max_certificates_per_key: 4,
            access_keys: Vec::new(),
        }
    }
}

/// `[[service.access_keys]]`: one caller. The secret is never in the file.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccessKeyConfig {
    /// The AccessKeyId callers sign with.
    pub id: String,
    /// Environment variable holding the AccessKeySecret.
    pub secret_env: Option<String>,
    /// File holding the AccessKeySecret (one line).
    pub secret_file: Option<PathBuf>,
    /// RAM-style actions it may call: `cdn:CreateCdnCertificateSigningRequest`,
    /// `dcdn:CreateDcdnCertificateSigningRequest`, `cdn:SetCdnDomainCSRCertificate`,
    /// `dcdn:SetDcdnDomainCSRCertificate`, or `*`; and `hsm-csr:AllKeys`,
    /// which lets its companion calls attach to every owner's keys (`*`
    /// does not include it).
    pub actions: Vec<String>,
    /// Most key pairs it may own on the token(s); none: no limit.
    pub max_keys: Option<usize>,
    /// Its share of the worker sessions when several access keys wait
    /// (1 to 100, default 1): served in turn, `weight` calls per turn.
    pub weight: Option<u32>,
}
