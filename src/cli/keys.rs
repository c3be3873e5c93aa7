//! `hsm-csr keys list|show|delete`.

use std::io::Write;

use hsm_csr::backend::pkcs11::inventory::{self, KeyEntry};
use hsm_csr::{Error, Result};

use super::{KeyArgs, KeysCommand, ListFormat, token};

/// The output format and token flags of a `keys` subcommand.
pub fn parts(command: &KeysCommand) -> (ListFormat, &super::TokenArgs) {
    match command {
        KeysCommand::List(a) => (a.format, &a.token),
        KeysCommand::Show(a) => (a.format, &a.token),
        KeysCommand::Delete(a) => (a.key.format, &a.key.token),
    }
}

/// Runs a `keys` subcommand.
pub fn run(command: &KeysCommand) -> Result<()> {
    let (format, token_args) = parts(command);
    if let KeysCommand::Delete(a) = command {
        if !a.yes {
            return Err(Error::Malformed(format!(
                "refusing to delete {:?} without --yes (there is no undo on a token).",
                a.key.key
            )));
        }
    }
    let config = token::load_config(token_args)?;
    let target = token::target(token_args, &config)?;
    let mut opened = token::open(&target, token_args, &config)?;
    let keys = opened.backend.list_keys()?;
    let token_label = opened.backend.token_label().to_owned();
    let mut out = std::io::stdout().lock();
    let written = match command {
        KeysCommand::List(_) => print(&mut out, format, &keys),
        KeysCommand::Show(KeyArgs { key, .. }) => {
            let k = inventory::find_key(&keys, key, &token_label)?;
            print(&mut out, format, std::slice::from_ref(k))
        }
        KeysCommand::Delete(a) => {
            let k = inventory::find_key(&keys, &a.key.key, &token_label)?.clone();
            opened.backend.delete_key(&k)?;
            print(&mut out, format, std::slice::from_ref(&k))
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

fn print(out: &mut impl Write, format: ListFormat, keys: &[KeyEntry]) -> std::io::Result<()> {
    match format {
        ListFormat::Json => {
            serde_json::to_writer_pretty(&mut *out, keys)?;
            writeln!(out)
        }
        ListFormat::Table => {
            let rows: Vec<[String; 6]> = keys
                .iter()
                .map(|k| {
                    [
                        k.label.clone(),
                        k.id.clone(),
                        k.key_type.clone(),
                        k.pub_md5.clone().unwrap_or_else(|| "-".into()),
                        match &k.undelivered_by {
                            Some(owner) => format!("undelivered ({owner})"),
                            None => if k.certificate { "yes" } else { "no" }.into(),
                        },
                        k.key_uri.clone(),
                    ]
                })
                .collect();
            let head = ["LABEL", "ID", "TYPE", "PUBMD5", "CERT", "URI"].map(String::from);
            let mut widths = head.clone().map(|h| h.chars().count());
            for row in &rows {
                for (w, cell) in widths.iter_mut().zip(row) {
                    *w = (*w).max(cell.chars().count());
                }
            }
            for row in std::iter::once(&head).chain(&rows) {
                let line: Vec<String> = row
                    .iter()
                    .zip(widths)
                    .map(|(cell, w)| format!("{cell:<w$}"))
                    .collect();
                writeln!(out, "{}", line.join("  ").trim_end())?;
            }
            out.flush()
        }
    }
}
