//! The TOML configuration file (`--config FILE` or `HSM_CSR_CONFIG`).
//!
//! Every table and key is optional; unknown keys are errors, so a typo is
//! reported instead of silently ignored. Command-line flags override the
//! file. See `config/hsm-csr.example.toml` for every key with its default.
//! The PIN itself is never in this file, only the path of a file holding it.

mod check;
mod service;
mod tokens;

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::algorithm::{Hash, KeyType};
use crate::error::{Error, Result};
use crate::issue::KeyOptions;
use crate::request::SubjectDefaults;
pub use service::{AccessKeyConfig, ServiceConfig};

/// The whole file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[token]`: which module and token.
    pub token: TokenConfig,
    /// `[[tokens]]`: several tokens for `serve`, instead of `[token]`
    /// (see `tokens`).
    pub tokens: Vec<TokenConfig>,
    /// `[key]`: how keys are made.
    pub key: KeyConfig,
    /// `[subject]`: subject defaults.
    pub subject: SubjectConfig,
    /// `[service]`: `hsm-csr serve`.
    pub service: ServiceConfig,
    /// `[pool]`: pre-generated keys for `serve`.
    pub pool: PoolConfig,
    /// `[audit]`: the audit trail ([`crate::audit`]).
    pub audit: AuditConfig,
    /// `[retention]`: key pairs `serve` retires by itself ([`crate::retention`]).
    pub retention: crate::retention::RetentionConfig,
}

/// `[audit]`: where `create`, `batch`, `keys delete`, `attach-cert` and
/// `serve` record what they do to keys (off when `path` is unset).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuditConfig {
    /// The JSON-lines file events are appended to; relative paths are
    /// relative to the configuration file.
    pub path: Option<PathBuf>,
}

impl AuditConfig {
    /// The audit log, checked and created if need be; None when unset.
    ///
    /// # Errors
    /// `Internal.Error` ([`Error::Audit`]) when it cannot be appended to.
    pub fn open(&self) -> Result<Option<crate::audit::AuditLog>> {
        self.path
            .as_deref()
            .map(crate::audit::AuditLog::open)
            .transpose()
    }
}

/// `[pool]`: keep key pairs ready on the token (opt-in).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolConfig {
    /// How many unassigned key pairs to keep ready; 0 (default) turns the pool off.
    pub size: usize,
    /// Their key type; must be `[key] type` (the default), or they would never be used.
    pub key_type: Option<KeyTypeName>,
}

/// `[token]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    /// Path of the PKCS#11 module (`.so`).
    pub module: Option<PathBuf>,
    /// Label of the token to use.
    pub label: Option<String>,
    /// Serial number of the token (with or instead of the label).
    pub serial: Option<String>,
    /// Slot id, only together with a label or serial.
    pub slot_id: Option<u64>,
    /// File holding the user PIN; relative paths are relative to the
    /// configuration file.
    pub pin_file: Option<PathBuf>,
    /// The token's name in `/healthz` and `/metrics` (1 to 32 characters
    /// from A-Z a-z 0-9 . _ -): set it to keep the token's label out of
    /// them. Default: the label (or `serial:` and the serial).
    pub name: Option<String>,
    /// How many objects the token can hold, as its operator knows (a
    /// YubiHSM 2: 256; an HSM partition: its object quota). Past it,
    /// nothing more is made: calls get 503 and the key pool stops
    /// refilling first, keeping a reserve for on-demand calls. None: no limit.
    pub max_objects: Option<usize>,
}

/// `[key]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyConfig {
    /// `rsa`, `ec-p256`, `ec-p384` or `ed25519`.
    #[serde(rename = "type")]
    pub key_type: KeyTypeName,
    /// RSA modulus size: 2048, 3072 or 4096.
    pub bits: u32,
    /// `sha256`, `sha384` or `sha512`; default by key type.
    #[serde(deserialize_with = "hash_name")]
    pub hash: Option<Hash>,
    /// RSASSA-PSS instead of PKCS#1 v1.5 (RSA only).
    pub pss: bool,
    /// Prefix of each key's CKA_LABEL; the common name follows it.
    pub label_prefix: String,
}

impl Default for KeyConfig {
    fn default() -> Self {
        KeyConfig {
            key_type: KeyTypeName::Rsa,
            bits: 2048,
            hash: None,
            pss: false,
            label_prefix: KeyOptions::default().label_prefix,
        }
    }
}

impl KeyConfig {
    /// As [`KeyOptions`], to be checked with [`KeyOptions::validate`].
    pub fn options(&self) -> KeyOptions {
        KeyOptions {
            key_type: self.key_type.with_bits(self.bits),
            hash: self.hash,
            pss: self.pss,
            label_prefix: self.label_prefix.clone(),
        }
    }
}

/// A key type as the file names it: `rsa`, `ec-p256`, `ec-p384` or `ed25519`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KeyTypeName {
    /// RSA, of `[key] bits`.
    Rsa,
    /// ECDSA on P-256.
    EcP256,
    /// ECDSA on P-384.
    EcP384,
    /// Ed25519.
    Ed25519,
}

impl KeyTypeName {
    /// The key type; `bits` is the RSA size (checked by [`KeyOptions::validate`]).
    pub fn with_bits(self, bits: u32) -> KeyType {
        match self {
            KeyTypeName::Rsa => KeyType::Rsa { bits },
            KeyTypeName::EcP256 => KeyType::EcP256,
            KeyTypeName::EcP384 => KeyType::EcP384,
            KeyTypeName::Ed25519 => KeyType::Ed25519,
        }
    }
}

/// `[key] hash`, spelled as [`Hash`]'s `FromStr` takes it.
fn hash_name<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> std::result::Result<Option<Hash>, D::Error> {
    // The value is not echoed: it could be a misplaced secret.
    let name = String::deserialize(d)?;
    name.parse().map(Some).map_err(|_| {
        serde::de::Error::custom("invalid type or value, expected sha256, sha384 or sha512")
    })
}

/// `[subject]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SubjectConfig {
    /// `[subject.defaults]`: values for fields a request leaves out.
    pub defaults: SubjectDefaults,
}

impl Config {
    /// Reads and checks `path`.
    ///
    /// # Errors
    /// `Config.Invalid` naming the file and, for TOML errors, the line.
    pub fn load(path: &Path) -> Result<Config> {
        let bytes =
            crate::files::read_regular(path, crate::files::MAX_CONFIG_BYTES, "config file")?;
        let text = String::from_utf8(bytes).map_err(|_| {
            Error::Config(format!(
                "config file {} is not valid UTF-8.",
                path.display()
            ))
        })?;
        let mut config = Config::parse(&text)
            .map_err(|e| Error::Config(format!("config file {}: {e}", path.display())))?;
        let dir = path.parent().unwrap_or(Path::new("."));
        for token in std::iter::once(&mut config.token).chain(&mut config.tokens) {
            if let Some(pin_file) = &token.pin_file {
                if pin_file.is_relative() {
                    token.pin_file = Some(dir.join(pin_file));
                }
            }
        }
        if let Some(f) = config.audit.path.as_mut().filter(|f| f.is_relative()) {
            *f = dir.join(&*f);
        }
        Ok(config)
    }

    /// Parses TOML text and checks every value (see `check`): ranges,
    /// names, grants and subject defaults.
    ///
    /// # Errors
    /// A message naming what is wrong.
    pub fn parse(text: &str) -> std::result::Result<Config, String> {
        // toml's own Display quotes the offending line, which could be a
        // misplaced PIN: report the line number and the message only.
        let config: Config = toml::from_str(text).map_err(|e| {
            let mut message = e.message().trim_end_matches('\n').replace('\n', " ");
            // "invalid type: integer `123456`, expected ..." would echo a
            // value put in the wrong place, possibly a PIN: drop the value.
            if message.starts_with("invalid type")
                || message.starts_with("invalid value")
                || message.starts_with("unknown variant")
            {
                message = message
                    .split_once(", expected")
                    .map(|(_, rest)| format!("invalid type or value, expected{rest}"))
                    .unwrap_or_else(|| "invalid type or value".into());
            }
            match e.span() {
                Some(span) => {
                    let before = text.get(..span.start).unwrap_or(text);
                    let line = before.matches('\n').count() + 1;
                    // The key the value belongs to, when the line is a
                    // plain `key = value`: named, the value never echoed.
                    let key = before
                        .rsplit('\n')
                        .next()
                        .and_then(|l| l.split_once('='))
                        .map(|(k, _)| k.trim())
                        .filter(|k| {
                            !k.is_empty()
                                && k.bytes()
                                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
                        });
                    match key {
                        Some(key) => format!("line {line}: {message} (at `{key}`)"),
                        None => format!("line {line}: {message}"),
                    }
                }
                None => message,
            }
        })?;
        check::check(&config)?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_files_parse() {
        for text in [
            include_str!("../config/hsm-csr.example.toml"),
            include_str!("../config/softhsm-demo.toml"),
        ] {
            Config::parse(text).unwrap();
        }
    }

    #[test]
    fn empty_file_means_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c, Config::default());
        assert_eq!(c.key.bits, 2048);
        assert_eq!(c.subject.defaults.country, "CN");
    }

    #[test]
    fn unknown_keys_and_bad_sizes_are_errors() {
        let e = Config::parse("[token]\nlabl = \"x\"\n").unwrap_err();
        assert!(e.contains("labl"), "{e}");
        let e = Config::parse("[token]\npin = \"5678\"\n").unwrap_err();
        assert!(e.starts_with("line 2: unknown field `pin`"), "{e}");
        assert!(!e.contains("5678"), "the value must not be echoed: {e}");
        let e = Config::parse("[key]\nbits = 1024\n").unwrap_err();
        assert!(e.contains("1024"), "{e}");
        let e = Config::parse("[subject.defaults]\ncountri = \"US\"\n").unwrap_err();
        assert!(e.contains("countri"), "{e}");
    }

    #[test]
    fn key_type_and_hash_are_read_as_names() {
        let c = Config::parse("[key]\ntype = \"ec-p384\"\nhash = \"SHA-384\"\n").unwrap();
        let options = c.key.options().validate().unwrap();
        assert_eq!(options.key_type(), KeyType::EcP384);
        assert_eq!(
            options.signature(),
            crate::SignatureAlgorithm::Ecdsa(Hash::Sha384)
        );
        let e = Config::parse("[key]\ntype = \"dsa\"\n").unwrap_err();
        assert!(
            e.starts_with("line 2: invalid type or value, expected one of `rsa`"),
            "{e}"
        );
        let e = Config::parse("[key]\nhash = \"md5\"\n").unwrap_err();
        assert!(e.contains("expected sha256, sha384 or sha512"), "{e}");
        let e = Config::parse("[pool]\nsize = 1\nkey_type = \"ed448\"\n").unwrap_err();
        assert!(e.starts_with("line 3: invalid type or value"), "{e}");
    }

    #[test]
    fn type_errors_do_not_echo_values() {
        let e = Config::parse("[token]\npin_file = 987654\n").unwrap_err();
        assert!(!e.contains("987654"), "{e}");
        assert!(e.starts_with("line 2: invalid type or value"), "{e}");
        // A PIN pasted where a name goes.
        for text in [
            "[key]\ntype = \"987654\"\n",
            "[key]\nhash = \"987654\"\n",
            "[pool]\nkey_type = \"987654\"\n",
        ] {
            let e = Config::parse(text).unwrap_err();
            assert!(!e.contains("987654"), "{e}");
            assert!(e.starts_with("line 2: invalid type or value"), "{e}");
        }
    }

    #[test]
    fn audit_path_is_a_file_relative_to_the_config() {
        assert_eq!(Config::parse("").unwrap().audit.path, None);
        let e = Config::parse("[audit]\npath = \"\"\n").unwrap_err();
        assert!(e.contains("[audit] path"), "{e}");
        let e = Config::parse("[audit]\nfile = \"x\"\n").unwrap_err();
        assert!(e.contains("unknown field `file`"), "{e}");
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "[audit]\npath = \"logs/audit.jsonl\"\n").unwrap();
        let c = Config::load(&file).unwrap();
        assert_eq!(c.audit.path, Some(dir.path().join("logs/audit.jsonl")));
    }

    #[test]
    fn partial_subject_defaults_keep_the_rest() {
        let c = Config::parse("[subject.defaults]\norganization = \"Example Ltd\"\n").unwrap();
        assert_eq!(c.subject.defaults.organization, "Example Ltd");
        assert_eq!(c.subject.defaults.city, "Hangzhou");
    }
}
