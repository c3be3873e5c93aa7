//! What the CLI prints: the response on stdout, errors as `Code: Message`
//! on stderr (and as a JSON body on stdout with `--format json`).

use std::io::Write;

use serde::Serialize;

use hsm_csr::{CsrResponse, Error};

use super::Format;

/// The API's error body.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct ErrorBody<'a> {
    request_id: &'a str,
    code: &'a str,
    message: String,
}

/// Writes the response to `out`.
pub fn response(out: &mut impl Write, format: Format, r: &CsrResponse) -> std::io::Result<()> {
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
pub fn error(json: bool, request_id: &str, e: &Error) {
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
