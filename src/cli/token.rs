//! From flags and config to a logged-in token: module, token selector and
//! PIN, resolved in one place for every command.

use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::backend::pkcs11::uri::{self, Pkcs11Uri};
use crate::backend::pkcs11::{Pkcs11Backend, TokenSelector};
use crate::config::{Config, TokenConfig};
use crate::pin::{self, PinSources};
use crate::{Error, Result};

use super::TokenArgs;

/// Reads `--config` (or `HSM_CSR_CONFIG`), or gives the defaults.
pub(crate) fn load_config(args: &TokenArgs) -> Result<Config> {
    match &args.config {
        Some(path) => Config::load(path),
        None => Ok(Config::default()),
    }
}

/// A logged-in backend, and how long getting there took.
pub(crate) struct Opened {
    pub backend: Pkcs11Backend,
    /// The PIN used, for callers that must log in again later (`serve`).
    #[cfg_attr(not(feature = "service"), allow(dead_code))]
    pub pin: Option<cryptoki::types::AuthPin>,
    pub init: Duration,
    pub login: Duration,
}

/// What `--token` and the config say, before the token is touched.
pub(crate) struct Target {
    /// The module.
    pub module: PathBuf,
    /// Which token.
    pub selector: TokenSelector,
    uri: Option<Pkcs11Uri>,
    /// The `[token]` or `[[tokens]]` table that fills in what the flags
    /// leave out (the pin file).
    table: TokenConfig,
}

impl Target {
    /// The token as `/healthz` and `/metrics` name it: the configured label
    /// (or serial), else what `--token` says.
    #[cfg_attr(not(feature = "service"), allow(dead_code))]
    pub(crate) fn display_name(&self) -> String {
        let named = TokenConfig {
            label: self.selector.label.clone(),
            serial: self.selector.serial.clone(),
            name: self.table.name.clone(),
            ..TokenConfig::default()
        };
        named.display_name()
    }
}

/// Resolves module and token without touching them, so that callers can
/// finish their own checks first. With `[[tokens]]`, `--token` picks one
/// of them (their module and pin file apply); without it this fails, as
/// only `serve` works on several tokens ([`targets`]).
pub(crate) fn target(args: &TokenArgs, config: &Config) -> Result<Target> {
    if config.tokens.is_empty() {
        return target_of(args, &config.token);
    }
    let Some(token) = &args.token else {
        let names: Vec<String> = config
            .tokens
            .iter()
            .map(|t| format!("{:?}", t.display_name()))
            .collect();
        return Err(Error::Config(format!(
            "the config names {} tokens in [[tokens]] ({}); this command works on one: pass --token with the label of one of them.",
            config.tokens.len(),
            names.join(", ")
        )));
    };
    let selector = selector_of(token)?;
    let table = config
        .tokens
        .iter()
        .find(|t| {
            (t.label.is_some() && t.label == selector.label)
                || (t.serial.is_some() && t.serial == selector.serial)
        })
        .cloned()
        .unwrap_or_default();
    target_of(args, &table)
}

/// Every token `serve` (and `acme renew`, `acme status`) works on: the one
/// of [`target`], or each table of `[[tokens]]` when `--token` is not given.
#[cfg(any(feature = "service", feature = "acme"))]
pub(crate) fn targets(args: &TokenArgs, config: &Config) -> Result<Vec<Target>> {
    if config.tokens.is_empty() || args.token.is_some() {
        return Ok(vec![target(args, config)?]);
    }
    if args.module.is_some() || args.pin_file.is_some() {
        return Err(Error::Config(
            "--module and --pin-file name one token; with [[tokens]] each table names its module and pin_file (or pass --token LABEL to serve one of them)."
                .into(),
        ));
    }
    config.tokens.iter().map(|t| target_of(args, t)).collect()
}

fn selector_of(token: &str) -> Result<TokenSelector> {
    Ok(if token.starts_with("pkcs11:") {
        uri::parse(token)?.token
    } else {
        TokenSelector::label(token)
    })
}

fn target_of(args: &TokenArgs, table: &TokenConfig) -> Result<Target> {
    let uri = match &args.token {
        Some(t) if t.starts_with("pkcs11:") => Some(uri::parse(t)?),
        _ => None,
    };
    let selector = match (&uri, &args.token) {
        (Some(u), _) => u.token.clone(),
        (None, Some(label)) => TokenSelector::label(label),
        (None, None) => TokenSelector {
            label: table.label.clone(),
            serial: table.serial.clone(),
            slot_id: table.slot_id,
            ..TokenSelector::default()
        },
    };
    if selector == TokenSelector::default() {
        return Err(Error::Config(
            "no token: pass --token LABEL|URI or set [token] label in --config.".into(),
        ));
    }
    let module = args
        .module
        .clone()
        .or_else(|| uri.as_ref().and_then(|u| u.module_path.clone()))
        .or_else(|| table.module.clone())
        .ok_or_else(|| {
            Error::Config(
                "no PKCS#11 module: pass --module PATH, add ?module-path= to the token URI, \
                 or set [token] module in --config."
                    .into(),
            )
        })?;
    Ok(Target {
        module,
        selector,
        uri,
        table: table.clone(),
    })
}

/// Opens the token and logs in once.
///
/// A file-backed token (SoftHSM) read while another process rewrites it
/// can look absent, unlabelled, or without a user PIN. Those answers (and
/// only those: no PIN was checked in any of them) make hsm-csr open the
/// token again from scratch, module finalized and re-initialized, a few
/// times. Every other failure, above all a wrong PIN, ends it at once.
pub(crate) fn open(target: &Target, args: &TokenArgs) -> Result<Opened> {
    let mut attempt = 1;
    // Asked for (or read) once, however many times the token is reopened.
    let mut pin = None;
    loop {
        match open_once(target, args, &mut pin) {
            Err(e) if attempt < 6 && looks_half_written(&e) => {
                log::debug!("token looked half-written ({}); opening it again", e.code());
                std::thread::sleep(Duration::from_millis(100 * attempt));
                attempt += 1;
            }
            other => return other,
        }
    }
}

fn looks_half_written(e: &Error) -> bool {
    match e {
        Error::PinNotInitialized { .. } | Error::LoginUnavailable { .. } => true,
        // Nothing present, or only slots that could not say what they hold.
        Error::TokenNotFound { available, .. } => {
            available.iter().all(|l| l.is_empty() || l.starts_with('<'))
        }
        _ => false,
    }
}

fn open_once(
    target: &Target,
    args: &TokenArgs,
    pin_cache: &mut Option<(cryptoki::types::AuthPin, String)>,
) -> Result<Opened> {
    let t = Instant::now();
    let mut backend = Pkcs11Backend::open(&target.module, &target.selector)?;
    let init = t.elapsed();

    let t = Instant::now();
    let mut used_pin = None;
    if backend.login_required() {
        let sources = PinSources {
            flag_file: args.pin_file.as_deref(),
            uri_source: target.uri.as_ref().and_then(|u| u.pin_source.as_deref()),
            uri_value: target.uri.as_ref().and_then(|u| u.pin_value.as_ref()),
            config_file: target.table.pin_file.as_deref(),
        };
        let from_env = std::env::var_os(pin::PIN_ENV).is_some();
        if backend.has_protected_authentication_path() && !from_env && !sources.any() {
            let _ = writeln!(
                std::io::stderr(),
                "Enter the PIN on the token's own keypad or reader."
            );
            backend.login(None)?;
        } else {
            let (pin, source) = match pin_cache.take() {
                Some(p) => p,
                None => pin::resolve(&sources, backend.token_label())?,
            };
            let result = backend.login(Some(&pin));
            *pin_cache = Some((pin.clone(), source.clone()));
            result.map_err(|e| match e {
                Error::PinIncorrect { token, .. } => Error::PinIncorrect {
                    token,
                    pin_source: Some(source),
                },
                e => e,
            })?;
            used_pin = Some(pin);
        }
    }
    let login = t.elapsed();
    if let Some(max_objects) = target.table.max_objects {
        backend.limit_objects(max_objects)?;
    }
    Ok(Opened {
        backend,
        pin: used_pin,
        init,
        login,
    })
}

/// Removes what processes that stopped mid-call left undelivered under
/// `prefix` (keys labelled `<prefix>undelivered` whose owner no longer
/// runs: [`crate::backend::pkcs11::sweep`]), so that a site that uses only
/// the command line keeps no interrupted key either. One search by label;
/// a failure is reported, never fatal. Whether it worked.
pub(crate) fn sweep(backend: &mut Pkcs11Backend, prefix: &str) -> bool {
    match backend.sweep_undelivered(true, Some(&format!("{prefix}undelivered"))) {
        Ok(_) => true,
        Err(e) => {
            log::warn!("sweep for key pairs left undelivered failed: {e}");
            false
        }
    }
}
