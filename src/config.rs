//! The TOML configuration file (`--config FILE` or `HSM_CSR_CONFIG`).
//!
//! Every table and key is optional; unknown keys are errors, so a typo is
//! reported instead of silently ignored. Command-line flags override the
//! file. See `config/hsm-csr.example.toml` for every key with its default.
//! The PIN itself is never in this file, only the path of a file holding it.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::error::{Error, Result};
use crate::issue::KeyOptions;
use crate::request::SubjectDefaults;

/// The whole file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// `[token]`: which module and token.
    pub token: TokenConfig,
    /// `[key]`: how keys are made.
    pub key: KeyConfig,
    /// `[subject]`: subject defaults.
    pub subject: SubjectConfig,
}

/// `[token]`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokenConfig {
    /// Path of the PKCS#11 module (`.so`).
    pub module: Option<PathBuf>,
    /// Label of the token to use.
    pub label: Option<String>,
    /// File holding the user PIN; relative paths are relative to the
    /// configuration file.
    pub pin_file: Option<PathBuf>,
}

/// `[key]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyConfig {
    /// RSA modulus size: 2048, 3072 or 4096.
    pub bits: u32,
    /// Prefix of each key's CKA_LABEL; the common name follows it.
    pub label_prefix: String,
}

impl Default for KeyConfig {
    fn default() -> Self {
        let d = KeyOptions::default();
        KeyConfig {
            bits: d.bits,
            label_prefix: d.label_prefix,
        }
    }
}

impl KeyConfig {
    /// As [`KeyOptions`].
    pub fn options(&self) -> KeyOptions {
        KeyOptions {
            bits: self.bits,
            label_prefix: self.label_prefix.clone(),
        }
    }
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
        let text = std::fs::read_to_string(path).map_err(|e| {
            Error::Config(format!("cannot read config file {}: {e}", path.display()))
        })?;
        let mut config = Config::parse(&text)
            .map_err(|e| Error::Config(format!("config file {}: {e}", path.display())))?;
        if let Some(pin_file) = &config.token.pin_file {
            if pin_file.is_relative() {
                let dir = path.parent().unwrap_or(Path::new("."));
                config.token.pin_file = Some(dir.join(pin_file));
            }
        }
        Ok(config)
    }

    /// Parses TOML text and checks values.
    ///
    /// # Errors
    /// A message naming what is wrong.
    pub fn parse(text: &str) -> std::result::Result<Config, String> {
        // toml's own Display quotes the offending line, which could be a
        // misplaced PIN: report the line number and the message only.
        let config: Config = toml::from_str(text).map_err(|e| {
            let message = e.message().trim_end_matches('\n').replace('\n', " ");
            match e.span() {
                Some(span) => {
                    let before = text.get(..span.start).unwrap_or(text);
                    let line = before.matches('\n').count() + 1;
                    format!("line {line}: {message}")
                }
                None => message,
            }
        })?;
        config
            .key
            .options()
            .validate()
            .map_err(|e| format!("[key] bits: {e}"))?;
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
    fn partial_subject_defaults_keep_the_rest() {
        let c = Config::parse("[subject.defaults]\norganization = \"Example Ltd\"\n").unwrap();
        assert_eq!(c.subject.defaults.organization, "Example Ltd");
        assert_eq!(c.subject.defaults.city, "Hangzhou");
    }
}
