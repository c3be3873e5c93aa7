//! `hsm-csr keys list|show|delete`.

use std::io::Write;

use crate::audit::{Actor, EventKind, Trail};
use crate::backend::pkcs11::inventory::KeyEntry;
use crate::backend::pkcs11::uri;
use crate::retention::Held;
use crate::{Error, Result};

use super::{KeyArgs, KeysCommand, ListFormat, token};

/// The output format and token flags of a `keys` subcommand.
pub(crate) fn parts(command: &KeysCommand) -> (ListFormat, &super::TokenArgs) {
    match command {
        KeysCommand::List(a) => (a.format, &a.token),
        KeysCommand::Show(a) => (a.format, &a.token),
        KeysCommand::Delete(a) => (a.key.format, &a.key.token),
        KeysCommand::Prune(a) => (a.format, &a.token),
    }
}

/// Runs a `keys` subcommand; `request_id` names a deletion in the audit trail.
pub(crate) fn run(command: &KeysCommand, request_id: &str) -> Result<()> {
    if let KeysCommand::Prune(args) = command {
        return super::prune::run(args, request_id);
    }
    let (format, token_args) = parts(command);
    let config = token::load_config(token_args)?;
    let target = token::target(token_args, &config)?;
    let audit_log = match command {
        KeysCommand::Delete(_) => config.audit.open()?,
        KeysCommand::List(_) | KeysCommand::Show(_) | KeysCommand::Prune(_) => None,
    };
    let mut opened = token::open(&target, token_args)?;
    let mut keys = opened.backend.list_keys()?;
    if let KeysCommand::List(a) = command {
        if let Some(owner) = &a.owner {
            let owner = crate::owner::Owner::new(owner)?;
            keys.retain(|k| k.is_owned_by(&owner));
        }
    }
    let token_label = opened.backend.token_label().to_owned();
    let mut out = std::io::stdout().lock();
    let written = match command {
        KeysCommand::Prune(_) => Ok(()),
        KeysCommand::List(_) => print(&mut out, format, &keys).and_then(|()| {
            if format == ListFormat::Table {
                writeln!(out, "{}", summary(&keys))
            } else {
                Ok(())
            }
        }),
        KeysCommand::Show(KeyArgs { key, .. }) => {
            let k = find(&keys, key, &token_label, &config.key.label_prefix)?;
            print(&mut out, format, std::slice::from_ref(k))
        }
        KeysCommand::Delete(a) => {
            let k = find(&keys, &a.key.key, &token_label, &config.key.label_prefix)?.clone();
            let deleted = opened.backend.delete_key(&k);
            if let Some(log) = &audit_log {
                let trail = Trail {
                    log,
                    actor: Actor::local_user(),
                };
                let outcome = deleted.as_ref().map_or_else(|e| e.code(), |()| "ok");
                let prefix = &config.key.label_prefix;
                let recorded =
                    trail.record_key(EventKind::Deleted, request_id, &k, prefix, outcome);
                if let (Ok(()), Err(Error::Audit { detail, .. })) = (&deleted, recorded) {
                    return Err(Error::Audit {
                        detail: format!("{detail}; {} WAS deleted", k.key_uri),
                        rolled_back: false,
                    });
                }
            }
            deleted?;
            match format {
                ListFormat::Json => print(&mut out, format, std::slice::from_ref(&k)),
                ListFormat::Table => writeln!(out, "{}", deleted_line(&k)),
            }
        }
    };
    match written {
        // `keys list | head`: the reader has all it wanted.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.map_err(|e| Error::Output {
            detail: e.to_string(),
            rolled_back: false,
        }),
    }
}

/// What `keys delete` removed, in one line.
fn deleted_line(k: &KeyEntry) -> String {
    let halves = match (k.has_private_key, k.has_public_key) {
        (true, true) => "private and public key",
        (true, false) => "private key",
        _ => "public key",
    };
    format!(
        "deleted {} (CKA_ID {}, {}, PubMd5 {}): {halves}{}",
        k.label,
        k.id,
        k.key_type,
        k.pub_md5.as_deref().unwrap_or("-"),
        if k.certificate {
            " and its certificate(s)"
        } else {
            ""
        }
    )
}

/// The key `query` names; when none matches, the key whose label is
/// `prefix` (`[key] label_prefix`) and `query` as a bare common name.
fn find<'k>(keys: &'k [KeyEntry], query: &str, token: &str, prefix: &str) -> Result<&'k KeyEntry> {
    match find_key(keys, query, token) {
        Err(not_found @ Error::KeyNotFound { .. })
            if !query.starts_with("pkcs11:") && !query.starts_with(prefix) =>
        {
            match find_key(keys, &format!("{prefix}{query}"), token) {
                Err(Error::KeyNotFound { .. }) => Err(not_found),
                other => other,
            }
        }
        other => other,
    }
}

fn print(out: &mut impl Write, format: ListFormat, keys: &[KeyEntry]) -> std::io::Result<()> {
    match format {
        ListFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, keys)?;
            writeln!(out)
        }
        ListFormat::Table => {
            let rows: Vec<Vec<String>> = keys
                .iter()
                .map(|k| {
                    vec![
                        k.label.clone(),
                        k.id.clone(),
                        k.key_type.clone(),
                        k.pub_md5.clone().unwrap_or_else(|| "-".into()),
                        k.owner.clone().unwrap_or_else(|| "-".into()),
                        match &k.undelivered_by {
                            Some(owner) => format!("undelivered ({owner})"),
                            None => match k.certificates().len() {
                                0 => "no".into(),
                                1 => "yes".into(),
                                n => format!("yes ({n})"),
                            },
                        },
                        k.key_uri.clone(),
                    ]
                })
                .collect();
            super::output::table(
                out,
                &["LABEL", "ID", "TYPE", "PUBMD5", "OWNER", "CERT", "URI"],
                &rows,
            )
        }
    }
}

/// One line: key pairs and certificates per owner, and in all.
fn summary(keys: &[KeyEntry]) -> String {
    let mut owners: std::collections::BTreeMap<&str, Held> = Default::default();
    for k in keys.iter().filter(|k| k.has_private_key) {
        owners
            .entry(k.owner.as_deref().unwrap_or("-"))
            .or_default()
            .add(k);
    }
    let pairs: usize = owners.values().map(|c| c.key_pairs).sum();
    let certificates: usize = keys.iter().map(|k| k.certificates().len()).sum();
    let per_owner: Vec<String> = owners
        .iter()
        .map(|(owner, held)| format!("{owner} {} ({} cert)", held.key_pairs, held.certificates))
        .collect();
    format!(
        "{pairs} key pair(s), {certificates} certificate(s); by owner: {}",
        if per_owner.is_empty() {
            "none".to_owned()
        } else {
            per_owner.join(", ")
        }
    )
}

/// Finds the one key `query` names: a `pkcs11:` URI (by `id` and/or
/// `object`), a PubMd5, a CKA_ID in hex, or a label.
///
/// # Errors
/// `Key.NotFound` or `Key.Ambiguous`.
fn find_key<'k>(keys: &'k [KeyEntry], query: &str, token: &str) -> Result<&'k KeyEntry> {
    // Shown in errors without its query part, which may carry a PIN.
    let shown = query.split('?').next().unwrap_or_default();
    let matches: Vec<&KeyEntry> = if query.starts_with("pkcs11:") {
        let u = uri::parse(query)?;
        if u.id.is_none() && u.object.is_none() {
            return Err(Error::Config(format!(
                "{shown:?} names no key: add id= or object="
            )));
        }
        if u.token.label.as_deref().is_some_and(|l| l != token) {
            return Err(Error::Config(format!(
                "{shown:?} names another token than the open one ({token:?}); pass it as --token too."
            )));
        }
        keys.iter()
            .filter(|k| u.id.as_ref().is_none_or(|id| *id == k.id_bytes))
            .filter(|k| u.object.as_ref().is_none_or(|o| *o == k.label))
            .collect()
    } else {
        let q = query.to_ascii_lowercase();
        keys.iter()
            .filter(|k| k.pub_md5.as_deref() == Some(q.as_str()) || k.id == q || k.label == query)
            .collect()
    };
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(Error::KeyNotFound {
            token: token.to_owned(),
            key: shown.to_owned(),
        }),
        many => Err(Error::KeyAmbiguous {
            key: shown.to_owned(),
            count: many.len(),
            uris: many
                .iter()
                .map(|k| k.key_uri.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        }),
    }
}
