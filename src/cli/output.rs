//! What the CLI prints: the response on stdout, errors as `Code: Message`
//! on stderr (and as a JSON body on stdout with `--format json`).

use std::io::Write;

use serde::Serialize;

use crate::{CsrResponse, Error, Result};

use super::Format;

/// The error for an answer that could not be written (`detail`) after its
/// key pair was made: what `rollback` did to the key decides whether the
/// caller must remove it by hand (`key_uri`).
pub(crate) fn undelivered(detail: String, rollback: Result<()>, key_uri: String) -> Error {
    match rollback {
        Ok(()) => Error::Output {
            detail,
            rolled_back: true,
        },
        Err(rollback) => Error::RollbackFailed {
            original: Box::new(Error::Output {
                detail,
                rolled_back: false,
            }),
            rollback: rollback.to_string(),
            key_uri,
        },
    }
}

/// The API's error body.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorBody<'a> {
    request_id: &'a str,
    code: &'a str,
    message: String,
}

/// Writes the response to `out`.
pub(crate) fn response(
    out: &mut impl Write,
    format: Format,
    r: &CsrResponse,
) -> std::io::Result<()> {
    match format {
        Format::Json => {
            serde_json::to_writer_pretty(&mut *out, r)?;
            out.write_all(b"\n")?;
        }
        Format::Pem => out.write_all(r.csr.as_bytes())?,
    }
    out.flush()
}

/// Reports `e` on stderr, and on stdout as JSON when `json`.
pub(crate) fn error(json: bool, request_id: &str, e: &Error) {
    let _ = writeln!(std::io::stderr(), "{}: {e}", e.code());
    if json {
        let body = ErrorBody {
            request_id,
            code: e.code(),
            message: e.to_string(),
        };
        if let Ok(json) = serde_json::to_string_pretty(&body) {
            let _ = writeln!(std::io::stdout(), "{json}");
        }
    }
}

/// Prints `rows` under `head` in aligned columns, two spaces apart. A
/// control character in a cell (a label read from the token, a CA's
/// message) is escaped: a cell cannot start a line of its own.
pub(crate) fn table(
    out: &mut impl Write,
    head: &[&str],
    rows: &[Vec<String>],
) -> std::io::Result<()> {
    let head: Vec<String> = head.iter().map(|h| (*h).to_owned()).collect();
    let rows: Vec<Vec<String>> = rows
        .iter()
        .map(|r| r.iter().map(|c| crate::text::one_line(c)).collect())
        .collect();
    let mut widths: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in std::iter::once(&head).chain(&rows) {
        let line: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, w)| format!("{cell:<w$}"))
            .collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    out.flush()
}
