//! The config file the tests run `hsm-csr serve` (and the other commands)
//! on: a valid base for a token, changed one thing at a time. A test about
//! a broken config builds the valid base and breaks the one thing it is
//! about, so that what it breaks is all that differs.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Token;

/// A config for `hsm-csr serve`; [`ServeConfig::write`] writes it.
#[derive(Clone, Debug)]
pub struct ServeConfig {
    /// The token's `[token]` table (module, label, `pin_file = "pin"`).
    token: String,
    /// The module in the `[token]` table.
    module: String,
    /// `[[tokens]]` tables in place of `[token]`.
    tokens: Vec<String>,
    /// `rsa-4096`, `ec-p256`, ...
    key_type: String,
    label_prefix: String,
    /// Lines of `[service]` after `listen = "127.0.0.1:0"`.
    service: String,
    /// `[[service.access_keys]]` tables.
    access_keys: String,
    /// Tables appended at the end.
    extra: String,
}

impl ServeConfig {
    /// `token` (its `[token]` table, PIN in the file `pin`), EC P-256 keys
    /// labelled with the token's prefix, `listen = "127.0.0.1:0"` (serve
    /// logs the port it got), and no access key.
    pub fn for_token(token: &Token) -> ServeConfig {
        ServeConfig {
            token: token.config_token_table("pin"),
            module: token.module.clone(),
            tokens: Vec::new(),
            key_type: "ec-p256".to_owned(),
            label_prefix: token.prefix.clone(),
            service: String::new(),
            access_keys: String::new(),
            extra: String::new(),
        }
    }

    /// Another module in place of the token's (e.g. pkcs11-spy, or one
    /// that does not exist).
    pub fn module(mut self, path: &str) -> ServeConfig {
        self.token = self.token.replacen(
            &format!("module = \"{}\"\n", self.module),
            &format!("module = \"{path}\"\n"),
            1,
        );
        self.module = path.to_owned();
        self
    }

    /// Lines added to the `[token]` table (e.g. `max_objects = 9`).
    pub fn token_lines(mut self, lines: &str) -> ServeConfig {
        push_lines(&mut self.token, lines);
        self
    }

    /// A `[[tokens]]` table: `module` and `label`, PIN in the file `pin`.
    /// Once there is one, the `[token]` table is left out.
    pub fn token(self, module: &str, label: &str) -> ServeConfig {
        self.token_table(&format!(
            "module = \"{module}\"\nlabel = \"{label}\"\npin_file = \"pin\"\n"
        ))
    }

    /// A `[[tokens]]` table with these lines.
    pub fn token_table(mut self, lines: &str) -> ServeConfig {
        self.tokens.push(lines.to_owned());
        self
    }

    /// `rsa-2048` (type rsa, bits 2048), `ec-p256`, `ed25519`, ...
    pub fn key_type(mut self, key_type: &str) -> ServeConfig {
        key_type.clone_into(&mut self.key_type);
        self
    }

    /// Lines added to `[service]` (e.g. `workers = 2`).
    pub fn service(mut self, lines: &str) -> ServeConfig {
        push_lines(&mut self.service, lines);
        self
    }

    /// `tls_cert` and `tls_key`.
    pub fn tls(self, cert: &Path, key: &Path) -> ServeConfig {
        self.service(&format!(
            "tls_cert = \"{}\"\ntls_key = \"{}\"",
            cert.display(),
            key.display()
        ))
    }

    /// Whether the service listens with TLS.
    pub fn has_tls(&self) -> bool {
        self.service.contains("tls_cert")
    }

    /// A key pool of `size` pairs (`[pool]`).
    pub fn pool(self, size: usize) -> ServeConfig {
        self.extra(&format!("[pool]\nsize = {size}\n"))
    }

    /// An access key whose secret is in the environment variable
    /// `secret_env`, allowed `actions` (a TOML array: `["*"]`).
    pub fn access_key(mut self, id: &str, secret_env: &str, actions: &str) -> ServeConfig {
        self.access_keys.push_str(&format!(
            "[[service.access_keys]]\nid = \"{id}\"\nsecret_env = \"{secret_env}\"\nactions = {actions}\n"
        ));
        self
    }

    /// The three access keys [`super::server::Server`] gives the secrets
    /// of: `MainKey` (CDN and DCDN), `CdnOnly` (its secret in the file
    /// `cdn-secret`) and `Burst` (every action).
    pub fn server_access_keys(mut self) -> ServeConfig {
        self = self.access_key(
            "MainKey",
            "MAIN_SECRET",
            "[\"cdn:CreateCdnCertificateSigningRequest\", \"dcdn:CreateDcdnCertificateSigningRequest\"]",
        );
        self.access_keys.push_str(
            "[[service.access_keys]]\nid = \"CdnOnly\"\nsecret_file = \"cdn-secret\"\n\
             actions = [\"cdn:CreateCdnCertificateSigningRequest\"]\n",
        );
        self.access_key("Burst", "BURST_SECRET", "[\"*\"]")
    }

    /// TOML appended as it is, for what only one test needs (`[audit]`,
    /// `[subject.defaults]`, tenants, ...).
    pub fn extra(mut self, toml: &str) -> ServeConfig {
        push_lines(&mut self.extra, toml);
        self
    }

    /// The config's text.
    pub fn text(&self) -> String {
        // "rsa-4096" is type rsa with bits = 4096.
        let key_table = match self.key_type.split_once('-') {
            Some(("rsa", bits)) => format!("type = \"rsa\"\nbits = {bits}"),
            _ => format!("type = \"{}\"", self.key_type),
        };
        let tokens = if self.tokens.is_empty() {
            self.token.clone()
        } else {
            self.tokens
                .iter()
                .map(|t| format!("[[tokens]]\n{t}"))
                .collect()
        };
        format!(
            "{tokens}\n[key]\n{key_table}\nlabel_prefix = \"{}\"\n\n\
             [service]\nlisten = \"127.0.0.1:0\"\n{}\n{}{}",
            self.label_prefix, self.service, self.access_keys, self.extra
        )
    }

    /// Writes the config to a new file in `dir` (`serve-N.toml`); its path.
    pub fn write(&self, dir: &Path) -> PathBuf {
        static WRITTEN: AtomicUsize = AtomicUsize::new(0);
        let n = WRITTEN.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("serve-{n}.toml"));
        std::fs::write(&path, self.text()).unwrap();
        path
    }
}

/// Appends `lines` to a table's text, ending them with a newline.
fn push_lines(table: &mut String, lines: &str) {
    table.push_str(lines);
    if !lines.ends_with('\n') {
        table.push('\n');
    }
}
