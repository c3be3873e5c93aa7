//! An event as its line: compact JSON, printable ASCII only, fields cut,
//! and the RFC 3339 time it carries.

use std::io::{self, Write};
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::{Actor, Event, MAX_FIELD};
use crate::day::Day;

impl Event {
    /// The line written for this event, `\n` included: printable ASCII
    /// only, each string field at most 512 characters (`MAX_FIELD`).
    pub fn line(&self) -> Vec<u8> {
        let mut event = self.clone();
        for field in [
            Some(&mut event.time),
            Some(&mut event.request_id),
            event.common_name.as_mut(),
            event.pub_md5.as_mut(),
            event.key_uri.as_mut(),
            Some(&mut event.outcome),
            event.cause.as_mut(),
            event.replaced_by.as_mut(),
        ]
        .into_iter()
        .flatten()
        {
            cut(field);
        }
        match &mut event.actor {
            Actor::AccessKey { access_key } => cut(access_key),
            Actor::User { user, .. } => {
                if let Some(user) = user {
                    cut(user);
                }
            }
        }
        let mut out = Vec::with_capacity(256);
        let mut ser = serde_json::Serializer::with_formatter(&mut out, AsciiFormatter);
        // Strings, numbers and enums only: serialising cannot fail.
        let _ = event.serialize(&mut ser);
        out.push(b'\n');
        out
    }
}

fn cut(s: &mut String) {
    if let Some((i, _)) = s.char_indices().nth(MAX_FIELD) {
        s.truncate(i);
        s.push_str("...[truncated]");
    }
}

/// serde_json's compact output with every non-ASCII character escaped as
/// `\uXXXX` (a surrogate pair beyond the BMP, RFC 8259 section 7): a line
/// that no reader splits, whatever it takes for a line end.
struct AsciiFormatter;

impl serde_json::ser::Formatter for AsciiFormatter {
    fn write_string_fragment<W: ?Sized + Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let escaped = |c: char| !c.is_ascii() || c == '\x7f';
        // Each piece: ASCII, then at most one character to escape.
        for piece in fragment.split_inclusive(escaped) {
            let mut chars = piece.chars();
            match chars.next_back() {
                Some(c) if escaped(c) => {
                    writer.write_all(chars.as_str().as_bytes())?;
                    let mut units = [0u16; 2];
                    for unit in c.encode_utf16(&mut units) {
                        write!(writer, "\\u{unit:04x}")?;
                    }
                }
                _ => writer.write_all(piece.as_bytes())?,
            }
        }
        Ok(())
    }
}

/// Now, as RFC 3339 UTC with milliseconds.
pub(crate) fn rfc3339_now() -> String {
    let since = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    rfc3339(since.as_secs(), since.subsec_millis())
}

/// `secs` after the epoch as `YYYY-MM-DDTHH:MM:SS.mmmZ` (proleptic
/// Gregorian calendar, by [`Day::ymd`]).
pub(super) fn rfc3339(secs: u64, millis: u32) -> String {
    let rem = secs % 86_400;
    // u64::MAX / 86_400 fits an i64: the conversion cannot fail.
    let (year, month, day) = Day(i64::try_from(secs / 86_400).unwrap_or(i64::MAX)).ymd();
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{millis:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}
