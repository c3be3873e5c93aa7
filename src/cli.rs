//! The `hsm-csr` command line: [`main`] is the binary's whole run. clap
//! types live here (and `call`'s beside its code, in `cli/call.rs`); each
//! subcommand's module turns them, with the config file, into library
//! calls.

#[cfg(feature = "acme")]
pub(crate) mod acme;
pub(crate) mod attach;
pub(crate) mod batch;
#[cfg(feature = "service")]
pub(crate) mod call;
pub(crate) mod create;
mod dispatch;
pub(crate) mod generate;
pub(crate) mod in_flight;
pub(crate) mod keys;
mod logger;
pub(crate) mod output;
pub(crate) mod prune;
#[cfg(feature = "service")]
pub(crate) mod serve;
pub(crate) mod token;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

#[cfg(feature = "acme")]
pub(crate) use acme::args::{AcmeArgs, AcmeCommand, AcmeIssueArgs};
pub use dispatch::main;

/// Make certificate signing requests whose RSA, EC or Ed25519 key is
/// generated inside a PKCS#11 token (HSM) and never leaves it.
#[derive(Debug, Parser)]
#[command(name = "hsm-csr", version, about, long_about = None)]
pub(crate) struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Generate a key pair on the token and print a CSR signed by it
    /// (CreateCdnCertificateSigningRequest on your own HSM).
    Create(Box<CreateArgs>),
    /// List, show or delete the key pairs on the token.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Store a CA-issued certificate on the token next to its key, found by
    /// public key (the on-token SetCdnDomainCSRCertificate).
    AttachCert(AttachCertArgs),
    /// Answer CreateCdnCertificateSigningRequest / CreateDcdnCertificateSigningRequest
    /// and SetCdnDomainCSRCertificate / SetDcdnDomainCSRCertificate over the
    /// cloud's RPC protocol, for the official SDKs ([service] in the config).
    #[cfg(feature = "service")]
    Serve(ServeArgs),
    /// Call a service (`hsm-csr serve`, or the cloud's endpoint) with a
    /// signed request, as the SDKs sign it: ACTION Name=Value ...; the
    /// secret comes from --secret-file or ALIBABA_CLOUD_ACCESS_KEY_SECRET.
    #[cfg(feature = "service")]
    Call(Box<call::CallArgs>),
    /// Make one CSR per line of a JSON-lines file ({"CommonName": ..., ...}),
    /// several at a time; one JSON answer per line, in order.
    Batch(BatchArgs),
    /// Certificates from an ACME CA (RFC 8555) for keys made on the token:
    /// issue one, or renew those about to expire.
    #[cfg(feature = "acme")]
    #[command(subcommand)]
    Acme(AcmeCommand),
}

// `hsm-csr generate`, for packagers (scripts/package.sh), is parsed apart
// from `Cli`, so that `--help`, the man pages and the completions never
// offer it.
/// Write hsm-csr's man pages or a shell completion script.
#[derive(Debug, Parser)]
#[command(name = "hsm-csr generate")]
pub(crate) struct GenerateCli {
    /// What to write.
    #[command(subcommand)]
    pub command: GenerateCommand,
}

/// `generate man|completions`.
#[derive(Debug, Subcommand)]
pub(crate) enum GenerateCommand {
    /// Man pages, hsm-csr.1 and one per subcommand, into DIR.
    Man {
        /// Directory to write them to (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
    /// The completion script for SHELL, into DIR.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
        /// Directory to write it to (created if missing).
        #[arg(long, value_name = "DIR")]
        dir: PathBuf,
    },
}

/// `batch`.
#[derive(Debug, clap::Args)]
pub(crate) struct BatchArgs {
    /// JSON lines, one request each, with the API's parameter names.
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// Where the answers go [default: stdout].
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Sessions making keys in parallel [default: one per CPU core].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// Prefix of the new keys' CKA_LABEL [default: hsm-csr:, or the config's].
    #[arg(long, value_name = "PREFIX")]
    pub label_prefix: Option<String>,
    /// Owner of the new key pairs, recorded on the token: an access key id
    /// makes it that tenant's in `serve` [default: local].
    #[arg(long, value_name = "NAME")]
    pub owner: Option<String>,
    /// Which token, and how to log in.
    #[command(flatten)]
    pub token: TokenArgs,
}

/// `serve`.
#[cfg(feature = "service")]
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on (overrides [service] listen; default 127.0.0.1:8080).
    #[arg(long, value_name = "ADDR")]
    pub listen: Option<String>,
    /// Which token, and how to log in.
    #[command(flatten)]
    pub token: TokenArgs,
}

/// `hsm-csr keys ...`.
#[derive(Debug, Subcommand)]
pub(crate) enum KeysCommand {
    /// Every key pair: label, id, type, PubMd5, URI, certificate attached.
    List(KeysListArgs),
    /// One key pair.
    Show(KeyArgs),
    /// Destroy a key pair (private key, public key and attached certificates).
    Delete(KeysDeleteArgs),
    /// Retire key pairs by policy: a dry run that lists what would go and
    /// why, unless --yes.
    Prune(KeysPruneArgs),
}

/// `keys prune`.
#[derive(Debug, clap::Args)]
pub(crate) struct KeysPruneArgs {
    /// Keys that never got a certificate, this many days after delivery.
    #[arg(long, value_name = "DAYS")]
    pub never_certified_after: Option<u32>,
    /// Keys a renewal replaced, this many days after (0: at once).
    #[arg(long, value_name = "DAYS")]
    pub replaced_after: Option<u32>,
    /// Lone and torn objects hsm-csr left, and keys left undelivered by
    /// processes that stopped.
    #[arg(long)]
    pub orphans: bool,
    /// Only this owner's keys (an access key id, or local).
    #[arg(long, value_name = "ID")]
    pub owner: Option<String>,
    /// Remove them (without it, nothing is removed).
    #[arg(long)]
    pub yes: bool,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: ListFormat,
    /// Which token, and how to log in.
    #[command(flatten)]
    pub token: TokenArgs,
}

/// Formats for listings.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum ListFormat {
    /// Aligned columns for people.
    #[default]
    Table,
    /// JSON for scripts.
    Json,
}

/// `keys list`.
#[derive(Debug, clap::Args)]
pub(crate) struct KeysListArgs {
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: ListFormat,
    /// Only the keys this owner has (an access key id, or local).
    #[arg(long, value_name = "ID")]
    pub owner: Option<String>,
    /// Which token, and how to log in.
    #[command(flatten)]
    pub token: TokenArgs,
}

/// `keys show KEY`.
#[derive(Debug, clap::Args)]
pub(crate) struct KeyArgs {
    /// A pkcs11: URI, a CKA_ID in hex, a label, a common name (the label
    /// less [key] label_prefix), or a PubMd5.
    pub key: String,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: ListFormat,
    /// Which token, and how to log in.
    #[command(flatten)]
    pub token: TokenArgs,
}

/// `keys delete KEY --yes`.
#[derive(Debug, clap::Args)]
pub(crate) struct KeysDeleteArgs {
    /// The key, as for `keys show`.
    #[command(flatten)]
    pub key: KeyArgs,
    /// Really delete: there is no undo on an HSM (required).
    #[arg(long, required = true)]
    pub yes: bool,
}

/// `attach-cert`.
#[derive(Debug, clap::Args)]
pub(crate) struct AttachCertArgs {
    /// The certificate: PEM (of a chain, the first is stored), base64 or DER.
    #[arg(long, value_name = "FILE")]
    pub cert: PathBuf,
    /// Fail with Certificate.MissMatch unless the certificate covers this domain.
    #[arg(long, value_name = "DOMAIN")]
    pub domain: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    pub format: ListFormat,
    /// Which token, and how to log in.
    #[command(flatten)]
    pub token: TokenArgs,
}

/// The flags every token command shares.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TokenArgs {
    /// TOML configuration file.
    #[arg(long, value_name = "FILE", env = "HSM_CSR_CONFIG")]
    pub config: Option<PathBuf>,
    /// PKCS#11 module (overrides the URI's module-path and [token] module).
    #[arg(long, value_name = "PATH")]
    pub module: Option<PathBuf>,
    /// Token label, or an RFC 7512 URI such as
    /// `pkcs11:token=prod;serial=1234?module-path=/usr/lib/x.so&pin-source=file:/etc/pin`
    /// (overrides [token] label, serial and slot_id).
    #[arg(long, value_name = "LABEL|URI")]
    pub token: Option<String>,
    /// File holding the user PIN (before the URI's pin-source, HSM_CSR_PIN
    /// and [token] pin_file).
    #[arg(long, value_name = "PATH")]
    pub pin_file: Option<PathBuf>,
}

/// Output formats.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// The API's JSON response: RequestId, PubMd5, Csr, CommonName, KeyUri.
    #[default]
    Json,
    /// The CSR alone, as PEM.
    Pem,
}

/// `--key-type`, as `[key] type` spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum KeyTypeArg {
    /// RSA, of `--key-size` bits.
    Rsa,
    /// ECDSA on P-256.
    EcP256,
    /// ECDSA on P-384.
    EcP384,
    /// Ed25519.
    Ed25519,
}

impl From<KeyTypeArg> for crate::config::KeyTypeName {
    fn from(arg: KeyTypeArg) -> Self {
        match arg {
            KeyTypeArg::Rsa => Self::Rsa,
            KeyTypeArg::EcP256 => Self::EcP256,
            KeyTypeArg::EcP384 => Self::EcP384,
            KeyTypeArg::Ed25519 => Self::Ed25519,
        }
    }
}

/// `--hash`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub(crate) enum HashArg {
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl From<HashArg> for crate::Hash {
    fn from(arg: HashArg) -> Self {
        match arg {
            HashArg::Sha256 => Self::Sha256,
            HashArg::Sha384 => Self::Sha384,
            HashArg::Sha512 => Self::Sha512,
        }
    }
}

/// `hsm-csr create`.
#[derive(Debug, clap::Args)]
pub(crate) struct CreateArgs {
    /// Common name of the certificate (the API's CommonName; required).
    #[arg(long, value_name = "CN", required = true)]
    pub common_name: Option<String>,
    /// Subject alternative names, comma-separated: DNS names, IP addresses,
    /// email addresses. A common name that is a DNS name or an IP address is
    /// always among them (added first if left out; see docs/csr-rules.md).
    #[arg(long, value_name = "LIST")]
    pub sans: Option<String>,
    /// organizationName [default: Alibaba Inc, or the config's].
    #[arg(long, value_name = "O")]
    pub organization: Option<String>,
    /// organizationalUnitName [default: Aliyun CDN, or the config's].
    #[arg(long, value_name = "OU")]
    pub organization_unit: Option<String>,
    /// countryName, two letters [default: CN, or the config's].
    #[arg(long, value_name = "C")]
    pub country: Option<String>,
    /// stateOrProvinceName [default: Zhejiang, or the config's].
    #[arg(long, value_name = "ST")]
    pub state: Option<String>,
    /// localityName [default: Hangzhou, or the config's].
    #[arg(long, value_name = "L")]
    pub city: Option<String>,
    /// emailAddress in the subject (optional).
    #[arg(long, value_name = "E")]
    pub email: Option<String>,
    /// Key type [default: rsa, or the config's].
    #[arg(long, value_name = "TYPE", value_enum)]
    pub key_type: Option<KeyTypeArg>,
    /// RSA key size [default: 2048, or the config's].
    #[arg(long, value_name = "BITS", value_parser = ["2048", "3072", "4096"])]
    pub key_size: Option<String>,
    /// Signature hash [default: sha256; sha384 for ec-p384].
    #[arg(long, value_name = "HASH", value_enum)]
    pub hash: Option<HashArg>,
    /// Sign with RSASSA-PSS (RSA keys; the token must offer PSS).
    #[arg(long)]
    pub pss: bool,
    /// Prefix of the new key's CKA_LABEL [default: hsm-csr:, or the config's].
    #[arg(long, value_name = "PREFIX")]
    pub label_prefix: Option<String>,
    /// Owner of the new key pair, recorded on the token: an access key id
    /// makes it that tenant's in `serve` [default: local].
    #[arg(long, value_name = "NAME")]
    pub owner: Option<String>,
    /// Output on stdout.
    #[arg(long, value_enum, default_value_t)]
    pub format: Format,
    /// Also write the CSR (PEM) to this file.
    #[arg(long, value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// Which token, and how to log in.
    #[command(flatten)]
    pub token: TokenArgs,
    /// Print how long each phase took, on stderr.
    #[arg(long)]
    pub timings: bool,
}
