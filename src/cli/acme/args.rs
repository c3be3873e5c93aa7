//! The clap types of `acme issue|renew`.

use std::path::PathBuf;

use clap::Subcommand;

use crate::cli::{HashArg, KeyTypeArg, ListFormat, TokenArgs};

/// `acme issue|renew`.
#[derive(Debug, Subcommand)]
pub(crate) enum AcmeCommand {
    /// Make a key pair on the token, order a certificate for it, store the
    /// certificate beside the key and write the chain.
    Issue(Box<AcmeIssueArgs>),
    /// Renew, each with a new key pair, the certificates on the token that
    /// are due (a third of their lifetime left, or --days). Exit 0: renewed;
    /// 10: nothing to do; else failed.
    Renew(Box<AcmeRenewArgs>),
    /// Show each certificate on the token: its expiry, the CA's renewal
    /// window as last asked, when it is renewed next, its profile and the
    /// last renewal's error. Asks the CA nothing.
    Status(Box<AcmeStatusArgs>),
}

/// `acme issue`.
#[derive(Debug, clap::Args)]
pub(crate) struct AcmeIssueArgs {
    /// Common name (required); a DNS name or IP address the CA validates.
    #[arg(long, value_name = "CN")]
    pub common_name: Option<String>,
    /// Subject alternative names, comma-separated: DNS names (`*.` for a
    /// wildcard, dns-01 only) and IP addresses. Default: the common name.
    #[arg(long, value_name = "LIST")]
    pub sans: Option<String>,
    /// Key type [default: rsa, or the config's].
    #[arg(long, value_name = "TYPE", value_enum)]
    pub key_type: Option<KeyTypeArg>,
    /// RSA key size [default: 2048, or the config's].
    #[arg(long, value_name = "BITS", value_parser = ["2048", "3072", "4096"])]
    pub key_size: Option<String>,
    /// Signature hash of the CSR [default: sha256; sha384 for ec-p384].
    #[arg(long, value_name = "HASH", value_enum)]
    pub hash: Option<HashArg>,
    /// Prefix of the new key's CKA_LABEL [default: hsm-csr:, or the config's].
    #[arg(long, value_name = "PREFIX")]
    pub label_prefix: Option<String>,
    /// Also write the chain (PEM, leaf first) to this file.
    #[arg(long, value_name = "FILE")]
    pub chain_out: Option<PathBuf>,
    /// Order with this certificate profile (the CA's directory lists them
    /// in meta.profiles; Let's Encrypt: classic, tlsserver, shortlived);
    /// renew asks for it again. Refused before any key is made unless the
    /// CA offers it.
    #[arg(long, value_name = "NAME", value_parser = crate::acme::profile::valid_name)]
    pub profile: Option<String>,
    /// The CA, the account and the challenges.
    #[command(flatten)]
    pub acme: AcmeArgs,
    /// Which token, and how to log in.
    #[command(flatten)]
    pub token: TokenArgs,
}

/// `acme renew`.
#[derive(Debug, clap::Args)]
pub(crate) struct AcmeRenewArgs {
    /// Renew certificates that expire within this many days [default: in
    /// the CA's renewal window (RFC 9773), else once at most a third of a
    /// certificate's lifetime is left, each moved earlier by its own share
    /// of a further sixth].
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(0..=3650))]
    pub days: Option<u32>,
    /// Decide what is due, and whether the CA's renewal windows are asked
    /// for again, as if it were this time (seconds since the Unix epoch):
    /// for tests of a schedule.
    #[arg(long, value_name = "UNIX", hide = true)]
    pub now: Option<u64>,
    /// Renew keys whose CKA_LABEL starts with this [default: hsm-csr:, or the config's].
    #[arg(long, value_name = "PREFIX")]
    pub label_prefix: Option<String>,
    /// Write each new chain to DIR/<common name>.pem (`*` as `_wildcard`).
    #[arg(long, value_name = "DIR")]
    pub chain_dir: Option<PathBuf>,
    /// Order the renewals with this profile, and keep it for the next
    /// [default: the profile each certificate was issued with].
    #[arg(long, value_name = "NAME", value_parser = crate::acme::profile::valid_name)]
    pub profile: Option<String>,
    /// Renewals at once on each token, each on a session of its own (the
    /// http-01 address is shared); 1: one at a time. openCryptoki's soft
    /// token is not safe with more than 1 (docs/tokens.md).
    #[arg(long, value_name = "N", default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=16))]
    pub jobs: u16,
    /// Seconds this run may wait in all for the CA's rate limits (a 429's
    /// Retry-After, else 60 s each) before leaving the certificates not yet
    /// renewed to the next run.
    #[arg(long, value_name = "SECONDS", default_value_t = 300,
          value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub rate_limit_wait: u64,
    /// Make the new key pairs of this type, to move a fleet (e.g. from
    /// rsa to ec-p256) [default: the type of the key each replaces].
    #[arg(long, value_name = "TYPE", value_enum)]
    pub key_type: Option<KeyTypeArg>,
    /// The CA, the account and the challenges.
    #[command(flatten)]
    pub acme: AcmeArgs,
    /// Which token, and how to log in.
    #[command(flatten)]
    pub token: TokenArgs,
}

/// `acme status`.
#[derive(Debug, clap::Args)]
pub(crate) struct AcmeStatusArgs {
    /// The account whose renewal windows and names' states are shown.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/var/lib/hsm-csr/acme/account.json"
    )]
    pub account: PathBuf,
    /// Show keys whose CKA_LABEL starts with this [default: hsm-csr:, or the config's].
    #[arg(long, value_name = "PREFIX")]
    pub label_prefix: Option<String>,
    /// Plan renewals as `renew --days N` would.
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(0..=3650))]
    pub days: Option<u32>,
    /// Plan as if it were this time (seconds since the Unix epoch).
    #[arg(long, value_name = "UNIX", hide = true)]
    pub now: Option<u64>,
    /// Output format.
    #[arg(long, value_enum, default_value_t = ListFormat::Table)]
    pub format: ListFormat,
    /// Which token, and how to log in.
    #[command(flatten)]
    pub token: TokenArgs,
}

/// The flags `acme issue` and `acme renew` share.
#[derive(Debug, clap::Args)]
pub(crate) struct AcmeArgs {
    /// The CA's ACME directory URL (https://...).
    #[arg(long, value_name = "URL")]
    pub directory: String,
    /// The ACME account credentials, mode 0600 (created with --agree-tos
    /// when absent); the run lock is FILE.lock.
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/var/lib/hsm-csr/acme/account.json"
    )]
    pub account: PathBuf,
    /// Trust this PEM root for the CA's HTTPS endpoint (test CAs) instead of
    /// the system's roots.
    #[arg(long, value_name = "PEM")]
    pub ca_root: Option<PathBuf>,
    /// Agree to the CA's terms of service (needed to create the account).
    #[arg(long)]
    pub agree_tos: bool,
    /// Contact e-mail for a new account (repeatable).
    #[arg(long, value_name = "EMAIL")]
    pub contact: Vec<String>,
    /// Answer http-01 challenges by serving them on this address (port 80
    /// as the CA sees it).
    #[arg(
        long = "http-01",
        value_name = "ADDR",
        conflicts_with = "dns_01_hook",
        required_unless_present = "dns_01_hook"
    )]
    pub http_01: Option<std::net::SocketAddr>,
    /// Answer dns-01 challenges with this command (`sh -c`), which must
    /// publish TXT _acme-challenge.$HSM_CSR_ACME_DOMAIN = $HSM_CSR_ACME_VALIDATION.
    #[arg(long = "dns-01-hook", value_name = "CMD")]
    pub dns_01_hook: Option<String>,
    /// Run this command (`sh -c`, same variables) to remove each record.
    #[arg(long = "dns-01-cleanup", value_name = "CMD", requires = "dns_01_hook")]
    pub dns_01_cleanup: Option<String>,
    /// After each certificate is stored, run this command (`sh -c`) with
    /// HSM_CSR_NAMES, HSM_CSR_KEY_URI, HSM_CSR_PUB_MD5, HSM_CSR_CHAIN_PATH,
    /// HSM_CSR_NOT_AFTER and HSM_CSR_REPLACED_KEY_URI in its environment,
    /// e.g. to reload a server; its failure is reported (exit 3,
    /// Acme.DeployHookFailed) and the certificate kept.
    #[arg(long, value_name = "CMD")]
    pub deploy_hook: Option<String>,
    /// Seconds the deploy hook may run before it, and all it started, is
    /// killed.
    #[arg(long, value_name = "SECONDS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub deploy_hook_timeout: u64,
    /// Seconds each request to the CA, and each hook run, may take.
    #[arg(long, value_name = "SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u64).range(1..=600))]
    pub timeout: u64,
    /// Seconds to wait for validation, and again for issuance.
    #[arg(long, value_name = "SECONDS", default_value_t = 120,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub validation_timeout: u64,
}
